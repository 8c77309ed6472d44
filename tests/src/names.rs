//! Unique names and subnets, so tests can run concurrently (threads of one
//! test binary, or several binaries): everything is derived from the pid and
//! a per-process counter.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU32, Ordering};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// One allocation: a number unique in this process, plus the pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Uniq {
    pub pid: u32,
    pub n: u32,
}

impl Uniq {
    pub fn next() -> Self {
        Self {
            pid: std::process::id(),
            n: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// `trigate-e2e-<pid>-<n>`: cgroups and temp dirs.
    pub fn long_name(&self) -> String {
        format!("trigate-e2e-{}-{}", self.pid, self.n)
    }

    /// `tg-e2e-<pid>-<n>`: network namespaces (`cargo xtask test` looks for
    /// leftover namespaces named `tg…`).
    pub fn netns_name(&self) -> String {
        format!("tg-e2e-{}-{}", self.pid, self.n)
    }

    /// `e2e-<pid>-<n>`: the daemon instance (≤ 32 chars, `[a-z0-9-]`).
    pub fn instance(&self) -> String {
        format!("e2e-{}-{}", self.pid, self.n)
    }

    /// Interface names are limited to 15 bytes: `tg<pid hex>-<n hex><suffix>`.
    pub fn ifname(&self, suffix: char) -> String {
        let name = format!("tg{:x}-{:x}{suffix}", self.pid, self.n);
        assert!(name.len() <= 15, "interface name {name} too long");
        name
    }

    /// A /30 in 10.200.0.0/14: host side `.1`, pod side `.2` of the block.
    /// 256 subnets per process, slotted by the low byte of the pid.
    pub fn v4_pair(&self) -> (Ipv4Addr, Ipv4Addr) {
        let idx = ((self.pid & 0xff) << 8) | (self.n & 0xff);
        let base = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + idx * 4;
        (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2))
    }

    /// A /64 in fd74:67e2::/32 (not the machine's own fd00::/64).
    pub fn v6_pair(&self) -> (Ipv6Addr, Ipv6Addr) {
        let a = (self.pid & 0xffff) as u16;
        let b = (self.n & 0xffff) as u16;
        (
            Ipv6Addr::new(0xfd74, 0x67e2, a, b, 0, 0, 0, 1),
            Ipv6Addr::new(0xfd74, 0x67e2, a, b, 0, 0, 0, 2),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_kernel_limits() {
        let u = Uniq {
            pid: 4_194_304,
            n: 4095,
        };
        assert!(u.ifname('h').len() <= 15);
        assert!(u.instance().len() <= 32);
        let (h, p) = u.v4_pair();
        assert_eq!(h.octets()[0], 10);
        assert!((200..=203).contains(&h.octets()[1]));
        assert_eq!(u32::from(p) - u32::from(h), 1);
        assert_eq!(u32::from(h) % 4, 1);
    }
}
