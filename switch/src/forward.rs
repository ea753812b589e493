//! The forwarding decision for one frame: the learning L2 switch stage. Pure: no I/O, so the
//! worker, `explain` and the unit tests all run the same code.

use crate::fdb::{Learn, MacTable, PortId};
use crate::frame::{classify, Class, Drop, ETH_HLEN};
use crate::mac::MacAddr;

/// What the forwarding stage needs of a MAC table: the live `MacTable` in the workers, a
/// dry-run view of it in `explain`.
pub trait Table {
    fn learn(&self, mac: MacAddr, port: PortId, now: u32) -> Learn;
    fn lookup(&self, mac: MacAddr) -> Option<PortId>;
}

impl Table for MacTable {
    #[inline]
    fn learn(&self, mac: MacAddr, port: PortId, now: u32) -> Learn {
        MacTable::learn(self, mac, port, now)
    }
    #[inline]
    fn lookup(&self, mac: MacAddr) -> Option<PortId> {
        MacTable::lookup(self, mac)
    }
}

/// Where a frame goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// To one port.
    Port(PortId),
    /// To every port of the network but the ingress one.
    Flood,
    Drop(Drop),
}

/// What the switch did with a frame, step by step (for counters and for explaining).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    /// What learning the source address did (None: not learned, e.g. a group source).
    pub learned: Option<Learn>,
}

/// Warm the MAC table lines `decide` will touch for this frame (see `MacTable::prefetch`).
#[inline]
pub fn prefetch(table: &MacTable, data: &[u8]) {
    if data.len() >= ETH_HLEN {
        table.prefetch(MacAddr::from_slice(&data[..6]), false);
        table.prefetch(MacAddr::from_slice(&data[6..12]), true);
    }
}

/// Decide what to do with `data` (`wire_len` bytes on the wire) arriving on port `in_port`,
/// whose largest frame is `max_len`, learning its source in `table` at time `now`.
#[inline]
pub fn decide(
    table: &impl Table,
    in_port: PortId,
    data: &[u8],
    wire_len: usize,
    max_len: usize,
    gso: bool,
    now: u32,
) -> Decision {
    let class = classify(data, wire_len, max_len, gso);
    if let Err(why @ (Drop::Runt | Drop::Oversize)) = class {
        return Decision { verdict: Verdict::Drop(why), learned: None };
    }
    // Link-local frames teach us their source too, as in the Linux bridge.
    let src = MacAddr::from_slice(&data[6..12]);
    let learned = (!src.is_multicast()).then(|| table.learn(src, in_port, now));
    let verdict = match class {
        Err(why) => Verdict::Drop(why),
        Ok(Class::Group) => Verdict::Flood,
        Ok(Class::Unicast) => match table.lookup(MacAddr::from_slice(&data[..6])) {
            Some(p) if p == in_port => Verdict::Drop(Drop::SamePort),
            Some(p) => Verdict::Port(p),
            None => Verdict::Flood,
        },
    };
    Decision { verdict, learned }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::frame::test_frame as frame;

    const A: &str = "02:00:00:00:00:0a";
    const B: &str = "02:00:00:00:00:0b";

    #[test]
    fn learn_then_unicast() {
        let t = MacTable::new(1024);
        let d = decide(&t, 1, &frame("ff:ff:ff:ff:ff:ff", A), 60, 1518, false, 0);
        assert_eq!(d.verdict, Verdict::Flood);
        assert_eq!(d.learned, Some(Learn::New));
        // Unknown unicast floods; the reply is then unicast back to A's port.
        assert_eq!(decide(&t, 2, &frame(A, B), 60, 1518, false, 0).verdict, Verdict::Port(1));
        assert_eq!(decide(&t, 1, &frame(B, A), 60, 1518, false, 0).verdict, Verdict::Port(2));
        assert_eq!(decide(&t, 1, &frame("02:00:00:00:00:0c", A), 60, 1518, false, 0).verdict, Verdict::Flood);
    }

    #[test]
    fn never_back_out_of_ingress() {
        let t = MacTable::new(1024);
        decide(&t, 1, &frame("ff:ff:ff:ff:ff:ff", A), 60, 1518, false, 0);
        decide(&t, 1, &frame("ff:ff:ff:ff:ff:ff", B), 60, 1518, false, 0);
        assert_eq!(decide(&t, 1, &frame(A, B), 60, 1518, false, 0).verdict, Verdict::Drop(Drop::SamePort));
    }

    #[test]
    fn mac_move_follows_at_once() {
        let t = MacTable::new(1024);
        decide(&t, 1, &frame("ff:ff:ff:ff:ff:ff", A), 60, 1518, false, 0);
        let d = decide(&t, 3, &frame("ff:ff:ff:ff:ff:ff", A), 60, 1518, false, 0);
        assert_eq!(d.learned, Some(Learn::Moved));
        assert_eq!(decide(&t, 2, &frame(A, B), 60, 1518, false, 0).verdict, Verdict::Port(3));
    }

    #[test]
    fn group_sources_are_not_learned() {
        let t = MacTable::new(1024);
        let d = decide(&t, 1, &frame(B, "01:00:5e:00:00:01"), 60, 1518, false, 0);
        assert_eq!(d.learned, None);
        assert_eq!(t.learned(), 0);
    }

    #[test]
    fn drops_do_not_learn() {
        let t = MacTable::new(1024);
        let d = decide(&t, 1, &frame("01:80:c2:00:00:00", A), 60, 1518, false, 0);
        assert_eq!(d.verdict, Verdict::Drop(Drop::LinkLocal));
        assert_eq!(decide(&t, 1, &[0u8; 10], 10, 1518, false, 0).verdict, Verdict::Drop(Drop::Runt));
        assert_eq!(t.learned(), 1, "a link-local frame's source is learned, as the Linux bridge does");
    }
}
