//! A region in caller memory that a fork child gets no copy of (advised `MADV_DONTFORK`, as
//! RDMA libraries advise registered buffers) or gets zeroed (`MADV_WIPEONFORK`): the fork
//! handlers leave it alone in the child, whose other instances go on as before; the child
//! may drop the instance; a call that needs the region aborts with a message naming it,
//! instead of a fault or a walk of zeros.

mod red_team_common;

use cohort::Cohort;
use red_team_common::{advised_region, child_with_stderr};

cohort::lifetime_classes! {
    enum Life { Short }
}

const CAP: usize = 16 << 20;

/// Another instance, used before the region (so its heap comes after the region's on the
/// thread's list, behind a heap the child cannot read), keeps its objects and serves the
/// child; the child may drop the region's instance; the parent goes on with the region.
#[test]
fn a_child_without_the_region_goes_on_with_its_other_instances() {
    for (advice, shared) in [
        (libc::MADV_DONTFORK, false),
        (libc::MADV_DONTFORK, true),
        (libc::MADV_WIPEONFORK, false),
    ] {
        let other = Cohort::<Life>::new();
        let kept = other.malloc(48, Life::Short);
        // SAFETY: 48 bytes of ours.
        unsafe { kept.write_bytes(0x5a, 48) };
        let region = advised_region(advice, shared, CAP);
        let p = region.malloc(64, Life::Short);
        assert!(!p.is_null());
        let (ended, stderr) = child_with_stderr(|| {
            for _ in 0..1000 {
                let q = other.malloc(48, Life::Short);
                assert!(!q.is_null() && q != kept);
                // SAFETY: allocated above with this size and class.
                unsafe { other.free(q, 48, Life::Short) };
            }
            // SAFETY: the parent's object, copied into the child.
            assert!(unsafe { std::slice::from_raw_parts(kept, 48) }
                .iter()
                .all(|&b| b == 0x5a));
            // SAFETY: the child's only thread.
            if let Err(e) = unsafe { other.verify() } {
                panic!("verify: {e}");
            }
            // SAFETY: the child's own copy of the instance, dropped once here (the
            // parent's is the parent's).
            drop(unsafe { std::ptr::read(&region) });
        });
        assert_eq!(ended, Ok(0), "advice {advice}, shared {shared}: {stderr}");
        // The parent's region is whole.
        // SAFETY: allocated above with this size and class.
        unsafe { region.free(p, 64, Life::Short) };
        assert!(!region.malloc(64, Life::Short).is_null());
        // SAFETY: no other thread uses the region.
        if let Err(e) = unsafe { region.verify() } {
            panic!("verify: {e}");
        }
        core::mem::forget(region);
        // SAFETY: allocated above with this size and class.
        unsafe { other.free(kept, 48, Life::Short) };
    }
}

/// A child that allocates from the region it has no copy of is stopped with a message
/// naming the region, not a fault (nor, for a zeroed copy, allocations from zeros).
#[test]
fn a_child_using_a_region_it_did_not_get_aborts_naming_it() {
    for (advice, shared) in [
        (libc::MADV_DONTFORK, false),
        (libc::MADV_DONTFORK, true),
        (libc::MADV_WIPEONFORK, false),
    ] {
        let region = advised_region(advice, shared, CAP);
        let p = region.malloc(64, Life::Short);
        assert!(!p.is_null());
        let (ended, stderr) = child_with_stderr(|| {
            let q = region.malloc(64, Life::Short);
            eprintln!("child: malloc returned {q:?}");
        });
        assert_eq!(
            ended,
            Err(libc::SIGABRT),
            "advice {advice}, shared {shared}: {stderr}"
        );
        assert!(
            stderr.contains("is not in this process"),
            "advice {advice}, shared {shared}: {stderr}"
        );
        // SAFETY: allocated above with this size and class.
        unsafe { region.free(p, 64, Life::Short) };
        core::mem::forget(region);
    }
}
