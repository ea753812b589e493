//! The switch process: loads the state, starts the workers, serves the CLI on a Unix socket,
//! ages tables and handles port faults, and stops cleanly on SIGTERM/SIGINT.

mod socket;

use crate::control::netlink::LinkEvents;
use crate::control::state::StateDir;
use crate::control::system::Real;
use crate::control::Controller;
use crate::dataplane::Dataplane;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

pub struct Options {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub workers: usize,
    /// Every NAT timeout, in seconds (tests).
    pub nat_timeout: Option<u32>,
    /// The host's resolvers, for the embedded DNS to forward to.
    pub resolv_conf: PathBuf,
    /// Serve Docker's plugin API on this socket.
    pub docker_plugin: Option<PathBuf>,
    /// When workers sleep.
    pub poll: crate::poll::PollMode,
    /// The CPUs workers are pinned to, in turn (empty: unpinned).
    pub cpus: Vec<usize>,
}

/// Bind the control socket, refusing if a live daemon already answers on it. Its directory
/// is made 0700 and the daemon runs under umask 077: nobody else can race us to it.
fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!("a vswitch daemon is already running on {}", path.display()));
        }
        std::fs::remove_file(path).map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    let l = UnixListener::bind(path).map_err(|e| format!("cannot listen on {}: {e}", path.display()))?;
    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660));
    Ok(l)
}

pub fn run(o: Options) -> Result<(), String> {
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "the daemon must run as root: it opens AF_PACKET sockets and TAP devices (try: sudo vswitch daemon)".into(),
        );
    }
    if o.workers == 0 {
        return Err("--workers must be at least 1".into());
    }
    // Everything the daemon creates (state, socket, logs) is its own, whatever umask it was
    // started with.
    // SAFETY: umask takes a mode and cannot fail.
    unsafe { libc::umask(0o077) };
    raise_fd_limit();
    let dir = StateDir::open(&o.state_dir).map_err(|e| e.to_string())?;
    let st = dir.load().map_err(|e| e.to_string())?;
    let listener = bind_socket(&o.socket)?;
    // Subscribed before the ports are restored: no deletion goes unseen in between.
    let mut links = LinkEvents::subscribe().map_err(|e| format!("cannot watch network interfaces: {e}"))?;
    let allowed = crate::poll::allowed_cpus();
    if let Some(c) = o.cpus.iter().find(|c| !allowed.contains(c)) {
        return Err(format!("--cpus: CPU {c} is not one this process may run on ({allowed:?})"));
    }
    let dp = Dataplane::start_with(o.workers, o.poll, &o.cpus).map_err(|e| format!("cannot start workers: {e}"))?;
    if let Some(secs) = o.nat_timeout {
        dp.set_nat_timeouts(vswitch_nat::Timeouts::all(secs));
    }
    let ctl = Arc::new(Mutex::new(
        Controller::start(st, dir, dp, Box::new(Real { resolv_conf: o.resolv_conf.clone() }))
            .map_err(|e| e.to_string())?,
    ));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    info!(socket = %o.socket.display(), state_dir = %o.state_dir.display(), workers = o.workers, "vswitch daemon running");

    // Dropped to stop the housekeeping thread at once, whatever it waits for.
    let (stopping, stopped) = crossbeam_channel::bounded::<()>(0);
    let housekeeping = {
        let ctl = ctl.clone();
        let faults = lock(&ctl).faults();
        std::thread::Builder::new()
            .name("housekeeping".into())
            .spawn(move || {
                let mut next_tick = std::time::Instant::now() + Duration::from_secs(1);
                loop {
                    let wait = next_tick.saturating_duration_since(std::time::Instant::now());
                    crossbeam_channel::select! {
                        recv(faults) -> f => if let Ok(f) = f { lock(&ctl).fault(f) },
                        recv(stopped) -> _ => return,
                        default(wait) => {}
                    }
                    if std::time::Instant::now() >= next_tick {
                        lock(&ctl).tick();
                        next_tick += Duration::from_secs(1);
                    }
                }
            })
            .map_err(|e| e.to_string())?
    };

    // Interfaces created, changed (MTU) and deleted, as the kernel announces them.
    let link_watch = {
        let (ctl, stop) = (ctl.clone(), stop.clone());
        std::thread::Builder::new()
            .name("links".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match links.next(100) {
                        Ok(events) => {
                            for ev in events {
                                lock(&ctl).link_event(ev);
                            }
                        }
                        Err(e) => {
                            warn!("reading link events: {e}");
                            std::thread::sleep(Duration::from_millis(200));
                        }
                    }
                }
            })
            .map_err(|e| e.to_string())?
    };

    let plugin = match &o.docker_plugin {
        Some(path) => Some(crate::docker::Plugin::start(path, ctl.clone())?),
        None => None,
    };
    if let Err(e) = socket::serve(listener, ctl.clone(), &stop) {
        error!("the control socket failed: {e}");
    }
    stop.store(true, Ordering::Relaxed);
    info!("stopping");
    drop(plugin);
    drop(stopping);
    let _ = housekeeping.join();
    let _ = link_watch.join();
    lock(&ctl).shutdown();
    let _ = std::fs::remove_file(&o.socket);
    info!("stopped");
    Ok(())
}

/// As many file descriptors as the hard limit allows (up to 65536): each port takes some per
/// worker.
fn raise_fd_limit() {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit on an rlimit we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max.min(65536);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The controller, whatever happened before: a panic while it was held (caught and answered
/// in `socket::handle`) must not poison it into a dead control plane.
pub fn lock(ctl: &Mutex<Controller>) -> MutexGuard<'_, Controller> {
    ctl.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A log line for a repeated error at most every ten seconds, with how many it stands for.
pub struct RateLimited {
    what: &'static str,
    last: Option<Instant>,
    count: u64,
}

impl RateLimited {
    pub fn new(what: &'static str) -> RateLimited {
        RateLimited { what, last: None, count: 0 }
    }

    pub fn note(&mut self, error: &str) {
        self.count += 1;
        if self.last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            warn!("{}: {error} ({} time(s) since the last such line)", self.what, self.count);
            self.last = Some(Instant::now());
            self.count = 0;
        }
    }
}
