//! Shared reads of the cluster: concurrent callers that need the configuration (or the leases) share
//! one request in flight, and Get/List may reuse an answer a little old (SPEC §10).
//!
//! The control service is the one shared component of a cluster and its API has no per-dataset read,
//! so every read costs the whole cluster. Each caller says how fresh its answer must be:
//! - [`Freshness::Within`]: any answer that finished at most that long ago (Get, List: a slightly old
//!   answer cannot make anything unsafe, they only report);
//! - [`Freshness::StartedAfter`]: only an answer to a request sent after that moment (every decision:
//!   a Mount checking the dataset after taking its lease, a release checking who holds the lease).
//!
//! A caller that cannot use the latest answer waits for the request in flight and then, if that one is
//! not fresh enough either, sends the next one for everybody waiting. Failures are shared the same way,
//! so an unreachable control service is asked once, not once per caller. Answers are kept behind an
//! `Arc`: a cluster of 10,000 datasets is decoded once per request, never copied per call.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::flocker;

/// How fresh an answer a caller needs.
#[derive(Debug, Clone, Copy)]
pub enum Freshness {
    /// Finished at most this long ago.
    Within(Duration),
    /// Sent at or after this moment.
    StartedAfter(Instant),
}

/// One completed request.
#[derive(Debug)]
struct Answer<T> {
    started: Instant,
    finished: Instant,
    outcome: Result<Arc<T>, flocker::Error>,
}

/// A read shared by concurrent callers.
#[derive(Debug)]
pub struct Coalesced<T> {
    /// Held while a request is in flight: later callers wait here instead of sending their own.
    in_flight: tokio::sync::Mutex<()>,
    latest: Mutex<Option<Answer<T>>>,
}

impl<T> Default for Coalesced<T> {
    fn default() -> Self {
        Coalesced {
            in_flight: tokio::sync::Mutex::new(()),
            latest: Mutex::new(None),
        }
    }
}

impl<T> Coalesced<T> {
    /// The latest answer if it is fresh enough for a caller that arrived at `arrived`. Failures count
    /// only for callers that were already waiting when the failed request was sent.
    fn usable(
        &self,
        need: Freshness,
        arrived: Instant,
    ) -> Option<Result<(Arc<T>, Instant), flocker::Error>> {
        let latest = self.latest.lock().expect("read cache");
        let answer = latest.as_ref()?;
        let fresh = match need {
            Freshness::StartedAfter(after) => answer.started >= after,
            Freshness::Within(age) => match &answer.outcome {
                Ok(_) => answer.finished + age >= Instant::now(),
                Err(_) => answer.started >= arrived,
            },
        };
        fresh.then(|| answer.outcome.clone().map(|value| (value, answer.started)))
    }

    /// An answer fresh enough for `need`, fetching it with `fetch` if nobody else is.
    pub async fn get<F, Fut>(&self, need: Freshness, fetch: F) -> Result<Arc<T>, flocker::Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, flocker::Error>>,
    {
        self.get_sent(need, fetch).await.map(|(value, _)| value)
    }

    /// Like [`Coalesced::get`], also saying when the request behind the answer was sent.
    pub async fn get_sent<F, Fut>(
        &self,
        need: Freshness,
        fetch: F,
    ) -> Result<(Arc<T>, Instant), flocker::Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, flocker::Error>>,
    {
        let arrived = Instant::now();
        if let Some(answer) = self.usable(need, arrived) {
            return answer;
        }
        let _sending = self.in_flight.lock().await;
        if let Some(answer) = self.usable(need, arrived) {
            return answer;
        }
        let started = Instant::now();
        let outcome = fetch().await.map(Arc::new);
        *self.latest.lock().expect("read cache") = Some(Answer {
            started,
            finished: Instant::now(),
            outcome: outcome.clone(),
        });
        outcome.map(|value| (value, started))
    }

    /// Forgets the latest answer (after a change this plugin made, so nobody reads past it).
    pub fn forget(&self) {
        *self.latest.lock().expect("read cache") = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn slow_fetch(
        count: &Arc<AtomicUsize>,
    ) -> impl std::future::Future<Output = Result<u32, flocker::Error>> {
        let count = Arc::clone(count);
        async move {
            let n = count.fetch_add(1, Ordering::SeqCst) as u32;
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(n)
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_request() {
        let reads = Arc::new(Coalesced::<u32>::default());
        let count = Arc::new(AtomicUsize::new(0));
        let mut calls = Vec::new();
        for _ in 0..64 {
            let (reads, count) = (Arc::clone(&reads), Arc::clone(&count));
            calls.push(tokio::spawn(async move {
                reads
                    .get(Freshness::Within(Duration::from_secs(1)), || {
                        slow_fetch(&count)
                    })
                    .await
                    .unwrap()
            }));
        }
        for call in calls {
            assert_eq!(*call.await.unwrap(), 0);
        }
        assert_eq!(count.load(Ordering::SeqCst), 1, "64 Gets, one request");
    }

    #[tokio::test(start_paused = true)]
    async fn a_decision_never_uses_an_answer_sent_before_it() {
        let reads = Coalesced::<u32>::default();
        let count = Arc::new(AtomicUsize::new(0));
        let within = Freshness::Within(Duration::from_secs(5));
        assert_eq!(*reads.get(within, || slow_fetch(&count)).await.unwrap(), 0);
        assert_eq!(*reads.get(within, || slow_fetch(&count)).await.unwrap(), 0);
        let now = Freshness::StartedAfter(Instant::now());
        assert_eq!(*reads.get(now, || slow_fetch(&count)).await.unwrap(), 1);
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(*reads.get(within, || slow_fetch(&count)).await.unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_is_shared_by_those_waiting_but_not_kept() {
        let reads = Arc::new(Coalesced::<u32>::default());
        let count = Arc::new(AtomicUsize::new(0));
        let failing = |count: Arc<AtomicUsize>| async move {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err::<u32, _>(flocker::Error::Unreachable {
                url: "https://control:4523".into(),
                reason: "refused".into(),
            })
        };
        let mut calls = Vec::new();
        for _ in 0..10 {
            let (reads, count) = (Arc::clone(&reads), Arc::clone(&count));
            calls.push(tokio::spawn(async move {
                reads
                    .get(Freshness::Within(Duration::from_secs(1)), || failing(count))
                    .await
                    .is_err()
            }));
        }
        for call in calls {
            assert!(call.await.unwrap());
        }
        // The first caller's request was sent before the others arrived... or not: at most 2.
        assert!(count.load(Ordering::SeqCst) <= 2);
        let before = count.load(Ordering::SeqCst);
        let _ = reads
            .get(Freshness::Within(Duration::from_secs(1)), || {
                failing(Arc::clone(&count))
            })
            .await;
        assert_eq!(
            count.load(Ordering::SeqCst),
            before + 1,
            "a new caller asks again"
        );
    }
}
