//! The embedded DNS, asked with dig from real sandboxes: names, aliases, short ids and
//! `name.network` (A, AAAA, PTR), names of another network invisible, a name with no
//! address of the asked family, unknown names forwarded to a resolver (dnsmasq) in the
//! test's own namespace with NXDOMAIN passed through, TCP, SERVFAIL when the upstreams
//! fail, and the counters. Skipped (with a line saying so) where dig or dnsmasq is missing.

use std::time::Instant;
use vswitch_integration::*;

fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A resolver standing for the host's: dnsmasq in a namespace of its own, reached from the
/// daemon's namespace over a veth pair this test made. It knows `www.example.test` and says
/// NXDOMAIN for any other name under `test`.
struct Upstream {
    ns: Netns,
    veth: Veth,
    child: std::process::Child,
    addr: String,
    /// An address of the upstream's namespace where nothing answers DNS.
    silent: String,
}

impl Upstream {
    fn start(net: u8) -> Upstream {
        let ns = Netns::new();
        let veth = Veth::new(&ns);
        let (here, addr, silent) = (format!("10.72.{net}.1"), format!("10.72.{net}.2"), format!("10.72.{net}.3"));
        sh(&["ip", "addr", "add", &format!("{here}/29"), "dev", &veth.host]);
        ns.run(&["ip", "addr", "add", &format!("{addr}/29"), "dev", &veth.inner]);
        ns.run(&["ip", "addr", "add", &format!("{silent}/29"), "dev", &veth.inner]);
        let child = ns
            .cmd(&[
                "dnsmasq",
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                &format!("--listen-address={addr}"),
                "--local=/test/",
                "--address=/www.example.test/192.0.2.77",
                &big_txt(),
                "--pid-file=",
                "--user=root",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dnsmasq");
        let u = Upstream { ns, veth, child, addr, silent };
        let ready = eventually(10, || {
            u.ns.output(&["dig", &format!("@{}", u.addr), "+short", "+time=1", "+tries=1", "www.example.test"])
                .stdout
                .starts_with(b"192.0.2.77")
        });
        assert!(ready, "dnsmasq did not answer");
        u
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = (&self.ns, &self.veth);
    }
}

/// A TXT record of about 900 bytes: over UDP without EDNS it comes back truncated.
fn big_txt() -> String {
    let chunk = |c: char| std::iter::repeat_n(c, 200).collect::<String>();
    format!("--txt-record=big.example.test,{},{},{},{}", chunk('a'), chunk('b'), chunk('c'), chunk('d'))
}

/// dig from inside sandbox `ns` (its resolv.conf: the gateway); the whole output.
fn dig(ns: &str, args: &[&str]) -> String {
    let mut a = vec!["netns", "exec", ns, "dig", "+time=6", "+tries=1"];
    a.extend_from_slice(args);
    let o = std::process::Command::new("ip").args(&a).output().expect("dig");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn short(ns: &str, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    let mut v: Vec<String> = dig(ns, &a).lines().map(str::to_string).collect();
    v.sort();
    v
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("none")
}

fn addr_of(d: &Daemon, sandbox: &str) -> String {
    let ps = d.json(&["ps"]);
    let sb = ps.as_array().unwrap().iter().find(|s| s["name"] == sandbox).expect("the sandbox");
    sb["endpoints"][0]["ipv4"].as_str().expect("an address").to_string()
}

#[test]
fn endpoints_resolve_each_other_and_the_rest_is_forwarded() {
    if !have("dig") || !have("dnsmasq") {
        eprintln!("skipped: needs dig (dnsutils) and dnsmasq (dnsmasq-base)");
        return;
    }
    let up = Upstream::start(1);
    let resolv = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(resolv.path(), format!("search corp.invalid\nnameserver {}\n", up.addr)).unwrap();
    let mut d = Daemon::unstarted(1);
    d.args = vec!["--resolv-conf".into(), resolv.path().display().to_string()];
    d.launch();
    let (blue, red) = (net_name(), net_name());
    d.ok(&["network", "create", &blue, "--subnet", "10.71.1.0/24", "--ipv6", "--subnet", "fd71:1::/64"]);
    d.ok(&["network", "create", &red, "--subnet", "10.71.2.0/24"]);
    let (web, api, db, lost) = (unique("web"), unique("api"), unique("db"), unique("lost"));
    let _guards: Vec<Netns> = [&web, &api, &db, &lost].iter().map(|n| Netns::adopt(n)).collect();
    for (name, net, extra) in [(&web, &blue, "front"), (&api, &blue, "front"), (&db, &red, "store")] {
        d.ok(&["run", "-d", "--name", name, "--network", net, "--alias", extra, "--", "sleep", "600"]);
    }
    // lost asks resolvers that never answer: its other names end in SERVFAIL.
    d.ok(&["run", "-d", "--name", &lost, "--network", &red, "--dns", &up.silent, "--", "sleep", "600"]);
    let (web_ip, api_ip) = (addr_of(&d, &web), addr_of(&d, &api));

    let conf = std::fs::read_to_string(format!("/etc/netns/{web}/resolv.conf")).unwrap();
    assert!(conf.contains("nameserver 10.71.1.1\n") && conf.contains("options ndots:0"), "{conf}");
    assert!(conf.contains("search corp.invalid"), "{conf}");

    // Names, scoped names, aliases (every endpoint under one), short ids, any case.
    assert_eq!(short(&web, &[&api]), vec![api_ip.clone()]);
    assert_eq!(short(&web, &[&format!("{}.{blue}", api.to_uppercase())]), vec![api_ip.clone()]);
    let mut both = vec![web_ip.clone(), api_ip.clone()];
    both.sort();
    assert_eq!(short(&web, &["front"]), both);
    let ps = d.json(&["ps"]);
    let api_id = ps.as_array().unwrap().iter().find(|s| s["name"] == api.as_str()).unwrap()["id"].as_str().unwrap()
        [..12]
        .to_string();
    assert_eq!(short(&web, &[&api_id]), vec![api_ip.clone()]);
    // AAAA of an endpoint with IPv6; an empty NOERROR for one without (red has no IPv6).
    let v6 = short(&web, &["AAAA", &api]);
    assert!(v6.len() == 1 && v6[0].starts_with("fd71:1::"), "{v6:?}");
    let out = dig(&db, &["AAAA", &db]);
    assert!(status(&out) == "NOERROR" && out.contains("ANSWER: 0"), "{out}");
    // PTR for an endpoint's address.
    assert_eq!(short(&web, &["-x", &api_ip]), vec![format!("{api}.{blue}.")]);
    // Networks are not shared: web does not see db (forwarded, NXDOMAIN from upstream).
    let out = dig(&web, &[&db]);
    assert!(status(&out) != "NOERROR" && out.contains("ANSWER: 0"), "db is on a network web is not on: {out}");

    // Unknown names: forwarded, NXDOMAIN passed through; TCP both ways.
    assert_eq!(short(&web, &["www.example.test"]), vec!["192.0.2.77".to_string()]);
    assert_eq!(status(&dig(&web, &["nope.example.test"])), "NXDOMAIN");
    assert_eq!(short(&web, &["+tcp", &api]), vec![api_ip.clone()]);
    assert_eq!(short(&web, &["+tcp", "www.example.test"]), vec!["192.0.2.77".to_string()]);
    // An answer too big for 512 bytes: truncated over UDP, then dig asks again over TCP.
    let out = dig(&web, &["+noedns", "TXT", "big.example.test"]);
    assert!(out.contains("Truncated, retrying in TCP mode") && status(&out) == "NOERROR", "{out}");
    assert!(out.contains(&"d".repeat(200)), "the whole record over TCP: {out}");
    // getaddrinfo with the resolv.conf written (ndots:0): ping by name.
    assert!(_guards[0].wait_ping(&api, 5), "ping {api} by name");

    // Every upstream failing: SERVFAIL, after the upstream timeout.
    let t = Instant::now();
    let out = dig(&lost, &["www.example.test"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    assert!(t.elapsed().as_secs_f64() < 6.0, "{:?}", t.elapsed());
    // ... but lost's own networks' names still resolve.
    assert_eq!(short(&lost, &[&db]).len(), 1);

    let dns = &d.json(&["network", "inspect", &blue])[0]["dns"];
    assert!(dns["answered"].as_u64().unwrap() >= 8, "{dns}");
    assert!(dns["forwarded"].as_u64().unwrap() >= 4, "{dns}");
    let red_dns = &d.json(&["network", "inspect", &red])[0]["dns"];
    assert!(red_dns["upstream_failed"].as_u64().unwrap() >= 1, "{red_dns}");

    for n in [&web, &api, &db, &lost] {
        d.ok(&["rm", n]);
    }
    assert!(!std::path::Path::new(&format!("/etc/netns/{web}")).exists());
}

#[test]
fn connect_netns_writes_a_resolv_conf_and_removes_it() {
    let d = Daemon::start(1);
    let net = net_name();
    d.ok(&["network", "create", &net, "--subnet", "10.71.3.0/24"]);
    let ns = Netns::new();
    let etc = format!("/etc/netns/{}", ns.name);
    d.ok(&["network", "connect", &net, "--netns", &ns.name]);
    let conf = std::fs::read_to_string(format!("{etc}/resolv.conf")).expect("a resolv.conf");
    assert!(conf.contains("nameserver 10.71.3.1\n") && conf.contains("options ndots:0"), "{conf}");
    assert!(ns.run(&["cat", "/etc/resolv.conf"]).contains("nameserver 10.71.3.1"));
    d.ok(&["network", "disconnect", &net, &ns.name]);
    assert!(!std::path::Path::new(&etc).exists(), "removed with the sandbox");
}
