//! The bound on upstream requests in flight per upstream host, and the
//! share of it kept for clients.
//!
//! Every request to an upstream holds a [`Permit`] of its host (scheme,
//! host and port) from before it is sent until its answer is read, so at
//! most `--upstream-concurrency` requests are in flight per host whatever
//! the number of documents: start-up warm-up of 10,000 documents is a
//! queue, not a burst.
//!
//! Two classes share the bound. [`Priority::Client`] work (a request that
//! found nothing servable and waits on the fetch) may use all of it;
//! [`Priority::Background`] work (warm-up, refresh-ahead, retries) may use
//! all but a reserve of a quarter (at least one, when the bound is 2 or
//! more). So a client's cold fetch never waits behind queued background
//! work: it waits only while clients themselves fill the bound. Each class
//! queues in FIFO order (tokio's fair semaphore). Background work takes
//! its class permit first and the host permit second, so it can never hold
//! a host permit while waiting.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Who is waiting for the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A client request with nothing servable to answer from.
    Client,
    /// Warm-up, refresh-ahead or a retry: nobody waits on it.
    Background,
}

/// The right to send one request to one host; released on drop.
#[derive(Debug)]
pub struct Permit {
    _host: Option<OwnedSemaphorePermit>,
    _background: Option<OwnedSemaphorePermit>,
}

#[derive(Debug)]
struct HostLimit {
    all: Arc<Semaphore>,
    background: Arc<Semaphore>,
}

/// Per-host limits, created on first use of a host.
#[derive(Debug)]
pub struct Limiter {
    limit: usize,
    hosts: Mutex<HashMap<Box<str>, Arc<HostLimit>>>,
}

impl Limiter {
    /// At most `limit` (>= 1) requests in flight per host.
    pub fn new(limit: usize) -> Self {
        Self {
            limit: limit.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The most background requests in flight per host.
    pub fn background_limit(&self) -> usize {
        background_share(self.limit)
    }

    /// Waits for a permit to send a request to `url`'s host.
    pub async fn acquire(&self, url: &str, priority: Priority) -> Permit {
        let host = self.host(origin(url));
        let background = match priority {
            Priority::Client => None,
            Priority::Background => host.background.clone().acquire_owned().await.ok(),
        };
        // The semaphores are never closed, so acquiring cannot fail; if it
        // somehow did, the request goes ahead rather than hang.
        let all = host.all.clone().acquire_owned().await.ok();
        Permit {
            _host: all,
            _background: background,
        }
    }

    fn host(&self, origin: &str) -> Arc<HostLimit> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(h) = hosts.get(origin) {
            return h.clone();
        }
        let h = Arc::new(HostLimit {
            all: Arc::new(Semaphore::new(self.limit)),
            background: Arc::new(Semaphore::new(background_share(self.limit))),
        });
        hosts.insert(origin.into(), h.clone());
        h
    }
}

/// Background requests may use the bound less a quarter kept for clients
/// (at least one kept when the bound is 2 or more).
fn background_share(limit: usize) -> usize {
    if limit <= 1 {
        1
    } else {
        limit - limit.div_ceil(4).max(1)
    }
}

/// `scheme://authority` of an absolute URL (the whole text if it has none).
pub fn origin(url: &str) -> &str {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return url;
    };
    match url[start..].find(['/', '?', '#']) {
        Some(end) => &url[..start + end],
        None => url,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn shares_and_origins() {
        assert_eq!(background_share(1), 1);
        assert_eq!(background_share(2), 1);
        assert_eq!(background_share(4), 3);
        assert_eq!(background_share(8), 6);
        assert_eq!(background_share(9), 6);
        assert_eq!(origin("http://a:1/x/y"), "http://a:1");
        assert_eq!(origin("https://a"), "https://a");
        assert_eq!(origin("nonsense"), "nonsense");
    }

    #[tokio::test]
    async fn background_work_leaves_room_for_clients() {
        let l = Limiter::new(4);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(l.acquire("http://h/a", Priority::Background).await);
        }
        // A fourth background request waits...
        let blocked = tokio::time::timeout(
            Duration::from_millis(50),
            l.acquire("http://h/b", Priority::Background),
        )
        .await;
        assert!(blocked.is_err(), "background is capped at 3 of 4");
        // ...while a client gets the reserved permit at once.
        let client = tokio::time::timeout(
            Duration::from_millis(50),
            l.acquire("http://h/c", Priority::Client),
        )
        .await;
        assert!(client.is_ok());
        // Another host has its own bound.
        let other = tokio::time::timeout(
            Duration::from_millis(50),
            l.acquire("http://other/a", Priority::Background),
        )
        .await;
        assert!(other.is_ok());
        drop(held);
    }
}
