//! Real container engines as clients of vswitch, run privately: a dockerd of the test's own
//! (its own data root, exec root and socket; no iptables, no docker0, no ip_forward), and the
//! busybox image both engines run, made offline from busybox-static. Removed by their guards.

use super::*;

/// Panic with the package to install when `cmd` is missing (tests never skip).
pub fn require(cmd: &str, package: &str) {
    let found =
        Command::new("sh").args(["-c", &format!("command -v {cmd}")]).output().is_ok_and(|o| o.status.success());
    assert!(found, "{cmd} is missing: apt-get install {package} (.ci/run installs it)");
}

/// A directory holding busybox with every applet linked: a container's root.
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    require("busybox", "busybox-static");
    let root = dir.join("rootfs");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp", "www"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = sh(&["/bin/busybox", "--list"]);
    for applet in list.lines().filter(|a| *a != "busybox") {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    std::fs::write(root.join("www/index.html"), "hello from a container on vswitch\n").unwrap();
    root
}

/// A dockerd of this test's own.
pub struct Dockerd {
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Dockerd {
    pub fn start() -> Dockerd {
        require("dockerd", "docker.io");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).unwrap();
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--ip6tables=false", "--ip-forward=false", "--bridge=none"])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .arg("--pidfile")
            .arg(d.join("docker.pid"))
            .args(["--storage-driver", "overlay2"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("dockerd");
        let docker = Dockerd { dir, child };
        let ready = eventually(30, || docker.docker(&["version"]).status.success());
        assert!(ready, "dockerd did not answer within 30 s:\n{}", docker.log());
        let root = busybox_rootfs(docker.dir.path());
        let mut tar =
            Command::new("tar").arg("-C").arg(&root).args(["-c", "."]).stdout(Stdio::piped()).spawn().unwrap();
        let import = Command::new("docker")
            .arg("-H")
            .arg(docker.host())
            .args(["import", "-", "busy"])
            .stdin(tar.stdout.take().unwrap())
            .output()
            .unwrap();
        let _ = tar.wait();
        assert!(import.status.success(), "docker import: {}", String::from_utf8_lossy(&import.stderr));
        docker
    }

    fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("docker.sock").display())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker").arg("-H").arg(self.host()).args(args).output().expect("docker")
    }

    /// Run `docker ARGS`; panics (with both outputs) on failure; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.docker(args);
        assert!(
            o.status.success(),
            "docker {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.docker(&["ps", "-aq"]);
        for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
            let _ = self.docker(&["rm", "-f", id]);
        }
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(20);
        while Instant::now() < end && self.child.try_wait().ok().flatten().is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        unmount_under(self.dir.path());
    }
}

/// The machine's own networking as a test found it: checked again at its end.
pub struct HostNetworking {
    ip_forward: String,
}

impl HostNetworking {
    pub fn note() -> HostNetworking {
        HostNetworking { ip_forward: std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap() }
    }

    /// Panics if ip_forward changed or an engine left its bridge or NAT rules behind.
    pub fn check_unchanged(&self) {
        let now = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
        assert_eq!(now, self.ip_forward, "net.ipv4.ip_forward changed");
        for bridge in ["docker0", "docker_gwbridge", "cni-podman0", "podman0"] {
            assert!(!Path::new(&format!("/sys/class/net/{bridge}")).exists(), "{bridge} was created");
        }
        let nat = Command::new("iptables-save").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        if let Ok(rules) = nat {
            assert!(!rules.contains("DOCKER") && !rules.contains("CNI-"), "an engine added iptables rules:\n{rules}");
        }
    }
}

/// Unmount whatever an engine left mounted under `dir` (deepest first).
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let base = dir.to_string_lossy().to_string();
    let mut ours: Vec<&str> =
        mounts.lines().filter_map(|l| l.split(' ').nth(1)).filter(|m| m.starts_with(&base)).collect();
    ours.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ours {
        quiet(&["umount", "-l", m]);
    }
}

/// Podman with a private root, its CNI backend, and vswitch-cni as the plugin of network
/// `network` (also its default network: a stray run makes no cni-podman0).
pub struct Podman {
    pub dir: tempfile::TempDir,
    pub rootfs: PathBuf,
}

impl Podman {
    pub fn new(network: &str, socket: &Path) -> Podman {
        require("podman", "podman");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["plugins", "net", "tmp"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        std::fs::copy(cni_bin(), d.join("plugins/vswitch-cni")).unwrap();
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": network,
            "plugins": [{
                "type": "vswitch-cni",
                "network": network,
                "socket": socket,
                "capabilities": { "aliases": true, "portMappings": true },
            }],
        });
        std::fs::write(d.join(format!("net/{network}.conflist")), conflist.to_string()).unwrap();
        let conf = format!(
            "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{p}\", \"/usr/lib/cni\"]\nnetwork_config_dir = \"{n}\"\n\
             default_network = \"{network}\"\n[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n\
             events_logfile_path = \"{e}\"\ntmp_dir = \"{t}\"\n",
            p = d.join("plugins").display(),
            n = d.join("net").display(),
            e = d.join("events.log").display(),
            t = d.join("tmp").display(),
        );
        std::fs::write(d.join("containers.conf"), conf).unwrap();
        let rootfs = busybox_rootfs(d);
        Podman { dir, rootfs }
    }

    pub fn podman(&self, args: &[&str]) -> Output {
        let d = self.dir.path();
        Command::new("podman")
            .env("CONTAINERS_CONF", d.join("containers.conf"))
            .arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .args(["--storage-driver", "overlay"])
            .args(args)
            .output()
            .expect("podman")
    }

    /// `podman run [OPTIONS] --rootfs ROOTFS CMD...` (every option must come before the path).
    pub fn run(&self, options: &[&str], cmd: &[&str]) -> Output {
        let mut a = vec!["run", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"];
        a.extend_from_slice(options);
        let root = self.rootfs.display().to_string();
        a.extend(["--rootfs", root.as_str()]);
        a.extend_from_slice(cmd);
        self.podman(&a)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        unmount_under(self.dir.path());
    }
}
