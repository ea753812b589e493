//! Sandboxes: `vswitch run` in each of Docker's network modes, endpoints that reach each
//! other by address, a restart that keeps every address, an endpoint whose namespace goes
//! away, and a state file of the first release brought forward.

use vswitch_integration::*;

fn run(d: &Daemon, args: &[&str]) -> std::process::Output {
    let mut a = vec!["run"];
    a.extend_from_slice(args);
    d.cli(&a)
}

/// A process that exists and is not a zombie.
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn run_in_every_mode() {
    let d = Daemon::start(1);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.58.1.0/24"]);
    let web = unique("web");
    let _guard = Netns::adopt(&web);
    d.ok(&["run", "-d", "--name", &web, "--network", &net, "--ip", "10.58.1.10", "--", "sleep", "60"]);
    assert!(sh(&["ip", "netns", "list"]).contains(&web), "the sandbox's namespace is visible to ip netns");

    // A network: eth0 with an address, a default route via the gateway, resolv.conf and hosts.
    let o = run(
        &d,
        &[
            "--network",
            &net,
            "--",
            "sh",
            "-c",
            "ip -o -4 addr show eth0; ip route; cat /etc/hosts; ping -c1 -W2 10.58.1.10",
        ],
    );
    let text = stdout(&o);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("10.58.1.2/24") && text.contains("default via 10.58.1.1 dev eth0"), "{text}");
    assert!(text.contains("10.58.1.2\tvs-"), "the hosts file names the sandbox: {text}");
    assert!(text.contains("1 received"), "{text}");

    // none: only loopback.
    let text = stdout(&run(&d, &["--network", "none", "--", "ip", "-o", "link"]));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(": lo:"), "{text}");

    // container:NAME shares web's namespace: its address.
    let text =
        stdout(&run(&d, &["--network", &format!("container:{web}"), "--", "ip", "-o", "-4", "addr", "show", "eth0"]));
    assert!(text.contains("10.58.1.10/24"), "{text}");

    // host: the host's own interfaces (a veth made here shows).
    let ns = Netns::new();
    let v = Veth::new(&ns);
    let text = stdout(&run(&d, &["--network", "host", "--", "ip", "-o", "link"]));
    assert!(text.contains(&v.host), "{text}");

    // The command's exit code is vswitch run's; the sandbox goes with the command.
    let o = run(&d, &["--name", &unique("ex"), "--network", &net, "--", "sh", "-c", "exit 7"]);
    assert_eq!(o.status.code(), Some(7));
    let ps = d.json(&["ps"]);
    assert_eq!(ps.as_array().unwrap().len(), 1, "only the detached sandbox is left: {ps}");
    assert_eq!(ps[0]["name"], web.as_str());
    assert_eq!(ps[0]["running"], true);
    let o = run(&d, &["--network", &net, "--", "no-such-command-xyz"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("cannot run no-such-command-xyz"));
    assert_eq!(d.json(&["ps"]).as_array().unwrap().len(), 1, "a command that cannot start leaves no sandbox");

    // rm stops the process and removes the namespace.
    let pid = ps[0]["pid"].as_u64().unwrap();
    d.ok(&["rm", &web]);
    assert!(!alive(pid), "rm stopped the process before it returned");
    assert!(!sh(&["ip", "netns", "list"]).contains(&web));
    assert_eq!(d.json(&["network", "inspect", &net])[0]["endpoints"], serde_json::json!([]));
}

#[test]
fn a_restart_keeps_every_address_and_endpoint() {
    let mut d = Daemon::start(2);
    let net = net_name();
    d.ok(&["network", "create", &net, "--ipv6", "--subnet", "10.58.2.0/24", "--subnet", "fd00:58:2::/64"]);
    let web = unique("web");
    let web_ns = Netns::adopt(&web);
    d.ok(&["run", "-d", "--name", &web, "--network", &net, "--", "sleep", "60"]);
    let db = Netns::with_ipv6();
    d.ok(&["network", "connect", &net, "--netns", &db.name, "--ip", "10.58.2.50"]);
    let before = d.json(&["ps"]);
    assert!(eventually(5, || web_ns.ping("10.58.2.50", 1)));

    assert!(d.stop().unwrap().success());
    d.launch();
    let after = d.json(&["ps"]);
    let addrs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .flat_map(|s| {
                s["endpoints"].as_array().unwrap().iter().map(|e| format!("{}{}{}", e["ipv4"], e["ipv6"], e["mac"]))
            })
            .collect()
    };
    assert_eq!(addrs(&after), addrs(&before));
    assert!(eventually(5, || web_ns.ping("10.58.2.50", 1)), "no forwarding after restart:\n{}", d.log());
    assert!(eventually(5, || db.ping("10.58.2.1", 1)), "the gateway is back too");
}

#[test]
fn an_endpoint_whose_namespace_goes_away_is_cleaned_up() {
    let d = Daemon::start(1);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.58.3.0/24"]);
    let ns = Netns::new();
    let e = d.json(&["network", "connect", &net, "--netns", &ns.name]);
    let port = e["name"].as_str().unwrap().to_string();
    drop(ns); // ip netns del: the veth pair goes with the namespace
    let gone = eventually(5, || d.json(&["network", "inspect", &net])[0]["endpoints"] == serde_json::json!([]));
    assert!(gone, "the endpoint stayed:\n{}", d.log());
    assert!(d.log().contains("its namespace went away"), "{}", d.log());
    assert_eq!(d.json(&["ps"]), serde_json::json!([]));
    assert!(!sh(&["ip", "-o", "link"]).contains(&port));
}

#[test]
fn a_state_file_of_the_first_release_comes_back_whole() {
    let fixture = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../switch/src/control/testdata/state-v1.json"),
    )
    .unwrap();
    let mut d = Daemon::with_state(1, &fixture);
    let blue = &d.json(&["network", "inspect", "blue"])[0];
    assert_eq!(blue["ipam"][0]["subnet"], "10.91.0.0/24");
    assert_eq!(blue["ipam"][0]["ip_range"], "10.91.0.128/25");
    assert_eq!(blue["driver"]["bridge"]["aging_secs"], 120);
    let eps: Vec<&str> = blue["endpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(eps, ["v1fixt0", "v1fixt1"]);
    assert!(std::path::Path::new("/sys/class/net/v1fixt0").exists(), "its TAP devices are back");
    assert_eq!(
        d.json(&["fdb", "blue"]).as_array().unwrap().iter().filter(|e| e["type"] == "static").count(),
        2,
        "static MAC and gateway"
    );
    assert!(d.state_dir().join("state.v1.json").exists(), "the original is kept");
    assert!(d.stop().unwrap().success());
    assert!(!std::path::Path::new("/sys/class/net/v1fixt0").exists(), "TAPs the switch made go with it");
}
