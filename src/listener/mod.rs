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
//! | Open client connections | `--max-connections` (whole process, split evenly over the workers) | actix-server stops accepting; the kernel backlog holds the rest |
//! | Request bodies on metadata routes | none accepted: 413 and close | [`crate::http::limits`] |
//!
//! HTTP/2 (TLS with ALPN `h2` only) uses the h2 crate's defaults, which
//! actix-http 3 does not expose: a header block may be up to 16 MiB while it
//! is being received (measured: an unfinished 4 MiB block costs about
//! 4.1 MiB), and streams are bounded by flow control rather than a stream
//! count. The watchdog still closes such a connection once it has had no
//! request in progress for `--keep-alive` + `--client-request-timeout`, but
//! where untrusted clients reach the TLS listener directly, memory must be
//! sized for `--max-connections × 16 MiB`, or TLS terminated by a proxy.
//! (HTTP/2 cannot be switched off: awc, the upstream client, builds
//! actix-http with h2, and actix-http then always offers `h2` by ALPN.)

pub mod tls;
pub mod watchdog;

use std::time::Duration;

/// Default cap on open client connections (whole process). Measured worst
/// case: an unfinished 120 KiB request head costs about 124 KiB, so 512
/// such connections add about 64 MiB (benches/README.md).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 512;

/// Validated listener settings.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    /// The rustls configuration and certificate files when serving HTTPS.
    pub tls: Option<tls::ListenerTls>,
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
    /// Open connections, whole process. Worst-case memory for request
    /// heads is `max_connections × 128 KiB`.
    pub max_connections: usize,
}

impl ServerLimits {
    /// actix-server's limit is per worker: the total split evenly, rounded
    /// up (so every worker accepts at least one connection).
    pub fn max_connections_per_worker(&self, workers: usize) -> usize {
        self.max_connections.div_ceil(workers.max(1)).max(1)
    }

    /// How long a connection may go with no request in progress before the
    /// [`watchdog`] closes it: the idle allowance plus the time to send a
    /// request head.
    pub fn idle_connection_limit(&self) -> Duration {
        self.keep_alive.saturating_add(self.client_request_timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> ServerLimits {
        ServerLimits {
            client_request_timeout: Duration::from_secs(5),
            keep_alive: Duration::from_secs(15),
            max_connections,
        }
    }

    #[test]
    fn the_connection_cap_is_split_over_the_workers() {
        assert_eq!(limits(512).max_connections_per_worker(2), 256);
        assert_eq!(limits(512).max_connections_per_worker(3), 171);
        assert_eq!(limits(512).max_connections_per_worker(0), 512);
        assert_eq!(limits(1).max_connections_per_worker(4), 1);
    }

    #[test]
    fn idle_allowance_is_keep_alive_plus_request_timeout() {
        assert_eq!(limits(1).idle_connection_limit(), Duration::from_secs(20));
    }
}
