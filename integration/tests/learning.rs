//! The MAC table seen from outside: aging, stations that move, static entries, the cap.

use serde_json::Value;
use std::thread::sleep;
use std::time::Duration;
use vswitch_integration::*;

fn fdb(d: &Daemon, net: &str) -> Vec<Value> {
    d.json(&["fdb", net]).as_array().unwrap().clone()
}

fn port_of(d: &Daemon, net: &str, mac: &str) -> Option<String> {
    fdb(d, net).iter().find(|e| e["mac"] == mac).map(|e| e["port"].as_str().unwrap().to_string())
}

#[test]
fn learned_entries_age_out() {
    let d = Daemon::start(1);
    let (a, b) = (Host::new("10.52.1.1"), Host::new("10.52.1.2"));
    let net = net_name();
    d.ok(&["network", "create", &net, "--aging-time", "2"]);
    d.ok(&["network", "connect", &net, &a.veth.host]);
    d.ok(&["network", "connect", &net, &b.veth.host]);
    a.send_raw("ff:ff:ff:ff:ff:ff", &a.mac(), "88b5", 1, 60);
    sleep(Duration::from_millis(200));
    assert_eq!(port_of(&d, &net, &a.mac()).as_deref(), Some(a.veth.host.as_str()));
    // Aging runs once a second: gone between 2 and 3.x seconds after the last frame.
    sleep(Duration::from_millis(3800));
    assert_eq!(port_of(&d, &net, &a.mac()), None, "entry did not age out: {:?}", fdb(&d, &net));
}

#[test]
fn a_mac_that_moves_follows_at_once() {
    let d = Daemon::start(2);
    let (a, b, c) = (Host::new("10.52.2.1"), Host::new("10.52.2.2"), Host::new("10.52.2.3"));
    let net = net_name();
    d.network(&net, &[&a, &b, &c]);
    let roamer = "02:99:00:00:00:01";
    a.send_raw("ff:ff:ff:ff:ff:ff", roamer, "88b5", 1, 60);
    sleep(Duration::from_millis(100));
    assert_eq!(port_of(&d, &net, roamer).as_deref(), Some(a.veth.host.as_str()));
    b.send_raw("ff:ff:ff:ff:ff:ff", roamer, "88b5", 1, 60);
    sleep(Duration::from_millis(100));
    assert_eq!(port_of(&d, &net, roamer).as_deref(), Some(b.veth.host.as_str()));
    // And traffic to it goes to b only.
    let (ta, tb) = (d.tx_packets(&a.veth.host), d.tx_packets(&b.veth.host));
    c.send_raw(roamer, &c.mac(), "88b5", 10, 60);
    sleep(Duration::from_millis(200));
    assert_eq!(d.tx_packets(&b.veth.host) - tb, 10);
    assert_eq!(d.tx_packets(&a.veth.host) - ta, 0);
}

#[test]
fn static_entries_never_age_or_move_and_persist() {
    let mut d = Daemon::start(1);
    let (a, b) = (Host::new("10.52.3.1"), Host::new("10.52.3.2"));
    let net = net_name();
    d.ok(&["network", "create", &net, "--aging-time", "1"]);
    d.ok(&["network", "connect", &net, &a.veth.host]);
    d.ok(&["network", "connect", &net, &b.veth.host]);
    let m = "02:77:00:00:00:07";
    d.ok(&["fdb", &net, "--add", m, &a.veth.host]);
    b.send_raw("ff:ff:ff:ff:ff:ff", m, "88b5", 3, 60); // the same MAC shows up on b
    sleep(Duration::from_millis(2500));
    let e = fdb(&d, &net).into_iter().find(|e| e["mac"] == m).expect("static entry kept");
    assert_eq!(e["port"], a.veth.host.as_str());
    assert_eq!(e["type"], "static");
    d.stop();
    d.launch();
    assert_eq!(port_of(&d, &net, m).as_deref(), Some(a.veth.host.as_str()), "static entry lost on restart");
    d.ok(&["fdb", &net, "--del", m]);
    assert_eq!(port_of(&d, &net, m), None);
    assert!(d.fails(&["fdb", &net, "--del", m]).contains("no entry"));
    assert!(d.fails(&["fdb", &net, "--add", "01:00:5e:00:00:01", &a.veth.host]).contains("group address"));
}

#[test]
fn mac_flooding_is_capped() {
    let d = Daemon::start(1);
    let (a, b) = (Host::new("10.52.4.1"), Host::new("10.52.4.2"));
    let net = net_name();
    d.ok(&["network", "create", &net, "--max-learned", "10"]);
    d.ok(&["network", "connect", &net, &a.veth.host]);
    d.ok(&["network", "connect", &net, &b.veth.host]);
    let sendraw = sendraw_bin();
    for i in 0..50 {
        let src = format!("02:88:00:00:00:{i:02x}");
        a.ns.run(&[sendraw.to_str().unwrap(), &a.veth.inner, "ff:ff:ff:ff:ff:ff", &src, "88b5", "1", "60"]);
    }
    sleep(Duration::from_millis(200));
    let info = &d.json(&["network", "inspect", &net])[0];
    assert_eq!(info["learned_macs"], 10, "{info}");
    assert_eq!(info["not_learned_over_cap"], 40, "{info}");
    assert_eq!(fdb(&d, &net).iter().filter(|e| e["type"] == "learned").count(), 10);
    // Frames from MACs past the cap are still forwarded (flooded), never dropped.
    assert_eq!(d.tx_packets(&b.veth.host), 50);
}
