//! What the daemon persists: networks, their endpoints (ports) and static MAC entries.
//! Saved atomically (temp file, fsync, rename, fsync of the directory) before a command
//! returns; a file that does not parse stops the daemon and is never overwritten.

use crate::mac::MacAddr;
use crate::port::PortKind;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

pub const FORMAT_VERSION: u32 = 1;
pub const DEFAULT_AGING_SECS: u32 = 300;
/// Default cap on learned MACs per network: far above any real segment, far below what a
/// flood of random source MACs would make us hold.
pub const DEFAULT_MAX_LEARNED: usize = 65536;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    Bridge,
    Macvlan,
    Overlay,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Driver::Bridge => "bridge",
            Driver::Macvlan => "macvlan",
            Driver::Overlay => "overlay",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct State {
    pub version: u32,
    pub networks: Vec<Network>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Network {
    pub name: String,
    pub id: String,
    pub driver: Driver,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    pub ip_range: Ipv4Net,
    pub aging_secs: u32,
    pub max_learned: usize,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub endpoints: Vec<Endpoint>,
    #[serde(default)]
    pub static_macs: Vec<StaticMac>,
}

/// A port of a network and the address it was given there.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// The interface name (also the port's name).
    pub name: String,
    pub kind: PortKind,
    pub ipv4: Ipv4Addr,
    /// The MAC the endpoint should use, derived from its address as Docker does.
    pub mac: MacAddr,
    /// The switch created this TAP and creates it again on restart.
    #[serde(default)]
    pub created_tap: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct StaticMac {
    pub mac: MacAddr,
    pub port: String,
}

impl State {
    pub fn new() -> State {
        State { version: FORMAT_VERSION, networks: Vec::new() }
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
}

impl Default for State {
    fn default() -> Self {
        State::new()
    }
}

/// The state directory: `state.json` and a lock that keeps a second daemon out.
pub struct StateDir {
    dir: PathBuf,
    _lock: File,
}

impl StateDir {
    pub fn open(dir: &Path) -> Result<StateDir, String> {
        fs::create_dir_all(dir).map_err(|e| format!("cannot create state directory {}: {e}", dir.display()))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!("another vswitch daemon is using the state directory {}", dir.display()));
        }
        Ok(StateDir { dir: dir.to_path_buf(), _lock: lock })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The saved state; an empty one if there is no file yet.
    pub fn load(&self) -> Result<State, String> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::new()),
            Err(e) => return Err(format!("cannot read state file {}: {e}", path.display())),
        };
        let st: State = serde_json::from_str(&text).map_err(|e| {
            format!(
                "state file {} is corrupt ({e}); it was left untouched: repair it, or move it aside to start with no networks",
                path.display()
            )
        })?;
        if st.version != FORMAT_VERSION {
            return Err(format!(
                "state file {} has format version {}, this vswitch reads {FORMAT_VERSION}",
                path.display(),
                st.version
            ));
        }
        Ok(st)
    }

    pub fn save(&self, st: &State) -> Result<(), String> {
        let path = self.path();
        let tmp = self.dir.join("state.json.tmp");
        let fail = |what: &str, e: std::io::Error| format!("cannot save state ({what} {}): {e}", tmp.display());
        let text = serde_json::to_vec_pretty(st).expect("state serializes");
        let mut f = File::create(&tmp).map_err(|e| fail("create", e))?;
        f.write_all(&text).map_err(|e| fail("write", e))?;
        f.sync_all().map_err(|e| fail("fsync", e))?;
        fs::rename(&tmp, &path).map_err(|e| fail("rename", e))?;
        File::open(&self.dir).and_then(|d| d.sync_all()).map_err(|e| fail("fsync dir of", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        let mut st = State::new();
        st.networks.push(Network {
            name: "blue".into(),
            id: "abc".into(),
            driver: Driver::Bridge,
            subnet: "172.18.0.0/16".parse().unwrap(),
            gateway: "172.18.0.1".parse().unwrap(),
            ip_range: "172.18.0.0/16".parse().unwrap(),
            aging_secs: 300,
            max_learned: 100,
            created: 1,
            endpoints: vec![Endpoint {
                name: "veth-a".into(),
                kind: PortKind::AfPacket,
                ipv4: "172.18.0.2".parse().unwrap(),
                mac: "02:42:ac:12:00:02".parse().unwrap(),
                created_tap: false,
            }],
            static_macs: vec![],
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
    }

    #[test]
    fn corrupt_file_is_an_error_and_kept() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("state.json"), "{ not json").unwrap();
        let sd = StateDir::open(d.path()).unwrap();
        let e = sd.load().unwrap_err();
        assert!(e.contains("corrupt"), "{e}");
        assert_eq!(std::fs::read_to_string(d.path().join("state.json")).unwrap(), "{ not json");
    }

    #[test]
    fn second_daemon_is_locked_out() {
        let d = tempfile::tempdir().unwrap();
        let _a = StateDir::open(d.path()).unwrap();
        assert!(StateDir::open(d.path()).err().unwrap().contains("another vswitch daemon"));
    }
}
