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
//!   three groups, not 10,000 (per-document state is in the admin
//!   listener's `GET /documents`);
//! - an issuer template's name (`oauth-authorization-server/realms/{tenant}`)
//!   for all of its tenants.
//!
//! `kind` says whether the group holds metadata documents (`metadata`) or
//! key sets (`jwks`), see [`group_kind`]; never a tenant.
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
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::cache_rules::outcome::{CacheOutcome, RESULT_LABELS};
use crate::discovery::KEY_SET_KIND;
use crate::request_metrics::HttpSeries;

/// Registers the shared [`HttpSeries`] (the registry takes its collectors
/// by value).
struct SharedCollector(std::sync::Arc<HttpSeries>);

impl prometheus::core::Collector for SharedCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.0.collect()
    }
}

/// Every value of the `outcome` label of upstream fetches.
pub const FETCH_OUTCOMES: [&str; 8] = [
    "ok",
    "not_modified",
    "timeout",
    "connect_error",
    "http_status",
    "invalid_document",
    "too_large",
    "proxy_error",
];

/// The `kind` label of a group: `jwks` for key sets (a key set's name
/// ends with `#jwks`, the group of all key sets is `jwks/*`), `metadata`
/// for every other document. Bounded: two values.
pub fn group_kind(name: &str) -> &'static str {
    if name.ends_with("#jwks") || name == "jwks/*" {
        KEY_SET_KIND
    } else {
        "metadata"
    }
}

/// Every value of the `outcome` label of loads from a template's disk
/// tier: a fresh copy (served as a hit), a stale one (revalidated), one
/// past its max-stale (removed), a damaged or mismatched one (removed, never
/// served), and a file the index listed but that was not there (its save
/// still queued, or deleted by hand).
pub const DISK_LOAD_OUTCOMES: [&str; 5] = ["fresh", "stale", "expired", "corrupt", "missing"];

/// Label used for requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The series of one group, resolved when the group is created (at
/// start-up or on a reload): recording costs no label lookup.
#[derive(Debug)]
pub struct GroupMetrics {
    name: Box<str>,
    lookups: [IntCounter; RESULT_LABELS.len()],
    /// `None` for documents generated locally (never fetched).
    fetches: Option<[IntCounter; FETCH_OUTCOMES.len()]>,
    fetch_duration: Histogram,
    age: Gauge,
    stale: IntGauge,
    cached: IntGauge,
}

impl GroupMetrics {
    /// The group's `document` label value.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts one metadata request.
    pub fn record_lookup(&self, outcome: CacheOutcome) {
        self.lookups[outcome.result_index()].inc();
    }

    /// Counts one upstream fetch and its duration (ignored for a group
    /// of local documents).
    pub fn record_fetch(&self, outcome: &'static str, elapsed: Duration) {
        let Some(fetches) = &self.fetches else {
            return;
        };
        if let Some(i) = FETCH_OUTCOMES.iter().position(|o| *o == outcome) {
            fetches[i].inc();
        }
        self.fetch_duration.observe(elapsed.as_secs_f64());
    }

    /// Sets the age gauge alone (between passes over the documents).
    pub fn set_age(&self, oldest: Duration) {
        self.age.set(oldest.as_secs_f64());
    }

    /// Sets the document gauges (called at scrape time).
    pub fn set_state(&self, state: GroupState) {
        self.age.set(state.oldest.as_secs_f64());
        self.stale
            .set(i64::try_from(state.stale).unwrap_or(i64::MAX));
        self.cached
            .set(i64::try_from(state.cached).unwrap_or(i64::MAX));
    }
}

/// All metrics of one gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    lookups: IntCounterVec,
    fetches: IntCounterVec,
    fetch_duration: Histogram,
    age: GaugeVec,
    stale: IntGaugeVec,
    cached: IntGaugeVec,
    http: std::sync::Arc<HttpSeries>,
    state_writes: IntCounterVec,
    state_writer: StateWriterMetrics,
    certificate_reloads: IntCounterVec,
    reloads: IntCounterVec,
    reload_ok: IntGauge,
    disk_loads: IntCounterVec,
    disk_tenants: IntGaugeVec,
    disk_bytes: IntGaugeVec,
}

/// The disk-tier series of one template (`--state-dir` only).
#[derive(Debug, Clone)]
pub struct DiskTierMetrics {
    /// Loads by outcome, indexed like [`DISK_LOAD_OUTCOMES`].
    pub loads: [IntCounter; DISK_LOAD_OUTCOMES.len()],
    /// Tenants with a file in the disk tier.
    pub tenants: IntGauge,
    /// Their files' bytes.
    pub bytes: IntGauge,
}

impl DiskTierMetrics {
    /// Counts one load with `outcome` (one of [`DISK_LOAD_OUTCOMES`]).
    pub fn record_load(&self, outcome: &str) {
        if let Some(i) = DISK_LOAD_OUTCOMES.iter().position(|o| *o == outcome) {
            self.loads[i].inc();
        }
    }
}

/// The state writer's queue and progress (see
/// [`crate::cache::persist::writer`]); registered with the other metrics,
/// exported once a state directory is in use.
#[derive(Debug, Clone)]
pub struct StateWriterMetrics {
    /// `metadata_gateway_state_writes_total`.
    pub writes: IntCounterVec,
    /// Saves never written because a newer save or a removal of the same
    /// document replaced them while they waited.
    pub merged_saves: IntCounter,
    /// Documents with a save or removal waiting.
    pub pending: IntGauge,
    /// Unix time the write in progress started; 0 while idle.
    pub write_started: Gauge,
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
    /// Registers every metric (no group yet: see [`Metrics::group`]).
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let lookups = IntCounterVec::new(
            Opts::new(
                "metadata_gateway_lookups_total",
                "Document requests served or refused, by kind (metadata, jwks) and cache result.",
            ),
            &["document", "kind", "result"],
        )?;
        let fetches = IntCounterVec::new(
            Opts::new(
                "metadata_gateway_upstream_fetches_total",
                "Upstream fetches of documents, by kind (metadata, jwks) and outcome.",
            ),
            &["document", "kind", "outcome"],
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
            &["document", "kind"],
        )?;
        let stale = IntGaugeVec::new(
            Opts::new(
                "metadata_gateway_document_stale",
                "Cached documents of the group past their TTL, served stale (0 or 1 for one document).",
            ),
            &["document", "kind"],
        )?;
        let cached = IntGaugeVec::new(
            Opts::new(
                "metadata_gateway_document_cached",
                "Servable documents (fresh or within max-stale) cached in the group (0 or 1 for one document).",
            ),
            &["document", "kind"],
        )?;
        // Per-worker cells summed at scrape (crate::request_metrics).
        let http = std::sync::Arc::new(HttpSeries::new()?);
        let state_writes = IntCounterVec::new(
            Opts::new(
                "metadata_gateway_state_writes_total",
                "Writes to the state directory (--state-dir), by operation (save, remove) and outcome (ok, error); absent without a state directory.",
            ),
            &["operation", "outcome"],
        )?;
        let state_writer = StateWriterMetrics {
            writes: state_writes.clone(),
            merged_saves: IntCounter::new(
                "metadata_gateway_state_saves_merged_total",
                "Saves to the state directory never written because a newer save or a removal of the same document replaced them while they waited (one pending write per document, whatever the number of fetches).",
            )?,
            pending: IntGauge::new(
                "metadata_gateway_state_writes_pending",
                "Documents whose save or removal waits for the state writer (at most one per document).",
            )?,
            write_started: Gauge::new(
                "metadata_gateway_state_write_started_timestamp_seconds",
                "Unix time at which the state write in progress started; 0 while the writer is idle. time() minus it is how long the disk has been stuck on one write.",
            )?,
        };
        let certificate_reloads = IntCounterVec::new(
            Opts::new(
                "metadata_gateway_tls_certificate_reloads_total",
                "Listener certificate reloads (--tls-cert/--tls-key changed, or SIGHUP), by outcome: ok (new connections get the new pair) or refused (the files were bad; the previous pair keeps serving). Only with --tls-cert.",
            ),
            &["outcome"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "metadata_gateway_config_reloads_total",
                "Config file reloads (SIGHUP), by outcome: ok (swapped in) or refused (the file was bad; the previous configuration keeps serving).",
            ),
            &["outcome"],
        )?;
        for outcome in ["ok", "refused"] {
            reloads.with_label_values(&[outcome]);
        }
        let reload_ok = IntGauge::new(
            "metadata_gateway_config_last_reload_successful",
            "1 when the last config reload was swapped in (or none was asked for), 0 when it was refused.",
        )?;
        reload_ok.set(1);
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
        registry.register(Box::new(SharedCollector(http.clone())))?;
        registry.register(Box::new(state_writes.clone()))?;
        registry.register(Box::new(certificate_reloads.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        registry.register(Box::new(reload_ok.clone()))?;
        let disk_loads = IntCounterVec::new(
            Opts::new(
                "metadata_gateway_tenant_disk_loads_total",
                "Template tenants read back from the state directory's disk tier on request, by outcome (fresh, stale, expired, corrupt, missing); absent without a state directory.",
            ),
            &["document", "outcome"],
        )?;
        let disk_tenants = IntGaugeVec::new(
            Opts::new(
                "metadata_gateway_tenants_on_disk",
                "Tenants of the template with a saved copy in the state directory (its disk tier, bounded by max_tenants_on_disk).",
            ),
            &["document"],
        )?;
        let disk_bytes = IntGaugeVec::new(
            Opts::new(
                "metadata_gateway_tenants_on_disk_bytes",
                "Bytes of the template's files in the state directory (its disk tier).",
            ),
            &["document"],
        )?;
        registry.register(Box::new(disk_loads.clone()))?;
        registry.register(Box::new(disk_tenants.clone()))?;
        registry.register(Box::new(disk_bytes.clone()))?;
        registry.register(Box::new(build_info))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;

        Ok(Self {
            registry,
            lookups,
            fetches,
            fetch_duration,
            age,
            stale,
            cached,
            http,
            state_writes,
            state_writer,
            certificate_reloads,
            reloads,
            reload_ok,
            disk_loads,
            disk_tenants,
            disk_bytes,
        })
    }

    /// The disk-tier series of template `name`, created at 0 (only for a
    /// template with a state directory); removed by [`Self::retire_group`].
    pub fn disk_tier(&self, name: &str) -> DiskTierMetrics {
        DiskTierMetrics {
            loads: DISK_LOAD_OUTCOMES.map(|o| self.disk_loads.with_label_values(&[name, o])),
            tenants: self.disk_tenants.with_label_values(&[name]),
            bytes: self.disk_bytes.with_label_values(&[name]),
        }
    }

    /// Counts a config reload: swapped in (`true`) or refused.
    pub fn record_reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "ok" } else { "refused" }])
            .inc();
        self.reload_ok.set(i64::from(ok));
    }

    /// Creates the listener certificate reload series at 0 (with
    /// `--tls-cert`).
    pub fn init_certificate_reloads(&self) {
        for outcome in ["ok", "refused"] {
            self.certificate_reloads.with_label_values(&[outcome]);
        }
    }

    /// Counts a listener certificate reload: served (`true`) or refused.
    pub fn record_certificate_reload(&self, ok: bool) {
        self.certificate_reloads
            .with_label_values(&[if ok { "ok" } else { "refused" }])
            .inc();
    }

    /// The state-directory write counter, its four series created at 0
    /// (called once a state directory is in use).
    pub fn state_writes(&self) -> IntCounterVec {
        for operation in ["save", "remove"] {
            for outcome in ["ok", "error"] {
                self.state_writes.with_label_values(&[operation, outcome]);
            }
        }
        self.state_writes.clone()
    }

    /// The state writer's metrics, registered on first use (a state
    /// directory is in use), with the write counter's four series at 0.
    pub fn state_writer(&self) -> StateWriterMetrics {
        self.state_writes();
        let m = &self.state_writer;
        for c in [
            Box::new(m.merged_saves.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(m.pending.clone()),
            Box::new(m.write_started.clone()),
        ] {
            // Already registered: a second writer of the same registry
            // (tests) shares the series.
            let _ = self.registry.register(c);
        }
        self.state_writer.clone()
    }

    /// The series of group `name` (created at 0, or the existing ones when
    /// the group already exists); `fetched` is false for local documents,
    /// which have no upstream-fetch series.
    /// Its `kind` label comes from the name ([`group_kind`]).
    pub fn group(&self, name: &str, fetched: bool) -> std::sync::Arc<GroupMetrics> {
        let kind = group_kind(name);
        std::sync::Arc::new(GroupMetrics {
            name: name.into(),
            lookups: RESULT_LABELS.map(|r| self.lookups.with_label_values(&[name, kind, r])),
            fetches: fetched
                .then(|| FETCH_OUTCOMES.map(|o| self.fetches.with_label_values(&[name, kind, o]))),
            fetch_duration: self.fetch_duration.clone(),
            age: self.age.with_label_values(&[name, kind]),
            stale: self.stale.with_label_values(&[name, kind]),
            cached: self.cached.with_label_values(&[name, kind]),
        })
    }

    /// Removes every series of group `name` (a reload removed its
    /// documents), so it disappears from the scrape.
    pub fn retire_group(&self, name: &str) {
        let kind = group_kind(name);
        for r in RESULT_LABELS {
            let _ = self.lookups.remove_label_values(&[name, kind, r]);
        }
        for o in FETCH_OUTCOMES {
            let _ = self.fetches.remove_label_values(&[name, kind, o]);
        }
        for o in DISK_LOAD_OUTCOMES {
            let _ = self.disk_loads.remove_label_values(&[name, o]);
        }
        let _ = self.disk_tenants.remove_label_values(&[name]);
        let _ = self.disk_bytes.remove_label_values(&[name]);
        let _ = self.age.remove_label_values(&[name, kind]);
        let _ = self.stale.remove_label_values(&[name, kind]);
        let _ = self.cached.remove_label_values(&[name, kind]);
    }

    /// Removes the HTTP series of every route label `keep` refuses (a
    /// reload removed the route).
    pub fn retire_routes(&self, keep: impl Fn(&str) -> bool) {
        self.http.retire(keep);
    }

    /// Counts one HTTP response from any thread (found by route under a
    /// lock). The request path uses [`crate::http::recorder::HttpRecorder`]:
    /// per-worker cells, found by the route label's dense id.
    pub fn record_http(&self, route: &str, status: u16, elapsed: Duration) {
        self.http.record_shared(route, status, elapsed);
    }

    /// The HTTP request series (per-worker cells, summed at scrape).
    pub fn http(&self) -> &std::sync::Arc<HttpSeries> {
        &self.http
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

    fn text(m: &Metrics) -> String {
        String::from_utf8(m.render().unwrap()).unwrap()
    }

    #[test]
    fn all_lookup_labels_exist_from_start() {
        let m = Metrics::new().unwrap();
        let _g = m.group("oauth-authorization-server", true);
        let text = text(&m);
        for r in RESULT_LABELS {
            let line = format!(
                "metadata_gateway_lookups_total{{document=\"oauth-authorization-server\",kind=\"metadata\",result=\"{r}\"}} 0"
            );
            assert!(text.contains(&line), "missing {line}");
        }
        for o in FETCH_OUTCOMES {
            assert!(text.contains(&format!("outcome=\"{o}\"")));
        }
        assert!(text.contains("metadata_gateway_build_info{version="));
    }

    #[test]
    fn key_set_groups_have_the_jwks_kind() {
        let m = Metrics::new().unwrap();
        m.group("oauth-authorization-server#jwks", true)
            .record_lookup(CacheOutcome::Revalidated);
        m.group("jwks/*", true)
            .record_lookup(CacheOutcome::RevalidationFailed);
        let text = text(&m);
        assert!(text.contains("metadata_gateway_lookups_total{document=\"oauth-authorization-server#jwks\",kind=\"jwks\",result=\"revalidated\"} 1"));
        assert!(text.contains("metadata_gateway_lookups_total{document=\"jwks/*\",kind=\"jwks\",result=\"revalidation_failed\"} 1"));
        assert_eq!(
            group_kind("oauth-authorization-server/{tenant}#jwks"),
            "jwks"
        );
        assert_eq!(group_kind("oauth-authorization-server/*"), "metadata");
    }

    #[test]
    fn counts_move_by_exactly_one() {
        let m = Metrics::new().unwrap();
        let a = m.group("a", true);
        a.record_lookup(CacheOutcome::Collapsed);
        a.record_lookup(CacheOutcome::Hit);
        a.record_lookup(CacheOutcome::Hit);
        // The same group asked for again shares the series.
        m.group("a", true).record_lookup(CacheOutcome::NegativeHit);
        let text = text(&m);
        assert!(text.contains(
            "metadata_gateway_lookups_total{document=\"a\",kind=\"metadata\",result=\"hit\"} 2"
        ));
        assert!(text.contains(
            "metadata_gateway_lookups_total{document=\"a\",kind=\"metadata\",result=\"miss\"} 1"
        ));
        assert!(
            text.contains("metadata_gateway_lookups_total{document=\"a\",kind=\"metadata\",result=\"not_found\"} 1")
        );
    }

    #[test]
    fn local_documents_have_lookups_and_gauges_but_no_fetches() {
        let m = Metrics::new().unwrap();
        let fetched = m.group("as", true);
        let local = m.group("oauth-protected-resource/mcp", false);
        local.set_state(GroupState {
            cached: 1,
            ..GroupState::default()
        });
        local.record_lookup(CacheOutcome::Hit);
        local.record_fetch("ok", Duration::from_millis(1)); // ignored: never fetched
        fetched.record_fetch("ok", Duration::from_millis(1));
        let text = text(&m);
        assert!(text.contains(
            "metadata_gateway_lookups_total{document=\"oauth-protected-resource/mcp\",kind=\"metadata\",result=\"hit\"} 1"
        ));
        assert!(text.contains(
            "metadata_gateway_document_cached{document=\"oauth-protected-resource/mcp\",kind=\"metadata\"} 1"
        ));
        assert!(!text.contains("upstream_fetches_total{document=\"oauth-protected-resource/mcp\""));
        assert!(text.contains(
            "upstream_fetches_total{document=\"as\",kind=\"metadata\",outcome=\"ok\"} 1"
        ));
        assert!(text.contains("metadata_gateway_upstream_fetch_duration_seconds_count 1"));
    }

    #[test]
    fn retired_groups_and_routes_disappear() {
        let m = Metrics::new().unwrap();
        m.group("gone", true).record_lookup(CacheOutcome::Hit);
        m.group("kept", true);
        m.record_http("/gone", 200, Duration::from_millis(1));
        m.record_http("/gone", 404, Duration::from_millis(1));
        m.record_http("/kept", 200, Duration::from_millis(1));
        m.retire_group("gone");
        m.retire_routes(|r| r != "/gone");
        let text = text(&m);
        assert!(!text.contains("\"gone\""), "{text}");
        assert!(!text.contains("/gone"), "{text}");
        assert!(text.contains("document=\"kept\""));
        assert!(text.contains("route=\"/kept\""));
    }
}
