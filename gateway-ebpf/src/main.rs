//! trigate's kernel side.
//!
//! * `connect4`/`connect6` decide, per `connect()` from a process under the
//!   attach cgroup, whether the destination is one trigate handles and the
//!   caller an enrolled workload; then redirect (rewrite to the workload's
//!   listener and record the original), deny (EPERM) or just count.
//! * `sock_ops` files the record under the client's 4-tuple once the
//!   connection is established, which is what the daemon sees on accept.
//! * `getpeername4`/`getpeername6` give the application back the address it
//!   dialed, so redirection is invisible to it.
//!
//! Every key and value type comes from `gateway-common`.
#![no_std]
#![no_main]

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::{bpf_sock, BPF_NOEXIST, BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB},
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_netns_cookie,
        bpf_get_socket_cookie, bpf_ktime_get_ns,
    },
    macros::{cgroup_sock_addr, map, sock_ops},
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, LruHashMap, PerCpuHashMap},
    programs::{SockAddrContext, SockOpsContext},
    EbpfContext,
};
use gateway_common::{
    dest_prefix_len, has_listener, heartbeat_stale, v4_mapped, verdict, CounterKey, DestKey,
    DestValue, OrigRecord, Settings, TupleKey, Verdict, WorkloadValue, ACTION_REDIRECT, AF_INET,
    AF_INET6, MAX_CGROUP_DEPTH, MAX_COUNTERS, MAX_DESTINATIONS, MAX_ENROLLED, MAX_PENDING,
};

/// Return values of cgroup sock_addr programs.
const ALLOW: i32 = 1;
/// connect() fails with EPERM.
const REJECT: i32 = 0;
const IPPROTO_TCP: u32 = 6;

#[map(name = "DESTINATIONS")]
static DESTINATIONS: LpmTrie<DestKey, DestValue> = LpmTrie::with_max_entries(MAX_DESTINATIONS, 0);

#[map(name = "ENROLL_CGROUP")]
static ENROLL_CGROUP: HashMap<u64, WorkloadValue> = HashMap::with_max_entries(MAX_ENROLLED, 0);

#[map(name = "ENROLL_NETNS")]
static ENROLL_NETNS: HashMap<u64, WorkloadValue> = HashMap::with_max_entries(MAX_ENROLLED, 0);

/// Socket cookie → original destination; read by sock_ops and getpeername.
#[map(name = "ORIG_BY_COOKIE")]
static ORIG_BY_COOKIE: LruHashMap<u64, OrigRecord> = LruHashMap::with_max_entries(MAX_PENDING, 0);

/// Listener netns + client address/port → original destination; the daemon
/// looks up and deletes in one syscall on accept.
#[map(name = "ORIG_BY_TUPLE")]
static ORIG_BY_TUPLE: LruHashMap<TupleKey, OrigRecord> =
    LruHashMap::with_max_entries(MAX_PENDING, 0);

#[map(name = "SETTINGS")]
static SETTINGS: Array<Settings> = Array::with_max_entries(1, 0);

/// CLOCK_MONOTONIC ns of the daemon's last heartbeat.
#[map(name = "HEARTBEAT")]
static HEARTBEAT: Array<u64> = Array::with_max_entries(1, 0);

#[map(name = "COUNTERS")]
static COUNTERS: PerCpuHashMap<CounterKey, u64> = PerCpuHashMap::with_max_entries(MAX_COUNTERS, 0);

#[cgroup_sock_addr(connect4)]
pub fn trigate_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the verifier guarantees ctx points at a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP {
        return ALLOW;
    }
    let addr = v4_mapped(sa.user_ip4.to_ne_bytes());
    let port = sa.user_port as u16; // network byte order in the low 16 bits
    match decide(&ctx, sa.sk_mark(), addr, port, AF_INET) {
        Decision::Allow => ALLOW,
        Decision::Reject => REJECT,
        Decision::Redirect(w) => {
            sa.user_ip4 = u32::from_ne_bytes(w.listener_v4);
            sa.user_port = u32::from(w.listener_port.to_be());
            ALLOW
        }
    }
}

#[cgroup_sock_addr(connect6)]
pub fn trigate_connect6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in connect4.
    let sa = unsafe { &mut *ctx.sock_addr };
    if sa.protocol != IPPROTO_TCP {
        return ALLOW;
    }
    let addr = ip6_bytes(sa.user_ip6);
    let port = sa.user_port as u16;
    match decide(&ctx, sa.sk_mark(), addr, port, AF_INET6) {
        Decision::Allow => ALLOW,
        Decision::Reject => REJECT,
        Decision::Redirect(w) => {
            // A v4-mapped destination stays IPv4 on the wire: send it to the
            // IPv4 listener through its mapped address.
            let target = if gateway_common::v4_unmapped(&addr).is_some() {
                v4_mapped(w.listener_v4)
            } else {
                w.listener_v6
            };
            sa.user_ip6 = ip6_words(target);
            sa.user_port = u32::from(w.listener_port.to_be());
            ALLOW
        }
    }
}

#[sock_ops]
pub fn trigate_sock_ops(ctx: SockOpsContext) -> u32 {
    if ctx.op() != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB {
        return 1;
    }
    // SAFETY: sock_ops programs may call bpf_get_socket_cookie on their ctx.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: the value is only read; LRU eviction cannot free it under us
    // for the duration of this program (RCU).
    let Some(rec) = (unsafe { ORIG_BY_COOKIE.get(cookie) }) else {
        return 1;
    };
    // Every ctx field is read once, unconditionally and volatile: the
    // verifier rejects loads through a ctx pointer the compiler offset and
    // shared between branches ("dereference of modified ctx ptr").
    let ops = ctx.ops;
    // SAFETY: ops is the program's ctx; these fields are readable in sock_ops.
    let (family, ip4, ip6, port) = unsafe {
        (
            read_volatile(&(*ops).family),
            read_volatile(&(*ops).local_ip4),
            [
                read_volatile(&(*ops).local_ip6[0]),
                read_volatile(&(*ops).local_ip6[1]),
                read_volatile(&(*ops).local_ip6[2]),
                read_volatile(&(*ops).local_ip6[3]),
            ],
            read_volatile(&(*ops).local_port),
        )
    };
    let local = if family == u32::from(AF_INET) {
        v4_mapped(ip4.to_ne_bytes())
    } else {
        ip6_bytes(ip6)
    };
    // local_port is in host byte order here (remote_port is not).
    let key = TupleKey::new(rec.listener_netns_cookie, local, port as u16);
    let _ = ORIG_BY_TUPLE.insert(key, rec, 0);
    1
}

#[cgroup_sock_addr(getpeername4)]
pub fn trigate_getpeername4(ctx: SockAddrContext) -> i32 {
    // SAFETY: the verifier guarantees ctx points at a valid bpf_sock_addr.
    let sa = unsafe { &mut *ctx.sock_addr };
    if let Some(rec) = original_of(&ctx) {
        if let Some(v4) = gateway_common::v4_unmapped(&rec.orig_addr) {
            sa.user_ip4 = u32::from_ne_bytes(v4);
            sa.user_port = u32::from(rec.orig_port.to_be());
        }
    }
    ALLOW
}

#[cgroup_sock_addr(getpeername6)]
pub fn trigate_getpeername6(ctx: SockAddrContext) -> i32 {
    // SAFETY: as in getpeername4.
    let sa = unsafe { &mut *ctx.sock_addr };
    if let Some(rec) = original_of(&ctx) {
        sa.user_ip6 = ip6_words(rec.orig_addr);
        sa.user_port = u32::from(rec.orig_port.to_be());
    }
    ALLOW
}

enum Decision {
    Allow,
    Reject,
    Redirect(WorkloadValue),
}

/// The one decision both connect programs share. Cheapest checks first: a
/// destination miss (almost every connect) costs two trie lookups.
#[inline(always)]
fn decide(ctx: &SockAddrContext, mark: u32, addr: [u8; 16], port_be: u16, family: u16) -> Decision {
    let Some(dest) = lookup_destination(addr, port_be) else {
        return Decision::Allow;
    };
    let Some(settings) = SETTINGS.get(0) else {
        return Decision::Allow;
    };
    // Loop avoidance: the daemon's own sockets carry its mark, and nothing
    // the daemon process or its cgroup does is redirected back to itself.
    if settings.mark != 0 && mark == settings.mark {
        return Decision::Allow;
    }
    if ctx.tgid() == settings.daemon_tgid {
        return Decision::Allow;
    }
    // SAFETY: helper without arguments, allowed in cgroup sock_addr programs.
    let cgroup_id = unsafe { bpf_get_current_cgroup_id() };
    if cgroup_id == settings.daemon_cgroup_id {
        return Decision::Allow;
    }
    let Some(workload) = enrolled_workload(ctx, cgroup_id) else {
        return Decision::Allow;
    };
    let stale = dest.action == ACTION_REDIRECT && {
        let beat = HEARTBEAT.get(0).copied().unwrap_or(0);
        // SAFETY: helper without arguments.
        let now = unsafe { bpf_ktime_get_ns() };
        heartbeat_stale(beat, now, settings.stale_after_ns)
    };
    let listener = has_listener(workload, family, &addr);
    let (verdict, outcome) = verdict(dest.action, stale, settings.fail_mode, listener);
    if outcome != 0 {
        count(workload.workload_id, dest.dest_id, outcome);
    }
    match verdict {
        Verdict::Pass => Decision::Allow,
        Verdict::Refuse => Decision::Reject,
        Verdict::Redirect => {
            record(
                ctx,
                workload,
                dest.dest_id,
                addr,
                port_be,
                family,
                cgroup_id,
            );
            Decision::Redirect(*workload)
        }
    }
}

/// Exact port first, then the any-port entry.
#[inline(always)]
fn lookup_destination(addr: [u8; 16], port_be: u16) -> Option<&'static DestValue> {
    let full = dest_prefix_len(128);
    let exact = Key::new(
        full,
        DestKey {
            port: port_be.to_ne_bytes(),
            addr,
        },
    );
    if let Some(v) = DESTINATIONS.get(&exact) {
        return Some(v);
    }
    let any = Key::new(full, DestKey { port: [0, 0], addr });
    DESTINATIONS.get(&any)
}

/// Netns enrollment first (a pod is one netns), then the deepest enrolled
/// cgroup among the caller's ancestors (containers live in child cgroups of
/// the pod cgroup).
#[inline(always)]
fn enrolled_workload(ctx: &SockAddrContext, cgroup_id: u64) -> Option<&'static WorkloadValue> {
    // SAFETY: bpf_get_netns_cookie is allowed on a sock_addr ctx.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    // SAFETY: read-only access to a map value under RCU.
    if let Some(w) = unsafe { ENROLL_NETNS.get(netns) } {
        return Some(w);
    }
    // SAFETY: as above.
    if let Some(w) = unsafe { ENROLL_CGROUP.get(cgroup_id) } {
        return Some(w);
    }
    let mut found = None;
    let mut level = 0;
    while level < MAX_CGROUP_DEPTH {
        // SAFETY: helper with a plain integer argument.
        let id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
        if id == 0 || id == cgroup_id {
            break;
        }
        // SAFETY: as above.
        if let Some(w) = unsafe { ENROLL_CGROUP.get(id) } {
            found = Some(w);
        }
        level += 1;
    }
    found
}

#[inline(always)]
fn record(
    ctx: &SockAddrContext,
    workload: &WorkloadValue,
    dest_id: u32,
    addr: [u8; 16],
    port_be: u16,
    family: u16,
    cgroup_id: u64,
) {
    // SAFETY: allowed on a sock_addr ctx.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let rec = OrigRecord {
        orig_addr: addr,
        orig_port: u16::from_be(port_be),
        family,
        dest_id,
        workload_id: workload.workload_id,
        tgid: ctx.tgid(),
        uid: ctx.uid(),
        gid: ctx.gid(),
        cgroup_id,
        listener_netns_cookie: workload.listener_netns_cookie,
        comm: ctx.command().unwrap_or([0; 16]),
    };
    let _ = ORIG_BY_COOKIE.insert(cookie, rec, 0);
}

#[inline(always)]
fn original_of(ctx: &SockAddrContext) -> Option<&'static OrigRecord> {
    // SAFETY: allowed on a sock_addr ctx.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: read-only access to a map value under RCU.
    unsafe { ORIG_BY_COOKIE.get(cookie) }
}

#[inline(always)]
fn count(workload_id: u32, dest_id: u32, outcome: u32) {
    let key = CounterKey::new(workload_id, dest_id, outcome);
    if let Some(n) = COUNTERS.get_ptr_mut(key) {
        // SAFETY: per-CPU value, so no other CPU writes it concurrently.
        unsafe { *n += 1 };
    } else {
        let _ = COUNTERS.insert(key, 1, u64::from(BPF_NOEXIST));
    }
}

#[inline(always)]
fn ip6_bytes(words: [u32; 4]) -> [u8; 16] {
    let mut out = [0u8; 16];
    let mut i = 0;
    while i < 4 {
        let b = words[i].to_ne_bytes();
        out[i * 4] = b[0];
        out[i * 4 + 1] = b[1];
        out[i * 4 + 2] = b[2];
        out[i * 4 + 3] = b[3];
        i += 1;
    }
    out
}

#[inline(always)]
fn ip6_words(bytes: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
        u32::from_ne_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
        u32::from_ne_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        u32::from_ne_bytes([bytes[12], bytes[13], bytes[14], bytes[15]]),
    ]
}

trait SockMark {
    fn sk_mark(&self) -> u32;
}

impl SockMark for aya_ebpf::bindings::bpf_sock_addr {
    /// The `SO_MARK` of the connecting socket.
    #[inline(always)]
    fn sk_mark(&self) -> u32 {
        // SAFETY: `sk` is always a valid socket pointer in sock_addr programs.
        let sk: *mut bpf_sock = unsafe { self.__bindgen_anon_1.sk };
        if sk.is_null() {
            return 0;
        }
        // SAFETY: checked non-null; the verifier allows reading bpf_sock.mark.
        unsafe { (*sk).mark }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
