//! `flocker::Client`: one method per REST call the plugin makes, over a keep-alive connection pool.
//!
//! Redirects are never followed: the client trusts only the configured control service (SPEC §6), so a
//! 3xx is an error naming where it pointed. Retrying and waiting are the driver's business, not this file's.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tracing::debug;
use uuid::Uuid;

use super::types::{
    Acquired, Configuration, DatasetConfig, DatasetId, DatasetState, Lease, NewDataset, NodeId,
    NodeInfo,
};
use super::{tls, Error, Result};

/// Per-request limit: far below Docker's one-minute call deadline, so a hung control service is reported.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TAG_HEADER: &str = "X-Configuration-Tag";
const IF_MATCHES_HEADER: &str = "X-If-Configuration-Matches";

/// A control-service client; cheap to clone (the connection pool is shared).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    request_timeout: Duration,
}

impl Client {
    /// A client for `base` (without `/v1`), authenticating with the certificates in `certs_dir`, with
    /// the [`REQUEST_TIMEOUT`] per request.
    pub fn new(base: &Url, certs_dir: &Path) -> Result<Client> {
        Client::with_timeout(base, certs_dir, REQUEST_TIMEOUT)
    }

    /// Like [`Client::new`], with `request_timeout` for each whole request (connect, send, answer).
    pub fn with_timeout(base: &Url, certs_dir: &Path, request_timeout: Duration) -> Result<Client> {
        // reqwest builds a rustls configuration even for http:// URLs and, with `rustls-no-provider`,
        // panics unless a process-wide provider is installed (tls.rs installs it only for https).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(request_timeout))
            .pool_idle_timeout(Duration::from_secs(90))
            // A redirect would send our requests (and the move/delete they ask for) to a server
            // nobody configured; an http:// Location would even drop TLS. Report it instead.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy();
        if base.scheme() == "https" {
            builder = builder.tls_backend_preconfigured(tls::client_config(certs_dir)?);
        }
        let http = builder.build().map_err(|e| Error::Credentials {
            what: "the TLS configuration",
            path: certs_dir.into(),
            reason: super::error::chain(&e),
        })?;
        Ok(Client {
            http,
            base: base.clone(),
            request_timeout,
        })
    }

    /// How long one request may take before it is given up (and its outcome is unknown).
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// The base URL, for messages.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// `GET /v1/configuration/datasets`, with the configuration tag.
    pub async fn configuration(&self) -> Result<Configuration> {
        let (datasets, tag) = self
            .call_with_tag(Method::GET, "/v1/configuration/datasets")
            .await?;
        Ok(Configuration { tag, datasets })
    }

    /// `POST /v1/configuration/datasets`, conditional on `if_matches` when given.
    pub async fn create_dataset(
        &self,
        dataset: &NewDataset,
        if_matches: Option<&str>,
    ) -> Result<DatasetConfig> {
        self.call(
            Method::POST,
            "/v1/configuration/datasets",
            Some(dataset),
            if_matches,
        )
        .await
    }

    /// `POST /v1/configuration/datasets/<id>` `{"primary": to}`: asks the cluster to move it.
    pub async fn move_dataset(&self, id: DatasetId, to: NodeId) -> Result<DatasetConfig> {
        let path = format!("/v1/configuration/datasets/{id}");
        self.call(Method::POST, &path, Some(&json!({ "primary": to })), None)
            .await
    }

    /// `DELETE /v1/configuration/datasets/<id>`, conditional on `if_matches` when given.
    pub async fn delete_dataset(
        &self,
        id: DatasetId,
        if_matches: Option<&str>,
    ) -> Result<DatasetConfig> {
        let path = format!("/v1/configuration/datasets/{id}");
        self.call(Method::DELETE, &path, None::<&()>, if_matches)
            .await
    }

    /// `GET /v1/state/datasets`.
    pub async fn state(&self) -> Result<Vec<DatasetState>> {
        self.call(Method::GET, "/v1/state/datasets", None::<&()>, None)
            .await
    }

    /// `GET /v1/configuration/leases`.
    pub async fn leases(&self) -> Result<Vec<Lease>> {
        self.call(Method::GET, "/v1/configuration/leases", None::<&()>, None)
            .await
    }

    /// `POST /v1/configuration/leases` with no expiry; renews a lease this node already holds.
    ///
    /// Says whether the lease is new (201) or was already this node's (200): only a lease a caller
    /// created is its own to give back when it fails (SPEC §9.1).
    pub async fn acquire_lease(&self, id: DatasetId, node: NodeId) -> Result<Acquired> {
        let body = json!({ "dataset_id": id, "node_uuid": node, "expires": null });
        let answer: Answer<Lease> = self
            .send(Method::POST, "/v1/configuration/leases", Some(&body), None)
            .await?;
        Ok(if answer.status == StatusCode::CREATED {
            Acquired::Created
        } else {
            Acquired::Renewed
        })
    }

    /// `DELETE /v1/configuration/leases/<id>`.
    pub async fn release_lease(&self, id: DatasetId) -> Result<Lease> {
        let path = format!("/v1/configuration/leases/{id}");
        self.call(Method::DELETE, &path, None::<&()>, None).await
    }

    /// `GET /v1/state/nodes/by_era/<era>`; `NotFound` until the local agent has registered.
    pub async fn node_by_era(&self, era: Uuid) -> Result<NodeId> {
        #[derive(serde::Deserialize)]
        struct Node {
            uuid: NodeId,
        }
        let path = format!("/v1/state/nodes/by_era/{era}");
        let node: Node = self.call(Method::GET, &path, None::<&()>, None).await?;
        Ok(node.uuid)
    }

    /// `GET /v1/state/nodes`.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>> {
        self.call(Method::GET, "/v1/state/nodes", None::<&()>, None)
            .await
    }

    /// `GET /v1/version`: a cheap reachability check.
    pub async fn version(&self) -> Result<String> {
        #[derive(serde::Deserialize)]
        struct Version {
            flocker: String,
        }
        let v: Version = self
            .call(Method::GET, "/v1/version", None::<&()>, None)
            .await?;
        Ok(v.flocker)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        if_matches: Option<&str>,
    ) -> Result<T> {
        let answer = self.send(method, path, body, if_matches).await?;
        Ok(answer.value)
    }

    async fn call_with_tag<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(T, Option<String>)> {
        let answer = self.send(method, path, None::<&()>, None).await?;
        Ok((answer.value, answer.tag))
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
        if_matches: Option<&str>,
    ) -> Result<Answer<T>> {
        let mut url = self.base.clone();
        let base_path = url.path().trim_end_matches('/').to_string();
        url.set_path(&format!("{base_path}{path}"));
        let url_text = url.to_string();
        let started = Instant::now();
        let mut request = self.http.request(method.clone(), url);
        if let Some(body) = body {
            request = request.json(body);
        }
        if let Some(tag) = if_matches {
            request = request.header(IF_MATCHES_HEADER, tag);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&url_text, e))?;
        let status = response.status();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let tag = header(TAG_HEADER);
        let location = header(reqwest::header::LOCATION.as_str());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&url_text, e))?;
        debug!(%method, path, status = status.as_u16(), elapsed_ms = started.elapsed().as_millis() as u64, "control service");
        if !status.is_success() {
            let description = match location {
                Some(to) if status.is_redirection() => format!(
                    "redirect to {to}, not followed: set CONTROL_URL to the control service itself"
                ),
                _ => description(&bytes),
            };
            return Err(status_error(
                method_name(&method),
                url_text,
                status,
                description,
            ));
        }
        let value = serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
            url: url_text,
            reason: e.to_string(),
        })?;
        Ok(Answer { value, tag, status })
    }

    /// A transport error; a timeout also says what the limit is, since reqwest only says "timed out".
    fn transport_error(&self, url: &str, err: reqwest::Error) -> Error {
        if err.is_timeout() && !err.is_connect() {
            return Error::NoAnswer {
                url: url.into(),
                reason: format!(
                    "{} (each request may take at most {})",
                    super::error::chain(&err),
                    humantime::format_duration(self.request_timeout)
                ),
            };
        }
        Error::transport(url, err)
    }
}

/// A decoded successful answer.
struct Answer<T> {
    value: T,
    tag: Option<String>,
    status: StatusCode,
}

fn method_name(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        _ => "request",
    }
}

/// The server's `description` from an error body, or the start of the raw body.
fn description(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("description")
                .and_then(|d| d.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).chars().take(300).collect())
}

/// Maps a non-2xx answer to a typed error carrying `description`.
fn status_error(
    method: &'static str,
    url: String,
    status: StatusCode,
    description: String,
) -> Error {
    match status {
        StatusCode::NOT_FOUND => Error::NotFound {
            method,
            url,
            description,
        },
        StatusCode::CONFLICT => Error::Conflict {
            method,
            url,
            description,
        },
        StatusCode::PRECONDITION_FAILED => Error::ConfigurationChanged {
            method,
            url,
            description,
        },
        _ => Error::Status {
            method,
            url,
            status: status.as_u16(),
            description,
        },
    }
}
