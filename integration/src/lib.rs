//! Test hosts for end-to-end tests: network namespaces, veth pairs and a vswitch daemon,
//! each removed by its guard's `Drop` even when the test fails. Needs root.
//!
//! Rules (see DESIGN.md): only namespaces and interfaces made here, names unique per test,
//! traffic only between the test's own namespaces.

pub mod engines;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Fail clearly (never skip) when not root.
pub fn require_root() {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "these tests create network namespaces, veth pairs and TAP devices: run them as root (sudo scripts/test)"
        );
    }
}

/// A binary built beside this test, in target/<profile>/.
fn sibling_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/..");
    let bin = dir.join(name);
    assert!(bin.exists(), "{} is missing: build it first (cargo build --release --workspace)", bin.display());
    bin
}

/// The vswitch binary under test: $VSWITCH_BIN, or the one built beside this test.
pub fn vswitch_bin() -> PathBuf {
    std::env::var("VSWITCH_BIN").map(PathBuf::from).unwrap_or_else(|_| sibling_bin("vswitch"))
}

/// The raw frame sender that comes with these tests (src/bin/sendraw.rs).
/// The CNI plugin built beside this test.
pub fn cni_bin() -> PathBuf {
    sibling_bin("vswitch-cni")
}

pub fn sendraw_bin() -> PathBuf {
    sibling_bin("sendraw")
}

/// The TCP integrity checker that comes with these tests (src/bin/tcpcheck.rs).
pub fn tcpcheck_bin() -> PathBuf {
    sibling_bin("tcpcheck")
}

/// A name unique to this process and call, at most 15 bytes with `prefix` of up to 5.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:05x}{n:03x}", std::process::id() & 0xfffff)
}

/// Run a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap_or_else(|e| panic!("{args:?}: {e}"));
    if !out.status.success() {
        panic!("{args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn quiet(args: &[&str]) {
    let _ = Command::new(args[0]).args(&args[1..]).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// A network namespace with loopback up and IPv6 off (no stray multicast in the counters).
pub struct Netns {
    pub name: String,
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Netns {
    pub fn new() -> Netns {
        let ns = Netns::with_ipv6();
        ns.run(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
        ns.run(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
        ns
    }

    /// A namespace with loopback up and IPv6 as the kernel has it.
    pub fn with_ipv6() -> Netns {
        let name = unique("vst");
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.run(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// A namespace the switch made (`vswitch run`), removed by this guard too.
    pub fn adopt(name: &str) -> Netns {
        Netns { name: name.to_string() }
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).args(args);
        c
    }

    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("ip netns exec")
    }

    /// Run in the namespace; panics on failure.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        if !out.status.success() {
            panic!(
                "in {}: {args:?} failed: {}{}",
                self.name,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn ping(&self, ip: &str, count: u32) -> bool {
        self.output(&["ping", "-c", &count.to_string(), "-i", "0.05", "-W", "1", "-q", ip]).status.success()
    }

    /// Ping until one answer comes (links just brought up need a moment), at most `secs`.
    pub fn wait_ping(&self, ip: &str, secs: u64) -> bool {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            if self.output(&["ping", "-c", "1", "-W", "1", "-q", ip]).status.success() {
                return true;
            }
        }
        false
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        quiet(&["ip", "netns", "del", &self.name]);
    }
}

/// A veth pair with one end (`inner`) in a namespace; `host` stays here for the switch.
pub struct Veth {
    pub host: String,
    pub inner: String,
}

impl Veth {
    pub fn new(ns: &Netns) -> Veth {
        let host = unique("vh");
        let inner = unique("vi");
        sh(&["ip", "link", "add", &host, "type", "veth", "peer", "name", &inner]);
        let v = Veth { host, inner };
        sh(&["ip", "link", "set", &v.inner, "netns", &ns.name]);
        quiet(&["sysctl", "-qw", &format!("net.ipv6.conf.{}.disable_ipv6=1", v.host)]);
        sh(&["ip", "link", "set", &v.host, "up"]);
        ns.run(&["ip", "link", "set", &v.inner, "up"]);
        v.wait_up(ns);
        v
    }

    /// Wait until the kernel has activated both ends (linkwatch runs up to a second after
    /// carrier-up; until then the device's queue silently drops what is sent).
    fn wait_up(&self, ns: &Netns) {
        let end = Instant::now() + Duration::from_secs(5);
        let host_state = format!("/sys/class/net/{}/operstate", self.host);
        let inner_state = format!("/sys/class/net/{}/operstate", self.inner);
        while Instant::now() < end {
            let host_up = std::fs::read_to_string(&host_state).is_ok_and(|s| s.trim() == "up");
            if host_up && ns.run(&["cat", &inner_state]).trim() == "up" {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("veth {}/{} did not come up within 5 s", self.host, self.inner);
    }

    pub fn set_mtu(&self, ns: &Netns, mtu: u32) {
        let m = mtu.to_string();
        sh(&["ip", "link", "set", &self.host, "mtu", &m]);
        ns.run(&["ip", "link", "set", &self.inner, "mtu", &m]);
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        quiet(&["ip", "link", "del", &self.host]);
    }
}

/// A test host: a namespace with one veth, address `ip`/24 on its inner end.
pub struct Host {
    pub veth: Veth,
    pub ns: Netns,
    pub ip: String,
}

impl Host {
    pub fn new(ip: &str) -> Host {
        let ns = Netns::new();
        let veth = Veth::new(&ns);
        ns.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &veth.inner]);
        Host { veth, ns, ip: ip.to_string() }
    }

    /// The MAC of the host's interface.
    pub fn mac(&self) -> String {
        let out = self.ns.run(&["cat", &format!("/sys/class/net/{}/address", self.veth.inner)]);
        out.trim().to_string()
    }

    /// Send `count` raw frames from this host (see src/bin/sendraw.rs).
    pub fn send_raw(&self, dst: &str, src: &str, ethertype: &str, count: u32, size: usize) {
        let bin = sendraw_bin();
        self.ns.run(&[
            bin.to_str().unwrap(),
            &self.veth.inner,
            dst,
            src,
            ethertype,
            &count.to_string(),
            &size.to_string(),
        ]);
    }
}

/// A vswitch daemon with its own socket and state directory; stopped by SIGTERM on drop.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub workers: usize,
    /// Run it with at most this many file descriptors (RLIMIT_NOFILE).
    pub nofile: Option<u64>,
    /// Run it with this umask.
    pub umask: Option<u32>,
    /// More arguments for `vswitch daemon`.
    pub args: Vec<String>,
}

/// Poll `check` every 50 ms until it holds or `secs` pass; returns whether it held.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Daemon {
    pub fn start(workers: usize) -> Daemon {
        require_root();
        let mut d = Daemon::unstarted(workers);
        d.launch();
        d
    }

    /// A daemon not started yet: set it up (its state directory, limits), then `launch`.
    pub fn unstarted(workers: usize) -> Daemon {
        require_root();
        Daemon {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            workers,
            nofile: None,
            umask: None,
            args: vec![],
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("vswitch.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Start the daemon on this socket and state directory; waits until it answers.
    pub fn launch(&mut self) {
        let child = self.spawn();
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if std::os::unix::net::UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daemon exited with {st} at start:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("daemon did not answer within 10 s:\n{}", self.log());
    }

    /// Spawn the daemon process without waiting for it.
    pub fn spawn(&self) -> Child {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("daemon.log")).unwrap();
        let mut cmd = Command::new(vswitch_bin());
        cmd.arg("--socket")
            .arg(self.socket())
            .arg("daemon")
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--workers")
            .arg(self.workers.to_string())
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(log);
        let (nofile, mask) = (self.nofile, self.umask);
        // SAFETY: between fork and exec, only system calls on this child.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if let Some(n) = nofile {
                    let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                }
                if let Some(m) = mask {
                    libc::umask(m);
                }
                Ok(())
            });
        }
        cmd.spawn().expect("spawn vswitch daemon")
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            if let Some(st) = c.try_wait().unwrap() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.kill();
        panic!("daemon did not stop within 10 s of SIGTERM:\n{}", self.log());
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(vswitch_bin()).arg("--socket").arg(self.socket()).args(args).output().expect("run vswitch")
    }

    /// Run a CLI command that must succeed; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "vswitch {args:?} failed: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run a CLI command that must fail; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            !out.status.success(),
            "vswitch {args:?} should have failed, printed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).expect("json output")
    }

    /// Counters of one port.
    pub fn port_stats(&self, port: &str) -> Value {
        let v = self.json(&["stats", port]);
        v[0].clone()
    }

    pub fn tx_packets(&self, port: &str) -> u64 {
        self.port_stats(port)["tx_packets"].as_u64().unwrap()
    }

    pub fn drops(&self, port: &str, reason: &str) -> u64 {
        self.port_stats(port)["drops"][reason].as_u64().unwrap_or(0)
    }

    /// A network with the given hosts attached.
    pub fn network(&self, name: &str, hosts: &[&Host]) {
        self.ok(&["network", "create", name]);
        for h in hosts {
            self.ok(&["network", "connect", name, &h.veth.host]);
        }
    }
}

impl Daemon {
    /// Write `state.json` before the daemon starts (a fixture of an earlier release).
    pub fn with_state(workers: usize, state: &str) -> Daemon {
        require_root();
        let mut d = Daemon::unstarted(workers);
        std::fs::create_dir_all(d.state_dir()).unwrap();
        std::fs::write(d.state_dir().join("state.json"), state).unwrap();
        d.launch();
        d
    }

    /// Remove every sandbox the daemon holds: endpoints in namespaces and the namespaces it
    /// made outlive the daemon by design (a restart picks them up), but not a test.
    fn remove_sandboxes(&self) {
        let out = self.cli(&["ps", "--json"]);
        let Ok(list) = serde_json::from_slice::<Value>(&out.stdout) else { return };
        for s in list.as_array().into_iter().flatten() {
            if let Some(name) = s["name"].as_str() {
                let _ = self.cli(&["rm", name]);
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.remove_sandboxes();
        }
        if let Some(mut c) = self.child.take() {
            // SAFETY: a signal to our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `vswitch trace` running in the background.
pub struct Trace {
    child: Child,
    stderr: std::io::BufReader<std::process::ChildStderr>,
}

impl Daemon {
    /// Start `vswitch trace ARGS` and wait until it says it is tracing.
    pub fn trace(&self, args: &[&str]) -> Trace {
        let mut child = Command::new(vswitch_bin())
            .arg("--socket")
            .arg(self.socket())
            .arg("trace")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn vswitch trace");
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        assert!(line.starts_with("tracing "), "vswitch trace {args:?} did not start: {line}");
        Trace { child, stderr }
    }
}

impl Trace {
    /// Wait for the trace to end by itself (--count, --duration); returns its summary line.
    pub fn wait(mut self) -> String {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stderr, &mut rest).unwrap();
        let st = self.child.wait().unwrap();
        assert!(st.success(), "vswitch trace failed: {rest}");
        rest
    }

    /// Ctrl-C the trace; returns its summary line.
    pub fn interrupt(self) -> String {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }
}

/// A unique network name for a test.
pub fn net_name() -> String {
    unique("net")
}

/// iperf3 from `client` to `server` for `secs`; returns (Gbit/s, retransmits).
pub fn iperf(client: &Netns, server: &Netns, server_ip: &str, secs: u32) -> (f64, u64) {
    let mut srv =
        server.cmd(&["iperf3", "-s", "-1"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("iperf3 -s");
    std::thread::sleep(Duration::from_millis(300));
    let out = client.output(&["iperf3", "-c", server_ip, "-t", &secs.to_string(), "-J"]);
    let _ = srv.kill();
    let _ = srv.wait();
    assert!(out.status.success(), "iperf3 failed: {}", String::from_utf8_lossy(&out.stdout));
    let v: Value = serde_json::from_slice(&out.stdout).expect("iperf3 json");
    let end = &v["end"]["sum_received"];
    let retr = v["end"]["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    (end["bits_per_second"].as_f64().unwrap() / 1e9, retr)
}
