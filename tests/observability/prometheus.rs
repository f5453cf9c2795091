//! A real Prometheus server for end-to-end tests: started on 127.0.0.1 with
//! an ephemeral port, its TSDB and configuration in a temporary directory,
//! scraping given targets every second, queried through its HTTP API
//! (`/api/v1/query`, `/api/v1/rules`). The guard kills the process and
//! removes the directory when dropped, panics included. Every wait is bounded.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::tools;
use crate::support::client;

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Child,
    pub base_url: String,
    log_path: PathBuf,
    // Removed when the guard is dropped, after `Drop::drop` killed the child.
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How long Prometheus may take to become ready.
const START_LIMIT: Duration = Duration::from_secs(30);
/// Attempts when the chosen port was taken by someone else meanwhile.
const START_ATTEMPTS: usize = 3;

impl Prometheus {
    /// Starts Prometheus scraping `targets` (`host:port`) as job `job` every
    /// second, evaluating `rule_files` (absolute paths) every second.
    pub async fn start(job: &str, targets: &[String], rule_files: &[&Path]) -> Self {
        let mut logs = Vec::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(job, targets, rule_files).await {
                Ok(prometheus) => return prometheus,
                // The port is chosen by binding :0 and released just before
                // Prometheus binds it; another process may take it meanwhile.
                Err(log) if log.contains("address already in use") => logs.push(log),
                Err(log) => panic!("Prometheus did not start:\n{log}"),
            }
        }
        panic!(
            "Prometheus did not start in {START_ATTEMPTS} attempts:\n{}",
            logs.join("\n---\n")
        );
    }

    async fn try_start(
        job: &str,
        targets: &[String],
        rule_files: &[&Path],
    ) -> Result<Self, String> {
        let binary = tools::find("prometheus", "PROMETHEUS");
        let dir = tempfile::tempdir().expect("temporary directory");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, config_yaml(job, targets, rule_files))
            .expect("write the Prometheus configuration");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
            l.local_addr().expect("local address").port()
        };
        let log_path = dir.path().join("prometheus.log");
        let log = File::create(&log_path).expect("log file");
        let child = Command::new(&binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // From here on, an early return drops the guard: process killed,
        // directory removed.
        let mut prometheus = Self {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            log_path,
            _dir: dir,
        };
        prometheus.wait_ready().await?;
        Ok(prometheus)
    }

    /// Waits until `/-/ready` answers 200; the log if the process exits or
    /// the time runs out.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        let c = client();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.log()));
            }
            if let Ok(res) = c.get(format!("{}/-/ready", self.base_url)).send().await {
                if res.status() == 200 {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("not ready within {START_LIMIT:?}:\n{}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// GETs an API path with query parameters and returns `data` of a
    /// `"status": "success"` answer, or the error text.
    pub async fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let url = url::Url::parse_with_params(&format!("{}{path}", self.base_url), params)
            .map_err(|e| format!("bad URL: {e}"))?;
        let mut res = client()
            .get(url.as_str())
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let body = res
            .body()
            .limit(16 * 1024 * 1024)
            .await
            .map_err(|e| format!("GET {url}: body: {e}"))?;
        let json: Value = serde_json::from_slice(&body).map_err(|e| {
            format!(
                "GET {url}: not JSON ({e}): {}",
                String::from_utf8_lossy(&body)
            )
        })?;
        if json["status"] == "success" {
            Ok(json["data"].clone())
        } else {
            Err(format!("GET {url}: {} {json}", res.status()))
        }
    }

    /// Evaluates an instant query; returns the vector's samples as
    /// (labels, value). Any other result type is an error.
    pub async fn query(&self, promql: &str) -> Result<Vec<(Value, f64)>, String> {
        let data = self.api("/api/v1/query", &[("query", promql)]).await?;
        if data["resultType"] != "vector" {
            return Err(format!("{promql}: result type {}", data["resultType"]));
        }
        data["result"]
            .as_array()
            .ok_or_else(|| format!("{promql}: no result array"))?
            .iter()
            .map(|s| {
                let text = s["value"][1]
                    .as_str()
                    .ok_or_else(|| format!("{promql}: sample without a value: {s}"))?;
                let v = text
                    .parse::<f64>()
                    .map_err(|e| format!("{promql}: value {text:?}: {e}"))?;
                Ok((s["metric"].clone(), v))
            })
            .collect()
    }

    /// Polls `promql` until `pred` holds for its samples, at most `limit`;
    /// returns the last samples, or an error with the last answer.
    pub async fn query_until(
        &self,
        promql: &str,
        limit: Duration,
        pred: impl Fn(&[(Value, f64)]) -> bool,
    ) -> Result<Vec<(Value, f64)>, String> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let answer = self.query(promql).await;
            if let Ok(samples) = &answer {
                if pred(samples) {
                    return answer;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{promql}: condition not met within {limit:?}; last answer: {answer:?}; log:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Everything Prometheus logged (warnings and errors).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|e| format!("(no log: {e})"))
    }
}

/// A configuration scraping `targets` as `job` and loading `rule_files`;
/// strings are written as JSON strings, which YAML reads as the same
/// strings, so no path or address needs escaping by hand.
fn config_yaml(job: &str, targets: &[String], rule_files: &[&Path]) -> String {
    let quoted = |s: &str| serde_json::to_string(s).expect("a string serialises");
    let mut yaml = String::from(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    if !rule_files.is_empty() {
        yaml.push_str("rule_files:\n");
        for f in rule_files {
            yaml.push_str(&format!("  - {}\n", quoted(&f.display().to_string())));
        }
    }
    yaml.push_str(&format!(
        "scrape_configs:\n  - job_name: {}\n    metrics_path: /metrics\n    static_configs:\n      - targets: [{}]\n",
        quoted(job),
        targets.iter().map(|t| quoted(t)).collect::<Vec<_>>().join(", ")
    ));
    yaml
}
