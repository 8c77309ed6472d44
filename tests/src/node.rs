//! The simulated node: an attach cgroup, pods (netns + veth + child cgroup)
//! and host pods (child cgroup in the host netns).

use crate::client::{ClientRequest, ClientResult};
use crate::config::{Config, Workload};
use crate::daemon::Daemon;
use crate::env::{env, Env};
use crate::names::Uniq;
use crate::process::{must, run_with_timeout, CmdOutput};
use anyhow::{bail, Context, Result};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default deadline for commands run in pods.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(15);

/// One per test: the cgroup the daemon attaches to and its instance name.
/// Dropping it removes the cgroup tree (killing anything left in it) and
/// the pin directory `<bpffs>/trigate/<instance>`.
pub struct Node {
    pub env: &'static Env,
    /// `<cgroup2 mount>/trigate-e2e-<pid>-<n>`: `intercept.cgroup`.
    pub cgroup: PathBuf,
    /// `e2e-<pid>-<n>`.
    pub instance: String,
    /// Bumped by every daemon start; a daemon only cleans the pin dir on
    /// drop if no later daemon of this node has taken it over.
    pub(crate) generation: Arc<AtomicU64>,
}

impl Node {
    /// Checks the environment and creates the attach cgroup.
    pub fn new() -> Result<Self> {
        let env = env()?;
        let uniq = Uniq::next();
        let cgroup = env.cgroup2.join(uniq.long_name());
        std::fs::create_dir(&cgroup)
            .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        Ok(Self {
            env,
            cgroup,
            instance: uniq.instance(),
            generation: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Where the daemon pins its links: `<bpffs>/trigate/<instance>`.
    pub fn pin_dir(&self) -> PathBuf {
        self.env.bpffs.join("trigate").join(&self.instance)
    }

    /// A pod with IPv4 only.
    pub fn pod(&self, name: &str) -> Result<Pod> {
        Pod::create(self, name, false)
    }

    /// A pod with IPv4 and IPv6 on its veth.
    pub fn pod_v6(&self, name: &str) -> Result<Pod> {
        Pod::create(self, name, true)
    }

    /// A child cgroup whose processes stay in the host netns.
    pub fn host_pod(&self, name: &str) -> Result<HostPod> {
        let cgroup = self.cgroup.join(name);
        std::fs::create_dir(&cgroup)
            .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        Ok(HostPod {
            name: name.to_string(),
            cgroup,
        })
    }

    /// A config for this node with the defaults described in the README.
    pub fn config(&self) -> Config {
        Config::new(self)
    }

    /// Starts the daemon in the test's own cgroup and waits until ready.
    pub fn start(&self, cfg: &Config) -> Result<Daemon> {
        Daemon::start(self, cfg, None)
    }

    /// Starts the daemon inside `pod`'s cgroup (host netns).
    pub fn start_in(&self, cfg: &Config, pod: &HostPod) -> Result<Daemon> {
        Daemon::start(self, cfg, Some(&pod.cgroup))
    }

    /// Programs attached directly to the attach cgroup (bpftool).
    pub fn attached(&self) -> Result<Vec<crate::AttachedProgram>> {
        crate::attached_programs(&self.cgroup)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        remove_pin_dir(&self.pin_dir());
        if let Err(e) = remove_cgroup_tree(&self.cgroup) {
            eprintln!("e2e cleanup: {e:#}");
        }
    }
}

pub(crate) fn remove_pin_dir(dir: &Path) {
    if dir.exists() {
        // Unlinking the pinned links detaches them (no process holds them
        // once the daemon is gone).
        if let Err(e) = std::fs::remove_dir_all(dir) {
            eprintln!("e2e cleanup: removing {}: {e}", dir.display());
        }
    }
}

/// Removes a cgroup and its children, killing whatever still runs there
/// (only processes the test started can be in a cgroup the test created).
pub(crate) fn remove_cgroup_tree(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    for entry in std::fs::read_dir(path).with_context(|| format!("listing {}", path.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if populated(path) {
            let _ = std::fs::write(path.join("cgroup.kill"), "1");
        } else {
            match std::fs::remove_dir(path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("removing cgroup {}", path.display()))
                }
                Err(_) => {}
            }
        }
        if Instant::now() >= deadline {
            bail!(
                "cgroup {} still has processes: {:?}",
                path.display(),
                std::fs::read_to_string(path.join("cgroup.procs")).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn populated(path: &Path) -> bool {
    std::fs::read_to_string(path.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// Something commands can run in: a pod (cgroup + netns) or a host pod
/// (cgroup only).
pub trait Runner {
    /// The name used in the config (`workloads[].name`).
    fn name(&self) -> &str;
    /// The cgroup every command joins first.
    fn cgroup(&self) -> &Path;
    /// The netns name, if any.
    fn netns(&self) -> Option<&str>;

    /// `sh -c 'echo $$ > CG/cgroup.procs && exec [ip netns exec NS] PROGRAM ARGS…'`:
    /// the cgroup is joined before `ip netns exec` remounts /sys, and the
    /// pid stays the same through both execs. Proxy variables are cleared
    /// so clients never send traffic anywhere but where the test points.
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let env = env().expect("environment checked when the node was built");
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(r#"echo $$ > "$1" && shift && exec "$@""#)
            .arg("sh")
            .arg(self.cgroup().join("cgroup.procs"));
        if let Some(ns) = self.netns() {
            cmd.arg(&env.ip).args(["netns", "exec", ns]);
        }
        cmd.arg(program).args(args);
        for var in [
            "http_proxy",
            "HTTP_PROXY",
            "https_proxy",
            "HTTPS_PROXY",
            "all_proxy",
            "ALL_PROXY",
            "no_proxy",
            "NO_PROXY",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }

    /// Runs a command here with a deadline.
    fn run(&self, program: &Path, args: &[&str], timeout: Duration) -> Result<CmdOutput> {
        run_with_timeout(self.command(program, args), timeout)
    }

    /// `curl -sS` the URL from here (never through a proxy).
    fn curl(&self, url: &str) -> Result<CmdOutput> {
        let env = env()?;
        self.run(
            &env.curl,
            &[
                "-sS",
                "--noproxy",
                "*",
                "--max-time",
                "10",
                "--connect-timeout",
                "5",
                url,
            ],
            CMD_TIMEOUT,
        )
    }

    /// Runs the python3 client (see [`ClientRequest`]) here.
    fn client(&self, req: &ClientRequest) -> Result<ClientResult> {
        let env = env()?;
        let arg = serde_json::to_string(req)?;
        let out = self.run(
            &env.python3,
            &["-c", crate::client::SCRIPT, &arg],
            CMD_TIMEOUT,
        )?;
        ClientResult::parse(&out)
            .with_context(|| format!("python3 client in {} for {arg}", self.name()))
    }
}

/// A simulated pod: network namespace `tg-e2e-<pid>-<n>` with `lo` up,
/// a veth pair to the host netns (/30: host `.1`, pod `.2`; optionally a
/// /64 with host `::1`, pod `::2`) and a child cgroup of the attach cgroup.
pub struct Pod {
    pub name: String,
    pub netns: String,
    pub cgroup: PathBuf,
    pub host_if: String,
    pub host_ip: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
    pub host_ip6: Option<Ipv6Addr>,
    pub pod_ip6: Option<Ipv6Addr>,
    netns_made: bool,
    veth_made: bool,
    cgroup_made: bool,
}

impl Pod {
    fn create(node: &Node, name: &str, ipv6: bool) -> Result<Self> {
        let ip = &node.env.ip;
        // The /30 comes from pid + counter; another test process whose pid
        // shares the low byte could hold it, so skip subnets in use.
        let mut uniq = Uniq::next();
        for _ in 0..16 {
            let (h, _) = uniq.v4_pair();
            let used = must(ip, &["-o", "addr", "show", "to", &format!("{h}/30")])?;
            if used.stdout.trim().is_empty() {
                break;
            }
            uniq = Uniq::next();
        }
        let (host_ip, pod_ip) = uniq.v4_pair();
        let (host_ip6, pod_ip6) = uniq.v6_pair();
        // Built field by field so a failure half-way is undone by Drop.
        let mut pod = Pod {
            name: name.to_string(),
            netns: uniq.netns_name(),
            cgroup: node.cgroup.join(name),
            host_if: uniq.ifname('h'),
            host_ip,
            pod_ip,
            host_ip6: ipv6.then_some(host_ip6),
            pod_ip6: ipv6.then_some(pod_ip6),
            netns_made: false,
            veth_made: false,
            cgroup_made: false,
        };
        let pod_if = uniq.ifname('p');
        std::fs::create_dir(&pod.cgroup)
            .with_context(|| format!("creating cgroup {}", pod.cgroup.display()))?;
        pod.cgroup_made = true;
        must(ip, &["netns", "add", &pod.netns])?;
        pod.netns_made = true;
        let ns = pod.netns.clone();
        must(ip, &["-n", &ns, "link", "set", "lo", "up"])?;
        must(
            ip,
            &[
                "link",
                "add",
                &pod.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &pod_if,
                "netns",
                &ns,
            ],
        )?;
        pod.veth_made = true;
        must(
            ip,
            &["addr", "add", &format!("{host_ip}/30"), "dev", &pod.host_if],
        )?;
        must(
            ip,
            &[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{pod_ip}/30"),
                "dev",
                &pod_if,
            ],
        )?;
        if ipv6 {
            must(
                ip,
                &[
                    "addr",
                    "add",
                    &format!("{host_ip6}/64"),
                    "dev",
                    &pod.host_if,
                    "nodad",
                ],
            )?;
            must(
                ip,
                &[
                    "-n",
                    &ns,
                    "addr",
                    "add",
                    &format!("{pod_ip6}/64"),
                    "dev",
                    &pod_if,
                    "nodad",
                ],
            )?;
        }
        must(ip, &["link", "set", &pod.host_if, "up"])?;
        must(ip, &["-n", &ns, "link", "set", &pod_if, "up"])?;
        Ok(pod)
    }

    /// `/var/run/netns/<netns>`: `workloads[].netns`.
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.netns)
    }

    /// This pod as a config workload (cgroup + netns, label `app: <name>`).
    pub fn workload(&self) -> Workload {
        Workload::new(&self.name)
            .cgroup(&self.cgroup)
            .netns(self.netns_path())
            .label("app", &self.name)
    }

    /// Lets the pod reach `dst` (an address in the host netns made by the
    /// test, e.g. another pod's host-side veth address) through its veth.
    pub fn route_to(&self, dst: IpAddr) -> Result<()> {
        let env = env()?;
        let (prefix, via) = match dst {
            IpAddr::V4(_) => (format!("{dst}/32"), self.host_ip.to_string()),
            IpAddr::V6(_) => (
                format!("{dst}/128"),
                self.host_ip6
                    .context("route_to an IPv6 address needs a pod_v6")?
                    .to_string(),
            ),
        };
        must(
            &env.ip,
            &["-n", &self.netns, "route", "add", &prefix, "via", &via],
        )?;
        Ok(())
    }
}

impl Runner for Pod {
    fn name(&self) -> &str {
        &self.name
    }
    fn cgroup(&self) -> &Path {
        &self.cgroup
    }
    fn netns(&self) -> Option<&str> {
        Some(&self.netns)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        let Ok(env) = env() else { return };
        // Processes first: a netns stays alive while something runs in it.
        if self.cgroup_made {
            if let Err(e) = remove_cgroup_tree(&self.cgroup) {
                eprintln!("e2e cleanup: {e:#}");
            }
        }
        if self.veth_made {
            // Deleting either end removes the pair; the netns deletion below
            // would too, but only once the namespace is really freed.
            let _ = Command::new(&env.ip)
                .args(["link", "del", &self.host_if])
                .output();
        }
        if self.netns_made {
            match Command::new(&env.ip)
                .args(["netns", "del", &self.netns])
                .output()
            {
                Ok(o) if o.status.success() => {}
                Ok(o) => eprintln!(
                    "e2e cleanup: ip netns del {}: {}",
                    self.netns,
                    String::from_utf8_lossy(&o.stderr)
                ),
                Err(e) => eprintln!("e2e cleanup: ip netns del {}: {e}", self.netns),
            }
        }
    }
}

/// A child cgroup of the attach cgroup in the host netns (host-mode tests).
pub struct HostPod {
    pub name: String,
    pub cgroup: PathBuf,
}

impl HostPod {
    /// A child cgroup of this one (enrolled with it: the programs walk up
    /// the cgroup ancestry).
    pub fn child(&self, name: &str) -> Result<HostPod> {
        let cgroup = self.cgroup.join(name);
        std::fs::create_dir(&cgroup)
            .with_context(|| format!("creating cgroup {}", cgroup.display()))?;
        Ok(HostPod {
            name: format!("{}/{name}", self.name),
            cgroup,
        })
    }

    /// This host pod as a config workload (cgroup only).
    pub fn workload(&self) -> Workload {
        Workload::new(&self.name)
            .cgroup(&self.cgroup)
            .label("app", &self.name)
    }
}

impl Runner for HostPod {
    fn name(&self) -> &str {
        &self.name
    }
    fn cgroup(&self) -> &Path {
        &self.cgroup
    }
    fn netns(&self) -> Option<&str> {
        None
    }
}

impl Drop for HostPod {
    fn drop(&mut self) {
        if let Err(e) = remove_cgroup_tree(&self.cgroup) {
            eprintln!("e2e cleanup: {e:#}");
        }
    }
}
