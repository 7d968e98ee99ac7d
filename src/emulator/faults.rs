//! Fault injection and request counting, kept as data the tests set and read.
//!
//! Only bookkeeping lives here: which request should fail, wait (before or after it is handled)
//! or lose its answer, and how many requests each (method, path) received. The HTTP middleware
//! that applies it is in `api`; TLS faults and agent faults are not requests and live elsewhere.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// What to do with one incoming request, around its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Intercept {
    /// Answer with this status and `{"description": "injected fault"}` instead of handling it.
    pub fail: Option<u16>,
    /// Wait this long before handling it (nothing is applied while waiting).
    pub delay: Option<Duration>,
    /// Wait this long after handling it, before answering (the change is already applied).
    pub delay_answer: Option<Duration>,
    /// Break the connection instead of delivering the answer (after handling it).
    pub drop_answer: bool,
    /// Handle it this long after it arrived, even if the client has given up meanwhile
    /// (a slow server that queues requests and applies them late).
    pub apply_late: Option<Duration>,
}

/// Injected faults, delays and per-endpoint request counts.
#[derive(Debug, Default)]
pub struct Faults {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// (METHOD, path) → statuses for the next matching requests, first in first out.
    fail_next: HashMap<(String, String), VecDeque<u16>>,
    /// (METHOD, path) → how many of the next matching requests lose their answer.
    drop_answer_next: HashMap<(String, String), usize>,
    /// path → delay before handling.
    delays: HashMap<String, Duration>,
    /// path → delay between handling and answering.
    answer_delays: HashMap<String, Duration>,
    /// (METHOD, path) → delays for the next matching requests, applied even if the client left.
    apply_late_next: HashMap<(String, String), VecDeque<Duration>>,
    counts: HashMap<(String, String), usize>,
    /// (METHOD, route) → requests and answer bytes, never reset (see [`Faults::route_stats`]).
    routes: HashMap<(String, String), RouteStats>,
}

/// Requests and answer bytes of one route since the emulator started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RouteStats {
    /// Requests answered.
    pub requests: u64,
    /// Bytes of their answer bodies.
    pub bytes: u64,
}

/// The route a path belongs to: every segment that is a UUID becomes `{id}`, so 10,000 datasets
/// make one counter, not 10,000.
pub fn route(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.len() == 36 && uuid::Uuid::parse_str(segment).is_ok() {
                "{id}"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn key(method: &str, path: &str) -> (String, String) {
    (method.to_ascii_uppercase(), path.to_string())
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data stays consistent even if a holder panicked: every update is a single insert.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The next `method` request to exactly `path` gets `status` (calls queue up).
    pub fn fail_next(&self, method: &str, path: &str, status: u16) {
        self.lock()
            .fail_next
            .entry(key(method, path))
            .or_default()
            .push_back(status);
    }

    /// The next `method` request to exactly `path` is handled, then its answer is lost
    /// (calls queue up).
    pub fn drop_answer_next(&self, method: &str, path: &str) {
        *self
            .lock()
            .drop_answer_next
            .entry(key(method, path))
            .or_default() += 1;
    }

    /// Delays every request to exactly `path` by `d` before handling it; `Duration::ZERO`
    /// clears it.
    pub fn delay(&self, path: &str, d: Duration) {
        set_or_clear(&mut self.lock().delays, path, d);
    }

    /// Holds back the answer to every request to exactly `path` by `d` after handling it;
    /// `Duration::ZERO` clears it.
    pub fn delay_answer(&self, path: &str, d: Duration) {
        set_or_clear(&mut self.lock().answer_delays, path, d);
    }

    /// The next `method` request to `path` is handled `d` after it arrived, whether or not
    /// its client is still waiting.
    pub fn apply_late_next(&self, method: &str, path: &str, d: Duration) {
        self.lock()
            .apply_late_next
            .entry(key(method, path))
            .or_default()
            .push_back(d);
    }

    /// How many `method` requests to exactly `path` arrived, including failed ones.
    pub fn request_count(&self, method: &str, path: &str) -> usize {
        self.lock()
            .counts
            .get(&key(method, path))
            .copied()
            .unwrap_or(0)
    }

    /// Every (METHOD, path) that received requests, with its count, sorted.
    pub fn request_counts(&self) -> Vec<((String, String), usize)> {
        let mut counts: Vec<_> = self
            .lock()
            .counts
            .iter()
            .map(|(k, n)| (k.clone(), *n))
            .collect();
        counts.sort();
        counts
    }

    /// Forgets all counts.
    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    /// Adds one answered request of `bytes` to its route's counters.
    pub fn record_answer(&self, method: &str, path: &str, bytes: u64) {
        let mut inner = self.lock();
        let stats = inner
            .routes
            .entry((method.to_ascii_uppercase(), route(path)))
            .or_default();
        stats.requests += 1;
        stats.bytes += bytes;
    }

    /// Every (METHOD, route) answered since start, with its counters, sorted.
    pub fn route_stats(&self) -> Vec<((String, String), RouteStats)> {
        let mut stats: Vec<_> = self
            .lock()
            .routes
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        stats.sort_by(|a, b| a.0.cmp(&b.0));
        stats
    }

    /// Counts a request and says what to do with it; consumes one queued failure and one queued
    /// lost answer for its (method, path), independently.
    pub fn on_request(&self, method: &str, path: &str) -> Intercept {
        let mut inner = self.lock();
        let k = key(method, path);
        *inner.counts.entry(k.clone()).or_default() += 1;
        let fail = inner.fail_next.get_mut(&k).and_then(VecDeque::pop_front);
        let drop_answer = match inner.drop_answer_next.get_mut(&k) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        };
        let apply_late = inner
            .apply_late_next
            .get_mut(&k)
            .and_then(VecDeque::pop_front);
        Intercept {
            apply_late,
            fail,
            delay: inner.delays.get(path).copied(),
            delay_answer: inner.answer_delays.get(path).copied(),
            drop_answer,
        }
    }
}

fn set_or_clear(map: &mut HashMap<String, Duration>, path: &str, d: Duration) {
    if d.is_zero() {
        map.remove(path);
    } else {
        map.insert(path.to_string(), d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_fold_ids_and_count_bytes() {
        let id = uuid::Uuid::new_v4();
        assert_eq!(
            route(&format!("/v1/configuration/datasets/{id}")),
            "/v1/configuration/datasets/{id}"
        );
        assert_eq!(route("/v1/state/datasets"), "/v1/state/datasets");
        let f = Faults::default();
        f.record_answer("get", "/v1/state/datasets", 10);
        f.record_answer("GET", "/v1/state/datasets", 5);
        assert_eq!(
            f.route_stats(),
            vec![(
                ("GET".to_string(), "/v1/state/datasets".to_string()),
                RouteStats {
                    requests: 2,
                    bytes: 15
                }
            )]
        );
    }

    #[test]
    fn fail_next_is_consumed_and_counts_accumulate() {
        let f = Faults::default();
        f.fail_next("get", "/v1/state/datasets", 500);
        assert_eq!(f.on_request("GET", "/v1/state/datasets").fail, Some(500));
        assert_eq!(f.on_request("GET", "/v1/state/datasets").fail, None);
        assert_eq!(f.request_count("GET", "/v1/state/datasets"), 2);
        assert_eq!(f.request_count("POST", "/v1/state/datasets"), 0);
        f.delay("/v1/version", Duration::from_millis(5));
        assert_eq!(
            f.on_request("GET", "/v1/version").delay,
            Some(Duration::from_millis(5))
        );
        f.delay("/v1/version", Duration::ZERO);
        assert_eq!(f.on_request("GET", "/v1/version").delay, None);
        f.reset_counts();
        assert_eq!(f.request_count("GET", "/v1/version"), 0);
    }

    #[test]
    fn dropped_answers_queue_up_and_answer_delays_are_separate() {
        let f = Faults::default();
        let path = "/v1/configuration/datasets";
        f.drop_answer_next("post", path);
        f.drop_answer_next("POST", path);
        assert!(!f.on_request("GET", path).drop_answer, "other method");
        assert!(f.on_request("POST", path).drop_answer);
        assert!(f.on_request("POST", path).drop_answer);
        assert!(!f.on_request("POST", path).drop_answer, "consumed");
        assert_eq!(f.request_count("POST", path), 3);

        f.delay_answer(path, Duration::from_secs(3));
        let plan = f.on_request("POST", path);
        assert_eq!(
            (plan.delay, plan.delay_answer),
            (None, Some(Duration::from_secs(3)))
        );
        f.delay_answer(path, Duration::ZERO);
        assert_eq!(f.on_request("POST", path), Intercept::default());
    }
}
