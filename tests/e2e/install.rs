//! The install paths (issue 9), each through the real engine, run after the other parts because
//! they replace the plugin `flocker` itself (it is re-created from `plugin/`, disabled, at the end):
//! - `make run` (scripts/run-local.sh) with an engine: its printed commands work, and Ctrl-C
//!   leaves the engine as it was;
//! - a local registry (Debian's `docker-registry`, ../shared/reference/two-engines.md §3): `make
//!   push`, then the README's own install line, then the README's upgrade lines to the next version
//!   and back, with volumes in use.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use flocker_docker_plugin::flocker::{DatasetId, NodeId};
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use uuid::Uuid;

use crate::fixture::{
    docker, is_plugin_driver, must, remove_plugin_volumes, remove_test_containers, run, wait_until,
    Fixture, IMAGE, PLUGIN,
};

/// A scenario and its name.
pub type Scenario = (&'static str, fn(&Install));

/// The registry scenarios, in the order they run (the second upgrades what the first installed).
pub const ALL: &[Scenario] = &[
    (
        "install_from_registry_as_readme_says",
        install_from_registry_as_readme_says,
    ),
    (
        "install_upgrade_and_downgrade_keep_everything",
        install_upgrade_and_downgrade_keep_everything,
    ),
];

/// The quickstart scenario: it brings its own emulator and plugin, so it runs without a fixture.
pub const QUICKSTART: (&str, fn(&())) = ("install_quickstart_make_run", quickstart_make_run);

const LABEL: &str = "--label=fdp-e2e";
const REPO: &str = "clusterhq/flocker";
/// The bundle `make plugin` assembles: this version.
const BUNDLE: &str = "plugin";
/// The bundle of the next version, assembled by `make e2e` (or by the fixture when missing).
const NEXT_BUNDLE: &str = "target/e2e-next";

fn checkout() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// This checkout's version, and the next one (patch level plus one), as the Makefile computes them.
fn versions() -> (String, String) {
    let current = env!("CARGO_PKG_VERSION").to_string();
    let next = format!(
        "{}.{}.{}",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH").parse::<u64>().unwrap() + 1
    );
    (current, next)
}

/// What the registry scenarios need beyond the one-engine part; `Some(what)` when missing.
pub fn missing_prerequisite() -> Option<String> {
    (!crate::two_nodes::on_path("docker-registry"))
        .then(|| "docker-registry (Debian package docker-registry; .ci/run installs it)".into())
}

/// A free loopback port (bound and released; good enough for a test run).
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn answers(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A command run as from a shell, without the variables `cargo test` sets for this test (ring's build
/// script watches `CARGO_PKG_*` and `CARGO_MANIFEST_*`: a nested cargo seeing them would rebuild the
/// release binary's dependencies, and again at the next `make plugin` from a shell).
fn from_shell(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut command = Command::new(program);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_by_cargo_test = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|prefix| name.starts_with(prefix))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name);
        if set_by_cargo_test {
            command.env_remove(&*name);
        }
    }
    command
}

/// Runs `make ARGS` in the checkout; panics with its output on failure.
fn make(args: &[&str]) {
    let output = from_shell(std::env::var("MAKE").unwrap_or_else(|_| "make".into()))
        .arg("--no-print-directory")
        .args(args)
        .current_dir(checkout())
        .output()
        .expect("run make");
    assert!(
        output.status.success(),
        "make {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The version a bundle's config.json description names ("… for Docker 0.1.0: …").
fn bundle_version(bundle: &Path) -> Option<String> {
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("config.json")).ok()?).ok()?;
    let description = manifest["description"].as_str()?;
    let after = description.split("for Docker ").nth(1)?;
    Some(after.split(':').next()?.to_string())
}

/// The version a plugin binary reports with `--version` ("flocker-docker-plugin 0.1.0").
fn binary_version(binary: &Path) -> String {
    let out = run(binary.to_str().unwrap(), &["--version"]).expect("--version");
    out.rsplit(' ').next().unwrap().to_string()
}

/// The README's code-block commands starting with `prefix` in section `heading`, with `\`
/// continuations joined and trailing `# comments` dropped.
fn readme_commands(heading: &str, prefix: &str) -> Vec<String> {
    let readme = std::fs::read_to_string(checkout().join("README.md")).unwrap();
    let start = readme
        .find(&format!("\n## {heading}\n"))
        .unwrap_or_else(|| panic!("README has no section {heading}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |e| e + 3)];
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in section.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.split("  #").next().unwrap().trim();
        if let Some(body) = line.strip_suffix('\\') {
            pending.push_str(body);
            continue;
        }
        pending.push_str(line);
        let command = std::mem::take(&mut pending);
        if command.starts_with(prefix) {
            commands.push(command.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    commands
}

/// The registry fixture: the one-engine emulator (no plugin), a local registry on loopback with this
/// version and the next one pushed, and no plugin `flocker` (the scenarios install it).
pub struct Install {
    /// The emulator and helpers shared with the one-engine part.
    pub fx: Fixture,
    registry: Child,
    /// `127.0.0.1:PORT`, the registry prefix.
    pub registry_addr: String,
    /// This checkout's version.
    pub current: String,
    /// The next version (the upgrade target).
    pub next: String,
}

impl Install {
    /// Starts the emulator and the registry, pushes both versions, removes the plugin `flocker`.
    pub fn start() -> Install {
        let fx = Fixture::cluster("fdp-e2e-install");
        let (current, next) = versions();
        let port = free_port();
        let registry_addr = format!("127.0.0.1:{port}");
        let config = fx.dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nstorage: {{filesystem: {{rootdirectory: {}}}}}\nhttp: {{addr: {registry_addr}}}\n",
                fx.dir.join("registry").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(fx.dir.join("registry.log")).unwrap();
        let registry = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let install = Install {
            fx,
            registry,
            registry_addr,
            current,
            next,
        };
        // A failure half-way still stops the registry and the emulator.
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| install.prepare(port))) {
            install.teardown();
            std::panic::resume_unwind(panic);
        }
        install
    }

    /// Waits for the registry, pushes both versions, removes the plugin `flocker`.
    fn prepare(&self, port: u16) {
        let install = self;
        wait_until("the registry answers", Duration::from_secs(30), || {
            answers(port)
        });

        // The next version's bundle first (a build when `make e2e` did not assemble it), then
        // `make push` of this version, which leaves the binary in target/ at this version.
        let next_bundle = checkout().join(NEXT_BUNDLE);
        if bundle_version(&next_bundle).as_deref() != Some(install.next.as_str()) {
            println!("  assembling {NEXT_BUNDLE} (version {})", install.next);
            make(&[
                "bundle",
                &format!("VERSION={}", install.next),
                &format!("BUNDLE={NEXT_BUNDLE}"),
            ]);
        }
        let pushed = Instant::now();
        make(&["push", &format!("REGISTRY={}", install.registry_addr)]);
        // The test-only bundle goes up as `make push` does it, without rebuilding it.
        let next_ref = install.reference(&install.next);
        let _ = docker(&["plugin", "rm", "-f", &next_ref]);
        must(&["plugin", "create", &next_ref, next_bundle.to_str().unwrap()]);
        must(&["plugin", "push", &next_ref]);
        must(&["plugin", "rm", &next_ref]);
        println!(
            "  pushed {} and {} to {} in {:.1} s",
            install.current,
            install.next,
            install.registry_addr,
            pushed.elapsed().as_secs_f64()
        );
        // The plugin `make plugin` created goes, so the alias `flocker` is free for the install.
        let _ = docker(&["plugin", "rm", "-f", PLUGIN]);
    }

    /// `<registry>/clusterhq/flocker:<version>`.
    pub fn reference(&self, version: &str) -> String {
        format!("{}/{REPO}:{version}", self.registry_addr)
    }

    /// Removes what the scenarios made and the installed plugin, stops the registry and the
    /// emulator, and re-creates the plugin `flocker` from `plugin/` (disabled, as `make plugin` leaves it).
    pub fn teardown(mut self) {
        remove_test_containers();
        remove_plugin_volumes();
        let _ = docker(&["plugin", "disable", "-f", PLUGIN]);
        let _ = docker(&["plugin", "rm", "-f", PLUGIN]);
        for version in [&self.current, &self.next] {
            let _ = docker(&["plugin", "rm", "-f", &self.reference(version)]);
        }
        let _ = kill(Pid::from_raw(self.registry.id() as i32), Signal::SIGTERM);
        let _ = self.registry.wait();
        let restored = catch_unwind(restore_plugin);
        self.fx.stop_emulator();
        if let Err(panic) = restored {
            std::panic::resume_unwind(panic);
        }
    }
}

/// Re-creates the plugin `flocker` from `plugin/` (disabled, as `make plugin` leaves it) when these
/// scenarios removed it, so the engine has what it had before the run.
pub fn restore_plugin() {
    if docker(&["plugin", "inspect", PLUGIN]).is_ok() {
        return;
    }
    let bundle = checkout().join(BUNDLE);
    if let Err(e) = docker(&["plugin", "create", PLUGIN, bundle.to_str().unwrap()]) {
        panic!(
            "re-creating the plugin {PLUGIN} from {}: {e}",
            bundle.display()
        );
    }
}

/// The README's install line, as the test runs it: the registry prefix added to the image and the
/// emulator's URL as `CONTROL_URL`, then the settings only this test needs (its certificates and
/// agent mount root are not in /etc/flocker and /flocker).
fn install_from_registry_as_readme_says(it: &Install) {
    let lines = readme_commands("Usage", "docker plugin install ");
    assert_eq!(lines.len(), 1, "one install line in Usage: {lines:?}");
    let image = format!("{REPO}:{}", it.current);
    let mut args: Vec<String> = lines[0]
        .split_whitespace()
        .skip(1)
        .map(str::to_string)
        .collect();
    assert!(
        args.contains(&image),
        "the README installs {image} (this checkout's version): {}",
        lines[0]
    );
    let mut control_url = false;
    for arg in &mut args {
        if *arg == image {
            *arg = it.reference(&it.current);
        } else if arg.starts_with("CONTROL_URL=") {
            *arg = format!("CONTROL_URL={}", it.fx.emulator.url());
            control_url = true;
        }
    }
    assert!(control_url, "the README's line sets CONTROL_URL");
    args.extend([
        format!("certs.source={}", it.fx.certs.display()),
        format!("flocker.source={}", it.fx.root.display()),
        format!("AGENT_MOUNT_ROOT={}", it.fx.root.display()),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!("  docker {}", args.join(" "));
    let started = Instant::now();
    must(&args);
    println!(
        "  installed and enabled in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let listed = must(&["plugin", "ls", "--format", "{{.Name}} {{.Enabled}}"]);
    assert!(
        listed.lines().any(|l| l == "flocker:latest true"),
        "{listed}"
    );
    let description = must(&["plugin", "inspect", "-f", "{{.Config.Description}}", PLUGIN]);
    assert!(
        description.contains(&format!("for Docker {}:", it.current)),
        "{description}"
    );

    must(&["volume", "create", "-d", PLUGIN, "e2e-installed"]);
    must(&[
        "run",
        "--rm",
        LABEL,
        "-v",
        "e2e-installed:/data",
        IMAGE,
        "sh",
        "-c",
        "echo from-registry > /data/f",
    ]);
    assert_eq!(
        must(&[
            "run",
            "--rm",
            LABEL,
            "-v",
            "e2e-installed:/data",
            IMAGE,
            "cat",
            "/data/f"
        ]),
        "from-registry"
    );
    assert_eq!(
        it.fx.read_on_host("e2e-installed", "f").trim(),
        "from-registry"
    );
    must(&["volume", "rm", "e2e-installed"]);
}

/// What must survive an upgrade: the engine's volumes, the datasets, the leases.
#[derive(Debug, PartialEq)]
struct Snapshot {
    volumes: Vec<String>,
    datasets: Vec<String>,
    leases: Vec<String>,
}

fn snapshot(fx: &Fixture) -> Snapshot {
    let mut volumes: Vec<String> = must(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"])
        .lines()
        .filter(|l| l.starts_with("flocker:latest "))
        .map(str::to_string)
        .collect();
    volumes.sort();
    let mut datasets: Vec<String> = fx
        .emulator
        .configured_datasets()
        .iter()
        .filter(|d| d["deleted"] != Value::Bool(true))
        .map(|d| {
            format!(
                "{} {} {} {}",
                d["dataset_id"], d["primary"], d["maximum_size"], d["metadata"]
            )
        })
        .collect();
    datasets.sort();
    let mut leases: Vec<String> = fx
        .emulator
        .leases()
        .iter()
        .map(|l| format!("{} {}", l["dataset_id"], l["node_uuid"]))
        .collect();
    leases.sort();
    Snapshot {
        volumes,
        datasets,
        leases,
    }
}

/// The plugin's binary as the engine stores it (the host can run the static binary).
fn installed_binary() -> PathBuf {
    let root = must(&["info", "-f", "{{.DockerRootDir}}"]);
    let id = must(&["plugin", "inspect", "-f", "{{.Id}}", PLUGIN]);
    Path::new(&root)
        .join("plugins")
        .join(id)
        .join("rootfs/flocker-docker-plugin")
}

/// The README's Upgrading lines, to `version`: stop the containers, the `docker plugin` lines as
/// written (registry prefix and tag substituted), start the containers again.
fn upgrade_as_readme_says(it: &Install, version: &str, containers: &[&str]) -> f64 {
    let lines = readme_commands("Upgrading", "docker plugin ");
    assert_eq!(lines.len(), 4, "disable, upgrade, set, enable: {lines:?}");
    assert!(lines[1].starts_with("docker plugin upgrade "), "{lines:?}");
    assert!(lines[2].starts_with("docker plugin set "), "{lines:?}");
    let fx = &it.fx;
    let started = Instant::now();
    let mut stop = vec!["stop"];
    stop.extend_from_slice(containers);
    must(&stop);
    // Why the README's disable has -f: the engine refuses a plain one while volumes exist.
    let err = docker(&["plugin", "disable", PLUGIN]).unwrap_err();
    assert!(err.contains("in use"), "plain disable: {err}");
    for line in &lines {
        let args: Vec<String> = line
            .split_whitespace()
            .skip(1)
            .map(|arg| {
                // The registry prefix, and this test's mount sources instead of the defaults.
                if arg.starts_with(&format!("{REPO}:")) {
                    it.reference(version)
                } else if arg.starts_with("certs.source=") {
                    format!("certs.source={}", fx.certs.display())
                } else if arg.starts_with("flocker.source=") {
                    format!("flocker.source={}", fx.root.display())
                } else {
                    arg.to_string()
                }
            })
            .collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        must(&args);
    }
    let mut start = vec!["start"];
    start.extend_from_slice(containers);
    must(&start);
    started.elapsed().as_secs_f64()
}

fn install_upgrade_and_downgrade_keep_everything(it: &Install) {
    let fx = &it.fx;
    assert!(
        docker(&["plugin", "inspect", PLUGIN]).is_ok(),
        "runs after install_from_registry_as_readme_says"
    );
    // A volume written and left, one in use by a running container, one leased by another node.
    must(&["volume", "create", "-d", PLUGIN, "e2e-up-idle"]);
    must(&["volume", "create", "-d", PLUGIN, "e2e-up-busy"]);
    must(&["volume", "create", "-d", PLUGIN, "e2e-up-elsewhere"]);
    must(&[
        "run",
        "--rm",
        LABEL,
        "-v",
        "e2e-up-idle:/data",
        IMAGE,
        "sh",
        "-c",
        "echo idle > /data/f",
    ]);
    must(&[
        "run",
        "-d",
        "--name",
        "e2e-up-runner",
        LABEL,
        "-v",
        "e2e-up-busy:/data",
        IMAGE,
        "sh",
        "-c",
        // Stops at once on `docker stop` (a shell as PID 1 ignores SIGTERM otherwise).
        "trap 'exit 0' TERM; echo run >> /data/f; sleep 3600 & wait",
    ]);
    wait_until("the runner wrote", Duration::from_secs(30), || {
        docker(&["exec", "e2e-up-runner", "cat", "/data/f"]).as_deref() == Ok("run")
    });
    let elsewhere = DatasetId(Uuid::parse_str(&fx.dataset("e2e-up-elsewhere")).unwrap());
    let other = Uuid::new_v4();
    fx.rt
        .block_on(fx.client.acquire_lease(elsewhere, NodeId(other)))
        .unwrap();
    let busy = fx.dataset("e2e-up-busy");
    assert!(fx.leased().contains(&busy), "leased while in use");
    let settings = must(&["plugin", "inspect", "-f", "{{json .Settings.Env}}", PLUGIN]);

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // While stopped, as during the upgrade: only the other node's lease is left.
        let mut before = snapshot(fx);
        before.leases.retain(|l| !l.contains(&busy));
        for (round, (from, to)) in [(&it.current, &it.next), (&it.next, &it.current)]
            .into_iter()
            .enumerate()
        {
            let seconds = upgrade_as_readme_says(it, to, &["e2e-up-runner"]);
            println!("  {from} -> {to}: stop, disable, upgrade, enable, start in {seconds:.1} s");
            let description = must(&["plugin", "inspect", "-f", "{{.Config.Description}}", PLUGIN]);
            assert!(
                description.contains(&format!("for Docker {to}:")),
                "{description}"
            );
            assert_eq!(&binary_version(&installed_binary()), to);
            assert_eq!(
                must(&["plugin", "inspect", "-f", "{{json .Settings.Env}}", PLUGIN]),
                settings,
                "settings kept"
            );
            // The running container came back with its data, and its volume is leased again.
            wait_until("the runner wrote again", Duration::from_secs(30), || {
                docker(&["exec", "e2e-up-runner", "cat", "/data/f"])
                    // One line per start: the first run, then one per round.
                    .is_ok_and(|f| f.lines().count() == round + 2 && f.lines().all(|l| l == "run"))
            });
            assert!(fx.leased().contains(&busy), "leased again");
            let mut after = snapshot(fx);
            after.leases.retain(|l| !l.contains(&busy));
            assert_eq!(after, before, "volumes, datasets and leases as before");
            assert_eq!(
                must(&[
                    "run",
                    "--rm",
                    LABEL,
                    "-v",
                    "e2e-up-idle:/data",
                    IMAGE,
                    "cat",
                    "/data/f"
                ]),
                "idle"
            );
            // Still refused where another node holds the lease.
            let err = docker(&[
                "run",
                "--rm",
                LABEL,
                "-v",
                "e2e-up-elsewhere:/data",
                IMAGE,
                "true",
            ])
            .unwrap_err();
            assert!(err.contains(&format!("in use on node {other}")), "{err}");
            // New volumes and Mounts work.
            let fresh = format!("e2e-up-new-{to}");
            must(&["volume", "create", "-d", PLUGIN, &fresh]);
            let volume = format!("{fresh}:/data");
            must(&[
                "run",
                "--rm",
                LABEL,
                "-v",
                &volume,
                IMAGE,
                "sh",
                "-c",
                "echo new > /data/f",
            ]);
            assert_eq!(fx.read_on_host(&fresh, "f").trim(), "new");
            must(&["volume", "rm", &fresh]);
        }
    }));
    let _ = docker(&["rm", "-f", "e2e-up-runner"]);
    let _ = fx.rt.block_on(fx.client.release_lease(elsewhere));
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
    assert!(fx.leased().is_empty(), "no lease left: {:?}", fx.leased());
    must(&[
        "volume",
        "rm",
        "e2e-up-idle",
        "e2e-up-busy",
        "e2e-up-elsewhere",
    ]);
}

/// A terminal delivers Ctrl-C to a shell whose SIGINT is handled; a runner started in the background
/// by a non-interactive shell has it ignored, and a shell cannot trap a signal ignored at its start.
trait ResetSigint {
    fn reset_sigint(&mut self) -> &mut Self;
}

impl ResetSigint for Command {
    fn reset_sigint(&mut self) -> &mut Self {
        // SAFETY: between fork and exec only signal(2), which is async-signal-safe, is called.
        unsafe {
            self.pre_exec(|| {
                signal(Signal::SIGINT, SigHandler::SigDfl)
                    .map(drop)
                    .map_err(std::io::Error::from)
            })
        }
    }
}

/// `make run`'s script with the engine: waits for `quickstart ready`, runs the `docker` commands
/// it printed (with the test image for `busybox`), sends SIGINT to its process group as Ctrl-C
/// does, and checks the engine is left as it was.
fn quickstart_make_run(_: &()) {
    let legacy = Path::new("/run/docker/plugins/flocker.sock");
    assert!(
        !legacy.exists(),
        "{} exists before the run",
        legacy.display()
    );
    crate::fixture::import_image();
    let port = free_port();
    let run_dir = checkout().join(".run");

    // The suite's own (disabled) plugin `flocker` stands for a user's installed plugin: the script
    // must refuse to touch it, and leave it as it was.
    let refused = from_shell(checkout().join("scripts/run-local.sh"))
        .env("PORT", port.to_string())
        .current_dir(checkout())
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/run-local.sh");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains("never touches what it did not make"),
        "refused with an installed {PLUGIN}: {} {said}",
        refused.status
    );
    assert!(
        docker(&["plugin", "inspect", PLUGIN]).is_ok(),
        "the installed plugin is left alone"
    );
    println!(
        "  refused while a plugin {PLUGIN} is installed: {}",
        said.trim()
    );
    // Moved aside for the real run (re-created from the bundle after the install scenarios).
    must(&["plugin", "rm", "-f", PLUGIN]);
    // The user's own things, which the quickstart's Ctrl-C must leave alone.
    must(&["volume", "create", "e2e-qs-keep"]);
    must(&[
        "create",
        "--name",
        "e2e-qs-sentinel",
        "--label",
        "fdp-e2e",
        "-v",
        "e2e-qs-keep:/data",
        IMAGE,
        "true",
    ]);
    let log_path =
        std::env::temp_dir().join(format!("fdp-e2e-quickstart-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let started = Instant::now();
    let mut child = from_shell(checkout().join("scripts/run-local.sh"))
        .env("PORT", port.to_string())
        .current_dir(checkout())
        .stdout(Stdio::piped())
        .stderr(log)
        .stdin(Stdio::null())
        .process_group(0)
        .reset_sigint()
        .spawn()
        .expect("start scripts/run-local.sh");
    let group = Pid::from_raw(-(child.id() as i32));
    let (lines, received) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });

    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut printed = Vec::new();
        loop {
            // `make plugin` inside may build the release binary.
            match received.recv_timeout(Duration::from_secs(600)) {
                Ok(line) if line.trim() == "quickstart ready" => break,
                Ok(line) => printed.push(line),
                Err(e) => panic!(
                    "no `quickstart ready` ({e}); printed {printed:?}; log {}",
                    log_path.display()
                ),
            }
        }
        println!("  ready in {:.1} s", started.elapsed().as_secs_f64());
        assert!(!legacy.exists(), "no legacy socket with an engine");
        let commands: Vec<String> = printed
            .iter()
            .map(|l| l.trim())
            .filter(|l| l.starts_with("docker "))
            .map(|l| l.replace(" busybox ", &format!(" {IMAGE} ")))
            .collect();
        assert_eq!(commands.len(), 3, "create, write, read: {printed:?}");
        let mut last = String::new();
        for command in &commands {
            last = run("sh", &["-c", command]).unwrap_or_else(|e| panic!("{command}: {e}"));
        }
        assert_eq!(
            last, "hello",
            "the printed commands read back what they wrote"
        );
        let status: Value = serde_json::from_str(&must(&["volume", "inspect", "demo"])).unwrap();
        let dataset = status[0]["Status"]["dataset_id"]
            .as_str()
            .unwrap()
            .to_string();
        let on_host = run_dir.join("flocker").join(&dataset).join("greeting");
        assert_eq!(
            std::fs::read_to_string(&on_host).unwrap().trim(),
            "hello",
            "the data is in the agent's mount"
        );
    }));

    let interrupted = Instant::now();
    let _ = kill(group, Signal::SIGINT);
    let mut in_time = false;
    while interrupted.elapsed() < Duration::from_secs(120) {
        if child.try_wait().unwrap().is_some() {
            in_time = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !in_time {
        let _ = kill(group, Signal::SIGKILL);
        // The emulator runs in its own session: stop it too (it unmounts what it mounted).
        if let Some(pid) = std::fs::read_to_string(run_dir.join("emulator.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
    }
    let status = child.wait().unwrap();
    if let Err(panic) = outcome {
        let _ = docker(&["rm", "-f", "e2e-qs-sentinel"]);
        let _ = docker(&["volume", "rm", "e2e-qs-keep"]);
        std::panic::resume_unwind(panic);
    }
    assert!(in_time, "the script stops within 120 s of SIGINT");
    println!(
        "  stopped in {:.1} s after SIGINT ({status})",
        interrupted.elapsed().as_secs_f64()
    );

    // The engine as it was: no plugin, no volume of it, no legacy socket, a fast volume ls.
    assert!(
        docker(&["plugin", "inspect", PLUGIN]).is_err(),
        "plugin removed"
    );
    assert!(!legacy.exists(), "no legacy socket left");
    let ls = Instant::now();
    let volumes = must(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]);
    let ls = ls.elapsed();
    assert!(
        !volumes
            .lines()
            .any(|l| l.split(' ').next().is_some_and(is_plugin_driver)),
        "{volumes}"
    );
    assert!(ls < Duration::from_secs(2), "docker volume ls took {ls:?}");
    let mounts: Vec<PathBuf> = flocker_docker_plugin::mount::mount_points()
        .unwrap()
        .into_iter()
        .filter(|p| p.starts_with(&run_dir))
        .collect();
    assert!(mounts.is_empty(), "mounts left: {mounts:?}");
    assert!(!answers(port), "the emulator stopped");
    assert!(
        docker(&["container", "inspect", "e2e-qs-sentinel"]).is_ok()
            && docker(&["volume", "inspect", "e2e-qs-keep"]).is_ok(),
        "the user's container and local volume are left alone"
    );
    must(&["rm", "e2e-qs-sentinel"]);
    must(&["volume", "rm", "e2e-qs-keep"]);
    assert!(
        !run_dir.join("created-plugin").exists() && !run_dir.join("emulator.pid").exists(),
        "nothing left for a next run to undo"
    );
    println!(
        "  after: no plugin {PLUGIN}, no volume of it, no legacy socket, no mount under .run, emulator stopped; docker volume ls {:.2} s",
        ls.as_secs_f64()
    );
    let _ = std::fs::remove_file(&log_path);
}
