//! The emulator's pure model: configuration, leases, nodes (alive or dead), observed state and
//! the convergence plan.
//!
//! Everything here is plain data and deterministic functions of it (time is passed in), so it
//! can be unit-tested without sockets or mounts. It does not parse HTTP, validate JSON schemas
//! or touch the file system: `api` validates requests and `agent` carries out the [`Action`]s
//! that [`Model::plan`] returns, then reports back with [`Model::record`].

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use uuid::Uuid;

/// One configured dataset (a primary manifestation), kept forever, even once deleted.
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetConfig {
    /// Lowercase UUID of the dataset.
    pub dataset_id: Uuid,
    /// The node that should hold it.
    pub primary: Uuid,
    /// Opaque string metadata.
    pub metadata: BTreeMap<String, String>,
    /// Size in bytes; `None` means "no particular size".
    pub maximum_size: Option<u64>,
    /// Set by DELETE; never cleared (upstream issue ClusterHQ/flocker#2297).
    pub deleted: bool,
}

impl DatasetConfig {
    /// The wire shape of `GET /v1/configuration/datasets` items (reference §5.5).
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("dataset_id".into(), json!(self.dataset_id.to_string()));
        obj.insert("deleted".into(), json!(self.deleted));
        obj.insert("primary".into(), json!(self.primary.to_string()));
        obj.insert("metadata".into(), json!(self.metadata));
        if let Some(size) = self.maximum_size {
            obj.insert("maximum_size".into(), json!(size));
        }
        Value::Object(obj)
    }
}

/// A lease: node `node_uuid` keeps `dataset_id` where it is until `expires_at`.
#[derive(Debug, Clone, PartialEq)]
pub struct Lease {
    /// Any 36-character string; upstream does not check that the dataset exists.
    pub dataset_id: String,
    /// The holder.
    pub node_uuid: Uuid,
    /// `None` never expires.
    pub expires_at: Option<Instant>,
}

impl Lease {
    /// The wire shape, with `expires` as seconds remaining at `now` (reference §5.9).
    pub fn to_json(&self, now: Instant) -> Value {
        let expires = self
            .expires_at
            .map(|at| at.saturating_duration_since(now).as_secs_f64());
        json!({
            "dataset_id": self.dataset_id,
            "node_uuid": self.node_uuid.to_string(),
            "expires": expires,
        })
    }
}

/// A node known to the cluster, as an agent would announce it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    /// Node identity.
    pub uuid: Uuid,
    /// Boot id of the machine; answers `by_era`.
    pub era: Uuid,
    /// Address listed by `GET /v1/state/nodes`.
    pub host: IpAddr,
}

/// What the agent last observed for one dataset whose backing storage exists.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Node → mount path, for each node where the dataset is mounted.
    pub mounts: BTreeMap<Uuid, PathBuf>,
}

/// One step for the agent to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create the backing storage of a new dataset.
    CreateBacking(Uuid),
    /// Unmount the dataset from that node.
    Unmount {
        /// Dataset.
        dataset: Uuid,
        /// Node.
        node: Uuid,
    },
    /// Destroy the backing storage of a deleted dataset.
    Destroy(Uuid),
    /// Mount the dataset on that node.
    Mount {
        /// Dataset.
        dataset: Uuid,
        /// Node.
        node: Uuid,
    },
}

/// Which part of a plan to carry out now (`Convergence::After` unmounts first, mounts later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Only unmount what has to go.
    UnmountOnly,
    /// Everything.
    Full,
}

/// Why a dataset could not be created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateError {
    /// The id is in use, possibly by a deleted dataset.
    Collision,
}

/// Why a dataset could not be moved or deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpdateError {
    /// No dataset has that id.
    NotFound,
    /// The dataset is deleted (move only).
    Deleted,
}

/// Whether a successful acquire made a new lease or renewed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acquired {
    /// There was no lease (HTTP 201).
    Created,
    /// The same node already held it (HTTP 200).
    Renewed,
}

/// Another node holds the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseHeld;

/// Configuration, leases, nodes and observed state of one emulated cluster.
#[derive(Debug, Clone)]
pub struct Model {
    datasets: Vec<DatasetConfig>,
    leases: Vec<Lease>,
    nodes: Vec<NodeInfo>,
    /// Registered nodes whose machine died: unlisted, their state forgotten, their agent idle.
    dead: BTreeSet<Uuid>,
    /// Kept for dead nodes too: their bind mounts stay until revived or force-detached.
    observed: BTreeMap<Uuid, Observed>,
    generation: u64,
    salt: u128,
    /// Position of each dataset in `datasets`: lookups by id are O(1) with 10,000 datasets.
    index: HashMap<Uuid, usize>,
    /// Bumped whenever the dataset list (not leases) changes: keys the cached configuration listing.
    datasets_version: u64,
    /// Bumped whenever what `GET /v1/state/datasets` shows may change: keys the cached state listing.
    state_version: u64,
}

impl Model {
    /// An empty cluster; `salt` makes tags differ between emulator instances.
    pub fn new(salt: u128) -> Self {
        Model {
            datasets: Vec::new(),
            leases: Vec::new(),
            nodes: Vec::new(),
            dead: BTreeSet::new(),
            observed: BTreeMap::new(),
            generation: 0,
            salt,
            index: HashMap::new(),
            datasets_version: 0,
            state_version: 0,
        }
    }

    /// The configuration tag: 32 lowercase hex characters that change with every configuration change.
    pub fn tag(&self) -> String {
        // Upstream hashes the serialized configuration (F:flocker/control/_persistence.py:701-708);
        // hashing a change counter gives the same observable contract: a new tag per change.
        format!(
            "{:032x}",
            fnv1a_128(
                &[
                    self.salt.to_le_bytes(),
                    u128::from(self.generation).to_le_bytes()
                ]
                .concat()
            )
        )
    }

    fn changed(&mut self) {
        self.generation += 1;
    }

    /// All configured datasets in creation order, deleted ones included.
    pub fn datasets(&self) -> &[DatasetConfig] {
        &self.datasets
    }

    /// Which version of the dataset list this is (for caching its serialized form).
    pub fn datasets_version(&self) -> u64 {
        self.datasets_version
    }

    /// Which version of the state listing this is (for caching its serialized form).
    pub fn state_version(&self) -> (u64, u64) {
        (self.datasets_version, self.state_version)
    }

    fn datasets_changed(&mut self) {
        self.datasets_version += 1;
        self.changed();
    }

    fn find(&self, id: &str) -> Option<usize> {
        // Stored ids are lowercase; upstream looks the path segment up verbatim, so only the
        // canonical spelling matches.
        let uuid = Uuid::parse_str(id).ok()?;
        if uuid.hyphenated().to_string() != id {
            return None;
        }
        self.index.get(&uuid).copied()
    }

    /// Adds a dataset; the id is generated when `None`.
    pub fn create_dataset(
        &mut self,
        dataset_id: Option<Uuid>,
        primary: Uuid,
        metadata: BTreeMap<String, String>,
        maximum_size: Option<u64>,
    ) -> Result<DatasetConfig, CreateError> {
        let dataset_id = dataset_id.unwrap_or_else(Uuid::new_v4);
        if self.index.contains_key(&dataset_id) {
            return Err(CreateError::Collision);
        }
        let dataset = DatasetConfig {
            dataset_id,
            primary,
            metadata,
            maximum_size,
            deleted: false,
        };
        self.index.insert(dataset_id, self.datasets.len());
        self.datasets.push(dataset.clone());
        self.datasets_changed();
        Ok(dataset)
    }

    /// Sets a new primary; `None` or the same primary changes nothing.
    pub fn move_dataset(
        &mut self,
        id: &str,
        primary: Option<Uuid>,
    ) -> Result<DatasetConfig, UpdateError> {
        let i = self.find(id).ok_or(UpdateError::NotFound)?;
        if self.datasets[i].deleted {
            return Err(UpdateError::Deleted);
        }
        if let Some(primary) = primary {
            if self.datasets[i].primary != primary {
                self.datasets[i].primary = primary;
                self.datasets_changed();
            }
        }
        Ok(self.datasets[i].clone())
    }

    /// Marks a dataset deleted, idempotently.
    pub fn delete_dataset(&mut self, id: &str) -> Result<DatasetConfig, UpdateError> {
        let i = self.find(id).ok_or(UpdateError::NotFound)?;
        if !self.datasets[i].deleted {
            self.datasets[i].deleted = true;
            self.datasets_changed();
        }
        Ok(self.datasets[i].clone())
    }

    /// Current leases (call [`Model::expire_leases`] first).
    pub fn leases(&self) -> &[Lease] {
        &self.leases
    }

    /// Removes expired leases; true if any was removed (a configuration change).
    pub fn expire_leases(&mut self, now: Instant) -> bool {
        let before = self.leases.len();
        self.leases
            .retain(|l| l.expires_at.is_none_or(|at| at > now));
        let expired = self.leases.len() != before;
        if expired {
            self.changed();
        }
        expired
    }

    /// Acquires or renews a lease; `expires` is seconds from `now`, `None` for never.
    pub fn acquire_lease(
        &mut self,
        dataset_id: &str,
        node_uuid: Uuid,
        expires: Option<f64>,
        now: Instant,
    ) -> Result<(Lease, Acquired), LeaseHeld> {
        // A duration too large for `Instant` is, for all practical purposes, "never".
        let expires_at = expires.and_then(|secs| {
            Duration::try_from_secs_f64(secs.max(0.0))
                .ok()
                .and_then(|d| now.checked_add(d))
        });
        let lease = Lease {
            dataset_id: dataset_id.to_string(),
            node_uuid,
            expires_at,
        };
        let outcome = match self.leases.iter_mut().find(|l| l.dataset_id == dataset_id) {
            Some(existing) if existing.node_uuid != node_uuid => return Err(LeaseHeld),
            Some(existing) => {
                *existing = lease.clone();
                Acquired::Renewed
            }
            None => {
                self.leases.push(lease.clone());
                Acquired::Created
            }
        };
        self.changed();
        Ok((lease, outcome))
    }

    /// Releases the lease on a dataset, whoever holds it.
    pub fn release_lease(&mut self, dataset_id: &str) -> Option<Lease> {
        let i = self
            .leases
            .iter()
            .position(|l| l.dataset_id == dataset_id)?;
        self.changed();
        Some(self.leases.remove(i))
    }

    /// Registers a node (replacing one with the same uuid); a dead node comes back alive.
    pub fn add_node(&mut self, node: NodeInfo) {
        self.nodes.retain(|n| n.uuid != node.uuid);
        self.dead.remove(&node.uuid);
        self.nodes.push(node);
        self.state_version += 1;
    }

    /// Marks a registered node's machine dead; false if no such node is registered.
    ///
    /// Its mounts stay as observed, but state and the node list stop showing it and the plan
    /// no longer acts on it, except to force-detach (see [`Model::plan`]).
    pub fn kill_node(&mut self, uuid: Uuid) -> bool {
        let known = self.nodes.iter().any(|n| n.uuid == uuid);
        if known {
            self.dead.insert(uuid);
            self.state_version += 1;
        }
        known
    }

    /// Brings a dead node back with its era and mounts; false if no such node is registered.
    pub fn revive_node(&mut self, uuid: Uuid) -> bool {
        self.dead.remove(&uuid);
        self.state_version += 1;
        self.nodes.iter().any(|n| n.uuid == uuid)
    }

    /// Live nodes in registration order (what `GET /v1/state/nodes` lists).
    pub fn live_nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().filter(|n| !self.dead.contains(&n.uuid))
    }

    /// The live node whose agent reported this era.
    pub fn node_by_era(&self, era: Uuid) -> Option<Uuid> {
        self.live_nodes().find(|n| n.era == era).map(|n| n.uuid)
    }

    /// `GET /v1/state/datasets`: manifest entries with path, non-manifest ones without.
    ///
    /// Mounts on dead nodes are left out (upstream forgets a disconnected node's state); a
    /// dataset mounted only on dead nodes is absent, since no live agent reports it.
    pub fn state_json(&self) -> Vec<Value> {
        let mut out = Vec::new();
        for d in &self.datasets {
            let Some(observed) = self.observed.get(&d.dataset_id) else {
                // Not yet discovered by an agent, or destroyed: absent (reference §5.10).
                continue;
            };
            let entry = |extra: &[(&str, Value)]| {
                let mut obj = Map::new();
                obj.insert("dataset_id".into(), json!(d.dataset_id.to_string()));
                for (k, v) in extra {
                    obj.insert((*k).into(), v.clone());
                }
                if let Some(size) = d.maximum_size {
                    obj.insert("maximum_size".into(), json!(size));
                }
                Value::Object(obj)
            };
            if observed.mounts.is_empty() {
                out.push(entry(&[]));
            }
            let live = observed
                .mounts
                .iter()
                .filter(|(node, _)| !self.dead.contains(node));
            for (node, path) in live {
                out.push(entry(&[
                    ("primary", json!(node.to_string())),
                    ("path", json!(path.to_string_lossy())),
                ]));
            }
        }
        out
    }

    /// Everything the agent observed, by dataset.
    pub fn observed(&self) -> &BTreeMap<Uuid, Observed> {
        &self.observed
    }

    /// Lease holders by dataset, built once per plan (a plan visits every dataset).
    fn holders(&self) -> HashMap<Uuid, Uuid> {
        self.leases
            .iter()
            .filter_map(|l| {
                let id = Uuid::parse_str(&l.dataset_id).ok()?;
                // Only the canonical spelling names a dataset, as upstream compares strings.
                (id.hyphenated().to_string() == l.dataset_id).then_some((id, l.node_uuid))
            })
            .collect()
    }

    /// The actions that bring observed state towards configuration, in the order to apply them.
    ///
    /// `local` are the nodes this agent serves: a primary elsewhere is unmounted here but never
    /// mounted. A node holding a lease keeps its mount through moves and deletes (reference §3).
    ///
    /// Dead nodes get nothing new: no mount, no backing for a dataset configured there, no
    /// unmount or destroy of a deleted dataset still mounted there. Their mounts stay, except
    /// that a dataset configured onto a live local node is force-detached from a dead node
    /// (unmounted there, as a cloud backend detaches a volume from a terminated instance) unless
    /// that dead node holds its lease.
    pub fn plan(&self, local: &[Uuid], phase: Phase) -> Vec<Action> {
        let mut actions = Vec::new();
        let holders = self.holders();
        for d in &self.datasets {
            let id = d.dataset_id;
            let observed = self.observed.get(&id);
            let mounted: Vec<Uuid> = observed
                .map(|o| o.mounts.keys().copied().collect())
                .unwrap_or_default();
            let leased_by = holders.get(&id).copied();
            if d.deleted {
                if observed.is_none() || mounted.iter().any(|m| Some(*m) == leased_by) {
                    continue;
                }
                let (dead, live): (Vec<Uuid>, Vec<Uuid>) =
                    mounted.iter().partition(|m| self.dead.contains(m));
                actions.extend(
                    live.iter()
                        .map(|&node| Action::Unmount { dataset: id, node }),
                );
                // Nobody destroys a volume still attached to a dead machine.
                if phase == Phase::Full && dead.is_empty() {
                    actions.push(Action::Destroy(id));
                }
                continue;
            }
            let primary_dead = self.dead.contains(&d.primary);
            if observed.is_none() && phase == Phase::Full && !primary_dead {
                actions.push(Action::CreateBacking(id));
            }
            let desired = (local.contains(&d.primary) && !primary_dead).then_some(d.primary);
            let mut staying = Vec::new();
            for &node in &mounted {
                let pinned = Some(node) == desired || Some(node) == leased_by;
                // A dead node's mount goes only when a live local primary claims the dataset.
                let abandoned = self.dead.contains(&node) && desired.is_none();
                if pinned || abandoned {
                    staying.push(node);
                } else {
                    actions.push(Action::Unmount { dataset: id, node });
                }
            }
            // A block device attaches to one node at a time, so a leased old mount blocks the new one.
            if let (Some(node), true, Phase::Full) = (desired, staying.is_empty(), phase) {
                actions.push(Action::Mount { dataset: id, node });
            }
        }
        // Unmounts before mounts, so a move never has the dataset on two nodes at once.
        actions.sort_by_key(|a| match a {
            Action::CreateBacking(_) => 0,
            Action::Unmount { .. } => 1,
            Action::Destroy(_) => 2,
            Action::Mount { .. } => 3,
        });
        actions
    }

    /// Records that the agent carried out `action`; `path` is the mount point for `Mount`.
    pub fn record(&mut self, action: &Action, path: Option<PathBuf>) {
        self.state_version += 1;
        match *action {
            Action::CreateBacking(id) => {
                self.observed.entry(id).or_default();
            }
            Action::Unmount { dataset, node } => {
                if let Some(o) = self.observed.get_mut(&dataset) {
                    o.mounts.remove(&node);
                }
            }
            Action::Destroy(id) => {
                self.observed.remove(&id);
            }
            Action::Mount { dataset, node } => {
                if let (Some(o), Some(path)) = (self.observed.get_mut(&dataset), path) {
                    o.mounts.insert(node, path);
                }
            }
        }
    }
}

/// 128-bit FNV-1a: a tiny deterministic hash, enough to make tags look like upstream's.
fn fnv1a_128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013b;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply_all(m: &mut Model, local: &[Uuid]) {
        for a in m.plan(local, Phase::Full) {
            let path = match a {
                Action::Mount { dataset, node } => {
                    Some(PathBuf::from(format!("/m/{node}/{dataset}")))
                }
                _ => None,
            };
            m.record(&a, path);
        }
    }

    #[test]
    fn tag_changes_only_on_change() {
        let mut m = Model::new(7);
        let t0 = m.tag();
        assert_eq!(t0.len(), 32);
        let node = Uuid::new_v4();
        let d = m.create_dataset(None, node, BTreeMap::new(), None).unwrap();
        let t1 = m.tag();
        assert_ne!(t0, t1);
        m.move_dataset(&d.dataset_id.to_string(), Some(node))
            .unwrap();
        assert_eq!(m.tag(), t1, "unchanged primary is not a change");
        m.delete_dataset(&d.dataset_id.to_string()).unwrap();
        let t2 = m.tag();
        assert_ne!(t1, t2);
        m.delete_dataset(&d.dataset_id.to_string()).unwrap();
        assert_eq!(m.tag(), t2, "repeated delete is not a change");
        m.acquire_lease("x", node, None, Instant::now()).unwrap();
        assert_ne!(m.tag(), t2, "leases are configuration");
    }

    #[test]
    fn collision_includes_deleted() {
        let mut m = Model::new(0);
        let id = Uuid::new_v4();
        m.create_dataset(Some(id), Uuid::new_v4(), BTreeMap::new(), None)
            .unwrap();
        m.delete_dataset(&id.to_string()).unwrap();
        assert_eq!(
            m.create_dataset(Some(id), Uuid::new_v4(), BTreeMap::new(), None),
            Err(CreateError::Collision)
        );
        assert_eq!(
            m.move_dataset(&id.to_string(), None),
            Err(UpdateError::Deleted)
        );
    }

    #[test]
    fn leases_renew_conflict_expire() {
        let mut m = Model::new(0);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Instant::now();
        assert_eq!(
            m.acquire_lease("d", a, Some(10.0), now).unwrap().1,
            Acquired::Created
        );
        assert_eq!(
            m.acquire_lease("d", a, Some(20.0), now).unwrap().1,
            Acquired::Renewed
        );
        assert_eq!(m.acquire_lease("d", b, None, now), Err(LeaseHeld));
        assert_eq!(m.leases()[0].to_json(now)["expires"], json!(20.0));
        assert!(!m.expire_leases(now + Duration::from_secs(19)));
        assert!(m.expire_leases(now + Duration::from_secs(20)));
        assert!(m.leases().is_empty());
    }

    #[test]
    fn move_unmounts_then_mounts_unless_leased() {
        let mut m = Model::new(0);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let d = m
            .create_dataset(None, a, BTreeMap::new(), Some(1 << 30))
            .unwrap();
        let id = d.dataset_id;
        assert!(m.state_json().is_empty());
        apply_all(&mut m, &[a, b]);
        assert_eq!(m.state_json()[0]["primary"], json!(a.to_string()));

        m.acquire_lease(&id.to_string(), a, None, Instant::now())
            .unwrap();
        m.move_dataset(&id.to_string(), Some(b)).unwrap();
        assert!(
            m.plan(&[a, b], Phase::Full).is_empty(),
            "lease keeps it on a"
        );

        m.release_lease(&id.to_string()).unwrap();
        let unmounts = m.plan(&[a, b], Phase::UnmountOnly);
        assert_eq!(
            unmounts,
            vec![Action::Unmount {
                dataset: id,
                node: a
            }]
        );
        m.record(&unmounts[0], None);
        let state = m.state_json();
        assert_eq!(
            state,
            vec![json!({"dataset_id": id.to_string(), "maximum_size": 1u64 << 30})]
        );
        apply_all(&mut m, &[a, b]);
        assert_eq!(m.state_json()[0]["primary"], json!(b.to_string()));
    }

    #[test]
    fn delete_destroys_unless_leased_where_mounted() {
        let mut m = Model::new(0);
        let a = Uuid::new_v4();
        let id = m
            .create_dataset(None, a, BTreeMap::new(), None)
            .unwrap()
            .dataset_id;
        apply_all(&mut m, &[a]);
        m.acquire_lease(&id.to_string(), a, None, Instant::now())
            .unwrap();
        m.delete_dataset(&id.to_string()).unwrap();
        apply_all(&mut m, &[a]);
        assert_eq!(m.state_json().len(), 1);
        m.release_lease(&id.to_string());
        assert_eq!(
            m.plan(&[a], Phase::Full),
            vec![
                Action::Unmount {
                    dataset: id,
                    node: a
                },
                Action::Destroy(id)
            ]
        );
        apply_all(&mut m, &[a]);
        assert!(m.state_json().is_empty());
    }

    fn node(uuid: Uuid) -> NodeInfo {
        NodeInfo {
            uuid,
            era: Uuid::new_v4(),
            host: IpAddr::from([127, 0, 0, 1]),
        }
    }

    /// A model with live nodes `a` and `b` and one dataset mounted on `a`.
    fn mounted_on_a() -> (Model, Uuid, Uuid, Uuid) {
        let mut m = Model::new(0);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        m.add_node(node(a));
        m.add_node(node(b));
        let id = m
            .create_dataset(None, a, BTreeMap::new(), None)
            .unwrap()
            .dataset_id;
        apply_all(&mut m, &[a, b]);
        assert_eq!(m.state_json()[0]["primary"], json!(a.to_string()));
        (m, a, b, id)
    }

    #[test]
    fn a_dead_node_leaves_the_lists_keeps_its_mounts_and_gets_nothing_new() {
        let (mut m, a, b, id) = mounted_on_a();
        let era_a = m.nodes[0].era;
        assert!(m.kill_node(a));
        assert!(!m.kill_node(Uuid::new_v4()), "unknown node");
        let live: Vec<Uuid> = m.live_nodes().map(|n| n.uuid).collect();
        assert_eq!(live, vec![b]);
        assert_eq!(m.node_by_era(era_a), None);
        assert!(
            m.state_json().is_empty(),
            "mounted only on a dead node: absent"
        );
        assert!(m.observed()[&id].mounts.contains_key(&a), "the mount stays");
        assert!(m.plan(&[a, b], Phase::Full).is_empty());

        let later = m
            .create_dataset(None, a, BTreeMap::new(), None)
            .unwrap()
            .dataset_id;
        assert!(
            m.plan(&[a, b], Phase::Full).is_empty(),
            "no backing and no mount for a dataset configured on a dead node"
        );

        assert!(m.revive_node(a));
        assert_eq!(m.node_by_era(era_a), Some(a));
        assert_eq!(m.state_json()[0]["primary"], json!(a.to_string()));
        assert_eq!(
            m.plan(&[a, b], Phase::Full),
            vec![
                Action::CreateBacking(later),
                Action::Mount {
                    dataset: later,
                    node: a
                }
            ]
        );
    }

    #[test]
    fn a_move_off_a_dead_node_force_detaches_unless_its_lease_pins() {
        let (mut m, a, b, id) = mounted_on_a();
        let key = id.to_string();
        m.acquire_lease(&key, a, None, Instant::now()).unwrap();
        m.kill_node(a);
        m.move_dataset(&key, Some(Uuid::new_v4())).unwrap();
        assert!(
            m.plan(&[a, b], Phase::Full).is_empty(),
            "leased by the dead node"
        );
        m.release_lease(&key).unwrap();
        assert!(
            m.plan(&[a, b], Phase::Full).is_empty(),
            "a primary this agent does not run does not claim it"
        );

        m.move_dataset(&key, Some(b)).unwrap();
        // A lease held elsewhere does not pin the dead node's mount.
        m.acquire_lease(&key, b, None, Instant::now()).unwrap();
        let detach = Action::Unmount {
            dataset: id,
            node: a,
        };
        assert_eq!(m.plan(&[a, b], Phase::UnmountOnly), vec![detach.clone()]);
        assert_eq!(
            m.plan(&[a, b], Phase::Full),
            vec![
                detach,
                Action::Mount {
                    dataset: id,
                    node: b
                }
            ]
        );
        apply_all(&mut m, &[a, b]);
        assert_eq!(m.state_json()[0]["primary"], json!(b.to_string()));
        m.revive_node(a);
        assert_eq!(m.state_json().len(), 1, "no longer on a after revival");
    }

    #[test]
    fn a_deleted_dataset_on_a_dead_node_waits_for_its_return() {
        let (mut m, a, b, id) = mounted_on_a();
        m.kill_node(a);
        m.delete_dataset(&id.to_string()).unwrap();
        assert!(m.plan(&[a, b], Phase::Full).is_empty());
        m.revive_node(a);
        assert_eq!(
            m.plan(&[a, b], Phase::Full),
            vec![
                Action::Unmount {
                    dataset: id,
                    node: a
                },
                Action::Destroy(id)
            ]
        );
    }
}
