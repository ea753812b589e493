//! The VTEP table of one overlay network: which remote MAC is behind which tunnel endpoint,
//! and the VTEPs a broadcast or unknown frame is replicated to (head-end replication).
//! Entries come from the directory (static: never aged, never moved by traffic) or are
//! learned from decapsulated frames (inner source MAC -> outer source address, as the
//! kernel's vxlan device learns), aged, and capped.

use std::collections::HashMap;
use std::net::Ipv4Addr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    vtep: Ipv4Addr,
    /// Seconds (the caller's clock) when last seen; unused for static entries.
    seen: u32,
    is_static: bool,
}

/// What learning did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Learned {
    New,
    Known,
    Moved,
    /// The directory's entry stays.
    Static,
    /// The table is full: not learned.
    Full,
}

#[derive(Clone, Debug)]
pub struct VtepTable {
    entries: HashMap<[u8; 6], Entry>,
    peers: Vec<Ipv4Addr>,
    max: usize,
}

impl VtepTable {
    /// A table holding at most `max` MACs.
    pub fn new(max: usize) -> VtepTable {
        VtepTable { entries: HashMap::new(), peers: Vec::new(), max }
    }

    /// The VTEPs flooded frames go to.
    pub fn peers(&self) -> &[Ipv4Addr] {
        &self.peers
    }

    pub fn add_peer(&mut self, vtep: Ipv4Addr) {
        if !self.peers.contains(&vtep) {
            self.peers.push(vtep);
        }
    }

    /// Forget a VTEP: it leaves the flood list and takes its MACs with it.
    pub fn remove_peer(&mut self, vtep: Ipv4Addr) {
        self.peers.retain(|&p| p != vtep);
        self.entries.retain(|_, e| e.vtep != vtep);
    }

    /// The directory says `mac` is behind `vtep`.
    pub fn add_static(&mut self, mac: [u8; 6], vtep: Ipv4Addr) {
        self.entries.insert(mac, Entry { vtep, seen: 0, is_static: true });
    }

    pub fn remove(&mut self, mac: [u8; 6]) -> bool {
        self.entries.remove(&mac).is_some()
    }

    /// A frame from `mac` came out of the tunnel from `vtep` at `now`.
    pub fn learn(&mut self, mac: [u8; 6], vtep: Ipv4Addr, now: u32) -> Learned {
        if mac[0] & 1 == 1 {
            return Learned::Known; // never a group address
        }
        let full = self.entries.len() >= self.max;
        match self.entries.get_mut(&mac) {
            Some(e) if e.is_static => Learned::Static,
            Some(e) => {
                e.seen = now;
                if e.vtep == vtep {
                    Learned::Known
                } else {
                    e.vtep = vtep;
                    Learned::Moved
                }
            }
            None if full => Learned::Full,
            None => {
                self.entries.insert(mac, Entry { vtep, seen: now, is_static: false });
                Learned::New
            }
        }
    }

    /// The VTEP behind `mac`, if known.
    pub fn lookup(&self, mac: [u8; 6]) -> Option<Ipv4Addr> {
        self.entries.get(&mac).map(|e| e.vtep)
    }

    /// Drop learned entries not seen for `max_age` seconds; returns how many went.
    pub fn age(&mut self, now: u32, max_age: u32) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.is_static || now.saturating_sub(e.seen) < max_age);
        before - self.entries.len()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const M: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const V1: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
    const V2: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

    #[test]
    fn learns_moves_ages_and_keeps_the_directory() {
        let mut t = VtepTable::new(2);
        assert_eq!(t.learn(M, V1, 0), Learned::New);
        assert_eq!(t.learn(M, V1, 1), Learned::Known);
        assert_eq!(t.learn(M, V2, 2), Learned::Moved);
        assert_eq!(t.lookup(M), Some(V2));
        assert_eq!(t.learn([1, 0, 0, 0, 0, 1], V1, 2), Learned::Known, "group MACs are never learned");
        let d = [2, 0, 0, 0, 0, 9];
        t.add_static(d, V1);
        assert_eq!(t.learn(d, V2, 3), Learned::Static);
        assert_eq!(t.learn([2, 0, 0, 0, 0, 3], V1, 3), Learned::Full);
        assert_eq!(t.age(400, 300), 1, "the learned entry goes, the static one stays");
        assert_eq!(t.lookup(d), Some(V1));
        t.add_peer(V1);
        t.add_peer(V1);
        t.add_peer(V2);
        assert_eq!(t.peers(), [V1, V2]);
        t.remove_peer(V1);
        assert_eq!((t.peers(), t.lookup(d)), (&[V2][..], None));
    }
}
