//! Generates a Flocker cluster's certificates, the way `flocker-ca` lays them out.
//!
//! One CA (`cluster.crt`), one control-service certificate, API user certificates and node
//! certificates, all written as PEM files into one directory (F:flocker/ca/_ca.py, summarised in
//! `reference/flocker-upstream.md` §5.1). This module only writes files: it does not load them,
//! build TLS configurations or verify anything.
//!
//! Keys are ECDSA P-256 because they are generated in milliseconds. Upstream uses RSA-4096; the
//! plugin and the emulator accept either, since rustls negotiates the signature scheme.

#![warn(missing_docs)]

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

/// The subject CN of the cluster CA (`flocker-ca initialize <name>`; the name is free text).
pub const CLUSTER_NAME: &str = "flocker-cluster";

/// The DNS name every control-service certificate carries, and that clients verify against.
pub use crate::flocker::tls::CONTROL_SERVICE_NAME;

/// What to generate besides the CA and the control-service certificate.
#[derive(Debug, Clone)]
pub struct CertOptions {
    /// Extra SANs for the control-service certificate: DNS names or IP literals.
    pub control_hosts: Vec<String>,
    /// API users: `plugin` gives `plugin.crt` with CN `user-plugin` and EKU clientAuth.
    pub users: Vec<String>,
    /// Node identities: `<uuid>.crt` with CN `node-<uuid>`; the first is also `node.crt`.
    pub nodes: Vec<Uuid>,
    /// Expiry of every certificate; `None` means 20 years from now, as upstream.
    pub not_after: Option<OffsetDateTime>,
}

impl Default for CertOptions {
    /// SANs `localhost` and `127.0.0.1`, user `plugin`, no nodes, 20 years validity.
    fn default() -> Self {
        CertOptions {
            control_hosts: vec!["localhost".into(), "127.0.0.1".into()],
            users: vec!["plugin".into()],
            nodes: Vec::new(),
            not_after: None,
        }
    }
}

/// Why certificate generation failed; every variant names the file or name involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The output directory could not be created.
    #[error("cannot create certificate directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// rcgen refused the parameters or failed to sign.
    #[error("cannot generate certificate {name}")]
    Generate {
        /// The file stem being generated, e.g. `control-service`.
        name: String,
        /// The underlying error.
        source: rcgen::Error,
    },
    /// A PEM file could not be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Writes `cluster.*`, `control-service.*`, `<user>.*`, `<node uuid>.*` and `node.*` into `dir`.
pub fn generate(dir: &Path, opts: &CertOptions) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(|source| Error::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let cluster_uuid = Uuid::new_v4().to_string();
    let not_after = opts
        .not_after
        .unwrap_or_else(|| OffsetDateTime::now_utc() + Duration::days(365 * 20));
    // Back-date a little for clock skew, but always stay before `not_after` so that tests can
    // ask for certificates that are already expired.
    let not_before =
        (OffsetDateTime::now_utc() - Duration::hours(1)).min(not_after - Duration::days(1));
    let validity = Validity {
        not_before,
        not_after,
        cluster_uuid: &cluster_uuid,
    };

    let ca_key = KeyPair::generate().map_err(gen_err("cluster"))?;
    let mut ca_params = validity.params("cluster", CLUSTER_NAME, Vec::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(gen_err("cluster"))?;
    write_pair(dir, "cluster", &ca_cert.pem(), &ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut sans = vec![CONTROL_SERVICE_NAME.to_string()];
    sans.extend(opts.control_hosts.iter().cloned());
    let mut control = validity.params(CONTROL_SERVICE_NAME, CONTROL_SERVICE_NAME, sans)?;
    control.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    issue(dir, CONTROL_SERVICE_NAME, &control, &issuer)?;

    for user in &opts.users {
        let mut params = validity.params(user, &format!("user-{user}"), Vec::new())?;
        // Upstream sets clientAuth on API users only (F:flocker/ca/_ca.py:424-441).
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue(dir, user, &params, &issuer)?;
    }

    for (i, node) in opts.nodes.iter().enumerate() {
        let stem = node.to_string();
        let params = validity.params(&stem, &format!("node-{node}"), Vec::new())?;
        let (cert_pem, key) = sign(&stem, &params, &issuer)?;
        write_pair(dir, &stem, &cert_pem, &key)?;
        if i == 0 {
            // The plugin loads node.crt/node.key at startup (reference §4.1).
            write_pair(dir, "node", &cert_pem, &key)?;
        }
    }
    Ok(())
}

/// Validity window and OU shared by every certificate of one cluster.
struct Validity<'a> {
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    cluster_uuid: &'a str,
}

impl Validity<'_> {
    /// Parameters with CN, OU = cluster uuid, SANs, validity and a random 128-bit serial.
    fn params(&self, stem: &str, cn: &str, sans: Vec<String>) -> Result<CertificateParams, Error> {
        let mut params = CertificateParams::new(sans).map_err(gen_err(stem))?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, self.cluster_uuid);
        params.not_before = self.not_before;
        params.not_after = self.not_after;
        // Positive 128-bit serial: clear the top bit so DER never needs a sign byte surprise.
        let mut serial = rand::random::<[u8; 16]>();
        serial[0] &= 0x7f;
        params.serial_number = Some(SerialNumber::from_slice(&serial));
        params.use_authority_key_identifier_extension = true;
        Ok(params)
    }
}

/// Signs `params` with a fresh key and writes `<stem>.crt` and `<stem>.key`.
fn issue(
    dir: &Path,
    stem: &str,
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(), Error> {
    let (cert_pem, key) = sign(stem, params, issuer)?;
    write_pair(dir, stem, &cert_pem, &key)
}

fn sign(
    stem: &str,
    params: &CertificateParams,
    issuer: &Issuer<'_, KeyPair>,
) -> Result<(String, KeyPair), Error> {
    let key = KeyPair::generate().map_err(gen_err(stem))?;
    let cert = params.signed_by(&key, issuer).map_err(gen_err(stem))?;
    Ok((cert.pem(), key))
}

fn gen_err(stem: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Generate {
        name: stem.to_string(),
        source,
    }
}

/// Writes the certificate (0644) and the PKCS#8 key (0600, set at creation so it is never readable).
fn write_pair(dir: &Path, stem: &str, cert_pem: &str, key: &KeyPair) -> Result<(), Error> {
    write_file(&dir.join(format!("{stem}.crt")), cert_pem.as_bytes(), 0o644)?;
    write_file(
        &dir.join(format!("{stem}.key")),
        key.serialize_pem().as_bytes(),
        0o600,
    )
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), Error> {
    let err = |source| Error::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    // `mode` only applies to new files; enforce it when overwriting too.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(err)?;
    file.write_all(contents).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::prelude::*;

    fn cn_of(dir: &Path, file: &str) -> (String, X509Certificate<'static>) {
        let pem = fs::read(dir.join(file)).unwrap();
        let (_, pem) = parse_x509_pem(&pem).unwrap();
        let der: &'static [u8] = Box::leak(pem.contents.into_boxed_slice());
        let (_, cert) = parse_x509_certificate(der).unwrap();
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string();
        (cn, cert)
    }

    #[test]
    fn writes_the_flocker_layout() {
        let dir = tempfile::tempdir().unwrap();
        let node = Uuid::new_v4();
        let opts = CertOptions {
            nodes: vec![node],
            ..CertOptions::default()
        };
        generate(dir.path(), &opts).unwrap();

        let (cn, ca) = cn_of(dir.path(), "cluster.crt");
        assert_eq!(cn, "flocker-cluster");
        let bc = ca.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));

        let (cn, control) = cn_of(dir.path(), "control-service.crt");
        assert_eq!(cn, "control-service");
        let san = control.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = san.general_names.iter().map(|n| n.to_string()).collect();
        assert!(
            names.iter().any(|n| n.contains("control-service")),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.contains("localhost")), "{names:?}");
        assert!(
            control
                .extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .server_auth
        );

        let (cn, user) = cn_of(dir.path(), "plugin.crt");
        assert_eq!(cn, "user-plugin");
        assert!(
            user.extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );

        assert_eq!(
            cn_of(dir.path(), &format!("{node}.crt")).0,
            format!("node-{node}")
        );
        assert_eq!(cn_of(dir.path(), "node.crt").0, format!("node-{node}"));
        let mode = fs::metadata(dir.path().join("plugin.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let key = fs::read_to_string(dir.path().join("plugin.key")).unwrap();
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
    }

    #[test]
    fn not_after_in_the_past_gives_expired_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let past = OffsetDateTime::now_utc() - Duration::days(2);
        let opts = CertOptions {
            not_after: Some(past),
            ..CertOptions::default()
        };
        generate(dir.path(), &opts).unwrap();
        let (_, cert) = cn_of(dir.path(), "plugin.crt");
        assert!(!cert.validity().is_valid());
    }
}
