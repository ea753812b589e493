//! `vswitch run`, `ps` and `rm`: sandboxes from the command line. The daemon makes the
//! sandbox (namespace, endpoint, /etc/netns files); this side starts the command inside it,
//! as `ip netns exec` would, waits for it, and has the daemon remove the sandbox after.

use super::{table, EndpointArgs};
use crate::client::call;
use crate::control::netns;
use crate::protocol::{CreateSandbox, EndpointView, Request, RunNetwork, SandboxView};
use clap::Args;
use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Args)]
pub struct RunArgs {
    /// The sandbox's name (also its namespace's, under /run/netns) [default: vs-XXXXXX].
    #[arg(long)]
    name: Option<String>,
    /// A network's name, or none, host or container:NAME.
    #[arg(long, default_value = "none", value_name = "NETWORK")]
    network: RunNetwork,
    #[command(flatten)]
    endpoint: EndpointArgs,
    /// A resolver for names the networks do not know, instead of the daemon's own (from its
    /// /etc/resolv.conf); repeat for more. The sandbox itself always asks its gateway.
    #[arg(long = "dns", value_name = "IP")]
    dns: Vec<std::net::IpAddr>,
    /// Leave the command running in the background; the sandbox stays until `vswitch rm NAME`.
    /// Its output goes to NAME.log beside the daemon's socket (/run/vswitch/NAME.log).
    #[arg(long, short = 'd')]
    detach: bool,
    /// The command and its arguments (after --).
    #[arg(required = true, last = true, value_name = "COMMAND")]
    command: Vec<String>,
}

/// One line about an endpoint, as `connect` prints it.
pub fn describe_endpoint(v: &EndpointView) -> String {
    let e = &v.endpoint;
    let addrs: Vec<String> = e.ipv4.map(|a| a.to_string()).into_iter().chain(e.ipv6.map(|a| a.to_string())).collect();
    let addrs = if addrs.is_empty() { "no address".to_string() } else { format!("address {}", addrs.join(", ")) };
    match &e.sandbox {
        Some(s) => format!(
            "{} connected to {} as {}:{} (port {}): {addrs}, MAC {}",
            s.sandbox, v.network, s.sandbox, s.ifname, e.name, e.mac
        ),
        None => format!("{} connected to {} as {} port: {addrs}, MAC {}", e.name, v.network, e.kind.name(), e.mac),
    }
}

pub fn print_ps(sandboxes: Vec<SandboxView>) {
    let rows = sandboxes
        .into_iter()
        .map(|s| {
            let nets: Vec<String> = s.endpoints.iter().map(|e| e.network.clone()).collect();
            let addrs: Vec<String> = s
                .endpoints
                .iter()
                .flat_map(|e| [e.endpoint.ipv4.map(|a| a.to_string()), e.endpoint.ipv6.map(|a| a.to_string())])
                .flatten()
                .collect();
            let process = match (s.pid, s.running) {
                (Some(p), true) => format!("{p} running"),
                (Some(p), false) => format!("{p} exited"),
                (None, _) => "-".into(),
            };
            let dash = |v: Vec<String>| if v.is_empty() { "-".to_string() } else { v.join(",") };
            vec![s.name, s.mode, dash(nets), dash(addrs), process]
        })
        .collect();
    table(&["NAME", "MODE", "NETWORKS", "ADDRESSES", "PROCESS"], rows);
}

pub fn run(socket: &Path, a: RunArgs) -> Result<i32, String> {
    // From here on Ctrl-C, SIGTERM and the like must not end this side before the sandbox is
    // removed: they are noted (and passed on to the command once it runs).
    let signals = Signals::catch()?;
    let req = CreateSandbox { name: a.name, network: a.network, endpoint: a.endpoint.options(), dns: a.dns };
    let sb: SandboxView = super::from(call(socket, &Request::SandboxCreate(req))?)?;
    let remove = || {
        if let Err(e) = call(socket, &Request::SandboxRm { name: sb.name.clone() }) {
            eprintln!("warning: sandbox {} was not removed: {e} (remove it with: vswitch rm {})", sb.name, sb.name);
        }
    };
    let log_dir = socket.parent().unwrap_or(Path::new("/run/vswitch"));
    let log = a.detach.then(|| log_dir.join(format!("{}.log", sb.name)));
    let mut child = match spawn(&sb, &a.command, log.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            remove();
            eprintln!("error: cannot run {}: {e}", a.command[0]);
            // As a shell says it: 127 not found, 126 found but not runnable.
            return Ok(if e.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 });
        }
    };
    if let Err(e) = call(socket, &Request::SandboxSetPid { name: sb.name.clone(), pid: child.id() }) {
        if log.is_some() {
            // Detached, a process the daemon does not know could never be stopped by `rm`.
            let _ = child.kill();
            let _ = child.wait();
            remove();
            return Err(e);
        }
        eprintln!("warning: {e}");
    }
    if let Some(log) = log {
        println!("{}", sb.name);
        eprintln!("running in the background (output: {}); stop it with: vswitch rm {}", log.display(), sb.name);
        return Ok(0);
    }
    let status = signals.wait(&mut child);
    remove();
    let status = status.map_err(|e| format!("waiting for {}: {e}", a.command[0]))?;
    Ok(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// Start `command` inside the sandbox: its namespace, its /etc files, its own /sys.
fn spawn(sb: &SandboxView, command: &[String], log: Option<&Path>) -> std::io::Result<std::process::Child> {
    let entry = match &sb.netns {
        Some(p) => Some(netns::Entry::prepare(File::open(p)?, sb.etc_name.as_deref())?),
        None => None,
    };
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    let detach = log.is_some();
    if let Some(path) = log {
        let out = File::create(path)?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    }
    // SAFETY: the closure runs in the child between fork and exec and only makes system
    // calls on what `prepare` built before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if detach {
                libc::setsid();
            }
            if let Some(e) = &entry {
                e.enter()?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// The signals that would end `vswitch run` while its command runs.
struct Signals {
    term: Arc<AtomicBool>,
}

impl Signals {
    /// Catch them (handlers, not SIG_IGN: the command gets the default dispositions back on
    /// exec). The terminal sends Ctrl-C to the command itself.
    fn catch() -> Result<Signals, String> {
        use signal_hook::consts::*;
        let term = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGHUP, SIGQUIT] {
            signal_hook::flag::register(sig, Arc::new(AtomicBool::new(false))).map_err(|e| e.to_string())?;
        }
        signal_hook::flag::register(SIGTERM, term.clone()).map_err(|e| e.to_string())?;
        Ok(Signals { term })
    }

    /// Wait for the command, passing SIGTERM on to it.
    fn wait(&self, child: &mut std::process::Child) -> std::io::Result<std::process::ExitStatus> {
        loop {
            if let Some(st) = child.try_wait()? {
                return Ok(st);
            }
            if self.term.swap(false, Ordering::Relaxed) {
                // SAFETY: a signal to the child we started.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
