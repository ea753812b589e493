//! The switch's own host on one network: smoltcp's `Interface` with the gateway's MAC and
//! addresses over a device whose frames come from the workers and go back to them. smoltcp
//! answers ARP, ICMP echo, IPv6 neighbour solicitations and ICMPv6 echo; the gateway also
//! announces itself (gratuitous ARP, unsolicited NA) when its network comes up and when a
//! port joins, so endpoints learn its MAC at once.

use super::dns::{self as gateway_dns, Client, Dns};
use super::link::{Link, Packet};
use crate::dns::forward::Done;
use crate::dns::DnsStats;
use crate::mac::MacAddr;
use crate::pipeline::gateway::LINK_LOCAL;
use crate::pipeline::DropReason;
use crate::pipeline::NextHop;
use crate::port::PortShared;
use crate::worker::NetId;
use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::phy::{Checksum, ChecksumCapabilities, Device, DeviceCapabilities, Medium, RxToken, TxToken};
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, HardwareAddress,
    Icmpv4Message, Icmpv4Packet, Icmpv6Packet, Icmpv6Repr, IpCidr, IpProtocol, Ipv4Packet, Ipv4Repr, Ipv6Packet,
    Ipv6Repr, NdiscNeighborFlags, NdiscRepr,
};
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

/// Frames waiting for one gateway; more are dropped (the pool bounds them anyway).
const RX_QUEUE: usize = 256;

/// A gateway's addresses.
#[derive(Clone, Debug)]
pub struct GatewayAddrs {
    pub mac: MacAddr,
    /// Address and prefix length of the network's subnet.
    pub ipv4: Option<(Ipv4Addr, u8)>,
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// Largest IP packet (the network's MTU).
    pub mtu: usize,
    /// On the uplink: the next hop, whose MAC this host finds (ARP) for the route stage.
    pub next_hop: Option<Arc<NextHop>>,
    /// The embedded DNS answers on port 53 (user-defined networks; not the uplink).
    pub dns: Option<Arc<DnsStats>>,
}

/// The device smoltcp sees: frames queued by the workers in, frames for the workers out.
struct Wire {
    net: NetId,
    link: Arc<Link>,
    rx: VecDeque<Packet>,
    /// The worker the last frame came through: replies go out through it.
    worker: usize,
    mtu: usize,
    /// The gateway's counters; this thread writes the last slot.
    stats: Arc<PortShared>,
}

impl Wire {
    /// A frame the gateway could not take or send: the pool or its queue was full.
    fn busy(&self) {
        self.stats.stats.worker(self.link.workers()).drop(DropReason::GatewayBusy);
    }

    fn send(&self, worker: usize, frame: &[u8]) {
        if !self.link.send_down(self.net, worker, frame) {
            self.busy();
        }
    }
}

struct Rx {
    p: Packet,
    link: Arc<Link>,
}

struct Tx<'a> {
    wire: &'a mut Wire,
}

impl RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.p.data);
        self.link.recycle(self.p);
        r
    }
}

impl TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0u8; len];
        let r = f(&mut buf);
        self.wire.send(self.wire.worker, &buf);
        r
    }
}

impl Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let p = self.rx.pop_front()?;
        self.worker = p.worker;
        Some((Rx { p, link: self.link.clone() }, Tx { wire: self }))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx { wire: self })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut c = DeviceCapabilities::default();
        c.medium = Medium::Ethernet;
        c.max_transmission_unit = self.mtu + 14; // smoltcp counts the Ethernet header
                                                 // Endpoints on veth and TAP hand over TCP and UDP with the checksum left to offload
                                                 // (only the pseudo-header sum filled in): compute ours, do not check theirs.
        let mut sum = ChecksumCapabilities::default();
        sum.tcp = Checksum::Tx;
        sum.udp = Checksum::Tx;
        c.checksum = sum;
        c
    }
}

pub struct Host {
    pub addrs: GatewayAddrs,
    iface: Interface,
    wire: Wire,
    sockets: SocketSet<'static>,
    /// When to ask for the next hop's MAC again (the uplink's host only).
    resolve_at: Instant,
    dns: Option<Dns>,
}

/// How often the next hop is asked for while unknown, and once known (it may move).
const RESOLVE_RETRY: Duration = Duration::from_secs(1);
const RESOLVE_REFRESH: Duration = Duration::from_secs(30);

impl Host {
    pub fn new(net: NetId, addrs: GatewayAddrs, link: Arc<Link>, stats: Arc<PortShared>, now: Instant) -> Host {
        let mut wire = Wire { net, link, rx: VecDeque::new(), worker: 0, mtu: addrs.mtu, stats };
        let mut cfg = Config::new(HardwareAddress::Ethernet(EthernetAddress(addrs.mac.0)));
        cfg.random_seed = std::collections::hash_map::RandomState::new().hash_one(net);
        let mut iface = Interface::new(cfg, &mut wire, now);
        iface.update_ip_addrs(|a| {
            if let Some((ip, len)) = addrs.ipv4 {
                let _ = a.push(IpCidr::new(ip.into(), len));
            }
            if let Some((ip, len)) = addrs.ipv6 {
                let _ = a.push(IpCidr::new(ip.into(), len));
                let _ = a.push(IpCidr::new(LINK_LOCAL.into(), 64));
            }
        });
        let mut sockets = SocketSet::new(vec![]);
        let dns = addrs.dns.clone().map(|stats| Dns::new(net, &mut sockets, addrs.mtu, stats));
        Host { addrs, iface, wire, sockets, resolve_at: now, dns }
    }

    /// A frame from a worker for this gateway.
    pub fn receive(&mut self, p: Packet) {
        if let Some(hop) = &self.addrs.next_hop {
            learn_next_hop(hop, &p.data);
        }
        // Not for us but routed, with its TTL run out (the route stage sends those here).
        if let Some((me, _)) = self.addrs.ipv4 {
            if let Some(reply) = time_exceeded(EthernetAddress(self.addrs.mac.0), me, &p.data) {
                self.wire.send(p.worker, &reply);
                self.wire.link.recycle(p);
                return;
            }
        }
        if self.wire.rx.len() >= RX_QUEUE {
            self.wire.busy();
            self.wire.link.recycle(p);
            return;
        }
        self.wire.rx.push_back(p);
    }

    /// Answer what came in; returns when smoltcp next wants to be polled, if ever.
    pub fn poll(&mut self, now: Instant, shared: &gateway_dns::Shared) -> Option<Instant> {
        let _ = self.iface.poll(now, &mut self.wire, &mut self.sockets);
        if let Some(d) = &mut self.dns {
            if d.serve(&mut self.sockets, shared) {
                let _ = self.iface.poll(now, &mut self.wire, &mut self.sockets);
            }
        }
        let mut at = self.iface.poll_at(now, &self.sockets);
        if self.dns.as_ref().is_some_and(|d| d.backlog()) {
            at = Some(now + Duration::from_millis(1)); // answers wait for room in a TCP window
        }
        let (Some(hop), Some((me, _))) = (&self.addrs.next_hop, self.addrs.ipv4) else { return at };
        let Some(target) = hop.addr else { return at };
        if now >= self.resolve_at {
            let f = arp_request(EthernetAddress(self.addrs.mac.0), me, target);
            self.wire.send(0, &f);
            self.resolve_at = now + if hop.mac().is_some() { RESOLVE_REFRESH } else { RESOLVE_RETRY };
        }
        Some(at.map_or(self.resolve_at, |a| a.min(self.resolve_at)))
    }

    /// An upstream's answer for one of this gateway's DNS clients.
    pub fn answered(&mut self, d: Done<Client>, now: Instant) {
        if let Some(dns) = &mut self.dns {
            if dns.answered(d, &mut self.sockets) {
                let _ = self.iface.poll(now, &mut self.wire, &mut self.sockets);
            }
        }
    }

    /// Tell the network where the gateway is: a gratuitous ARP and an unsolicited NA.
    pub fn announce(&mut self) {
        let mac = EthernetAddress(self.addrs.mac.0);
        let mut frames = Vec::new();
        if let Some((ip, _)) = self.addrs.ipv4 {
            frames.push(gratuitous_arp(mac, ip));
            // On the uplink, ask for the next hop at once: until its MAC is known nothing
            // goes out (the first request, sent before the port was attached, went nowhere).
            if let Some(target) = self.addrs.next_hop.as_ref().and_then(|h| h.addr) {
                frames.push(arp_request(mac, ip, target));
            }
        }
        if let Some((ip, _)) = self.addrs.ipv6 {
            frames.push(unsolicited_na(mac, ip));
        }
        for f in frames {
            self.wire.send(0, &f);
        }
    }
}

/// An Ethernet frame of `len` payload bytes, filled by `fill`.
fn ethernet(
    dst: EthernetAddress,
    src: EthernetAddress,
    ty: EthernetProtocol,
    len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let mut buf = vec![0u8; EthernetFrame::<&[u8]>::buffer_len(len)];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    EthernetRepr { src_addr: src, dst_addr: dst, ethertype: ty }.emit(&mut f);
    fill(f.payload_mut());
    buf
}

/// The bytes of the offending packet an ICMP error quotes: its header and the start of its
/// payload, as Linux sends them (RFC 1812 allows up to 576 bytes in all).
const ICMP_QUOTE: usize = 548;

/// ICMP time exceeded (TTL exceeded in transit) from `me` for an IPv4 packet in `frame` that
/// is addressed to someone else and whose TTL is 1 or less; None for anything else (and
/// never about an ICMP error, as RFC 1122 says).
pub fn time_exceeded(mac: EthernetAddress, me: Ipv4Addr, frame: &[u8]) -> Option<Vec<u8>> {
    let f = EthernetFrame::new_checked(frame).ok()?;
    if f.ethertype() != EthernetProtocol::Ipv4 {
        return None;
    }
    let ip = Ipv4Packet::new_checked(f.payload()).ok()?;
    if ip.dst_addr() == me || ip.hop_limit() > 1 || ip.src_addr().is_broadcast() || ip.src_addr().is_multicast() {
        return None;
    }
    if ip.next_header() == IpProtocol::Icmp {
        let t = ip.payload().first().copied()?;
        if ![0u8, 8, 13, 14].contains(&t) {
            return None; // an error (or an unknown type): no error about it
        }
    }
    let quoted = &f.payload()[..(ip.total_len() as usize).min(ICMP_QUOTE).min(f.payload().len())];
    let icmp_len = 8 + quoted.len();
    let repr = Ipv4Repr {
        src_addr: me,
        dst_addr: ip.src_addr(),
        next_header: IpProtocol::Icmp,
        payload_len: icmp_len,
        hop_limit: 64,
    };
    Some(ethernet(f.src_addr(), mac, EthernetProtocol::Ipv4, repr.buffer_len() + icmp_len, |p| {
        let mut out = Ipv4Packet::new_unchecked(p);
        repr.emit(&mut out, &ChecksumCapabilities::default());
        let mut icmp = Icmpv4Packet::new_unchecked(out.payload_mut());
        icmp.set_msg_type(Icmpv4Message::TimeExceeded);
        icmp.set_msg_code(0); // TTL exceeded in transit
        icmp.data_mut()[..quoted.len()].copy_from_slice(quoted);
        icmp.fill_checksum();
    }))
}

/// Note the next hop's MAC from an ARP packet it sent (its reply to us, or any request).
fn learn_next_hop(hop: &NextHop, frame: &[u8]) {
    let Ok(f) = EthernetFrame::new_checked(frame) else { return };
    if f.ethertype() != EthernetProtocol::Arp {
        return;
    }
    let Ok(arp) = ArpPacket::new_checked(f.payload()) else { return };
    let (Ok(ip), Ok(mac)) =
        (<[u8; 4]>::try_from(arp.source_protocol_addr()), <[u8; 6]>::try_from(arp.source_hardware_addr()))
    else {
        return;
    };
    if Some(Ipv4Addr::from(ip)) == hop.addr && mac != [0; 6] && mac[0] & 1 == 0 {
        hop.set(MacAddr(mac));
    }
}

/// Broadcast ARP request asking for `target`'s MAC.
pub fn arp_request(mac: EthernetAddress, me: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let r = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: me,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: target,
    };
    ethernet(EthernetAddress::BROADCAST, mac, EthernetProtocol::Arp, r.buffer_len(), |p| {
        r.emit(&mut ArpPacket::new_unchecked(p))
    })
}

/// Broadcast ARP request for our own address (sender = target): caches update to our MAC.
pub fn gratuitous_arp(mac: EthernetAddress, ip: Ipv4Addr) -> Vec<u8> {
    let r = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: mac,
        source_protocol_addr: ip,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: ip,
    };
    ethernet(EthernetAddress::BROADCAST, mac, EthernetProtocol::Arp, r.buffer_len(), |p| {
        r.emit(&mut ArpPacket::new_unchecked(p))
    })
}

/// Unsolicited neighbour advertisement to all nodes, as a router, overriding caches.
pub fn unsolicited_na(mac: EthernetAddress, ip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::OVERRIDE | NdiscNeighborFlags::ROUTER,
        target_addr: ip,
        lladdr: Some(mac.into()),
    });
    let ip6 = Ipv6Repr {
        src_addr: ip,
        dst_addr: all_nodes,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let dst = EthernetAddress([0x33, 0x33, 0, 0, 0, 1]);
    ethernet(dst, mac, EthernetProtocol::Ipv6, ip6.buffer_len() + icmp.buffer_len(), |p| {
        let mut pkt = Ipv6Packet::new_unchecked(p);
        ip6.emit(&mut pkt);
        icmp.emit(
            &ip,
            &all_nodes,
            &mut Icmpv6Packet::new_unchecked(pkt.payload_mut()),
            &ChecksumCapabilities::default(),
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame_spec;
    use crate::worker::Waker;

    fn host() -> (Host, Arc<Link>) {
        let link = Arc::new(Link::new(vec![Arc::new(Waker::new().unwrap())]));
        let addrs = GatewayAddrs {
            mac: "02:42:0a:01:00:01".parse().unwrap(),
            ipv4: Some((Ipv4Addr::new(10, 1, 0, 1), 16)),
            ipv6: Some(("fd00:1::1".parse().unwrap(), 64)),
            mtu: 1500,
            next_hop: None,
            dns: None,
        };
        let stats = Arc::new(PortShared::new(2, 1518));
        (Host::new(3, addrs, link.clone(), stats, Instant::from_millis(0)), link)
    }

    fn feed(h: &mut Host, link: &Link, spec: &str) -> Vec<Vec<u8>> {
        assert!(link.to_services(3, 0, &frame_spec::parse(spec).unwrap()));
        h.receive(link.next_up().unwrap());
        h.poll(
            Instant::from_millis(1),
            &gateway_dns::Shared { names: Arc::new(crate::dns::names::Names::default()), forwarder: None },
        );
        std::iter::from_fn(|| link.next_down(0)).map(|p| p.data.clone()).collect()
    }

    #[test]
    fn answers_arp_ping_and_neighbour_solicitation() {
        let (mut h, link) = host();
        let out = feed(&mut h, &link, "src 02:00:00:00:00:05 arp tell 10.1.0.5 who-has 10.1.0.1");
        assert_eq!(out.len(), 1);
        let f = EthernetFrame::new_checked(&out[0][..]).unwrap();
        assert_eq!((f.ethertype(), f.dst_addr().0), (EthernetProtocol::Arp, [2, 0, 0, 0, 0, 5]));

        let out = feed(&mut h, &link, "src 02:00:00:00:00:05 dst 02:42:0a:01:00:01 ip src 10.1.0.5 dst 10.1.0.1 icmp");
        let f = EthernetFrame::new_checked(&out[0][..]).unwrap();
        let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
        assert_eq!(ip.dst_addr(), Ipv4Addr::new(10, 1, 0, 5));
        assert_eq!(
            Icmpv4Packet::new_checked(ip.payload()).unwrap().msg_type(),
            smoltcp::wire::Icmpv4Message::EchoReply
        );

        let out = feed(
            &mut h,
            &link,
            "src 02:00:00:00:00:05 dst 33:33:ff:00:00:01 ipv6 src fd00:1::5 dst ff02::1:ff00:1 ns fd00:1::1",
        );
        assert_eq!(out.len(), 1, "a neighbour advertisement");
        let f = EthernetFrame::new_checked(&out[0][..]).unwrap();
        let ip = Ipv6Packet::new_checked(f.payload()).unwrap();
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(
            (icmp.msg_type(), icmp.target_addr()),
            (smoltcp::wire::Icmpv6Message::NeighborAdvert, "fd00:1::1".parse().unwrap())
        );
    }

    #[test]
    fn a_routed_packet_whose_ttl_runs_out_gets_time_exceeded() {
        let (mut h, link) = host();
        let probe =
            "src 02:00:00:00:00:05 dst 02:42:0a:01:00:01 ip src 10.1.0.5 dst 198.51.100.7 ttl 1 udp dport 33434";
        let out = feed(&mut h, &link, probe);
        assert_eq!(out.len(), 1);
        let f = EthernetFrame::new_checked(&out[0][..]).unwrap();
        assert_eq!(f.dst_addr().0, [2, 0, 0, 0, 0, 5]);
        let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_addr(), ip.dst_addr()), (Ipv4Addr::new(10, 1, 0, 1), Ipv4Addr::new(10, 1, 0, 5)));
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum());
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (Icmpv4Message::TimeExceeded, 0));
        // It quotes the probe: its header and its UDP header.
        let quoted = Ipv4Packet::new_checked(icmp.data()).unwrap();
        assert_eq!(quoted.dst_addr(), Ipv4Addr::new(198, 51, 100, 7));
        // No error about an error, and nothing for packets with TTL left.
        let mac = EthernetAddress([2, 0x42, 10, 1, 0, 1]);
        let me = Ipv4Addr::new(10, 1, 0, 1);
        let mut error = out[0].clone();
        error[14 + 8] = 1; // its TTL
        error[14 + 16..14 + 20].copy_from_slice(&[198, 51, 100, 7]); // and not for us
        assert!(time_exceeded(mac, me, &error).is_none());
        let alive = frame_spec::parse(&probe.replace("ttl 1", "ttl 2")).unwrap();
        assert!(time_exceeded(mac, me, &alive).is_none());
    }

    #[test]
    fn announces_itself() {
        let (mut h, link) = host();
        h.announce();
        let out: Vec<_> = std::iter::from_fn(|| link.next_down(0)).collect();
        assert_eq!(out.len(), 2);
        let arp = EthernetFrame::new_checked(&out[0].data[..]).unwrap();
        assert_eq!(arp.dst_addr(), EthernetAddress::BROADCAST);
        assert_eq!(out[1].data.len(), 86);
    }
}
