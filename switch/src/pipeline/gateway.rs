//! gateway: frames for the switch itself. Every bridge network has a gateway (VPP's BVI,
//! docker0's address, but inside the switch): its MAC is a static entry in the network's
//! table pointing at `GATEWAY_PORT`, so lookup already sends unicast for it here; this stage
//! also takes the ARP requests and IPv6 neighbour solicitations that ask for the gateway's
//! addresses (broadcast and multicast, so lookup would flood them).
//!
//! What reaches the gateway's MAC but is addressed elsewhere is traffic to be routed: to
//! another network it is refused (networks are isolated, as Docker's are), to the outside
//! there is no route yet (that needs an uplink and NAT). Both are counted.

use super::classify::Eth;
use super::route::{self, Nat};
use super::{Action, DropReason, FrameCx, GatewayWhy, Note, Observe};
use crate::fdb::GATEWAY_PORT;
use crate::fdb::{MacTable, PortId};
use crate::mac::MacAddr;
use crate::worker::NetId;
use ipnet::IpNet;
use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetProtocol, Icmpv6Message, Icmpv6Packet, IpProtocol, Ipv4Packet, Ipv6Packet,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use vswitch_nat::ports::PortSet;
use vswitch_nat::{Endpoint as NatEndpoint, Proto};

pub const NAME: &str = "gateway";

/// The link-local address a gateway with IPv6 answers on too (endpoints solicit from and may
/// route to link-local addresses). Endpoints' own are EUI-64 (fe80::42:...), never ::1.
pub const LINK_LOCAL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);

/// A network's gateway as the data plane knows it. It lives on the untagged network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    pub net: NetId,
    pub mac: MacAddr,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

impl Gateway {
    fn is_mine6(&self, ip: Ipv6Addr) -> bool {
        self.ipv6.is_some() && (Some(ip) == self.ipv6 || ip == LINK_LOCAL)
    }
}

/// What the data plane knows of the networks beyond the one a frame is on: which network
/// each subnet belongs to (another network, or outside), how to reach a network's endpoints
/// (the route stage), and the uplink. Published whole by the control plane on each change.
#[derive(Default, Clone)]
pub struct Routes {
    subnets: Vec<(IpNet, NetId)>,
    /// Indexed by network id.
    nets: Vec<Option<NetRoute>>,
    uplink: Option<UplinkRoute>,
    /// Published ports: (protocol, host port) to (host address if limited, endpoint).
    published: HashMap<(Proto, u16), (Option<Ipv4Addr>, NatEndpoint)>,
    /// The same host ports, which SNAT must not hand out.
    pub reserved: Option<Arc<PortSet>>,
}

/// A network as the route stage sees it.
#[derive(Clone)]
pub struct NetRoute {
    pub gateway_mac: MacAddr,
    /// `--internal`: no way out.
    pub internal: bool,
    /// Its endpoints by address (the ones the switch addressed): their MAC, and their port
    /// (where the table has not learned the MAC yet: an endpoint that has not sent since a
    /// restart still gets its published ports' traffic).
    pub neighbors: HashMap<Ipv4Addr, (MacAddr, Option<PortId>)>,
    pub table: Arc<MacTable>,
}

/// The switch's outside.
#[derive(Debug, Clone)]
pub struct UplinkRoute {
    pub net: NetId,
    /// The uplink interface's port.
    pub port: PortId,
    /// The switch's own MAC and address there.
    pub mac: MacAddr,
    pub addr: Ipv4Addr,
    pub next_hop: Arc<NextHop>,
}

impl UplinkRoute {
    #[inline]
    pub fn next_hop_mac(&self) -> Option<MacAddr> {
        self.next_hop.mac()
    }
}

/// The uplink's next hop and its MAC, once the services thread has resolved it (ARP).
#[derive(Debug, Default)]
pub struct NextHop {
    pub addr: Option<Ipv4Addr>,
    mac: AtomicU64,
}

impl NextHop {
    pub fn new(addr: Option<Ipv4Addr>) -> NextHop {
        NextHop { addr, mac: AtomicU64::new(0) }
    }

    /// 1 << 48 marks "resolved" so that no MAC reads as unresolved.
    pub fn set(&self, mac: MacAddr) {
        self.mac.store(mac.to_u64() | 1 << 48, Relaxed);
    }

    #[inline]
    pub fn mac(&self) -> Option<MacAddr> {
        let v = self.mac.load(Relaxed);
        (v != 0).then(|| MacAddr::from_u64(v & 0xffff_ffff_ffff))
    }
}

impl Routes {
    pub fn new(subnets: Vec<(IpNet, NetId)>) -> Routes {
        Routes { subnets, ..Routes::default() }
    }

    /// With what the route stage needs: each network's route, and the uplink.
    pub fn with_nets(mut self, nets: Vec<(NetId, NetRoute)>, uplink: Option<UplinkRoute>) -> Routes {
        for (id, r) in nets {
            let i = id as usize;
            if self.nets.len() <= i {
                self.nets.resize_with(i + 1, || None);
            }
            self.nets[i] = Some(r);
        }
        self.uplink = uplink;
        self
    }

    /// With these published ports.
    pub fn with_published(
        mut self,
        published: impl IntoIterator<Item = (Proto, Option<Ipv4Addr>, u16, NatEndpoint)>,
    ) -> Routes {
        let mut reserved = PortSet::default();
        for (proto, ip, port, target) in published {
            reserved.insert(port);
            self.published.insert((proto, port), (ip, target));
        }
        self.reserved = (!self.published.is_empty()).then(|| Arc::new(reserved));
        self
    }

    /// Where a new flow to `dst` (the uplink's address) is published to, if anywhere.
    #[inline]
    pub fn published(&self, proto: Proto, dst: NatEndpoint) -> Option<NatEndpoint> {
        let (ip, target) = self.published.get(&(proto, dst.port))?;
        ip.is_none_or(|ip| ip == dst.addr).then_some(*target)
    }

    /// The published ports `old` had and these routes do not (protocol, host port, target):
    /// their sessions go (stale DNAT sessions outliving a publication are a known Docker
    /// complaint).
    pub fn unpublished_since(&self, old: &Routes) -> Vec<(Proto, u16, NatEndpoint)> {
        old.published
            .iter()
            .filter(|(k, v)| self.published.get(k) != Some(v))
            .map(|(&(proto, port), &(_, target))| (proto, port, target))
            .collect()
    }

    pub fn network_of(&self, ip: IpAddr) -> Option<NetId> {
        self.subnets.iter().find(|(s, _)| s.contains(&ip)).map(|&(_, n)| n)
    }

    #[inline]
    pub fn net(&self, id: NetId) -> Option<&NetRoute> {
        self.nets.get(id as usize)?.as_ref()
    }

    #[inline]
    pub fn uplink(&self) -> Option<&UplinkRoute> {
        self.uplink.as_ref()
    }
}

/// Why a frame to the gateway's MAC is not the gateway's own.
enum Beyond {
    /// To be routed out through the uplink (the route stage).
    Outside,
    Refused(DropReason),
}

#[inline]
pub fn run<O: Observe>(
    gw: &Gateway,
    routes: &Routes,
    nat: &mut Nat,
    cx: &FrameCx,
    eth: &Eth,
    action: Action,
    obs: &mut O,
) -> ControlFlow<Action, Action> {
    if cx.in_port == GATEWAY_PORT {
        return ControlFlow::Continue(action); // the gateway's own frames
    }
    // A VLAN tag (offloaded by the kernel, or in the frame) means another segment than the
    // gateway's: nothing for it there.
    let tagged = cx.frame.tag.is_some() || matches!(eth.frame.ethertype(), EthernetProtocol::Unknown(0x8100 | 0x88a8));
    let taken = match action {
        Action::Gateway if tagged => Err(Beyond::Refused(DropReason::NoRoute)),
        Action::Gateway => to_gateway_mac(gw, routes, eth),
        Action::Flood if eth.dst.is_multicast() && !tagged => match asks_for_gateway(gw, eth) {
            Some(why) => Ok(why),
            None => return ControlFlow::Continue(action),
        },
        _ => return ControlFlow::Continue(action),
    };
    match taken {
        Ok(GatewayWhy::Unicast) if routes.uplink().is_some_and(|u| u.net == gw.net) => {
            // The uplink's address: a session's reply, or the switch's own.
            obs.note(NAME, Note::ForGateway(GatewayWhy::Unicast));
            route::inbound(routes, nat, cx, eth, obs)
        }
        Ok(why) => {
            obs.note(NAME, Note::ForGateway(why));
            ControlFlow::Continue(Action::Gateway)
        }
        Err(Beyond::Outside) => route::outbound(gw.net, routes, nat, cx, eth, obs),
        Err(Beyond::Refused(why)) => {
            obs.note(NAME, Note::Dropped(why));
            ControlFlow::Break(Action::Drop(why))
        }
    }
}

/// A frame sent to the gateway's MAC: for the gateway itself, or to be routed.
fn to_gateway_mac(gw: &Gateway, routes: &Routes, eth: &Eth) -> Result<GatewayWhy, Beyond> {
    let payload = eth.frame.payload();
    let no_route = Err(Beyond::Refused(DropReason::NoRoute));
    let dst: IpAddr = match eth.frame.ethertype() {
        EthernetProtocol::Arp => return Ok(GatewayWhy::Unicast),
        EthernetProtocol::Ipv4 => match Ipv4Packet::new_checked(payload) {
            Ok(ip) if Some(ip.dst_addr()) == gw.ipv4 => return Ok(GatewayWhy::Unicast),
            Ok(ip) => ip.dst_addr().into(),
            Err(_) => return no_route,
        },
        EthernetProtocol::Ipv6 => match Ipv6Packet::new_checked(payload) {
            Ok(ip) if gw.is_mine6(ip.dst_addr()) => return Ok(GatewayWhy::Unicast),
            Ok(ip) => ip.dst_addr().into(),
            Err(_) => return no_route,
        },
        _ => return no_route,
    };
    let uplink = routes.uplink().map(|u| u.net);
    match routes.network_of(dst) {
        // The uplink's own subnet is outside too.
        Some(n) if Some(n) == uplink && n != gw.net => Err(Beyond::Outside),
        Some(n) if n != gw.net => Err(Beyond::Refused(DropReason::Isolated)),
        Some(_) => no_route,
        None if dst.is_ipv4() && uplink.is_some() && uplink != Some(gw.net) => Err(Beyond::Outside),
        None => no_route,
    }
}

/// A broadcast or multicast frame that asks for one of the gateway's addresses.
fn asks_for_gateway(gw: &Gateway, eth: &Eth) -> Option<GatewayWhy> {
    let payload = eth.frame.payload();
    match eth.frame.ethertype() {
        EthernetProtocol::Arp => {
            let arp = ArpPacket::new_checked(payload).ok()?;
            let target = <[u8; 4]>::try_from(arp.target_protocol_addr()).ok()?;
            (arp.operation() == ArpOperation::Request && Some(Ipv4Addr::from(target)) == gw.ipv4)
                .then_some(GatewayWhy::ArpRequest)
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(payload).ok()?;
            if ip.next_header() != IpProtocol::Icmpv6 {
                return None;
            }
            let icmp = Icmpv6Packet::new_checked(ip.payload()).ok()?;
            (icmp.msg_type() == Icmpv6Message::NeighborSolicit && gw.is_mine6(icmp.target_addr()))
                .then_some(GatewayWhy::NeighborSolicit)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{bridge, run};
    use super::*;
    use crate::frame_spec;

    const GW_MAC: &str = "02:42:0a:01:00:01";

    fn setup() -> (super::super::Pipeline, Routes) {
        let gw = Gateway {
            net: 1,
            mac: GW_MAC.parse().unwrap(),
            ipv4: Some("10.1.0.1".parse().unwrap()),
            ipv6: Some("fd00:1::1".parse().unwrap()),
        };
        let p = bridge(Some(gw));
        p.table().unwrap().add_static(GW_MAC.parse().unwrap(), GATEWAY_PORT).unwrap();
        let routes = Routes::new(vec![("10.1.0.0/16".parse().unwrap(), 1), ("10.2.0.0/16".parse().unwrap(), 2)]);
        (p, routes)
    }

    fn frame(spec: &str) -> Vec<u8> {
        frame_spec::parse(spec).unwrap()
    }

    #[test]
    fn takes_what_is_for_it() {
        let (p, r) = setup();
        let ping = frame(&format!("dst {GW_MAC} ip src 10.1.0.5 dst 10.1.0.1 icmp"));
        let (a, notes) = run(&p, &r, 1, &ping);
        assert_eq!(a, Action::Gateway);
        assert!(notes.contains(&(NAME, Note::ForGateway(GatewayWhy::Unicast))));
        let who_has = frame("dst ff:ff:ff:ff:ff:ff arp tell 10.1.0.5 who-has 10.1.0.1");
        assert_eq!(run(&p, &r, 1, &who_has).0, Action::Gateway);
        let ns = frame("dst 33:33:ff:00:00:01 ipv6 src fd00:1::5 dst ff02::1:ff00:1 ns fd00:1::1");
        assert_eq!(run(&p, &r, 1, &ns).0, Action::Gateway);
        let ns = frame("dst 33:33:ff:00:00:01 ipv6 src fe80::5 dst ff02::1:ff00:1 ns fe80::1");
        assert_eq!(run(&p, &r, 1, &ns).0, Action::Gateway, "its link-local address too");
        let ping = frame(&format!("dst {GW_MAC} ipv6 src fe80::5 dst fe80::1 icmp6"));
        assert_eq!(run(&p, &r, 1, &ping).0, Action::Gateway);
    }

    #[test]
    fn tagged_frames_are_not_for_the_gateway() {
        let (p, r) = setup();
        let tagged = frame(&format!("dst {GW_MAC} vlan 5 ip src 10.1.0.5 dst 10.1.0.1 icmp"));
        assert_eq!(run(&p, &r, 1, &tagged).0, Action::Drop(DropReason::NoRoute));
        let who_has = frame("dst ff:ff:ff:ff:ff:ff vlan 5 arp who-has 10.1.0.1 tell 10.1.0.5");
        assert_eq!(run(&p, &r, 1, &who_has).0, Action::Flood);
    }

    #[test]
    fn leaves_other_group_frames_flooded() {
        let (p, r) = setup();
        let other = frame("dst ff:ff:ff:ff:ff:ff arp tell 10.1.0.5 who-has 10.1.0.9");
        assert_eq!(run(&p, &r, 1, &other).0, Action::Flood);
        let ns = frame("dst 33:33:ff:00:00:09 ipv6 src fd00:1::5 dst ff02::1:ff00:9 ns fd00:1::9");
        assert_eq!(run(&p, &r, 1, &ns).0, Action::Flood);
        assert_eq!(run(&p, &r, 1, &frame("dst ff:ff:ff:ff:ff:ff type 0x88b5")).0, Action::Flood);
    }

    #[test]
    fn refuses_to_route() {
        let (p, r) = setup();
        let to_blue = frame(&format!("dst {GW_MAC} ip src 10.1.0.5 dst 10.2.0.7 udp"));
        let (a, notes) = run(&p, &r, 1, &to_blue);
        assert_eq!(a, Action::Drop(DropReason::Isolated));
        assert_eq!(notes.last(), Some(&(NAME, Note::Dropped(DropReason::Isolated))));
        let outside = frame(&format!("dst {GW_MAC} ip src 10.1.0.5 dst 192.0.2.1 tcp"));
        assert_eq!(run(&p, &r, 1, &outside).0, Action::Drop(DropReason::NoRoute));
    }

    #[test]
    fn the_gateways_own_frames_pass() {
        let (p, r) = setup();
        let reply = frame(&format!("src {GW_MAC} dst 02:00:00:00:00:05 ip src 10.1.0.1 dst 10.1.0.5 icmp"));
        assert_eq!(run(&p, &r, GATEWAY_PORT, &reply).0, Action::Flood, "unknown destination: flooded");
    }
}
