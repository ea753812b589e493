//! Packet tracing: copies of the frames a port receives and sends, for `vswitch trace`.
//!
//! Off the fast path by construction. Workers hold the list of running traces; with none, the
//! cost is one branch per batch. A trace's filter (tcpdump's language, compiled by libpcap)
//! runs in the worker before anything is copied; a match is copied into a record taken from
//! the trace's own pool and queued for the daemon thread that streams it to the client. When
//! the pool is empty (the client reads too slowly) the copy is dropped and counted: the frame
//! itself is always forwarded.

pub mod client;
pub mod session;
pub mod stream;
pub mod writer;

use crate::fdb::PortId;
use crate::worker::NetId;
use crossbeam_queue::SegQueue;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Which way a frame crossed the port, as pcapng's `epb_flags` direction bits say it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Dir {
    /// Received from the port (entering the switch).
    In = 1,
    /// Sent out of the port (leaving the switch).
    Out = 2,
}

/// A compiled capture filter. libpcap's `pcap_offline_filter` only reads the program, so
/// workers may run one program concurrently.
pub struct Filter(pcap::BpfProgram);

// SAFETY: the program is immutable after compilation and libpcap's interpreter only reads it.
unsafe impl Sync for Filter {}

impl Filter {
    /// Compile a tcpdump expression for Ethernet frames.
    pub fn compile(expr: &str) -> Result<Filter, String> {
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(|e| format!("libpcap: {e}"))?;
        dead.compile(expr, true).map(Filter).map_err(|e| format!("bad filter expression '{expr}': {e}"))
    }

    #[inline]
    pub fn matches(&self, frame: &[u8]) -> bool {
        self.0.filter(frame)
    }
}

/// What a trace watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Select {
    /// Every port of a network, including ports that join while it runs.
    Network(NetId),
    /// These ports.
    Ports(Vec<PortId>),
}

/// One copied frame.
pub struct Record {
    pub port: PortId,
    pub dir: Dir,
    /// Wall-clock time of the copy, nanoseconds since the Unix epoch.
    pub ts_ns: u64,
    /// The frame's length; `data` may be shorter (snap length).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// Copies kept in a record without growing it: an MTU-1500 frame fits.
const RECORD_CAPACITY: usize = 2048;
/// Bytes of copies a trace may hold at once, whatever its queue length: 4096 GSO frames
/// of 64 KB would otherwise pin 256 MB.
const MAX_QUEUED_BYTES: usize = 64 << 20;

/// One running trace, shared by the workers (producers) and its session (the consumer).
pub struct Tracer {
    select: Select,
    filter: Option<Filter>,
    snaplen: usize,
    /// Empty records; workers take one per copy. Records are made as the trace first needs
    /// them, up to `queue`: a long queue costs memory only as it fills.
    free: SegQueue<Record>,
    /// Filled records, oldest first, for the session to stream.
    ready: SegQueue<Record>,
    /// Records made so far, and the most there may be.
    made: std::sync::atomic::AtomicUsize,
    queue: usize,
    /// Bytes of copies waiting in `ready` (bounded by MAX_QUEUED_BYTES).
    queued_bytes: std::sync::atomic::AtomicUsize,
    captured: AtomicU64,
    dropped: AtomicU64,
}

impl Tracer {
    /// A trace with room for `queue` copies in flight.
    pub fn new(select: Select, filter: Option<Filter>, snaplen: usize, queue: usize) -> Tracer {
        Tracer {
            select,
            filter,
            snaplen,
            free: SegQueue::new(),
            ready: SegQueue::new(),
            made: Default::default(),
            queue,
            queued_bytes: Default::default(),
            captured: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
        }
    }

    #[inline]
    pub fn watches(&self, net: NetId, port: PortId) -> bool {
        match &self.select {
            Select::Network(n) => *n == net,
            Select::Ports(p) => p.contains(&port),
        }
    }

    /// A worker saw `frame` (whole, VLAN tag in place) cross `port` going `dir`.
    pub fn offer(&self, port: PortId, dir: Dir, frame: &[u8]) {
        if let Some(f) = &self.filter {
            if !f.matches(frame) {
                return;
            }
        }
        let keep = frame.len().min(self.snaplen);
        let over_budget = self.queued_bytes.load(Relaxed) + keep > MAX_QUEUED_BYTES;
        let Some(mut r) = (!over_budget).then(|| self.free.pop().or_else(|| self.make_record())).flatten() else {
            self.dropped.fetch_add(1, Relaxed);
            return;
        };
        self.queued_bytes.fetch_add(keep, Relaxed);
        r.port = port;
        r.dir = dir;
        r.ts_ns = wall_clock_ns();
        r.orig_len = frame.len() as u32;
        r.data.clear();
        r.data.extend_from_slice(&frame[..keep]);
        self.ready.push(r);
        self.captured.fetch_add(1, Relaxed);
    }

    /// A new record if the trace may still have more (`queue` of them in all).
    #[cold]
    fn make_record(&self) -> Option<Record> {
        if self.made.fetch_add(1, Relaxed) >= self.queue {
            self.made.fetch_sub(1, Relaxed);
            return None;
        }
        Some(Record { port: 0, dir: Dir::In, ts_ns: 0, orig_len: 0, data: Vec::new() })
    }

    /// The oldest copy, if any.
    pub fn next(&self) -> Option<Record> {
        self.ready.pop()
    }

    /// Give a streamed record back to the pool.
    pub fn recycle(&self, mut r: Record) {
        self.queued_bytes.fetch_sub(r.data.len(), Relaxed);
        // A record a GSO frame grew goes back to its usual size: the pool stays small.
        r.data.shrink_to(RECORD_CAPACITY);
        self.free.push(r);
    }

    /// Copies queued so far, and copies dropped because the queue was full.
    pub fn counts(&self) -> (u64, u64) {
        (self.captured.load(Relaxed), self.dropped.load(Relaxed))
    }
}

/// Offer a frame to every trace watching `port` of network `net`. Kept out of line: the
/// forwarding loop only pays for the call when a trace runs.
#[inline(never)]
pub fn offer_all(traces: &[std::sync::Arc<Tracer>], net: NetId, port: PortId, dir: Dir, frame: &[u8]) {
    for t in traces {
        if t.watches(net, port) {
            t.offer(port, dir, frame);
        }
    }
}

fn wall_clock_ns() -> u64 {
    // CLOCK_REALTIME through the vDSO: no system call.
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp_frame() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x00]);
        // IPv4, IHL 5, protocol UDP (17), 10.0.0.1 -> 10.0.0.2, ports 1000 -> 53.
        f.extend_from_slice(&[0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x03, 0xe8, 0, 53, 0, 8, 0, 0]);
        f
    }

    #[test]
    fn filter_runs_libpcaps_language() {
        let f = udp_frame();
        assert!(Filter::compile("udp port 53").unwrap().matches(&f));
        assert!(Filter::compile("ip host 10.0.0.2 and ether broadcast").unwrap().matches(&f));
        assert!(!Filter::compile("tcp").unwrap().matches(&f));
        let e = Filter::compile("tcp prot 80").err().unwrap();
        assert!(e.contains("bad filter expression 'tcp prot 80'"), "{e}");
    }

    #[test]
    fn full_queue_drops_copies_and_counts_them() {
        let t = Tracer::new(Select::Ports(vec![3]), None, 100, 2);
        assert!(t.watches(7, 3) && !t.watches(7, 4));
        for _ in 0..5 {
            t.offer(3, Dir::In, &udp_frame());
        }
        assert_eq!(t.counts(), (2, 3));
        let r = t.next().unwrap();
        assert_eq!((r.port, r.dir, r.orig_len, r.data.len()), (3, Dir::In, 42, 42));
        t.recycle(r);
        t.offer(3, Dir::Out, &[0u8; 300]);
        assert_eq!(t.counts(), (3, 3));
        let _ = t.next().unwrap();
        let r = t.next().unwrap();
        assert_eq!((r.dir, r.orig_len, r.data.len()), (Dir::Out, 300, 100), "cut at the snap length");
    }

    #[test]
    fn filtered_out_frames_cost_no_copy() {
        let t = Tracer::new(Select::Network(1), Some(Filter::compile("tcp").unwrap()), 65535, 4);
        t.offer(1, Dir::In, &udp_frame());
        assert_eq!(t.counts(), (0, 0));
        assert!(t.next().is_none());
    }
}
