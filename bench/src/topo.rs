//! The hosts a scenario measures between: network namespaces, each with one veth pair whose
//! outer end is a switch port. Uniquely named per run; removed on drop, also on failure.

use crate::sys::{run, run_in, Res};

pub struct Host {
    pub ns: String,
    /// The port end, in the root namespace (what a switch attaches).
    pub port: String,
    /// The host's interface inside its namespace.
    pub iface: String,
    pub ip: String,
    pub mac: String,
}

pub struct Topology {
    pub hosts: Vec<Host>,
}

impl Topology {
    /// `n` hosts 10.203.X.1/16 .. with IPv6 off (only the benchmark's traffic crosses).
    pub fn new(n: usize) -> Res<Topology> {
        let id = std::process::id() % 100_000;
        let mut t = Topology { hosts: Vec::with_capacity(n) };
        for i in 0..n {
            let (ns, port, ip) =
                (format!("vsbench-{id}-{i}"), format!("vbn{id}p{i}"), format!("10.203.{}.{}", i / 250, i % 250 + 1));
            t.add_namespace(Host {
                ns: ns.clone(),
                port: port.clone(),
                iface: "eth0".into(),
                ip: ip.clone(),
                mac: String::new(),
            })?;
            run(&["ip", "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            run(&["sysctl", "-qw", &format!("net.ipv6.conf.{port}.disable_ipv6=1")])?;
            run_in(&ns, &["ip", "addr", "add", &format!("{ip}/16"), "dev", "eth0"])?;
            run_in(&ns, &["ip", "link", "set", "eth0", "up"])?;
            run(&["ip", "link", "set", &port, "up"])?;
            let mac = run_in(&ns, &["cat", "/sys/class/net/eth0/address"])?.trim().to_string();
            t.hosts.last_mut().expect("added").mac = mac;
        }
        Ok(t)
    }

    /// `n` hosts with no interface yet but loopback: their interface is a TAP device a
    /// switch (or the bridge's relay) creates at attach time, named `iface`, moved in.
    pub fn bare(n: usize) -> Res<Topology> {
        let id = std::process::id() % 100_000;
        let mut t = Topology { hosts: Vec::with_capacity(n) };
        for i in 0..n {
            t.add_namespace(Host {
                ns: format!("vsbench-{id}-t{i}"),
                port: format!("vbn{id}o{i}"),
                iface: format!("vbn{id}t{i}"),
                ip: format!("10.204.0.{}", i + 1),
                mac: String::new(),
            })?;
        }
        Ok(t)
    }

    /// Create `h`'s namespace (loopback up, IPv6 off) and keep `h`, so that a failure
    /// from here on still cleans it up.
    fn add_namespace(&mut self, h: Host) -> Res<()> {
        run(&["ip", "netns", "add", &h.ns])?;
        let ns = h.ns.clone();
        self.hosts.push(h);
        run_in(&ns, &["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"])?;
        run_in(&ns, &["ip", "link", "set", "lo", "up"])?;
        Ok(())
    }

    /// Move a bare host's TAP device into its namespace and give it its address.
    pub fn place(h: &Host) -> Res<()> {
        run(&["ip", "link", "set", &h.iface, "netns", &h.ns])?;
        run_in(&h.ns, &["ip", "addr", "add", &format!("{}/16", h.ip), "dev", &h.iface])?;
        run_in(&h.ns, &["ip", "link", "set", &h.iface, "up"])?;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = run(&["ip", "netns", "del", &h.ns]);
            let _ = run(&["ip", "link", "del", &h.port]); // gone with the namespace, normally
        }
    }
}
