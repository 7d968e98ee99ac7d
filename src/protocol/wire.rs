//! Request and response bodies of the Docker volume plugin protocol (reference/docker-plugin.md §1.2).
//!
//! Unknown request fields are ignored (an unknown `ID` broke the original plugin, flocker-upstream.md §7.7).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Remove, Path, Get.
#[derive(Debug, Deserialize)]
pub struct NameRequest {
    /// The volume name.
    #[serde(rename = "Name")]
    pub name: String,
}

/// Create.
#[derive(Debug, Deserialize)]
pub struct CreateRequest {
    /// The volume name.
    #[serde(rename = "Name")]
    pub name: String,
    /// `-o` options; the engine may send null.
    #[serde(rename = "Opts", default)]
    pub opts: Option<BTreeMap<String, serde_json::Value>>,
}

/// Mount, Unmount.
#[derive(Debug, Deserialize)]
pub struct MountRequest {
    /// The volume name.
    #[serde(rename = "Name")]
    pub name: String,
    /// The engine's per-container mount ID (absent before Docker 1.12).
    #[serde(rename = "ID", default)]
    pub id: Option<String>,
}

/// What the log line needs from a request.
pub trait Call: serde::de::DeserializeOwned {
    /// The volume the call is about (`*` for List).
    fn volume(&self) -> &str;
    /// The engine's mount ID, for Mount and Unmount.
    fn id(&self) -> Option<&str> {
        None
    }
}

impl Call for NameRequest {
    fn volume(&self) -> &str {
        &self.name
    }
}

impl Call for CreateRequest {
    fn volume(&self) -> &str {
        &self.name
    }
}

impl Call for MountRequest {
    fn volume(&self) -> &str {
        &self.name
    }
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// List (and any call whose body is `{}`): the engine sends an empty object.
#[derive(Debug, Deserialize)]
pub struct ListRequest {}

impl Call for ListRequest {
    fn volume(&self) -> &str {
        "*"
    }
}

/// A volume in Get and List answers.
#[derive(Debug, Serialize)]
pub struct Volume {
    /// Name.
    #[serde(rename = "Name")]
    pub name: String,
    /// Mountpoint, empty when not mounted here.
    #[serde(rename = "Mountpoint")]
    pub mountpoint: String,
    /// Details for `docker volume inspect`; Get only.
    #[serde(rename = "Status", skip_serializing_if = "Option::is_none")]
    pub status: Option<BTreeMap<String, serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::btree_map;
    use proptest::option;
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// JSON values of every kind, nested a little.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Keys the engine might add in a later version.
    fn unknown_fields() -> impl Strategy<Value = Map<String, Value>> {
        btree_map(
            any::<String>().prop_filter("not a known field", |k| {
                !["Name", "ID", "Opts"].contains(&k.as_str())
            }),
            any_json(),
            0..4,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    /// `Some(None)` is an explicit null, `None` an absent key.
    fn insert(map: &mut Map<String, Value>, key: &str, value: Option<Option<Value>>) {
        if let Some(value) = value {
            map.insert(key.into(), value.unwrap_or(Value::Null));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every request decodes to exactly the Name, ID and Opts that were sent (null and absent
        /// alike meaning none), whatever unknown fields come with them.
        #[test]
        fn requests_decode_to_what_was_sent(
            name in any::<String>(),
            id in option::of(option::of(any::<String>())),
            opts in option::of(option::of(btree_map(any::<String>(), any_json(), 0..4))),
            mut map in unknown_fields(),
        ) {
            map.insert("Name".into(), Value::String(name.clone()));
            insert(&mut map, "ID", id.clone().map(|id| id.map(Value::String)));
            insert(
                &mut map,
                "Opts",
                opts.clone().map(|o| o.map(|o| Value::Object(o.into_iter().collect()))),
            );
            let body = Value::Object(map);

            let named: NameRequest = serde_json::from_value(body.clone()).unwrap();
            prop_assert_eq!(named.volume(), name.as_str());
            let mount: MountRequest = serde_json::from_value(body.clone()).unwrap();
            prop_assert_eq!(&mount.name, &name);
            prop_assert_eq!(mount.id, id.flatten());
            let create: CreateRequest = serde_json::from_value(body.clone()).unwrap();
            prop_assert_eq!(&create.name, &name);
            prop_assert_eq!(create.opts, opts.flatten());
            prop_assert!(serde_json::from_value::<ListRequest>(body).is_ok());
        }

        /// A Name that is missing or not a string is refused by every call that needs one.
        #[test]
        fn a_name_that_is_not_a_string_is_refused(
            name in option::of(any_json().prop_filter("not a string", |v| !v.is_string())),
            mut map in unknown_fields(),
        ) {
            if let Some(name) = name {
                map.insert("Name".into(), name);
            }
            let body = Value::Object(map);
            prop_assert!(serde_json::from_value::<NameRequest>(body.clone()).is_err());
            prop_assert!(serde_json::from_value::<MountRequest>(body.clone()).is_err());
            prop_assert!(serde_json::from_value::<CreateRequest>(body).is_err());
        }
    }
}
