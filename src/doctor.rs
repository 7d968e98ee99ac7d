//! `flocker-docker-plugin doctor`: checks, one by one, what the daemon needs from this node, and says
//! what to fix.
//!
//! Checks, in order: the certificate files in `CERTS_DIR` (present, PEM, chain, validity, key, user CN),
//! the control service (reachable, TLS accepted), this node's identity (one attempt, no retry),
//! `FLOCKER_ROOT` (visible, receiving mount propagation) and `PROPAGATED_MOUNT` (writable, shared).
//! Each check is a function of its inputs, so tests call them one by one.
//!
//! It does not open the plugin socket, change any mount, or retry: it reads, asks the control
//! service read-only questions, and creates and removes one temporary file under `PROPAGATED_MOUNT`.
//! It runs no external command, because the managed plugin's rootfs has no shell.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;
use x509_parser::certificate::X509Certificate;
use x509_parser::pem::{parse_x509_pem, Pem};

use crate::config::{Config, MountMode};
use crate::flocker::{self, NodeId};
use crate::identity::BOOT_ID;
use crate::mount::{self, MountEntry};

/// A certificate expiring sooner than this is a warning.
const EXPIRY_WARNING: Duration = Duration::days(30);

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fine; the detail says what was seen.
    Ok(String),
    /// Works, but something is likely to bite later; the text says what and what to do.
    Warn(String),
    /// Broken: what is wrong and what to do about it.
    Fail {
        /// What is wrong.
        problem: String,
        /// What to do.
        fix: String,
    },
}

/// One named check and its outcome; displayed as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, e.g. `certificate chain`.
    pub name: &'static str,
    /// What it found.
    pub outcome: Outcome,
}

impl Check {
    fn ok(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Ok(detail.into()),
        }
    }

    fn warn(name: &'static str, message: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Warn(message.into()),
        }
    }

    fn fail(name: &'static str, problem: impl Into<String>, fix: impl Into<String>) -> Check {
        Check {
            name,
            outcome: Outcome::Fail {
                problem: problem.into(),
                fix: fix.into(),
            },
        }
    }

    /// True for `Fail`.
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Fail { .. })
    }
}

impl fmt::Display for Check {
    /// `ok   name: detail`, `warn name: message`, `FAIL name: problem. Fix: fix`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Ok(detail) => write!(f, "ok   {}: {detail}", self.name),
            Outcome::Warn(message) => write!(f, "warn {}: {message}", self.name),
            Outcome::Fail { problem, fix } => write!(
                f,
                "FAIL {}: {}. Fix: {fix}",
                self.name,
                problem.trim_end_matches('.')
            ),
        }
    }
}

/// Every check's outcome, in the order they ran.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// True if any check failed (the command then exits 1).
    pub fn failed(&self) -> bool {
        self.checks.iter().any(Check::failed)
    }
}

impl fmt::Display for Report {
    /// One line per check.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            writeln!(f, "{check}")?;
        }
        Ok(())
    }
}

/// Runs every check against `config`, in order. Never fails: failures are in the report.
pub async fn run(config: &Config) -> Report {
    let mut checks = certificates(&config.certs_dir);
    let (check, client) = control_service(&config.control_url, &config.certs_dir).await;
    checks.push(check);
    checks.push(match client {
        Some(client) => {
            let sources = NodeSources {
                node_uuid: config.node_uuid,
                era: crate::identity::this_boot_era(),
                network_identity: config.network_identity.clone(),
            };
            node_identity(&client, &sources).await
        }
        None => Check::fail(
            NODE_IDENTITY,
            "not checked, because the control service did not answer",
            "fix the control service check first",
        ),
    });
    checks.push(flocker_root(
        &config.flocker_root,
        &config.agent_mount_root,
        &config.mount_mode,
    ));
    checks.push(propagated_mount(&config.mount_mode));
    Report { checks }
}

// ---------------------------------------------------------------------------------------------
// 1. Certificates

const CERT_FILES: &str = "certificate files";
const CERT_CHAIN: &str = "certificate chain";
const CERT_VALIDITY: &str = "certificate validity";
const CLIENT_KEY: &str = "client key";
const CLIENT_USER: &str = "client user";

/// Checks `cluster.crt`, `plugin.crt` and `plugin.key` in `certs_dir`: present, PEM, chain, validity,
/// key match, `user-` CN. Missing or unparsable files stop it there: the rest would be noise.
pub fn certificates(certs_dir: &Path) -> Vec<Check> {
    let paths = ["cluster.crt", "plugin.crt", "plugin.key"].map(|f| certs_dir.join(f));
    let missing: Vec<String> = paths
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        return vec![Check::fail(
            CERT_FILES,
            format!("missing {}", missing.join(", ")),
            format!(
                "put this cluster's cluster.crt and an API user certificate (flocker-ca create-api-certificate plugin \
                 makes plugin.crt and plugin.key) into CERTS_DIR={}",
                certs_dir.display()
            ),
        )];
    }
    let [ca_path, cert_path, key_path] = paths;
    let (ca_pem, cert_pem, key_pem) = match (
        read_pem(&ca_path),
        read_pem(&cert_path),
        read_pem(&key_path),
    ) {
        (Ok(ca), Ok(cert), Ok(key)) => (ca, cert, key),
        (ca, cert, key) => {
            let problems: Vec<String> = [ca.err(), cert.err(), key.err()]
                .into_iter()
                .flatten()
                .collect();
            return vec![unreadable(problems)];
        }
    };
    let (ca, cert) = match (ca_pem.parse_x509(), cert_pem.parse_x509()) {
        (Ok(ca), Ok(cert)) if key_pem.label.ends_with("PRIVATE KEY") => (ca, cert),
        (ca, cert) => {
            let mut problems = Vec::new();
            if let Err(e) = ca {
                problems.push(format!(
                    "{} is not an X.509 certificate ({e})",
                    ca_path.display()
                ));
            }
            if let Err(e) = cert {
                problems.push(format!(
                    "{} is not an X.509 certificate ({e})",
                    cert_path.display()
                ));
            }
            if !key_pem.label.ends_with("PRIVATE KEY") {
                problems.push(format!(
                    "{} holds a {} block, not a private key",
                    key_path.display(),
                    key_pem.label
                ));
            }
            return vec![unreadable(problems)];
        }
    };
    let mut checks = vec![Check::ok(
        CERT_FILES,
        format!(
            "cluster.crt, plugin.crt and plugin.key in {} are readable PEM",
            certs_dir.display()
        ),
    )];

    let chain = match cert.verify_signature(Some(ca.public_key())) {
        Ok(()) => Check::ok(
            CERT_CHAIN,
            format!("plugin.crt is signed by cluster.crt ({})", common_name(&ca)),
        ),
        Err(e) => Check::fail(
            CERT_CHAIN,
            format!(
                "plugin.crt (issued by {}) does not chain to cluster.crt ({}): {e}",
                cert.issuer(),
                ca.subject()
            ),
            "use the cluster.crt of the cluster that issued plugin.crt, or issue a new plugin.crt with this cluster's \
             CA (flocker-ca create-api-certificate plugin)",
        ),
    };
    // Validity, key and CN are independent of the chain: report them too, so one run shows everything.
    checks.push(chain);
    checks.push(validity(
        &[("cluster.crt", &ca), ("plugin.crt", &cert)],
        OffsetDateTime::now_utc(),
    ));
    checks.push(match flocker::tls::client_config(certs_dir) {
        Ok(_) => Check::ok(CLIENT_KEY, "plugin.key matches plugin.crt"),
        Err(flocker::Error::Credentials { what, path, reason }) => Check::fail(
            CLIENT_KEY,
            format!("cannot use {what} {}: {reason}", path.display()),
            "put the plugin.key that was generated together with plugin.crt into CERTS_DIR",
        ),
        Err(e) => Check::fail(CLIENT_KEY, e.to_string(), "check the files in CERTS_DIR"),
    });
    let cn = common_name(&cert);
    checks.push(if cn.starts_with("user-") {
        Check::ok(CLIENT_USER, format!("plugin.crt is API user {cn}"))
    } else {
        Check::warn(
            CLIENT_USER,
            format!(
                "plugin.crt has CN {cn}, not user-…: the control service accepts only API user certificates; \
                 make one with flocker-ca create-api-certificate plugin"
            ),
        )
    });
    checks
}

fn read_pem(path: &Path) -> Result<Pem, String> {
    let bytes = fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_x509_pem(&bytes)
        .map(|(_, pem)| pem)
        .map_err(|e| format!("{} is not PEM ({e})", path.display()))
}

fn unreadable(problems: Vec<String>) -> Check {
    Check::fail(
        CERT_FILES,
        problems.join("; "),
        "replace them with the PEM files flocker-ca wrote (cluster.crt, plugin.crt, plugin.key)",
    )
}

fn common_name(cert: &X509Certificate<'_>) -> String {
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or("no CN")
        .to_string()
}

/// Fails if any certificate is expired or not yet valid at `now`; warns if one expires within 30 days.
fn validity(certs: &[(&str, &X509Certificate<'_>)], now: OffsetDateTime) -> Check {
    let mut problems = Vec::new();
    let mut soon = Vec::new();
    let mut fine = Vec::new();
    for (file, cert) in certs {
        let not_before = date(cert.validity().not_before.timestamp());
        let not_after = date(cert.validity().not_after.timestamp());
        let (Some(not_before), Some(not_after)) = (not_before, not_after) else {
            problems.push(format!("{file} has a validity date out of range"));
            continue;
        };
        if not_after < now {
            problems.push(format!("{file} expired on {}", text(not_after)));
        } else if not_before > now {
            problems.push(format!("{file} is not valid before {}", text(not_before)));
        } else if not_after - now < EXPIRY_WARNING {
            soon.push(format!("{file} expires on {}", text(not_after)));
        } else {
            fine.push(format!("{file} valid until {}", text(not_after)));
        }
    }
    if !problems.is_empty() {
        Check::fail(
            CERT_VALIDITY,
            problems.join("; "),
            "issue new certificates with flocker-ca (and check this node's clock)",
        )
    } else if !soon.is_empty() {
        Check::warn(
            CERT_VALIDITY,
            format!(
                "{}; issue new certificates with flocker-ca before then",
                soon.join("; ")
            ),
        )
    } else {
        Check::ok(CERT_VALIDITY, fine.join(", "))
    }
}

fn date(timestamp: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(timestamp).ok()
}

fn text(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

// ---------------------------------------------------------------------------------------------
// 2. Control service

const CONTROL_SERVICE: &str = "control service";

/// Connects to the control service at `url` with the certificates in `certs_dir` and asks its version.
/// Returns the client when it answered, for the identity check.
pub async fn control_service(
    url: &reqwest::Url,
    certs_dir: &Path,
) -> (Check, Option<flocker::Client>) {
    let client = match flocker::Client::new(url, certs_dir) {
        Ok(client) => client,
        Err(e) => {
            return (
                Check::fail(
                    CONTROL_SERVICE,
                    format!("not contacted: {e}"),
                    "fix the certificate checks above",
                ),
                None,
            )
        }
    };
    match client.version().await {
        Ok(version) => (
            Check::ok(
                CONTROL_SERVICE,
                format!(
                    "{url} answers over {} (Flocker {version})",
                    if url.scheme() == "https" {
                        "mutual TLS"
                    } else {
                        "plain HTTP, as CONTROL_URL says"
                    }
                ),
            ),
            Some(client),
        ),
        Err(e) => {
            let port = url.port_or_known_default().unwrap_or(4523);
            let fix = match &e {
                flocker::Error::Unreachable { .. } | flocker::Error::NoAnswer { .. } => format!(
                    "check CONTROL_URL, that the control service runs there, and that port {port} is open from this node"
                ),
                flocker::Error::Tls { .. } => "make sure cluster.crt and plugin.crt come from the cluster this \
                                               control service belongs to (see the certificate checks above)"
                    .into(),
                _ => "check that CONTROL_URL points at a Flocker control service (https://HOST:4523)".into(),
            };
            (Check::fail(CONTROL_SERVICE, e.to_string(), fix), None)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Node identity

const NODE_IDENTITY: &str = "node identity";

/// Where this node's identity may come from, in order (SPEC §4).
#[derive(Debug, Clone, Default)]
pub struct NodeSources {
    /// `NODE_UUID`.
    pub node_uuid: Option<Uuid>,
    /// This boot's era, from [`BOOT_ID`].
    pub era: Option<Uuid>,
    /// `MY_NETWORK_IDENTITY`.
    pub network_identity: Option<String>,
}

/// Resolves this node's identity once, as the daemon would, without retrying.
pub async fn node_identity(client: &flocker::Client, sources: &NodeSources) -> Check {
    let url = client.base_url();
    if let Some(uuid) = sources.node_uuid {
        return match client.nodes().await {
            Ok(nodes) => match nodes.iter().find(|n| n.uuid == NodeId(uuid)) {
                Some(node) => Check::ok(
                    NODE_IDENTITY,
                    format!("NODE_UUID={uuid} is a known node ({})", node.host),
                ),
                None => Check::warn(
                    NODE_IDENTITY,
                    format!(
                        "NODE_UUID={uuid} is not in GET /v1/state/nodes at {url}: the dataset agent of that node has \
                         not registered, or the UUID is wrong; unset NODE_UUID to discover it from the era"
                    ),
                ),
            },
            Err(e) => Check::fail(NODE_IDENTITY, e.to_string(), "see the control service check"),
        };
    }
    if let Some(era) = sources.era {
        return match client.node_by_era(era).await {
            Ok(node) => Check::ok(NODE_IDENTITY, format!("era {era} is node {node}")),
            Err(flocker::Error::NotFound { .. }) => Check::fail(
                NODE_IDENTITY,
                format!(
                    "the control service at {url} knows no node with era {era} (this boot): the local Flocker dataset \
                     agent has not registered"
                ),
                "start the dataset agent on this node (systemctl start flocker-dataset-agent) and check its log and \
                 its agent.yml; or set NODE_UUID",
            ),
            Err(e) => Check::fail(NODE_IDENTITY, e.to_string(), "see the control service check"),
        };
    }
    let Some(ip) = sources.network_identity.as_deref() else {
        return Check::fail(
            NODE_IDENTITY,
            format!("{BOOT_ID} is unreadable and MY_NETWORK_IDENTITY is unset"),
            "set NODE_UUID, or MY_NETWORK_IDENTITY to this node's IP as the control service knows it",
        );
    };
    match client.nodes().await {
        Ok(nodes) => match nodes.iter().find(|n| n.host == ip) {
            Some(node) => Check::ok(
                NODE_IDENTITY,
                format!("MY_NETWORK_IDENTITY={ip} is node {}", node.uuid),
            ),
            None => {
                let hosts: Vec<&str> = nodes.iter().map(|n| n.host.as_str()).collect();
                Check::fail(
                    NODE_IDENTITY,
                    format!(
                        "no node with MY_NETWORK_IDENTITY={ip} in GET /v1/state/nodes at {url} (known: {})",
                        if hosts.is_empty() { "none".into() } else { hosts.join(", ") }
                    ),
                    "start the dataset agent on this node, or set MY_NETWORK_IDENTITY to the address it registered, \
                     or set NODE_UUID",
                )
            }
        },
        Err(e) => Check::fail(
            NODE_IDENTITY,
            e.to_string(),
            "see the control service check",
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// 4. FLOCKER_ROOT

const FLOCKER_ROOT: &str = "flocker root";

/// Checks that `root` (`FLOCKER_ROOT`) exists and lies on a mount that receives propagation, so the
/// dataset agent's later mounts under `agent_mount_root` on the host are seen here
/// (reference/managed-plugin-check.md, second check). In legacy mode a private mount is only a warning:
/// the plugin then shares the agent's mount namespace.
pub fn flocker_root(root: &Path, agent_mount_root: &Path, mode: &MountMode) -> Check {
    if !root.is_dir() {
        return Check::fail(
            FLOCKER_ROOT,
            format!("FLOCKER_ROOT={} is not a directory", root.display()),
            format!(
                "managed plugin: bind the agent's mount root into the plugin (config.json mount \"flocker\", \
                 docker plugin set flocker flocker.source={}); outside Docker: set FLOCKER_ROOT to the dataset \
                 agent's mount root",
                agent_mount_root.display()
            ),
        );
    }
    let (canonical, entry) = match mount_of(root) {
        Ok(found) => found,
        Err(problem) => {
            return Check::fail(FLOCKER_ROOT, problem, "run doctor where /proc is mounted")
        }
    };
    let where_ = if entry.mount_point == canonical {
        format!("FLOCKER_ROOT={} is a mount point", root.display())
    } else {
        format!(
            "FLOCKER_ROOT={} lies on mount {}",
            root.display(),
            entry.mount_point.display()
        )
    };
    if entry.receives_propagation() {
        return Check::ok(
            FLOCKER_ROOT,
            format!(
                "{where_} ({}): mounts the agent makes later appear here",
                entry.propagation_text()
            ),
        );
    }
    let fix = format!(
        "on the host: mount --bind {0} {0} && mount --make-shared {0}, then docker plugin disable flocker && docker \
         plugin enable flocker (config.json mounts it rslave, which then receives the agent's mounts)",
        agent_mount_root.display()
    );
    match mode {
        MountMode::Legacy => Check::warn(
            FLOCKER_ROOT,
            format!(
                "{where_}, which is private: fine for a legacy plugin in the host's mount namespace, but a managed \
                 plugin would not see the agent's later mounts; for that, {fix}"
            ),
        ),
        MountMode::Propagated(_) => Check::fail(
            FLOCKER_ROOT,
            format!(
                "{where_}, which is private: mounts the dataset agent makes later are not seen here, so a volume \
                 would be an empty directory and the container's writes would be lost from view"
            ),
            fix,
        ),
    }
}

/// The canonical form of `path` and the mount it lies on, or what went wrong.
fn mount_of(path: &Path) -> Result<(PathBuf, MountEntry), String> {
    let canonical =
        fs::canonicalize(path).map_err(|e| format!("cannot resolve {}: {e}", path.display()))?;
    let entries = mount::mount_entries().map_err(|e| e.to_string())?;
    let entry = mount::covering_mount(&entries, &canonical)
        .cloned()
        .ok_or_else(|| {
            format!(
                "no mount in /proc/self/mountinfo covers {}",
                canonical.display()
            )
        })?;
    Ok((canonical, entry))
}

// ---------------------------------------------------------------------------------------------
// 5. PROPAGATED_MOUNT

const PROPAGATED_MOUNT: &str = "propagated mount";

/// Checks that `PROPAGATED_MOUNT` exists or can be created, is writable and lies on a shared mount
/// (the engine makes config.json's `propagatedMount` rshared). Legacy mode has none to check.
pub fn propagated_mount(mode: &MountMode) -> Check {
    let dir =
        match mode {
            MountMode::Legacy => return Check::ok(
                PROPAGATED_MOUNT,
                "legacy mode (PROPAGATED_MOUNT is empty): Docker is given the agent's own paths",
            ),
            MountMode::Propagated(dir) => dir,
        };
    let setting = format!("PROPAGATED_MOUNT={}", dir.display());
    let fix_setting = "managed plugin: PROPAGATED_MOUNT must equal config.json's propagatedMount (/mnt/flocker); \
                       legacy plugin outside Docker: set PROPAGATED_MOUNT= (empty)";
    if let Err(e) = fs::create_dir_all(dir) {
        return Check::fail(
            PROPAGATED_MOUNT,
            format!("{setting} cannot be created: {e}"),
            fix_setting,
        );
    }
    let probe = dir.join(format!(".doctor-{}", std::process::id()));
    if let Err(e) = fs::write(&probe, b"flocker-docker-plugin doctor\n") {
        return Check::fail(
            PROPAGATED_MOUNT,
            format!("{setting} is not writable: {e}"),
            format!(
                "{fix_setting}; it must be writable by the plugin (CAP_SYS_ADMIN, not read-only)"
            ),
        );
    }
    let _ = fs::remove_file(&probe);
    let (_, entry) = match mount_of(dir) {
        Ok(found) => found,
        Err(problem) => {
            return Check::fail(
                PROPAGATED_MOUNT,
                problem,
                "run doctor where /proc is mounted",
            )
        }
    };
    if entry.is_shared() {
        Check::ok(
            PROPAGATED_MOUNT,
            format!(
                "{setting} is writable and on shared mount {} ({}): volumes bound here reach Docker",
                entry.mount_point.display(),
                entry.propagation_text()
            ),
        )
    } else {
        Check::fail(
            PROPAGATED_MOUNT,
            format!(
                "{setting} lies on mount {} ({}), which is not shared: volumes bound here would not reach Docker \
                 or the containers",
                entry.mount_point.display(),
                entry.propagation_text()
            ),
            format!(
                "{fix_setting}; or make it a shared mount (mount --bind {0} {0} && mount --make-shared {0})",
                dir.display()
            ),
        )
    }
}

// The checks are exercised with generated certificates, which need the `emulator` feature.
#[cfg(all(test, feature = "emulator"))]
mod tests {
    use super::*;

    #[test]
    fn lines_have_the_documented_shape() {
        let report = Report {
            checks: vec![
                Check::ok("a", "fine"),
                Check::warn("b", "careful"),
                Check::fail("c", "broken.", "mend it"),
            ],
        };
        assert_eq!(
            report.to_string(),
            "ok   a: fine\nwarn b: careful\nFAIL c: broken. Fix: mend it\n"
        );
        assert!(report.failed());
        let fine = Report {
            checks: vec![Check::ok("a", "fine"), Check::warn("b", "careful")],
        };
        assert!(!fine.failed(), "warnings do not fail");
        assert!(!Report::default().failed());
    }

    #[test]
    fn missing_certificates_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let checks = certificates(dir.path());
        assert_eq!(checks.len(), 1);
        let line = checks[0].to_string();
        assert!(
            line.starts_with("FAIL certificate files: missing "),
            "{line}"
        );
        for file in ["cluster.crt", "plugin.crt", "plugin.key"] {
            assert!(
                line.contains(&dir.path().join(file).display().to_string()),
                "{line}"
            );
        }
        assert!(
            line.contains("Fix: ") && line.contains("CERTS_DIR="),
            "{line}"
        );
    }

    #[test]
    fn garbage_is_not_pem() {
        let dir = tempfile::tempdir().unwrap();
        crate::certs::generate(dir.path(), &crate::certs::CertOptions::default()).unwrap();
        fs::write(dir.path().join("plugin.crt"), "not a certificate").unwrap();
        let checks = certificates(dir.path());
        assert_eq!(checks.len(), 1);
        assert!(checks[0].failed());
        assert!(
            checks[0].to_string().contains("plugin.crt is not PEM"),
            "{}",
            checks[0]
        );
    }

    #[test]
    fn expiry_is_named_and_warned_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let not_after = OffsetDateTime::now_utc() + Duration::days(10);
        crate::certs::generate(
            dir.path(),
            &crate::certs::CertOptions {
                not_after: Some(not_after),
                ..crate::certs::CertOptions::default()
            },
        )
        .unwrap();
        let pem = read_pem(&dir.path().join("plugin.crt")).unwrap();
        let cert = pem.parse_x509().unwrap();
        let now = OffsetDateTime::now_utc();
        let check = validity(&[("plugin.crt", &cert)], now);
        assert!(matches!(check.outcome, Outcome::Warn(_)), "{check}");
        let day = not_after.date().to_string();
        assert!(
            check
                .to_string()
                .contains(&format!("plugin.crt expires on {day}")),
            "{check}"
        );

        let later = validity(&[("plugin.crt", &cert)], now + Duration::days(11));
        assert!(later.failed());
        assert!(
            later
                .to_string()
                .contains(&format!("plugin.crt expired on {day}")),
            "{later}"
        );
        let earlier = validity(&[("plugin.crt", &cert)], now - Duration::days(3));
        assert!(
            earlier
                .to_string()
                .contains("plugin.crt is not valid before"),
            "{earlier}"
        );
    }

    #[test]
    fn legacy_mode_skips_the_propagated_mount() {
        let check = propagated_mount(&MountMode::Legacy);
        assert_eq!(
            check.outcome,
            Outcome::Ok(
                "legacy mode (PROPAGATED_MOUNT is empty): Docker is given the agent's own paths"
                    .into()
            )
        );
    }

    #[test]
    fn a_missing_flocker_root_is_named() {
        let check = flocker_root(
            Path::new("/nonexistent/flocker"),
            Path::new("/flocker"),
            &MountMode::Propagated("/mnt/flocker".into()),
        );
        let line = check.to_string();
        assert!(
            line.starts_with(
                "FAIL flocker root: FLOCKER_ROOT=/nonexistent/flocker is not a directory. Fix: "
            ),
            "{line}"
        );
        assert!(line.contains("flocker.source=/flocker"), "{line}");
    }
}
