//! Writing a trace as a capture file: pcapng (one interface block per port, named after it,
//! and each frame's direction) or classic pcap (frames only), as tcpdump and Wireshark read.

use super::Dir;
use crate::fdb::PortId;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;
use std::borrow::Cow;
use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// pcapng: port names and directions (Wireshark, tshark, tcpdump)
    Pcapng,
    /// classic pcap: frames and times only (any tool)
    Pcap,
}

pub struct CaptureWriter<W: Write> {
    out: Out<W>,
    snaplen: u32,
    /// The daemon's port ids and their names, as announced.
    names: HashMap<PortId, String>,
    /// pcapng interface index of each port id that has had a frame.
    interfaces: HashMap<PortId, u32>,
}

enum Out<W: Write> {
    Ng(PcapNgWriter<W>),
    /// Written here: pcap-file's pcap writer cannot hand back its writer to flush it.
    Classic(W),
}

fn io_err(e: pcap_file::PcapError) -> String {
    format!("writing the capture: {e}")
}

impl<W: Write> CaptureWriter<W> {
    /// Start the file (its header goes out at once).
    pub fn new(w: W, format: Format, snaplen: u32) -> Result<Self, String> {
        let out = match format {
            Format::Pcapng => Out::Ng(PcapNgWriter::new(w).map_err(io_err)?),
            Format::Pcap => {
                let mut w = w;
                // Magic for nanosecond times, version 2.4, no zone, snap length, Ethernet.
                let mut h = Vec::with_capacity(24);
                h.extend_from_slice(&0xa1b2_3c4d_u32.to_le_bytes());
                h.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                h.extend_from_slice(&snaplen.to_le_bytes());
                h.extend_from_slice(&1u32.to_le_bytes());
                w.write_all(&h).map_err(|e| format!("writing the capture: {e}"))?;
                Out::Classic(w)
            }
        };
        Ok(CaptureWriter { out, snaplen, names: HashMap::new(), interfaces: HashMap::new() })
    }

    pub fn port(&mut self, id: PortId, name: String) {
        self.names.insert(id, name);
    }

    pub fn frame(&mut self, port: PortId, dir: Dir, ts_ns: u64, orig_len: u32, data: &[u8]) -> Result<(), String> {
        let timestamp = Duration::from_nanos(ts_ns);
        match &mut self.out {
            Out::Classic(w) => {
                let mut h = [0u8; 16];
                h[0..4].copy_from_slice(&(timestamp.as_secs() as u32).to_le_bytes());
                h[4..8].copy_from_slice(&timestamp.subsec_nanos().to_le_bytes());
                h[8..12].copy_from_slice(&(data.len() as u32).to_le_bytes());
                h[12..16].copy_from_slice(&orig_len.to_le_bytes());
                w.write_all(&h).and_then(|_| w.write_all(data)).map_err(|e| format!("writing the capture: {e}"))?;
            }
            Out::Ng(w) => {
                let next = self.interfaces.len() as u32;
                let interface_id = match self.interfaces.get(&port) {
                    Some(&i) => i,
                    None => {
                        let name = self.names.get(&port).cloned().unwrap_or_else(|| format!("port{port}"));
                        w.write_pcapng_block(InterfaceDescriptionBlock {
                            linktype: DataLink::ETHERNET,
                            snaplen: self.snaplen,
                            options: vec![
                                InterfaceDescriptionOption::IfName(name.into()),
                                InterfaceDescriptionOption::IfTsResol(9), // nanoseconds
                            ],
                        })
                        .map_err(io_err)?;
                        self.interfaces.insert(port, next);
                        next
                    }
                };
                w.write_pcapng_block(EnhancedPacketBlock {
                    interface_id,
                    timestamp,
                    original_len: orig_len,
                    data: Cow::Borrowed(data),
                    // epb_flags bits 0-1: 1 inbound, 2 outbound.
                    options: vec![EnhancedPacketOption::Flags(dir as u32)],
                })
                .map_err(io_err)?;
            }
        }
        Ok(())
    }

    pub fn get_mut(&mut self) -> &mut W {
        match &mut self.out {
            Out::Ng(w) => w.get_mut(),
            Out::Classic(w) => w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    #[test]
    fn pcapng_names_ports_and_directions() {
        let mut w = CaptureWriter::new(Vec::new(), Format::Pcapng, 65535).unwrap();
        w.port(4, "veth-a".into());
        w.port(9, "vm0".into());
        w.frame(4, Dir::In, 1_000_000_007, 60, &[1; 60]).unwrap();
        w.frame(9, Dir::Out, 1_000_000_008, 60, &[2; 60]).unwrap();
        w.frame(4, Dir::Out, 1_000_000_009, 1500, &[3; 100]).unwrap();
        let bytes = w.get_mut().clone();
        let mut r = PcapNgReader::new(&bytes[..]).unwrap();
        let mut seen = Vec::new();
        while let Some(b) = r.next_block() {
            match b.unwrap() {
                Block::InterfaceDescription(i) => seen.push(format!("if {:?}", i.options[0])),
                Block::EnhancedPacket(p) => {
                    seen.push(format!("{} {:?} {} {}", p.interface_id, p.options, p.original_len, p.data.len()))
                }
                _ => {}
            }
        }
        assert_eq!(
            seen,
            [
                "if IfName(\"veth-a\")",
                "0 [Flags(1)] 60 60",
                "if IfName(\"vm0\")",
                "1 [Flags(2)] 60 60",
                "0 [Flags(2)] 1500 100"
            ]
        );
    }

    #[test]
    fn classic_pcap_reads_back() {
        let mut w = CaptureWriter::new(Vec::new(), Format::Pcap, 65535).unwrap();
        w.frame(4, Dir::In, 1_000_000_007, 1500, &[1; 60]).unwrap();
        let bytes = w.get_mut().clone();
        let mut r = pcap_file::pcap::PcapReader::new(&bytes[..]).unwrap();
        assert_eq!(r.header().datalink, DataLink::ETHERNET);
        let p = r.next_packet().unwrap().unwrap();
        assert_eq!((p.timestamp, p.orig_len, p.data.len()), (Duration::from_nanos(1_000_000_007), 1500, 60));
        assert!(r.next_packet().is_none());
    }
}
