//! The `trigate` command line.
use std::{ffi::OsString, os::unix::process::CommandExt, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use crate::{
    config::{Config, ConfigError},
    intercept::cgroup,
};

#[derive(Parser, Debug)]
#[command(
    name = "trigate",
    version,
    about = "Node-local gateway for LLM, MCP and API egress, fed by eBPF"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon (without --config: the embedded default config).
    Run {
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file and exit (`trigate check FILE` or
    /// `--config FILE`; neither checks the embedded default).
    Check {
        #[arg(long, short, conflicts_with = "file")]
        config: Option<PathBuf>,
        file: Option<PathBuf>,
    },
    /// Print the version.
    Version,
    /// Run a command inside a workload's cgroup (and netns), so it is
    /// intercepted: `trigate exec -- curl https://api.openai.com/v1/models`.
    Exec {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Workload to join (default: the first one with a cgroup).
        #[arg(long, short)]
        workload: Option<String>,
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<OsString>,
    },
    /// Print the JSON schema of the config file.
    Schema,
    /// Live per-workload numbers from a running daemon, like `kubectl top`:
    /// requests, tokens, cost, cache, guardrail blocks, MCP calls, denied
    /// connects.
    Top {
        /// The daemon's admin endpoint (default: admin.address of --config,
        /// or of the embedded default config).
        #[arg(long)]
        admin: Option<String>,
        /// Config to take admin.address from.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Seconds between refreshes.
        #[arg(long, default_value_t = 2.0)]
        interval: f64,
        #[arg(long, value_enum, default_value_t = crate::top::SortBy::Requests)]
        sort: crate::top::SortBy,
        /// One row per workload, or per workload and destination.
        #[arg(long, value_enum, default_value_t = crate::top::By::Workload)]
        by: crate::top::By,
        /// Print one frame to stdout, without terminal control codes, and exit.
        #[arg(long)]
        once: bool,
    },
}

/// Exit code for a bad config or bad usage.
const EXIT_CONFIG: u8 = 2;

pub fn main() -> ExitCode {
    // One TLS crypto provider for the process: libraries that build their
    // rustls configs with the process default (the Redis client) get the
    // same ring provider as the gateway's own configs.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("trigate {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Schema => {
            print!("{}", Config::json_schema());
            ExitCode::SUCCESS
        }
        Command::Top {
            admin,
            config,
            interval,
            sort,
            by,
            once,
        } => top(admin, config, interval, sort, by, once),
        Command::Check { config, file } => match load(config.or(file).as_ref()) {
            Ok(_) => {
                println!("config ok");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run { config } => {
            let loaded = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            run(loaded, config)
        }
        Command::Exec {
            config,
            workload,
            command,
        } => {
            let config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match exec(&config, workload.as_deref(), &command) {
                Ok(never) => match never {},
                Err(e) => {
                    eprintln!("trigate exec: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn top(
    admin: Option<String>,
    config: Option<PathBuf>,
    interval: f64,
    sort: crate::top::SortBy,
    by: crate::top::By,
    once: bool,
) -> ExitCode {
    if !(interval.is_finite() && interval >= 0.1) {
        eprintln!("trigate top: --interval {interval}: must be at least 0.1 seconds");
        return ExitCode::from(EXIT_CONFIG);
    }
    let admin = match admin {
        Some(a) => a,
        None => match load(config.as_ref()) {
            Ok(c) => crate::top::default_admin(c.admin.address),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        },
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trigate top: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let every = std::time::Duration::from_secs_f64(interval);
    match runtime.block_on(crate::top::run(&admin, every, by, sort, once)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ crate::top::TopError::BadAddress(_)) => {
            eprintln!("trigate top: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("trigate top: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::embedded_default()),
    }
}

fn run(config: Config, path: Option<PathBuf>) -> ExitCode {
    let (log, _flush) = crate::telemetry::logging::init(&config.log.level, config.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("trigate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::daemon::run(config, path, log)) {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "trigate failed");
            eprintln!("trigate: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Joins the workload's cgroup (and network namespace), then becomes CMD.
fn exec(
    config: &Config,
    name: Option<&str>,
    command: &[OsString],
) -> anyhow::Result<std::convert::Infallible> {
    let workload = match name {
        Some(n) => config
            .workloads
            .iter()
            .find(|w| w.name == n)
            .ok_or_else(|| anyhow::anyhow!("no workload named {n:?} in the config"))?,
        None => config
            .workloads
            .iter()
            .find(|w| w.cgroup.is_some())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "the config has no workload with a cgroup; name one with --workload"
                )
            })?,
    };
    if let Some(c) = &workload.cgroup {
        let mount = cgroup::cgroup2_mount()?;
        let path = cgroup::resolve(&mount, c)?;
        if !path.is_dir() {
            anyhow::bail!(
                "cgroup {} does not exist yet: start the daemon first (cargo xtask run)",
                path.display()
            );
        }
        cgroup::join(&path)?;
    }
    if let Some(ns) = &workload.netns {
        let file = std::fs::File::open(ns)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", ns.display()))?;
        nix::sched::setns(file, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| anyhow::anyhow!("setns into {} failed: {e}", ns.display()))?;
    }
    let (program, args) = command
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("no command given"))?;
    let err = std::process::Command::new(program).args(args).exec();
    Err(anyhow::anyhow!(
        "cannot run {}: {err}",
        program.to_string_lossy()
    ))
}
