//! `vswitch trace` and `vswitch explain` against real tools: tcpdump and tshark read what
//! the trace writes, and explain agrees with what the data plane does.

use std::process::Command;
use vswitch_integration::*;

/// One line per frame: interface name, direction (0x00000001 in, 0x00000002 out), IPs, ICMP type.
fn tshark_fields(file: &std::path::Path) -> Vec<String> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=,"])
        .args(["-e", "frame.interface_name", "-e", "frame.packet_flags_direction"])
        .args(["-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type"])
        .output()
        .expect("run tshark");
    assert!(out.status.success(), "tshark -r failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

const IN: &str = "0x00000001";
const OUT: &str = "0x00000002";

fn tcpdump_lines(file: &std::path::Path) -> Vec<String> {
    let out = Command::new("tcpdump").arg("-nn").arg("-r").arg(file).output().expect("run tcpdump");
    assert!(out.status.success(), "tcpdump -r failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

fn count(lines: &[String], want: &str) -> usize {
    lines.iter().filter(|l| l.as_str() == want).count()
}

/// A daemon with two hosts (10.56.N.1 and .2) on a new network, pinging each other.
fn two_hosts(workers: usize, n: u8) -> (Daemon, Host, Host, String) {
    let d = Daemon::start(workers);
    let (a, b) = (Host::new(&format!("10.56.{n}.1")), Host::new(&format!("10.56.{n}.2")));
    let net = net_name();
    d.network(&net, &[&a, &b]);
    assert!(a.ns.wait_ping(&b.ip, 5), "no ping across the switch:\n{}", d.log());
    (d, a, b, net)
}

#[test]
fn five_pings_seen_in_and_out_with_port_names() {
    let (d, a, b, net) = two_hosts(2, 1);
    let file = d.dir.path().join("pings.pcapng");
    let t = d.trace(&[&net, "-w", file.to_str().unwrap(), "icmp"]);
    assert!(a.ns.ping(&b.ip, 5));
    let summary = t.interrupt();
    assert!(summary.contains("20 frames captured, 0 copies dropped"), "{summary}");

    let lines = tshark_fields(&file);
    assert_eq!(lines.len(), 20, "{lines:#?}");
    let (pa, pb) = (&a.veth.host, &b.veth.host);
    // Each request comes in on a and goes out of b; each reply the other way.
    assert_eq!(count(&lines, &format!("{pa},{IN},10.56.1.1,10.56.1.2,8")), 5, "{lines:#?}");
    assert_eq!(count(&lines, &format!("{pb},{OUT},10.56.1.1,10.56.1.2,8")), 5, "{lines:#?}");
    assert_eq!(count(&lines, &format!("{pb},{IN},10.56.1.2,10.56.1.1,0")), 5, "{lines:#?}");
    assert_eq!(count(&lines, &format!("{pa},{OUT},10.56.1.2,10.56.1.1,0")), 5, "{lines:#?}");
    let td = tcpdump_lines(&file);
    assert_eq!(td.len(), 20);
    assert_eq!(td.iter().filter(|l| l.contains("ICMP echo request")).count(), 10, "{td:#?}");
}

#[test]
fn filter_keeps_only_what_it_names_and_classic_pcap_streams_to_stdout() {
    let (d, a, b, _) = two_hosts(1, 2);
    // Only echo requests, only as they enter through a: 3 of them, then the trace stops itself.
    let file = d.dir.path().join("requests.pcap");
    let sh_cmd = format!(
        "{} --socket {} trace --port {} --count 3 --format pcap -w - 'icmp[icmptype] == icmp-echo' > {}",
        vswitch_bin().display(),
        d.socket().display(),
        a.veth.host,
        file.display()
    );
    let t = Command::new("sh").args(["-c", &sh_cmd]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Broadcast ARP and replies flow too; the filter must keep them out.
    a.send_raw("ff:ff:ff:ff:ff:ff", &a.mac(), "0x0806", 5, 60);
    assert!(a.ns.ping(&b.ip, 5));
    let out = t.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.contains("3 frames captured"), "{err}");
    let td = tcpdump_lines(&file);
    assert_eq!(td.len(), 3, "{td:#?}");
    assert!(td.iter().all(|l| l.contains("10.56.2.1 > 10.56.2.2: ICMP echo request")), "{td:#?}");
}

#[test]
fn busy_trace_drops_copies_never_frames() {
    let (d, a, b, net) = two_hosts(2, 3);
    let file = d.dir.path().join("busy.pcapng");
    let t = d.trace(&[&net, "--buffer", "8", "-w", file.to_str().unwrap()]);
    // Counted from here: before, the gateway announced itself to the network's first port.
    let count = |port: &str, dir: &str| d.port_stats(port)[dir].as_u64().unwrap();
    let (a0, b0) = (count(&a.veth.host, "tx_packets"), count(&b.veth.host, "tx_packets"));
    let (ar0, br0) = (count(&a.veth.host, "rx_packets"), count(&b.veth.host, "rx_packets"));
    let (gbps, _) = iperf(&a.ns, &b.ns, &b.ip, 2);
    let summary = t.interrupt();
    let dropped: u64 = summary
        .split(", ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no copies dropped: {summary}"));
    assert!(dropped > 0 && gbps > 1.0, "{summary}, {gbps} Gbit/s");
    // Every frame the switch read was sent on: nothing dropped on either port.
    let (sa, sb) = (d.port_stats(&a.veth.host), d.port_stats(&b.veth.host));
    let n = |v: &serde_json::Value| v.as_u64().unwrap();
    assert_eq!(n(&sa["rx_packets"]) - ar0, n(&sb["tx_packets"]) - b0, "{sa}\n{sb}");
    assert_eq!(n(&sb["rx_packets"]) - br0, n(&sa["tx_packets"]) - a0, "{sa}\n{sb}");
    assert_eq!(sa["drops"], serde_json::json!({}), "{sa}");
    assert_eq!(sb["drops"], serde_json::json!({}), "{sb}");
    assert!(!tcpdump_lines(&file).is_empty());
}

#[test]
fn trace_errors_are_clear() {
    let d = Daemon::start(1);
    let a = Host::new("10.56.4.1");
    let net = net_name();
    d.network(&net, &[&a]);
    let file = d.dir.path().join("x.pcapng");
    let f = file.to_str().unwrap();
    for (args, want) in [
        (vec!["--port", "nope0", "-w", f], "no port named 'nope0'"),
        (vec!["nonet", "-w", f], "no network named 'nonet'"),
        (vec![&net, "-w", f, "tcp", "prot", "80"], "bad filter expression 'tcp prot 80'"),
        (vec![&net, "-w", "/nonexistent-dir/x.pcapng"], "cannot write /nonexistent-dir/x.pcapng"),
        (vec!["-w", f], "name a network or --port"),
    ] {
        let mut full = vec!["trace"];
        full.extend(args.iter().copied());
        let err = d.fails(&full);
        assert!(err.contains(want) && err.starts_with("error: "), "{full:?}: {err}");
        assert!(!file.exists(), "{full:?} left {f} behind");
    }
    // A file that was there before a refused trace is left as it was.
    std::fs::write(&file, b"keep me").unwrap();
    d.fails(&["trace", &net, "-w", f, "tcp", "prot", "80"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn explain_agrees_with_the_data_plane() {
    let d = Daemon::start(2);
    let (a, b, c) = (Host::new("10.56.5.1"), Host::new("10.56.5.2"), Host::new("10.56.5.3"));
    let net = net_name();
    d.network(&net, &[&a, &b, &c]);
    assert!(a.ns.wait_ping(&b.ip, 5));
    let (pa, pb, pc) = (&a.veth.host, &b.veth.host, &c.veth.host);
    let (ma, mb) = (a.mac(), b.mac());
    let explain = |frame: &str| {
        let v = d.json(&["explain", &net, "--in-port", pa, "--frame", frame]);
        v[0]["outcome"].clone()
    };
    let tx = |p: &str| d.tx_packets(p);

    // Learned unicast: to b only.
    let o = explain(&format!("eth src {ma} dst {mb} type 0x88b5"));
    assert_eq!(o["action"], "forward");
    assert_eq!(o["ports"], serde_json::json!([pb]));
    let (b0, c0) = (tx(pb), tx(pc));
    a.send_raw(&mb, &ma, "0x88b5", 10, 60);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!((tx(pb) - b0, tx(pc) - c0), (10, 0));

    // Unknown unicast: flooded to b and c.
    let o = explain(&format!("eth src {ma} dst 02:00:00:00:99:99"));
    assert_eq!(o["action"], "flood");
    let mut ports: Vec<String> = serde_json::from_value(o["ports"].clone()).unwrap();
    ports.sort();
    let mut want = vec![pb.to_string(), pc.to_string()];
    want.sort();
    assert_eq!(ports, want);
    let (b0, c0) = (tx(pb), tx(pc));
    a.send_raw("02:00:00:00:99:99", &ma, "0x88b5", 10, 60);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!((tx(pb) - b0, tx(pc) - c0), (10, 10));

    // 802.1D link-local: dropped and counted.
    let o = explain(&format!("eth src {ma} dst 01:80:c2:00:00:00 type 0x88cc"));
    assert_eq!((o["action"].as_str(), o["reason"].as_str()), (Some("drop"), Some("link_local")));
    let l0 = d.drops(pa, "link_local");
    a.send_raw("01:80:c2:00:00:00", &ma, "0x88cc", 10, 60);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(d.drops(pa, "link_local") - l0, 10);

    // A runt: the kernel will not send one through a veth, so explain alone (the worker runs
    // the same `forward::decide`, unit-tested on runts).
    let o = explain(&format!("eth src {ma} len 10"));
    assert_eq!((o["action"].as_str(), o["reason"].as_str()), (Some("drop"), Some("runt")));

    // The human form, and frames from a capture file the trace wrote.
    let text = d.ok(&["explain", &net, "--in-port", pa, "--frame", &format!("eth src {ma} dst {mb} arp")]);
    assert!(text.contains(&format!("=> forward to {pb}")), "{text}");
    assert!(text.contains(&format!("source {ma} already known on {pa}")), "{text}");
    let file = d.dir.path().join("ping.pcapng");
    let t = d.trace(&["--port", pa, "--count", "2", "-w", file.to_str().unwrap(), "icmp"]);
    assert!(a.ns.ping(&b.ip, 1));
    t.wait();
    let v = d.json(&["explain", &net, "--in-port", pa, "--pcap", file.to_str().unwrap()]);
    assert_eq!(v.as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v[0]["outcome"]["ports"], serde_json::json!([pb]), "{v}");
    // Asking changed nothing: no frame was sent for any of these.
    let err = d.fails(&["explain", &net, "--in-port", "nope0", "--frame", "arp"]);
    assert!(err.contains("no port named 'nope0'"), "{err}");
    let err = d.fails(&["explain", &net, "--in-port", pa, "--frame", "eth src zz"]);
    assert!(err.contains("invalid MAC address 'zz'"), "{err}");
}

#[test]
fn several_traces_at_once_each_with_its_own_filter() {
    let (d, a, b, net) = two_hosts(2, 6);
    let (f1, f2) = (d.dir.path().join("req.pcapng"), d.dir.path().join("all-icmp.pcap"));
    let t1 = d.trace(&[&net, "-w", f1.to_str().unwrap(), "icmp[icmptype] == icmp-echo"]);
    // The second stops by itself after its duration.
    let t2 =
        d.trace(&["--port", &b.veth.host, "--duration", "2", "--format", "pcap", "-w", f2.to_str().unwrap(), "icmp"]);
    assert!(a.ns.ping(&b.ip, 3));
    let s2 = t2.wait();
    let s1 = t1.interrupt();
    // t1: 3 requests, each seen in on a and out of b. t2: b's port only, requests out and replies in.
    assert!(s1.contains("6 frames captured"), "{s1}");
    assert!(s2.contains("6 frames captured"), "{s2}");
    let td = tcpdump_lines(&f2);
    assert_eq!(td.iter().filter(|l| l.contains("echo request")).count(), 3, "{td:#?}");
    assert_eq!(td.iter().filter(|l| l.contains("echo reply")).count(), 3, "{td:#?}");
}

#[test]
fn a_network_trace_follows_ports_that_join_later() {
    let (d, a, _b, net) = two_hosts(1, 7);
    let file = d.dir.path().join("later.pcapng");
    let t = d.trace(&[&net, "-w", file.to_str().unwrap(), "icmp"]);
    let c = Host::new("10.56.7.3");
    d.ok(&["network", "connect", &net, &c.veth.host]);
    assert!(c.ns.wait_ping(&a.ip, 5));
    assert!(c.ns.ping(&a.ip, 2));
    let summary = t.interrupt();
    assert!(!summary.starts_with("0 frames"), "{summary}");
    let lines = tshark_fields(&file);
    let from_c = format!("{},{IN},10.56.7.3,10.56.7.1,8", c.veth.host);
    assert!(count(&lines, &from_c) >= 2, "no echo request seen entering from the new port: {lines:#?}");
}
