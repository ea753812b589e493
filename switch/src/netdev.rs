//! Small queries about kernel network interfaces (by name, in the daemon's namespace).

use crate::mac::MacAddr;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

pub fn check_ifname(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("interface name is empty".into());
    }
    if name.len() > MAX_IFNAME {
        return Err(format!("interface name '{name}' is {} bytes; the kernel allows at most {MAX_IFNAME}", name.len()));
    }
    if name.contains(['/', ' ', '\0', ':']) || name == "." || name == ".." {
        return Err(format!("interface name '{name}' has a character the kernel does not allow"));
    }
    Ok(())
}

pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: a valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain old data; all zeros is an empty request.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes().take(MAX_IFNAME)) {
        *d = s as libc::c_char;
    }
    r
}

fn ioctl_sock() -> io::Result<OwnedFd> {
    // SAFETY: no pointers; the result is checked.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mtu(name: &str) -> io::Result<u32> {
    let s = ioctl_sock()?;
    let mut r = ifreq(name);
    // SAFETY: SIOCGIFMTU fills the ifreq we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFMTU, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFMTU set the mtu member of the union.
    Ok(unsafe { r.ifr_ifru.ifru_mtu } as u32)
}

pub fn hwaddr(name: &str) -> io::Result<MacAddr> {
    let s = ioctl_sock()?;
    let mut r = ifreq(name);
    // SAFETY: SIOCGIFHWADDR fills the ifreq we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFHWADDR, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFHWADDR set the hwaddr member of the union.
    let d = unsafe { r.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(MacAddr([d[0] as u8, d[1] as u8, d[2] as u8, d[3] as u8, d[4] as u8, d[5] as u8]))
}

/// Bring an interface up (a TAP the switch created starts down).
pub fn set_up(name: &str) -> io::Result<()> {
    let s = ioctl_sock()?;
    let mut r = ifreq(name);
    // SAFETY: SIOCGIFFLAGS fills the ifreq we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS set the flags member of the union.
    unsafe { r.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &r) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Set a socket option, naming the option in the error.
pub fn setsockopt<T>(fd: &OwnedFd, level: i32, opt: i32, val: &T, what: &str) -> io::Result<()> {
    // SAFETY: `val` is a live T of the size we pass.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            val as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_ifname("veth-a").is_ok());
        assert!(check_ifname("").is_err());
        assert!(check_ifname("a-name-of-16-byt").unwrap_err().contains("16 bytes"));
        assert!(check_ifname("a/b").is_err());
        assert!(ifindex("no-such-if-xyz").is_none());
    }
}
