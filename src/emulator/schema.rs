//! Request-body validation for the emulator, mirroring upstream's JSON schemas.
//!
//! Error strings imitate the Python `jsonschema` messages quoted in `reference/flocker-upstream.md`
//! §5.2/§5.3 (e.g. `'primary' is a required property`). This module only turns JSON values into
//! typed requests; it does not know about HTTP or the model.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use uuid::Uuid;

/// The `uuid` type's pattern in F:flocker/control/schema/types.yml (UUIDv4 only).
pub const UUID_PATTERN: &str =
    "^[A-Fa-f0-9]{8}-[A-Fa-f0-9]{4}-4[A-Fa-f0-9]{3}-[89abAB][A-Fa-f0-9]{3}-[A-Fa-f0-9]{12}$";

/// Smallest accepted `maximum_size` (64 MiB).
pub const MIN_SIZE: u64 = 67_108_864;

/// A validated `POST /v1/configuration/datasets` body.
#[derive(Debug, Clone, PartialEq)]
pub struct CreateRequest {
    /// Requested id, if any (already lowercased by parsing).
    pub dataset_id: Option<Uuid>,
    /// Target node.
    pub primary: Uuid,
    /// Metadata.
    pub metadata: BTreeMap<String, String>,
    /// Size in bytes.
    pub maximum_size: Option<u64>,
    /// The client sent `deleted`, which upstream's handler cannot take (a 500).
    pub sent_deleted: bool,
}

/// A validated `POST /v1/configuration/leases` body.
#[derive(Debug, Clone, PartialEq)]
pub struct LeaseRequest {
    /// Any 36-character string.
    pub dataset_id: String,
    /// Holder.
    pub node_uuid: Uuid,
    /// Seconds from now, or `None` for never.
    pub expires: Option<f64>,
}

/// Python-style repr, as jsonschema prints values in its messages.
fn repr(v: &Value) -> String {
    match v {
        Value::String(s) => format!("u'{s}'"),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

fn object<'a>(v: &'a Value, errors: &mut Vec<String>) -> Option<&'a Map<String, Value>> {
    let obj = v.as_object();
    if obj.is_none() {
        errors.push(format!("{} is not of type 'object'", repr(v)));
    }
    obj
}

fn additional(obj: &Map<String, Value>, allowed: &[&str], errors: &mut Vec<String>) {
    let extra: Vec<String> = obj
        .keys()
        .filter(|k| !allowed.contains(&k.as_str()))
        .map(|k| format!("u'{k}'"))
        .collect();
    match extra.len() {
        0 => {}
        1 => errors.push(format!(
            "Additional properties are not allowed ({} was unexpected)",
            extra[0]
        )),
        _ => errors.push(format!(
            "Additional properties are not allowed ({} were unexpected)",
            extra.join(", ")
        )),
    }
}

fn required(obj: &Map<String, Value>, names: &[&str], errors: &mut Vec<String>) {
    for name in names {
        if !obj.contains_key(*name) {
            errors.push(format!("'{name}' is a required property"));
        }
    }
}

fn is_uuid4(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens = [8, 4, 4, 4, 12];
    s.len() == 36
        && groups.len() == 5
        && groups
            .iter()
            .zip(lens)
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
        && groups[2].starts_with('4')
        && groups[3].starts_with(['8', '9', 'a', 'b', 'A', 'B'])
}

/// Checks the `uuid` schema type.
pub fn uuid4(v: &Value) -> Result<Uuid, String> {
    let Some(s) = v.as_str() else {
        return Err(format!("{} is not of type 'string'", repr(v)));
    };
    if s.len() > 36 {
        return Err(format!("{} is too long", repr(v)));
    }
    if s.len() < 36 {
        return Err(format!("{} is too short", repr(v)));
    }
    if !is_uuid4(s) {
        return Err(format!("{} does not match '{UUID_PATTERN}'", repr(v)));
    }
    Uuid::parse_str(s).map_err(|e| e.to_string())
}

fn maximum_size(v: &Value) -> Result<Option<u64>, String> {
    if v.is_null() {
        return Ok(None);
    }
    let Some(n) = v.as_u64().or_else(|| v.as_i64().map(|_| 0)) else {
        return Err(format!("{} is not of type 'integer', 'null'", repr(v)));
    };
    if n < MIN_SIZE {
        return Err(format!("{v} is less than the minimum of {MIN_SIZE}"));
    }
    if n % 1024 != 0 {
        return Err(format!("{v} is not a multiple of 1024"));
    }
    Ok(Some(n))
}

fn metadata(v: &Value, errors: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let Some(obj) = object(v, errors) else {
        return out;
    };
    if obj.len() > 16 {
        errors.push(format!("{v} has too many properties"));
    }
    for (k, val) in obj {
        let chars = k.chars().count();
        if chars == 0 || chars > 256 {
            errors.push(format!("u'{k}' does not match '^.{{1,256}}$'"));
        }
        match val.as_str() {
            Some(s) if s.chars().count() > 256 => errors.push(format!("{} is too long", repr(val))),
            Some(s) => {
                out.insert(k.clone(), s.to_string());
            }
            None => errors.push(format!("{} is not of type 'string'", repr(val))),
        }
    }
    out
}

/// Validates a create body against `dataset_configuration` with `primary` required.
pub fn create_request(v: &Value) -> Result<CreateRequest, Vec<String>> {
    let mut errors = Vec::new();
    let Some(obj) = object(v, &mut errors) else {
        return Err(errors);
    };
    additional(
        obj,
        &[
            "primary",
            "dataset_id",
            "deleted",
            "metadata",
            "maximum_size",
        ],
        &mut errors,
    );
    required(obj, &["primary"], &mut errors);
    let check_uuid = |name: &str, errors: &mut Vec<String>| {
        obj.get(name)
            .and_then(|v| uuid4(v).map_err(|e| errors.push(e)).ok())
    };
    let primary = check_uuid("primary", &mut errors);
    let dataset_id = check_uuid("dataset_id", &mut errors);
    let maximum_size = match obj.get("maximum_size").map(maximum_size) {
        Some(Err(e)) => {
            errors.push(e);
            None
        }
        Some(Ok(size)) => size,
        None => None,
    };
    let metadata = obj
        .get("metadata")
        .map(|m| metadata(m, &mut errors))
        .unwrap_or_default();
    if let Some(d) = obj.get("deleted").filter(|d| !d.is_boolean()) {
        errors.push(format!("{} is not of type 'boolean'", repr(d)));
    }
    match (primary, errors.is_empty()) {
        (Some(primary), true) => Ok(CreateRequest {
            dataset_id,
            primary,
            metadata,
            maximum_size,
            sent_deleted: obj.contains_key("deleted"),
        }),
        _ => Err(errors),
    }
}

/// Validates an update (move) body: `{"primary"?: uuid}`.
pub fn update_request(v: &Value) -> Result<Option<Uuid>, Vec<String>> {
    let mut errors = Vec::new();
    let Some(obj) = object(v, &mut errors) else {
        return Err(errors);
    };
    additional(obj, &["primary"], &mut errors);
    let primary = obj
        .get("primary")
        .and_then(|p| uuid4(p).map_err(|e| errors.push(e)).ok());
    if errors.is_empty() {
        Ok(primary)
    } else {
        Err(errors)
    }
}

/// Validates a lease body: `dataset_id`, `node_uuid` and `expires`, all required.
pub fn lease_request(v: &Value) -> Result<LeaseRequest, Vec<String>> {
    let mut errors = Vec::new();
    let Some(obj) = object(v, &mut errors) else {
        return Err(errors);
    };
    additional(obj, &["dataset_id", "node_uuid", "expires"], &mut errors);
    required(obj, &["dataset_id", "node_uuid", "expires"], &mut errors);
    let dataset_id = match obj.get("dataset_id") {
        Some(Value::String(s)) if s.chars().count() == 36 => Some(s.clone()),
        Some(v @ Value::String(s)) if s.chars().count() > 36 => {
            errors.push(format!("{} is too long", repr(v)));
            None
        }
        Some(v @ Value::String(_)) => {
            errors.push(format!("{} is too short", repr(v)));
            None
        }
        Some(v) => {
            errors.push(format!("{} is not of type 'string'", repr(v)));
            None
        }
        None => None,
    };
    let node_uuid = obj
        .get("node_uuid")
        .and_then(|p| uuid4(p).map_err(|e| errors.push(e)).ok());
    let expires = match obj.get("expires") {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::Null) | None => None,
        Some(v) => {
            errors.push(format!("{} is not of type 'number', 'null'", repr(v)));
            None
        }
    };
    match (dataset_id, node_uuid, errors.is_empty()) {
        (Some(dataset_id), Some(node_uuid), true) => Ok(LeaseRequest {
            dataset_id,
            node_uuid,
            expires,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NODE: &str = "0b8e7e10-38a2-4c1e-9e58-0f2f1e6cb5a1";

    #[test]
    fn create_messages_match_upstream() {
        assert_eq!(
            create_request(&json!({})).unwrap_err(),
            vec!["'primary' is a required property"]
        );
        assert_eq!(
            create_request(&json!({"primary": NODE, "junk": 1})).unwrap_err(),
            vec!["Additional properties are not allowed (u'junk' was unexpected)"]
        );
        assert!(create_request(&json!({"primary": "x"})).is_err());
        assert!(create_request(&json!({"primary": NODE, "maximum_size": 1024})).is_err());
        assert!(create_request(&json!({"primary": NODE, "maximum_size": 67108865})).is_err());
        assert!(create_request(&json!({"primary": NODE, "maximum_size": -1})).is_err());
        assert!(create_request(&json!({"primary": NODE, "maximum_size": 1.5e8})).is_err());
        assert!(create_request(&json!({"primary": NODE, "metadata": {"a": 1}})).is_err());
        let ok = create_request(&json!({
            "primary": NODE.to_uppercase(), "maximum_size": 67108864, "metadata": {"name": "x"}
        }))
        .unwrap();
        assert_eq!(ok.primary.to_string(), NODE);
        assert_eq!(ok.maximum_size, Some(67108864));
    }

    #[test]
    fn uuid_must_be_version_4() {
        assert!(uuid4(&json!("0b8e7e10-38a2-1c1e-9e58-0f2f1e6cb5a1")).is_err());
        assert!(uuid4(&json!(NODE)).is_ok());
    }

    #[test]
    fn metadata_limits() {
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(create_request(&json!({"primary": NODE, "metadata": many})).is_err());
        let long = "x".repeat(257);
        assert!(create_request(&json!({"primary": NODE, "metadata": {"k": long}})).is_err());
        assert!(
            create_request(&json!({"primary": NODE, "metadata": {long.clone(): "v"}})).is_err()
        );
    }

    #[test]
    fn lease_requires_all_keys() {
        assert_eq!(
            lease_request(&json!({"dataset_id": NODE, "node_uuid": NODE}))
                .unwrap_err()
                .len(),
            1
        );
        let ok = lease_request(&json!({"dataset_id": NODE, "node_uuid": NODE, "expires": null}))
            .unwrap();
        assert_eq!(ok.expires, None);
    }
}
