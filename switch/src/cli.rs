//! The command line: `docker network` vocabulary, talking to the daemon over its socket.

use crate::client::call;
use crate::explain::Explanation;
use crate::mac::MacAddr;
use crate::protocol::*;
use crate::state::Endpoint;
use crate::trace::writer::Format;
use clap::{Args, Parser, Subcommand};
use ipnet::Ipv4Net;
use serde_json::Value;
use std::net::Ipv4Addr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "vswitch",
    version,
    about = "A userspace virtual switch for containers and VMs",
    long_about = "A userspace virtual switch for containers and VMs.\n\n\
        Run the switch process with `sudo vswitch daemon`, then drive it like `docker network`:\n\n  \
        vswitch network create blue\n  \
        vswitch network connect blue veth-a        # an existing interface (AF_PACKET)\n  \
        vswitch network connect blue --tap vm0     # a TAP device, created if missing\n  \
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
    },
    /// Create, list, inspect, connect, disconnect and remove networks
    #[command(subcommand)]
    Network(NetworkCmd),
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

#[derive(Args)]
pub struct Json {
    /// Print JSON for scripts.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub enum NetworkCmd {
    /// List networks
    #[command(alias = "list")]
    Ls(Json),
    /// Create a network
    Create {
        name: String,
        /// Network driver (bridge).
        #[arg(long, short = 'd', default_value = "bridge")]
        driver: String,
        /// Subnet in CIDR form [default: the first free of 172.18-31.0.0/16, 192.168.N.0/20].
        #[arg(long)]
        subnet: Option<Ipv4Net>,
        /// Gateway address [default: the subnet's first host].
        #[arg(long)]
        gateway: Option<Ipv4Addr>,
        /// Allocate endpoint addresses from this range [default: the whole subnet].
        #[arg(long)]
        ip_range: Option<Ipv4Net>,
        /// Seconds a learned MAC lives without traffic [default: 300].
        #[arg(long, value_name = "SECS")]
        aging_time: Option<u32>,
        /// Cap on learned MACs; past it new MACs are flooded, not learned [default: 65536].
        #[arg(long, value_name = "N")]
        max_learned: Option<usize>,
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
    /// Attach an interface to a network as a port
    Connect {
        network: String,
        /// An existing interface (e.g. a veth end), or with --tap a TAP device.
        iface: String,
        /// Attach a TAP device, creating it if it does not exist.
        #[arg(long)]
        tap: bool,
        /// The endpoint's IPv4 address [default: the first free one].
        #[arg(long)]
        ip: Option<Ipv4Addr>,
        #[command(flatten)]
        json: Json,
    },
    /// Detach a port from a network (a TAP the switch created is removed)
    Disconnect { network: String, iface: String },
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

/// Run a client command.
pub fn run(socket: &std::path::Path, cmd: Command) -> Result<(), String> {
    let rpc = |r: Request| call(socket, &r);
    match cmd {
        Command::Daemon { .. } => unreachable!("handled in main"),
        Command::Network(n) => match n {
            NetworkCmd::Ls(j) => {
                let v = rpc(Request::NetworkLs)?;
                if j.json {
                    return print_json(&v);
                }
                let nets: Vec<NetworkSummary> = from(v)?;
                let rows = nets
                    .into_iter()
                    .map(|n| vec![n.id, n.name, n.driver, n.subnet.to_string(), n.ports.to_string()])
                    .collect();
                table(&["NETWORK ID", "NAME", "DRIVER", "SUBNET", "PORTS"], rows);
            }
            NetworkCmd::Create { name, driver, subnet, gateway, ip_range, aging_time, max_learned, json } => {
                let c = CreateNetwork {
                    name,
                    driver: Some(driver),
                    subnet,
                    gateway,
                    ip_range,
                    aging_secs: aging_time,
                    max_learned,
                };
                let v = rpc(Request::NetworkCreate(c))?;
                if json.json {
                    return print_json(&v);
                }
                println!("{}", v["id"].as_str().unwrap_or_default());
            }
            NetworkCmd::Inspect { names, json } => {
                let v = rpc(Request::NetworkInspect { names })?;
                if json.json {
                    return print_json(&v);
                }
                for d in from::<Vec<NetworkDetail>>(v)? {
                    print_detail(&d);
                }
            }
            NetworkCmd::Connect { network, iface, tap, ip, json } => {
                let v = rpc(Request::NetworkConnect { network: network.clone(), iface, tap, ip })?;
                if json.json {
                    return print_json(&v);
                }
                let e: Endpoint = from(v)?;
                println!(
                    "{} connected to {network} as {} port: address {}, MAC {}",
                    e.name,
                    e.kind.name(),
                    e.ipv4,
                    e.mac
                );
            }
            NetworkCmd::Disconnect { network, iface } => {
                rpc(Request::NetworkDisconnect { network: network.clone(), iface: iface.clone() })?;
                println!("{iface} disconnected from {network}");
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
                    return print_json(&v);
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
                return Ok(());
            }
            if let Some(mac) = del {
                rpc(Request::FdbDel { network: network.clone(), mac })?;
                println!("entry {mac} deleted from {network}");
                return Ok(());
            }
            let v = rpc(Request::Fdb { network })?;
            if json {
                return print_json(&v);
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
                return print_json(&serde_json::to_value(&stats).expect("json"));
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
        Command::Trace(t) => return trace(socket, t),
        Command::Bench { args } => return bench(&args),
        Command::Explain { network, in_port, frame, pcap, json } => {
            let frames = match pcap {
                Some(path) => crate::frame_spec::from_capture_file(&path)?,
                None => frame.iter().map(|f| crate::frame_spec::parse(f)).collect::<Result<Vec<_>, _>>()?,
            };
            let frames = frames.iter().map(|f| crate::frame_spec::to_hex(f)).collect();
            let v = rpc(Request::Explain(ExplainRequest { network, in_port, frames }))?;
            if json {
                return print_json(&v);
            }
            for e in from::<Vec<Explanation>>(v)? {
                print_explanation(&e);
            }
        }
    }
    Ok(())
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
        action => println!("  => {action} to {}", o.ports.join(", ")),
    }
}

fn print_detail(d: &NetworkDetail) {
    let n = &d.network;
    println!("Name:        {}", n.name);
    println!("ID:          {}", n.id);
    println!("Driver:      {}", n.driver.name());
    println!("Subnet:      {}", n.subnet);
    println!("Gateway:     {}", n.gateway);
    println!("IP range:    {}", n.ip_range);
    println!("Aging time:  {} s", n.aging_secs);
    println!(
        "MACs:        {} learned (cap {}, {} not learned over the cap)",
        d.learned_macs, n.max_learned, d.not_learned_over_cap
    );
    println!("Ports:");
    if n.endpoints.is_empty() {
        println!("  (none)");
    }
    for e in &n.endpoints {
        println!("  {:<16} {:<10} {:<16} {}", e.name, e.kind.name(), e.ipv4, e.mac);
    }
    if !n.static_macs.is_empty() {
        println!("Static MACs:");
        for m in &n.static_macs {
            println!("  {} -> {}", m.mac, m.port);
        }
    }
}
