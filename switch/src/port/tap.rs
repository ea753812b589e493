//! TAP port queue: /dev/net/tun with IFF_NO_PI and IFF_VNET_HDR, offloads negotiated so the
//! kernel hands us whole GSO frames. One queue (file descriptor) per worker through
//! IFF_MULTI_QUEUE, so workers never share one; an existing single-queue TAP is opened as
//! it is and its one queue shared.
//!
//! A TAP another process holds (QEMU's `-netdev tap`) is refused: its queues would split the
//! traffic with ours, and its vnet header size (QEMU sets 12) is the whole device's, so our
//! frames would be read 2 bytes off. Such a TAP is attached as an interface (AF_PACKET), the
//! way the Linux bridge attaches it. The header size is checked again on every batch: if
//! someone changes it, the queue fails (nothing misread is forwarded) and the port waits to
//! be opened again.

use super::{RxFrame, TxError, WorkerBuffers};
use crate::frame::{VnetHdr, VNET_HDR_LEN};
use crate::netdev;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use libc::{TUNGETVNETHDRSZ, TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ};

// The ifreq flags field is a short; libc spells the flags as ints.
const IFF_TAP: libc::c_short = libc::IFF_TAP as libc::c_short;
const IFF_MULTI_QUEUE: libc::c_short = libc::IFF_MULTI_QUEUE as libc::c_short;
const IFF_NO_PI: libc::c_short = libc::IFF_NO_PI as libc::c_short;
const IFF_VNET_HDR: libc::c_short = libc::IFF_VNET_HDR as libc::c_short;
const TUN_F_BASE: libc::c_ulong = (libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN) as _;
const TUN_F_USO: libc::c_ulong = (libc::TUN_F_USO4 | libc::TUN_F_USO6) as _;

pub struct TapQueue {
    fd: OwnedFd,
    /// The last read found the queue empty: the worker reads it again only once its epoll
    /// says there are frames (an idle TAP costs no read per pass; see `worker.rs`).
    pub drained: bool,
}

/// A step of opening a queue that failed, with the kernel's errno kept (the fallbacks and the
/// messages depend on it).
#[derive(Debug)]
struct StepError {
    step: &'static str,
    errno: i32,
}

impl StepError {
    fn last(step: &'static str) -> StepError {
        StepError { step, errno: io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO) }
    }

    fn into_io(self, name: &str) -> io::Error {
        let e = io::Error::from_raw_os_error(self.errno);
        io::Error::new(e.kind(), format!("{} on TAP {name}: {e}", self.step))
    }
}

fn step_err(step: &'static str, name: &str) -> io::Error {
    StepError::last(step).into_io(name)
}

/// The vnet header size the device reads and writes with (the whole device's).
fn vnet_hdr_size(fd: RawFd) -> Option<usize> {
    let mut sz: libc::c_int = 0;
    // SAFETY: TUNGETVNETHDRSZ writes one int to the pointer we give.
    (unsafe { libc::ioctl(fd, TUNGETVNETHDRSZ, &mut sz) } == 0).then_some(sz as usize)
}

/// The processes (pid, command) that hold a queue of TAP `name`: /proc/*/fdinfo of a
/// /dev/net/tun descriptor names its device (`iff:`). Our own process is left out.
pub fn holders(name: &str) -> Vec<(u32, String)> {
    let me = std::process::id();
    let want = format!("iff:\t{name}");
    let mut out = vec![];
    let Ok(procs) = std::fs::read_dir("/proc") else { return out };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fdinfo")) else { continue };
        let holds = fds
            .flatten()
            .any(|f| std::fs::read_to_string(f.path()).is_ok_and(|info| info.lines().any(|l| l.trim_end() == want)));
        if holds {
            let comm = std::fs::read_to_string(p.path().join("comm")).unwrap_or_default().trim().to_string();
            out.push((pid, comm));
        }
    }
    out
}

fn open_queue(name: &str, flags: libc::c_short) -> Result<OwnedFd, StepError> {
    let path = CString::new("/dev/net/tun").expect("no NUL");
    // SAFETY: a valid C string; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(StepError::last("open /dev/net/tun"));
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
        return Err(StepError::last("TUNSETIFF"));
    }
    let hdr = VNET_HDR_LEN as libc::c_int;
    // SAFETY: TUNSETVNETHDRSZ reads the int we point to.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &hdr) } < 0 {
        return Err(StepError::last("TUNSETVNETHDRSZ"));
    }
    if vnet_hdr_size(fd.as_raw_fd()) != Some(VNET_HDR_LEN) {
        return Err(StepError { step: "TUNGETVNETHDRSZ (the size did not take)", errno: libc::EINVAL });
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
    if existed {
        if let Some((pid, comm)) = holders(name).into_iter().next() {
            return Err(io::Error::new(
                io::ErrorKind::ResourceBusy,
                format!(
                    "TAP {name} is held by another process ({comm}, pid {pid}): sharing it would split its \
                     traffic and its vnet header size; attach it as an interface instead (vswitch network \
                     connect NETWORK {name}, without --tap)"
                ),
            ));
        }
    }
    let mut fds = Vec::new();
    let mut multiqueue = true;
    match open_queue(name, IFF_MULTI_QUEUE) {
        Ok(fd) => {
            fds.push(fd);
            for _ in 1..queues {
                fds.push(open_queue(name, IFF_MULTI_QUEUE).map_err(|e| e.into_io(name))?);
            }
        }
        Err(e) if existed && e.errno == libc::EINVAL => {
            // An existing single-queue TAP (or not a TAP at all): share one queue by dup.
            let fd = open_queue(name, 0).map_err(|e2| {
                let e2 = e2.into_io(name);
                io::Error::new(e2.kind(), format!("{name} exists and cannot be opened as a TAP device: {e2}"))
            })?;
            multiqueue = false;
            for _ in 1..queues {
                fds.push(fd.try_clone()?);
            }
            fds.insert(0, fd);
        }
        Err(e) => return Err(e.into_io(name)),
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
    Ok(OpenedTap {
        queues: fds.into_iter().map(|fd| TapQueue { fd, drained: false }).collect(),
        created: !existed,
        multiqueue,
    })
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
        let mut checked = false;
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
            // Once per batch that has frames: the device's header size is still ours (another
            // process on the TAP may have changed it; then nothing read is forwarded).
            if !checked {
                checked = true;
                match vnet_hdr_size(self.fd.as_raw_fd()) {
                    Some(VNET_HDR_LEN) => {}
                    other => {
                        return Err(io::Error::other(format!(
                            "the TAP's vnet header size became {other:?}, not {VNET_HDR_LEN} (another process \
                             on the device set it: QEMU?); its frames are not forwarded"
                        )));
                    }
                }
            }
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
