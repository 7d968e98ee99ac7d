//! Settings: defaults < optional TOML file < environment (SPEC §2), validated once at start.
//!
//! Every setting is an environment variable so `docker plugin set NAME=value` works; the TOML file
//! (`CONFIG_FILE`, else `/etc/flocker/plugin.toml` if present) uses the same names in lower case.
//! This module only reads and checks settings; it opens no sockets and talks to no service.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::size::Size;

/// Every environment variable the daemon reads (also the names declared settable in config.json).
pub const ENV_NAMES: [&str; 14] = [
    "CONTROL_URL",
    "CERTS_DIR",
    "NODE_UUID",
    "MY_NETWORK_IDENTITY",
    "SOCKET",
    "AGENT_MOUNT_ROOT",
    "FLOCKER_ROOT",
    "PROPAGATED_MOUNT",
    "STATE_DIR",
    "DEFAULT_SIZE",
    "DEFAULT_PROFILE",
    "MOUNT_TIMEOUT",
    "LOG_LEVEL",
    "LOG_FORMAT",
];

const DEFAULT_CONFIG_FILE: &str = "/etc/flocker/plugin.toml";
const FLOCKER_REST_PORT: u16 = 4523;

/// Why the configuration was refused: one line naming the setting and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The TOML file or an environment value could not be read into a setting.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// `CONFIG_FILE` names a file that does not exist.
    #[error("CONFIG_FILE={0}: no such file; unset CONFIG_FILE or point it at a TOML file")]
    MissingConfigFile(PathBuf),
    /// A setting has a value that cannot be used.
    #[error("{key}={value:?}: {reason}")]
    Invalid {
        /// The environment variable name.
        key: &'static str,
        /// The value as given.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// Neither `CONTROL_URL` nor a usable `agent.yml` says where the control service is.
    #[error(
        "CONTROL_URL is not set and {path} {problem}; set CONTROL_URL=https://CONTROL-HOST:4523"
    )]
    NoControlUrl {
        /// The agent.yml that was tried.
        path: PathBuf,
        /// What was wrong with it.
        problem: String,
    },
}

impl Error {
    /// The setting to change, when one is to blame.
    pub fn setting(&self) -> Option<&'static str> {
        match self {
            Error::Invalid { key, .. } => Some(key),
            Error::NoControlUrl { .. } => Some("CONTROL_URL"),
            Error::MissingConfigFile(_) => Some("CONFIG_FILE"),
            Error::Load(_) => None,
        }
    }
}

/// Settings as read, before validation. Field names are the lower-case environment names.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(default)]
struct RawConfig {
    #[serde(deserialize_with = "text")]
    control_url: Option<String>,
    #[serde(deserialize_with = "text")]
    certs_dir: Option<String>,
    #[serde(deserialize_with = "text")]
    node_uuid: Option<String>,
    #[serde(deserialize_with = "text")]
    my_network_identity: Option<String>,
    #[serde(deserialize_with = "text")]
    socket: Option<String>,
    #[serde(deserialize_with = "text")]
    agent_mount_root: Option<String>,
    #[serde(deserialize_with = "text")]
    flocker_root: Option<String>,
    #[serde(deserialize_with = "text")]
    propagated_mount: Option<String>,
    #[serde(deserialize_with = "text")]
    state_dir: Option<String>,
    #[serde(deserialize_with = "text")]
    default_size: Option<String>,
    #[serde(deserialize_with = "text")]
    default_profile: Option<String>,
    #[serde(deserialize_with = "text")]
    mount_timeout: Option<String>,
    #[serde(deserialize_with = "text")]
    log_level: Option<String>,
    #[serde(deserialize_with = "text")]
    log_format: Option<String>,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

pub use crate::driver::MountMode;

/// Validated settings for one daemon.
#[derive(Debug, Clone)]
pub struct Config {
    /// Control service base URL, without the `/v1` suffix and trailing slash.
    pub control_url: reqwest::Url,
    /// Directory holding `cluster.crt`, `plugin.crt` and `plugin.key`.
    pub certs_dir: PathBuf,
    /// This node's Flocker UUID when given; discovered otherwise.
    pub node_uuid: Option<Uuid>,
    /// This node's IP, matched against `/v1/state/nodes` when the era cannot be read.
    pub network_identity: Option<String>,
    /// Where the Docker plugin socket is created.
    pub socket: PathBuf,
    /// The dataset agent's mount root as the control service reports it.
    pub agent_mount_root: PathBuf,
    /// Where this process sees the agent's mount root.
    pub flocker_root: PathBuf,
    /// Propagated or legacy mount mode.
    pub mount_mode: MountMode,
    /// Directory of the small state file.
    pub state_dir: PathBuf,
    /// Size of volumes created without `-o size`.
    pub default_size: Size,
    /// Profile of volumes created without `-o profile`.
    pub default_profile: Option<String>,
    /// How long one Mount call may wait for a dataset to arrive.
    pub mount_timeout: Duration,
    /// Log filter directive (`info`, `debug`, `flocker_docker_plugin=trace`, …).
    pub log_level: String,
    /// Log output format.
    pub log_format: LogFormat,
}

impl Config {
    /// Reads the TOML file and the process environment, then validates.
    pub fn load() -> Result<Config, Error> {
        let file = match std::env::var_os("CONFIG_FILE").filter(|v| !v.is_empty()) {
            Some(path) => {
                let path = PathBuf::from(path);
                if !path.is_file() {
                    return Err(Error::MissingConfigFile(path));
                }
                Some(path)
            }
            None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
        };
        let mut figment = Figment::from(Serialized::defaults(RawConfig::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file(file));
        }
        let figment = figment
            // The Labs plugin's name for the same setting (flocker-upstream.md §4.2); CONTROL_URL wins.
            .merge(
                Env::raw()
                    .only(&["FLOCKER_CONTROL_SERVICE_BASE_URL"])
                    .map(|_| "control_url".into()),
            )
            .merge(Env::raw().only(&ENV_NAMES));
        let raw: RawConfig = figment.extract().map_err(Box::new)?;
        Config::validate(raw)
    }

    fn validate(raw: RawConfig) -> Result<Config, Error> {
        let certs_dir = path_or(raw.certs_dir, "/etc/flocker");
        let control_url = match non_empty(raw.control_url) {
            Some(url) => parse_control_url("CONTROL_URL", &url)?,
            None => control_url_from_agent_yml(&certs_dir.join("agent.yml"))?,
        };
        let node_uuid = match non_empty(raw.node_uuid) {
            Some(text) => Some(Uuid::parse_str(text.trim()).map_err(|_| Error::Invalid {
                key: "NODE_UUID",
                value: text.clone(),
                reason: "not a UUID; unset it to discover the node from its era".into(),
            })?),
            None => None,
        };
        let mount_mode = match raw.propagated_mount {
            Some(p) if p.trim().is_empty() => MountMode::Legacy,
            Some(p) => MountMode::Propagated(absolute("PROPAGATED_MOUNT", &p)?),
            None => MountMode::Propagated(PathBuf::from("/mnt/flocker")),
        };
        let default_size = match non_empty(raw.default_size) {
            Some(text) => Size::parse(&text).map_err(|e| Error::Invalid {
                key: "DEFAULT_SIZE",
                value: text.clone(),
                reason: e.to_string(),
            })?,
            None => Size::from_bytes(crate::size::DEFAULT_SIZE),
        };
        let mount_timeout = match non_empty(raw.mount_timeout) {
            Some(text) => parse_duration(&text).ok_or_else(|| Error::Invalid {
                key: "MOUNT_TIMEOUT",
                value: text.clone(),
                reason: "use a duration such as 110s or 90s, between 1s and 115s (Docker gives up on a Mount after 120s)".into(),
            })?,
            None => Duration::from_secs(110),
        };
        let log_format = match non_empty(raw.log_format).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(Error::Invalid {
                    key: "LOG_FORMAT",
                    value: other.into(),
                    reason: "use text or json".into(),
                })
            }
        };
        let log_level = non_empty(raw.log_level).unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(Error::Invalid {
                key: "LOG_LEVEL",
                value: log_level,
                reason: "use error, warn, info, debug or trace".into(),
            });
        }
        Ok(Config {
            control_url,
            certs_dir,
            node_uuid,
            network_identity: non_empty(raw.my_network_identity),
            socket: absolute_or(raw.socket, "SOCKET", "/run/docker/plugins/flocker.sock")?,
            agent_mount_root: absolute_or(raw.agent_mount_root, "AGENT_MOUNT_ROOT", "/flocker")?,
            flocker_root: absolute_or(raw.flocker_root, "FLOCKER_ROOT", "/flocker")?,
            mount_mode,
            state_dir: absolute_or(raw.state_dir, "STATE_DIR", "/var/lib/flocker-docker-plugin")?,
            default_size,
            default_profile: non_empty(raw.default_profile),
            mount_timeout,
            log_level,
            log_format,
        })
    }
}

/// Accepts strings, numbers and booleans as text: `MOUNT_TIMEOUT=90` arrives from figment as a number.
fn text<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(
        match Option::<serde_json::Value>::deserialize(deserializer)? {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s),
            Some(other) => Some(other.to_string()),
        },
    )
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

fn path_or(value: Option<String>, default: &str) -> PathBuf {
    PathBuf::from(non_empty(value).unwrap_or_else(|| default.into()))
}

fn absolute(key: &'static str, value: &str) -> Result<PathBuf, Error> {
    let path = PathBuf::from(value.trim());
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(Error::Invalid {
            key,
            value: value.into(),
            reason: "must be an absolute path".into(),
        })
    }
}

fn absolute_or(value: Option<String>, key: &'static str, default: &str) -> Result<PathBuf, Error> {
    absolute(key, &non_empty(value).unwrap_or_else(|| default.into()))
}

/// Accepts `https://host:4523`, `https://host:4523/v1` and `https://host:4523/v1/`.
fn parse_control_url(key: &'static str, text: &str) -> Result<reqwest::Url, Error> {
    let invalid = |reason: &str| Error::Invalid {
        key,
        value: text.into(),
        reason: reason.into(),
    };
    let mut url = reqwest::Url::parse(text.trim())
        .map_err(|e| invalid(&format!("{e}; use https://CONTROL-HOST:4523")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(invalid(
            "the scheme must be https (or http for a plain-text test service)",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("no host; use https://CONTROL-HOST:4523"));
    }
    let path = url.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1").unwrap_or(path).to_string();
    url.set_path(&path);
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

/// `control-service.hostname` from the agent's YAML configuration.
fn agent_yml_hostname(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot be read ({e})"))?;
    let docs =
        yaml_rust2::YamlLoader::load_from_str(&text).map_err(|e| format!("is not YAML ({e})"))?;
    docs.first()
        .and_then(|doc| doc["control-service"]["hostname"].as_str())
        .map(str::to_string)
        .ok_or_else(|| "has no control-service.hostname".to_string())
}

/// The original plugin's source of the control service address (flocker-upstream.md §4.1).
fn control_url_from_agent_yml(path: &Path) -> Result<reqwest::Url, Error> {
    if !path.is_file() {
        return Err(Error::NoControlUrl {
            path: path.into(),
            problem: "does not exist".into(),
        });
    }
    let hostname = agent_yml_hostname(path).map_err(|problem| Error::NoControlUrl {
        path: path.into(),
        problem,
    })?;
    let host = hostname.trim().to_string();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    parse_control_url(
        "CONTROL_URL",
        &format!("https://{host}:{FLOCKER_REST_PORT}"),
    )
}

/// `110s`, `1m30s`, or a plain number of seconds; between 1 s and 115 s, inside Docker's 120 s Mount deadline.
fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let duration = match text.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(text).ok()?,
    };
    (Duration::from_secs(1)..=Duration::from_secs(115))
        .contains(&duration)
        .then_some(duration)
}

#[cfg(test)]
// figment's Jail closures return figment::Error, which is large; that is its API, not ours.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_in(jail: &mut Jail) -> Result<Config, Error> {
        let dir = jail.directory().display().to_string();
        jail.set_env("CERTS_DIR", dir);
        Config::load()
    }

    #[test]
    fn defaults_with_only_a_control_url() {
        Jail::expect_with(|jail: &mut Jail| {
            jail.set_env("CONTROL_URL", "https://control:4523");
            let config = load_in(jail).unwrap();
            assert_eq!(config.control_url.as_str(), "https://control:4523/");
            assert_eq!(
                config.socket,
                PathBuf::from("/run/docker/plugins/flocker.sock")
            );
            assert_eq!(
                config.mount_mode,
                MountMode::Propagated("/mnt/flocker".into())
            );
            assert_eq!(config.flocker_root, PathBuf::from("/flocker"));
            assert_eq!(config.agent_mount_root, PathBuf::from("/flocker"));
            assert_eq!(config.default_size.bytes(), 75 << 30);
            assert_eq!(config.mount_timeout, Duration::from_secs(110));
            assert_eq!(config.node_uuid, None);
            assert_eq!(config.log_format, LogFormat::Text);
            Ok(())
        });
    }

    #[test]
    fn v1_suffix_is_optional_and_alias_is_accepted() {
        Jail::expect_with(|jail: &mut Jail| {
            jail.set_env("FLOCKER_CONTROL_SERVICE_BASE_URL", "https://old:4523/v1/");
            assert_eq!(
                load_in(jail).unwrap().control_url.as_str(),
                "https://old:4523/"
            );
            jail.set_env("CONTROL_URL", "https://new:4523/v1");
            assert_eq!(
                load_in(jail).unwrap().control_url.as_str(),
                "https://new:4523/"
            );
            Ok(())
        });
    }

    #[test]
    fn control_url_falls_back_to_agent_yml() {
        Jail::expect_with(|jail: &mut Jail| {
            jail.create_file(
                "agent.yml",
                "version: 1\ncontrol-service:\n  hostname: \"10.0.0.5\"\n  port: 4524\ndataset:\n  backend: aws\n",
            )?;
            assert_eq!(
                load_in(jail).unwrap().control_url.as_str(),
                "https://10.0.0.5:4523/"
            );
            Ok(())
        });
    }

    #[test]
    fn missing_control_url_says_how_to_fix_it() {
        Jail::expect_with(|jail: &mut Jail| {
            let err = load_in(jail).unwrap_err().to_string();
            assert!(
                err.contains("CONTROL_URL is not set") && err.contains("agent.yml does not exist"),
                "{err}"
            );
            jail.create_file("agent.yml", "version: 1\n")?;
            let err = load_in(jail).unwrap_err().to_string();
            assert!(err.contains("has no control-service.hostname"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn toml_file_is_overridden_by_environment() {
        Jail::expect_with(|jail: &mut Jail| {
            jail.create_file(
                "plugin.toml",
                "control_url = \"https://fromfile:4523\"\ndefault_size = \"10G\"\nmount_timeout = \"30s\"\n",
            )?;
            jail.set_env(
                "CONFIG_FILE",
                jail.directory().join("plugin.toml").display(),
            );
            let config = load_in(jail).unwrap();
            assert_eq!(config.control_url.host_str(), Some("fromfile"));
            assert_eq!(config.default_size.bytes(), 10 << 30);
            assert_eq!(config.mount_timeout, Duration::from_secs(30));
            jail.set_env("DEFAULT_SIZE", "1G");
            assert_eq!(load_in(jail).unwrap().default_size.bytes(), 1 << 30);
            Ok(())
        });
    }

    #[test]
    fn empty_propagated_mount_means_legacy_mode() {
        Jail::expect_with(|jail: &mut Jail| {
            jail.set_env("CONTROL_URL", "https://c:4523");
            jail.set_env("PROPAGATED_MOUNT", "");
            assert_eq!(load_in(jail).unwrap().mount_mode, MountMode::Legacy);
            Ok(())
        });
    }

    #[test]
    fn numbers_in_the_environment_are_read_as_text() {
        Jail::expect_with(|jail: &mut Jail| {
            jail.set_env("CONTROL_URL", "https://c:4523");
            jail.set_env("MOUNT_TIMEOUT", "90");
            jail.set_env("DEFAULT_SIZE", "1073741824");
            let config = load_in(jail).unwrap();
            assert_eq!(config.mount_timeout, Duration::from_secs(90));
            assert_eq!(config.default_size.bytes(), 1 << 30);
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_the_setting_and_the_fix() {
        let cases = [
            ("CONTROL_URL", "control:4523", "scheme"),
            ("CONTROL_URL", "ftp://control", "scheme must be https"),
            ("NODE_UUID", "node-1", "not a UUID"),
            ("DEFAULT_SIZE", "lots", "is not a size"),
            ("DEFAULT_SIZE", "1M", "64 MiB minimum"),
            ("MOUNT_TIMEOUT", "forever", "duration"),
            ("MOUNT_TIMEOUT", "0s", "between 1s and 115s"),
            ("MOUNT_TIMEOUT", "10m", "Docker gives up"),
            ("LOG_FORMAT", "xml", "text or json"),
            ("SOCKET", "relative.sock", "absolute path"),
            ("PROPAGATED_MOUNT", "mnt", "absolute path"),
        ];
        for (key, value, expected) in cases {
            Jail::expect_with(|jail: &mut Jail| {
                jail.set_env("CONTROL_URL", "https://c:4523");
                jail.set_env(key, value);
                let err = load_in(jail).unwrap_err().to_string();
                assert!(
                    err.starts_with(key) && err.contains(expected),
                    "{key}={value}: {err}"
                );
                assert!(!err.contains('\n'), "one line: {err}");
                Ok(())
            });
        }
    }

    #[test]
    fn missing_config_file_is_an_error() {
        Jail::expect_with(|jail: &mut Jail| {
            jail.set_env("CONTROL_URL", "https://c:4523");
            jail.set_env("CONFIG_FILE", "/nonexistent/plugin.toml");
            let err = load_in(jail).unwrap_err().to_string();
            assert!(
                err.contains("CONFIG_FILE=/nonexistent/plugin.toml"),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn broken_toml_names_the_file() {
        Jail::expect_with(|jail: &mut Jail| {
            jail.create_file("plugin.toml", "control_url = \n")?;
            jail.set_env(
                "CONFIG_FILE",
                jail.directory().join("plugin.toml").display(),
            );
            let err = load_in(jail).unwrap_err().to_string();
            assert!(err.contains("plugin.toml"), "{err}");
            Ok(())
        });
    }
}

#[cfg(test)]
mod manifest_tests {
    use super::ENV_NAMES;

    /// config.json, the README and this module must list the same settings (STYLE.md 8.5).
    #[test]
    fn config_json_declares_every_setting_settable() {
        let manifest: serde_json::Value =
            serde_json::from_str(include_str!("../config.json")).unwrap();
        let env = manifest["env"].as_array().unwrap();
        let mut declared: Vec<&str> = env.iter().map(|e| e["name"].as_str().unwrap()).collect();
        for entry in env {
            assert_eq!(entry["settable"], serde_json::json!(["value"]), "{entry}");
            assert!(
                !entry["description"].as_str().unwrap().is_empty(),
                "{entry}"
            );
        }
        declared.sort_unstable();
        let mut expected: Vec<&str> = ENV_NAMES.iter().copied().chain(["CONFIG_FILE"]).collect();
        expected.sort_unstable();
        assert_eq!(declared, expected);
        let readme = include_str!("../README.md");
        for name in expected {
            assert!(readme.contains(&format!("`{name}`")), "README lacks {name}");
        }
    }

    /// `docker plugin inspect` shows the description: it names the version the binary reports.
    #[test]
    fn the_manifest_description_carries_the_crate_version() {
        let manifest: serde_json::Value =
            serde_json::from_str(include_str!("../config.json")).unwrap();
        let description = manifest["description"].as_str().unwrap();
        assert!(
            description.contains(env!("CARGO_PKG_VERSION")),
            "config.json description {description:?} lacks version {}",
            env!("CARGO_PKG_VERSION")
        );
    }
}
