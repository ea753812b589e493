//! The controller without root: in-memory ports and a machine in memory (`system::fake`).

use super::*;
use crate::control::system::fake::Fake;

struct Setup {
    c: Controller,
    world: Fake,
    dir: tempfile::TempDir,
}

fn start_in(dir: tempfile::TempDir, world: Fake) -> Setup {
    let sd = StateDir::open(dir.path()).unwrap();
    let st = sd.load().unwrap();
    let dp = Dataplane::start(1).unwrap();
    let c = Controller::start(st, sd, dp, Box::new(world.clone())).unwrap();
    Setup { c, world, dir }
}

fn setup() -> Setup {
    start_in(tempfile::tempdir().unwrap(), Fake::default())
}

impl Setup {
    fn ok(&mut self, r: Request) -> Value {
        self.c.handle(r).unwrap()
    }
    fn err(&mut self, r: Request) -> String {
        let before = std::fs::read(self.dir.path().join("state.json")).ok();
        let e = self.c.handle(r).unwrap_err();
        let after = std::fs::read(self.dir.path().join("state.json")).ok();
        assert_eq!(before, after, "a failed command changed the state: {e}");
        e
    }
    fn create(&mut self, name: &str, subnet: &str) {
        self.ok(Request::NetworkCreate(CreateNetwork {
            name: name.into(),
            subnets: vec![subnet.parse().unwrap()],
            ..Default::default()
        }));
    }
    fn restart(self) -> Setup {
        let Setup { c, world, dir } = self;
        drop(c);
        start_in(dir, world)
    }
}

fn connect_iface(net: &str, iface: &str) -> Request {
    Request::NetworkConnect(Connect { network: net.into(), iface: Some(iface.into()), ..Default::default() })
}

fn connect_ns(net: &str, ns: &str) -> Request {
    Request::NetworkConnect(Connect { network: net.into(), netns: Some(ns.into()), ..Default::default() })
}

#[test]
fn create_connect_and_the_errors_that_change_nothing() {
    let mut s = setup();
    s.create("blue", "10.1.0.0/24");
    s.world.0.lock().unwrap().add_link("veth-a");
    let v = s.ok(connect_iface("blue", "veth-a"));
    assert_eq!(v["ipv4"], "10.1.0.2");
    assert_eq!(v["mac"], "02:42:0a:01:00:02");
    assert_eq!(s.err(connect_iface("blue", "veth-a")), "interface veth-a is already attached to network blue");
    assert_eq!(s.err(connect_iface("nope", "veth-a")), "no network named 'nope' (see: vswitch network ls)");
    assert_eq!(
        s.err(connect_iface("blue", "veth-b")),
        "no interface named 'veth-b' (to create a TAP device, add --tap)"
    );
    let e = s.err(Request::NetworkCreate(CreateNetwork {
        name: "red".into(),
        subnets: vec!["10.1.0.0/16".parse().unwrap()],
        ..Default::default()
    }));
    assert_eq!(e, "subnet 10.1.0.0/16 overlaps subnet 10.1.0.0/24 of network blue");
    assert_eq!(
        s.err(Request::NetworkCreate(CreateNetwork { name: "blue".into(), ..Default::default() })),
        "a network named 'blue' already exists"
    );
    assert!(s.err(Request::NetworkRm { names: vec!["blue".into()] }).contains("still has ports: veth-a"));
    let e = s.err(Request::NetworkCreate(CreateNetwork {
        name: "o".into(),
        options: [("colour".to_string(), "red".to_string())].into(),
        ..Default::default()
    }));
    assert!(e.starts_with("unknown option 'colour' for the bridge driver (options: mtu, "), "{e}");
}

#[test]
fn an_address_range_runs_out_and_says_so() {
    let mut s = setup();
    s.create("tiny", "10.2.0.0/30");
    s.ok(Request::NetworkConnect(Connect {
        network: "tiny".into(),
        iface: Some("t0".into()),
        tap: true,
        ..Default::default()
    }));
    let e = s.err(Request::NetworkConnect(Connect {
        network: "tiny".into(),
        iface: Some("t1".into()),
        tap: true,
        ..Default::default()
    }));
    assert_eq!(e, "no free address left in 10.2.0.0/30 of network tiny");
    assert!(!s.world.0.lock().unwrap().links.contains_key("t1"), "the refused TAP was never opened");
}

#[test]
fn namespaces_get_endpoints_eth0_then_eth1_and_unknown_ones_are_refused() {
    let mut s = setup();
    s.create("blue", "10.3.0.0/24");
    s.create("red", "10.4.0.0/24");
    s.world.0.lock().unwrap().namespaces.insert(netns::path_of("web"));
    let a = s.ok(connect_ns("blue", "web"));
    assert_eq!(a["sandbox"]["ifname"], "eth0");
    let b = s.ok(connect_ns("red", "web"));
    assert_eq!((b["sandbox"]["ifname"].as_str(), b["sandbox"]["sandbox"].as_str()), (Some("eth1"), Some("web")));
    assert!(s.err(connect_ns("blue", "web")).contains("already has an endpoint on network blue"));
    assert_eq!(
        s.err(connect_ns("blue", "ghost")),
        "no network namespace at /run/netns/ghost (make one with: ip netns add NAME)"
    );
    let ps: Vec<SandboxView> = serde_json::from_value(s.ok(Request::Ps)).unwrap();
    assert_eq!((ps.len(), ps[0].endpoints.len()), (1, 2));
    // Disconnecting by sandbox name takes its endpoint on that network only.
    s.ok(Request::NetworkDisconnect { network: "blue".into(), target: "web".into() });
    let ps: Vec<SandboxView> = serde_json::from_value(s.ok(Request::Ps)).unwrap();
    assert_eq!(ps[0].endpoints.len(), 1);
    s.ok(Request::NetworkDisconnect { network: "red".into(), target: "web".into() });
    assert_eq!(
        s.ok(Request::Ps),
        serde_json::json!([]),
        "a namespace the switch did not make leaves with its last endpoint"
    );
}

#[test]
fn run_modes_make_and_remove_what_they_should() {
    let mut s = setup();
    s.create("blue", "10.5.0.0/24");
    let sb = |n: &str, net: RunNetwork| {
        Request::SandboxCreate(CreateSandbox {
            name: Some(n.into()),
            network: net,
            endpoint: Default::default(),
            dns: vec![],
        })
    };
    let web: SandboxView = serde_json::from_value(s.ok(sb("web", RunNetwork::Network("blue".into())))).unwrap();
    assert_eq!((web.mode.as_str(), web.etc_name.as_deref(), web.endpoints.len()), ("bridge", Some("web"), 1));
    let files = s.world.0.lock().unwrap().files["web"].clone();
    assert!(files.1.contains("10.5.0.2\tweb"), "{files:?}");
    let side: SandboxView = serde_json::from_value(s.ok(sb("side", RunNetwork::Container("web".into())))).unwrap();
    assert_eq!((side.netns, side.etc_name.as_deref()), (web.netns.clone(), Some("web")));
    let none: SandboxView = serde_json::from_value(s.ok(sb("quiet", RunNetwork::None))).unwrap();
    assert!(none.endpoints.is_empty() && none.netns.is_some());
    let host: SandboxView = serde_json::from_value(s.ok(sb("h", RunNetwork::Host))).unwrap();
    assert!(host.netns.is_none());
    assert_eq!(s.err(sb("web", RunNetwork::None)), "a sandbox named 'web' already exists (see: vswitch ps)");
    assert_eq!(s.err(sb("x", RunNetwork::Container("nope".into()))), "no sandbox named 'nope' (see: vswitch ps)");
    assert_eq!(s.err(sb("x", RunNetwork::Network("nope".into()))), "no network named 'nope' (see: vswitch network ls)");
    assert!(!s.world.0.lock().unwrap().namespaces.contains(&netns::path_of("x")), "a refused run leaves no namespace");
    assert!(s.err(Request::SandboxRm { name: "web".into() }).contains("sandbox side shares web's network"));
    s.ok(Request::SandboxRm { name: "side".into() });
    s.ok(Request::SandboxRm { name: "web".into() });
    assert!(!s.world.0.lock().unwrap().namespaces.contains(&netns::path_of("web")));
    let blue = &s.ok(Request::NetworkInspect { names: vec!["blue".into()] })[0];
    assert_eq!(blue["endpoints"], serde_json::json!([]));
}

#[test]
fn a_restart_keeps_addresses_and_drops_endpoints_whose_namespace_went_away() {
    let mut s = setup();
    s.create("blue", "10.6.0.0/24");
    let sb = |n: &str| {
        Request::SandboxCreate(CreateSandbox {
            name: Some(n.into()),
            network: RunNetwork::Network("blue".into()),
            endpoint: Default::default(),
            dns: vec![],
        })
    };
    s.ok(sb("a"));
    s.ok(sb("b"));
    let mut s = s.restart();
    let ps: Vec<SandboxView> = serde_json::from_value(s.ok(Request::Ps)).unwrap();
    assert_eq!(
        ps.iter().map(|p| p.endpoints[0].endpoint.ipv4.unwrap().to_string()).collect::<Vec<_>>(),
        ["10.6.0.2", "10.6.0.3"]
    );
    // b's namespace is deleted while the daemon is down.
    s.world.0.lock().unwrap().namespaces.remove(&netns::path_of("b"));
    let mut s = s.restart();
    let ps: Vec<SandboxView> = serde_json::from_value(s.ok(Request::Ps)).unwrap();
    assert_eq!(ps.len(), 1);
    assert_eq!(
        s.ok(Request::NetworkInspect { names: vec!["blue".into()] })[0]["endpoints"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn a_link_deleted_under_the_switch_takes_its_endpoint_out() {
    let mut s = setup();
    s.create("blue", "10.7.0.0/24");
    let idx = s.world.0.lock().unwrap().add_link("veth-z");
    s.ok(connect_iface("blue", "veth-z"));
    s.c.link_event(LinkEvent::Deleted(crate::control::netlink::Link { index: idx, name: "veth-z".into(), mtu: 1500 }));
    assert_eq!(s.ok(Request::NetworkInspect { names: vec!["blue".into()] })[0]["endpoints"], serde_json::json!([]));
    let s = s.restart();
    assert!(s.c.st.network("blue").unwrap().endpoints.is_empty(), "saved without it");
}

#[test]
fn a_port_that_cannot_be_opened_again_stays_and_is_retried() {
    let mut s = setup();
    s.create("blue", "10.7.1.0/24");
    let idx = s.world.0.lock().unwrap().add_link("veth-r");
    s.ok(connect_iface("blue", "veth-r"));
    let mac: MacAddr = "02:00:00:00:07:01".parse().unwrap();
    s.ok(Request::FdbAdd { network: "blue".into(), mac, port: "veth-r".into() });
    let table = s.c.nets["blue"].pipeline.table().unwrap().clone();
    // The port faults while the process is out of descriptors: it cannot be opened again.
    s.world.0.lock().unwrap().open_fails.insert("veth-r".into());
    let id = s.c.ports["veth-r"].id;
    s.c.fault(crate::worker::Fault { port: id, error: "ENETDOWN".into() });
    assert!(!s.c.ports.contains_key("veth-r") && s.c.reopening.contains_key("veth-r"));
    assert_eq!(s.c.st.network("blue").unwrap().endpoints.len(), 1, "the port stays in the state");
    s.c.tick();
    assert!(!s.c.ports.contains_key("veth-r"), "still failing");
    // Descriptors are back: the next tick opens it, its static entry with it.
    s.world.0.lock().unwrap().open_fails.clear();
    s.c.tick();
    let id = s.c.ports.get("veth-r").expect("opened again").id;
    assert!(s.c.reopening.is_empty());
    assert_eq!(table.get(mac), Some((id, true)), "static entry points at the new port id");
    // One that is still failing when its interface goes is removed on the kernel's word.
    s.world.0.lock().unwrap().open_fails.insert("veth-r".into());
    s.c.fault(crate::worker::Fault { port: id, error: "ENETDOWN".into() });
    s.c.link_event(LinkEvent::Deleted(crate::control::netlink::Link { index: idx, name: "veth-r".into(), mtu: 1500 }));
    assert!(s.c.reopening.is_empty());
    assert!(s.c.st.network("blue").unwrap().endpoints.is_empty());
}

#[test]
fn ipv6_networks_give_both_families_and_a_gateway_for_each() {
    let mut s = setup();
    let v = s.ok(Request::NetworkCreate(CreateNetwork { name: "dual".into(), ipv6: true, ..Default::default() }));
    assert_eq!(v["ipam"].as_array().unwrap().len(), 2);
    let v = s.ok(Request::NetworkConnect(Connect {
        network: "dual".into(),
        iface: Some("d0".into()),
        tap: true,
        ..Default::default()
    }));
    assert!(v["ipv4"].is_string() && v["ipv6"].is_string(), "{v}");
}

#[test]
fn a_failed_save_changes_nothing() {
    let mut s = setup();
    s.create("blue", "10.8.0.0/24");
    s.world.0.lock().unwrap().namespaces.insert(netns::path_of("web"));
    // A state file that cannot be replaced: a directory where the temporary file goes.
    std::fs::create_dir(s.dir.path().join("state.json.tmp")).unwrap();
    let e = s.c.handle(connect_ns("blue", "web")).unwrap_err();
    assert!(e.starts_with("cannot save state"), "{e}");
    let w = s.world.0.lock().unwrap();
    assert_eq!(w.links.len(), 0, "the endpoint's interfaces were removed again: {:?}", w.links);
    drop(w);
    assert!(s.c.ports.is_empty() && s.c.st.sandboxes.is_empty());
}

#[test]
fn a_namespace_with_its_own_eth0_gets_eth1_and_the_default_route_moves_on() {
    let mut s = setup();
    s.create("blue", "10.9.0.0/24");
    s.create("red", "10.10.0.0/24");
    let ns = netns::path_of("box");
    {
        let mut w = s.world.0.lock().unwrap();
        w.namespaces.insert(ns.clone());
        w.ns_links.insert(ns, vec!["lo".into(), "eth0".into()]);
    }
    let a = s.ok(connect_ns("blue", "box"));
    assert_eq!((a["sandbox"]["ifname"].as_str(), a["sandbox"]["default_route"].as_bool()), (Some("eth1"), Some(true)));
    let b = s.ok(connect_ns("red", "box"));
    assert_eq!((b["sandbox"]["ifname"].as_str(), b["sandbox"]["default_route"].as_bool()), (Some("eth2"), Some(false)));
    // The first network leaves: the next one to join takes the default route.
    s.ok(Request::NetworkDisconnect { network: "blue".into(), target: "box".into() });
    let c = s.ok(connect_ns("blue", "box"));
    assert_eq!(c["sandbox"]["default_route"], true, "{c}");
}

#[test]
fn macs_are_unique_on_a_network_and_never_the_gateways() {
    let mut s = setup();
    s.create("blue", "10.11.0.0/24");
    let tap = |name: &str, mac: &str| {
        Request::NetworkConnect(Connect {
            network: "blue".into(),
            iface: Some(name.into()),
            tap: true,
            endpoint: EndpointOptions { mac: Some(mac.parse().unwrap()), ..Default::default() },
            ..Default::default()
        })
    };
    s.ok(tap("t0", "02:00:00:00:00:aa"));
    assert!(s.err(tap("t1", "02:00:00:00:00:aa")).contains("already endpoint t0's"));
    let gw = s.c.st.network("blue").unwrap().bridge().unwrap().gateway_mac.to_string();
    assert!(s.err(tap("t1", &gw)).contains("gateway"));
    assert!(s.err(tap("t1", "01:00:5e:00:00:01")).contains("not a unicast address"));
}

#[test]
fn inhibit_ipv4_leaves_the_gateway_address_to_another_port() {
    let mut s = setup();
    s.ok(Request::NetworkCreate(CreateNetwork {
        name: "legacy".into(),
        subnets: vec!["10.12.0.0/24".parse().unwrap()],
        options: [("com.docker.network.bridge.inhibit_ipv4".to_string(), "true".to_string())].into(),
        ..Default::default()
    }));
    assert!(s.c.st.network("legacy").unwrap().bridge().unwrap().inhibit_ipv4);
    assert_eq!(s.c.nets["legacy"].pipeline.gateway().unwrap().ipv4, None);
}
