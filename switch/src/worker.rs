//! A forwarding worker: a thread that owns one queue of every port, reads batches, runs each
//! frame through its network's pipeline (`pipeline/`), and hands the decisions to the egress
//! stage, flushing the egress queues once per batch. It also sends what the gateways say
//! (the services thread's replies). It never locks or allocates per frame: tables are shared
//! lock-free, counters are its own, and changes arrive as commands between batches.

use crate::clock;
use crate::fdb::{PortId, GATEWAY_PORT};
use crate::frame::{VnetHdr, MAX_FRAME};
use crate::pipeline::egress::{self, Sink};
use crate::pipeline::route::MAX_EDIT;
use crate::pipeline::{Action, DropReason, Env, FrameCx, Nat, NoObserve, Pipeline, Routes};
use crate::poll::{Idle, PollMode};
use crate::port::{recycle, PortShared, Queue, RxFrame, TxError, WorkerBuffers};
use crate::services::link::Link;
use crate::stats::bump;
use crate::trace::{self, Dir, Tracer};
use crossbeam_channel::{Receiver, Sender};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Instant;
use vswitch_nat::ports::PortSplit;

/// Frames read from one port before they are forwarded and the port is flushed.
pub const BATCH: usize = 64;
/// The outside ports SNAT hands out, split between the workers.
pub const NAT_PORTS: std::ops::RangeInclusive<u16> = 1024..=65535;
/// Sessions each worker's NAT holds (about 140 bytes each, reserved, touched as used).
pub const NAT_SESSIONS: u32 = 262_144;
/// Sessions a worker looks at for expiry once a second, at most.
const NAT_EXPIRE_BUDGET: usize = 4096;

pub type NetId = u16;

/// What the control plane asks of a worker.
pub enum Cmd {
    AddNetwork {
        net: NetId,
        pipeline: Pipeline,
        /// The gateway's counters (its frames in and out), for networks with a gateway.
        gateway: Option<Arc<PortShared>>,
    },
    RemoveNetwork {
        net: NetId,
    },
    /// A network's pipeline rebuilt (a macvlan parent's dispatch table, after an endpoint
    /// came or went); its ports stay.
    SetPipeline {
        net: NetId,
        pipeline: Pipeline,
    },
    /// Every network's subnets, for the gateway stage.
    SetRoutes(Arc<Routes>),
    AddPort(NewPort),
    /// Close this worker's queue of the port; answer on `done` once it is closed.
    RemovePort {
        port: PortId,
        done: Sender<()>,
    },
    /// Idle timeouts for this worker's NAT.
    NatTimeouts(vswitch_nat::Timeouts),
    /// Send (a copy of) this worker's NAT sessions, at most `limit`, and its counters.
    NatSessions {
        limit: usize,
        reply: Sender<(usize, Vec<vswitch_nat::SessionInfo>, vswitch_nat::Stats)>,
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
    /// A TAP queue in the worker's epoll set (`TapSet`).
    in_epoll: bool,
}

struct LocalNet {
    pipeline: Pipeline,
    members: Vec<PortId>,
    gateway: Option<Arc<PortShared>>,
}

/// Wakes a worker sleeping in poll() so it sees a command at once.
pub struct Waker(OwnedFd);

impl Waker {
    pub fn new() -> std::io::Result<Waker> {
        // SAFETY: eventfd takes no pointers; a negative result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        Ok(Waker(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    pub fn wake(&self) {
        let one = 1u64;
        // SAFETY: writes the 8 bytes of `one` to our eventfd.
        unsafe { libc::write(self.0.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    }

    fn clear(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into `v` from our eventfd.
        unsafe { libc::read(self.0.as_raw_fd(), &mut v as *mut u64 as *mut libc::c_void, 8) };
    }
}

pub struct Worker {
    index: usize,
    cmds: Receiver<Cmd>,
    waker: Arc<Waker>,
    faults: Sender<Fault>,
    services: Arc<Link>,
    /// Ports, traces: what sending needs.
    tx: TxSide,
    /// Indexed by network id.
    nets: Vec<Option<LocalNet>>,
    routes: Arc<Routes>,
    /// Networks a pass over the gateways' frames sent on (kept for its allocation).
    touched: Vec<NetId>,
    /// Ports this worker reads, in order.
    readers: Vec<PortId>,
    /// The batch's frames; empty between batches (see `port::recycle`).
    batch: Vec<RxFrame<'static>>,
    actions: Vec<Action>,
    bufs: WorkerBuffers,
    pollfds: Vec<libc::pollfd>,
    /// When the kernel's drop counters were last read (`clock::now` seconds).
    stats_at: u32,
    /// This worker's connection table (its own slice of the outside ports).
    nat: Nat,
    /// The TAP queues this worker reads, in an epoll set: a drained TAP is read again only
    /// when one epoll_wait per pass says it has frames, not by a read of its own each pass
    /// (256 idle TAPs were 256 syscalls a pass). None: no epoll, TAPs read every pass.
    taps: Option<TapSet>,
}

struct TapSet {
    epoll: OwnedFd,
    /// Queues in the set that are drained now: none, and no epoll_wait is made (a busy TAP
    /// costs its read and nothing more).
    drained: usize,
    events: Vec<libc::epoll_event>,
}

impl TapSet {
    fn new() -> Option<TapSet> {
        // SAFETY: no pointers; a negative result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        // SAFETY: a fresh descriptor that nothing else owns.
        (fd >= 0).then(|| TapSet {
            epoll: unsafe { OwnedFd::from_raw_fd(fd) },
            drained: 0,
            events: vec![libc::epoll_event { events: 0, u64: 0 }; BATCH],
        })
    }

    fn add(&mut self, fd: i32, port: PortId) -> bool {
        let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: u64::from(port) };
        // SAFETY: `ev` is live for the call; the kernel copies it.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) == 0 }
    }

    fn remove(&mut self, fd: i32) {
        // SAFETY: EPOLL_CTL_DEL ignores the event pointer.
        unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut()) };
    }
}

/// What a worker sends with: its queue of every port, the traces, and the faults seen.
struct TxSide {
    /// Indexed by port id.
    ports: Vec<Option<LocalPort>>,
    /// Running traces; empty (the usual case) costs one branch per batch.
    traces: Arc<[Arc<Tracer>]>,
    /// Where a frame whose VLAN tag the kernel took out is put back together for a trace.
    scratch: Vec<u8>,
    /// Ports that failed while sending, reported after the batch.
    faulted: Vec<(PortId, String)>,
    /// Ports of other networks this batch routed frames to (flushed with the batch).
    routed_to: Vec<PortId>,
    /// Where a routed frame's edited headers are written before they are sent.
    edited: Box<[u8; MAX_EDIT]>,
}

impl Worker {
    pub fn new(
        index: usize,
        cmds: Receiver<Cmd>,
        waker: Arc<Waker>,
        faults: Sender<Fault>,
        services: Arc<Link>,
    ) -> Worker {
        let workers = services.workers();
        let mut w = Worker {
            index,
            cmds,
            waker,
            faults,
            services,
            tx: TxSide {
                ports: Vec::new(),
                traces: Arc::new([]),
                scratch: Vec::new(),
                faulted: Vec::new(),
                routed_to: Vec::with_capacity(8),
                edited: Box::new([0; MAX_EDIT]),
            },
            nat: Nat::new(PortSplit::new(NAT_PORTS, workers).range(index), NAT_SESSIONS),
            taps: TapSet::new(),
            nets: Vec::new(),
            routes: Arc::new(Routes::default()),
            touched: Vec::with_capacity(8),
            readers: Vec::new(),
            batch: Vec::with_capacity(BATCH),
            actions: Vec::with_capacity(BATCH),
            bufs: WorkerBuffers::new(BATCH),
            pollfds: Vec::new(),
            stats_at: 0,
        };
        w.rebuild_readers(); // the waker is in the poll set from the start
        w
    }

    pub fn run(mut self, mode: PollMode) {
        let mut idle = Idle::new(mode);
        let mut last_work = Instant::now();
        let mut idle_passes = 0u32;
        while let Some(work) = self.pass() {
            if work > 0 {
                // Only a pause of 64 idle passes or more can be a gap worth learning (poll.rs
                // ignores gaps under its base spin): under load, no clock read per burst.
                if idle_passes >= 64 {
                    idle.burst_after(last_work.elapsed());
                }
                idle_passes = 0;
                continue;
            }
            // Read the clock only every 64 idle passes: it is the spin's main cost.
            idle_passes += 1;
            if idle_passes == 1 {
                last_work = Instant::now();
            }
            let spin = idle.spin();
            if spin.is_zero() || idle_passes.is_multiple_of(64) {
                if last_work.elapsed() > spin {
                    self.sleep();
                } else {
                    // Spinning politely: a thread waiting for this core (the services
                    // thread with a reply, the very client) gets it at once.
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Apply pending commands, send what the gateways queued, then read one batch from every
    /// port and forward it. Returns the frames handled, or None when told to stop. (Also how
    /// the microbenchmarks drive a worker over in-memory ports.)
    pub fn pass(&mut self) -> Option<usize> {
        if !self.apply_commands() {
            return None;
        }
        let now = clock::now();
        if now != self.stats_at {
            self.stats_at = now;
            self.count_overruns();
            self.nat.table.expire(now, NAT_EXPIRE_BUDGET);
        }
        let mut work = self.gateway_frames()?;
        self.wake_ready_taps();
        // By index, re-checking the length: a port that fails mid-pass leaves `readers`.
        let mut i = 0;
        while let Some(&port) = self.readers.get(i) {
            work += self.forward_batch(port);
            i += 1;
        }
        Some(work)
    }

    /// Apply the pending commands; false means stop.
    fn apply_commands(&mut self) -> bool {
        while let Ok(cmd) = self.cmds.try_recv() {
            if !self.apply(cmd) {
                return false;
            }
        }
        true
    }

    /// Apply a command; false means stop.
    fn apply(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::AddNetwork { net, pipeline, gateway } => {
                let i = net as usize;
                if self.nets.len() <= i {
                    self.nets.resize_with(i + 1, || None);
                }
                self.nets[i] = Some(LocalNet { pipeline, members: Vec::new(), gateway });
            }
            Cmd::SetPipeline { net, pipeline } => {
                if let Some(Some(n)) = self.nets.get_mut(net as usize) {
                    n.pipeline = pipeline;
                }
            }
            Cmd::RemoveNetwork { net } => {
                if let Some(n) = self.nets.get_mut(net as usize) {
                    *n = None;
                }
                // Its sessions go with it (a later network may get its id).
                self.nat.table.remove_where(|s| s.tag == net);
            }
            Cmd::SetRoutes(routes) => {
                let gone = routes.unpublished_since(&self.routes);
                if !gone.is_empty() {
                    self.nat.table.remove_where(|s| {
                        gone.iter().any(|&(proto, port, target)| {
                            s.orig.proto == proto && s.orig.dst.port == port && s.reply.src == target
                        })
                    });
                }
                self.nat.table.set_reserved(routes.reserved.clone());
                self.routes = routes;
            }
            Cmd::AddPort(p) => {
                let i = p.port as usize;
                if self.tx.ports.len() <= i {
                    self.tx.ports.resize_with(i + 1, || None);
                }
                if let Some(Some(n)) = self.nets.get_mut(p.net as usize) {
                    n.members.push(p.port);
                }
                // Not in the set (no epoll): read every pass.
                let in_epoll =
                    p.rx && p.queue.is_tap() && self.taps.as_mut().is_some_and(|t| t.add(p.queue.fd(), p.port));
                self.tx.ports[i] =
                    Some(LocalPort { net: p.net, queue: p.queue, rx: p.rx, shared: p.shared, failed: false, in_epoll });
                self.rebuild_readers();
            }
            Cmd::RemovePort { port, done } => {
                if let Some(p) = self.tx.ports.get_mut(port as usize).and_then(Option::take) {
                    if let Some(Some(n)) = self.nets.get_mut(p.net as usize) {
                        n.members.retain(|&m| m != port);
                    }
                    if let (true, Some(t)) = (p.in_epoll, self.taps.as_mut()) {
                        t.remove(p.queue.fd());
                        t.drained -= usize::from(p.queue.is_drained());
                    }
                    crate::port::close_in_background(p.queue);
                }
                self.rebuild_readers();
                let _ = done.send(());
            }
            Cmd::NatTimeouts(t) => self.nat.table.set_timeouts(t),
            Cmd::NatSessions { limit, reply } => {
                let t = &self.nat.table;
                let _ = reply.send((self.index, t.sessions().take(limit).collect(), t.stats));
            }
            Cmd::SetTraces { traces, done } => {
                self.tx.traces = traces;
                let _ = done.send(());
            }
            Cmd::Stop => {
                for p in self.tx.ports.drain(..).flatten() {
                    crate::port::close_in_background(p.queue);
                }
                return false;
            }
        }
        true
    }

    /// TAPs with frames again since they were drained are read this pass (one epoll_wait for
    /// all of them; level-triggered, so a TAP still full is named again next pass).
    fn wake_ready_taps(&mut self) {
        let Some(t) = self.taps.as_mut().filter(|t| t.drained > 0) else { return };
        // SAFETY: `events` holds `len` entries the kernel may fill.
        let n = unsafe { libc::epoll_wait(t.epoll.as_raw_fd(), t.events.as_mut_ptr(), t.events.len() as i32, 0) };
        for ev in &t.events[..n.max(0) as usize] {
            if let Some(p) = self.tx.ports.get_mut(ev.u64 as usize).and_then(Option::as_mut) {
                if p.in_epoll && p.queue.is_drained() {
                    p.queue.set_drained(false);
                    t.drained -= 1;
                }
            }
        }
    }

    /// Once a second: what the kernel dropped on the rings this worker reads.
    fn count_overruns(&mut self) {
        for p in self.tx.ports.iter().flatten().filter(|p| p.rx && !p.failed) {
            let n = p.queue.take_drops();
            if n > 0 {
                bump(&p.shared.stats.worker(self.index).drops[DropReason::RxOverrun as usize], n);
            }
        }
    }

    fn rebuild_readers(&mut self) {
        self.readers.clear();
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd { fd: self.waker.0.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        for (id, p) in self.tx.ports.iter().enumerate() {
            if let Some(p) = p {
                if p.rx && !p.failed {
                    self.readers.push(id as PortId);
                    self.pollfds.push(libc::pollfd { fd: p.queue.fd(), events: libc::POLLIN, revents: 0 });
                }
            }
        }
    }

    /// Sleep until a port has frames, a port fails, or a command or a gateway's frame arrives.
    fn sleep(&mut self) {
        // SAFETY: `pollfds` is a live array of that many pollfd structs.
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
                // Reading the error clears it; a link that went down comes back up.
                match socket_error(pfd.fd) {
                    Some(e) if crate::port::transient(&e) => {}
                    Some(e) => failed.push((self.readers[i - 1], e.to_string())),
                    None => failed.push((self.readers[i - 1], "interface went away (poll reported an error)".into())),
                }
            }
        }
        for (port, err) in failed {
            self.fail(port, err);
        }
    }

    fn fail(&mut self, port: PortId, error: String) {
        if let Some(p) = self.tx.ports.get_mut(port as usize).and_then(Option::as_mut) {
            if !p.failed {
                p.failed = true;
                let _ = self.faults.send(Fault { port, error });
                self.rebuild_readers();
            }
        }
    }

    fn report_faults(&mut self) {
        while let Some((port, e)) = self.tx.faulted.pop() {
            self.fail(port, e);
        }
    }

    /// Read one batch from `in_id`, run it through its network's pipeline, send it, flush the
    /// egress queues. Returns frames read.
    fn forward_batch(&mut self, in_id: PortId) -> usize {
        // The ingress port leaves the table while its frames are borrowed from its queue:
        // the egress stage never sends back out of it anyway.
        match self.tx.ports[in_id as usize].as_ref() {
            Some(p) if p.queue.may_have_frames() => {}
            _ => return 0, // an idle ring: nothing to take apart
        }
        let Some(mut inp) = self.tx.ports[in_id as usize].take() else { return 0 };
        let mut batch = recycle(std::mem::take(&mut self.batch));
        if let Err(e) = inp.queue.receive(&mut batch, BATCH, &mut self.bufs) {
            // What was read before the error is still forwarded; the port is reported.
            self.tx.faulted.push((in_id, e.to_string()));
        }
        let n = batch.len();
        if n > 0 {
            if let Some(net) = self.nets.get(inp.net as usize).and_then(Option::as_ref) {
                self.nat.start_batch();
                let env = Env { routes: &self.routes };
                decide(net, &env, &mut self.nat, &batch, in_id, &inp.shared, self.index, &mut self.actions);
                let mut out = Out::new(&mut self.tx, self.index, &self.services, inp.net, net, &self.nat);
                send(net, &batch, in_id, inp.shared.max_frame(), &self.actions, &mut out);
                out.finish(&net.members);
            }
        }
        self.batch = recycle(batch);
        if n < BATCH && inp.in_epoll && !inp.queue.is_drained() {
            // A TAP read short is empty now: the epoll says when it is not.
            inp.queue.set_drained(true);
            if let Some(t) = self.taps.as_mut() {
                t.drained += 1;
            }
        }
        inp.queue.release();
        self.tx.ports[in_id as usize] = Some(inp);
        self.report_faults();
        n
    }

    /// Send what the gateways queued for this worker, each through its network's pipeline
    /// as a frame coming in from the gateway port. None when told to stop.
    fn gateway_frames(&mut self) -> Option<usize> {
        let mut n = 0;
        // The networks whose ports this pass queued frames on: flushed once, at the end.
        let mut touched = std::mem::take(&mut self.touched);
        let mut to_services = 0;
        while n < BATCH {
            let Some(p) = self.services.next_down(self.index) else { break };
            if n == 0 && !self.apply_commands() {
                // Commands sent before this frame was queued (a port added before its network
                // was announced) are in the channel by now: apply them first.
                self.services.recycle(p);
                return None;
            }
            n += 1;
            if let Some(net) = self.nets.get(p.net as usize).and_then(Option::as_ref) {
                let frame = RxFrame::new(VnetHdr::default(), &p.data, None);
                let cx = FrameCx { frame: &frame, in_port: GATEWAY_PORT, max_frame: MAX_FRAME, now: clock::now() };
                self.nat.start_batch();
                let action = net.pipeline.run(&Env { routes: &self.routes }, &mut self.nat, &cx, &mut NoObserve);
                let mut out = Out::new(&mut self.tx, self.index, &self.services, p.net, net, &self.nat);
                if !out.tx.traces.is_empty() {
                    out.trace(GATEWAY_PORT, Dir::In, &frame);
                }
                if let Some(g) = &net.gateway {
                    let c = g.stats.worker(self.index);
                    bump(&c.rx_packets, 1);
                    bump(&c.rx_bytes, frame.wire_len() as u64);
                    if let Action::Drop(why) = action {
                        c.drop(why);
                    }
                }
                egress::run(action, &cx, net.pipeline.members(action, &net.members), &mut out, &mut NoObserve);
                to_services += out.defer();
                if !touched.contains(&p.net) {
                    touched.push(p.net);
                }
            }
            self.services.recycle(p);
        }
        for &id in &touched {
            if let Some(net) = self.nets.get(id as usize).and_then(Option::as_ref) {
                flush_ports(&mut self.tx, &net.members);
            }
        }
        touched.clear();
        self.touched = touched;
        if to_services > 0 {
            self.services.notify_services();
        }
        self.report_faults();
        Some(n)
    }
}

/// Hand the kernel what `members` and the ports routed to have queued: one send() each.
fn flush_ports(tx: &mut TxSide, members: &[PortId]) {
    for &m in members.iter().chain(tx.routed_to.iter()) {
        if let Some(p) = tx.ports.get_mut(m as usize).and_then(Option::as_mut) {
            if let Err(TxError::Fault(e)) = p.queue.flush() {
                tx.faulted.push((m, e.to_string()));
            }
        }
    }
    tx.routed_to.clear();
}

/// Decide every frame of a batch (then `send` sends them): the pipeline for all first,
/// learning as it goes, with the table's lines prefetched for the whole batch.
#[inline]
#[allow(clippy::too_many_arguments)]
fn decide(
    net: &LocalNet,
    env: &Env,
    nat: &mut Nat,
    batch: &[RxFrame],
    in_id: PortId,
    inp: &PortShared,
    worker: usize,
    actions: &mut Vec<Action>,
) {
    let now = clock::now();
    let c = inp.stats.worker(worker);
    let max_frame = inp.max_frame();
    net.pipeline.prefetch(batch);
    actions.clear();
    for f in batch {
        bump(&c.rx_packets, 1);
        bump(&c.rx_bytes, f.wire_len() as u64);
        let cx = FrameCx { frame: f, in_port: in_id, max_frame, now };
        let a = net.pipeline.run(env, nat, &cx, &mut NoObserve);
        if let Action::Drop(why) = a {
            c.drop(why);
        }
        actions.push(a);
    }
}

/// Send a decided batch: the egress stage for each frame.
#[inline]
fn send(net: &LocalNet, batch: &[RxFrame], in_id: PortId, max_frame: usize, actions: &[Action], out: &mut Out) {
    if !out.tx.traces.is_empty() {
        for f in batch {
            out.trace(in_id, Dir::In, f);
        }
    }
    let now = clock::now();
    for (f, &a) in batch.iter().zip(actions.iter()) {
        let f = net.pipeline.egress_view(f, in_id);
        let cx = FrameCx { frame: &f, in_port: in_id, max_frame, now };
        egress::run(a, &cx, net.pipeline.members(a, &net.members), out, &mut NoObserve);
    }
}

/// A worker's egress for one batch: its queues, its counters, the gateway queue and the
/// traces.
struct Out<'a> {
    tx: &'a mut TxSide,
    worker: usize,
    services: &'a Link,
    net_id: NetId,
    pipeline: &'a Pipeline,
    gateway: Option<&'a PortShared>,
    /// The route stage's edits of this batch.
    nat: &'a Nat,
    /// Frames queued for the services thread in this batch.
    to_services: usize,
}

impl<'a> Out<'a> {
    fn new(
        tx: &'a mut TxSide,
        worker: usize,
        services: &'a Link,
        net_id: NetId,
        net: &'a LocalNet,
        nat: &'a Nat,
    ) -> Out<'a> {
        Out {
            tx,
            worker,
            services,
            net_id,
            pipeline: &net.pipeline,
            gateway: net.gateway.as_deref(),
            nat,
            to_services: 0,
        }
    }

    /// End of batch: push out what it queued on each member port (and the ports it routed
    /// frames to), wake the services thread if it got frames.
    fn finish(self, members: &[PortId]) {
        flush_ports(self.tx, members);
        if self.to_services > 0 {
            self.services.notify_services();
        }
    }

    /// Leave the flush to the caller (several frames, one send per port); how many frames
    /// were queued for the services thread.
    fn defer(self) -> usize {
        self.to_services
    }

    /// Show the traces the frame as it is on the wire: an offloaded VLAN tag goes back in.
    #[inline(never)]
    fn trace(&mut self, port: PortId, dir: Dir, f: &RxFrame) {
        let d = f.data();
        let scratch = &mut self.tx.scratch;
        let wire = match &f.tag {
            Some(tag) if d.len() >= 12 => {
                scratch.clear();
                scratch.extend_from_slice(&d[..12]);
                scratch.extend_from_slice(tag);
                scratch.extend_from_slice(&d[12..]);
                &scratch[..]
            }
            _ => d,
        };
        trace::offer_all(&self.tx.traces, self.net_id, port, dir, wire);
    }
}

impl Sink for Out<'_> {
    #[inline]
    fn max_frame(&self, port: PortId) -> Option<usize> {
        let p = self.tx.ports.get(port as usize)?.as_ref()?;
        (!p.failed).then(|| p.shared.max_frame())
    }

    #[inline]
    fn send(&mut self, out: PortId, f: &RxFrame) {
        let untagged;
        let f = if f.tag.is_some() && self.pipeline.untags(out) {
            untagged = f.with_tag(None);
            &untagged
        } else {
            f
        };
        let Some(p) = self.tx.ports.get_mut(out as usize).and_then(Option::as_mut) else { return };
        let c = p.shared.stats.worker(self.worker);
        match f.transmit(&mut p.queue) {
            Ok(()) => {
                bump(&c.tx_packets, 1);
                bump(&c.tx_bytes, f.wire_len() as u64);
                if !self.tx.traces.is_empty() {
                    self.trace(out, Dir::Out, f);
                }
            }
            Err(TxError::Full) => c.drop(DropReason::TxError),
            Err(TxError::Fault(e)) => {
                c.drop(DropReason::TxError);
                self.tx.faulted.push((out, e.to_string()));
            }
        }
    }

    #[inline]
    fn send_routed(&mut self, out: PortId, f: &RxFrame, edit: u16) {
        let e = self.nat.edit(edit);
        let (d, n) = (f.data(), e.len());
        let tx = &mut *self.tx;
        let Some(p) = tx.ports.get_mut(out as usize).and_then(Option::as_mut) else { return };
        let c = p.shared.stats.worker(self.worker);
        if d.len() < n || n > MAX_EDIT {
            c.drop(DropReason::NatUnsupported);
            return;
        }
        e.write(d, &mut tx.edited[..n]);
        match p.queue.transmit(&f.vnet, &[&tx.edited[..n], &d[n..]]) {
            Ok(()) => {
                bump(&c.tx_packets, 1);
                bump(&c.tx_bytes, f.wire_len() as u64);
                if !tx.routed_to.contains(&out) {
                    tx.routed_to.push(out);
                }
                if !tx.traces.is_empty() {
                    let mut whole = tx.edited[..n].to_vec();
                    whole.extend_from_slice(&d[n..]);
                    trace::offer_all(&tx.traces, self.net_id, out, Dir::Out, &whole);
                }
            }
            Err(TxError::Full) => c.drop(DropReason::TxError),
            Err(TxError::Fault(e)) => {
                c.drop(DropReason::TxError);
                tx.faulted.push((out, e.to_string()));
            }
        }
    }

    #[inline]
    fn drop(&mut self, port: PortId, why: DropReason) {
        if let Some(p) = self.tx.ports.get(port as usize).and_then(Option::as_ref) {
            p.shared.stats.worker(self.worker).drop(why);
        }
    }

    fn to_gateway(&mut self, f: &RxFrame) {
        let queued = self.services.to_services(self.net_id, self.worker, f.data());
        if let Some(g) = self.gateway {
            let c = g.stats.worker(self.worker);
            if queued {
                bump(&c.tx_packets, 1);
                bump(&c.tx_bytes, f.wire_len() as u64);
            } else {
                c.drop(DropReason::GatewayBusy);
            }
        }
        if queued {
            self.to_services += 1;
            if !self.tx.traces.is_empty() {
                self.trace(GATEWAY_PORT, Dir::Out, f);
            }
        }
    }
}

/// The pending error of a socket (SO_ERROR, which clears it); None when there is none to
/// read (not a socket: a TAP device that went away).
fn socket_error(fd: i32) -> Option<std::io::Error> {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are live and sized for SO_ERROR's int.
    let r = unsafe {
        libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR, &mut err as *mut _ as *mut libc::c_void, &mut len)
    };
    (r == 0).then(|| std::io::Error::from_raw_os_error(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fdb::MacTable;
    use crate::frame::{max_frame_for_mtu, test_frame};
    use crate::pipeline::Bridge;
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
        let waker = Arc::new(Waker::new().unwrap());
        let link = Arc::new(Link::new(vec![waker.clone()]));
        let mut w = Worker::new(0, rx, waker, faults, link);
        let table = Arc::new(MacTable::new(1024));
        let pipeline = Pipeline::Bridge(Bridge { table: table.clone(), gateway: None, icc: true });
        tx.send(Cmd::AddNetwork { net: 0, pipeline, gateway: None }).unwrap();
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

    #[test]
    fn the_batch_vector_keeps_its_allocation() {
        let v: Vec<RxFrame<'static>> = Vec::with_capacity(BATCH);
        let data = vec![0u8; 60];
        let mut b = recycle(v);
        let ptr = b.as_ptr() as usize;
        b.push(RxFrame::new(VnetHdr::default(), &data, None));
        let back: Vec<RxFrame<'static>> = recycle(b);
        assert_eq!((back.as_ptr() as usize, back.capacity()), (ptr, BATCH));
    }
}
