//! The control plane: networks and ports as the user sees them. Every command is checked in
//! full, then saved, then published to the workers, so a command that fails changes nothing.

use crate::clock;
use crate::dataplane::Dataplane;
use crate::explain::{self, NetView, PortView};
use crate::fdb::{MacTable, PortId, GATEWAY_PORT, MAX_PORT_ID};
use crate::frame::max_frame_for_mtu;
use crate::pipeline::{Bridge, Gateway, Pipeline, Routes};
use crate::services::host::GatewayAddrs;
use crate::ipam;
use crate::mac::MacAddr;
use crate::netdev::{self, check_ifname};
use crate::port::{self, PortKind, PortShared};
use crate::protocol::*;
use crate::state::*;
use crate::trace::{Filter, Select, Tracer};
use crate::worker::{Fault, NetId};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::Ipv4Addr;
use std::sync::Arc;
use tracing::{error, info, warn};

struct LiveNet {
    id: NetId,
    pipeline: Pipeline,
    gateway: Arc<PortShared>,
}

struct LivePort {
    id: PortId,
    network: String,
    kind: PortKind,
    shared: Arc<PortShared>,
    /// AF_PACKET ports: the interface index we bound to (a new index means a new interface).
    ifindex: Option<u32>,
}

pub struct Controller {
    st: State,
    dir: StateDir,
    dp: Dataplane,
    nets: HashMap<String, LiveNet>,
    ports: HashMap<String, LivePort>,
    traces: Vec<Arc<Tracer>>,
    /// Where the search for a free port id starts.
    next_port_id: PortId,
}

type Res = Result<Value, String>;

fn json<T: Serialize>(v: T) -> Res {
    Ok(serde_json::to_value(v).expect("views serialize"))
}

pub fn check_network_name(name: &str) -> Result<(), String> {
    let ok_first = name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = name.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok_first || !ok_rest || name.len() > 64 {
        return Err(format!(
            "invalid network name '{name}': use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        ));
    }
    Ok(())
}

fn new_id() -> String {
    let s = std::collections::hash_map::RandomState::new();
    format!("{:016x}{:016x}", s.hash_one(1u8), s.hash_one(std::time::SystemTime::now()))
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Controller {
    /// Take over the saved state and bring every network and port back. A port whose
    /// interface is gone is dropped with an error line (and the state saved without it).
    pub fn start(st: State, dir: StateDir, dp: Dataplane) -> Result<Controller, String> {
        let mut c = Controller {
            st: State::new(),
            dir,
            dp,
            nets: HashMap::new(),
            ports: HashMap::new(),
            traces: Vec::new(),
            next_port_id: 1,
        };
        let mut kept = st.clone();
        for net in &st.networks {
            c.add_live_net(net);
            let n = kept.network_mut(&net.name).expect("cloned");
            for ep in &net.endpoints {
                if let Err(e) = c.open_port(&net.name, &ep.name, ep.kind) {
                    error!(network = %net.name, port = %ep.name, "port not restored: {e}");
                    n.endpoints.retain(|x| x.name != ep.name);
                    n.static_macs.retain(|m| m.port != ep.name);
                }
            }
            for m in &n.static_macs {
                let id = c.ports[&m.port].id;
                if let Err(e) = c.nets[&net.name].pipeline.table().add_static(m.mac, id) {
                    error!(network = %net.name, "static entry {} not restored: {e}", m.mac);
                }
            }
            info!(network = %net.name, ports = n.endpoints.len(), "network restored");
        }
        if kept != st {
            c.dir.save(&kept)?;
        }
        c.st = kept;
        Ok(c)
    }

    fn add_live_net(&mut self, net: &Network) {
        let id = (0..=NetId::MAX).find(|i| !self.nets.values().any(|n| n.id == *i)).expect("65536 networks");
        let table = Arc::new(MacTable::new(net.max_learned));
        let mac = MacAddr([0x02, 0x42, 0xfe, (id >> 8) as u8, id as u8, 1]);
        table.add_static(mac, GATEWAY_PORT).expect("an empty table has room");
        let gateway = Gateway { net: id, mac, ipv4: Some(net.gateway), ipv6: None };
        let pipeline = Pipeline::Bridge(Bridge { table, gateway: Some(gateway) });
        let shared = Arc::new(PortShared::new(self.dp.workers(), max_frame_for_mtu(1500)));
        let addrs = GatewayAddrs { mac, ipv4: Some((net.gateway, net.subnet.prefix_len())), ipv6: None, mtu: 1500 };
        self.dp.add_network(id, &pipeline, Some((&shared, addrs)));
        self.nets.insert(net.name.clone(), LiveNet { id, pipeline, gateway: shared });
        self.publish_routes();
    }

    fn publish_routes(&self) {
        let routes = self.st.networks.iter().filter_map(|n| Some((ipnet::IpNet::V4(n.subnet), self.nets.get(&n.name)?.id)));
        self.dp.set_routes(Routes::new(routes.collect()));
    }

    /// Open a port's queues and hand them to the workers.
    fn open_port(&mut self, network: &str, iface: &str, kind: PortKind) -> Result<bool, String> {
        // Ids are handed out in turn, not lowest-free first: a port connected after another
        // was removed does not take over its id (and so its place in a running trace).
        let in_use = |i: PortId| self.ports.values().any(|p| p.id == i);
        let id = (0..MAX_PORT_ID)
            .map(|k| (self.next_port_id - 1 + k) % MAX_PORT_ID + 1)
            .find(|&i| !in_use(i))
            .ok_or("too many ports (32767)")?;
        self.next_port_id = id % MAX_PORT_ID + 1;
        let opened = port::open(iface, kind, self.dp.workers()).map_err(|e| format!("cannot attach {iface}: {e}"))?;
        let created = opened.created;
        let shared = Arc::new(PortShared::new(self.dp.workers(), opened.max_frame));
        let net = &self.nets[network];
        let ifindex = opened.ifindex;
        self.dp.add_port(id, net.id, opened, &shared);
        self.ports.insert(iface.to_string(), LivePort { id, network: network.to_string(), kind, shared, ifindex });
        info!(network, port = iface, kind = kind.name(), id, created, "port attached");
        Ok(created)
    }

    fn close_port(&mut self, iface: &str) {
        if let Some(p) = self.ports.remove(iface) {
            self.dp.remove_port(p.id);
            if let Some(n) = self.nets.get(&p.network) {
                n.pipeline.table().flush_port(p.id);
            }
            info!(network = %p.network, port = iface, "port detached");
        }
    }

    fn network(&self, name: &str) -> Result<&Network, String> {
        self.st.network(name).ok_or_else(|| format!("no network named '{name}' (see: vswitch network ls)"))
    }

    /// Save `next` as the state; only then is it the state.
    fn commit(&mut self, next: State) -> Result<(), String> {
        self.dir.save(&next)?;
        self.st = next;
        Ok(())
    }

    pub fn handle(&mut self, req: Request) -> Res {
        match req {
            Request::NetworkLs => self.ls(),
            Request::NetworkCreate(c) => self.create(c),
            Request::NetworkInspect { names } => self.inspect(&names),
            Request::NetworkConnect { network, iface, tap, ip } => self.connect(&network, &iface, tap, ip),
            Request::NetworkDisconnect { network, iface } => self.disconnect(&network, &iface),
            Request::NetworkRm { names } => self.rm(&names),
            Request::NetworkPrune => self.prune(),
            Request::Fdb { network } => self.fdb(&network),
            Request::FdbAdd { network, mac, port } => self.fdb_add(&network, mac, &port),
            Request::FdbDel { network, mac } => self.fdb_del(&network, mac),
            Request::Stats => self.stats(),
            Request::Explain(e) => self.explain(&e),
            Request::Trace(_) => Err("a trace needs a connection of its own (see: vswitch trace --help)".into()),
        }
    }

    fn ls(&self) -> Res {
        let v: Vec<NetworkSummary> = self
            .st
            .networks
            .iter()
            .map(|n| NetworkSummary {
                id: n.id[..12].to_string(),
                name: n.name.clone(),
                driver: n.driver.name().into(),
                subnet: n.subnet,
                ports: n.endpoints.len(),
            })
            .collect();
        json(v)
    }

    fn create(&mut self, c: CreateNetwork) -> Res {
        check_network_name(&c.name)?;
        if self.st.network(&c.name).is_some() {
            return Err(format!("a network named '{}' already exists", c.name));
        }
        let driver = match c.driver.as_deref().unwrap_or("bridge") {
            "bridge" => Driver::Bridge,
            d @ ("macvlan" | "overlay") => {
                return Err(format!("the {d} driver is not available yet; use --driver bridge"))
            }
            d => return Err(format!("unknown driver '{d}' (drivers: bridge)")),
        };
        let aging_secs = c.aging_secs.unwrap_or(DEFAULT_AGING_SECS);
        if aging_secs == 0 {
            return Err("--aging-time must be at least 1 second".into());
        }
        let max_learned = c.max_learned.unwrap_or(DEFAULT_MAX_LEARNED);
        if !(1..=1 << 24).contains(&max_learned) {
            return Err("--max-learned must be between 1 and 16777216".into());
        }
        let taken: Vec<_> = self.st.networks.iter().map(|n| n.subnet).collect();
        let (subnet, gateway, ip_range) = ipam::plan(c.subnet, c.gateway, c.ip_range, &taken)?;
        let net = Network {
            name: c.name.clone(),
            id: new_id(),
            driver,
            subnet,
            gateway,
            ip_range,
            aging_secs,
            max_learned,
            created: unix_now(),
            endpoints: vec![],
            static_macs: vec![],
        };
        let mut next = self.st.clone();
        next.networks.push(net.clone());
        self.commit(next)?;
        self.add_live_net(&net);
        info!(network = %c.name, %subnet, "network created");
        json(net)
    }

    fn detail(&self, n: &Network) -> NetworkDetail {
        let t = self.nets[&n.name].pipeline.table();
        NetworkDetail {
            network: n.clone(),
            learned_macs: t.learned(),
            not_learned_over_cap: t.over_limit.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn inspect(&self, names: &[String]) -> Res {
        let v = names.iter().map(|n| self.network(n).map(|n| self.detail(n))).collect::<Result<Vec<_>, _>>()?;
        json(v)
    }

    fn connect(&mut self, network: &str, iface: &str, tap: bool, ip: Option<Ipv4Addr>) -> Res {
        let net = self.network(network)?;
        check_ifname(iface)?;
        if let Some(other) = self.st.attached(iface) {
            return Err(format!("interface {iface} is already attached to network {}", other.name));
        }
        let kind = if tap { PortKind::Tap } else { PortKind::AfPacket };
        if !tap && netdev::ifindex(iface).is_none() {
            return Err(format!("no interface named '{iface}' (to create a TAP device, add --tap)"));
        }
        let ipv4 = ipam::allocate(net, ip)?;
        let created_tap = self.open_port(network, iface, kind)?;
        let ep = Endpoint { name: iface.to_string(), kind, ipv4, mac: ipam::mac_for(ipv4), created_tap };
        let mut next = self.st.clone();
        next.network_mut(network).expect("checked").endpoints.push(ep.clone());
        if let Err(e) = self.commit(next) {
            self.close_port(iface);
            return Err(e);
        }
        json(ep)
    }

    fn disconnect(&mut self, network: &str, iface: &str) -> Res {
        let net = self.network(network)?;
        if !net.endpoints.iter().any(|e| e.name == iface) {
            return Err(match self.st.attached(iface) {
                Some(o) => format!("interface {iface} is attached to network {}, not {network}", o.name),
                None => format!("interface {iface} is not attached to network {network}"),
            });
        }
        let mut next = self.st.clone();
        let n = next.network_mut(network).expect("checked");
        n.endpoints.retain(|e| e.name != iface);
        n.static_macs.retain(|m| m.port != iface);
        self.commit(next)?;
        self.close_port(iface);
        json(serde_json::json!({ "network": network, "disconnected": iface }))
    }

    fn remove_networks(&mut self, names: &[String]) -> Result<(), String> {
        let mut next = self.st.clone();
        next.networks.retain(|n| !names.contains(&n.name));
        self.commit(next)?;
        for name in names {
            if let Some(n) = self.nets.remove(name) {
                self.dp.remove_network(n.id);
            }
            info!(network = %name, "network removed");
        }
        Ok(())
    }

    fn rm(&mut self, names: &[String]) -> Res {
        if names.is_empty() {
            return Err("name at least one network to remove".into());
        }
        for name in names {
            let n = self.network(name)?;
            if !n.endpoints.is_empty() {
                let ports: Vec<_> = n.endpoints.iter().map(|e| e.name.as_str()).collect();
                return Err(format!(
                    "network {name} still has ports: {}; disconnect them first (vswitch network disconnect {name} PORT)",
                    ports.join(", ")
                ));
            }
        }
        self.remove_networks(names)?;
        json(names)
    }

    fn prune(&mut self) -> Res {
        let names: Vec<String> =
            self.st.networks.iter().filter(|n| n.endpoints.is_empty()).map(|n| n.name.clone()).collect();
        if !names.is_empty() {
            self.remove_networks(&names)?;
        }
        json(names)
    }

    fn port_names(&self) -> HashMap<PortId, &str> {
        let mut names: HashMap<PortId, &str> = self.ports.iter().map(|(name, p)| (p.id, name.as_str())).collect();
        names.insert(GATEWAY_PORT, "gateway");
        names
    }

    fn fdb(&self, network: &str) -> Res {
        self.network(network)?;
        let names = self.port_names();
        let now = clock::now();
        let v: Vec<FdbEntry> = self.nets[network]
            .pipeline
            .table()
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

    fn fdb_add(&mut self, network: &str, mac: MacAddr, port: &str) -> Res {
        let net = self.network(network)?;
        if !net.endpoints.iter().any(|e| e.name == port) {
            return Err(format!("port {port} is not attached to network {network}"));
        }
        if mac.is_multicast() {
            return Err(format!("{mac} is a group address; static entries take a unicast MAC"));
        }
        let id = self.ports[port].id;
        let mut next = self.st.clone();
        let n = next.network_mut(network).expect("checked");
        n.static_macs.retain(|m| m.mac != mac);
        n.static_macs.push(StaticMac { mac, port: port.to_string() });
        let table = self.nets[network].pipeline.table().clone();
        table.add_static(mac, id)?;
        if let Err(e) = self.commit(next) {
            table.remove(mac);
            return Err(e);
        }
        json(serde_json::json!({ "mac": mac, "port": port, "type": "static" }))
    }

    fn fdb_del(&mut self, network: &str, mac: MacAddr) -> Res {
        let net = self.network(network)?;
        let table = self.nets[network].pipeline.table().clone();
        let is_static = net.static_macs.iter().any(|m| m.mac == mac);
        if !is_static && table.lookup(mac).is_none() {
            return Err(format!("no entry for {mac} in network {network}"));
        }
        if is_static {
            let mut next = self.st.clone();
            next.network_mut(network).expect("checked").static_macs.retain(|m| m.mac != mac);
            self.commit(next)?;
        }
        table.remove(mac);
        json(serde_json::json!({ "mac": mac, "removed": true }))
    }

    fn stats(&self) -> Res {
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
        v.extend(self.nets.iter().map(|(name, n)| PortStatsView {
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
    pub fn start_trace(&mut self, r: &TraceRequest) -> Result<(Arc<Tracer>, Vec<String>), String> {
        if let Some(n) = &r.network {
            self.network(n)?;
        } else if r.ports.is_empty() {
            return Err("name a network or at least one --port to trace".into());
        }
        for p in &r.ports {
            let live = self.ports.get(p).ok_or_else(|| format!("no port named '{p}' (see: vswitch stats)"))?;
            if let Some(n) = r.network.as_ref().filter(|n| **n != live.network) {
                return Err(format!("port {p} is on network {}, not {n}", live.network));
            }
        }
        if r.snaplen == 0 {
            return Err("--snaplen must be at least 1".into());
        }
        if !(1..=1 << 20).contains(&r.queue) {
            return Err("--buffer must be between 1 and 1048576 frames".into());
        }
        let filter = match r.filter.as_deref().map(str::trim).filter(|f| !f.is_empty()) {
            Some(expr) => Some(Filter::compile(expr)?),
            None => None,
        };
        let (select, mut names) = match &r.network {
            Some(n) if r.ports.is_empty() => {
                let names = self.network(n)?.endpoints.iter().map(|e| e.name.clone()).collect();
                (Select::Network(self.nets[n].id), names)
            }
            _ => (Select::Ports(r.ports.iter().map(|p| self.ports[p].id).collect()), r.ports.clone()),
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

    fn explain(&self, r: &ExplainRequest) -> Res {
        let n = self.network(&r.network)?;
        let in_port = match self.ports.get(&r.in_port) {
            Some(p) if p.network == r.network => p.id,
            Some(p) => return Err(format!("port {} is on network {}, not {}", r.in_port, p.network, r.network)),
            None => return Err(format!("no port named '{}' (see: vswitch network inspect {})", r.in_port, r.network)),
        };
        let frames = r
            .frames
            .iter()
            .enumerate()
            .map(|(i, h)| crate::frame_spec::hex(h).ok_or_else(|| format!("frame {} is not hex", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let ports = n
            .endpoints
            .iter()
            .filter_map(|e| self.ports.get(&e.name).map(|p| (e, p)))
            .map(|(e, p)| PortView { id: p.id, name: e.name.clone(), max_frame: p.shared.max_frame() })
            .collect();
        let routes = Routes::new(vec![]);
        let view = NetView { name: &n.name, pipeline: &self.nets[&n.name].pipeline, routes: &routes, max_learned: n.max_learned, ports };
        json(explain::explain(&view, in_port, &frames, clock::now()))
    }

    pub fn port_name(&self, id: PortId) -> Option<String> {
        self.ports.iter().find(|(_, p)| p.id == id).map(|(n, _)| n.clone())
    }

    /// Once a second: age MAC tables, follow MTU changes, notice interfaces that went away.
    pub fn tick(&mut self) {
        let now = clock::now();
        for n in &self.st.networks {
            if let Some(l) = self.nets.get(&n.name) {
                l.pipeline.table().age(now, n.aging_secs);
            }
        }
        for (name, p) in &self.ports {
            if p.ifindex.is_some() {
                if let Ok(mtu) = netdev::mtu(name) {
                    p.shared.set_mtu(mtu);
                }
            }
        }
        let gone: Vec<(String, String)> = self
            .ports
            .iter()
            .filter(|(name, p)| p.ifindex.is_some() && netdev::ifindex(name) != p.ifindex)
            .map(|(name, _)| (name.clone(), "interface no longer exists".to_string()))
            .collect();
        for (name, why) in gone {
            self.remove_faulted(&name, &why);
        }
    }

    /// A worker reported a port broken.
    pub fn fault(&mut self, f: Fault) {
        if let Some(name) = self.ports.iter().find(|(_, p)| p.id == f.port).map(|(n, _)| n.clone()) {
            self.remove_faulted(&name, &f.error);
        }
    }

    fn remove_faulted(&mut self, name: &str, why: &str) {
        let Some(network) = self.ports.get(name).map(|p| p.network.clone()) else { return };
        warn!(network = %network, port = name, "port removed: {why}");
        let mut next = self.st.clone();
        if let Some(n) = next.network_mut(&network) {
            n.endpoints.retain(|e| e.name != name);
            n.static_macs.retain(|m| m.port != name);
        }
        if let Err(e) = self.commit(next) {
            error!("{e}");
        }
        self.close_port(name);
    }

    pub fn faults(&self) -> crossbeam_channel::Receiver<Fault> {
        self.dp.faults.clone()
    }

    /// Stop the workers; their queues close, and TAPs the switch created go with them.
    pub fn shutdown(&mut self) {
        self.dp.stop();
    }
}
