//! Property tests (proptest) at the crate's edges, where input comes from outside: the plugin socket,
//! the `-o size=` a user types, and the control service's JSON. Each property says what a user would
//! notice (an answer they can read, the size they asked for, the dataset the cluster reported), not
//! only "no panic".
//!
//! Not here: mountinfo parsing and the wire structs, whose functions are private; their properties
//! are unit tests in `src/mount.rs` and `src/protocol/`. Every property runs at most 256 cases, so
//! this module takes a few seconds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use flocker_docker_plugin::driver::VolumeName;
use flocker_docker_plugin::flocker::{
    DatasetConfig, DatasetId, DatasetState, Lease, NodeId, NodeInfo,
};
use flocker_docker_plugin::protocol::MAX_BODY;
use flocker_docker_plugin::size::{Size, SizeError, MIN_SIZE};
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde::de::{DeserializeOwned, IgnoredAny};
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::net::UnixStream;
use uuid::Uuid;

use crate::protocol::{start, Server};

const CASES: u32 = 256;

fn config(cases: u32) -> Config {
    Config {
        cases,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Strategies

/// Strings a user or a program might send: valid volume names, odd characters, empty, too long.
/// Never "slow": the recording driver blocks a Mount of it until released.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("known".to_string()),
        "[a-z0-9_.-]{1,12}",
        any::<String>(),
        Just(String::new()),
        (250usize..260).prop_map(|n| "n".repeat(n)),
    ]
    .prop_filter("the recorder blocks on `slow`", |s| s != "slow")
}

/// Any JSON value, with object keys drawn from `keys` most of the time so that documents are often
/// nearly what a reader expects.
fn json_value(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::String),
        any::<u128>().prop_map(|n| Value::String(Uuid::from_u128(n).to_string())),
    ];
    let key = prop_oneof![
        3 => prop::sample::select(keys).prop_map(str::to_string),
        1 => any::<String>(),
    ];
    leaf.prop_recursive(3, 48, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

const PROTOCOL_KEYS: &[&str] = &["Name", "ID", "Opts", "size", "profile", "Err"];

/// Objects shaped like plugin requests: `Name`, `ID` and `Opts` usually of the right type, sometimes
/// not, sometimes absent, plus unknown keys.
fn request_like() -> impl Strategy<Value = Value> {
    let field = || {
        prop::option::of(prop_oneof![
            3 => text().prop_map(Value::String),
            1 => json_value(PROTOCOL_KEYS),
        ])
    };
    let opts = prop::option::of(prop_oneof![
        Just(Value::Null),
        prop::collection::btree_map(
            prop::sample::select(&["size", "profile", "other"][..]).prop_map(str::to_string),
            prop_oneof![
                3 => text().prop_map(Value::String),
                1 => json_value(PROTOCOL_KEYS),
            ],
            0..3,
        )
        .prop_map(|m| Value::Object(m.into_iter().collect())),
        json_value(PROTOCOL_KEYS),
    ]);
    let extra = prop::collection::btree_map(any::<String>(), json_value(PROTOCOL_KEYS), 0..3);
    (field(), field(), opts, extra).prop_map(|(name, id, opts, extra)| {
        let mut map: Map<String, Value> = extra.into_iter().collect();
        for (key, value) in [("Name", name), ("ID", id), ("Opts", opts)] {
            if let Some(value) = value {
                map.insert(key.into(), value);
            }
        }
        Value::Object(map)
    })
}

// ---------------------------------------------------------------------------------------------
// The plugin protocol over a real socket

const ACTIVATE: &str = "/Plugin.Activate";
const CAPABILITIES: &str = "/VolumeDriver.Capabilities";
const ENDPOINTS: [&str; 9] = [
    ACTIVATE,
    CAPABILITIES,
    "/VolumeDriver.Create",
    "/VolumeDriver.Remove",
    "/VolumeDriver.Mount",
    "/VolumeDriver.Unmount",
    "/VolumeDriver.Path",
    "/VolumeDriver.Get",
    "/VolumeDriver.List",
];

/// Activate and Capabilities ignore the body; every other endpoint decodes it.
fn reads_body(endpoint: &str) -> bool {
    endpoint != ACTIVATE && endpoint != CAPABILITIES
}

/// What a request must lead to: its status, and whether the recording driver logs a call (it logs
/// Create, Remove, Mount and Unmount).
#[derive(Debug, PartialEq)]
struct Outcome {
    status: StatusCode,
    recorded: bool,
}

/// The protocol's decoding rules (SPEC §3; reference/docker-plugin.md §1.2), written out independently
/// of `protocol`: unknown keys are ignored, `Name` must be a string, `ID` a string or null, `Opts` an
/// object or null whose values are strings, numbers or booleans. `None` for bodies whose treatment is
/// serde's business rather than the protocol's (JSON arrays, which serde reads as positional fields).
fn expected(endpoint: &str, body: &Value) -> Option<Outcome> {
    let ok = |recorded| Outcome {
        status: StatusCode::OK,
        recorded,
    };
    let refused = Outcome {
        status: StatusCode::BAD_REQUEST,
        recorded: false,
    };
    if !reads_body(endpoint) {
        return Some(ok(false));
    }
    let map = match body {
        Value::Object(map) => map,
        Value::Array(_) => return None,
        _ => return Some(refused),
    };
    if endpoint == "/VolumeDriver.List" {
        return Some(ok(false));
    }
    let Some(Value::String(name)) = map.get("Name") else {
        return Some(refused);
    };
    let valid_name = VolumeName::new(name).is_ok();
    let optional_string = |key| matches!(map.get(key), None | Some(Value::Null | Value::String(_)));
    Some(match endpoint {
        "/VolumeDriver.Create" => match map.get("Opts") {
            None | Some(Value::Null) => ok(valid_name),
            Some(Value::Object(opts)) => ok(valid_name
                && opts
                    .values()
                    .all(|v| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_)))),
            Some(_) => refused,
        },
        "/VolumeDriver.Mount" | "/VolumeDriver.Unmount" if !optional_string("ID") => refused,
        "/VolumeDriver.Remove" | "/VolumeDriver.Mount" | "/VolumeDriver.Unmount" => ok(valid_name),
        _ => ok(false),
    })
}

/// One POST on a fresh connection, as the engine sends it (no Content-Type); an error if the
/// connection breaks before a whole answer arrives.
async fn post(socket: &Path, endpoint: &str, body: Vec<u8>) -> Result<(StatusCode, Bytes), String> {
    let exchange = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(connection);
        let request = hyper::Request::post(endpoint)
            .header("Host", "plugin")
            .header("Accept", "application/vnd.docker.plugins.v1.2+json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("connection dropped: {e}"))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("answer cut off: {e}"))?
            .to_bytes();
        Ok((status, bytes))
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| "no answer within 10 s".to_string())?
}

/// Every answer is a JSON object; an `Err` string is in every VolumeDriver answer, non-empty for a
/// non-200 one. The engine shows that text to the user (moby `pkg/plugins/client.go`).
fn readable(
    endpoint: &str,
    answer: Result<(StatusCode, Bytes), String>,
) -> Result<(StatusCode, Value), TestCaseError> {
    let (status, bytes) =
        answer.map_err(|e| TestCaseError::fail(format!("{endpoint}: no HTTP answer: {e}")))?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        TestCaseError::fail(format!(
            "{endpoint}: {status} answer is not JSON ({e}): {}",
            String::from_utf8_lossy(&bytes)
        ))
    })?;
    prop_assert!(value.is_object(), "{}: {}", endpoint, value);
    let err = value.get("Err");
    if status != StatusCode::OK {
        prop_assert!(
            matches!(err, Some(Value::String(s)) if !s.is_empty()),
            "{} {}: {}",
            endpoint,
            status,
            value
        );
    } else if reads_body(endpoint) {
        prop_assert!(
            matches!(err, Some(Value::String(_))),
            "{}: {}",
            endpoint,
            value
        );
    }
    Ok((status, value))
}

/// A recording plugin on a real socket, with its own runtime so that proptest's synchronous runner
/// can drive it.
struct Plugin {
    server: Server,
    rt: tokio::runtime::Runtime,
}

impl Plugin {
    fn start() -> Plugin {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        Plugin {
            server: rt.block_on(start()),
            rt,
        }
    }

    fn post(&self, endpoint: &str, body: Vec<u8>) -> Result<(StatusCode, Bytes), String> {
        self.rt.block_on(post(&self.server.socket, endpoint, body))
    }

    /// How many driver calls the recorder has seen so far.
    fn calls(&self) -> usize {
        self.server.recorder.calls.lock().unwrap().len()
    }

    /// Runs `test` for `cases` inputs from `strategy`, one request at a time.
    fn check<S: Strategy>(
        &self,
        cases: u32,
        strategy: S,
        test: impl Fn(&Plugin, S::Value) -> Result<(), TestCaseError>,
    ) {
        let mut runner = TestRunner::new(config(cases));
        if let Err(e) = runner.run(&strategy, |input| test(self, input)) {
            panic!("{e}");
        }
    }
}

#[test]
fn any_json_body_is_answered_and_only_valid_requests_reach_the_driver() {
    let strategy = prop_oneof![json_value(PROTOCOL_KEYS), request_like()];
    Plugin::start().check(CASES, strategy, |plugin, body| {
        let text = body.to_string();
        for endpoint in ENDPOINTS {
            let before = plugin.calls();
            let answer = plugin.post(endpoint, text.clone().into_bytes());
            let (status, value) = readable(endpoint, answer)?;
            let recorded = plugin.calls() > before;
            match expected(endpoint, &body) {
                Some(outcome) => prop_assert_eq!(
                    Outcome { status, recorded },
                    outcome,
                    "{} {} -> {}",
                    endpoint,
                    text,
                    value
                ),
                None => prop_assert!(!recorded || status == StatusCode::OK),
            }
        }
        Ok(())
    });
}

#[test]
fn any_bytes_are_answered_in_json_and_garbage_never_reaches_the_driver() {
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        // Valid JSON cut anywhere: what a client that dies mid-write leaves (with Content-Length).
        (json_value(PROTOCOL_KEYS), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            text[..cut.index(text.len() + 1)].to_vec()
        }),
        // Blank bodies count as `{}` (the go-plugins-helpers client sends none).
        "[ \t\r\n\x0c]{0,6}".prop_map(String::into_bytes),
    ];
    Plugin::start().check(CASES, strategy, |plugin, body| {
        let blank = body.iter().all(u8::is_ascii_whitespace);
        let not_json = !blank && serde_json::from_slice::<IgnoredAny>(&body).is_err();
        for endpoint in ENDPOINTS {
            let before = plugin.calls();
            let answer = plugin.post(endpoint, body.clone());
            let (status, value) = readable(endpoint, answer)?;
            let recorded = plugin.calls() > before;
            prop_assert!(!recorded || status == StatusCode::OK);
            if blank {
                prop_assert_eq!(
                    Some(Outcome { status, recorded }),
                    expected(endpoint, &json!({}))
                );
            }
            if not_json && reads_body(endpoint) {
                prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}: {}", endpoint, value);
                let err = value["Err"].as_str().unwrap_or_default();
                prop_assert!(err.contains("invalid request body"), "{}", err);
            }
        }
        Ok(())
    });
}

#[test]
fn bodies_over_the_limit_get_a_json_error_and_the_connection_an_answer() {
    let strategy = (
        prop::sample::select(&ENDPOINTS[..]),
        (MAX_BODY + 1)..=(2 * 1024 * 1024),
    );
    Plugin::start().check(12, strategy, |plugin, (endpoint, size)| {
        let mut body = b"{\"Name\":\"".to_vec();
        body.resize(size - 2, b'x');
        body.extend_from_slice(b"\"}");
        let before = plugin.calls();
        let (status, value) = readable(endpoint, plugin.post(endpoint, body))?;
        if reads_body(endpoint) {
            prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
            let err = value["Err"].as_str().unwrap_or_default();
            prop_assert!(err.contains("larger than"), "{}", err);
        } else {
            prop_assert_eq!(status, StatusCode::OK);
        }
        prop_assert_eq!(plugin.calls(), before);
        Ok(())
    });
}

// ---------------------------------------------------------------------------------------------
// Sizes (`-o size=`)

/// Unit spellings for 1024^power, in several cases.
fn unit(power: u32) -> impl Strategy<Value = String> {
    let spellings: Vec<String> = match power {
        0 => vec!["".into(), "b".into(), "B".into()],
        _ => {
            let lower = ["k", "m", "g", "t", "p"][power as usize - 1];
            let upper = lower.to_ascii_uppercase();
            vec![
                lower.to_string(),
                upper.clone(),
                format!("{lower}b"),
                format!("{upper}B"),
                format!("{lower}ib"),
                format!("{upper}iB"),
                format!("{upper}IB"),
            ]
        }
    };
    prop::sample::select(spellings)
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Whatever is typed, the answer is a size or an error quoting the input; never a panic.
    #[test]
    fn size_parse_accepts_or_quotes_the_input(
        text in prop_oneof![any::<String>(), "[0-9. ]{0,25}[kKmMgGtTpPiIbB. ]{0,4}[0-9]{0,3}"],
    ) {
        match Size::parse(&text) {
            Ok(size) => {
                prop_assert_eq!(size.bytes() % 1024, 0);
                prop_assert!(size.bytes() >= MIN_SIZE);
            }
            Err(e) => prop_assert!(e.to_string().contains(&format!("'{text}'")), "{}", e),
        }
    }

    /// `N[.F]UNIT` means (N.F × 1024^power) bytes, rounded up to a whole KiB; under 64 MiB and over
    /// 2^64 are refused.
    #[test]
    fn size_is_the_arithmetic_value_rounded_up_to_a_kibibyte(
        whole in prop_oneof![0u64..100_000, any::<u64>()],
        fraction in prop::option::of("[0-9]{0,6}"),
        (power, unit) in (0u32..=5).prop_flat_map(|p| (Just(p), unit(p))),
        space in prop::sample::select(vec!["", " ", "  "]),
    ) {
        let number = match &fraction {
            Some(f) => format!("{whole}.{f}"),
            None => whole.to_string(),
        };
        let text = format!("{space}{number}{space}{unit}{space}");
        let digits = fraction.unwrap_or_default();
        let scale = 10u128.pow(digits.len() as u32);
        let numerator = (whole as u128)
            .checked_mul(scale)
            .and_then(|n| n.checked_add(digits.parse::<u128>().unwrap_or(0)))
            .and_then(|n| n.checked_mul(1024u128.pow(power)));
        let bytes = numerator.map(|n| n.div_ceil(scale * 1024) * 1024);
        let expected = match bytes.and_then(|b| u64::try_from(b).ok()) {
            None => Err(SizeError::TooLarge(text.clone())),
            Some(b) if b < MIN_SIZE => Err(SizeError::TooSmall(text.clone())),
            Some(b) => Ok(Size::from_bytes(b)),
        };
        prop_assert_eq!(Size::parse(&text), expected, "{:?}", text);
    }

    /// What the plugin prints (e.g. in `docker volume inspect`) can be typed back as `-o size=`, and
    /// is printed in the largest unit that keeps the number whole.
    #[test]
    fn size_display_parses_back(
        kib in 1u64..(1 << 20),
        shift in 0u32..=40,
    ) {
        let bytes = (kib << 10).checked_shl(shift).filter(|b| b >> shift == kib << 10);
        prop_assume!(bytes.is_some_and(|b| b >= MIN_SIZE));
        let size = Size::from_bytes(bytes.unwrap());
        let shown = size.to_string();
        prop_assert_eq!(Size::parse(&shown), Ok(size), "{}", shown);
        let (digits, unit) = shown.split_at(shown.find(|c: char| !c.is_ascii_digit()).unwrap());
        let n: u64 = digits.parse().unwrap();
        prop_assert!(unit == "PiB" || !n.is_multiple_of(1024), "{} is not the largest whole unit", shown);
    }
}

// ---------------------------------------------------------------------------------------------
// Control-service JSON

const FLOCKER_KEYS: &[&str] = &[
    "dataset_id",
    "primary",
    "deleted",
    "metadata",
    "maximum_size",
    "path",
    "node_uuid",
    "expires",
    "host",
    "uuid",
    "name",
];

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Paths as a control service might report them; the decoder keeps them as given and the driver
/// decides what is acceptable.
fn reported_path() -> impl Strategy<Value = PathBuf> {
    prop_oneof![
        prop::sample::select(vec![
            "../x",
            "/etc",
            "",
            "relative/dir",
            "/flocker/../etc",
            "/"
        ])
        .prop_map(PathBuf::from),
        any::<String>().prop_map(PathBuf::from),
    ]
}

fn dataset_config() -> impl Strategy<Value = DatasetConfig> {
    (
        uuid(),
        prop::option::of(uuid()),
        any::<bool>(),
        (
            prop::option::of(any::<String>()),
            prop::option::of(any::<String>()),
        ),
        prop::option::of(any::<u64>()),
    )
        .prop_map(
            |(id, primary, deleted, (name, profile), maximum_size)| DatasetConfig {
                dataset_id: DatasetId(id),
                primary: primary.map(NodeId),
                deleted,
                metadata: flocker_docker_plugin::flocker::types::Metadata { name, profile },
                maximum_size,
            },
        )
}

fn dataset_state() -> impl Strategy<Value = DatasetState> {
    (
        uuid(),
        prop::option::of(uuid()),
        prop::option::of(reported_path()),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(id, primary, path, maximum_size)| DatasetState {
            dataset_id: DatasetId(id),
            primary: primary.map(NodeId),
            path,
            maximum_size,
        })
}

fn lease() -> impl Strategy<Value = Lease> {
    // Quarter seconds: exactly representable, so equality after a JSON round trip is exact.
    let expires = prop::option::of((0u32..10_000_000).prop_map(|q| f64::from(q) / 4.0));
    (uuid(), uuid(), expires).prop_map(|(d, n, expires)| Lease {
        dataset_id: DatasetId(d),
        node_uuid: NodeId(n),
        expires,
    })
}

fn node_info() -> impl Strategy<Value = NodeInfo> {
    (any::<String>(), uuid()).prop_map(|(host, u)| NodeInfo {
        host,
        uuid: NodeId(u),
    })
}

/// `value` as JSON, as a newer control service might send it: unknown keys added and fields at their
/// default (null, false, {}) sometimes left out.
fn as_sent_by_a_newer_server(
    value: &impl Serialize,
    extra: &BTreeMap<String, Value>,
    omit_defaults: bool,
) -> String {
    let Value::Object(mut map) = serde_json::to_value(value).unwrap() else {
        unreachable!("these types serialize as objects")
    };
    if omit_defaults {
        map.retain(|_, v| {
            !matches!(v, Value::Null | Value::Bool(false))
                && v.as_object().is_none_or(|o| !o.is_empty())
        });
    }
    for (key, v) in extra {
        if !FLOCKER_KEYS.contains(&key.as_str()) {
            map.insert(key.clone(), v.clone());
        }
    }
    Value::Object(map).to_string()
}

/// What a client decodes from text, and what the emulator (which shares these types) would send back
/// for it, must agree: decode → encode → decode is stable.
fn stable<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(
    value: &Value,
) -> Result<(), TestCaseError> {
    if let Ok(decoded) = serde_json::from_str::<T>(&value.to_string()) {
        let again: T = serde_json::from_value(serde_json::to_value(&decoded).unwrap())
            .map_err(|e| TestCaseError::fail(format!("re-encoding does not decode: {e}")))?;
        prop_assert_eq!(again, decoded);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config(CASES))]

    /// Any JSON either decodes or fails with an error (no panic), and what decodes re-encodes to itself.
    #[test]
    fn control_service_json_decodes_or_fails_cleanly(value in json_value(FLOCKER_KEYS)) {
        stable::<DatasetConfig>(&value)?;
        stable::<DatasetState>(&value)?;
        stable::<Lease>(&value)?;
        stable::<NodeInfo>(&value)?;
        stable::<Vec<DatasetConfig>>(&value)?;
        stable::<Vec<DatasetState>>(&value)?;
        for item in value.as_array().into_iter().flatten() {
            stable::<DatasetConfig>(item)?;
            stable::<DatasetState>(item)?;
        }
    }

    /// A configuration listing from a newer server (unknown keys, defaults left out) decodes to exactly
    /// the datasets it describes.
    #[test]
    fn dataset_configurations_decode_faithfully(
        datasets in prop::collection::vec(dataset_config(), 0..4),
        extra in prop::collection::btree_map(any::<String>(), json_value(FLOCKER_KEYS), 0..3),
        omit in any::<bool>(),
    ) {
        let items: Vec<String> =
            datasets.iter().map(|d| as_sent_by_a_newer_server(d, &extra, omit)).collect();
        let text = format!("[{}]", items.join(","));
        prop_assert_eq!(serde_json::from_str::<Vec<DatasetConfig>>(&text).unwrap(), datasets);
    }

    /// State entries decode faithfully, `path` included whatever it is (`../x`, `/etc`, relative,
    /// empty): validating it is the driver's job, and it can only do so if it sees what was sent.
    #[test]
    fn dataset_states_decode_faithfully_paths_as_given(
        states in prop::collection::vec(dataset_state(), 0..4),
        extra in prop::collection::btree_map(any::<String>(), json_value(FLOCKER_KEYS), 0..3),
        omit in any::<bool>(),
    ) {
        let items: Vec<String> =
            states.iter().map(|s| as_sent_by_a_newer_server(s, &extra, omit)).collect();
        let text = format!("[{}]", items.join(","));
        prop_assert_eq!(serde_json::from_str::<Vec<DatasetState>>(&text).unwrap(), states);
    }

    /// Leases and nodes decode faithfully too.
    #[test]
    fn leases_and_nodes_decode_faithfully(
        lease in lease(),
        node in node_info(),
        extra in prop::collection::btree_map(any::<String>(), json_value(FLOCKER_KEYS), 0..3),
        omit in any::<bool>(),
    ) {
        let text = as_sent_by_a_newer_server(&lease, &extra, omit);
        prop_assert_eq!(serde_json::from_str::<Lease>(&text).unwrap(), lease);
        let text = as_sent_by_a_newer_server(&node, &extra, omit);
        prop_assert_eq!(serde_json::from_str::<NodeInfo>(&text).unwrap(), node);
    }
}
