//! Running the tools a benchmark drives (ip, ping, iperf3, ovs-*), with errors that say which
//! command failed and why, and Ctrl-C noticed between steps.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub type Res<T> = Result<T, String>;

static INTERRUPTED: std::sync::OnceLock<Arc<AtomicBool>> = std::sync::OnceLock::new();

/// Catch Ctrl-C and SIGTERM: the run stops at the next step and cleans up after itself.
pub fn catch_interrupts() {
    let flag = INTERRUPTED.get_or_init(|| Arc::new(AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
}

pub fn check_interrupted() -> Res<()> {
    match INTERRUPTED.get() {
        Some(f) if f.load(Ordering::Relaxed) => Err("interrupted".into()),
        _ => Ok(()),
    }
}

/// Sleep, waking early to notice an interrupt.
pub fn sleep(d: Duration) -> Res<()> {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(20).min(end - std::time::Instant::now()));
    }
    Ok(())
}

/// Run a command to completion; its stdout, or an error naming it.
pub fn run(args: &[&str]) -> Res<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", args[0]))?;
    if !out.status.success() {
        return Err(format!("`{}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The same inside network namespace `ns`.
pub fn run_in(ns: &str, args: &[&str]) -> Res<String> {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    run(&full)
}

/// Start a command inside `ns` in the background; killed when the guard drops.
pub fn spawn_in(ns: &str, args: &[&str]) -> Res<ChildGuard> {
    let c = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", args[0]))?;
    Ok(ChildGuard(c))
}

pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A counter of an interface inside a namespace (/sys/class/net/IF/statistics/NAME).
pub fn counter(ns: &str, iface: &str, name: &str) -> Res<u64> {
    let v = run_in(ns, &["cat", &format!("/sys/class/net/{iface}/statistics/{name}")])?;
    v.trim().parse().map_err(|_| format!("bad counter {name} of {iface}: {v}"))
}

pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH").map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file())).unwrap_or(false)
}

/// Fail with an install hint unless every tool is on PATH.
pub fn require_tools(tools: &[(&str, &str)]) -> Res<()> {
    let missing: Vec<String> =
        tools.iter().filter(|(t, _)| !have(t)).map(|(t, pkg)| format!("{t} (apt-get install {pkg})")).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("missing tools: {}", missing.join(", ")))
    }
}

/// The machine's CPU time so far (/proc/stat's first line): (busy, all) in ticks.
pub fn cpu_ticks() -> Res<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    let v: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    if v.len() < 5 {
        return Err("/proc/stat has no cpu line".into());
    }
    // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
    let all: u64 = v.iter().take(8).sum();
    Ok((all - v[3] - v[4], all))
}

/// How many of the machine's cores were busy between two readings of [`cpu_ticks`].
pub fn cores_busy(before: (u64, u64), after: (u64, u64)) -> f64 {
    let all = after.1.saturating_sub(before.1) as f64;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    if all == 0.0 {
        0.0
    } else {
        after.0.saturating_sub(before.0) as f64 / all * cpus
    }
}
