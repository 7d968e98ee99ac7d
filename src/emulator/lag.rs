//! Background convergence for `Convergence::After`: state follows each change after a lag.
//!
//! Each configuration change schedules an unmount pass at half the lag and a full pass at the
//! whole lag, so a move is observable as "non-manifest" in between. A second task expires
//! leases once per second like upstream's `LeaseService`. Passes change nothing while the agent
//! is paused (`Emulator::pause_agent`). Nothing here runs with `Convergence::Manual`; tests
//! then call `Emulator::converge` instead.

use std::sync::Weak;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::error;

use super::model::Phase;
use super::Shared;

/// How often expired leases are looked for (F:flocker/control/_persistence.py:532-564).
const LEASE_TICK: Duration = Duration::from_secs(1);

/// Turns every change notification into a delayed two-phase convergence; ends with the emulator.
pub(super) async fn follow_changes(
    shared: Weak<Shared>,
    mut changes: mpsc::UnboundedReceiver<()>,
    lag: Duration,
) {
    // Owned here so that aborting this task cancels pending passes too.
    let mut passes = JoinSet::new();
    loop {
        tokio::select! {
            change = changes.recv() => {
                if change.is_none() {
                    return;
                }
                passes.spawn(two_phase(shared.clone(), lag));
            }
            Some(_) = passes.join_next(), if !passes.is_empty() => {}
        }
    }
}

async fn two_phase(shared: Weak<Shared>, lag: Duration) {
    let half = lag / 2;
    tokio::time::sleep(half).await;
    pass(&shared, Phase::UnmountOnly).await;
    tokio::time::sleep(lag - half).await;
    pass(&shared, Phase::Full).await;
}

async fn pass(shared: &Weak<Shared>, phase: Phase) {
    let Some(shared) = shared.upgrade() else {
        return;
    };
    if let Err(e) = shared.converge_in_background(phase) {
        error!(error = %e, ?phase, "background convergence failed");
    }
}

/// Expires leases every second; an expiry counts as a configuration change.
pub(super) async fn expire_leases(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(LEASE_TICK);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        // Looking at the model expires leases and signals the change.
        drop(shared.model());
    }
}
