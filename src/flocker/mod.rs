//! The Flocker control-service REST client (SPEC §6): typed calls, typed errors, mutual TLS.
//!
//! It knows the REST API and nothing of Docker; retries and waiting belong to the driver.

mod client;
mod error;
pub mod tls;
pub mod types;

pub use client::{Client, REQUEST_TIMEOUT};
pub use error::Error;
pub use types::{
    Acquired, Configuration, DatasetConfig, DatasetId, DatasetState, Lease, NewDataset, NodeId,
    NodeInfo,
};

/// Result of a control-service call.
pub type Result<T> = std::result::Result<T, Error>;
