//! Flocker volume driver for Docker.
//!
//! # Layout
//! - [`certs`]: generates a Flocker cluster's certificates (CA, control service, users, nodes).
//! - [`emulator`]: a local Flocker control service (REST API v1 over mutual TLS) with an agent
//!   that converges datasets into real bind mounts; used by the tests and the quickstart.

pub mod certs;
pub mod emulator;
