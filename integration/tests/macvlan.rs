//! Macvlan networks: endpoints with their own MACs on a parent interface. A `lan` namespace
//! stands for the physical LAN: a Linux bridge with an address of its own (a LAN host) and
//! a port towards each parent. The kernel's own macvlan, built on a second parent on the
//! same LAN, is the oracle: each mode's reachability matrix must be the same in both.

use std::process::{Child, Stdio};
use std::time::Duration;
use vswitch_integration::*;

/// The LAN: namespace `ns` with bridge `br0` holding `ip`, and parents plugged into it.
struct Lan {
    ns: Netns,
    parents: Vec<Veth>,
}

impl Lan {
    fn new(ip: &str) -> Lan {
        let ns = Netns::new();
        // A MAC of its own: a bridge's is otherwise its first port's, and would change when
        // a port is replaced (a LAN host's MAC does not).
        ns.run(&["ip", "link", "add", "br0", "address", "02:1a:00:00:00:01", "type", "bridge"]);
        ns.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "br0"]);
        ns.run(&["ip", "link", "set", "br0", "up"]);
        Lan { ns, parents: vec![] }
    }

    /// A new parent: a veth whose `host` end stays here and whose other end is a LAN port.
    fn plug(&mut self) -> usize {
        let v = Veth::new(&self.ns);
        self.ns.run(&["ip", "link", "set", &v.inner, "master", "br0"]);
        self.parents.push(v);
        self.parents.len() - 1
    }

    /// Reflect frames back out of the port they came in by (an external hairpin switch).
    fn hairpin(&self, parent: usize, on: bool) {
        let port = &self.parents[parent].inner;
        self.ns.run(&["bridge", "link", "set", "dev", port, "hairpin", if on { "on" } else { "off" }]);
    }

    fn flush_neighbours(&self) {
        self.ns.run(&["ip", "neigh", "flush", "all"]);
    }
}

/// Whether `from` reaches `ip` (one try after ARP settles: a no is a 2 s wait).
fn reaches(from: &Netns, ip: &str) -> bool {
    from.output(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "-q", ip]).status.success()
}

/// A namespace with `ip`/24 on `ifname` (eth0), and no other address.
fn endpoint_ns() -> Netns {
    Netns::new()
}

/// The kernel's macvlan endpoints on parent `parent` in `mode`, one namespace each.
fn kernel_endpoints(parent: &str, mode: &str, ips: &[&str]) -> Vec<Netns> {
    ips.iter()
        .map(|ip| {
            let ns = endpoint_ns();
            let mv = unique("vm");
            sh(&["ip", "link", "add", &mv, "link", parent, "type", "macvlan", "mode", mode]);
            sh(&["ip", "link", "set", &mv, "netns", &ns.name]);
            ns.run(&["ip", "link", "set", &mv, "name", "eth0"]);
            ns.run(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
            ns.run(&["ip", "link", "set", "eth0", "up"]);
            ns
        })
        .collect()
}

/// (A reaches the LAN, A reaches B) for endpoints a, b.
fn matrix(a: &Netns, b_ip: &str, lan_ip: &str) -> (bool, bool) {
    (reaches(a, lan_ip), reaches(a, b_ip))
}

#[test]
fn every_mode_reaches_what_the_kernels_macvlan_reaches() {
    let d = Daemon::start(2);
    let mut lan = Lan::new("192.0.2.10");
    let ours = lan.plug();
    let theirs = lan.plug();
    let parent = lan.parents[ours].host.clone();
    let kparent = lan.parents[theirs].host.clone();
    // (mode, hairpin on the LAN) -> (A reaches the LAN, A reaches B), as the kernel defines them.
    let expected = [
        ("bridge", false, (true, true)),
        ("bridge", true, (true, true)),
        ("private", false, (true, false)),
        ("private", true, (true, false)),
        ("vepa", false, (true, false)),
        ("vepa", true, (true, true)),
    ];
    for (mode, hairpin, want) in expected {
        lan.hairpin(ours, hairpin);
        lan.hairpin(theirs, hairpin);
        lan.flush_neighbours();
        // The kernel's.
        let k = kernel_endpoints(&kparent, mode, &["192.0.2.30", "192.0.2.31"]);
        let kernel = matrix(&k[0], "192.0.2.31", "192.0.2.10");
        drop(k);
        // Ours.
        let net = net_name();
        d.ok(&[
            "network",
            "create",
            "-d",
            "macvlan",
            "--subnet",
            "192.0.2.0/24",
            "--gateway",
            "192.0.2.1",
            "-o",
            &format!("parent={parent}"),
            "-o",
            &format!("macvlan_mode={mode}"),
            &net,
        ]);
        let (a, b) = (endpoint_ns(), endpoint_ns());
        d.ok(&["network", "connect", &net, "--netns", &a.name, "--ip", "192.0.2.20"]);
        d.ok(&["network", "connect", &net, "--netns", &b.name, "--ip", "192.0.2.21"]);
        let got = matrix(&a, "192.0.2.21", "192.0.2.10");
        assert_eq!(kernel, want, "the kernel's macvlan in {mode} mode, hairpin {hairpin}");
        assert_eq!(got, kernel, "vswitch's {mode} mode, hairpin {hairpin}: (LAN, endpoint) as the kernel's");
        for ns in [&a, &b] {
            d.ok(&["network", "disconnect", &net, &ns.name]);
        }
        d.ok(&["network", "rm", &net]);
    }
    // passthru: one endpoint owns the parent, in the kernel as here; a second is refused.
    let k = kernel_endpoints(&kparent, "passthru", &["192.0.2.30"]);
    let mv = unique("vm");
    let second = std::process::Command::new("ip")
        .args(["link", "add", &mv, "link", &kparent, "type", "macvlan", "mode", "passthru"])
        .output()
        .unwrap();
    assert!(!second.status.success(), "the kernel takes one passthru macvlan per parent");
    let kernel = reaches(&k[0], "192.0.2.10");
    drop(k);
    let net = net_name();
    d.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "192.0.2.0/24",
        "-o",
        &format!("parent={parent}"),
        "-o",
        "macvlan_mode=passthru",
        &net,
    ]);
    let (a, b) = (endpoint_ns(), endpoint_ns());
    d.ok(&["network", "connect", &net, "--netns", &a.name, "--ip", "192.0.2.20"]);
    let e = d.fails(&["network", "connect", &net, "--netns", &b.name, "--ip", "192.0.2.21"]);
    assert!(e.contains("passthru"), "{e}");
    assert!(kernel && reaches(&a, "192.0.2.10"), "passthru reaches the LAN, as the kernel's");
    d.ok(&["network", "disconnect", &net, &a.name]);
    d.ok(&["network", "rm", &net]);
}

#[test]
fn endpoints_keep_their_macs_and_carry_tcp_whole() {
    let mut d = Daemon::start(2);
    let mut lan = Lan::new("198.18.7.10");
    let p = lan.plug();
    let parent = lan.parents[p].host.clone();
    let net = net_name();
    d.ok(&["network", "create", "-d", "macvlan", "--subnet", "198.18.7.0/24", "-o", &format!("parent={parent}"), &net]);
    let a = endpoint_ns();
    let mac = "02:42:c6:12:07:14";
    d.ok(&["network", "connect", &net, "--netns", &a.name, "--ip", "198.18.7.20", "--mac", mac]);
    let cap = Capture::start(&lan.ns, &lan.parents[p].inner, "icmp");
    let pcap = d.dir.path().join("mv.pcapng");
    let trace = d.trace(&[&net, "--count", "2", "-w", pcap.to_str().unwrap(), "icmp"]);
    assert!(a.wait_ping("198.18.7.10", 5), "the endpoint reaches the LAN host");
    let seen = cap.stop();
    let summary = trace.wait();
    let read = sh(&["tcpdump", "-n", "-e", "-r", pcap.to_str().unwrap()]);
    assert!(read.contains(mac) && read.contains("ICMP echo"), "the trace shows the network's frames: {summary} {read}");
    assert!(
        seen.contains(&format!("{mac} >")),
        "the endpoint's frames keep its MAC on the LAN: {seen} {}",
        d.ok(&["stats"])
    );
    // The default route is the LAN's router (the --gateway, .1 here), not the switch.
    let routes = a.run(&["ip", "route"]);
    assert!(routes.contains("default via 198.18.7.1"), "{routes}");
    // TCP both ways at default offloads: GSO frames cross the parent whole.
    let (up, _) = iperf(&a, &lan.ns, "198.18.7.10", 2);
    let (down, _) = iperf(&lan.ns, &a, "198.18.7.20", 2);
    assert!(up > 0.1 && down > 0.1, "iperf3 {up} / {down} Gbit/s");
    let parent_stats = d.port_stats(&parent);
    assert_eq!(parent_stats["drops"]["tx_error"].as_u64().unwrap_or(0), 0, "{parent_stats}");
    // inspect and fdb show the parent and the endpoints' MACs.
    let v = d.json(&["network", "inspect", &net]);
    assert_eq!(v[0]["parent_attached"], true, "{v}");
    assert_eq!(v[0]["driver"]["macvlan"]["mode"], "bridge", "{v}");
    let fdb = d.ok(&["fdb", &net]);
    assert!(fdb.contains(mac), "{fdb}");
    // A bridge-only or NAT request says what is wrong and changes nothing.
    let e = d.fails(&["fdb", &net, "--add", "02:00:00:00:00:01", &parent]);
    assert!(e.contains("not attached") || e.contains("macvlan"), "{e}");
    let e = d.fails(&["network", "connect", &net, &parent]);
    assert!(e.contains("macvlan parent"), "{e}");
    let b = endpoint_ns();
    let e = d.fails(&["network", "connect", &net, "--netns", &b.name, "-p", "8080:80"]);
    assert!(e.contains("macvlan"), "no NAT on a macvlan network: {e}");
    // explain shows the dispatch stage: from the parent to the endpoint by its MAC.
    let v =
        d.json(&["explain", &net, "--in-port", &parent, "--frame", &format!("dst {mac} src 02:00:00:00:00:99 arp")]);
    assert_eq!(v[0]["outcome"]["action"], "forward", "{v}");
    assert!(v[0]["steps"].as_array().unwrap().iter().any(|s| s["stage"] == "dispatch"), "{v}");
    // A restart brings the network, its parent and its endpoint back.
    d.stop();
    d.launch();
    assert!(a.wait_ping("198.18.7.10", 5), "after a restart: {}", d.log());
    assert_eq!(d.json(&["network", "inspect", &net])[0]["parent_attached"], true);
    d.ok(&["network", "disconnect", &net, &a.name]);
    d.ok(&["network", "rm", &net]);
}

#[test]
fn two_vlans_on_one_parent_stay_apart_and_tagged() {
    let d = Daemon::start(1);
    let mut lan = Lan::new("198.18.8.10");
    let p = lan.plug();
    let parent = lan.parents[p].host.clone();
    let lan_port = lan.parents[p].inner.clone();
    let (n50, n60) = (net_name(), net_name());
    d.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "198.51.100.0/24",
        "-o",
        &format!("parent={parent}.50"),
        &n50,
    ]);
    d.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "203.0.113.0/24",
        "-o",
        &format!("parent={parent}.60"),
        &n60,
    ]);
    // One network per VLAN, and one untagged: a second VLAN 50 is refused, nothing changes.
    let e = d.fails(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.250.0.0/24",
        "-o",
        &format!("parent={parent}.50"),
        "again",
    ]);
    assert!(e.contains("VLAN 50"), "{e}");
    let e = d.fails(&["network", "create", "-d", "macvlan", "-o", "parent=nosuchif0.5", "x"]);
    assert!(e.contains("no interface named 'nosuchif0'"), "{e}");
    let (e50, e60) = (endpoint_ns(), endpoint_ns());
    d.ok(&["network", "connect", &n50, "--netns", &e50.name, "--ip", "198.51.100.20", "--mac", "02:42:00:00:50:20"]);
    d.ok(&["network", "connect", &n60, "--netns", &e60.name, "--ip", "203.0.113.20", "--mac", "02:42:00:00:60:20"]);

    // Out: E50's ARP requests leave tagged 50, E60's tagged 60.
    let cap = Capture::start(&lan.ns, &lan_port, "arp or vlan");
    let _ = e50.output(&["ping", "-c", "1", "-W", "1", "198.51.100.99"]);
    let _ = e60.output(&["ping", "-c", "1", "-W", "1", "203.0.113.99"]);
    let seen = cap.stop();
    assert!(seen.contains("vlan 50") && seen.contains("who-has 198.51.100.99"), "{seen}");
    assert!(seen.contains("vlan 60") && seen.contains("who-has 203.0.113.99"), "{seen}");
    for line in seen.lines().filter(|l| l.contains("who-has")) {
        let vlan50 = line.contains("198.51.100.99");
        assert!(line.contains(if vlan50 { "vlan 50" } else { "vlan 60" }), "each VLAN's own tag: {line}");
    }

    // In: a tagged ARP request reaches only its VLAN's endpoint, which answers tagged.
    let lan_mac = lan.ns.run(&["cat", &format!("/sys/class/net/{lan_port}/address")]).trim().to_string();
    let listen60 = Capture::start(&e60, "eth0", "arp");
    let cap = Capture::start(&lan.ns, &lan_port, "vlan 50 and arp");
    let who_has = |vid: u16, target: [u8; 4]| {
        let mut p = format!("{vid:04x}08060001080006040001{}", lan_mac.replace(':', ""));
        p.push_str("c6336464"); // sender 198.51.100.100
        p.push_str("000000000000");
        p.push_str(&target.iter().map(|b| format!("{b:02x}")).collect::<String>());
        p
    };
    lan.ns.run(&[
        sendraw_bin().to_str().unwrap(),
        &lan_port,
        "ff:ff:ff:ff:ff:ff",
        &lan_mac,
        "8100",
        "1",
        "64",
        &who_has(50, [198, 51, 100, 20]),
    ]);
    assert!(eventually(5, || cap.text().contains("is-at 02:42:00:00:50:20")), "E50 answers on VLAN 50: {}", cap.text());
    let seen = cap.stop();
    assert!(seen.contains("vlan 50"), "{seen}");
    std::thread::sleep(Duration::from_millis(300));
    let heard = listen60.stop();
    assert!(!heard.contains("198.51.100"), "VLAN 60's endpoint never sees VLAN 50's frames: {heard}");
    // A VLAN no network has is counted and dropped.
    lan.ns.run(&[
        sendraw_bin().to_str().unwrap(),
        &lan_port,
        "ff:ff:ff:ff:ff:ff",
        &lan_mac,
        "8100",
        "3",
        "64",
        &who_has(70, [198, 51, 100, 20]),
    ]);
    assert!(eventually(5, || d.drops(&parent, "unknown_vlan") >= 3), "{}", d.port_stats(&parent));
    let v = d.json(&[
        "explain",
        &n60,
        "--in-port",
        &parent,
        "--frame",
        "dst ff:ff:ff:ff:ff:ff src 02:00:00:00:00:99 vlan 70 arp",
    ]);
    assert_eq!(v[0]["outcome"]["reason"], "unknown_vlan", "{v}");
    for (n, ns) in [(&n50, &e50), (&n60, &e60)] {
        d.ok(&["network", "disconnect", n, &ns.name]);
        d.ok(&["network", "rm", n]);
    }
}

#[test]
fn the_host_reaches_endpoints_through_its_host_port_and_the_parent_comes_back() {
    let d = Daemon::start(1);
    let mut lan = Lan::new("10.77.9.10");
    let p = lan.plug();
    let parent = lan.parents[p].host.clone();
    let net = net_name();
    let hp = unique("vhp");
    // The daemon makes the host port in this namespace; gone with the network, or here if
    // the test fails first.
    let _hp_guard = LinkGuard(hp.clone());
    d.ok(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "--subnet",
        "10.77.9.0/24",
        "-o",
        &format!("parent={parent}"),
        "-o",
        "macvlan_mode=private",
        "-o",
        &format!("host_port={hp}"),
        &net,
    ]);
    let a = endpoint_ns();
    d.ok(&["network", "connect", &net, "--netns", &a.name, "--ip", "10.77.9.20"]);
    // The daemon's namespace (here: this machine's own) has the host port with an address
    // of the network, and reaches the endpoint through it, inside the switch (private mode:
    // endpoints would not even reach each other).
    let addrs = sh(&["ip", "-o", "-4", "addr", "show", "dev", &hp]);
    assert!(addrs.contains("10.77.9."), "{addrs}");
    assert!(
        eventually(5, || sh_ok(&["ping", "-c", "1", "-W", "1", "-I", &hp, "10.77.9.20"])),
        "the host reaches its macvlan endpoint"
    );
    assert!(a.wait_ping("10.77.9.10", 5), "and the endpoint the LAN");
    // The host port goes with its network, not alone.
    let end = d.json(&["network", "inspect", &net])[0]["driver"]["macvlan"]["host_port"]["port"]
        .as_str()
        .unwrap()
        .to_string();
    let e = d.fails(&["network", "disconnect", &net, &end]);
    assert!(e.contains("host port"), "{e}");

    // The parent deleted: logged, waited for; its endpoints stay.
    let lan_port = lan.parents[p].inner.clone();
    sh(&["ip", "link", "del", &parent]);
    assert!(eventually(5, || d.json(&["network", "inspect", &net])[0]["parent_attached"] == false), "{}", d.log());
    assert!(d.log().contains("macvlan parent lost"), "{}", d.log());
    // Re-created under the same name (and plugged into the LAN again): the endpoint is back.
    sh(&["ip", "link", "add", &parent, "type", "veth", "peer", "name", &lan_port]);
    sh(&["ip", "link", "set", &lan_port, "netns", &lan.ns.name]);
    lan.ns.run(&["ip", "link", "set", &lan_port, "master", "br0", "up"]);
    sh(&["ip", "link", "set", &parent, "up"]);
    assert!(eventually(10, || d.json(&["network", "inspect", &net])[0]["parent_attached"] == true), "{}", d.log());
    assert!(
        a.wait_ping("10.77.9.10", 10),
        "the endpoint reaches the LAN again: {}\n{}\n{}\n{}",
        d.ok(&["stats"]),
        lan.ns.run(&["ip", "-s", "link"]),
        sh(&["ip", "-s", "link", "show", &parent]),
        lan.ns.run(&["bridge", "link"])
    );
    // The network goes with its host port.
    d.ok(&["network", "disconnect", &net, &a.name]);
    d.ok(&["network", "rm", &net]);
    assert!(std::fs::metadata(format!("/sys/class/net/{hp}")).is_err(), "the host port is removed");
}

/// Deletes a link of this namespace on drop.
struct LinkGuard(String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        quiet(&["ip", "link", "del", &self.0]);
    }
}

fn sh_ok(args: &[&str]) -> bool {
    std::process::Command::new(args[0]).args(&args[1..]).output().is_ok_and(|o| o.status.success())
}

/// tcpdump on an interface of a namespace, its text read when stopped.
struct Capture {
    child: Option<Child>,
    out: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    fn start(ns: &Netns, iface: &str, filter: &str) -> Capture {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("cap.txt");
        let file = std::fs::File::create(&out).unwrap();
        let child = ns
            .cmd(&["tcpdump", "-l", "--immediate-mode", "-n", "-e", "-i", iface, filter])
            .stdout(file)
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        let mut c = Capture { child: Some(child), out, _dir: dir };
        // tcpdump says "listening on" once its socket is open.
        let stderr = c.child.as_mut().unwrap().stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(5)).expect("tcpdump started");
        c
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn stop(mut self) -> String {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signals our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
            let _ = c.wait();
        }
        self.text()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
