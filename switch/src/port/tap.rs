//! TAP port queue: /dev/net/tun with IFF_NO_PI and IFF_VNET_HDR, offloads negotiated so the
//! kernel hands us whole GSO frames. One queue (file descriptor) per worker through
//! IFF_MULTI_QUEUE, so workers never share one.

use super::{RxFrame, TxError, WorkerBuffers};
use crate::frame::{VnetHdr, VNET_HDR_LEN};
use crate::netdev;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libc::{TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ};

// The ifreq flags field is a short; libc spells the flags as ints.
const IFF_TAP: libc::c_short = libc::IFF_TAP as libc::c_short;
const IFF_MULTI_QUEUE: libc::c_short = libc::IFF_MULTI_QUEUE as libc::c_short;
const IFF_NO_PI: libc::c_short = libc::IFF_NO_PI as libc::c_short;
const IFF_VNET_HDR: libc::c_short = libc::IFF_VNET_HDR as libc::c_short;
const TUN_F_BASE: libc::c_ulong = (libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN) as _;
const TUN_F_USO: libc::c_ulong = (libc::TUN_F_USO4 | libc::TUN_F_USO6) as _;

pub struct TapQueue {
    fd: OwnedFd,
}

fn step_err(step: &str, name: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{step} on TAP {name}: {e}"))
}

fn open_queue(name: &str, flags: libc::c_short) -> io::Result<OwnedFd> {
    let path = CString::new("/dev/net/tun").expect("no NUL");
    // SAFETY: a valid C string; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(step_err("open /dev/net/tun", name));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain old data; all zeros is a valid empty request.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | flags;
    // SAFETY: TUNSETIFF reads the ifreq we own (name and flags) from a /dev/net/tun descriptor.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &req) } < 0 {
        return Err(step_err("TUNSETIFF", name));
    }
    let hdr = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads the int we point to.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &hdr) } < 0 {
        return Err(step_err("TUNSETVNETHDRSZ", name));
    }
    Ok(fd)
}

pub struct OpenedTap {
    pub queues: Vec<TapQueue>,
    /// This call created the device (so the switch removes it).
    pub created: bool,
    /// The queues are distinct kernel queues, not `dup`s of one.
    pub multiqueue: bool,
}

/// Open `queues` queues of TAP `name`, creating it if it does not exist.
pub fn open(name: &str, queues: usize) -> io::Result<OpenedTap> {
    let existed = netdev::ifindex(name).is_some();
    let mut fds = Vec::new();
    let mut multiqueue = true;
    match open_queue(name, IFF_MULTI_QUEUE) {
        Ok(fd) => {
            fds.push(fd);
            for _ in 1..queues {
                fds.push(open_queue(name, IFF_MULTI_QUEUE)?);
            }
        }
        Err(e) if existed && e.raw_os_error() == Some(libc::EINVAL) => {
            // An existing single-queue TAP (or not a TAP at all): share one queue by dup.
            let fd = open_queue(name, 0).map_err(|e2| {
                io::Error::new(e2.kind(), format!("{name} exists and cannot be opened as a TAP device: {e2}"))
            })?;
            multiqueue = false;
            for _ in 1..queues {
                fds.push(fd.try_clone()?);
            }
            fds.insert(0, fd);
        }
        Err(e) => return Err(e),
    }
    // The kernel may send us checksum-offloaded and TSO/USO frames: we pass them on whole
    // (USO only where the kernel knows it).
    let fd0 = fds[0].as_raw_fd();
    // SAFETY: TUNSETOFFLOAD takes the flags by value on a TAP descriptor we hold.
    if unsafe { libc::ioctl(fd0, TUNSETOFFLOAD, TUN_F_BASE | TUN_F_USO) } < 0
        // SAFETY: as above.
        && unsafe { libc::ioctl(fd0, TUNSETOFFLOAD, TUN_F_BASE) } < 0
    {
        return Err(step_err("TUNSETOFFLOAD", name));
    }
    netdev::set_up(name).map_err(|e| io::Error::new(e.kind(), format!("bringing TAP {name} up: {e}")))?;
    Ok(OpenedTap { queues: fds.into_iter().map(|fd| TapQueue { fd }).collect(), created: !existed, multiqueue })
}

impl TapQueue {
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Read up to `max` frames (one read each: the TAP interface allows no less), each into
    /// a buffer of its own.
    pub fn receive<'q>(
        &'q mut self,
        out: &mut Vec<RxFrame<'q>>,
        max: usize,
        bufs: &'q mut WorkerBuffers,
    ) -> io::Result<()> {
        let mut spare = bufs.iter_mut();
        while out.len() < max {
            let Some(buf) = spare.next() else { break };
            // SAFETY: `buf` is a live buffer of `buf.len()` bytes that the kernel fills.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.raw_os_error() {
                    _ if super::transient(&e) => Ok(()),
                    _ => Err(e),
                };
            }
            let n = n as usize;
            if n < VNET_HDR_LEN {
                continue;
            }
            let buf: &'q [u8] = buf;
            out.push(RxFrame::new(VnetHdr::from_slice(buf), &buf[VNET_HDR_LEN..n], None));
        }
        Ok(())
    }

    /// Write one frame (`parts` concatenated) with its virtio header: one writev.
    pub fn transmit(&mut self, vnet: &VnetHdr, parts: &[&[u8]]) -> Result<(), TxError> {
        let mut iov = [libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 }; 4];
        iov[0] = libc::iovec { iov_base: vnet.0.as_ptr() as *mut libc::c_void, iov_len: VNET_HDR_LEN };
        for (i, p) in parts.iter().enumerate() {
            iov[i + 1] = libc::iovec { iov_base: p.as_ptr() as *mut libc::c_void, iov_len: p.len() };
        }
        // SAFETY: the iovecs point into `vnet` and `parts`, alive for the call.
        let r = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), parts.len() as i32 + 1) };
        if r < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::EINTR) | Some(libc::EINVAL) | Some(libc::EIO) => {
                    Err(TxError::Full)
                }
                _ => Err(TxError::Fault(e)),
            };
        }
        Ok(())
    }
}
