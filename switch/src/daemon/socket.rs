//! The control socket, served by one event loop (mio): bounded in every way a stranger could
//! push it. At most `MAX_CONNECTIONS` at once (more are told so and closed), a request line
//! of at most `MAX_REQUEST` bytes (longer: a clear error, and the connection closes), idle
//! connections closed after `IDLE`, repeated errors logged once in a while, and running out
//! of file descriptors (EMFILE) survived by closing the newcomer with a spare descriptor kept
//! for it. A trace takes its connection to a thread of its own.

use super::{lock, RateLimited};
use crate::control::Controller;
use crate::protocol::{Request, Response};
use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::warn;

/// At most this many connections, and at most a quarter of the descriptors the daemon may
/// have (ports and the kernel's sockets need the rest).
pub const MAX_CONNECTIONS: usize = 256;
pub const MAX_REQUEST: usize = 1 << 20;
pub const IDLE: Duration = Duration::from_secs(60);
const LISTENER: Token = Token(usize::MAX);

/// Connections refused over the cap: told why, then closed once the client has read it (or
/// after a second), so it reads the reason and not a reset. At most a quarter as many as the
/// connections wait so.
struct Caps {
    conns: usize,
    refused: usize,
}

impl Caps {
    fn from_fd_limit() -> Caps {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit fills the rlimit we own.
        let soft =
            if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur as usize } else { 1024 };
        let conns = (soft / 4).clamp(4, MAX_CONNECTIONS);
        Caps { conns, refused: (conns / 4).max(1) }
    }
}

struct Refused {
    stream: UnixStream,
    until: Instant,
}

struct Conn {
    stream: UnixStream,
    input: Vec<u8>,
    output: Vec<u8>,
    last: Instant,
    /// Close once the output is written.
    closing: bool,
}

pub fn serve(
    listener: std::os::unix::net::UnixListener,
    ctl: Arc<Mutex<Controller>>,
    stop: &AtomicBool,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = UnixListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(256);
    let mut conns: HashMap<Token, Conn> = HashMap::new();
    let mut door = Door::new(listener);
    let mut bad_requests = RateLimited::new("bad control requests");
    // The listener is edge-triggered: connections left waiting (out of descriptors) get no
    // new event, so they are tried again on every turn until the backlog is empty.
    let mut backlog = false;
    while !stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(if backlog { 20 } else { 200 }))) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue, // a signal: stop is checked
            other => other?,
        }
        if backlog {
            backlog = !door.accept(&poll, &mut conns);
        }
        for ev in events.iter() {
            if ev.token() == LISTENER {
                backlog = !door.accept(&poll, &mut conns);
                continue;
            }
            let t = ev.token();
            let Some(c) = conns.get_mut(&t) else { continue };
            let mut alive = true;
            if ev.is_readable() {
                alive = read(c, &ctl, &mut bad_requests);
            }
            if alive && !c.output.is_empty() {
                alive = flush(c);
            }
            if c.closing && c.output.is_empty() {
                alive = false;
            }
            if alive {
                let want =
                    if c.output.is_empty() { Interest::READABLE } else { Interest::READABLE | Interest::WRITABLE };
                let _ = poll.registry().reregister(&mut c.stream, t, want);
            } else if let Some(mut c) = conns.remove(&t) {
                let _ = poll.registry().deregister(&mut c.stream);
            }
        }
        // Trace requests leave the loop with their connection.
        let traces: Vec<Token> =
            conns.iter().filter(|(_, c)| c.input.starts_with(TRACE_MARK)).map(|(t, _)| *t).collect();
        for t in traces {
            if let Some(mut c) = conns.remove(&t) {
                let _ = poll.registry().deregister(&mut c.stream);
                start_trace(c, &ctl);
            }
        }
        let now = Instant::now();
        door.refused.retain_mut(|r| {
            let mut buf = [0u8; 4096];
            loop {
                match r.stream.read(&mut buf) {
                    Ok(0) => return false, // the client read the reason and closed
                    Ok(_) => continue,     // its request: discarded
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return now < r.until,
                    Err(_) => return false,
                }
            }
        });
        conns.retain(|_, c| {
            let keep = now.duration_since(c.last) < IDLE;
            if !keep {
                let _ = poll.registry().deregister(&mut c.stream);
            }
            keep
        });
    }
    Ok(())
}

/// The listening side: who gets in, who is told to come back later.
struct Door {
    listener: UnixListener,
    caps: Caps,
    refused: Vec<Refused>,
    next: usize,
    /// Kept open to be given up when the process is out of descriptors: then a newcomer can
    /// still be accepted and closed, instead of waking the loop forever.
    spare: Option<std::fs::File>,
    errors: RateLimited,
}

impl Door {
    fn new(listener: UnixListener) -> Door {
        Door {
            listener,
            caps: Caps::from_fd_limit(),
            refused: Vec::new(),
            next: 0,
            spare: std::fs::File::open("/dev/null").ok(),
            errors: RateLimited::new("accepting control connections"),
        }
    }

    /// Accept every waiting connection: registered, or told "too many" and closed. Returns
    /// whether the backlog is empty.
    fn accept(&mut self, poll: &Poll, conns: &mut HashMap<Token, Conn>) -> bool {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    if conns.len() >= self.caps.conns {
                        self.refuse(stream);
                        continue;
                    }
                    self.next = self.next.wrapping_add(1) % (usize::MAX - 1);
                    let t = Token(self.next);
                    if poll.registry().register(&mut stream, t, Interest::READABLE).is_ok() {
                        let c = Conn {
                            stream,
                            input: Vec::new(),
                            output: Vec::new(),
                            last: Instant::now(),
                            closing: false,
                        };
                        conns.insert(t, c);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) => {
                    self.errors.note(&e.to_string());
                    // Give up the spare, take the newcomer and close it, take the spare back.
                    self.spare = None;
                    if let Ok((s, _)) = self.listener.accept() {
                        drop(s);
                    }
                    self.spare = std::fs::File::open("/dev/null").ok();
                    return false;
                }
                Err(e) => {
                    self.errors.note(&e.to_string());
                    return false;
                }
            }
        }
    }

    /// Tell a newcomer over the cap why, and close it once it has read that.
    fn refuse(&mut self, mut stream: UnixStream) {
        let why = format!("the daemon has {} connections open: try again when one closes", self.caps.conns);
        let _ = stream.write_all(&reply(&Response::Error(why)));
        let _ = stream.shutdown(std::net::Shutdown::Write);
        self.errors.note("too many connections");
        if self.refused.len() < self.caps.refused {
            self.refused.push(Refused { stream, until: Instant::now() + Duration::from_secs(1) });
        }
    }
}

/// A trace request waiting to be handed over (the line, marked, stays in `input`).
const TRACE_MARK: &[u8] = b"\0trace\0";

/// Read what the client sent and answer each whole line. False: close the connection.
fn read(c: &mut Conn, ctl: &Mutex<Controller>, bad: &mut RateLimited) -> bool {
    let mut buf = [0u8; 16 << 10];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => {
                // The client is done sending: answer what it asked, then close.
                c.closing = true;
                break;
            }
            Ok(n) => {
                c.last = Instant::now();
                c.input.extend_from_slice(&buf[..n]);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
        if c.input.len() > MAX_REQUEST && !c.input.contains(&b'\n') {
            bad.note("request too long");
            c.input.clear();
            c.output.extend(reply(&Response::Error(format!("request too long: over {MAX_REQUEST} bytes"))));
            c.closing = true;
            return true;
        }
    }
    while let Some(end) = c.input.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = c.input.drain(..=end).collect();
        let resp = match std::str::from_utf8(&line[..end]).map_err(|_| "not UTF-8".to_string()) {
            Err(e) => Response::Error(format!("bad request: {e}")),
            Ok(text) => match serde_json::from_str::<Request>(text) {
                Ok(Request::Trace(_)) => {
                    // Handed to a thread of its own after this pass, with the request.
                    let mut marked = TRACE_MARK.to_vec();
                    marked.extend_from_slice(&line);
                    marked.extend_from_slice(&c.input);
                    c.input = marked;
                    return true;
                }
                Ok(req) => handle(ctl, req),
                Err(e) => {
                    bad.note(&e.to_string());
                    Response::Error(format!("bad request: {e}"))
                }
            },
        };
        c.output.extend(reply(&resp));
    }
    true
}

/// Run a request on the controller. A panic in it is caught, logged and answered: the
/// control plane stays up (the lock recovers, see `lock`).
fn handle(ctl: &Mutex<Controller>, req: Request) -> Response {
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| lock(ctl).handle(req)));
    match r {
        Ok(Ok(v)) => Response::Ok(v),
        Ok(Err(e)) => Response::Error(e),
        Err(_) => Response::Error("internal error in the daemon (see its log); nothing else was affected".into()),
    }
}

fn reply(r: &Response) -> Vec<u8> {
    let mut text = serde_json::to_vec(r).expect("responses serialize");
    text.push(b'\n');
    text
}

/// Write what waits; false when the client is gone.
fn flush(c: &mut Conn) -> bool {
    while !c.output.is_empty() {
        match c.stream.write(&c.output) {
            Ok(0) => return false,
            Ok(n) => {
                c.output.drain(..n);
                c.last = Instant::now();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
    true
}

/// A trace streams for as long as it runs: its connection goes to a thread of its own.
fn start_trace(c: Conn, ctl: &Arc<Mutex<Controller>>) {
    let line_end = c.input.iter().position(|&b| b == b'\n').unwrap_or(c.input.len());
    let line = &c.input[TRACE_MARK.len()..line_end];
    let req = match serde_json::from_slice::<Request>(line) {
        Ok(Request::Trace(t)) => t,
        _ => return,
    };
    // SAFETY: the descriptor leaves the mio stream (into_raw_fd) and is owned by exactly one
    // std stream from here on.
    let stream = unsafe { std::os::unix::net::UnixStream::from_raw_fd(c.stream.into_raw_fd()) };
    if stream.set_nonblocking(false).is_err() {
        return;
    }
    let ctl = ctl.clone();
    let spawned =
        std::thread::Builder::new().name("trace".into()).spawn(move || crate::trace::session::run(&stream, &ctl, &req));
    if let Err(e) = spawned {
        warn!("cannot start a trace: {e}");
    }
}
