//! Ports: where frames enter and leave the switch. A port has one queue per worker; a worker
//! reads and writes only its own queues, so no queue is ever shared between threads.

pub mod afpacket;
pub mod memory;
pub mod steer;
pub mod tap;

use crate::frame::{max_frame_for_mtu, VnetHdr, MAX_FRAME, VLAN_HLEN, VNET_HDR_LEN};
use crate::netdev;
use crate::stats::PortStats;
use serde::{Deserialize, Serialize};
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// How a port reaches its interface.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PortKind {
    /// An existing interface (a veth end, a NIC) read through AF_PACKET rings.
    AfPacket,
    /// A TAP device, created by the switch unless it already existed.
    Tap,
    /// The uplink: an existing interface through AF_PACKET, its frames steered to the
    /// worker whose NAT holds their session (`steer`).
    Uplink,
}

impl PortKind {
    pub fn name(self) -> &'static str {
        match self {
            PortKind::AfPacket => "af_packet",
            PortKind::Tap => "tap",
            PortKind::Uplink => "uplink",
        }
    }
}

/// What the workers share about a port: its counters and its largest frame.
pub struct PortShared {
    pub stats: PortStats,
    max_frame: AtomicUsize,
}

impl PortShared {
    pub fn new(workers: usize, max_frame: usize) -> PortShared {
        PortShared { stats: PortStats::new(workers), max_frame: AtomicUsize::new(max_frame) }
    }

    /// The largest frame (VLAN tag included) the port takes or gives, GSO frames aside.
    #[inline]
    pub fn max_frame(&self) -> usize {
        self.max_frame.load(Relaxed)
    }

    /// Follow the interface's MTU (on the kernel's link event for it).
    pub fn set_mtu(&self, mtu: u32) {
        self.max_frame.store(max_frame_for_mtu(mtu), Relaxed);
    }
}

/// A received frame: the virtio header, the bytes (borrowed from the queue's ring slot or
/// from the worker's buffers until the queue's `release`), and the VLAN tag the kernel took
/// out, if it did.
#[derive(Clone, Copy)]
pub struct RxFrame<'a> {
    pub vnet: VnetHdr,
    data: &'a [u8],
    pub tag: Option<[u8; 4]>,
    pub truncated: bool,
}

impl<'a> RxFrame<'a> {
    pub fn new(vnet: VnetHdr, data: &'a [u8], tag: Option<[u8; 4]>) -> RxFrame<'a> {
        RxFrame { vnet, data, tag, truncated: false }
    }

    /// The frame's bytes as received (without the offloaded VLAN tag).
    #[inline]
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The same frame with another VLAN tag (None: without one).
    #[inline]
    pub fn with_tag(&self, tag: Option<[u8; 4]>) -> RxFrame<'a> {
        RxFrame { tag, ..*self }
    }

    /// Length on the wire, VLAN tag included.
    #[inline]
    pub fn wire_len(&self) -> usize {
        self.data.len() + if self.tag.is_some() { VLAN_HLEN } else { 0 }
    }

    /// Send the frame on `q`, putting an offloaded VLAN tag back where it belongs.
    pub fn transmit(&self, q: &mut Queue) -> Result<(), TxError> {
        let d = self.data;
        match &self.tag {
            None => q.transmit(&self.vnet, &[d]),
            Some(tag) if d.len() >= 12 => q.transmit(&self.vnet.shifted(VLAN_HLEN as u16), &[&d[..12], tag, &d[12..]]),
            Some(_) => q.transmit(&self.vnet, &[d]),
        }
    }
}

/// An empty batch with a new lifetime, keeping its allocation: a worker reuses one vector
/// for every batch although each batch borrows a different queue. (An in-place collect of
/// an empty vector: no element is ever converted, the buffer is reused.)
pub fn recycle<'b>(mut v: Vec<RxFrame<'_>>) -> Vec<RxFrame<'b>> {
    v.clear();
    v.into_iter().map(|_| unreachable!("the vector is empty")).collect()
}

/// An error a port recovers from by itself: its link is down (it comes back up, as a
/// bridge port does), or a buffer is full for now. Anything else means the port is broken.
pub fn transient(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(0)
            | Some(libc::ENETDOWN)
            | Some(libc::EAGAIN)
            | Some(libc::ENOBUFS)
            | Some(libc::EINTR)
            | Some(libc::ENOMEM)
    )
}

pub enum TxError {
    /// No room right now (ring full, device busy): the frame is dropped and counted.
    Full,
    /// The interface is gone or broken: the port is removed.
    Fault(io::Error),
}

/// Each worker's receive buffers: a TAP read or an oversize AF_PACKET frame lands here.
/// Allocated once, at worker start, never on the hot path.
pub struct WorkerBuffers {
    bufs: Vec<Box<[u8]>>,
}

impl WorkerBuffers {
    pub fn new(batch: usize) -> WorkerBuffers {
        WorkerBuffers { bufs: (0..batch).map(|_| vec![0u8; VNET_HDR_LEN + MAX_FRAME].into_boxed_slice()).collect() }
    }

    /// The buffers, each to be lent to at most one frame of a batch.
    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Box<[u8]>> {
        self.bufs.iter_mut()
    }
}

/// One worker's queue on a port.
pub enum Queue {
    AfPacket(afpacket::AfPacketQueue),
    Tap(tap::TapQueue),
    Memory(memory::MemoryQueue),
}

impl Queue {
    pub fn fd(&self) -> RawFd {
        match self {
            Queue::AfPacket(q) => q.fd(),
            Queue::Tap(q) => q.fd(),
            Queue::Memory(_) => -1, // poll() skips it
        }
    }

    /// Receive up to `max` frames into `out`. They borrow the queue and `bufs` until they are
    /// dropped; only then can `release` give their slots back.
    pub fn receive<'q>(
        &'q mut self,
        out: &mut Vec<RxFrame<'q>>,
        max: usize,
        bufs: &'q mut WorkerBuffers,
    ) -> io::Result<()> {
        match self {
            Queue::AfPacket(q) => q.receive(out, max, bufs),
            Queue::Tap(q) => q.receive(out, max, bufs),
            Queue::Memory(q) => q.receive(out, max, bufs),
        }
    }

    /// Whether `receive` may find frames: false only when it certainly would not (an AF_PACKET
    /// ring whose next slot is the kernel's; a TAP the worker's epoll has not called ready
    /// since it was drained), so an idle port costs no syscall per pass.
    #[inline]
    pub fn may_have_frames(&self) -> bool {
        match self {
            Queue::AfPacket(q) => q.may_have_frames(),
            Queue::Tap(q) => !q.drained,
            Queue::Memory(_) => true,
        }
    }

    /// A TAP queue: whether it is drained (read only once ready again); false for the rest.
    pub fn set_drained(&mut self, drained: bool) {
        if let Queue::Tap(q) = self {
            q.drained = drained;
        }
    }

    pub fn is_drained(&self) -> bool {
        matches!(self, Queue::Tap(q) if q.drained)
    }

    pub fn is_tap(&self) -> bool {
        matches!(self, Queue::Tap(_))
    }

    /// Frames the kernel dropped before this queue read them, since the last call.
    pub fn take_drops(&self) -> u64 {
        match self {
            Queue::AfPacket(q) => q.take_drops(),
            Queue::Tap(_) | Queue::Memory(_) => 0,
        }
    }

    /// Return the frames of the last `receive` to the kernel.
    pub fn release(&mut self) {
        if let Queue::AfPacket(q) = self {
            q.release()
        }
    }

    pub fn transmit(&mut self, vnet: &VnetHdr, parts: &[&[u8]]) -> Result<(), TxError> {
        match self {
            Queue::AfPacket(q) => q.transmit(vnet, parts),
            Queue::Tap(q) => q.transmit(vnet, parts),
            Queue::Memory(q) => q.transmit(vnet, parts),
        }
    }

    /// Push out what `transmit` queued (AF_PACKET sends a whole ring batch in one syscall).
    pub fn flush(&mut self) -> Result<(), TxError> {
        match self {
            Queue::AfPacket(q) => q.flush(),
            Queue::Tap(_) | Queue::Memory(_) => Ok(()),
        }
    }
}

/// An opened port: a queue per worker and what the control plane needs to know of it.
pub struct Opened {
    pub queues: Vec<Queue>,
    /// Queues that receive. A single-queue TAP shared by `dup` is read by one worker only,
    /// so a flow's frames are never reordered.
    pub rx_queues: usize,
    pub ifindex: Option<u32>,
    /// The largest frame it carries: from the MTU for AF_PACKET ports; for a TAP, whose MTU
    /// we cannot see once it moves to another namespace, the largest frame there is.
    pub max_frame: usize,
    /// The switch created this TAP (and so removes it).
    pub created: bool,
}

/// Queues being closed in the background (see `close_in_background`).
static CLOSING: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>> = std::sync::Mutex::new(Vec::new());

/// Close a queue on a thread of its own. Closing an AF_PACKET socket with rings waits out
/// several RCU grace periods in the kernel (tens of ms): a worker must not stall for that,
/// and a daemon closing a thousand sockets at once lets the waits overlap.
pub fn close_in_background(q: Queue) {
    let mut closing = CLOSING.lock().unwrap_or_else(|e| e.into_inner());
    closing.retain(|h| !h.is_finished());
    // With no thread to be had, the queue is dropped with the closure, here.
    if let Ok(h) = std::thread::Builder::new().name("close".into()).spawn(move || drop(q)) {
        closing.push(h);
    }
}

/// Wait until every queue handed to `close_in_background` is closed.
pub fn wait_for_closes() {
    let handles = std::mem::take(&mut *CLOSING.lock().unwrap_or_else(|e| e.into_inner()));
    for h in handles {
        let _ = h.join();
    }
}

/// The uplink's fanout program for `workers` workers and these published ports.
pub fn uplink_program(workers: usize, published: &[steer::Published]) -> Vec<libc::sock_filter> {
    steer::by_outside_port(nat_slices(workers), published)
}

/// How the workers split the NAT's outside ports.
pub fn nat_slices(workers: usize) -> steer::Slices {
    let split = vswitch_nat::ports::PortSplit::new(crate::worker::NAT_PORTS, workers);
    steer::Slices { lo: *split.range(0).start(), per_worker: split.range(0).len() as u32 }
}

/// Open port `name` of `kind` with one queue for each of `workers` workers; with `pin`, an
/// AF_PACKET port's frames all go to that worker (an endpoint that publishes ports: its
/// sessions live there).
pub fn open(name: &str, kind: PortKind, workers: usize, pin: Option<usize>) -> io::Result<Opened> {
    match kind {
        PortKind::AfPacket | PortKind::Uplink => {
            let ifindex = netdev::ifindex(name)
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface named '{name}'")))?;
            let mtu = netdev::mtu(name)?;
            // In parallel: each ring's setup waits out a grace period in the kernel.
            let blocks = afpacket::rx_blocks(workers);
            let opened: Vec<io::Result<afpacket::AfPacketQueue>> = std::thread::scope(|s| {
                let hs: Vec<_> =
                    (0..workers).map(|_| s.spawn(move || afpacket::AfPacketQueue::open(ifindex, blocks))).collect();
                hs.into_iter()
                    .map(|h| h.join().unwrap_or_else(|_| Err(io::Error::other("opening a queue panicked"))))
                    .collect()
            });
            let mut fanout = match (kind, pin) {
                (PortKind::Uplink, _) => afpacket::Fanout::steered(uplink_program(workers, &[])),
                (_, Some(w)) => afpacket::Fanout::steered(steer::pinned(w as u32, None)),
                _ => afpacket::Fanout::default(),
            };
            let mut queues = Vec::with_capacity(workers);
            for q in opened {
                let q = q?;
                if workers > 1 {
                    q.join_fanout(&mut fanout)?;
                }
                queues.push(Queue::AfPacket(q));
            }
            Ok(Opened {
                queues,
                rx_queues: workers,
                ifindex: Some(ifindex),
                max_frame: max_frame_for_mtu(mtu),
                created: false,
            })
        }
        PortKind::Tap => {
            let t = tap::open(name, workers)?;
            // A dup'd single queue is one kernel queue: only the first worker reads it.
            let rx_queues = if t.multiqueue { workers } else { 1 };
            let queues = t.queues.into_iter().map(Queue::Tap).collect();
            Ok(Opened { queues, rx_queues, ifindex: None, max_frame: MAX_FRAME, created: t.created })
        }
    }
}
