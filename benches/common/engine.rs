//! A Docker-engine-like client of one plugin socket, shared by the benches that play the engine
//! (keep-alive connections, like the engine's).

use std::path::{Path, PathBuf};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyperlocal::{UnixClientExt, UnixConnector, Uri};
use serde_json::Value;

/// One plugin socket, as the engine talks to it.
#[derive(Clone)]
pub struct Engine {
    socket: PathBuf,
    http: HyperClient<UnixConnector, Full<Bytes>>,
}

impl Engine {
    /// A client of `socket` with its own connection pool.
    pub fn new(socket: &Path) -> Engine {
        Engine::with_client(socket, HyperClient::unix())
    }

    /// A client of `socket` sharing `http`'s connection pool (many sockets, one pool).
    pub fn with_client(socket: &Path, http: HyperClient<UnixConnector, Full<Bytes>>) -> Engine {
        Engine {
            socket: socket.to_path_buf(),
            http,
        }
    }

    /// POSTs `body` to `/VolumeDriver.<call>`; the decoded answer, or what went wrong (the plugin's
    /// `Err`, or the status and answer when there is none).
    pub async fn call(&self, call: &str, body: Value) -> Result<Value, String> {
        let request = hyper::Request::builder()
            .method("POST")
            .uri(Uri::new(&self.socket, &format!("/VolumeDriver.{call}")))
            .header("Accept", "application/vnd.docker.plugins.v1.2+json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        match value["Err"].as_str() {
            Some("") | None if status.is_success() => Ok(value),
            Some(e) if !e.is_empty() => Err(format!("{call}: {e}")),
            _ => Err(format!("{call}: {status} {value}")),
        }
    }
}
