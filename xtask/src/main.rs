//! trigate's developer tasks: `cargo xtask <command>` (alias in .cargo/config.toml).

mod deploy;
mod pgo;
mod schema;
mod setup;
mod testing;
mod util;

use std::{
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, ExitCode},
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::util::{cargo, run};

#[derive(Debug, Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "trigate's developer tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Install what building needs (nightly + rust-src, bpf-linker 0.10);
    /// idempotent.
    Setup {
        /// Also what the tests need: rustfmt/clippy, Debian packages (root),
        /// the Python venv in .venv with tests/requirements.txt, and the
        /// deploy/ checkers (target/deploy-venv, promtool).
        #[arg(long)]
        test_deps: bool,
    },
    /// Build the daemon (release) and exec `trigate run` (needs root).
    Run {
        /// Passed to `trigate run`, e.g. `-- --config my.yaml`.
        #[arg(last = true, value_name = "TRIGATE_ARGS")]
        args: Vec<String>,
    },
    /// Run every check: setup, fmt, clippy, unit tests, schema, e2e (root),
    /// leftovers. What CI runs.
    Test(testing::TestArgs),
    /// Regenerate gateway/config.schema.json from `trigate schema`.
    Schema,
    /// Check deploy/ offline (the `deploy` step of `cargo xtask test`):
    /// chart render, manifests fresh, Kubernetes schemas, `trigate check`
    /// on the ConfigMap, promtool, metric names, hadolint.
    /// TRIGATE_UPDATE_MANIFESTS=1 rewrites deploy/manifests/trigate.yaml.
    Deploy,
    /// A profile-guided release build of the daemon: an instrumented
    /// build, one short round of the api, llm and mcp benches as training
    /// load (root, nginx, wrk), the counts merged, a build that uses them.
    /// Prints the daemon's path (target/pgo-use/release/trigate). Always
    /// trains anew; `bench … --pgo` reuses an existing profile.
    Pgo,
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Cost of interception (eBPF redirect vs iptables vs direct): runs the
    /// trigate-e2e `bench-intercept` binary (release) with the release daemon.
    Intercept {
        /// Passed to bench-intercept.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Cost of the API gate per request (trigate vs nginx as reverse proxy
    /// vs direct, with wrk): runs the trigate-e2e `bench-api` binary
    /// (release) with the release daemon. Needs nginx and wrk (Debian
    /// packages, `cargo xtask setup --test-deps`).
    Api {
        #[command(flatten)]
        daemon: Daemon,
        /// Passed to bench-api, e.g. `-- --rounds 3 --secs 2`.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Cost of the LLM gate per chat completion (trigate vs direct vs nginx
    /// plain-proxying vs LiteLLM's proxy, with wrk; plus time to first
    /// token on a stream): runs the trigate-e2e `bench-llm` binary
    /// (release) with the release daemon. Needs nginx and wrk; installs
    /// LiteLLM from PyPI into target/bench-venv the first time.
    Llm {
        #[command(flatten)]
        daemon: Daemon,
        /// Passed to bench-llm, e.g. `-- --rounds 3 --secs 4`
        /// (`--no-litellm` leaves LiteLLM out).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// What the MCP gate costs per `tools/call` (policy, listing filter,
    /// audit line on) vs direct and vs nginx plain-proxying the same POST:
    /// the `bench-api` binary in its `mcp` mode.
    Mcp {
        #[command(flatten)]
        daemon: Daemon,
        /// Passed to bench-api, e.g. `-- --rounds 3 --secs 2`.
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
    /// Cost of the guardrail engine (policy::guard, default detectors):
    /// scan throughput on 1 MiB of generated mixed text, scan + redact
    /// latency on a 2 KiB prompt, streamed scanning in SSE-sized deltas.
    /// Runs `cargo bench -p trigate --bench guard`; one thread, no root.
    Guard {
        /// Passed to the bench, e.g. `-- --quick` (fewer repetitions) or
        /// `-- --per-detector` (each detector timed alone too).
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },
}

/// Which daemon build a bench runs.
#[derive(Debug, clap::Args)]
struct Daemon {
    /// The profile-guided build (`cargo xtask pgo`; trains first when
    /// there is no profile yet) instead of the plain release build.
    #[arg(long)]
    pgo: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Our own report: anyhow's Debug form adds a backtrace when
    // RUST_BACKTRACE is set, which says nothing useful here.
    match dispatch(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Cmd) -> Result<()> {
    let root = util::workspace_root();
    match command {
        Cmd::Setup { test_deps } => setup::setup(&root, test_deps),
        Cmd::Run { args } => run_daemon(&root, &args),
        Cmd::Test(args) => testing::test(&root, &args),
        Cmd::Schema => schema::write(&root),
        Cmd::Deploy => {
            setup::toolchain()?;
            deploy::check(&root)
        }
        Cmd::Pgo => {
            let bin = pgo::train_and_build(&root)?;
            println!("{}", bin.display());
            Ok(())
        }
        Cmd::Bench {
            bench: Bench::Intercept { args },
        } => bench_bin(&root, "bench-intercept", &args, false),
        Cmd::Bench {
            bench: Bench::Api { daemon, args },
        } => bench_bin(&root, "bench-api", &args, daemon.pgo),
        Cmd::Bench {
            bench: Bench::Llm { daemon, args },
        } => bench_bin(&root, "bench-llm", &args, daemon.pgo),
        Cmd::Bench {
            bench: Bench::Mcp { daemon, args },
        } => {
            let mut all = vec!["mcp".to_owned()];
            all.extend(args);
            bench_bin(&root, "bench-api", &all, daemon.pgo)
        }
        Cmd::Bench {
            bench: Bench::Guard { args },
        } => bench_guard(&root, &args),
    }
}

fn run_daemon(root: &Path, args: &[String]) -> Result<()> {
    if !util::is_root()? {
        eprintln!("trigate needs root (BPF, cgroups): run as root or with sudo -E");
        std::process::exit(1);
    }
    setup::toolchain()?;
    run(cargo(root).args(["build", "--release", "-p", "trigate"]))?;
    let bin = util::target_dir(root).join("release/trigate");
    // exec: trigate replaces this process, so Ctrl-C and signals reach it
    // directly. The working directory stays the caller's (relative --config).
    let mut cmd = Command::new(&bin);
    cmd.arg("run").args(args);
    eprintln!("$ {}", util::display(&cmd));
    let err = cmd.exec();
    Err(err).with_context(|| format!("executing {}", bin.display()))
}

/// Whether the trigate-e2e crate (tests/) has a binary named `name`.
fn has_bench_bin(root: &Path, name: &str) -> bool {
    let tests = root.join("tests");
    tests.join(format!("src/bin/{name}.rs")).exists()
        || tests.join(format!("src/bin/{name}/main.rs")).exists()
        || std::fs::read_to_string(tests.join("Cargo.toml")).is_ok_and(|manifest| {
            manifest
                .lines()
                .any(|l| l.replace(' ', "") == format!(r#"name="{name}""#))
        })
}

/// Builds the release daemon (profile-guided with `pgo`) and runs the
/// trigate-e2e benchmark binary `name` (release) with it.
fn bench_bin(root: &Path, name: &str, args: &[String], pgo: bool) -> Result<()> {
    if !has_bench_bin(root, name) {
        bail!(
            "the {name} binary does not exist yet: it belongs in the trigate-e2e \
             crate as tests/src/bin/{name}.rs (or a [[bin]] named {name} \
             in tests/Cargo.toml)"
        );
    }
    setup::toolchain()?;
    setup::debian_packages(setup::TEST_PACKAGES)?;
    setup::debian_packages(setup::BENCH_PACKAGES)?;
    let daemon = if pgo {
        pgo::build(root)?
    } else {
        run(cargo(root).args(["build", "--release", "-p", "trigate"]))?;
        util::target_dir(root).join("release/trigate")
    };
    let mut cmd = Command::new("cargo");
    // Keep the caller's working directory for relative paths in ARGS.
    cmd.arg("run")
        .arg("--manifest-path")
        .arg(root.join("Cargo.toml"))
        .args(["--release", "-p", "trigate-e2e", "--bin", name, "--"])
        .args(args)
        .env("PATH", util::path_with(&root.join(".venv/bin"))?);
    if std::env::var_os("TRIGATE_BIN").is_none() {
        cmd.env("TRIGATE_BIN", daemon);
    }
    run(&mut cmd)
}

/// The guard bench is a cargo bench of the trigate crate: pure computation,
/// so no daemon, root or packages; building the crate still builds the eBPF
/// object (gateway/build.rs), hence the toolchain check.
fn bench_guard(root: &Path, args: &[String]) -> Result<()> {
    setup::toolchain()?;
    run(cargo(root)
        .args(["bench", "-p", "trigate", "--bench", "guard", "--"])
        .args(args))?;
    // The semantic cache's lookup, with the same options (it knows only
    // --quick and ignores the rest).
    run(cargo(root)
        .args(["bench", "-p", "trigate", "--bench", "semantic", "--"])
        .args(args))
}
