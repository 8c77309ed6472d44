//! cgroup v2: finding the mount, resolving configured paths, ids, joining.
use std::{
    fs,
    os::unix::fs::MetadataExt,
    path::{Component, Path, PathBuf},
};

use super::InterceptError;

/// The cgroup2 mount point named in a `/proc/self/mountinfo` text.
///
/// Kubernetes nodes mount it at `/sys/fs/cgroup`; hybrid hosts at
/// `/sys/fs/cgroup/unified`. The first cgroup2 entry wins.
pub fn cgroup2_mount_in(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        // Fields: id parent major:minor root mountpoint options [optional…] - fstype source super
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        if fstype != "cgroup2" {
            return None;
        }
        let mountpoint = left.split_whitespace().nth(4)?;
        Some(PathBuf::from(unescape_mountinfo(mountpoint)))
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

/// The cgroup2 mount of this machine.
pub fn cgroup2_mount() -> Result<PathBuf, InterceptError> {
    let text = fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| InterceptError::NoCgroup2(format!("cannot read /proc/self/mountinfo: {e}")))?;
    cgroup2_mount_in(&text).ok_or_else(|| {
        InterceptError::NoCgroup2(
            "no cgroup2 filesystem in /proc/self/mountinfo; trigate needs the unified (v2) \
             hierarchy mounted (Linux ≥ 5.8, systemd.unified_cgroup_hierarchy=1 or a hybrid \
             mount at /sys/fs/cgroup/unified)"
                .into(),
        )
    })
}

/// A configured cgroup path made absolute: relative paths are relative to
/// the cgroup2 mount; absolute ones must lie under it.
pub fn resolve(mount: &Path, configured: &Path) -> Result<PathBuf, InterceptError> {
    let path = if configured.is_absolute() {
        configured.to_path_buf()
    } else {
        mount.join(configured)
    };
    let inside = path.strip_prefix(mount).map_err(|_| {
        InterceptError::Cgroup(format!(
            "{} is not under the cgroup2 mount {}",
            path.display(),
            mount.display()
        ))
    })?;
    if inside
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(InterceptError::Cgroup(format!(
            "{}: only plain directory names are allowed below the cgroup2 mount",
            path.display()
        )));
    }
    Ok(path)
}

/// The cgroup v2 id: the inode number of its directory (what
/// `bpf_get_current_cgroup_id` returns).
pub fn cgroup_id(path: &Path) -> Result<u64, InterceptError> {
    fs::metadata(path).map(|m| m.ino()).map_err(|e| {
        InterceptError::Cgroup(format!(
            "cannot stat cgroup {}: {e}; does it exist?",
            path.display()
        ))
    })
}

/// The cgroup v2 path of a process, from /proc/PID/cgroup (`0::/a/b`).
pub fn cgroup_of_pid_in(proc_cgroup: &str) -> Option<PathBuf> {
    proc_cgroup.lines().find_map(|l| {
        l.strip_prefix("0::")
            .map(|p| PathBuf::from(p.trim_start_matches('/')))
    })
}

/// Id of the cgroup this process is in.
pub fn own_cgroup_id(mount: &Path) -> Result<u64, InterceptError> {
    let text = fs::read_to_string("/proc/self/cgroup")
        .map_err(|e| InterceptError::Cgroup(format!("cannot read /proc/self/cgroup: {e}")))?;
    let rel = cgroup_of_pid_in(&text).ok_or_else(|| {
        InterceptError::Cgroup("no cgroup v2 entry (0::) in /proc/self/cgroup".into())
    })?;
    cgroup_id(&mount.join(rel))
}

/// Creates the cgroup (and parents) when asked to and missing; true when
/// it created it.
pub fn ensure(path: &Path, create: bool) -> Result<bool, InterceptError> {
    if path.is_dir() {
        return Ok(false);
    }
    if !create {
        return Err(InterceptError::Cgroup(format!(
            "cgroup {} does not exist and intercept.create_cgroup is false",
            path.display()
        )));
    }
    fs::create_dir_all(path)
        .map_err(|e| InterceptError::Cgroup(format!("cannot create {}: {e}", path.display())))?;
    Ok(true)
}

/// Moves the calling process into the cgroup.
pub fn join(path: &Path) -> Result<(), InterceptError> {
    let procs = path.join("cgroup.procs");
    fs::write(&procs, std::process::id().to_string()).map_err(|e| {
        InterceptError::Cgroup(format!(
            "cannot move this process into {}: {e} (does the cgroup exist? are we root?)",
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const UNIFIED: &str = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:8 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn finds_the_cgroup2_mount() {
        assert_eq!(
            cgroup2_mount_in(HYBRID),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            cgroup2_mount_in(UNIFIED),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        assert_eq!(
            cgroup2_mount_in("31 23 0:28 / /x rw - tmpfs tmpfs rw\n"),
            None
        );
        assert_eq!(cgroup2_mount_in("garbage\n\n"), None);
    }

    #[test]
    fn unescapes_mount_points() {
        let line = "41 31 0:38 / /mnt/with\\040space rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup2_mount_in(line),
            Some(PathBuf::from("/mnt/with space"))
        );
    }

    #[test]
    fn resolves_relative_and_absolute_paths() {
        let m = Path::new("/sys/fs/cgroup");
        assert_eq!(
            resolve(m, Path::new("trigate")).unwrap(),
            PathBuf::from("/sys/fs/cgroup/trigate")
        );
        assert_eq!(
            resolve(m, Path::new("/sys/fs/cgroup/a/b")).unwrap(),
            PathBuf::from("/sys/fs/cgroup/a/b")
        );
        assert!(resolve(m, Path::new("/tmp/x")).is_err());
        assert!(resolve(m, Path::new("a/../../etc")).is_err());
    }

    #[test]
    fn reads_the_v2_line_of_proc_cgroup() {
        let text = "9:name=systemd:/\n4:memory:/x\n0::/kubepods/pod1/c1\n";
        assert_eq!(
            cgroup_of_pid_in(text),
            Some(PathBuf::from("kubepods/pod1/c1"))
        );
        assert_eq!(cgroup_of_pid_in("0::/\n"), Some(PathBuf::from("")));
        assert_eq!(cgroup_of_pid_in("1:cpu:/\n"), None);
    }
}
