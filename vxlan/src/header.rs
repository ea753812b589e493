//! The VXLAN header: 8 bytes, the I flag and a 24-bit VNI; everything else reserved. A
//! header with any reserved bit set is refused, as the kernel's vxlan device refuses it
//! (`vxlan_rcv`: "unknown flags" are a malformed packet) unless it speaks GBP or GPE, which
//! we do not.

/// Bytes of the VXLAN header.
pub const HEADER_LEN: usize = 8;
/// The I flag: the VNI is valid.
const FLAG_I: u8 = 0x08;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("shorter than its headers")]
    Truncated,
    #[error("the I flag is not set")]
    NoVni,
    #[error("reserved bits are set")]
    Reserved,
    #[error("not IPv4 over Ethernet")]
    NotIpv4,
    #[error("the IPv4 header is bad (version, length or checksum)")]
    BadIpv4,
    #[error("not UDP to the VXLAN port")]
    NotVxlan,
    #[error("a fragment (VXLAN packets are never fragmented on the way in)")]
    Fragment,
    #[error("an inner frame of {0} bytes does not fit one IPv4 packet")]
    TooBig(usize),
    #[error("VNI {0} is more than 24 bits")]
    VniTooBig(u32),
}

/// A VXLAN network identifier: 24 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Vni(u32);

impl Vni {
    pub const MAX: u32 = (1 << 24) - 1;

    pub fn new(v: u32) -> Result<Vni, Error> {
        if v > Vni::MAX {
            return Err(Error::VniTooBig(v));
        }
        Ok(Vni(v))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for Vni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The header for `vni`.
pub fn write(vni: Vni, out: &mut [u8; HEADER_LEN]) {
    let v = vni.0.to_be_bytes();
    *out = [FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0];
}

/// The VNI of a UDP payload that starts with a VXLAN header, and the inner frame after it.
pub fn parse(payload: &[u8]) -> Result<(Vni, &[u8]), Error> {
    let h = payload.get(..HEADER_LEN).ok_or(Error::Truncated)?;
    if h[0] & FLAG_I == 0 {
        return Err(Error::NoVni);
    }
    if h[0] & !FLAG_I != 0 || h[1..4] != [0, 0, 0] || h[7] != 0 {
        return Err(Error::Reserved);
    }
    Ok((Vni(u32::from_be_bytes([0, h[4], h[5], h[6]])), &payload[HEADER_LEN..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut h = [0u8; HEADER_LEN];
        write(Vni::new(5001).unwrap(), &mut h);
        assert_eq!(h, [0x08, 0, 0, 0, 0x00, 0x13, 0x89, 0]);
        let mut p = h.to_vec();
        p.extend_from_slice(b"inner");
        assert_eq!(parse(&p), Ok((Vni::new(5001).unwrap(), &b"inner"[..])));
        assert_eq!(Vni::new(1 << 24), Err(Error::VniTooBig(1 << 24)));
    }

    #[test]
    fn refuses_what_the_kernel_refuses() {
        let ok = [0x08, 0, 0, 0, 0, 0, 1, 0];
        assert!(parse(&ok).is_ok());
        assert_eq!(parse(&ok[..7]), Err(Error::Truncated));
        let mut no_i = ok;
        no_i[0] = 0;
        assert_eq!(parse(&no_i), Err(Error::NoVni));
        for (byte, bit) in [(0, 0x80), (0, 0x01), (1, 1), (3, 0x40), (7, 1)] {
            let mut h = ok;
            h[byte] |= bit;
            assert_eq!(parse(&h), Err(Error::Reserved), "byte {byte} bit {bit:#x}");
        }
    }
}
