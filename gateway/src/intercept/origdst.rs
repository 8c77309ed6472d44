//! Where an accepted connection was really going, and who opened it.
//!
//! First the eBPF record (one `BPF_MAP_LOOKUP_AND_DELETE_ELEM`: the record is
//! consumed as it is read, so the table only holds connections not yet
//! accepted); then `SO_ORIGINAL_DST`, which answers for connections an
//! iptables `REDIRECT` rule sent (kernels or setups without the eBPF path).
use std::{
    io,
    mem::size_of,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::AsRawFd,
};

use aya::maps::MapData;
use gateway_common::{v4_mapped, v4_unmapped, OrigRecord, TupleKey};

/// The ORIG_BY_TUPLE map, used only through lookup-and-delete.
pub struct OrigTable {
    map: MapData,
}

impl OrigTable {
    pub fn new(map: MapData) -> Self {
        OrigTable { map }
    }

    /// Takes the record for an accepted connection, if the kernel made one.
    pub fn take(&self, key: &TupleKey) -> io::Result<Option<OrigRecord>> {
        const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
        #[repr(C)]
        struct Attr {
            map_fd: u32,
            _pad: u32,
            key: u64,
            value: u64,
            flags: u64,
        }
        let mut value = std::mem::MaybeUninit::<OrigRecord>::uninit();
        let attr = Attr {
            map_fd: super::map_fd(&self.map) as u32,
            _pad: 0,
            key: key as *const TupleKey as u64,
            value: value.as_mut_ptr() as u64,
            flags: 0,
        };
        // SAFETY: attr is a valid bpf_attr prefix for this command; key and
        // value point at buffers of exactly the map's key and value size.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_ELEM,
                &attr as *const Attr,
                size_of::<Attr>() as u32,
            )
        };
        if rc == 0 {
            // SAFETY: the kernel filled the whole value on success.
            return Ok(Some(unsafe { value.assume_init() }));
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOENT) {
            Ok(None)
        } else {
            Err(err)
        }
    }
}

/// The key sock_ops filed the record under: the listener's netns and the
/// client's address and port as the accepted socket sees them.
pub fn tuple_key(listener_netns_cookie: u64, peer: SocketAddr) -> TupleKey {
    TupleKey::new(listener_netns_cookie, ip_key(peer.ip()), peer.port())
}

/// 16-byte form of an address: IPv4 (and v4-mapped IPv6) as v4-mapped.
pub fn ip_key(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4_mapped(v4.octets()),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The address a 16-byte key stands for: IPv4 when it is v4-mapped.
pub fn ip_from_key(key: [u8; 16]) -> IpAddr {
    match v4_unmapped(&key) {
        Some(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        None => IpAddr::V6(Ipv6Addr::from(key)),
    }
}

/// The comm field as text (NUL-padded in the record).
pub fn comm(rec: &OrigRecord) -> String {
    let end = rec
        .comm
        .iter()
        .position(|b| *b == 0)
        .unwrap_or(rec.comm.len());
    String::from_utf8_lossy(&rec.comm[..end]).into_owned()
}

/// `SO_ORIGINAL_DST` of a socket an iptables NAT rule redirected; `None`
/// when no NAT happened (the kernel reports no entry, or the local address).
pub fn so_original_dst(sock: &impl AsRawFd, local: SocketAddr) -> Option<SocketAddr> {
    const SO_ORIGINAL_DST: libc::c_int = 80;
    let fd = sock.as_raw_fd();
    let found = match local {
        SocketAddr::V4(_) => {
            // SAFETY: zeroed sockaddr_in is a valid value.
            let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: fd is a live socket; sa/len describe a sockaddr_in buffer.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_IP,
                    SO_ORIGINAL_DST,
                    (&mut sa as *mut libc::sockaddr_in).cast(),
                    &mut len,
                )
            };
            (rc == 0).then(|| {
                SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))),
                    u16::from_be(sa.sin_port),
                )
            })
        }
        SocketAddr::V6(_) => {
            // SAFETY: zeroed sockaddr_in6 is a valid value.
            let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            let mut len = size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            // SAFETY: as above, for IP6T_SO_ORIGINAL_DST (same number, SOL_IPV6).
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_IPV6,
                    SO_ORIGINAL_DST,
                    (&mut sa as *mut libc::sockaddr_in6).cast(),
                    &mut len,
                )
            };
            (rc == 0).then(|| {
                SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)),
                    u16::from_be(sa.sin6_port),
                )
            })
        }
    };
    found.filter(|orig| !same_endpoint(*orig, local))
}

fn same_endpoint(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && ip_key(a.ip()) == ip_key(b.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_normalise_ipv4_to_mapped() {
        let v4: SocketAddr = "127.0.0.1:40123".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:40123".parse().unwrap();
        assert_eq!(tuple_key(7, v4), tuple_key(7, mapped));
        assert_ne!(
            tuple_key(7, v4),
            tuple_key(8, v4),
            "netns is part of the key"
        );
        let k = tuple_key(7, v4);
        assert_eq!(k.port, 40123);
        assert_eq!(k.netns_cookie, 7);
    }

    #[test]
    fn addresses_round_trip_through_keys() {
        for s in ["10.1.2.3", "fd00::1", "::1", "0.0.0.0"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(ip_from_key(ip_key(ip)), ip);
        }
    }

    #[test]
    fn comm_stops_at_nul() {
        let mut rec = OrigRecord {
            orig_addr: [0; 16],
            orig_port: 0,
            family: 0,
            dest_id: 0,
            workload_id: 0,
            tgid: 0,
            uid: 0,
            gid: 0,
            cgroup_id: 0,
            listener_netns_cookie: 0,
            comm: [0; 16],
        };
        rec.comm[..4].copy_from_slice(b"curl");
        assert_eq!(comm(&rec), "curl");
        rec.comm = *b"0123456789abcdef";
        assert_eq!(comm(&rec), "0123456789abcdef");
    }

    #[test]
    fn same_endpoint_ignores_the_mapping() {
        assert!(same_endpoint(
            "127.0.0.1:1".parse().unwrap(),
            "[::ffff:127.0.0.1]:1".parse().unwrap()
        ));
        assert!(!same_endpoint(
            "127.0.0.1:1".parse().unwrap(),
            "127.0.0.1:2".parse().unwrap()
        ));
    }
}
