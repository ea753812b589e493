//! Frames captured from the Linux kernel's vxlan device (tests/data/kernel-vxlan.pcap: two
//! namespaces, `ip link add vx0 type vxlan id 5001 dstport 4789 remote ...`, an ARP exchange
//! and two pings between 10.50.0.1 and .2 over the underlay 192.0.2.1 <-> .2): we take them
//! apart, and build the same outer headers byte for byte (the kernel's outer UDP checksum
//! aside: it sent a partial one, we send zero).

use pcap_file::pcap::PcapReader;
use std::net::Ipv4Addr;
use vswitch_vxlan::*;

fn captured() -> Vec<Vec<u8>> {
    let f = std::fs::File::open(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/kernel-vxlan.pcap")).unwrap();
    let mut r = PcapReader::new(f).unwrap();
    let mut out = vec![];
    while let Some(p) = r.next_packet() {
        out.push(p.unwrap().data.into_owned());
    }
    out
}

#[test]
fn the_kernels_frames_decapsulate() {
    let frames = captured();
    assert_eq!(frames.len(), 6);
    let d: Vec<Decapped> = frames.iter().map(|f| decap(f, PORT).unwrap()).collect();
    assert!(d.iter().all(|d| d.vni.get() == 5001));
    // ARP who-has 10.50.0.2 from 02:00:00:00:aa:01, broadcast.
    assert_eq!(&d[0].inner[..6], &[0xff; 6]);
    assert_eq!(&d[0].inner[6..12], &[2, 0, 0, 0, 0xaa, 1]);
    assert_eq!(&d[0].inner[12..14], &[0x08, 0x06]);
    assert_eq!((d[0].src, d[1].src), (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2)));
    // The echo request: an IPv4 frame of 98 bytes inside.
    assert_eq!((d[2].inner.len(), &d[2].inner[12..14]), (98, &[0x08, 0x00][..]));
    // The kernel hashes a flow's both ways to one source port; so do we (not its hash).
    assert_eq!(d[0].src_port, d[1].src_port);
    assert_eq!(d[2].src_port, d[3].src_port);
    let ours = |i: usize| source_port(d[i].inner, &flow::SOURCE_PORTS);
    assert_eq!((ours(0), ours(2)), (ours(1), ours(3)));
    assert_ne!(ours(0), ours(2), "ARP and ICMP are different flows");
}

#[test]
fn we_build_the_kernels_outer_headers() {
    for f in captured() {
        let d = decap(&f, PORT).unwrap();
        let outer = Outer {
            dst_mac: f[0..6].try_into().unwrap(),
            src_mac: f[6..12].try_into().unwrap(),
            src: d.src,
            dst: d.dst,
            ttl: f[22],
            dst_port: PORT,
        };
        let id = u16::from_be_bytes([f[18], f[19]]);
        let mut h = [0u8; OVERHEAD];
        outer.write(d.vni, d.src_port, id, d.inner.len(), &mut h).unwrap();
        let mut theirs = f[..OVERHEAD].to_vec();
        theirs[40..42].copy_from_slice(&[0, 0]); // the UDP checksum
        assert_eq!(&h[..], &theirs[..]);
    }
}
