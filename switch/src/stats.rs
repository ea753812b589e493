//! Per-port counters. Each worker owns one cache line of counters per port, so counting is a
//! plain load and store (no locked instruction, no sharing); readers add the workers up.

use crate::pipeline::DropReason;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[repr(align(64))]
#[derive(Default)]
pub struct WorkerCounters {
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
    pub tx_packets: AtomicU64,
    pub tx_bytes: AtomicU64,
    pub drops: [AtomicU64; DropReason::ALL.len()],
}

/// Add to a counter that only this thread writes.
#[inline]
pub fn bump(c: &AtomicU64, n: u64) {
    c.store(c.load(Relaxed).wrapping_add(n), Relaxed);
}

impl WorkerCounters {
    #[inline]
    pub fn drop(&self, why: DropReason) {
        bump(&self.drops[why as usize], 1);
    }
}

pub struct PortStats {
    per_worker: Box<[WorkerCounters]>,
}

#[derive(Serialize, serde::Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Drops by reason; only reasons that happened are listed.
    pub drops: BTreeMap<String, u64>,
}

impl PortStats {
    pub fn new(workers: usize) -> PortStats {
        PortStats { per_worker: (0..workers).map(|_| WorkerCounters::default()).collect() }
    }

    pub fn worker(&self, w: usize) -> &WorkerCounters {
        &self.per_worker[w]
    }

    pub fn totals(&self) -> Totals {
        let mut t = Totals::default();
        for c in self.per_worker.iter() {
            t.rx_packets += c.rx_packets.load(Relaxed);
            t.rx_bytes += c.rx_bytes.load(Relaxed);
            t.tx_packets += c.tx_packets.load(Relaxed);
            t.tx_bytes += c.tx_bytes.load(Relaxed);
            for why in DropReason::ALL {
                let n = c.drops[why as usize].load(Relaxed);
                if n > 0 {
                    *t.drops.entry(why.name().to_string()).or_default() += n;
                }
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_workers() {
        let s = PortStats::new(2);
        bump(&s.worker(0).rx_packets, 3);
        bump(&s.worker(1).rx_packets, 4);
        s.worker(1).drop(DropReason::Runt);
        let t = s.totals();
        assert_eq!(t.rx_packets, 7);
        assert_eq!(t.drops.get("runt"), Some(&1));
        assert_eq!(t.drops.len(), 1);
    }
}
