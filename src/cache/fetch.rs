//! One fetch of a document: its upstream URLs tried in order until one
//! does not answer 4xx, the answer validated (RFC 8414, issuer included),
//! counted once in the metrics and logged once, and the slot's back-off
//! state updated. Shared by configured documents and template tenants.

use std::sync::Arc;
use std::time::Instant;

use crate::document::ValidatedDocument;
use crate::error::FetchError;
use crate::upstream::{Fetcher, Permit, Priority};

use super::slot::DocumentSlot;
use super::StoredDocument;

/// What a fetch needs besides the slot.
pub(crate) struct FetchContext<'a> {
    pub fetcher: &'a Fetcher,
}

impl FetchContext<'_> {
    /// Fetches and validates `slot`'s document. `permit`, when given, is
    /// used for the first request (the caller waited for it already).
    pub async fn fetch(
        &self,
        slot: &DocumentSlot,
        priority: Priority,
        permit: Option<Permit>,
    ) -> Result<Arc<StoredDocument>, FetchError> {
        let started = Instant::now();
        let (result, url) = self.fetch_first_published(slot, priority, permit).await;
        let elapsed = started.elapsed();
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.outcome_label(),
        };
        slot.metrics().record_fetch(outcome, elapsed);
        let tenant = slot.tenant.as_deref().unwrap_or("");
        match result {
            Ok(document) => {
                slot.record_success();
                // Per-document success lines at debug: with thousands of
                // documents every TTL would otherwise log thousands of lines.
                tracing::debug!(
                    document = &*slot.name,
                    tenant,
                    url = %url,
                    outcome,
                    duration_ms = elapsed.as_millis() as u64,
                    bytes = document.body.len(),
                    "upstream fetch"
                );
                Ok(Arc::new(StoredDocument::new(
                    document,
                    slot.freshness.hard_lifetime(),
                )))
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
    /// validates what it sent. Returns the result and the URL it is from
    /// (the last one tried).
    async fn fetch_first_published(
        &self,
        slot: &DocumentSlot,
        priority: Priority,
        mut permit: Option<Permit>,
    ) -> (Result<ValidatedDocument, FetchError>, Arc<str>) {
        let mut last = (
            Err(FetchError::Connect("no upstream URL is configured".into())),
            Arc::from(""),
        );
        for url in slot.upstream_urls() {
            let permit = match permit.take() {
                Some(p) => p,
                None => self.fetcher.permit(url, priority).await,
            };
            match self.fetcher.fetch(url.clone(), permit).await {
                Ok(body) => {
                    // RFC 8414 §5: OpenID Provider metadata is validated by
                    // the same rules, issuer check included.
                    let validated =
                        ValidatedDocument::validate(body, slot.issuer()).map_err(FetchError::from);
                    return (validated, url.clone());
                }
                // Not published at this location: try the next one, as
                // discovery clients do (RFC 8414 §3, OpenID Connect Discovery §4).
                Err(e @ FetchError::HttpStatus(400..=499)) => {
                    tracing::debug!(document = &*slot.name, url = %url, error = %e, "not published here, trying the next location");
                    last = (Err(e), url.clone());
                }
                Err(e) => return (Err(e), url.clone()),
            }
        }
        last
    }
}
