//! HTTPS with mandatory client certificates: the emulator's accept loop and server identity.
//!
//! Loads `cluster.crt` and `control-service.{crt,key}`, requires a client certificate that
//! chains to the cluster CA and whose subject CN starts with `user-` (upstream's REST-port rule,
//! F:flocker/ca/_validation.py:48-118), then serves HTTP/1.1 with keep-alive from the given
//! axum router. For the TLS fault it can present a control-service certificate from a foreign
//! CA instead, generated with [`crate::certs`] on first use. It does not route or log requests;
//! `api` does.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::Error;
use crate::certs::{self, CertOptions};

/// A client that has not finished the handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Asks the accept loop to close every open connection; it answers once they are gone.
pub type CloseAll = oneshot::Sender<()>;

/// The server side of TLS: the cluster's configuration, or a foreign CA's while the fault is on.
///
/// Each configuration has its own session cache, so a client cannot resume a session made with
/// the cluster certificate and skip verifying the foreign one.
#[derive(Debug)]
pub struct ServerCerts {
    certs_dir: PathBuf,
    /// Where the foreign CA and its control-service certificate are written.
    foreign_dir: PathBuf,
    cluster: Arc<ServerConfig>,
    state: Mutex<Presented>,
}

#[derive(Debug)]
struct Presented {
    /// What new connections get.
    active: Arc<ServerConfig>,
    /// Built on the first `set_fault(true)`, then kept.
    foreign: Option<Arc<ServerConfig>>,
}

impl ServerCerts {
    /// Loads the control service in `certs_dir`; the foreign CA will go to `foreign_dir`.
    pub fn load(certs_dir: &Path, foreign_dir: &Path) -> Result<Self, Error> {
        let cluster = server_config(certs_dir, certs_dir)?;
        Ok(ServerCerts {
            certs_dir: certs_dir.to_path_buf(),
            foreign_dir: foreign_dir.to_path_buf(),
            cluster: cluster.clone(),
            state: Mutex::new(Presented {
                active: cluster,
                foreign: None,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Presented> {
        // Every update is a single assignment, so a poisoned lock is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// With `on`, new handshakes present a control-service certificate from a freshly
    /// generated, foreign CA (client certificates are still checked against the cluster CA).
    pub fn set_fault(&self, on: bool) -> Result<(), Error> {
        let mut state = self.lock();
        state.active = if on {
            match &state.foreign {
                Some(foreign) => foreign.clone(),
                None => {
                    let foreign = self.foreign_config()?;
                    state.foreign = Some(foreign.clone());
                    foreign
                }
            }
        } else {
            self.cluster.clone()
        };
        Ok(())
    }

    fn foreign_config(&self) -> Result<Arc<ServerConfig>, Error> {
        let opts = CertOptions {
            users: Vec::new(),
            ..CertOptions::default()
        };
        certs::generate(&self.foreign_dir, &opts).map_err(|source| Error::GenerateCerts {
            path: self.foreign_dir.clone(),
            source,
        })?;
        server_config(&self.certs_dir, &self.foreign_dir)
    }

    fn active(&self) -> Arc<ServerConfig> {
        self.lock().active.clone()
    }
}

/// A configuration that trusts clients of the CA in `ca_dir` and presents the
/// control-service certificate in `server_dir`.
fn server_config(ca_dir: &Path, server_dir: &Path) -> Result<Arc<ServerConfig>, Error> {
    // Only ring is compiled in; installing it twice is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = read_certs(&ca_dir.join("cluster.crt"))?;
    let mut roots = RootCertStore::empty();
    for cert in ca {
        roots.add(cert).map_err(|source| Error::Tls {
            what: "adding cluster.crt to the trust store".into(),
            source,
        })?;
    }
    let verifier = WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| Error::Certs {
            path: ca_dir.join("cluster.crt"),
            reason: e.to_string(),
        })?;
    let chain = read_certs(&server_dir.join("control-service.crt"))?;
    let key_path = server_dir.join("control-service.key");
    let key = PrivateKeyDer::from_pem_slice(&read(&key_path)?).map_err(|e| Error::Certs {
        path: key_path.clone(),
        reason: e.to_string(),
    })?;
    let mut config = ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .map_err(|source| Error::Tls {
            what: "loading control-service.crt/.key".into(),
            source,
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::ReadCerts {
        path: path.to_path_buf(),
        source,
    })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(&read(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Certs {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Certs {
            path: path.to_path_buf(),
            reason: "no certificate in file".into(),
        });
    }
    Ok(certs)
}

/// True if the leaf certificate's subject CN starts with `user-`.
pub fn is_api_user(leaf: &CertificateDer<'_>) -> bool {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf.as_ref()) else {
        return false;
    };
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok());
    cn.is_some_and(|cn| cn.starts_with("user-"))
}

/// Accepts connections until the task is aborted; aborting also drops every open connection.
///
/// Each connection is handshaken with the configuration [`ServerCerts`] presents at accept
/// time. A [`CloseAll`] request aborts every open connection (the listener stays open; new
/// connections wait in the backlog) and is answered once they are gone.
pub async fn serve(
    listener: TcpListener,
    certs: Arc<ServerCerts>,
    router: Router,
    mut close_all: mpsc::UnboundedReceiver<CloseAll>,
) {
    // Owning the connection tasks here means aborting `serve` aborts (closes) them all.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    let acceptor = TlsAcceptor::from(certs.active());
                    connections.spawn(connection(tcp, peer, acceptor, router.clone()));
                }
                Err(e) => {
                    // Typically EMFILE; back off briefly instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = close_all.recv() => {
                info!(connections = connections.len(), "closing every open connection");
                connections.shutdown().await;
                let _ = done.send(());
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    router: Router,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let allowed = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .is_some_and(is_api_user);
    if !allowed {
        warn!(%peer, "client certificate CN does not start with user-; closing");
        return;
    }
    let service = TowerToHyperService::new(router);
    // HTTP/1.1 with keep-alive (hyper's default), like upstream's Twisted server.
    let builder = hyper::server::conn::http1::Builder::new();
    if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
        debug!(%peer, error = %e, "connection ended with an error");
    }
}
