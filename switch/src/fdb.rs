//! The MAC table (forwarding database) of one network.
//!
//! Workers learn and look up concurrently without locks: the table is a fixed array of
//! 8-way buckets, one cache line each, whose slots are atomic words
//! `mac << 16 | static << 15 | port`. A lookup is at most eight relaxed loads from one cache
//! line; learning a new MAC is one compare-and-swap into an empty slot. Aging and removal
//! run on the housekeeping thread with the same compare-and-swap, so no reader ever waits.
//! (No crate offers a wait-free fixed-capacity map with this layout; dashmap and friends lock.)
//!
//! Two workers learning the same new MAC at the same instant may both insert it; afterwards
//! each looks again and clears every copy but one (a static entry, else the lowest slot's).

use crate::hugemem::{HugeArray, Zeroable};
use crate::mac::MacAddr;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};

/// Port ids are 15 bits; 0 means "empty slot".
pub type PortId = u16;
/// The highest id of a real port.
pub const MAX_PORT_ID: PortId = 0x7ffe;
/// The port id of a network's gateway, the switch's own host on it (see pipeline::gateway):
/// the gateway's MAC is a static entry for this port in every network's table.
pub const GATEWAY_PORT: PortId = 0x7fff;
/// Port ids there can be, for arrays indexed by them.
const PORTS: usize = GATEWAY_PORT as usize + 1;
const STATIC_BIT: u64 = 1 << 15;
const PORT_MASK: u64 = 0x7fff;
const WAYS: usize = 8;
/// Tables of at least this many buckets (1 MB) are prefetched; smaller ones stay in cache.
const PREFETCH_FROM_BUCKETS: usize = 16384;

#[repr(align(64))]
struct Bucket {
    slots: [AtomicU64; WAYS],
}

// SAFETY: eight atomic words: all zeros is eight empty slots.
unsafe impl Zeroable for Bucket {}

/// What learning a source address did.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Learn {
    /// Already known on this port (age refreshed).
    Known,
    New,
    /// Known on another port: it follows the station at once.
    Moved,
    /// A static entry names this MAC: never moved by traffic.
    Static,
    /// Over the network's cap on learned entries: not learned, the frame is flooded instead.
    OverLimit,
    /// Over its port's quota of MACs (port security): not learned, the frame is dropped.
    OverQuota,
    /// The MAC's bucket is full of other entries.
    BucketFull,
}

/// A static entry did not fit: its bucket is full of other static entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no room for {0} in the MAC table (its bucket is full of static entries)")]
pub struct NoRoom(pub MacAddr);

pub struct MacTable {
    buckets: HugeArray<Bucket>,
    /// Last-seen time (seconds, `crate::clock::now`) for each slot, beside `buckets`.
    seen: HugeArray<AtomicU32>,
    /// 64 - log2(buckets): the bucket is the top bits of the product.
    shift: u32,
    /// Random per table so an attacker cannot aim MACs at one bucket.
    seed: u64,
    learned: AtomicUsize,
    max_learned: usize,
    /// Per port: entries learned on it, and the most it may have (0: no quota). Indexed by
    /// port id; pages are only taken for the ports there are.
    port_learned: HugeArray<AtomicU32>,
    port_quota: HugeArray<AtomicU32>,
    pub over_limit: AtomicU64,
    pub bucket_full: AtomicU64,
    /// New MACs refused because their port was at its quota.
    pub over_quota: AtomicU64,
}

#[inline(always)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch hint on a live reference: it reads nothing.
    unsafe {
        std::arch::x86_64::_mm_prefetch(p as *const T as *const i8, std::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One entry as shown by `vswitch fdb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mac: MacAddr,
    pub port: PortId,
    pub is_static: bool,
    pub last_seen: u32,
}

impl MacTable {
    /// A table that holds `max_learned` learned entries (plus static ones) with room to spare.
    pub fn new(max_learned: usize) -> MacTable {
        let want_slots = (max_learned.max(64) * 2).next_power_of_two();
        let nbuckets = want_slots / WAYS;
        MacTable {
            buckets: HugeArray::zeroed(nbuckets),
            seen: HugeArray::zeroed(nbuckets * WAYS),
            shift: 64 - nbuckets.trailing_zeros(),
            seed: RandomState::new().hash_one(0x5eed_u64) | 1,
            learned: AtomicUsize::new(0),
            max_learned,
            port_learned: HugeArray::zeroed(PORTS),
            port_quota: HugeArray::zeroed(PORTS),
            over_limit: AtomicU64::new(0),
            bucket_full: AtomicU64::new(0),
            over_quota: AtomicU64::new(0),
        }
    }

    /// At most `quota` MACs learned on `port` (0: no limit): port security, so one port
    /// cannot fill the table.
    pub fn set_port_quota(&self, port: PortId, quota: u32) {
        self.port_quota[port as usize].store(quota, Relaxed);
    }

    /// The quota of MACs of `port` (0: none).
    pub fn quota_of(&self, port: PortId) -> u32 {
        self.port_quota[port as usize].load(Relaxed)
    }

    /// Entries learned on `port`.
    pub fn learned_on(&self, port: PortId) -> u32 {
        self.port_learned[port as usize].load(Relaxed)
    }

    /// Whether `port` may learn one more MAC; counts the refusal if not.
    #[inline]
    fn port_has_room(&self, port: PortId) -> bool {
        let q = self.port_quota[port as usize].load(Relaxed);
        if q != 0 && self.port_learned[port as usize].load(Relaxed) >= q {
            self.over_quota.fetch_add(1, Relaxed);
            return false;
        }
        true
    }

    /// A learned entry (word `w`) left the table.
    #[inline]
    fn forget(&self, w: u64) {
        self.learned.fetch_sub(1, Relaxed);
        self.port_learned[(w & PORT_MASK) as usize].fetch_sub(1, Relaxed);
    }

    #[inline]
    fn bucket_of(&self, mac: u64) -> usize {
        // A random multiplier then a fixed mix (two multiplies, a few ns): plain
        // multiply-shift sent runs of sequential MACs (52:54:00:..:01, :02, ...) to a handful
        // of buckets for one seed in fifteen, and those filled while the table was empty.
        let mut z = mac.wrapping_mul(self.seed);
        z ^= z >> 29;
        z = z.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z ^= z >> 32;
        (z >> self.shift) as usize
    }

    /// Start loading the cache line `lookup(mac)` will read (and, for a source, the line
    /// `learn` writes its age to). A worker asks for a whole batch before deciding any of
    /// it, so in a big table the misses overlap instead of following one another.
    #[inline]
    pub fn prefetch(&self, mac: MacAddr, as_source: bool) {
        let bi = self.bucket_of(mac.to_u64());
        prefetch(&self.buckets[bi]);
        if as_source {
            prefetch(&self.seen[bi * WAYS]);
        }
    }

    /// Whether the table is too big for the L2 cache, so prefetching its lines pays. A
    /// small table stays in cache: asking is then only work.
    #[inline]
    pub fn outgrows_cache(&self) -> bool {
        self.buckets.len() >= PREFETCH_FROM_BUCKETS
    }

    /// The port a MAC was learned or configured on.
    #[inline]
    pub fn lookup(&self, mac: MacAddr) -> Option<PortId> {
        let key = mac.to_u64();
        let b = &self.buckets[self.bucket_of(key)];
        for slot in &b.slots {
            let w = slot.load(Relaxed);
            if w != 0 && w >> 16 == key {
                return Some((w & PORT_MASK) as PortId);
            }
        }
        None
    }

    /// The port a MAC is on and whether the entry is static (for `explain`).
    pub fn get(&self, mac: MacAddr) -> Option<(PortId, bool)> {
        let key = mac.to_u64();
        let b = &self.buckets[self.bucket_of(key)];
        b.slots
            .iter()
            .map(|s| s.load(Relaxed))
            .find(|&w| w != 0 && w >> 16 == key)
            .map(|w| ((w & PORT_MASK) as PortId, w & STATIC_BIT != 0))
    }

    /// Learn that `mac` was seen as a source on `port` at time `now`.
    #[inline]
    pub fn learn(&self, mac: MacAddr, port: PortId, now: u32) -> Learn {
        let key = mac.to_u64();
        let bi = self.bucket_of(key);
        let b = &self.buckets[bi];
        let want = key << 16 | port as u64;
        for (i, slot) in b.slots.iter().enumerate() {
            let w = slot.load(Relaxed);
            if w == 0 || w >> 16 != key {
                continue;
            }
            if w & STATIC_BIT != 0 {
                return Learn::Static;
            }
            let seen = &self.seen[bi * WAYS + i];
            // Write the age only when it changed: a hot MAC must not bounce its cache line.
            if seen.load(Relaxed) != now {
                seen.store(now, Relaxed);
            }
            if w == want {
                return Learn::Known;
            }
            if !self.port_has_room(port) {
                return Learn::OverQuota;
            }
            return match slot.compare_exchange(w, want, Relaxed, Relaxed) {
                Ok(_) => {
                    self.port_learned[(w & PORT_MASK) as usize].fetch_sub(1, Relaxed);
                    self.port_learned[port as usize].fetch_add(1, Relaxed);
                    Learn::Moved
                }
                Err(_) => Learn::Known, // another worker just rewrote it; either answer is fresh
            };
        }
        if !self.port_has_room(port) {
            return Learn::OverQuota;
        }
        if self.learned.fetch_add(1, Relaxed) >= self.max_learned {
            self.learned.fetch_sub(1, Relaxed);
            self.over_limit.fetch_add(1, Relaxed);
            return Learn::OverLimit;
        }
        self.port_learned[port as usize].fetch_add(1, Relaxed);
        for (i, slot) in b.slots.iter().enumerate() {
            if slot.load(Relaxed) == 0 {
                self.seen[bi * WAYS + i].store(now, Relaxed);
                if slot.compare_exchange(0, want, SeqCst, Relaxed).is_ok() {
                    return match self.keep_one(b, key) {
                        Some(k) if k == i => Learn::New,
                        Some(k) if b.slots[k].load(Relaxed) & STATIC_BIT != 0 => Learn::Static,
                        _ => Learn::Known, // another worker's copy stays
                    };
                }
            }
        }
        self.forget(want);
        self.bucket_full.fetch_add(1, Relaxed);
        Learn::BucketFull
    }

    /// After a new entry for `key` went into the bucket: keep one entry for the MAC. A static
    /// entry wins, else the copy in the lowest slot; every other learned copy is cleared.
    /// Sequentially consistent, so of two racing inserts at least one sees the other and
    /// clears the right copy; only a new entry pays for it. Returns the slot kept.
    #[cold]
    fn keep_one(&self, b: &Bucket, key: u64) -> Option<usize> {
        let words: [u64; WAYS] = std::array::from_fn(|j| b.slots[j].load(SeqCst));
        let copies = || (0..WAYS).filter(move |&j| words[j] != 0 && words[j] >> 16 == key);
        let keep = copies().find(|&j| words[j] & STATIC_BIT != 0).or_else(|| copies().next())?;
        for j in copies().filter(|&j| j != keep && words[j] & STATIC_BIT == 0) {
            if b.slots[j].compare_exchange(words[j], 0, SeqCst, Relaxed).is_ok() {
                self.forget(words[j]);
            }
        }
        Some(keep)
    }

    /// Whether a static entry for `mac` fits: its bucket holds fewer than all-static
    /// entries of other MACs (a learned entry gives way to a static one).
    pub fn has_room_for_static(&self, mac: MacAddr) -> bool {
        let key = mac.to_u64();
        let b = &self.buckets[self.bucket_of(key)];
        b.slots.iter().any(|slot| {
            let w = slot.load(Relaxed);
            w & STATIC_BIT == 0 || w >> 16 == key
        })
    }

    /// Add or replace a static entry, taking a learned entry's slot if the bucket is full.
    /// Fails only if the bucket is full of other static entries (only the control plane adds
    /// those, so [`has_room_for_static`](Self::has_room_for_static) tells beforehand).
    pub fn add_static(&self, mac: MacAddr, port: PortId) -> Result<(), NoRoom> {
        self.remove(mac);
        let key = mac.to_u64();
        let b = &self.buckets[self.bucket_of(key)];
        let want = key << 16 | STATIC_BIT | port as u64;
        for slot in &b.slots {
            if slot.compare_exchange(0, want, SeqCst, Relaxed).is_ok() {
                // A worker may have learned the MAC since `remove`: the static entry wins.
                self.keep_one(b, key);
                return Ok(());
            }
        }
        for slot in &b.slots {
            let w = slot.load(Relaxed);
            if w != 0 && w & STATIC_BIT == 0 && slot.compare_exchange(w, want, SeqCst, Relaxed).is_ok() {
                self.forget(w);
                self.keep_one(b, key);
                return Ok(());
            }
        }
        Err(NoRoom(mac))
    }

    /// Remove every entry (learned or static) for `mac`. Returns whether one was there.
    pub fn remove(&self, mac: MacAddr) -> bool {
        let key = mac.to_u64();
        let b = &self.buckets[self.bucket_of(key)];
        let mut found = false;
        for slot in &b.slots {
            let w = slot.load(Relaxed);
            if w != 0 && w >> 16 == key && slot.compare_exchange(w, 0, Relaxed, Relaxed).is_ok() {
                if w & STATIC_BIT == 0 {
                    self.forget(w);
                }
                found = true;
            }
        }
        found
    }

    /// Remove the entries matching `pred(word, last_seen)`; returns how many went.
    fn retain(&self, mut remove: impl FnMut(u64, u32) -> bool) -> usize {
        let mut n = 0;
        for (bi, b) in self.buckets.iter().enumerate() {
            for (i, slot) in b.slots.iter().enumerate() {
                let w = slot.load(Relaxed);
                if w != 0
                    && remove(w, self.seen[bi * WAYS + i].load(Relaxed))
                    && slot.compare_exchange(w, 0, Relaxed, Relaxed).is_ok()
                {
                    if w & STATIC_BIT == 0 {
                        self.forget(w);
                    }
                    n += 1;
                }
            }
        }
        n
    }

    /// Drop learned entries not seen for `aging_secs`. Static entries never age.
    pub fn age(&self, now: u32, aging_secs: u32) -> usize {
        self.retain(|w, seen| w & STATIC_BIT == 0 && now.saturating_sub(seen) >= aging_secs)
    }

    /// Drop every entry (learned and static) pointing at `port`: the port is going away.
    pub fn flush_port(&self, port: PortId) -> usize {
        self.retain(|w, _| (w & PORT_MASK) as PortId == port)
    }

    pub fn learned(&self) -> usize {
        self.learned.load(Relaxed)
    }

    pub fn max_learned(&self) -> usize {
        self.max_learned
    }

    pub fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (bi, b) in self.buckets.iter().enumerate() {
            for (i, slot) in b.slots.iter().enumerate() {
                let w = slot.load(Relaxed);
                if w != 0 {
                    out.push(Entry {
                        mac: MacAddr::from_u64(w >> 16),
                        port: (w & PORT_MASK) as PortId,
                        is_static: w & STATIC_BIT != 0,
                        last_seen: self.seen[bi * WAYS + i].load(Relaxed),
                    });
                }
            }
        }
        out.sort_by_key(|e| e.mac);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u64) -> MacAddr {
        MacAddr::from_u64(0x0200_0000_0000 | n)
    }

    #[test]
    fn learn_lookup_move() {
        let t = MacTable::new(1024);
        assert_eq!(t.lookup(mac(1)), None);
        assert_eq!(t.learn(mac(1), 3, 10), Learn::New);
        assert_eq!(t.lookup(mac(1)), Some(3));
        assert_eq!(t.learn(mac(1), 3, 11), Learn::Known);
        assert_eq!(t.learn(mac(1), 4, 12), Learn::Moved);
        assert_eq!(t.lookup(mac(1)), Some(4));
        assert_eq!(t.learned(), 1);
    }

    #[test]
    fn aging_spares_fresh_and_static() {
        let t = MacTable::new(1024);
        t.learn(mac(1), 1, 0);
        t.learn(mac(2), 1, 250);
        t.add_static(mac(3), 2).unwrap();
        assert_eq!(t.age(300, 300), 1);
        assert_eq!(t.lookup(mac(1)), None);
        assert_eq!(t.lookup(mac(2)), Some(1));
        assert_eq!(t.lookup(mac(3)), Some(2));
        assert_eq!(t.age(100_000, 300), 1);
        assert_eq!(t.lookup(mac(3)), Some(2));
        assert_eq!(t.learned(), 0);
    }

    #[test]
    fn a_static_entry_wins_over_a_learned_copy() {
        let t = MacTable::new(1024);
        let key = mac(9).to_u64();
        let b = &t.buckets[t.bucket_of(key)];
        // A learned copy that slipped in while the static entry was being added.
        b.slots[0].store(key << 16 | 3, Relaxed);
        t.learned.fetch_add(1, Relaxed);
        b.slots[1].store(key << 16 | STATIC_BIT | 2, Relaxed);
        t.keep_one(b, key);
        assert_eq!(t.lookup(mac(9)), Some(2));
        assert_eq!((t.entries().len(), t.learned()), (1, 0));
    }

    #[test]
    fn static_entries_do_not_move() {
        let t = MacTable::new(1024);
        t.add_static(mac(7), 2).unwrap();
        assert_eq!(t.learn(mac(7), 5, 1), Learn::Static);
        assert_eq!(t.lookup(mac(7)), Some(2));
        assert!(t.remove(mac(7)));
        assert_eq!(t.lookup(mac(7)), None);
    }

    #[test]
    fn sequential_macs_spread_over_every_bucket() {
        // Seeds as the table draws them: random odd multipliers (splitmix64 here, to repeat).
        let mut state = 0u64;
        let mut worst = 0;
        for _ in 0..200 {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let seed = (z ^ (z >> 31)) | 1;
            let mut t = MacTable::new(1024);
            t.seed = seed;
            let mut per_bucket = vec![0u32; t.buckets.len()];
            for i in 0..(t.buckets.len() * WAYS / 2) as u64 {
                per_bucket[t.bucket_of(mac(i).to_u64())] += 1;
            }
            let fullest = *per_bucket.iter().max().unwrap();
            worst = worst.max(fullest);
            // Random placement (balls into bins) reaches ~14 here; clustering reached 77.
            assert!(fullest <= 16, "seed {seed:#x}: a bucket got {fullest} of a half-full table");
        }
        assert!(worst > 4, "not one bucket above the mean: the test measures nothing");
    }

    #[test]
    fn cap_on_learned_entries() {
        let t = MacTable::new(100);
        let mut learned = 0;
        for i in 0..1000 {
            if t.learn(mac(i), 1, 0) == Learn::New {
                learned += 1;
            }
        }
        assert_eq!(learned, 100);
        assert_eq!(t.learned(), 100);
        assert_eq!(t.over_limit.load(Relaxed) + t.bucket_full.load(Relaxed), 900);
        // Known MACs still refresh past the cap.
        assert_eq!(t.learn(mac(0), 1, 5), Learn::Known);
    }

    #[test]
    fn a_port_quota_holds_and_frees_as_entries_go() {
        let t = MacTable::new(1024);
        t.set_port_quota(1, 2);
        assert_eq!(t.learn(mac(1), 1, 0), Learn::New);
        assert_eq!(t.learn(mac(2), 1, 0), Learn::New);
        assert_eq!(t.learn(mac(3), 1, 0), Learn::OverQuota);
        assert_eq!(t.learn(mac(1), 1, 0), Learn::Known, "known MACs still refresh");
        assert_eq!(t.learn(mac(3), 2, 0), Learn::New, "other ports are not limited");
        assert_eq!(t.learn(mac(3), 1, 0), Learn::OverQuota, "nor may a MAC move onto a full port");
        assert_eq!((t.learned_on(1), t.over_quota.load(Relaxed)), (2, 2));
        assert!(t.remove(mac(1)));
        assert_eq!(t.learn(mac(3), 1, 0), Learn::Moved);
        assert_eq!((t.learned_on(1), t.learned_on(2)), (2, 0));
        assert_eq!(t.age(1000, 300), 2);
        assert_eq!(t.learned_on(1), 0);
    }

    #[test]
    fn flush_port_removes_only_that_port() {
        let t = MacTable::new(1024);
        t.learn(mac(1), 1, 0);
        t.learn(mac(2), 2, 0);
        t.add_static(mac(3), 2).unwrap();
        assert_eq!(t.flush_port(2), 2);
        assert_eq!(t.entries().len(), 1);
        assert_eq!(t.entries()[0].mac, mac(1));
    }

    #[test]
    fn concurrent_learning_never_loses_lookups() {
        let t = std::sync::Arc::new(MacTable::new(1 << 16));
        let hs: Vec<_> = (0..4)
            .map(|w| {
                let t = t.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        t.learn(mac(i), (w + 1) as PortId, 0);
                        assert!(t.lookup(mac(i)).is_some());
                    }
                })
            })
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        for i in 0..10_000 {
            assert!(t.lookup(mac(i)).is_some());
        }
        assert_eq!(t.entries().len(), 10_000, "racing inserts of one MAC leave one entry");
        assert_eq!(t.learned(), 10_000);
    }
}
