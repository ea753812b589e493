//! Network namespaces as `ip netns` knows them: a named one is a bind mount of a namespace
//! on /run/netns/NAME, with its own resolv.conf and hosts under /etc/netns/NAME that
//! `ip netns exec` (and `vswitch run`) put in place of /etc's. The steps are iproute2's
//! (`ip/ipnetns.c`), so namespaces made here and there are interchangeable.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const RUN_DIR: &str = "/run/netns";
pub const ETC_DIR: &str = "/etc/netns";

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, format!("'{s}' contains a NUL byte")))
}

fn check(r: libc::c_int, what: &str) -> io::Result<()> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(())
}

/// The path of named namespace `name`.
pub fn path_of(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// Where a user's `--netns` points: a name under /run/netns, or a path (/proc/PID/ns/net).
pub fn resolve(arg: &str) -> PathBuf {
    if arg.contains('/') {
        PathBuf::from(arg)
    } else {
        path_of(arg)
    }
}

/// Which namespace a path is: its nsfs device and inode (two paths to one namespace agree).
pub fn identity(path: &Path) -> io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

/// Create named namespace `name` (with lo up), as `ip netns add` does.
pub fn create(name: &str) -> io::Result<PathBuf> {
    let dir = cstr(RUN_DIR)?;
    std::fs::create_dir_all(RUN_DIR)?;
    // /run/netns must be a shared mount point so the namespace's bind mount shows in every
    // mount namespace (iproute2 does the same, under the same lock).
    let lock = File::open(RUN_DIR)?;
    // SAFETY: flock on a descriptor we hold; released when `lock` closes.
    unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
    let none = cstr("none")?;
    let empty = cstr("")?;
    let mut made_mount = false;
    loop {
        // SAFETY: valid C strings; a null data pointer is allowed for this mount.
        let r = unsafe {
            libc::mount(empty.as_ptr(), dir.as_ptr(), none.as_ptr(), libc::MS_SHARED | libc::MS_REC, std::ptr::null())
        };
        if r == 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) || made_mount {
            return Err(io::Error::new(e.kind(), format!("making {RUN_DIR} a shared mount: {e}")));
        }
        // Not a mount point yet: bind it onto itself, then make it shared.
        // SAFETY: as above.
        check(
            unsafe {
                libc::mount(dir.as_ptr(), dir.as_ptr(), none.as_ptr(), libc::MS_BIND | libc::MS_REC, std::ptr::null())
            },
            "binding /run/netns onto itself",
        )?;
        made_mount = true;
    }
    drop(lock);
    let path = path_of(name);
    let p = cstr(&path.to_string_lossy())?;
    // SAFETY: a valid C string; the descriptor is closed at once.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(match e.kind() {
            io::ErrorKind::AlreadyExists => {
                io::Error::new(e.kind(), format!("a network namespace named '{name}' already exists"))
            }
            _ => io::Error::new(e.kind(), format!("creating {}: {e}", path.display())),
        });
    }
    // SAFETY: we own `fd`.
    unsafe { libc::close(fd) };
    // A thread of our own leaves for a new namespace and pins it with the bind mount; the
    // thread's file, not /proc/self's (that is the main thread's namespace).
    let made = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            // SAFETY: affects only this short-lived thread.
            check(unsafe { libc::unshare(libc::CLONE_NEWNET) }, "unshare(CLONE_NEWNET)")?;
            // SAFETY: gettid takes no arguments.
            let tid = unsafe { libc::gettid() };
            let src = cstr(&format!("/proc/self/task/{tid}/ns/net"))?;
            // SAFETY: valid C strings.
            check(
                unsafe { libc::mount(src.as_ptr(), p.as_ptr(), none.as_ptr(), libc::MS_BIND, std::ptr::null()) },
                "bind-mounting the namespace",
            )?;
            // Loopback up, as in any container.
            let mut r = super::netlink::Rtnl::open().map_err(|e| io::Error::other(e.to_string()))?;
            let lo = r.link("lo").map_err(|e| io::Error::other(e.to_string()))?;
            r.set_up(lo.index).map_err(|e| io::Error::other(e.to_string()))
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if let Err(e) = made {
        delete(name);
        return Err(e);
    }
    Ok(path)
}

/// Remove named namespace `name` and its /etc/netns files (processes still in it keep it).
pub fn delete(name: &str) {
    if let Ok(p) = cstr(&path_of(name).to_string_lossy()) {
        // SAFETY: a valid C string; failures (not mounted, gone) leave nothing to undo.
        unsafe {
            libc::umount2(p.as_ptr(), libc::MNT_DETACH);
            libc::unlink(p.as_ptr());
        }
    }
    let _ = std::fs::remove_dir_all(Path::new(ETC_DIR).join(name));
}

pub fn etc_exists(name: &str) -> bool {
    Path::new(ETC_DIR).join(name).exists()
}

pub fn remove_etc(name: &str) {
    let _ = std::fs::remove_dir_all(Path::new(ETC_DIR).join(name));
}

/// The name `ip netns` knows a namespace path by (/run/netns/NAME), if it is one of those.
pub fn named(path: &Path) -> Option<&str> {
    path.strip_prefix(RUN_DIR).ok()?.to_str().filter(|n| !n.is_empty() && !n.contains('/'))
}

/// Write /etc/netns/NAME/{resolv.conf,hosts}: what processes in the namespace see as /etc's.
pub fn write_etc(name: &str, resolv_conf: &str, hosts: &str) -> io::Result<()> {
    let dir = Path::new(ETC_DIR).join(name);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("resolv.conf"), resolv_conf)?;
    std::fs::write(dir.join("hosts"), hosts)
}

/// The resolver configuration for a sandbox: the host's, without loopback servers (they
/// would be the sandbox's own loopback), as Docker does for its default bridge.
pub fn resolv_conf_from(host: &str) -> String {
    let mut out = String::from("# written by vswitch\n");
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                let Some(ip) = words.next() else { continue };
                let loopback = ip.parse::<std::net::IpAddr>().map(|a| a.is_loopback()).unwrap_or(true);
                if !loopback {
                    out.push_str(&format!("nameserver {ip}\n"));
                    servers += 1;
                }
            }
            Some("search") | Some("domain") | Some("options") => {
                out.push_str(line.trim());
                out.push('\n');
            }
            _ => {}
        }
    }
    if servers == 0 {
        out.push_str("# the host's resolvers are all on loopback: none is reachable from here\n");
    }
    out
}

/// The resolver configuration for a sandbox on a network with the embedded DNS: its
/// gateway as the one nameserver, the host's search domains, and Docker's `ndots:0` (a
/// single-label name such as `web` is asked as it is, not with each search domain first).
pub fn resolv_conf_embedded(host: &str, nameserver: std::net::IpAddr) -> String {
    let mut out = format!("# written by vswitch: the embedded DNS of the sandbox's network\nnameserver {nameserver}\n");
    for line in host.lines() {
        if matches!(line.split_whitespace().next(), Some("search") | Some("domain")) {
            out.push_str(line.trim());
            out.push('\n');
        }
    }
    out.push_str("options ndots:0\n");
    out
}

/// The hosts file for a sandbox named `name` with `addrs`.
pub fn hosts_for(name: &str, addrs: &[std::net::IpAddr]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    for a in addrs {
        out.push_str(&format!("{a}\t{name}\n"));
    }
    out
}

/// Entering a sandbox from a child process about to exec: namespace `netns`, with
/// /etc/netns/NAME's files in place of /etc's and the namespace's own /sys, as `ip netns exec`
/// arranges. Prepared before fork, so the child only makes system calls.
pub struct Entry {
    netns: File,
    root: CString,
    none: CString,
    sys: CString,
    sysfs: CString,
    /// (source, target) of each /etc bind mount.
    binds: Vec<(CString, CString)>,
}

impl Entry {
    pub fn prepare(netns: File, etc_name: Option<&str>) -> io::Result<Entry> {
        let mut binds = Vec::new();
        if let Some(name) = etc_name {
            for f in ["resolv.conf", "hosts"] {
                let src = Path::new(ETC_DIR).join(name).join(f);
                if src.exists() {
                    binds.push((cstr(&src.to_string_lossy())?, cstr(&format!("/etc/{f}"))?));
                }
            }
        }
        Ok(Entry { netns, root: cstr("/")?, none: cstr("none")?, sys: cstr("/sys")?, sysfs: cstr("sysfs")?, binds })
    }

    /// Enter. Call only between fork and exec: it changes the whole process.
    pub fn enter(&self) -> io::Result<()> {
        // SAFETY: setns/unshare/mount on this process, which is about to exec; every pointer
        // is a C string prepared before fork.
        unsafe {
            check(libc::setns(self.netns.as_raw_fd(), libc::CLONE_NEWNET), "setns")?;
            check(libc::unshare(libc::CLONE_NEWNS), "unshare(CLONE_NEWNS)")?;
            // Our mounts stay ours: nothing propagates back to the host.
            check(
                libc::mount(
                    self.none.as_ptr(),
                    self.root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_SLAVE | libc::MS_REC,
                    std::ptr::null(),
                ),
                "making / a slave mount",
            )?;
            libc::umount2(self.sys.as_ptr(), libc::MNT_DETACH);
            check(
                libc::mount(self.sysfs.as_ptr(), self.sys.as_ptr(), self.sysfs.as_ptr(), 0, std::ptr::null()),
                "mounting /sys",
            )?;
            for (src, dst) in &self.binds {
                check(
                    libc::mount(src.as_ptr(), dst.as_ptr(), self.none.as_ptr(), libc::MS_BIND, std::ptr::null()),
                    "bind-mounting /etc files",
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let host = "nameserver 127.0.0.53\nnameserver 192.0.2.53\nsearch example.org\noptions edns0\n# c\n";
        let r = resolv_conf_from(host);
        assert!(r.contains("nameserver 192.0.2.53\n"));
        assert!(!r.contains("127.0.0.53"));
        assert!(r.contains("search example.org\n") && r.contains("options edns0\n"));
        assert!(resolv_conf_from("nameserver ::1\n").contains("none is reachable"));
        let e = resolv_conf_embedded(
            "search corp.example\nnameserver 10.9.9.9\noptions rotate\n",
            "10.1.0.1".parse().unwrap(),
        );
        assert!(
            e.contains("nameserver 10.1.0.1\n")
                && e.contains("search corp.example\n")
                && e.contains("options ndots:0\n")
        );
        assert!(!e.contains("10.9.9.9") && !e.contains("rotate"));
    }

    #[test]
    fn names_and_paths() {
        assert_eq!(resolve("web"), PathBuf::from("/run/netns/web"));
        assert_eq!(resolve("/proc/1/ns/net"), PathBuf::from("/proc/1/ns/net"));
        assert!(hosts_for("web", &["10.0.0.2".parse().unwrap()]).contains("10.0.0.2\tweb\n"));
    }
}
