//! Start-up checks that turn a cryptic BPF failure into a message naming
//! what to fix.
use super::InterceptError;

/// getpeername hooks arrived in 5.8; everything else we use is older.
pub const KERNEL_FLOOR: (u32, u32) = (5, 8);

/// (major, minor) from a `uname -r` string such as `6.18.44-fc-v657`.
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn check_kernel(release: &str) -> Result<(), InterceptError> {
    match parse_kernel_release(release) {
        Some(v) if v >= KERNEL_FLOOR => Ok(()),
        Some((a, b)) => Err(InterceptError::Preflight(format!(
            "kernel {a}.{b} is too old: trigate needs Linux ≥ {}.{} (cgroup getpeername hooks)",
            KERNEL_FLOOR.0, KERNEL_FLOOR.1
        ))),
        None => Err(InterceptError::Preflight(format!(
            "cannot parse the kernel release {release:?}"
        ))),
    }
}

/// Runs every check against this machine.
pub fn check_host() -> Result<(), InterceptError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(InterceptError::Preflight(
            "trigate must run as root: loading eBPF programs and attaching them to cgroups \
             needs CAP_BPF, CAP_NET_ADMIN and CAP_SYS_ADMIN"
                .into(),
        ));
    }
    let uname = nix::sys::utsname::uname()
        .map_err(|e| InterceptError::Preflight(format!("uname failed: {e}")))?;
    check_kernel(&uname.release().to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_releases() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.8.0"), Some((5, 8)));
        assert_eq!(parse_kernel_release("5.15.0-105-generic"), Some((5, 15)));
        assert_eq!(parse_kernel_release("4.19"), Some((4, 19)));
        assert_eq!(parse_kernel_release("weird"), None);
    }

    #[test]
    fn enforces_the_floor() {
        assert!(check_kernel("5.8.0").is_ok());
        assert!(check_kernel("6.1.0").is_ok());
        let err = check_kernel("5.7.19").unwrap_err().to_string();
        assert!(err.contains("5.7") && err.contains("5.8"), "{err}");
        assert!(check_kernel("4.19.0").is_err());
        assert!(check_kernel("x").is_err());
    }
}
