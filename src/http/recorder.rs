//! Per-worker recorder of the HTTP metrics (`metadata_gateway_http_*`).
//!
//! `prometheus`'s `with_label_values` hashes the label values and takes a
//! read lock on every call; at the request rates this gateway is built for,
//! two of those per request showed up in the profile (benches/README.md).
//! Each actix-web worker therefore keeps its own small table of resolved
//! handles, filled the first time a route or status is seen: a series still
//! appears in `/metrics` only once it has a request, exactly as before, and
//! later requests cost a short scan and two atomic updates. Workers are
//! single-threaded, so the table needs no lock. Routes and statuses are
//! bounded (route patterns, HTTP status codes), and so is the table.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Histogram, IntCounter};

use crate::metrics::Metrics;
use crate::routes::RouteLabel;

/// Resolved handles of one worker; not `Send` on purpose (one per worker).
pub struct HttpRecorder {
    metrics: Arc<Metrics>,
    routes: RefCell<Vec<RouteHandles>>,
}

struct RouteHandles {
    route: Box<str>,
    /// The route table label the handles were resolved for, if any: a
    /// reload hands out new labels, and a label dropped and later added
    /// again must get fresh handles (the old series were removed).
    label: Option<Arc<RouteLabel>>,
    duration: Histogram,
    statuses: Vec<(u16, IntCounter)>,
}

impl HttpRecorder {
    /// An empty table over `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics,
            routes: RefCell::new(Vec::new()),
        }
    }

    /// Counts one response under a route table label; nothing when a
    /// reload has dropped the label since the request was routed (its
    /// series are gone and must stay gone).
    pub fn record_label(&self, label: &Arc<RouteLabel>, status: u16, elapsed: Duration) {
        if label.is_retired() {
            return;
        }
        self.record_inner(&label.name, Some(label), status, elapsed);
    }

    /// Counts one response of `route` (an operations route or `unmatched`).
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        self.record_inner(route, None, status, elapsed);
    }

    fn record_inner(
        &self,
        route: &str,
        label: Option<&Arc<RouteLabel>>,
        status: u16,
        elapsed: Duration,
    ) {
        let mut routes = self.routes.borrow_mut();
        let same_label = |h: &RouteHandles| match (&h.label, label) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        let index = match routes.iter().position(|r| &*r.route == route) {
            Some(i) if same_label(&routes[i]) => i,
            found => {
                let handles = RouteHandles {
                    route: route.into(),
                    label: label.cloned(),
                    duration: self.metrics.http_duration_handle(route),
                    statuses: Vec::new(),
                };
                match found {
                    Some(i) => {
                        routes[i] = handles;
                        i
                    }
                    None => {
                        routes.push(handles);
                        routes.len() - 1
                    }
                }
            }
        };
        let handles = &mut routes[index];
        handles.duration.observe(elapsed.as_secs_f64());
        match handles.statuses.iter().find(|(s, _)| *s == status) {
            Some((_, counter)) => counter.inc(),
            None => {
                let counter = self.metrics.http_requests_handle(route, status);
                counter.inc();
                handles.statuses.push((status, counter));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_record_http() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let recorder = HttpRecorder::new(metrics.clone());
        let before = String::from_utf8(metrics.render().unwrap()).unwrap();
        assert!(
            !before.contains("route=\"/a\""),
            "no series before a request"
        );
        for status in [200, 200, 304, 200] {
            recorder.record("/a", status, Duration::from_micros(80));
        }
        recorder.record("/b", 404, Duration::from_millis(2));
        metrics.record_http("/a", 200, Duration::from_micros(80));
        let text = String::from_utf8(metrics.render().unwrap()).unwrap();
        for line in [
            "metadata_gateway_http_requests_total{route=\"/a\",status=\"200\"} 4",
            "metadata_gateway_http_requests_total{route=\"/a\",status=\"304\"} 1",
            "metadata_gateway_http_requests_total{route=\"/b\",status=\"404\"} 1",
            "metadata_gateway_http_request_duration_seconds_count{route=\"/a\"} 5",
            "metadata_gateway_http_request_duration_seconds_count{route=\"/b\"} 1",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn retired_labels_stay_gone_and_come_back_fresh() {
        let metrics = Arc::new(Metrics::new().unwrap());
        let recorder = HttpRecorder::new(metrics.clone());
        let old = Arc::new(RouteLabel::new("/x"));
        recorder.record_label(&old, 200, Duration::from_micros(50));
        old.retire();
        metrics.retire_routes(|_| false);
        recorder.record_label(&old, 200, Duration::from_micros(50));
        let text = String::from_utf8(metrics.render().unwrap()).unwrap();
        assert!(
            !text.contains("route=\"/x\""),
            "retired series came back:\n{text}"
        );
        // The route is configured again: a new label, new series.
        let new = Arc::new(RouteLabel::new("/x"));
        recorder.record_label(&new, 200, Duration::from_micros(50));
        let text = String::from_utf8(metrics.render().unwrap()).unwrap();
        assert!(
            text.contains("metadata_gateway_http_requests_total{route=\"/x\",status=\"200\"} 1"),
            "{text}"
        );
    }
}
