//! Control-service errors: one variant per way a call can fail, each carrying the URL and the cause.
//!
//! 404, 409 and 412 are variants of their own because callers branch on them (STYLE.md 8.4).

use std::error::Error as StdError;
use std::path::PathBuf;

/// A failed control-service call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Client credentials could not be loaded.
    #[error("cannot load {what} from {path}: {reason}; check CERTS_DIR (it needs cluster.crt, plugin.crt and plugin.key)")]
    Credentials {
        /// Which file it was meant to be.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// No connection could be made: the request never reached the control service.
    #[error("the Flocker control service at {url} is unreachable: {reason}")]
    Unreachable {
        /// The request URL.
        url: String,
        /// The cause chain.
        reason: String,
    },
    /// The request was sent but no complete answer came (timeout, connection broken): the control
    /// service may still carry it out, so its outcome is unknown.
    #[error("the Flocker control service at {url} did not answer in time, and may still carry out the request: {reason}")]
    NoAnswer {
        /// The request URL.
        url: String,
        /// The cause chain.
        reason: String,
    },
    /// The TLS handshake failed (wrong CA, expired or rejected certificate, name mismatch).
    #[error("TLS with the Flocker control service at {url} failed: {reason}; check that CERTS_DIR holds this cluster's cluster.crt and a valid plugin.crt/plugin.key")]
    Tls {
        /// The request URL.
        url: String,
        /// The cause chain.
        reason: String,
    },
    /// 404.
    #[error("{method} {url}: not found ({description})")]
    NotFound {
        /// HTTP method.
        method: &'static str,
        /// The request URL.
        url: String,
        /// The server's `description`.
        description: String,
    },
    /// 409: the dataset id or the lease is taken.
    #[error("{method} {url}: conflict ({description})")]
    Conflict {
        /// HTTP method.
        method: &'static str,
        /// The request URL.
        url: String,
        /// The server's `description`.
        description: String,
    },
    /// 412: the configuration changed since the tag was read.
    #[error("{method} {url}: the configuration changed meanwhile ({description})")]
    ConfigurationChanged {
        /// HTTP method.
        method: &'static str,
        /// The request URL.
        url: String,
        /// The server's `description`.
        description: String,
    },
    /// Any other unexpected status.
    #[error("{method} {url}: HTTP {status} ({description})")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// The request URL.
        url: String,
        /// The status code.
        status: u16,
        /// The server's `description`, or the raw body.
        description: String,
    },
    /// A 2xx answer whose body is not what the API reference says.
    #[error("{url}: unexpected answer from the control service: {reason}")]
    Decode {
        /// The request URL.
        url: String,
        /// What did not parse.
        reason: String,
    },
}

impl Error {
    /// Classifies a transport error from reqwest, telling TLS failures from plain unreachability.
    pub(crate) fn transport(url: &str, err: reqwest::Error) -> Error {
        let reason = chain(&err);
        let is_tls = is_tls_failure(&err);
        if is_tls {
            Error::Tls {
                url: url.into(),
                reason,
            }
        } else if err.is_connect() {
            Error::Unreachable {
                url: url.into(),
                reason,
            }
        } else {
            Error::NoAnswer {
                url: url.into(),
                reason,
            }
        }
    }

    /// True when the request may have been carried out although no proper answer came back.
    pub fn in_doubt(&self) -> bool {
        matches!(self, Error::NoAnswer { .. } | Error::Decode { .. })
    }

    /// True when the control service could not be talked to properly (so cached answers are better than
    /// none): unreachable, TLS failure, a 5xx, or a 2xx that is not the API's JSON (a proxy's error page).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Error::Unreachable { .. }
                | Error::NoAnswer { .. }
                | Error::Tls { .. }
                | Error::Decode { .. }
        ) || matches!(self, Error::Status { status, .. } if *status >= 500)
    }
}

/// Whether a rustls error is anywhere in the chain. `io::Error` hides its inner error from `source()`,
/// so look inside it explicitly; that is where hyper puts the TLS alert of a refused client certificate.
fn is_tls_failure(err: &(dyn StdError + 'static)) -> bool {
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        if let Some(inner) = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            if is_tls_failure(inner) {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// Joins an error and its sources with ": ", skipping repeats (hyper and reqwest repeat themselves).
pub(crate) fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.join(": ")
}
