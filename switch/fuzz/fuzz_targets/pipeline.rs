//! Any frame through a bridge network's stages (with its gateway, and an uplink behind it so
//! the route stage and its NAT run too) and through explain: the data plane's decision on
//! hostile input never panics, and explain agrees with it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::Arc;
use vswitch::explain::{self, NetView, PortView};
use vswitch::fdb::{MacTable, GATEWAY_PORT};
use vswitch::frame::VnetHdr;
use vswitch::mac::MacAddr;
use vswitch::pipeline::{Bridge, Env, FrameCx, Gateway, Nat, NetRoute, NextHop, NoObserve, Pipeline, Routes, UplinkRoute};
use vswitch::port::RxFrame;

fuzz_target!(|data: &[u8]| {
    let table = Arc::new(MacTable::new(64));
    let gw_mac = MacAddr([2, 0x56, 0x53, 0, 0, 1]);
    table.add_static(gw_mac, GATEWAY_PORT).unwrap();
    let gateway = Gateway {
        net: 0,
        mac: gw_mac,
        ipv4: Some("10.0.0.1".parse().unwrap()),
        ipv6: Some("fd00::1".parse().unwrap()),
    };
    let p = Pipeline::Bridge(Bridge { table: table.clone(), gateway: Some(gateway), icc: true });
    let next_hop = Arc::new(NextHop::new(Some("10.0.1.1".parse().unwrap())));
    next_hop.set(MacAddr([2, 0, 0, 0, 0, 0x99]));
    let here = NetRoute { gateway_mac: gw_mac, internal: false, neighbors: Default::default(), table };
    let uplink = UplinkRoute {
        net: 1,
        port: 2,
        mac: MacAddr([2, 0x56, 0x53, 0, 0, 2]),
        addr: "10.0.1.10".parse().unwrap(),
        next_hop,
    };
    let routes = Routes::new(vec![("10.0.0.0/24".parse().unwrap(), 0), ("10.0.1.0/24".parse().unwrap(), 1)])
        .with_nets(vec![(0, here)], Some(uplink));
    // As a port hands it over (explain does the same): an 802.1Q tag beside the bytes.
    let (received, tag) = vswitch::frame::as_received(data);
    let f = RxFrame::new(VnetHdr::default(), &received, tag);
    let cx = FrameCx { frame: &f, in_port: 1, max_frame: 1518, now: 0 };
    let mut nat = Nat::new(1024..=65535, 16);
    let action = p.run(&Env { routes: &routes }, &mut nat, &cx, &mut NoObserve);
    if let vswitch::pipeline::Action::Routed(_, i) = action {
        // The edit writes within the frame it was made for.
        let mut out = received.to_vec();
        nat.edit(i).write(&received, &mut out);
    }
    let ports = vec![
        PortView { id: 1, name: "a".into(), max_frame: 1518 },
        PortView { id: 2, name: "b".into(), max_frame: 1518 },
    ];
    let view = NetView { name: "n", pipeline: &p, routes: &routes, max_learned: 64, ports };
    let e = explain::explain(&view, 1, &[data.to_vec()], 0);
    // The same stages decided: a drop in the data plane is a drop in explain.
    if let vswitch::pipeline::Action::Drop(why) = action {
        assert_eq!(e[0].outcome.reason.as_deref(), Some(why.name()));
    }
});
