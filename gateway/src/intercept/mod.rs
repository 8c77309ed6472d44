//! The kernel side seen from the daemon: load the eBPF object, attach and
//! pin its programs on the intercept cgroup, and own the maps (destinations,
//! enrollment, original destinations, heartbeat, counters).
pub mod cgroup;
pub mod destinations;
pub mod origdst;
pub mod preflight;

use std::{
    fs, io,
    os::fd::{AsFd, AsRawFd, RawFd},
    path::{Path, PathBuf},
    sync::Mutex,
};

use aya::{
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, MapData, PerCpuHashMap},
    programs::{
        links::{CgroupAttachMode, FdLink, PinnedLink},
        CgroupSockAddr, SockOps,
    },
    Ebpf, EbpfLoader,
};
use gateway_common::{
    maps, programs, CounterKey, DestKey, DestValue, Settings, WorkloadValue, FAIL_CLOSED, FAIL_OPEN,
};

use crate::config::{Config, FailMode};

/// The compiled programs, embedded once (TOOLCHAIN.md: a `static`, not a
/// local, or it is embedded several times).
static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/gateway-ebpf"));

#[derive(Debug, thiserror::Error)]
pub enum InterceptError {
    #[error("{0}")]
    Preflight(String),
    #[error("cgroup v2 not found: {0}")]
    NoCgroup2(String),
    #[error("cgroup: {0}")]
    Cgroup(String),
    #[error(
        "loading the eBPF object failed: {0} (is BPF enabled in this kernel and are we root?)"
    )]
    Load(String),
    #[error("attaching {program} to {cgroup} failed: {message}")]
    Attach {
        program: &'static str,
        cgroup: PathBuf,
        message: String,
    },
    #[error("bpffs at {path}: {message}")]
    Bpffs { path: PathBuf, message: String },
    #[error("eBPF map {map}: {message}")]
    Map { map: &'static str, message: String },
}

fn map_err(map: &'static str) -> impl Fn(aya::maps::MapError) -> InterceptError {
    move |e| InterceptError::Map {
        map,
        message: e.to_string(),
    }
}

/// Loaded and attached programs plus the maps the daemon writes.
pub struct Interceptor {
    cgroup: PathBuf,
    /// We made the cgroup, so a clean stop removes it (when empty).
    created_cgroup: bool,
    pin_dir: PathBuf,
    links: Mutex<Vec<PinnedLink>>,
    destinations: Mutex<LpmTrie<MapData, DestKey, DestValue>>,
    enroll_cgroup: Mutex<HashMap<MapData, u64, WorkloadValue>>,
    enroll_netns: Mutex<HashMap<MapData, u64, WorkloadValue>>,
    heartbeat: Mutex<Array<MapData, u64>>,
    counters: Mutex<PerCpuHashMap<MapData, CounterKey, u64>>,
    orig_by_tuple: origdst::OrigTable,
    /// Keeps the programs' file descriptors for as long as we run.
    _ebpf: Ebpf,
}

impl Interceptor {
    /// Loads the object, writes the settings and a first heartbeat, replaces
    /// links a previous run left pinned, and attaches every program.
    pub fn start(config: &Config, cgroup2: &Path) -> Result<Self, InterceptError> {
        let ic = &config.intercept;
        let cgroup = cgroup::resolve(cgroup2, &ic.cgroup)?;
        let created_cgroup = cgroup::ensure(&cgroup, ic.create_cgroup)?;
        let pin_dir = pin_dir(&ic.bpffs, &config.instance);
        ensure_bpffs(&ic.bpffs)?;

        let mut ebpf = EbpfLoader::new()
            .load(EBPF_OBJECT)
            .map_err(|e| InterceptError::Load(e.to_string()))?;

        let settings = Settings {
            mark: ic.mark,
            daemon_tgid: std::process::id(),
            daemon_cgroup_id: cgroup::own_cgroup_id(cgroup2)?,
            stale_after_ns: ic.heartbeat_timeout_ms.saturating_mul(1_000_000),
            fail_mode: match ic.fail_mode {
                FailMode::Open => FAIL_OPEN,
                FailMode::Closed => FAIL_CLOSED,
            },
            _pad: 0,
        };
        let mut settings_map: Array<MapData, Settings> = take(&mut ebpf, maps::SETTINGS)?;
        settings_map
            .set(0, settings, 0)
            .map_err(map_err(maps::SETTINGS))?;
        let mut heartbeat: Array<MapData, u64> = take(&mut ebpf, maps::HEARTBEAT)?;
        heartbeat
            .set(0, monotonic_ns(), 0)
            .map_err(map_err(maps::HEARTBEAT))?;

        let replaced = remove_stale_pins(&pin_dir)?;
        if replaced > 0 {
            tracing::warn!(
                pin_dir = %pin_dir.display(),
                links = replaced,
                "detached links a previous run left pinned"
            );
        }
        fs::create_dir_all(&pin_dir).map_err(|e| InterceptError::Bpffs {
            path: pin_dir.clone(),
            message: format!("cannot create the pin directory: {e}"),
        })?;
        let links = attach_all(&mut ebpf, &cgroup, &pin_dir).inspect_err(|_| {
            // Links attached so far detach when dropped; leave no directory.
            let _ = remove_stale_pins(&pin_dir);
            let _ = fs::remove_dir(&pin_dir);
        })?;

        Ok(Interceptor {
            destinations: Mutex::new(take(&mut ebpf, maps::DESTINATIONS)?),
            enroll_cgroup: Mutex::new(take(&mut ebpf, maps::ENROLL_CGROUP)?),
            enroll_netns: Mutex::new(take(&mut ebpf, maps::ENROLL_NETNS)?),
            counters: Mutex::new(take(&mut ebpf, maps::COUNTERS)?),
            orig_by_tuple: origdst::OrigTable::new(take_data(&mut ebpf, maps::ORIG_BY_TUPLE)?),
            heartbeat: Mutex::new(heartbeat),
            links: Mutex::new(links),
            cgroup,
            created_cgroup,
            pin_dir,
            _ebpf: ebpf,
        })
    }

    pub fn cgroup(&self) -> &Path {
        &self.cgroup
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn orig_table(&self) -> &origdst::OrigTable {
        &self.orig_by_tuple
    }

    /// Tells the programs the daemon is alive.
    pub fn beat(&self) -> Result<(), InterceptError> {
        lock(&self.heartbeat)
            .set(0, monotonic_ns(), 0)
            .map_err(map_err(maps::HEARTBEAT))
    }

    pub fn set_destination(
        &self,
        key: DestKey,
        prefix: u32,
        value: DestValue,
    ) -> Result<(), InterceptError> {
        lock(&self.destinations)
            .insert(&Key::new(prefix, key), value, 0)
            .map_err(map_err(maps::DESTINATIONS))
    }

    pub fn remove_destination(&self, key: DestKey, prefix: u32) -> Result<(), InterceptError> {
        lock(&self.destinations)
            .remove(&Key::new(prefix, key))
            .map_err(map_err(maps::DESTINATIONS))
    }

    pub fn enroll_cgroup(&self, id: u64, value: WorkloadValue) -> Result<(), InterceptError> {
        lock(&self.enroll_cgroup)
            .insert(id, value, 0)
            .map_err(map_err(maps::ENROLL_CGROUP))
    }

    pub fn unenroll_cgroup(&self, id: u64) -> Result<(), InterceptError> {
        lock(&self.enroll_cgroup)
            .remove(&id)
            .map_err(map_err(maps::ENROLL_CGROUP))
    }

    pub fn enroll_netns(&self, cookie: u64, value: WorkloadValue) -> Result<(), InterceptError> {
        lock(&self.enroll_netns)
            .insert(cookie, value, 0)
            .map_err(map_err(maps::ENROLL_NETNS))
    }

    pub fn unenroll_netns(&self, cookie: u64) -> Result<(), InterceptError> {
        lock(&self.enroll_netns)
            .remove(&cookie)
            .map_err(map_err(maps::ENROLL_NETNS))
    }

    /// Per-CPU counters summed over CPUs.
    pub fn counters(&self) -> Vec<(CounterKey, u64)> {
        let map = lock(&self.counters);
        map.iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| (k, per_cpu.iter().sum()))
            .collect()
    }

    /// Detaches every program (unpinning drops the last reference to each
    /// link) and removes the pin directory.
    pub fn detach(&self) {
        let links = std::mem::take(&mut *lock(&self.links));
        for link in links {
            match link.unpin() {
                Ok(fd_link) => drop(fd_link),
                Err(e) => tracing::warn!(error = %e, "unpinning a link failed"),
            }
        }
        if let Err(e) = fs::remove_dir(&self.pin_dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(pin_dir = %self.pin_dir.display(), error = %e, "cannot remove the pin directory");
            }
        }
        if self.created_cgroup {
            // Fails while processes (e.g. from `trigate exec`) remain in it;
            // then it stays for the next run, which is harmless.
            if let Err(e) = fs::remove_dir(&self.cgroup) {
                tracing::debug!(cgroup = %self.cgroup.display(), error = %e, "keeping the cgroup we created");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks leaves the map itself intact
    // (the kernel owns it), so the poison flag carries no information.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, InterceptError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(InterceptError::Map {
        map: name,
        message: "missing from the eBPF object".into(),
    })?;
    T::try_from(map).map_err(map_err(name))
}

fn take_data(ebpf: &mut Ebpf, name: &'static str) -> Result<MapData, InterceptError> {
    match ebpf.take_map(name) {
        Some(aya::maps::Map::LruHashMap(data)) => Ok(data),
        Some(_) => Err(InterceptError::Map {
            map: name,
            message: "is not an LRU hash map".into(),
        }),
        None => Err(InterceptError::Map {
            map: name,
            message: "missing from the eBPF object".into(),
        }),
    }
}

pub fn pin_dir(bpffs: &Path, instance: &str) -> PathBuf {
    bpffs.join("trigate").join(instance)
}

/// Mounts bpffs at `path` when nothing is mounted there (hosts without a
/// systemd that does it; a DaemonSet mounts the host's).
fn ensure_bpffs(path: &Path) -> Result<(), InterceptError> {
    let err = |message: String| InterceptError::Bpffs {
        path: path.to_path_buf(),
        message,
    };
    let fs = nix::sys::statfs::statfs(path).map_err(|e| err(format!("statfs failed: {e}")))?;
    if fs.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        path,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| err(format!("not a bpffs and mounting one failed: {e}")))
}

/// Removes links left pinned by an earlier run of this instance (crash,
/// SIGKILL). Each removal detaches that link, so a restart never stacks a
/// second copy of the programs on the cgroup.
fn remove_stale_pins(pin_dir: &Path) -> Result<usize, InterceptError> {
    let entries = match fs::read_dir(pin_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => {
            return Err(InterceptError::Bpffs {
                path: pin_dir.to_path_buf(),
                message: format!("cannot list: {e}"),
            })
        }
    };
    let mut n = 0;
    for entry in entries.flatten() {
        fs::remove_file(entry.path()).map_err(|e| InterceptError::Bpffs {
            path: entry.path(),
            message: format!("cannot remove a stale pin: {e}"),
        })?;
        n += 1;
    }
    Ok(n)
}

fn attach_all(
    ebpf: &mut Ebpf,
    cgroup: &Path,
    pin_dir: &Path,
) -> Result<Vec<PinnedLink>, InterceptError> {
    let cgroup_file = fs::File::open(cgroup)
        .map_err(|e| InterceptError::Cgroup(format!("cannot open {}: {e}", cgroup.display())))?;
    let mut links = Vec::with_capacity(programs::ALL.len());
    for name in programs::ALL {
        let attach_err = |message: String| InterceptError::Attach {
            program: name,
            cgroup: cgroup.to_path_buf(),
            message,
        };
        let program = ebpf
            .program_mut(name)
            .ok_or_else(|| attach_err("missing from the eBPF object".into()))?;
        // Mode "single" means no flags: the kernel refuses flags on cgroup
        // bpf_link creation because links always coexist with other
        // programs (systemd's, a CNI's) on the same cgroup.
        let link: FdLink = if name == programs::SOCK_OPS {
            let p: &mut SockOps = program
                .try_into()
                .map_err(|e: aya::programs::ProgramError| attach_err(e.to_string()))?;
            p.load().map_err(|e| attach_err(verifier_message(e)))?;
            let id = p
                .attach(cgroup_file.as_fd(), CgroupAttachMode::Single)
                .map_err(|e| attach_err(crate::error_chain(&e)))?;
            p.take_link(id)
                .map_err(|e| attach_err(e.to_string()))?
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| attach_err(e.to_string()))?
        } else {
            let p: &mut CgroupSockAddr = program
                .try_into()
                .map_err(|e: aya::programs::ProgramError| attach_err(e.to_string()))?;
            p.load().map_err(|e| attach_err(verifier_message(e)))?;
            let id = p
                .attach(cgroup_file.as_fd(), CgroupAttachMode::Single)
                .map_err(|e| attach_err(crate::error_chain(&e)))?;
            p.take_link(id)
                .map_err(|e| attach_err(e.to_string()))?
                .try_into()
                .map_err(|e: aya::programs::links::LinkError| attach_err(e.to_string()))?
        };
        let pinned = link
            .pin(pin_dir.join(name))
            .map_err(|e| attach_err(format!("pinning the link failed: {e}")))?;
        links.push(pinned);
    }
    Ok(links)
}

/// Keeps the verifier log, which is what explains a rejected program.
fn verifier_message(e: aya::programs::ProgramError) -> String {
    match e {
        aya::programs::ProgramError::LoadError {
            io_error,
            verifier_log,
        } => {
            format!("the verifier rejected it: {io_error}\n{verifier_log}")
        }
        other => crate::error_chain(&other),
    }
}

/// CLOCK_MONOTONIC in ns, the clock `bpf_ktime_get_ns` reads.
pub fn monotonic_ns() -> u64 {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC);
    ts.map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// The raw fd of a map, for syscalls aya does not wrap.
pub(crate) fn map_fd(data: &MapData) -> RawFd {
    data.fd().as_fd().as_raw_fd()
}
