//! The two-node fixture (issue 7): engine A is the machine's dockerd, engine B a second dockerd in
//! the network namespace `nodeb` (../shared/reference/two-engines.md §1), each with the managed
//! plugin `flocker` configured against one control-service emulator that plays both nodes' dataset
//! agents, and the two engines joined in a Swarm (A manager, B worker).
//!
//! Both engines share the host's mount namespace (engine B is entered with `nsenter --net` only), so
//! agent mounts, plugin binds and container mounts behave as on two hosts that see one storage
//! backend. Everything made here is removed by [`TwoNodes::teardown`], which also runs on drop: a
//! panic while starting or in a scenario still leaves the machine as it was. Plugins and volumes go
//! before the directories they mount (two-engines.md §4: an enabled plugin whose mount source is
//! gone can crash-loop dockerd 20.10), then engine B, its mounts, the namespace and the veth pair,
//! then the emulator.

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use flocker_docker_plugin::certs;
use flocker_docker_plugin::emulator::{self, Convergence, Emulator};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::runtime::Runtime;
use uuid::Uuid;

use crate::fixture::{docker_at, import_image, remove_test_containers_at, run, wait_until};
use crate::fixture::{IMAGE, PLUGIN};

/// Services the scenarios create are named with this prefix, so cleanup finds them.
pub const SERVICE_PREFIX: &str = "fdp-e2e";

/// Network namespace of node B.
pub const NETNS: &str = "nodeb";
/// Node A's end of the veth pair: the emulator and the Swarm manager listen here.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
/// Node B's end of the veth pair.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 2);
/// Engine B's API socket.
pub const SOCKET_B: &str = "unix:///run/docker-b.sock";
const SOCKET_B_PATH: &str = "/run/docker-b.sock";
const DATA_ROOT_B: &str = "/var/lib/docker-b";
const EXEC_ROOT_B: &str = "/run/docker-b";
const PIDFILE_B: &str = "/run/docker-b.pid";
const VETH_A: &str = "vetha";
const VETH_B: &str = "vethb";
/// Engine B's log, kept after the run for post-mortems (engine A's is /var/log/dockerd.log).
pub const LOG_B: &str = "/var/log/dockerd-b.log";

/// What the two-node fixture needs beyond the one-engine one; `Some(what)` when missing.
pub fn missing_prerequisite() -> Option<String> {
    let missing: Vec<&str> = ["ip", "nsenter", "dockerd"]
        .into_iter()
        .filter(|program| !on_path(program))
        .collect();
    if !missing.is_empty() {
        return Some(format!(
            "{} (packages iproute2, util-linux, docker.io; .ci/run installs them)",
            missing.join(", ")
        ));
    }
    None
}

/// Whether `program` is an executable file in a `PATH` directory.
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

/// One node: its Docker engine, its Flocker identity and its dataset agent's mount root.
pub struct Engine {
    /// "A" or "B", for messages.
    pub name: &'static str,
    /// The node's Flocker UUID.
    pub uuid: Uuid,
    /// The dataset agent's mount root on the host (a shared mount), `flocker.source` of its plugin.
    pub root: PathBuf,
    /// `-H` for the docker CLI; `None` for the machine's engine.
    pub host: Option<&'static str>,
    /// The engine's Swarm node ID (set once the Swarm is formed).
    pub swarm_id: String,
    alive: AtomicBool,
}

impl Engine {
    fn new(name: &'static str, host: Option<&'static str>, root: PathBuf) -> Engine {
        Engine {
            name,
            uuid: Uuid::new_v4(),
            root,
            host,
            swarm_id: String::new(),
            alive: AtomicBool::new(false),
        }
    }

    /// Runs the docker CLI against this engine; Ok(stdout) or Err(stderr).
    pub fn docker(&self, args: &[&str]) -> Result<String, String> {
        docker_at(self.host, args)
    }

    /// Runs the docker CLI against this engine and panics with its error output on failure.
    pub fn must(&self, args: &[&str]) -> String {
        self.docker(args)
            .unwrap_or_else(|e| panic!("node {}: docker {}: {e}", self.name, args.join(" ")))
    }

    /// `docker run` with the test label; containers on node B get `--network none` (no bridge there).
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        self.docker(&self.run_args(args))
    }

    /// [`Engine::run`], panicking on failure.
    pub fn must_run(&self, args: &[&str]) -> String {
        self.run(args)
            .unwrap_or_else(|e| panic!("node {}: docker run {}: {e}", self.name, args.join(" ")))
    }

    /// The docker CLI arguments of [`Engine::run`].
    pub fn run_args<'a>(&self, args: &[&'a str]) -> Vec<&'a str> {
        let mut all = vec!["run", "--label=fdp-e2e"];
        if self.host.is_some() {
            all.extend(["--network", "none"]);
        }
        all.extend_from_slice(args);
        all
    }

    /// A `docker` command for this engine (bounded by `timeout`, like [`docker_at`]), for callers
    /// that read its output as it comes.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new("timeout");
        command.args(["180", "docker"]);
        if let Some(host) = self.host {
            command.args(["-H", host]);
        }
        command.args(args);
        command
    }

    /// Whether the engine runs (false once node B was killed).
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Running containers of Swarm service `service` on this engine.
    pub fn service_containers(&self, service: &str) -> Vec<String> {
        if !self.is_alive() {
            return Vec::new();
        }
        let filter = format!("label=com.docker.swarm.service.name={service}");
        self.docker(&["ps", "-q", "--filter", &filter])
            .map(|out| out.lines().map(str::to_string).collect())
            .unwrap_or_default()
    }
}

/// Engine B's daemon process and what it made, for teardown.
#[derive(Default)]
struct EngineB {
    /// The dockerd child (`nsenter` execs dockerd, so this is dockerd itself).
    dockerd: Option<Child>,
    /// The managed plugin's ID on engine B: its socket directory under /run/docker/plugins.
    plugin_id: Option<String>,
}

/// Everything the two-node scenarios share.
pub struct TwoNodes {
    /// Tokio runtime owning the emulator.
    pub rt: Runtime,
    emulator: Option<Emulator>,
    /// Temporary directory of the run (certificates, agent roots, the emulator's backing store).
    pub dir: PathBuf,
    /// Certificates directory mounted into both plugins.
    pub certs: PathBuf,
    /// The machine's engine: Swarm manager.
    pub a: Engine,
    /// The second engine, in netns `nodeb`: Swarm worker.
    pub b: Engine,
    /// Seconds `docker plugin enable` took on A and on B.
    pub enable_seconds: (f64, f64),
    engine_b: Mutex<EngineB>,
    networks_before: Vec<String>,
    network_made: bool,
    torn_down: bool,
}

impl TwoNodes {
    /// Builds the two nodes: veth pair and netns, emulator, engine B, plugins, image, Swarm.
    ///
    /// Panics on any failure, after undoing what it made (the fixture is dropped on unwind).
    pub fn start() -> TwoNodes {
        clean_leftovers();
        let dir = std::env::temp_dir().join(format!("fdp-e2e-2n-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let certs_dir = dir.join("certs");
        certs::generate(&certs_dir, &certs::CertOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut fx = TwoNodes {
            rt,
            emulator: None,
            certs: certs_dir,
            a: Engine::new("A", None, dir.join("flocker-a")),
            b: Engine::new("B", Some(SOCKET_B), dir.join("flocker-b")),
            dir,
            enable_seconds: (0.0, 0.0),
            engine_b: Mutex::new(EngineB::default()),
            networks_before: network_names(),
            network_made: false,
            torn_down: false,
        };
        fx.a.alive.store(true, Ordering::SeqCst);
        // From here on a panic drops `fx`, whose teardown undoes whatever was made.
        fx.make_network();
        fx.start_emulator();
        fx.start_engine_b();
        import_image();
        run(
            "sh",
            &[
                "-c",
                &format!("docker save {IMAGE} | docker -H {SOCKET_B} load"),
            ],
        )
        .expect("copy the test image to engine B");
        fx.enable_plugins();
        fx.form_swarm();
        fx
    }

    fn make_network(&mut self) {
        let ip = |args: &[&str]| {
            run("ip", args).unwrap_or_else(|e| panic!("ip {}: {e}", args.join(" ")));
        };
        ip(&["netns", "add", NETNS]);
        self.network_made = true;
        ip(&[
            "link", "add", VETH_A, "type", "veth", "peer", "name", VETH_B,
        ]);
        ip(&["link", "set", VETH_B, "netns", NETNS]);
        ip(&["addr", "add", &format!("{ADDR_A}/24"), "dev", VETH_A]);
        ip(&["link", "set", VETH_A, "up"]);
        let b_addr = format!("{ADDR_B}/24");
        for args in [
            vec!["addr", "add", b_addr.as_str(), "dev", VETH_B],
            vec!["link", "set", VETH_B, "up"],
            vec!["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["netns", "exec", NETNS, "ip"];
            all.extend(args);
            ip(&all);
        }
    }

    fn start_emulator(&mut self) {
        let era_a = flocker_docker_plugin::identity::this_boot_era().expect("this boot's era");
        let config = emulator::Config {
            // On the veth address: node B's plugin (network: host = netns nodeb) reaches it there.
            listen: SocketAddr::new(IpAddr::V4(ADDR_A), 0),
            certs_dir: self.certs.clone(),
            data_dir: self.dir.join("emulator"),
            nodes: vec![
                emulator::Node {
                    uuid: self.a.uuid,
                    // Node A's plugin finds its node by this machine's era, as on a real cluster.
                    era: era_a,
                    host: IpAddr::V4(ADDR_A),
                    mount_root: self.a.root.clone(),
                },
                emulator::Node {
                    uuid: self.b.uuid,
                    // Both engines read the same boot_id, so B gets another era and its plugin
                    // NODE_UUID (two-engines.md §1).
                    era: Uuid::new_v4(),
                    host: IpAddr::V4(ADDR_B),
                    mount_root: self.b.root.clone(),
                },
            ],
            convergence: Convergence::After(Duration::from_millis(500)),
            share_mount_roots: true,
        };
        let emulator = self
            .rt
            .block_on(async { Emulator::start(config) })
            .expect("start the emulator");
        self.emulator = Some(emulator);
    }

    fn start_engine_b(&mut self) {
        for dir in [DATA_ROOT_B, EXEC_ROOT_B] {
            std::fs::create_dir_all(dir).unwrap();
        }
        // A shared data root, else enabling a managed plugin fails with runc's "pivot_root .:
        // invalid argument" (two-engines.md §1).
        run("mount", &["--bind", DATA_ROOT_B, DATA_ROOT_B]).expect("bind the data root of B");
        run("mount", &["--make-shared", DATA_ROOT_B]).expect("share the data root of B");
        // Else the host's /etc/docker/daemon.json clashes with the flags below.
        let config = self.dir.join("daemon-b.json");
        std::fs::write(&config, "{}").unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOG_B)
            .unwrap();
        // `nsenter --net`, not `ip netns exec`: the latter also makes a mount namespace and
        // remounts /sys, and dockerd fails with "Devices cgroup isn't mounted".
        let child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{NETNS}"))
            .arg("dockerd")
            .arg("--config-file")
            .arg(&config)
            .args(["--data-root", DATA_ROOT_B, "--exec-root", EXEC_ROOT_B])
            .args(["-H", SOCKET_B, "--pidfile", PIDFILE_B])
            .args(["--storage-driver", "vfs", "--bridge", "none"])
            .args(["--iptables=false", "--ip-masq=false"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            // Its own process group: a Ctrl-C of the test does not reach it half-way.
            .process_group(0)
            .spawn()
            .expect("start dockerd for node B");
        self.engine_b().dockerd = Some(child);
        self.b.alive.store(true, Ordering::SeqCst);
        wait_until(
            &format!("engine B answers (log: {LOG_B})"),
            Duration::from_secs(60),
            || self.b.docker(&["info"]).is_ok(),
        );
    }

    fn enable_plugins(&mut self) {
        let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("plugin");
        assert!(
            bundle.join("rootfs/flocker-docker-plugin").exists(),
            "{} has no plugin bundle: run `make plugin` first (`make e2e` does)",
            bundle.display()
        );
        self.b
            .must(&["plugin", "create", PLUGIN, bundle.to_str().unwrap()]);
        self.engine_b().plugin_id =
            Some(self.b.must(&["plugin", "inspect", "-f", "{{.Id}}", PLUGIN]));
        let a = self.enable_plugin(&self.a, None);
        let b = self.enable_plugin(&self.b, Some(self.b.uuid));
        self.enable_seconds = (a, b);
    }

    /// Disables the node's plugin, points it at the emulator and the node's agent root, enables it.
    fn enable_plugin(&self, node: &Engine, node_uuid: Option<Uuid>) -> f64 {
        let _ = node.docker(&["plugin", "disable", "-f", PLUGIN]);
        let url = self.emulator().url();
        let root = node.root.canonicalize().unwrap();
        let node_setting = format!(
            "NODE_UUID={}",
            node_uuid.map(|u| u.to_string()).unwrap_or_default()
        );
        node.must(&[
            "plugin",
            "set",
            PLUGIN,
            &format!("CONTROL_URL={url}"),
            &format!("certs.source={}", self.certs.display()),
            &format!("flocker.source={}", root.display()),
            &format!("AGENT_MOUNT_ROOT={}", root.display()),
            &node_setting,
            "DEFAULT_SIZE=1G",
            "MOUNT_TIMEOUT=60s",
            "LOG_LEVEL=debug",
        ]);
        let started = Instant::now();
        node.must(&["plugin", "enable", "--timeout", "120", PLUGIN]);
        started.elapsed().as_secs_f64()
    }

    fn form_swarm(&mut self) {
        if self
            .a
            .docker(&["info", "-f", "{{.Swarm.LocalNodeState}}"])
            .as_deref()
            == Ok("active")
        {
            let _ = self.a.docker(&["swarm", "leave", "--force"]);
        }
        // A 2 s heartbeat: a dead worker is noticed after about 6 s instead of 15 s.
        self.a.must(&[
            "swarm",
            "init",
            "--advertise-addr",
            &ADDR_A.to_string(),
            "--dispatcher-heartbeat",
            "2s",
        ]);
        let token = self.a.must(&["swarm", "join-token", "-q", "worker"]);
        self.b.must(&[
            "swarm",
            "join",
            "--token",
            &token,
            &format!("{ADDR_A}:2377"),
        ]);
        wait_until(
            "both Swarm nodes are Ready",
            Duration::from_secs(60),
            || {
                self.a
                    .docker(&["node", "ls", "--format", "{{.Status}}"])
                    .is_ok_and(|s| s.lines().filter(|l| *l == "Ready").count() == 2)
            },
        );
        self.a.swarm_id = self.a.must(&["info", "-f", "{{.Swarm.NodeID}}"]);
        self.b.swarm_id = self.b.must(&["info", "-f", "{{.Swarm.NodeID}}"]);
    }

    fn engine_b(&self) -> std::sync::MutexGuard<'_, EngineB> {
        self.engine_b.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The emulated control service and both nodes' agents.
    pub fn emulator(&self) -> &Emulator {
        self.emulator.as_ref().expect("the emulator runs")
    }

    /// Live (not deleted) datasets named `name`.
    pub fn live(&self, name: &str) -> Vec<Value> {
        self.emulator()
            .configured_datasets()
            .into_iter()
            .filter(|d| d["deleted"] != Value::Bool(true) && d["metadata"]["name"] == name)
            .collect()
    }

    /// The single live dataset for `name`.
    fn the_dataset(&self, name: &str) -> Value {
        let live = self.live(name);
        assert_eq!(live.len(), 1, "one live dataset named {name}: {live:?}");
        live.into_iter().next().unwrap()
    }

    /// The single live dataset ID for `name`.
    pub fn dataset(&self, name: &str) -> String {
        self.the_dataset(name)["dataset_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The node the configuration puts `name` on.
    pub fn primary(&self, name: &str) -> String {
        self.the_dataset(name)["primary"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The node holding the lease on `name`'s dataset, if any.
    pub fn lease_holder(&self, name: &str) -> Option<String> {
        let id = self.dataset(name);
        self.emulator()
            .leases()
            .iter()
            .find(|l| l["dataset_id"] == id.as_str())
            .map(|l| l["node_uuid"].as_str().unwrap().to_string())
    }

    /// A file of `name`'s dataset read from the emulator's backing store (the storage itself,
    /// whichever node it is attached to); `None` if it does not exist.
    pub fn stored_file(&self, name: &str, file: &str) -> Option<String> {
        let path = self
            .dir
            .join("emulator/backing")
            .join(self.dataset(name))
            .join(file);
        std::fs::read_to_string(path).ok()
    }

    /// `flocker-docker-plugin release-leases ARGS` as README "A node that is gone for good" shows it,
    /// with the cluster's certificates and this run's control service.
    pub fn release_leases(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flocker-docker-plugin"))
            .arg("release-leases")
            .args(args)
            .env("CONTROL_URL", self.emulator().url())
            .env("CERTS_DIR", &self.certs)
            .output()
            .expect("run flocker-docker-plugin release-leases")
    }

    /// Node B dies: `kill -9` of every process in its network namespace (dockerd, containerd, shims,
    /// the plugin) and of `extra` (its containers, which have their own network namespaces).
    /// Returns once they are all gone. Its dataset agent is the test's to kill (in the emulator).
    pub fn kill_node_b(&self, extra: &[i32]) {
        let mut pids = netns_pids();
        pids.extend_from_slice(extra);
        for &pid in &pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        self.b.alive.store(false, Ordering::SeqCst);
        if let Some(mut dockerd) = self.engine_b().dockerd.take() {
            let _ = dockerd.kill();
            let _ = dockerd.wait();
        }
        wait_until(
            "every process of node B is gone",
            Duration::from_secs(30),
            || pids.iter().all(|&pid| !process_lives(pid)),
        );
    }

    /// Between scenarios: services, test containers and drained nodes back to normal.
    pub fn after_scenario(&self) {
        self.remove_services();
        for node in [&self.a, &self.b] {
            if node.is_alive() {
                remove_test_containers_at(node.host);
            }
        }
        for node in [&self.a, &self.b] {
            if !node.swarm_id.is_empty() {
                let _ =
                    self.a
                        .docker(&["node", "update", "--availability", "active", &node.swarm_id]);
            }
        }
    }

    /// Removes the test services.
    fn remove_services(&self) {
        let Ok(services) = self.a.docker(&["service", "ls", "--format", "{{.Name}}"]) else {
            return;
        };
        for service in services.lines().filter(|s| s.starts_with(SERVICE_PREFIX)) {
            let _ = self.a.docker(&["service", "rm", service]);
            self.wait_service_gone(service);
        }
    }

    /// `docker service rm`, then waits until no container of it is left on a live engine (failed
    /// tasks' containers too: they still reference the volume).
    pub fn remove_service(&self, service: &str) {
        self.a.must(&["service", "rm", service]);
        self.wait_service_gone(service);
        assert!(
            self.service_gone(service),
            "the containers of {service} are gone"
        );
    }

    fn wait_service_gone(&self, service: &str) {
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) && !self.service_gone(service) {
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn service_gone(&self, service: &str) -> bool {
        let filter = format!("label=com.docker.swarm.service.name={service}");
        [&self.a, &self.b].into_iter().all(|node| {
            !node.is_alive()
                || node
                    .docker(&["ps", "-aq", "--filter", &filter])
                    .is_ok_and(|s| s.is_empty())
        })
    }

    /// Removes everything the fixture made; safe to call twice and after partial starts.
    pub fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        self.after_scenario();
        // Swarm: the worker first, so the manager does not wait for it.
        for node in [&self.b, &self.a] {
            if node.is_alive() {
                let _ = node.docker(&["swarm", "leave", "--force"]);
            }
        }
        // Plugins and their volumes before anything they mount disappears (two-engines.md §4).
        for node in [&self.a, &self.b] {
            if !node.is_alive() {
                continue;
            }
            if let Ok(volumes) = node.docker(&["volume", "ls", "--format", "{{.Driver}} {{.Name}}"])
            {
                for (driver, name) in volumes.lines().filter_map(|l| l.split_once(' ')) {
                    if crate::fixture::is_plugin_driver(driver) {
                        let _ = node.docker(&["volume", "rm", "-f", name]);
                    }
                }
            }
            let _ = node.docker(&["plugin", "disable", "-f", PLUGIN]);
        }
        if self.b.is_alive() {
            let _ = self.b.docker(&["plugin", "rm", "-f", PLUGIN]);
        }
        self.stop_engine_b();
        for network in network_names() {
            if !self.networks_before.contains(&network) {
                let _ = self.a.docker(&["network", "rm", &network]);
            }
        }
        if self.network_made {
            remove_network();
        }
        if let Some(emulator) = self.emulator.take() {
            if let Err(e) = self.rt.block_on(emulator.shutdown()) {
                eprintln!("two nodes: emulator shutdown: {e}");
            }
            drop(emulator);
        }
        // The shared binds the emulator made of the agent roots.
        let roots = [self.a.root.clone(), self.b.root.clone()];
        let left = unmount_below(&roots.iter().map(PathBuf::as_path).collect::<Vec<_>>());
        if left.is_empty() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!(
                "two nodes: still mounted, {} kept: {left:?}",
                self.dir.display()
            );
        }
    }

    /// Stops engine B (gracefully if it runs), kills what is left of node B, removes its mounts,
    /// directories and sockets.
    fn stop_engine_b(&self) {
        let mut containers = Vec::new();
        if self.b.is_alive() {
            // Its containers have their own network namespaces: find them while B can say.
            if let Ok(ids) = self.b.docker(&["ps", "-q"]) {
                for id in ids.lines() {
                    if let Ok(pid) = self.b.docker(&["inspect", "-f", "{{.State.Pid}}", id]) {
                        containers.extend(pid.parse::<i32>().ok().filter(|p| *p > 0));
                    }
                }
            }
        }
        self.b.alive.store(false, Ordering::SeqCst);
        let (dockerd, plugin_id) = {
            let mut engine = self.engine_b();
            (engine.dockerd.take(), engine.plugin_id.take())
        };
        if let Some(mut dockerd) = dockerd {
            let _ = kill(Pid::from_raw(dockerd.id() as i32), Signal::SIGTERM);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(40) {
                if dockerd.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = dockerd.kill();
            let _ = dockerd.wait();
        }
        let mut left = netns_pids();
        left.extend(containers.into_iter().filter(|p| process_lives(*p)));
        for &pid in &left {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) && left.iter().any(|p| process_lives(*p))
        {
            std::thread::sleep(Duration::from_millis(100));
        }
        remove_engine_b_files(plugin_id.as_deref());
    }
}

impl Drop for TwoNodes {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Undoes what an interrupted earlier run left of node B (dockerd, mounts, netns, veth).
fn clean_leftovers() {
    let stale_netns = run("ip", &["netns", "list"]).is_ok_and(|l| {
        l.lines()
            .any(|n| n.split_whitespace().next() == Some(NETNS))
    });
    let stale_root = Path::new(DATA_ROOT_B).exists() || Path::new(EXEC_ROOT_B).exists();
    let stale_link = Path::new("/sys/class/net").join(VETH_A).exists();
    if !(stale_netns || stale_root || stale_link || Path::new(PIDFILE_B).exists()) {
        return;
    }
    eprintln!("two nodes: removing what an earlier run left of node B");
    if let Some(pid) = std::fs::read_to_string(PIDFILE_B)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let is_dockerd = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim() == "dockerd");
        if is_dockerd {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            let started = Instant::now();
            while started.elapsed() < Duration::from_secs(40) && process_lives(pid) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    if stale_netns {
        for pid in netns_pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    remove_engine_b_files(None);
    remove_network();
}

fn remove_engine_b_files(plugin_id: Option<&str>) {
    let left = unmount_below(&[Path::new(DATA_ROOT_B), Path::new(EXEC_ROOT_B)]);
    if left.is_empty() {
        // --one-file-system: never follows a mount that survived into another file system.
        let _ = run(
            "rm",
            &["-rf", "--one-file-system", DATA_ROOT_B, EXEC_ROOT_B],
        );
    } else {
        eprintln!("two nodes: still mounted, not removed: {left:?}");
    }
    let _ = std::fs::remove_file(SOCKET_B_PATH);
    let _ = std::fs::remove_file(PIDFILE_B);
    if let Some(id) = plugin_id {
        // Engines remove a plugin's socket directory when it exits, but not after a kill -9.
        let _ = std::fs::remove_dir_all(Path::new("/run/docker/plugins").join(id));
    }
}

fn remove_network() {
    let _ = run("ip", &["netns", "del", NETNS]);
    // Deleting the namespace deletes the pair; this is for a pair whose other end never moved.
    if Path::new("/sys/class/net").join(VETH_A).exists() {
        let _ = run("ip", &["link", "del", VETH_A]);
    }
}

/// Processes in network namespace `nodeb`.
fn netns_pids() -> Vec<i32> {
    run("ip", &["netns", "pids", NETNS])
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// Whether `pid` runs (a zombie counts as gone: its parent may never reap it).
fn process_lives(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // Field 3, after the parenthesised command name.
        stat.rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

/// Mount points at or below any of `dirs`, deepest first.
fn mounts_below_any(dirs: &[&Path]) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = flocker_docker_plugin::mount::mount_points()
        .unwrap_or_default()
        .into_iter()
        .filter(|p| dirs.iter().any(|d| p.starts_with(d)))
        .collect();
    points.sort_by_key(|p| Reverse(p.components().count()));
    points.dedup();
    points
}

/// Lazily unmounts everything at or below `dirs`, deepest first; returns what is still mounted.
fn unmount_below(dirs: &[&Path]) -> Vec<PathBuf> {
    for _ in 0..10 {
        let points = mounts_below_any(dirs);
        if points.is_empty() {
            return points;
        }
        for point in &points {
            let _ = nix::mount::umount2(point, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    mounts_below_any(dirs)
}

/// Network names on engine A.
fn network_names() -> Vec<String> {
    docker_at(None, &["network", "ls", "--format", "{{.Name}}"])
        .map(|out| out.lines().map(str::to_string).collect())
        .unwrap_or_default()
}
