//! Flocker volume driver for Docker.
pub mod config;
pub mod driver;
pub mod flocker;
pub mod identity;
pub mod mount;
pub mod protocol;
pub mod server;
pub mod size;
