//! Per-worker recorder of the HTTP metrics (`metadata_gateway_http_*`).
//!
//! The dispatcher records each response itself, after building it: no
//! middleware, no request extension. It finds the worker's counters for the
//! route by the route label's dense id ([`RouteLabel::id`]), one index and
//! one pointer comparison, and updates this worker's own
//! [`RouteCells`](crate::request_metrics::RouteCells), which a scrape sums
//! over the workers ([`crate::request_metrics`]). Workers are
//! single-threaded, so the table needs no lock. A series still appears in
//! `/metrics` only once it has a request, exactly as before.
//!
//! The operations endpoints (`/metrics`, `/healthz`, `/readyz`) keep their
//! own path: the dispatcher counts them by name ([`HttpRecorder::record`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{Metrics, UNMATCHED_ROUTE};
use crate::request_metrics::{HttpSeries, RouteCells};
use crate::routes::RouteLabel;

/// One worker's counters; not `Send` on purpose (one per worker).
pub struct HttpRecorder {
    series: Arc<HttpSeries>,
    table: RefCell<Table>,
}

#[derive(Default)]
struct Table {
    /// By route label id: the label the cells were found for (a reload
    /// hands out new labels with the same ids) and the cells.
    by_id: Vec<Option<(Arc<RouteLabel>, Arc<RouteCells>)>>,
    /// This worker's cells by route, so a label handed out again by a
    /// reload keeps counting in the same cells.
    by_route: HashMap<Box<str>, Arc<RouteCells>>,
    unmatched: Option<Arc<RouteCells>>,
}

impl Table {
    /// This worker's live cells of `route`, made on first use.
    fn cells(&mut self, series: &HttpSeries, route: &str) -> Arc<RouteCells> {
        match self.by_route.get(route) {
            Some(c) if !c.is_removed() => c.clone(),
            _ => {
                let c = series.cells(route);
                self.by_route.insert(route.into(), c.clone());
                c
            }
        }
    }
}

impl HttpRecorder {
    /// An empty table over `metrics`.
    pub fn new(metrics: &Metrics) -> Self {
        Self {
            series: metrics.http().clone(),
            table: RefCell::new(Table::default()),
        }
    }

    /// Counts one response under a route table label; nothing when a
    /// reload has dropped the label since the request was routed (its
    /// series are gone and must stay gone).
    pub fn record_label(&self, label: &Arc<RouteLabel>, status: u16, elapsed: Duration) {
        if label.is_retired() {
            return;
        }
        let mut table = self.table.borrow_mut();
        let id = label.id();
        if let Some(Some((known, cells))) = table.by_id.get(id) {
            if Arc::ptr_eq(known, label) && !cells.is_removed() {
                cells.record(status, elapsed);
                return;
            }
        }
        let cells = table.cells(&self.series, &label.name);
        if table.by_id.len() <= id {
            // Ids are dense per route table: bounded by its label count.
            table.by_id.resize(id + 1, None);
        }
        table.by_id[id] = Some((label.clone(), cells.clone()));
        cells.record(status, elapsed);
    }

    /// Counts one response for a path no route serves.
    pub fn record_unmatched(&self, status: u16, elapsed: Duration) {
        let mut table = self.table.borrow_mut();
        let cells = match &table.unmatched {
            Some(c) if !c.is_removed() => c.clone(),
            _ => {
                let c = table.cells(&self.series, UNMATCHED_ROUTE);
                table.unmatched = Some(c.clone());
                c
            }
        };
        cells.record(status, elapsed);
    }

    /// Counts one response of a route known by name (the operations
    /// routes).
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let cells = self.table.borrow_mut().cells(&self.series, route);
        cells.record(status, elapsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(metrics: &Metrics) -> String {
        String::from_utf8(metrics.render().unwrap()).unwrap()
    }

    #[test]
    fn counts_like_record_http() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let recorder = HttpRecorder::new(&metrics);
        let other_worker = HttpRecorder::new(&metrics);
        assert!(
            !text(&metrics).contains("route=\"/a\""),
            "no series before a request"
        );
        let a = Arc::new(RouteLabel::with_id("/a", 0));
        let b = Arc::new(RouteLabel::with_id("/b", 1));
        for status in [200, 200, 304] {
            recorder.record_label(&a, status, Duration::from_micros(80));
        }
        other_worker.record_label(&a, 200, Duration::from_micros(80));
        recorder.record_label(&b, 404, Duration::from_millis(2));
        recorder.record_unmatched(404, Duration::from_micros(20));
        recorder.record("/metrics", 200, Duration::from_micros(20));
        metrics.record_http("/a", 200, Duration::from_micros(80));
        let text = text(&metrics);
        for line in [
            "metadata_gateway_http_requests_total{route=\"/a\",status=\"200\"} 4",
            "metadata_gateway_http_requests_total{route=\"/a\",status=\"304\"} 1",
            "metadata_gateway_http_requests_total{route=\"/b\",status=\"404\"} 1",
            "metadata_gateway_http_requests_total{route=\"unmatched\",status=\"404\"} 1",
            "metadata_gateway_http_requests_total{route=\"/metrics\",status=\"200\"} 1",
            "metadata_gateway_http_request_duration_seconds_count{route=\"/a\"} 5",
            "metadata_gateway_http_request_duration_seconds_count{route=\"/b\"} 1",
            "metadata_gateway_http_request_duration_seconds_bucket{route=\"/a\",le=\"0.0001\"} 5",
            "metadata_gateway_http_request_duration_seconds_bucket{route=\"/a\",le=\"+Inf\"} 5",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn retired_labels_stay_gone_and_come_back_fresh() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let recorder = HttpRecorder::new(&metrics);
        let old = Arc::new(RouteLabel::with_id("/x", 0));
        recorder.record_label(&old, 200, Duration::from_micros(50));
        old.retire();
        metrics.retire_routes(|_| false);
        recorder.record_label(&old, 200, Duration::from_micros(50));
        let after = text(&metrics);
        assert!(
            !after.contains("route=\"/x\""),
            "retired series came back:\n{after}"
        );
        // The route is configured again: a new label, new series.
        let new = Arc::new(RouteLabel::with_id("/x", 0));
        recorder.record_label(&new, 200, Duration::from_micros(50));
        let again = text(&metrics);
        assert!(
            again.contains("metadata_gateway_http_requests_total{route=\"/x\",status=\"200\"} 1"),
            "{again}"
        );
    }

    #[test]
    fn a_reloaded_label_keeps_counting_in_the_same_series() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let recorder = HttpRecorder::new(&metrics);
        let first = Arc::new(RouteLabel::with_id("/k", 3));
        recorder.record_label(&first, 200, Duration::from_micros(50));
        // A reload keeps the route: a new label, another id.
        let again = Arc::new(RouteLabel::with_id("/k", 0));
        recorder.record_label(&again, 200, Duration::from_micros(50));
        recorder.record_label(&first, 200, Duration::from_micros(50));
        let text = text(&metrics);
        assert!(
            text.contains("metadata_gateway_http_requests_total{route=\"/k\",status=\"200\"} 3"),
            "{text}"
        );
    }
}
