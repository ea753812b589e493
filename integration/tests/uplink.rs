//! The uplink: an interface the switch owns as its outside, with its own MAC and address.
//! A namespace `world` stands for the LAN behind it (a veth pair: one end in `world`, the
//! other the uplink); the switch answers ARP and ping there for its own address, keeps the
//! uplink over a restart, refuses what would break it, and lets it go again.

use vswitch_integration::*;

fn world() -> (Netns, Veth) {
    let w = Netns::new();
    let v = Veth::new(&w);
    w.run(&["ip", "addr", "add", "192.0.2.1/24", "dev", &v.inner]);
    (w, v)
}

#[test]
fn the_uplink_answers_for_its_address_and_survives_a_restart() {
    let mut d = Daemon::start(2);
    let (w, v) = world();
    let set = d.json(&["uplink", "set", &v.host, "--address", "192.0.2.10/24", "--gateway", "192.0.2.1"]);
    assert_eq!((set["interface"].as_str(), set["address"].as_str()), (Some(v.host.as_str()), Some("192.0.2.10/24")));
    assert_eq!(set["gateway"], "192.0.2.1");
    let mac = set["mac"].as_str().unwrap().to_string();
    assert!(w.wait_ping("192.0.2.10", 5), "world cannot ping the uplink:\n{}", d.log());
    // The switch answers with its own MAC, not the interface's.
    let arp = w.output(&["arping", "-c", "1", "-w", "2", "-I", &v.inner, "192.0.2.10"]);
    let text = String::from_utf8_lossy(&arp.stdout).to_lowercase();
    assert!(arp.status.success() && text.contains(&mac), "arping: {text}");
    let iface_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", v.host)).unwrap();
    assert_ne!(iface_mac.trim(), mac, "the switch's MAC is its own");
    // ls shows it for what it is; it is no network to join or remove.
    assert!(d.ok(&["network", "ls"]).lines().any(|l| l.contains(" uplink ") && l.contains("192.0.2.0/24")));
    let ns = Netns::new();
    assert!(d.fails(&["network", "connect", "uplink", "--netns", &ns.name]).contains("is the switch's uplink"));
    assert!(d.fails(&["network", "rm", "uplink"]).contains("vswitch uplink rm"));
    assert!(d.fails(&["network", "create", "uplink"]).contains("vswitch uplink set"));
    assert!(!d.ok(&["network", "prune"]).contains("uplink"));
    assert!(d.json(&["uplink"]).is_object(), "prune left the uplink");

    d.stop();
    d.launch();
    assert_eq!(d.json(&["uplink"])["mac"], mac.as_str(), "the uplink came back as it was");
    assert!(w.wait_ping("192.0.2.10", 5), "no answer after a restart:\n{}", d.log());

    d.ok(&["uplink", "rm"]);
    assert!(d.json(&["uplink"]).is_null());
    assert!(!w.ping("192.0.2.10", 2), "the address went with the uplink");
    assert!(d.ok(&["uplink"]).contains("no uplink"));
    // The interface is free again.
    let net = net_name();
    d.ok(&["network", "create", &net]);
    d.ok(&["network", "connect", &net, &v.host]);
}

#[test]
fn a_bad_uplink_is_refused_and_changes_nothing() {
    let d = Daemon::start(1);
    let (_w, v) = world();
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.58.0.0/16"]);
    let before = std::fs::read_to_string(d.state_dir().join("state.json")).unwrap();
    for (args, why) in [
        (vec!["--address", "192.0.2.0/24"], "the uplink's own address"),
        (vec!["--address", "192.0.2.10/32"], "the uplink's own address"),
        (vec!["--address", "192.0.2.10/24", "--gateway", "198.51.100.1"], "another host on the uplink's subnet"),
        (vec!["--address", "192.0.2.10/24", "--gateway", "192.0.2.10"], "another host"),
        (vec!["--address", "10.58.3.1/24"], "overlaps network"),
    ] {
        let mut a = vec!["uplink", "set", &v.host];
        a.extend(args.iter());
        let e = d.fails(&a);
        assert!(e.contains(why), "{a:?}: {e}");
    }
    assert!(d.fails(&["uplink", "set", "vsnosuch0", "--address", "192.0.2.10/24"]).contains("vsnosuch0"));
    assert!(d.fails(&["uplink", "set", &v.host, "--address", "nonsense"]).contains("nonsense"));
    assert!(d.fails(&["uplink", "rm"]).contains("no uplink is set"));
    assert_eq!(std::fs::read_to_string(d.state_dir().join("state.json")).unwrap(), before, "nothing changed");
    // Once set, a second one is refused with the way out.
    d.ok(&["uplink", "set", &v.host, "--address", "192.0.2.10/24"]);
    let e = d.fails(&["uplink", "set", &v.host, "--address", "192.0.2.11/24"]);
    assert!(e.contains("set already") && e.contains("vswitch uplink rm"), "{e}");
    assert!(d.fails(&["network", "connect", &net, &v.host]).contains("uplink"), "the interface is taken");
}
