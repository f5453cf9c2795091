//! The client-facing listener: optional TLS (`--tls-cert`, `--tls-key`) and
//! the limits that keep abusive clients from exhausting the server.
//!
//! The gateway sits on the public edge of an MCP server, so every resource a
//! client can hold is bounded:
//!
//! | What | Bound | Where |
//! | --- | --- | --- |
//! | Request head (HTTP/1.1) | 128 KiB and 96 header fields, else 431 and close | fixed in actix-http (`MAX_BUFFER_SIZE`, `MAX_HEADERS`) |
//! | Pipelined requests per connection | 16 | fixed in actix-http |
//! | Time to send the first request head (and to finish TLS) | `--client-request-timeout`, else 408 and close | actix-http head timer, actix-tls handshake timeout |
//! | Idle time between requests | `--keep-alive` | actix-http keep-alive timer (HTTP/2: ping interval) |
//! | Any connection with no request in progress | `--keep-alive` + `--client-request-timeout` | [`watchdog`]: actix-http times only the *first* request head on a connection |
//! | Connections per worker | `--max-connections` | actix-server stops accepting; the kernel backlog holds the rest |
//! | Request bodies on metadata routes | none accepted: 413 and close | [`crate::http::limits`] |
//!
//! HTTP/2 (TLS with ALPN `h2` only) uses the h2 crate's defaults, which
//! actix-http does not expose: a header block may be up to 16 MiB while it
//! is being received, and streams are bounded by flow control rather than a
//! stream count. The watchdog still closes such a connection once it has had
//! no request in progress for `--keep-alive` + `--client-request-timeout`.

pub mod tls;
pub mod watchdog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

/// Default per-worker connection cap. See [`ServerLimits::max_connections`].
pub const DEFAULT_MAX_CONNECTIONS: u32 = 256;

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

    /// Time a client has, from connecting, to finish the TLS handshake and
    /// send its first complete request head (slow clients get 408).
    #[arg(long, env = "GATEWAY_CLIENT_REQUEST_TIMEOUT", default_value = "5s", value_parser = crate::config::parse_positive_duration)]
    pub client_request_timeout: Duration,

    /// How long an idle keep-alive connection is kept open between requests
    /// (0s: close after every response).
    #[arg(long, env = "GATEWAY_KEEP_ALIVE", default_value = "15s", value_parser = crate::config::parse_duration)]
    pub keep_alive: Duration,

    /// Most client connections one HTTP worker holds at once; further
    /// connections wait in the kernel's accept queue.
    #[arg(long, env = "GATEWAY_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
}

/// Validated listener settings.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// rustls configuration when serving HTTPS.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Limits on what one client can hold.
    pub limits: ServerLimits,
}

/// Limits on client connections (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerLimits {
    /// Deadline for the TLS handshake and the first request head.
    pub client_request_timeout: Duration,
    /// Idle time allowed between requests; zero disables keep-alive.
    pub keep_alive: Duration,
    /// Connections per worker. Worst-case memory for request heads is
    /// `workers × max_connections × 128 KiB`.
    pub max_connections: usize,
}

impl ServerLimits {
    /// How long a connection may go with no request in progress before the
    /// [`watchdog`] closes it: the idle allowance plus the time to send a
    /// request head.
    pub fn idle_connection_limit(&self) -> Duration {
        self.keep_alive.saturating_add(self.client_request_timeout)
    }
}

impl ListenerArgs {
    /// Loads the TLS files (if any) and collects the limits. A problem with
    /// the files is a usage error naming the flag (exit code 2).
    pub fn into_config(self) -> Result<ListenerConfig, clap::Error> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(
                tls::server_config(cert, key)
                    .map_err(|e| crate::config::usage_error(e.to_string()))?,
            )),
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
