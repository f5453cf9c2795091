//! Command-line and environment configuration, parsed and validated in one
//! place into a typed [`Config`].
//!
//! Every flag can also be given as an environment variable `GATEWAY_<NAME>`
//! (clap's `env` support). All checks that can be made before serving are made
//! here, so a bad value fails at start-up with one line naming the flag and
//! exit code 2 (clap's usage-error code), never later and never as a panic.
//! [`Cli::try_parse_from`] plus [`Cli::into_config`] make the whole path
//! testable without a process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, ValueEnum};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use crate::document::ExpectedIssuer;

/// Command-line interface, as the user types it.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "oauth-metadata-gateway",
    version,
    about = "Caching gateway for OAuth authorization-server metadata (RFC 8414) in front of MCP servers"
)]
pub struct Cli {
    /// Address to listen on.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Base URL of the authorization server; the document is fetched with GET
    /// from `<upstream>/.well-known/oauth-authorization-server`.
    #[arg(long, env = "GATEWAY_UPSTREAM", default_value = "http://localhost:7788", value_parser = parse_base_url)]
    pub upstream: url::Url,

    /// Issuer the document must declare (RFC 8414 §3.3); defaults to the upstream URL.
    #[arg(long, env = "GATEWAY_ISSUER", value_parser = parse_issuer)]
    pub issuer: Option<String>,

    /// How long a fetched document is fresh (humantime: 30s, 5m, 1h).
    #[arg(long, env = "GATEWAY_TTL", default_value = "300s", value_parser = parse_positive_duration)]
    pub ttl: Duration,

    /// How long past its TTL a document may still be served while the upstream fails (RFC 5861 stale-if-error).
    #[arg(long, env = "GATEWAY_MAX_STALE", default_value = "24h", value_parser = parse_duration)]
    pub max_stale: Duration,

    /// Deadline for one whole upstream fetch: connect, response head and body.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub upstream_timeout: Duration,

    /// Largest upstream document accepted (bytes, or with a KiB/MiB suffix).
    #[arg(long, env = "GATEWAY_MAX_BODY_SIZE", default_value = "256KiB", value_parser = parse_size)]
    pub max_body_size: usize,

    /// First delay before retrying a failed upstream fetch; doubles per failure.
    #[arg(long, env = "GATEWAY_RETRY_BACKOFF_MIN", default_value = "1s", value_parser = parse_positive_duration)]
    pub retry_backoff_min: Duration,

    /// Cap on the delay between retries of a failing upstream.
    #[arg(long, env = "GATEWAY_RETRY_BACKOFF_MAX", default_value = "30s", value_parser = parse_positive_duration)]
    pub retry_backoff_max: Duration,

    /// PEM file with extra CA certificates to trust for an https upstream (in addition to the web PKI roots).
    #[arg(long, env = "GATEWAY_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// Also run a built-in demo authorization server (see --demo-listen) so the gateway has something to serve.
    #[arg(long, env = "GATEWAY_DEMO")]
    pub demo: bool,

    /// Where the demo authorization server listens.
    #[arg(long, env = "GATEWAY_DEMO_LISTEN", default_value = "127.0.0.1:7788")]
    pub demo_listen: SocketAddr,

    /// Number of HTTP worker threads (default: one per core).
    #[arg(long, env = "GATEWAY_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Seconds allowed for in-flight requests to finish after SIGTERM/SIGINT.
    #[arg(long, env = "GATEWAY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Log line format.
    #[arg(long, env = "GATEWAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable single lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Validated configuration the rest of the program runs on.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the gateway listens on (used by `main`; tests pass their own listener).
    pub listen: SocketAddr,
    /// The authorization-server metadata document to serve.
    pub document: DocumentConfig,
    /// Limits on upstream fetches.
    pub upstream: UpstreamConfig,
    /// Demo authorization server, when `--demo` is set.
    pub demo: Option<SocketAddr>,
    /// HTTP worker threads; `None` means one per core.
    pub workers: Option<usize>,
    /// Bound on graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Log format for `main`.
    pub log_format: LogFormat,
}

/// One cached document: where it comes from and how long it lives.
#[derive(Debug, Clone)]
pub struct DocumentConfig {
    /// Name used in metrics labels and logs, e.g. `oauth-authorization-server`.
    pub name: &'static str,
    /// Path the gateway serves it at.
    pub route: String,
    /// Full upstream URL it is fetched from.
    pub upstream_url: String,
    /// The issuer the document must declare.
    pub issuer: ExpectedIssuer,
    /// Freshness lifetime.
    pub ttl: Duration,
    /// How long past `ttl` it may be served stale.
    pub max_stale: Duration,
}

/// Settings shared by every upstream fetch.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Deadline for one whole fetch.
    pub timeout: Duration,
    /// Largest accepted body.
    pub max_body_size: usize,
    /// First retry delay after a failure.
    pub backoff_min: Duration,
    /// Cap on the retry delay.
    pub backoff_max: Duration,
    /// Extra trusted CA certificates (DER), loaded from `--upstream-ca`.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// RFC 8414 §3: the well-known suffix for authorization-server metadata.
pub const AS_METADATA_PATH: &str = "/.well-known/oauth-authorization-server";

impl Cli {
    /// Parses arguments (and `GATEWAY_*` environment variables) and validates
    /// them; any problem is a clap error that prints one line and exits 2.
    pub fn parse_config() -> Config {
        match Self::parse().into_config() {
            Ok(config) => config,
            Err(err) => err.exit(),
        }
    }

    /// Parses an explicit argument list (the first item is the program
    /// name) into a validated [`Config`]; environment variables still apply.
    pub fn config_from_args<I, T>(args: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Self::try_parse_from(args)?.into_config()
    }

    /// Validates cross-field rules and loads files named by flags.
    pub fn into_config(self) -> Result<Config, clap::Error> {
        if self.retry_backoff_min > self.retry_backoff_max {
            return Err(usage_error(format!(
                "invalid value for '--retry-backoff-min': {} is larger than --retry-backoff-max ({})",
                humantime::format_duration(self.retry_backoff_min),
                humantime::format_duration(self.retry_backoff_max)
            )));
        }
        let extra_roots = match &self.upstream_ca {
            Some(path) => load_ca_file(path)
                .map_err(|e| usage_error(format!("invalid value for '--upstream-ca': {e}")))?,
            None => Vec::new(),
        };
        if !extra_roots.is_empty() && self.upstream.scheme() != "https" {
            return Err(usage_error(
                "'--upstream-ca' was given but '--upstream' is not an https URL".to_string(),
            ));
        }
        let base = self.upstream.as_str().trim_end_matches('/').to_string();
        let issuer = match &self.issuer {
            Some(issuer) => ExpectedIssuer::new(issuer.clone()),
            None => ExpectedIssuer::new(base.clone()),
        };
        Ok(Config {
            listen: self.listen,
            document: DocumentConfig {
                name: "oauth-authorization-server",
                route: AS_METADATA_PATH.to_string(),
                upstream_url: format!("{base}{AS_METADATA_PATH}"),
                issuer,
                ttl: self.ttl,
                max_stale: self.max_stale,
            },
            upstream: UpstreamConfig {
                timeout: self.upstream_timeout,
                max_body_size: self.max_body_size,
                backoff_min: self.retry_backoff_min,
                backoff_max: self.retry_backoff_max,
                extra_roots,
            },
            demo: self.demo.then_some(self.demo_listen),
            workers: self.workers.map(usize::from),
            shutdown_timeout: self.shutdown_timeout,
            log_format: self.log_format,
        })
    }
}

fn usage_error(message: String) -> clap::Error {
    Cli::command().error(ErrorKind::ValueValidation, message)
}

/// Reads every certificate from a PEM file; an empty or unreadable file is an error.
fn load_ca_file(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{} is not a PEM certificate file: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} holds no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// An http(s) URL with a host, no query and no fragment (the upstream base).
fn parse_base_url(value: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(value).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "scheme must be http or https, not {}",
            url.scheme()
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("the URL has no host".to_string());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("the URL must not have a query or fragment".to_string());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("the URL must not carry credentials".to_string());
    }
    Ok(url)
}

/// RFC 8414 §2: an issuer is an https URL (http tolerated for local setups)
/// with no query or fragment. Kept as typed, since §3.3 compares it exactly.
fn parse_issuer(value: &str) -> Result<String, String> {
    parse_base_url(value)?;
    Ok(value.to_string())
}

fn parse_duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value)
        .map_err(|e| format!("{e} (expected a duration such as 30s, 5m, 24h)"))
}

fn parse_positive_duration(value: &str) -> Result<Duration, String> {
    let d = parse_duration(value)?;
    if d.is_zero() {
        return Err("must be greater than zero".to_string());
    }
    Ok(d)
}

/// Parses `1024`, `256KiB`, `1MiB` (also `KB`/`MB`, read as binary units).
fn parse_size(value: &str) -> Result<usize, String> {
    let v = value.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| "expected a size such as 262144, 256KiB or 1MiB".to_string())?;
    let mult = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        other => return Err(format!("unknown size unit '{other}' (use KiB or MiB)")),
    };
    let size = n
        .checked_mul(mult)
        .ok_or_else(|| "size is too large".to_string())?;
    if size == 0 {
        return Err("must be greater than zero".to_string());
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let mut full = vec!["oauth-metadata-gateway"];
        full.extend_from_slice(args);
        Cli::config_from_args(full)
    }

    #[test]
    fn defaults_follow_the_spec() {
        let c = parse(&[]).expect("defaults are valid");
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(
            c.document.upstream_url,
            "http://localhost:7788/.well-known/oauth-authorization-server"
        );
        assert_eq!(c.document.issuer.as_str(), "http://localhost:7788");
        assert_eq!(c.document.ttl, Duration::from_secs(300));
        assert_eq!(c.document.max_stale, Duration::from_secs(24 * 3600));
        assert_eq!(c.upstream.timeout, Duration::from_secs(5));
        assert_eq!(c.upstream.max_body_size, 256 * 1024);
        assert_eq!(c.upstream.backoff_max, Duration::from_secs(30));
        assert!(c.demo.is_none());
    }

    #[test]
    fn upstream_with_trailing_slash_or_path_builds_the_fetch_url() {
        let c = parse(&["--upstream", "https://as.example.com/"]).unwrap();
        assert_eq!(
            c.document.upstream_url,
            "https://as.example.com/.well-known/oauth-authorization-server"
        );
        assert_eq!(c.document.issuer.as_str(), "https://as.example.com");
    }

    #[test]
    fn durations_and_sizes_parse() {
        let c = parse(&[
            "--ttl",
            "2s",
            "--max-stale",
            "5m",
            "--upstream-timeout",
            "250ms",
            "--max-body-size",
            "1MiB",
        ])
        .unwrap();
        assert_eq!(c.document.ttl, Duration::from_secs(2));
        assert_eq!(c.document.max_stale, Duration::from_secs(300));
        assert_eq!(c.upstream.timeout, Duration::from_millis(250));
        assert_eq!(c.upstream.max_body_size, 1024 * 1024);
    }

    #[test]
    fn bad_values_name_the_flag() {
        for (args, flag) in [
            (vec!["--ttl", "soon"], "--ttl"),
            (vec!["--ttl", "0s"], "--ttl"),
            (vec!["--listen", "nowhere"], "--listen"),
            (vec!["--upstream", "ftp://x"], "--upstream"),
            (vec!["--upstream", "not a url"], "--upstream"),
            (vec!["--issuer", "https://a/?q=1"], "--issuer"),
            (vec!["--max-body-size", "12 parsecs"], "--max-body-size"),
            (vec!["--workers", "0"], "--workers"),
            (
                vec!["--upstream-ca", "/nonexistent/ca.pem"],
                "--upstream-ca",
            ),
            (
                vec!["--retry-backoff-min", "1m", "--retry-backoff-max", "1s"],
                "--retry-backoff-min",
            ),
        ] {
            let err = parse(&args).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            let text = err.to_string();
            assert!(text.contains(flag), "{args:?}: {text}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("256KiB"), Ok(262_144));
        assert_eq!(parse_size("2 MiB"), Ok(2 * 1024 * 1024));
        assert!(parse_size("0").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999999999999GiB").is_err());
    }
}
