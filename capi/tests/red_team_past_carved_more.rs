//! Red-team guard (session 20, third round) on RED-84's fix (a private reservation without
//! access past its carved end): the drop-in's entries `red_team_past_carved_end.rs` does
//! not ask (the sized and aligned C++ deletes, the unsized ones, `reallocarray`, the
//! cohort_* class entries), given a pointer in cohort's reservation past every carved
//! block, must each abort with cohort's report, never fault. Each case runs in a child
//! process of its own (this test binary again) under `LD_PRELOAD=libcohort.so`.

mod preloaded;

use preloaded::{rerun_case, symbol};
use std::ffi::c_void;

const CASE: &str = "COHORT_RED_TEAM_PAST_CARVED_MORE_CASE";

/// How far past the unit of a first allocation the pointer asked about lies: a page into
/// the next unit (a block the test binary's own allocations carved, or not yet: reported
/// either way), and 1 GiB on (past every carved block).
const PAST: [usize; 2] = [(2 << 20) + 4096, 1 << 30];

/// The entries asked about, by the C name of the symbol called.
const ENTRIES: [&str; 12] = [
    "_ZdaPvm",
    "_ZdlPvmSt11align_val_t",
    "_ZdaPvmSt11align_val_t",
    "_ZdlPv",
    "_ZdaPv",
    "_ZdlPvSt11align_val_t",
    "_ZdlPvRKSt9nothrow_t",
    "reallocarray",
    "cohort_free",
    "cohort_remalloc",
    "cohort_recalloc",
    "cohort_free 40000",
];

/// One call, in a process whose malloc is cohort's: prints the answer and exits when the
/// call returns.
fn call(case: &str) {
    let (entry, past) = case.split_once('@').unwrap();
    let past: usize = past.parse().unwrap();
    let (name, size) = entry.split_once(' ').unwrap_or((entry, "64"));
    let size: usize = size.parse().unwrap();
    let f = symbol(name);
    // SAFETY: the C library's functions (cohort's, preloaded); `p` lies in cohort's
    // reservation, past its carved blocks (misuse, which each entry must report).
    unsafe {
        let probe = libc::malloc(64).cast::<u8>();
        assert!(!probe.is_null());
        let unit = probe as usize & !((2 << 20) - 1);
        let p = (unit + past) as *mut c_void;
        let answer = match name {
            "_ZdaPvm" => {
                let f: unsafe extern "C" fn(*mut c_void, usize) = std::mem::transmute(f);
                f(p, size);
                0
            }
            "_ZdlPvmSt11align_val_t" | "_ZdaPvmSt11align_val_t" => {
                let f: unsafe extern "C" fn(*mut c_void, usize, usize) = std::mem::transmute(f);
                f(p, size, 64);
                0
            }
            "_ZdlPv" | "_ZdaPv" | "_ZdlPvRKSt9nothrow_t" => {
                // (The nothrow form's second argument is an unused reference.)
                let f: unsafe extern "C" fn(*mut c_void, *const c_void) = std::mem::transmute(f);
                f(p, probe.cast());
                0
            }
            "_ZdlPvSt11align_val_t" => {
                let f: unsafe extern "C" fn(*mut c_void, usize) = std::mem::transmute(f);
                f(p, 64);
                0
            }
            "reallocarray" => {
                let f: unsafe extern "C" fn(*mut c_void, usize, usize) -> *mut c_void =
                    std::mem::transmute(f);
                f(p, 4, 25) as usize
            }
            "cohort_free" => {
                let f: unsafe extern "C" fn(*mut c_void, usize, u32) = std::mem::transmute(f);
                f(p, size, 0);
                0
            }
            _ => {
                let f: unsafe extern "C" fn(*mut c_void, usize, usize, u32) -> *mut c_void =
                    std::mem::transmute(f);
                f(p, size, 300, 0) as usize
            }
        };
        println!("answer {answer}");
    }
    std::process::exit(0);
}

/// Guard: every entry reports the pointer past the carved end.
#[test]
fn guard_more_c_entries_report_a_pointer_past_the_carved_end() {
    if let Ok(case) = std::env::var(CASE) {
        call(&case);
        return;
    }
    let test = "guard_more_c_entries_report_a_pointer_past_the_carved_end";
    let mut wrong = Vec::new();
    for entry in ENTRIES {
        for past in PAST {
            let case = format!("{entry}@{past}");
            let (reported, answer, out) = rerun_case(test, CASE, &case);
            if !reported {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let tail: String = stderr.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                wrong.push(format!("{case}: {:?}, {answer:?}, {tail}", out.status));
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
