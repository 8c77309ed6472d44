//! A fake DNS server on a test-made loopback address: answers A queries for
//! names it was told about, with a chosen TTL, and can change its answers
//! while the daemon runs (TTL refresh tests). Plain RFC 1035 over UDP.

use anyhow::{Context, Result};
use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Answers = Arc<Mutex<BTreeMap<String, (Vec<Ipv4Addr>, u32)>>>;

pub struct FakeDns {
    addr: SocketAddr,
    answers: Answers,
    queries: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeDns {
    /// Listens on `127.0.0.1:<free port>`.
    pub fn start() -> Result<Self> {
        let socket = UdpSocket::bind("127.0.0.1:0").context("binding the fake DNS server")?;
        socket.set_read_timeout(Some(Duration::from_millis(50)))?;
        let addr = socket.local_addr()?;
        let answers: Answers = Arc::default();
        let queries = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (answers, queries, stop) = (answers.clone(), queries.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                        continue;
                    };
                    queries.fetch_add(1, Ordering::Relaxed);
                    let table = answers.lock().unwrap().clone();
                    if let Some(reply) = answer(&buf[..n], &table) {
                        let _ = socket.send_to(&reply, peer);
                    }
                }
            })
        };
        Ok(Self {
            addr,
            answers,
            queries,
            stop,
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on, `name` resolves to `addrs` with `ttl` seconds.
    pub fn set(&self, name: &str, addrs: &[Ipv4Addr], ttl: u32) {
        self.answers
            .lock()
            .unwrap()
            .insert(name.to_ascii_lowercase(), (addrs.to_vec(), ttl));
    }

    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::Relaxed)
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

const TYPE_A: u16 = 1;

/// The reply to one query: the A records we know (none for other types or
/// unknown names, with NXDOMAIN for the latter). `None` for garbage.
fn answer(query: &[u8], table: &BTreeMap<String, (Vec<Ipv4Addr>, u32)>) -> Option<Vec<u8>> {
    if query.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    let mut labels = Vec::new();
    loop {
        let len = *query.get(i)? as usize;
        i += 1;
        if len == 0 {
            break;
        }
        labels.push(String::from_utf8_lossy(query.get(i..i + len)?).to_ascii_lowercase());
        i += len;
    }
    let qtype = u16::from_be_bytes([*query.get(i)?, *query.get(i + 1)?]);
    let question_end = i + 4;
    query.get(..question_end)?;
    let name = labels.join(".");
    let known = table.get(&name);
    let records: &[Ipv4Addr] = match (known, qtype) {
        (Some((addrs, _)), TYPE_A) => addrs,
        _ => &[],
    };
    let ttl = known.map(|(_, t)| *t).unwrap_or(0);

    let mut out = Vec::with_capacity(question_end + records.len() * 16);
    out.extend_from_slice(&query[..2]); // id
    let rcode = if known.is_some() { 0 } else { 3 };
    out.extend_from_slice(&[0x81, 0x80 | rcode]); // response, recursion desired+available
    out.extend_from_slice(&1u16.to_be_bytes()); // qdcount
    out.extend_from_slice(&(records.len() as u16).to_be_bytes()); // ancount
    out.extend_from_slice(&[0, 0, 0, 0]); // nscount, arcount
    out.extend_from_slice(&query[12..question_end]);
    for addr in records {
        out.extend_from_slice(&[0xc0, 12]); // pointer to the question name
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes()); // class IN
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&addr.octets());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str, qtype: u16) -> Vec<u8> {
        let mut q = vec![0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.push(0);
        q.extend_from_slice(&qtype.to_be_bytes());
        q.extend_from_slice(&1u16.to_be_bytes());
        q
    }

    #[test]
    fn answers_known_a_queries_with_the_ttl() {
        let mut t = BTreeMap::new();
        t.insert(
            "api.e2e.test".to_string(),
            (vec![Ipv4Addr::new(10, 1, 2, 3)], 7),
        );
        let r = answer(&query("API.e2e.test", TYPE_A), &t).unwrap();
        assert_eq!(&r[..2], &[0xab, 0xcd]);
        assert_eq!(u16::from_be_bytes([r[6], r[7]]), 1, "one answer");
        assert_eq!(&r[r.len() - 4..], &[10, 1, 2, 3]);
        assert_eq!(&r[r.len() - 10..r.len() - 6], &7u32.to_be_bytes());
        let aaaa = answer(&query("api.e2e.test", 28), &t).unwrap();
        assert_eq!(u16::from_be_bytes([aaaa[6], aaaa[7]]), 0, "no AAAA records");
        let unknown = answer(&query("other.test", TYPE_A), &t).unwrap();
        assert_eq!(unknown[3] & 0x0f, 3, "NXDOMAIN");
        assert!(answer(&[1, 2, 3], &t).is_none());
    }
}
