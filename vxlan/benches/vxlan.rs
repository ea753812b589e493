//! ns per frame: the outer headers written, a tunnelled frame taken apart, the source port
//! hashed. `cargo bench -p vswitch-vxlan`.

use divan::counter::ItemsCount;
use divan::{black_box, Bencher};
use std::net::Ipv4Addr;
use vswitch_vxlan::*;

fn main() {
    divan::main();
}

fn outer() -> Outer {
    Outer {
        src_mac: [2, 0, 0, 0, 0, 1],
        dst_mac: [2, 0, 0, 0, 0, 2],
        src: Ipv4Addr::new(192, 0, 2, 1),
        dst: Ipv4Addr::new(192, 0, 2, 2),
        ttl: 64,
        dst_port: PORT,
    }
}

/// A 64-byte UDP frame inside.
fn inner() -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 0xa, 0x08, 0x00, 0x45, 0, 0, 46, 0, 0, 0, 0, 64, 17, 0, 0];
    f.extend_from_slice(&[10, 50, 0, 1, 10, 50, 0, 2, 0x30, 0x39, 0, 53, 0, 26, 0, 0]);
    f.resize(64, 0);
    f
}

#[divan::bench]
fn encap_64_byte_frame(b: Bencher) {
    let (o, f, vni) = (outer(), inner(), Vni::new(5001).unwrap());
    let mut h = [0u8; OVERHEAD];
    b.counter(ItemsCount::new(1usize)).bench_local(|| {
        let port = source_port(black_box(&f), &flow::SOURCE_PORTS);
        o.write(vni, port, 1, f.len(), &mut h).unwrap();
        black_box(&h);
    });
}

#[divan::bench]
fn decap_64_byte_frame(b: Bencher) {
    let (o, f) = (outer(), inner());
    let mut h = [0u8; OVERHEAD];
    o.write(Vni::new(5001).unwrap(), 40000, 1, f.len(), &mut h).unwrap();
    let whole = [&h[..], &f[..]].concat();
    b.counter(ItemsCount::new(1usize)).bench_local(|| decap(black_box(&whole), PORT).map(|d| d.inner.len()));
}
