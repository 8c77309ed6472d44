//! Scanning JSON string text eight bytes at a time: shared by the access
//! log (does a value need escaping?) and the answer skim (where does a
//! string end?). Most strings need neither escapes nor a byte-by-byte look.

/// The index of the first byte at or after `from` that a JSON string
/// cannot hold as it is (a quote, a backslash, a control character: RFC
/// 8259 §7), or `bytes.len()` when there is none.
pub fn find_stop(bytes: &[u8], mut from: usize) -> usize {
    while let Some(word) = bytes.get(from..from + 8) {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let stops = stops(u64::from_le_bytes(word));
        if stops != 0 {
            return from + stops.trailing_zeros() as usize / 8;
        }
        from += 8;
    }
    match bytes.get(from..) {
        Some(rest) => rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
            .map_or(bytes.len(), |at| from + at),
        None => bytes.len(),
    }
}

/// The high bit of each of the eight bytes (little-endian) that is a
/// quote, a backslash or below 0x20. Bits above the lowest may be wrong
/// (a borrow runs on); the lowest is exact: it marks the first such byte.
fn stops(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |v: u64, n: u64| v.wrapping_sub(ONES * n) & !v & HIGHS;
    below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1)
        | below(word, 0x20)
}

#[cfg(test)]
mod tests {
    use super::find_stop;

    /// Against a byte-by-byte scan: every byte value at every position of
    /// texts of every length up to 20, from every start.
    #[test]
    fn finds_the_first_stop_as_a_byte_by_byte_scan_does() {
        let slow = |bytes: &[u8], from: usize| {
            (from..bytes.len())
                .find(|&i| matches!(bytes[i], b'"' | b'\\' | 0..=0x1f))
                .unwrap_or(bytes.len())
        };
        for len in 0..=20usize {
            for at in 0..len {
                for b in 0..=255u8 {
                    // A plain text, and one with a stop after `at` too (the
                    // borrow of a stop must not hide an earlier one).
                    let mut text = vec![b'a'; len];
                    text[at] = b;
                    let mut twice = vec![0xff; len];
                    twice[at] = b;
                    if at + 1 < len {
                        twice[at + 1] = 0;
                    }
                    for t in [&text, &twice] {
                        for from in 0..=len {
                            assert_eq!(find_stop(t, from), slow(t, from), "{t:?} from {from}");
                        }
                    }
                }
            }
        }
    }
}
