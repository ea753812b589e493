//! route: IPv4 between a bridge network and the uplink, through the NAT (`vswitch-nat`).
//! Out: what the gateway stage found addressed beyond every network leaves by the uplink
//! with the uplink's address and a port of this worker's slice (masquerade), toward the
//! uplink's next hop. Back: what reaches the uplink's address and belongs to a session goes
//! to its endpoint, from the endpoint's gateway. Anything else to the uplink's address is
//! the switch's own (ARP, ping): the gateway keeps it.
//!
//! Frames are never written in their receive ring: the stage records an [`Edit`] (new MACs,
//! and what the NAT changes in the IP and L4 headers) and egress sends the edited headers
//! followed by the untouched rest of the frame, so a 64 KB GSO frame costs what a small one
//! does. Each worker has its own connection table: its outside ports are its own slice of
//! the range (`nat::ports::PortSplit`), and the uplink's fanout hands each reply to the
//! worker whose slice holds its destination port, so no table is shared.

use super::classify::Eth;
use super::gateway::{NetRoute, Routes};
use super::{Action, DropReason, FrameCx, GatewayWhy, Note, Observe};
use crate::fdb::PortId;
use crate::mac::MacAddr;
use crate::worker::NetId;
use smoltcp::wire::{EthernetProtocol, Ipv4Packet};
use std::ops::ControlFlow;
use std::ops::RangeInclusive;
use vswitch_nat::checksum::update16;
use vswitch_nat::{Config, Conntrack, Csum, Decision, FlowKey, Refused, Verdict};

pub const NAME: &str = "route";

/// Ethernet header bytes before the IPv4 header (routed frames are never tagged).
pub const ETH_HLEN: usize = 14;
/// The most header bytes an edit may cover: an ICMP error is edited whole.
pub const MAX_EDIT: usize = 1600;

/// A routed frame's new MAC addresses and IP/L4 changes, applied by egress to a copy of
/// the frame's headers.
#[derive(Clone, Copy, Debug)]
pub struct Edit {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub nat: vswitch_nat::Edit,
    pub csum: Csum,
}

impl Edit {
    /// Bytes of the frame the edited copy replaces.
    pub fn len(&self) -> usize {
        ETH_HLEN + self.nat.len()
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    /// Write the edited headers of `frame` into `out` (at least `len()` bytes): new MACs,
    /// the NAT's changes, and the TTL one lower (a router's hop; the stage routes only
    /// packets whose TTL is above 1).
    pub fn write(&self, frame: &[u8], out: &mut [u8]) {
        let n = self.len();
        out[..n].copy_from_slice(&frame[..n]);
        out[0..6].copy_from_slice(&self.dst.0);
        out[6..12].copy_from_slice(&self.src.0);
        let ip = &mut out[ETH_HLEN..n];
        self.nat.apply(ip, self.csum);
        let mut ip = Ipv4Packet::new_unchecked(ip);
        let ttl = ip.hop_limit();
        if ttl > 1 {
            // TTL and protocol share a checksummed word (RFC 1624).
            let proto = u16::from(u8::from(ip.next_header()));
            let check = update16(ip.checksum(), u16::from(ttl) << 8 | proto, u16::from(ttl - 1) << 8 | proto);
            ip.set_hop_limit(ttl - 1);
            ip.set_checksum(check);
        }
    }
}

/// A worker's NAT: its connection table, and the edits of the batch in flight.
pub struct Nat {
    pub table: Conntrack,
    edits: Vec<Edit>,
}

impl Nat {
    /// A table for the outside ports `ports`, holding up to `max_sessions`.
    pub fn new(ports: RangeInclusive<u16>, max_sessions: u32) -> Nat {
        Nat { table: Conntrack::new(Config { max_sessions, ports, ..Config::default() }), edits: Vec::new() }
    }

    /// Forget the last batch's edits (the vector keeps its room).
    pub fn start_batch(&mut self) {
        self.edits.clear();
    }

    pub fn edit(&self, i: u16) -> &Edit {
        &self.edits[i as usize]
    }

    fn push(&mut self, e: Edit) -> u16 {
        self.edits.push(e);
        (self.edits.len() - 1) as u16
    }
}

/// A frame the gateway stage found addressed beyond every network, from network `net`.
/// To a published port at the uplink's own address it is hairpin traffic: translated both
/// ways (source to the uplink's address, so the reply comes back through the switch) and
/// delivered to the publishing endpoint, on this network or another.
#[inline]
pub fn outbound<O: Observe>(
    net: NetId,
    routes: &Routes,
    nat: &mut Nat,
    cx: &FrameCx,
    eth: &Eth,
    obs: &mut O,
) -> ControlFlow<Action, Action> {
    let (Some(up), Some(here)) = (routes.uplink(), routes.net(net)) else { return dropped(DropReason::NoRoute, obs) };
    if here.internal || eth.frame.ethertype() != EthernetProtocol::Ipv4 {
        return dropped(DropReason::NoRoute, obs);
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.frame.payload()) else { return dropped(DropReason::NoRoute, obs) };
    if ip.hop_limit() <= 1 {
        return ttl_expired(obs);
    }
    let to_uplink_addr = ip.dst_addr() == up.addr;
    let next_hop = up.next_hop_mac();
    if next_hop.is_none() && !to_uplink_addr {
        return dropped(DropReason::NoNeighbor, obs);
    }
    let decide = |k: &FlowKey| match routes.published(k.proto, k.dst) {
        Some(target) if to_uplink_addr => Decision::Translate { tag: net, snat: Some(up.addr), dnat: Some(target) },
        // The switch's own outside address, not published: nothing out there answers for it.
        None if to_uplink_addr => Decision::Pass,
        _ => Decision::Translate { tag: net, snat: Some(up.addr), dnat: None },
    };
    let (e, csum) = match nat.table.track(eth.frame.payload(), cx.now, decide) {
        // A new or known flow out (SNAT), the reply of a published port's (DNAT), or either
        // direction of a hairpin flow.
        (Verdict::Translated(_), Some(e)) if e.len() + ETH_HLEN <= MAX_EDIT => (e, csum_of(cx)),
        (Verdict::Dropped(why), _) => return dropped(refused(why), obs),
        _ => return dropped(DropReason::NoRoute, obs),
    };
    if routes.network_of(e.destination().into()).is_some_and(|n| n != up.net) {
        return to_endpoint(routes, nat, cx, e, csum, obs);
    }
    let Some(next_hop) = next_hop else { return dropped(DropReason::NoNeighbor, obs) };
    let i = nat.push(Edit { dst: next_hop, src: up.mac, nat: e, csum });
    obs.note(NAME, Note::Routed(up.port));
    ControlFlow::Break(Action::Routed(up.port, i))
}

/// A frame on the uplink network for the uplink's own MAC and address: a session's reply,
/// or a new flow to a published port (DNAT, the client's address kept), goes to its
/// endpoint; everything else stays with the gateway (the switch's host).
#[inline]
pub fn inbound<O: Observe>(
    routes: &Routes,
    nat: &mut Nat,
    cx: &FrameCx,
    eth: &Eth,
    obs: &mut O,
) -> ControlFlow<Action, Action> {
    let keep = ControlFlow::Continue(Action::Gateway);
    if eth.frame.ethertype() != EthernetProtocol::Ipv4 {
        return keep;
    }
    let publish = |k: &FlowKey| match routes.published(k.proto, k.dst) {
        Some(target) => match routes.network_of(target.addr.into()) {
            Some(net) => Decision::Translate { tag: net, snat: None, dnat: Some(target) },
            None => Decision::Pass,
        },
        None => Decision::Pass,
    };
    let (verdict, edit) = nat.table.track(eth.frame.payload(), cx.now, publish);
    let e = match (verdict, edit) {
        (Verdict::Translated(_), Some(e)) => e,
        (Verdict::Dropped(why @ (Refused::SessionLimit | Refused::PortsExhausted | Refused::Clash)), _) => {
            return dropped(refused(why), obs);
        }
        _ => return keep,
    };
    if e.len() + ETH_HLEN > MAX_EDIT {
        return dropped(DropReason::NatUnsupported, obs);
    }
    if Ipv4Packet::new_checked(eth.frame.payload()).is_ok_and(|ip| ip.hop_limit() <= 1) {
        return ttl_expired(obs);
    }
    to_endpoint(routes, nat, cx, e, csum_of(cx), obs)
}

/// A translated packet for an endpoint of one of the switch's networks: from that network's
/// gateway to the endpoint's MAC, out of its port.
fn to_endpoint<O: Observe>(
    routes: &Routes,
    nat: &mut Nat,
    cx: &FrameCx,
    e: vswitch_nat::Edit,
    csum: Csum,
    obs: &mut O,
) -> ControlFlow<Action, Action> {
    let to = e.destination();
    let Some(NetRoute { gateway_mac, neighbors, table, .. }) = routes.network_of(to.into()).and_then(|n| routes.net(n))
    else {
        return dropped(DropReason::NoNeighbor, obs);
    };
    let found: Option<(MacAddr, PortId)> =
        neighbors.get(&to).and_then(|&(mac, port)| Some((mac, table.lookup(mac).or(port)?)));
    let Some((mac, port)) = found else { return dropped(DropReason::NoNeighbor, obs) };
    if port == cx.in_port {
        // An endpoint reaching itself through its own published port: the worker cannot
        // send out of the port whose batch it holds.
        return dropped(DropReason::HairpinSelf, obs);
    }
    let i = nat.push(Edit { dst: mac, src: *gateway_mac, nat: e, csum });
    obs.note(NAME, Note::Routed(port));
    ControlFlow::Break(Action::Routed(port, i))
}

/// A packet whose TTL would reach zero here: the gateway's host answers it with ICMP time
/// exceeded, as a router does (so traceroute shows the switch's hop).
fn ttl_expired<O: Observe>(obs: &mut O) -> ControlFlow<Action, Action> {
    obs.note(NAME, Note::ForGateway(GatewayWhy::TtlExpired));
    ControlFlow::Break(Action::Gateway)
}

fn dropped<O: Observe>(why: DropReason, obs: &mut O) -> ControlFlow<Action, Action> {
    obs.note(NAME, Note::Dropped(why));
    ControlFlow::Break(Action::Drop(why))
}

/// A GSO frame's L4 checksum is partial (virtio NEEDS_CSUM): only the pseudo-header moves.
fn csum_of(cx: &FrameCx) -> Csum {
    if cx.frame.vnet.needs_csum() {
        Csum::Partial
    } else {
        Csum::Full
    }
}

fn refused(why: Refused) -> DropReason {
    match why {
        Refused::Unsupported(_) => DropReason::NatUnsupported,
        Refused::NoSession | Refused::Policy => DropReason::NatNoSession,
        Refused::SessionLimit | Refused::PortsExhausted | Refused::Clash => DropReason::NatLimit,
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::bridge;
    use super::super::{Env, Gateway, NetRoute, NextHop, Pipeline, UplinkRoute};
    use super::*;
    use crate::fdb::GATEWAY_PORT;
    use crate::frame::VnetHdr;
    use crate::frame_spec;
    use crate::port::RxFrame;
    use std::collections::HashMap;
    use std::net::Ipv4Addr;
    use std::sync::Arc;

    const GW: &str = "02:42:0a:01:00:01";
    const UP: &str = "02:56:53:00:00:0a";
    const HOP: &str = "02:00:00:00:00:99";
    const E: &str = "02:00:00:00:00:05";
    /// Another endpoint of network 1 (10.1.0.6 on port 3).
    const C: &str = "02:00:00:00:00:06";
    const UPLINK_PORT: PortId = 9;

    struct World {
        inside: Pipeline,
        outside: Pipeline,
        routes: Routes,
        hop: Arc<NextHop>,
    }

    /// Network 1 (10.1.0.0/16, endpoint 10.1.0.5 on port 1) and the uplink, network 2
    /// (192.0.2.10/24, its interface on port 9, the next hop 192.0.2.1).
    fn world(internal: bool) -> World {
        let gw = |net, mac: &str, ip| Gateway { net, mac: mac.parse().unwrap(), ipv4: Some(ip), ipv6: None };
        let inside = bridge(Some(gw(1, GW, Ipv4Addr::new(10, 1, 0, 1))));
        let outside = bridge(Some(gw(2, UP, Ipv4Addr::new(192, 0, 2, 10))));
        inside.table().unwrap().add_static(GW.parse().unwrap(), GATEWAY_PORT).unwrap();
        outside.table().unwrap().add_static(UP.parse().unwrap(), GATEWAY_PORT).unwrap();
        inside.table().unwrap().learn(E.parse().unwrap(), 1, 0);
        inside.table().unwrap().learn(C.parse().unwrap(), 3, 0);
        let hop = Arc::new(NextHop::new(Some(Ipv4Addr::new(192, 0, 2, 1))));
        let net = |p: &Pipeline, mac: &str, internal, neighbors| NetRoute {
            gateway_mac: mac.parse().unwrap(),
            internal,
            neighbors,
            table: p.table().unwrap().clone(),
        };
        let e = HashMap::from([
            (Ipv4Addr::new(10, 1, 0, 5), (E.parse().unwrap(), None)),
            (Ipv4Addr::new(10, 1, 0, 6), (C.parse().unwrap(), None)),
        ]);
        let routes = Routes::new(vec![("10.1.0.0/16".parse().unwrap(), 1), ("192.0.2.0/24".parse().unwrap(), 2)])
            .with_nets(
                vec![(1, net(&inside, GW, internal, e)), (2, net(&outside, UP, false, HashMap::new()))],
                Some(UplinkRoute {
                    net: 2,
                    port: UPLINK_PORT,
                    mac: UP.parse().unwrap(),
                    addr: Ipv4Addr::new(192, 0, 2, 10),
                    next_hop: hop.clone(),
                }),
            )
            .with_published([(
                vswitch_nat::Proto::Tcp,
                None,
                8080,
                vswitch_nat::Endpoint::new(Ipv4Addr::new(10, 1, 0, 5), 80),
            )]);
        World { inside, outside, routes, hop }
    }

    fn run(p: &Pipeline, w: &World, nat: &mut Nat, in_port: PortId, spec: &str) -> (Action, Vec<u8>) {
        let data = frame_spec::parse(spec).unwrap();
        let f = RxFrame::new(VnetHdr::default(), &data, None);
        let cx = FrameCx { frame: &f, in_port, max_frame: 1518, now: 0 };
        let a = p.run(&Env { routes: &w.routes }, nat, &cx, &mut super::super::NoObserve);
        let mut out = data.clone();
        if let Action::Routed(_, i) = a {
            nat.edit(i).write(&data, &mut out);
        }
        (a, out)
    }

    #[test]
    fn out_with_the_uplinks_address_and_back_to_the_endpoint() {
        let w = world(false);
        w.hop.set(HOP.parse().unwrap());
        let mut nat = Nat::new(1024..=65535, 16);
        let out = format!("src {E} dst {GW} ip src 10.1.0.5 dst 198.51.100.7 udp sport 4000 dport 53");
        let (a, f) = run(&w.inside, &w, &mut nat, 1, &out);
        assert_eq!(a, Action::Routed(UPLINK_PORT, 0));
        assert_eq!(
            (&f[0..6], &f[6..12]),
            (&HOP.parse::<MacAddr>().unwrap().0[..], &UP.parse::<MacAddr>().unwrap().0[..])
        );
        assert_eq!(&f[26..30], &[192, 0, 2, 10], "the uplink's address");
        let port = u16::from_be_bytes([f[34], f[35]]);
        nat.start_batch();
        let back = format!("src {HOP} dst {UP} ip src 198.51.100.7 dst 192.0.2.10 udp sport 53 dport {port}");
        let (a, f) = run(&w.outside, &w, &mut nat, UPLINK_PORT, &back);
        assert_eq!(a, Action::Routed(1, 0), "to the endpoint's port");
        assert_eq!(
            (&f[0..6], &f[6..12]),
            (&E.parse::<MacAddr>().unwrap().0[..], &GW.parse::<MacAddr>().unwrap().0[..])
        );
        assert_eq!((&f[30..34], u16::from_be_bytes([f[36], f[37]])), (&[10, 1, 0, 5][..], 4000));
        // Anything else for the uplink's address is the switch's own.
        let ping = format!("src {HOP} dst {UP} ip src 198.51.100.7 dst 192.0.2.10 icmp");
        assert_eq!(run(&w.outside, &w, &mut nat, UPLINK_PORT, &ping).0, Action::Gateway);
    }

    fn mac(s: &str) -> [u8; 6] {
        s.parse::<MacAddr>().unwrap().0
    }

    #[test]
    fn hairpin_reaches_the_publisher_and_its_reply_comes_back_through_the_switch() {
        let w = world(false);
        w.hop.set(HOP.parse().unwrap());
        let mut nat = Nat::new(1024..=65535, 16);
        // C connects to the uplink's address and the published port.
        let syn = format!("src {C} dst {GW} ip src 10.1.0.6 dst 192.0.2.10 tcp sport 5000 dport 8080");
        let (a, f) = run(&w.inside, &w, &mut nat, 3, &syn);
        assert_eq!(a, Action::Routed(1, 0), "to the publisher's port, not out of the uplink");
        assert_eq!((&f[0..6], &f[6..12]), (&mac(E)[..], &mac(GW)[..]));
        assert_eq!((&f[26..30], &f[30..34]), (&[192, 0, 2, 10][..], &[10, 1, 0, 5][..]), "from the uplink's address");
        assert_eq!(u16::from_be_bytes([f[36], f[37]]), 80);
        let port = u16::from_be_bytes([f[34], f[35]]);
        // The publisher answers the uplink's address; the switch takes it back to C.
        nat.start_batch();
        let mut synack =
            frame_spec::parse(&format!("src {E} dst {GW} ip src 10.1.0.5 dst 192.0.2.10 tcp sport 80 dport {port}"))
                .unwrap();
        synack[14 + 20 + 13] = 0x12;
        let rx = RxFrame::new(VnetHdr::default(), &synack, None);
        let cx = FrameCx { frame: &rx, in_port: 1, max_frame: 1518, now: 0 };
        let a = w.inside.run(&Env { routes: &w.routes }, &mut nat, &cx, &mut super::super::NoObserve);
        assert_eq!(a, Action::Routed(3, 0));
        let mut f = synack.clone();
        nat.edit(0).write(&synack, &mut f);
        assert_eq!(&f[0..6], &mac(C)[..]);
        assert_eq!((&f[26..30], u16::from_be_bytes([f[34], f[35]])), (&[192, 0, 2, 10][..], 8080));
        assert_eq!((&f[30..34], u16::from_be_bytes([f[36], f[37]])), (&[10, 1, 0, 6][..], 5000));
        // An unpublished port at the uplink's address leads nowhere.
        let other = format!("src {C} dst {GW} ip src 10.1.0.6 dst 192.0.2.10 udp sport 5000 dport 9999");
        assert_eq!(run(&w.inside, &w, &mut nat, 3, &other).0, Action::Drop(DropReason::NoRoute));
        // The publisher to its own published port: counted, not silently lost.
        let own = format!("src {E} dst {GW} ip src 10.1.0.5 dst 192.0.2.10 tcp sport 6000 dport 8080");
        assert_eq!(run(&w.inside, &w, &mut nat, 1, &own).0, Action::Drop(DropReason::HairpinSelf));
    }

    #[test]
    fn a_routed_packet_loses_one_ttl_and_one_that_runs_out_goes_to_the_gateway() {
        let w = world(false);
        w.hop.set(HOP.parse().unwrap());
        let mut nat = Nat::new(1024..=65535, 16);
        let out = format!("src {E} dst {GW} ip src 10.1.0.5 dst 198.51.100.7 ttl 9 udp sport 4000 dport 53");
        let (a, f) = run(&w.inside, &w, &mut nat, 1, &out);
        assert_eq!(a, Action::Routed(UPLINK_PORT, 0));
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert_eq!(ip.hop_limit(), 8);
        assert!(ip.verify_checksum());
        let last = format!("src {E} dst {GW} ip src 10.1.0.5 dst 198.51.100.7 ttl 1 udp sport 4000 dport 53");
        assert_eq!(run(&w.inside, &w, &mut nat, 1, &last).0, Action::Gateway, "for time exceeded");
    }

    #[test]
    fn no_way_out_without_a_next_hop_or_from_an_internal_network() {
        let out = format!("src {E} dst {GW} ip src 10.1.0.5 dst 198.51.100.7 udp");
        let w = world(false);
        let mut nat = Nat::new(1024..=65535, 16);
        assert_eq!(run(&w.inside, &w, &mut nat, 1, &out).0, Action::Drop(DropReason::NoNeighbor));
        let w = world(true);
        w.hop.set(HOP.parse().unwrap());
        assert_eq!(run(&w.inside, &w, &mut nat, 1, &out).0, Action::Drop(DropReason::NoRoute));
        // A TCP segment that opens nothing has no session to join.
        let w = world(false);
        w.hop.set(HOP.parse().unwrap());
        let mut ack = frame_spec::parse(&format!("src {E} dst {GW} ip src 10.1.0.5 dst 198.51.100.7 tcp")).unwrap();
        ack[14 + 20 + 13] = 0x10;
        let f = RxFrame::new(VnetHdr::default(), &ack, None);
        let cx = FrameCx { frame: &f, in_port: 1, max_frame: 1518, now: 0 };
        let a = w.inside.run(&Env { routes: &w.routes }, &mut nat, &cx, &mut super::super::NoObserve);
        assert_eq!(a, Action::Drop(DropReason::NatNoSession));
    }
}
