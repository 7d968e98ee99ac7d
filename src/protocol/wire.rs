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
