//! The daemon's life: restart with every network and port, interfaces deleted under traffic,
//! clean stop, a corrupt state file.

use std::thread::sleep;
use std::time::Duration;
use vswitch_integration::*;

#[test]
fn restart_restores_networks_and_ports() {
    let mut d = Daemon::start(2);
    let (a, b) = (Host::new("10.53.1.1"), Host::new("10.53.1.2"));
    let (net, other) = (net_name(), net_name());
    let tap = unique("vt");
    d.network(&net, &[&a, &b]);
    d.ok(&["network", "connect", &net, "--tap", &tap]);
    d.ok(&["network", "create", &other, "--subnet", "10.99.0.0/24", "--aging-time", "42"]);
    let before = d.json(&["network", "inspect", &net, &other]);
    assert!(a.ns.wait_ping(&b.ip, 5));

    assert!(d.stop().unwrap().success(), "daemon exit status:\n{}", d.log());
    assert!(
        !std::path::Path::new(&format!("/sys/class/net/{tap}")).exists(),
        "TAP the switch created survived SIGTERM"
    );
    assert!(!a.ns.ping(&b.ip, 1), "frames crossed with the daemon stopped");

    d.launch();
    let after = d.json(&["network", "inspect", &net, &other]);
    for (x, y) in before.as_array().unwrap().iter().zip(after.as_array().unwrap()) {
        for k in ["name", "id", "ipam", "driver", "internal", "endpoints", "static_macs"] {
            assert_eq!(x[k], y[k], "{k} changed across restart");
        }
    }
    assert!(std::path::Path::new(&format!("/sys/class/net/{tap}")).exists(), "TAP not recreated");
    assert!(a.ns.wait_ping(&b.ip, 5), "no forwarding after restart:\n{}", d.log());
}

#[test]
fn interface_deleted_under_traffic_becomes_a_removed_port() {
    let mut d = Daemon::start(2);
    let (a, b, c) = (Host::new("10.53.2.1"), Host::new("10.53.2.2"), Host::new("10.53.2.3"));
    let net = net_name();
    d.network(&net, &[&a, &b, &c]);
    assert!(a.ns.wait_ping(&b.ip, 5));
    let mut flood = a.ns.cmd(&["ping", "-f", "-w", "3", &b.ip]).stdout(std::process::Stdio::null()).spawn().unwrap();
    sleep(Duration::from_millis(500));
    sh(&["ip", "link", "del", &b.veth.host]);
    let _ = flood.wait();
    sleep(Duration::from_millis(1500));
    assert!(d.is_running(), "daemon died:\n{}", d.log());
    let eps = d.json(&["network", "inspect", &net])[0]["endpoints"].clone();
    let names: Vec<&str> = eps.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(names, [a.veth.host.as_str(), c.veth.host.as_str()]);
    assert!(d.log().contains("port removed"), "no log line:\n{}", d.log());
    assert!(a.ns.wait_ping(&c.ip, 5), "other ports stopped forwarding");
}

#[test]
fn corrupt_state_file_stops_the_start_and_is_kept() {
    let mut d = Daemon::start(1);
    d.ok(&["network", "create", &net_name()]);
    d.stop();
    let path = d.state_dir().join("state.json");
    std::fs::write(&path, "{\"version\": 1, \"networks\": [ oops").unwrap();
    let out = d.spawn().wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(d.log().contains("corrupt"), "{}", d.log());
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"version\": 1, \"networks\": [ oops");
}

#[test]
fn second_daemon_on_the_same_socket_is_refused() {
    let d = Daemon::start(1);
    let out = std::process::Command::new(vswitch_bin())
        .arg("--socket")
        .arg(d.socket())
        .args(["daemon", "--state-dir"])
        .arg(d.dir.path().join("other-state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already running"));
    d.ok(&["network", "ls"]);
}
