//! The frame generator (`vswitch-bench gen`, run inside a host's namespace): fixed-size frames
//! to one destination from N rotating source MACs, as fast as one core can hand them to an
//! AF_PACKET TX ring (frames built once in the ring; only the source changes per frame).
//! Written here rather than using trafgen: no extra package, and the source-MAC rotation the
//! scale scenario needs is one store.

use crate::sys::Res;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};
use vswitch::netdev::setsockopt;

const SLOT: usize = 2048;
const SLOTS: usize = 1024;
/// Where a frame starts in a TPACKET_V2 slot: the header, aligned to 16 bytes.
const DATA_OFF: usize = 32;
const TP_STATUS_AVAILABLE: u32 = 0;
const TP_STATUS_SEND_REQUEST: u32 = 1;
const TP_STATUS_WRONG_FORMAT: u32 = 4;

/// Source MAC number `i`: 0e:00:00 and 24 bits (locally administered, unicast).
pub fn source_mac(i: u32) -> [u8; 6] {
    [0x0e, 0, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// An ARP request for `target` from `sender` (its MAC is the frame's source), as a template.
pub struct Arp {
    pub target: std::net::Ipv4Addr,
    pub sender: std::net::Ipv4Addr,
}

/// UDP datagrams from `from` to `to` in `flows` flows (source ports 1024.., then the next
/// destination port every 50000 flows), as an endpoint behind a NAT sends them.
pub struct Udp {
    pub from: std::net::Ipv4Addr,
    pub to: std::net::Ipv4Addr,
}

/// What each frame is.
pub enum Template {
    /// EtherType 0x88b5 zeros from rotating source MACs.
    Plain,
    /// One ARP request, from one source.
    Arp(Arp),
    /// IPv4/UDP over rotating flows.
    Udp(Udp),
}

/// The flow `i`'s UDP ports.
fn udp_ports(i: u32) -> (u16, u16) {
    (1024 + (i % 50_000) as u16, 9 + (i / 50_000) as u16)
}

/// Send for `secs` seconds; returns the frames handed to the kernel. `sources` is the number
/// of source MACs (plain frames) or flows (UDP).
pub fn generate(
    iface: &str,
    dst: [u8; 6],
    sources: u32,
    size: usize,
    secs: f64,
    template: Template,
    pps: Option<f64>,
) -> Res<u64> {
    let arp = match &template {
        Template::Arp(a) => Some(a),
        _ => None,
    };
    let err = |e: io::Error| format!("generator on {iface}: {e}");
    if !(60..=1514).contains(&size) {
        return Err(format!("frame size {size}: use 60 to 1514 bytes (without the FCS)"));
    }
    // SAFETY: a valid C string for the call.
    let ifindex = unsafe { libc::if_nametoindex(std::ffi::CString::new(iface).expect("name").as_ptr()) };
    if ifindex == 0 {
        return Err(format!("no interface {iface}"));
    }
    // SAFETY: no pointers; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if raw < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let fd = sock.as_raw_fd();
    let v2 = libc::tpacket_versions::TPACKET_V2 as i32;
    setsockopt(&sock, libc::SOL_PACKET, libc::PACKET_VERSION, &v2, "PACKET_VERSION").map_err(err)?;
    setsockopt(&sock, libc::SOL_PACKET, 20 /* PACKET_QDISC_BYPASS */, &1i32, "PACKET_QDISC_BYPASS").map_err(err)?;
    let req = libc::tpacket_req {
        tp_block_size: (SLOT * 16) as u32,
        tp_block_nr: (SLOTS / 16) as u32,
        tp_frame_size: SLOT as u32,
        tp_frame_nr: SLOTS as u32,
    };
    setsockopt(&sock, libc::SOL_PACKET, libc::PACKET_TX_RING, &req, "PACKET_TX_RING").map_err(err)?;
    let len = SLOT * SLOTS;
    let ring =
        // SAFETY: maps the TX ring just set up on this socket; the result is checked.
        unsafe { libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED, fd, 0) };
    if ring == libc::MAP_FAILED {
        return Err(err(io::Error::last_os_error()));
    }
    let ring = ring as *mut u8;
    // SAFETY: sockaddr_ll is plain old data; all zeros is valid.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a live sockaddr_ll of the size we pass.
    let r = unsafe {
        libc::bind(fd, &sll as *const _ as *const libc::sockaddr, std::mem::size_of::<libc::sockaddr_ll>() as u32)
    };
    if r < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // Build every slot's frame once: destination, a source, EtherType 0x88b5, zeros (or the
    // ARP request).
    for i in 0..SLOTS {
        // SAFETY: slot i's data area lies inside the mapped ring (DATA_OFF + size <= SLOT).
        let f = unsafe { std::slice::from_raw_parts_mut(ring.add(i * SLOT + DATA_OFF), size) };
        f.fill(0);
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&source_mac(0));
        f[12..14].copy_from_slice(&[0x88, 0xb5]);
        if let Some(a) = &arp {
            f[12..14].copy_from_slice(&[0x08, 0x06]);
            f[14..22].copy_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet/IPv4 request
            f[22..28].copy_from_slice(&source_mac(0));
            f[28..32].copy_from_slice(&a.sender.octets());
            f[38..42].copy_from_slice(&a.target.octets());
        }
        if let Template::Udp(u) = &template {
            udp_frame(f, u);
        }
    }
    let sources = if arp.is_some() { 1 } else { sources }; // the ARP sender is the frame's source
    let udp = matches!(template, Template::Udp(_));
    // SAFETY: each slot starts with its u32 status word, shared with the kernel: read atomically.
    let status = |i: usize| unsafe { &*(ring.add(i * SLOT) as *const std::sync::atomic::AtomicU32) };
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let (mut slot, mut sent, mut next_src) = (0usize, 0u64, 0u32);
    while Instant::now() < end {
        // Paced (`--pps`): no more than the rate allows so far.
        let batch = match pps {
            Some(r) => ((r * start.elapsed().as_secs_f64()) as u64).saturating_sub(sent).min(256) as usize,
            None => 256,
        };
        if batch == 0 {
            std::hint::spin_loop();
            continue;
        }
        let mut queued = 0;
        while queued < batch {
            let st = status(slot);
            let s = st.load(std::sync::atomic::Ordering::Acquire);
            if s != TP_STATUS_AVAILABLE && s != TP_STATUS_WRONG_FORMAT {
                break;
            }
            // SAFETY: writes inside the slot we own (status available).
            unsafe {
                let base = ring.add(slot * SLOT);
                *(base.add(4) as *mut u32) = size as u32; // tp_len
                if udp {
                    // The ports (the UDP checksum is 0: none).
                    let (sp, dp) = udp_ports(next_src);
                    let at = base.add(DATA_OFF + 14 + 20);
                    std::ptr::copy_nonoverlapping(sp.to_be_bytes().as_ptr(), at, 2);
                    std::ptr::copy_nonoverlapping(dp.to_be_bytes().as_ptr(), at.add(2), 2);
                } else {
                    let src = base.add(DATA_OFF + 9);
                    let m = source_mac(next_src);
                    std::ptr::copy_nonoverlapping(m[3..].as_ptr(), src, 3);
                }
            }
            st.store(TP_STATUS_SEND_REQUEST, std::sync::atomic::Ordering::Release);
            next_src = if next_src + 1 >= sources { 0 } else { next_src + 1 };
            slot = (slot + 1) % SLOTS;
            queued += 1;
            sent += 1;
        }
        // SAFETY: a send with no data tells the kernel to transmit the ring's pending slots.
        let r = unsafe { libc::send(fd, std::ptr::null(), 0, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock && e.raw_os_error() != Some(libc::ENOBUFS) {
                return Err(err(e));
            }
        }
    }
    // SAFETY: unmaps the ring mapped above, once.
    unsafe { libc::munmap(ring as *mut libc::c_void, len) };
    Ok(sent)
}

/// An IPv4/UDP frame filling `f` (its Ethernet addresses already written).
fn udp_frame(f: &mut [u8], u: &Udp) {
    let ip_len = (f.len() - 14) as u16;
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&u.from.octets());
    ip[16..20].copy_from_slice(&u.to.octets());
    let mut sum: u32 = ip[..20].chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], c[1]]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    ip[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    ip[24..26].copy_from_slice(&(ip_len - 20).to_be_bytes());
}
