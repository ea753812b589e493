//! The switches under test, attached to a topology's ports and detached again (on drop, so
//! also on failure or Ctrl-C): vswitch as a real daemon process, the Linux bridge, and Open
//! vSwitch's userspace datapath from a private ovsdb-server/ovs-vswitchd this run starts.

use crate::sys::{run, ChildGuard, Res};
use crate::topo::{Host, Topology};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Switch {
    /// The baseline every ratio is against.
    Bridge,
    /// `workers` 0: the daemon's default. `traced`: with `vswitch trace` of every frame running.
    Vswitch {
        workers: usize,
        traced: bool,
    },
    /// Another vswitch build (`--baseline`), to compare two builds side by side.
    Baseline,
    Ovs,
}

impl Switch {
    pub fn name(self) -> String {
        match self {
            Switch::Bridge => "bridge".into(),
            Switch::Vswitch { workers: 0, traced: false } => "vswitch".into(),
            Switch::Vswitch { workers: 0, traced: true } => "vswitch+trace".into(),
            Switch::Vswitch { workers, .. } => format!("vswitch/{workers}w"),
            Switch::Baseline => "baseline".into(),
            Switch::Ovs => "ovs".into(),
        }
    }
}

/// What the switches need for a whole run: vswitch's binary, a scratch directory, OVS.
pub struct Lab {
    pub vswitch: PathBuf,
    pub baseline: Option<PathBuf>,
    pub dir: PathBuf,
    pub ovs: Option<Ovs>,
    tag: String,
}

impl Lab {
    pub fn new(vswitch: PathBuf, baseline: Option<PathBuf>, with_ovs: bool) -> Res<Lab> {
        let tag = format!("{}", std::process::id() % 100_000);
        let dir = std::env::temp_dir().join(format!("vswitch-bench-{tag}"));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let ovs = if with_ovs { Some(Ovs::start(&dir.join("ovs"))?) } else { None };
        Ok(Lab { vswitch, baseline, dir, ovs, tag })
    }

    /// Attach `sw` to the ports of `hosts`; with `gateway`, the switch holds the network's
    /// gateway address (the Linux bridge on its own interface, as docker0 does; vswitch's
    /// network always has it).
    pub fn attach(&self, sw: Switch, hosts: &[Host], gateway: bool) -> Res<Attached<'_>> {
        let ports: Vec<&str> = hosts.iter().map(|h| h.port.as_str()).collect();
        let mut a = Attached { lab: self, sw, daemon: None, tracer: None, relays: Vec::new() };
        match sw {
            Switch::Bridge => {
                let br = self.bridge_name();
                run(&["ip", "link", "add", &br, "type", "bridge"])?;
                run(&["ip", "link", "set", &br, "up"])?;
                for p in &ports {
                    run(&["ip", "link", "set", p, "master", &br])?;
                }
                if gateway {
                    // The benchmark's own subnet only: the route it adds goes with the bridge.
                    run(&["ip", "addr", "add", &format!("{}/16", crate::scenario::GATEWAY_IP), "dev", &br])?;
                }
            }
            Switch::Vswitch { workers, traced } => {
                a.daemon = Some(self.start_vswitch(&self.vswitch, workers, &ports)?);
                if traced {
                    a.tracer = Some(self.start_trace()?);
                }
            }
            Switch::Baseline => {
                let bin = self.baseline.as_ref().ok_or("no --baseline build given")?;
                a.daemon = Some(self.start_vswitch(bin, 0, &ports)?);
            }
            Switch::Ovs => {
                let ovs = self.ovs.as_ref().ok_or("Open vSwitch is not running")?;
                let br = self.ovs_bridge_name();
                ovs.vsctl(&["add-br", &br, "--", "set", "bridge", &br, "datapath_type=netdev"])?;
                for p in &ports {
                    ovs.vsctl(&["add-port", &br, p])?;
                }
            }
        }
        Ok(a)
    }

    /// Attach `sw` to bare hosts through TAP devices that end up inside them: vswitch opens
    /// them as TAP ports; the bridge gets each through a relay (see relay.rs).
    pub fn attach_taps(&self, sw: Switch, hosts: &[Host]) -> Res<Attached<'_>> {
        let mut a = Attached { lab: self, sw, daemon: None, tracer: None, relays: Vec::new() };
        match sw {
            Switch::Vswitch { workers, .. } => {
                a.daemon = Some(self.start_vswitch(&self.vswitch, workers, &[])?);
                for h in hosts {
                    self.vs(&self.vswitch, &["network", "connect", "bench", "--tap", &h.iface])?;
                    Topology::place(h)?;
                }
            }
            Switch::Bridge => {
                let br = self.bridge_name();
                run(&["ip", "link", "add", &br, "type", "bridge"])?;
                run(&["ip", "link", "set", &br, "up"])?;
                let me = std::env::current_exe().map_err(|e| e.to_string())?;
                for h in hosts {
                    let mut c = Command::new(&me)
                        .args(["tap-relay", &h.port, &h.iface])
                        .stdin(Stdio::null())
                        .stdout(Stdio::piped())
                        .spawn()
                        .map_err(|e| format!("cannot start the TAP relay: {e}"))?;
                    let mut ready = String::new();
                    let out = c.stdout.take().expect("piped");
                    a.relays.push(ChildGuard(c));
                    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut ready)
                        .map_err(|e| e.to_string())?;
                    if ready.trim() != "ready" {
                        return Err(format!("the TAP relay for {} did not start", h.iface));
                    }
                    run(&["ip", "link", "set", &h.port, "master", &br])?;
                    run(&["ip", "link", "set", &h.port, "up"])?;
                    Topology::place(h)?;
                }
            }
            _ => return Err(format!("{} has no TAP setup in this benchmark", sw.name())),
        }
        Ok(a)
    }

    fn bridge_name(&self) -> String {
        format!("vbn{}br", self.tag)
    }

    fn ovs_bridge_name(&self) -> String {
        format!("vbn{}ov", self.tag)
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("vswitch.sock")
    }

    /// Start the daemon `bin` and put `ports` on one network.
    fn start_vswitch(&self, bin: &Path, workers: usize, ports: &[&str]) -> Res<Child> {
        let mut child = self.spawn_daemon(bin, workers)?;
        let setup = (|| {
            let gw = crate::scenario::GATEWAY_IP;
            let net = [
                "network",
                "create",
                "bench",
                "--max-learned",
                "4000000",
                "--subnet",
                "10.203.0.0/16",
                "--gateway",
                gw,
            ];
            self.vs(bin, &net)?;
            for p in ports {
                self.vs(bin, &["network", "connect", "bench", p])?;
            }
            Ok(())
        })();
        if let Err(e) = setup {
            stop_child(&mut child, libc::SIGTERM);
            return Err(e);
        }
        Ok(child)
    }

    fn spawn_daemon(&self, bin: &Path, workers: usize) -> Res<Child> {
        self.spawn_daemon_with(bin, workers, &[])
    }

    fn spawn_daemon_with(&self, bin: &Path, workers: usize, extra: &[&str]) -> Res<Child> {
        let log = std::fs::File::create(self.dir.join("vswitch.log")).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(bin);
        cmd.arg("--socket").arg(self.socket()).arg("daemon").arg("--state-dir").arg(self.dir.join("state"));
        if workers > 0 {
            cmd.args(["--workers", &workers.to_string()]);
        }
        cmd.args(extra);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return Ok(child);
            }
            if let Ok(Some(st)) = child.try_wait() {
                let log = std::fs::read_to_string(self.dir.join("vswitch.log")).unwrap_or_default();
                return Err(format!("vswitch daemon exited with {st}: {log}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_child(&mut child, libc::SIGKILL);
        Err("vswitch daemon did not answer within 10 s".into())
    }

    /// `vswitch trace` of the whole network into a file, as a user debugging it would run.
    fn start_trace(&self) -> Res<Child> {
        let log_path = self.dir.join("trace.log");
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.vswitch)
            .arg("--socket")
            .arg(self.socket())
            .args(["trace", "bench", "-w"])
            .arg(self.dir.join("trace.pcapng"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start vswitch trace: {e}"))?;
        // It says "tracing ..." once the daemon has the trace running.
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let said = std::fs::read_to_string(&log_path).unwrap_or_default();
            if said.starts_with("tracing") {
                return Ok(child);
            }
            if let Ok(Some(_)) = child.try_wait() {
                return Err(format!("vswitch trace did not start: {}", said.trim()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop_child(&mut child, libc::SIGKILL);
        Err("vswitch trace did not start within 5 s".into())
    }

    /// The vswitch under test with no network yet (a scenario sets up its own); stopped
    /// when the guard goes.
    pub fn start_daemon(&self) -> Res<DaemonGuard> {
        Ok(DaemonGuard(self.spawn_daemon(&self.vswitch, 0)?))
    }

    /// The same with `workers` workers and more daemon arguments (`--cpus 0`).
    pub fn start_daemon_with(&self, workers: usize, extra: &[&str]) -> Res<DaemonGuard> {
        Ok(DaemonGuard(self.spawn_daemon_with(&self.vswitch, workers, extra)?))
    }

    /// A CLI call to the vswitch under test.
    pub fn vs_current(&self, args: &[&str]) -> Res<String> {
        self.vs(&self.vswitch, args)
    }

    fn vs(&self, bin: &Path, args: &[&str]) -> Res<String> {
        let mut full = vec![bin.to_str().expect("utf-8 path"), "--socket"];
        let sock = self.socket();
        full.push(sock.to_str().expect("utf-8 path"));
        full.extend_from_slice(args);
        run(&full)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.ovs = None; // stops OVS before its directory goes
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A switch attached to a topology; detached on drop.
pub struct Attached<'a> {
    lab: &'a Lab,
    sw: Switch,
    daemon: Option<Child>,
    tracer: Option<Child>,
    /// The bridge's TAP relays (tcp-tap); their TAP devices go with them.
    relays: Vec<ChildGuard>,
}

impl Attached<'_> {
    /// Every thread of the vswitch daemon on CPU `cpu` (the dns scenario's placement).
    pub fn pin_daemon(&self, cpu: usize) -> Res<()> {
        match &self.daemon {
            Some(d) => crate::dns::pin(d.id(), cpu),
            None => Ok(()),
        }
    }
}

impl Attached<'_> {
    /// The vswitch daemon's process id, for a vswitch attachment.
    pub fn daemon_pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(|c| c.id())
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        match self.sw {
            Switch::Bridge => {
                let _ = run(&["ip", "link", "del", &self.lab.bridge_name()]);
                self.relays.clear();
            }
            Switch::Vswitch { .. } | Switch::Baseline => {
                if let Some(mut t) = self.tracer.take() {
                    stop_child(&mut t, libc::SIGINT);
                    let _ = std::fs::remove_file(self.lab.dir.join("trace.pcapng"));
                }
                if let Some(mut c) = self.daemon.take() {
                    stop_child(&mut c, libc::SIGTERM);
                }
                let _ = std::fs::remove_dir_all(self.lab.dir.join("state"));
            }
            Switch::Ovs => {
                if let Some(o) = &self.lab.ovs {
                    let _ = o.vsctl(&["--if-exists", "del-br", &self.lab.ovs_bridge_name()]);
                }
            }
        }
    }
}

/// Signal a child and reap it; SIGKILL if it has not gone within 5 s (cleanup must end).
pub struct DaemonGuard(Child);

impl Drop for DaemonGuard {
    fn drop(&mut self) {
        stop_child(&mut self.0, libc::SIGTERM);
    }
}

fn stop_child(c: &mut Child, sig: i32) {
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(c.id() as i32, sig) };
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if let Ok(Some(_)) = c.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
}

/// A private Open vSwitch: its own database, run and log directories, never the system's.
pub struct Ovs {
    dir: PathBuf,
}

impl Ovs {
    fn start(dir: &Path) -> Res<Ovs> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let o = Ovs { dir: dir.to_path_buf() };
        let d = |f: &str| dir.join(f).to_string_lossy().into_owned();
        let schema = "/usr/share/openvswitch/vswitch.ovsschema";
        o.cmd("ovsdb-tool", &["create", &d("conf.db"), schema])?;
        o.cmd(
            "ovsdb-server",
            &[
                &d("conf.db"),
                &format!("--remote=punix:{}", d("db.sock")),
                &format!("--pidfile={}", d("ovsdb.pid")),
                &format!("--log-file={}", d("ovsdb.log")),
                "--detach",
            ],
        )?;
        o.vsctl(&["--no-wait", "init"])?;
        o.cmd(
            "ovs-vswitchd",
            &[
                &format!("unix:{}", d("db.sock")),
                &format!("--pidfile={}", d("vswitchd.pid")),
                &format!("--log-file={}", d("vswitchd.log")),
                "--detach",
            ],
        )?;
        Ok(o)
    }

    /// An OVS tool with this instance's directories in its environment.
    fn cmd(&self, tool: &str, args: &[&str]) -> Res<String> {
        let out = Command::new(tool)
            .args(args)
            .envs(["OVS_RUNDIR", "OVS_LOGDIR", "OVS_DBDIR", "OVS_SYSCONFDIR"].map(|k| (k, &self.dir)))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {tool}: {e}"))?;
        if !out.status.success() {
            return Err(format!("`{tool} {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn vsctl(&self, args: &[&str]) -> Res<String> {
        let db = format!("--db=unix:{}", self.dir.join("db.sock").display());
        let mut full = vec![db.as_str(), "--timeout=10"];
        full.extend_from_slice(args);
        self.cmd("ovs-vsctl", &full)
    }
}

impl Drop for Ovs {
    fn drop(&mut self) {
        for pid in ["vswitchd.pid", "ovsdb.pid"] {
            if let Ok(p) = std::fs::read_to_string(self.dir.join(pid)) {
                if let Ok(p) = p.trim().parse::<i32>() {
                    // SAFETY: a signal to the OVS daemon this run started (its pid file).
                    unsafe { libc::kill(p, libc::SIGTERM) };
                }
            }
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}
