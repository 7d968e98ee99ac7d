//! Which Flocker node this is (SPEC §4): `NODE_UUID`, else the era lookup, else `MY_NETWORK_IDENTITY`.
//!
//! Discovery runs in the background after the socket is open; until it succeeds, calls that need the
//! node answer an error saying what is awaited (upstream opened no socket at all, so Docker said
//! "plugin not found", flocker-upstream.md §7.4).

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::backoff::Backoff;
use crate::flocker::{self, NodeId};

/// This boot's ID: a Flocker node's era (flocker-upstream.md §4.1).
pub const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);

/// The node identity as known so far.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    /// Not known; the text says what discovery waits for.
    Pending(String),
    /// This node's UUID.
    Known(NodeId),
}

/// Where the identity comes from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// `NODE_UUID`.
    pub node_uuid: Option<Uuid>,
    /// `MY_NETWORK_IDENTITY`.
    pub network_identity: Option<String>,
}

/// Starts discovery; the receiver sees `Known` once it succeeds. Discovery never gives up, but ends
/// when `stop` is cancelled (the daemon is stopping).
pub fn discover(
    client: flocker::Client,
    sources: Sources,
    stop: CancellationToken,
) -> watch::Receiver<Identity> {
    if let Some(uuid) = sources.node_uuid {
        let (_, rx) = watch::channel(Identity::Known(NodeId(uuid)));
        return rx;
    }
    let (tx, rx) = watch::channel(Identity::Pending("looking up this node's era".into()));
    tokio::spawn(async move {
        let era = this_boot_era();
        let mut backoff = Backoff::new(FIRST_RETRY, MAX_RETRY);
        loop {
            let attempt = match (era, sources.network_identity.as_deref()) {
                (Some(era), _) => by_era(&client, era).await,
                (None, Some(ip)) => by_address(&client, ip).await,
                (None, None) => Err(format!(
                    "{BOOT_ID} is unreadable and MY_NETWORK_IDENTITY is unset; set NODE_UUID or MY_NETWORK_IDENTITY"
                )),
            };
            match attempt {
                Ok(node) => {
                    info!(node = %node, "node identity known");
                    tx.send_replace(Identity::Known(node));
                    return;
                }
                Err(reason) => {
                    let changed = !matches!(&*tx.borrow(), Identity::Pending(r) if *r == reason);
                    if changed {
                        warn!(%reason, "node identity not known yet; retrying");
                        tx.send_replace(Identity::Pending(reason));
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    });
    rx
}

/// This boot's era, or `None` if [`BOOT_ID`] is unreadable (then only `MY_NETWORK_IDENTITY` can help).
pub fn this_boot_era() -> Option<Uuid> {
    let text = std::fs::read_to_string(BOOT_ID).ok()?;
    Uuid::parse_str(text.trim()).ok()
}

async fn by_era(client: &flocker::Client, era: Uuid) -> Result<NodeId, String> {
    match client.node_by_era(era).await {
        Ok(node) => Ok(node),
        Err(flocker::Error::NotFound { .. }) => Err(format!(
            "the control service at {} knows no node with era {era} yet: the local Flocker dataset agent has not connected",
            client.base_url()
        )),
        Err(e) => Err(e.to_string()),
    }
}

async fn by_address(client: &flocker::Client, ip: &str) -> Result<NodeId, String> {
    let nodes = client.nodes().await.map_err(|e| e.to_string())?;
    nodes
        .iter()
        .find(|n| n.host == ip)
        .map(|n| n.uuid)
        .ok_or_else(|| format!("no node with MY_NETWORK_IDENTITY={ip} in GET /v1/state/nodes yet"))
}
