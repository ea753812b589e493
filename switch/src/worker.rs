//! A forwarding worker: a thread that owns one queue of every port, reads batches, runs each
//! frame through `forward::decide`, writes it to its egress queues and flushes them once per
//! batch. It never locks or allocates per frame: tables are shared lock-free, counters are
//! its own, and changes arrive as commands between batches.

use crate::clock;
use crate::fdb::{MacTable, PortId};
use crate::forward::{self, decide, Verdict};
use crate::frame::Drop;
use crate::port::{PortShared, Queue, RxFrame, TxError, WorkerBuffers};
use crate::stats::bump;
use crate::trace::{self, Dir, Tracer};
use crossbeam_channel::{Receiver, Sender};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frames read from one port before they are forwarded and the port is flushed.
pub const BATCH: usize = 64;
/// How long a worker keeps polling its rings after the last frame before it sleeps in
/// poll(). A wake-up costs tens of microseconds here; spinning this long means the reply to
/// a request usually finds the worker awake, and costs nothing under load (never idle).
const IDLE_SPIN: Duration = Duration::from_micros(200);

pub type NetId = u16;

/// What the control plane asks of a worker.
pub enum Cmd {
    AddNetwork {
        net: NetId,
        table: Arc<MacTable>,
    },
    RemoveNetwork {
        net: NetId,
    },
    AddPort(NewPort),
    /// Close this worker's queue of the port; answer on `done` once it is closed.
    RemovePort {
        port: PortId,
        done: Sender<()>,
    },
    /// The traces now running (replaces the list); answer on `done` once applied.
    SetTraces {
        traces: Arc<[Arc<Tracer>]>,
        done: Sender<()>,
    },
    Stop,
}

pub struct NewPort {
    pub port: PortId,
    pub net: NetId,
    pub queue: Queue,
    /// Whether this worker reads from the queue (or only writes to it).
    pub rx: bool,
    pub shared: Arc<PortShared>,
}

/// A port went wrong under a worker (interface deleted, device error).
#[derive(Debug)]
pub struct Fault {
    pub port: PortId,
    pub error: String,
}

struct LocalPort {
    net: NetId,
    queue: Queue,
    rx: bool,
    shared: Arc<PortShared>,
    failed: bool,
}

struct LocalNet {
    table: Arc<MacTable>,
    members: Vec<PortId>,
}

/// Wakes a worker sleeping in poll() so it sees a command at once.
pub struct Waker(OwnedFd);

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Waker(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn wake(&self) {
        let one = 1u64;
        unsafe { libc::write(self.0.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    }

    fn clear(&self) {
        let mut v = 0u64;
        unsafe { libc::read(self.0.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    }
}

pub struct Worker {
    index: usize,
    cmds: Receiver<Cmd>,
    waker: Arc<Waker>,
    faults: Sender<Fault>,
    /// Indexed by port id.
    ports: Vec<Option<LocalPort>>,
    /// Indexed by network id.
    nets: Vec<Option<LocalNet>>,
    /// Ports this worker reads, in order.
    readers: Vec<PortId>,
    batch: Vec<RxFrame>,
    verdicts: Vec<Verdict>,
    bufs: WorkerBuffers,
    pollfds: Vec<libc::pollfd>,
    /// Running traces; empty (the usual case) costs one branch per batch.
    traces: Arc<[Arc<Tracer>]>,
    /// Where a frame whose VLAN tag the kernel took out is put back together for a trace.
    trace_scratch: Vec<u8>,
}

impl Worker {
    pub fn new(index: usize, cmds: Receiver<Cmd>, waker: Arc<Waker>, faults: Sender<Fault>) -> Worker {
        let mut w = Worker {
            index,
            cmds,
            waker,
            faults,
            ports: Vec::new(),
            nets: Vec::new(),
            readers: Vec::new(),
            batch: Vec::with_capacity(BATCH),
            verdicts: Vec::with_capacity(BATCH),
            bufs: WorkerBuffers::new(BATCH),
            pollfds: Vec::new(),
            traces: Arc::new([]),
            trace_scratch: Vec::new(),
        };
        w.rebuild_readers(); // the waker is in the poll set from the start
        w
    }

    pub fn run(mut self) {
        let mut last_work = Instant::now();
        let mut idle_passes = 0u32;
        while let Some(work) = self.pass() {
            if work > 0 {
                idle_passes = 0;
                continue;
            }
            // Read the clock only every 64 idle passes: it is the spin's main cost.
            idle_passes += 1;
            if idle_passes == 1 {
                last_work = Instant::now();
            } else if idle_passes.is_multiple_of(64) && last_work.elapsed() > IDLE_SPIN {
                self.sleep();
                idle_passes = 0;
            }
        }
    }

    /// Apply pending commands, then read one batch from every port and forward it. Returns
    /// the frames read, or None when told to stop. (Also how the microbenchmarks drive a
    /// worker over in-memory ports.)
    pub fn pass(&mut self) -> Option<usize> {
        while let Ok(cmd) = self.cmds.try_recv() {
            if !self.apply(cmd) {
                return None;
            }
        }
        let mut work = 0;
        // By index, re-checking the length: a port that fails mid-pass leaves `readers`.
        let mut i = 0;
        while let Some(&port) = self.readers.get(i) {
            work += self.forward_batch(port);
            i += 1;
        }
        Some(work)
    }

    /// Apply a command; false means stop.
    fn apply(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::AddNetwork { net, table } => {
                let i = net as usize;
                if self.nets.len() <= i {
                    self.nets.resize_with(i + 1, || None);
                }
                self.nets[i] = Some(LocalNet { table, members: Vec::new() });
            }
            Cmd::RemoveNetwork { net } => {
                if let Some(n) = self.nets.get_mut(net as usize) {
                    *n = None;
                }
            }
            Cmd::AddPort(p) => {
                let i = p.port as usize;
                if self.ports.len() <= i {
                    self.ports.resize_with(i + 1, || None);
                }
                if let Some(Some(n)) = self.nets.get_mut(p.net as usize) {
                    n.members.push(p.port);
                }
                self.ports[i] =
                    Some(LocalPort { net: p.net, queue: p.queue, rx: p.rx, shared: p.shared, failed: false });
                self.rebuild_readers();
            }
            Cmd::RemovePort { port, done } => {
                if let Some(p) = self.ports.get_mut(port as usize).and_then(Option::take) {
                    if let Some(Some(n)) = self.nets.get_mut(p.net as usize) {
                        n.members.retain(|&m| m != port);
                    }
                }
                self.rebuild_readers();
                let _ = done.send(());
            }
            Cmd::SetTraces { traces, done } => {
                self.traces = traces;
                let _ = done.send(());
            }
            Cmd::Stop => return false,
        }
        true
    }

    fn rebuild_readers(&mut self) {
        self.readers.clear();
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd { fd: self.waker.0.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        for (id, p) in self.ports.iter().enumerate() {
            if let Some(p) = p {
                if p.rx && !p.failed {
                    self.readers.push(id as PortId);
                    self.pollfds.push(libc::pollfd { fd: p.queue.fd(), events: libc::POLLIN, revents: 0 });
                }
            }
        }
    }

    /// Sleep until a port has frames, a port fails, or a command arrives.
    fn sleep(&mut self) {
        let r = unsafe { libc::poll(self.pollfds.as_mut_ptr(), self.pollfds.len() as libc::nfds_t, 1000) };
        if r <= 0 {
            return;
        }
        if self.pollfds[0].revents != 0 {
            self.waker.clear();
        }
        let mut failed = Vec::new();
        for (i, pfd) in self.pollfds.iter().enumerate().skip(1) {
            if pfd.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                failed.push((self.readers[i - 1], socket_error(pfd.fd)));
            }
        }
        for (port, err) in failed {
            self.fail(port, err);
        }
    }

    fn fail(&mut self, port: PortId, error: String) {
        if let Some(p) = self.ports[port as usize].as_mut() {
            if !p.failed {
                p.failed = true;
                let _ = self.faults.send(Fault { port, error });
                self.rebuild_readers();
            }
        }
    }

    /// Read one batch from `port`, forward it, flush the egress queues. Returns frames read.
    fn forward_batch(&mut self, in_id: PortId) -> usize {
        let w = self.index;
        let Some(inp) = self.ports[in_id as usize].as_mut() else { return 0 };
        self.batch.clear();
        if let Err(e) = inp.queue.receive(&mut self.batch, BATCH, &mut self.bufs) {
            self.fail(in_id, e.to_string());
            return 0;
        }
        let n = self.batch.len();
        if n == 0 {
            inp.queue.release();
            return 0;
        }
        let Some(net) = self.nets.get(inp.net as usize).and_then(Option::as_ref) else {
            inp.queue.release();
            return n;
        };
        // Decide every frame first (learning as we go), then transmit: the ingress queue is
        // not touched again until its slots are released.
        let now = clock::now();
        let c = inp.shared.stats.worker(w);
        let max_frame = inp.shared.max_frame();
        self.verdicts.clear();
        if net.table.outgrows_cache() {
            for f in &self.batch {
                forward::prefetch(&net.table, f.data());
            }
        }
        for f in &self.batch {
            let len = f.wire_len();
            bump(&c.rx_packets, 1);
            bump(&c.rx_bytes, len as u64);
            let v = if f.truncated {
                Verdict::Drop(Drop::Truncated)
            } else {
                decide(&*net.table, in_id, f.data(), len, max_frame, f.vnet.is_gso(), now).verdict
            };
            if let Verdict::Drop(why) = v {
                c.drop(why);
            }
            self.verdicts.push(v);
        }
        let tracing = !self.traces.is_empty();
        let mut tr = Tracing { traces: &self.traces, net: inp.net, scratch: &mut self.trace_scratch };
        if tracing {
            for f in &self.batch {
                tr.offer(in_id, Dir::In, f);
            }
        }
        let tr = if tracing { Some(&mut tr) } else { None };
        let mut faults: Vec<(PortId, String)> = Vec::new();
        let mut out = Egress { ports: &mut self.ports, worker: w, faults: &mut faults, tracing: tr };
        for (f, v) in self.batch.iter().zip(&self.verdicts) {
            match *v {
                Verdict::Drop(_) => {}
                Verdict::Port(p) => out.transmit(p, f),
                Verdict::Flood => {
                    for &p in &net.members {
                        if p != in_id {
                            out.transmit(p, f);
                        }
                    }
                }
            }
        }
        for &out in &net.members {
            if let Some(p) = self.ports[out as usize].as_mut() {
                if let Err(TxError::Fault(e)) = p.queue.flush() {
                    faults.push((out, e.to_string()));
                }
            }
        }
        if let Some(inp) = self.ports[in_id as usize].as_mut() {
            inp.queue.release();
        }
        for (port, e) in faults {
            self.fail(port, e);
        }
        n
    }
}

/// The running traces, as one batch sees them.
struct Tracing<'a> {
    traces: &'a [Arc<Tracer>],
    net: NetId,
    scratch: &'a mut Vec<u8>,
}

impl Tracing<'_> {
    /// Show a trace the frame as it is on the wire: an offloaded VLAN tag goes back in.
    fn offer(&mut self, port: PortId, dir: Dir, f: &RxFrame) {
        let d = f.data();
        let wire = match &f.tag {
            Some(tag) if d.len() >= 12 => {
                self.scratch.clear();
                self.scratch.extend_from_slice(&d[..12]);
                self.scratch.extend_from_slice(tag);
                self.scratch.extend_from_slice(&d[12..]);
                &self.scratch[..]
            }
            _ => d,
        };
        trace::offer_all(self.traces, self.net, port, dir, wire);
    }
}

/// Where one batch's frames go out.
struct Egress<'a, 'b> {
    ports: &'a mut [Option<LocalPort>],
    worker: usize,
    faults: &'a mut Vec<(PortId, String)>,
    tracing: Option<&'a mut Tracing<'b>>,
}

impl Egress<'_, '_> {
    /// Send one frame out of port `out`, counting it or its drop on that port.
    #[inline]
    fn transmit(&mut self, out: PortId, f: &RxFrame) {
        let Some(p) = self.ports.get_mut(out as usize).and_then(Option::as_mut) else { return };
        if p.failed {
            return;
        }
        let c = p.shared.stats.worker(self.worker);
        let len = f.wire_len();
        if len > p.shared.max_frame() && !f.vnet.is_gso() {
            c.drop(Drop::TooBigForEgress);
            return;
        }
        match f.transmit(&mut p.queue) {
            Ok(()) => {
                bump(&c.tx_packets, 1);
                bump(&c.tx_bytes, len as u64);
                if let Some(t) = self.tracing.as_mut() {
                    t.offer(out, Dir::Out, f);
                }
            }
            Err(TxError::Full) => c.drop(Drop::TxError),
            Err(TxError::Fault(e)) => {
                c.drop(Drop::TxError);
                self.faults.push((out, e.to_string()));
            }
        }
    }
}

/// The pending error of a socket (SO_ERROR), as text, for the fault log line.
fn socket_error(fd: i32) -> String {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut _ as *mut libc::c_void, &mut len)
    };
    if r == 0 && err != 0 {
        std::io::Error::from_raw_os_error(err).to_string()
    } else {
        "interface went away (poll reported an error)".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{max_frame_for_mtu, test_frame};
    use crate::port::memory::MemoryQueue;
    use crate::trace::Select;

    const A: &str = "02:00:00:00:00:0a";
    const B: &str = "02:00:00:00:00:0b";

    type Setup = (Worker, Sender<Cmd>, Arc<MacTable>, Vec<Arc<PortShared>>, Receiver<Fault>);

    /// A worker with three in-memory ports on one network; port 1 receives `frames` once
    /// per pass; port 3 receives them too if `third_reads`, and fails to send if `broken`.
    fn worker_with(frames: Vec<Vec<u8>>, third_reads: bool, broken: bool) -> Setup {
        let (tx, rx) = crossbeam_channel::unbounded();
        let (faults, fault_rx) = crossbeam_channel::unbounded();
        let mut w = Worker::new(0, rx, Arc::new(Waker::new().unwrap()), faults);
        let table = Arc::new(MacTable::new(1024));
        tx.send(Cmd::AddNetwork { net: 0, table: table.clone() }).unwrap();
        let mut shared = Vec::new();
        for p in 1..=3 {
            let reads = p == 1 || (p == 3 && third_reads);
            let mut q = MemoryQueue::new(if reads { frames.clone() } else { vec![] }, frames.len());
            q.broken = p == 2 && broken;
            let queue = Queue::Memory(q);
            let s = Arc::new(PortShared::new(1, max_frame_for_mtu(1500)));
            shared.push(s.clone());
            tx.send(Cmd::AddPort(NewPort { port: p, net: 0, queue, rx: true, shared: s })).unwrap();
        }
        w.pass();
        (w, tx, table, shared, fault_rx)
    }

    fn worker(frames: Vec<Vec<u8>>) -> Setup {
        worker_with(frames, false, false)
    }

    fn tx_packets(s: &PortShared) -> u64 {
        s.stats.totals().tx_packets
    }

    #[test]
    fn floods_then_forwards_what_it_learned() {
        let (_w, _tx, table, s, _) = worker(vec![test_frame("ff:ff:ff:ff:ff:ff", A), test_frame(A, B)]);
        // Frame 1 (broadcast from A) went to ports 2 and 3; frame 2 (to A, from B) came in on
        // port 1 where A lives: never back out of its ingress port.
        assert_eq!((tx_packets(&s[0]), tx_packets(&s[1]), tx_packets(&s[2])), (0, 1, 1));
        assert_eq!(s[0].stats.totals().drops.get("same_port"), Some(&1));
        assert_eq!(table.lookup(A.parse().unwrap()), Some(1));
    }

    #[test]
    fn a_trace_sees_frames_in_and_out_and_costs_no_frame() {
        let (mut w, tx, _, s, _) = worker(vec![test_frame("ff:ff:ff:ff:ff:ff", A)]);
        let t = Arc::new(Tracer::new(Select::Network(0), None, 65535, 2));
        let (done, acks) = crossbeam_channel::bounded(1);
        tx.send(Cmd::SetTraces { traces: vec![t.clone()].into(), done }).unwrap();
        w.pass();
        acks.recv().unwrap();
        // One frame in on 1, out on 2 and 3: three copies for a queue of two.
        assert_eq!(t.counts(), (2, 1));
        let dirs: Vec<(u16, Dir)> = std::iter::from_fn(|| t.next()).map(|r| (r.port, r.dir)).collect();
        assert_eq!(dirs, [(1, Dir::In), (2, Dir::Out)]);
        assert_eq!((tx_packets(&s[1]), tx_packets(&s[2])), (2, 2), "every frame still forwarded");
    }

    #[test]
    fn a_port_failing_mid_pass_is_reported_and_the_rest_forwards() {
        // Port 1's flood fails on port 2 and drops it from the readers while the pass still
        // has port 3 to read: the pass must not run past the shorter list.
        let (mut w, _tx, _, s, faults) = worker_with(vec![test_frame("ff:ff:ff:ff:ff:ff", A)], true, true);
        assert_eq!(faults.try_recv().unwrap().port, 2);
        assert!(w.pass().is_some());
        assert!(tx_packets(&s[2]) >= 1, "port 3 still gets port 1's floods");
        assert!(tx_packets(&s[0]) >= 1, "port 1 still gets port 3's floods");
    }
}
