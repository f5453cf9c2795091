//! Freshness rules, written once: when a stored document is fresh, when it
//! may still be served stale, when it must be dropped, and when the
//! background refresher should fetch its successor.
//!
//! - RFC 9111 §4.2: a stored response is fresh while its age is below its
//!   freshness lifetime. Each stored document carries its own [`Freshness`]
//!   whose `ttl` is the freshness [`crate::cache_rules::upstream_freshness`] allowed it
//!   at receipt (already net of the upstream's `Age`), so the age classified
//!   here is the time the gateway has held it (RFC 9111 §4.2.3, "resident
//!   time"); the upstream's `Age` is added only to the `Age` sent to clients.
//! - RFC 5861 §4 (stale-if-error): past its lifetime a response may still be
//!   used when revalidation fails, for at most `--max-stale`.
//! - RFC 5861 §3 (stale-while-revalidate), done ahead of time: the refresher
//!   fetches a successor shortly *before* the lifetime ends, so a healthy
//!   upstream never lets a client see a stale or missing document.

use std::time::Duration;

/// Lifetime settings of one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Freshness {
    /// Freshness lifetime (`--ttl`).
    pub ttl: Duration,
    /// How long past `ttl` the document may be served (`--max-stale`).
    pub max_stale: Duration,
    /// Upper bound on one upstream fetch (`--upstream-timeout`); the refresh
    /// starts this long before expiry so it normally completes in time.
    pub fetch_budget: Duration,
}

/// Where a stored document stands at a given age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FreshnessState {
    /// Age below TTL; `remaining` is the freshness left.
    Fresh {
        /// Time until the document turns stale.
        remaining: Duration,
    },
    /// Past TTL, within max-stale; `past` is how long past TTL.
    Stale {
        /// Time since the document turned stale.
        past: Duration,
    },
    /// Past TTL + max-stale: must not be served.
    Expired,
}

impl Freshness {
    /// The rules of a document with `ttl` and `max_stale` fetched from
    /// `urls` upstream URLs, each attempt bounded by `fetch_timeout`.
    pub fn new(ttl: Duration, max_stale: Duration, fetch_timeout: Duration, urls: usize) -> Self {
        let attempts = u32::try_from(urls.max(1)).unwrap_or(u32::MAX);
        Self {
            ttl,
            max_stale,
            fetch_budget: fetch_timeout.saturating_mul(attempts),
        }
    }

    /// [`Freshness::refresh_age`] moved earlier by up to a tenth of the TTL,
    /// by `spread` in [0, 1) (random per refresh): documents fetched in the
    /// same second drift apart, so in steady state the upstream sees about
    /// documents / TTL requests per second instead of a burst every TTL.
    pub fn jittered_refresh_age(&self, spread: f64) -> Duration {
        let early = self.ttl.mul_f64(spread.clamp(0.0, 1.0) / 10.0);
        self.refresh_age().saturating_sub(early)
    }

    /// The first refresh after start-up's warm-up, by `spread` in [0, 1):
    /// anywhere from a tenth of the refresh age to the refresh age. Warm-up
    /// fetches every document within seconds (at the per-host bound), and
    /// the tenth of a TTL of [`Freshness::jittered_refresh_age`] would take
    /// many TTLs to undo that burst. Spread over (nearly) a whole refresh
    /// age once, the documents' phases cover the cycle, and the upstream
    /// sees about documents / TTL requests per second from then on, the
    /// first cycle included (each document is fetched once early, once).
    pub fn first_refresh_age(&self, spread: f64) -> Duration {
        let refresh = self.refresh_age();
        refresh.saturating_sub(refresh.mul_f64(spread.clamp(0.0, 1.0) * 0.9))
    }

    /// The earliest age at which any refresh schedule fetches a successor
    /// ([`Freshness::jittered_refresh_age`] at its widest): background work
    /// finding a document younger than this skips the fetch (a client's
    /// cold fetch stored it meanwhile); older, the jittered schedule chose
    /// this moment and it fetches.
    pub fn earliest_refresh_age(&self) -> Duration {
        self.jittered_refresh_age(1.0)
            .min(self.first_refresh_age(1.0))
    }

    /// Classifies a document of age `age`.
    pub fn classify(&self, age: Duration) -> FreshnessState {
        if age < self.ttl {
            FreshnessState::Fresh {
                remaining: self.ttl - age,
            }
        } else if age < self.hard_lifetime() {
            FreshnessState::Stale {
                past: age - self.ttl,
            }
        } else {
            FreshnessState::Expired
        }
    }

    /// How long the cache may hold the entry at all: TTL + max-stale.
    pub fn hard_lifetime(&self) -> Duration {
        self.ttl.saturating_add(self.max_stale)
    }

    /// Age at which the refresher fetches a successor: a margin before the
    /// TTL ends, the smaller of one fetch budget and a tenth of the TTL, so a
    /// refresh normally lands in time while the fetch rate stays close to one
    /// per TTL.
    pub fn refresh_age(&self) -> Duration {
        let margin = self.fetch_budget.min(self.ttl / 10);
        self.ttl - margin
    }
}

/// The largest delta-seconds value a cache sends (RFC 9111 §1.2.2: a
/// larger value is sent as 2147483648).
pub const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// Whole seconds of a duration, rounded down and capped at
/// [`MAX_DELTA_SECONDS`], for delta-seconds fields (`Age`, RFC 9111 §5.1;
/// `max-age`, §5.2.2.1).
pub fn whole_seconds(d: Duration) -> u64 {
    d.as_secs().min(MAX_DELTA_SECONDS)
}

/// Whole seconds rounded up, for deadlines told to clients (`Retry-After`,
/// `max-age`), so a client never comes back too early.
pub fn ceil_seconds(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: Freshness = Freshness {
        ttl: Duration::from_secs(300),
        max_stale: Duration::from_secs(60),
        fetch_budget: Duration::from_secs(5),
    };

    #[test]
    fn every_jittered_refresh_is_at_or_after_the_earliest() {
        for spread in [0.0, 0.25, 0.5, 0.999, 1.0] {
            let at = F.jittered_refresh_age(spread);
            assert!(at >= F.earliest_refresh_age(), "{spread}: {at:?}");
            assert!(at <= F.refresh_age(), "{spread}: {at:?}");
        }
        for spread in [0.0, 0.5, 0.999] {
            let at = F.first_refresh_age(spread);
            assert!(at >= F.earliest_refresh_age(), "{spread}: {at:?}");
            assert!(at >= F.refresh_age() / 10 && at <= F.refresh_age());
        }
        assert_eq!(F.earliest_refresh_age(), Duration::from_millis(29_500));
    }

    #[test]
    fn classifies_across_the_boundaries() {
        assert_eq!(
            F.classify(Duration::ZERO),
            FreshnessState::Fresh {
                remaining: Duration::from_secs(300)
            }
        );
        assert_eq!(
            F.classify(Duration::from_millis(299_999)),
            FreshnessState::Fresh {
                remaining: Duration::from_millis(1)
            }
        );
        assert_eq!(
            F.classify(Duration::from_secs(300)),
            FreshnessState::Stale {
                past: Duration::ZERO
            }
        );
        assert_eq!(
            F.classify(Duration::from_millis(359_999)),
            FreshnessState::Stale {
                past: Duration::from_millis(59_999)
            }
        );
        assert_eq!(
            F.classify(Duration::from_secs(360)),
            FreshnessState::Expired
        );
    }

    #[test]
    fn zero_max_stale_means_never_stale() {
        let f = Freshness {
            max_stale: Duration::ZERO,
            ..F
        };
        assert_eq!(
            f.classify(Duration::from_secs(300)),
            FreshnessState::Expired
        );
    }

    #[test]
    fn refresh_starts_before_expiry() {
        assert_eq!(F.refresh_age(), Duration::from_secs(295));
        let short = Freshness {
            ttl: Duration::from_secs(1),
            ..F
        };
        assert_eq!(short.refresh_age(), Duration::from_millis(900));
    }

    #[test]
    fn jitter_moves_the_refresh_earlier_by_at_most_a_tenth() {
        assert_eq!(F.jittered_refresh_age(0.0), F.refresh_age());
        assert_eq!(F.jittered_refresh_age(0.5), Duration::from_secs(280));
        assert_eq!(F.jittered_refresh_age(1.0), Duration::from_secs(265));
        assert_eq!(F.jittered_refresh_age(7.0), Duration::from_secs(265));
        let f = Freshness::new(
            Duration::from_secs(60),
            Duration::ZERO,
            Duration::from_secs(5),
            3,
        );
        assert_eq!(f.fetch_budget, Duration::from_secs(15));
    }

    #[test]
    fn rounding() {
        assert_eq!(whole_seconds(Duration::from_millis(1999)), 1);
        assert_eq!(whole_seconds(Duration::from_secs(1 << 40)), 1 << 31);
        assert_eq!(whole_seconds(Duration::MAX), MAX_DELTA_SECONDS);
        assert_eq!(ceil_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_seconds(Duration::from_secs(2)), 2);
        assert_eq!(ceil_seconds(Duration::ZERO), 0);
    }
}
