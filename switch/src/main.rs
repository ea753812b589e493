use clap::Parser;
use vswitch::cli::{self, Cli, Command};
use vswitch::daemon;

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Command::Daemon { state_dir, workers, nat_timeout, resolv_conf, docker_plugin, poll, cpus } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
                )
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .init();
            let workers = workers.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
            daemon::run(daemon::Options {
                socket: cli.socket,
                state_dir,
                workers,
                nat_timeout,
                resolv_conf,
                docker_plugin,
                poll,
                cpus: cpus.map(|c| c.0).unwrap_or_default(),
            })
            .map(|()| 0)
        }
        cmd => {
            // Like any Unix tool: a closed pipe (`vswitch fdb blue | head`) ends us quietly.
            // SAFETY: resets one signal's disposition before any thread starts.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            cli::run(&cli.socket, cmd)
        }
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
