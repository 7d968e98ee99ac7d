//! The Docker volume plugin protocol over HTTP (SPEC §3): routes, body decoding, one log line per call.
//!
//! Bodies are read as bytes and decoded here, because the engine sends no Content-Type and axum's `Json`
//! extractor would refuse that (STYLE.md 8.11). What a call means is the driver's business.

mod reply;
mod wire;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use axum::body::{to_bytes, Body, Bytes};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::driver::{self, CreateOptions, MountId, VolumeDriver, VolumeInfo, VolumeName};
pub use reply::CONTENT_TYPE;

/// Largest request body accepted; real requests are a few hundred bytes.
pub const MAX_BODY: usize = 1024 * 1024;

/// The plugin's HTTP routes over `driver`.
pub fn router<D: VolumeDriver>(driver: Arc<D>) -> Router {
    let not_allowed = || async {
        reply::misuse(
            StatusCode::METHOD_NOT_ALLOWED,
            "the Docker plugin protocol uses POST only",
        )
    };
    Router::new()
        .route("/Plugin.Activate", post(activate).fallback(not_allowed))
        .route(
            "/VolumeDriver.Capabilities",
            post(capabilities).fallback(not_allowed),
        )
        .route(
            "/VolumeDriver.Create",
            post(create::<D>).fallback(not_allowed),
        )
        .route(
            "/VolumeDriver.Remove",
            post(remove::<D>).fallback(not_allowed),
        )
        .route(
            "/VolumeDriver.Mount",
            post(mount::<D>).fallback(not_allowed),
        )
        .route(
            "/VolumeDriver.Unmount",
            post(unmount::<D>).fallback(not_allowed),
        )
        .route("/VolumeDriver.Path", post(path::<D>).fallback(not_allowed))
        .route("/VolumeDriver.Get", post(get::<D>).fallback(not_allowed))
        .route("/VolumeDriver.List", post(list::<D>).fallback(not_allowed))
        .fallback(|uri: axum::http::Uri| async move {
            reply::misuse(
                StatusCode::NOT_FOUND,
                &format!("unknown plugin endpoint {}", uri.path()),
            )
        })
        .with_state(driver)
}

/// Reads and decodes a body; an empty body counts as `{}` (the go-plugins-helpers client sends none).
async fn decode<T: DeserializeOwned>(call: &str, body: Body) -> Result<T, Response> {
    let bytes: Bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        warn!(call, "request body over {MAX_BODY} bytes refused");
        reply::misuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("{call}: request body larger than {MAX_BODY} bytes"),
        )
    })?;
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        warn!(call, error = %e, "undecodable request");
        reply::misuse(
            StatusCode::BAD_REQUEST,
            &format!("{call}: invalid request body: {e}"),
        )
    })
}

/// Logs the call once and turns the outcome into an answer.
fn finish<T>(
    call: &str,
    volume: &str,
    id: Option<&str>,
    started: Instant,
    result: Result<T, driver::Error>,
    body: impl FnOnce(T) -> Value,
) -> Response {
    let ms = started.elapsed().as_millis() as u64;
    let id = id.unwrap_or("");
    match result {
        Ok(value) => {
            info!(call, volume, id, result = "ok", duration_ms = ms, "request");
            reply::ok(body(value))
        }
        Err(e) => {
            warn!(call, volume, id, result = "error", error = %e, duration_ms = ms, "request");
            reply::failed(&e.to_string())
        }
    }
}

fn volume_name(name: &str) -> Result<VolumeName, driver::Error> {
    VolumeName::new(name)
}

fn mountpoint_text(path: Option<&Path>) -> String {
    path.map(|p| p.display().to_string()).unwrap_or_default()
}

fn volume_json(info: VolumeInfo, with_status: bool) -> wire::Volume {
    wire::Volume {
        mountpoint: mountpoint_text(info.mountpoint.as_deref()),
        name: info.name,
        status: with_status.then_some(info.status),
    }
}

async fn activate() -> Response {
    // Legacy plugins only; the body is ignored (upstream test_pluginactivate sends garbage).
    reply::json_reply(StatusCode::OK, json!({ "Implements": ["VolumeDriver"] }))
}

async fn capabilities() -> Response {
    // Called before almost every operation; no I/O. One dataset is one volume cluster-wide.
    reply::json_reply(
        StatusCode::OK,
        json!({ "Capabilities": { "Scope": "global" } }),
    )
}

/// Option values are strings on the wire; numbers and booleans are accepted as their text.
fn create_options(
    opts: Option<BTreeMap<String, Value>>,
) -> Result<CreateOptions, (String, String)> {
    let mut out = BTreeMap::new();
    for (key, value) in opts.unwrap_or_default() {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => return Err((key, other.to_string())),
        };
        out.insert(key, text);
    }
    Ok(CreateOptions(out))
}

/// Decodes the request, runs the driver call, logs one line and renders the answer.
async fn handle<R, T, F, Fut>(
    call: &'static str,
    body: Body,
    run: F,
    render: impl FnOnce(T) -> Value,
) -> Response
where
    R: wire::Call,
    F: FnOnce(R) -> Fut,
    Fut: Future<Output = Result<T, driver::Error>>,
{
    let started = Instant::now();
    let request: R = match decode(call, body).await {
        Ok(request) => request,
        Err(response) => return response,
    };
    let volume = request.volume().to_string();
    let id = request.id().map(str::to_string);
    let result = run(request).await;
    finish(call, &volume, id.as_deref(), started, result, render)
}

fn mount_id(request: &wire::MountRequest) -> MountId {
    MountId(request.id.clone().unwrap_or_default())
}

fn mountpoint_json(path: PathBuf) -> Value {
    json!({ "Mountpoint": path.display().to_string() })
}

async fn create<D: VolumeDriver>(State(driver): State<Arc<D>>, body: Body) -> Response {
    let run = |request: wire::CreateRequest| async move {
        let name = volume_name(&request.name)?;
        let opts =
            create_options(request.opts).map_err(|(key, value)| driver::Error::InvalidOption {
                name: name.to_string(),
                key,
                value,
                reason: "option values must be strings".into(),
            })?;
        driver.create(&name, opts).await
    };
    handle("VolumeDriver.Create", body, run, |()| json!({})).await
}

async fn remove<D: VolumeDriver>(State(driver): State<Arc<D>>, body: Body) -> Response {
    let run = |request: wire::NameRequest| async move {
        driver.remove(&volume_name(&request.name)?).await
    };
    handle("VolumeDriver.Remove", body, run, |()| json!({})).await
}

async fn mount<D: VolumeDriver>(State(driver): State<Arc<D>>, body: Body) -> Response {
    let run = |request: wire::MountRequest| async move {
        driver
            .mount(&volume_name(&request.name)?, &mount_id(&request))
            .await
    };
    handle("VolumeDriver.Mount", body, run, mountpoint_json).await
}

async fn unmount<D: VolumeDriver>(State(driver): State<Arc<D>>, body: Body) -> Response {
    let run = |request: wire::MountRequest| async move {
        driver
            .unmount(&volume_name(&request.name)?, &mount_id(&request))
            .await
    };
    handle("VolumeDriver.Unmount", body, run, |()| json!({})).await
}

async fn path<D: VolumeDriver>(State(driver): State<Arc<D>>, body: Body) -> Response {
    let run =
        |request: wire::NameRequest| async move { driver.path(&volume_name(&request.name)?).await };
    handle("VolumeDriver.Path", body, run, mountpoint_json).await
}

async fn get<D: VolumeDriver>(State(driver): State<Arc<D>>, body: Body) -> Response {
    let run =
        |request: wire::NameRequest| async move { driver.get(&volume_name(&request.name)?).await };
    handle(
        "VolumeDriver.Get",
        body,
        run,
        |info| json!({ "Volume": volume_json(info, true) }),
    )
    .await
}

async fn list<D: VolumeDriver>(State(driver): State<Arc<D>>, body: Body) -> Response {
    let run = |_: wire::ListRequest| async move { driver.list().await };
    handle(
        "VolumeDriver.List",
        body,
        run,
        |volumes: Vec<VolumeInfo>| {
            let volumes: Vec<_> = volumes.into_iter().map(|v| volume_json(v, false)).collect();
            json!({ "Volumes": volumes })
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::btree_map;
    use proptest::prelude::*;

    fn option_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
                .map(Value::Number)),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::Null),
            Just(json!(["1G"])),
            Just(json!({ "size": "1G" })),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// `-o` values arrive as strings, numbers or booleans and reach the driver as their text;
        /// anything else is refused naming the first such key and its value.
        #[test]
        fn option_values_become_text_or_are_refused_by_key(
            opts in proptest::option::of(btree_map("[a-z]{1,6}", option_value(), 0..5)),
        ) {
            let given = opts.clone().unwrap_or_default();
            let text = |v: &Value| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                Value::Bool(b) => Some(b.to_string()),
                _ => None,
            };
            match create_options(opts) {
                Ok(CreateOptions(out)) => {
                    let expected: Option<BTreeMap<String, String>> =
                        given.iter().map(|(k, v)| Some((k.clone(), text(v)?))).collect();
                    prop_assert_eq!(Some(out), expected);
                }
                Err((key, value)) => {
                    let first_bad = given.iter().find(|(_, v)| text(v).is_none());
                    prop_assert_eq!(first_bad, Some((&key, &serde_json::from_str(&value).unwrap())));
                }
            }
        }
    }
}
