//! The one place where outcomes become HTTP answers: driver errors, decode failures and protocol misuse.
//!
//! Driver errors are HTTP 200 with `Err` (what the engine and the original plugin expect); misuse is
//! 400/404/405/413, always with a JSON `Err` so the engine shows the text (reference/docker-plugin.md §1.3).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// The plugin protocol's media type.
pub const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1.2+json";

/// A JSON answer with the plugin media type.
pub fn json_reply(status: StatusCode, body: Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        body.to_string(),
    )
        .into_response()
}

/// A successful answer: `Err` is the empty string.
pub fn ok(mut body: Value) -> Response {
    if let Value::Object(map) = &mut body {
        map.insert("Err".into(), Value::String(String::new()));
    }
    json_reply(StatusCode::OK, body)
}

/// A failed volume call.
pub fn failed(message: &str) -> Response {
    json_reply(StatusCode::OK, json!({ "Err": message }))
}

/// A request that is not a valid call of this protocol.
pub fn misuse(status: StatusCode, message: &str) -> Response {
    json_reply(status, json!({ "Err": message }))
}
