//! Frames across the switch between real namespaces: ping, TCP with default offloads, TAP
//! ports in a namespace, flooding vs learned unicast, isolation, jumbo frames, VLAN tags.

use vswitch_integration::*;

#[test]
fn ping_and_tcp_over_veth_ports() {
    let d = Daemon::start(2);
    let (a, b) = (Host::new("10.50.1.1"), Host::new("10.50.1.2"));
    d.network(&net_name(), &[&a, &b]);
    assert!(a.ns.wait_ping(&b.ip, 5), "no ping across the switch:\n{}", d.log());
    assert!(a.ns.ping(&b.ip, 5));
    // Default offloads: the kernel hands the switch 64 KB GSO frames; they must cross whole.
    let (gbps, _retr) = iperf(&a.ns, &b.ns, &b.ip, 2);
    assert!(gbps > 1.0, "TCP across the switch at only {gbps:.2} Gbit/s");
    let s = d.port_stats(&a.veth.host);
    assert!(s["rx_bytes"].as_u64().unwrap() > 100_000_000, "{s}");
}

#[test]
fn tap_port_moved_into_a_namespace() {
    let d = Daemon::start(2);
    let net = net_name();
    let a = Host::new("10.50.2.1");
    let tap = unique("vt");
    d.ok(&["network", "create", &net]);
    d.ok(&["network", "connect", &net, &a.veth.host]);
    d.ok(&["network", "connect", &net, "--tap", &tap]);
    // The VM side: the TAP device itself, moved into its own namespace.
    let vm = Netns::new();
    sh(&["ip", "link", "set", &tap, "netns", &vm.name]);
    vm.run(&["ip", "addr", "add", "10.50.2.2/24", "dev", &tap]);
    vm.run(&["ip", "link", "set", &tap, "up"]);
    assert!(a.ns.wait_ping("10.50.2.2", 5), "no ping to the TAP's namespace:\n{}", d.log());
    assert!(vm.ping(&a.ip, 5));
    let (gbps, _) = iperf(&vm, &a.ns, &a.ip, 2);
    assert!(gbps > 0.5, "TCP from the TAP at only {gbps:.2} Gbit/s");
    let (gbps, _) = iperf(&a.ns, &vm, "10.50.2.2", 2);
    assert!(gbps > 0.5, "TCP to the TAP at only {gbps:.2} Gbit/s");
}

#[test]
fn broadcast_floods_learned_unicast_does_not() {
    let d = Daemon::start(2);
    let (a, b, c) = (Host::new("10.50.3.1"), Host::new("10.50.3.2"), Host::new("10.50.3.3"));
    d.network(&net_name(), &[&a, &b, &c]);
    let (ma, mb) = (a.mac(), b.mac());
    // Teach the switch where b is.
    b.send_raw(&ma, &mb, "88b5", 1, 60);
    let before: Vec<u64> = [&a, &b, &c].iter().map(|h| d.tx_packets(&h.veth.host)).collect();
    a.send_raw("ff:ff:ff:ff:ff:ff", &ma, "88b5", 50, 60);
    a.send_raw(&mb, &ma, "88b5", 70, 60);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let after: Vec<u64> = [&a, &b, &c].iter().map(|h| d.tx_packets(&h.veth.host)).collect();
    assert_eq!(after[0] - before[0], 0, "never back out of the ingress port");
    assert_eq!(after[1] - before[1], 120, "b gets the broadcasts and its unicast");
    assert_eq!(after[2] - before[2], 50, "c gets only the broadcasts");
}

#[test]
fn networks_are_isolated() {
    let d = Daemon::start(2);
    let (a, b, c) = (Host::new("10.50.4.1"), Host::new("10.50.4.2"), Host::new("10.50.4.3"));
    d.network(&net_name(), &[&a, &b]);
    d.network(&net_name(), &[&c]);
    assert!(a.ns.wait_ping(&b.ip, 5));
    assert!(!a.ns.ping(&c.ip, 2), "a reached c on another network");
    // c's own network's gateway announced itself to c; nothing else may reach it.
    let before = d.tx_packets(&c.veth.host);
    let b_before = d.tx_packets(&b.veth.host);
    a.send_raw("ff:ff:ff:ff:ff:ff", &a.mac(), "88b5", 20, 60);
    assert!(eventually(5, || d.tx_packets(&b.veth.host) >= b_before + 20), "the broadcasts never reached b");
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(d.tx_packets(&c.veth.host), before, "a frame crossed into another network");
}

#[test]
fn jumbo_frames_pass_and_too_big_for_egress_is_counted() {
    let d = Daemon::start(2);
    let (a, b, c) = (Host::new("10.50.5.1"), Host::new("10.50.5.2"), Host::new("10.50.5.3"));
    d.network(&net_name(), &[&a, &b, &c]);
    // Raised after the ports were attached: the switch follows MTU changes (link events).
    a.veth.set_mtu(&a.ns, 9000);
    b.veth.set_mtu(&b.ns, 9000);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert!(a.ns.wait_ping(&b.ip, 5));
    let out = a.ns.output(&["ping", "-c", "3", "-i", "0.1", "-M", "do", "-s", "8900", &b.ip]);
    assert!(out.status.success(), "jumbo ping failed: {}", String::from_utf8_lossy(&out.stdout));
    // Flooded jumbo frames cannot leave by c (MTU 1500): dropped there and counted.
    a.send_raw("ff:ff:ff:ff:ff:ff", &a.mac(), "88b5", 10, 9000);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(d.drops(&c.veth.host, "too_big_for_egress"), 10);
}

#[test]
fn link_local_frames_are_not_forwarded() {
    let d = Daemon::start(1);
    let (a, b) = (Host::new("10.50.6.1"), Host::new("10.50.6.2"));
    d.network(&net_name(), &[&a, &b]);
    a.send_raw("01:80:c2:00:00:00", &a.mac(), "0027", 5, 60); // STP
    a.send_raw("01:80:c2:00:00:0e", &a.mac(), "88cc", 5, 60); // LLDP
    a.send_raw("01:80:c2:00:00:21", &a.mac(), "88b5", 5, 60); // outside the reserved range
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(d.drops(&a.veth.host, "link_local"), 10);
    assert_eq!(d.tx_packets(&b.veth.host), 5);
}

#[test]
fn vlan_tagged_frames_cross_untouched() {
    let d = Daemon::start(2);
    let (a, b) = (Host::new("10.50.7.1"), Host::new("10.50.7.2"));
    d.network(&net_name(), &[&a, &b]);
    // The kernel takes the tag out of a received frame before AF_PACKET sees it (VLAN
    // offload): the switch must put it back. tcpdump on b sees what arrived.
    let dump =
        b.ns.cmd(&[
            "timeout",
            "5",
            "tcpdump",
            "-i",
            &b.veth.inner,
            "-c",
            "5",
            "-nn",
            "-e",
            "vlan 42 and ether proto 0x88b5",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("tcpdump");
    std::thread::sleep(std::time::Duration::from_millis(700));
    // dst, src, 0x8100, TCI 42, then the inner EtherType 0x88b5.
    let bin = sendraw_bin();
    a.ns.run(&[bin.to_str().unwrap(), &a.veth.inner, "ff:ff:ff:ff:ff:ff", &a.mac(), "8100", "5", "60", "002a88b5"]);
    let out = dump.wait_with_output().expect("tcpdump");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.lines().filter(|l| l.contains("vlan 42")).count(),
        5,
        "tagged frames not seen on b:\n{text}\n{}",
        d.log()
    );
}

/// Every byte arrives intact, also when receivers are slow and far more data waits in their
/// sockets than the switch's transmit ring holds (the switch must never reuse memory the
/// kernel still holds).
#[test]
fn tcp_bytes_arrive_intact_with_slow_readers() {
    let d = Daemon::start(2);
    let (a, b) = (Host::new("10.50.8.1"), Host::new("10.50.8.2"));
    d.network(&net_name(), &[&a, &b]);
    assert!(a.ns.wait_ping(&b.ip, 5));
    let bin = tcpcheck_bin();
    let bin = bin.to_str().unwrap();
    let ports = ["5001", "5002", "5003"];
    let servers: Vec<_> = ports
        .iter()
        .map(|p| {
            let mut srv = b.ns.cmd(&[bin, "serve", p, "2000"]).stdout(std::process::Stdio::piped()).spawn().unwrap();
            let mut first = [0u8; 10];
            std::io::Read::read_exact(srv.stdout.as_mut().unwrap(), &mut first).unwrap(); // "listening\n"
            srv
        })
        .collect();
    let senders: Vec<_> = ports
        .iter()
        .map(|p| a.ns.cmd(&[bin, "send", &b.ip, p, "200"]).stdout(std::process::Stdio::piped()).spawn().unwrap())
        .collect();
    for (srv, snd) in servers.into_iter().zip(senders) {
        let sent = String::from_utf8(snd.wait_with_output().unwrap().stdout).unwrap();
        let got = String::from_utf8(srv.wait_with_output().unwrap().stdout).unwrap();
        assert_eq!(got.lines().last(), sent.lines().last(), "the bytes received differ from the bytes sent");
    }
}
