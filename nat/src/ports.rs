//! The outside port range, split between workers (VPP NAT44-ED): each worker's table hands
//! out ports only from its own slice, so the destination port of a reply names the worker
//! that holds its session, and no table is ever shared.

use std::ops::RangeInclusive;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSplit {
    lo: u16,
    per_part: u32,
    parts: u32,
}

impl PortSplit {
    /// `range` cut into `parts` equal slices (the last ports left over are not used).
    pub fn new(range: RangeInclusive<u16>, parts: usize) -> PortSplit {
        let parts = parts.max(1) as u32;
        let span = u32::from(*range.end()).saturating_sub(u32::from(*range.start())) + 1;
        PortSplit { lo: *range.start(), per_part: span / parts, parts }
    }

    /// The slice of part `i`.
    pub fn range(&self, i: usize) -> RangeInclusive<u16> {
        let start = u32::from(self.lo) + i as u32 * self.per_part;
        start as u16..=(start + self.per_part - 1) as u16
    }

    /// The part whose slice holds `port`.
    pub fn owner(&self, port: u16) -> Option<usize> {
        let off = u32::from(port).checked_sub(u32::from(self.lo))?;
        let part = off / self.per_part.max(1);
        (part < self.parts).then_some(part as usize)
    }
}

/// A set of ports (published host ports, which SNAT must not hand out): a bit each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSet(Box<[u64; 1024]>);

impl Default for PortSet {
    fn default() -> PortSet {
        PortSet(Box::new([0; 1024]))
    }
}

impl PortSet {
    pub fn insert(&mut self, port: u16) {
        self.0[usize::from(port >> 6)] |= 1 << (port & 63);
    }

    #[inline]
    pub fn contains(&self, port: u16) -> bool {
        self.0[usize::from(port >> 6)] & (1 << (port & 63)) != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_port_of_a_slice_names_its_owner() {
        let split = PortSplit::new(1024..=65535, 3);
        for i in 0..3 {
            let r = split.range(i);
            assert_eq!(split.owner(*r.start()), Some(i));
            assert_eq!(split.owner(*r.end()), Some(i));
        }
        assert_eq!(split.owner(80), None);
        assert_eq!(split.range(2).end(), &65535, "64512 ports split evenly in 3");
    }
}
