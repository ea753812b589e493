//! vswitch-cni: driven by hand as a runtime drives it (ADD with CNI_ARGS and runtimeConfig,
//! CHECK, DEL after a daemon restart, DEL twice, the error JSON), and by a real Podman whose
//! containers get addresses, resolve each other's names and leave nothing when they stop.

use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use vswitch_integration::engines::{HostNetworking, Podman};
use vswitch_integration::*;

/// One CNI call: (exit status, stdout as JSON if any).
fn cni(command: &str, container: &str, netns: &str, args: &str, conf: &Value) -> (bool, Value) {
    let mut child = Command::new(cni_bin())
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", container)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "net1")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", "/usr/lib/cni")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("vswitch-cni");
    // VERSION reads no input: it may have exited before this is written.
    let _ = child.stdin.take().unwrap().write_all(conf.to_string().as_bytes());
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    (out.status.success(), serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[test]
fn add_check_and_del_as_a_runtime_calls_them() {
    let mut d = Daemon::start(1);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.75.0.0/24"]);
    let ns = Netns::new();
    let netns = format!("/run/netns/{}", ns.name);
    let id = format!("{:064x}", std::process::id() as u128 * 7919 + 75);
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "conflist", "type": "vswitch-cni", "network": net,
        "socket": d.socket(),
        "runtimeConfig": { "aliases": { net.clone(): ["db"] } },
    });
    let args = "IgnoreUnknown=1;K8S_POD_NAME=podx;IP=10.75.0.9;MAC=02:00:00:00:75:09";
    let (ok, r) = cni("ADD", &id, &netns, args, &conf);
    assert!(ok, "{r}");
    assert_eq!(r["cniVersion"], "1.0.0");
    assert_eq!(r["ips"][0]["address"], "10.75.0.9/24", "{r}");
    assert_eq!(r["ips"][0]["gateway"], "10.75.0.1");
    assert_eq!(r["interfaces"][1]["name"], "net1");
    assert_eq!(r["interfaces"][1]["mac"], "02:00:00:00:75:09");
    assert_eq!(r["interfaces"][1]["sandbox"], netns.as_str());
    assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    assert_eq!(r["dns"]["nameservers"][0], "10.75.0.1");
    assert!(ns.run(&["ip", "-o", "-4", "addr", "show", "net1"]).contains("10.75.0.9/24"));
    assert!(ns.wait_ping("10.75.0.1", 5), "the gateway answers");
    // The alias and the short id resolve (the container id is the sandbox's id).
    let dig = |name: &str| ns.run(&["dig", "+short", "+time=2", "+tries=1", "@10.75.0.1", name]);
    assert_eq!(dig("db").trim(), "10.75.0.9");
    assert_eq!(dig(&id[..12]).trim(), "10.75.0.9");
    assert_eq!(dig("podx").trim(), "10.75.0.9", "K8S_POD_NAME names the sandbox");
    assert!(cni("CHECK", &id, &netns, args, &conf).0);
    // Another container whose pod name is taken goes by its id.
    let ns2 = Netns::new();
    let id2 = format!("{:064x}", std::process::id() as u128 * 7919 + 77);
    let (ok, r2) = cni("ADD", &id2, &format!("/run/netns/{}", ns2.name), "K8S_POD_NAME=podx", &conf);
    assert!(ok, "{r2}");
    assert!(d.ok(&["ps"]).contains(&format!("cni-{}", &id2[..12])));
    assert!(cni("DEL", &id2, "", "", &conf).0, "DEL without a namespace");
    // ADD of the same address again is refused with CNI's error JSON.
    let other = format!("{:064x}", 76);
    let (ok, e) = cni("ADD", &other, &netns, "IP=10.75.0.9", &conf);
    assert!(!ok && e["code"].as_u64().is_some() && e["msg"].as_str().is_some_and(|m| !m.is_empty()), "{e}");

    // DEL after the daemon restarted, then DEL again: both succeed; the endpoint is gone.
    d.stop();
    d.launch();
    assert!(cni("DEL", &id, &netns, args, &conf).0);
    assert!(cni("DEL", &id, &netns, args, &conf).0, "DEL twice is fine");
    assert!(!cni("CHECK", &id, &netns, args, &conf).0, "CHECK after DEL fails");
    let eps = d.json(&["network", "inspect", &net])[0]["endpoints"].as_array().unwrap().len();
    assert_eq!(eps, 0);
    assert!(!ns.run(&["ip", "-o", "link"]).contains("net1"));
    // A network that does not exist: ADD fails clearly, DEL succeeds.
    let missing =
        serde_json::json!({ "cniVersion": "1.0.0", "name": "x", "network": "no-such-net", "socket": d.socket() });
    let (ok, e) = cni("ADD", &id, &netns, "", &missing);
    assert!(!ok && e["msg"].as_str().unwrap().contains("no-such-net"), "{e}");
    assert!(cni("DEL", &id, &netns, "", &missing).0);
    let (ok, v) = cni("VERSION", "", "", "", &Value::Null);
    assert!(ok && v["supportedVersions"].as_array().unwrap().iter().any(|x| x == "1.0.0"));
}

#[test]
fn podman_containers_on_vswitch() {
    let host = HostNetworking::note();
    let d = Daemon::start(1);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.76.0.0/24"]);
    let podman = Podman::new(&net, &d.socket());
    let web = unique("pweb");
    let o = podman.run(&["-d", "--name", &web, "--network", &net], &["sleep", "300"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = podman.run(
        &["--rm", "--network", &net],
        &["sh", "-c", &format!("ip -4 -o addr show eth0; cat /etc/resolv.conf; ping -c1 -W2 {web}")],
    );
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{text}{}", String::from_utf8_lossy(&o.stderr));
    assert!(text.contains("10.76.0.") && text.contains("nameserver 10.76.0.1"), "{text}");
    assert!(text.contains("1 packets received"), "{web} resolved and answered: {text}");
    let ps = d.json(&["ps"]);
    assert_eq!(ps.as_array().unwrap().len(), 1, "the --rm container's DEL ran: {ps}");
    let o = podman.podman(&["rm", "-f", "-t", "0", &web]);
    assert!(o.status.success());
    assert!(eventually(10, || d.json(&["ps"]).as_array().unwrap().is_empty()), "stopping ran DEL");
    let eps = d.json(&["network", "inspect", &net])[0]["endpoints"].as_array().unwrap().len();
    assert_eq!(eps, 0);
    drop(podman);
    host.check_unchanged();
}
