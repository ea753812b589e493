//! Software GSO and checksum completion, for ports with no kernel behind them to do it: a
//! VXLAN tunnel port sends each frame as one UDP datagram, so a 64 KB TCP super-frame from a
//! veth (TSO on, the default) is cut here into segments of the overlay's MTU, and a frame
//! whose checksum was left to the NIC (`NEEDS_CSUM`) gets it finished. Written here: no crate
//! segments a virtio-net GSO frame into caller-owned buffers without allocating.
//!
//! A segment is the super-frame's headers (Ethernet, IPv4 or IPv6, TCP or UDP) with its
//! lengths, IPv4 identification, TCP sequence number and flags fixed, then its share of the
//! payload, with the L4 checksum computed in full, as the kernel's `tcp_gso_segment` does.

use crate::frame::VnetHdr;
use vswitch_nat::checksum::{checksum, sum};

const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("a GSO type the switch does not segment")]
    Unsupported,
    #[error("GSO headers that do not parse")]
    Malformed,
}

/// How a super-frame is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Where the IP header starts (after Ethernet and an in-band VLAN tag).
    l3: usize,
    l4: usize,
    /// Ethernet, IP and L4 headers: repeated in every segment.
    hdr: usize,
    /// Payload bytes per segment (the last may have fewer).
    mss: usize,
    ipv6: bool,
    tcp: bool,
    payload: usize,
}

impl Plan {
    /// Plan cutting `frame` (a GSO frame as its virtio header describes it) into segments
    /// whose IP packets are at most `max_packet` bytes.
    pub fn new(frame: &[u8], vnet: &VnetHdr, max_packet: usize) -> Result<Plan, Error> {
        let (tcp, ipv6) = match vnet.gso_type() {
            GSO_TCPV4 => (true, false),
            GSO_TCPV6 => (true, true),
            GSO_UDP_L4 => (false, frame.get(12..14) == Some(&[0x86, 0xdd])),
            _ => return Err(Error::Unsupported),
        };
        let l3 = match frame.get(12..14) {
            Some([0x81, 0x00]) => 18,
            Some(_) => 14,
            None => return Err(Error::Malformed),
        };
        let l4 = usize::from(vnet.csum_start());
        let ip_ok = match frame.get(l3) {
            Some(v) if ipv6 => v >> 4 == 6 && l4 >= l3 + 40,
            Some(v) => v >> 4 == 4 && l4 >= l3 + usize::from(v & 0x0f) * 4 && v & 0x0f >= 5,
            None => false,
        };
        let l4_len = match (tcp, frame.get(l4 + 12)) {
            (true, Some(off)) => usize::from(off >> 4) * 4,
            (false, Some(_)) => 8,
            (_, None) => 0,
        };
        if !ip_ok || l4_len < 8 || l4 + l4_len > frame.len() {
            return Err(Error::Malformed);
        }
        let hdr = l4 + l4_len;
        let room = max_packet.checked_sub(hdr - l3).filter(|&r| r >= 8).ok_or(Error::Malformed)?;
        let gso = usize::from(vnet.gso_size());
        let mss = if gso == 0 { room } else { gso.min(room) };
        Ok(Plan { l3, l4, hdr, mss, ipv6, tcp, payload: frame.len() - hdr })
    }

    /// How many segments.
    pub fn count(&self) -> usize {
        self.payload.div_ceil(self.mss).max(1)
    }

    /// Segment `i`'s length (a whole frame).
    pub fn len(&self, i: usize) -> usize {
        self.hdr + (self.payload - i * self.mss).min(self.mss)
    }

    /// Write segment `i` of `frame` into `out` (`len(i)` bytes, or more).
    pub fn write(&self, frame: &[u8], i: usize, out: &mut [u8]) {
        let n = self.len(i);
        let start = self.hdr + i * self.mss;
        let out = &mut out[..n];
        out[..self.hdr].copy_from_slice(&frame[..self.hdr]);
        out[self.hdr..].copy_from_slice(&frame[start..start + n - self.hdr]);
        let (l3, l4) = (self.l3, self.l4);
        if self.ipv6 {
            put16(out, l3 + 4, (n - l3 - 40) as u16);
        } else {
            put16(out, l3 + 2, (n - l3) as u16);
            let id = get16(frame, l3 + 4).wrapping_add(i as u16);
            put16(out, l3 + 4, id);
            put16(out, l3 + 10, 0);
            let c = checksum(&out[l3..l4]);
            put16(out, l3 + 10, c);
        }
        let csum_at = if self.tcp {
            let seq = u32::from_be_bytes(frame[l4 + 4..l4 + 8].try_into().expect("4 bytes"));
            out[l4 + 4..l4 + 8].copy_from_slice(&seq.wrapping_add((i * self.mss) as u32).to_be_bytes());
            if i + 1 < self.count() {
                out[l4 + 13] &= !(TCP_FIN | TCP_PSH);
            }
            if i > 0 {
                out[l4 + 13] &= !TCP_CWR;
            }
            l4 + 16
        } else {
            put16(out, l4 + 4, (n - l4) as u16);
            l4 + 6
        };
        put16(out, csum_at, 0);
        let c = l4_checksum(out, l3, l4, self.ipv6, if self.tcp { 6 } else { 17 });
        put16(out, csum_at, if !self.tcp && c == 0 { 0xffff } else { c });
    }
}

/// Finish a checksum the sender left to the NIC (`NEEDS_CSUM`): the field at `csum_start +
/// csum_offset` holds the pseudo-header's sum; the rest from `csum_start` is summed onto it.
pub fn finish_checksum(frame: &mut [u8], vnet: &VnetHdr) -> Result<(), Error> {
    let start = usize::from(vnet.csum_start());
    let at = start + usize::from(vnet.csum_offset());
    if at + 2 > frame.len() {
        return Err(Error::Malformed);
    }
    let c = !(sum(&frame[start..], 0) as u16);
    put16(frame, at, c);
    Ok(())
}

/// The TCP or UDP checksum of the segment at `l4` in `f` with its IP header at `l3`.
fn l4_checksum(f: &[u8], l3: usize, l4: usize, ipv6: bool, proto: u8) -> u16 {
    let len = (f.len() - l4) as u32;
    let pseudo = if ipv6 { sum(&f[l3 + 8..l3 + 40], 0) } else { sum(&f[l3 + 12..l3 + 20], 0) };
    !(sum(&f[l4..], pseudo + u32::from(proto) + len) as u16)
}

fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 super-frame of `payload` bytes as a veth hands it over: partial checksum,
    /// TSO with `mss`.
    fn tso_v4(payload: usize, mss: u16, flags: u8) -> (Vec<u8>, VnetHdr) {
        let mut f = vec![0u8; 14 + 20 + 20 + payload];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        put16(&mut f, 16, (20 + 20 + payload) as u16);
        put16(&mut f, 18, 0x1000);
        f[22] = 64;
        f[23] = 6;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        put16(&mut f, 34, 40000);
        put16(&mut f, 36, 80);
        f[38..42].copy_from_slice(&0xfffff000u32.to_be_bytes()); // wraps within the frame
        f[46] = 5 << 4;
        f[47] = flags;
        for (i, b) in f[54..].iter_mut().enumerate() {
            *b = (i * 7 + 3) as u8;
        }
        let mut h = [0u8; 10];
        h[0] = 1;
        h[1] = GSO_TCPV4;
        h[2..4].copy_from_slice(&54u16.to_le_bytes());
        h[4..6].copy_from_slice(&mss.to_le_bytes());
        h[6..8].copy_from_slice(&34u16.to_le_bytes());
        h[8..10].copy_from_slice(&16u16.to_le_bytes());
        (f, VnetHdr(h))
    }

    #[test]
    fn tcp_super_frame_cut_to_valid_segments() {
        let (f, h) = tso_v4(4000, 1448, TCP_FIN | TCP_PSH | TCP_CWR | 0x10);
        let p = Plan::new(&f, &h, 1500).unwrap();
        assert_eq!(p.count(), 3);
        let mut seen = Vec::new();
        for i in 0..p.count() {
            let mut out = vec![0u8; p.len(i)];
            p.write(&f, i, &mut out);
            assert_eq!(checksum(&out[14..34]), 0, "IPv4 header checksum");
            assert_eq!(l4_checksum(&out, 14, 34, false, 6), 0, "TCP checksum verifies");
            assert_eq!(usize::from(get16(&out, 16)), out.len() - 14);
            assert_eq!(get16(&out, 18), 0x1000 + i as u16);
            let seq = u32::from_be_bytes(out[38..42].try_into().unwrap());
            assert_eq!(seq, 0xfffff000u32.wrapping_add(1448 * i as u32));
            let flags = out[47];
            assert_eq!(flags & (TCP_FIN | TCP_PSH) != 0, i == 2, "FIN and PSH on the last only");
            assert_eq!(flags & TCP_CWR != 0, i == 0, "CWR on the first only");
            seen.extend_from_slice(&out[54..]);
        }
        assert_eq!(seen, f[54..], "the payload, in order, once");
    }

    #[test]
    fn a_smaller_path_cuts_smaller_than_the_sender_asked() {
        let (f, h) = tso_v4(3000, 1448, 0x10);
        let p = Plan::new(&f, &h, 1000).unwrap();
        assert_eq!((p.count(), p.len(0)), (4, 14 + 1000));
        assert!(Plan::new(&f, &h, 44).is_err(), "no room for payload");
    }

    #[test]
    fn bad_gso_headers_are_refused() {
        let (f, mut h) = tso_v4(3000, 1448, 0x10);
        h.0[6..8].copy_from_slice(&3000u16.to_le_bytes()); // L4 past the frame
        assert_eq!(Plan::new(&f, &h, 1500), Err(Error::Malformed));
        let (f, mut h) = tso_v4(3000, 1448, 0x10);
        h.0[1] = 3; // UFO
        assert_eq!(Plan::new(&f, &h, 1500), Err(Error::Unsupported));
        assert_eq!(Plan::new(&f[..10], &tso_v4(1, 1, 0).1, 1500), Err(Error::Malformed));
    }

    #[test]
    fn a_partial_checksum_is_finished() {
        let (mut f, h) = tso_v4(100, 0, 0x10);
        // The pseudo-header sum in the field, as the kernel leaves it.
        let len = 20 + 100u32;
        let pseudo = sum(&f[26..34], 6 + len) as u16;
        put16(&mut f, 50, pseudo);
        finish_checksum(&mut f, &h).unwrap();
        assert_eq!(l4_checksum(&f, 14, 34, false, 6), 0);
    }
}
