//! A model test of `crate::medium_block`'s run table (quickcheck): random takes (first fit
//! and dirty fit), frees, grows, shrinks and purges of one block against a plain model, a
//! state a granule, every search checked against a scan of the model and every invariant
//! (the word summary's included) after every step.

use super::*;
use quickcheck::{Arbitrary, Gen, QuickCheck};

/// A granule as the model sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Used,
    Clean,
    Dirty,
}

/// An operation: its kind, a length or a choice, an alignment.
#[derive(Clone, Debug)]
struct Op(u8, u16, u8);

impl Arbitrary for Op {
    fn arbitrary(g: &mut Gen) -> Op {
        Op(u8::arbitrary(g) % 6, u16::arbitrary(g), u8::arbitrary(g))
    }
}

/// The model: each granule's state and the live runs (first granule, length).
struct Model {
    at: Vec<State>,
    runs: Vec<(usize, usize)>,
}

impl Model {
    fn fresh() -> Model {
        let mut at = vec![State::Clean; GRANULES];
        at[..META_GRANULES].fill(State::Used);
        Model {
            at,
            runs: Vec::new(),
        }
    }

    fn set(&mut self, g: usize, n: usize, to: State) {
        self.at[g..g + n].fill(to);
    }

    /// The lowest run of `n` free granules aligned to `align`.
    fn first_fit(&self, n: usize, align: usize) -> Option<usize> {
        (META_GRANULES..=GRANULES - n)
            .filter(|g| g.is_multiple_of(align))
            .find(|&g| self.at[g..g + n].iter().all(|&s| s != State::Used))
    }

    /// The fewest clean granules a run of `n` free granules aligned to `align` covers,
    /// among those that cover a dirty one.
    fn fewest_clean(&self, n: usize, align: usize) -> Option<usize> {
        (META_GRANULES..=GRANULES - n)
            .filter(|g| g.is_multiple_of(align))
            .filter(|&g| self.at[g..g + n].iter().all(|&s| s != State::Used))
            .map(|g| {
                self.at[g..g + n]
                    .iter()
                    .filter(|&&s| s == State::Clean)
                    .count()
            })
            .filter(|&clean| clean < n)
            .min()
    }

    /// The run table agrees with the model, granule by granule.
    fn agrees(&self, r: &Runs) -> bool {
        let bit = |bits: &[u64; WORDS], g: usize| bits[g / 64] >> (g % 64) & 1 == 1;
        (0..GRANULES).all(|g| {
            let state = match (bit(&r.bits.used, g), bit(&r.bits.clean, g)) {
                (true, _) => State::Used,
                (false, true) => State::Clean,
                (false, false) => State::Dirty,
            };
            state == self.at[g]
        }) && self.runs.iter().all(|&(g, n)| r.at(g) == At::Start(n))
    }
}

/// Runs `ops` on a fresh block and the model; false at the first disagreement.
fn run(ops: Vec<Op>) -> bool {
    // SAFETY: Runs is plain integers, for which zero bytes are a value.
    let mut r: Box<Runs> = Box::new(unsafe { core::mem::zeroed() });
    r.init(true);
    let mut m = Model::fresh();
    for Op(kind, x, a) in ops {
        let align = 1 << (a % 4);
        let n = 1 + x as usize % 300;
        match kind {
            // A dirty fit, else the first fit.
            0 | 1 => {
                let dirty = r.find_dirty(n, align);
                if dirty.map(|(_, clean, _)| clean) != m.fewest_clean(n, align) {
                    return false;
                }
                let g = match dirty {
                    Some((g, clean, _)) => {
                        let covered = &m.at[g..g + n];
                        let free = covered.iter().all(|&s| s != State::Used);
                        let counted = covered.iter().filter(|&&s| s == State::Clean).count();
                        if !g.is_multiple_of(align) || !free || counted != clean {
                            return false;
                        }
                        Some(g)
                    }
                    None => {
                        let g = r.find(n, align);
                        if g != m.first_fit(n, align) {
                            return false;
                        }
                        g
                    }
                };
                if let Some(g) = g {
                    let dirty = m.at[g..g + n]
                        .iter()
                        .filter(|&&s| s == State::Dirty)
                        .count();
                    if r.take(g, n) != dirty {
                        return false;
                    }
                    m.set(g, n, State::Used);
                    m.runs.push((g, n));
                }
            }
            2 if !m.runs.is_empty() => {
                let (g, n) = m.runs.swap_remove(x as usize % m.runs.len());
                if r.free_run(g) != n {
                    return false;
                }
                m.set(g, n, State::Dirty);
            }
            3 if !m.runs.is_empty() => {
                let i = x as usize % m.runs.len();
                let (g, n) = m.runs[i];
                let to = 1 + (a as usize * 7) % 300;
                if to < n {
                    r.shrink(g, n, to);
                    m.set(g + to, n - to, State::Dirty);
                    m.runs[i].1 = to;
                } else if to > n {
                    let fits =
                        g + to <= GRANULES && m.at[g + n..g + to].iter().all(|&s| s != State::Used);
                    let dirty = fits.then(|| {
                        m.at[g + n..g + to]
                            .iter()
                            .filter(|&&s| s == State::Dirty)
                            .count()
                    });
                    if r.grow(g, n, to) != dirty {
                        return false;
                    }
                    if fits {
                        m.set(g + n, to - n, State::Used);
                        m.runs[i].1 = to;
                    }
                }
            }
            4 => {
                // Pages of 1, 2, 4 or 32 granules; a bound on the range length; enough.
                let per_page = [1, 2, 4, 32][a as usize % 4];
                let longest = 1 + x as usize % GRANULES;
                let enough = 1 + (x as usize * 13) % GRANULES;
                let mut given = Vec::new();
                let before = r.dirty();
                let cleaned = r.purge(per_page * GRANULE, longest, enough, |s, k| {
                    given.push((s, k))
                });
                for (s, k) in given {
                    if m.at[s..s + k].contains(&State::Used) || !s.is_multiple_of(per_page) {
                        return false;
                    }
                    m.set(s, k, State::Clean);
                }
                if before - r.dirty() != cleaned {
                    return false;
                }
            }
            _ => {}
        }
        if r.check().is_err() || !m.agrees(&r) {
            return false;
        }
    }
    true
}

#[test]
fn quickcheck_the_run_table_agrees_with_a_plain_model() {
    QuickCheck::new()
        .tests(if cfg!(miri) { 2 } else { 300 })
        .rng(Gen::new(200))
        .quickcheck(run as fn(Vec<Op>) -> bool);
}
