//! Reading a connection's key out of an IPv4 packet, and rewriting its addresses and ports
//! with incrementally patched checksums. The buffer starts at the IPv4 header.

use smoltcp::wire::{Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket, UdpPacket};

use crate::checksum::{self, Csum};
use crate::key::{Endpoint, FlowKey, Proto};

/// Why a packet cannot be translated; the caller drops and counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unsupported {
    #[error("truncated or malformed")]
    Malformed,
    #[error("an IP fragment")]
    Fragment,
    #[error("protocol {0} (only TCP, UDP and ICMP echo are translated)")]
    Protocol(u8),
    #[error("ICMP type {0}")]
    IcmpType(u8),
}

/// TCP flags the state tracking reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags {
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Tcp(TcpFlags),
    Udp,
    /// ICMP echo; `request` tells which side holds the identifier.
    Echo {
        request: bool,
    },
    /// An ICMP error (unreachable, TTL exceeded, parameter problem) quoting a packet whose
    /// key, as it was sent, is `inner`. It travels against that packet's direction.
    IcmpError {
        inner: FlowKey,
    },
}

/// What [`parse`] found: the packet's key, its kind and where its L4 header starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub key: FlowKey,
    pub kind: Kind,
    l4: usize,
}

impl Parsed {
    /// Bytes from the IPv4 header's start through the L4 checksum: what a rewrite touches.
    pub fn rewritten_len(&self) -> usize {
        self.l4
            + match self.kind {
                Kind::Tcp(_) => 18,
                Kind::Udp | Kind::Echo { .. } | Kind::IcmpError { .. } => 8,
            }
    }
}

/// The IPv4 total length of a packet [`parse`] accepted.
pub fn total_len(buf: &[u8]) -> usize {
    usize::from(Ipv4Packet::new_unchecked(buf).total_len())
}

/// The key of an IPv4 packet. Fragments are refused: only the first one carries ports.
pub fn parse(buf: &[u8]) -> Result<Parsed, Unsupported> {
    let ip = Ipv4Packet::new_checked(buf).map_err(|_| Unsupported::Malformed)?;
    if ip.version() != 4 {
        return Err(Unsupported::Malformed);
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Err(Unsupported::Fragment);
    }
    let l4 = usize::from(ip.header_len());
    let payload = &buf[l4..usize::from(ip.total_len())];
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let key = |proto, sport, dport| FlowKey::new(proto, Endpoint::new(src, sport), Endpoint::new(dst, dport));
    match ip.next_header() {
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_checked(payload).map_err(|_| Unsupported::Malformed)?;
            let flags = TcpFlags { syn: tcp.syn(), ack: tcp.ack(), fin: tcp.fin(), rst: tcp.rst() };
            Ok(Parsed { key: key(Proto::Tcp, tcp.src_port(), tcp.dst_port()), kind: Kind::Tcp(flags), l4 })
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_checked(payload).map_err(|_| Unsupported::Malformed)?;
            Ok(Parsed { key: key(Proto::Udp, udp.src_port(), udp.dst_port()), kind: Kind::Udp, l4 })
        }
        IpProtocol::Icmp => {
            if payload.len() < ICMP_HEADER {
                return Err(Unsupported::Malformed);
            }
            let icmp = Icmpv4Packet::new_unchecked(payload);
            match icmp.msg_type() {
                Icmpv4Message::EchoRequest => {
                    Ok(Parsed { key: key(Proto::Icmp, icmp.echo_ident(), 0), kind: Kind::Echo { request: true }, l4 })
                }
                Icmpv4Message::EchoReply => {
                    Ok(Parsed { key: key(Proto::Icmp, 0, icmp.echo_ident()), kind: Kind::Echo { request: false }, l4 })
                }
                Icmpv4Message::DstUnreachable | Icmpv4Message::TimeExceeded | Icmpv4Message::ParamProblem => {
                    let inner = parse_quoted(&payload[ICMP_HEADER..])?;
                    Ok(Parsed { key: key(Proto::Icmp, 0, 0), kind: Kind::IcmpError { inner: inner.key }, l4 })
                }
                other => Err(Unsupported::IcmpType(u8::from(other))),
            }
        }
        other => Err(Unsupported::Protocol(u8::from(other))),
    }
}

/// An ICMP header: type, code, checksum and 4 bytes (echo id and sequence, or unused).
const ICMP_HEADER: usize = 8;
/// RFC 792: an error quotes the IP header and at least the first 8 bytes of its payload.
const QUOTED_L4: usize = 8;

/// The packet an ICMP error quotes: an IP header whose length fields describe the original,
/// followed by only the start of its payload, so lengths are checked by hand.
struct Quoted {
    key: FlowKey,
    l4: usize,
}

fn parse_quoted(buf: &[u8]) -> Result<Quoted, Unsupported> {
    if buf.len() < 20 {
        return Err(Unsupported::Malformed);
    }
    let ip = Ipv4Packet::new_unchecked(buf);
    let l4 = usize::from(ip.header_len());
    if ip.version() != 4 || l4 < 20 || buf.len() < l4 + QUOTED_L4 || ip.frag_offset() != 0 {
        return Err(Unsupported::Malformed);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let quoted = &buf[l4..];
    let key = |proto, sport, dport| FlowKey::new(proto, Endpoint::new(src, sport), Endpoint::new(dst, dport));
    let key = match ip.next_header() {
        // Ports are the first four bytes of both headers.
        IpProtocol::Tcp => {
            let tcp = TcpPacket::new_unchecked(quoted);
            key(Proto::Tcp, tcp.src_port(), tcp.dst_port())
        }
        IpProtocol::Udp => {
            let udp = UdpPacket::new_unchecked(quoted);
            key(Proto::Udp, udp.src_port(), udp.dst_port())
        }
        IpProtocol::Icmp => {
            let icmp = Icmpv4Packet::new_unchecked(quoted);
            match icmp.msg_type() {
                Icmpv4Message::EchoRequest => key(Proto::Icmp, icmp.echo_ident(), 0),
                Icmpv4Message::EchoReply => key(Proto::Icmp, 0, icmp.echo_ident()),
                other => return Err(Unsupported::IcmpType(u8::from(other))),
            }
        }
        other => return Err(Unsupported::Protocol(u8::from(other))),
    };
    Ok(Quoted { key, l4 })
}

/// Rewrite a packet parsed as `p` so that it carries `to` (same protocol; what differs from
/// `p.key` is written, checksums patched). `csum` says how to read the L4 checksum field.
pub fn rewrite(buf: &mut [u8], p: &Parsed, to: &FlowKey, csum: Csum) {
    debug_assert!(!matches!(p.kind, Kind::IcmpError { .. }), "use rewrite_icmp_error");
    let l4_check = rewrite_ip(buf, &p.key, to);
    let l4 = &mut buf[p.l4..];
    match p.kind {
        Kind::Tcp(_) => {
            let mut tcp = TcpPacket::new_unchecked(l4);
            let c = patch_l4(tcp.checksum(), l4_check, &p.key, to, csum);
            tcp.set_src_port(to.src.port);
            tcp.set_dst_port(to.dst.port);
            tcp.set_checksum(c);
        }
        Kind::Udp => {
            let mut udp = UdpPacket::new_unchecked(l4);
            let old = udp.checksum();
            // Zero means "no checksum" in IPv4 UDP; a computed zero is sent as all ones.
            if !(old == 0 && csum == Csum::Full) {
                let c = patch_l4(old, l4_check, &p.key, to, csum);
                udp.set_checksum(if c == 0 && csum == Csum::Full { 0xffff } else { c });
            }
            udp.set_src_port(to.src.port);
            udp.set_dst_port(to.dst.port);
        }
        Kind::Echo { request } => {
            let mut icmp = Icmpv4Packet::new_unchecked(l4);
            let (old, new) = if request { (p.key.src.port, to.src.port) } else { (p.key.dst.port, to.dst.port) };
            if old != new {
                if csum == Csum::Full {
                    icmp.set_checksum(checksum::update16(icmp.checksum(), old, new));
                }
                icmp.set_echo_ident(new);
            }
        }
        Kind::IcmpError { .. } => {}
    }
}

/// Rewrite an ICMP error: its outer addresses become `outer`'s, and the packet it quotes
/// becomes `inner` (the quoted packet as it was before translation). Errors are small and
/// rare, so the ICMP checksum is summed afresh.
pub fn rewrite_icmp_error(buf: &mut [u8], p: &Parsed, outer: &FlowKey, inner: &FlowKey) {
    let Kind::IcmpError { inner: quoted_key } = p.kind else {
        debug_assert!(false, "not an ICMP error");
        return;
    };
    rewrite_ip(buf, &p.key, outer);
    let total = usize::from(Ipv4Packet::new_unchecked(&buf[..]).total_len());
    let icmp = &mut buf[p.l4..total];
    let quoted = &mut icmp[ICMP_HEADER..];
    let Ok(Quoted { l4, .. }) = parse_quoted(quoted) else { return };
    let l4_check = rewrite_ip(quoted, &quoted_key, inner);
    let body = &mut quoted[l4..];
    let whole = |n: usize| body.len() >= n;
    match inner.proto {
        Proto::Tcp => {
            let complete = whole(20);
            let mut tcp = TcpPacket::new_unchecked(&mut *body);
            if complete {
                let c = patch_l4(tcp.checksum(), l4_check, &quoted_key, inner, Csum::Full);
                tcp.set_checksum(c);
            }
            tcp.set_src_port(inner.src.port);
            tcp.set_dst_port(inner.dst.port);
        }
        Proto::Udp => {
            let mut udp = UdpPacket::new_unchecked(&mut *body);
            if udp.checksum() != 0 {
                let c = patch_l4(udp.checksum(), l4_check, &quoted_key, inner, Csum::Full);
                udp.set_checksum(if c == 0 { 0xffff } else { c });
            }
            udp.set_src_port(inner.src.port);
            udp.set_dst_port(inner.dst.port);
        }
        Proto::Icmp => {
            let mut echo = Icmpv4Packet::new_unchecked(&mut *body);
            let request = echo.msg_type() == Icmpv4Message::EchoRequest;
            let (old, new) =
                if request { (quoted_key.src.port, inner.src.port) } else { (quoted_key.dst.port, inner.dst.port) };
            echo.set_checksum(checksum::update16(echo.checksum(), old, new));
            echo.set_echo_ident(new);
        }
    }
    let mut icmp = Icmpv4Packet::new_unchecked(icmp);
    icmp.set_checksum(0);
    let c = checksum::checksum(icmp.into_inner());
    Icmpv4Packet::new_unchecked(&mut buf[p.l4..total]).set_checksum(c);
}

/// The address part of a rewrite: set the IPv4 addresses to `to`'s, patch the header
/// checksum, and return the address changes the L4 checksum must take too.
fn rewrite_ip(buf: &mut [u8], from: &FlowKey, to: &FlowKey) -> AddrChange {
    let mut ip = Ipv4Packet::new_unchecked(buf);
    let mut check = ip.checksum();
    let change = AddrChange {
        src: (u32::from(from.src.addr), u32::from(to.src.addr)),
        dst: (u32::from(from.dst.addr), u32::from(to.dst.addr)),
    };
    if from.src.addr != to.src.addr {
        check = checksum::update32(check, change.src.0, change.src.1);
        ip.set_src_addr(to.src.addr);
    }
    if from.dst.addr != to.dst.addr {
        check = checksum::update32(check, change.dst.0, change.dst.1);
        ip.set_dst_addr(to.dst.addr);
    }
    ip.set_checksum(check);
    change
}

/// Old and new source and destination addresses (pseudo-header words).
struct AddrChange {
    src: (u32, u32),
    dst: (u32, u32),
}

/// A TCP or UDP checksum moved from `from`'s addresses and ports to `to`'s.
fn patch_l4(mut c: u16, addrs: AddrChange, from: &FlowKey, to: &FlowKey, csum: Csum) -> u16 {
    for (old, new) in [addrs.src, addrs.dst] {
        if old != new {
            c = match csum {
                Csum::Full => checksum::update32(c, old, new),
                Csum::Partial => checksum::update32_partial(c, old, new),
            };
        }
    }
    if csum == Csum::Full {
        for (old, new) in [(from.src.port, to.src.port), (from.dst.port, to.dst.port)] {
            if old != new {
                c = checksum::update16(c, old, new);
            }
        }
    }
    c
}
