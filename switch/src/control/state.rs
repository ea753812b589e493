//! What the daemon persists: networks (their IPAM, their driver's options, endpoints and
//! static MAC entries) and sandboxes (the network namespaces endpoints live in). Saved
//! atomically (temp file, fsync, rename, fsync of the directory) before a command returns;
//! a file that does not parse stops the daemon and is never overwritten. A file of an
//! earlier format is migrated on load (`migrate`), with the original kept beside it.

use super::error::{Error, Result};
use super::migrate;
use crate::mac::MacAddr;
use crate::port::PortKind;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const FORMAT_VERSION: u32 = 2;
pub const DEFAULT_AGING_SECS: u32 = 300;
/// Default cap on learned MACs per network: far above any real segment, far below what a
/// flood of random source MACs would make us hold.
pub const DEFAULT_MAX_LEARNED: usize = 65536;
pub const DEFAULT_MTU: u32 = 1500;
/// The network that is the switch's outside (`vswitch uplink set`): its one port is the
/// uplink interface, and its gateway address, answered by the switch, is the uplink's.
pub const UPLINK: &str = "uplink";

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct State {
    pub version: u32,
    pub networks: Vec<Network>,
    #[serde(default)]
    pub sandboxes: Vec<Sandbox>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Network {
    pub name: String,
    pub id: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// No way out (Docker's `--internal`): no default route is given to endpoints.
    #[serde(default)]
    pub internal: bool,
    /// At most one subnet per address family.
    pub ipam: Vec<Subnet>,
    /// The driver, with its own options: `{"bridge": {...}}`.
    pub driver: DriverOptions,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub static_macs: Vec<StaticMac>,
    /// The Docker network this is (made through the Docker plugin), by Docker's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_id: Option<String>,
}

/// One subnet of a network, as Docker's IPAM config has it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Subnet {
    pub subnet: IpNet,
    pub gateway: IpAddr,
    /// Endpoint addresses are handed out from here.
    pub ip_range: IpNet,
    /// Addresses kept out of allocation, by name.
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, IpAddr>,
}

/// Each driver's options in a table of its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum DriverOptions {
    Bridge(BridgeOptions),
    Macvlan(MacvlanOptions),
}

/// A macvlan network: endpoints with their own MACs on a parent interface (or, with no
/// parent, only on each other: an internal network). The gateway is the LAN's router.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MacvlanOptions {
    /// The interface the network's frames leave and arrive by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// The 802.1Q VLAN the switch tags and untags on the parent (`-o parent=eth1.50`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    pub mode: MacvlanMode,
    /// The MTU of the endpoints' interfaces (the parent's by default).
    pub mtu: u32,
    /// The daemon's own interface onto the network (`-o host_port=NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_port: Option<HostPort>,
}

pub use crate::pipeline::dispatch::Mode as MacvlanMode;

/// An interface in the daemon's namespace, with an address of the network, through which
/// the host's own stack reaches the endpoints.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct HostPort {
    /// Its name in the daemon's namespace.
    pub name: String,
    /// The switch's end of its veth pair: an endpoint of the network.
    pub port: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct BridgeOptions {
    pub aging_secs: u32,
    pub max_learned: usize,
    /// The MTU of the endpoints' interfaces the switch creates.
    pub mtu: u32,
    /// The gateway's MAC, the switch's own on this network.
    pub gateway_mac: MacAddr,
    /// Port security: at most this many MACs learned on each port (an endpoint may have its
    /// own quota).
    #[serde(default)]
    pub max_learned_per_port: Option<u32>,
    /// The switch does not take the IPv4 gateway address (Docker's
    /// `com.docker.network.bridge.inhibit_ipv4`): another port of the network holds it.
    #[serde(default)]
    pub inhibit_ipv4: bool,
    /// Endpoints may reach each other (Docker's `com.docker.network.bridge.enable_icc`);
    /// false: only the gateway and what lies beyond it.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub icc: bool,
    /// Set on the uplink network only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkOptions>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// What the uplink network has that others do not.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct UplinkOptions {
    /// The router traffic to the outside goes to (`--gateway`).
    pub next_hop: Option<Ipv4Addr>,
}

/// A port of a network and what it was given there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// The interface name on the switch's side (also the port's name).
    pub name: String,
    pub kind: PortKind,
    /// The MAC the endpoint uses (set on interfaces the switch creates).
    pub mac: MacAddr,
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// The switch created this TAP and creates it again on restart.
    #[serde(default)]
    pub created_tap: bool,
    /// The endpoint's other end is inside a sandbox the switch set up.
    #[serde(default)]
    pub sandbox: Option<SandboxLink>,
    /// This port's quota of learned MACs, instead of the network's.
    #[serde(default)]
    pub max_learned: Option<u32>,
    /// Ports published at the uplink's address (`-p`), as resolved when connected.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<PublishedPort>,
    /// A Docker endpoint (made through the Docker plugin): Docker moves `peer` into the
    /// container and configures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerLink>,
}

impl Endpoint {
    /// The switch's end `name` of a veth pair it made, with what the endpoint was given.
    pub fn veth_end(name: String, mac: MacAddr, ipv4: Option<Ipv4Addr>, ipv6: Option<Ipv6Addr>) -> Endpoint {
        Endpoint {
            name,
            kind: PortKind::AfPacket,
            mac,
            ipv4,
            ipv6,
            created_tap: false,
            sandbox: None,
            max_learned: None,
            published: vec![],
            docker: None,
        }
    }
}

/// A Docker endpoint's ids and interface.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct DockerLink {
    pub endpoint_id: String,
    /// The veth end Docker takes into the container (it is back here when the container stops).
    pub peer: String,
    /// The container's namespace, once joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_key: Option<String>,
}

/// One published port: `host_port` on the uplink's address forwards to `port` here.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PublishedPort {
    /// "tcp" or "udp".
    pub proto: String,
    #[serde(default)]
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub port: u16,
}

/// Where an endpoint's interface sits inside its sandbox.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SandboxLink {
    pub sandbox: String,
    /// The interface's name inside (eth0, eth1...).
    pub ifname: String,
    /// Other names the endpoint answers to on this network (for DNS).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// This endpoint holds the sandbox's default routes (its first network's, as Docker does).
    #[serde(default)]
    pub default_route: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StaticMac {
    pub mac: MacAddr,
    pub port: String,
}

/// A network namespace with endpoints in it: a container's, as Docker calls it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Sandbox {
    pub name: String,
    pub id: String,
    pub mode: NetMode,
    /// The namespace (/run/netns/NAME, /proc/PID/ns/net); none for `host`.
    pub netns: Option<PathBuf>,
    /// Which namespace that was (nsfs device, inode): a path reused by another namespace is
    /// not ours.
    #[serde(default)]
    pub ns_identity: Option<(u64, u64)>,
    /// The switch made the namespace (`vswitch run`) and removes it with the sandbox.
    pub owned: bool,
    /// The process `vswitch run` started in it.
    #[serde(default)]
    pub process: Option<Process>,
    pub created: u64,
    /// The /etc/netns/NAME files the switch wrote for a namespace it did not make (removed
    /// with the sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etc: Option<String>,
    /// Its own upstream resolvers for the embedded DNS (`--dns`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<IpAddr>,
}

/// A process, told apart from a later one with the same id by when it started.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// Its start time (clock ticks since boot, /proc/PID/stat field 22).
    pub start: u64,
}

/// How a sandbox is networked, as `docker run --network` says it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum NetMode {
    /// Its own namespace with endpoints on networks.
    Networks,
    /// Its own namespace with only loopback.
    None,
    /// The host's namespace.
    Host,
    /// Another sandbox's namespace.
    Container(String),
}

impl NetMode {
    pub fn name(&self) -> String {
        match self {
            NetMode::Networks => "bridge".into(),
            NetMode::None => "none".into(),
            NetMode::Host => "host".into(),
            NetMode::Container(c) => format!("container:{c}"),
        }
    }
}

impl Network {
    pub fn driver_name(&self) -> &'static str {
        match &self.driver {
            DriverOptions::Bridge(b) if b.uplink.is_some() => "uplink",
            DriverOptions::Bridge(_) => "bridge",
            DriverOptions::Macvlan(_) => "macvlan",
        }
    }

    /// The switch's outside, not a network endpoints join.
    pub fn is_uplink(&self) -> bool {
        self.bridge().is_some_and(|b| b.uplink.is_some())
    }

    /// A bridge network's options (the uplink is one too).
    pub fn bridge(&self) -> Option<&BridgeOptions> {
        match &self.driver {
            DriverOptions::Bridge(b) => Some(b),
            DriverOptions::Macvlan(_) => None,
        }
    }

    pub fn macvlan(&self) -> Option<&MacvlanOptions> {
        match &self.driver {
            DriverOptions::Macvlan(m) => Some(m),
            DriverOptions::Bridge(_) => None,
        }
    }

    /// The MTU of the endpoints' interfaces.
    pub fn mtu(&self) -> u32 {
        match &self.driver {
            DriverOptions::Bridge(b) => b.mtu,
            DriverOptions::Macvlan(m) => m.mtu,
        }
    }

    pub fn subnet_v4(&self) -> Option<&Subnet> {
        self.ipam.iter().find(|s| s.subnet.addr().is_ipv4())
    }

    pub fn subnet_v6(&self) -> Option<&Subnet> {
        self.ipam.iter().find(|s| s.subnet.addr().is_ipv6())
    }

    pub fn endpoint(&self, name: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.name == name)
    }
}

impl State {
    pub fn new() -> State {
        State { version: FORMAT_VERSION, networks: Vec::new(), sandboxes: Vec::new() }
    }

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    pub fn network_mut(&mut self, name: &str) -> Option<&mut Network> {
        self.networks.iter_mut().find(|n| n.name == name)
    }

    /// The network an interface is attached to, if any.
    pub fn attached(&self, iface: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.endpoints.iter().any(|e| e.name == iface))
    }

    pub fn sandbox(&self, name: &str) -> Option<&Sandbox> {
        self.sandboxes.iter().find(|s| s.name == name)
    }

    /// The endpoints in sandbox `name`, with their networks.
    pub fn endpoints_of<'a>(&'a self, sandbox: &'a str) -> impl Iterator<Item = (&'a Network, &'a Endpoint)> + 'a {
        self.networks.iter().flat_map(move |n| {
            n.endpoints
                .iter()
                .filter(move |e| e.sandbox.as_ref().is_some_and(|s| s.sandbox == sandbox))
                .map(move |e| (n, e))
        })
    }
}

impl State {
    /// What a hand-edited file might get wrong that would otherwise surface as a panic or an
    /// allocation abort later: the same limits `network create` enforces, and no name twice.
    /// (References that merely dangle, a static MAC on a port that is gone, are repaired at
    /// start instead.)
    pub fn validate(&self) -> std::result::Result<(), String> {
        let mut names = std::collections::HashSet::new();
        let mut ports = std::collections::HashSet::new();
        for n in &self.networks {
            let valid_name = n.name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && n.name.len() <= 64
                && n.name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
            if !valid_name {
                return Err(format!("network name '{}' is not a valid name", n.name));
            }
            if !names.insert(&n.name) {
                return Err(format!("network {} is listed twice", n.name));
            }
            if n.id.is_empty() || !n.id.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(format!("network {} has id '{}', not a hex id", n.name, n.id));
            }
            if !(68..=65535).contains(&n.mtu()) {
                return Err(format!("network {}: mtu is {} (68 to 65535)", n.name, n.mtu()));
            }
            match &n.driver {
                DriverOptions::Bridge(b) => {
                    if b.aging_secs == 0 {
                        return Err(format!("network {}: aging_secs is 0 (at least 1)", n.name));
                    }
                    if !(1..=1 << 24).contains(&b.max_learned) {
                        return Err(format!("network {}: max_learned is {} (1 to 16777216)", n.name, b.max_learned));
                    }
                    if b.max_learned_per_port == Some(0) || b.gateway_mac.is_multicast() {
                        return Err(format!("network {}: max_learned_per_port 0 or a group gateway MAC", n.name));
                    }
                }
                DriverOptions::Macvlan(m) => {
                    if m.vlan.is_some_and(|v| !(1..=4094).contains(&v)) || (m.vlan.is_some() && m.parent.is_none()) {
                        return Err(format!("network {}: a VLAN from 1 to 4094, on a parent", n.name));
                    }
                    if m.parent.as_deref().is_some_and(|p| crate::netdev::check_ifname(p).is_err()) {
                        return Err(format!("network {}: the parent is not an interface name", n.name));
                    }
                }
            }
            let mut families = std::collections::HashSet::new();
            for sub in &n.ipam {
                if !families.insert(sub.subnet.addr().is_ipv4()) {
                    return Err(format!("network {} has two subnets of one family", n.name));
                }
                if !sub.subnet.contains(&sub.gateway) || !sub.subnet.contains(&sub.ip_range.network()) {
                    return Err(format!("network {}: gateway or ip_range outside subnet {}", n.name, sub.subnet));
                }
            }
            for e in &n.endpoints {
                if crate::netdev::check_ifname(&e.name).is_err() {
                    return Err(format!("network {}: '{}' is not an interface name", n.name, e.name));
                }
                if !ports.insert(&e.name) {
                    return Err(format!("port {} is listed twice", e.name));
                }
            }
        }
        let mut sandboxes = std::collections::HashSet::new();
        for sb in &self.sandboxes {
            if !sandboxes.insert(&sb.name) {
                return Err(format!("sandbox {} is listed twice", sb.name));
            }
        }
        Ok(())
    }
}

/// The state directory: `state.json` and a lock that keeps a second daemon out.
pub struct StateDir {
    dir: PathBuf,
    _lock: File,
}

impl StateDir {
    /// Open (and make, 0700) the state directory. Whatever the umask, nobody but root can
    /// read it, write it or plant a link in it.
    pub fn open(dir: &Path) -> Result<StateDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| Error::StateDir(format!("cannot create state directory {}: {e}", dir.display())))?;
        let meta = fs::symlink_metadata(dir).map_err(|e| Error::StateDir(format!("{}: {e}", dir.display())))?;
        if !meta.is_dir() {
            return Err(Error::StateDir(format!("state directory {} is not a directory", dir.display())));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), "state directory was open to others: made 0700");
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| Error::StateDir(format!("cannot restrict {}: {e}", dir.display())))?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&lock_path)
            .map_err(|e| Error::StateDir(format!("cannot open {}: {e}", lock_path.display())))?;
        // SAFETY: flock on a descriptor we hold for the daemon's life.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::StateDir(format!(
                "another vswitch daemon is using the state directory {}",
                dir.display()
            )));
        }
        Ok(StateDir { dir: dir.to_path_buf(), _lock: lock })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The saved state; an empty one if there is no file yet. A file of an earlier format
    /// is migrated, saved in this format, and kept as `state.v<N>.json`.
    pub fn load(&self) -> Result<State> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new()),
            Err(e) => return Err(Error::StateDir(format!("cannot read state file {}: {e}", path.display()))),
        };
        let corrupt = |e: String| {
            Error::StateDir(format!(
                "state file {} is corrupt ({e}); it was left untouched: repair it, or move it aside to start with no networks",
                path.display()
            ))
        };
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        let version = value.get("version").and_then(|v| v.as_u64()).unwrap_or(0);
        match version as u32 {
            FORMAT_VERSION => {
                let st: State = serde_json::from_value(value).map_err(|e| corrupt(e.to_string()))?;
                st.validate().map_err(|e| {
                    Error::StateDir(format!(
                        "state file {} is invalid: {e}; it was left untouched: repair it, or move it aside to start with no networks",
                        path.display()
                    ))
                })?;
                Ok(st)
            }
            1 => {
                let st = migrate::from_v1(value).map_err(|e| corrupt(format!("as format version 1: {e}")))?;
                let kept = self.dir.join("state.v1.json");
                write_new(&kept, text.as_bytes())
                    .map_err(|e| Error::StateDir(format!("cannot keep {}: {e}", kept.display())))?;
                self.save(&st)?;
                tracing::info!(kept = %kept.display(), "state file migrated from format version 1");
                Ok(st)
            }
            v => Err(Error::StateDir(format!(
                "state file {} has format version {v}, this vswitch reads {FORMAT_VERSION} (and migrates 1)",
                path.display()
            ))),
        }
    }

    pub fn save(&self, st: &State) -> Result<()> {
        let path = self.path();
        let tmp = self.dir.join("state.json.tmp");
        let fail =
            |what: &str, e: std::io::Error| Error::Save(format!("cannot save state ({what} {}): {e}", tmp.display()));
        let text = serde_json::to_vec_pretty(st).expect("state serializes");
        write_new(&tmp, &text).map_err(|e| fail("write", e))?;
        fs::rename(&tmp, &path).map_err(|e| fail("rename", e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| fail("fsync dir of", e))?;
        Ok(())
    }
}

/// Write `bytes` to a new file at `path` (0600, fsync'd). Whatever is at `path` goes first
/// (a symlink itself, never what it points to), and the file is created with O_EXCL and
/// O_NOFOLLOW: nothing planted there can redirect the write.
fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn sample() -> State {
        let mut st = State::new();
        st.networks.push(Network {
            name: "blue".into(),
            id: "abcdef".into(),
            created: 1,
            internal: false,
            ipam: vec![Subnet {
                subnet: "172.18.0.0/16".parse().unwrap(),
                gateway: "172.18.0.1".parse().unwrap(),
                ip_range: "172.18.0.0/16".parse().unwrap(),
                aux_addresses: BTreeMap::new(),
            }],
            driver: DriverOptions::Bridge(BridgeOptions {
                aging_secs: 300,
                max_learned: 100,
                mtu: 1500,
                gateway_mac: "02:42:00:00:00:01".parse().unwrap(),
                max_learned_per_port: None,
                inhibit_ipv4: false,
                icc: true,
                uplink: None,
            }),
            endpoints: vec![Endpoint {
                name: "veth-a".into(),
                kind: PortKind::AfPacket,
                ipv4: Some("172.18.0.2".parse().unwrap()),
                ipv6: None,
                mac: "02:42:ac:12:00:02".parse().unwrap(),
                created_tap: false,
                sandbox: None,
                max_learned: None,
                published: vec![],
                docker: None,
            }],
            static_macs: vec![],
            docker_id: None,
        });
        st
    }

    #[test]
    fn save_load_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        assert_eq!(sd.load().unwrap(), State::new());
        sd.save(&sample()).unwrap();
        assert_eq!(sd.load().unwrap(), sample());
        assert!(!d.path().join("state.json.tmp").exists());
        let text = std::fs::read_to_string(sd.path()).unwrap();
        assert!(text.contains("\"bridge\": {"), "each driver's options in a table of its own: {text}");
    }

    #[test]
    fn corrupt_file_is_an_error_and_kept() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("state.json"), "{ not json").unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        let e = sd.load().unwrap_err().to_string();
        assert!(e.contains("corrupt"), "{e}");
        assert_eq!(std::fs::read_to_string(d.path().join("state.json")).unwrap(), "{ not json");
    }

    #[test]
    fn unknown_version_is_refused_and_kept() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("state.json"), r#"{"version": 9, "networks": []}"#).unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        assert!(sd.load().unwrap_err().to_string().contains("format version 9"));
    }

    #[test]
    fn files_are_private_and_a_planted_link_is_not_followed() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("state.json.tmp")).unwrap();
        let sd = StateDir::open(&dir).unwrap();
        sd.save(&sample()).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!((mode(&dir), mode(&sd.path())), (0o700, 0o600));
    }

    #[test]
    fn hand_edits_that_would_break_the_daemon_are_refused() {
        let bad = |f: &dyn Fn(&mut State)| {
            let mut st = sample();
            f(&mut st);
            st.validate().unwrap_err()
        };
        assert!(bad(&|s| s.networks[0].id = "".into()).contains("not a hex id"));
        assert!(bad(&|s| s.networks.push(s.networks[0].clone())).contains("listed twice"));
        let opts = |s: &mut State| match &mut s.networks[0].driver {
            DriverOptions::Bridge(b) => b.max_learned = 1 << 40,
            DriverOptions::Macvlan(_) => unreachable!("a bridge sample"),
        };
        assert!(bad(&opts).contains("max_learned"));
        let aging = |s: &mut State| match &mut s.networks[0].driver {
            DriverOptions::Bridge(b) => b.aging_secs = 0,
            DriverOptions::Macvlan(_) => unreachable!("a bridge sample"),
        };
        let vlan = |s: &mut State| {
            s.networks[0].driver = DriverOptions::Macvlan(MacvlanOptions {
                parent: None,
                vlan: Some(50),
                mode: MacvlanMode::Bridge,
                mtu: 1500,
                host_port: None,
            })
        };
        assert!(bad(&vlan).contains("VLAN"), "a VLAN needs a parent");
        assert!(bad(&aging).contains("aging_secs"));
        assert!(sample().validate().is_ok());
        let d = tempfile::tempdir().unwrap();
        let mut st = sample();
        st.networks[0].id = "".into();
        std::fs::write(d.path().join("state.json"), serde_json::to_string(&st).unwrap()).unwrap();
        let e = StateDir::open(d.path()).unwrap().load().unwrap_err().to_string();
        assert!(e.contains("is invalid") && e.contains("left untouched"), "{e}");
    }

    #[test]
    fn second_daemon_is_locked_out() {
        let d = tempfile::tempdir().unwrap();
        let _a = StateDir::open(d.path()).unwrap();
        assert!(StateDir::open(d.path()).err().unwrap().to_string().contains("another vswitch daemon"));
    }
}
