//! What the switch needs to know about a frame: its virtio-net header (how the kernel hands us
//! 64 KB GSO frames whole) and its Ethernet class.

use crate::mac::is_link_local;

/// Size of `struct virtio_net_hdr` as used by PACKET_VNET_HDR and IFF_VNET_HDR (no num_buffers).
pub const VNET_HDR_LEN: usize = 10;
pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
/// Largest frame any port will hand us: a 64 KB GSO super-frame plus Ethernet and a VLAN tag.
pub const MAX_FRAME: usize = 65536 + ETH_HLEN + VLAN_HLEN;

const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;

/// `struct virtio_net_hdr`, little-endian on the wire (we only run on little-endian hosts
/// or with TUNSETVNETLE, where the kernel agrees).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct VnetHdr(pub [u8; VNET_HDR_LEN]);

impl VnetHdr {
    pub fn from_slice(b: &[u8]) -> VnetHdr {
        let mut h = [0u8; VNET_HDR_LEN];
        h.copy_from_slice(&b[..VNET_HDR_LEN]);
        VnetHdr(h)
    }

    /// True for a GSO super-frame that the kernel will segment on the way out.
    pub fn is_gso(&self) -> bool {
        self.0[1] & 0x7f != VIRTIO_NET_HDR_GSO_NONE
    }

    /// The header for a frame with `n` bytes inserted at offset 12 (a VLAN tag put back in):
    /// the checksum start and header length move by `n`.
    pub fn shifted(mut self, n: u16) -> VnetHdr {
        for off in [2usize, 6] {
            // hdr_len at 2..4, csum_start at 6..8; zero means "not set".
            let v = u16::from_le_bytes([self.0[off], self.0[off + 1]]);
            if v != 0 {
                self.0[off..off + 2].copy_from_slice(&(v + n).to_le_bytes());
            }
        }
        self
    }
}

/// Why a frame was not forwarded. The order is the order of the counters in `stats`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum Drop {
    /// Shorter than an Ethernet header.
    Runt,
    /// Longer than the ingress port's MTU allows (and not a GSO super-frame).
    Oversize,
    /// IEEE 802.1D link-local destination (STP, LACP, LLDP...): never forwarded.
    LinkLocal,
    /// Unicast to a MAC learned on the port it came in on.
    SamePort,
    /// The kernel truncated the frame (no room to copy it whole).
    Truncated,
    /// Too big for the egress port's MTU.
    TooBigForEgress,
    /// The egress port's transmit ring was full or the write failed.
    TxError,
}

impl Drop {
    pub const ALL: [Drop; 7] = [
        Drop::Runt,
        Drop::Oversize,
        Drop::LinkLocal,
        Drop::SamePort,
        Drop::Truncated,
        Drop::TooBigForEgress,
        Drop::TxError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Drop::Runt => "runt",
            Drop::Oversize => "oversize",
            Drop::LinkLocal => "link_local",
            Drop::SamePort => "same_port",
            Drop::Truncated => "truncated",
            Drop::TooBigForEgress => "too_big_for_egress",
            Drop::TxError => "tx_error",
        }
    }
}

/// Where a frame goes, decided from its Ethernet header alone.
#[derive(Debug, PartialEq, Eq)]
pub enum Class {
    /// Broadcast or multicast destination: flood.
    Group,
    /// Unicast destination: look it up.
    Unicast,
}

/// Check a frame of `len` bytes (VLAN tag included) arriving on a port whose largest
/// frame is `max_len`. `data` holds at least the Ethernet header when it returns Ok.
#[inline]
pub fn classify(data: &[u8], len: usize, max_len: usize, gso: bool) -> Result<Class, Drop> {
    if data.len() < ETH_HLEN {
        return Err(Drop::Runt);
    }
    if len > max_len && !gso {
        return Err(Drop::Oversize);
    }
    let dst = &data[..6];
    if dst[0] & 1 == 0 {
        return Ok(Class::Unicast);
    }
    if is_link_local(dst) {
        return Err(Drop::LinkLocal);
    }
    Ok(Class::Group)
}

/// The largest frame a port with this MTU carries: Ethernet header plus one VLAN tag.
pub fn max_frame_for_mtu(mtu: u32) -> usize {
    mtu as usize + ETH_HLEN + VLAN_HLEN
}

/// A 60-byte ARP-typed frame between two MACs, for tests.
#[cfg(test)]
pub(crate) fn test_frame(dst: &str, src: &str) -> Vec<u8> {
    let mut f = dst.parse::<crate::mac::MacAddr>().unwrap().0.to_vec();
    f.extend_from_slice(&src.parse::<crate::mac::MacAddr>().unwrap().0);
    f.extend_from_slice(&[0x08, 0x06]);
    f.resize(60, 0);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eth(dst: [u8; 6]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        f.resize(60, 0);
        f
    }

    #[test]
    fn classes_and_drops() {
        let max = max_frame_for_mtu(1500);
        assert_eq!(classify(&eth([0xff; 6]), 60, max, false), Ok(Class::Group));
        assert_eq!(classify(&eth([2, 0, 0, 0, 0, 2]), 60, max, false), Ok(Class::Unicast));
        assert_eq!(classify(&eth([1, 0x80, 0xc2, 0, 0, 0]), 60, max, false), Err(Drop::LinkLocal));
        assert_eq!(classify(&eth([1, 0x80, 0xc2, 0, 0, 0x21]), 60, max, false), Ok(Class::Group));
        assert_eq!(classify(&[0u8; 13], 13, max, false), Err(Drop::Runt));
        assert_eq!(classify(&eth([2; 6]), 1519, max, false), Err(Drop::Oversize));
        assert_eq!(classify(&eth([2; 6]), 1518, max, false), Ok(Class::Unicast));
        assert_eq!(classify(&eth([2; 6]), 65000, max, true), Ok(Class::Unicast));
    }

    #[test]
    fn vnet_shift_moves_offsets() {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = 1; // NEEDS_CSUM
        h[1] = 1; // TCPV4
        h[2..4].copy_from_slice(&66u16.to_le_bytes());
        h[6..8].copy_from_slice(&34u16.to_le_bytes());
        let s = VnetHdr(h).shifted(4);
        assert!(s.is_gso());
        assert_eq!(u16::from_le_bytes([s.0[2], s.0[3]]), 70);
        assert_eq!(u16::from_le_bytes([s.0[6], s.0[7]]), 38);
        assert!(!VnetHdr::default().shifted(4).is_gso());
        assert_eq!(VnetHdr::default().shifted(4), VnetHdr::default());
    }
}
