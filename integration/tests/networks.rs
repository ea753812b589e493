//! Networks as Docker has them: endpoints in namespaces get addresses from IPAM (IPv4 and
//! IPv6), the switch's gateway answers ARP, ping and neighbour discovery with its own MAC,
//! networks are isolated from each other (and the counter says why), `--internal` gives no
//! way out, and every refusal is one clear line that changes nothing.

use serde_json::Value;
use vswitch_integration::*;

/// Endpoint `ns` on network `net` (connect --netns); returns its addresses and MAC.
fn endpoint(d: &Daemon, net: &str, ns: &Netns, extra: &[&str]) -> Value {
    let mut args = vec!["network", "connect", net, "--netns", &ns.name];
    args.extend_from_slice(extra);
    d.json(&args)
}

fn gateway_mac(d: &Daemon, net: &str) -> String {
    d.json(&["network", "inspect", net])[0]["driver"]["bridge"]["gateway_mac"].as_str().unwrap().to_string()
}

fn ping(ns: &Netns, ip: &str) -> bool {
    let v6 = if ip.contains(':') { "-6" } else { "-4" };
    eventually(5, || ns.output(&["ping", v6, "-c", "1", "-W", "1", "-q", ip]).status.success())
}

#[test]
fn endpoints_get_addresses_and_the_gateway_answers_for_itself() {
    let d = Daemon::start(2);
    let net = net_name();
    d.ok(&["network", "create", &net, "--ipv6", "--subnet", "10.57.1.0/24", "--subnet", "fd00:57:1::/64"]);
    let (a, b) = (Netns::with_ipv6(), Netns::with_ipv6());
    let ea = endpoint(&d, &net, &a, &[]);
    let eb = endpoint(&d, &net, &b, &["--ip", "10.57.1.77"]);
    assert_eq!((ea["ipv4"].as_str(), ea["ipv6"].as_str()), (Some("10.57.1.2"), Some("fd00:57:1::2")), "{ea}");
    assert_eq!(eb["ipv4"], "10.57.1.77");
    assert_eq!(ea["mac"], "02:42:0a:39:01:02", "Docker's MAC from the address");
    // Inside: eth0 with that MAC and both addresses, default routes via the gateway.
    let link = a.run(&["ip", "-o", "addr", "show", "eth0"]);
    assert!(link.contains("10.57.1.2/24") && link.contains("fd00:57:1::2/64"), "{link}");
    assert!(a.run(&["cat", "/sys/class/net/eth0/address"]).trim() == "02:42:0a:39:01:02");
    assert!(a.run(&["ip", "-4", "route"]).contains("default via 10.57.1.1 dev eth0"));
    assert!(a.run(&["ip", "-6", "route"]).contains("default via fd00:57:1::1 dev eth0"));

    for ip in ["10.57.1.1", "fd00:57:1::1", "10.57.1.77", "fd00:57:1::3"] {
        assert!(ping(&a, ip), "a cannot ping {ip}:\n{}", d.log());
    }
    // arping and the neighbour table see the gateway's MAC, the switch's own.
    let gw_mac = gateway_mac(&d, &net);
    let arp = a.output(&["arping", "-c", "1", "-w", "2", "-I", "eth0", "10.57.1.1"]);
    let text = String::from_utf8_lossy(&arp.stdout).to_lowercase();
    assert!(arp.status.success() && text.contains(&gw_mac), "arping: {text}");
    let neigh = a.run(&["ip", "-6", "neigh", "show", "fd00:57:1::1"]);
    assert!(neigh.contains(&gw_mac), "{neigh}");
    // The gateway's row in stats counts what it was sent and what it answered.
    let stats = d.json(&["stats"]);
    let gw = stats.as_array().unwrap().iter().find(|s| s["network"] == net.as_str() && s["port"] == "gateway").unwrap();
    assert!(gw["tx_packets"].as_u64().unwrap() >= 4 && gw["rx_packets"].as_u64().unwrap() >= 4, "{gw}");
    // explain names the gateway stage for an ARP request for its address.
    let port = ea["name"].as_str().unwrap();
    let v = d.json(&["explain", &net, "--in-port", port, "--frame", "arp who-has 10.57.1.1 tell 10.57.1.2"]);
    assert_eq!(v[0]["outcome"]["action"], "gateway", "{v}");
    assert!(v[0]["steps"].as_array().unwrap().iter().any(|s| s["stage"] == "gateway"), "{v}");
}

#[test]
fn networks_are_isolated_at_the_gateway_and_the_drop_is_counted() {
    let d = Daemon::start(1);
    let (blue, red) = (net_name(), net_name());
    d.ok(&["network", "create", &blue, "--subnet", "10.57.2.0/24"]);
    d.ok(&["network", "create", &red, "--subnet", "10.57.3.0/24"]);
    let (a, c) = (Netns::new(), Netns::new());
    let ea = endpoint(&d, &blue, &a, &[]);
    let ec = endpoint(&d, &red, &c, &[]);
    assert!(ping(&a, "10.57.2.1"));
    assert!(ping(&c, "10.57.3.1"));
    let port = ea["name"].as_str().unwrap();
    assert!(!a.ping(ec["ipv4"].as_str().unwrap(), 3), "blue reached red through the gateway");
    assert_eq!(d.drops(port, "isolated"), 3, "each refused packet is counted on its way in");
    assert!(!a.ping("192.0.2.1", 1), "no route out without an uplink");
    assert_eq!(d.drops(port, "no_route"), 1);
    let v = d.json(&[
        "explain",
        &blue,
        "--in-port",
        port,
        "--frame",
        &format!("dst {} ip src 10.57.2.2 dst 10.57.3.2 icmp", gateway_mac(&d, &blue)),
    ]);
    assert_eq!(v[0]["outcome"]["reason"], "isolated", "{v}");
}

#[test]
fn an_internal_network_has_no_way_out() {
    let d = Daemon::start(1);
    let net = net_name();
    d.ok(&["network", "create", &net, "--internal", "--subnet", "10.57.4.0/24", "-o", "mtu=1400"]);
    let a = Netns::new();
    endpoint(&d, &net, &a, &[]);
    let info = &d.json(&["network", "inspect", &net])[0];
    assert_eq!(info["internal"], true);
    assert!(!a.run(&["ip", "route"]).contains("default"), "an internal network gives no default route");
    assert!(a.run(&["ip", "link", "show", "eth0"]).contains("mtu 1400"), "the network's MTU");
    assert!(ping(&a, "10.57.4.1"), "the gateway itself is still there");
    assert!(d.ok(&["network", "ls"]).contains("bridge (internal)"));
}

#[test]
fn refusals_are_one_line_and_change_nothing() {
    let d = Daemon::start(1);
    let (net, tiny) = (net_name(), net_name());
    d.ok(&["network", "create", &net, "--subnet", "10.57.5.0/24"]);
    d.ok(&["network", "create", &tiny, "--subnet", "10.57.6.0/30"]);
    let (a, b) = (Netns::new(), Netns::new());
    endpoint(&d, &tiny, &a, &[]);
    let state = || std::fs::read_to_string(d.state_dir().join("state.json")).unwrap();
    let links = || sh(&["ip", "-o", "link"]).lines().count();
    let (st0, links0) = (state(), links());
    let refused = |args: &[&str], want: &str| {
        let e = d.fails(args);
        assert!(e.contains(want), "{args:?}: {e}");
        assert_eq!(e.trim().lines().count(), 1, "one line: {e}");
        assert_eq!(state(), st0, "{args:?} changed the state");
        assert_eq!(links(), links0, "{args:?} left an interface behind");
    };
    refused(
        &["network", "create", "x", "--subnet", "10.57.5.128/25"],
        &format!("overlaps subnet 10.57.5.0/24 of network {net}"),
    );
    refused(
        &["network", "connect", &tiny, "--netns", &b.name],
        &format!("no free address left in 10.57.6.0/30 of network {tiny}"),
    );
    refused(
        &["network", "connect", &net, "--netns", &b.name, "--ip", "10.57.5.1"],
        "address 10.57.5.1 is already in use",
    );
    refused(&["network", "connect", &net, "--netns", &b.name, "--ip6", "fd00::9"], "has no subnet for --ip6");
    refused(
        &["network", "connect", &net, "--netns", "no-such-ns-x"],
        "no network namespace at /run/netns/no-such-ns-x",
    );
    refused(&["network", "connect", &tiny, "--netns", &a.name], "already has an endpoint on network");
    refused(&["network", "connect", &net, "--netns", &b.name, "--name", &a.name], "already exists");
    refused(&["network", "create", "x", "-o", "colour=red"], "unknown option 'colour'");
    refused(&["network", "create", "x", "--subnet", "fd00:1::/64"], "add --ipv6");
    refused(&["network", "create", "x", "--subnet", "10.58.0.0/24", "--gateway", "10.59.0.1"], "not in any subnet");
    refused(&["run", "--network", "nope", "--", "true"], "no network named 'nope'");
    refused(&["run", "--network", "container:nope", "--", "true"], "no sandbox named 'nope'");
    refused(&["rm", "nope"], "no sandbox named 'nope'");
}

#[test]
fn a_namespace_with_its_own_eth0_and_default_route_keeps_them() {
    // As a container's namespace would be: its own eth0 and default route already there.
    let d = Daemon::start(1);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.57.7.0/24"]);
    let a = Netns::new();
    a.run(&["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer"]);
    a.run(&["ip", "addr", "add", "192.168.77.2/24", "dev", "eth0"]);
    a.run(&["ip", "link", "set", "eth0", "up"]);
    a.run(&["ip", "link", "set", "eth0peer", "up"]);
    a.run(&["ip", "route", "add", "default", "via", "192.168.77.1"]);
    let e = endpoint(&d, &net, &a, &[]);
    assert_eq!(e["sandbox"]["ifname"], "eth1", "{e}");
    let routes = a.run(&["ip", "route"]);
    assert!(routes.contains("default via 192.168.77.1 dev eth0"), "its own default route stays: {routes}");
    assert!(ping(&a, "10.57.7.1"), "the new endpoint reaches its gateway");
}

#[test]
fn a_process_namespace_by_path_and_its_end() {
    // A namespace only a process holds (/proc/PID/ns/net), as a container runtime's would be.
    let d = Daemon::start(1);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.57.8.0/24"]);
    let mut holder = std::process::Command::new("unshare").args(["--net", "sleep", "60"]).spawn().unwrap();
    let pid = holder.id().to_string();
    let path = format!("/proc/{pid}/ns/net");
    // unshare has entered its namespace once /proc says it differs from ours.
    assert!(eventually(5, || std::fs::read_link(&path).ok() != std::fs::read_link("/proc/self/ns/net").ok()));
    let e = d.json(&["network", "connect", &net, "--netns", &path]);
    assert_eq!(e["sandbox"]["sandbox"], format!("pid-{pid}"), "{e}");
    let inside = sh(&["nsenter", "-t", &pid, "-n", "ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(inside.contains("10.57.8.2/24"), "{inside}");
    let ping = std::process::Command::new("nsenter")
        .args(["-t", &pid, "-n", "ping", "-c1", "-W2", "10.57.8.1"])
        .output()
        .unwrap();
    assert!(ping.status.success(), "the gateway answers the process's namespace");
    // The process ends: its namespace and the endpoint's interfaces go, the endpoint with them.
    let _ = holder.kill();
    let _ = holder.wait();
    let gone = eventually(5, || d.json(&["network", "inspect", &net])[0]["endpoints"] == serde_json::json!([]));
    assert!(gone, "{}", d.log());
}
