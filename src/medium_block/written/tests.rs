//! Unit tests of `crate::medium_block`'s `written`: probes, evidence and credit.

use super::*;

const PAGE: usize = 4096;
const MIB: usize = 1 << 20;

/// A run's clean pages: `pages` of them in one range at `at`.
fn clean(at: u64, pages: usize) -> Clean {
    Clean {
        bytes: pages * PAGE,
        longest: (at, pages * PAGE),
    }
}

/// A written run's probe, freed: every page of its range resident.
fn free_dense(w: &Written, start: u64, pages: usize, live: usize) -> bool {
    w.freed(start, start + (pages * PAGE) as u64, live, |_, bytes| bytes)
}

#[test]
fn without_evidence_nothing_is_faulted_in_and_runs_become_probes() {
    let w = Written::new();
    for i in 0..40u64 {
        assert!(!w.taken(i * MIB as u64, clean(i * MIB as u64, 100), PAGE));
    }
    // A run with too few clean pages is no probe.
    assert!(!w.taken(
        100 * MIB as u64,
        clean(100 * MIB as u64, PROBE_PAGES - 1),
        PAGE
    ));
    assert!(!free_dense(&w, 100 * MIB as u64, PROBE_PAGES - 1, 0));
    // The last PROBES runs are the probes; older ones were replaced.
    assert!(!free_dense(&w, 0, 100, 0), "replaced by a newer probe");
    assert!(free_dense(&w, 39 * MIB as u64, 100, 0));
}

#[test]
fn dense_evidence_gives_a_credit_that_faulting_in_uses_up_with_probes_between() {
    let w = Written::new();
    assert!(!w.taken(0, clean(0, 100), PAGE));
    let live = 320 * MIB;
    assert!(free_dense(&w, 0, 100, live));
    assert_eq!(w.credit(), live / 32 + CREDIT_MIN);
    // Runs of 1 MiB: the first that could be a probe is one, then 7 faulted in, and so on.
    let (mut faulted, mut probes) = (0, 0);
    for i in 1..=64u64 {
        let at = i * 2 * MIB as u64;
        match w.taken(at, clean(at, 256), PAGE) {
            true => faulted += 1,
            false => probes += 1,
        }
    }
    // 18 MiB of credit: 18 runs faulted in, with a probe before every 7 of them, then
    // probes only.
    assert_eq!(faulted, (live / 32 + CREDIT_MIN) / MIB);
    assert_eq!(probes, 64 - faulted);
    assert!(w.credit() < MIB);
    // A run too small to be a probe is still faulted in while credit is left.
    let w = Written::new();
    w.taken(0, clean(0, 100), PAGE);
    free_dense(&w, 0, 100, 0);
    for i in 1..=20u64 {
        assert!(w.taken(i * MIB as u64, clean(i * MIB as u64, 1), PAGE));
    }
}

#[test]
fn sparse_evidence_takes_the_credit_away() {
    let w = Written::new();
    w.taken(0, clean(0, 100), PAGE);
    free_dense(&w, 0, 100, 0);
    assert!(w.credit() > 0);
    w.taken(MIB as u64, clean(MIB as u64, 64), PAGE);
    // Probe (the first that could be) written in 59 of its 64 pages: under 15/16.
    let start = MIB as u64;
    assert!(w.freed(start, start + MIB as u64, 0, |at, bytes| {
        assert_eq!((at, bytes), (start, 64 * PAGE));
        59 * PAGE
    }));
    assert_eq!(w.credit(), 0);
    assert!(!w.taken(2 * MIB as u64, clean(2 * MIB as u64, 1), PAGE));
}

#[test]
fn a_probe_is_measured_only_while_its_run_holds_its_range() {
    let w = Written::new();
    // Taken again at the same start (the probe's run freed without a measure): dropped.
    w.taken(0, clean(0, 100), PAGE);
    w.taken(0, Clean::default(), PAGE);
    assert!(!free_dense(&w, 0, 100, 0));
    // Shrunk: forgotten.
    w.taken(0, clean(0, 100), PAGE);
    w.forget(0);
    assert!(!free_dense(&w, 0, 100, 0));
    // A range past the run freed (it shrank without a forget): not measured.
    w.taken(0, clean(8 * PAGE as u64, 100), PAGE);
    let measured = w.freed(0, (50 * PAGE) as u64, 0, |_, _| panic!("measured"));
    assert!(!measured);
    assert_eq!(w.credit(), 0);
}
