//! Red-team guard (session 19, second round) for the drop-in's entries given a pointer in
//! cohort's reservation past every carved block (1 GiB past a first allocation: the
//! reservation's memory no block has reached), where a header read finds no block. The
//! C library's sized frees now read the header of any pointer in the region before the
//! free (`Cohort::check_slot_start`, misuse's 6947c30), and RED-84's direction makes that
//! memory inaccessible: each entry must abort with cohort's report (or, for the size
//! query, answer 0), never fault. Each case runs in a child process of its own (this test
//! binary again) under `LD_PRELOAD=libcohort.so`.

mod preloaded;

use preloaded::{rerun_case, symbol};
use std::ffi::c_void;

const CASE: &str = "COHORT_RED_TEAM_PAST_CARVED_END_CASE";

/// How far past a first allocation the pointer asked about lies.
const PAST: usize = 1 << 30;

/// The entries asked about, by the C name of the symbol called.
const ENTRIES: [&str; 6] = [
    "free_sized",
    "free_aligned_sized",
    "_ZdlPvm",
    "free",
    "realloc",
    "malloc_usable_size",
];

/// One call, in a process whose malloc is cohort's: prints the answer and exits when the
/// call returns.
fn call(entry: &str) {
    let f = symbol(entry);
    // SAFETY: the C library's functions (cohort's, preloaded); `p` lies in cohort's
    // reservation, past its carved blocks (misuse, which each entry must report).
    unsafe {
        let probe = libc::malloc(64).cast::<u8>();
        assert!(!probe.is_null());
        let p = probe.wrapping_add(PAST).cast::<c_void>();
        let answer = match entry {
            "free_sized" | "_ZdlPvm" => {
                let f: unsafe extern "C" fn(*mut c_void, usize) = std::mem::transmute(f);
                f(p, 64);
                0
            }
            "free_aligned_sized" => {
                let f: unsafe extern "C" fn(*mut c_void, usize, usize) = std::mem::transmute(f);
                f(p, 64, 64);
                0
            }
            "free" => {
                let f: unsafe extern "C" fn(*mut c_void) = std::mem::transmute(f);
                f(p);
                0
            }
            "realloc" => {
                let f: unsafe extern "C" fn(*mut c_void, usize) -> *mut c_void =
                    std::mem::transmute(f);
                f(p, 100) as usize
            }
            _ => {
                let f: unsafe extern "C" fn(*mut c_void) -> usize = std::mem::transmute(f);
                f(p)
            }
        };
        println!("answer {answer}");
    }
    std::process::exit(0);
}

/// Runs `entry`'s case in a child under `LD_PRELOAD`: a description unless it aborted with
/// cohort's report, or returned 0 from the size query.
fn outcome(test: &str, entry: &str) -> Option<String> {
    let (reported, answer, out) = rerun_case(test, CASE, entry);
    let zero =
        entry == "malloc_usable_size" && out.status.success() && answer.as_deref() == Some("0");
    (!reported && !zero).then(|| format!("{entry}: {:?}, {answer:?}", out.status))
}

/// Guard: every entry reports the pointer past the carved end (passes on lead e393384 and
/// misuse's 5bac550, debug library).
#[test]
fn guard_the_c_entries_report_a_pointer_past_the_carved_end() {
    if let Ok(entry) = std::env::var(CASE) {
        call(&entry);
        return;
    }
    let test = "guard_the_c_entries_report_a_pointer_past_the_carved_end";
    let wrong: Vec<String> = ENTRIES
        .iter()
        .filter_map(|entry| outcome(test, entry))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}
