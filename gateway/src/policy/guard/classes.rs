//! Byte classes as bit masks, 64 bytes at a time: bit `i` of a mask says
//! whether byte `at + i` is in the class. Computed 16 bytes per SIMD step
//! (SSE2 on x86-64, NEON on aarch64, scalar lanes elsewhere, chosen by
//! `wide`); the run and word-start walks then step from one set bit to the
//! next instead of testing every byte with a table lookup and a branch.
//!
//! A class is a function of 16 lanes giving all ones in the lanes it holds
//! ([`digit`], [`word`]…); callers pass them, or closures combining them, to
//! [`mask`] and [`masks`], where they inline.
use std::ops::Range;

use wide::u8x16;

/// The mask of `class` over `hay[at..at + 64]`; bytes past the end read as
/// 0, which no class holds.
pub(super) fn mask(hay: &[u8], at: usize, class: impl Fn(u8x16) -> u8x16) -> u64 {
    masks(hay, at, |v| [class(v)])[0]
}

/// The masks of `K` classes over `hay[at..at + 64]`, from one load.
pub(super) fn masks<const K: usize>(
    hay: &[u8],
    at: usize,
    classes: impl Fn(u8x16) -> [u8x16; K],
) -> [u64; K] {
    if let Some(block) = hay.get(at..at + 64) {
        return block_masks(block, classes);
    }
    let mut block = [0u8; 64];
    let bytes = hay.get(at..).unwrap_or_default();
    block[..bytes.len()].copy_from_slice(bytes);
    block_masks(&block, classes)
}

/// The masks over 64 bytes.
fn block_masks<const K: usize>(block: &[u8], classes: impl Fn(u8x16) -> [u8x16; K]) -> [u64; K] {
    let mut masks = [0u64; K];
    for (i, lanes) in block.chunks_exact(16).enumerate() {
        let lanes = u8x16::new(lanes.try_into().unwrap_or([0; 16]));
        for (mask, class) in masks.iter_mut().zip(classes(lanes)) {
            *mask |= u64::from(class.to_bitmask()) << (16 * i);
        }
    }
    masks
}

/// Maximal runs of `run` bytes in `hay[from..]` that hold at least `min`
/// bytes of `counted` (a subclass of `run`), and at least one, in order; a
/// run that starts before `from` is taken from `from`. The walks of the
/// scanner share their blocks ([`RunWalk`]); this one walks one class.
#[cfg(test)]
pub(super) fn for_each_run(
    hay: &[u8],
    from: usize,
    min: usize,
    classes: impl Fn(u8x16) -> [u8x16; 2],
    mut visit: impl FnMut(Range<usize>),
) {
    let mut walk = RunWalk::new(min);
    let mut base = from;
    while base < hay.len() {
        let [run, counted] = masks(hay, base, &classes);
        walk.block(base, run, counted, &mut visit);
        base += 64;
    }
    walk.finish(hay.len(), &mut visit);
}

/// A walk over the maximal runs of one class that hold at least `min`
/// bytes of a subclass, fed one 64-byte block's masks at a time, so that
/// walks over several classes share the blocks' loads and classes (the
/// digits are in both the number and the base64 class). Only runs at
/// least `min` long, or that reach a block's end, get a step of their
/// own: the short runs of ordinary text are skipped with the bits of
/// their block.
pub(super) struct RunWalk {
    min: usize,
    /// The run that reached the previous block's end: its start, and its
    /// counted bytes so far.
    open: Option<(usize, usize)>,
}

impl RunWalk {
    pub(super) fn new(min: usize) -> RunWalk {
        RunWalk {
            min: min.max(1),
            open: None,
        }
    }

    /// The block at `base` (blocks follow one another from the first,
    /// where a run starts, to the last): its bytes in the run class and in
    /// the counted class, bits past the text's end clear.
    #[inline(always)]
    pub(super) fn block(
        &mut self,
        base: usize,
        mut run: u64,
        counted: u64,
        visit: &mut impl FnMut(Range<usize>),
    ) {
        let min = self.min;
        let count = |bits: u64| (counted & bits).count_ones() as usize;
        if let Some((start, so_far)) = self.open {
            let len = run.trailing_ones() as usize;
            let so_far = so_far + count(low_bits(len));
            if len == 64 {
                self.open = Some((start, so_far));
                return;
            }
            self.open = None;
            if so_far >= min {
                visit(start..base + len);
            }
            run &= !low_bits(len);
        }
        if run >> 63 == 1 {
            let tail = 64 - run.leading_ones() as usize;
            self.open = Some((base + tail, count(!low_bits(tail))));
            run &= low_bits(tail);
        }
        // Bit 0 starts a run here: one that came from the previous block
        // was `open` and is cleared.
        let mut long = run & !(run << 1) & long_starts(run, min);
        while long != 0 {
            let i = long.trailing_zeros() as usize;
            long &= long - 1;
            let len = (run >> i).trailing_ones() as usize;
            if count(low_bits(len) << i) >= min {
                visit(base + i..base + i + len);
            }
        }
    }

    /// The run that reached the last block's end, at the text's `end`.
    pub(super) fn finish(self, end: usize, visit: &mut impl FnMut(Range<usize>)) {
        if let Some((start, so_far)) = self.open {
            if so_far >= self.min {
                visit(start..end);
            }
        }
    }
}

/// The bits `i` of `mask` with `min` set bits from `i` on (bits past 63
/// read as clear): each step doubles the length the bits vouch for.
fn long_starts(mask: u64, min: usize) -> u64 {
    if min > 64 {
        return 0;
    }
    let (mut long, mut have) = (mask, 1);
    while have < min {
        let step = (min - have).min(have);
        long &= long >> step;
        have += step;
    }
    long
}

/// The low `n` bits set, for `n` up to 64.
pub(super) fn low_bits(n: usize) -> u64 {
    u64::MAX.checked_shr(64 - n as u32).unwrap_or(0)
}

/// Lanes in `lo..=hi`: one wrapping and one saturating subtraction.
fn within(v: u8x16, lo: u8, hi: u8) -> u8x16 {
    (v - u8x16::splat(lo))
        .saturating_sub(u8x16::splat(hi - lo))
        .simd_eq(u8x16::ZERO)
}

fn byte(v: u8x16, b: u8) -> u8x16 {
    v.simd_eq(u8x16::splat(b))
}

/// ASCII capital letters.
pub(super) fn upper(v: u8x16) -> u8x16 {
    within(v, b'A', b'Z')
}

/// ASCII digits.
pub(super) fn digit(v: u8x16) -> u8x16 {
    within(v, b'0', b'9')
}

/// The bytes the ASCII `\b` counts as word bytes: letters, digits, `_`.
pub(super) fn word(v: u8x16) -> u8x16 {
    // Setting bit 5 folds A-Z onto a-z and moves nothing else there.
    digit(v) | within(v | u8x16::splat(0x20), b'a', b'z') | byte(v, b'_')
}

/// The bytes of a number run ([`super::runs::Runs::numbers`]): digits,
/// space, `.`, `-`, `(`, `)`, `+`.
pub(super) fn number(v: u8x16) -> u8x16 {
    digit(v)
        | byte(v, b' ')
        | byte(v, b'.')
        | byte(v, b'-')
        | byte(v, b'(')
        | byte(v, b')')
        | byte(v, b'+')
}

/// Both base64 alphabets: letters, digits, `+`, `/`, `_`, `-`.
pub(super) fn base64(v: u8x16) -> u8x16 {
    word(v) | byte(v, b'+') | byte(v, b'/') | byte(v, b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(hay: &[u8], at: usize, class: impl Fn(u8) -> bool) -> u64 {
        (0..64)
            .filter(|i| hay.get(at + i).is_some_and(|&b| class(b)))
            .fold(0, |mask, i| mask | 1 << i)
    }

    #[test]
    fn every_byte_value_in_every_lane_is_classed_as_its_definition() {
        let every: Vec<u8> = (0..=255).collect();
        let is_word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        for at in [0, 1, 17, 64, 100, 200, 250, 256] {
            assert_eq!(
                mask(&every, at, digit),
                naive(&every, at, |b| b.is_ascii_digit())
            );
            assert_eq!(mask(&every, at, word), naive(&every, at, is_word));
            assert_eq!(
                mask(&every, at, number),
                naive(&every, at, |b| b"0123456789 .-()+".contains(&b))
            );
            assert_eq!(
                mask(&every, at, base64),
                naive(&every, at, |b| is_word(b) || b"+/-".contains(&b))
            );
            assert_eq!(
                mask(&every, at, upper),
                naive(&every, at, |b| b.is_ascii_uppercase())
            );
            assert_eq!(
                masks(&every, at, |v| [digit(v), number(v)]),
                [mask(&every, at, digit), mask(&every, at, number)]
            );
        }
    }

    #[test]
    fn bytes_past_the_end_are_in_no_class() {
        let hay = b"a1_ +";
        assert_eq!(mask(hay, 0, base64), 0b10111);
        assert_eq!(mask(hay, 3, word), 0);
        assert_eq!(mask(hay, 9, word), 0);
    }

    /// Maximal runs of word bytes holding `min` digits or more, byte by
    /// byte.
    fn naive_runs(hay: &[u8], from: usize, min: usize) -> Vec<Range<usize>> {
        let mut runs = Vec::new();
        let mut at = from;
        while at < hay.len() {
            let start = at;
            while at < hay.len() && (hay[at].is_ascii_alphanumeric() || hay[at] == b'_') {
                at += 1;
            }
            let digits = hay[start..at].iter().filter(|b| b.is_ascii_digit()).count();
            if digits >= min.max(1) {
                runs.push(start..at);
            }
            at = at.max(start + 1);
        }
        runs
    }

    /// Every run a byte loop finds, for runs of every length around the
    /// 64-byte blocks (up to several blocks long) with few or many counted
    /// bytes, from every start, for minimums up to past a block.
    #[test]
    fn runs_equal_a_byte_loop() {
        let mut next = crate::policy::guard::tests::xorshift(0x9E37_79B9_7F4A_7C15u64);
        for case in 0..300 {
            let mut hay = Vec::new();
            let len = next(300);
            while hay.len() < len {
                let run = [1, 2, 5, 31, 32, 63, 64, 65, 130][next(9)];
                // All digits, or one letter in `sparse`.
                let sparse = next(4) + 1;
                hay.extend((0..run).map(|i| if i % sparse == 0 { b'7' } else { b'a' }));
                hay.extend(std::iter::repeat_n(b' ', next(3) + 1));
            }
            for from in (0..=hay.len()).step_by(5) {
                for min in [0, 1, 2, 4, 32, 64, 65, 100] {
                    let mut got = Vec::new();
                    for_each_run(&hay, from, min, |v| [word(v), digit(v)], |r| got.push(r));
                    assert_eq!(
                        got,
                        naive_runs(&hay, from, min),
                        "case {case} from {from} min {min}"
                    );
                }
            }
        }
    }

    #[test]
    fn long_starts_vouch_for_min_bits() {
        for mask in [
            0u64,
            1,
            0b1110_1111,
            u64::MAX,
            u64::MAX << 3,
            0xF0F0_FF00_0FFF_0001,
        ] {
            for min in 1..=65 {
                let want = (0..64)
                    .filter(|&i| i + min <= 64 && (i..i + min).all(|b| mask >> b & 1 == 1))
                    .fold(0u64, |m, i| m | 1 << i);
                assert_eq!(long_starts(mask, min), want, "{mask:#x} {min}");
            }
        }
    }
}
