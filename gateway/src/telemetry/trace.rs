//! W3C Trace Context (`traceparent`): requests that arrive without a valid
//! one get a fresh one, so the access log line and the upstream's own logs
//! share a trace id. A valid one is passed on unchanged: the gateway does
//! not export spans, so naming itself as the parent would break the chain.

use hyper::header::HeaderValue;

/// Whether `v` is a `traceparent` this gateway can pass on: version `00` in
/// its exact form, or a later version whose first fields have that form
/// (the spec asks to parse those by the version-00 rules).
pub fn is_valid(v: &str) -> bool {
    let b = v.as_bytes();
    if b.len() < 55 || (b.len() > 55 && (b[0..2] == *b"00" || b[55] != b'-')) {
        return false;
    }
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zero = |s: &[u8]| s.iter().all(|c| *c == b'0');
    let (version, trace, parent, flags) = (&b[0..2], &b[3..35], &b[36..52], &b[53..55]);
    b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(version)
        && version != b"ff"
        && hex(trace)
        && !zero(trace)
        && hex(parent)
        && !zero(parent)
        && hex(flags)
}

/// Length of a version-00 `traceparent`.
const LEN: usize = 55;

/// A version-00 `traceparent` from 24 random bytes (16 for the trace id,
/// 8 for the parent id), not sampled: no span of ours is recorded.
/// Written into a fixed array: it is made for every request without one.
pub fn from_random(random: [u8; 24]) -> [u8; LEN] {
    let mut ids = random;
    // All-zero ids are invalid; make the (astronomically unlikely) case valid.
    if ids[..16].iter().all(|b| *b == 0) {
        ids[15] = 1;
    }
    if ids[16..].iter().all(|b| *b == 0) {
        ids[23] = 1;
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = *b"00-________________________________-________________-00";
    // Trace id hex at 3..35, parent id hex at 36..52.
    for (i, b) in ids.iter().enumerate() {
        let at = if i < 16 { 3 + 2 * i } else { 36 + 2 * (i - 16) };
        out[at] = HEX[usize::from(b >> 4)];
        out[at + 1] = HEX[usize::from(b & 0xf)];
    }
    out
}

/// A fresh `traceparent`. Ids come from a per-thread generator seeded once
/// from the OS: W3C asks for random ids, not secret ones, and a system call
/// per request showed in the api gate's profile.
pub fn generate() -> Option<HeaderValue> {
    let mut random = [0u8; 24];
    for chunk in random.chunks_mut(8) {
        chunk.copy_from_slice(&random_u64().to_le_bytes());
    }
    // Lowercase hex and dashes: always a valid header value.
    HeaderValue::from_bytes(&from_random(random)).ok()
}

/// A random number from the per-thread generator (ids, weighted picks):
/// not for secrets.
pub fn random_u64() -> u64 {
    thread_local! {
        static STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed());
    }
    STATE.with(|s| {
        // wyrand: a 64-bit generator with good statistical quality.
        let x = s.get().wrapping_add(0xa076_1d64_78bd_642f);
        s.set(x);
        let t = u128::from(x) * u128::from(x ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A per-thread seed from the OS; without one, the clock and thread still
/// make ids that correlate one request's log lines.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_ok() {
        return u64::from_le_bytes(b);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let thread = std::thread::current().id();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&thread, &mut h);
    nanos ^ std::hash::Hasher::finish(&h)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OK: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn validates_by_the_w3c_rules() {
        assert!(is_valid(OK));
        assert!(is_valid(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        // A later version may carry more fields after a dash.
        assert!(is_valid(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(!is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn generated_ones_are_valid_and_differ() {
        let text = |r| String::from_utf8(from_random(r).to_vec()).unwrap();
        assert_eq!(
            text([0xab; 24]),
            "00-abababababababababababababababab-abababababababab-00"
        );
        // Each byte in its place: the trace id's 16, then the parent's 8.
        let counting: [u8; 24] = std::array::from_fn(|i| (i as u8).wrapping_mul(17));
        assert_eq!(
            text(counting),
            "00-00112233445566778899aabbccddeeff-1021324354657687-00"
        );
        assert!(is_valid(&text([0; 24])), "zero ids are avoided");
        let many: std::collections::HashSet<String> = (0..1000)
            .map(|_| generate().unwrap().to_str().unwrap().to_string())
            .collect();
        assert_eq!(many.len(), 1000, "no repeats");
        assert!(many.iter().all(|t| is_valid(t)));
        // Threads do not share a sequence.
        let other = std::thread::spawn(generate).join().unwrap().unwrap();
        assert!(!many.contains(other.to_str().unwrap()));
    }
}
