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

/// Whether `taken` faults the run's clean pages in.
fn taken(w: &Written, at: u64, pages: usize) -> bool {
    w.taken(at, clean(at, pages), PAGE, 0).fault_in
}

/// A written run's probe, freed: every page of its range resident.
fn free_dense(w: &Written, start: u64, pages: usize, live: usize) -> bool {
    w.freed(start, start + (pages * PAGE) as u64, live, |_, bytes| bytes)
}

#[test]
fn without_evidence_nothing_is_faulted_in_and_runs_become_probes() {
    let w = Written::new();
    for i in 0..40u64 {
        let at = i * MIB as u64;
        let f = w.taken(at, clean(at, 100), PAGE, 0);
        // The window: the last pages of the range.
        let window = (
            at + ((100 - WINDOW_PAGES) * PAGE) as u64,
            WINDOW_PAGES * PAGE,
        );
        assert_eq!(
            f,
            Fault {
                fault_in: false,
                window
            }
        );
    }
    // A run with too few clean pages is no probe.
    let f = w.taken(
        100 * MIB as u64,
        clean(100 * MIB as u64, PROBE_PAGES - 1),
        PAGE,
        0,
    );
    assert_eq!(
        f,
        Fault {
            fault_in: false,
            window: (0, 0)
        }
    );
    assert!(!free_dense(&w, 100 * MIB as u64, PROBE_PAGES - 1, 0));
    // The last PROBES runs are the probes; older ones were replaced.
    assert!(!free_dense(&w, 0, 100, 0), "replaced by a newer probe");
    assert!(free_dense(&w, 39 * MIB as u64, 100, 0));
}

#[test]
fn dense_evidence_gives_a_credit_that_faulting_in_uses_up_with_probes_between() {
    let w = Written::new();
    assert!(!taken(&w, 0, 100));
    let live = 320 * MIB;
    assert!(free_dense(&w, 0, 100, live));
    let credit = live / 32 + CREDIT_MIN;
    assert_eq!(w.credit(0), credit);
    // Runs of 1 MiB: faulted in, but every PROBE_EVERY-th is a probe, whose window is left
    // to fault in (and not charged).
    let (mut faulted, mut windows) = (0, 0);
    for i in 1..=64u64 {
        let at = i * 2 * MIB as u64;
        let f = w.taken(at, clean(at, 256), PAGE, 0);
        if f.fault_in {
            faulted += 1;
            windows += usize::from(f.window.1 > 0);
            assert_eq!(f.window.1 > 0, (faulted - 1) % PROBE_EVERY as usize == 0);
        } else {
            // Out of credit: every run a probe, nothing faulted in.
            assert_eq!(f.window.1, WINDOW_PAGES * PAGE);
        }
    }
    assert_eq!(
        w.credit(0),
        credit - faulted * MIB + windows * WINDOW_PAGES * PAGE
    );
    assert!(w.credit(0) < MIB && faulted >= credit / MIB);
    // A run too small to be a probe is faulted in while credit is left.
    let w = Written::new();
    taken(&w, 0, 100);
    free_dense(&w, 0, 100, 0);
    for i in 1..=20u64 {
        let f = w.taken(i * MIB as u64, clean(i * MIB as u64, 1), PAGE, 0);
        assert_eq!(
            f,
            Fault {
                fault_in: true,
                window: (0, 0)
            }
        );
    }
}

#[test]
fn sparse_evidence_takes_the_credit_away() {
    let w = Written::new();
    taken(&w, 0, 100);
    free_dense(&w, 0, 100, 0);
    assert!(w.credit(0) > 0);
    let start = MIB as u64;
    assert!(
        taken(&w, start, 64),
        "the first that could be a probe is one"
    );
    // Its window written in 7 of its 8 pages: under 15/16.
    let window = start + ((64 - WINDOW_PAGES) * PAGE) as u64;
    assert!(w.freed(start, start + MIB as u64, 0, |at, bytes| {
        assert_eq!((at, bytes), (window, WINDOW_PAGES * PAGE));
        (WINDOW_PAGES - 1) * PAGE
    }));
    assert_eq!(w.credit(0), 0);
    assert!(!taken(&w, 2 * MIB as u64, 1));
}

#[test]
fn a_probe_is_measured_only_while_its_run_holds_its_range() {
    let w = Written::new();
    // Taken again at the same start (the probe's run freed without a measure): dropped.
    taken(&w, 0, 100);
    w.taken(0, Clean::default(), PAGE, 0);
    assert!(!free_dense(&w, 0, 100, 0));
    // Shrunk: forgotten.
    taken(&w, 0, 100);
    w.forget(0);
    assert!(!free_dense(&w, 0, 100, 0));
    // A window past the run freed (it shrank without a forget): not measured.
    taken(&w, 0, 100);
    let measured = w.freed(0, (90 * PAGE) as u64, 0, |_, _| panic!("measured"));
    assert!(!measured);
    assert_eq!(w.credit(0), 0);
}

/// Evidence of one kind (class, size band) gives no credit to another: a class's scratch
/// buffers written whole say nothing of another class's buffers, nor of its own of another
/// size band.
#[test]
fn dense_evidence_of_one_kind_faults_nothing_in_for_another() {
    let w = Written::new();
    let (scratch, kept) = (Written::kind(1, 450), Written::kind(0, 450));
    assert_ne!(scratch, kept);
    assert_ne!(Written::kind(1, 450), Written::kind(1, 16), "another band");
    assert_eq!(
        Written::kind(1, 450),
        Written::kind(1, 300),
        "the same band"
    );
    w.taken(0, clean(0, 100), PAGE, scratch);
    assert!(free_dense(&w, 0, 100, 0));
    assert!(w.credit(scratch) > 0);
    assert_eq!(w.credit(kept), 0);
    let at = MIB as u64;
    assert!(!w.taken(at, clean(at, 100), PAGE, kept).fault_in);
    assert!(w.taken(2 * at, clean(2 * at, 100), PAGE, scratch).fault_in);
}
