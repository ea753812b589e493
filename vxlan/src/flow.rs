//! The outer UDP source port: a hash of the inner flow, so the underlay's ECMP and RSS spread
//! the tunnel's flows as they would spread the flows themselves (RFC 7348 §5), in the port
//! range the kernel's vxlan device uses by default (its local port range). The hash is the
//! same both ways of a flow (addresses and ports are ordered first), as the kernel's is.

use std::ops::RangeInclusive;

/// The kernel's default (`net.ipv4.ip_local_port_range`).
pub const SOURCE_PORTS: RangeInclusive<u16> = 32768..=60999;

/// The source port for a tunnelled `inner` frame.
pub fn source_port(inner: &[u8], range: &RangeInclusive<u16>) -> u16 {
    let h = flow_hash(inner);
    let span = u64::from(range.end() - range.start()) + 1;
    range.start() + ((u64::from(h) * span) >> 32) as u16
}

/// A 32-bit hash of the flow: IPv4 or IPv6 addresses, protocol and ports (TCP, UDP, SCTP,
/// unfragmented); for ARP its two IPv4 addresses (a request and its reply are one flow, as
/// the kernel's flow dissector has it); else the two MACs.
fn flow_hash(f: &[u8]) -> u32 {
    let ethertype = f.get(12..14).map_or(0, |t| u16::from_be_bytes([t[0], t[1]]));
    let key = match ethertype {
        0x0800 => ipv4_key(&f[14..]),
        0x86dd => ipv6_key(&f[14..]),
        0x0806 => arp_key(&f[14..]),
        _ => None,
    };
    let mut h = Fnv::default();
    match key {
        Some((proto, a, b)) => {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            h.write(&[proto]);
            h.write(&lo);
            h.write(&hi);
        }
        None => {
            let (a, b) = (f.get(0..6).unwrap_or(&[]), f.get(6..12).unwrap_or(&[]));
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            h.write(lo);
            h.write(hi);
        }
    }
    h.finish()
}

/// (protocol, source address and port, destination address and port).
type Key = (u8, [u8; 18], [u8; 18]);

fn ends(src: &[u8], dst: &[u8], ports: Option<&[u8]>) -> ([u8; 18], [u8; 18]) {
    let (mut a, mut b) = ([0u8; 18], [0u8; 18]);
    a[..src.len()].copy_from_slice(src);
    b[..dst.len()].copy_from_slice(dst);
    if let Some(p) = ports {
        a[16..].copy_from_slice(&p[0..2]);
        b[16..].copy_from_slice(&p[2..4]);
    }
    (a, b)
}

fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 132)
}

fn ipv4_key(ip: &[u8]) -> Option<Key> {
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    let h = ip.get(..20)?;
    let proto = h[9];
    let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
    let ports = (has_ports(proto) && !fragment).then(|| ip.get(ihl..ihl + 4)).flatten();
    let (a, b) = ends(&h[12..16], &h[16..20], ports);
    Some((proto, a, b))
}

fn arp_key(arp: &[u8]) -> Option<Key> {
    let a = arp.get(..28)?;
    if a[0..6] != [0, 1, 8, 0, 6, 4] {
        return None; // not Ethernet/IPv4 ARP
    }
    let (s, t) = ends(&a[14..18], &a[24..28], None);
    Some((0, s, t))
}

fn ipv6_key(ip: &[u8]) -> Option<Key> {
    let h = ip.get(..40)?;
    let proto = h[6];
    let ports = has_ports(proto).then(|| ip.get(40..44)).flatten();
    let (a, b) = ends(&h[8..24], &h[24..40], ports);
    Some((proto, a, b))
}

/// FNV-1a, 32 bits: a few bytes per frame, no seed to keep.
struct Fnv(u32);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0x811c_9dc5)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
    }

    fn finish(&self) -> u32 {
        // FNV's low bits are weak: mix before the range takes the high ones.
        let mut x = self.0;
        x ^= x >> 16;
        x = x.wrapping_mul(0x7feb_352d);
        x ^= x >> 15;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&[0, 8, 0, 0]);
        f
    }

    #[test]
    fn both_ways_of_a_flow_share_a_port_and_flows_spread() {
        let r = SOURCE_PORTS;
        let there = source_port(&udp([10, 0, 0, 1], 1000, [10, 0, 0, 2], 53), &r);
        let back = source_port(&udp([10, 0, 0, 2], 53, [10, 0, 0, 1], 1000), &r);
        assert_eq!(there, back);
        assert!(r.contains(&there));
        let ports: std::collections::HashSet<u16> =
            (0..1000u16).map(|p| source_port(&udp([10, 0, 0, 1], 1000 + p, [10, 0, 0, 2], 53), &r)).collect();
        assert!(ports.len() > 900, "1000 flows over {} ports", ports.len());
        // Not IP: by MAC, still both ways alike; runts hash too.
        let arp = [[2u8, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]].concat();
        let rev = [[2u8, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]].concat();
        assert_eq!(source_port(&arp, &r), source_port(&rev, &r));
        assert!(r.contains(&source_port(&[], &r)));
    }
}
