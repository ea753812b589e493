//! `vswitch bench` end to end, kept short: one quick latency and gateway round against the
//! Linux bridge, its JSON, and that it leaves no namespace or interface behind, also when
//! interrupted.

use std::process::Command;
use vswitch_integration::*;

/// Namespaces and interfaces of the bench run with process id `pid` (its names carry it).
fn leftovers(pid: u32) -> String {
    let id = pid % 100_000;
    let (ns_prefix, link_prefix) = (format!("vsbench-{id}-"), format!("vbn{id}"));
    let ns = sh(&["ip", "netns", "list"]);
    let links = sh(&["ip", "-o", "link", "show"]);
    ns.lines()
        .chain(links.lines())
        .filter(|l| l.contains(&ns_prefix) || l.contains(&link_prefix))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn quick_latency_and_gateway_round_writes_json_and_cleans_up() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("results.json");
    let chart = dir.path().join("results.svg");
    let child = Command::new(vswitch_bin())
        .args(["bench", "--quick", "--only", "latency,gateway", "--no-ovs", "--json"])
        .arg(&json)
        .arg("--chart")
        .arg(&chart)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("| ping | vswitch |"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(v["machine"]["cpus"].as_u64().unwrap() >= 1, "{v}");
    let samples = v["samples"].as_array().unwrap();
    assert_eq!(
        samples.len(),
        8,
        "bridge and vswitch, one round of four cases (ping, ping 1 kHz, gateway ping, ARP): {v}"
    );
    for s in samples.iter().filter(|s| s["case"] != "ARP for gateway") {
        let p50 = s["metrics"]["p50_ms"].as_f64().unwrap_or(0.0);
        assert!(p50 > 0.0 && p50 < 50.0, "{s}");
    }
    for s in samples.iter().filter(|s| s["case"] == "ARP for gateway") {
        let replies = s["metrics"]["replies_kpps"].as_f64().unwrap_or(0.0);
        assert!(replies > 1.0, "the gateway answered ARP: {s}");
    }
    let rtt = v["targets"].as_array().unwrap().iter().find(|t| t["figure"].as_str().unwrap().contains("RTT")).unwrap();
    assert!(rtt["result"].as_f64().unwrap() > 0.0, "{rtt}");
    assert!(std::fs::read_to_string(&chart).unwrap().starts_with("<svg"), "no chart");
    assert_eq!(leftovers(pid), "", "the bench left namespaces or interfaces behind");
    // The same report again from the JSON, without measuring.
    let again = Command::new(vswitch_bin()).args(["bench", "--from"]).arg(&json).output().unwrap();
    let again = String::from_utf8_lossy(&again.stdout);
    let row = |t: &str| t.lines().find(|l| l.starts_with("| ping | vswitch |")).map(str::to_string);
    assert_eq!(row(&again), row(&stdout), "{again}");
}

#[test]
fn bench_says_what_is_wrong() {
    let out = Command::new(vswitch_bin()).args(["bench", "--only", "nope"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'nope'"));
    let out = Command::new(vswitch_bin()).args(["bench", "--secs", "0"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--secs 0"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn ctrl_c_stops_the_bench_and_cleans_up() {
    require_root();
    // A long run, interrupted while it measures: everything it made must go.
    let child = Command::new(vswitch_bin())
        .args(["bench", "--only", "tcp,latency", "--no-ovs", "--rounds", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(!leftovers(pid).is_empty(), "the bench should be running by now");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("interrupted"), "{err}");
    assert_eq!(leftovers(pid), "", "Ctrl-C left namespaces or interfaces behind");
    let daemon = format!("/tmp/vswitch-bench-{}/", pid % 100_000);
    assert!(!sh(&["ps", "-eo", "args"]).contains(&daemon), "a vswitch daemon was left running");
}
