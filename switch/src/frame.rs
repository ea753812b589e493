//! What the switch needs to know about a frame beyond its bytes: its virtio-net header (how
//! the kernel hands us 64 KB GSO frames whole) and the sizes that bound it.

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

    /// The L4 checksum is left for the kernel to finish (`VIRTIO_NET_HDR_F_NEEDS_CSUM`): its
    /// field holds only the pseudo-header sum.
    pub fn needs_csum(&self) -> bool {
        self.0[0] & 1 != 0
    }

    /// True for a GSO super-frame that the kernel will segment on the way out.
    pub fn is_gso(&self) -> bool {
        self.0[1] & 0x7f != VIRTIO_NET_HDR_GSO_NONE
    }

    /// The GSO type without the ECN bit (`VIRTIO_NET_HDR_GSO_*`).
    pub fn gso_type(&self) -> u8 {
        self.0[1] & 0x7f
    }

    /// The payload size of each segment a GSO super-frame is cut into.
    pub fn gso_size(&self) -> u16 {
        self.field(4)
    }

    /// Where the L4 checksum's coverage starts (with `needs_csum`).
    pub fn csum_start(&self) -> u16 {
        self.field(6)
    }

    /// Where the L4 checksum sits, from `csum_start`.
    pub fn csum_offset(&self) -> u16 {
        self.field(8)
    }

    fn field(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.0[off], self.0[off + 1]])
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

/// A frame as an AF_PACKET ring hands it over: its outer 802.1Q tag taken out of the bytes
/// (the kernel untags before any packet socket sees a frame) and given beside them.
pub fn as_received(data: &[u8]) -> (std::borrow::Cow<'_, [u8]>, Option<[u8; 4]>) {
    match data.get(12..16) {
        Some(t) if t[..2] == [0x81, 0x00] => {
            ([&data[..12], &data[16..]].concat().into(), Some([t[0], t[1], t[2], t[3]]))
        }
        _ => (data.into(), None),
    }
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
