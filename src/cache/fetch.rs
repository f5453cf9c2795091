//! One fetch of a document: its upstream URLs tried in order until one
//! does not answer 4xx, the answer validated (RFC 8414, issuer included)
//! or, for a refresh that sent the stored document's validators, a `304`
//! that renews it without a download (RFC 9111 §4.3.4); counted once in
//! the metrics and logged once, the slot's back-off state updated, and the
//! new document handed to the state directory. Shared by configured
//! documents and template tenants.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::discovery::DocumentKind;
use crate::document::ValidatedDocument;
use crate::error::{FetchError, InvalidDocument};
use crate::upstream::{Answer, Fetcher, Permit, Priority};

use super::persist::StateWriter;
use super::slot::{DocumentSlot, Retirement};
use super::StoredDocument;

/// What a fetch needs besides the slot.
pub(crate) struct FetchContext<'a> {
    pub fetcher: &'a Fetcher,
    /// Where validated documents are saved (`--state-dir`).
    pub state: Option<&'a StateWriter>,
    /// The document's (or its template's): once retired by a reload, a
    /// fetch still running saves nothing.
    pub retirement: &'a Retirement,
}

/// Outcome label of a fetch answered `304 Not Modified`.
pub const NOT_MODIFIED: &str = "not_modified";

impl FetchContext<'_> {
    /// Fetches and validates `slot`'s document after finding where a key
    /// set is (`located`): when that failed, the failure is this fetch's
    /// (counted, logged, backed off) and no upstream request is made.
    /// `permit`, when given, is used for the first request (the caller
    /// waited for it already). `previous`, the stored document being
    /// refreshed, makes the request to the URL it came from conditional.
    pub async fn fetch_located(
        &self,
        slot: &DocumentSlot,
        priority: Priority,
        permit: Option<Permit>,
        previous: Option<&Arc<StoredDocument>>,
        located: Result<(), FetchError>,
    ) -> Result<Arc<StoredDocument>, FetchError> {
        let started = Instant::now();
        let (result, url) = match located {
            Ok(()) => {
                self.fetch_first_published(slot, priority, permit, previous)
                    .await
            }
            Err(e) => (Err(e), Arc::from("")),
        };
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok((_, false)) => "ok",
            Ok((_, true)) => NOT_MODIFIED,
            Err(e) => e.outcome_label(),
        };
        slot.metrics().record_fetch(outcome, elapsed);
        let tenant = slot.tenant.as_deref().unwrap_or("");
        match result {
            Ok((document, _)) => {
                slot.record_success(outcome);
                // Per-document success lines at debug: with thousands of
                // documents every TTL would otherwise log thousands of lines.
                tracing::debug!(
                    document = &*slot.name,
                    tenant,
                    url = %url,
                    outcome,
                    duration_ms = elapsed.as_millis() as u64,
                    bytes = document.document.body.len(),
                    fresh_for_s = document.timing.fresh_for.as_secs(),
                    freshness = document.timing.source.label(),
                    "upstream fetch"
                );
                if let Some(state) = self.state {
                    if !self.retirement.is_retired() {
                        state.save(slot, &document);
                        // Retired while the save was queued: the reload's
                        // removal of the file may be ahead of it.
                        if self.retirement.is_removed() {
                            state.remove(&slot.state_key());
                        }
                    }
                }
                Ok(document)
            }
            Err(error) => {
                let retry_in = slot.record_failure(&error, Instant::now());
                tracing::warn!(
                    document = &*slot.name,
                    tenant,
                    url = %url,
                    outcome,
                    duration_ms = elapsed.as_millis() as u64,
                    retry_in_ms = retry_in.as_millis() as u64,
                    error = %error,
                    "upstream fetch"
                );
                Err(error)
            }
        }
    }

    /// Tries the slot's URLs in order until one does not answer 4xx, and
    /// validates what it sent. Returns the stored document (and whether it
    /// is `previous` renewed by a 304) and the URL it is from (the last
    /// one tried).
    async fn fetch_first_published(
        &self,
        slot: &DocumentSlot,
        priority: Priority,
        mut permit: Option<Permit>,
        previous: Option<&Arc<StoredDocument>>,
    ) -> (Result<(Arc<StoredDocument>, bool), FetchError>, Arc<str>) {
        let mut last = (
            Err(match slot.key_set {
                Some(_) => FetchError::KeySetLocation(
                    "the metadata document's jwks_uri is not known yet".into(),
                ),
                None => FetchError::Connect("no upstream URL is configured".into()),
            }),
            Arc::from(""),
        );
        let urls = slot.fetch_urls();
        for url in urls.iter() {
            let mut validators = previous.and_then(|p| p.validators_for(url));
            loop {
                let permit = match permit.take() {
                    Some(p) => p,
                    None => self.fetcher.permit(url, priority).await,
                };
                let sent_etag = validators.as_ref().and_then(|v| v.etag.clone());
                match self
                    .fetcher
                    .fetch(url.clone(), permit, validators.take())
                    .await
                {
                    Ok(Answer::Document { body, headers }) => {
                        let received = SystemTime::now();
                        let validated = validate_for(slot, body)
                            .map(|document| {
                                // Kept for as long as it is served: moved out of
                                // the fetcher thread's buffers (see `detached`);
                                // `clone` makes the header strings here too.
                                let stored = StoredDocument::new(
                                    document.detached(),
                                    url.clone(),
                                    headers.clone(),
                                    received,
                                    slot,
                                );
                                (Arc::new(stored), false)
                            })
                            .map_err(FetchError::from);
                        return (validated, url.clone());
                    }
                    // RFC 9111 §4.3.4: a 304 whose ETag is not the one asked
                    // about updates nothing stored. A confused upstream (or a
                    // load balancer mixing versions) would otherwise renew the
                    // old bytes under a new tag forever: fetch it whole, once.
                    Ok(Answer::NotModified { headers })
                        if etag_mismatch(sent_etag.as_deref(), headers.etag.as_deref()) =>
                    {
                        tracing::warn!(
                            document = &*slot.name,
                            url = %url,
                            sent = sent_etag.as_deref().unwrap_or(""),
                            got = headers.etag.as_deref().unwrap_or(""),
                            "304 for another ETag than the one asked about: fetching the document unconditionally"
                        );
                        continue;
                    }
                    Ok(Answer::NotModified { headers }) => {
                        // Only sent validators get a 304 through (upstream),
                        // so `previous` is the document it is about.
                        let renewed = previous.map(|p| {
                            let r = p.revalidated(&headers, SystemTime::now(), slot);
                            (Arc::new(r), true)
                        });
                        return (renewed.ok_or(FetchError::HttpStatus(304)), url.clone());
                    }
                    // Not published at this location: try the next one, as
                    // discovery clients do (RFC 8414 §3, OpenID Connect Discovery §4).
                    Err(e @ FetchError::HttpStatus(400..=499)) => {
                        tracing::debug!(document = &*slot.name, url = %url, error = %e, "not published here, trying the next location");
                        last = (Err(e), url.clone());
                    }
                    Err(e) => return (Err(e), url.clone()),
                }
                break;
            }
        }
        last
    }
}

/// Validates fetched (or restored) bytes by the rules of `slot`'s kind:
/// RFC 8414 metadata for `issuer` (RFC 8414 §5: OpenID Provider metadata
/// by the same rules, issuer check included), or a public key set
/// (RFC 7517 §5, [`crate::key_set`]), whose duplicate `kid`s are logged.
pub(crate) fn validate_for(
    slot: &DocumentSlot,
    body: Bytes,
) -> Result<ValidatedDocument, InvalidDocument> {
    if slot.kind != DocumentKind::KeySet {
        return ValidatedDocument::validate(body, slot.issuer());
    }
    let (document, summary) = ValidatedDocument::key_set(body)?;
    if !summary.duplicate_kids.is_empty() {
        tracing::warn!(
            document = &*slot.name,
            tenant = slot.tenant.as_deref().unwrap_or(""),
            duplicate_kids = ?summary.duplicate_kids,
            "the key set has several keys with one kid (served; verifiers may pick either)"
        );
    }
    Ok(document)
}

/// Whether a 304's `ETag` names another representation than the `ETag`
/// the request sent in `If-None-Match` (weak comparison, RFC 9110 §8.8.3.2:
/// the opaque tags differ). A 304 without an `ETag`, or to a request that
/// sent none (only `If-Modified-Since`), is about the stored document.
fn etag_mismatch(sent: Option<&str>, got: Option<&str>) -> bool {
    let opaque = |t: &str| {
        let t = t.trim();
        t.strip_prefix("W/").unwrap_or(t).to_owned()
    };
    match (sent, got) {
        (Some(sent), Some(got)) => opaque(sent) != opaque(got),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::etag_mismatch;

    #[test]
    fn a_304_is_about_the_etag_that_was_sent() {
        assert!(!etag_mismatch(Some("\"v1\""), Some("\"v1\"")));
        assert!(
            !etag_mismatch(Some("W/\"v1\""), Some("\"v1\"")),
            "weak comparison"
        );
        assert!(!etag_mismatch(Some("\"v1\""), None), "a 304 may omit it");
        assert!(
            !etag_mismatch(None, Some("\"v2\"")),
            "If-Modified-Since only"
        );
        assert!(etag_mismatch(Some("\"v1\""), Some("\"v2\"")));
        assert!(etag_mismatch(Some("W/\"v1\""), Some("W/\"v2\"")));
    }
}
