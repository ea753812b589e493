//! How a trace travels from the daemon to the CLI: after the JSON answer line, the socket
//! carries binary messages, little-endian, each led by a one-byte kind.
//!
//! ```text
//! PORT  1  u16 port id, u16 name length, name        (before the port's first frame)
//! FRAME 2  u16 port id, u8 direction, u64 time (ns since 1970), u32 frame length,
//!          u32 captured length, captured bytes
//! END   3  u64 copies captured, u64 copies dropped     (last: the trace is over)
//! ```
//!
//! The CLI asks for the end by writing one line (`stop`) or by closing its side.

use super::{Dir, Record};
use crate::fdb::PortId;
use std::io::{self, Read, Write};

const PORT: u8 = 1;
const FRAME: u8 = 2;
const END: u8 = 3;

pub fn write_port(w: &mut impl Write, id: PortId, name: &str) -> io::Result<()> {
    w.write_all(&[PORT])?;
    w.write_all(&id.to_le_bytes())?;
    w.write_all(&(name.len() as u16).to_le_bytes())?;
    w.write_all(name.as_bytes())
}

pub fn write_frame(w: &mut impl Write, r: &Record) -> io::Result<()> {
    let mut h = [0u8; 20];
    h[0] = FRAME;
    h[1..3].copy_from_slice(&r.port.to_le_bytes());
    h[3] = r.dir as u8;
    h[4..12].copy_from_slice(&r.ts_ns.to_le_bytes());
    h[12..16].copy_from_slice(&r.orig_len.to_le_bytes());
    h[16..20].copy_from_slice(&(r.data.len() as u32).to_le_bytes());
    w.write_all(&h)?;
    w.write_all(&r.data)
}

pub fn write_end(w: &mut impl Write, captured: u64, dropped: u64) -> io::Result<()> {
    w.write_all(&[END])?;
    w.write_all(&captured.to_le_bytes())?;
    w.write_all(&dropped.to_le_bytes())
}

/// One message as read by the CLI. A frame's bytes are left in the reader's buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Msg {
    Port { id: PortId, name: String },
    Frame { port: PortId, dir: Dir, ts_ns: u64, orig_len: u32 },
    End { captured: u64, dropped: u64 },
}

/// Reads messages, keeping the last frame's bytes in `data` (one buffer, reused).
pub struct Reader<R> {
    inner: R,
    pub data: Vec<u8>,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("bad trace stream from the daemon: {what}"))
}

impl<R: Read> Reader<R> {
    pub fn new(inner: R) -> Self {
        Reader { inner, data: Vec::new() }
    }

    fn take<const N: usize>(&mut self) -> io::Result<[u8; N]> {
        let mut b = [0u8; N];
        self.inner.read_exact(&mut b)?;
        Ok(b)
    }

    pub fn read_msg(&mut self) -> io::Result<Msg> {
        let [kind] = self.take::<1>()?;
        match kind {
            PORT => {
                let id = u16::from_le_bytes(self.take()?);
                let len = u16::from_le_bytes(self.take()?) as usize;
                let mut name = vec![0u8; len];
                self.inner.read_exact(&mut name)?;
                Ok(Msg::Port { id, name: String::from_utf8(name).map_err(|_| bad("port name not UTF-8"))? })
            }
            FRAME => {
                let h: [u8; 19] = self.take()?;
                let port = u16::from_le_bytes([h[0], h[1]]);
                let dir = match h[2] {
                    1 => Dir::In,
                    2 => Dir::Out,
                    _ => return Err(bad("unknown direction")),
                };
                let ts_ns = u64::from_le_bytes(h[3..11].try_into().expect("8 bytes"));
                let orig_len = u32::from_le_bytes(h[11..15].try_into().expect("4 bytes"));
                let cap = u32::from_le_bytes(h[15..19].try_into().expect("4 bytes")) as usize;
                if cap > 1 << 20 {
                    return Err(bad("frame over 1 MB"));
                }
                self.data.resize(cap, 0);
                self.inner.read_exact(&mut self.data)?;
                Ok(Msg::Frame { port, dir, ts_ns, orig_len })
            }
            END => {
                let captured = u64::from_le_bytes(self.take()?);
                let dropped = u64::from_le_bytes(self.take()?);
                Ok(Msg::End { captured, dropped })
            }
            k => Err(bad(&format!("unknown message kind {k}"))),
        }
    }

    pub fn inner(&self) -> &R {
        &self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let mut buf = Vec::new();
        write_port(&mut buf, 7, "veth-a").unwrap();
        let r = Record { port: 7, dir: Dir::Out, ts_ns: 1_700_000_000_123_456_789, orig_len: 1500, data: vec![9; 64] };
        write_frame(&mut buf, &r).unwrap();
        write_end(&mut buf, 10, 2).unwrap();
        let mut rd = Reader::new(&buf[..]);
        assert_eq!(rd.read_msg().unwrap(), Msg::Port { id: 7, name: "veth-a".into() });
        assert_eq!(rd.read_msg().unwrap(), Msg::Frame { port: 7, dir: Dir::Out, ts_ns: r.ts_ns, orig_len: 1500 });
        assert_eq!(rd.data, vec![9; 64]);
        assert_eq!(rd.read_msg().unwrap(), Msg::End { captured: 10, dropped: 2 });
        assert_eq!(rd.read_msg().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        assert!(Reader::new(&[9u8][..]).read_msg().is_err());
    }
}
