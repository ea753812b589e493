//! Frames written as words, for `vswitch explain --frame`:
//!
//! ```text
//! eth src 02:00:00:00:00:01 dst ff:ff:ff:ff:ff:ff arp
//! eth src 02:00:00:00:00:01 dst 02:00:00:00:00:02 vlan 10 ip src 10.0.0.1 dst 10.0.0.2 udp dport 53
//! arp who-has 10.0.0.1 tell 10.0.0.2
//! dst 33:33:ff:00:00:01 ipv6 src fd00::2 dst ff02::1:ff00:1 ns fd00::1
//! eth dst 01:80:c2:00:00:00 type 0x88cc
//! eth src 02:00:00:00:00:01 len 10            # cut to 10 bytes: a runt
//! hex ffffffffffff020000000001 0806 ...       # the bytes themselves
//! ```
//!
//! `eth` may be left out; the source defaults to 02:00:00:00:00:01, the destination to
//! broadcast, the payload to none. Frames are padded to 60 bytes as a NIC would, unless
//! `len` says otherwise.

use crate::mac::MacAddr;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr,
    NdiscRepr,
};
use std::net::{Ipv4Addr, Ipv6Addr};

#[derive(Default)]
struct Spec {
    src: Option<MacAddr>,
    dst: Option<MacAddr>,
    vlan: Option<u16>,
    ethertype: Option<u16>,
    payload: Vec<u8>,
    /// Built once the source MAC is known (it goes inside).
    arp: Option<(Ipv4Addr, Ipv4Addr)>,
    ipv6: Option<Ipv6Spec>,
    len: Option<usize>,
}

fn next<'a>(words: &mut impl Iterator<Item = &'a str>, after: &str) -> Result<&'a str, String> {
    words.next().ok_or_else(|| format!("'{after}' needs a value"))
}

fn num<T: std::str::FromStr>(w: &str, what: &str) -> Result<T, String> {
    let v = match w.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).map(|v| v.to_string()).unwrap_or_default(),
        None => w.to_string(),
    };
    v.parse().map_err(|_| format!("bad {what} '{w}'"))
}

/// Build the frame a spec describes.
pub fn parse(text: &str) -> Result<Vec<u8>, String> {
    let mut words = text.split_whitespace().peekable();
    if words.peek() == Some(&"hex") {
        let h: String = words.skip(1).collect();
        return hex(&h).ok_or_else(|| format!("bad hex bytes '{h}'"));
    }
    let mut s = Spec::default();
    while let Some(w) = words.next() {
        match w {
            "eth" | "ether" => {}
            "src" => s.src = Some(next(&mut words, w)?.parse()?),
            "dst" => s.dst = Some(next(&mut words, w)?.parse()?),
            "vlan" => {
                let v: u16 = num(next(&mut words, w)?, "VLAN id")?;
                if v > 4094 {
                    return Err(format!("bad VLAN id {v}: use 0 to 4094"));
                }
                s.vlan = Some(v);
            }
            "type" => s.ethertype = Some(num(next(&mut words, w)?, "EtherType")?),
            "len" => {
                let n: usize = num(next(&mut words, w)?, "length")?;
                if n > crate::frame::MAX_FRAME {
                    return Err(format!("len {n}: a frame has at most {} bytes", crate::frame::MAX_FRAME));
                }
                s.len = Some(n);
            }
            "arp" => {
                s.ethertype = Some(0x0806);
                let (mut who_has, mut tell) = (Ipv4Addr::UNSPECIFIED, Ipv4Addr::UNSPECIFIED);
                while let Some(w) = words.next_if(|w| ["who-has", "tell"].contains(w)) {
                    let ip = num(next(&mut words, w)?, "IPv4 address")?;
                    if w == "who-has" {
                        who_has = ip;
                    } else {
                        tell = ip;
                    }
                }
                s.arp = Some((who_has, tell));
            }
            "ip" | "ipv4" => {
                s.ethertype = Some(0x0800);
                s.payload = ipv4(&mut words)?;
            }
            "ipv6" => {
                s.ethertype = Some(0x86dd);
                s.ipv6 = Some(ipv6(&mut words)?);
            }
            other => return Err(format!("unknown word '{other}' in the frame (see: vswitch explain --help)")),
        }
    }
    let src = s.src.unwrap_or(DEFAULT_SRC);
    if let Some((who_has, tell)) = s.arp {
        s.payload = arp_request(src, who_has, tell);
    }
    if let Some(v6) = &s.ipv6 {
        s.payload = v6.build(src);
    }
    let mut f = s.dst.unwrap_or(MacAddr([0xff; 6])).0.to_vec();
    f.extend_from_slice(&src.0);
    if let Some(v) = s.vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&s.ethertype.unwrap_or(0x88b5).to_be_bytes()); // 0x88b5: local experimental
    f.extend_from_slice(&s.payload);
    match s.len {
        Some(n) => f.resize(n, 0),
        None if f.len() < 60 => f.resize(60, 0),
        None => {}
    }
    Ok(f)
}

const DEFAULT_SRC: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);

fn arp_request(sha: MacAddr, who_has: Ipv4Addr, tell: Ipv4Addr) -> Vec<u8> {
    let r = ArpRepr::EthernetIpv4 {
        operation: ArpOperation::Request,
        source_hardware_addr: EthernetAddress(sha.0),
        source_protocol_addr: tell,
        target_hardware_addr: EthernetAddress([0; 6]),
        target_protocol_addr: who_has,
    };
    let mut p = vec![0u8; r.buffer_len()];
    r.emit(&mut ArpPacket::new_unchecked(&mut p[..]));
    p
}

/// `ipv6 [src A] [dst B] [icmp6 | ns TARGET | udp [sport N] [dport N] | tcp ...]`.
struct Ipv6Spec {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    l4: V6L4,
}

enum V6L4 {
    None,
    Echo,
    NeighborSolicit(Ipv6Addr),
    Transport(u8, u16, u16),
}

fn ipv6<'a>(words: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>) -> Result<Ipv6Spec, String> {
    let mut v =
        Ipv6Spec { src: "fd00::1".parse().expect("literal"), dst: "fd00::2".parse().expect("literal"), l4: V6L4::None };
    let ours = |w: &str, l4: &V6L4| match w {
        "src" | "dst" | "icmp6" | "ns" | "udp" | "tcp" => matches!(l4, V6L4::None),
        "sport" | "dport" => matches!(l4, V6L4::Transport(..)),
        _ => false,
    };
    while let Some(w) = words.next_if(|w| ours(w, &v.l4)) {
        match w {
            "src" => v.src = num(next(words, w)?, "IPv6 address")?,
            "dst" => v.dst = num(next(words, w)?, "IPv6 address")?,
            "icmp6" => v.l4 = V6L4::Echo,
            "ns" => v.l4 = V6L4::NeighborSolicit(num(next(words, w)?, "IPv6 address")?),
            "udp" => v.l4 = V6L4::Transport(17, 1024, 80),
            "tcp" => v.l4 = V6L4::Transport(6, 1024, 80),
            _ => {
                let port: u16 = num(next(words, w)?, "port")?;
                if let V6L4::Transport(_, sport, dport) = &mut v.l4 {
                    *if w == "sport" { sport } else { dport } = port;
                }
            }
        }
    }
    Ok(v)
}

impl Ipv6Spec {
    fn build(&self, src_mac: MacAddr) -> Vec<u8> {
        let caps = ChecksumCapabilities::default();
        let icmp = match self.l4 {
            V6L4::Echo => Some(Icmpv6Repr::EchoRequest { ident: 1, seq_no: 1, data: &[] }),
            V6L4::NeighborSolicit(target) => Some(Icmpv6Repr::Ndisc(NdiscRepr::NeighborSolicit {
                target_addr: target,
                lladdr: Some(EthernetAddress(src_mac.0).into()),
            })),
            _ => None,
        };
        let (next_header, l4): (IpProtocol, Vec<u8>) = match (&self.l4, icmp) {
            (_, Some(icmp)) => {
                let mut b = vec![0u8; icmp.buffer_len()];
                icmp.emit(&self.src, &self.dst, &mut Icmpv6Packet::new_unchecked(&mut b[..]), &caps);
                (IpProtocol::Icmpv6, b)
            }
            (V6L4::Transport(p, sport, dport), None) => {
                let mut t = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
                if *p == 17 {
                    t.extend_from_slice(&[0, 8, 0, 0]);
                } else {
                    t.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
                    // SYN
                }
                (IpProtocol::from(*p), t)
            }
            _ => (IpProtocol::Unknown(59), vec![]), // no next header
        };
        let ip = Ipv6Repr {
            src_addr: self.src,
            dst_addr: self.dst,
            next_header,
            payload_len: l4.len(),
            hop_limit: if matches!(self.l4, V6L4::NeighborSolicit(_)) { 255 } else { 64 },
        };
        let mut b = vec![0u8; ip.buffer_len() + l4.len()];
        let mut pkt = Ipv6Packet::new_unchecked(&mut b[..]);
        ip.emit(&mut pkt);
        pkt.payload_mut().copy_from_slice(&l4);
        b
    }
}

/// `ip [src A] [dst B] [ttl N] [icmp | tcp | udp [sport N] [dport N]]`: a valid IPv4 header.
fn ipv4<'a>(words: &mut std::iter::Peekable<impl Iterator<Item = &'a str>>) -> Result<Vec<u8>, String> {
    let (mut src, mut dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
    let (mut proto, mut sport, mut dport, mut ttl) = (0u8, 1024u16, 80u16, 64u8);
    // The words that belong to the IP header (addresses) or, after a protocol, to it (ports).
    let ours = |w: &str, proto: u8| match w {
        "src" | "dst" | "ttl" => proto == 0,
        "sport" | "dport" => proto != 0,
        "icmp" | "tcp" | "udp" => proto == 0,
        _ => false,
    };
    while let Some(w) = words.next_if(|w| ours(w, proto)) {
        match w {
            "src" => src = num(next(words, w)?, "IPv4 address")?,
            "dst" => dst = num(next(words, w)?, "IPv4 address")?,
            "ttl" => ttl = num(next(words, w)?, "TTL")?,
            "icmp" => proto = 1,
            "tcp" => proto = 6,
            "udp" => proto = 17,
            "sport" => sport = num(next(words, w)?, "port")?,
            _ => dport = num(next(words, w)?, "port")?,
        }
    }
    let l4: Vec<u8> = match proto {
        1 => vec![8, 0, 0xf7, 0xff, 0, 0, 0, 0], // echo request, checksum of an empty echo
        6 => {
            let mut t = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
            t.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]); // SYN
            t
        }
        17 => [sport.to_be_bytes(), dport.to_be_bytes(), 8u16.to_be_bytes(), [0, 0]].concat(),
        _ => vec![],
    };
    let total = (20 + l4.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, ttl, if proto == 0 { 253 } else { proto }, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let mut sum = h.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum::<u32>();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let sum = !(sum as u16);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(&l4);
    Ok(h)
}

/// The Ethernet frames of a capture file, pcap or pcapng (for `explain --pcap`).
pub fn from_capture_file(path: &std::path::Path) -> Result<Vec<Vec<u8>>, String> {
    use pcap_file::pcapng::Block;
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let bad = |e: pcap_file::PcapError| format!("{shown} is not a readable pcap or pcapng file: {e}");
    let mut frames = Vec::new();
    if bytes.starts_with(&[0x0a, 0x0d, 0x0d, 0x0a]) {
        let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).map_err(bad)?;
        while let Some(b) = r.next_block() {
            let (iface, data) = match b.map_err(bad)? {
                Block::EnhancedPacket(p) => (p.interface_id as usize, p.data.into_owned()),
                Block::SimplePacket(p) => (0, p.data.into_owned()),
                _ => continue,
            };
            let link = r.interfaces().get(iface).map(|i| i.linktype);
            if link != Some(pcap_file::DataLink::ETHERNET) {
                return Err(format!("{shown}: frame {} is not Ethernet ({link:?})", frames.len() + 1));
            }
            frames.push(data);
        }
    } else {
        let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).map_err(bad)?;
        if r.header().datalink != pcap_file::DataLink::ETHERNET {
            return Err(format!("{shown} does not hold Ethernet frames ({:?})", r.header().datalink));
        }
        while let Some(p) = r.next_packet() {
            frames.push(p.map_err(bad)?.data.into_owned());
        }
    }
    if frames.is_empty() {
        return Err(format!("{shown} holds no frames"));
    }
    Ok(frames)
}

pub fn hex(h: &str) -> Option<Vec<u8>> {
    let h: Vec<u8> = h.bytes().filter(|b| !b.is_ascii_whitespace() && *b != b':').collect();
    if !h.len().is_multiple_of(2) {
        return None;
    }
    h.chunks(2).map(|c| u8::from_str_radix(std::str::from_utf8(c).ok()?, 16).ok()).collect()
}

pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::describe;

    #[test]
    fn builds_what_it_says() {
        let f = parse("eth src 02:00:00:00:00:01 dst ff:ff:ff:ff:ff:ff arp").unwrap();
        assert_eq!(f.len(), 60);
        assert_eq!(describe(&f), "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, ARP who-has 0.0.0.0 tell 0.0.0.0");
        let f = parse("arp who-has 10.0.0.1 tell 10.0.0.2").unwrap();
        assert_eq!(describe(&f), "02:00:00:00:00:01 > ff:ff:ff:ff:ff:ff, ARP who-has 10.0.0.1 tell 10.0.0.2");
        let f = parse("dst 33:33:ff:00:00:01 ipv6 src fd00::2 dst ff02::1:ff00:1 ns fd00::1").unwrap();
        assert_eq!(describe(&f), "02:00:00:00:00:01 > 33:33:ff:00:00:01, IPv6 fd00::2 > ff02::1:ff00:1 ICMPv6");
        let ip = Ipv6Packet::new_checked(&f[14..]).unwrap();
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        let f = parse("dst 02:00:00:00:00:02 vlan 10 ip src 10.1.1.1 dst 10.1.1.2 udp dport 53").unwrap();
        assert_eq!(describe(&f), "02:00:00:00:00:01 > 02:00:00:00:00:02 vlan 10, IPv4 10.1.1.1 > 10.1.1.2 UDP");
        assert_eq!(&f[14 + 4 + 20 + 2..14 + 4 + 20 + 4], &53u16.to_be_bytes());
        assert_eq!(parse("eth src 02:00:00:00:00:01 len 10").unwrap().len(), 10);
        assert_eq!(parse("dst 01:80:c2:00:00:00 type 0x88cc").unwrap()[12..14], [0x88, 0xcc]);
        assert_eq!(parse("hex ffff ffff ffff").unwrap(), vec![0xff; 6]);
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        // The second needs the carry folded twice.
        for spec in ["ip src 192.168.1.1 dst 192.168.1.2 tcp", "ip src 255.255.58.211 dst 0.0.0.0 udp"] {
            let f = parse(spec).unwrap();
            let mut sum: u32 = f[14..34].chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]) as u32).sum();
            while sum >> 16 != 0 {
                sum = (sum & 0xffff) + (sum >> 16);
            }
            assert_eq!(sum, 0xffff, "{spec}");
        }
    }

    #[test]
    fn says_what_is_wrong() {
        assert!(parse("eth src nope").unwrap_err().starts_with("invalid MAC address 'nope'"));
        assert!(parse("eth foo").unwrap_err().contains("unknown word 'foo'"));
        assert!(parse("vlan 5000").unwrap_err().contains("bad VLAN id 5000"));
        assert!(parse("eth src").unwrap_err().contains("'src' needs a value"));
        assert!(parse("hex abc").is_err());
        assert!(parse("len 99999999999").unwrap_err().contains("at most"), "found by the frame_spec fuzz target");
    }
}
