//! One async lock per volume name: calls for a volume run one at a time, so concurrent Mounts share
//! one move and a lease-release retry never interleaves with a Mount of the same volume.
//!
//! Keyed by name because Docker speaks names; a dataset's name never changes (Flocker cannot update
//! metadata, flocker-upstream.md §5.7), so a name lock also covers its dataset.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// Entries nobody holds are dropped once the table grows past this (anonymous volumes are all new names).
const PRUNE_ABOVE: usize = 256;

/// The lock table.
#[derive(Debug, Default)]
pub struct VolumeLocks {
    table: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl VolumeLocks {
    /// Waits for the lock of `name`.
    pub async fn lock(&self, name: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut table = self.table.lock().expect("lock table");
            if table.len() > PRUNE_ABOVE {
                table.retain(|_, lock| Arc::strong_count(lock) > 1);
            }
            Arc::clone(table.entry(name.to_string()).or_default())
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn one_holder_per_name_and_names_are_independent() {
        let locks = VolumeLocks::default();
        let held = locks.lock("a").await;
        let other = tokio::time::timeout(Duration::from_millis(50), locks.lock("b")).await;
        assert!(other.is_ok(), "another name is not blocked");
        let same = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(same.is_err(), "the same name waits");
        drop(held);
        let again = tokio::time::timeout(Duration::from_millis(50), locks.lock("a")).await;
        assert!(again.is_ok());
    }
}
