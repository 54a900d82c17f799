//! What an instance keeps of unused memory, set from the environment (`COHORT_LARGE_CACHE`,
//! `COHORT_LARGE_CACHE_MAPPINGS`, `COHORT_EMPTY_BLOCKS`, `COHORT_DECAY`, each case in a
//! child process of this test binary with the variables set) and from the API
//! (`Cohort::set_retention`): values read strictly, bad ones reported once on standard
//! error with the default used, and the settings obeyed.

use cohort::{Cohort, Retention};
use std::time::Duration;

cohort::lifetime_classes! { enum Life { A } }

/// Set in a child: the name of the case it runs.
const CHILD: &str = "COHORT_LARGE_SETTINGS_CHILD";
const VARS: [&str; 4] = [
    "COHORT_LARGE_CACHE",
    "COHORT_LARGE_CACHE_MAPPINGS",
    "COHORT_EMPTY_BLOCKS",
    "COHORT_DECAY",
];

/// Runs `test` of this binary again in a child with `vars` set (the others removed) and
/// returns its (stdout, stderr).
fn child(test: &str, vars: &[(&str, &str)]) -> (String, String) {
    let mut with_case = vars.to_vec();
    with_case.push((CHILD, test));
    test_support::test_in_child(test, &VARS, &with_case)
}

fn in_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// The retention the child printed (`retention=bytes,mappings,empty,delay_ms`).
fn printed(stdout: &str) -> Retention {
    let value = stdout
        .split_whitespace()
        .find_map(|word| word.strip_prefix("retention="))
        .unwrap_or_else(|| panic!("no retention= in:\n{stdout}"));
    let n: Vec<usize> = value.split(',').map(|v| v.parse().unwrap()).collect();
    Retention {
        large_cache_bytes: n[0],
        large_cache_mappings: n[1],
        empty_block_bytes: n[2],
        delay: Duration::from_millis(n[3] as u64),
    }
}

/// In the child: one instance's retention, after one large allocation freed (so that the
/// cache's bound is seen at work: `cached=` how many mappings it kept).
fn print_retention() {
    let a = Cohort::<Life>::new();
    let p = a.malloc(2 << 20, Life::A);
    assert!(!p.is_null());
    // SAFETY: live, freed once.
    unsafe { a.free(p, 2 << 20, Life::A) };
    let r = a.retention();
    println!(
        "retention={},{},{},{} cached={}",
        r.large_cache_bytes,
        r.large_cache_mappings,
        r.empty_block_bytes,
        r.delay.as_millis(),
        a.stats().large_cached
    );
    // A second instance reads the same values (read once per process).
    assert_eq!(Cohort::<Life>::new().retention(), r);
}

#[test]
fn the_environment_sets_what_is_kept() {
    if in_child() {
        return print_retention();
    }
    let test = "the_environment_sets_what_is_kept";
    let (out, err) = child(test, &[]);
    assert_eq!(printed(&out), Retention::DEFAULT);
    assert!(out.contains("cached=1"), "{out}");
    assert!(err.is_empty(), "{err}");
    let (out, err) = child(
        test,
        &[
            ("COHORT_LARGE_CACHE", "0"),
            ("COHORT_LARGE_CACHE_MAPPINGS", "3"),
            ("COHORT_EMPTY_BLOCKS", "8MiB"),
            ("COHORT_DECAY", "250ms"),
        ],
    );
    let expect = Retention {
        large_cache_bytes: 0,
        large_cache_mappings: 3,
        empty_block_bytes: 8 << 20,
        delay: Duration::from_millis(250),
    };
    assert_eq!(printed(&out), expect);
    assert!(
        out.contains("cached=0"),
        "a zero bound keeps nothing: {out}"
    );
    assert!(err.is_empty(), "{err}");
    let (out, _) = child(
        test,
        &[("COHORT_LARGE_CACHE", "1T"), ("COHORT_DECAY", "2s")],
    );
    let r = printed(&out);
    assert_eq!(
        (r.large_cache_bytes, r.delay),
        (1 << 40, Duration::from_secs(2))
    );
    // Empty blocks are counted whole.
    let (out, _) = child(test, &[("COHORT_EMPTY_BLOCKS", "5M")]);
    assert_eq!(printed(&out).empty_block_bytes, 4 << 20);
}

#[test]
fn empty_values_are_read_as_unset() {
    if in_child() {
        return print_retention();
    }
    let test = "empty_values_are_read_as_unset";
    let empty: Vec<(&str, &str)> = VARS.iter().map(|&var| (var, "")).collect();
    let (out, err) = child(test, &empty);
    assert_eq!(printed(&out), Retention::DEFAULT);
    assert!(err.is_empty(), "nothing to report: {err}");
}

#[test]
fn bad_values_are_reported_once_and_the_defaults_used() {
    if in_child() {
        return print_retention();
    }
    let test = "bad_values_are_reported_once_and_the_defaults_used";
    let cases: [(&str, &str, &str); 9] = [
        ("COHORT_LARGE_CACHE", "lots", "is not a size up to 1T"),
        ("COHORT_LARGE_CACHE", "2T", "is not a size up to 1T"),
        ("COHORT_LARGE_CACHE", "64 M", "is not a size up to 1T"),
        (
            "COHORT_LARGE_CACHE_MAPPINGS",
            "65",
            "is not a count from 0 to 64",
        ),
        (
            "COHORT_LARGE_CACHE_MAPPINGS",
            "8K",
            "is not a count from 0 to 64",
        ),
        ("COHORT_EMPTY_BLOCKS", "-2M", "is not a size up to 1T"),
        ("COHORT_DECAY", "1", "is not a time up to one hour"),
        ("COHORT_DECAY", "1.5s", "is not a time up to one hour"),
        ("COHORT_DECAY", "2h", "is not a time up to one hour"),
    ];
    for (var, bad, problem) in cases {
        let (out, err) = child(test, &[(var, bad)]);
        assert_eq!(printed(&out), Retention::DEFAULT, "{var}={bad:?}");
        let expected = format!("cohort: {var}=\"{bad}\" {problem}");
        assert_eq!(err.matches(&expected).count(), 1, "{var}={bad:?}: {err}");
        assert!(err.contains("using the default"), "{err}");
    }
}

#[test]
fn the_api_sets_what_one_instance_keeps() {
    if in_child() {
        return;
    }
    let a = Cohort::<Life>::new();
    let b = Cohort::<Life>::new();
    let r = Retention {
        large_cache_bytes: 6 << 20,
        large_cache_mappings: 2,
        empty_block_bytes: 6 << 20,
        delay: Duration::from_secs(60),
    };
    a.set_retention(r);
    assert_eq!(a.retention(), r);
    assert_eq!(b.retention(), Retention::from_environment(), "b unchanged");
    // The adaptive delays start at an eighth of the delay.
    assert_eq!(a.decay_delays(), (r.delay / 8, r.delay / 8));
    // At most 2 mappings, at most 6 MiB: four 2 MiB frees keep two. (Every other one of
    // seven in address order is freed: a live one lies between any two freed, which keeps
    // them from being joined.)
    let mut made: Vec<*mut u8> = (0..7).map(|_| a.malloc(2 << 20, Life::A)).collect();
    made.sort();
    let ptrs: Vec<*mut u8> = made.iter().step_by(2).copied().collect();
    for &p in &ptrs {
        // SAFETY: live, freed once.
        unsafe { a.free(p, 2 << 20, Life::A) };
    }
    let s = a.stats();
    assert_eq!((s.large_cached, s.large_cached_bytes), (2, 4 << 20));
    // An 8 MiB mapping is over the byte bound: not kept.
    let p = a.malloc(8 << 20, Life::A);
    // SAFETY: live, freed once.
    unsafe { a.free(p, 8 << 20, Life::A) };
    assert_eq!(a.stats().large_cached, 2);
    // Lowering the bounds gives back at once.
    a.set_retention(Retention {
        large_cache_mappings: 1,
        ..r
    });
    assert_eq!(a.stats().large_cached, 1);
    // Mappings above the most the cache can hold are capped.
    a.set_retention(Retention {
        large_cache_mappings: 1000,
        ..r
    });
    assert_eq!(
        a.retention().large_cache_mappings,
        Retention::MAX_LARGE_CACHE_MAPPINGS
    );
}
