//! One shared poller of `GET /v1/state/datasets` for every Mount that is waiting for a dataset.
//!
//! Polling runs only while someone waits, every [`POLL_INTERVAL`] (so a dataset is noticed within about
//! 100 ms of the state showing it), and costs at most 10 requests/s in all, however many volumes wait.
//! Errors back off up to 2 s so a struggling control service is not hammered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backoff::Backoff;
use crate::flocker::{self, DatasetState};

/// Time between two state polls while a Mount waits.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);
const MAX_ERROR_BACKOFF: Duration = Duration::from_secs(2);

/// The latest poll result.
#[derive(Debug, Clone)]
pub enum Snapshot {
    /// Not polled yet since waiting began.
    Pending,
    /// The state as last fetched.
    State(Arc<Vec<DatasetState>>),
    /// The last poll failed.
    Failed(String),
}

/// Shares state polls between waiters.
#[derive(Debug)]
pub struct StateWatcher {
    client: flocker::Client,
    tx: watch::Sender<Snapshot>,
    running: Mutex<bool>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl StateWatcher {
    /// A watcher that polls through `client`, on `tasks`, until `stop` is cancelled.
    pub fn new(
        client: flocker::Client,
        tasks: TaskTracker,
        stop: CancellationToken,
    ) -> Arc<StateWatcher> {
        let (tx, _) = watch::channel(Snapshot::Pending);
        Arc::new(StateWatcher {
            client,
            tx,
            running: Mutex::new(false),
            tasks,
            stop,
        })
    }

    /// Starts receiving fresh snapshots; polling stops once every receiver is dropped.
    pub fn subscribe(self: &Arc<Self>) -> watch::Receiver<Snapshot> {
        let mut running = self.running.lock().expect("watcher lock");
        let mut rx = self.tx.subscribe();
        // Only snapshots fetched after this point count: an older one may predate the move.
        rx.mark_unchanged();
        if !*running {
            *running = true;
            let watcher = Arc::clone(self);
            self.tasks.spawn(async move { watcher.poll().await });
        }
        rx
    }

    async fn poll(self: Arc<Self>) {
        let mut backoff = Backoff::new(POLL_INTERVAL * 2, MAX_ERROR_BACKOFF);
        let mut ticker = tokio::time::interval(POLL_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate; consume it so polls are POLL_INTERVAL apart, start to start.
        ticker.tick().await;
        loop {
            {
                // Checked under the lock that subscribe takes, so a new waiter never finds no poller.
                let mut running = self.running.lock().expect("watcher lock");
                if self.tx.receiver_count() == 0 {
                    *running = false;
                    return;
                }
            }
            let polled = tokio::select! {
                _ = self.stop.cancelled() => break,
                polled = self.client.state() => polled,
            };
            let snapshot = match polled {
                Ok(state) => {
                    backoff.reset();
                    Snapshot::State(Arc::new(state))
                }
                Err(e) => Snapshot::Failed(e.to_string()),
            };
            let failed = matches!(snapshot, Snapshot::Failed(_));
            self.tx.send_replace(snapshot);
            let pause = async {
                if failed {
                    tokio::time::sleep(backoff.next_delay()).await;
                    ticker.reset();
                } else {
                    ticker.tick().await;
                }
            };
            tokio::select! {
                _ = self.stop.cancelled() => break,
                _ = pause => {}
            }
        }
        *self.running.lock().expect("watcher lock") = false;
    }
}
