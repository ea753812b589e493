//! A real Docker (a private dockerd) on vswitch through the plugin API: networks made with
//! `docker network create -d`, containers that reach each other by name (Docker's DNS) and
//! address over vswitch, `--ipam-driver`, `docker network connect/disconnect/rm`, no
//! docker_gwbridge, nothing left in vswitch afterwards, the machine's networking unchanged.

use vswitch_integration::engines::{Dockerd, HostNetworking};
use vswitch_integration::*;

/// The plugin's socket under /run/docker/plugins (where every dockerd looks), named for
/// this test only; the directories go too if this test made them.
struct PluginSocket {
    name: String,
    made: Vec<std::path::PathBuf>,
}

impl PluginSocket {
    fn new() -> PluginSocket {
        let mut made = vec![];
        for d in ["/run/docker", "/run/docker/plugins"] {
            if !std::path::Path::new(d).exists() {
                std::fs::create_dir(d).unwrap();
                made.push(d.into());
            }
        }
        PluginSocket { name: unique("vst"), made }
    }

    fn path(&self) -> String {
        format!("/run/docker/plugins/{}.sock", self.name)
    }
}

impl Drop for PluginSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
        for d in self.made.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

#[test]
fn docker_networks_on_vswitch() {
    let host = HostNetworking::note();
    let plugin = PluginSocket::new();
    let mut d = Daemon::unstarted(1);
    d.args = vec!["--docker-plugin".into(), plugin.path()];
    d.launch();
    let docker = Dockerd::start();
    let driver = plugin.name.as_str();

    let blue = net_name();
    docker.ok(&["network", "create", "-d", driver, "--subnet", "10.73.0.0/24", "-o", &format!("name={blue}"), "blue"]);
    let ls = d.ok(&["network", "ls"]);
    assert!(ls.contains(&blue) && ls.contains("10.73.0.0/24"), "{ls}");

    docker.ok(&["run", "-d", "--network", "blue", "--name", "web", "busy", "httpd", "-f", "-p", "80", "-h", "/www"]);
    let web = d.json(&["network", "inspect", &blue]);
    let eps = web[0]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1, "{web}");
    let web_ip = eps[0]["ipv4"].as_str().unwrap().to_string();
    assert!(web_ip.starts_with("10.73.0."), "{web_ip}");

    // By name (Docker's DNS) and by address, over vswitch; an HTTP request too.
    let out = docker.ok(&[
        "run",
        "--rm",
        "--network",
        "blue",
        "busy",
        "sh",
        "-c",
        // (busybox-static's wget crashes in a container here; nc does the request)
        &format!(
            "ip route; ping -c1 -W2 web && ping -c1 -W2 {web_ip} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc web 80"
        ),
    ]);
    assert!(out.contains("default via 10.73.0.1"), "the gateway is vswitch's: {out}");
    assert!(out.contains("hello from a container on vswitch"), "{out}");
    assert!(!std::path::Path::new("/sys/class/net/docker_gwbridge").exists(), "Join gave a gateway");

    // vswitch's IPAM, and connect/disconnect of a running container.
    let red = net_name();
    docker.ok(&["network", "create", "-d", driver, "--ipam-driver", driver, "-o", &format!("name={red}"), "red"]);
    let red_subnet = d.json(&["network", "inspect", &red])[0]["ipam"][0]["subnet"].as_str().unwrap().to_string();
    docker.ok(&["network", "connect", "red", "web"]);
    let addrs = docker.ok(&["exec", "web", "ip", "-4", "-o", "addr"]);
    assert!(addrs.contains("eth1"), "{addrs}");
    let out = docker.ok(&["run", "--rm", "--network", "red", "busy", "ping", "-c1", "-W2", "web"]);
    assert!(out.contains("1 packets received"), "{out} (red is {red_subnet})");
    docker.ok(&["network", "disconnect", "red", "web"]);
    assert!(!docker.ok(&["exec", "web", "ip", "-o", "link"]).contains("eth1"));
    let red_eps = d.json(&["network", "inspect", &red])[0]["endpoints"].as_array().unwrap().len();
    assert_eq!(red_eps, 0);

    // -p: Docker's port mapping is published at the uplink's address; `world`, behind the
    // uplink, reaches the container through it.
    let world = Netns::new();
    let up = Veth::new(&world);
    world.run(&["ip", "addr", "add", "192.0.2.1/24", "dev", &up.inner]);
    d.ok(&["uplink", "set", &up.host, "--address", "192.0.2.10/24", "--gateway", "192.0.2.1"]);
    docker.ok(&[
        "run",
        "-d",
        "--network",
        "blue",
        "--name",
        "pub",
        "-p",
        "8080:80",
        "busy",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    assert!(d
        .ok(&["port", d.json(&["network", "inspect", &blue])[0]["endpoints"][1]["name"].as_str().unwrap()])
        .contains("80/tcp -> 192.0.2.10:8080"));
    let got = eventually(10, || {
        let o =
            world.output(&["sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 3 busybox nc 192.0.2.10 8080"]);
        String::from_utf8_lossy(&o.stdout).contains("hello from a container on vswitch")
    });
    assert!(got, "the published port answers from outside");
    docker.ok(&["rm", "-f", "pub"]);

    // Removing everything in Docker leaves nothing in vswitch.
    docker.ok(&["rm", "-f", "web"]);
    docker.ok(&["network", "rm", "blue", "red"]);
    let ls = d.ok(&["network", "ls"]);
    assert!(!ls.contains(&blue) && !ls.contains(&red), "{ls}");
    drop(docker);
    host.check_unchanged();
}
