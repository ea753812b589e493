//! The control plane: networks, endpoints and sandboxes as the user sees them.
//!
//! Every command is one transaction ([`Tx`]): check it in full and prepare what must exist
//! before its state can be saved (an opened port, an endpoint's interfaces, a namespace),
//! save the new state, and only then publish it to the data plane (`commit`). A command that
//! fails changes nothing: what it prepared is undone, and the data plane never saw it.

use super::error::{Error, Result};
use super::ipam;
use super::netlink::LinkEvent;
use super::netns;
use super::state::*;
use super::system::{Plumbing, System};
use crate::clock;
use crate::dataplane::Dataplane;
use crate::dns::{self, DnsStats};
use crate::explain::{self, NetView, PortView};
use crate::fdb::{MacTable, PortId, GATEWAY_PORT, MAX_PORT_ID};
use crate::frame::max_frame_for_mtu;
use crate::mac::MacAddr;
use crate::netdev::check_ifname;
use crate::pipeline::{Bridge, Gateway, NetRoute, NextHop, Pipeline, Routes, UplinkRoute};
use crate::port::afpacket::AfPacketQueue;
use crate::port::{nat_slices, steer, uplink_program, Opened, PortKind, PortShared};
use crate::protocol::*;
use crate::services::host::GatewayAddrs;
use crate::trace::{Filter, Select, Tracer};
use crate::worker::{Fault, NetId};
use ipnet::{IpNet, Ipv4Net};
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use tracing::{error, info, warn};
use vswitch_nat::publish::{PortSpec, Publications, PublishError, Published};
use vswitch_nat::{Endpoint as NatEndpoint, Proto};

struct LiveNet {
    id: NetId,
    pipeline: Pipeline,
    /// The gateway's counters.
    gateway: Arc<PortShared>,
    /// When the table is next swept for old entries (`clock::now` seconds).
    next_sweep: u32,
    /// The embedded DNS's counters (not on the uplink).
    dns: Option<Arc<DnsStats>>,
}

struct LivePort {
    id: PortId,
    network: String,
    kind: PortKind,
    shared: Arc<PortShared>,
    /// AF_PACKET ports: the interface index we bound to (a new index means a new interface).
    ifindex: Option<u32>,
    /// TAP ports: the device's tx_dropped when last read (frames it had no room to queue for us).
    tap_dropped: Option<u64>,
    /// Ports whose frames are steered to workers by a program (the uplink, endpoints that
    /// publish ports): a socket of the fanout group, to change the program, and the worker
    /// a pinned port belongs to.
    steer: Option<Steer>,
}

/// One macvlan parent's data plane (see `macvlan.rs`).
struct LiveParent {
    id: NetId,
    /// What its dispatch table was built from, to rebuild only on a change.
    built: Option<macvlan::Plan>,
}

struct Steer {
    fd: std::os::fd::OwnedFd,
    pin: Option<usize>,
}

/// A port opened and waiting for its state to be saved.
struct NewPort {
    id: PortId,
    name: String,
    network: String,
    kind: PortKind,
    opened: Opened,
}

/// What a transaction does to the live switch once its state is saved.
enum Step {
    AddNetwork(String),
    RemoveNetwork(String),
    AttachPort(Box<NewPort>),
    /// A macvlan parent interface opened for its first network.
    AttachParent(Box<NewPort>),
    DetachPort(String),
    DeleteLink(String),
    DeleteNetns(String),
    /// /etc/netns/NAME, written for a namespace the switch did not make.
    DeleteEtc(String),
}

/// What a transaction made before saving, undone if the save fails.
enum Undo {
    Link(String),
    Netns(String),
    Etc(String),
}

/// One command's change: the state it leads to, what it made, what follows the save.
struct Tx {
    next: State,
    undo: Vec<Undo>,
    then: Vec<Step>,
}

pub struct Controller {
    st: State,
    dir: StateDir,
    dp: Dataplane,
    sys: Box<dyn System>,
    nets: HashMap<String, LiveNet>,
    /// Macvlan parents by group (`macvlan::group_of`): the networks sharing one parent.
    parents: HashMap<String, LiveParent>,
    ports: HashMap<String, LivePort>,
    traces: Vec<Arc<Tracer>>,
    /// Where the search for a free port id starts.
    next_port_id: PortId,
    /// The uplink's next hop, resolved by its host in the services thread.
    next_hop: Option<Arc<NextHop>>,
    /// Where the search for a free network id starts.
    next_net_id: NetId,
    /// The state changed (the world forced it) but could not be saved yet.
    unsaved: bool,
    /// Ports whose interface is still there but that could not be opened again after a
    /// fault (out of descriptors, say), with the interface index they had: they stay in the
    /// state and are tried again each second until they open or the interface goes.
    reopening: BTreeMap<String, Option<u32>>,
}

fn json<T: Serialize>(v: T) -> Result<Value> {
    Ok(serde_json::to_value(v).expect("views serialize"))
}

pub fn check_name(name: &str) -> Result<()> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok_first || !ok_rest || name.len() > 64 {
        return Err(Error::BadNetworkName(name.into()));
    }
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    let s = std::collections::hash_map::RandomState::new();
    let mut out = format!("{:016x}{:016x}", s.hash_one(1u8), s.hash_one(std::time::SystemTime::now()));
    out.truncate(bytes * 2);
    out
}

fn new_id() -> String {
    random_hex(16)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The switch's end of an endpoint's veth pair: `vs` and 10 hex digits, unique enough and
/// within the kernel's 15 bytes.
fn new_host_ifname() -> String {
    format!("vs{}", random_hex(5))
}

impl Controller {
    /// Take over the saved state and bring every network, port and sandbox back. What cannot
    /// come back (an interface or a namespace that is gone) is dropped with a log line, and
    /// the state saved without it.
    pub fn start(st: State, dir: StateDir, dp: Dataplane, sys: Box<dyn System>) -> Result<Controller> {
        let mut c = Controller {
            st: State::new(),
            dir,
            dp,
            sys,
            nets: HashMap::new(),
            parents: HashMap::new(),
            ports: HashMap::new(),
            traces: Vec::new(),
            next_port_id: 1,
            next_hop: None,
            next_net_id: 0,
            unsaved: false,
            reopening: BTreeMap::new(),
        };
        // What restoring removes is cleaned up (links, namespaces) once the state is saved.
        let mut tx = Tx { next: st.clone(), undo: vec![], then: vec![] };
        // References that dangle in a hand-edited file are repaired, with a word.
        for n in &mut tx.next.networks {
            let ports: Vec<String> = n.endpoints.iter().map(|e| e.name.clone()).collect();
            n.static_macs.retain(|m| {
                let ok = ports.contains(&m.port);
                if !ok {
                    warn!(network = %n.name, "static entry {} dropped: its port {} is not on the network", m.mac, m.port);
                }
                ok
            });
        }
        for sb in &st.sandboxes {
            let owned_ns = matches!(sb.mode, NetMode::Networks | NetMode::None);
            let gone = match (&sb.netns, owned_ns || sb.owned) {
                (Some(p), true) => c.sys.netns_identity(p) != sb.ns_identity,
                _ => false,
            };
            if gone && tx.next.sandbox(&sb.name).is_some() {
                warn!(sandbox = %sb.name, "sandbox removed: its network namespace is gone");
                c.remove_sandbox_in(&mut tx, &sb.name);
                // Sandboxes that shared its namespace shared its fate.
                let users: Vec<String> = tx
                    .next
                    .sandboxes
                    .iter()
                    .filter(|s| s.mode == NetMode::Container(sb.name.clone()))
                    .map(|s| s.name.clone())
                    .collect();
                for u in users {
                    warn!(sandbox = %u, "sandbox removed: the namespace it shared is gone");
                    c.remove_sandbox_in(&mut tx, &u);
                }
            }
        }
        c.st = tx.next.clone();
        // Every port is opened at once: each socket's ring setup waits out a grace period in
        // the kernel, and waits that overlap cost one.
        let mut opened = c.open_all(&tx.next);
        for net in &tx.next.networks.clone() {
            c.add_live_net(net);
            for ep in &net.endpoints {
                let gone = ep.sandbox.is_some() && c.sys.ifindex(&ep.name).is_none();
                let opened = match opened.remove(&ep.name) {
                    _ if gone => Err(Error::NoInterface(ep.name.clone())),
                    Some(Ok(o)) => c.free_port_id().map(|id| (id, o)),
                    Some(Err(e)) => Err(Error::Attach { iface: ep.name.clone(), source: e }),
                    None => Err(Error::NoInterface(ep.name.clone())),
                };
                match opened {
                    Ok((id, opened)) => c.attach(NewPort {
                        id,
                        name: ep.name.clone(),
                        network: net.name.clone(),
                        kind: ep.kind,
                        opened,
                    }),
                    Err(e) => {
                        match &ep.sandbox {
                            Some(s) => warn!(network = %net.name, port = %ep.name, sandbox = %s.sandbox,
                                "endpoint removed: its namespace went away"),
                            None => error!(network = %net.name, port = %ep.name, "port not restored: {e}"),
                        }
                        c.remove_endpoint_in(&mut tx, &net.name, &ep.name);
                    }
                }
            }
            c.st = tx.next.clone();
            if let Some(n) = c.st.network(&net.name) {
                info!(network = %net.name, ports = n.endpoints.len(), "network restored");
                // The network is up again: endpoints learn the gateway's MAC at once.
                if let Some(l) = c.nets.get(&net.name) {
                    c.dp.announce(l.id);
                }
            }
        }
        if c.st != st {
            c.dir.save(&c.st)?;
        }
        c.apply(tx.then);
        Ok(c)
    }

    // ---- the live switch -------------------------------------------------------------

    /// Open every port of `st`, many at a time.
    fn open_all(&self, st: &State) -> HashMap<String, std::io::Result<Opened>> {
        const AT_ONCE: usize = 64;
        let (sys, workers) = (&*self.sys, self.dp.workers());
        let all: Vec<(&str, PortKind, Option<usize>)> = st
            .networks
            .iter()
            .flat_map(|n| n.endpoints.iter().map(|e| (e.name.as_str(), e.kind, pin_of(e, workers))))
            .collect();
        let mut out = HashMap::new();
        for chunk in all.chunks(AT_ONCE) {
            std::thread::scope(|s| {
                let hs: Vec<_> = chunk
                    .iter()
                    .map(|&(name, kind, pin)| (name, s.spawn(move || sys.open_port(name, kind, workers, pin))))
                    .collect();
                for (name, h) in hs {
                    let r = h.join().unwrap_or_else(|_| Err(std::io::Error::other("opening the port panicked")));
                    out.insert(name.to_string(), r);
                }
            });
        }
        out
    }

    /// A data-plane network id nothing uses. In turn, not lowest-free first: a new network
    /// never takes over an id whose frames (a gateway's replies, a trace) may be in flight.
    fn free_net_id(&mut self) -> NetId {
        let in_use = |i: NetId| self.nets.values().any(|n| n.id == i) || self.parents.values().any(|p| p.id == i);
        let id =
            (0..=NetId::MAX).map(|k| self.next_net_id.wrapping_add(k)).find(|&i| !in_use(i)).expect("65536 networks");
        self.next_net_id = id.wrapping_add(1);
        id
    }

    fn add_live_net(&mut self, net: &Network) {
        let Some(b) = net.bridge() else { return self.add_live_macvlan(net) };
        let id = self.free_net_id();
        let table = Arc::new(MacTable::new(b.max_learned));
        table.add_static(b.gateway_mac, GATEWAY_PORT).expect("an empty table has room");
        let v4 = net.subnet_v4().filter(|_| !b.inhibit_ipv4).and_then(|s| match s.gateway {
            IpAddr::V4(g) => Some((g, s.subnet.prefix_len())),
            IpAddr::V6(_) => None,
        });
        let v6 = net.subnet_v6().and_then(|s| match s.gateway {
            IpAddr::V6(g) => Some((g, s.subnet.prefix_len())),
            IpAddr::V4(_) => None,
        });
        let gateway = Gateway { net: id, mac: b.gateway_mac, ipv4: v4.map(|g| g.0), ipv6: v6.map(|g| g.0) };
        let pipeline = Pipeline::Bridge(Bridge { table, gateway: Some(gateway), icc: b.icc });
        // One counter slot per worker, and one for the services thread (its drops).
        let shared = Arc::new(PortShared::new(self.dp.workers() + 1, max_frame_for_mtu(b.mtu)));
        // The uplink's host resolves the next hop for the route stage.
        let next_hop = b.uplink.as_ref().map(|u| Arc::new(NextHop::new(u.next_hop)));
        if next_hop.is_some() {
            self.next_hop = next_hop.clone();
        }
        // Every user-defined network has the embedded DNS; the uplink is the outside.
        let dns = (!net.is_uplink() && (v4.is_some() || v6.is_some())).then(|| Arc::new(DnsStats::default()));
        let addrs =
            GatewayAddrs { mac: b.gateway_mac, ipv4: v4, ipv6: v6, mtu: b.mtu as usize, next_hop, dns: dns.clone() };
        self.dp.add_network(id, &pipeline, Some((&shared, addrs)));
        self.nets.insert(net.name.clone(), LiveNet { id, pipeline, gateway: shared, next_sweep: 0, dns });
        self.publish_routes();
    }

    /// Every network's subnets (the gateway stage tells another network from outside), how
    /// to reach each network's endpoints, and the uplink (the route stage).
    fn publish_routes(&self) {
        // Macvlan networks are the LAN's: the switch routes nothing to or from them.
        let live: Vec<(&Network, &LiveNet, &BridgeOptions)> =
            self.st.networks.iter().filter_map(|n| Some((n, self.nets.get(&n.name)?, n.bridge()?))).collect();
        let subnets = live.iter().flat_map(|(n, l, _)| n.ipam.iter().map(move |s| (s.subnet, l.id))).collect();
        let nets = live
            .iter()
            .filter_map(|(n, l, b)| {
                let neighbors = n
                    .endpoints
                    .iter()
                    .filter_map(|e| Some((e.ipv4?, (e.mac, self.ports.get(&e.name).map(|p| p.id)))))
                    .collect();
                let r = NetRoute {
                    gateway_mac: b.gateway_mac,
                    internal: n.internal,
                    neighbors,
                    table: l.pipeline.table()?.clone(),
                };
                Some((l.id, r))
            })
            .collect();
        let uplink = live.iter().find(|(n, _, _)| n.is_uplink()).and_then(|(n, l, b)| {
            let port = self.ports.get(&n.endpoints.first()?.name)?.id;
            let IpAddr::V4(addr) = n.subnet_v4()?.gateway else { return None };
            let next_hop = self.next_hop.clone()?;
            Some(UplinkRoute { net: l.id, port, mac: b.gateway_mac, addr, next_hop })
        });
        let published: Vec<(Proto, Option<Ipv4Addr>, u16, NatEndpoint)> = self
            .st
            .networks
            .iter()
            .flat_map(|n| n.endpoints.iter())
            .flat_map(|e| {
                e.published.iter().filter_map(move |p| {
                    Some((proto_of(&p.proto)?, p.host_ip, p.host_port, NatEndpoint::new(e.ipv4?, p.port)))
                })
            })
            .collect();
        self.steer_ports(&published, uplink.as_ref().map(|u| u.addr));
        self.dp.set_routes(Routes::new(subnets).with_nets(nets, uplink).with_published(published));
        self.publish_names();
    }

    /// Who is called what, for the embedded DNS: each endpoint by its sandbox's name, its
    /// aliases and short id on each network it is on (Docker's names).
    fn publish_names(&self) {
        let serving: Vec<(NetId, &str)> = self
            .st
            .networks
            .iter()
            .filter_map(|n| self.nets.get(&n.name).filter(|l| l.dns.is_some()).map(|l| (l.id, n.name.as_str())))
            .collect();
        let entries =
            self.st.networks.iter().filter_map(|n| Some((self.nets.get(&n.name)?.id, n))).flat_map(|(id, n)| {
                n.endpoints.iter().map(move |e| {
                    let sb = e.sandbox.as_ref().and_then(|l| Some((l, self.st.sandbox(&l.sandbox)?)));
                    dns::names::Entry {
                        net: id,
                        name: sb.map_or(e.name.as_str(), |(_, s)| s.name.as_str()),
                        aliases: sb.map_or(&[][..], |(l, _)| &l.aliases[..]),
                        short_id: sb.map(|(_, s)| &s.id[..s.id.len().min(12)]),
                        addrs: e.ipv4.map(IpAddr::V4).into_iter().chain(e.ipv6.map(IpAddr::V6)).collect(),
                        sandbox: sb.map(|(_, s)| s.name.as_str()),
                        upstreams: sb.map_or(&[][..], |(_, s)| &s.dns[..]),
                    }
                })
            });
        let mut names = dns::names::Names::build(&serving, entries);
        names.upstreams = dns::forward::upstreams_from(&self.sys.host_resolv_conf());
        self.dp.set_names(Arc::new(names));
    }

    /// Each published port's frames on the uplink go to the worker its endpoint is pinned
    /// to; a pinned endpoint's hairpin replies (to the uplink's address) go to the worker
    /// that holds their session.
    fn steer_ports(&self, published: &[(Proto, Option<Ipv4Addr>, u16, NatEndpoint)], uplink: Option<Ipv4Addr>) {
        let workers = self.dp.workers();
        let by_port: Vec<_> =
            published.iter().map(|(p, _, port, t)| (*p as u8, *port, owner_of(t.addr, workers) as u32)).collect();
        for (name, p) in &self.ports {
            let Some(s) = &p.steer else { continue };
            let program = match s.pin {
                _ if p.kind == PortKind::Uplink => uplink_program(workers, &by_port),
                Some(w) => steer::pinned(w as u32, uplink.map(|a| (a, nat_slices(workers)))),
                None => continue,
            };
            if let Err(e) = AfPacketQueue::set_fanout_program(&s.fd, &program) {
                error!(port = %name, "cannot change how the port's frames are steered to workers: {e}");
            }
        }
    }

    /// A port id no live or prepared port has. Ids are handed out in turn, not lowest-free
    /// first: a port connected after another was removed does not take over its id (and so
    /// its place in a running trace).
    fn free_port_id(&mut self) -> Result<PortId> {
        let in_use = |i: PortId| self.ports.values().any(|p| p.id == i);
        let id = (0..MAX_PORT_ID)
            .map(|k| (self.next_port_id - 1 + k) % MAX_PORT_ID + 1)
            .find(|&i| !in_use(i))
            .ok_or(Error::TooManyPorts(MAX_PORT_ID))?;
        self.next_port_id = id % MAX_PORT_ID + 1;
        Ok(id)
    }

    /// Hand an opened port to the workers.
    fn attach(&mut self, p: NewPort) {
        let NewPort { id, name, network, kind, opened } = p;
        let created = opened.created;
        let workers = self.dp.workers();
        let pin = self.st.network(&network).and_then(|n| n.endpoint(&name)).and_then(|e| pin_of(e, workers));
        let steered = matches!(kind, PortKind::Uplink) || (kind == PortKind::AfPacket && pin.is_some());
        let steer = (steered && workers > 1)
            .then(|| {
                // A socket of the port's fanout group, to change its program later (the
                // queues themselves belong to the workers).
                let fd = opened.queues.first().map(|q| q.fd()).filter(|&fd| fd >= 0)?;
                // SAFETY: dup of a live descriptor of ours; the copy is owned here.
                let d = unsafe { libc::dup(fd) };
                // SAFETY: a fresh descriptor nothing else owns.
                (d >= 0).then(|| Steer { fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(d) }, pin })
            })
            .flatten();
        // A slot per worker, and one for the control plane (TAP overruns, read each second).
        let shared = Arc::new(PortShared::new(self.dp.workers() + 1, opened.max_frame));
        let ifindex = opened.ifindex;
        let Some(net) = self.nets.get(&network) else { return };
        if let Some(table) = net.pipeline.table() {
            // Port security: the endpoint's own quota, else the network's (0: none).
            let quota = self.st.network(&network).map_or(0, |n| {
                let net_quota = n.bridge().and_then(|b| b.max_learned_per_port);
                n.endpoint(&name).and_then(|e| e.max_learned).or(net_quota).unwrap_or(0)
            });
            table.set_port_quota(id, quota);
            // The port's static entries (on restore, and when a port is opened again under a
            // new id after a fault).
            for m in self.st.network(&network).iter().flat_map(|n| &n.static_macs).filter(|m| m.port == name) {
                if let Err(e) = table.add_static(m.mac, id) {
                    error!(network = %network, port = %name, "static entry not restored: {e}");
                }
            }
        }
        self.dp.add_port(id, net.id, opened, &shared);
        info!(network = %network, port = %name, kind = kind.name(), id, created, "port attached");
        let tap_dropped = (kind == PortKind::Tap).then(|| tap_tx_dropped(&name)).flatten();
        self.ports.insert(name, LivePort { id, network, kind, shared, ifindex, tap_dropped, steer });
    }

    fn detach(&mut self, name: &str) {
        self.reopening.remove(name);
        if let Some(p) = self.ports.remove(name) {
            self.dp.remove_port(p.id);
            if let Some(t) = self.nets.get(&p.network).and_then(|n| n.pipeline.table()) {
                t.flush_port(p.id);
                t.set_port_quota(p.id, 0);
            }
            info!(network = %p.network, port = name, "port detached");
        }
    }

    // ---- transactions ----------------------------------------------------------------

    fn begin(&self) -> Tx {
        Tx { next: self.st.clone(), undo: vec![], then: vec![] }
    }

    /// Save `tx.next` as the state; only then is it the state, and the live switch follows.
    fn commit(&mut self, tx: Tx) -> Result<()> {
        if let Err(e) = self.dir.save(&tx.next) {
            self.undo(tx.undo);
            return Err(e); // ports opened for it close as `tx.then` drops
        }
        self.unsaved = false;
        self.st = tx.next;
        self.apply(tx.then);
        Ok(())
    }

    /// Make the live switch follow a saved state.
    fn apply(&mut self, steps: Vec<Step>) {
        for step in steps {
            match step {
                Step::AddNetwork(name) => {
                    if let Some(n) = self.st.network(&name).cloned() {
                        self.add_live_net(&n);
                    }
                }
                Step::RemoveNetwork(name) => {
                    // A macvlan network's data plane is its parent's: `sync_parents` removes
                    // it with the parent's last network.
                    let shared = self.parents.values().any(|p| self.nets.get(&name).is_some_and(|n| n.id == p.id));
                    if let Some(n) = self.nets.remove(&name) {
                        if !shared {
                            self.dp.remove_network(n.id);
                        }
                        self.publish_routes();
                    }
                    info!(network = %name, "network removed");
                }
                Step::AttachPort(p) => {
                    let network = p.network.clone();
                    self.attach(*p);
                    // A network comes up with its first port: its gateway announces itself
                    // then (restore announces each network once, after all its ports).
                    let first = self.ports.values().filter(|l| l.network == network).count() == 1;
                    if let (true, Some(l)) = (first, self.nets.get(&network)) {
                        self.dp.announce(l.id);
                    }
                }
                Step::AttachParent(p) => self.attach_parent(*p),
                Step::DetachPort(name) => self.detach(&name),
                Step::DeleteLink(name) => {
                    if let Err(e) = self.sys.delete_link(&name) {
                        warn!(port = %name, "{e}");
                    }
                }
                Step::DeleteNetns(name) => self.sys.delete_netns(&name),
                Step::DeleteEtc(name) => self.sys.remove_sandbox_files(&name),
            }
        }
        // Endpoints, their addresses and the uplink's port may have changed.
        self.publish_routes();
        self.sync_parents();
    }

    fn undo(&mut self, undo: Vec<Undo>) {
        for u in undo.into_iter().rev() {
            match u {
                Undo::Link(name) => {
                    let _ = self.sys.delete_link(&name);
                }
                Undo::Netns(name) => self.sys.delete_netns(&name),
                Undo::Etc(name) => self.sys.remove_sandbox_files(&name),
            }
        }
    }

    /// Run `f` to fill a transaction, then commit it; if `f` fails, undo what it made.
    fn transact<T>(&mut self, f: impl FnOnce(&mut Self, &mut Tx) -> Result<T>) -> Result<T> {
        let mut tx = self.begin();
        match f(self, &mut tx) {
            Ok(v) => {
                self.commit(tx)?;
                Ok(v)
            }
            Err(e) => {
                self.undo(tx.undo);
                Err(e)
            }
        }
    }

    fn network(&self, name: &str) -> Result<&Network> {
        self.st.network(name).ok_or_else(|| Error::NoNetwork(name.into()))
    }

    /// A network's live side. Every saved network has one; if not, say so, never panic.
    fn live(&self, name: &str) -> Result<&LiveNet> {
        self.nets.get(name).ok_or_else(|| Error::NoNetwork(name.into()))
    }

    pub fn handle(&mut self, req: Request) -> std::result::Result<Value, String> {
        self.handle_typed(req).map_err(|e| e.to_string())
    }

    fn handle_typed(&mut self, req: Request) -> Result<Value> {
        match req {
            Request::NetworkLs => self.ls(),
            Request::NetworkCreate(c) => self.create(c),
            Request::NetworkInspect { names } => self.inspect(&names),
            Request::NetworkConnect(c) => self.connect(c),
            Request::NetworkDisconnect { network, target } => self.disconnect(&network, &target),
            Request::NetworkRm { names } => self.rm(&names),
            Request::NetworkPrune => self.prune(),
            Request::Fdb { network } => self.fdb(&network),
            Request::FdbAdd { network, mac, port } => self.fdb_add(&network, mac, &port),
            Request::FdbDel { network, mac } => self.fdb_del(&network, mac),
            Request::Stats => self.stats(),
            Request::Explain(e) => self.explain(&e),
            Request::SandboxCreate(c) => self.sandbox_create(c),
            Request::SandboxSetPid { name, pid } => self.sandbox_set_pid(&name, pid),
            Request::SandboxRm { name } => self.sandbox_rm(&name),
            Request::Ps => self.ps(),
            Request::UplinkSet { iface, address, gateway } => self.uplink_set(&iface, address, gateway),
            Request::UplinkShow => self.uplink_show(),
            Request::UplinkRm => self.uplink_rm(),
            Request::NatSessions { network } => self.nat_sessions(network.as_deref()),
            Request::Port { name } => self.port(&name),
            Request::Trace(_) => {
                Err(Error::invalid("a trace needs a connection of its own (see: vswitch trace --help)"))
            }
        }
    }

    // ---- networks ----------------------------------------------------------------------

    fn ls(&self) -> Result<Value> {
        let v: Vec<NetworkSummary> = self
            .st
            .networks
            .iter()
            .map(|n| NetworkSummary {
                id: short_id(&n.id),
                name: n.name.clone(),
                driver: n.driver_name().into(),
                subnets: n.ipam.iter().map(|s| s.subnet).collect(),
                internal: n.internal,
                ports: n.endpoints.len(),
            })
            .collect();
        json(v)
    }

    fn create(&mut self, c: CreateNetwork) -> Result<Value> {
        check_name(&c.name)?;
        if c.name == UPLINK {
            return Err(Error::invalid(format!(
                "'{UPLINK}' is the name of the switch's outside: set it with `vswitch uplink set`"
            )));
        }
        if self.st.network(&c.name).is_some() {
            return Err(Error::NetworkExists(c.name));
        }
        match c.driver.as_deref().unwrap_or("bridge") {
            "bridge" => {}
            "macvlan" => return self.create_macvlan(c),
            d @ "overlay" => return Err(Error::DriverNotYet(d.into())),
            d => return Err(Error::UnknownDriver(d.into())),
        }
        let mut mtu = DEFAULT_MTU;
        let mut inhibit_ipv4 = false;
        let mut icc = true;
        let boolean =
            |k: &str, v: &str| v.parse::<bool>().map_err(|_| Error::invalid(format!("-o {k}={v}: true or false")));
        for (k, v) in &c.options {
            match k.as_str() {
                "mtu" | "com.docker.network.driver.mtu" => {
                    mtu =
                        v.parse().ok().filter(|m| (68..=65535).contains(m)).ok_or_else(|| {
                            Error::invalid(format!("-o {k}={v}: the MTU is a number from 68 to 65535"))
                        })?
                }
                "com.docker.network.bridge.inhibit_ipv4" => inhibit_ipv4 = boolean(k, v)?,
                "icc" | "com.docker.network.bridge.enable_icc" => icc = boolean(k, v)?,
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown option '{k}' for the bridge driver (options: mtu, icc, \
                         com.docker.network.bridge.inhibit_ipv4)"
                    )))
                }
            }
        }
        let aging_secs = c.aging_secs.unwrap_or(DEFAULT_AGING_SECS);
        if aging_secs == 0 {
            return Err(Error::invalid("--aging-time must be at least 1 second"));
        }
        let max_learned = c.max_learned.unwrap_or(DEFAULT_MAX_LEARNED);
        if !(1..=1 << 24).contains(&max_learned) {
            return Err(Error::invalid("--max-learned must be between 1 and 16777216"));
        }
        if c.max_learned_per_port == Some(0) {
            return Err(Error::invalid("--max-learned-per-port must be at least 1"));
        }
        for (name, _) in &c.aux_addresses {
            if name.is_empty() {
                return Err(Error::invalid("--aux-address takes name=IP"));
            }
        }
        let net = Network {
            name: c.name.clone(),
            id: new_id(),
            created: unix_now(),
            internal: c.internal,
            ipam: self.plan_ipam(&c)?,
            driver: DriverOptions::Bridge(BridgeOptions {
                aging_secs,
                max_learned,
                mtu,
                gateway_mac: ipam::random_mac(),
                max_learned_per_port: c.max_learned_per_port,
                inhibit_ipv4,
                icc,
                uplink: None,
            }),
            endpoints: vec![],
            static_macs: vec![],
            docker_id: c.docker_id,
        };
        self.transact(|_, tx| {
            tx.next.networks.push(net.clone());
            tx.then.push(Step::AddNetwork(net.name.clone()));
            Ok(())
        })?;
        let subnets: Vec<String> = net.ipam.iter().map(|s| s.subnet.to_string()).collect();
        info!(network = %net.name, subnets = %subnets.join(","), internal = net.internal, "network created");
        json(net)
    }

    /// A new network's subnets, as `network create` asks for them, overlapping no other's.
    fn plan_ipam(&self, c: &CreateNetwork) -> Result<Vec<Subnet>> {
        let taken: Vec<_> =
            self.st.networks.iter().flat_map(|n| n.ipam.iter().map(move |s| (s.subnet, n.name.clone()))).collect();
        let req = ipam::Request {
            subnets: c.subnets.clone(),
            gateways: c.gateways.clone(),
            ip_ranges: c.ip_ranges.clone(),
            aux_addresses: c.aux_addresses.clone(),
            ipv6: c.ipv6,
        };
        ipam::plan(&req, &taken)
    }

    fn detail(&self, n: &Network) -> Result<NetworkDetail> {
        let t = self.live(&n.name)?.pipeline.table();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
        Ok(NetworkDetail {
            network: n.clone(),
            learned_macs: t.map_or(0, |t| t.learned()),
            not_learned_over_cap: t.map_or(0, |t| load(&t.over_limit)),
            dropped_over_port_quota: t.map_or(0, |t| load(&t.over_quota)),
            dns: self.live(&n.name)?.dns.as_ref().map(|d| d.read()),
            parent_attached: self.parent_attached(n),
        })
    }

    fn inspect(&self, names: &[String]) -> Result<Value> {
        let v = names.iter().map(|n| self.network(n).and_then(|n| self.detail(n))).collect::<Result<Vec<_>>>()?;
        json(v)
    }

    fn rm(&mut self, names: &[String]) -> Result<Value> {
        if names.is_empty() {
            return Err(Error::invalid("name at least one network to remove"));
        }
        for name in names {
            self.not_the_uplink(name, "remove (use `vswitch uplink rm`)")?;
            let n = self.network(name)?;
            // A macvlan network's host port goes with it.
            let ports: Vec<_> =
                n.endpoints.iter().map(|e| e.name.as_str()).filter(|&e| macvlan::host_port_of(n) != Some(e)).collect();
            if !ports.is_empty() {
                return Err(Error::NetworkInUse { name: name.clone(), ports: ports.join(", ") });
            }
        }
        self.remove_networks(names)?;
        json(names)
    }

    fn prune(&mut self) -> Result<Value> {
        let names: Vec<String> = self
            .st
            .networks
            .iter()
            .filter(|n| n.endpoints.iter().all(|e| macvlan::host_port_of(n) == Some(e.name.as_str())) && !n.is_uplink())
            .map(|n| n.name.clone())
            .collect();
        if !names.is_empty() {
            self.remove_networks(&names)?;
        }
        json(names)
    }

    fn remove_networks(&mut self, names: &[String]) -> Result<()> {
        self.transact(|_, tx| {
            for n in tx.next.networks.iter().filter(|n| names.contains(&n.name)) {
                if let Some(h) = macvlan::host_port_of(n) {
                    tx.then.push(Step::DetachPort(h.into()));
                    tx.then.push(Step::DeleteLink(h.into()));
                }
            }
            tx.next.networks.retain(|n| !names.contains(&n.name));
            tx.then.extend(names.iter().map(|n| Step::RemoveNetwork(n.clone())));
            Ok(())
        })
    }

    // ---- the uplink ----------------------------------------------------------------------

    /// Make `iface` the switch's outside: a network of its own (`UPLINK`) whose one port is
    /// the interface and whose gateway, answered by the switch with its own MAC, holds
    /// `address`. The host's own address on the interface, if any, is left alone.
    fn uplink_set(&mut self, iface: &str, address: Ipv4Net, next_hop: Option<Ipv4Addr>) -> Result<Value> {
        check_ifname(iface).map_err(Error::Invalid)?;
        if let Some(other) = macvlan::parent_user(&self.st, iface) {
            return Err(Error::AlreadyAttached {
                iface: iface.into(),
                network: format!("{other} (its macvlan parent)"),
            });
        }
        if let Some(n) = self.st.network(UPLINK) {
            let on = n.endpoints.first().map_or("no interface", |e| e.name.as_str());
            let why = if n.is_uplink() {
                format!("the uplink is set already (on {on}): remove it first with `vswitch uplink rm`")
            } else {
                format!("a network is named '{UPLINK}': the uplink needs that name (rename the network)")
            };
            return Err(Error::invalid(why));
        }
        if let Some(other) = self.st.attached(iface) {
            return Err(Error::AlreadyAttached { iface: iface.into(), network: other.name.clone() });
        }
        let subnet = address.trunc();
        let host = address.addr();
        if address.prefix_len() > 30 || host == subnet.network() || host == subnet.broadcast() {
            return Err(Error::invalid(format!(
                "--address {address}: give the uplink's own address and its subnet, like 192.0.2.10/24"
            )));
        }
        if let Some(g) = next_hop {
            if !subnet.contains(&g) || g == host || g == subnet.network() || g == subnet.broadcast() {
                return Err(Error::invalid(format!(
                    "--gateway {g}: the next hop is another host on the uplink's subnet {subnet}"
                )));
            }
        }
        let subnet_any = IpNet::V4(subnet);
        for n in &self.st.networks {
            if let Some(s) = n.ipam.iter().find(|s| s.subnet.contains(&subnet_any) || subnet_any.contains(&s.subnet)) {
                return Err(Error::invalid(format!(
                    "the uplink's subnet {subnet} overlaps network {}'s {}: the outside must be a subnet of its own",
                    n.name, s.subnet
                )));
            }
        }
        if self.sys.ifindex(iface).is_none() {
            return Err(Error::NoInterface(iface.into()));
        }
        let net = Network {
            name: UPLINK.into(),
            id: new_id(),
            created: unix_now(),
            internal: false,
            ipam: vec![Subnet {
                subnet: subnet_any,
                gateway: IpAddr::V4(host),
                ip_range: subnet_any,
                aux_addresses: Default::default(),
            }],
            driver: DriverOptions::Bridge(BridgeOptions {
                aging_secs: DEFAULT_AGING_SECS,
                max_learned: DEFAULT_MAX_LEARNED,
                mtu: DEFAULT_MTU,
                gateway_mac: ipam::random_mac(),
                max_learned_per_port: None,
                inhibit_ipv4: false,
                icc: true,
                uplink: Some(UplinkOptions { next_hop }),
            }),
            endpoints: vec![],
            static_macs: vec![],
            docker_id: None,
        };
        self.transact(|c, tx| {
            let id = c.free_port_id()?;
            let opened = c
                .sys
                .open_port(iface, PortKind::Uplink, c.dp.workers(), None)
                .map_err(|e| Error::Attach { iface: iface.into(), source: e })?;
            let mut net = net.clone();
            net.endpoints.push(Endpoint {
                name: iface.into(),
                kind: PortKind::Uplink,
                mac: net.bridge().map(|b| b.gateway_mac).expect("the uplink is a bridge network"),
                ipv4: Some(host),
                ipv6: None,
                created_tap: false,
                sandbox: None,
                max_learned: None,
                published: vec![],
                docker: None,
            });
            tx.next.networks.push(net);
            tx.then.push(Step::AddNetwork(UPLINK.into()));
            let p = NewPort { id, name: iface.into(), network: UPLINK.into(), kind: PortKind::Uplink, opened };
            tx.then.push(Step::AttachPort(Box::new(p)));
            Ok(())
        })?;
        info!(interface = iface, address = %address, next_hop = ?next_hop, "uplink set");
        // Its port is attached now: say where the switch is, and ask for the next hop.
        if let Some(l) = self.nets.get(UPLINK) {
            self.dp.announce(l.id);
        }
        self.uplink_show()
    }

    fn uplink_show(&self) -> Result<Value> {
        let Some(n) = self.st.network(UPLINK).filter(|n| n.is_uplink()) else { return Ok(Value::Null) };
        let (Some(s), Some(ep), Some(b)) = (n.subnet_v4(), n.endpoints.first(), n.bridge()) else {
            return Ok(Value::Null);
        };
        json(UplinkView {
            interface: ep.name.clone(),
            address: format!("{}/{}", s.gateway, s.subnet.prefix_len()),
            gateway: b.uplink.as_ref().and_then(|u| u.next_hop),
            mac: b.gateway_mac,
        })
    }

    fn uplink_rm(&mut self) -> Result<Value> {
        let Some(n) = self.st.network(UPLINK).filter(|n| n.is_uplink()) else {
            return Err(Error::invalid("no uplink is set"));
        };
        let ports: Vec<String> = n.endpoints.iter().map(|e| e.name.clone()).collect();
        self.transact(|c, tx| {
            for p in &ports {
                c.remove_endpoint_in(tx, UPLINK, p);
            }
            tx.next.networks.retain(|n| n.name != UPLINK);
            tx.then.push(Step::RemoveNetwork(UPLINK.into()));
            Ok(())
        })?;
        info!(interface = ports.join(","), "uplink removed");
        json(serde_json::json!({ "removed": ports }))
    }

    /// The workers' connection tables, one list.
    fn nat_sessions(&self, network: Option<&str>) -> Result<Value> {
        const LIMIT: usize = 100_000;
        let only = network.map(|n| self.live(n).map(|l| l.id)).transpose()?;
        let names: HashMap<NetId, &str> = self.nets.iter().map(|(n, l)| (l.id, n.as_str())).collect();
        let now = clock::now();
        let mut out = NatSessions { sessions: vec![], counters: NatCounters::default(), truncated: false };
        for (worker, sessions, st) in self.dp.nat_sessions(LIMIT) {
            out.truncated |= sessions.len() == LIMIT;
            let c = &mut out.counters;
            c.created += st.created;
            c.expired += st.expired;
            c.removed += st.removed;
            c.session_limit += st.session_limit;
            c.ports_exhausted += st.ports_exhausted;
            c.clash += st.clash;
            out.sessions.extend(sessions.iter().filter(|s| only.is_none_or(|n| n == s.tag)).map(|s| NatSession {
                network: names.get(&s.tag).map_or_else(|| format!("#{}", s.tag), |n| n.to_string()),
                proto: s.orig.proto.name().into(),
                inside: s.orig.src.to_string(),
                outside: s.reply.dst.to_string(),
                remote: s.orig.dst.to_string(),
                state: s.state.name().into(),
                idle_secs: now.saturating_sub(s.last_seen),
                worker,
            }));
        }
        json(out)
    }

    /// Check and resolve `-p` specs for an endpoint at `ipv4` on `network` (all or none).
    fn plan_publish(
        &self,
        st: &State,
        network: &str,
        ipv4: Option<Ipv4Addr>,
        specs: &[String],
        owner: &str,
    ) -> Result<Vec<PublishedPort>> {
        if specs.is_empty() {
            return Ok(vec![]);
        }
        if st.network(network).is_some_and(|n| n.macvlan().is_some()) {
            return Err(Error::invalid(format!(
                "-p publishes through the switch's NAT; an endpoint of macvlan network {network} is on the LAN \
                 with an address of its own: reach it there"
            )));
        }
        let uplink = st.network(UPLINK).filter(|n| n.is_uplink()).and_then(|n| n.subnet_v4()).map(|s| s.gateway);
        let Some(IpAddr::V4(outside)) = uplink else {
            return Err(Error::invalid("-p publishes at the uplink's address: set one first (vswitch uplink set)"));
        };
        let net = st.network(network).ok_or_else(|| Error::NoNetwork(network.into()))?;
        if net.internal {
            return Err(Error::invalid(format!("network {network} is internal: nothing on it is published")));
        }
        let Some(target) = ipv4 else {
            return Err(Error::invalid(format!("-p needs an IPv4 address: network {network} has none")));
        };
        let mut table = publications(st);
        let mut out = vec![];
        for spec in specs {
            let parsed: PortSpec = spec.parse().map_err(|e: PublishError| Error::invalid(e.to_string()))?;
            if let Some(ip) = parsed.host_ip.filter(|&ip| ip != outside) {
                return Err(Error::invalid(format!(
                    "-p {spec}: {ip} is not the switch's outside address ({outside}, the uplink's)"
                )));
            }
            let added = table.publish(&parsed, target, owner).map_err(|e| Error::invalid(format!("-p {spec}: {e}")))?;
            out.extend(added.into_iter().map(|p| PublishedPort {
                proto: p.proto.name().into(),
                host_ip: p.host_ip,
                host_port: p.host_port,
                port: p.target.port,
            }));
        }
        Ok(out)
    }

    /// The published ports of a sandbox (or of an endpoint's port), as `vswitch port` lists them.
    fn port(&self, name: &str) -> Result<Value> {
        let outside = self.st.network(UPLINK).and_then(|n| n.subnet_v4()).map(|s| s.gateway.to_string());
        let eps: Vec<&Endpoint> = self
            .st
            .networks
            .iter()
            .flat_map(|n| n.endpoints.iter())
            .filter(|e| e.name == name || e.sandbox.as_ref().is_some_and(|s| s.sandbox == name))
            .collect();
        if eps.is_empty() {
            return Err(Error::NoSandbox(name.into()));
        }
        let list: Vec<Value> = eps
            .iter()
            .flat_map(|e| e.published.iter())
            .map(|p| {
                let ip = p.host_ip.map(|i| i.to_string()).or(outside.clone()).unwrap_or_default();
                serde_json::json!({ "port": p.port, "proto": p.proto, "host_ip": ip, "host_port": p.host_port })
            })
            .collect();
        json(list)
    }

    /// Refuse to treat the uplink as an ordinary network.
    fn not_the_uplink(&self, network: &str, doing: &str) -> Result<()> {
        if self.st.network(network).is_some_and(|n| n.is_uplink()) {
            return Err(Error::invalid(format!(
                "'{network}' is the switch's uplink, not a network to {doing} (see: vswitch uplink --help)"
            )));
        }
        Ok(())
    }

    // ---- endpoints ---------------------------------------------------------------------

    fn connect(&mut self, c: Connect) -> Result<Value> {
        self.network(&c.network)?;
        self.not_the_uplink(&c.network, "connect endpoints to")?;
        let ep = match (&c.iface, &c.netns) {
            (Some(_), Some(_)) => return Err(Error::invalid("give an interface or --netns, not both")),
            (None, None) => {
                return Err(Error::invalid(
                    "name an interface to attach, or give a namespace an endpoint with --netns NS",
                ))
            }
            (Some(iface), None) => self.connect_iface(&c.network, iface, c.tap, &c.endpoint)?,
            (None, Some(ns)) => {
                self.connect_netns(&c.network, ns, c.name.as_deref(), c.sandbox_id.as_deref(), &c.endpoint)?
            }
        };
        json(EndpointView { network: c.network, endpoint: ep })
    }

    fn connect_iface(&mut self, network: &str, iface: &str, tap: bool, o: &EndpointOptions) -> Result<Endpoint> {
        check_ifname(iface).map_err(Error::Invalid)?;
        if let Some(other) = self.st.attached(iface) {
            return Err(Error::AlreadyAttached { iface: iface.into(), network: other.name.clone() });
        }
        if let Some(other) = macvlan::parent_user(&self.st, iface) {
            return Err(Error::AlreadyAttached {
                iface: iface.into(),
                network: format!("{other} (its macvlan parent)"),
            });
        }
        if !o.aliases.is_empty() {
            return Err(Error::invalid("--alias names an endpoint in a namespace: use it with --netns"));
        }
        if o.ifname.is_some() {
            return Err(Error::invalid("--ifname names the interface inside a namespace: use it with --netns"));
        }
        if !o.publish.is_empty() {
            return Err(Error::invalid(
                "-p publishes a port of an endpoint the switch sets up: use it with --netns or vswitch run",
            ));
        }
        macvlan::check_room(self.network(network)?)?;
        let kind = if tap { PortKind::Tap } else { PortKind::AfPacket };
        if !tap && self.sys.ifindex(iface).is_none() {
            return Err(Error::NoInterface(iface.into()));
        }
        self.transact(|c, tx| {
            let net = tx.next.network(network).expect("checked");
            let (ipv4, ipv6) = ipam::allocate(net, o.ip, o.ip6)?;
            let mac = endpoint_mac(net, o.mac, ipv4, ipv6)?;
            let id = c.free_port_id()?;
            let opened = c
                .sys
                .open_port(iface, kind, c.dp.workers(), None)
                .map_err(|e| Error::Attach { iface: iface.into(), source: e })?;
            let ep = Endpoint {
                name: iface.into(),
                kind,
                mac,
                ipv4,
                ipv6,
                created_tap: opened.created,
                sandbox: None,
                max_learned: o.max_learned,
                published: vec![],
                docker: None,
            };
            tx.next.network_mut(network).expect("checked").endpoints.push(ep.clone());
            let p = NewPort { id, name: iface.into(), network: network.into(), kind, opened };
            tx.then.push(Step::AttachPort(Box::new(p)));
            Ok(ep)
        })
    }

    fn connect_netns(
        &mut self,
        network: &str,
        ns: &str,
        name: Option<&str>,
        sandbox_id: Option<&str>,
        o: &EndpointOptions,
    ) -> Result<Endpoint> {
        let path = netns::resolve(ns);
        let identity = self.sys.netns_identity(&path).ok_or_else(|| Error::NoNamespace(path.display().to_string()))?;
        let existing =
            self.st.sandboxes.iter().find(|s| s.ns_identity == Some(identity) && s.mode != NetMode::Host).cloned();
        let sb = match existing {
            Some(s) => {
                if name.is_some_and(|n| n != s.name) {
                    return Err(Error::invalid(format!("that namespace is sandbox {} already", s.name)));
                }
                s
            }
            None => {
                let name = match name {
                    Some(n) => n.to_string(),
                    None => default_sandbox_name(ns, &path),
                };
                check_name(&name)?;
                if self.st.sandbox(&name).is_some() {
                    return Err(Error::SandboxExists(name));
                }
                if let Some(id) = sandbox_id {
                    if !(12..=128).contains(&id.len()) || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                        return Err(Error::invalid(format!("sandbox id '{id}': 12 to 128 letters and digits")));
                    }
                    if self.st.sandboxes.iter().any(|s| s.id == id) {
                        return Err(Error::invalid(format!("a sandbox with id {id} exists")));
                    }
                }
                Sandbox {
                    name,
                    id: sandbox_id.map_or_else(new_id, str::to_string),
                    mode: NetMode::Networks,
                    netns: Some(path.clone()),
                    ns_identity: Some(identity),
                    owned: false,
                    process: None,
                    created: unix_now(),
                    etc: None,
                    dns: vec![],
                }
            }
        };
        self.transact(|c, tx| {
            let mut sb = sb;
            let new = tx.next.sandbox(&sb.name).is_none();
            // A namespace `ip netns` made gets a resolv.conf that points at the network's
            // DNS (`ip netns exec` shows it as /etc/resolv.conf), unless it has its own.
            let etc = netns::named(&path).filter(|n| new && !c.sys.sandbox_files_exist(n)).map(str::to_string);
            sb.etc = etc.clone();
            if new {
                tx.next.sandboxes.push(sb.clone());
            }
            let ep = c.add_sandbox_endpoint(tx, network, &sb, o)?;
            if let Some(name) = etc {
                let host = c.sys.host_resolv_conf();
                let resolv =
                    tx.next.network(network).and_then(dns_server).map(|gw| netns::resolv_conf_embedded(&host, gw));
                let addrs: Vec<IpAddr> = ep.ipv4.map(IpAddr::V4).into_iter().chain(ep.ipv6.map(IpAddr::V6)).collect();
                let resolv = resolv.unwrap_or_else(|| netns::resolv_conf_from(&host));
                c.sys.write_sandbox_files(&name, &resolv, &netns::hosts_for(&sb.name, &addrs))?;
                tx.undo.push(Undo::Etc(name));
            }
            Ok(ep)
        })
    }

    /// Give sandbox `sb` an endpoint on `network`: an interface pair plumbed into its
    /// namespace (`eth0`, then `eth1`...; the default route for its first network) and the
    /// switch's end opened as a port.
    fn add_sandbox_endpoint(
        &mut self,
        tx: &mut Tx,
        network: &str,
        sb: &Sandbox,
        o: &EndpointOptions,
    ) -> Result<Endpoint> {
        let net = tx.next.network(network).ok_or_else(|| Error::NoNetwork(network.into()))?;
        if tx.next.endpoints_of(&sb.name).any(|(n, _)| n.name == network) {
            return Err(Error::invalid(format!("sandbox {} already has an endpoint on network {network}", sb.name)));
        }
        for a in &o.aliases {
            check_name(a)
                .map_err(|_| Error::invalid(format!("invalid alias '{a}': use letters, digits, '_', '.' or '-'")))?;
        }
        let netns = sb
            .netns
            .clone()
            .ok_or_else(|| Error::invalid(format!("sandbox {} has no namespace of its own", sb.name)))?;
        let (ipv4, ipv6) = ipam::allocate(net, o.ip, o.ip6)?;
        let mac = endpoint_mac(net, o.mac, ipv4, ipv6)?;
        let published = self.plan_publish(&tx.next, network, ipv4, &o.publish, &sb.name)?;
        let net = tx.next.network(network).expect("checked");
        // A name nothing in the namespace has: not our other endpoints', nor the namespace's
        // own interfaces (a container's eth0 the switch did not make).
        let mut taken: Vec<String> = self.sys.netns_links(&netns)?;
        let mut has_default = false;
        for (_, e) in tx.next.endpoints_of(&sb.name) {
            if let Some(s) = &e.sandbox {
                taken.push(s.ifname.clone());
                has_default |= s.default_route;
            }
        }
        let ifname = match &o.ifname {
            Some(n) => {
                check_ifname(n).map_err(Error::Invalid)?;
                if taken.contains(n) {
                    return Err(Error::invalid(format!("{} already has an interface {n}", netns.display())));
                }
                n.clone()
            }
            None => (0..).map(|i| format!("eth{i}")).find(|n| !taken.contains(n)).expect("a free name"),
        };
        // The default routes go with the first network (and to the next one if that leaves).
        let first = !has_default && !net.internal;
        let gw = |v6: bool| {
            let s = if v6 { net.subnet_v6() } else { net.subnet_v4() };
            s.map(|s| s.gateway).filter(|_| first)
        };
        let host = new_host_ifname();
        let prefix = |v6: bool| {
            let s = if v6 { net.subnet_v6() } else { net.subnet_v4() };
            s.map(|s| s.subnet.prefix_len()).unwrap_or(0)
        };
        let plumbing = Plumbing {
            host: &host,
            netns: &netns,
            ifname: &ifname,
            mac,
            mtu: net.mtu(),
            ipv4: ipv4.map(|a| (a, prefix(false))),
            ipv6: ipv6.map(|a| (a, prefix(true))),
            gateway4: gw(false).and_then(|g| match g {
                IpAddr::V4(g) => Some(g),
                IpAddr::V6(_) => None,
            }),
            gateway6: gw(true).and_then(|g| match g {
                IpAddr::V6(g) => Some(g),
                IpAddr::V4(_) => None,
            }),
        };
        self.sys.plumb(&plumbing)?;
        let ep = Endpoint {
            sandbox: Some(SandboxLink {
                sandbox: sb.name.clone(),
                ifname,
                aliases: o.aliases.clone(),
                default_route: first,
            }),
            max_learned: o.max_learned,
            published,
            ..Endpoint::veth_end(host.clone(), mac, ipv4, ipv6)
        };
        self.attach_veth_end(tx, network, ep)
    }

    /// The switch's end of a veth pair just made (`ep.name`) as a port of `network`: undone
    /// with the transaction, opened (an endpoint that publishes ports is read by one worker,
    /// the one its sessions live on), `ep` saved in `tx` and the port attached after the save.
    fn attach_veth_end(&mut self, tx: &mut Tx, network: &str, ep: Endpoint) -> Result<Endpoint> {
        tx.undo.push(Undo::Link(ep.name.clone()));
        macvlan::check_room(tx.next.network(network).ok_or_else(|| Error::NoNetwork(network.into()))?)?;
        let id = self.free_port_id()?;
        let pin = ep.ipv4.filter(|_| !ep.published.is_empty()).map(|a| owner_of(a, self.dp.workers()));
        let opened = self
            .sys
            .open_port(&ep.name, PortKind::AfPacket, self.dp.workers(), pin)
            .map_err(|e| Error::Attach { iface: ep.name.clone(), source: e })?;
        tx.next.network_mut(network).expect("checked").endpoints.push(ep.clone());
        let p = NewPort { id, name: ep.name.clone(), network: network.into(), kind: PortKind::AfPacket, opened };
        tx.then.push(Step::AttachPort(Box::new(p)));
        Ok(ep)
    }

    /// Remove endpoint `port` of `network` in `tx`: its port, its static MACs, the interface
    /// pair the switch made for it, and a sandbox it leaves empty that the switch did not make.
    fn remove_endpoint_in(&self, tx: &mut Tx, network: &str, port: &str) {
        let Some(n) = tx.next.network_mut(network) else { return };
        let Some(ep) = n.endpoints.iter().find(|e| e.name == port).cloned() else { return };
        n.endpoints.retain(|e| e.name != port);
        n.static_macs.retain(|m| m.port != port);
        tx.then.push(Step::DetachPort(port.into()));
        if ep.docker.is_some() {
            tx.then.push(Step::DeleteLink(port.into())); // the pair Docker's container had
        }
        if let Some(s) = &ep.sandbox {
            tx.then.push(Step::DeleteLink(port.into()));
            let left = tx.next.endpoints_of(&s.sandbox).count();
            let keep = tx.next.sandbox(&s.sandbox).is_some_and(|sb| sb.owned);
            if left == 0 && !keep {
                if let Some(etc) = tx.next.sandbox(&s.sandbox).and_then(|sb| sb.etc.clone()) {
                    tx.then.push(Step::DeleteEtc(etc));
                }
                tx.next.sandboxes.retain(|sb| sb.name != s.sandbox);
            }
        }
    }

    fn disconnect(&mut self, network: &str, target: &str) -> Result<Value> {
        self.not_the_uplink(network, "disconnect from (use `vswitch uplink rm`)")?;
        let net = self.network(network)?;
        let port = match net.endpoint(target) {
            Some(e) => e.name.clone(),
            // A sandbox's name, or its id (an engine's container id).
            None => match net.endpoints.iter().find(|e| {
                e.sandbox.as_ref().is_some_and(|s| {
                    s.sandbox == target || self.st.sandbox(&s.sandbox).is_some_and(|sb| sb.id == target)
                })
            }) {
                Some(e) => e.name.clone(),
                None => {
                    return Err(match self.st.attached(target) {
                        Some(o) => Error::AttachedElsewhere {
                            iface: target.into(),
                            network: network.into(),
                            other: o.name.clone(),
                        },
                        None => Error::NotAttached { iface: target.into(), network: network.into() },
                    })
                }
            },
        };
        if macvlan::host_port_of(net) == Some(port.as_str()) {
            return Err(Error::invalid(format!(
                "{port} is network {network}'s host port: it goes with the network (vswitch network rm {network})"
            )));
        }
        self.transact(|c, tx| {
            c.remove_endpoint_in(tx, network, &port);
            Ok(())
        })?;
        json(serde_json::json!({ "network": network, "disconnected": target }))
    }

    // ---- sandboxes ---------------------------------------------------------------------

    fn sandbox_create(&mut self, c: CreateSandbox) -> Result<Value> {
        let name = c.name.clone().unwrap_or_else(|| format!("vs-{}", random_hex(3)));
        check_name(&name)?;
        if self.st.sandbox(&name).is_some() {
            return Err(Error::SandboxExists(name));
        }
        let mut sb = Sandbox {
            name: name.clone(),
            id: new_id(),
            mode: NetMode::Networks,
            netns: None,
            ns_identity: None,
            owned: false,
            process: None,
            created: unix_now(),
            etc: None,
            dns: c.dns.clone(),
        };
        let has_endpoint = matches!(c.network, RunNetwork::Network(_));
        let given = c.endpoint.ip.is_some()
            || c.endpoint.ip6.is_some()
            || c.endpoint.mac.is_some()
            || !c.endpoint.aliases.is_empty();
        if given && !has_endpoint {
            return Err(Error::invalid("--ip, --ip6, --mac and --alias need --network NAME"));
        }
        match &c.network {
            RunNetwork::Network(n) => {
                self.network(n)?;
                self.not_the_uplink(n, "run in")?;
            }
            RunNetwork::Container(other) => {
                let o = self.st.sandbox(other).ok_or_else(|| Error::NoSandbox(other.clone()))?;
                if o.netns.is_none() {
                    return Err(Error::invalid(format!(
                        "sandbox {other} uses the host's network: run with --network host"
                    )));
                }
                sb.mode = NetMode::Container(other.clone());
                sb.netns = o.netns.clone();
                sb.ns_identity = o.ns_identity;
            }
            RunNetwork::Host => sb.mode = NetMode::Host,
            RunNetwork::None => sb.mode = NetMode::None,
        }
        self.transact(|c2, tx| {
            if matches!(sb.mode, NetMode::Networks | NetMode::None) {
                let path = c2.sys.create_netns(&name)?;
                tx.undo.push(Undo::Netns(name.clone()));
                sb.ns_identity = c2.sys.netns_identity(&path);
                sb.netns = Some(path);
                sb.owned = true;
            }
            tx.next.sandboxes.push(sb.clone());
            let mut addrs = vec![];
            if let RunNetwork::Network(n) = &c.network {
                let ep = c2.add_sandbox_endpoint(tx, n, &sb, &c.endpoint)?;
                addrs.extend(ep.ipv4.map(IpAddr::V4));
                addrs.extend(ep.ipv6.map(IpAddr::V6));
            }
            if sb.owned {
                let host = c2.sys.host_resolv_conf();
                let resolv = match &c.network {
                    RunNetwork::Network(n) => {
                        tx.next.network(n).and_then(dns_server).map(|gw| netns::resolv_conf_embedded(&host, gw))
                    }
                    _ => None,
                };
                let resolv = resolv.unwrap_or_else(|| netns::resolv_conf_from(&host));
                c2.sys.write_sandbox_files(&name, &resolv, &netns::hosts_for(&name, &addrs))?;
            }
            Ok(())
        })?;
        info!(sandbox = %name, mode = %sb.mode.name(), "sandbox created");
        json(self.sandbox_view(self.st.sandbox(&name).expect("just saved")))
    }

    fn sandbox_set_pid(&mut self, name: &str, pid: u32) -> Result<Value> {
        self.st.sandbox(name).ok_or_else(|| Error::NoSandbox(name.into()))?;
        let start = self.sys.process_start(pid).ok_or_else(|| Error::invalid(format!("no process {pid}")))?;
        self.transact(|_, tx| {
            if let Some(s) = tx.next.sandboxes.iter_mut().find(|s| s.name == name) {
                s.process = Some(Process { pid, start });
            }
            Ok(())
        })?;
        json(serde_json::json!({ "name": name, "pid": pid }))
    }

    fn running(&self, sb: &Sandbox) -> bool {
        sb.process.is_some_and(|p| self.sys.process_start(p.pid) == Some(p.start))
    }

    /// Remove sandbox `name` in `tx`: its endpoints, and its namespace if the switch made it.
    fn remove_sandbox_in(&self, tx: &mut Tx, name: &str) {
        let eps: Vec<(String, String)> =
            tx.next.endpoints_of(name).map(|(n, e)| (n.name.clone(), e.name.clone())).collect();
        for (net, port) in eps {
            self.remove_endpoint_in(tx, &net, &port);
        }
        if let Some(sb) = tx.next.sandbox(name).cloned() {
            if sb.owned {
                tx.then.push(Step::DeleteNetns(sb.name.clone()));
            }
            if let Some(etc) = sb.etc {
                tx.then.push(Step::DeleteEtc(etc));
            }
            tx.next.sandboxes.retain(|s| s.name != name);
        }
    }

    fn sandbox_rm(&mut self, name: &str) -> Result<Value> {
        let sb = self.st.sandbox(name).ok_or_else(|| Error::NoSandbox(name.into()))?.clone();
        if let Some(user) = self.st.sandboxes.iter().find(|s| s.mode == NetMode::Container(name.into())) {
            return Err(Error::invalid(format!("sandbox {} shares {name}'s network: remove it first", user.name)));
        }
        self.transact(|c, tx| {
            c.remove_sandbox_in(tx, name);
            Ok(())
        })?;
        // Only once it is gone from the state: a failed save leaves the process running.
        let stopping = sb.process.filter(|_| self.running(&sb));
        if let Some(p) = stopping {
            self.sys.stop_process(p);
        }
        info!(sandbox = %name, "sandbox removed");
        json(serde_json::json!({ "removed": name, "stopping": stopping }))
    }

    fn sandbox_view(&self, sb: &Sandbox) -> SandboxView {
        let etc_name = match &sb.mode {
            NetMode::Container(other) => self.st.sandbox(other).filter(|o| o.owned).map(|o| o.name.clone()),
            _ => sb.owned.then(|| sb.name.clone()),
        };
        SandboxView {
            name: sb.name.clone(),
            id: short_id(&sb.id),
            mode: sb.mode.name(),
            netns: sb.netns.clone(),
            etc_name,
            pid: sb.process.map(|p| p.pid),
            running: self.running(sb),
            endpoints: self
                .st
                .endpoints_of(&sb.name)
                .map(|(n, e)| EndpointView { network: n.name.clone(), endpoint: e.clone() })
                .collect(),
        }
    }

    fn ps(&self) -> Result<Value> {
        json(self.st.sandboxes.iter().map(|s| self.sandbox_view(s)).collect::<Vec<_>>())
    }

    // ---- MAC tables ----------------------------------------------------------------------

    fn port_names(&self) -> HashMap<PortId, &str> {
        let mut names: HashMap<PortId, &str> = self.ports.iter().map(|(name, p)| (p.id, name.as_str())).collect();
        names.insert(GATEWAY_PORT, "gateway");
        names
    }

    fn fdb(&self, network: &str) -> Result<Value> {
        let net = self.network(network)?;
        if net.macvlan().is_some() {
            return json(macvlan::fdb(net));
        }
        let names = self.port_names();
        let now = clock::now();
        let v: Vec<FdbEntry> = self
            .bridge_table(network)?
            .entries()
            .into_iter()
            .map(|e| FdbEntry {
                mac: e.mac,
                port: names.get(&e.port).unwrap_or(&"?").to_string(),
                age: now.saturating_sub(e.last_seen),
                kind: if e.is_static { "static" } else { "learned" }.into(),
            })
            .collect();
        json(v)
    }

    fn fdb_add(&mut self, network: &str, mac: MacAddr, port: &str) -> Result<Value> {
        let net = self.network(network)?;
        if !net.endpoints.iter().any(|e| e.name == port) {
            return Err(Error::NotAttached { iface: port.into(), network: network.into() });
        }
        if mac.is_multicast() {
            return Err(Error::invalid(format!("{mac} is a group address; static entries take a unicast MAC")));
        }
        if net.bridge().is_some_and(|b| mac == b.gateway_mac) {
            return Err(Error::invalid(format!("{mac} is the network's gateway")));
        }
        let id = self.ports.get(port).ok_or_else(|| Error::NoPort(port.into()))?.id;
        let table = self.bridge_table(network)?;
        if !table.has_room_for_static(mac) {
            return Err(Error::invalid(crate::fdb::NoRoom(mac).to_string()));
        }
        // Saved first, then published: only the control plane adds static entries, so the
        // room checked above is still there.
        self.transact(|_, tx| {
            let n = tx.next.network_mut(network).ok_or_else(|| Error::NoNetwork(network.into()))?;
            n.static_macs.retain(|m| m.mac != mac);
            n.static_macs.push(StaticMac { mac, port: port.into() });
            Ok(())
        })?;
        if let Err(e) = table.add_static(mac, id) {
            error!(network, "saved but not applied: {e}");
        }
        json(serde_json::json!({ "mac": mac, "port": port, "type": "static" }))
    }

    fn fdb_del(&mut self, network: &str, mac: MacAddr) -> Result<Value> {
        let net = self.network(network)?;
        if net.bridge().is_some_and(|b| mac == b.gateway_mac) {
            return Err(Error::invalid(format!("{mac} is the network's gateway: it stays")));
        }
        let table = self.bridge_table(network)?;
        let is_static = net.static_macs.iter().any(|m| m.mac == mac);
        if !is_static && table.lookup(mac).is_none() {
            return Err(Error::invalid(format!("no entry for {mac} in network {network}")));
        }
        if is_static {
            self.transact(|_, tx| {
                tx.next.network_mut(network).expect("checked").static_macs.retain(|m| m.mac != mac);
                Ok(())
            })?;
        }
        table.remove(mac);
        json(serde_json::json!({ "mac": mac, "removed": true }))
    }

    // ---- counters, traces, explain -------------------------------------------------------

    fn stats(&self) -> Result<Value> {
        let mut v: Vec<PortStatsView> = self
            .ports
            .iter()
            .map(|(name, p)| PortStatsView {
                port: name.clone(),
                network: p.network.clone(),
                kind: p.kind.name().into(),
                totals: p.shared.stats.totals(),
            })
            .collect();
        // Each network's gateway counts as a port: frames to it and its replies, and what a
        // flood of requests to it cost (gateway_busy).
        v.extend(self.nets.iter().filter(|(_, n)| n.pipeline.gateway().is_some()).map(|(name, n)| PortStatsView {
            port: "gateway".into(),
            network: name.clone(),
            kind: "gateway".into(),
            totals: n.gateway.stats.totals(),
        }));
        v.sort_by(|a, b| (&a.network, &a.port).cmp(&(&b.network, &b.port)));
        json(v)
    }

    /// Check a trace request in full, then start it on the workers. Returns the tracer and
    /// the names of the ports it watches now.
    pub fn start_trace(&mut self, r: &TraceRequest) -> std::result::Result<(Arc<Tracer>, Vec<String>), String> {
        self.start_trace_typed(r).map_err(|e| e.to_string())
    }

    fn start_trace_typed(&mut self, r: &TraceRequest) -> Result<(Arc<Tracer>, Vec<String>)> {
        if let Some(n) = &r.network {
            self.network(n)?;
        } else if r.ports.is_empty() {
            return Err(Error::invalid("name a network or at least one --port to trace"));
        }
        for p in &r.ports {
            let live = self.ports.get(p).ok_or_else(|| Error::NoPort(p.clone()))?;
            if let Some(n) = r.network.as_ref().filter(|n| **n != live.network) {
                return Err(Error::PortElsewhere { port: p.clone(), network: n.clone(), other: live.network.clone() });
            }
        }
        if r.snaplen == 0 {
            return Err(Error::invalid("--snaplen must be at least 1"));
        }
        if !(1..=1 << 20).contains(&r.queue) {
            return Err(Error::invalid("--buffer must be between 1 and 1048576 frames"));
        }
        let filter = match r.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            Some(expr) => Some(Filter::compile(expr).map_err(Error::Invalid)?),
            None => None,
        };
        let (select, mut names) = match &r.network {
            Some(n) if r.ports.is_empty() && self.network(n)?.macvlan().is_some() => {
                // Its data plane is shared with the parent's other networks: by port.
                let mut names: Vec<String> = self.network(n)?.endpoints.iter().map(|e| e.name.clone()).collect();
                names.extend(self.network(n)?.macvlan().and_then(|m| m.parent.clone()));
                let ids = names.iter().filter_map(|p| Some(self.ports.get(p)?.id)).collect();
                (Select::Ports(ids), names)
            }
            Some(n) if r.ports.is_empty() => {
                let names = self.network(n)?.endpoints.iter().map(|e| e.name.clone()).collect();
                (Select::Network(self.live(n)?.id), names)
            }
            _ => (Select::Ports(r.ports.iter().filter_map(|p| Some(self.ports.get(p)?.id)).collect()), r.ports.clone()),
        };
        names.sort();
        let t = Arc::new(Tracer::new(select, filter, r.snaplen as usize, r.queue));
        self.traces.push(t.clone());
        self.dp.set_traces(self.traces.clone().into());
        info!(ports = ?names, filter = r.filter.as_deref().unwrap_or(""), "trace started");
        Ok((t, names))
    }

    /// Stop a trace; once this returns no worker offers it another frame.
    pub fn stop_trace(&mut self, t: &Arc<Tracer>) {
        self.traces.retain(|x| !Arc::ptr_eq(x, t));
        self.dp.set_traces(self.traces.clone().into());
        let (captured, dropped) = t.counts();
        info!(captured, dropped, "trace stopped");
    }

    fn explain(&self, r: &ExplainRequest) -> Result<Value> {
        let n = self.network(&r.network)?;
        let parent = n.macvlan().and_then(|m| m.parent.as_deref());
        let in_port = match self.ports.get(&r.in_port) {
            Some(p) if p.network == r.network || parent == Some(r.in_port.as_str()) => p.id,
            Some(p) => {
                return Err(Error::PortElsewhere {
                    port: r.in_port.clone(),
                    network: r.network.clone(),
                    other: p.network.clone(),
                })
            }
            None => {
                return Err(Error::invalid(format!(
                    "no port named '{}' (see: vswitch network inspect {})",
                    r.in_port, r.network
                )))
            }
        };
        let frames = r
            .frames
            .iter()
            .enumerate()
            .map(|(i, h)| {
                crate::frame_spec::hex(h).ok_or_else(|| Error::invalid(format!("frame {} is not hex", i + 1)))
            })
            .collect::<Result<Vec<_>>>()?;
        let ports = n
            .endpoints
            .iter()
            .map(|e| e.name.as_str())
            .chain(parent)
            .filter_map(|e| self.ports.get(e).map(|p| (e, p)))
            .map(|(e, p)| PortView { id: p.id, name: e.into(), max_frame: p.shared.max_frame() })
            .collect();
        let routes = Routes::new(
            self.st
                .networks
                .iter()
                .filter_map(|x| Some((x, self.nets.get(&x.name)?.id)))
                .flat_map(|(x, id)| x.ipam.iter().map(move |s| (s.subnet, id)))
                .collect(),
        );
        let view = NetView {
            name: &n.name,
            pipeline: &self.live(&n.name)?.pipeline,
            routes: &routes,
            max_learned: n.bridge().map_or(0, |b| b.max_learned),
            ports,
        };
        json(explain::explain(&view, in_port, &frames, clock::now()))
    }

    pub fn port_name(&self, id: PortId) -> Option<String> {
        if id == GATEWAY_PORT {
            return Some("gateway".into());
        }
        self.ports.iter().find(|(_, p)| p.id == id).map(|(n, _)| n.clone())
    }

    // ---- housekeeping ----------------------------------------------------------------------

    /// Once a second: age MAC tables, count TAP overruns, save a state the world changed if
    /// that failed before.
    pub fn tick(&mut self) {
        self.retry_reopening();
        let slot = self.dp.workers();
        for (name, p) in self.ports.iter_mut().filter(|(_, p)| p.kind == PortKind::Tap) {
            let Some(now) = tap_tx_dropped(name) else { continue }; // moved to another namespace
            let before = p.tap_dropped.replace(now).unwrap_or(now);
            if now > before {
                let c = &p.shared.stats.worker(slot).drops[crate::pipeline::DropReason::RxOverrun as usize];
                crate::stats::bump(c, now - before);
            }
        }
        if self.unsaved {
            match self.dir.save(&self.st) {
                Ok(()) => {
                    info!("state saved");
                    self.unsaved = false;
                }
                Err(e) => tracing::debug!("{e}"),
            }
        }
        // A table is swept for old entries every eighth of its aging time (at most every
        // 30 s), and only if it learned anything: an idle host with many networks does not
        // read them all every second. Entries live at most an eighth longer than asked.
        let now = clock::now();
        for n in &self.st.networks {
            let Some(aging) = n.bridge().map(|b| b.aging_secs) else { continue };
            if let Some(l) = self.nets.get_mut(&n.name) {
                let Some(table) = l.pipeline.table() else { continue };
                if now >= l.next_sweep && table.learned() > 0 {
                    table.age(now, aging);
                    l.next_sweep = now + (aging / 8).clamp(1, 30);
                }
            }
        }
        // A macvlan parent that went away is attached again when it is back.
        self.sync_parents();
    }

    /// Every port of the state with the interface index it is bound to: those open, and
    /// those waiting to be opened again.
    fn ifindexes(&self) -> impl Iterator<Item = (&String, Option<u32>)> {
        let live = self.ports.iter().map(|(n, p)| (n, p.ifindex));
        live.chain(self.reopening.iter().map(|(n, i)| (n, *i)))
    }

    /// The kernel said a link changed or went away.
    pub fn link_event(&mut self, ev: LinkEvent) {
        match ev {
            LinkEvent::Changed(l) => {
                if let Some(p) = self.ports.values().find(|p| p.ifindex == Some(l.index)) {
                    if l.mtu > 0 {
                        p.shared.set_mtu(l.mtu);
                    }
                }
            }
            LinkEvent::Deleted(l) => {
                let gone = self.ifindexes().find(|(_, i)| *i == Some(l.index));
                if let Some(name) = gone.map(|(n, _)| n.clone()) {
                    self.remove_faulted(&name, "interface deleted");
                }
            }
            LinkEvent::Lost => {
                // Events were lost: ask the kernel for every link, and go by its answer only
                // (a failed question, out of descriptors say, removes nothing).
                let links = match self.sys.links() {
                    Ok(l) => l,
                    Err(e) => return warn!("link events were lost and the links cannot be listed: {e}"),
                };
                let gone: Vec<String> = self
                    .ifindexes()
                    .filter(|(name, i)| i.is_some_and(|i| !links.iter().any(|(n, x)| n == *name && *x == i)))
                    .map(|(name, _)| name.clone())
                    .collect();
                for name in gone {
                    self.remove_faulted(&name, "interface no longer exists");
                }
            }
        }
    }

    /// A worker reported a port broken.
    ///
    /// An interface is removed only on the kernel's word (a link event): a port whose
    /// interface is still there is opened again, one that is gone waits for that word (reading
    /// the interface's index can fail for other reasons: no file descriptor left, say). A TAP
    /// port has no such word in our namespace (it may live in another): it goes at once.
    pub fn fault(&mut self, f: Fault) {
        let Some((name, kind, ifindex)) =
            self.ports.iter().find(|(_, p)| p.id == f.port).map(|(n, p)| (n.clone(), p.kind, p.ifindex))
        else {
            return;
        };
        if kind == PortKind::Tap {
            return self.remove_faulted(&name, &f.error);
        }
        if ifindex.is_some() && self.sys.ifindex(&name) == ifindex {
            warn!(port = %name, "port failed ({}); its interface is still there: opening it again", f.error);
            self.reopen(&name);
            // Under its new id: a macvlan parent's table follows at once (a parent is
            // opened again here too).
            self.sync_parents();
        } else {
            warn!(port = %name, "port failed ({}); it goes when the kernel says its interface is gone", f.error);
        }
    }

    /// Close a port's queues and open them again, under a new id (its state stays).
    fn reopen(&mut self, name: &str) {
        let Some(p) = self.ports.get(name) else { return };
        let ifindex = p.ifindex;
        self.detach(name);
        self.open_again(name, ifindex);
    }

    /// Open a detached port of the state again. A port that does not open stays in the
    /// state, and is tried again each second (`retry_reopening`).
    fn open_again(&mut self, name: &str, ifindex: Option<u32>) {
        let Some(ep) = self.st.attached(name).and_then(|n| Some((n.name.clone(), n.endpoint(name)?.clone()))) else {
            self.reopening.remove(name);
            return;
        };
        let (network, ep) = ep;
        let workers = self.dp.workers();
        let opened = self.free_port_id().and_then(|id| {
            let o = self.sys.open_port(name, ep.kind, workers, pin_of(&ep, workers));
            Ok((id, o.map_err(|e| Error::Attach { iface: name.into(), source: e })?))
        });
        match opened {
            Ok((id, opened)) => {
                if self.reopening.remove(name).is_some() {
                    info!(network = %network, port = name, "port opened again");
                }
                self.attach(NewPort { id, name: name.into(), network, kind: ep.kind, opened });
            }
            Err(e) => {
                if self.reopening.insert(name.into(), ifindex).is_none() {
                    error!(network = %network, port = name, "port cannot be opened again ({e}); trying each second");
                }
            }
        }
    }

    /// Each second: ports waiting to be opened again are, while their interface is there.
    fn retry_reopening(&mut self) {
        let waiting: Vec<(String, Option<u32>)> = self.reopening.iter().map(|(n, i)| (n.clone(), *i)).collect();
        for (name, ifindex) in waiting {
            // Another interface under the name, or none: the kernel's link events decide
            // (a failed lookup, out of descriptors, is no proof it is gone).
            if self.sys.ifindex(&name) == ifindex {
                self.open_again(&name, ifindex);
            }
        }
    }

    fn remove_faulted(&mut self, name: &str, why: &str) {
        let Some(network) = self.st.attached(name).map(|n| n.name.clone()) else {
            if macvlan::parent_user(&self.st, name).is_some() {
                warn!(parent = name, "macvlan parent lost ({why}): its networks wait for it to come back");
            }
            self.detach(name);
            return self.sync_parents();
        };
        let sandbox = self.st.network(&network).and_then(|n| n.endpoint(name)).and_then(|e| e.sandbox.clone());
        match &sandbox {
            Some(s) => warn!(network = %network, port = name, sandbox = %s.sandbox,
                "endpoint removed: its namespace went away ({why})"),
            None => warn!(network = %network, port = name, "port removed: {why}"),
        }
        let mut tx = self.begin();
        self.remove_endpoint_in(&mut tx, &network, name);
        // The world changed whether or not it can be saved: the state follows it, and is
        // saved again each second until that works.
        if let Err(e) = self.dir.save(&tx.next) {
            error!("{e}; saving again each second");
            self.unsaved = true;
        }
        self.st = tx.next;
        self.apply(tx.then);
    }

    pub fn faults(&self) -> crossbeam_channel::Receiver<Fault> {
        self.dp.faults.clone()
    }

    /// Stop the workers; their queues close, and TAPs the switch created go with them.
    /// Endpoints in namespaces stay plumbed: a restart picks them up again.
    pub fn shutdown(&mut self) {
        self.dp.stop();
    }
}

/// A TAP device's tx_dropped (frames the kernel could not queue for the switch), if the
/// device is in this namespace.
fn tap_tx_dropped(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/statistics/tx_dropped")).ok()?.trim().parse().ok()
}

/// The first 12 characters of an id, as Docker shows them.
/// Where a network's embedded DNS answers: its gateway (IPv4 if it has one). None for the
/// uplink, and for a network whose IPv4 gateway another port holds.
fn dns_server(n: &Network) -> Option<IpAddr> {
    if n.is_uplink() {
        return None;
    }
    // A macvlan network's gateway is the LAN's router: no DNS of ours there.
    let b = n.bridge()?;
    let v4 = n.subnet_v4().filter(|_| !b.inhibit_ipv4).map(|s| s.gateway);
    v4.or_else(|| n.subnet_v6().map(|s| s.gateway))
}

fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// The endpoint's MAC on `net`: the one asked for (unicast, and no other's on the network),
/// or Docker's from its address.
/// Every published port of `st`, as the table new publications are checked against.
fn publications(st: &State) -> Publications {
    let mut t = Publications::default();
    t.restore(st.networks.iter().flat_map(|n| n.endpoints.iter()).flat_map(|e| {
        let owner = e.sandbox.as_ref().map_or(e.name.clone(), |s| s.sandbox.clone());
        e.published.iter().filter_map(move |p| {
            Some(Published {
                proto: proto_of(&p.proto)?,
                host_ip: p.host_ip,
                host_port: p.host_port,
                target: NatEndpoint::new(e.ipv4?, p.port),
                owner: owner.clone(),
            })
        })
    }));
    t
}

fn proto_of(name: &str) -> Option<Proto> {
    match name {
        "tcp" => Some(Proto::Tcp),
        "udp" => Some(Proto::Udp),
        _ => None,
    }
}

/// The worker that holds the sessions of an endpoint at `addr` that publishes ports (its
/// port's frames all go there, and so do its published ports' on the uplink).
pub fn owner_of(addr: Ipv4Addr, workers: usize) -> usize {
    (u32::from(addr).wrapping_mul(0x9e37_79b1) >> 16) as usize % workers.max(1)
}

/// The worker an endpoint's port is pinned to, if it publishes ports.
fn pin_of(e: &Endpoint, workers: usize) -> Option<usize> {
    e.ipv4.filter(|_| !e.published.is_empty()).map(|a| owner_of(a, workers))
}

fn endpoint_mac(
    net: &Network,
    want: Option<MacAddr>,
    v4: Option<std::net::Ipv4Addr>,
    v6: Option<std::net::Ipv6Addr>,
) -> Result<MacAddr> {
    let m = match want {
        Some(m) if m.is_multicast() || m == MacAddr::default() => {
            return Err(Error::invalid(format!("--mac {m} is not a unicast address")))
        }
        Some(m) => m,
        None => ipam::mac_for(v4, v6),
    };
    if net.bridge().is_some_and(|b| m == b.gateway_mac) {
        return Err(Error::invalid(format!("MAC {m} is network {}'s gateway", net.name)));
    }
    if let Some(e) = net.endpoints.iter().find(|e| e.mac == m) {
        return Err(Error::invalid(format!("MAC {m} is already endpoint {}'s on network {}", e.name, net.name)));
    }
    Ok(m)
}

/// A sandbox's name from the namespace it was given by: the name for `ip netns` names,
/// `pid-N` for /proc/N/ns/net, else the file's name.
fn default_sandbox_name(arg: &str, path: &std::path::Path) -> String {
    if !arg.contains('/') {
        return arg.to_string();
    }
    let parts: Vec<_> = path.components().map(|c| c.as_os_str().to_string_lossy().to_string()).collect();
    if parts.len() >= 4 && parts[1] == "proc" && parts[parts.len() - 2] == "ns" {
        return format!("pid-{}", parts[2]);
    }
    path.file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_else(|| "sandbox".into())
}

pub mod docker;
mod macvlan;
#[cfg(test)]
mod tests;
