//! The command line: `docker network` vocabulary, talking to the daemon over its socket.

mod run;

use crate::client::call;
use crate::explain::Explanation;
use crate::mac::MacAddr;
use crate::protocol::*;
use crate::trace::writer::Format;
use clap::{Args, Parser, Subcommand};
use ipnet::IpNet;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "vswitch",
    version,
    about = "A userspace virtual switch for containers and VMs",
    long_about = "A userspace virtual switch for containers and VMs.\n\n\
        Run the switch process with `sudo vswitch daemon`, then drive it like `docker network`:\n\n  \
        vswitch network create blue                # a bridge network with its gateway\n  \
        vswitch run --name web --network blue -- python3 -m http.server 80\n  \
        vswitch network connect blue --netns db    # an endpoint in an existing namespace\n  \
        vswitch network connect blue veth-a        # an existing interface (AF_PACKET)\n  \
        vswitch network connect blue --tap vm0     # a TAP device, created if missing\n  \
        vswitch ps                                 # sandboxes: networks and addresses\n  \
        vswitch fdb blue                           # the MAC table\n  \
        vswitch stats                              # per-port counters and drops\n  \
        vswitch trace blue -w blue.pcapng          # capture what crosses the ports\n  \
        vswitch explain blue --in-port veth-a --frame 'dst ff:ff:ff:ff:ff:ff arp'\n  \
        sudo vswitch bench --quick                 # measure beside the Linux bridge and OVS"
)]
pub struct Cli {
    /// The daemon's control socket.
    #[arg(long, global = true, env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the switch process in the foreground (needs root); logs go to stderr (RUST_LOG=debug for more)
    Daemon {
        /// Where networks and ports are persisted.
        #[arg(long, env = "VSWITCH_STATE_DIR", default_value = DEFAULT_STATE_DIR)]
        state_dir: PathBuf,
        /// Forwarding threads [default: the number of CPUs].
        #[arg(long)]
        workers: Option<usize>,
        /// Every NAT session's idle timeout in seconds, instead of one per state (TCP
        /// established 2 h 4 min, UDP 5 min, ICMP 1 min...): for tests that watch sessions go.
        #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u32).range(1..))]
        nat_timeout: Option<u32>,
        /// The resolvers the embedded DNS forwards names it does not know to (its
        /// `nameserver` lines, loopback ones included: the daemon asks from its own namespace).
        #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
        resolv_conf: PathBuf,
        /// Also serve Docker's plugin API, so that `docker network create -d vswitch` makes
        /// vswitch networks (and `--ipam-driver vswitch` lets vswitch choose addresses).
        /// Docker knows the plugin by the socket's name: vswitch.sock is driver `vswitch`.
        #[arg(long, value_name = "SOCKET", num_args = 0..=1, default_missing_value = crate::docker::DEFAULT_SOCKET)]
        docker_plugin: Option<PathBuf>,
        /// When a worker with nothing to do sleeps: adaptive spins through the gaps between
        /// bursts while they are short (up to 10 ms: a steady request stream finds it awake,
        /// at the cost of a core while it lasts) and sleeps otherwise; busy never sleeps (a
        /// core per worker, always); interrupt sleeps at once (least CPU, a wake-up per burst).
        #[arg(long, value_enum, default_value = "adaptive")]
        poll: crate::poll::PollMode,
        /// Pin worker i to the i-th CPU of LIST, in turn (as taskset -c: 0,1 or 0-3)
        /// [default: unpinned]. Give busy workers cores of their own.
        #[arg(long, value_name = "LIST", value_parser = crate::poll::parse_cpu_list)]
        cpus: Option<crate::poll::CpuList>,
    },
    /// Create, list, inspect, connect, disconnect and remove networks
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Run a command in a new sandbox (a network namespace) connected as --network says
    #[command(
        long_about = "Run a command in a sandbox, as `docker run --network` would network it: a new network \
        namespace (visible to `ip netns` under the sandbox's name) with an endpoint on a network (its \
        address, MAC, default route via the network's gateway, /etc/resolv.conf and /etc/hosts), or with only \
        loopback (none), or the host's own network (host), or another sandbox's (container:NAME). \
        When the command exits, the sandbox goes with it; with --detach it stays until `vswitch rm NAME`.",
        after_help = "Examples:\n  \
        vswitch run --name web --network blue -- python3 -m http.server 80\n  \
        vswitch run --network blue --ip 172.18.0.50 -- ping -c1 172.18.0.1\n  \
        vswitch run --network none -- ip addr          only lo\n  \
        vswitch run --network container:web -- ip addr web's namespace\n  \
        vswitch run -d --name db --network blue -- sleep infinity"
    )]
    Run(run::RunArgs),
    /// List sandboxes: their mode, networks, addresses and process
    Ps(Json),
    /// Show, set or remove the uplink: the interface that is the switch's outside
    #[command(
        long_about = "The uplink is the switch's way to the outside: an interface the switch owns as a \
        port, with a MAC and an address of its own (like a VM bridged onto the LAN), so the host's own \
        address and sockets on that interface are never disturbed. The switch answers ARP and ping for \
        the uplink's address. Endpoints reach the outside through it, and published ports are reached \
        at its address (NAT, in progress).\n\n\
        Use a LAN interface with a spare address on its subnet, or one end of a veth pair whose other \
        end is in the host's namespace with an address of the same subnet.",
        after_help = "Examples:\n  \
        sudo vswitch uplink set eth1 --address 192.0.2.10/24 --gateway 192.0.2.1\n  \
        vswitch uplink                  show it (--json for scripts)\n  \
        vswitch uplink rm"
    )]
    Uplink(UplinkArgs),
    /// The ports a sandbox publishes (NAME: a sandbox, or an endpoint's port), like `docker port`
    Port {
        name: String,
        #[command(flatten)]
        json: Json,
    },
    /// Look into the NAT (see: vswitch nat sessions --help)
    #[command(subcommand)]
    Nat(NatCmd),
    /// Remove sandboxes: stop their process, disconnect them, remove their namespace
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Show a network's MAC table, or add/delete a static entry
    Fdb {
        network: String,
        /// Add a static entry: MAC and the port it lives behind (never ages, never moves).
        #[arg(long, num_args = 2, value_names = ["MAC", "PORT"], conflicts_with = "del")]
        add: Option<Vec<String>>,
        /// Delete the entry for MAC (static or learned).
        #[arg(long, value_name = "MAC")]
        del: Option<MacAddr>,
        #[arg(long)]
        json: bool,
    },
    /// Per-port counters: packets and bytes in and out, drops by reason
    Stats {
        /// Only these ports.
        ports: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Capture the frames crossing ports into a pcapng or pcap file
    #[command(
        long_about = "Capture the frames crossing a network's ports (or some ports) into a pcapng or pcap \
        file, as the switch sees them: each frame once as it comes in on a port and once for each port it \
        goes out of. pcapng (the default) names each port and marks each frame in or out, so Wireshark \
        shows where it was seen. Stops on Ctrl-C, --count or --duration.\n\n\
        The filter is tcpdump's language (man pcap-filter), applied inside the switch before anything is \
        copied. A trace never slows forwarding down: when it cannot keep up, copies are dropped (and \
        counted), never frames.",
        after_help = "Examples:\n  \
        vswitch trace blue -w blue.pcapng                 every port of network blue, until Ctrl-C\n  \
        vswitch trace --port veth-a --count 100 -w a.pcap --format pcap\n  \
        vswitch trace blue -w - 'tcp port 80' | tcpdump -r -"
    )]
    Trace(TraceArgs),
    /// Measure vswitch beside the Linux bridge and Open vSwitch (see: vswitch bench --help)
    #[command(disable_help_flag = true)]
    Bench {
        /// Passed to vswitch-bench.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show, stage by stage, what the switch would do with frames (sends nothing)
    #[command(after_help = "Frames as words (--frame):\n  \
        eth src 02:00:00:00:00:01 dst ff:ff:ff:ff:ff:ff arp\n  \
        eth src 02:00:00:00:00:01 dst 02:00:00:00:00:02 vlan 10 ip src 10.0.0.1 dst 10.0.0.2 udp dport 53\n  \
        eth dst 01:80:c2:00:00:00 type 0x88cc       (a link-local frame: never forwarded)\n  \
        eth src 02:00:00:00:00:01 len 10            (cut to 10 bytes: a runt)\n  \
        hex ffffffffffff0200000000010806...         (the bytes themselves)\n\
        Left out: source 02:00:00:00:00:01, destination broadcast; frames are padded to 60 bytes.\n\n\
        Uses the live MAC table, and what earlier frames would teach it, without changing it.")]
    Explain {
        network: String,
        /// The port the frames arrive on.
        #[arg(long, value_name = "PORT")]
        in_port: String,
        /// A frame described in words (see below); repeat for several.
        #[arg(long, value_name = "SPEC", required_unless_present = "pcap")]
        frame: Vec<String>,
        /// The frames of a capture file (pcap or pcapng), in order.
        #[arg(long, value_name = "FILE", conflicts_with = "frame")]
        pcap: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
pub struct TraceArgs {
    /// NETWORK, then the filter. With --port, every word is the filter.
    #[arg(value_name = "NETWORK] [FILTER")]
    words: Vec<String>,
    /// Trace only this port (repeat or separate with commas).
    #[arg(long, short = 'p', value_name = "PORT", value_delimiter = ',')]
    port: Vec<String>,
    /// The file to write, or - for standard output.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: String,
    #[arg(long, value_enum, default_value = "pcapng")]
    format: Format,
    /// Stop after this many frames.
    #[arg(long, short = 'c')]
    count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Bytes kept of each frame.
    #[arg(long, short = 's', default_value_t = 262144)]
    snaplen: u32,
    /// Copies that may wait to be written; past it, copies (never frames) are dropped.
    #[arg(long, value_name = "FRAMES", default_value_t = 4096)]
    buffer: usize,
    /// Print the summary (ports, frames captured, copies dropped) as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// What an endpoint is given on its network.
#[derive(Args, Default)]
pub struct EndpointArgs {
    /// The endpoint's IPv4 address [default: the first free one].
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    /// The endpoint's IPv6 address, on a network with --ipv6 [default: the first free one].
    #[arg(long)]
    ip6: Option<Ipv6Addr>,
    /// The endpoint's MAC [default: 02:42 and its IPv4 address, as Docker does].
    #[arg(long)]
    mac: Option<MacAddr>,
    /// Another name the endpoint answers to on this network (repeatable).
    #[arg(long = "alias", value_name = "NAME")]
    aliases: Vec<String>,
    /// Port security: at most N MACs learned on this port [default: the network's].
    #[arg(long = "max-learned", value_name = "N")]
    max_learned: Option<u32>,
    /// Publish a port at the uplink's address, as Docker's -p: [IP:][HOST[-HOST]:]PORT[-PORT][/tcp|udp]
    /// (repeatable; needs an uplink)
    #[arg(long = "publish", short = 'p', value_name = "SPEC")]
    publish: Vec<String>,
    /// The interface's name inside the namespace [default: eth0, then eth1...].
    #[arg(long, value_name = "NAME")]
    ifname: Option<String>,
}

impl EndpointArgs {
    fn options(self) -> EndpointOptions {
        EndpointOptions {
            ip: self.ip,
            ip6: self.ip6,
            mac: self.mac,
            aliases: self.aliases,
            max_learned: self.max_learned,
            publish: self.publish,
            ifname: self.ifname,
        }
    }
}

fn parse_aux(s: &str) -> Result<(String, IpAddr), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("'{s}' is not NAME=IP"))?;
    Ok((k.to_string(), v.parse().map_err(|_| format!("'{v}' is not an IP address"))?))
}

fn parse_opt(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    Ok((k.to_string(), v.to_string()))
}

#[derive(Args)]
pub struct Json {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct UplinkArgs {
    #[command(subcommand)]
    cmd: Option<UplinkCmd>,
    #[command(flatten)]
    json: Json,
}

#[derive(Subcommand)]
pub enum NatCmd {
    /// The connection table: each session's endpoint, its address and port outside, the far
    /// end, its state and how long it has been idle
    Sessions {
        /// Only this network's sessions.
        #[arg(long)]
        network: Option<String>,
        #[command(flatten)]
        json: Json,
    },
}

#[derive(Subcommand)]
pub enum UplinkCmd {
    /// Make IFACE the uplink, with the switch's own address on it
    Set {
        /// The interface (a LAN interface, or a veth end).
        iface: String,
        /// The switch's own address and the subnet's prefix length, e.g. 192.0.2.10/24.
        #[arg(long)]
        address: ipnet::Ipv4Net,
        /// The next hop to everything outside the subnet (a router on it).
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        #[command(flatten)]
        json: Json,
    },
    /// Stop using the uplink (the interface is left as it was)
    Rm,
}

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// List networks
    #[command(alias = "list")]
    Ls(Json),
    /// Create a network
    #[command(after_help = "Examples:\n  \
        vswitch network create blue\n  \
        vswitch network create --subnet 10.10.0.0/24 --ip-range 10.10.0.128/25 --aux-address router=10.10.0.254 red\n  \
        vswitch network create --ipv6 --subnet 172.30.0.0/16 --subnet fd00:30::/64 dual\n  \
        vswitch network create --internal -o mtu=9000 backend\n  \
        vswitch network create -d macvlan --subnet 192.0.2.0/24 --gateway 192.0.2.1 -o parent=eth1 lan\n  \
        vswitch network create -d macvlan --subnet 198.51.100.0/24 -o parent=eth1.50 vlan50\n  \
        vswitch network create -d macvlan --subnet 10.9.0.0/24 -o parent=eth1 -o host_port=mv0 lan2\n\n\
        Drivers:\n  \
        bridge   a learning switch with the switch's own gateway (DNS, NAT to the uplink, -p)\n  \
        macvlan  endpoints with MACs of their own straight on the LAN behind a parent interface;\n           \
        the LAN's router is their gateway. Options: parent=IFACE or IFACE.VLAN (the switch tags\n           \
        802.1Q itself), macvlan_mode=bridge|private|vepa|passthru (as the kernel's macvlan:\n           \
        endpoints reach each other inside the switch / never / only through the LAN's switch /\n           \
        one endpoint owns the parent), host_port=NAME (an interface in the daemon's namespace with\n           \
        an address of the network, so the host reaches its endpoints), mtu [default: the parent's]")]
    Create {
        name: String,
        /// Network driver: bridge or macvlan (see below).
        #[arg(long, short = 'd', default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR form, one per address family [default IPv4: the first free of
        /// 172.17-31.0.0/16, then 192.168.N.0/20; IPv6 with --ipv6: a unique local /64].
        #[arg(long = "subnet", value_name = "CIDR")]
        subnets: Vec<IpNet>,
        /// Gateway address, one per subnet [default: the subnet's first address].
        #[arg(long = "gateway", value_name = "IP")]
        gateways: Vec<IpAddr>,
        /// Hand out endpoint addresses from this range only, one per subnet [default: the whole subnet].
        #[arg(long = "ip-range", value_name = "CIDR")]
        ip_ranges: Vec<IpNet>,
        /// Keep an address out of allocation (name=IP), repeatable.
        #[arg(long = "aux-address", value_name = "NAME=IP", value_parser = parse_aux)]
        aux_addresses: Vec<(String, IpAddr)>,
        /// Give endpoints IPv6 addresses too.
        #[arg(long)]
        ipv6: bool,
        /// No way out of the network: endpoints get no default route.
        #[arg(long)]
        internal: bool,
        /// Driver option KEY=VALUE: mtu (or com.docker.network.driver.mtu), the endpoints' MTU
        /// [default: 1500]; icc=false; for macvlan: parent, macvlan_mode, host_port (below).
        #[arg(long = "opt", short = 'o', value_name = "KEY=VALUE", value_parser = parse_opt)]
        options: Vec<(String, String)>,
        /// Seconds a learned MAC lives without traffic [default: 300].
        #[arg(long, value_name = "SECS")]
        aging_time: Option<u32>,
        /// Cap on learned MACs; past it new MACs are flooded, not learned [default: 65536].
        #[arg(long, value_name = "N")]
        max_learned: Option<usize>,
        /// Port security: at most N MACs learned on each port; frames from more are dropped
        /// (and counted as port_quota) [default: no limit].
        #[arg(long, value_name = "N")]
        max_learned_per_port: Option<u32>,
        #[command(flatten)]
        json: Json,
    },
    /// Show networks in detail
    Inspect {
        #[arg(required = true)]
        names: Vec<String>,
        #[command(flatten)]
        json: Json,
    },
    /// Give a network an endpoint: an interface as a port, or a namespace an interface of its own
    #[command(
        long_about = "Give a network an endpoint. With an interface name, attach that interface as a port (an \
        existing one, e.g. a veth end, through AF_PACKET; with --tap a TAP device, created if missing). With \
        --netns, make an interface pair: one end stays with the switch as a port, the other goes into the \
        namespace as eth0 (then eth1, ...) with its MAC, addresses, MTU and, for its first network, a default \
        route via the gateway, as Docker sets up a container.",
        after_help = "Examples:\n  \
        vswitch network connect blue veth-a\n  \
        vswitch network connect blue --tap vm0\n  \
        vswitch network connect blue --netns web --ip 172.18.0.5 --alias www\n  \
        vswitch network connect blue --netns /proc/4242/ns/net --name worker"
    )]
    Connect {
        network: String,
        /// An existing interface (e.g. a veth end), or with --tap a TAP device.
        #[arg(required_unless_present = "netns")]
        iface: Option<String>,
        /// Attach a TAP device, creating it if it does not exist.
        #[arg(long, conflicts_with = "netns")]
        tap: bool,
        /// A network namespace to give an endpoint: a name (ip netns) or a path (/proc/PID/ns/net).
        #[arg(long, value_name = "NS")]
        netns: Option<String>,
        /// The sandbox's name for the namespace [default: its name, or pid-PID].
        #[arg(long, requires = "netns")]
        name: Option<String>,
        #[command(flatten)]
        endpoint: EndpointArgs,
        #[command(flatten)]
        json: Json,
    },
    /// Take an endpoint off a network: a port (a TAP the switch created is removed) or a sandbox's endpoint
    Disconnect {
        network: String,
        /// A port name, or a sandbox name.
        target: String,
    },
    /// Remove networks (they must have no ports)
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every network that has no ports
    Prune(Json),
}

/// Print a daemon answer as JSON for scripts; the caller returns right after.
fn print_json(v: &Value) -> Result<(), String> {
    println!("{}", serde_json::to_string_pretty(v).expect("json"));
    Ok(())
}

/// Print rows under headers, columns padded to their widest cell.
fn table(headers: &[&str], rows: Vec<Vec<String>>) {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells.iter().enumerate().map(|(i, c)| format!("{c:<width$}", width = w[i])).collect();
        println!("{}", s.join("   ").trim_end());
    };
    line(headers.to_vec());
    for r in &rows {
        line(r.iter().map(String::as_str).collect());
    }
}

fn from<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_json::from_value(v).map_err(|e| format!("unexpected answer from the daemon: {e}"))
}

/// Run a client command; returns the process's exit code.
pub fn run(socket: &std::path::Path, cmd: Command) -> Result<i32, String> {
    let rpc = |r: Request| call(socket, &r);
    match cmd {
        Command::Daemon { .. } => unreachable!("handled in main"),
        Command::Run(a) => return run::run(socket, a),
        Command::Uplink(u) => {
            let (v, json) = match u.cmd {
                None => (rpc(Request::UplinkShow)?, u.json.json),
                Some(UplinkCmd::Set { iface, address, gateway, json }) => {
                    (rpc(Request::UplinkSet { iface, address, gateway })?, json.json)
                }
                Some(UplinkCmd::Rm) => {
                    rpc(Request::UplinkRm)?;
                    return Ok(0);
                }
            };
            if json {
                print_json(&v)?;
                return Ok(0);
            }
            match from::<Option<UplinkView>>(v)? {
                None => println!("no uplink (set one with: vswitch uplink set IFACE --address A/LEN --gateway G)"),
                Some(u) => {
                    let gw = u.gateway.map_or("-".to_string(), |g| g.to_string());
                    table(
                        &["INTERFACE", "ADDRESS", "GATEWAY", "MAC"],
                        vec![vec![u.interface, u.address, gw, u.mac.to_string()]],
                    );
                }
            }
        }
        Command::Port { name, json } => {
            let v = rpc(Request::Port { name })?;
            if json.json {
                print_json(&v)?;
                return Ok(0);
            }
            for p in v.as_array().into_iter().flatten() {
                let s = |k: &str| p[k].as_str().unwrap_or_default().to_string();
                println!("{}/{} -> {}:{}", p["port"], s("proto"), s("host_ip"), p["host_port"]);
            }
        }
        Command::Nat(NatCmd::Sessions { network, json }) => {
            let v = rpc(Request::NatSessions { network })?;
            if json.json {
                print_json(&v)?;
                return Ok(0);
            }
            let n: NatSessions = from(v)?;
            let rows = n
                .sessions
                .into_iter()
                .map(|s| vec![s.proto, s.inside, s.outside, s.remote, s.state, format!("{}s", s.idle_secs), s.network])
                .collect();
            table(&["PROTO", "INSIDE", "OUTSIDE", "REMOTE", "STATE", "IDLE", "NETWORK"], rows);
            if n.truncated {
                println!("(more sessions than shown)");
            }
        }
        Command::Ps(j) => {
            let v = rpc(Request::Ps)?;
            if j.json {
                print_json(&v)?;
                return Ok(0);
            }
            run::print_ps(from(v)?);
        }
        Command::Rm { names } => {
            // Every name is tried; any that could not be removed makes the exit status 1.
            let mut failed = 0;
            for name in names {
                match rpc(Request::SandboxRm { name: name.clone() }) {
                    Ok(v) => {
                        // The daemon stops the process (SIGTERM, SIGKILL after 2 s): wait for it.
                        if let Ok(p) = serde_json::from_value::<crate::control::state::Process>(v["stopping"].clone()) {
                            let gone = || crate::control::system::process_start(p.pid) != Some(p.start);
                            let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
                            while !gone() && std::time::Instant::now() < end {
                                std::thread::sleep(std::time::Duration::from_millis(20));
                            }
                        }
                        println!("{name}");
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        failed += 1;
                    }
                }
            }
            return Ok(if failed > 0 { 1 } else { 0 });
        }
        Command::Network(n) => match n {
            NetworkCmd::Ls(j) => {
                let v = rpc(Request::NetworkLs)?;
                if j.json {
                    print_json(&v)?;
                    return Ok(0);
                }
                let nets: Vec<NetworkSummary> = from(v)?;
                let rows = nets
                    .into_iter()
                    .map(|n| {
                        let subnets: Vec<String> = n.subnets.iter().map(|s| s.to_string()).collect();
                        let driver = if n.internal { format!("{} (internal)", n.driver) } else { n.driver };
                        vec![n.id, n.name, driver, subnets.join(","), n.ports.to_string()]
                    })
                    .collect();
                table(&["NETWORK ID", "NAME", "DRIVER", "SUBNETS", "PORTS"], rows);
            }
            NetworkCmd::Create {
                name,
                driver,
                subnets,
                gateways,
                ip_ranges,
                aux_addresses,
                ipv6,
                internal,
                options,
                aging_time,
                max_learned,
                max_learned_per_port,
                json,
            } => {
                let mut opts = BTreeMap::new();
                for (k, v) in options {
                    if opts.insert(k.clone(), v).is_some() {
                        return Err(format!("option '{k}' is given twice"));
                    }
                }
                let c = CreateNetwork {
                    name,
                    driver: Some(driver),
                    subnets,
                    gateways,
                    ip_ranges,
                    aux_addresses,
                    ipv6,
                    internal,
                    options: opts,
                    aging_secs: aging_time,
                    max_learned,
                    max_learned_per_port,
                    docker_id: None,
                };
                let v = rpc(Request::NetworkCreate(c))?;
                if json.json {
                    print_json(&v)?;
                    return Ok(0);
                }
                println!("{}", v["id"].as_str().unwrap_or_default());
            }
            NetworkCmd::Inspect { names, json } => {
                let v = rpc(Request::NetworkInspect { names })?;
                if json.json {
                    print_json(&v)?;
                    return Ok(0);
                }
                for d in from::<Vec<NetworkDetail>>(v)? {
                    print_detail(&d);
                }
            }
            NetworkCmd::Connect { network, iface, tap, netns, name, endpoint, json } => {
                let c = Connect {
                    network: network.clone(),
                    iface,
                    tap,
                    netns,
                    name,
                    sandbox_id: None,
                    endpoint: endpoint.options(),
                };
                let v = rpc(Request::NetworkConnect(c))?;
                if json.json {
                    print_json(&v)?;
                    return Ok(0);
                }
                let e: EndpointView = from(v)?;
                println!("{}", run::describe_endpoint(&e));
            }
            NetworkCmd::Disconnect { network, target } => {
                rpc(Request::NetworkDisconnect { network: network.clone(), target: target.clone() })?;
                println!("{target} disconnected from {network}");
            }
            NetworkCmd::Rm { names } => {
                let v = rpc(Request::NetworkRm { names })?;
                for n in from::<Vec<String>>(v)? {
                    println!("{n}");
                }
            }
            NetworkCmd::Prune(j) => {
                let v = rpc(Request::NetworkPrune)?;
                if j.json {
                    print_json(&v)?;
                    return Ok(0);
                }
                let names: Vec<String> = from(v)?;
                if names.is_empty() {
                    println!("no network without ports");
                } else {
                    println!("Deleted networks:");
                    for n in names {
                        println!("{n}");
                    }
                }
            }
        },
        Command::Fdb { network, add, del, json } => {
            if let Some(a) = add {
                let mac: MacAddr = a[0].parse()?;
                rpc(Request::FdbAdd { network: network.clone(), mac, port: a[1].clone() })?;
                println!("static entry {mac} -> {} added to {network}", a[1]);
                return Ok(0);
            }
            if let Some(mac) = del {
                rpc(Request::FdbDel { network: network.clone(), mac })?;
                println!("entry {mac} deleted from {network}");
                return Ok(0);
            }
            let v = rpc(Request::Fdb { network })?;
            if json {
                print_json(&v)?;
                return Ok(0);
            }
            let rows = from::<Vec<FdbEntry>>(v)?
                .into_iter()
                .map(|e| vec![e.mac.to_string(), e.port, e.age.to_string(), e.kind])
                .collect();
            table(&["MAC", "PORT", "AGE(s)", "TYPE"], rows);
        }
        Command::Stats { ports, json } => {
            let mut stats: Vec<PortStatsView> = from(rpc(Request::Stats)?)?;
            if let Some(p) = ports.iter().find(|p| !stats.iter().any(|s| &&s.port == p)) {
                return Err(format!("no port named '{p}' (see: vswitch stats)"));
            }
            if !ports.is_empty() {
                stats.retain(|s| ports.contains(&s.port));
            }
            if json {
                print_json(&serde_json::to_value(&stats).expect("json"))?;
                return Ok(0);
            }
            let rows = stats
                .into_iter()
                .map(|s| {
                    let t = s.totals;
                    let drops: Vec<String> = t.drops.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    vec![
                        s.port,
                        s.network,
                        s.kind,
                        t.rx_packets.to_string(),
                        t.rx_bytes.to_string(),
                        t.tx_packets.to_string(),
                        t.tx_bytes.to_string(),
                        if drops.is_empty() { "-".into() } else { drops.join(",") },
                    ]
                })
                .collect();
            table(&["PORT", "NETWORK", "KIND", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "DROPS"], rows);
        }
        Command::Trace(t) => trace(socket, t)?,
        Command::Bench { args } => bench(&args)?,
        Command::Explain { network, in_port, frame, pcap, json } => {
            let frames = match pcap {
                Some(path) => crate::frame_spec::from_capture_file(&path)?,
                None => frame.iter().map(|f| crate::frame_spec::parse(f)).collect::<Result<Vec<_>, _>>()?,
            };
            let frames = frames.iter().map(|f| crate::frame_spec::to_hex(f)).collect();
            let v = rpc(Request::Explain(ExplainRequest { network, in_port, frames }))?;
            if json {
                print_json(&v)?;
                return Ok(0);
            }
            for e in from::<Vec<Explanation>>(v)? {
                print_explanation(&e);
            }
        }
    }
    Ok(0)
}

/// `vswitch bench` is the `vswitch-bench` program installed beside this one.
fn bench(args: &[String]) -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let prog = me.with_file_name("vswitch-bench");
    if !prog.is_file() {
        return Err(format!(
            "vswitch bench needs {} (build it: cargo build --release -p vswitch-bench)",
            prog.display()
        ));
    }
    let e = std::process::Command::new(&prog).args(args).exec();
    Err(format!("cannot run {}: {e}", prog.display()))
}

fn trace(socket: &std::path::Path, t: TraceArgs) -> Result<(), String> {
    if t.json && t.write == "-" {
        return Err("--json prints to stdout, which -w - already uses for the capture".into());
    }
    let mut words = t.words.into_iter();
    let network = if t.port.is_empty() { Some(words.next().ok_or("name a network or --port to trace")?) } else { None };
    let filter: Vec<String> = words.collect();
    let duration = match t.duration {
        Some(s) if !(s > 0.0 && s.is_finite()) => {
            return Err(format!("--duration must be a positive number of seconds, not {s}"))
        }
        d => d.map(std::time::Duration::from_secs_f64),
    };
    let request = TraceRequest {
        network,
        ports: t.port,
        filter: (!filter.is_empty()).then(|| filter.join(" ")),
        snaplen: t.snaplen,
        queue: t.buffer,
    };
    let o = crate::trace::client::Options { request, output: t.write, format: t.format, count: t.count, duration };
    let s = crate::trace::client::run(socket, o)?;
    if t.json {
        return print_json(&serde_json::to_value(&s).expect("json"));
    }
    let why = match s.dropped {
        0 => "",
        _ => " (the trace could not keep up; every frame was still forwarded)",
    };
    eprintln!("{} frames captured, {} copies dropped{why}", s.captured, s.dropped);
    Ok(())
}

fn print_explanation(e: &Explanation) {
    println!("frame {} ({} bytes)", e.frame, e.len);
    for s in &e.steps {
        println!("  {:<8} {}", s.stage, s.text);
    }
    let o = &e.outcome;
    match o.action.as_str() {
        "drop" => println!("  => drop ({})", o.reason.as_deref().unwrap_or("?")),
        "gateway" => println!("  => to the gateway: the switch itself answers"),
        action => println!("  => {action} to {}", o.ports.join(", ")),
    }
}

fn print_detail(d: &NetworkDetail) {
    let n = &d.network;
    println!("Name:        {}", n.name);
    println!("ID:          {}", n.id);
    println!("Driver:      {}{}", n.driver_name(), if n.internal { " (internal: no way out)" } else { "" });
    for s in &n.ipam {
        println!("Subnet:      {} (gateway {}, range {})", s.subnet, s.gateway, s.ip_range);
        for (name, ip) in &s.aux_addresses {
            println!("  reserved:  {ip} ({name})");
        }
    }
    println!("MTU:         {}", n.mtu());
    if let Some(m) = n.macvlan() {
        let state = match d.parent_attached {
            Some(true) => "attached",
            Some(false) => "missing: waiting for it",
            None => "",
        };
        match (&m.parent, m.vlan) {
            (Some(p), Some(v)) => println!("Parent:      {p}, VLAN {v} ({state})"),
            (Some(p), None) => println!("Parent:      {p} ({state})"),
            (None, _) => println!("Parent:      none (endpoints reach only each other)"),
        }
        println!("Mode:        {}", m.mode.name());
        if let Some(h) = &m.host_port {
            println!("Host port:   {} (switch end {})", h.name, h.port);
        }
    }
    if let Some(b) = n.bridge() {
        println!("Gateway MAC: {}", b.gateway_mac);
        println!("Aging time:  {} s", b.aging_secs);
        println!(
            "MACs:        {} learned (cap {}, {} not learned over the cap)",
            d.learned_macs, b.max_learned, d.not_learned_over_cap
        );
        if let Some(q) = b.max_learned_per_port {
            println!("Port quota:  {q} MACs per port ({} frames dropped over it)", d.dropped_over_port_quota);
        }
    }
    println!("Endpoints:");
    if n.endpoints.is_empty() {
        println!("  (none)");
    }
    for e in &n.endpoints {
        let addrs: Vec<String> =
            e.ipv4.map(|a| a.to_string()).into_iter().chain(e.ipv6.map(|a| a.to_string())).collect();
        let at = e.sandbox.as_ref().map(|s| format!("{}:{}", s.sandbox, s.ifname)).unwrap_or_default();
        println!("  {:<16} {:<10} {:<32} {} {at}", e.name, e.kind.name(), addrs.join(","), e.mac);
    }
    if !n.static_macs.is_empty() {
        println!("Static MACs:");
        for m in &n.static_macs {
            println!("  {} -> {}", m.mac, m.port);
        }
    }
}
