//! Flocker volume driver for Docker.
