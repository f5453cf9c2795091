//! The gateway binary as a child process, for tests that need the real
//! process (signals, SIGKILL, restarts): its stdout and stderr collected
//! (terminal colours stripped), bounded waits on its HTTP answers and its
//! log, and a kill on drop so no test leaves it running.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{client, free_port, without_proxy_env};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_oauth-metadata-gateway");

/// Variables of the test's own environment that would change what the
/// binary does; removed unless a test sets them (and the proxy variables,
/// [`super::PROXY_VARS`]).
const CLEARED: [&str; 3] = ["GATEWAY_LISTEN", "GATEWAY_STATE_DIR", "GATEWAY_MIN_TTL"];

/// A running gateway binary.
pub struct Process {
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// `http://127.0.0.1:PORT` when started with [`Process::start`].
    base: Option<String>,
}

impl Process {
    /// Spawns the binary with `args` and `envs` (`RUST_LOG=info`); does not
    /// wait for it.
    pub fn spawn(args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.args(args);
        Self::spawn_command(cmd, envs)
    }

    /// Like [`Process::spawn`], after the `sh` commands `setup` (e.g.
    /// `ulimit -f 1`): `sh` then `exec`s the binary, so the child's PID is
    /// the gateway's and signals reach it.
    pub fn spawn_after(setup: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{setup}\nexec \"$0\" \"$@\""))
            .arg(BIN)
            .args(args);
        Self::spawn_command(cmd, envs)
    }

    fn spawn_command(mut cmd: Command, envs: &[(&str, &str)]) -> Self {
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        for var in CLEARED {
            cmd.env_remove(var);
        }
        without_proxy_env(&mut cmd);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the gateway binary");
        let output = Arc::new(Mutex::new(Vec::new()));
        let stdout: Box<dyn Read + Send> = Box::new(child.stdout.take().unwrap());
        let stderr: Box<dyn Read + Send> = Box::new(child.stderr.take().unwrap());
        let readers = [stdout, stderr]
            .into_iter()
            .map(|mut pipe| {
                let out = output.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = pipe.read(&mut buf) {
                        if n == 0 {
                            break;
                        }
                        out.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                })
            })
            .collect();
        Self {
            child,
            output,
            readers,
            base: None,
        }
    }

    /// Spawns the binary on a fresh loopback port (one worker) and waits
    /// (bounded) until `/healthz` answers 200.
    pub async fn start(args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_after("", args, envs).await
    }

    /// [`Process::start`] after the `sh` commands `setup` (see
    /// [`Process::spawn_after`]); an empty `setup` runs the binary directly.
    pub async fn start_after(setup: &str, args: &[&str], envs: &[(&str, &str)]) -> Self {
        let listen = format!("127.0.0.1:{}", free_port());
        let mut all = args.to_vec();
        all.extend(["--listen", &listen, "--workers", "1"]);
        let mut p = if setup.is_empty() {
            Self::spawn(&all, envs)
        } else {
            Self::spawn_after(setup, &all, envs)
        };
        p.base = Some(format!("http://{listen}"));
        let healthz = p.url("/healthz");
        p.wait_status(&healthz, 200, Duration::from_secs(20)).await;
        p
    }

    /// `path` on the listener [`Process::start`] chose.
    pub fn url(&self, path: &str) -> String {
        let base = self.base.as_deref().expect("started with Process::start");
        format!("{base}{path}")
    }

    /// Sends signal `name` (e.g. `TERM`, `HUP`) with `/bin/kill`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL the gateway");
        let _ = self.child.wait();
    }

    /// Whether it has not exited.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Waits (bounded) for the process to exit and returns its status and
    /// everything it printed.
    pub async fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the gateway did not exit within {limit:?}; output:\n{}",
                    self.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let text = self.text();
        (status, text)
    }

    /// Everything printed so far, without terminal colours.
    pub fn text(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.output.lock().unwrap()))
    }

    /// Polls `url` until it answers `status` (bounded by `limit`); fails
    /// at once if the process exits.
    pub async fn wait_status(&mut self, url: &str, status: u16, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            assert!(self.running(), "the gateway exited:\n{}", self.text());
            if let Ok(res) = client().get(url).send().await {
                if res.status() == status {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "{url} never answered {status}:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits (bounded by `limit`) until the output contains `needle`, and
    /// returns the output.
    pub async fn wait_for_log(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let text = self.text();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in the output:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `s` without ANSI escape sequences.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
