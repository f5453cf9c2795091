//! The listener flags (`--tls-cert`, `--keep-alive`, `--max-connections`...)
//! and their conversion into [`ListenerConfig`]; what the limits mean is
//! documented with the types in [`crate::listener`].

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::values::{parse_duration, parse_positive_duration};
use crate::listener::{tls, ListenerConfig, ServerLimits, DEFAULT_MAX_CONNECTIONS};

/// Listener flags, flattened into [`crate::Cli`].
#[derive(Debug, Clone, Args)]
pub struct ListenerArgs {
    /// PEM file with the certificate chain to serve HTTPS with (leaf first);
    /// needs --tls-key. Clients then get HTTP/2 or HTTP/1.1 by ALPN.
    #[arg(long, env = "GATEWAY_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1) for --tls-cert.
    #[arg(long, env = "GATEWAY_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often --tls-cert and --tls-key are checked for new contents
    /// (a renewed certificate is served without a restart or a signal,
    /// e.g. a Kubernetes Secret updated by cert-manager); 0s checks only on
    /// SIGHUP.
    #[arg(long, env = "GATEWAY_TLS_RELOAD_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub tls_reload_interval: Duration,

    /// Time a client has, from connecting, to finish the TLS handshake and
    /// send its first complete request head (slow clients get 408).
    #[arg(long, env = "GATEWAY_CLIENT_REQUEST_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub client_request_timeout: Duration,

    /// How long an idle keep-alive connection is kept open between requests
    /// (0s: close after every response).
    #[arg(long, env = "GATEWAY_KEEP_ALIVE", default_value = "15s", value_parser = parse_duration)]
    pub keep_alive: Duration,

    /// Most client connections open at once, for the whole process (split
    /// evenly over the workers); further connections wait in the kernel's
    /// accept queue. Worst-case memory is about 128 KiB per connection.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

impl ListenerArgs {
    /// Loads the TLS files (if any) and collects the limits. A problem with
    /// the files is a usage error naming the flag (exit code 2).
    pub fn into_config(self) -> Result<ListenerConfig, clap::Error> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                tls::ListenerTls::load(cert, key, Some(self.tls_reload_interval))
                    .map_err(|e| super::usage_error(e.to_string()))?,
            ),
            // clap's `requires` makes a lone flag a usage error already.
            _ => None,
        };
        Ok(ListenerConfig {
            tls,
            limits: ServerLimits {
                client_request_timeout: self.client_request_timeout,
                keep_alive: self.keep_alive,
                max_connections: self.max_connections as usize,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<crate::config::Config, clap::Error> {
        let mut full = vec!["oauth-metadata-gateway"];
        full.extend_from_slice(args);
        crate::cli::Cli::config_from_args(full)
    }

    #[test]
    fn flag_defaults() {
        let c = parse(&[]).unwrap().listener;
        assert!(c.tls.is_none());
        assert!(parse(&["--tls-reload-interval", "soon"])
            .unwrap_err()
            .to_string()
            .contains("--tls-reload-interval"));
        assert_eq!(
            c.limits,
            ServerLimits {
                client_request_timeout: Duration::from_secs(5),
                keep_alive: Duration::from_secs(15),
                max_connections: 512,
            }
        );
        let c = parse(&["--keep-alive", "0s", "--max-connections", "64"]).unwrap();
        assert_eq!(c.listener.limits.keep_alive, Duration::ZERO);
        assert_eq!(c.listener.limits.max_connections, 64);
    }

    #[test]
    fn bad_limits_name_the_flag() {
        for (args, flag) in [
            (
                vec!["--client-request-timeout", "0s"],
                "--client-request-timeout",
            ),
            (
                vec!["--client-request-timeout", "soon"],
                "--client-request-timeout",
            ),
            (vec!["--keep-alive", "forever"], "--keep-alive"),
            (vec!["--max-connections", "0"], "--max-connections"),
            (vec!["--max-connections=-5"], "--max-connections"),
        ] {
            let err = parse(&args).expect_err("must be rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
            assert!(err.to_string().contains(flag), "{args:?}: {err}");
        }
    }
}
