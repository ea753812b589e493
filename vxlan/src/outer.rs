//! The outer headers of a tunnelled frame over an IPv4 underlay: Ethernet, IPv4, UDP to the
//! VXLAN port, the VXLAN header. Encapsulation writes the 50 bytes that go before the
//! untouched inner frame (the caller sends both, gathered: the inner frame is never copied
//! here); decapsulation checks them and hands back the inner frame as a slice.
//!
//! The outer UDP checksum is sent as zero (RFC 7348 allows it over IPv4, and it is what a
//! kernel vxlan device with `noudpcsum` sends; every kernel accepts it). One that is set is
//! not checked here: a frame read from an AF_PACKET ring carries only the partial sum the
//! sender's offload left for the wire, and the underlay's UDP socket checks full ones.

use crate::header::{self, Error, Vni, HEADER_LEN};
use std::net::Ipv4Addr;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
/// Bytes a frame grows by in the tunnel.
pub const OVERHEAD: usize = ETH_LEN + IPV4_LEN + UDP_LEN + HEADER_LEN;

/// The outer headers of the frames to one remote VTEP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    pub src_mac: [u8; 6],
    /// The next hop's MAC on the underlay (the remote VTEP's, on one segment).
    pub dst_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub dst_port: u16,
}

impl Outer {
    /// Write the headers for an inner frame of `inner_len` bytes into `out`: IPv4 with
    /// identification `id` and DF clear (as the kernel's device sends by default), UDP from
    /// `src_port` (see `flow::source_port`) with a zero checksum, VXLAN for `vni`.
    pub fn write(
        &self,
        vni: Vni,
        src_port: u16,
        id: u16,
        inner_len: usize,
        out: &mut [u8; OVERHEAD],
    ) -> Result<(), Error> {
        let udp_len = UDP_LEN + HEADER_LEN + inner_len;
        let total = IPV4_LEN + udp_len;
        if total > usize::from(u16::MAX) {
            return Err(Error::TooBig(inner_len));
        }
        out[0..6].copy_from_slice(&self.dst_mac);
        out[6..12].copy_from_slice(&self.src_mac);
        out[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut out[ETH_LEN..ETH_LEN + IPV4_LEN];
        ip[0] = 0x45;
        ip[1] = 0;
        ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&id.to_be_bytes());
        ip[6..8].copy_from_slice(&[0, 0]);
        ip[8] = self.ttl;
        ip[9] = 17;
        ip[10..12].copy_from_slice(&[0, 0]);
        ip[12..16].copy_from_slice(&self.src.octets());
        ip[16..20].copy_from_slice(&self.dst.octets());
        let sum = ipv4_checksum(ip);
        ip[10..12].copy_from_slice(&sum.to_be_bytes());
        let udp = &mut out[ETH_LEN + IPV4_LEN..ETH_LEN + IPV4_LEN + UDP_LEN];
        udp[0..2].copy_from_slice(&src_port.to_be_bytes());
        udp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        udp[4..6].copy_from_slice(&(udp_len as u16).to_be_bytes());
        udp[6..8].copy_from_slice(&[0, 0]);
        let mut h = [0u8; HEADER_LEN];
        header::write(vni, &mut h);
        out[OVERHEAD - HEADER_LEN..].copy_from_slice(&h);
        Ok(())
    }
}

/// A decapsulated frame: where it came from and what it carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapped<'a> {
    pub vni: Vni,
    /// The sending VTEP.
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub src_port: u16,
    pub inner: &'a [u8],
}

/// Take apart a whole outer frame (Ethernet, IPv4, UDP to `port`, VXLAN). Trailing bytes past
/// the IPv4 length (Ethernet padding) are not part of the inner frame.
pub fn decap(frame: &[u8], port: u16) -> Result<Decapped<'_>, Error> {
    let eth = frame.get(..ETH_LEN).ok_or(Error::Truncated)?;
    if eth[12..14] != [0x08, 0x00] {
        return Err(Error::NotIpv4);
    }
    let rest = &frame[ETH_LEN..];
    let ip = rest.get(..IPV4_LEN).ok_or(Error::Truncated)?;
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] >> 4 != 4 || ihl < IPV4_LEN || total < ihl || total > rest.len() {
        return Err(Error::BadIpv4);
    }
    if ipv4_checksum(&rest[..ihl]) != 0 {
        return Err(Error::BadIpv4);
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return Err(Error::Fragment); // MF set or an offset
    }
    if ip[9] != 17 {
        return Err(Error::NotVxlan);
    }
    let udp = &rest[ihl..total];
    let u = udp.get(..UDP_LEN).ok_or(Error::Truncated)?;
    let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
    if u16::from_be_bytes([u[2], u[3]]) != port {
        return Err(Error::NotVxlan);
    }
    if udp_len < UDP_LEN || udp_len > udp.len() {
        return Err(Error::Truncated);
    }
    let (vni, inner) = header::parse(&udp[UDP_LEN..udp_len])?;
    Ok(Decapped {
        vni,
        src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
        dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
        src_port: u16::from_be_bytes([u[0], u[1]]),
        inner,
    })
}

/// The ones' complement sum of a header (0 over a header whose checksum is right).
fn ipv4_checksum(h: &[u8]) -> u16 {
    let mut sum: u32 = h.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outer() -> Outer {
        Outer {
            src_mac: [2, 0, 0, 0, 0x0a, 1],
            dst_mac: [2, 0, 0, 0, 0x0b, 1],
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            ttl: 64,
            dst_port: crate::PORT,
        }
    }

    fn tunnelled(inner: &[u8]) -> Vec<u8> {
        let mut h = [0u8; OVERHEAD];
        outer().write(Vni::new(42).unwrap(), 50000, 7, inner.len(), &mut h).unwrap();
        [&h[..], inner].concat()
    }

    #[test]
    fn encap_then_decap() {
        let inner = [0xabu8; 60];
        let f = tunnelled(&inner);
        let d = decap(&f, crate::PORT).unwrap();
        assert_eq!((d.vni.get(), d.src, d.src_port, d.inner), (42, outer().src, 50000, &inner[..]));
        // Padding after the IPv4 packet is not inner frame.
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 4]);
        assert_eq!(decap(&padded, crate::PORT).unwrap().inner, &inner[..]);
    }

    #[test]
    fn bad_outer_headers_are_refused() {
        let f = tunnelled(&[0u8; 60]);
        let bad = |at: usize, v: u8| {
            let mut g = f.clone();
            g[at] = v;
            decap(&g, crate::PORT).map(|d| d.vni)
        };
        assert_eq!(bad(12, 0x86), Err(Error::NotIpv4));
        assert_eq!(bad(14, 0x65), Err(Error::BadIpv4), "IPv6 version in an IPv4 header");
        assert_eq!(bad(24, 0), Err(Error::BadIpv4), "checksum");
        assert_eq!(decap(&f, 4790), Err(Error::NotVxlan));
        assert_eq!(decap(&f[..40], crate::PORT), Err(Error::BadIpv4), "shorter than its IPv4 length");
        let mut frag = f.clone();
        frag[20] = 0x20; // MF
        let sum = ipv4_checksum(&{
            let mut h = frag[14..34].to_vec();
            h[10] = 0;
            h[11] = 0;
            h
        });
        frag[24..26].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(decap(&frag, crate::PORT), Err(Error::Fragment));
        let mut h = [0u8; OVERHEAD];
        assert_eq!(outer().write(Vni::new(1).unwrap(), 1, 1, 65500, &mut h), Err(Error::TooBig(65500)));
    }
}
