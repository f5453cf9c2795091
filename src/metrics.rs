//! Prometheus metrics, in one private registry rendered at `/metrics`.
//!
//! Names and labels are part of the public interface (docs/metrics.md, Grafana
//! dashboard, alert rules). Every label value is bounded, and none grows
//! with the number of tenants: `document` names a metrics *group*, never
//! client input:
//! - a configured document's name (document kind plus configured issuer or
//!   resource path) while at most `--metrics-document-labels` documents are
//!   configured; above that, one group per document kind
//!   (`oauth-authorization-server/*`), so 10,000 configured issuers make
//!   three groups, not 10,000 (per-document state is in the logs and the
//!   readiness answer);
//! - an issuer template's name (`oauth-authorization-server/realms/{tenant}`)
//!   for all of its tenants.
//!
//! `result` comes from [`CacheOutcome`], `outcome` from
//! [`crate::error::FetchError::outcome_label`], `route` is a route pattern
//! or group pattern, never a raw path. The document gauges are per group:
//! `metadata_gateway_document_cached` counts the servable documents of the
//! group, `_stale` the stale ones, `_age_seconds` is the oldest one's age
//! (for a one-document group: 0/1, 0/1 and its age, as before). The upstream
//! fetch histogram has no `document` label: one histogram in all. Group
//! handles are resolved once at start-up so the request path does no label
//! lookups.

use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::outcome::{CacheOutcome, RESULT_LABELS};

/// Every value of the `outcome` label of upstream fetches.
pub const FETCH_OUTCOMES: [&str; 6] = [
    "ok",
    "timeout",
    "connect_error",
    "http_status",
    "invalid_document",
    "too_large",
];

/// Label used for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Handles for one group, resolved at start-up.
#[derive(Debug)]
struct GroupMetrics {
    lookups: [IntCounter; RESULT_LABELS.len()],
    /// `None` for documents generated locally (never fetched).
    fetches: Option<[IntCounter; FETCH_OUTCOMES.len()]>,
    age: Gauge,
    stale: IntGauge,
    cached: IntGauge,
}

/// All metrics of one gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    groups: Vec<GroupMetrics>,
    fetch_duration: Histogram,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
}

/// The state of one group's cached documents, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupState {
    /// Servable documents (fresh or stale).
    pub cached: usize,
    /// Of those, the ones past their TTL.
    pub stale: usize,
    /// Age of the oldest servable document.
    pub oldest: Duration,
}

impl Metrics {
    /// Registers every metric; `groups` are the group names of fetched
    /// documents, in index order.
    pub fn new(groups: &[&str]) -> Result<Self, prometheus::Error> {
        Self::with_local(groups, &[])
    }

    /// Like [`Metrics::new`], plus groups of documents generated locally
    /// (protected resource metadata): they get indices after the fetched
    /// ones, lookup counters and document gauges, and no upstream-fetch
    /// series.
    pub fn with_local(groups: &[&str], local: &[&str]) -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let lookups = IntCounterVec::new(
            Opts::new(
                "metadata_gateway_lookups_total",
                "Metadata requests served or refused, by cache result (hit, stale, miss, error).",
            ),
            &["document", "result"],
        )?;
        let fetches = IntCounterVec::new(
            Opts::new(
                "metadata_gateway_upstream_fetches_total",
                "Upstream fetches of metadata documents, by outcome.",
            ),
            &["document", "outcome"],
        )?;
        let fetch_duration = Histogram::with_opts(
            HistogramOpts::new(
                "metadata_gateway_upstream_fetch_duration_seconds",
                "Duration of upstream fetches, including validation (all documents).",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )?;
        let age = GaugeVec::new(
            Opts::new(
                "metadata_gateway_document_age_seconds",
                "Age of the oldest cached document of the group (0 when none is cached).",
            ),
            &["document"],
        )?;
        let stale = IntGaugeVec::new(
            Opts::new(
                "metadata_gateway_document_stale",
                "Cached documents of the group past their TTL, served stale (0 or 1 for one document).",
            ),
            &["document"],
        )?;
        let cached = IntGaugeVec::new(
            Opts::new(
                "metadata_gateway_document_cached",
                "Servable documents (fresh or within max-stale) cached in the group (0 or 1 for one document).",
            ),
            &["document"],
        )?;
        let http_requests = IntCounterVec::new(
            Opts::new(
                "metadata_gateway_http_requests_total",
                "HTTP requests by route pattern and status code.",
            ),
            &["route", "status"],
        )?;
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                "metadata_gateway_http_request_duration_seconds",
                "Time to produce an HTTP response, by route pattern.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
            ]),
            &["route"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(
                "metadata_gateway_build_info",
                "Always 1; the version label says which build is running.",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);

        registry.register(Box::new(lookups.clone()))?;
        registry.register(Box::new(fetches.clone()))?;
        registry.register(Box::new(fetch_duration.clone()))?;
        registry.register(Box::new(age.clone()))?;
        registry.register(Box::new(stale.clone()))?;
        registry.register(Box::new(cached.clone()))?;
        registry.register(Box::new(http_requests.clone()))?;
        registry.register(Box::new(http_duration.clone()))?;
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        let handles = |name: &str, fetched: bool| GroupMetrics {
            lookups: RESULT_LABELS.map(|r| lookups.with_label_values(&[name, r])),
            fetches: fetched.then(|| FETCH_OUTCOMES.map(|o| fetches.with_label_values(&[name, o]))),
            age: age.with_label_values(&[name]),
            stale: stale.with_label_values(&[name]),
            cached: cached.with_label_values(&[name]),
        };
        let groups = groups
            .iter()
            .map(|n| handles(n, true))
            .chain(local.iter().map(|n| handles(n, false)))
            .collect();
        Ok(Self {
            registry,
            groups,
            fetch_duration,
            http_requests,
            http_duration,
        })
    }

    /// Counts one metadata request of group `group`.
    pub fn record_lookup(&self, group: usize, outcome: CacheOutcome) {
        if let Some(g) = self.groups.get(group) {
            g.lookups[outcome.result_index()].inc();
        }
    }

    /// Counts one upstream fetch of group `group` and its duration.
    pub fn record_fetch(&self, group: usize, outcome: &'static str, elapsed: Duration) {
        let Some(fetches) = self.groups.get(group).and_then(|g| g.fetches.as_ref()) else {
            return;
        };
        if let Some(i) = FETCH_OUTCOMES.iter().position(|o| *o == outcome) {
            fetches[i].inc();
        }
        self.fetch_duration.observe(elapsed.as_secs_f64());
    }

    /// Counts one HTTP response. Resolves the labels on every call; the
    /// request path uses [`crate::http::recorder::HttpRecorder`], which
    /// resolves each handle once per worker.
    pub fn record_http(&self, route: &str, status: u16, elapsed: Duration) {
        self.http_requests_handle(route, status).inc();
        self.http_duration_handle(route)
            .observe(elapsed.as_secs_f64());
    }

    /// The `metadata_gateway_http_requests_total` series of one route and status.
    pub fn http_requests_handle(&self, route: &str, status: u16) -> IntCounter {
        let mut buf = itoa::Buffer::new();
        self.http_requests
            .with_label_values(&[route, buf.format(status)])
    }

    /// The `metadata_gateway_http_request_duration_seconds` series of one route.
    pub fn http_duration_handle(&self, route: &str) -> Histogram {
        self.http_duration.with_label_values(&[route])
    }

    /// Sets the document gauges of `group` (called at scrape time).
    pub fn set_group_state(&self, group: usize, state: GroupState) {
        if let Some(g) = self.groups.get(group) {
            g.age.set(state.oldest.as_secs_f64());
            g.stale.set(i64::try_from(state.stale).unwrap_or(i64::MAX));
            g.cached
                .set(i64::try_from(state.cached).unwrap_or(i64::MAX));
        }
    }

    /// Renders the Prometheus text exposition format.
    pub fn render(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(8 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lookup_labels_exist_from_start() {
        let m = Metrics::new(&["oauth-authorization-server"]).unwrap();
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        for r in RESULT_LABELS {
            let line = format!(
                "metadata_gateway_lookups_total{{document=\"oauth-authorization-server\",result=\"{r}\"}} 0"
            );
            assert!(text.contains(&line), "missing {line}");
        }
        for o in FETCH_OUTCOMES {
            assert!(text.contains(&format!("outcome=\"{o}\"")));
        }
        assert!(text.contains("metadata_gateway_build_info{version="));
    }

    #[test]
    fn counts_move_by_exactly_one() {
        let m = Metrics::new(&["a"]).unwrap();
        m.record_lookup(0, CacheOutcome::Collapsed);
        m.record_lookup(0, CacheOutcome::Hit);
        m.record_lookup(0, CacheOutcome::Hit);
        m.record_lookup(7, CacheOutcome::Hit); // unknown document: ignored
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        assert!(text.contains("metadata_gateway_lookups_total{document=\"a\",result=\"hit\"} 2"));
        assert!(text.contains("metadata_gateway_lookups_total{document=\"a\",result=\"miss\"} 1"));
    }

    #[test]
    fn local_documents_have_lookups_and_gauges_but_no_fetches() {
        let m = Metrics::with_local(&["as"], &["oauth-protected-resource/mcp"]).unwrap();
        m.set_group_state(
            1,
            GroupState {
                cached: 1,
                ..GroupState::default()
            },
        );
        m.record_lookup(1, CacheOutcome::Hit);
        m.record_fetch(1, "ok", Duration::from_millis(1)); // ignored: never fetched
        let text = String::from_utf8(m.render().unwrap()).unwrap();
        assert!(text.contains(
            "metadata_gateway_lookups_total{document=\"oauth-protected-resource/mcp\",result=\"hit\"} 1"
        ));
        assert!(text.contains(
            "metadata_gateway_document_cached{document=\"oauth-protected-resource/mcp\"} 1"
        ));
        assert!(!text.contains("upstream_fetches_total{document=\"oauth-protected-resource/mcp\""));
        assert!(text.contains("upstream_fetches_total{document=\"as\",outcome=\"ok\"} 0"));
    }
}
