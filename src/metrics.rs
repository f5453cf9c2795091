//! Prometheus metrics, in one private registry rendered at `/metrics`.
//!
//! Names and labels are part of the public interface (docs/metrics.md, Grafana
//! dashboard, alert rules). Every label value is bounded: `document` is a
//! configured document name (document kind plus configured issuer or
//! resource path, never client input), `result` comes from [`CacheOutcome`], `outcome`
//! from [`crate::error::FetchError::outcome_label`], `route` is a route
//! pattern, never a raw path. Per-document handles are resolved once at
//! start-up so the request path does no label lookups.

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

/// Handles for one document, resolved at start-up.
#[derive(Debug)]
struct DocumentMetrics {
    name: String,
    lookups: [IntCounter; 4],
    /// `None` for documents generated locally (never fetched).
    fetch_duration: Option<Histogram>,
    age: Gauge,
    stale: IntGauge,
    cached: IntGauge,
}

/// All metrics of one gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    documents: Vec<DocumentMetrics>,
    fetches: IntCounterVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
}

/// The state of one cached document, read at scrape time.
#[derive(Debug, Clone, Copy)]
pub struct DocumentState {
    /// Age of the stored document.
    pub age: Duration,
    /// Past its TTL.
    pub stale: bool,
}

impl Metrics {
    /// Registers every metric; `documents` are the configured document
    /// names, in slot order.
    pub fn new(documents: &[&str]) -> Result<Self, prometheus::Error> {
        Self::with_local(documents, &[])
    }

    /// Like [`Metrics::new`], plus documents generated locally (protected
    /// resource metadata): they get indices after the fetched ones, lookup
    /// counters and document gauges that say "cached, age 0" for good, and
    /// no upstream-fetch series.
    pub fn with_local(documents: &[&str], local: &[&str]) -> Result<Self, prometheus::Error> {
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
        let fetch_duration = HistogramVec::new(
            HistogramOpts::new(
                "metadata_gateway_upstream_fetch_duration_seconds",
                "Duration of upstream fetches, including validation.",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["document"],
        )?;
        let age = GaugeVec::new(
            Opts::new(
                "metadata_gateway_document_age_seconds",
                "Age of the cached document (0 when none is cached).",
            ),
            &["document"],
        )?;
        let stale = IntGaugeVec::new(
            Opts::new(
                "metadata_gateway_document_stale",
                "1 while the cached document is past its TTL and served stale, else 0.",
            ),
            &["document"],
        )?;
        let cached = IntGaugeVec::new(
            Opts::new(
                "metadata_gateway_document_cached",
                "1 while a servable document (fresh or within max-stale) is cached, else 0.",
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

        let handles = |name: &str, fetched: bool| {
            if fetched {
                for outcome in FETCH_OUTCOMES {
                    fetches.with_label_values(&[name, outcome]);
                }
            }
            DocumentMetrics {
                name: name.to_string(),
                lookups: RESULT_LABELS.map(|r| lookups.with_label_values(&[name, r])),
                fetch_duration: fetched.then(|| fetch_duration.with_label_values(&[name])),
                age: age.with_label_values(&[name]),
                stale: stale.with_label_values(&[name]),
                cached: cached.with_label_values(&[name]),
            }
        };
        let mut all: Vec<DocumentMetrics> = documents.iter().map(|n| handles(n, true)).collect();
        for name in local {
            let d = handles(name, false);
            d.cached.set(1);
            all.push(d);
        }
        let documents = all;
        Ok(Self {
            registry,
            documents,
            fetches,
            http_requests,
            http_duration,
        })
    }

    /// Counts one metadata request for document `doc`.
    pub fn record_lookup(&self, doc: usize, outcome: CacheOutcome) {
        if let Some(d) = self.documents.get(doc) {
            d.lookups[outcome.result_index()].inc();
        }
    }

    /// Counts one upstream fetch and its duration.
    pub fn record_fetch(&self, doc: usize, outcome: &'static str, elapsed: Duration) {
        if let Some(d) = self.documents.get(doc) {
            if let Some(h) = &d.fetch_duration {
                self.fetches
                    .with_label_values(&[d.name.as_str(), outcome])
                    .inc();
                h.observe(elapsed.as_secs_f64());
            }
        }
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

    /// Sets the document gauges (called at scrape time).
    pub fn set_document_state(&self, doc: usize, state: Option<DocumentState>) {
        if let Some(d) = self.documents.get(doc) {
            match state {
                Some(s) => {
                    d.age.set(s.age.as_secs_f64());
                    d.stale.set(i64::from(s.stale));
                    d.cached.set(1);
                }
                None => {
                    d.age.set(0.0);
                    d.stale.set(0);
                    d.cached.set(0);
                }
            }
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
