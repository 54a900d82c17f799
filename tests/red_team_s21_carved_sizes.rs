//! Red-team guard (session 21) of the free fast path's bound by the carved end (RED-84's
//! `free_past_carved`): a pointer past the carved end, in the reservation's tail without
//! access, freed with sizes the earlier guards (`red_team_carved_end.rs`,
//! `red_team_carved_sized.rs`, `red_team_carved_entries.rs`) leave out: zero, one byte, just
//! past the small and medium limits, `usize::MAX`; and through `Layout`s of 1 MiB and 1 GiB
//! alignment. Each must stop the process with cohort's report, never fault. Passes on lead
//! 960396d, debug and release.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use cohort::Cohort;
use red_team_common::{say, unreported};
use std::alloc::Layout;

const UNIT: usize = 2 << 20;

#[test]
fn guard_a_free_of_any_size_past_the_carved_end_is_reported_not_a_fault() {
    let a = Cohort::<()>::new();
    let p = a.malloc(64, ());
    assert!(!p.is_null());
    let next = (p as usize & !(UNIT - 1)) + UNIT;
    let mut failed = Vec::new();
    for q in [next, next + 4096] {
        let q = q as *mut u8;
        assert!(a.in_region(q) && a.allocation_at(q).is_none(), "{q:p}");
        for size in [0, 1, 2049, 16_385, usize::MAX] {
            // SAFETY (each): the misuse under test, which the call must report.
            let free = unreported(|| unsafe { a.free(q, size, ()) });
            let try_free = unreported(|| {
                if let Err(e) = unsafe { a.try_free(q, size, ()) } {
                    say(&format!("cohort: try_free refused {q:p}: {e}"));
                    std::process::abort();
                }
            });
            for (way, what) in [("free", free), ("try_free", try_free)] {
                if let Some(what) = what {
                    failed.push(format!("{way}({q:p}, {size}): {what}"));
                }
            }
        }
        for align in [1 << 20, 1 << 30] {
            let layout = Layout::from_size_align(64, align).unwrap();
            // SAFETY: as above.
            if let Some(what) = unreported(|| unsafe { a.dealloc(q, layout, ()) }) {
                failed.push(format!("dealloc({q:p}, {layout:?}): {what}"));
            }
        }
    }
    // SAFETY: allocated above with this size and class.
    unsafe { a.free(p, 64, ()) };
    assert!(failed.is_empty(), "{failed:#?}");
}
