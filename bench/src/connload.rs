//! New TCP connections per second: a server that accepts and closes at once, and a client
//! that opens connections as fast as a few threads can, each waiting for the server's FIN
//! before it closes (so the server holds TIME_WAIT, not the client's ports). Every
//! connection crosses the switch's NAT twice (SYN/SYN-ACK/ACK, FIN/ACK both ways): this
//! measures session creation and teardown, not bytes.

use crate::sys::Res;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Accept on `port` and close each connection at once, for `secs` seconds.
pub fn serve(port: u16, secs: f64) -> Res<()> {
    let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| format!("cannot listen on {port}: {e}"))?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        match l.accept() {
            Ok((s, _)) => drop(s),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_micros(50)),
            Err(e) => return Err(format!("accept: {e}")),
        }
    }
    Ok(())
}

/// Connect to `ip:port` from `threads` threads for `secs` seconds; connections per second
/// completed (connected and closed by the server).
pub fn load(ip: Ipv4Addr, port: u16, secs: f64, threads: usize) -> Res<f64> {
    let to = SocketAddr::from((ip, port));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                while !stop.load(Relaxed) {
                    match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
                        Ok(mut s) => {
                            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                            match s.read(&mut buf) {
                                Ok(0) => done.fetch_add(1, Relaxed),
                                _ => failed.fetch_add(1, Relaxed),
                            };
                        }
                        Err(_) => {
                            failed.fetch_add(1, Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Relaxed);
    for w in workers {
        let _ = w.join();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let (n, bad) = (done.load(Relaxed), failed.load(Relaxed));
    if n == 0 {
        return Err(format!("no connection to {to} completed ({bad} failed)"));
    }
    eprintln!("{n} connections in {elapsed:.2} s, {bad} failed");
    Ok(n as f64 / elapsed)
}
