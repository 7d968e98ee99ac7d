//! Mutual TLS to the control service: trust only the cluster CA, present `plugin.crt`.
//!
//! The server certificate must chain to `cluster.crt` and name either the URL's host or
//! `control-service`, which every Flocker control certificate carries (flocker-upstream.md §4.1, §5.1):
//! upstream checked only `control-service`, so clusters whose certificates lack the host name keep working.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::Error;

/// The name every Flocker control-service certificate carries.
pub const CONTROL_SERVICE_NAME: &str = "control-service";

/// Builds the rustls client configuration from `CERTS_DIR`.
pub fn client_config(certs_dir: &Path) -> Result<rustls::ClientConfig, Error> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca_path = certs_dir.join("cluster.crt");
    let cert_path = certs_dir.join("plugin.crt");
    let key_path = certs_dir.join("plugin.key");
    let credentials = |what, path: &Path, reason: String| Error::Credentials {
        what,
        path: path.into(),
        reason,
    };

    let mut roots = RootCertStore::empty();
    let ca_certs = read_certs(&ca_path).map_err(|r| credentials("the cluster CA", &ca_path, r))?;
    for cert in ca_certs {
        roots
            .add(cert)
            .map_err(|e| credentials("the cluster CA", &ca_path, e.to_string()))?;
    }
    let chain =
        read_certs(&cert_path).map_err(|r| credentials("the client certificate", &cert_path, r))?;
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .map_err(|e| credentials("the client key", &key_path, e.to_string()))?;

    let inner = WebPkiServerVerifier::builder(Arc::new(roots))
        .build()
        .map_err(|e| credentials("the cluster CA", &ca_path, e.to_string()))?;
    rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ControlServiceVerifier { inner }))
        .with_client_auth_cert(chain, key)
        .map_err(|e| {
            credentials(
                "the client key",
                &key_path,
                format!("does not match plugin.crt: {e}"),
            )
        })
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| e.to_string())?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("no PEM certificate in the file".into());
    }
    Ok(certs)
}

/// Chain check against the cluster CA, name check against the URL host or `control-service`.
#[derive(Debug)]
struct ControlServiceVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for ControlServiceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                let fixed = ServerName::try_from(CONTROL_SERVICE_NAME).expect("a valid DNS name");
                self.inner
                    .verify_server_cert(end_entity, intermediates, &fixed, ocsp_response, now)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
