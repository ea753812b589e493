//! The ten defects found by probing the daemon as a hostile user and as an operator of a big
//! host, one test each (each failed on the build before the fix), plus port security.

use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;
use vswitch_integration::*;

fn ports(d: &Daemon, net: &str) -> Vec<String> {
    let v = d.json(&["network", "inspect", net]);
    v[0]["endpoints"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap().to_string()).collect()
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).unwrap().split_whitespace().next().unwrap().parse().unwrap()
}

/// 1: a link that goes down and up again keeps its port, as a Linux bridge port does.
#[test]
fn a_link_flap_keeps_the_port() {
    let d = Daemon::start(2);
    let (a, b) = (Host::new("10.59.1.1"), Host::new("10.59.1.2"));
    let net = net_name();
    d.network(&net, &[&a, &b]);
    assert!(a.ns.wait_ping(&b.ip, 5));
    for _ in 0..3 {
        sh(&["ip", "link", "set", &b.veth.host, "down"]);
        std::thread::sleep(Duration::from_millis(300));
        sh(&["ip", "link", "set", &b.veth.host, "up"]);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(ports(&d, &net), [a.veth.host.clone(), b.veth.host.clone()], "{}", d.log());
    assert!(a.ns.wait_ping(&b.ip, 5), "no forwarding after the flap:\n{}", d.log());
}

/// A tmpfs mounted on a test's path, unmounted by its guard.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(path: &std::path::Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        sh(&["mount", "-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs", path.to_str().unwrap()]);
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// 2: a port that goes while the state cannot be saved: the daemon stays whole, follows the
/// world (the port is gone from what it says), and saves once it can.
#[test]
fn a_fault_while_the_disk_is_full_leaves_a_working_daemon() {
    let mut d = Daemon::unstarted(1);
    let _fs = Tmpfs::mount(&d.state_dir(), "64k");
    d.launch();
    let (a, b) = (Host::new("10.59.2.1"), Host::new("10.59.2.2"));
    let net = net_name();
    d.network(&net, &[&a, &b]);
    // Fill the state directory to the last byte.
    let filler = d.state_dir().join("filler");
    let _ =
        std::process::Command::new("dd").args(["if=/dev/zero", &format!("of={}", filler.display()), "bs=4k"]).output();
    sh(&["ip", "link", "del", &b.veth.host]);
    assert!(eventually(5, || ports(&d, &net) == [a.veth.host.clone()]), "{}", d.log());
    let e = d.fails(&["fdb", &net, "--add", "02:00:00:00:00:09", &b.veth.host]);
    assert!(e.contains("not attached"), "a clear refusal, not a dead daemon: {e}");
    assert!(d.ok(&["network", "ls"]).contains(&net));
    assert!(d.fails(&["network", "create", &net_name()]).contains("cannot save state"));
    std::fs::remove_file(&filler).unwrap();
    let saved = || std::fs::read_to_string(d.state_dir().join("state.json")).is_ok_and(|s| !s.contains(&b.veth.host));
    assert!(eventually(5, saved), "the forced change is saved once there is room:\n{}", d.log());
    assert!(d.stop().unwrap().success(), "{}", d.log());
}

/// 3: thousands of idle connections and a daemon out of file descriptors: the control
/// socket stays up, no port is taken for gone, and the log does not flood.
#[test]
fn idle_connections_and_no_file_descriptors_left() {
    let mut d = Daemon::unstarted(1);
    d.nofile = Some(128);
    d.launch();
    let (a, b) = (Host::new("10.59.3.1"), Host::new("10.59.3.2"));
    let net = net_name();
    d.network(&net, &[&a, &b]);
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..2000 {
        match UnixStream::connect(d.socket()) {
            Ok(s) => held.push(s),
            Err(_) => refused += 1,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(d.is_running(), "{}", d.log());
    assert!(a.ns.wait_ping(&b.ip, 5), "forwarding goes on");
    // Over the cap, a newcomer is told why, not reset.
    let out = d.cli(&["network", "ls"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("connections open"), "{err}");
    drop(held);
    assert!(eventually(10, || d.cli(&["network", "ls"]).status.success()), "the daemon answers again");
    assert_eq!(ports(&d, &net).len(), 2, "a port was taken for gone:\n{}", d.log());
    assert!(d.log().len() < 100_000, "the log flooded: {} bytes", d.log().len());
    let _ = refused;
}

/// 4: a request line has a limit: a clear error past it, and memory that stays bounded.
#[test]
fn an_endless_request_is_refused_and_costs_no_memory() {
    let d = Daemon::start(1);
    let before = rss_kb(d.pid());
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let chunk = vec![b'A'; 1 << 20];
    for _ in 0..64 {
        if s.write_all(&chunk).is_err() {
            break; // the daemon closed it: the point
        }
    }
    let mut answer = String::new();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.contains("request too long"), "{answer}");
    assert!(rss_kb(d.pid()) < before + 16 * 1024, "RSS grew from {before} kB to {} kB", rss_kb(d.pid()));
    // Bytes that are not UTF-8 get an answer too.
    let mut s = UnixStream::connect(d.socket()).unwrap();
    s.write_all(b"\xff\xfe{}\n").unwrap();
    let mut line = [0u8; 200];
    let n = s.read(&mut line).unwrap();
    assert!(String::from_utf8_lossy(&line[..n]).contains("not UTF-8"));
}

/// 5: whatever the umask it was started with, the daemon's socket and state are its own,
/// and a link planted where it writes its temporary file is not followed.
#[test]
fn files_and_the_socket_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = Daemon::unstarted(1);
    d.umask = Some(0);
    d.launch();
    d.ok(&["network", "create", &net_name()]);
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&d.state_dir()), 0o700);
    assert_eq!(mode(&d.state_dir().join("state.json")), 0o600);
    assert_eq!(mode(&d.socket()) & 0o007, 0, "no access for others to the socket");
    let victim = d.dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, d.state_dir().join("state.json.tmp")).unwrap();
    d.ok(&["network", "create", &net_name()]);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

/// 6: `trace -w` never follows a symlink and never overwrites a file.
#[test]
fn a_trace_never_writes_through_a_link_or_over_a_file() {
    let d = Daemon::start(1);
    let a = Host::new("10.59.6.1");
    let net = net_name();
    d.network(&net, &[&a]);
    let victim = d.dir.path().join("victim");
    std::fs::write(&victim, "precious").unwrap();
    let link = d.dir.path().join("cap.pcapng");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let e = d.fails(&["trace", &net, "-w", link.to_str().unwrap(), "--count", "1"]);
    assert!(e.contains("symbolic link"), "{e}");
    let e = d.fails(&["trace", &net, "-w", victim.to_str().unwrap(), "--count", "1"]);
    assert!(e.contains("exists"), "{e}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
}

/// 7: a port's rings cost at most 4 MB at the default worker count (they cost 24 MB at two
/// workers), and an empty network's MAC table takes memory as it fills.
#[test]
fn ports_and_networks_cost_little_memory() {
    let d = Daemon::start(2);
    let hosts: Vec<Host> = (0..10).map(|i| Host::new(&format!("10.59.7.{}", i + 1))).collect();
    let net = net_name();
    d.ok(&["network", "create", &net]);
    let before = rss_kb(d.pid());
    for h in &hosts {
        d.ok(&["network", "connect", &net, &h.veth.host]);
    }
    let per_port = (rss_kb(d.pid()) - before) / hosts.len() as u64;
    assert!(per_port <= 4 * 1024, "{per_port} kB a port");
    let before = rss_kb(d.pid());
    for _ in 0..20 {
        d.ok(&["network", "create", &net_name()]);
    }
    let per_net = (rss_kb(d.pid()) - before) / 20;
    assert!(per_net <= 256, "{per_net} kB a network");
}

/// 8: frames the kernel drops on a full receive ring are counted.
#[test]
fn frames_lost_on_a_full_ring_are_counted() {
    let d = Daemon::start(1);
    let (a, b) = (Host::new("10.59.8.1"), Host::new("10.59.8.2"));
    let net = net_name();
    d.network(&net, &[&a, &b]);
    assert!(a.ns.wait_ping(&b.ip, 5));
    // Stop the switch while 5000 frames arrive: its ring holds 1024.
    // SAFETY: signals to the daemon this test started.
    unsafe { libc::kill(d.pid() as i32, libc::SIGSTOP) };
    a.send_raw(&b.mac(), &a.mac(), "88b5", 5000, 60);
    // SAFETY: as above.
    unsafe { libc::kill(d.pid() as i32, libc::SIGCONT) };
    let overrun = || d.drops(&a.veth.host, "rx_overrun");
    assert!(eventually(5, || overrun() >= 3000), "rx_overrun {}:\n{}", overrun(), d.log());
    let rx = d.port_stats(&a.veth.host)["rx_packets"].as_u64().unwrap();
    assert!(rx + overrun() >= 5000, "received {rx} and dropped {}: frames vanished", overrun());
}

/// 9: frames from a group or all-zero source MAC are dropped and counted, never learned.
#[test]
fn bad_source_macs_are_dropped() {
    let d = Daemon::start(1);
    let (a, b) = (Host::new("10.59.9.1"), Host::new("10.59.9.2"));
    let net = net_name();
    d.network(&net, &[&a, &b]);
    let tb = d.tx_packets(&b.veth.host);
    a.send_raw("ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00", "88b5", 5, 60);
    a.send_raw("ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01", "88b5", 5, 60);
    assert!(eventually(5, || d.drops(&a.veth.host, "bad_source") == 10));
    assert_eq!(d.tx_packets(&b.veth.host), tb, "not flooded");
    let fdb = d.json(&["fdb", &net]);
    assert!(!fdb.to_string().contains("00:00:00:00:00:00") && !fdb.to_string().contains("01:00:5e"), "{fdb}");
}

/// 10: a state file that parses but would break the daemon stops the start, untouched;
/// a reference that merely dangles is repaired.
#[test]
fn a_hand_edited_state_file_is_checked() {
    let base = |edit: &dyn Fn(&mut Value)| {
        let mut v: Value = serde_json::from_str(
            r#"{"version":2,"networks":[{"name":"n1","id":"0a1b","created":0,"ipam":[
                {"subnet":"10.59.10.0/24","gateway":"10.59.10.1","ip_range":"10.59.10.0/24"}],
                "driver":{"bridge":{"aging_secs":300,"max_learned":100,"mtu":1500,"gateway_mac":"02:56:53:00:00:01"}},
                "endpoints":[],"static_macs":[]}]}"#,
        )
        .unwrap();
        edit(&mut v);
        v.to_string()
    };
    for (edit, want) in [
        (&(|v: &mut Value| v["networks"][0]["id"] = "xyz".into()) as &dyn Fn(&mut Value), "not a hex id"),
        (&|v: &mut Value| v["networks"][0]["driver"]["bridge"]["max_learned"] = (1u64 << 40).into(), "max_learned"),
        (&|v: &mut Value| v["networks"][0]["driver"]["bridge"]["aging_secs"] = 0.into(), "aging_secs"),
        (
            &|v: &mut Value| {
                let n = v["networks"][0].clone();
                v["networks"].as_array_mut().unwrap().push(n);
            },
            "listed twice",
        ),
    ] {
        let text = base(edit);
        let d = Daemon::unstarted(1);
        std::fs::create_dir_all(d.state_dir()).unwrap();
        std::fs::write(d.state_dir().join("state.json"), &text).unwrap();
        let mut child = d.spawn();
        let st = child.wait().unwrap();
        assert!(!st.success());
        assert!(d.log().contains(want), "{want}: {}", d.log());
        assert_eq!(std::fs::read_to_string(d.state_dir().join("state.json")).unwrap(), text, "left untouched");
    }
    let text = base(&|v: &mut Value| {
        v["networks"][0]["static_macs"] = serde_json::json!([{"mac": "02:00:00:00:00:07", "port": "gone0"}]);
    });
    let d = Daemon::with_state(1, &text);
    assert_eq!(d.json(&["network", "inspect", "n1"])[0]["static_macs"], serde_json::json!([]));
    assert!(d.log().contains("static entry 02:00:00:00:00:07 dropped"), "{}", d.log());
}

/// Port security: one port cannot fill the table.
#[test]
fn a_port_quota_keeps_one_port_from_filling_the_table() {
    let d = Daemon::start(1);
    let (a, b) = (Host::new("10.59.11.1"), Host::new("10.59.11.2"));
    let net = net_name();
    d.ok(&["network", "create", &net, "--max-learned-per-port", "3"]);
    d.ok(&["network", "connect", &net, &a.veth.host]);
    d.ok(&["network", "connect", &net, &b.veth.host, "--max-learned", "100"]);
    let tb = d.tx_packets(&b.veth.host);
    for i in 0..10 {
        a.send_raw("ff:ff:ff:ff:ff:ff", &format!("02:77:00:00:00:{i:02x}"), "88b5", 1, 60);
    }
    assert!(eventually(5, || d.drops(&a.veth.host, "port_quota") == 7), "{}", d.port_stats(&a.veth.host));
    assert_eq!(d.tx_packets(&b.veth.host) - tb, 3, "only the first three got through");
    let info = &d.json(&["network", "inspect", &net])[0];
    assert_eq!(info["learned_macs"], 3);
    assert_eq!(info["dropped_over_port_quota"], 7);
}
