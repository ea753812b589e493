//! `vswitch bench` (this program, run by `vswitch bench` or directly): vswitch side by side
//! with the Linux bridge and Open vSwitch's userspace datapath, on topologies it builds in
//! network namespaces of its own and removes again, also on Ctrl-C or a failure.

mod connload;
mod dns;
mod gen;
mod macvlan;
mod nat;
mod relay;
mod report;
mod scenario;
mod sides;
mod soak;
mod switch;
mod sys;
mod topo;

use clap::{Parser, Subcommand};
use report::Sample;
use scenario::Scenario;
use std::io::IsTerminal;
use std::path::PathBuf;
use sys::Res;

#[derive(Parser)]
#[command(
    name = "vswitch bench",
    bin_name = "vswitch bench",
    about = "Measure vswitch beside the Linux bridge and Open vSwitch on this machine",
    long_about = "Measure vswitch beside the Linux bridge and Open vSwitch's userspace datapath on this machine.\n\n\
        Each scenario builds its own hosts (network namespaces joined by veth pairs), attaches each switch \
        to them in turn, interleaved round by round (bridge, vswitch, ovs, bridge, ...) so drift of the \
        machine cancels out, and reports medians and ratios to the Linux bridge. OVS runs from a private \
        ovsdb-server/ovs-vswitchd this run starts and stops; a system OVS is never touched. Needs root, \
        iproute2, iputils-ping and iperf3; OVS is optional (apt-get install openvswitch-switch).",
    after_help = "Examples:\n  \
        sudo vswitch bench                       the standard suite (a few minutes)\n  \
        sudo vswitch bench --quick               under a minute\n  \
        sudo vswitch bench --only tcp,pps --json results.json --chart results.svg"
)]
struct Args {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// A short run: one round of 1 s per measurement, fewer scale points.
    #[arg(long)]
    quick: bool,
    /// Only these scenarios.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
    /// Write every run's raw numbers, the medians and the machine's description here.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Draw the comparison as grouped bars (SVG).
    #[arg(long, value_name = "FILE")]
    chart: Option<PathBuf>,
    /// Rounds per case [default: 3, --quick: 1].
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per measurement [default: 3, --quick: 1].
    #[arg(long)]
    secs: Option<f64>,
    /// Leave Open vSwitch out even if it is installed.
    #[arg(long)]
    no_ovs: bool,
    /// The vswitch binary to measure [default: the one beside this program].
    #[arg(long, value_name = "PATH")]
    vswitch: Option<PathBuf>,
    /// Measure nothing: print the report of an earlier run's --json file (and draw --chart).
    #[arg(long, value_name = "FILE.json")]
    from: Option<PathBuf>,
    /// Also measure this other vswitch build (say, the one before a change), as `baseline`.
    #[arg(long, value_name = "PATH")]
    baseline: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// (internal) send frames from inside a host's namespace
    #[command(hide = true)]
    Gen {
        iface: String,
        dst: String,
        #[arg(long, default_value_t = 1)]
        sources: u32,
        #[arg(long, default_value_t = 60)]
        size: usize,
        #[arg(long, default_value_t = 1.0)]
        secs: f64,
        /// Send ARP requests for this address instead (from --arp-from).
        #[arg(long, requires = "arp_from")]
        arp_for: Option<std::net::Ipv4Addr>,
        #[arg(long)]
        arp_from: Option<std::net::Ipv4Addr>,
        /// Send UDP from this address (to --udp-to) over --sources flows instead.
        #[arg(long, requires = "udp_to")]
        udp_from: Option<std::net::Ipv4Addr>,
        #[arg(long)]
        udp_to: Option<std::net::Ipv4Addr>,
        /// At most this many frames per second [default: as fast as the ring goes].
        #[arg(long)]
        pps: Option<f64>,
    },
    /// (internal) relay frames between two TAP devices
    #[command(hide = true)]
    TapRelay { a: String, b: String },
    /// (internal) accept TCP connections and close them at once
    #[command(hide = true)]
    ConnServe {
        port: u16,
        #[arg(long, default_value_t = 60.0)]
        secs: f64,
    },
    /// (internal) open TCP connections as fast as possible; print connections per second
    #[command(hide = true)]
    ConnLoad {
        ip: std::net::Ipv4Addr,
        port: u16,
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        #[arg(long, default_value_t = 32)]
        threads: usize,
    },
}

fn main() {
    let args = Args::parse();
    let r = match args.cmd {
        Some(Cmd::Gen { ref iface, ref dst, sources, size, secs, arp_for, arp_from, udp_from, udp_to, pps }) => {
            let template = match (arp_for.zip(arp_from), udp_from.zip(udp_to)) {
                (Some((target, sender)), _) => gen::Template::Arp(gen::Arp { target, sender }),
                (None, Some((from, to))) => gen::Template::Udp(gen::Udp { from, to }),
                (None, None) => gen::Template::Plain,
            };
            parse_mac(dst)
                .and_then(|d| gen::generate(iface, d, sources.max(1), size, secs, template, pps))
                .map(|n| println!("{n}"))
        }
        Some(Cmd::TapRelay { ref a, ref b }) => relay::relay(a, b),
        Some(Cmd::ConnServe { port, secs }) => connload::serve(port, secs),
        Some(Cmd::ConnLoad { ip, port, secs, threads }) => {
            connload::load(ip, port, secs, threads).map(|r| println!("{r:.0}"))
        }
        None => bench(args),
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn parse_mac(s: &str) -> Res<[u8; 6]> {
    let v: Vec<u8> = s.split(':').filter_map(|p| u8::from_str_radix(p, 16).ok()).collect();
    v.try_into().map_err(|_| format!("bad MAC address '{s}'"))
}

fn bench(args: Args) -> Res<()> {
    if let Some(path) = &args.from {
        return report_from(path, args.chart.as_deref());
    }
    // SAFETY: geteuid takes no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(
            "vswitch bench needs root: it creates network namespaces and runs switches (try: sudo vswitch bench)"
                .into(),
        );
    }
    sys::require_tools(&[("ip", "iproute2"), ("ping", "iputils-ping"), ("iperf3", "iperf3")])?;
    let vswitch = match args.vswitch {
        Some(p) => p,
        None => std::env::current_exe().map_err(|e| e.to_string())?.with_file_name("vswitch"),
    };
    if !vswitch.is_file() {
        return Err(format!(
            "no vswitch binary at {} (build it: cargo build --release, or pass --vswitch)",
            vswitch.display()
        ));
    }
    let with_ovs = !args.no_ovs && sys::have("ovs-vswitchd") && sys::have("ovsdb-server");
    let ovs_note = match (args.no_ovs, with_ovs) {
        (true, _) => "Open vSwitch left out (--no-ovs)",
        (false, false) => {
            "Open vSwitch is not installed (apt-get install openvswitch-switch): comparing with the Linux bridge only"
        }
        _ => "",
    };
    let scenarios = if args.only.is_empty() {
        let mut all = vec![
            Scenario::Tcp,
            Scenario::TcpTap,
            Scenario::Pps,
            Scenario::Latency,
            Scenario::Gateway,
            Scenario::Scale,
            Scenario::Workers,
        ];
        if !args.quick {
            all.push(Scenario::Trace);
        }
        all
    } else {
        args.only.clone()
    };
    let rounds = args.rounds.unwrap_or(if args.quick { 1 } else { 3 }).max(1);
    let secs = args.secs.unwrap_or(if args.quick { 1.0 } else { 3.0 });
    if !(0.5..=600.0).contains(&secs) {
        return Err(format!("--secs {secs}: use 0.5 to 600 seconds"));
    }
    if let Some(b) = args.baseline.as_ref().filter(|b| !b.is_file()) {
        return Err(format!("--baseline {}: no such file", b.display()));
    }
    if scenarios.contains(&Scenario::Dns) {
        sys::require_tools(&[("dnsperf", "dnsperf"), ("dnsmasq", "dnsmasq-base"), ("taskset", "util-linux")])?;
    }
    let cases = scenario::plan(&scenarios, args.quick, with_ovs, args.baseline.is_some());
    sys::catch_interrupts();
    if !ovs_note.is_empty() {
        eprintln!("note: {ovs_note}");
    }

    let soaking = scenarios.contains(&Scenario::Soak);
    let lab = switch::Lab::new(vswitch, args.baseline.clone(), with_ovs && !cases.is_empty())?;
    let hosts = cases.iter().map(|c| c.hosts).max().unwrap_or(2).max(if soaking { 3 } else { 2 });
    let topo = topo::Topology::new(hosts)?;
    let tap_topo = if cases.iter().any(|c| c.tap) { Some(topo::Topology::bare(2)?) } else { None };
    let total: usize = rounds * cases.iter().map(|c| c.switches.len()).sum::<usize>();
    let mut progress = Progress { done: 0, total, tty: std::io::stderr().is_terminal() };
    let mut samples = Vec::new();
    for round in 1..=rounds {
        for c in &cases {
            for &sw in &c.switches {
                sys::check_interrupted()?;
                progress.step(&format!("round {round}/{rounds} · {:?} {} · {}", c.scenario, c.name, sw.name()));
                let measured = (|| {
                    let (hosts, _attached) = match &tap_topo {
                        Some(t) if c.tap => (&t.hosts[..], lab.attach_taps(sw, &t.hosts)?),
                        _ => {
                            (&topo.hosts[..c.hosts], lab.attach(sw, &topo.hosts[..c.hosts], c.measure.needs_gateway())?)
                        }
                    };
                    scenario::warm_up(&hosts[0], &hosts[1])?;
                    // DNS: dnsmasq answers beside the bridge; each server on CPU 0 (dns.rs).
                    let _dnsmasq = match (c.measure.is_dns(), sw) {
                        (true, switch::Switch::Bridge) => Some(dns::dnsmasq(hosts)?),
                        (true, _) => {
                            _attached.pin_daemon(0)?;
                            None
                        }
                        _ => None,
                    };
                    match c.measure.is_dns() {
                        true => dns::measure(c.measure, hosts, &lab.dir, secs),
                        false => scenario::measure(c.measure, &hosts[0], &hosts[1], secs, args.quick),
                    }
                })();
                sys::check_interrupted()?;
                let (metrics, error) = match measured {
                    Ok(m) => (m, None),
                    Err(e) => {
                        progress.note(&format!("{} on {}: {e}", sw.name(), c.name));
                        (Default::default(), Some(e))
                    }
                };
                samples.push(Sample {
                    scenario: c.scenario,
                    case: c.name.clone(),
                    switch: sw.name(),
                    round,
                    metrics,
                    error,
                });
            }
        }
    }
    progress.finish();
    let nat = if scenarios.contains(&Scenario::Nat) { Some(nat::run_scenario(&lab, secs, rounds)?) } else { None };
    let macvlan =
        if scenarios.contains(&Scenario::Macvlan) { Some(macvlan::run_scenario(&lab, secs, rounds)?) } else { None };
    let soak = if soaking {
        eprintln!(
            "soak: {secs} s at full rate with port churn and CLI calls (sampled every {:.0} s)",
            (secs / 10.0).clamp(1.0, 10.0)
        );
        Some(soak::run(&lab, &topo.hosts, secs)?)
    } else {
        None
    };
    drop(tap_topo);
    drop(topo);
    drop(lab);

    let sums = report::summarize(&cases, &samples);
    let targets = report::targets(&sums);
    println!("## vswitch bench: {rounds} round(s), {secs} s per measurement, medians\n");
    println!("{}", report::machine());
    print!("{}", report::tables(&sums, &samples));
    if let Some(r) = &soak {
        print!("{}", soak::table(r));
    }
    if let Some(r) = &nat {
        print!("{}", nat::table(r));
    }
    if let Some(r) = &macvlan {
        print!("{}", macvlan::table(r));
    }
    if !cases.is_empty() {
        print!("{}", report::targets_table(&targets));
    }
    if !ovs_note.is_empty() {
        println!("\n{ovs_note}.");
    }
    if let Some(path) = &args.json {
        let v = serde_json::json!({
            "machine": report::machine(),
            "rounds": rounds,
            "secs": secs,
            "ovs": with_ovs,
            "cases": cases,
            "samples": samples,
            "summary": sums,
            "targets": targets,
            "soak": soak,
            "nat": nat,
            "macvlan": macvlan,
        });
        std::fs::write(path, serde_json::to_string_pretty(&v).expect("json") + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &args.chart {
        // The soak's own chart when it is all that ran.
        let chart = match &soak {
            Some(r) if cases.is_empty() => soak::svg(r),
            _ => report::svg(&cases, &sums),
        };
        std::fs::write(path, chart).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if soak.as_ref().is_some_and(|r| !r.flat) {
        return Err("the soak's lines were not flat (see the table)".into());
    }
    Ok(())
}

/// Print (and chart) the report of an earlier run from its JSON.
fn report_from(path: &std::path::Path, chart: Option<&std::path::Path>) -> Res<()> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bad = |e: serde_json::Error| format!("{} is not a vswitch bench --json file: {e}", path.display());
    let v: serde_json::Value = serde_json::from_str(&text).map_err(bad)?;
    let cases: Vec<scenario::Case> = serde_json::from_value(v["cases"].clone()).map_err(bad)?;
    let samples: Vec<Sample> = serde_json::from_value(v["samples"].clone()).map_err(bad)?;
    let sums = report::summarize(&cases, &samples);
    println!("## vswitch bench: {} round(s), {} s per measurement, medians\n", v["rounds"], v["secs"]);
    println!("{}", v["machine"]);
    print!("{}", report::tables(&sums, &samples));
    print!("{}", report::targets_table(&report::targets(&sums)));
    if let Some(c) = chart {
        std::fs::write(c, report::svg(&cases, &sums)).map_err(|e| format!("cannot write {}: {e}", c.display()))?;
    }
    Ok(())
}

/// One progress line, rewritten in place on a terminal.
struct Progress {
    done: usize,
    total: usize,
    tty: bool,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        if self.tty {
            eprint!("\r\x1b[K[{}/{}] {what}", self.done, self.total);
        } else {
            eprintln!("[{}/{}] {what}", self.done, self.total);
        }
    }

    fn note(&self, what: &str) {
        if self.tty {
            eprintln!();
        }
        eprintln!("  {what}");
    }

    fn finish(&self) {
        if self.tty {
            eprintln!();
        }
    }
}
