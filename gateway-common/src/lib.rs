//! The kernel/user contract: every map key and value the eBPF programs and
//! the daemon exchange, laid out `#[repr(C)]` with explicit padding so both
//! sides agree byte for byte. Map-key arithmetic lives here as plain
//! functions so ordinary unit tests cover it.
#![no_std]

/// Map names, as the eBPF object declares them and the daemon looks them up.
pub mod maps {
    pub const DESTINATIONS: &str = "DESTINATIONS";
    pub const ENROLL_CGROUP: &str = "ENROLL_CGROUP";
    pub const ENROLL_NETNS: &str = "ENROLL_NETNS";
    pub const ORIG_BY_COOKIE: &str = "ORIG_BY_COOKIE";
    pub const ORIG_BY_TUPLE: &str = "ORIG_BY_TUPLE";
    pub const SETTINGS: &str = "SETTINGS";
    pub const HEARTBEAT: &str = "HEARTBEAT";
    pub const COUNTERS: &str = "COUNTERS";
}

/// Program names (the Rust function names in gateway-ebpf).
pub mod programs {
    pub const CONNECT4: &str = "trigate_connect4";
    pub const CONNECT6: &str = "trigate_connect6";
    pub const SOCK_OPS: &str = "trigate_sock_ops";
    pub const GETPEERNAME4: &str = "trigate_getpeername4";
    pub const GETPEERNAME6: &str = "trigate_getpeername6";
    /// Every program, in attach order; the daemon pins one link per name.
    pub const ALL: [&str; 5] = [CONNECT4, CONNECT6, SOCK_OPS, GETPEERNAME4, GETPEERNAME6];
}

/// Capacities. LRU maps evict the oldest records, so a client that never
/// completes its handshake or a daemon that never consumes cannot make them
/// grow without bound.
pub const MAX_DESTINATIONS: u32 = 16 * 1024;
pub const MAX_ENROLLED: u32 = 16 * 1024;
pub const MAX_PENDING: u32 = 64 * 1024;
pub const MAX_COUNTERS: u32 = 16 * 1024;
/// Deepest cgroup level the connect programs search for an enrolled ancestor.
pub const MAX_CGROUP_DEPTH: i32 = 16;

/// What a destination entry asks the connect programs to do.
pub const ACTION_REDIRECT: u32 = 1;
/// `connect()` fails with EPERM: an egress firewall for unapproved endpoints.
pub const ACTION_DENY: u32 = 2;
/// Counted only; the connection goes where it was going.
pub const ACTION_OBSERVE: u32 = 3;

/// Counter outcomes (what the program did, which differs from the action
/// when the daemon's heartbeat is stale or no listener can take the family).
pub const OUTCOME_REDIRECTED: u32 = 1;
pub const OUTCOME_DENIED: u32 = 2;
pub const OUTCOME_OBSERVED: u32 = 3;
/// Heartbeat stale, fail-open: connected directly.
pub const OUTCOME_BYPASSED: u32 = 4;
/// Heartbeat stale, fail-closed: refused.
pub const OUTCOME_REFUSED: u32 = 5;
/// The workload has no listener for the socket's family (e.g. no IPv6 one).
pub const OUTCOME_NO_LISTENER: u32 = 6;

pub const FAIL_OPEN: u32 = 0;
pub const FAIL_CLOSED: u32 = 1;

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// LPM trie data for the destination table. The port comes first so an
/// entry can match one port (prefix covers port + address bits) and a
/// lookup can fall back to the any-port entry (port 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestKey {
    /// Big-endian port; 0 means any port.
    pub port: [u8; 2],
    /// IPv6 address, IPv4 as v4-mapped (`::ffff:a.b.c.d`).
    pub addr: [u8; 16],
}

/// The `prefix_len` of an LPM key: the port's 16 bits always take part.
pub const fn dest_prefix_len(addr_prefix_bits: u32) -> u32 {
    16 + addr_prefix_bits
}

/// Prefix bits of an IPv4 CIDR once mapped into the v6 space.
pub const fn v4_prefix_bits(v4_bits: u32) -> u32 {
    96 + v4_bits
}

/// `::ffff:a.b.c.d` for an IPv4 address in network byte order.
pub const fn v4_mapped(octets: [u8; 4]) -> [u8; 16] {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// The IPv4 address inside a v4-mapped IPv6 address, if it is one.
pub fn v4_unmapped(addr: &[u8; 16]) -> Option<[u8; 4]> {
    if addr[..10].iter().all(|b| *b == 0) && addr[10] == 0xff && addr[11] == 0xff {
        Some([addr[12], addr[13], addr[14], addr[15]])
    } else {
        None
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DestValue {
    pub dest_id: u32,
    pub action: u32,
}

/// An enrolled workload, keyed by cgroup id or by netns cookie.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadValue {
    pub workload_id: u32,
    /// Host byte order; 0 means no listener yet (not redirected).
    pub listener_port: u16,
    pub _pad0: u16,
    /// Where redirected IPv4 connects go (and v4-mapped IPv6 ones).
    pub listener_v4: [u8; 4],
    /// Where redirected IPv6 connects go; all zero means none.
    pub listener_v6: [u8; 16],
    pub _pad1: u32,
    /// Netns cookie of the namespace the listener accepts in; part of the
    /// tuple key, because client ports collide across namespaces.
    pub listener_netns_cookie: u64,
}

/// What connect4/6 learnt about a redirected connection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrigRecord {
    /// Original destination, IPv4 as v4-mapped.
    pub orig_addr: [u8; 16],
    /// Host byte order.
    pub orig_port: u16,
    /// Family of the socket the application used (AF_INET / AF_INET6).
    pub family: u16,
    pub dest_id: u32,
    pub workload_id: u32,
    pub tgid: u32,
    pub uid: u32,
    pub gid: u32,
    pub cgroup_id: u64,
    pub listener_netns_cookie: u64,
    pub comm: [u8; 16],
}

/// The accepted socket's view of a redirected connection: the listener's
/// netns and the client's address and port (its local side).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TupleKey {
    pub netns_cookie: u64,
    /// Client address, IPv4 as v4-mapped.
    pub addr: [u8; 16],
    /// Host byte order.
    pub port: u16,
    pub _pad: [u8; 6],
}

impl TupleKey {
    pub const fn new(netns_cookie: u64, addr: [u8; 16], port: u16) -> Self {
        Self {
            netns_cookie,
            addr,
            port,
            _pad: [0; 6],
        }
    }
}

/// Process-wide settings, written once at start-up (array index 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Settings {
    /// Sockets carrying this `SO_MARK` are the daemon's own: never touched.
    pub mark: u32,
    pub daemon_tgid: u32,
    pub daemon_cgroup_id: u64,
    /// The heartbeat is stale when older than this (CLOCK_MONOTONIC ns).
    pub stale_after_ns: u64,
    pub fail_mode: u32,
    pub _pad: u32,
}

/// Whether a heartbeat written at `beat_ns` is stale at `now_ns`. A zero
/// heartbeat has never been written, which counts as stale.
pub const fn heartbeat_stale(beat_ns: u64, now_ns: u64, stale_after_ns: u64) -> bool {
    beat_ns == 0 || now_ns.saturating_sub(beat_ns) > stale_after_ns
}

/// What a connect program does with a `connect()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it go where it was going.
    Pass,
    /// Fail it with EPERM.
    Refuse,
    /// Rewrite it to the workload's listener and record the original.
    Redirect,
}

/// The decision for an enrolled workload's connect to a listed destination,
/// with the counter outcome to record (0: count nothing). The connect
/// programs call this; unit tests cover every case.
#[inline(always)]
pub const fn verdict(
    action: u32,
    heartbeat_stale: bool,
    fail_mode: u32,
    has_listener: bool,
) -> (Verdict, u32) {
    match action {
        // Denial needs no daemon, so it holds even when the heartbeat is stale.
        ACTION_DENY => (Verdict::Refuse, OUTCOME_DENIED),
        ACTION_OBSERVE => (Verdict::Pass, OUTCOME_OBSERVED),
        ACTION_REDIRECT if heartbeat_stale => {
            if fail_mode == FAIL_CLOSED {
                (Verdict::Refuse, OUTCOME_REFUSED)
            } else {
                (Verdict::Pass, OUTCOME_BYPASSED)
            }
        }
        ACTION_REDIRECT if !has_listener => (Verdict::Pass, OUTCOME_NO_LISTENER),
        ACTION_REDIRECT => (Verdict::Redirect, OUTCOME_REDIRECTED),
        _ => (Verdict::Pass, 0),
    }
}

/// Whether the workload has a listener for this connect: IPv6 sockets
/// dialing a real IPv6 address need the IPv6 one; IPv4 and v4-mapped go to
/// the IPv4 one.
#[inline(always)]
pub fn has_listener(workload: &WorkloadValue, family: u16, addr: &[u8; 16]) -> bool {
    if workload.listener_port == 0 {
        return false;
    }
    if family == AF_INET6 && v4_unmapped(addr).is_none() {
        !is_zero16(&workload.listener_v6)
    } else {
        !is_zero4(&workload.listener_v4)
    }
}

#[inline(always)]
fn is_zero16(a: &[u8; 16]) -> bool {
    let mut i = 0;
    while i < 16 {
        if a[i] != 0 {
            return false;
        }
        i += 1;
    }
    true
}

#[inline(always)]
fn is_zero4(a: &[u8; 4]) -> bool {
    a[0] == 0 && a[1] == 0 && a[2] == 0 && a[3] == 0
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub workload_id: u32,
    pub dest_id: u32,
    pub outcome: u32,
    pub _pad: u32,
}

impl CounterKey {
    pub const fn new(workload_id: u32, dest_id: u32, outcome: u32) -> Self {
        Self {
            workload_id,
            dest_id,
            outcome,
            _pad: 0,
        }
    }
}

#[cfg(feature = "user")]
mod pod {
    use super::*;
    // SAFETY: all are #[repr(C)] plain integers/arrays with explicit padding
    // fields, so every byte is initialised and any bit pattern is valid.
    unsafe impl aya::Pod for DestKey {}
    unsafe impl aya::Pod for DestValue {}
    unsafe impl aya::Pod for WorkloadValue {}
    unsafe impl aya::Pod for OrigRecord {}
    unsafe impl aya::Pod for TupleKey {}
    unsafe impl aya::Pod for Settings {}
    unsafe impl aya::Pod for CounterKey {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(size_of::<DestKey>(), 18);
        assert_eq!(size_of::<DestValue>(), 8);
        assert_eq!(size_of::<WorkloadValue>(), 40);
        assert_eq!(size_of::<OrigRecord>(), 72);
        assert_eq!(size_of::<TupleKey>(), 32);
        assert_eq!(size_of::<Settings>(), 32);
        assert_eq!(size_of::<CounterKey>(), 16);
    }

    #[test]
    fn v4_mapping_round_trips() {
        let m = v4_mapped([10, 1, 2, 3]);
        assert_eq!(&m[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
        assert_eq!(v4_unmapped(&m), Some([10, 1, 2, 3]));
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        assert_eq!(v4_unmapped(&v6), None);
        v6[10] = 0xff;
        v6[11] = 0xfe;
        assert_eq!(v4_unmapped(&v6), None);
    }

    #[test]
    fn prefix_lengths_include_the_port() {
        assert_eq!(dest_prefix_len(128), 144);
        assert_eq!(dest_prefix_len(v4_prefix_bits(32)), 144);
        assert_eq!(dest_prefix_len(v4_prefix_bits(24)), 136);
        assert_eq!(dest_prefix_len(v4_prefix_bits(0)), 112);
    }

    #[test]
    fn verdicts_cover_every_action_and_state() {
        use Verdict::*;
        for stale in [false, true] {
            for mode in [FAIL_OPEN, FAIL_CLOSED] {
                for listener in [false, true] {
                    assert_eq!(
                        verdict(ACTION_DENY, stale, mode, listener),
                        (Refuse, OUTCOME_DENIED)
                    );
                    assert_eq!(
                        verdict(ACTION_OBSERVE, stale, mode, listener),
                        (Pass, OUTCOME_OBSERVED)
                    );
                    assert_eq!(verdict(0, stale, mode, listener), (Pass, 0));
                    assert_eq!(verdict(99, stale, mode, listener), (Pass, 0));
                }
            }
        }
        assert_eq!(
            verdict(ACTION_REDIRECT, false, FAIL_OPEN, true),
            (Redirect, OUTCOME_REDIRECTED)
        );
        assert_eq!(
            verdict(ACTION_REDIRECT, false, FAIL_CLOSED, true),
            (Redirect, OUTCOME_REDIRECTED)
        );
        assert_eq!(
            verdict(ACTION_REDIRECT, false, FAIL_OPEN, false),
            (Pass, OUTCOME_NO_LISTENER)
        );
        assert_eq!(
            verdict(ACTION_REDIRECT, true, FAIL_OPEN, true),
            (Pass, OUTCOME_BYPASSED)
        );
        assert_eq!(
            verdict(ACTION_REDIRECT, true, FAIL_OPEN, false),
            (Pass, OUTCOME_BYPASSED)
        );
        assert_eq!(
            verdict(ACTION_REDIRECT, true, FAIL_CLOSED, true),
            (Refuse, OUTCOME_REFUSED)
        );
        assert_eq!(
            verdict(ACTION_REDIRECT, true, FAIL_CLOSED, false),
            (Refuse, OUTCOME_REFUSED)
        );
    }

    #[test]
    fn listener_choice_follows_the_dialed_family() {
        let mut w = WorkloadValue {
            workload_id: 1,
            listener_port: 15001,
            _pad0: 0,
            listener_v4: [127, 0, 0, 1],
            listener_v6: [0; 16],
            _pad1: 0,
            listener_netns_cookie: 0,
        };
        let v4 = v4_mapped([10, 0, 0, 1]);
        let mut v6 = [0u8; 16];
        v6[0] = 0xfd;
        v6[15] = 1;
        assert!(has_listener(&w, AF_INET, &v4));
        assert!(
            has_listener(&w, AF_INET6, &v4),
            "v4-mapped goes to the IPv4 listener"
        );
        assert!(!has_listener(&w, AF_INET6, &v6), "no IPv6 listener");
        w.listener_v6[15] = 1;
        assert!(has_listener(&w, AF_INET6, &v6));
        w.listener_port = 0;
        assert!(!has_listener(&w, AF_INET, &v4), "port 0: no listener yet");
        w.listener_port = 15001;
        w.listener_v4 = [0; 4];
        assert!(!has_listener(&w, AF_INET, &v4));
    }

    #[test]
    fn heartbeat_staleness() {
        assert!(heartbeat_stale(0, 5, 10), "never written is stale");
        assert!(!heartbeat_stale(100, 105, 10));
        assert!(
            !heartbeat_stale(100, 110, 10),
            "exactly at the limit is fresh"
        );
        assert!(heartbeat_stale(100, 111, 10));
        assert!(
            !heartbeat_stale(100, 50, 10),
            "clock behind the beat is fresh"
        );
    }
}
