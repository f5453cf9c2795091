//! Restoring from the state directory (`--state-dir`): at start-up (or
//! when a reload adds a document) what was saved is read back, checked and
//! validated again exactly like a fetched document, so a restart during an
//! upstream outage still serves the last good bytes.
//!
//! - A saved document is served only if its file is intact
//!   ([`super::store`]), it belongs to the same document, issuer and
//!   one of its upstream URLs, its bytes pass RFC 8414 validation for that
//!   issuer, and it is not older than its freshness plus `max_stale`.
//!   Anything else is logged (`state file ignored`) and never served.
//! - Template tenants are saved too, under `TEMPLATE@TENANT` (a template's
//!   name contains `{tenant}`, so no configured document has such a key),
//!   in member files named after the template and the tenant
//!   ([`super::store`]). They are the template's disk tier: at start-up
//!   (or when a reload adds a template) the directory is *listed*, not
//!   read ([`StateWriter::list_tenants`]), and a tenant is read back only
//!   when a request finds it missing from memory
//!   ([`StateWriter::load_saved`]), checked exactly like a restore.
//!   Tenant files of an earlier version (named by hash) are read once at
//!   start-up and renamed ([`StateWriter::migrate_tenants`]).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::cache::slot::DocumentSlot;
use crate::cache::StoredDocument;
use crate::cache_rules::upstream_freshness::{secs_u32, Source, Timing, UpstreamHeaders};

use super::store::{
    file_name_for, group_tag, hashed_file_name, ListedMember, LoadProblem, SavedDocument, StateDir,
};
use super::writer::StateWriter;

/// What reading the state directory back gave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RestoreReport {
    /// Documents now served from their saved copy.
    pub restored: usize,
    /// Saved copies not used (logged one by one).
    pub ignored: usize,
}

impl StateWriter {
    /// Reads back the saved copy under `key` on a blocking thread
    /// (checked: format, checksum, key; see [`StateDir::load`]). `Ok(None)`:
    /// there is no such file. `permit` is held until the read is over,
    /// even if the caller stops waiting: it bounds the blocking threads
    /// reading at once (a stuck disk holds them all, never more).
    pub async fn load_saved(
        &self,
        key: String,
        permit: tokio::sync::OwnedSemaphorePermit,
    ) -> Result<Option<SavedDocument>, LoadProblem> {
        let dir = self.dir.clone();
        let max_body = self.max_body;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            dir.load(&key, max_body)
        })
        .await
        .unwrap_or_else(|e| Err(LoadProblem::Io(e.to_string())))
    }

    /// Lists the tenant files of the templates named `templates` (one list
    /// per template, in the order given) from the directory's entries and
    /// their metadata alone, on a blocking thread.
    pub async fn list_tenants(&self, templates: Vec<Arc<str>>) -> Vec<Vec<ListedMember>> {
        let dir = self.dir.clone();
        let count = templates.len();
        let listed = tokio::task::spawn_blocking(move || {
            let tags: Vec<String> = templates.iter().map(|t| group_tag(t)).collect();
            dir.list_members(&tags).unwrap_or_else(|e| {
                tracing::warn!(state_dir = %dir.path().display(), error = %e, "cannot list the state dir: templates start with an empty disk tier");
                vec![Vec::new(); tags.len()]
            })
        })
        .await;
        listed.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "listing the state dir failed: templates start with an empty disk tier");
            vec![Vec::new(); count]
        })
    }

    /// Removes the tenant files of templates other than `templates` (no
    /// longer configured), found by name alone; returns how many.
    async fn remove_foreign_tenants(&self, templates: &[Arc<str>]) -> usize {
        let dir = self.dir.clone();
        let tags: Vec<String> = templates.iter().map(|t| group_tag(t)).collect();
        tokio::task::spawn_blocking(move || {
            let names = dir.foreign_members(&tags).unwrap_or_default();
            let mut removed = 0;
            for name in names {
                match dir.remove_name(&name) {
                    Ok(()) => removed += 1,
                    Err(e) => tracing::warn!(error = %e, "cannot remove the state file of a template no longer configured"),
                }
            }
            removed
        })
        .await
        .unwrap_or(0)
    }

    /// Renames the tenant files of an earlier version (named by the hash
    /// of their key, so they had to be read to be placed) to member files
    /// ([`super::store`]), so later starts only list them. `saved` are the
    /// copies read from them: each is written under its new name, then its
    /// old file removed. Runs on a blocking thread; returns how many moved.
    pub async fn migrate_tenants(&self, saved: Vec<SavedDocument>) -> usize {
        if saved.is_empty() {
            return 0;
        }
        let dir = self.dir.clone();
        let moved = tokio::task::spawn_blocking(move || {
            let mut moved = 0;
            for doc in saved {
                let new_name = file_name_for(&doc.key);
                let old_name = hashed_file_name(&doc.key);
                if new_name == old_name {
                    continue;
                }
                match dir.save(&doc).and_then(|()| dir.remove_name(&old_name)) {
                    Ok(()) => moved += 1,
                    Err(e) => tracing::warn!(key = %doc.key, error = %e, "cannot rename an earlier version's tenant file"),
                }
            }
            moved
        })
        .await
        .unwrap_or(0);
        if moved > 0 {
            tracing::info!(
                state_dir = %self.path().display(),
                moved,
                "renamed tenant files of an earlier version (listed, not read, from now on)"
            );
        }
        moved
    }

    /// Reads the saved tenants of the templates named `templates`, one list
    /// of `(tenant, saved copy)` per template, in the order given. Runs on a
    /// blocking thread and reads the whole directory once. A file that
    /// cannot be read is logged as ignored, unless it is the file of one of
    /// the `configured` keys (the configured documents' restore reports
    /// those).
    pub async fn load_tenants(
        &self,
        templates: Vec<Arc<str>>,
        configured: Vec<String>,
    ) -> Vec<Vec<(String, SavedDocument)>> {
        let dir = self.dir.clone();
        let max_body = self.max_body;
        let empty = templates.len();
        let loaded = tokio::task::spawn_blocking(move || {
            // The configured documents' files are theirs to read (and to
            // report).
            let theirs: HashSet<String> = configured.iter().map(|k| file_name_for(k)).collect();
            let (docs, problems) = dir.load_all_but(max_body, &theirs);
            for (path, problem) in problems {
                tracing::warn!(path = %path.display(), reason = %problem, "state file ignored");
            }
            let prefixes: Vec<String> = templates.iter().map(|t| format!("{t}@")).collect();
            let mut out: Vec<Vec<(String, SavedDocument)>> = vec![Vec::new(); templates.len()];
            for doc in docs {
                let found = prefixes.iter().enumerate().find_map(|(i, p)| {
                    doc.key.strip_prefix(p.as_str()).map(|t| (i, t.to_string()))
                });
                if let Some((i, tenant)) = found {
                    out[i].push((tenant, doc));
                }
            }
            out
        })
        .await;
        loaded.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the state dir failed: starting without saved tenants");
            vec![Vec::new(); empty]
        })
    }

    /// Removes the files of documents this configuration does not have:
    /// neither one of the `configured` keys nor a tenant of one of the
    /// `templates` (a document or template removed from the configuration
    /// while the gateway was stopped; a reload removes them itself). Files
    /// that cannot be read are left in place (they are logged where they
    /// are read). Runs on a blocking thread; returns how many it removed.
    pub async fn remove_orphans(&self, configured: Vec<String>, templates: Vec<Arc<str>>) -> usize {
        let tenants = self.remove_foreign_tenants(&templates).await;
        let dir = self.dir.clone();
        let max_body = self.max_body;
        let orphans = tokio::task::spawn_blocking(move || {
            let theirs: HashSet<String> = configured.iter().map(|k| file_name_for(k)).collect();
            let prefixes: Vec<String> = templates.iter().map(|t| format!("{t}@")).collect();
            // Only the files no configured document claims are read.
            let (docs, _) = dir.load_all_but(max_body, &theirs);
            docs.into_iter()
                .map(|d| d.key)
                .filter(|k| !prefixes.iter().any(|p| k.starts_with(p.as_str())))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for key in &orphans {
            self.remove(key);
        }
        let removed = orphans.len() + tenants;
        if removed > 0 {
            tracing::info!(
                state_dir = %self.path().display(),
                removed,
                "removed the state files of documents no longer configured"
            );
        }
        removed
    }

    /// Reads the saved copies of `slots` back; each usable one is returned
    /// with its slot, ready to be stored. Runs on a blocking thread.
    pub async fn load(
        &self,
        slots: Vec<Arc<DocumentSlot>>,
    ) -> (Vec<(Arc<DocumentSlot>, StoredDocument)>, RestoreReport) {
        let dir = self.dir.clone();
        let max_body = self.max_body;
        let loaded = tokio::task::spawn_blocking(move || load_all(&dir, slots, max_body)).await;
        loaded.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "reading the state dir failed: starting without saved documents");
            (Vec::new(), RestoreReport::default())
        })
    }
}

fn load_all(
    dir: &StateDir,
    slots: Vec<Arc<DocumentSlot>>,
    max_body: usize,
) -> (Vec<(Arc<DocumentSlot>, StoredDocument)>, RestoreReport) {
    let now = SystemTime::now();
    let mut out = Vec::new();
    let mut report = RestoreReport::default();
    for slot in slots {
        let saved = match dir.load(&slot.state_key(), max_body) {
            Ok(Some(saved)) => saved,
            Ok(None) => continue,
            Err(problem) => {
                report.ignored += 1;
                tracing::warn!(document = &*slot.name, path = %file_of(dir, &slot.name).display(), reason = %problem, "state file ignored");
                continue;
            }
        };
        match restore(&slot, saved, now) {
            Ok(stored) => {
                report.restored += 1;
                out.push((slot, stored));
            }
            Err(reason) => {
                report.ignored += 1;
                tracing::warn!(document = &*slot.name, path = %file_of(dir, &slot.name).display(), %reason, "state file ignored");
            }
        }
    }
    (out, report)
}

fn file_of(dir: &StateDir, key: &str) -> PathBuf {
    dir.path_for(key)
}

/// How far in the future a saved fetch time may be and still count as
/// "just now" (a clock stepped back by NTP).
const CLOCK_SKEW: Duration = Duration::from_secs(60);

/// Why a saved copy is not served (its text is the log's `reason`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// It is not this document's (issuer, upstream URL) or not valid
    /// metadata.
    #[error("{0}")]
    Mismatch(String),
    /// It is older than its freshness plus `max_stale`.
    #[error("{0}")]
    Expired(String),
}

/// Checks a saved copy against `slot` exactly as a fetched one would be.
pub(crate) fn restore(
    slot: &DocumentSlot,
    saved: SavedDocument,
    now: SystemTime,
) -> Result<StoredDocument, Refusal> {
    if saved.issuer != slot.issuer().as_str() {
        return Err(Refusal::Mismatch(format!(
            "saved for issuer {:?}, the document's issuer is now {:?}",
            saved.issuer,
            slot.issuer().as_str()
        )));
    }
    // A key set that follows its metadata's `jwks_uri` has no configured
    // URL: the saved one is where it was last found (the issuer above ties
    // it to this server), and is used until a fetch reads the metadata.
    let follows = slot.key_set.as_deref().filter(|k| k.follows().is_some());
    let url: Arc<str> = match follows {
        Some(_) => Arc::from(saved.upstream_url.as_str()),
        None => match slot
            .upstream_urls()
            .to_list()
            .iter()
            .find(|u| ***u == *saved.upstream_url)
        {
            Some(url) => url.clone(),
            None => {
                return Err(Refusal::Mismatch(format!(
                    "fetched from {}, which is no longer one of the document's upstream URLs",
                    saved.upstream_url
                )))
            }
        },
    };
    let document = crate::cache::fetch::validate_for(slot, saved.body)
        .map_err(|e| Refusal::Mismatch(format!("the saved document is not valid: {e}")))?
        .detached();
    let fresh_for = saved.lifetime.clamp(
        slot.policy().min_ttl.min(slot.policy().ttl),
        slot.policy().ttl,
    );
    let resident = match now.duration_since(saved.fetched_at) {
        Ok(resident) => resident,
        // A clock stepped back a little (NTP): taken as just received.
        Err(ahead) if ahead.duration() <= CLOCK_SKEW => Duration::ZERO,
        // Dated well in the future: this clock, or the one of the host
        // that saved it, is wrong, and its age is unknown. Never served as
        // fresh (nor advertised so to caches in front): stale at once,
        // refetched at once, and kept only for max-stale from now.
        Err(ahead) => {
            tracing::warn!(
                document = &*slot.name,
                ahead_s = ahead.duration().as_secs(),
                "state file dated in the future: served as stale until a fetch replaces it"
            );
            fresh_for
        }
    };
    let timing = Timing {
        upstream_age: saved.upstream_age,
        fresh_for,
        advertised_secs: secs_u32(saved.advertised.min(fresh_for)),
        stale_if_error_until_secs: saved.stale_if_error_until.map(secs_u32),
        source: Source::Saved,
    };
    let servable_for = timing.fresh_for.saturating_add(slot.freshness().max_stale);
    if resident >= servable_for {
        return Err(Refusal::Expired(format!(
            "saved {}s ago, past its freshness ({}s) and max-stale ({}s)",
            resident.as_secs(),
            timing.fresh_for.as_secs(),
            slot.freshness().max_stale.as_secs()
        )));
    }
    let headers = UpstreamHeaders {
        cache_control: saved.cache_control.map(Box::from),
        expires: saved.expires.map(Box::from),
        etag: saved.etag.map(Box::from),
        last_modified: saved.last_modified.map(Box::from),
        ..UpstreamHeaders::default()
    };
    // Served: until a fetch reads the metadata, the key set is refreshed
    // from where it came from.
    if let Some(ks) = follows {
        if ks.location().is_none() {
            ks.set_location(url.clone());
        }
    }
    Ok(StoredDocument::restored(
        document,
        url,
        headers,
        saved.fetched_at,
        timing,
        slot,
        resident,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache_rules::freshness::FreshnessState;
    use crate::metrics::Metrics;
    use bytes::Bytes;

    const ISSUER: &str = "https://as.example.com";
    const URL: &str = "https://as.example.com/.well-known/oauth-authorization-server";

    fn slot() -> DocumentSlot {
        let metrics = Metrics::new().expect("metrics");
        DocumentSlot::for_tests(&metrics, "oauth-authorization-server", ISSUER, URL)
    }

    fn saved(fetched_at: SystemTime) -> SavedDocument {
        SavedDocument {
            key: "oauth-authorization-server".into(),
            issuer: ISSUER.into(),
            upstream_url: URL.into(),
            fetched_at,
            upstream_age: Duration::ZERO,
            lifetime: Duration::from_secs(300),
            advertised: Duration::from_secs(300),
            stale_if_error_until: None,
            cache_control: None,
            expires: None,
            etag: None,
            last_modified: None,
            body: Bytes::from(format!(
                r#"{{"issuer":"{ISSUER}","authorization_endpoint":"{ISSUER}/a","token_endpoint":"{ISSUER}/t","response_types_supported":["code"]}}"#
            )),
        }
    }

    fn state_at_load(ahead: Duration) -> FreshnessState {
        let now = SystemTime::now();
        let stored = restore(&slot(), saved(now + ahead), now).expect("restored");
        stored.rules().classify(stored.resident())
    }

    #[test]
    fn a_fetch_time_slightly_ahead_counts_as_just_received() {
        assert!(matches!(
            state_at_load(Duration::from_secs(5)),
            FreshnessState::Fresh { .. }
        ));
    }

    #[test]
    fn a_fetch_time_far_ahead_is_served_stale_never_fresh() {
        for ahead in [120, 86_400, 10 * 365 * 86_400] {
            let state = state_at_load(Duration::from_secs(ahead));
            assert!(
                matches!(state, FreshnessState::Stale { .. }),
                "{ahead}s ahead: {state:?}"
            );
        }
    }
}
