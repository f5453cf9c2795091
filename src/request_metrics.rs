//! The two HTTP metrics, `metadata_gateway_http_requests_total{route,status}`
//! and `metadata_gateway_http_request_duration_seconds{route}`, counted per
//! worker and summed at scrape.
//!
//! With `prometheus`'s own vectors every request updated counters shared by
//! all workers (five atomic updates on cache lines that move between cores
//! on each request, after a label lookup). Here each worker gets its own
//! [`RouteCells`] per route (from [`HttpSeries::cells`]) and updates only
//! those; a scrape walks every worker's cells and adds them up by route, so
//! `/metrics` shows exactly the series and values the vectors showed (a
//! series appears once it has a request; a histogram's buckets are the same).
//! The collector keeps every worker's cells (a worker that stops loses no
//! counts), so counters never go back. Routes come from the configuration
//! (bounded), so cells are bounded by workers x routes; a reload that drops
//! a route removes its cells ([`HttpSeries::retire`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

/// Name of the request counter.
pub const REQUESTS: &str = "metadata_gateway_http_requests_total";
/// Name of the duration histogram.
pub const DURATION: &str = "metadata_gateway_http_request_duration_seconds";

/// Upper bounds of the duration histogram, in seconds.
pub const DURATION_BUCKETS: [f64; 12] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1.0, 5.0,
];

/// [`DURATION_BUCKETS`] in nanoseconds (compared without floating point).
const BUCKET_NANOS: [u64; 12] = [
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    50_000_000,
    250_000_000,
    1_000_000_000,
    5_000_000_000,
];

/// Statuses the gateway answers with, each with its own counter; any
/// other status goes to a short locked list.
const STATUSES: [u16; 12] = [200, 204, 304, 400, 404, 405, 413, 429, 500, 502, 503, 504];

const fn status_index(status: u16) -> Option<usize> {
    Some(match status {
        200 => 0,
        204 => 1,
        304 => 2,
        400 => 3,
        404 => 4,
        405 => 5,
        413 => 6,
        429 => 7,
        500 => 8,
        502 => 9,
        503 => 10,
        504 => 11,
        _ => return None,
    })
}

/// One worker's counts for one route.
#[derive(Debug)]
pub struct RouteCells {
    route: Box<str>,
    statuses: [AtomicU64; STATUSES.len()],
    other_statuses: Mutex<Vec<(u16, u64)>>,
    /// Per bucket, not cumulative (summed at scrape).
    buckets: [AtomicU64; BUCKET_NANOS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    removed: AtomicBool,
}

impl RouteCells {
    fn new(route: &str) -> Self {
        Self {
            route: route.into(),
            statuses: Default::default(),
            other_statuses: Mutex::new(Vec::new()),
            buckets: Default::default(),
            count: AtomicU64::new(0),
            sum_nanos: AtomicU64::new(0),
            removed: AtomicBool::new(false),
        }
    }

    /// The route label these cells count.
    pub fn route(&self) -> &str {
        &self.route
    }

    /// True once a reload removed the route's series: these cells are no
    /// longer scraped, and a route configured again needs new ones.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    /// Counts one response. Only the owning worker writes these cells, so
    /// the updates stay on its core's cache lines.
    pub fn record(&self, status: u16, elapsed: Duration) {
        match status_index(status) {
            Some(i) => {
                self.statuses[i].fetch_add(1, Relaxed);
            }
            None => {
                let mut other = self
                    .other_statuses
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                match other.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, n)) => *n += 1,
                    None => other.push((status, 1)),
                }
            }
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        if let Some(i) = BUCKET_NANOS.iter().position(|&b| nanos <= b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(nanos, Relaxed);
    }
}

/// The sum of every worker's cells of one route, at scrape time.
#[derive(Default)]
struct RouteSum {
    statuses: BTreeMap<u16, u64>,
    buckets: [u64; BUCKET_NANOS.len()],
    count: u64,
    sum_nanos: u64,
}

/// The HTTP metrics collector (registered once in [`crate::metrics::Metrics`]).
#[derive(Debug)]
pub struct HttpSeries {
    requests: Desc,
    duration: Desc,
    cells: Mutex<Vec<Arc<RouteCells>>>,
    /// Cells of [`Self::record_shared`] by route (tests, rare callers).
    shared: Mutex<HashMap<Box<str>, Arc<RouteCells>>>,
}

impl HttpSeries {
    /// The collector, with no series yet.
    pub fn new() -> Result<Self, prometheus::Error> {
        Ok(Self {
            requests: Desc::new(
                REQUESTS.into(),
                "HTTP requests by route pattern and status code.".into(),
                vec!["route".into(), "status".into()],
                HashMap::new(),
            )?,
            duration: Desc::new(
                DURATION.into(),
                "Time to produce an HTTP response, by route pattern.".into(),
                vec!["route".into()],
                HashMap::new(),
            )?,
            cells: Mutex::new(Vec::new()),
            shared: Mutex::new(HashMap::new()),
        })
    }

    /// New cells for `route`, for one worker; scraped with every other
    /// worker's cells of the same route.
    pub fn cells(&self, route: &str) -> Arc<RouteCells> {
        let cells = Arc::new(RouteCells::new(route));
        self.lock_cells().push(cells.clone());
        cells
    }

    /// Counts one response from any thread (cells shared by callers that
    /// are not a worker, found by route under a lock).
    pub fn record_shared(&self, route: &str, status: u16, elapsed: Duration) {
        let cells = {
            let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            match shared.get(route) {
                Some(c) if !c.is_removed() => c.clone(),
                _ => {
                    let c = self.cells(route);
                    shared.insert(route.into(), c.clone());
                    c
                }
            }
        };
        cells.record(status, elapsed);
    }

    /// Removes the series of every route `keep` refuses (a reload removed
    /// the route).
    pub fn retire(&self, keep: impl Fn(&str) -> bool) {
        self.lock_cells().retain(|c| {
            let kept = keep(&c.route);
            if !kept {
                c.removed.store(true, Relaxed);
            }
            kept
        });
    }

    fn lock_cells(&self) -> std::sync::MutexGuard<'_, Vec<Arc<RouteCells>>> {
        self.cells.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sums(&self) -> BTreeMap<Box<str>, RouteSum> {
        let mut sums: BTreeMap<Box<str>, RouteSum> = BTreeMap::new();
        for c in self.lock_cells().iter() {
            let count = c.count.load(Relaxed);
            if count == 0 {
                continue;
            }
            let sum = sums.entry(c.route.clone()).or_default();
            for (status, n) in STATUSES.iter().zip(&c.statuses) {
                let n = n.load(Relaxed);
                if n > 0 {
                    *sum.statuses.entry(*status).or_default() += n;
                }
            }
            for (status, n) in c
                .other_statuses
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
            {
                *sum.statuses.entry(*status).or_default() += n;
            }
            for (total, n) in sum.buckets.iter_mut().zip(&c.buckets) {
                *total += n.load(Relaxed);
            }
            sum.count += count;
            sum.sum_nanos = sum.sum_nanos.saturating_add(c.sum_nanos.load(Relaxed));
        }
        sums
    }
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.into());
    l.set_value(value.into());
    l
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

impl Collector for HttpSeries {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.requests, &self.duration]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sums = self.sums();
        let mut requests = Vec::new();
        let mut durations = Vec::new();
        let mut status_text = itoa::Buffer::new();
        for (route, sum) in &sums {
            for (status, n) in &sum.statuses {
                let mut counter = proto::Counter::default();
                counter.set_value(*n as f64);
                let mut m = proto::Metric::default();
                m.set_label(vec![
                    label("route", route),
                    label("status", status_text.format(*status)),
                ]);
                m.set_counter(counter);
                requests.push(m);
            }
            let mut cumulative = 0;
            let buckets = DURATION_BUCKETS
                .iter()
                .zip(sum.buckets)
                .map(|(bound, n)| {
                    cumulative += n;
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(*bound);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect();
            let mut h = proto::Histogram::default();
            h.set_sample_count(sum.count);
            h.set_sample_sum(sum.sum_nanos as f64 / 1e9);
            h.set_bucket(buckets);
            let mut m = proto::Metric::default();
            m.set_label(vec![label("route", route)]);
            m.set_histogram(h);
            durations.push(m);
        }
        vec![
            family(&self.requests, MetricType::COUNTER, requests),
            family(&self.duration, MetricType::HISTOGRAM, durations),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_indices_match_the_table() {
        for (i, s) in STATUSES.iter().enumerate() {
            assert_eq!(status_index(*s), Some(i));
        }
        assert_eq!(status_index(418), None);
        for (secs, nanos) in DURATION_BUCKETS.iter().zip(BUCKET_NANOS) {
            assert_eq!((secs * 1e9).round() as u64, nanos);
        }
    }

    #[test]
    fn workers_cells_are_summed_by_route() {
        let s = HttpSeries::new().unwrap();
        let (a1, a2, b) = (s.cells("/a"), s.cells("/a"), s.cells("/b"));
        a1.record(200, Duration::from_micros(40));
        a2.record(200, Duration::from_micros(300));
        a2.record(418, Duration::from_millis(20));
        let families = s.collect();
        let requests: Vec<(String, String, f64)> = families[0]
            .get_metric()
            .iter()
            .map(|m| {
                let l = m.get_label();
                (
                    l[0].value().to_string(),
                    l[1].value().to_string(),
                    m.get_counter().get_value(),
                )
            })
            .collect();
        assert_eq!(
            requests,
            [
                ("/a".to_string(), "200".to_string(), 2.0),
                ("/a".to_string(), "418".to_string(), 1.0)
            ]
        );
        // No request for /b: no series (as with a prometheus vector).
        assert_eq!(families[1].get_metric().len(), 1);
        let h = families[1].get_metric()[0].get_histogram();
        assert_eq!(h.get_sample_count(), 3);
        let counts: Vec<u64> = h
            .get_bucket()
            .iter()
            .map(|b| b.cumulative_count())
            .collect();
        assert_eq!(counts, [1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 3]);
        assert!((h.get_sample_sum() - 0.02034).abs() < 1e-9);
        drop(b);
        s.retire(|r| r != "/a");
        assert!(a1.is_removed());
        assert!(s.collect()[0].get_metric().is_empty());
    }
}
