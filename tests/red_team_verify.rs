//! Red-team attacks of session 11 on `verify`, the check a program runs when it suspects
//! damage: a block header overwritten by a buffer underflow from its first object must be
//! reported as an error, never make `verify` itself panic. A test that found a defect is
//! `#[ignore]`d with its number (RED-n), its owner and the exact failure.

use cohort::Cohort;

cohort::lifetime_classes! { enum Life { A } }

const BLOCK: usize = 2 << 20;

/// A program writes zeros over the 8 bytes at the start of the block its object lies in
/// (a stray write or an underflow from the block's first object): the block's owner and
/// key word. The block is its thread's current block. `verify` must say what is wrong.
///
/// RED-54: `verify` panics (`index out of bounds: the len is 163 but the index is 255` in
/// `Header::geometry`, from `check_lists`): the walk of the blocks takes the zeroed word
/// for an empty block, and the walk of the heaps' lists asks the class geometry of every
/// listed block before `check_listed` looks at its key. Found first after kill -9s
/// (red_team_seal_kills: a dead heap's list naming a block given back). Fixed (lead,
/// 859b8ed): such a block is reported.
#[test]
fn verify_reports_a_current_block_whose_header_word_was_zeroed() {
    for size in [16usize, 64, 1000, 8000] {
        let result = std::thread::spawn(move || {
            let a = Cohort::<Life>::new();
            let p = a.malloc(size, Life::A);
            assert!(!p.is_null());
            let base = (p as usize & !(BLOCK - 1)) as *mut u64;
            // SAFETY: the header's first word of the block holding `p` (the damage under
            // test; the block stays mapped).
            unsafe { base.write_volatile(0) };
            // SAFETY: no other thread uses `a`.
            let verified =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe { a.verify() }));
            // The instance is damaged: leak it rather than run its drop over the damage.
            std::mem::forget(a);
            match verified {
                Ok(Err(_)) => Ok(()),
                Ok(Ok(v)) => Err(format!("size {size}: verify found nothing: {v:?}")),
                Err(panic) => Err(format!(
                    "size {size}: verify panicked: {}",
                    panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                )),
            }
        })
        .join()
        .expect("the test thread");
        if let Err(msg) = result {
            panic!("{msg}");
        }
    }
}
