//! VXLAN decapsulation on any bytes (what any host on the underlay can send the switch's
//! VTEP): nothing panics; what decapsulates is a slice of the input; encapsulating it again
//! and taking that apart gives the same VNI, source and inner frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vswitch_vxlan::{decap, flow, source_port, Outer, OVERHEAD, PORT};

fuzz_target!(|data: &[u8]| {
    let Ok(d) = decap(data, PORT) else { return };
    let start = d.inner.as_ptr() as usize - data.as_ptr() as usize;
    assert!(start + d.inner.len() <= data.len());
    let port = source_port(d.inner, &flow::SOURCE_PORTS);
    assert!(flow::SOURCE_PORTS.contains(&port));
    let o = Outer { src_mac: [2, 0, 0, 0, 0, 1], dst_mac: [2, 0, 0, 0, 0, 2], src: d.src, dst: d.dst, ttl: 64, dst_port: PORT };
    let mut h = [0u8; OVERHEAD];
    o.write(d.vni, port, 1, d.inner.len(), &mut h).expect("an inner frame that came in one packet fits one");
    let again = [&h[..], d.inner].concat();
    let e = decap(&again, PORT).expect("our own encapsulation decapsulates");
    assert_eq!((e.vni, e.src, e.inner), (d.vni, d.src, d.inner));
});
