//! SNAT through the uplink: endpoints on a bridge network reach `world`, a namespace behind
//! the uplink, by ping, TCP (iperf3 with the default offloads: GSO frames through the NAT)
//! and UDP, and `world` sees the uplink's address as their source. Two workers, so replies
//! must be steered to the worker that holds their session.

use std::process::{Child, Stdio};
use vswitch_integration::*;

const WORLD: &str = "192.0.2.1";

struct Setup {
    d: Daemon,
    world: Netns,
    _uplink: Veth,
    net: String,
}

fn setup(extra: &[&str]) -> Setup {
    setup_with(extra, &[])
}

fn setup_with(extra: &[&str], daemon_args: &[&str]) -> Setup {
    let mut d = Daemon::unstarted(2);
    d.args = daemon_args.iter().map(|a| a.to_string()).collect();
    d.launch();
    let world = Netns::new();
    let v = Veth::new(&world);
    world.run(&["ip", "addr", "add", &format!("{WORLD}/24"), "dev", &v.inner]);
    d.ok(&["uplink", "set", &v.host, "--address", "192.0.2.10/24", "--gateway", WORLD]);
    let net = net_name();
    let mut args = vec!["network", "create", &net, "--subnet", "10.59.0.0/24"];
    args.extend_from_slice(extra);
    d.ok(&args);
    Setup { d, world, _uplink: v, net }
}

fn endpoint(s: &Setup) -> Netns {
    let ns = Netns::new();
    s.d.ok(&["network", "connect", &s.net, "--netns", &ns.name]);
    ns
}

/// Start `tcpcheck args` in `ns` and wait for its "listening" line.
fn serve(ns: &Netns, args: &[&str]) -> Child {
    let bin = tcpcheck_bin();
    // Bounded: a server whose client never comes fails the test instead of hanging it.
    let mut cmd = vec!["timeout", "30", bin.to_str().unwrap()];
    cmd.extend_from_slice(args);
    let mut c = ns.cmd(&cmd).stdout(Stdio::piped()).spawn().unwrap();
    let mut first = [0u8; 10];
    std::io::Read::read_exact(c.stdout.as_mut().unwrap(), &mut first).unwrap();
    c
}

#[test]
fn endpoints_reach_the_world_with_the_uplinks_address() {
    let s = setup(&[]);
    let a = endpoint(&s);
    assert!(a.wait_ping(WORLD, 10), "no ping through the NAT:\n{}", s.d.log());

    // TCP: every byte arrives, from the uplink's address.
    let srv = serve(&s.world, &["serve", "5001", "0"]);
    let bin = tcpcheck_bin();
    let sent = a.output(&["timeout", "20", bin.to_str().unwrap(), "send", WORLD, "5001", "20"]);
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let got = String::from_utf8(srv.wait_with_output().unwrap().stdout).unwrap();
    assert!(got.contains("from 192.0.2.10:"), "world saw another source: {got}");
    assert_eq!(got.lines().last(), String::from_utf8_lossy(&sent.stdout).lines().last(), "bytes differ");

    // UDP: the question and its answer.
    let srv = serve(&s.world, &["udp-serve", "5353"]);
    let asked = a.output(&[bin.to_str().unwrap(), "udp-ask", WORLD, "5353"]);
    assert_eq!(String::from_utf8_lossy(&asked.stdout).trim(), "are you there", "{asked:?}");
    let got = String::from_utf8(srv.wait_with_output().unwrap().stdout).unwrap();
    assert!(got.contains("from 192.0.2.10:"), "{got}");

    // The connection table shows both flows, as the outside saw them.
    let v = s.d.json(&["nat", "sessions", "--network", &s.net]);
    let sessions = v["sessions"].as_array().unwrap();
    let tcp =
        sessions.iter().find(|x| x["proto"] == "tcp" && x["remote"] == "192.0.2.1:5001").expect("the TCP session");
    assert!(tcp["inside"].as_str().unwrap().starts_with("10.59.0.2:"), "{tcp}");
    assert!(tcp["outside"].as_str().unwrap().starts_with("192.0.2.10:"), "{tcp}");
    assert!(["fin_wait", "time_wait"].contains(&tcp["state"].as_str().unwrap()), "closed: {tcp}");
    assert!(sessions.iter().any(|x| x["proto"] == "udp" && x["remote"] == "192.0.2.1:5353" && x["state"] == "replied"));
    assert!(v["counters"]["created"].as_u64().unwrap() >= 3, "{v}");
    assert!(s.d.fails(&["nat", "sessions", "--network", "nosuch"]).contains("nosuch"));

    // An ICMP error about a translated flow comes back translated, inner header and all:
    // the endpoint's socket hears "port unreachable" for the datagram it sent.
    let refused = a.output(&[bin.to_str().unwrap(), "udp-ask", WORLD, "5999"]);
    assert_eq!(String::from_utf8_lossy(&refused.stdout).trim(), "refused", "{refused:?}");

    // A stream of GSO frames, translated whole.
    let (gbps, _) = iperf(&a, &s.world, WORLD, 2);
    assert!(gbps > 0.5, "{gbps} Gbit/s through the NAT");
}

#[test]
fn many_flows_find_their_way_back_whichever_worker_they_land_on() {
    let s = setup(&[]);
    let a = endpoint(&s);
    assert!(a.wait_ping(WORLD, 10));
    // Ports spread over both workers' slices: each reply must reach its session's owner.
    let bin = tcpcheck_bin();
    for port in 6000..6012 {
        let p = port.to_string();
        let srv = serve(&s.world, &["udp-serve", &p]);
        let asked = a.output(&[bin.to_str().unwrap(), "udp-ask", WORLD, &p]);
        assert_eq!(String::from_utf8_lossy(&asked.stdout).trim(), "are you there", "port {p}: {asked:?}");
        srv.wait_with_output().unwrap();
    }
}

#[test]
fn internal_networks_have_no_way_out_and_unsolicited_packets_no_way_in() {
    let s = setup(&["--internal"]);
    let a = endpoint(&s);
    let port = s.d.json(&["network", "inspect", &s.net])[0]["endpoints"][0]["name"].as_str().unwrap().to_string();
    // An internal network's endpoints get no default route: give one, to knock on the door.
    a.run(&["ip", "route", "add", "default", "via", "10.59.0.1"]);
    assert!(!a.ping(WORLD, 2), "an internal network reached the outside");
    assert_eq!(s.d.drops(&port, "no_route"), 2);
    // world knocks on the uplink's address: no session, so the switch's own host answers
    // (port unreachable), and nothing reaches the endpoint.
    let bin = tcpcheck_bin();
    let mut srv = serve(&a, &["udp-serve", "9"]);
    let knock = s.world.output(&[bin.to_str().unwrap(), "udp-ask", "192.0.2.10", "9"]);
    assert_eq!(String::from_utf8_lossy(&knock.stdout).trim(), "refused", "{knock:?}");
    // SIGTERM, which `timeout` passes on to the server (SIGKILL would orphan it).
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(srv.id() as i32, libc::SIGTERM) };
    let _ = srv.wait();
}

#[test]
fn idle_sessions_expire_and_the_nat_works_after_a_restart() {
    let mut s = setup_with(&[], &["--nat-timeout", "2"]);
    let a = endpoint(&s);
    assert!(a.wait_ping(WORLD, 10));
    let count = |s: &Setup| s.d.json(&["nat", "sessions"])["sessions"].as_array().unwrap().len();
    assert!(count(&s) >= 1, "the ping's session");
    // Idle past the timeout (expiry runs once a second): gone, and counted.
    assert!(eventually(6, || count(&s) == 0), "sessions outlived their timeout");
    assert!(s.d.json(&["nat", "sessions"])["counters"]["expired"].as_u64().unwrap() >= 1);
    // After a restart the uplink, the network and the NAT are back.
    s.d.stop();
    s.d.launch();
    assert!(a.wait_ping(WORLD, 10), "no way out after a restart:\n{}", s.d.log());
}

/// A sandbox on the network publishing `specs` (run -d with a long sleep: its namespace).
fn publisher(s: &Setup, name: &str, specs: &[&str]) -> Netns {
    let mut args = vec!["run", "-d", "--name", name, "--network", &s.net];
    for p in specs {
        args.extend_from_slice(&["-p", p]);
    }
    args.extend_from_slice(&["--", "sleep", "600"]);
    s.d.ok(&args);
    Netns::adopt(name)
}

#[test]
fn published_ports_reach_their_endpoint_with_the_clients_address() {
    let mut s = setup(&[]);
    let name = unique("web");
    let web = publisher(&s, &name, &["8080:80", "5353:53/udp"]);
    let ports = s.d.ok(&["port", &name]);
    assert!(ports.contains("80/tcp -> 192.0.2.10:8080") && ports.contains("53/udp -> 192.0.2.10:5353"), "{ports}");
    // world connects to the uplink's address; the endpoint sees world's own address.
    let srv = serve(&web, &["serve", "80", "0"]);
    let bin = tcpcheck_bin();
    let sent = s.world.output(&["timeout", "20", bin.to_str().unwrap(), "send", "192.0.2.10", "8080", "20"]);
    assert!(sent.status.success(), "{}:\n{}", String::from_utf8_lossy(&sent.stderr), s.d.log());
    let got = String::from_utf8(srv.wait_with_output().unwrap().stdout).unwrap();
    assert!(got.contains(&format!("from {WORLD}:")), "the client's address was not kept: {got}");
    assert_eq!(got.lines().last(), String::from_utf8_lossy(&sent.stdout).lines().last(), "bytes differ");
    // UDP too, and the answer comes back from the published address.
    let srv = serve(&web, &["udp-serve", "53"]);
    let asked = s.world.output(&[bin.to_str().unwrap(), "udp-ask", "192.0.2.10", "5353"]);
    assert_eq!(String::from_utf8_lossy(&asked.stdout).trim(), "are you there", "{asked:?}");
    assert!(String::from_utf8(srv.wait_with_output().unwrap().stdout).unwrap().contains(&format!("from {WORLD}:")));
    // The endpoint still reaches the world itself (SNAT) from its pinned worker.
    assert!(web.wait_ping(WORLD, 5));
    // A restart keeps the published ports, with the same host ports.
    s.d.stop();
    s.d.launch();
    assert_eq!(s.d.ok(&["port", &name]), ports);
    let srv = serve(&web, &["udp-serve", "53"]);
    let asked = s.world.output(&[bin.to_str().unwrap(), "udp-ask", "192.0.2.10", "5353"]);
    assert_eq!(
        String::from_utf8_lossy(&asked.stdout).trim(),
        "are you there",
        "after a restart: {asked:?}\n{}\n{}",
        s.d.ok(&["stats"]),
        s.d.log()
    );
    srv.wait_with_output().unwrap();
    s.d.ok(&["rm", &name]);
}

#[test]
fn bad_or_taken_ports_are_refused_and_change_nothing() {
    let s = setup(&[]);
    let first = unique("web");
    let _web = publisher(&s, &first, &["8080:80"]);
    let state = || std::fs::read_to_string(s.d.state_dir().join("state.json")).unwrap();
    let before = state();
    let ns = Netns::new();
    for (spec, why) in [
        ("8080:80", "tcp/8080 is already published by"),
        ("8000-8002:80-81", "differ in size"),
        ("80/sctp", "protocol"),
        ("0:80", "not a port"),
        ("198.51.100.1:9000:9000", "not the switch's outside address"),
    ] {
        let e = s.d.fails(&["network", "connect", &s.net, "--netns", &ns.name, "-p", spec]);
        assert!(e.contains(why), "-p {spec}: {e}");
    }
    assert_eq!(state(), before, "a refused -p changed the state");
    // Internal networks publish nothing.
    let internal = net_name();
    s.d.ok(&["network", "create", &internal, "--internal"]);
    let e = s.d.fails(&["network", "connect", &internal, "--netns", &ns.name, "-p", "9000:90"]);
    assert!(e.contains("internal"), "{e}");
    s.d.ok(&["rm", &first]);
}

/// `tcpcheck send` from `client` to `ip:port`; the server in `server` reports who it saw.
fn send_through(server: &Netns, client: &Netns, listen: &str, ip: &str, port: &str) -> String {
    let srv = serve(server, &["serve", listen, "0"]);
    let bin = tcpcheck_bin();
    let sent = client.output(&["timeout", "20", bin.to_str().unwrap(), "send", ip, port, "4"]);
    assert!(sent.status.success(), "send to {ip}:{port}: {}", String::from_utf8_lossy(&sent.stderr));
    let got = String::from_utf8(srv.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(got.lines().last(), String::from_utf8_lossy(&sent.stdout).lines().last(), "bytes differ");
    got
}

#[test]
fn hairpin_reaches_a_published_port_from_the_same_and_from_another_network() {
    let s = setup(&[]);
    let name = unique("web");
    let web = publisher(&s, &name, &["8080:80"]);
    let neighbour = endpoint(&s);
    let other_net = net_name();
    s.d.ok(&["network", "create", &other_net, "--subnet", "10.58.0.0/24"]);
    let stranger = Netns::new();
    s.d.ok(&["network", "connect", &other_net, "--netns", &stranger.name]);
    // Several connections from each: their source ports spread them over both workers, and
    // each reply must find the worker that holds its session.
    for client in [&neighbour, &stranger] {
        for _ in 0..4 {
            let got = send_through(&web, client, "80", "192.0.2.10", "8080");
            // The publisher sees the uplink's address, so its reply comes back through the
            // switch (not straight to a neighbour that expects 192.0.2.10:8080).
            assert!(got.contains("from 192.0.2.10:"), "{got}\n{}", s.d.log());
        }
    }
    // Removing the publisher takes its sessions with it.
    let published = |s: &Setup| {
        s.d.json(&["nat", "sessions"])["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["remote"] == "192.0.2.10:8080")
            .count()
    };
    assert!(published(&s) >= 1, "the hairpin sessions");
    s.d.ok(&["rm", &name]);
    assert!(eventually(5, || published(&s) == 0), "sessions of an unpublished port stayed");
}

#[test]
fn icc_false_keeps_endpoints_apart_but_lets_them_out() {
    let s = setup(&["-o", "icc=false"]);
    let a = endpoint(&s);
    let b = endpoint(&s);
    let v = s.d.json(&["network", "inspect", &s.net]);
    let eps = v[0]["endpoints"].as_array().unwrap();
    let ip_of = |i: usize| eps[i]["ipv4"].as_str().unwrap().to_string();
    let port_a = eps[0]["name"].as_str().unwrap().to_string();
    assert!(a.wait_ping("10.59.0.1", 5), "the gateway");
    assert!(a.wait_ping(WORLD, 10), "the outside");
    assert!(!a.ping(&ip_of(1), 2), "a reached b on an icc=false network");
    assert!(s.d.drops(&port_a, "icc_denied") >= 1, "{}", s.d.ok(&["stats"]));
    assert!(b.wait_ping("10.59.0.1", 5));
    // The same network with icc left on: they reach each other (the check above can fail).
    let open = net_name();
    s.d.ok(&["network", "create", &open, "--subnet", "10.57.0.0/24"]);
    let (c, d) = (Netns::new(), Netns::new());
    s.d.ok(&["network", "connect", &open, "--netns", &c.name]);
    s.d.ok(&["network", "connect", &open, "--netns", &d.name]);
    let d_ip = s.d.json(&["network", "inspect", &open])[0]["endpoints"][1]["ipv4"].as_str().unwrap().to_string();
    assert!(c.wait_ping(&d_ip, 5));
    assert!(s.d.fails(&["network", "create", &net_name(), "-o", "icc=maybe"]).contains("true or false"));
}

#[test]
fn traceroute_through_the_switch_shows_the_gateway_hop() {
    let s = setup(&[]);
    let a = endpoint(&s);
    assert!(a.wait_ping(WORLD, 10));
    // UDP probes: the first one's TTL runs out at the gateway (time exceeded from 10.59.0.1),
    // the second reaches world, whose port unreachable comes back translated.
    // One probe at a time (-N 1): with probes in parallel, traceroute gives up on a hop whose
    // answer comes 10x later than the next hop's (its "near" wait), which a busy machine hits.
    let out = a.run(&["traceroute", "-n", "-N", "1", "-q", "1", "-w", "2", "-m", "4", WORLD]);
    let hops: Vec<&str> = out.lines().skip(1).collect();
    assert!(hops.first().is_some_and(|h| h.contains("10.59.0.1")), "{out}");
    assert!(hops.get(1).is_some_and(|h| h.contains(WORLD)), "{out}");
    assert_eq!(hops.len(), 2, "world is the second hop: {out}");
    // And a ping with TTL 1 hears "time to live exceeded" from the gateway.
    let ping = a.output(&["ping", "-c", "1", "-W", "2", "-t", "1", WORLD]);
    let text = String::from_utf8_lossy(&ping.stdout);
    assert!(text.contains("From 10.59.0.1") && text.contains("Time to live exceeded"), "{text}");
}
