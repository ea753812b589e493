//! Every CLI error: one clear line, a non-zero exit, and no change of state.

use vswitch_integration::*;

fn state(d: &Daemon) -> String {
    std::fs::read_to_string(d.state_dir().join("state.json")).unwrap_or_default()
}

/// The command fails, says `want`, prints one line, and leaves the saved state alone.
fn refused(d: &Daemon, args: &[&str], want: &str) {
    let before = state(d);
    let err = d.fails(args);
    assert!(err.contains(want), "vswitch {args:?}: expected '{want}' in: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "more than one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert_eq!(state(d), before, "vswitch {args:?} changed the state");
}

#[test]
fn daemon_not_running() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    let out =
        std::process::Command::new(vswitch_bin()).arg("--socket").arg(&sock).args(["network", "ls"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not running"), "{err}");
    // The environment variable names the socket too.
    let out = std::process::Command::new(vswitch_bin()).env("VSWITCH_SOCKET", &sock).args(["stats"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(sock.to_str().unwrap()));
}

#[test]
fn errors_are_clear_and_change_nothing() {
    let d = Daemon::start(1);
    let a = Host::new("10.54.1.1");
    let (net, other) = (net_name(), net_name());
    d.ok(&["network", "create", &net]);
    d.ok(&["network", "create", &other]);
    d.ok(&["network", "connect", &net, &a.veth.host]);

    refused(&d, &["network", "create", &net], "already exists");
    refused(&d, &["network", "create", "bad name!"], "invalid network name");
    refused(&d, &["network", "create", "x", "--driver", "token-ring"], "unknown driver");
    refused(&d, &["network", "create", "x", "--driver", "overlay"], "not available yet");
    refused(&d, &["network", "create", "x", "--driver", "macvlan"], "needs its parent interface");
    refused(&d, &["network", "create", "x", "--subnet", "172.18.5.0/24"], "overlaps");
    refused(&d, &["network", "create", "x", "--aging-time", "0"], "aging");
    refused(&d, &["network", "inspect", "nope"], "no network named 'nope'");
    refused(&d, &["network", "connect", "nope", &a.veth.host], "no network named 'nope'");
    refused(&d, &["network", "connect", &net, "no-such-if0"], "no interface named 'no-such-if0'");
    refused(&d, &["network", "connect", &net, "a-name-of-16-byt"], "at most 15");
    refused(&d, &["network", "connect", &net, "--tap", "a-name-of-16-byt"], "at most 15");
    refused(&d, &["network", "connect", &other, &a.veth.host], &format!("already attached to network {net}"));
    refused(&d, &["network", "connect", &net, &a.veth.host], "already attached");
    refused(&d, &["network", "disconnect", &other, &a.veth.host], &format!("attached to network {net}, not {other}"));
    refused(&d, &["network", "rm", &net], &format!("still has ports: {}", a.veth.host));
    refused(&d, &["network", "rm", &other, &net], "still has ports"); // all or nothing
    refused(&d, &["fdb", "nope"], "no network named");
    refused(&d, &["fdb", &net, "--add", "02:00:00:00:00:01", "nope0"], "not attached");
    refused(&d, &["fdb", &net, "--add", "zz:00:00:00:00:01", &a.veth.host], "invalid MAC");
    refused(&d, &["stats", "nope0"], "no port named");
    refused(&d, &["network", "connect", &net, "--tap", "vtx", "--ip", "1.2.3.4"], "not a host address");

    // A bad --tap leaves no device behind.
    assert!(!std::path::Path::new("/sys/class/net/vtx").exists());

    // And the happy paths: disconnect, rm, prune list what they did.
    d.ok(&["network", "disconnect", &net, &a.veth.host]);
    assert!(d.ok(&["network", "rm", &net]).contains(&net));
    let pruned = d.json(&["network", "prune"]);
    assert_eq!(pruned, serde_json::json!([other]));
    assert_eq!(d.json(&["network", "ls"]), serde_json::json!([]));
}

#[test]
fn help_teaches() {
    let out = std::process::Command::new(vswitch_bin()).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["daemon", "network", "fdb", "stats", "--socket"] {
        assert!(text.contains(word), "--help lacks {word}:\n{text}");
    }
    let out = std::process::Command::new(vswitch_bin()).args(["network", "create", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["--subnet", "--aging-time", "--max-learned"] {
        assert!(text.contains(word), "network create --help lacks {word}");
    }
}

#[test]
fn workers_are_pinned_to_the_cpus_given() {
    let mut d = Daemon::unstarted(1);
    d.args = vec!["--cpus".into(), "0".into(), "--poll".into(), "interrupt".into()];
    d.launch();
    let tasks = std::fs::read_dir(format!("/proc/{}/task", d.pid())).unwrap();
    let worker = tasks
        .flatten()
        .find(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "worker-0"))
        .expect("a worker-0 thread");
    let status = std::fs::read_to_string(worker.path().join("status")).unwrap();
    assert!(status.lines().any(|l| l.starts_with("Cpus_allowed_list:") && l.ends_with("\t0")), "{status}");
    // A CPU the process may not use is refused at start.
    let mut bad = Daemon::unstarted(1);
    bad.args = vec!["--cpus".into(), "4000".into()];
    let out = bad.spawn().wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(bad.log().contains("--cpus: CPU 4000"), "{}", bad.log());
}
