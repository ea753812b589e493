//! The README's first command: `sudo scripts/demo` must run through (the gateway and a named
//! sandbox answer pings, TCP flows, a trace is captured) and leave nothing behind.

use std::process::Command;
use vswitch_integration::*;

#[test]
fn readme_demo_runs_and_cleans_up() {
    require_root();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo");
    let out = Command::new(script).env("VSWITCH_BIN", vswitch_bin()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // The client pings the gateway, and the web sandbox pings the client back.
    let threes = text.matches("3 packets transmitted, 3 received, 0% packet loss").count();
    assert_eq!(threes, 2, "the gateway answers and the sandboxes reach each other both ways: {text}");
    assert!(text.contains("5 received, 0% packet loss"), "{text}");
    assert!(text.contains("receiver"), "no iperf3 result: {text}");
    assert!(text.contains("4 frames captured") || String::from_utf8_lossy(&out.stderr).contains("4 frames captured"));
    assert!(text.contains("=> to the gateway"), "{text}");
    assert!(text.contains("running"), "vswitch ps shows the detached sandbox: {text}");
    assert!(text.contains("== done"), "{text}");
    assert!(!sh(&["ip", "netns", "list"]).contains("vsdemo-"), "the demo left a namespace behind");
}
