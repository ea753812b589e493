//! Ethernet MAC addresses: parsing, formatting and the classes the switch cares about.

use std::fmt;
use std::str::FromStr;

/// A 48-bit Ethernet address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    pub fn from_slice(b: &[u8]) -> MacAddr {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[..6]);
        MacAddr(m)
    }

    /// The address as the low 48 bits of a u64 (the MAC table's key).
    pub fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    pub fn from_u64(v: u64) -> MacAddr {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }

    /// Group bit set: broadcast or multicast, never a source we learn.
    pub fn is_multicast(self) -> bool {
        self.0[0] & 1 == 1
    }
}

/// IEEE 802.1D reserved link-local range 01:80:c2:00:00:00..0f (STP, LACP, LLDP, 802.1X...).
/// Bridges must not forward these; the Linux bridge drops them by default too.
pub fn is_link_local(dst: &[u8]) -> bool {
    dst[0] == 0x01 && dst[1] == 0x80 && dst[2] == 0xc2 && dst[3] == 0 && dst[4] == 0 && dst[5] & 0xf0 == 0
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(f, "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4], b[5])
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("invalid MAC address '{s}': expected six hex bytes like 02:00:00:00:00:01");
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(bad());
        }
        let mut m = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.is_empty() || p.len() > 2 {
                return Err(bad());
            }
            m[i] = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        Ok(MacAddr(m))
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_format_roundtrip() {
        let m: MacAddr = "02:00:0A:ff:00:01".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:0a:ff:00:01");
        assert_eq!(MacAddr::from_u64(m.to_u64()), m);
        assert!("02:00:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:0g".parse::<MacAddr>().is_err());
        assert!("02:00:00:00:00:100".parse::<MacAddr>().is_err());
    }

    #[test]
    fn classes() {
        assert!(MacAddr::BROADCAST.is_multicast());
        assert!("01:00:5e:00:00:01".parse::<MacAddr>().unwrap().is_multicast());
        assert!(!"02:00:00:00:00:01".parse::<MacAddr>().unwrap().is_multicast());
        assert!(is_link_local(&[0x01, 0x80, 0xc2, 0, 0, 0x00]));
        assert!(is_link_local(&[0x01, 0x80, 0xc2, 0, 0, 0x0e]));
        assert!(!is_link_local(&[0x01, 0x80, 0xc2, 0, 0, 0x10]));
    }
}
