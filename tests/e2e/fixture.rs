//! The end-to-end fixture: the emulator on the host as the cluster's control service and dataset agent,
//! the managed plugin `flocker` (made by `make plugin`) configured against it, and the docker CLI.
//!
//! Runs in the host's mount namespace (never under `unshare`): dockerd and the plugin must see the
//! agent's mounts, which is what these tests prove.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use flocker_docker_plugin::emulator::{self, Convergence, Emulator};
use flocker_docker_plugin::{certs, flocker};
use serde_json::Value;
use tokio::runtime::Runtime;
use uuid::Uuid;

/// The plugin name users type (SPEC §8).
pub const PLUGIN: &str = "flocker";
/// The test container image, imported from busybox-static.
pub const IMAGE: &str = "local/busybox";

/// Runs the docker CLI (bounded by `timeout`); Ok(stdout) or Err(stderr).
pub fn docker(args: &[&str]) -> Result<String, String> {
    docker_at(None, args)
}

/// Runs the docker CLI against the engine at `host` (`-H`; the machine's engine when `None`).
pub fn docker_at(host: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("timeout");
    command.arg("180").arg("docker");
    if let Some(host) = host {
        command.args(["-H", host]);
    }
    let output = command.args(args).output().expect("run docker");
    let stdout = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
    if output.status.success() {
        Ok(stdout)
    } else {
        Err(format!("{stderr}{stdout}"))
    }
}

/// Runs the docker CLI and panics with its error output on failure.
pub fn must(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("docker {}: {e}", args.join(" ")))
}

/// Runs any command; Ok(stdout) or Err(stderr).
pub fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .expect("run command");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

/// Polls `condition` every 200 ms until it holds or `limit` passes; for engine-driven events.
pub fn wait_until(what: &str, limit: Duration, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < limit {
        if condition() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out after {limit:?} waiting until {what}");
}

/// Everything the scenarios share.
pub struct Fixture {
    /// Tokio runtime owning the emulator.
    pub rt: Runtime,
    /// The emulated control service and agent.
    pub emulator: Emulator,
    /// Control-service client, for leases set up by tests.
    pub client: flocker::Client,
    /// Temporary directory of the run.
    pub dir: PathBuf,
    /// The agent's mount root on the host (a shared mount).
    pub root: PathBuf,
    /// Certificates directory mounted into the plugin.
    pub certs: PathBuf,
    /// This node's UUID.
    pub node: Uuid,
    /// Seconds `docker plugin enable` took.
    pub enable_seconds: f64,
}

impl Fixture {
    /// Starts the emulator, configures and enables the plugin, imports the test image.
    pub fn start() -> Fixture {
        let mut fixture = Fixture::cluster("fdp-e2e");
        let root = fixture.root.clone();
        fixture.enable_seconds = fixture.configure_and_enable(&root);
        fixture
    }

    /// Starts the emulator (its files under a temporary directory named after `prefix`) and imports
    /// the test image; leaves the plugin alone.
    pub fn cluster(prefix: &str) -> Fixture {
        // A legacy plugin socket named like the managed plugin shadows it in the engine's eyes (and
        // the engine keeps such a driver until it restarts): every scenario would test the wrong
        // thing. Say so at once instead.
        let legacy = Path::new("/run/docker/plugins/flocker.sock");
        assert!(
            !legacy.exists(),
            "{} exists: a legacy `flocker` plugin (make run's socket mode, or a stray daemon) would \
             answer instead of the managed plugin; stop it, remove the socket and restart dockerd",
            legacy.display()
        );
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certs_dir = dir.join("certs");
        certs::generate(&certs_dir, &certs::CertOptions::default()).unwrap();
        let root = dir.join("flocker");
        let node = Uuid::new_v4();
        let era = flocker_docker_plugin::identity::this_boot_era().expect("this boot's era");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let emulator = rt.block_on(async {
            Emulator::start(emulator::Config {
                listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0),
                certs_dir: certs_dir.clone(),
                data_dir: dir.join("emulator"),
                nodes: vec![emulator::Node {
                    uuid: node,
                    // The plugin finds its node by this machine's era, as on a real cluster.
                    era,
                    host: IpAddr::V4(Ipv4Addr::LOCALHOST),
                    mount_root: root.clone(),
                }],
                convergence: Convergence::After(Duration::from_millis(500)),
                // Host mounts made after the plugin started must reach it (managed-plugin-check.md).
                share_mount_roots: true,
            })
            .expect("start emulator")
        });
        let client = rt.block_on(async {
            flocker::Client::new(&emulator.url().parse().unwrap(), &certs_dir).unwrap()
        });
        import_image();
        Fixture {
            rt,
            client,
            dir,
            root,
            certs: certs_dir,
            node,
            enable_seconds: 0.0,
            emulator,
        }
    }

    /// Disables the plugin (if enabled), points it at this run's emulator and `flocker_source`, enables it.
    pub fn configure_and_enable(&self, flocker_source: &Path) -> f64 {
        self.configure_and_enable_as(PLUGIN, flocker_source)
    }

    /// [`Fixture::configure_and_enable`] for the managed plugin named `plugin`.
    pub fn configure_and_enable_as(&self, plugin: &str, flocker_source: &Path) -> f64 {
        let _ = docker(&["plugin", "disable", "-f", plugin]);
        must(&[
            "plugin",
            "set",
            plugin,
            &format!("CONTROL_URL={}", self.emulator.url()),
            &format!("certs.source={}", self.certs.display()),
            &format!("flocker.source={}", flocker_source.display()),
            &format!("AGENT_MOUNT_ROOT={}", self.root.display()),
            "DEFAULT_SIZE=1G",
            "MOUNT_TIMEOUT=60s",
            "LOG_LEVEL=debug",
        ]);
        let started = Instant::now();
        must(&["plugin", "enable", "--timeout", "120", plugin]);
        started.elapsed().as_secs_f64()
    }

    /// The plugin's ID.
    pub fn plugin_id(&self) -> String {
        must(&["plugin", "inspect", "-f", "{{.Id}}", PLUGIN])
    }

    /// The host directory Docker maps the plugin's propagated mount to.
    pub fn propagated_dir(&self) -> PathBuf {
        let root = must(&["info", "-f", "{{.DockerRootDir}}"]);
        Path::new(&root)
            .join("plugins")
            .join(self.plugin_id())
            .join("propagated-mount")
    }

    /// Distinct mount points below the propagated mount in the host's table (a bind can be listed twice).
    pub fn host_binds(&self) -> Vec<PathBuf> {
        let dir = self.propagated_dir();
        let mut binds: Vec<PathBuf> = flocker_docker_plugin::mount::mount_points()
            .unwrap()
            .into_iter()
            .filter(|p| p.parent() == Some(dir.as_path()))
            .collect();
        binds.sort();
        binds.dedup();
        binds
    }

    /// Live datasets named `name`.
    pub fn live(&self, name: &str) -> Vec<Value> {
        self.emulator
            .configured_datasets()
            .into_iter()
            .filter(|d| d["deleted"] != Value::Bool(true) && d["metadata"]["name"] == name)
            .collect()
    }

    /// Every live dataset.
    pub fn live_count(&self) -> usize {
        self.emulator
            .configured_datasets()
            .iter()
            .filter(|d| d["deleted"] != Value::Bool(true))
            .count()
    }

    /// The single live dataset ID for `name`.
    pub fn dataset(&self, name: &str) -> String {
        let live = self.live(name);
        assert_eq!(live.len(), 1, "one live dataset named {name}: {live:?}");
        live[0]["dataset_id"].as_str().unwrap().to_string()
    }

    /// Dataset IDs with a lease.
    pub fn leased(&self) -> Vec<String> {
        self.emulator
            .leases()
            .iter()
            .map(|l| l["dataset_id"].as_str().unwrap().to_string())
            .collect()
    }

    /// The file as the dataset agent's mount shows it on the host.
    pub fn read_on_host(&self, name: &str, file: &str) -> String {
        let path = self.root.join(self.dataset(name)).join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Removes what the scenarios made, disables the plugin, stops the emulator (unmounting its datasets).
    pub fn teardown(self) {
        remove_test_containers();
        let _ = docker(&["swarm", "leave", "--force"]);
        remove_plugin_volumes();
        let _ = docker(&["plugin", "disable", "-f", PLUGIN]);
        self.stop_emulator();
    }

    /// Stops the emulator (unmounting its datasets and its shared root) and removes the run's files.
    pub fn stop_emulator(self) {
        self.rt
            .block_on(async { self.emulator.shutdown().await })
            .expect("emulator shutdown");
        // The shared bind the emulator made of its mount root.
        while flocker_docker_plugin::mount::is_mount_point(&self.root).unwrap_or(false) {
            if nix::mount::umount2(&self.root, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a volume's driver (as `docker volume ls` shows it) is this plugin: `flocker` or
/// `flocker:<tag>`, not another plugin whose name merely starts so (`flocker-bench`).
pub fn is_plugin_driver(driver: &str) -> bool {
    driver
        .strip_prefix(PLUGIN)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
}

/// Removes the engine's volumes of the plugin (while it still answers, so their datasets go too).
pub fn remove_plugin_volumes() {
    if let Ok(volumes) = docker(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"]) {
        for (driver, name) in volumes.lines().filter_map(|l| l.split_once(' ')) {
            if is_plugin_driver(driver) {
                let _ = docker(&["volume", "rm", "-f", name]);
            }
        }
    }
}

/// Removes every container the scenarios made, so one failure does not cascade into the next scenario.
pub fn remove_test_containers() {
    remove_test_containers_at(None);
}

/// Like [`remove_test_containers`], on the engine at `host`.
pub fn remove_test_containers_at(host: Option<&str>) {
    if let Ok(ids) = docker_at(host, &["ps", "-aq", "--filter", "label=fdp-e2e"]) {
        for id in ids.lines() {
            let _ = docker_at(host, &["rm", "-f", id]);
        }
    }
}

/// `tar -C dir -c . | docker import - local/busybox` from Debian's busybox-static.
pub fn import_image() {
    // Imported every run: cheap, and an older image of the same name may lack an applet.
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static is installed (.ci/run installs it)");
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    std::fs::copy(busybox, dir.path().join("bin/busybox")).unwrap();
    for applet in [
        "sh", "cat", "echo", "ls", "sleep", "wc", "true", "md5sum", "dd", "head", "mv", "tail",
    ] {
        std::os::unix::fs::symlink("busybox", dir.path().join("bin").join(applet)).unwrap();
    }
    let script = format!(
        "tar -C {} -c . | docker import - {IMAGE}",
        dir.path().display()
    );
    run("sh", &["-c", &script]).expect("import the test image");
}

/// Restarts dockerd with its own command line, as a host reboot or upgrade would.
pub fn restart_dockerd() {
    let pid = run("pidof", &["dockerd"]).expect("dockerd runs");
    let pid = pid.split_whitespace().next().unwrap().to_string();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    run("kill", &["-TERM", &pid]).unwrap();
    wait_until("the old dockerd exits", Duration::from_secs(60), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open("/var/log/dockerd.log")
        .unwrap();
    // `setsid -f` forks the daemon off and returns, so there is no child left to wait for.
    let started = Command::new("setsid")
        .arg("-f")
        .args(&args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .stdin(std::process::Stdio::null())
        .status()
        .expect("start dockerd");
    assert!(started.success(), "setsid -f dockerd failed");
    wait_until("dockerd answers", Duration::from_secs(60), || {
        docker(&["info"]).is_ok()
    });
}
