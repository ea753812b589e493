//! `vswitch-bench tap-relay A B`: open TAP devices A and B (created if missing, with the
//! virtio-net header and offloads, as vswitch opens its TAP ports) and copy every frame from
//! one to the other, one thread per direction. In the tcp-tap scenario this is the
//! userspace reader that puts a namespace's TAP device on the Linux bridge, so the bridge
//! is measured with the same kind of client as vswitch's TAP ports.

use crate::sys::Res;
use std::io;
use std::os::fd::RawFd;
use vswitch::port::tap;

pub fn relay(a: &str, b: &str) -> Res<()> {
    let open = |n: &str| tap::open(n, 1).map_err(|e| format!("cannot open TAP {n}: {e}"));
    let (ta, tb) = (open(a)?, open(b)?);
    let (fa, fb) = (ta.queues[0].fd(), tb.queues[0].fd());
    println!("ready"); // the bench waits for this before moving the devices
    let back = std::thread::spawn(move || copy(fb, fa));
    let r = copy(fa, fb);
    let _ = back.join();
    drop((ta, tb));
    r.map_err(|e| format!("relay {a} <-> {b}: {e}"))
}

/// Copy frames (virtio header included: both ends use the same one) from `from` to `to`.
fn copy(from: RawFd, to: RawFd) -> io::Result<()> {
    let mut buf = vec![0u8; 65536 + 64];
    loop {
        // SAFETY: `buf` is live and as long as we say.
        let n = unsafe { libc::read(from, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted {
                let mut p = libc::pollfd { fd: from, events: libc::POLLIN, revents: 0 };
                // SAFETY: one live pollfd.
                unsafe { libc::poll(&mut p, 1, 1000) };
                continue;
            }
            return Err(e);
        }
        // A full TAP queue drops the frame, as a busy NIC would.
        // SAFETY: `buf` holds the `n` bytes just read.
        unsafe { libc::write(to, buf.as_ptr() as *const libc::c_void, n as usize) };
    }
}
