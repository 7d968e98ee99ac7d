//! Pure choices and presentation: which dataset a name means, what Get/List show, what Create asks
//! for. No I/O and no state, so every rule here is unit-tested directly.

use std::collections::BTreeMap;

use serde_json::json;

use super::options::CreateRequest;
use super::store::KnownVolume;
use super::{Error, VolumeName};
use crate::flocker::types::{NAME_KEY, PROFILE_KEY, SIZE_KEY};
use crate::flocker::{DatasetConfig, DatasetId, NewDataset, NodeId};
use crate::size::Size;

/// Live datasets that carry a volume name.
fn live_named(datasets: &[DatasetConfig]) -> impl Iterator<Item = &DatasetConfig> {
    datasets.iter().filter(|d| !d.deleted && d.name().is_some())
}

/// Which of several datasets with one name comes first. Names made outside the plugin need not be unique
/// (flocker-upstream.md §7.12), so choose deterministically: one on this node, then the lowest dataset ID.
fn preference(dataset: &DatasetConfig, me: Option<NodeId>) -> (bool, DatasetId) {
    (me.is_none() || dataset.primary != me, dataset.dataset_id)
}

/// The dataset a name refers to.
pub fn pick<'a>(
    datasets: &'a [DatasetConfig],
    name: &str,
    me: Option<NodeId>,
) -> Option<&'a DatasetConfig> {
    live_named(datasets)
        .filter(|d| d.name() == Some(name))
        .min_by_key(|d| preference(d, me))
}

/// The dataset each name refers to, in one pass, sorted by name (Docker keys volumes by name).
pub fn by_name(datasets: &[DatasetConfig], me: Option<NodeId>) -> BTreeMap<&str, &DatasetConfig> {
    // Sorted once and deduplicated, then bulk-built: much cheaper than 10,000 map inserts.
    let mut named: Vec<(&str, &DatasetConfig)> = live_named(datasets)
        .map(|d| (d.name().unwrap_or_default(), d))
        .collect();
    named.sort_unstable_by(|a, b| {
        a.0.cmp(b.0)
            .then_with(|| preference(a.1, me).cmp(&preference(b.1, me)))
    });
    named.dedup_by(|later, first| later.0 == first.0);
    named.into_iter().collect()
}

/// What is remembered of a dataset for answers while the control service is away.
pub fn known_volume(dataset: &DatasetConfig) -> KnownVolume {
    KnownVolume {
        dataset_id: dataset.dataset_id,
        primary: dataset.primary,
        size: dataset.maximum_size,
        profile: dataset.metadata.profile.clone(),
    }
}

/// The dataset Create asks for: named, sized and profiled in metadata as the original plugin did.
pub fn new_dataset(name: &VolumeName, node: NodeId, request: &CreateRequest) -> NewDataset {
    let mut metadata = BTreeMap::from([
        (NAME_KEY.to_string(), name.to_string()),
        (SIZE_KEY.to_string(), request.size.bytes().to_string()),
    ]);
    if let Some(profile) = &request.profile {
        metadata.insert(PROFILE_KEY.to_string(), profile.clone());
    }
    NewDataset {
        primary: node,
        metadata,
        maximum_size: request.size.bytes(),
    }
}

/// `docker volume inspect`'s Status; `stale` says why the answer comes from memory.
pub fn status(known: &KnownVolume, stale: Option<&str>) -> BTreeMap<String, serde_json::Value> {
    let mut status = BTreeMap::from([("dataset_id".to_string(), json!(known.dataset_id))]);
    if let Some(primary) = known.primary {
        status.insert("primary".into(), json!(primary));
    }
    if let Some(size) = known.size {
        status.insert("size".into(), json!(Size::from_bytes(size).to_string()));
        status.insert("size_bytes".into(), json!(size));
    }
    if let Some(profile) = &known.profile {
        status.insert("profile".into(), json!(profile));
    }
    if let Some(reason) = stale {
        status.insert("stale".into(), json!(true));
        status.insert("stale_reason".into(), json!(reason));
    }
    status
}

/// The error for a volume whose lease another node holds.
pub fn in_use_elsewhere(name: &VolumeName, dataset: DatasetId, holder: &str) -> Error {
    Error::InUse {
        name: name.to_string(),
        place: format!("on node {holder}, which holds the lease on dataset {dataset}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn dataset(name: &str, primary: Option<NodeId>, deleted: bool) -> DatasetConfig {
        DatasetConfig {
            dataset_id: DatasetId(Uuid::new_v4()),
            primary,
            deleted,
            metadata: crate::flocker::types::Metadata {
                name: Some(name.to_string()),
                profile: None,
            },
            maximum_size: Some(1 << 30),
        }
    }

    #[test]
    fn pick_skips_deleted_and_prefers_this_node() {
        let me = NodeId(Uuid::new_v4());
        let other = NodeId(Uuid::new_v4());
        let datasets = vec![
            dataset("v", Some(me), true),
            dataset("v", Some(other), false),
            dataset("v", Some(me), false),
            dataset("w", Some(me), false),
        ];
        assert_eq!(pick(&datasets, "v", Some(me)), Some(&datasets[2]));
        assert_eq!(pick(&datasets, "x", Some(me)), None);
        assert!(
            pick(&datasets, "V", Some(me)).is_none(),
            "names are case-sensitive"
        );
        let chosen = by_name(&datasets, Some(me));
        assert_eq!(chosen.keys().copied().collect::<Vec<_>>(), ["v", "w"]);
        assert_eq!(chosen["v"], &datasets[2], "the same choice as pick");
    }

    #[test]
    fn new_dataset_metadata_has_name_size_and_profile() {
        let node = NodeId(Uuid::new_v4());
        let request = CreateRequest {
            size: Size::from_bytes(10 << 30),
            profile: Some("gold".into()),
        };
        let new = new_dataset(&VolumeName::new("db").unwrap(), node, &request);
        assert_eq!(new.maximum_size, 10 << 30);
        assert_eq!(new.metadata[NAME_KEY], "db");
        assert_eq!(new.metadata[SIZE_KEY], "10737418240");
        assert_eq!(new.metadata[PROFILE_KEY], "gold");
    }

    #[test]
    fn status_reports_stale_answers() {
        let known = known_volume(&dataset("v", None, false));
        let status = status(&known, Some("unreachable"));
        assert_eq!(status["stale"], json!(true));
        assert_eq!(status["size"], json!("1GiB"));
    }
}
