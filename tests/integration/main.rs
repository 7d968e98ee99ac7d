//! Integration tests, one binary for the whole crate (ripgrep style).
//!
//! Run as root inside a private mount namespace so that mounts cannot leak to the host:
//! `unshare --mount --propagation private cargo test --test integration`.

// The control-service contract (upstream test_httpapi.py / test_client.py) against the emulator,
// or against a real control service when FLOCKER_CONTRACT_URL is set.
mod emulator_contract;
