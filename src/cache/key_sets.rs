//! Key sets (RFC 7517 JWK Sets) in the document caches: the per-slot state
//! a key set needs beyond a metadata document's, and the two rules that
//! are theirs alone.
//!
//! - **Where it comes from.** A configured `jwks_uri` is the slot's one
//!   upstream URL. Otherwise it is the `jwks_uri` of the authorization
//!   server's validated metadata document (RFC 8414 §2), read again before
//!   every fetch of the key set, so the key set follows the document when
//!   it changes. A `jwks_uri` that starts with the issuer goes through the
//!   same issuer→upstream mapping as the metadata (the gateway may reach
//!   the server at an internal address); a plain-http one is refused
//!   unless it is on the origin the metadata itself came from.
//! - **On-demand revalidation** (RFC 9111 §5.2.1.4 `no-cache`, §5.2.1.1
//!   `max-age=0`, or a `?kid` the stored set lacks): at most one per key
//!   set per cooldown, counted from the start of the last one; requests
//!   that start or join it wait for it, requests within the cooldown get
//!   the stored set as a normal hit. [`OnDemand`] holds that state.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use tokio::sync::watch;

use crate::config::{FollowedMetadata, KeySetConfig};
use crate::error::FetchError;
use crate::key_set;
use crate::tenant::PLACEHOLDER;

use super::slot::DocumentSlot;
use super::StoredDocument;

/// The result of one on-demand revalidation: the stored set and the
/// upstream's status (200 new bytes, 304 renewed), or why it failed.
pub type Revalidation = Result<(Arc<StoredDocument>, u16), FetchError>;

/// What a key-set slot holds beyond a metadata slot (boxed in the slot:
/// metadata slots pay one pointer for it).
#[derive(Debug)]
pub struct KeySetState {
    /// Its configuration (shared with every generation that has it).
    pub config: Arc<KeySetConfig>,
    /// For a configured key set that follows its metadata: the metadata
    /// document's slot, set by each generation (a reload may replace it).
    pub parent: ArcSwapOption<DocumentSlot>,
    /// The upstream URL the metadata's `jwks_uri` maps to, once known.
    location: Mutex<Option<Arc<[Arc<str>]>>>,
    on_demand: Mutex<OnDemand>,
}

/// The on-demand revalidation state of one key set.
#[derive(Debug, Default)]
struct OnDemand {
    /// When the last one started (the cooldown counts from there).
    started: Option<Instant>,
    /// The one running (or last run): its result once it has one.
    running: Option<watch::Receiver<Option<Revalidation>>>,
}

/// What a request that asks for a revalidation does.
#[derive(Debug)]
pub enum OnDemandStart {
    /// Within the cooldown and none running: answer from the cache.
    Cooldown,
    /// Run it and publish the result.
    Lead(watch::Sender<Option<Revalidation>>),
    /// Wait for the one running.
    Join(watch::Receiver<Option<Revalidation>>),
}

impl KeySetState {
    /// The state of a new key-set slot.
    pub fn new(config: Arc<KeySetConfig>) -> Self {
        Self {
            config,
            parent: ArcSwapOption::empty(),
            location: Mutex::new(None),
            on_demand: Mutex::new(OnDemand::default()),
        }
    }

    fn on_demand(&self) -> MutexGuard<'_, OnDemand> {
        self.on_demand
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether it follows its metadata's `jwks_uri` (not configured).
    pub fn follows(&self) -> Option<&FollowedMetadata> {
        self.config.follows.as_ref()
    }

    /// The URL found in the metadata, once known.
    pub fn location(&self) -> Option<Arc<[Arc<str>]>> {
        self.location
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records where the key set is now fetched from.
    pub fn set_location(&self, url: Arc<str>) {
        let mut location = self.location.lock().unwrap_or_else(PoisonError::into_inner);
        if location.as_ref().and_then(|l| l.first()) != Some(&url) {
            *location = Some(Arc::from(vec![url]));
        }
    }

    /// A request asks for a revalidation at `now`: join the one running,
    /// lead a new one, or (within the cooldown) none.
    pub fn begin_on_demand(&self, now: Instant) -> OnDemandStart {
        let mut state = self.on_demand();
        if let Some(rx) = &state.running {
            if rx.borrow().is_none() && rx.has_changed().is_ok() {
                return OnDemandStart::Join(rx.clone());
            }
        }
        if let Some(started) = state.started {
            if now.saturating_duration_since(started) < self.config.refetch_cooldown {
                return OnDemandStart::Cooldown;
            }
        }
        let (tx, rx) = watch::channel(None);
        state.started = Some(now);
        state.running = Some(rx);
        OnDemandStart::Lead(tx)
    }
}

/// Waits (at most `limit`) for an on-demand revalidation's result.
pub async fn wait(mut rx: watch::Receiver<Option<Revalidation>>, limit: Duration) -> Revalidation {
    let waited = tokio::time::timeout(limit, rx.wait_for(Option::is_some)).await;
    match waited {
        Ok(Ok(result)) => result.clone().unwrap_or(Err(FetchError::FetcherStopped)),
        Ok(Err(_)) => Err(FetchError::FetcherStopped),
        Err(_) => Err(FetchError::Timeout(limit)),
    }
}

/// Finds the key set's upstream URL in its metadata document `metadata`
/// (see [`crate::key_set::upstream_location`]); `tenant` fills a
/// template's `{tenant}`.
pub fn locate(
    follows: &FollowedMetadata,
    tenant: Option<&str>,
    metadata: &StoredDocument,
) -> Result<Arc<str>, FetchError> {
    let fill = |s: &str| match tenant {
        Some(t) => s.replace(PLACEHOLDER, t),
        None => s.to_string(),
    };
    let declared = key_set::declared_jwks_uri(&metadata.document.body).ok_or_else(|| {
        FetchError::KeySetLocation(format!(
            "the metadata document from {} has no jwks_uri (set jwks_uri in the configuration)",
            metadata.url
        ))
    })?;
    key_set::upstream_location(
        &declared,
        &fill(&follows.issuer),
        &fill(&follows.upstream),
        &metadata.url,
    )
    .map(Arc::from)
    .map_err(FetchError::KeySetLocation)
}
