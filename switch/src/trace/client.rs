//! The CLI's side of `vswitch trace`: ask the daemon for a trace, write what it streams as a
//! capture file, and stop on Ctrl-C, `--count` or `--duration`.

use super::stream::{Msg, Reader};
use super::writer::{CaptureWriter, Format};
use crate::client::connect;
use crate::protocol::{Request, Response, TraceRequest, TraceStarted};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Options {
    pub request: TraceRequest,
    /// `-` for standard output.
    pub output: String,
    pub format: Format,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// What a trace did.
#[derive(serde::Serialize, Debug)]
pub struct Summary {
    pub ports: Vec<String>,
    /// Frames written to the file.
    pub captured: u64,
    /// Copies the switch dropped because the trace could not keep up (frames were forwarded).
    pub dropped: u64,
}

pub fn run(socket: &Path, o: Options) -> Result<Summary, String> {
    let to_stdout = o.output == "-";
    // Opened before anything starts (an unwritable path fails at once), and safely: a trace
    // run as root never follows a symlink someone planted, and never truncates a file it did
    // not create. A pipe or a device that is there already (a FIFO Wireshark reads) is fine.
    let (file, existed) = if to_stdout { (None, true) } else { open_capture(&o.output)? };
    let result = trace(socket, &o, || match file {
        None => Ok(Box::new(std::io::stdout().lock()) as Box<dyn Write>),
        Some(f) => Ok(Box::new(f)),
    });
    if result.as_ref().is_err_and(|(started, _)| !started) && !existed {
        let _ = std::fs::remove_file(&o.output); // the trace never started: leave nothing behind
    }
    result.map_err(|(_, e)| e)
}

/// Open the capture file: created new, or an existing pipe or device; never through a
/// symlink, never an existing regular file. Returns it and whether it was there before.
fn open_capture(path: &str) -> Result<(Option<std::fs::File>, bool), String> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let shown = |e: std::io::Error| format!("cannot write {path}: {e}");
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => {
            Err(format!("{path} is a symbolic link: a trace writes only to a file of its own (give the real path)"))
        }
        Ok(m) if m.file_type().is_fifo() || m.file_type().is_char_device() => {
            let f = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(shown)?;
            Ok((Some(f), true))
        }
        Ok(_) => Err(format!("{path} exists: a trace never overwrites a file (remove it, or choose another name)")),
        Err(_) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(shown)?;
            Ok((Some(f), false))
        }
    }
}

/// The trace itself; on error, also whether it had started.
fn trace(
    socket: &Path,
    o: &Options,
    open: impl FnOnce() -> Result<Box<dyn Write>, String>,
) -> Result<Summary, (bool, String)> {
    let not_started = |e: String| (false, e);
    let mut conn = connect(socket).map_err(not_started)?;
    let mut line = serde_json::to_string(&Request::Trace(o.request.clone())).expect("requests serialize");
    line.push('\n');
    conn.write_all(line.as_bytes()).map_err(|e| not_started(format!("sending to the daemon: {e}")))?;
    let mut input = BufReader::with_capacity(256 << 10, conn.try_clone().map_err(|e| not_started(e.to_string()))?);
    let mut answer = String::new();
    input.read_line(&mut answer).map_err(|e| not_started(format!("reading from the daemon: {e}")))?;
    let ports = match serde_json::from_str(&answer) {
        Ok(Response::Ok(v)) => serde_json::from_value::<TraceStarted>(v).map_err(|e| not_started(e.to_string()))?.ports,
        Ok(Response::Error(e)) => return Err(not_started(e)),
        Err(_) if answer.is_empty() => return Err(not_started("the daemon closed the connection".into())),
        Err(e) => return Err(not_started(format!("bad answer from the daemon: {e}"))),
    };
    let started = |e: String| (true, e);
    let out = BufWriter::with_capacity(256 << 10, open().map_err(started)?);
    // Writing the capture gets only the CPU time forwarding leaves (as the daemon's side
    // does): a trace must not slow the switch down, it drops copies instead.
    super::session::idle_priority(true);
    eprintln!("tracing {} (Ctrl-C to stop)", if ports.is_empty() { "(no ports yet)".into() } else { ports.join(", ") });

    // A second thread asks the daemon to stop: on Ctrl-C, at the deadline, or when told to.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // The first asks the daemon to stop; a second, while that is under way, exits.
        signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone()).map_err(|e| started(e.to_string()))?;
        signal_hook::flag::register(sig, stop.clone()).map_err(|e| started(e.to_string()))?;
    }
    let hangup = conn.try_clone().map_err(|e| started(e.to_string()))?;
    let deadline = o.duration.map(|d| Instant::now() + d);
    let stopper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = conn.write_all(b"stop\n");
        })
    };

    let mut written = 0u64;
    let result = (|| {
        let mut w = CaptureWriter::new(out, o.format, o.request.snaplen).map_err(started)?;
        let mut rd = Reader::new(input);
        let dropped = loop {
            // Hand what we have to the reader of the file before waiting for more.
            if rd.inner().buffer().is_empty() {
                w.get_mut().flush().map_err(|e| started(format!("writing the capture: {e}")))?;
            }
            let msg = rd.read_msg().map_err(|e| match e.kind() {
                std::io::ErrorKind::UnexpectedEof => started("the daemon ended the trace (was it stopped?)".into()),
                _ => started(format!("reading the trace: {e}")),
            })?;
            match msg {
                Msg::Port { id, name } => w.port(id, name),
                Msg::Frame { port, dir, ts_ns, orig_len } => {
                    if o.count.is_none_or(|c| written < c) {
                        w.frame(port, dir, ts_ns, orig_len, &rd.data).map_err(started)?;
                        written += 1;
                    }
                    if o.count.is_some_and(|c| written >= c) {
                        stop.store(true, Ordering::Relaxed);
                    }
                }
                Msg::End { dropped, .. } => break dropped,
            }
        };
        w.get_mut().flush().map_err(|e| started(format!("writing the capture: {e}")))?;
        Ok(dropped)
    })();
    // However it ended, the daemon stops streaming: told so, or the connection goes.
    stop.store(true, Ordering::Relaxed);
    let _ = stopper.join();
    let _ = hangup.shutdown(std::net::Shutdown::Both);
    let dropped = result?;
    Ok(Summary { ports, captured: written, dropped })
}
