//! The run table's bitmaps (a bit a granule, [`WORDS`] words) and their summary: a bit a
//! word, so that a search jumps over the words that cannot hold what it looks for instead of
//! reading them (a block's 16 words are then two reads at most, wherever the bit lies).
//!
//! Invariants, for every word `w` of a block's bitmaps `used` and `clean` (`bit(x, w)`: word
//! `w`'s bit of the word set `x`, [`Words`]):
//!
//! - `bit(summary.used(), w) ⇔ used[w] ≠ 0`;
//! - `bit(summary.free(), w) ⇔ used[w] ≠ !0`;
//! - `bit(summary.clean(), w) ⇔ clean[w] ≠ 0`;
//! - `bit(summary.dirty(), w) ⇔ ¬(used[w] ∨ clean[w]) ≠ 0` (a free granule not clean).
//!
//! The search functions take a word mask `words` that holds at least every word with a bit
//! they look for (a summary, or [`ANY`] when none applies): exact summaries make them
//! constant time, and a mask of more words only makes them read more.

use super::WORDS;

/// A set of words of a bitmap: word `w` is bit `4 * w` (the summary keeps four masks
/// interleaved, a nibble a word, so that bringing a word up to date writes one nibble).
pub(crate) type Words = u64;
/// Every word (no summary: a search reads each word in turn, the searches' reference).
pub(crate) const ANY: Words = 0x1111_1111_1111_1111;

const _: () = assert!(WORDS * 4 == Words::BITS as usize);

/// The words of a block's bitmaps that hold used, free, clean and dirty granules (see the
/// module docs): word `w`'s nibble, bits `4 * w + k`, holds bit `k` of `[used, free, clean,
/// dirty]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct Summary(u64);

impl Summary {
    /// The words holding a used granule.
    pub(crate) fn used(self) -> Words {
        self.0 & ANY
    }

    /// The words holding a free granule.
    pub(crate) fn free(self) -> Words {
        self.0 >> 1 & ANY
    }

    /// The words holding a clean granule.
    pub(crate) fn clean(self) -> Words {
        self.0 >> 2 & ANY
    }

    /// The words holding a dirty granule (free, not clean).
    pub(crate) fn dirty(self) -> Words {
        self.0 >> 3 & ANY
    }

    /// The summary of `used` and `clean` for the words `[w0, w1]`, the other words' bits kept.
    pub(crate) fn update(
        &mut self,
        used: &[u64; WORDS],
        clean: &[u64; WORDS],
        w0: usize,
        w1: usize,
    ) {
        let mut nibbles = 0;
        for w in w0..=w1.min(WORDS - 1) {
            nibbles |= nibble(used[w], clean[w]) << (4 * w);
        }
        // The nibbles of the words [w0, w1].
        let range = (u64::MAX >> (4 * (WORDS - 1 - w1))) & (u64::MAX << (4 * w0));
        self.0 = self.0 & !range | nibbles;
    }

    /// The summary of `used` and `clean`, every word.
    pub(crate) fn of(used: &[u64; WORDS], clean: &[u64; WORDS]) -> Summary {
        let mut s = Summary::default();
        s.update(used, clean, 0, WORDS - 1);
        s
    }
}

/// How [`Bitmaps::mark`] marks granules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mark {
    /// Used (not clean): taken by a run.
    Used,
    /// Free (their clean bits kept: a used granule is never clean, so a run freed is dirty).
    Free,
    /// Clean (free granules given back).
    Clean,
}

/// A medium block's bitmaps, a bit a granule: used granules, clean ones (free and known to
/// read zero), and their [`Summary`].
#[repr(C)]
pub(crate) struct Bitmaps {
    pub(crate) summary: Summary,
    pub(crate) used: [u64; WORDS],
    pub(crate) clean: [u64; WORDS],
}

impl Bitmaps {
    /// Marks the granules `[s, s + n)` (`n > 0`) as `mark` says, the summary kept up to date
    /// word by word (one pass over their words); returns how many of them were clean before.
    pub(crate) fn mark(&mut self, s: usize, n: usize, mark: Mark) -> usize {
        let mut clean = 0;
        let mut summary = self.summary.0;
        for_each_word(s, n, |w, m| {
            let w = w % WORDS;
            let (u, c) = (&mut self.used[w], &mut self.clean[w]);
            // (A population count is a dozen instructions without POPCNT: not for words
            // with no clean granule, as a run's and a dirty range's are.)
            if *c & m != 0 {
                clean += (*c & m).count_ones() as usize;
            }
            match mark {
                Mark::Used => (*u, *c) = (*u | m, *c & !m),
                Mark::Free => *u &= !m,
                Mark::Clean => *c |= m,
            }
            summary = summary & !(0xF << (4 * w)) | nibble(*u, *c) << (4 * w);
        });
        self.summary.0 = summary;
        clean
    }

    /// The first used granule in `[from, end)`, else `end`.
    pub(crate) fn next_used(&self, from: usize, end: usize) -> usize {
        next_with(&self.used, from, end, true, self.summary.used())
    }

    /// The first free granule in `[from, end)`, else `end`.
    pub(crate) fn next_free(&self, from: usize, end: usize) -> usize {
        next_with(&self.used, from, end, false, self.summary.free())
    }

    /// The first clean granule in `[from, end)`, else `end`.
    pub(crate) fn next_clean(&self, from: usize, end: usize) -> usize {
        next_with(&self.clean, from, end, true, self.summary.clean())
    }

    /// The first dirty granule in `[from, end)`, else `end`.
    pub(crate) fn next_dirty(&self, from: usize, end: usize) -> usize {
        next_dirty(&self.used, &self.clean, from, end, self.summary.dirty())
    }

    /// The first granule of the run of free granules that holds the free granule `g`.
    pub(crate) fn free_start(&self, g: usize) -> usize {
        clear_run_start(&self.used, g, self.summary.used())
    }
}

/// Word `w`'s nibble of a [`Summary`], from its words of `used` and `clean`.
fn nibble(used: u64, clean: u64) -> u64 {
    u64::from(used != 0)
        | u64::from(used != !0) << 1
        | u64::from(clean != 0) << 2
        | u64::from(used | clean != !0) << 3
}

/// The words `[s / 64, (s + n - 1) / 64]` that the granules `[s, s + n)` (`n > 0`) lie in.
pub(crate) fn words_of(s: usize, n: usize) -> (usize, usize) {
    (s / 64, (s + n - 1) / 64)
}

/// Calls `f(w, mask)` for each word `w` that the granules `[s, s + n)` (`n > 0`) lie in,
/// `mask` their bits in it.
#[inline(always)]
fn for_each_word(s: usize, n: usize, mut f: impl FnMut(usize, u64)) {
    let (w0, w1) = words_of(s, n);
    let first = u64::MAX << (s % 64);
    let last = u64::MAX >> (63 - (s + n - 1) % 64);
    if w0 == w1 {
        f(w0, first & last);
        return;
    }
    f(w0, first);
    for w in w0 + 1..w1 {
        f(w, u64::MAX);
    }
    f(w1, last);
}

/// Sets (`to`) or clears the bits `[s, s + n)`.
pub(crate) fn set_range(bits: &mut [u64; WORDS], s: usize, n: usize, to: bool) {
    if n == 0 {
        return;
    }
    match to {
        true => for_each_word(s, n, |w, m| bits[w] |= m),
        false => for_each_word(s, n, |w, m| bits[w] &= !m),
    }
}

/// Set bits in `[s, s + n)`.
pub(crate) fn count_range(bits: &[u64; WORDS], s: usize, n: usize) -> usize {
    let mut count = 0;
    if n > 0 {
        for_each_word(s, n, |w, m| {
            if bits[w] & m != 0 {
                count += (bits[w] & m).count_ones() as usize;
            }
        });
    }
    count
}

/// The first granule in `[from, end)` whose bit in `word(w)` is set, else `end`; `words`
/// holds every word `w` whose `word(w)` has a set bit in the range.
fn next_in(from: usize, end: usize, words: Words, word: impl Fn(usize) -> u64) -> usize {
    if from >= end {
        return end;
    }
    let (mut w, b) = (from / 64, from % 64);
    let mut bits = word(w) & (u64::MAX << b);
    loop {
        if bits != 0 {
            return (w * 64 + bits.trailing_zeros() as usize).min(end);
        }
        // The words after `w` that may hold one.
        let after = words & (u64::MAX << 1 << (4 * w + 3));
        if after == 0 {
            return end;
        }
        w = after.trailing_zeros() as usize / 4;
        if w * 64 >= end {
            return end;
        }
        bits = word(w);
    }
}

/// The first `g` in `[from, end)` whose bit is `set`, else `end`; `words` holds every word
/// with such a bit.
pub(crate) fn next_with(
    bits: &[u64; WORDS],
    from: usize,
    end: usize,
    set: bool,
    words: Words,
) -> usize {
    match set {
        true => next_in(from, end, words, |w| bits[w]),
        false => next_in(from, end, words, |w| !bits[w]),
    }
}

/// The first granule in `[from, end)` that is free and not clean (dirty), else `end`;
/// `words` holds every word with a dirty granule.
pub(crate) fn next_dirty(
    used: &[u64; WORDS],
    clean: &[u64; WORDS],
    from: usize,
    end: usize,
    words: Words,
) -> usize {
    next_in(from, end, words, |w| !(used[w] | clean[w]))
}

/// The smallest `s <= g` with every bit in `[s, g]` clear (`g`'s own bit is clear); `words`
/// holds every word with a set bit.
pub(crate) fn clear_run_start(bits: &[u64; WORDS], g: usize, words: Words) -> usize {
    let (mut w, b) = (g / 64, g % 64);
    // Bits [0, b] of word w.
    let mut below = bits[w] & (u64::MAX >> (63 - b));
    loop {
        if below != 0 {
            return w * 64 + (64 - below.leading_zeros() as usize);
        }
        // The words before `w` that may hold a set bit.
        let before = words & ((1u64 << (4 * w)) - 1);
        if before == 0 {
            return 0;
        }
        w = (63 - before.leading_zeros() as usize) / 4;
        below = bits[w];
    }
}

#[cfg(test)]
mod tests {
    use super::super::GRANULES;
    use super::*;

    /// Bitmaps of random density, word by word.
    fn random_bits(seed: &mut u64) -> [u64; WORDS] {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        core::array::from_fn(|_| match next() % 4 {
            0 => 0,
            1 => !0,
            2 => next() & next(),
            _ => next(),
        })
    }

    /// The searches with a summary find what the plain scans (every word, [`ANY`]) find,
    /// from every granule; a summary holds exactly the words the module docs say.
    #[test]
    fn searches_with_the_summary_find_what_plain_scans_find() {
        let mut seed = 0x2545_F491_4F6C_DD1D;
        for _ in 0..64 {
            let (used, clean) = (random_bits(&mut seed), random_bits(&mut seed));
            let s = Summary::of(&used, &clean);
            for w in 0..WORDS {
                let bit = |x: Words| x >> (4 * w) & 1 == 1;
                assert_eq!(bit(s.used()), used[w] != 0);
                assert_eq!(bit(s.free()), used[w] != !0);
                assert_eq!(bit(s.clean()), clean[w] != 0);
                assert_eq!(bit(s.dirty()), !(used[w] | clean[w]) != 0);
            }
            for g in 0..GRANULES {
                let end = (g + 200).min(GRANULES);
                assert_eq!(
                    next_with(&used, g, end, true, s.used()),
                    next_with(&used, g, end, true, ANY)
                );
                assert_eq!(
                    next_with(&used, g, end, false, s.free()),
                    next_with(&used, g, end, false, ANY)
                );
                assert_eq!(
                    next_with(&clean, g, GRANULES, true, s.clean()),
                    next_with(&clean, g, GRANULES, true, ANY)
                );
                assert_eq!(
                    next_dirty(&used, &clean, g, GRANULES, s.dirty()),
                    next_dirty(&used, &clean, g, GRANULES, ANY)
                );
                let plain = (0..=g)
                    .rev()
                    .find(|&i| used[i / 64] >> (i % 64) & 1 == 1)
                    .map_or(0, |i| i + 1);
                if used[g / 64] >> (g % 64) & 1 == 0 {
                    assert_eq!(clear_run_start(&used, g, s.used()), plain);
                    assert_eq!(clear_run_start(&used, g, ANY), plain);
                }
            }
        }
    }

    /// Plain scans agree with a bit-by-bit reading.
    #[test]
    fn plain_scans_find_the_first_matching_bit() {
        let mut seed = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..16 {
            let bits = random_bits(&mut seed);
            let at = |i: usize| bits[i / 64] >> (i % 64) & 1 == 1;
            for g in (0..GRANULES).step_by(7) {
                for end in [g, g + 1, (g + 65).min(GRANULES), GRANULES] {
                    let want = (g..end).find(|&i| at(i)).unwrap_or(end);
                    assert_eq!(next_with(&bits, g, end, true, ANY), want);
                    let want = (g..end).find(|&i| !at(i)).unwrap_or(end);
                    assert_eq!(next_with(&bits, g, end, false, ANY), want);
                    let want = (g..end).filter(|&i| at(i)).count();
                    assert_eq!(count_range(&bits, g, end - g), want);
                }
            }
        }
    }

    /// An update of some words changes those words' bits only, to what a whole summary says.
    #[test]
    fn an_update_summarizes_the_words_changed() {
        let mut seed = 0xDEAD_BEEF_CAFE_F00D;
        let (mut used, clean) = (random_bits(&mut seed), random_bits(&mut seed));
        let mut s = Summary::of(&used, &clean);
        set_range(&mut used, 100, 300, true);
        let (w0, w1) = words_of(100, 300);
        assert_eq!((w0, w1), (1, 6));
        s.update(&used, &clean, w0, w1);
        assert_eq!(s, Summary::of(&used, &clean));
        set_range(&mut used, 64, 64, false);
        s.update(&used, &clean, 1, 1);
        assert_eq!(s, Summary::of(&used, &clean));
    }
}
