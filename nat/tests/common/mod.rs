//! Building IPv4 packets with correct checksums, and checking them, for the tests (plain
//! byte layout on purpose: an oracle independent of the code under test's views).
#![allow(dead_code)]

use std::net::Ipv4Addr;
use vswitch_nat::checksum;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const FIN: u8 = 0x01;
pub const RST: u8 = 0x04;

pub fn ipv4(proto: u8, src: Ipv4Addr, dst: Ipv4Addr, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
    p[6] = 0x40; // DF
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = checksum::checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    fill_l4(&mut p);
    p
}

pub fn tcp(sport: u16, dport: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(payload);
    t
}

pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(payload);
    u
}

pub fn echo(request: bool, id: u16, payload: &[u8]) -> Vec<u8> {
    let mut e = vec![if request { 8 } else { 0 }, 0, 0, 0];
    e.extend_from_slice(&id.to_be_bytes());
    e.extend_from_slice(&7u16.to_be_bytes());
    e.extend_from_slice(payload);
    e
}

/// An ICMP error of `kind` (3: unreachable, 11: time exceeded) quoting the first 28 bytes
/// (or `quote` bytes) of `about`.
pub fn icmp_error(kind: u8, code: u8, about: &[u8], quote: usize) -> Vec<u8> {
    let mut e = vec![kind, code, 0, 0, 0, 0, 0, 0];
    e.extend_from_slice(&about[..quote.min(about.len())]);
    e
}

fn l4_offset(p: &[u8]) -> usize {
    usize::from(p[0] & 0xf) * 4
}

fn pseudo(p: &[u8], l4_len: usize) -> u32 {
    let mut acc = checksum::sum(&p[12..20], 0);
    acc += u32::from(p[9]) + l4_len as u32;
    acc
}

fn check_at(proto: u8) -> Option<usize> {
    match proto {
        TCP => Some(16),
        UDP => Some(6),
        ICMP => Some(2),
        _ => None,
    }
}

/// Write the L4 checksum from scratch.
pub fn fill_l4(p: &mut [u8]) {
    let l4 = l4_offset(p);
    let Some(at) = check_at(p[9]) else { return };
    let at = l4 + at;
    p[at..at + 2].copy_from_slice(&[0, 0]);
    let c = l4_checksum(p);
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn l4_checksum(p: &[u8]) -> u16 {
    let l4 = l4_offset(p);
    let body = &p[l4..];
    let acc = if p[9] == ICMP { 0 } else { pseudo(p, body.len()) };
    let mut c = !fold(checksum::sum(body, acc));
    if p[9] == UDP && c == 0 {
        c = 0xffff;
    }
    c
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Replace the L4 checksum by the partial one a GSO sender leaves (pseudo-header only).
pub fn make_partial(p: &mut [u8]) {
    let l4 = l4_offset(p);
    let at = l4 + check_at(p[9]).unwrap();
    let partial = fold(pseudo(p, p.len() - l4));
    p[at..at + 2].copy_from_slice(&partial.to_be_bytes());
}

/// Finish a partial checksum as the NIC would.
pub fn complete_partial(p: &mut [u8]) {
    let l4 = l4_offset(p);
    let at = l4 + check_at(p[9]).unwrap();
    let c = checksum::complete(0, &p[l4..]);
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Both checksums verify.
pub fn verifies(p: &[u8]) -> bool {
    let l4 = l4_offset(p);
    if checksum::checksum(&p[..l4]) != 0 {
        return false;
    }
    let at = l4 + check_at(p[9]).unwrap();
    let stored = u16::from_be_bytes([p[at], p[at + 1]]);
    if p[9] == UDP && stored == 0 {
        return true;
    }
    let mut zeroed = p.to_vec();
    zeroed[at..at + 2].copy_from_slice(&[0, 0]);
    let fresh = l4_checksum(&zeroed);
    // 0x0000 and 0xffff are the same one's-complement zero.
    stored == fresh || (stored | fresh == 0xffff && stored & fresh == 0)
}

pub fn src(p: &[u8]) -> (Ipv4Addr, u16) {
    let l4 = l4_offset(p);
    (Ipv4Addr::new(p[12], p[13], p[14], p[15]), u16::from_be_bytes([p[l4], p[l4 + 1]]))
}

pub fn dst(p: &[u8]) -> (Ipv4Addr, u16) {
    let l4 = l4_offset(p);
    (Ipv4Addr::new(p[16], p[17], p[18], p[19]), u16::from_be_bytes([p[l4 + 2], p[l4 + 3]]))
}
