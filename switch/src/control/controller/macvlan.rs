//! Macvlan networks: endpoints with MACs of their own on a parent interface, dispatched by
//! MAC (`pipeline/dispatch.rs`). All the macvlan networks of one parent (its untagged
//! network and its VLANs, `-o parent=eth1.50`) share one data-plane network: the parent's
//! port and all their endpoints, with one dispatch table, rebuilt whole from the state
//! whenever a transaction changes an endpoint (`sync_parents`) and handed to the workers.
//! A parent that goes away is waited for: its networks and endpoints stay, and the parent
//! is attached again within a second of its return.

use super::*;
use crate::pipeline::dispatch::{Dispatch, Mode, Role, SegmentPlan};
use crate::protocol::FdbEntry;
use std::path::Path;

/// What a parent's dispatch table is built from: rebuilt (and sent to the workers) only
/// when this changes.
pub type Plan = (Option<PortId>, Vec<SegmentPlan>);

/// The group a macvlan network's data plane belongs to: its parent interface, or for one
/// with no parent, itself (a name no interface can have: interface names have no ':').
pub fn group_of(n: &Network) -> Option<String> {
    let m = n.macvlan()?;
    Some(m.parent.clone().unwrap_or_else(|| format!("internal:{}", n.name)))
}

/// A macvlan network whose parent `iface` is.
pub fn parent_user(st: &State, iface: &str) -> Option<String> {
    st.networks.iter().find(|n| n.macvlan().is_some_and(|m| m.parent.as_deref() == Some(iface))).map(|n| n.name.clone())
}

/// The switch's end of the network's host port, if it has one.
pub fn host_port_of(n: &Network) -> Option<&str> {
    n.macvlan().and_then(|m| m.host_port.as_ref()).map(|h| h.port.as_str())
}

/// A macvlan network's "MAC table": its endpoints' MACs, as they are dispatched.
pub fn fdb(n: &Network) -> Vec<FdbEntry> {
    n.endpoints.iter().map(|e| FdbEntry { mac: e.mac, port: e.name.clone(), age: 0, kind: "endpoint".into() }).collect()
}

/// A passthru network has room for one endpoint: it owns the parent.
pub fn check_room(n: &Network) -> Result<()> {
    match (n.macvlan(), n.endpoints.first()) {
        (Some(m), Some(e)) if m.mode == Mode::Passthru => Err(Error::invalid(format!(
            "macvlan network {} is passthru: its one endpoint ({}) owns the parent; disconnect it first",
            n.name, e.name
        ))),
        _ => Ok(()),
    }
}

fn vlan_name(vlan: Option<u16>) -> String {
    vlan.map_or_else(|| "untagged".into(), |v| format!("VLAN {v}"))
}

impl Controller {
    pub(super) fn create_macvlan(&mut self, c: CreateNetwork) -> Result<Value> {
        let (mut parent, mut mode, mut host_port, mut mtu) = (None, Mode::Bridge, None, None);
        for (k, v) in &c.options {
            match k.as_str() {
                "parent" => parent = Some(v.clone()),
                "macvlan_mode" => {
                    mode = Mode::parse(v).ok_or_else(|| {
                        Error::invalid(format!("-o macvlan_mode={v}: one of bridge, private, vepa, passthru"))
                    })?
                }
                "host_port" => {
                    check_ifname(v).map_err(Error::Invalid)?;
                    host_port = Some(v.clone());
                }
                "mtu" | "com.docker.network.driver.mtu" => {
                    mtu =
                        Some(v.parse().ok().filter(|m| (68..=65535).contains(m)).ok_or_else(|| {
                            Error::invalid(format!("-o {k}={v}: the MTU is a number from 68 to 65535"))
                        })?)
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown option '{k}' for the macvlan driver (options: parent, macvlan_mode, host_port, mtu)"
                    )))
                }
            }
        }
        if c.aging_secs.is_some() || c.max_learned.is_some() || c.max_learned_per_port.is_some() {
            return Err(Error::invalid(
                "--aging-time and --max-learned* are for bridge networks: a macvlan network learns nothing \
                 (its endpoints' MACs are its table)",
            ));
        }
        let (parent, vlan) =
            match parent {
                None if c.internal => (None, None),
                None => return Err(Error::invalid(
                    "a macvlan network needs its parent interface: -o parent=IFACE, or IFACE.VLAN for a VLAN on it \
                     (with --internal it may have none)",
                )),
                Some(p) => {
                    let (iface, vlan) = self.resolve_parent(&p)?;
                    (Some(iface), vlan)
                }
            };
        if let Some(p) = &parent {
            self.check_parent_free(p, vlan, mode)?;
        }
        if let Some(h) = &host_port {
            if mode == Mode::Passthru {
                return Err(Error::invalid("passthru gives the parent to one endpoint: no host port beside it"));
            }
            if self.sys.ifindex(h).is_some() {
                return Err(Error::invalid(format!("-o host_port={h}: an interface named {h} exists already")));
            }
        }
        let mtu = mtu
            .or_else(|| parent.as_deref().and_then(|p| crate::netdev::mtu(p).ok()))
            .filter(|m| (68..=65535).contains(m))
            .unwrap_or(DEFAULT_MTU);
        let net = Network {
            name: c.name.clone(),
            id: new_id(),
            created: unix_now(),
            internal: c.internal,
            ipam: self.plan_ipam(&c)?,
            driver: DriverOptions::Macvlan(MacvlanOptions { parent: parent.clone(), vlan, mode, mtu, host_port: None }),
            endpoints: vec![],
            static_macs: vec![],
            docker_id: c.docker_id,
        };
        let name = net.name.clone();
        let net = self.transact(|c, tx| {
            tx.next.networks.push(net.clone());
            tx.then.push(Step::AddNetwork(name.clone()));
            // The parent's first network opens it (a missing parent was refused above).
            if let Some(p) = parent.as_ref().filter(|p| !c.ports.contains_key(*p)) {
                let id = c.free_port_id()?;
                let opened = c
                    .sys
                    .open_port(p, PortKind::AfPacket, c.dp.workers(), None)
                    .map_err(|e| Error::Attach { iface: p.clone(), source: e })?;
                let np = NewPort { id, name: p.clone(), network: name.clone(), kind: PortKind::AfPacket, opened };
                tx.then.push(Step::AttachParent(Box::new(np)));
            }
            if let Some(h) = &host_port {
                c.add_host_port(tx, &name, h)?;
            }
            Ok(tx.next.network(&name).cloned().expect("just added"))
        })?;
        let subnets: Vec<String> = net.ipam.iter().map(|s| s.subnet.to_string()).collect();
        info!(network = %net.name, parent = parent.as_deref().unwrap_or("none"), vlan = ?vlan, mode = mode.name(),
            subnets = %subnets.join(","), "macvlan network created");
        json(net)
    }

    /// `eth1` or `eth1.50`: an interface as it is, else VLAN 50 on `eth1` (the switch tags
    /// itself; no kernel sub-interface is needed).
    fn resolve_parent(&self, p: &str) -> Result<(String, Option<u16>)> {
        check_ifname(p).map_err(Error::Invalid)?;
        if self.sys.ifindex(p).is_some() {
            return Ok((p.into(), None));
        }
        if let Some((base, vid)) = p.rsplit_once('.') {
            let vid: u16 = vid.parse().ok().filter(|v| (1..=4094).contains(v)).ok_or_else(|| {
                Error::invalid(format!("-o parent={p}: no such interface, and '{vid}' is not a VLAN (1 to 4094)"))
            })?;
            if self.sys.ifindex(base).is_none() {
                return Err(Error::invalid(format!("-o parent={p}: no interface named '{base}'")));
            }
            return Ok((base.into(), Some(vid)));
        }
        Err(Error::invalid(format!("-o parent={p}: no interface named '{p}'")))
    }

    /// The parent is no bridge port, and no other macvlan network uses it in a way that
    /// conflicts: one network per VLAN (and one untagged), passthru alone.
    fn check_parent_free(&self, p: &str, vlan: Option<u16>, mode: Mode) -> Result<()> {
        if let Some(n) = self.st.attached(p) {
            return Err(Error::invalid(format!(
                "{p} is a port of network {}: a macvlan parent cannot be a port too (disconnect it first)",
                n.name
            )));
        }
        for n in &self.st.networks {
            let Some(m) = n.macvlan().filter(|m| m.parent.as_deref() == Some(p)) else { continue };
            if m.mode == Mode::Passthru || mode == Mode::Passthru {
                return Err(Error::invalid(format!(
                    "{p} carries macvlan network {} and passthru gives a parent to one network alone",
                    n.name
                )));
            }
            if m.vlan == vlan {
                return Err(Error::invalid(format!(
                    "{p} already carries macvlan network {} ({}): give another VLAN (-o parent={p}.N)",
                    n.name,
                    vlan_name(vlan)
                )));
            }
        }
        Ok(())
    }

    /// The daemon's own interface `name` onto `network`: a veth pair with an address of the
    /// network on `name`, the other end an endpoint the switch always delivers to inside.
    fn add_host_port(&mut self, tx: &mut Tx, network: &str, name: &str) -> Result<()> {
        let net = tx.next.network(network).expect("just added");
        let (ipv4, ipv6) = ipam::allocate(net, None, None)?;
        let mac = endpoint_mac(net, None, ipv4, ipv6)?;
        let prefix = |s: Option<&Subnet>| s.map_or(0, |s| s.subnet.prefix_len());
        let host = new_host_ifname();
        let plumbing = Plumbing {
            host: &host,
            netns: Path::new("/proc/self/ns/net"),
            ifname: name,
            mac,
            mtu: net.mtu(),
            ipv4: ipv4.map(|a| (a, prefix(net.subnet_v4()))),
            ipv6: ipv6.map(|a| (a, prefix(net.subnet_v6()))),
            gateway4: None,
            gateway6: None,
        };
        self.sys.plumb(&plumbing)?;
        if let Some(DriverOptions::Macvlan(m)) = tx.next.network_mut(network).map(|n| &mut n.driver) {
            m.host_port = Some(HostPort { name: name.into(), port: host.clone() });
        }
        self.attach_veth_end(tx, network, Endpoint::veth_end(host, mac, ipv4, ipv6))?;
        Ok(())
    }

    /// A macvlan network's live side: its parent's data-plane network (made with the
    /// parent's first network).
    pub(super) fn add_live_macvlan(&mut self, net: &Network) {
        let Some(group) = group_of(net) else { return };
        let id = match self.parents.get(&group) {
            Some(p) => p.id,
            None => {
                let id = self.free_net_id();
                let pipeline = Pipeline::Macvlan(Arc::new(Dispatch::build(None, &[])));
                self.dp.add_network(id, &pipeline, None);
                self.parents.insert(group, LiveParent { id, built: None });
                id
            }
        };
        let pipeline = Pipeline::Macvlan(Arc::new(Dispatch::build(None, &[])));
        let gateway = Arc::new(PortShared::new(self.dp.workers() + 1, max_frame_for_mtu(net.mtu())));
        self.nets.insert(net.name.clone(), LiveNet { id, pipeline, gateway, next_sweep: 0, dns: None });
    }

    pub(super) fn attach_parent(&mut self, p: NewPort) {
        let Some(group) = self.st.network(&p.network).and_then(group_of) else { return };
        let Some(id) = self.parents.get(&group).map(|g| g.id) else { return };
        let shared = Arc::new(PortShared::new(self.dp.workers() + 1, p.opened.max_frame));
        let ifindex = p.opened.ifindex;
        self.dp.add_port(p.id, id, p.opened, &shared);
        info!(parent = %p.name, id = p.id, "macvlan parent attached");
        let live = LivePort {
            id: p.id,
            network: p.network,
            kind: PortKind::AfPacket,
            shared,
            ifindex,
            tap_dropped: None,
            steer: None,
        };
        self.ports.insert(p.name, live);
    }

    /// Make each parent's data plane follow the state: a data-plane network per parent in
    /// use (removed with its last network), the parent attached while its interface is
    /// there, and the dispatch table rebuilt when an endpoint, or the parent, changed.
    pub(super) fn sync_parents(&mut self) {
        let mut groups: BTreeMap<String, Vec<Network>> = BTreeMap::new();
        for n in &self.st.networks {
            if let Some(g) = group_of(n) {
                groups.entry(g).or_default().push(n.clone());
            }
        }
        let gone: Vec<String> = self.parents.keys().filter(|g| !groups.contains_key(*g)).cloned().collect();
        for g in gone {
            if self.ports.contains_key(&g) {
                self.detach(&g);
            }
            if let Some(p) = self.parents.remove(&g) {
                self.dp.remove_network(p.id);
            }
        }
        for (group, nets) in groups {
            if !self.parents.contains_key(&group) {
                continue; // its networks are not live (cannot happen after add_live_net)
            }
            let parent = nets[0].macvlan().and_then(|m| m.parent.clone());
            if let Some(p) = &parent {
                self.attach_parent_if_back(p, &nets[0].name);
                // The port is listed under one of its networks: keep that one current.
                if let Some(lp) = self.ports.get_mut(p) {
                    if !nets.iter().any(|n| n.name == lp.network) {
                        lp.network = nets[0].name.clone();
                    }
                }
            }
            let plan: Plan = (
                parent.as_ref().and_then(|p| self.ports.get(p)).map(|p| p.id),
                nets.iter()
                    .filter_map(|n| {
                        let m = n.macvlan()?;
                        let members = n
                            .endpoints
                            .iter()
                            .filter_map(|e| {
                                let role =
                                    if host_port_of(n) == Some(e.name.as_str()) { Role::Host } else { Role::Endpoint };
                                Some((self.ports.get(&e.name)?.id, e.mac, role))
                            })
                            .collect();
                        Some((m.vlan, m.mode, members))
                    })
                    .collect(),
            );
            let live = self.parents.get_mut(&group).expect("checked");
            if live.built.as_ref() == Some(&plan) {
                continue;
            }
            let pipeline = Pipeline::Macvlan(Arc::new(Dispatch::build(plan.0, &plan.1)));
            self.dp.set_pipeline(live.id, &pipeline);
            live.built = Some(plan);
            for n in &nets {
                if let Some(l) = self.nets.get_mut(&n.name) {
                    l.pipeline = pipeline.clone();
                }
            }
        }
    }

    /// Attach parent `p` (for network `network`) if it is not attached and its interface is
    /// there: at restore, and when it comes back after it went away.
    fn attach_parent_if_back(&mut self, p: &str, network: &str) {
        if self.ports.contains_key(p) || self.sys.ifindex(p).is_none() {
            return;
        }
        let opened = self.free_port_id().and_then(|id| {
            let o = self.sys.open_port(p, PortKind::AfPacket, self.dp.workers(), None);
            Ok((id, o.map_err(|e| Error::Attach { iface: p.into(), source: e })?))
        });
        match opened {
            Ok((id, opened)) => self.attach_parent(NewPort {
                id,
                name: p.into(),
                network: network.into(),
                kind: PortKind::AfPacket,
                opened,
            }),
            Err(e) => tracing::debug!(parent = p, "macvlan parent not attached yet: {e}"),
        }
    }

    /// For `network inspect`: whether a macvlan network's parent is attached.
    pub(super) fn parent_attached(&self, n: &Network) -> Option<bool> {
        let p = n.macvlan()?.parent.as_ref()?;
        Some(self.ports.contains_key(p))
    }

    /// A bridge network's MAC table (a macvlan network has none: it says so).
    pub(super) fn bridge_table(&self, network: &str) -> Result<Arc<MacTable>> {
        self.live(network)?.pipeline.table().cloned().ok_or_else(|| {
            Error::invalid(format!(
                "network {network} is a macvlan network: it learns nothing, its endpoints' MACs are its table \
                 (vswitch fdb show {network})"
            ))
        })
    }
}
