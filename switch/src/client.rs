//! The CLI's side of the control socket.

use crate::protocol::{Request, Response};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Connect to the daemon, saying clearly why not.
pub fn connect(socket: &Path) -> Result<UnixStream, String> {
    UnixStream::connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
            "the vswitch daemon is not running (nothing listens on {}); start it with: sudo vswitch daemon",
            socket.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!("permission denied on {}: run as root", socket.display()),
        _ => format!("cannot reach the daemon on {}: {e}", socket.display()),
    })
}

pub fn call(socket: &Path, req: &Request) -> Result<serde_json::Value, String> {
    let mut s = connect(socket)?;
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    // A daemon that refuses the connection (too many open) says why and closes: its reason
    // is still there to read when sending fails.
    let sent = s.write_all(line.as_bytes());
    let mut resp = String::new();
    let read = BufReader::new(s).read_line(&mut resp);
    match (sent, read) {
        (_, Ok(n)) if n > 0 => {}
        (Err(e), _) => return Err(format!("sending to the daemon: {e}")),
        (Ok(()), Err(e)) => return Err(format!("reading from the daemon: {e}")),
        (Ok(()), Ok(_)) => {}
    }
    if resp.is_empty() {
        return Err("the daemon closed the connection without answering: the command may or may not have \
                    taken effect (check with: vswitch network ls, vswitch ps)"
            .into());
    }
    match serde_json::from_str(&resp).map_err(|e| format!("bad answer from the daemon: {e}"))? {
        Response::Ok(v) => Ok(v),
        Response::Error(e) => Err(e),
    }
}
