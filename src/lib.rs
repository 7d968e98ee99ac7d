//! Flocker volume driver for Docker, shipped as a managed plugin, plus the local control-service
//! emulator it is developed and tested against.
//!
//! # Layout (request path top to bottom)
//! - [`server`]: binds the Unix socket first, serves, drains on SIGTERM.
//! - [`protocol`]: the Docker volume plugin protocol: routes, body decoding, the one error→wire mapping.
//! - [`driver`]: what each volume call means: datasets, moves, leases, mount counting, cached answers.
//! - [`identity`]: which Flocker node this is (`NODE_UUID`, era lookup, network identity).
//! - [`flocker`]: the control-service REST client over mutual TLS, with typed errors.
//! - [`mount`]: bind mounts and mount-table queries (nix).
//! - [`config`]: settings from defaults, TOML and the environment, validated once.
//! - [`size`]: size parsing and printing.
//! - [`backoff`]: the one retry-delay policy (exponential, jittered).
//! - [`blocking`]: runs mount syscalls, mount-table reads and fsync off the async workers.
//! - [`dead_node`]: the `release-leases` subcommand: frees a dead node's leases (SPEC §9.4).
//! - [`doctor`]: the `doctor` subcommand: checks certificates, control service, node identity and
//!   mount propagation, one line each, with the fix.
//! - [`certs`]: generates a Flocker cluster's certificates (CA, control service, users, nodes).
//! - [`emulator`] (feature `emulator`, on by default; the plugin's release build leaves it and
//!   [`certs`] out): a local Flocker control service (REST API v1 over mutual TLS) with an agent
//!   that converges datasets into real bind mounts; used by the tests and the quickstart.

pub mod backoff;
pub mod blocking;
#[cfg(feature = "emulator")]
pub mod certs;
pub mod config;
pub mod dead_node;
pub mod doctor;
pub mod driver;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod flocker;
pub mod identity;
pub mod mount;
pub mod protocol;
pub mod server;
pub mod size;
