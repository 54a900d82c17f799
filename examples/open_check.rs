//! What the check of a region file's blocks costs (RED-77): makes a file region of the
//! given capacity, fills it with slots of one size, frees every other one (so every block
//! has a free list through its whole length), leaves it, and times the next open (which
//! walks the blocks' headers; with `at-open`, every block's lists too), the first
//! allocation after it (which checks the one block it takes, lazily), then a `verify` of
//! the opened region (the walk of every list, for comparison).
//!
//! `cargo run --release --example open_check -- GIB SIZE [at-open] [PATH]` (default PATH
//! in the temporary directory, removed at the end). The file takes GIB GiB of disk: every
//! page is written. Times are of a file in the page cache (just written).

use cohort::{CreateOptions, OpenOptions, Place, SharedCohort};
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let gib: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(16);
    let mut rest: Vec<String> = args.collect();
    let at_open = rest.first().is_some_and(|a| a == "at-open");
    if at_open {
        rest.remove(0);
    }
    let path = rest
        .into_iter()
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("cohort-open-check-{}", std::process::id()))
        });
    let place = Place::File(&path);
    let t = Instant::now();
    let r = SharedCohort::<()>::create(place, CreateOptions::new(gib << 30).replace(true))
        .expect("create");
    let mut ps = Vec::new();
    loop {
        let p = r.try_malloc(size, ());
        if p.is_null() {
            break;
        }
        ps.push(p as usize);
    }
    for &p in ps.iter().step_by(2) {
        // SAFETY: allocated above with this size and class, freed once.
        unsafe { r.free(p as *mut u8, size, ()) };
    }
    let made = t.elapsed();
    let t = Instant::now();
    r.leave().expect("leave");
    let left = t.elapsed();
    let t = Instant::now();
    let options = OpenOptions::new().check_lists_at_open(at_open);
    let r = SharedCohort::<()>::open(place, options).expect("open");
    let opened = t.elapsed();
    let t = Instant::now();
    let first = r.malloc(size, ());
    let first_alloc = t.elapsed();
    assert!(!first.is_null());
    // SAFETY: allocated just above with this size and class.
    unsafe { r.free(first, size, ()) };
    let t = Instant::now();
    // SAFETY: no other thread or process uses the region.
    let v = unsafe { r.verify() }.expect("consistent");
    let verified = t.elapsed();
    drop(r);
    let _ = std::fs::remove_file(&path);
    println!(
        "{gib} GiB of {size} B slots: {} slots made, {} free; fill {made:.2?}, leave {left:.2?}, \
         open ({}) {opened:.3?}, first malloc {first_alloc:.3?}, verify {verified:.3?} \
         ({} blocks, {} live)",
        ps.len(),
        ps.len().div_ceil(2),
        if at_open { "lists at open" } else { "lazy" },
        v.blocks,
        v.live
    );
}
