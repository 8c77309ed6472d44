//! `cargo xtask test`: every check, each step timed, then a summary.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{
    deploy, schema, setup,
    util::{self, cargo, run},
};

/// Default e2e parallelism: most e2e time is waiting on the daemon and the
/// network, not CPU.
const DEFAULT_E2E_THREADS: usize = 4;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    pub skip_lint: bool,
    /// Only lint, unit tests, the schema check and the deploy/ checks (no root
    /// needed once `cargo xtask setup --test-deps` has run).
    #[arg(long, conflicts_with = "e2e_only")]
    pub unit_only: bool,
    /// Only the e2e tests (build the daemon, run them, check for leftovers).
    #[arg(long)]
    pub e2e_only: bool,
    /// Passed to the e2e test binaries after `--test-threads=N`, e.g. a test
    /// name filter. Parallelism: TRIGATE_E2E_THREADS (default 4).
    #[arg(last = true, conflicts_with = "unit_only", value_name = "E2E_ARGS")]
    pub e2e_args: Vec<String>,
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

struct Step {
    name: &'static str,
    outcome: Outcome,
    seconds: f64,
}

#[derive(Default)]
struct Steps(Vec<Step>);

impl Steps {
    /// Runs one step; returns whether it passed.
    fn run(&mut self, name: &'static str, f: impl FnOnce() -> Result<()>) -> bool {
        eprintln!("\n==> {name}");
        let start = Instant::now();
        let result = f();
        let seconds = start.elapsed().as_secs_f64();
        let outcome = match result {
            Ok(()) => {
                eprintln!("==> {name}: PASS ({seconds:.1}s)");
                Outcome::Pass
            }
            Err(err) => {
                eprintln!("==> {name}: FAIL ({seconds:.1}s): {err:#}");
                Outcome::Fail(err.to_string())
            }
        };
        let passed = matches!(outcome, Outcome::Pass);
        self.0.push(Step {
            name,
            outcome,
            seconds,
        });
        passed
    }

    /// Runs the step if `ok`, else records it as skipped because of `reason`.
    fn run_if(
        &mut self,
        ok: bool,
        reason: &str,
        name: &'static str,
        f: impl FnOnce() -> Result<()>,
    ) -> bool {
        if ok {
            self.run(name, f)
        } else {
            eprintln!("\n==> {name}: SKIP ({reason})");
            self.0.push(Step {
                name,
                outcome: Outcome::Skip(reason.to_owned()),
                seconds: 0.0,
            });
            false
        }
    }

    fn summary(&self) -> String {
        let width = self
            .0
            .iter()
            .map(|s| s.name.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let mut out = format!("{:width$}  result  seconds  note\n", "step");
        let mut total = 0.0;
        for step in &self.0 {
            total += step.seconds;
            let (result, note) = match &step.outcome {
                Outcome::Pass => ("PASS", ""),
                Outcome::Fail(why) => ("FAIL", why.as_str()),
                Outcome::Skip(why) => ("SKIP", why.as_str()),
            };
            let note = note.lines().next().unwrap_or("");
            let line = format!(
                "{:width$}  {result:6}  {:7.1}  {note}",
                step.name, step.seconds
            );
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let result = if self.failed().is_empty() {
            "PASS"
        } else {
            "FAIL"
        };
        out.push_str(&format!("{:width$}  {result:6}  {total:7.1}\n", "total"));
        out
    }

    fn failed(&self) -> Vec<&'static str> {
        self.0
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Fail(_)))
            .map(|s| s.name)
            .collect()
    }
}

pub fn test(root: &Path, args: &TestArgs) -> Result<()> {
    let unit = !args.e2e_only;
    let e2e = !args.unit_only;
    let lint = unit && !args.skip_lint;
    let mut steps = Steps::default();

    let toolchain = steps.run("setup: toolchain", setup::toolchain);
    let test_deps = e2e && steps.run("setup: test deps", || setup::test_deps_only(root));
    let no_toolchain = "setup: toolchain failed";

    if lint {
        steps.run("fmt", || {
            run(cargo(root).args(["fmt", "--all", "--", "--check"]))
                .context("code is not formatted: run cargo fmt --all")
        });
        steps.run_if(toolchain, no_toolchain, "clippy", || {
            // gateway-ebpf only builds for bpfel-unknown-none: linted below.
            run(cargo(root).args([
                "clippy",
                "--workspace",
                "--exclude",
                "gateway-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]))
        });
        steps.run_if(toolchain, no_toolchain, "clippy (eBPF)", || {
            run(cargo(root).args([
                "+nightly",
                "clippy",
                "-p",
                "gateway-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ]))
        });
    }

    if unit {
        steps.run_if(toolchain, no_toolchain, "unit tests", || {
            // Not plain --workspace: that would build gateway-ebpf for the host.
            run(cargo(root).args([
                "test",
                "--workspace",
                "--exclude",
                "gateway-ebpf",
                "--exclude",
                "trigate-e2e",
                "--no-fail-fast",
            ]))
        });
        steps.run_if(toolchain, no_toolchain, "schema fresh", || {
            schema::check(root)
        });
        // Needs the daemon binary (`trigate check` on the chart's config).
        steps.run_if(toolchain, no_toolchain, "deploy", || deploy::check(root));
    }

    if e2e {
        let built = steps.run_if(toolchain, no_toolchain, "build daemon", || {
            run(cargo(root).args(["build", "-p", "trigate"]))
        });
        let reason = if !built {
            "daemon not built"
        } else {
            "setup: test deps failed"
        };
        let ready = built && test_deps;
        // What an earlier run left when it was killed (its cleanup never ran)
        // is removed first, so it is not blamed on this run; what belongs to
        // a test run still going (another checkout) is only noted.
        let root_ok = util::is_root().unwrap_or(false);
        let mut before = Vec::new();
        steps.run_if(ready && root_ok, "not root", "stale e2e leftovers", || {
            before = leftovers::clear_stale()?;
            Ok(())
        });
        steps.run_if(ready, reason, "e2e tests", || {
            e2e_tests(root, &args.e2e_args)
        });
        // After a run, passed or failed: the tests must remove what they make.
        // (Not as non-root: the e2e step failed before running anything.)
        let ran = ready && root_ok;
        steps.run_if(ran, "e2e tests did not run", "leftovers", || {
            leftovers::check(&before)
        });
    }

    eprintln!("\n==> summary\n{}", steps.summary());
    let failed = steps.failed();
    if !failed.is_empty() {
        bail!("{} step(s) failed: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

fn e2e_threads() -> Result<usize> {
    match env::var("TRIGATE_E2E_THREADS") {
        Err(env::VarError::NotPresent) => Ok(DEFAULT_E2E_THREADS),
        Ok(s) => s
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .with_context(|| format!("TRIGATE_E2E_THREADS={s:?}: want a positive integer")),
        Err(err) => Err(err).context("reading TRIGATE_E2E_THREADS"),
    }
}

fn e2e_tests(root: &Path, extra: &[String]) -> Result<()> {
    if !util::is_root()? {
        bail!(
            "the e2e tests need root (cgroups, network namespaces, BPF): \
             run as root or with sudo -E cargo xtask test (or pass --unit-only)"
        );
    }
    let threads = e2e_threads()?;
    let bin: PathBuf = util::target_dir(root).join("debug/trigate");
    if !bin.exists() {
        bail!("{} does not exist after the build", bin.display());
    }
    let venv_bin = root.join(".venv/bin");
    run(cargo(root)
        .args(["test", "-p", "trigate-e2e", "--no-fail-fast", "--"])
        .arg(format!("--test-threads={threads}"))
        .args(extra)
        .env("TRIGATE_BIN", &bin)
        .env("PATH", util::path_with(&venv_bin)?))
}

mod leftovers {
    //! What the e2e tests create and must remove. Every name carries the pid
    //! of the test process that made it (`tg-e2e-<pid>-<n>` namespaces,
    //! `trigate-e2e-<pid>-<n>` cgroups, `e2e-<pid>-<n>` pin directories).

    use super::*;

    /// One thing an e2e test made.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Leftover {
        kind: Kind,
        /// The namespace name, or the cgroup / pin path.
        name: String,
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Kind {
        Netns,
        Cgroup,
        Pin,
    }

    impl std::fmt::Display for Leftover {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let what = match self.kind {
                Kind::Netns => "network namespace",
                Kind::Cgroup => "cgroup",
                Kind::Pin => "bpf pin",
            };
            write!(f, "{what} {}", self.name)
        }
    }

    impl Leftover {
        /// The pid of the test process that made it, from its last path part.
        fn owner(&self) -> Option<u32> {
            let base = self.name.rsplit('/').next().unwrap_or(&self.name);
            owner_pid(base)
        }

        fn remove(&self) -> Result<()> {
            match self.kind {
                Kind::Netns => {
                    util::output(Command::new("ip").args(["netns", "del", &self.name]))?;
                }
                Kind::Cgroup => remove_cgroup_tree(Path::new(&self.name))?,
                // Unlinking the pinned links detaches them.
                Kind::Pin => {
                    let path = Path::new(&self.name);
                    if path.is_dir() {
                        fs::remove_dir_all(path)
                    } else {
                        fs::remove_file(path)
                    }
                    .with_context(|| format!("removing {}", path.display()))?;
                }
            }
            Ok(())
        }
    }

    /// `<pid>` of `tg-e2e-<pid>-<n>`, `trigate-e2e-<pid>-<n>` or `e2e-<pid>-<n>`.
    pub(super) fn owner_pid(name: &str) -> Option<u32> {
        let rest = ["tg-e2e-", "trigate-e2e-", "e2e-"]
            .iter()
            .find_map(|p| name.strip_prefix(p))?;
        let (pid, n) = rest.split_once('-')?;
        n.parse::<u32>().ok()?;
        pid.parse().ok()
    }

    fn scan() -> Result<Vec<Leftover>> {
        let mut found = netns()?;
        found.extend(cgroups()?);
        found.extend(pins(Path::new("/sys/fs/bpf/trigate"))?);
        Ok(found)
    }

    /// Removes what test processes that no longer exist left behind (a run
    /// killed before its cleanup) and returns what is left: things of live
    /// test processes, which `check` must not blame on this run.
    pub fn clear_stale() -> Result<Vec<Leftover>> {
        let mut kept = Vec::new();
        let mut failed = Vec::new();
        // Namespaces last: a cgroup removal ends the processes that keep one.
        let mut found = scan()?;
        found.sort_by_key(|l| l.kind == Kind::Netns);
        for l in found {
            let dead = l
                .owner()
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if !dead {
                match l.owner() {
                    Some(pid) => eprintln!("  kept (its test process {pid} runs): {l}"),
                    None => eprintln!("  kept (no test pid in its name): {l}"),
                }
                kept.push(l);
                continue;
            }
            match l.remove() {
                Ok(()) => eprintln!("  removed (its test process is gone): {l}"),
                Err(err) => failed.push(format!("{l}: {err:#}")),
            }
        }
        if !failed.is_empty() {
            bail!(
                "could not remove what killed e2e runs left: {}",
                failed.join("; ")
            );
        }
        if kept.is_empty() {
            eprintln!("nothing left by earlier runs");
        }
        Ok(kept)
    }

    /// Fails on anything the tests made that is still there, except what
    /// was there before they ran (`before`).
    pub fn check(before: &[Leftover]) -> Result<()> {
        let found: Vec<String> = scan()?
            .into_iter()
            .filter(|l| !before.contains(l))
            .map(|l| l.to_string())
            .collect();
        if found.is_empty() {
            eprintln!("no leftover namespaces, cgroups or pins");
            return Ok(());
        }
        for f in &found {
            eprintln!("  leftover: {f}");
        }
        bail!(
            "{} leftover(s) from the e2e tests ({}); the tests must remove what they create \
             (remove by hand: ip netns del NAME / rmdir CGROUP / rm PIN)",
            found.len(),
            found.join(", ")
        )
    }

    /// Kills what runs in a cgroup tree the tests made, then removes it.
    fn remove_cgroup_tree(path: &Path) -> Result<()> {
        for entry in fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                remove_cgroup_tree(&entry.path())?;
            }
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let populated = fs::read_to_string(path.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l == "populated 1"));
            if populated {
                let _ = fs::write(path.join("cgroup.kill"), "1");
            } else if fs::remove_dir(path).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("cgroup {} cannot be removed", path.display());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn netns() -> Result<Vec<Leftover>> {
        let out = util::output(Command::new("ip").args(["netns", "list"]))
            .context("listing network namespaces (is iproute2 installed?)")?;
        Ok(e2e_netns(&String::from_utf8_lossy(&out))
            .into_iter()
            .map(|name| Leftover {
                kind: Kind::Netns,
                name,
            })
            .collect())
    }

    /// Names from `ip netns list` (`tg-1a2b (id: 3)`) that start with `tg`.
    pub(super) fn e2e_netns(list: &str) -> Vec<String> {
        list.lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|name| name.starts_with("tg"))
            .map(str::to_owned)
            .collect()
    }

    fn cgroups() -> Result<Vec<Leftover>> {
        let mountinfo =
            fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
        let Some(mount) = cgroup2_mount(&mountinfo) else {
            eprintln!("no cgroup2 mount: cgroup leftovers not checked");
            return Ok(Vec::new());
        };
        let mut found = Vec::new();
        let entries = fs::read_dir(&mount)
            .with_context(|| format!("listing the cgroup2 mount {}", mount.display()))?;
        for entry in entries {
            let entry = entry?;
            let is_dir = entry.file_type()?.is_dir();
            if is_dir
                && entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with("trigate-e2e-")
            {
                found.push(Leftover {
                    kind: Kind::Cgroup,
                    name: entry.path().display().to_string(),
                });
            }
        }
        Ok(found)
    }

    /// The first cgroup2 mount point in `/proc/self/mountinfo`.
    pub(super) fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
        mountinfo.lines().find_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            (rest.split_whitespace().next()? == "cgroup2").then_some(())?;
            Some(PathBuf::from(unescape(fields.split_whitespace().nth(4)?)))
        })
    }

    /// mountinfo escapes space, tab, newline and backslash as `\ooo`.
    fn unescape(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let octal = bytes
                .get(i + 1..i + 4)
                .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
            match octal {
                Some(d) => {
                    out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
                    i += 4;
                }
                None => {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Everything under `dir` (at any depth) whose name starts with `e2e-`.
    pub(super) fn pins(dir: &Path) -> Result<Vec<Leftover>> {
        let mut found = Vec::new();
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(err) => return Err(err).with_context(|| format!("listing {}", dir.display())),
        };
        for entry in entries {
            let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with("e2e-") {
                found.push(Leftover {
                    kind: Kind::Pin,
                    name: path.display().to_string(),
                });
            } else if entry.file_type()?.is_dir() {
                found.extend(pins(&path)?);
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::leftovers::*;
    use super::*;

    #[test]
    fn netns_names() {
        let list = "tg-a1 (id: 3)\nother (id: 1)\ntgb\n";
        assert_eq!(e2e_netns(list), ["tg-a1", "tgb"]);
        assert!(e2e_netns("").is_empty());
    }

    #[test]
    fn cgroup2_mount_from_mountinfo() {
        let hybrid = "25 1 0:23 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let escaped = "41 31 0:38 / /mnt/cg\\040two rw shared:9 - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(escaped), Some(PathBuf::from("/mnt/cg two")));
        assert_eq!(cgroup2_mount("1 0 0:1 / / rw - ext4 /dev/sda rw\n"), None);
    }

    #[test]
    fn pins_finds_e2e_names_at_any_depth() {
        let dir = env::temp_dir().join(format!("xtask-pins-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("prod/x")).unwrap();
        fs::create_dir_all(dir.join("e2e-abc")).unwrap();
        fs::write(dir.join("prod/e2e-link"), "").unwrap();
        let mut found: Vec<String> = pins(&dir).unwrap().iter().map(|l| l.to_string()).collect();
        found.sort();
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].starts_with("bpf pin ") && found[0].ends_with("e2e-abc"));
        assert!(found[1].ends_with("prod/e2e-link"));
        assert!(pins(&dir).unwrap().is_empty());
    }

    #[test]
    fn owner_pid_from_names() {
        assert_eq!(owner_pid("tg-e2e-14550-3"), Some(14550));
        assert_eq!(owner_pid("trigate-e2e-14550-0"), Some(14550));
        assert_eq!(owner_pid("e2e-77-12"), Some(77));
        // Not a harness name, or not `<pid>-<n>`: never treated as stale.
        assert_eq!(owner_pid("tg1a2b-3h"), None);
        assert_eq!(owner_pid("e2e-abc"), None);
        assert_eq!(owner_pid("e2e-12"), None);
        assert_eq!(owner_pid("e2e-12-x"), None);
        assert_eq!(owner_pid("trigate-e2e-caps-12"), None);
        assert_eq!(owner_pid("prod"), None);
    }

    #[test]
    fn summary_table() {
        let mut steps = Steps::default();
        assert!(steps.run("fmt", || Ok(())));
        assert!(!steps.run("clippy", || bail!("boom\nmore")));
        assert!(!steps.run_if(false, "clippy failed", "unit tests", || Ok(())));
        let s = steps.summary();
        assert!(s.contains("fmt         PASS"), "{s}");
        assert!(s.contains("clippy      FAIL"), "{s}");
        assert!(s.contains("boom") && !s.contains("more"), "{s}");
        assert!(s.contains("unit tests  SKIP"), "{s}");
        assert!(s.contains("total       FAIL"), "{s}");
        assert_eq!(steps.failed(), ["clippy"]);
    }
}
