//! End-to-end tests with the real Docker engine and the managed plugin `flocker` (`make e2e`).
//!
//! A custom harness in two parts, each with one fixture for all its scenarios, which run in order,
//! each reported as `test NAME ... ok|FAILED`, closing with `N passed, M failed` and the duration:
//! - one engine (`fixture`, `scenarios`): the emulator on the host + the plugin on this machine's
//!   engine;
//! - two engines (`two_nodes`, `multi_node`): a second dockerd in network namespace `nodeb`, the
//!   plugin on both, one emulator for both nodes, a two-node Swarm;
//! - installing (`install`): `make run` with the engine, then a local registry with `make push`,
//!   the README's install line and its upgrade lines. Last, because these replace the plugin
//!   `flocker` (re-created from `plugin/` at the end); `install_` selects them.
//!
//! Without Docker (or, for the second part, without `ip`, `nsenter` or `dockerd`) a part skips with
//! a notice, except under `CI=true`, where it fails: a skipped end-to-end test is a silent failure.
//! Filter scenarios by substring: `cargo test --test e2e -- swarm` (`two_nodes` selects the second
//! part).

mod fixture;
mod install;
mod multi_node;
mod scenarios;
mod two_nodes;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::ExitCode;
use std::time::Instant;

use fixture::{docker, Fixture, PLUGIN};
use install::Install;
use two_nodes::TwoNodes;

/// A named scenario against fixture `F`.
type Scenario<F> = (&'static str, fn(&F));

/// Passed and failed scenario counts.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    /// Runs `scenarios` in order against `fixture`, calling `after` after each one.
    fn run<F>(&mut self, scenarios: &[&Scenario<F>], fixture: &F, after: impl Fn(&F)) {
        for (name, scenario) in scenarios {
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| scenario(fixture)));
            // Cleanup may fail too (an engine gone): that must not stop the run or the teardown.
            let cleaned = catch_unwind(AssertUnwindSafe(|| after(fixture)));
            let seconds = started.elapsed().as_secs_f64();
            match (outcome, cleaned) {
                (Ok(()), Ok(())) => {
                    self.passed += 1;
                    println!("test {name} ... ok ({seconds:.1} s)");
                }
                (Err(panic), _) | (Ok(()), Err(panic)) => {
                    self.failed += 1;
                    let message = panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    println!("test {name} ... FAILED ({seconds:.1} s): {message}");
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let started = Instant::now();
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
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

    let one: Vec<_> = scenarios::ALL.iter().filter(|(n, _)| selected(n)).collect();
    let two: Vec<_> = multi_node::ALL
        .iter()
        .filter(|(n, _)| selected(n))
        .collect();
    let mut tally = Tally::default();
    if !one.is_empty() {
        let fixture = Fixture::start();
        println!(
            "e2e: plugin enabled in {:.2} s (emulator {}, agent mount root {})",
            fixture.enable_seconds,
            fixture.emulator.url(),
            fixture.root.display()
        );
        tally.run(&one, &fixture, |_| fixture::remove_test_containers());
        fixture.teardown();
    }
    if !two.is_empty() {
        match two_nodes::missing_prerequisite() {
            Some(missing) if in_ci => {
                eprintln!(
                    "e2e: the two-node scenarios need {missing}, and CI=true forbids skipping"
                );
                return ExitCode::FAILURE;
            }
            Some(missing) => eprintln!("SKIPPED e2e two-node scenarios: need {missing}"),
            None => {
                let setup = Instant::now();
                match catch_unwind(TwoNodes::start) {
                    Ok(mut fixture) => {
                        println!(
                            "e2e: two nodes up in {:.1} s (emulator {}; plugin enabled on A in {:.2} s, on B in {:.2} s; engine B log {})",
                            setup.elapsed().as_secs_f64(),
                            fixture.emulator().url(),
                            fixture.enable_seconds.0,
                            fixture.enable_seconds.1,
                            two_nodes::LOG_B,
                        );
                        tally.run(&two, &fixture, TwoNodes::after_scenario);
                        fixture.teardown();
                    }
                    Err(_) => {
                        println!("two-node fixture ... FAILED (see the panic above)");
                        tally.failed += 1;
                    }
                }
            }
        }
    }
    let quickstart = selected(install::QUICKSTART.0);
    let registry: Vec<_> = install::ALL.iter().filter(|(n, _)| selected(n)).collect();
    if quickstart {
        // Outside every fixture's lifetime: the script makes and removes its own plugin `flocker`.
        tally.run(&[&install::QUICKSTART], &(), |_| ());
    }
    if !registry.is_empty() {
        match install::missing_prerequisite() {
            Some(missing) if in_ci => {
                eprintln!(
                    "e2e: the registry scenarios need {missing}, and CI=true forbids skipping"
                );
                return ExitCode::FAILURE;
            }
            Some(missing) => eprintln!("SKIPPED e2e registry scenarios: need {missing}"),
            None => {
                let setup = Instant::now();
                match catch_unwind(Install::start) {
                    Ok(fixture) => {
                        println!(
                            "e2e: registry {} up, {} and {} pushed, in {:.1} s",
                            fixture.registry_addr,
                            fixture.current,
                            fixture.next,
                            setup.elapsed().as_secs_f64()
                        );
                        tally.run(&registry, &fixture, |_| fixture::remove_test_containers());
                        fixture.teardown();
                    }
                    Err(_) => {
                        println!("registry fixture ... FAILED (see the panic above)");
                        tally.failed += 1;
                    }
                }
            }
        }
    }
    if (quickstart || !registry.is_empty()) && catch_unwind(install::restore_plugin).is_err() {
        println!("re-creating the plugin {PLUGIN} ... FAILED (see the panic above)");
        tally.failed += 1;
    }
    println!(
        "{} passed, {} failed in {:.1} s",
        tally.passed,
        tally.failed,
        started.elapsed().as_secs_f64()
    );
    if tally.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
