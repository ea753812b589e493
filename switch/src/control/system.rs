//! What the controller asks of the machine, behind one trait: opening ports, looking up
//! interfaces, plumbing an endpoint into a namespace, making and removing namespaces. The
//! daemon uses [`Real`]; the controller's unit tests use an in-memory double, so they run
//! without root.

use super::error::{Error, Result};
use super::netlink::{Rtnl, VethPeer};
use super::netns;
use super::state::Process;
use crate::mac::MacAddr;
use crate::netdev;
use crate::port::{self, Opened, PortKind};
use std::fs::File;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

/// An endpoint's interface pair: `host` stays with the switch, `ifname` goes into `netns`
/// configured as Docker configures a container's interface.
pub struct Plumbing<'a> {
    pub host: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Address and prefix length.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// Default routes via the gateway (the sandbox's first network only, never internal ones).
    pub gateway4: Option<Ipv4Addr>,
    pub gateway6: Option<Ipv6Addr>,
}

pub trait System: Send + Sync {
    fn open_port(&self, name: &str, kind: PortKind, workers: usize, pin: Option<usize>) -> std::io::Result<Opened>;
    fn ifindex(&self, name: &str) -> Option<u32>;
    /// Create and configure an endpoint's veth pair.
    fn plumb(&mut self, p: &Plumbing) -> Result<()>;
    fn delete_link(&mut self, name: &str) -> Result<()>;
    /// A veth pair with both ends here: `host` up for the switch, `peer` (with `mac`) left
    /// for someone else to take into a namespace (Docker).
    fn make_veth(&mut self, host: &str, peer: &str, mac: MacAddr, mtu: u32) -> Result<()>;
    /// A new named network namespace (as `ip netns add`).
    fn create_netns(&mut self, name: &str) -> Result<PathBuf>;
    fn delete_netns(&mut self, name: &str);
    /// Which namespace a path holds, if it holds one.
    fn netns_identity(&self, path: &Path) -> Option<(u64, u64)>;
    /// The resolv.conf and hosts a sandbox's processes see.
    fn write_sandbox_files(&mut self, name: &str, resolv_conf: &str, hosts: &str) -> Result<()>;
    /// Whether /etc/netns/NAME exists (someone's own files for that namespace).
    fn sandbox_files_exist(&self, name: &str) -> bool;
    fn remove_sandbox_files(&mut self, name: &str);
    fn host_resolv_conf(&self) -> String;
    /// When process `pid` started, if it exists (and is not a zombie).
    fn process_start(&self, pid: u32) -> Option<u64>;
    /// Stop process `p` (if it is still that process): SIGTERM, then SIGKILL if it is still
    /// there after a grace period. Returns at once.
    fn stop_process(&mut self, p: Process);
    /// The interfaces inside a namespace (a new endpoint's name must not meet one).
    fn netns_links(&self, netns: &Path) -> Result<Vec<String>>;
    /// Every interface of the daemon's namespace: name and index, as the kernel lists them.
    fn links(&self) -> Result<Vec<(String, u32)>>;
}

/// The real machine.
pub struct Real {
    /// Where the host's resolvers are listed (`/etc/resolv.conf`; `--resolv-conf`).
    pub resolv_conf: PathBuf,
}

impl Default for Real {
    fn default() -> Real {
        Real { resolv_conf: PathBuf::from("/etc/resolv.conf") }
    }
}

/// Bring an endpoint's new veth pair up and give its inner end addresses and routes.
fn configure(here: &mut Rtnl, ns: &File, p: &Plumbing) -> Result<()> {
    let what = |step: &str| format!("{step} for {} in {}", p.ifname, p.netns.display());
    // The switch's end carries frames, not traffic of the host's own: no IPv6 on it, so the
    // host sends nothing (router solicitations, MLD) into the network.
    let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", p.host), "1");
    let host = here.link(p.host).map_err(|e| Error::netlink(what("the switch's end"), e))?;
    here.set_up(host.index).map_err(|e| Error::netlink(what("the switch's end"), e))?;
    let mut r = Rtnl::open_in(ns).map_err(|e| Error::netlink(what("a netlink socket"), e))?;
    let link = r.link(p.ifname).map_err(|e| Error::netlink(what("the interface"), e))?;
    r.set_up(link.index).map_err(|e| Error::netlink(what("bringing up"), e))?;
    if let Some((ip, len)) = p.ipv4 {
        r.add_address(link.index, ip.into(), len).map_err(|e| Error::netlink(what(&format!("address {ip}")), e))?;
    }
    if let Some((ip, len)) = p.ipv6 {
        r.add_address(link.index, ip.into(), len).map_err(|e| Error::netlink(what(&format!("address {ip}")), e))?;
    }
    // A namespace that already has a default route (a container's own) keeps it.
    let keep_existing = |r: super::netlink::Result<()>| match r {
        Err(e) if e.errno() == Some(libc::EEXIST) => Ok(()),
        other => other,
    };
    if let Some(gw) = p.gateway4 {
        keep_existing(r.add_default_route(link.index, gw.into()))
            .map_err(|e| Error::netlink(what("the default route"), e))?;
    }
    if let Some(gw) = p.gateway6 {
        keep_existing(r.add_default_route(link.index, gw.into()))
            .map_err(|e| Error::netlink(what("the IPv6 default route"), e))?;
    }
    Ok(())
}

impl System for Real {
    fn open_port(&self, name: &str, kind: PortKind, workers: usize, pin: Option<usize>) -> std::io::Result<Opened> {
        port::open(name, kind, workers, pin)
    }

    fn ifindex(&self, name: &str) -> Option<u32> {
        netdev::ifindex(name)
    }

    fn plumb(&mut self, p: &Plumbing) -> Result<()> {
        let ns = File::open(p.netns).map_err(|_| Error::NoNamespace(p.netns.display().to_string()))?;
        let mut here = Rtnl::open().map_err(|e| Error::netlink("a netlink socket", e))?;
        here.create_veth(p.host, &VethPeer { name: p.ifname, mac: p.mac.0, netns: &ns }, p.mtu)
            .map_err(|e| Error::netlink(format!("the veth pair for {} in {}", p.ifname, p.netns.display()), e))?;
        configure(&mut here, &ns, p).inspect_err(|_| {
            let _ = here.delete_link(p.host); // takes the inner end with it
        })
    }

    fn make_veth(&mut self, host: &str, peer: &str, mac: MacAddr, mtu: u32) -> Result<()> {
        let here = File::open("/proc/self/ns/net").map_err(|e| Error::system("opening the daemon's namespace", e))?;
        let mut r = Rtnl::open().map_err(|e| Error::netlink("a netlink socket", e))?;
        r.create_veth(host, &VethPeer { name: peer, mac: mac.0, netns: &here }, mtu)
            .map_err(|e| Error::netlink(format!("the veth pair {host}/{peer}"), e))?;
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{host}/disable_ipv6"), "1");
        let up = r.link(host).and_then(|l| r.set_up(l.index));
        up.map_err(|e| {
            let _ = r.delete_link(host);
            Error::netlink(format!("bringing {host} up"), e)
        })
    }

    fn delete_link(&mut self, name: &str) -> Result<()> {
        let mut r = Rtnl::open().map_err(|e| Error::netlink("a netlink socket", e))?;
        match r.delete_link(name) {
            Err(e) if e.errno() == Some(libc::ENODEV) => Ok(()), // already gone
            other => other.map_err(|e| Error::netlink(format!("deleting {name}"), e)),
        }
    }

    fn create_netns(&mut self, name: &str) -> Result<PathBuf> {
        netns::create(name).map_err(|e| Error::system(format!("creating network namespace {name}"), e))
    }

    fn delete_netns(&mut self, name: &str) {
        netns::delete(name)
    }

    fn netns_identity(&self, path: &Path) -> Option<(u64, u64)> {
        netns::identity(path).ok()
    }

    fn sandbox_files_exist(&self, name: &str) -> bool {
        netns::etc_exists(name)
    }

    fn remove_sandbox_files(&mut self, name: &str) {
        netns::remove_etc(name)
    }

    fn write_sandbox_files(&mut self, name: &str, resolv_conf: &str, hosts: &str) -> Result<()> {
        netns::write_etc(name, resolv_conf, hosts).map_err(|e| Error::system(format!("writing /etc/netns/{name}"), e))
    }

    fn host_resolv_conf(&self) -> String {
        std::fs::read_to_string(&self.resolv_conf).unwrap_or_default()
    }

    fn process_start(&self, pid: u32) -> Option<u64> {
        process_start(pid)
    }

    fn stop_process(&mut self, p: Process) {
        // A thread waits out the grace period: the controller's lock is not held meanwhile.
        let _ = std::thread::Builder::new().name("stop-process".into()).spawn(move || {
            let same = || process_start(p.pid) == Some(p.start);
            if !same() {
                return;
            }
            // SAFETY: a signal to the process the switch recorded, checked just now by its
            // start time (a recycled pid is another process).
            unsafe { libc::kill(p.pid as i32, libc::SIGTERM) };
            let end = std::time::Instant::now() + std::time::Duration::from_secs(2);
            while same() && std::time::Instant::now() < end {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            if same() {
                // SAFETY: as above.
                unsafe { libc::kill(p.pid as i32, libc::SIGKILL) };
            }
        });
    }

    fn links(&self) -> Result<Vec<(String, u32)>> {
        let mut r = Rtnl::open().map_err(|e| Error::netlink("a netlink socket", e))?;
        let links = r.links().map_err(|e| Error::netlink("the interfaces", e))?;
        Ok(links.into_iter().map(|l| (l.name, l.index)).collect())
    }

    fn netns_links(&self, netns: &Path) -> Result<Vec<String>> {
        let ns = File::open(netns).map_err(|_| Error::NoNamespace(netns.display().to_string()))?;
        let mut r = Rtnl::open_in(&ns).map_err(|e| Error::netlink("a netlink socket", e))?;
        let links = r.links().map_err(|e| Error::netlink(format!("the interfaces in {}", netns.display()), e))?;
        Ok(links.into_iter().map(|l| l.name).collect())
    }
}

/// When process `pid` started (/proc/PID/stat field 22), if it exists and is not a zombie.
pub fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields follow the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
pub mod fake {
    //! The machine in memory: interfaces are names, ports are in-memory queues, namespaces
    //! are paths that "exist" once made.
    use super::*;
    use crate::port::memory::MemoryQueue;
    use crate::port::Queue;
    use std::collections::{HashMap, HashSet};
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    pub struct World {
        pub links: HashMap<String, u32>,
        pub namespaces: HashSet<PathBuf>,
        pub plumbed: Vec<String>,
        pub files: HashMap<String, (String, String)>,
        /// Interfaces already in a namespace (besides the endpoints the switch plumbs).
        pub ns_links: HashMap<PathBuf, Vec<String>>,
        /// Opening these ports fails as if the process were out of descriptors.
        pub open_fails: HashSet<String>,
        next_index: u32,
    }

    impl World {
        pub fn add_link(&mut self, name: &str) -> u32 {
            self.next_index += 1;
            self.links.insert(name.into(), self.next_index);
            self.next_index
        }
    }

    /// Shared with the test, which looks at and changes the world while the controller runs.
    #[derive(Clone, Default)]
    pub struct Fake(pub Arc<Mutex<World>>);

    impl System for Fake {
        fn open_port(
            &self,
            name: &str,
            kind: PortKind,
            workers: usize,
            _pin: Option<usize>,
        ) -> std::io::Result<Opened> {
            let mut w = self.0.lock().unwrap();
            if w.open_fails.contains(name) {
                return Err(std::io::Error::from_raw_os_error(libc::EMFILE));
            }
            let ifindex = match (kind, w.links.get(name).copied()) {
                (PortKind::AfPacket | PortKind::Uplink, None) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("no interface named '{name}'"),
                    ))
                }
                (PortKind::Tap, None) => Some(w.add_link(name)),
                (_, i) => i,
            };
            Ok(Opened {
                queues: (0..workers).map(|_| Queue::Memory(MemoryQueue::new(vec![], 0))).collect(),
                rx_queues: workers,
                ifindex: if kind != PortKind::Tap { ifindex } else { None },
                max_frame: crate::frame::max_frame_for_mtu(1500),
                created: kind == PortKind::Tap,
            })
        }
        fn ifindex(&self, name: &str) -> Option<u32> {
            self.0.lock().unwrap().links.get(name).copied()
        }
        fn plumb(&mut self, p: &Plumbing) -> Result<()> {
            let mut w = self.0.lock().unwrap();
            if !w.namespaces.contains(p.netns) {
                return Err(Error::NoNamespace(p.netns.display().to_string()));
            }
            if w.ns_links.get(p.netns).is_some_and(|l| l.iter().any(|n| n == p.ifname)) {
                return Err(Error::invalid(format!("{} exists in {}", p.ifname, p.netns.display())));
            }
            w.add_link(p.host);
            w.plumbed.push(format!("{} {}", p.host, p.ifname));
            Ok(())
        }
        fn make_veth(&mut self, host: &str, peer: &str, _mac: MacAddr, _mtu: u32) -> Result<()> {
            let mut w = self.0.lock().unwrap();
            w.add_link(host);
            w.add_link(peer);
            Ok(())
        }
        fn delete_link(&mut self, name: &str) -> Result<()> {
            self.0.lock().unwrap().links.remove(name);
            Ok(())
        }
        fn create_netns(&mut self, name: &str) -> Result<PathBuf> {
            let p = netns::path_of(name);
            if !self.0.lock().unwrap().namespaces.insert(p.clone()) {
                return Err(Error::invalid(format!("a network namespace named '{name}' already exists")));
            }
            Ok(p)
        }
        fn delete_netns(&mut self, name: &str) {
            self.0.lock().unwrap().namespaces.remove(&netns::path_of(name));
        }
        fn netns_identity(&self, path: &Path) -> Option<(u64, u64)> {
            let w = self.0.lock().unwrap();
            w.namespaces.contains(path).then(|| (0, path.to_string_lossy().len() as u64))
        }
        fn sandbox_files_exist(&self, name: &str) -> bool {
            self.0.lock().unwrap().files.contains_key(name)
        }
        fn remove_sandbox_files(&mut self, name: &str) {
            self.0.lock().unwrap().files.remove(name);
        }
        fn write_sandbox_files(&mut self, name: &str, resolv_conf: &str, hosts: &str) -> Result<()> {
            self.0.lock().unwrap().files.insert(name.into(), (resolv_conf.into(), hosts.into()));
            Ok(())
        }
        fn host_resolv_conf(&self) -> String {
            "nameserver 192.0.2.53\n".into()
        }
        fn process_start(&self, _pid: u32) -> Option<u64> {
            None
        }
        fn stop_process(&mut self, _p: Process) {}
        fn links(&self) -> Result<Vec<(String, u32)>> {
            Ok(self.0.lock().unwrap().links.iter().map(|(n, i)| (n.clone(), *i)).collect())
        }
        fn netns_links(&self, netns: &Path) -> Result<Vec<String>> {
            let w = self.0.lock().unwrap();
            if !w.namespaces.contains(netns) {
                return Err(Error::NoNamespace(netns.display().to_string()));
            }
            Ok(w.ns_links.get(netns).cloned().unwrap_or_default())
        }
    }
}
