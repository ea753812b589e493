//! AF_PACKET port queue: one socket per worker per interface with mmap'd TPACKET_V2 RX and TX
//! rings and the virtio-net header, so 64 KB GSO frames cross the switch whole.
//!
//! Why V2 and not V3: V3 hands user space whole blocks, retired when full or after a timeout
//! (at least 1 ms), which adds that much latency at low rates. V2 hands over every frame.
//! RX slots are 2 KB; a frame that does not fit (a GSO super-frame, a jumbo frame) is also
//! queued whole on the socket by PACKET_COPY_THRESH, and we read that copy with recvmsg.
//! Sockets of the same port in different workers share the traffic through PACKET_FANOUT.
//!
//! Small frames leave through the TX ring, a batch per send(). Big ones (GSO super-frames,
//! jumbo frames) leave through a second, ring-less socket with one sendmsg straight from the
//! receive buffer: the kernel copies ring frags it hands to another namespace anyway, so the
//! ring would cost two copies of 64 KB where sendmsg costs one.

use super::{RxFrame, TxError, WorkerBuffers};
use crate::frame::{VnetHdr, VNET_HDR_LEN};
use crate::netdev::setsockopt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr;
use std::sync::atomic::{fence, Ordering};

use libc::{
    tpacket2_hdr as Tpacket2Hdr, tpacket_auxdata as AuxData, tpacket_req as TpacketReq, ETH_P_ALL,
    PACKET_ADD_MEMBERSHIP, PACKET_AUXDATA, PACKET_COPY_THRESH, PACKET_FANOUT, PACKET_FANOUT_FLAG_UNIQUEID,
    PACKET_FANOUT_HASH, PACKET_IGNORE_OUTGOING, PACKET_LOSS, PACKET_MR_PROMISC, PACKET_OUTGOING, PACKET_QDISC_BYPASS,
    PACKET_RX_RING, PACKET_TX_RING, PACKET_VERSION, PACKET_VNET_HDR, SOL_PACKET, TP_STATUS_AVAILABLE, TP_STATUS_COPY,
    TP_STATUS_KERNEL, TP_STATUS_SEND_REQUEST, TP_STATUS_USER, TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID,
    TP_STATUS_WRONG_FORMAT,
};

const TPACKET_V2: i32 = libc::tpacket_versions::TPACKET_V2 as i32;

/// TPACKET_ALIGN(sizeof(tpacket2_hdr)): where sockaddr_ll starts in an RX slot and where
/// frame data starts in a TX slot.
const HDR_ALIGNED: usize = libc::TPACKET2_HDRLEN - std::mem::size_of::<libc::sockaddr_ll>();
const _: () = assert!(HDR_ALIGNED == 32);
/// Offset of sll_pkttype in the sockaddr_ll that follows the header.
const PKTTYPE_OFF: usize = HDR_ALIGNED + std::mem::offset_of!(libc::sockaddr_ll, sll_pkttype);

/// A ring of `blocks` blocks of `block` bytes, cut into slots of `frame` bytes.
fn ring_req(block: usize, blocks: usize, frame: usize) -> TpacketReq {
    let n = |v: usize| v as u32;
    TpacketReq {
        tp_block_size: n(block),
        tp_block_nr: n(blocks),
        tp_frame_size: n(frame),
        tp_frame_nr: n(block / frame * blocks),
    }
}

// Ring memory is the kernel's, pinned, and paid per port per worker: it is what decides how
// many ports a host can have. RX: slots of 2 KB (an MTU-1500 frame plus headers fits; bigger
// ones take the copy path), 3 MB per port shared out among the workers' sockets (fanout
// splits the traffic the same way), at least 512 KB (256 slots) each. TX: 128 slots of 2 KB
// per socket: with QDISC_BYPASS each flush sends what is queued at once, so the ring never
// holds more than a batch (64); bigger frames take sendmsg.
const RX_FRAME: usize = 2048;
const RX_BLOCK: usize = 1 << 18;
const RX_BLOCKS_PER_PORT: usize = 12;
const RX_MIN_BLOCKS: usize = 2;
const TX_FRAME: usize = 2048;
const TX_BLOCK: usize = 1 << 18;
const TX_BLOCKS: usize = 1;
const _: () = assert!(TX_FRAME >= HDR_ALIGNED + VNET_HDR_LEN + RING_TX_MAX);

/// The RX ring blocks of each of a port's `workers` sockets.
pub fn rx_blocks(workers: usize) -> usize {
    (RX_BLOCKS_PER_PORT / workers.max(1)).max(RX_MIN_BLOCKS)
}

/// Ring memory one port costs with `workers` workers, in bytes.
pub fn ring_bytes(workers: usize) -> usize {
    workers * (rx_blocks(workers) * RX_BLOCK + TX_BLOCKS * TX_BLOCK)
}

struct Ring {
    base: *mut u8,
    frame_size: usize,
    frames: usize,
    head: usize,
}

impl Ring {
    fn new(base: *mut u8, block: usize, blocks: usize, frame: usize) -> Ring {
        Ring { base, frame_size: frame, frames: block / frame * blocks, head: 0 }
    }

    /// Slot `i` after the head. Frames never straddle blocks, so slot addresses step by
    /// frame size within a block and jump at block boundaries.
    fn slot(&self, i: usize, block: usize) -> *mut u8 {
        let n = (self.head + i) % self.frames;
        let per_block = block / self.frame_size;
        // SAFETY: the offset stays inside the ring's mapping (slot < frames, blocks laid out back to back).
        unsafe { self.base.add(n / per_block * block + n % per_block * self.frame_size) }
    }
}

fn status(slot: *mut u8) -> u32 {
    // SAFETY: `slot` is a slot header inside the ring mapping; the kernel writes it concurrently, hence volatile.
    let s = unsafe { ptr::read_volatile(slot as *const u32) };
    fence(Ordering::Acquire);
    s
}

fn set_status(slot: *mut u8, s: u32) {
    fence(Ordering::Release);
    // SAFETY: as in `status`.
    unsafe { ptr::write_volatile(slot as *mut u32, s) };
}

/// How the sockets of one port share its traffic across workers: by flow hash, or by a
/// classic BPF program that names the socket (`steer`).
#[derive(Default)]
pub struct Fanout {
    id: Option<u16>,
    program: Option<Vec<libc::sock_filter>>,
}

impl Fanout {
    pub fn steered(program: Vec<libc::sock_filter>) -> Fanout {
        Fanout { id: None, program: Some(program) }
    }

    fn mode(&self) -> u32 {
        if self.program.is_some() {
            libc::PACKET_FANOUT_CBPF
        } else {
            PACKET_FANOUT_HASH
        }
    }
}

/// Frames above this many bytes go out by sendmsg, not through the TX ring.
const RING_TX_MAX: usize = TX_FRAME - HDR_ALIGNED - VNET_HDR_LEN;

pub struct AfPacketQueue {
    fd: OwnedFd,
    /// Ring-less socket on the same interface for big frames (receives nothing: protocol 0).
    direct: OwnedFd,
    map: *mut u8,
    map_len: usize,
    rx: Ring,
    tx: Ring,
    /// RX slots handed to the worker and not yet given back.
    rx_held: usize,
    tx_pending: usize,
}

// SAFETY: the rings are owned by this queue, and one worker thread owns the queue.
unsafe impl Send for AfPacketQueue {}

fn os_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(os_err("socket(AF_PACKET)"));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn bind(fd: &OwnedFd, ifindex: u32, protocol: u16) -> io::Result<()> {
    // SAFETY: sockaddr_ll is plain old data; all zeros is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = protocol.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a live sockaddr_ll of the size we pass.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sll as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        return Err(os_err("bind(AF_PACKET)"));
    }
    Ok(())
}

/// The socket for big frames: virtio header, no qdisc, bound so it receives nothing.
fn direct_socket(ifindex: u32) -> io::Result<OwnedFd> {
    let fd = packet_socket()?;
    let one: i32 = 1;
    setsockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, &one, "PACKET_VNET_HDR")?;
    setsockopt(&fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, "PACKET_QDISC_BYPASS")?;
    bind(&fd, ifindex, 0)?;
    Ok(fd)
}

impl AfPacketQueue {
    /// Open a queue on interface `ifindex`; with `fanout`, join the port's fanout group.
    ///
    /// Setting up each ring waits for an RCU grace period in the kernel (10-20 ms): open a
    /// port's queues in parallel (`port::open` does), and join them to the fanout group after.
    pub fn open(ifindex: u32, rx_blocks: usize) -> io::Result<AfPacketQueue> {
        let fd = packet_socket()?;
        let one: i32 = 1;
        setsockopt(&fd, SOL_PACKET, PACKET_VERSION, &TPACKET_V2, "PACKET_VERSION")?;
        setsockopt(&fd, SOL_PACKET, PACKET_VNET_HDR, &one, "PACKET_VNET_HDR")?;
        setsockopt(&fd, SOL_PACKET, PACKET_QDISC_BYPASS, &one, "PACKET_QDISC_BYPASS")?;
        setsockopt(&fd, SOL_PACKET, PACKET_LOSS, &one, "PACKET_LOSS")?;
        setsockopt(&fd, SOL_PACKET, PACKET_AUXDATA, &one, "PACKET_AUXDATA")?;
        // Frames the kernel sends out of this interface (not ours: we bypass the taps) are
        // not traffic to switch.
        setsockopt(&fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, "PACKET_IGNORE_OUTGOING")?;
        setsockopt(&fd, SOL_PACKET, PACKET_COPY_THRESH, &one, "PACKET_COPY_THRESH")?;
        let rcvbuf: i32 = 32 << 20;
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &rcvbuf, "SO_RCVBUFFORCE")?;
        let rx_req = ring_req(RX_BLOCK, rx_blocks, RX_FRAME);
        setsockopt(&fd, SOL_PACKET, PACKET_RX_RING, &rx_req, "PACKET_RX_RING")?;
        let tx_req = ring_req(TX_BLOCK, TX_BLOCKS, TX_FRAME);
        setsockopt(&fd, SOL_PACKET, PACKET_TX_RING, &tx_req, "PACKET_TX_RING")?;
        let rx_len = RX_BLOCK * rx_blocks;
        let map_len = rx_len + TX_BLOCK * TX_BLOCKS;
        // SAFETY: maps the rings the kernel just set up on this socket; the result is checked.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(os_err("mmap(packet rings)"));
        }
        let map = map as *mut u8;
        let q = AfPacketQueue {
            fd,
            direct: direct_socket(ifindex)?,
            map,
            map_len,
            rx: Ring::new(map, RX_BLOCK, rx_blocks, RX_FRAME),
            // SAFETY: the TX ring starts right after the RX ring inside the one mapping.
            tx: Ring::new(unsafe { map.add(rx_len) }, TX_BLOCK, TX_BLOCKS, TX_FRAME),
            rx_held: 0,
            tx_pending: 0,
        };
        bind(&q.fd, ifindex, ETH_P_ALL as u16)?;
        let mreq = libc::packet_mreq {
            mr_ifindex: ifindex as i32,
            mr_type: PACKET_MR_PROMISC as u16,
            mr_alen: 0,
            mr_address: [0; 8],
        };
        setsockopt(&q.fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mreq, "PACKET_ADD_MEMBERSHIP(promisc)")?;
        Ok(q)
    }

    /// Join the port's fanout group (the first queue makes it).
    pub fn join_fanout(&self, f: &mut Fanout) -> io::Result<()> {
        match f.id {
            Some(id) => setsockopt(&self.fd, SOL_PACKET, PACKET_FANOUT, &(id as u32 | f.mode() << 16), "PACKET_FANOUT"),
            None => {
                // Let the kernel pick an id no other process uses, then share it.
                let v = (f.mode() | PACKET_FANOUT_FLAG_UNIQUEID) << 16;
                setsockopt(&self.fd, SOL_PACKET, PACKET_FANOUT, &v, "PACKET_FANOUT(unique id)")?;
                let mut got: u32 = 0;
                let mut len = 4u32;
                // SAFETY: `got` and `len` are live and sized for the u32 the kernel writes.
                let r = unsafe {
                    libc::getsockopt(
                        self.fd.as_raw_fd(),
                        SOL_PACKET,
                        PACKET_FANOUT,
                        &mut got as *mut u32 as *mut libc::c_void,
                        &mut len,
                    )
                };
                if r < 0 {
                    return Err(os_err("getsockopt(PACKET_FANOUT)"));
                }
                f.id = Some(got as u16);
                if let Some(p) = &f.program {
                    // The group's program, given once through its first socket.
                    let prog = libc::sock_fprog { len: p.len() as u16, filter: p.as_ptr() as *mut libc::sock_filter };
                    setsockopt(&self.fd, SOL_PACKET, libc::PACKET_FANOUT_DATA, &prog, "PACKET_FANOUT_DATA")?;
                }
                Ok(())
            }
        }
    }

    /// Replace the program of a steered fanout group this queue belongs to.
    pub fn set_fanout_program(fd: &OwnedFd, program: &[libc::sock_filter]) -> io::Result<()> {
        let prog = libc::sock_fprog { len: program.len() as u16, filter: program.as_ptr() as *mut libc::sock_filter };
        setsockopt(fd, SOL_PACKET, libc::PACKET_FANOUT_DATA, &prog, "PACKET_FANOUT_DATA")
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Hand up to `max` received frames to the worker. They borrow the ring (or a buffer of
    /// `bufs`) until they are dropped; `release` then gives the slots back.
    pub fn receive<'q>(
        &'q mut self,
        out: &mut Vec<RxFrame<'q>>,
        max: usize,
        bufs: &'q mut WorkerBuffers,
    ) -> io::Result<()> {
        debug_assert_eq!(self.rx_held, 0);
        let mut spare = bufs.iter_mut();
        while out.len() < max {
            let slot = self.rx.slot(self.rx_held, RX_BLOCK);
            let st = status(slot);
            if st & TP_STATUS_USER == 0 {
                break;
            }
            if st & TP_STATUS_COPY != 0 && spare.len() == 0 {
                break; // its copy waits on the socket: read it with the slot, next batch
            }
            self.rx_held += 1;
            // SAFETY: the slot is ours (TP_STATUS_USER) until `release`, which needs `&mut
            // self` and so waits until every frame borrowed from it here is gone. Its header
            // and the sockaddr_ll after it lie inside the slot.
            let h = unsafe { &*(slot as *const Tpacket2Hdr) };
            // SAFETY: sll_pkttype lies inside the slot (after the header, before the frame).
            let outgoing = unsafe { *slot.add(PKTTYPE_OFF) } == PACKET_OUTGOING;
            let tag = vlan_tag(st, h.tp_vlan_tci, h.tp_vlan_tpid);
            if st & TP_STATUS_COPY != 0 {
                // Too big for the slot: the whole frame waits on the socket queue.
                let buf = spare.next().expect("checked above");
                match self.recv_copy(buf)? {
                    Some((len, tag)) if !outgoing => {
                        let buf: &'q [u8] = buf;
                        out.push(RxFrame::new(VnetHdr::from_slice(buf), &buf[VNET_HDR_LEN..len], tag))
                    }
                    _ => continue,
                }
            } else if outgoing {
                continue; // never switch what was sent out of this port
            } else {
                let (mac, snap) = (h.tp_mac as usize, h.tp_snaplen as usize);
                if mac < VNET_HDR_LEN || mac + snap > RX_FRAME {
                    continue; // not a slot the kernel would write: never read outside it
                }
                // SAFETY: as above; the frame and the virtio header before it lie inside
                // the slot (checked just now against the slot size).
                let (vnet, data) = unsafe {
                    let m = slot.add(mac);
                    (
                        VnetHdr::from_slice(std::slice::from_raw_parts(m.sub(VNET_HDR_LEN), VNET_HDR_LEN)),
                        std::slice::from_raw_parts::<'q, u8>(m, snap),
                    )
                };
                let mut f = RxFrame::new(vnet, data, tag);
                f.truncated = h.tp_snaplen < h.tp_len;
                out.push(f);
            }
        }
        Ok(())
    }

    /// Frames the kernel dropped because the RX ring was full, since the last call
    /// (PACKET_STATISTICS; reading resets the kernel's counters).
    pub fn take_drops(&self) -> u64 {
        let mut st = libc::tpacket_stats { tp_packets: 0, tp_drops: 0 };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `st` and `len` are live and sized for the tpacket_stats the kernel writes.
        let r = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                SOL_PACKET,
                libc::PACKET_STATISTICS,
                &mut st as *mut _ as *mut libc::c_void,
                &mut len,
            )
        };
        if r == 0 {
            st.tp_drops as u64
        } else {
            0
        }
    }

    /// Whether the next RX slot holds a frame for us.
    #[inline]
    pub fn may_have_frames(&self) -> bool {
        status(self.rx.slot(0, RX_BLOCK)) & TP_STATUS_USER != 0
    }

    /// Read one whole frame (virtio header first) queued by PACKET_COPY_THRESH.
    fn recv_copy(&self, buf: &mut [u8]) -> io::Result<Option<(usize, Option<[u8; 4]>)>> {
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
        let mut cbuf = [0u64; 8];
        // SAFETY: msghdr is plain old data; all zeros is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = std::mem::size_of_val(&cbuf);
        // SAFETY: `msg` points at `iov` (into `buf`) and `cbuf`, alive for the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
        if n < 0 {
            let e = io::Error::last_os_error();
            return if super::transient(&e) { Ok(None) } else { Err(e) };
        }
        let n = n as usize;
        if n > buf.len() || n < VNET_HDR_LEN {
            return Ok(None);
        }
        let mut tag = None;
        // SAFETY: walking the control messages the kernel wrote into `cbuf`, with its macros.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    let a = ptr::read_unaligned(libc::CMSG_DATA(c) as *const AuxData);
                    tag = vlan_tag(a.tp_status, a.tp_vlan_tci, a.tp_vlan_tpid);
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        Ok(Some((n, tag)))
    }

    /// Give the frames of the last `receive` back to the kernel.
    pub fn release(&mut self) {
        for i in 0..self.rx_held {
            set_status(self.rx.slot(i, RX_BLOCK), TP_STATUS_KERNEL);
        }
        self.rx.head = (self.rx.head + self.rx_held) % self.rx.frames;
        self.rx_held = 0;
    }

    /// Queue a frame (`parts` concatenated) for sending at the next `flush`; a big frame is
    /// sent at once, after what is queued.
    pub fn transmit(&mut self, vnet: &VnetHdr, parts: &[&[u8]]) -> Result<(), TxError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        if len > RING_TX_MAX || vnet.is_gso() {
            self.flush()?;
            return self.send_direct(vnet, parts);
        }
        let mut slot = self.tx.slot(0, TX_BLOCK);
        if !tx_free(slot) {
            self.flush()?; // let the kernel drain the ring, then look again
            slot = self.tx.slot(0, TX_BLOCK);
            if !tx_free(slot) {
                return Err(TxError::Full);
            }
        }
        // SAFETY: the slot is ours (checked free) and holds header, virtio header and the frame: TX_FRAME is large enough (asserted) for RING_TX_MAX bytes.
        unsafe {
            let mut p = slot.add(HDR_ALIGNED);
            ptr::copy_nonoverlapping(vnet.0.as_ptr(), p, VNET_HDR_LEN);
            p = p.add(VNET_HDR_LEN);
            for part in parts {
                ptr::copy_nonoverlapping(part.as_ptr(), p, part.len());
                p = p.add(part.len());
            }
            (*(slot as *mut Tpacket2Hdr)).tp_len = (VNET_HDR_LEN + len) as u32;
        }
        set_status(slot, TP_STATUS_SEND_REQUEST);
        self.tx.head = (self.tx.head + 1) % self.tx.frames;
        self.tx_pending += 1;
        Ok(())
    }

    fn send_direct(&mut self, vnet: &VnetHdr, parts: &[&[u8]]) -> Result<(), TxError> {
        let mut iov = [libc::iovec { iov_base: ptr::null_mut(), iov_len: 0 }; 4];
        iov[0] = libc::iovec { iov_base: vnet.0.as_ptr() as *mut libc::c_void, iov_len: VNET_HDR_LEN };
        for (i, p) in parts.iter().enumerate() {
            iov[i + 1] = libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() };
        }
        // SAFETY: msghdr is plain old data; all zeros is valid.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = parts.len() + 1;
        // SAFETY: `msg` points at iovecs into `vnet` and `parts`, alive for the call.
        if unsafe { libc::sendmsg(self.direct.as_raw_fd(), &msg, libc::MSG_DONTWAIT) } < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) | Some(libc::EMSGSIZE)
                | Some(libc::ENETDOWN) | Some(libc::EINVAL) => Err(TxError::Full),
                _ => Err(TxError::Fault(e)),
            };
        }
        Ok(())
    }

    /// Send every queued frame with one syscall.
    pub fn flush(&mut self) -> Result<(), TxError> {
        if self.tx_pending == 0 {
            return Ok(());
        }
        self.tx_pending = 0;
        // SAFETY: a send with no data tells the kernel to transmit the ring's pending slots.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), ptr::null(), 0, libc::MSG_DONTWAIT) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                // The link is down: the frames wait in the ring until it is up again.
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) | Some(libc::ENETDOWN) => Ok(()),
                _ => Err(TxError::Fault(e)),
            };
        }
        Ok(())
    }
}

fn tx_free(slot: *mut u8) -> bool {
    let s = status(slot);
    s == TP_STATUS_AVAILABLE || s == TP_STATUS_WRONG_FORMAT
}

/// The 802.1Q tag the kernel took out of the frame (VLAN offload), to be put back.
fn vlan_tag(status: u32, tci: u16, tpid: u16) -> Option<[u8; 4]> {
    if status & TP_STATUS_VLAN_VALID == 0 {
        return None;
    }
    let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 && tpid != 0 { tpid } else { 0x8100 };
    let [a, b] = tpid.to_be_bytes();
    let [c, d] = tci.to_be_bytes();
    Some([a, b, c, d])
}

impl Drop for AfPacketQueue {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the rings `open` mapped, once.
        unsafe { libc::munmap(self.map as *mut libc::c_void, self.map_len) };
    }
}
