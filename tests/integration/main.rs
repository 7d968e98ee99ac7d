//! Integration tests, one binary for the whole crate (ripgrep style).
//!
//! Run as root inside a private mount namespace so that mounts cannot leak to the host:
//! `make test` does `unshare --mount --propagation private cargo test`.

// The shared harness: certificates, emulator, in-process plugins on temp sockets, a typed protocol client.
mod util;

// Docker plugin protocol conformance over a real socket, with a recording driver.
mod protocol;

// Property tests (proptest) of what comes from outside: socket bodies, `-o size=`, control-service JSON.
mod properties;

// The control-service client against the emulator over real mutual TLS, including certificate failures.
mod flocker_client;

// The real daemon binary: socket at once, explanatory errors, SIGTERM.
mod daemon;

// Real bind mounts in temporary directories.
mod mount;

// Driver scenarios: plugin + emulator + real mounts, as a Docker user would see them.
mod driver;

// Issue 6 regressions: sequences that used to lose a write or hand out the wrong data (SPEC §9).
mod safety;

// Control-service requests per Docker operation (SPEC §10): counts, not times.
mod budgets;

// The fault matrix: every fault injected mid-call, SPEC §9 invariants checked after (RELIABILITY.md).
mod faults;

// The control-service contract (upstream test_httpapi.py / test_client.py) against the emulator,
// or against a real control service when FLOCKER_CONTRACT_URL is set.
mod emulator_contract;

// `doctor`: each check against the emulator, generated certificates and real mounts; the binary's output.
mod doctor;
