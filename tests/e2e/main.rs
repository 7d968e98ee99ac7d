//! End-to-end tests with the real Docker engine and the managed plugin `flocker` (`make e2e`).
//!
//! A custom harness: one fixture (emulator on the host + enabled plugin) for all scenarios, which run in
//! order, each reported as `test NAME ... ok|FAILED`, closing with `N passed, M failed`. Without Docker
//! the suite skips with a notice, except under `CI=true`, where it fails: a skipped end-to-end test is a
//! silent failure. Filter scenarios by substring: `cargo test --test e2e -- swarm`.

mod fixture;
mod scenarios;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Instant;

use fixture::{docker, Fixture, PLUGIN};

fn main() -> ExitCode {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let in_ci = std::env::var("CI").as_deref() == Ok("true");
    let missing = if !nix::unistd::geteuid().is_root() {
        Some("root".to_string())
    } else if let Err(e) = docker(&["info"]) {
        Some(format!("a running Docker engine ({e})"))
    } else if docker(&["plugin", "inspect", PLUGIN]).is_err() {
        Some(format!(
            "the plugin {PLUGIN} (run `make plugin` first; `make e2e` does)"
        ))
    } else {
        None
    };
    if let Some(missing) = missing {
        if in_ci {
            eprintln!("e2e: needs {missing}, and CI=true forbids skipping");
            return ExitCode::FAILURE;
        }
        eprintln!("SKIPPED e2e: needs {missing}");
        return ExitCode::SUCCESS;
    }

    let selected: Vec<_> = scenarios::ALL
        .iter()
        .filter(|(name, _)| filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        .collect();
    let fixture = Fixture::start();
    println!(
        "e2e: plugin enabled in {:.2} s (emulator {}, agent mount root {})",
        fixture.enable_seconds,
        fixture.emulator.url(),
        fixture.root.display()
    );
    let (mut passed, mut failed) = (0, 0);
    for (name, scenario) in selected {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| scenario(&fixture)));
        fixture::remove_test_containers();
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok ({seconds:.1} s)");
            }
            Err(panic) => {
                failed += 1;
                let message = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("test {name} ... FAILED ({seconds:.1} s): {message}");
            }
        }
    }
    fixture.teardown();
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
