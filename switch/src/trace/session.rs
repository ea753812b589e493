//! The daemon's side of one `vswitch trace`: start the tracer, stream its copies to the
//! client until it says stop (or goes away), then stop the tracer and send the totals.

use super::{stream, Record};
use crate::control::Controller;
use crate::fdb::PortId;
use crate::protocol::{Response, TraceRequest, TraceStarted};
use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::Mutex;

/// Copies streamed between checks for the client's stop.
const BURST: usize = 512;

pub fn run(conn: &UnixStream, ctl: &Mutex<Controller>, req: &TraceRequest) {
    let started = crate::daemon::lock(ctl).start_trace(req);
    let (tracer, ports) = match started {
        Ok(s) => s,
        Err(e) => return answer(conn, &Response::Error(e)),
    };
    answer(conn, &Response::Ok(serde_json::to_value(TraceStarted { ports }).expect("json")));
    // Streaming gets only the CPU time forwarding leaves: under load, copies are dropped
    // rather than frames slowed. Back to normal priority whenever it takes the controller's
    // lock, so it never holds up the CLI or housekeeping while starved.
    idle_priority(true);
    let mut s = Streamer { out: BufWriter::with_capacity(256 << 10, conn), announced: HashSet::new(), ctl };
    let streamed: io::Result<()> = (|| loop {
        let mut n = 0;
        while n < BURST {
            let Some(r) = tracer.next() else { break };
            let sent = s.send(&r);
            tracer.recycle(r);
            sent?;
            n += 1;
        }
        if n == 0 {
            s.out.flush()?;
        }
        // Between bursts, and while idle up to 20 ms: has the client said stop (or gone)?
        if client_spoke(conn, if n == 0 { 20 } else { 0 }) {
            return Ok(());
        }
    })();
    idle_priority(false);
    crate::daemon::lock(ctl).stop_trace(&tracer);
    if streamed.is_err() {
        return; // the client is gone
    }
    // The workers have let go: what is queued now is all there will be.
    let mut finish = || -> io::Result<()> {
        while let Some(r) = tracer.next() {
            s.send(&r)?;
        }
        let (captured, dropped) = tracer.counts();
        stream::write_end(&mut s.out, captured, dropped)?;
        s.out.flush()
    };
    let _ = finish();
}

struct Streamer<'a> {
    out: BufWriter<&'a UnixStream>,
    /// Ports whose names the client has been told.
    announced: HashSet<PortId>,
    ctl: &'a Mutex<Controller>,
}

impl Streamer<'_> {
    fn send(&mut self, r: &Record) -> io::Result<()> {
        if self.announced.insert(r.port) {
            idle_priority(false);
            let name = crate::daemon::lock(self.ctl).port_name(r.port).unwrap_or_else(|| format!("port{}", r.port));
            idle_priority(true);
            stream::write_port(&mut self.out, r.port, &name)?;
        }
        stream::write_frame(&mut self.out, r)
    }
}

fn answer(mut conn: &UnixStream, r: &Response) {
    let mut text = serde_json::to_string(r).expect("responses serialize");
    text.push('\n');
    let _ = conn.write_all(text.as_bytes());
}

/// SCHED_IDLE for this thread, or back to the normal policy.
pub fn idle_priority(idle: bool) {
    let policy = if idle { libc::SCHED_IDLE } else { libc::SCHED_OTHER };
    // SAFETY: changes this thread's policy; the sched_param lives for the call.
    unsafe { libc::sched_setscheduler(0, policy, &libc::sched_param { sched_priority: 0 }) };
}

/// Wait up to `ms` for the client to write or hang up.
fn client_spoke(conn: &UnixStream, ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd: conn.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one live pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}
