//! Fault injection and request counting, kept as data the tests set and read.
//!
//! Only bookkeeping lives here: which request should fail or wait, and how many requests each
//! (method, path) received. The HTTP middleware that applies it is in `api`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// What to do with one incoming request before it reaches its handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Intercept {
    /// Answer with this status and `{"description": "injected fault"}` instead of handling it.
    pub fail: Option<u16>,
    /// Wait this long first.
    pub delay: Option<Duration>,
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
    delays: HashMap<String, Duration>,
    counts: HashMap<(String, String), usize>,
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

    /// Delays every request to exactly `path` by `d`; `Duration::ZERO` clears it.
    pub fn delay(&self, path: &str, d: Duration) {
        let mut inner = self.lock();
        if d.is_zero() {
            inner.delays.remove(path);
        } else {
            inner.delays.insert(path.to_string(), d);
        }
    }

    /// How many `method` requests to exactly `path` arrived, including failed ones.
    pub fn request_count(&self, method: &str, path: &str) -> usize {
        self.lock()
            .counts
            .get(&key(method, path))
            .copied()
            .unwrap_or(0)
    }

    /// Forgets all counts.
    pub fn reset_counts(&self) {
        self.lock().counts.clear();
    }

    /// Counts a request and says whether to fail or delay it.
    pub fn on_request(&self, method: &str, path: &str) -> Intercept {
        let mut inner = self.lock();
        let k = key(method, path);
        *inner.counts.entry(k.clone()).or_default() += 1;
        let fail = inner.fail_next.get_mut(&k).and_then(VecDeque::pop_front);
        Intercept {
            fail,
            delay: inner.delays.get(path).copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
