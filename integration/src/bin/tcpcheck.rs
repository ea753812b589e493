//! tcpcheck: move a deterministic byte stream over TCP and fingerprint what arrived.
//!   tcpcheck serve PORT DELAY_MS   accept one connection, wait DELAY_MS (so data piles up in
//!                                  the socket), read to the end, print "BYTES HASH"
//!   tcpcheck send IP PORT MB       send MB MiB of the stream, print "BYTES HASH"
//! Both sides print the same line when every byte arrived intact and in order.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

/// FNV-1a over the stream: order-sensitive, cheap.
struct Fnv(u64);
impl Fnv {
    fn feed(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ x as u64).wrapping_mul(0x100000001b3);
        }
    }
}

/// The stream: xorshift bytes, so a stale or reordered block changes the hash.
fn fill(buf: &mut [u8], state: &mut u64) {
    for chunk in buf.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        let b = state.to_le_bytes();
        chunk.copy_from_slice(&b[..chunk.len()]);
    }
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let mut h = Fnv(0xcbf29ce484222325);
    let mut total = 0u64;
    let mut buf = vec![0u8; 1 << 16];
    match a.get(1).map(String::as_str) {
        Some("serve") => {
            let l = TcpListener::bind(("0.0.0.0", a[2].parse::<u16>().unwrap())).unwrap();
            println!("listening");
            let (mut s, peer) = l.accept().unwrap();
            println!("from {peer}");
            std::thread::sleep(std::time::Duration::from_millis(a[3].parse().unwrap()));
            loop {
                let n = s.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                h.feed(&buf[..n]);
                total += n as u64;
            }
        }
        Some("send") => {
            let mut s = TcpStream::connect((a[2].as_str(), a[3].parse::<u16>().unwrap())).unwrap();
            let mut state = 0x9e3779b97f4a7c15u64;
            let mb: u64 = a[4].parse().unwrap();
            for _ in 0..mb * 16 {
                fill(&mut buf, &mut state);
                s.write_all(&buf).unwrap();
                h.feed(&buf);
                total += buf.len() as u64;
            }
        }
        Some("udp-serve") => {
            // Answer one datagram with its own bytes; say who sent it.
            let u = std::net::UdpSocket::bind(("0.0.0.0", a[2].parse::<u16>().unwrap())).unwrap();
            println!("listening");
            let (n, peer) = u.recv_from(&mut buf).unwrap();
            println!("from {peer}");
            u.send_to(&buf[..n], peer).unwrap();
            return;
        }
        Some("udp-ask") => {
            // Connected, so an ICMP port unreachable comes back as "refused".
            let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            u.set_read_timeout(Some(std::time::Duration::from_secs(3))).unwrap();
            u.connect((a[2].as_str(), a[3].parse::<u16>().unwrap())).unwrap();
            u.send(b"are you there").unwrap();
            match u.recv(&mut buf) {
                Ok(n) => println!("{}", String::from_utf8_lossy(&buf[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => println!("refused"),
                Err(e) => panic!("no answer: {e}"),
            }
            return;
        }
        _ => {
            eprintln!("usage: tcpcheck serve PORT DELAY_MS | send IP PORT MB | udp-serve PORT | udp-ask IP PORT");
            std::process::exit(2);
        }
    }
    println!("{total} {:016x}", h.0);
}
