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

/// Resolved handles of one worker; not `Send` on purpose (one per worker).
pub struct HttpRecorder {
    metrics: Arc<Metrics>,
    routes: RefCell<Vec<RouteHandles>>,
}

struct RouteHandles {
    route: Box<str>,
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

    /// Counts one response of `route` (a route pattern) with `status`.
    pub fn record(&self, route: &str, status: u16, elapsed: Duration) {
        let mut routes = self.routes.borrow_mut();
        let index = match routes.iter().position(|r| &*r.route == route) {
            Some(i) => i,
            None => {
                routes.push(RouteHandles {
                    route: route.into(),
                    duration: self.metrics.http_duration_handle(route),
                    statuses: Vec::new(),
                });
                routes.len() - 1
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
        let metrics = Arc::new(Metrics::new(&["doc"]).unwrap());
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
}
