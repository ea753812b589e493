//! ns per packet for the NAT's three costs: finding a session, creating one, rewriting.
//! `cargo bench -p vswitch-nat`

use std::net::Ipv4Addr;

use divan::{black_box, Bencher};
use vswitch_nat::*;

fn main() {
    divan::main();
}

const U: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const W: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

fn decide(_: &FlowKey) -> Decision {
    Decision::Translate { tag: 0, snat: Some(U), dnat: None }
}

/// A 64-byte-frame-sized UDP packet of flow `i`; flows spread over 65536 endpoints and
/// 2^28 remotes so that a million of them fit one outside address's ports.
fn udp_from(i: u32) -> Vec<u8> {
    let mut p = vec![0u8; 46];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&46u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&(0xac12_0000 | (i & 0xffff)).to_be_bytes());
    p[16..20].copy_from_slice(&(u32::from(W) & 0xf000_0000 | (i >> 4)).to_be_bytes());
    p[20..22].copy_from_slice(&(i as u16 | 1024).to_be_bytes());
    p[22..24].copy_from_slice(&53u16.to_be_bytes());
    p[24..26].copy_from_slice(&26u16.to_be_bytes());
    let c = checksum::checksum(&p[..20]);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p
}

fn filled(n: u32) -> (Conntrack, Vec<Vec<u8>>) {
    let mut ct = Conntrack::new(Config { max_sessions: n, ..Config::default() });
    let packets: Vec<Vec<u8>> = (0..n).map(udp_from).collect();
    for p in &packets {
        ct.translate(&mut p.clone(), Csum::Full, 0, decide);
    }
    (ct, packets)
}

/// A packet of an existing session: lookup, state, rewrite.
#[divan::bench(args = [1_000, 100_000, 1_000_000])]
fn established(bencher: Bencher, sessions: u32) {
    let (mut ct, packets) = filled(sessions);
    let mut buf = packets[0].clone();
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 7919) % packets.len();
        buf.copy_from_slice(&packets[i]);
        black_box(ct.translate(&mut buf, Csum::Full, 1, decide))
    });
}

/// Lookup alone.
#[divan::bench(args = [1_000, 1_000_000])]
fn lookup(bencher: Bencher, sessions: u32) {
    let (ct, _) = filled(sessions);
    let keys: Vec<FlowKey> = ct.sessions().map(|s| s.reply).collect();
    let mut i = 0usize;
    bencher.bench_local(|| {
        i = (i + 7919) % keys.len();
        black_box(ct.lookup(&keys[i]))
    });
}

/// The first packet of a flow: decide, allocate a port, insert both keys, rewrite; then
/// the session is expired again so the table stays the same size. The table is filled and
/// emptied once first, so its pages are already mapped (as in a running switch).
#[divan::bench]
fn create(bencher: Bencher) {
    let mut ct = Conntrack::new(Config { max_sessions: 1 << 16, timeouts: Timeouts::all(1), ..Config::default() });
    let packets: Vec<Vec<u8>> = (0..1 << 16).map(udp_from).collect();
    for p in &packets {
        ct.translate(&mut p.clone(), Csum::Full, 0, decide);
    }
    ct.expire(2, usize::MAX);
    let mut buf = packets[0].clone();
    let (mut i, mut now) = (0usize, 2u32);
    bencher.bench_local(|| {
        i += 1;
        if i == packets.len() {
            i = 0;
            now += 2;
            ct.expire(now, usize::MAX);
        }
        buf.copy_from_slice(&packets[i]);
        black_box(ct.translate(&mut buf, Csum::Full, now, decide))
    });
}

/// The rewrite alone: addresses and a port, checksums patched.
#[divan::bench]
fn rewrite(bencher: Bencher) {
    let mut buf = udp_from(1);
    let p = packet::parse(&buf).unwrap();
    let to = FlowKey::new(Proto::Udp, Endpoint::new(U, 40000), p.key.dst);
    bencher.bench_local(|| {
        packet::rewrite(black_box(&mut buf), &p, &to, Csum::Full);
    });
}
