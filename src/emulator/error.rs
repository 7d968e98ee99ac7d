//! The emulator's error type: what failed, with the path or address involved.
//!
//! Only the type lives here; the API's wire errors (404/409/412...) are answers, not failures,
//! and are mapped in `api`.

use std::net::SocketAddr;
use std::path::PathBuf;

use uuid::Uuid;

/// Why the emulator could not start, listen, converge or inject a fault; each variant names what
/// was involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Binding the listening socket failed.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A certificate or key file could not be read.
    #[error("cannot read {path}")]
    ReadCerts {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A certificate or key file could not be parsed or used.
    #[error("invalid certificate material in {path}: {reason}")]
    Certs {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Certificates (the TLS fault's foreign CA) could not be generated.
    #[error("cannot generate certificates in {path}")]
    GenerateCerts {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: crate::certs::Error,
    },
    /// rustls rejected the configuration.
    #[error("TLS configuration failed while {what}")]
    Tls {
        /// The step that failed.
        what: String,
        /// The underlying error.
        source: rustls::Error,
    },
    /// A directory could not be created.
    #[error("cannot create directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A directory could not be removed.
    #[error("cannot remove {path}")]
    RemoveDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A bind mount (or making a mount shared) failed.
    #[error("cannot bind-mount {source_path} at {target}: {errno}")]
    Mount {
        /// What was mounted.
        source_path: PathBuf,
        /// Where.
        target: PathBuf,
        /// The error number.
        errno: nix::errno::Errno,
    },
    /// An unmount failed.
    #[error("cannot unmount {target}: {errno}")]
    Unmount {
        /// The mount point.
        target: PathBuf,
        /// The error number.
        errno: nix::errno::Errno,
    },
    /// Repeated unmounts left a mount behind.
    #[error("{target} is still a mount point after repeated unmounts")]
    StillMounted {
        /// The mount point.
        target: PathBuf,
    },
    /// `/proc/self/mountinfo` could not be read.
    #[error("cannot read /proc/self/mountinfo")]
    MountInfo {
        /// The underlying error.
        source: std::io::Error,
    },
    /// No node with this uuid was ever registered.
    #[error("no node {uuid} is registered with the emulator")]
    UnknownNode {
        /// The node.
        uuid: Uuid,
    },
}
