//! The switch process: loads the state, starts the workers, serves the CLI on a Unix socket,
//! ages tables and handles port faults, and stops cleanly on SIGTERM/SIGINT.

use crate::control::netlink::LinkEvents;
use crate::control::state::StateDir;
use crate::control::system::Real;
use crate::control::Controller;
use crate::dataplane::Dataplane;
use crate::protocol::{Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::{error, info, warn};

pub struct Options {
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub workers: usize,
}

/// Bind the control socket, refusing if a live daemon already answers on it.
fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
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
    let dir = StateDir::open(&o.state_dir).map_err(|e| e.to_string())?;
    let st = dir.load().map_err(|e| e.to_string())?;
    let listener = bind_socket(&o.socket)?;
    // Subscribed before the ports are restored: no deletion goes unseen in between.
    let mut links = LinkEvents::subscribe().map_err(|e| format!("cannot watch network interfaces: {e}"))?;
    let dp = Dataplane::start(o.workers).map_err(|e| format!("cannot start workers: {e}"))?;
    let ctl = Arc::new(Mutex::new(Controller::start(st, dir, dp, Box::new(Real)).map_err(|e| e.to_string())?));
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| format!("cannot handle signals: {e}"))?;
    }
    info!(socket = %o.socket.display(), state_dir = %o.state_dir.display(), workers = o.workers, "vswitch daemon running");

    // Dropped to stop the housekeeping thread at once, whatever it waits for.
    let (stopping, stopped) = crossbeam_channel::bounded::<()>(0);
    let housekeeping = {
        let ctl = ctl.clone();
        let faults = ctl.lock().unwrap().faults();
        std::thread::Builder::new()
            .name("housekeeping".into())
            .spawn(move || {
                let mut next_tick = std::time::Instant::now() + Duration::from_secs(1);
                loop {
                    let wait = next_tick.saturating_duration_since(std::time::Instant::now());
                    crossbeam_channel::select! {
                        recv(faults) -> f => if let Ok(f) = f { ctl.lock().unwrap().fault(f) },
                        recv(stopped) -> _ => return,
                        default(wait) => {}
                    }
                    if std::time::Instant::now() >= next_tick {
                        ctl.lock().unwrap().tick();
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
                                ctl.lock().unwrap().link_event(ev);
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

    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((conn, _)) => {
                let ctl = ctl.clone();
                let _ = std::thread::Builder::new().name("client".into()).spawn(move || serve(conn, &ctl));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Wait for a client; a signal or the timeout brings us back to check `stop`.
                let mut pfd = libc::pollfd { fd: listener.as_raw_fd(), events: libc::POLLIN, revents: 0 };
                // SAFETY: one live pollfd.
                unsafe { libc::poll(&mut pfd, 1, 200) };
            }
            Err(e) => warn!("accept: {e}"),
        }
    }
    info!("stopping");
    drop(stopping);
    let _ = housekeeping.join();
    let _ = link_watch.join();
    ctl.lock().unwrap().shutdown();
    let _ = std::fs::remove_file(&o.socket);
    info!("stopped");
    Ok(())
}

/// Answer the requests of one CLI connection, one JSON line each.
fn serve(conn: UnixStream, ctl: &Mutex<Controller>) {
    let _ = conn.set_nonblocking(false);
    let Ok(mut out) = conn.try_clone() else { return };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        let resp = match serde_json::from_str::<Request>(&line) {
            // A trace keeps the connection to itself until it ends.
            Ok(Request::Trace(t)) => return crate::trace::session::run(&out, ctl, &t),
            Ok(req) => match ctl.lock().unwrap().handle(req) {
                Ok(v) => Response::Ok(v),
                Err(e) => Response::Error(e),
            },
            Err(e) => {
                error!("bad request: {e}");
                Response::Error(format!("bad request: {e}"))
            }
        };
        let mut text = serde_json::to_string(&resp).expect("responses serialize");
        text.push('\n');
        if out.write_all(text.as_bytes()).is_err() {
            return;
        }
    }
}
