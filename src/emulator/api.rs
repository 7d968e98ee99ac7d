//! The REST API v1 routes of the emulated control service: paths, JSON bodies, status codes.
//!
//! Follows `reference/flocker-upstream.md` §5 (F:flocker/control/httpapi.py). Also hosts the
//! middleware that counts, fails, delays, drops answers and logs every request (data from
//! `faults`). It does not do TLS (`tls`) or touch mounts (`agent`); it only edits the model and
//! signals changes.

use std::io;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::{json, Value};
use tracing::info;
use uuid::Uuid;

use super::model::{Acquired, CreateError, LeaseHeld, UpdateError};
use super::{schema, Shared};

/// The version `GET /v1/version` reports: the last upstream release.
pub const FLOCKER_VERSION: &str = "1.15.0";

/// Header carrying the configuration tag on `GET /v1/configuration/datasets`.
pub const TAG_HEADER: &str = "x-configuration-tag";

/// Request header for conditional POST/DELETE on the dataset endpoints.
pub const IF_MATCHES_HEADER: &str = "x-if-configuration-matches";

const DECODE_ERROR: &str =
    "The request body could not be decoded according to the value of the\nContent-Type header.";
const SCHEMA_ERROR: &str = "The provided JSON doesn't match the required schema.";

/// The router for every v1 endpoint, with fault injection and request logging.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/version", get(version))
        .route(
            "/v1/configuration/datasets",
            get(list_datasets).post(create_dataset),
        )
        .route(
            "/v1/configuration/datasets/{dataset_id}",
            post(update_dataset).delete(delete_dataset),
        )
        .route(
            "/v1/configuration/leases",
            get(list_leases).post(acquire_lease),
        )
        .route(
            "/v1/configuration/leases/{dataset_id}",
            delete(release_lease),
        )
        .route("/v1/state/datasets", get(state_datasets))
        .route("/v1/state/nodes", get(state_nodes))
        .route("/v1/state/nodes/by_era/{era}", get(node_by_era))
        .fallback(|| async { described(StatusCode::NOT_FOUND, "Not found.") })
        .method_not_allowed_fallback(|| async {
            described(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.")
        })
        .layer(middleware::from_fn_with_state(shared.clone(), intercept))
        .with_state(shared)
}

/// Counts; waits, fails, handles; logs; then holds back or breaks the answer, as configured.
///
/// A client that gives up during `delay` drops this future before the handler runs, so nothing
/// is applied; `delay_answer` and `drop_answer` act only after the handler has returned.
async fn intercept(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let plan = shared.faults.on_request(method.as_str(), &path);
    if let Some(d) = plan.delay {
        tokio::time::sleep(d).await;
    }
    let response = match plan.fail.map(StatusCode::from_u16) {
        Some(Ok(status)) => described(status, "injected fault"),
        _ => match plan.apply_late {
            // Detached, so a client that gives up does not cancel it.
            Some(d) => tokio::spawn(async move {
                tokio::time::sleep(d).await;
                next.run(req).await
            })
            .await
            .expect("late handler"),
            None => next.run(req).await,
        },
    };
    if let Some(bytes) = axum::body::HttpBody::size_hint(response.body()).exact() {
        shared.faults.record_answer(method.as_str(), &path, bytes);
    }
    info!(
        %method,
        %path,
        status = response.status().as_u16(),
        injected = plan.fail.is_some(),
        answer_delay_ms = plan.delay_answer.map(|d| d.as_millis() as u64),
        answer_dropped = plan.drop_answer,
        "request"
    );
    if let Some(d) = plan.delay_answer {
        tokio::time::sleep(d).await;
    }
    if plan.drop_answer {
        return broken(response);
    }
    response
}

/// The answer's status and headers with a body that fails at once, so hyper aborts the
/// connection and the client never receives a complete answer (a transport error).
fn broken(response: Response) -> Response {
    let (mut parts, _) = response.into_parts();
    // Without a length hyper streams the body, and the stream's error ends the connection.
    parts.headers.remove(header::CONTENT_LENGTH);
    let failing = futures_util::stream::once(async {
        Err::<Bytes, _>(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "injected fault: answer dropped",
        ))
    });
    Response::from_parts(parts, Body::from_stream(failing))
}

/// A JSON body with `content-type: application/json`, as every upstream response has.
fn reply(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn ok(body: &Value) -> Response {
    reply(StatusCode::OK, body)
}

/// `{"description": text}` with `status`.
fn described(status: StatusCode, text: &str) -> Response {
    reply(status, &json!({ "description": text }))
}

/// Every error answer of the API, mapped to status and body in one place (reference §5.2).
#[derive(Debug)]
enum ApiError {
    /// The body is not JSON.
    Decode,
    /// The body does not match the schema; jsonschema-style messages.
    Schema(Vec<String>),
    /// `X-If-Configuration-Matches` does not name the current tag.
    TagMismatch { sent: String, current: String },
    /// A named upstream error such as `DATASET_NOT_FOUND`.
    Named(StatusCode, &'static str),
    /// Upstream answers unexpected exceptions with a bare JSON string, the Eliot incident id.
    Internal,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            ApiError::Decode => described(StatusCode::BAD_REQUEST, DECODE_ERROR),
            ApiError::Schema(errors) => reply(
                StatusCode::BAD_REQUEST,
                &json!({ "description": SCHEMA_ERROR, "errors": errors }),
            ),
            ApiError::TagMismatch { sent, current } => described(
                StatusCode::PRECONDITION_FAILED,
                &format!("Tag doesn't match. Required: {sent}, current: {current}"),
            ),
            ApiError::Named(status, text) => described(status, text),
            ApiError::Internal => reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!(Uuid::new_v4().to_string()),
            ),
        }
    }
}

impl From<UpdateError> for ApiError {
    fn from(e: UpdateError) -> Self {
        match e {
            UpdateError::NotFound => ApiError::Named(StatusCode::NOT_FOUND, "Dataset not found."),
            UpdateError::Deleted => ApiError::Named(
                StatusCode::METHOD_NOT_ALLOWED,
                "The dataset has been deleted.",
            ),
        }
    }
}

type ApiResult = Result<Response, ApiError>;

/// Parses the body as JSON, then validates it with `validate`.
fn parse_body<T>(
    body: &Bytes,
    validate: fn(&Value) -> Result<T, Vec<String>>,
) -> Result<T, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| ApiError::Decode)?;
    validate(&value).map_err(ApiError::Schema)
}

/// 412 unless the current tag is among the `X-If-Configuration-Matches` values (if any).
///
/// Runs before the body is parsed, as upstream does (httpapi.py:100-137).
fn check_tag(shared: &Shared, headers: &HeaderMap) -> Result<(), ApiError> {
    let sent: Vec<&str> = headers
        .get_all(IF_MATCHES_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let Some(first) = sent.first() else {
        return Ok(());
    };
    let current = shared.model().tag();
    if sent.contains(&current.as_str()) {
        Ok(())
    } else {
        Err(ApiError::TagMismatch {
            sent: (*first).to_string(),
            current,
        })
    }
}

async fn version() -> Response {
    ok(&json!({ "flocker": FLOCKER_VERSION }))
}

/// A JSON answer whose body is already serialized (a cached listing).
fn ok_bytes(body: Bytes) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

async fn list_datasets(State(shared): State<Arc<Shared>>) -> Response {
    let (body, tag) = shared.configuration_listing();
    let mut response = ok_bytes(body);
    if let Ok(tag) = HeaderValue::from_str(&tag) {
        response.headers_mut().insert(TAG_HEADER, tag);
    }
    response
}

async fn create_dataset(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    check_tag(&shared, &headers)?;
    let request = parse_body(&body, schema::create_request)?;
    if request.sent_deleted {
        // Accepted by the schema but not by the handler's signature: a TypeError upstream.
        return Err(ApiError::Internal);
    }
    let created = shared.model().create_dataset(
        request.dataset_id,
        request.primary,
        request.metadata,
        request.maximum_size,
    );
    let dataset = created.map_err(|CreateError::Collision| {
        ApiError::Named(
            StatusCode::CONFLICT,
            "The provided dataset_id is already in use.",
        )
    })?;
    shared.config_changed();
    Ok(reply(StatusCode::CREATED, &dataset.to_json()))
}

async fn update_dataset(
    State(shared): State<Arc<Shared>>,
    Path(dataset_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    check_tag(&shared, &headers)?;
    let primary = parse_body(&body, schema::update_request)?;
    let before = shared.model().tag();
    let moved = shared.model().move_dataset(&dataset_id, primary);
    let dataset = moved?;
    if shared.model().tag() != before {
        shared.config_changed();
    }
    Ok(ok(&dataset.to_json()))
}

async fn delete_dataset(
    State(shared): State<Arc<Shared>>,
    Path(dataset_id): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    check_tag(&shared, &headers)?;
    let deleted = shared.model().delete_dataset(&dataset_id);
    let dataset = deleted?;
    shared.config_changed();
    Ok(ok(&dataset.to_json()))
}

async fn list_leases(State(shared): State<Arc<Shared>>) -> Response {
    let now = Instant::now();
    let body: Vec<Value> = shared
        .model()
        .leases()
        .iter()
        .map(|l| l.to_json(now))
        .collect();
    ok(&Value::Array(body))
}

async fn acquire_lease(State(shared): State<Arc<Shared>>, body: Bytes) -> ApiResult {
    let request = parse_body(&body, schema::lease_request)?;
    let now = Instant::now();
    let acquired =
        shared
            .model()
            .acquire_lease(&request.dataset_id, request.node_uuid, request.expires, now);
    let (lease, outcome) = acquired
        .map_err(|LeaseHeld| ApiError::Named(StatusCode::CONFLICT, "Lease already held."))?;
    shared.config_changed();
    let status = match outcome {
        Acquired::Created => StatusCode::CREATED,
        Acquired::Renewed => StatusCode::OK,
    };
    Ok(reply(status, &lease.to_json(now)))
}

async fn release_lease(
    State(shared): State<Arc<Shared>>,
    Path(dataset_id): Path<String>,
) -> ApiResult {
    // Upstream parses the id as a UUID and fails with a 500 when it is malformed.
    if Uuid::parse_str(&dataset_id).is_err() {
        return Err(ApiError::Internal);
    }
    let released = shared.model().release_lease(&dataset_id);
    let lease = released.ok_or(ApiError::Named(StatusCode::NOT_FOUND, "Lease not found."))?;
    shared.config_changed();
    Ok(ok(&lease.to_json(Instant::now())))
}

async fn state_datasets(State(shared): State<Arc<Shared>>) -> Response {
    ok_bytes(shared.state_listing())
}

async fn state_nodes(State(shared): State<Arc<Shared>>) -> Response {
    let body: Vec<Value> = shared
        .model()
        .live_nodes()
        .map(|n| json!({ "host": n.host.to_string(), "uuid": n.uuid.to_string() }))
        .collect();
    ok(&Value::Array(body))
}

async fn node_by_era(State(shared): State<Arc<Shared>>, Path(era): Path<String>) -> ApiResult {
    // A non-UUID era raises ValueError upstream, hence a 500.
    let era = Uuid::parse_str(&era).map_err(|_| ApiError::Internal)?;
    let found = shared.model().node_by_era(era);
    let uuid = found.ok_or(ApiError::Named(
        StatusCode::NOT_FOUND,
        "No node found with given era.",
    ))?;
    Ok(ok(&json!({ "uuid": uuid.to_string() })))
}
