//! Without `membarrier` (a kernel before 4.14, or a seccomp filter that refuses it, as
//! here) a thread keeps no chain of remote frees: every remote free is pushed to its block
//! at once, so that the quick way of the remote free, whose holder's fence is a compiler
//! fence, never acts where that fence is not enough (`crate::remote`'s module docs: a
//! chain only once the fences are known asymmetric). Its own test binary: the fences'
//! choice is made once per process, at the first remote free, and this test must make it
//! under the filter.

mod common;

use cohort::Cohort;
use common::batches::frees_not_at_their_block_while_the_freer_runs;
use common::seccomp::refuse_membarrier;

cohort::lifetime_classes! {
    enum Life { A }
}

/// Before (a chain kept whatever the fences' mode, its holder's fence a full fence) this
/// read 1 to 8: the freer's last chain pending; the quick way then relied on testing the
/// mode on every remote free.
#[test]
fn without_membarrier_every_remote_free_reaches_its_block_at_once() {
    refuse_membarrier();
    let a = Cohort::<Life>::new();
    assert_eq!(
        frees_not_at_their_block_while_the_freer_runs(&a, Life::A),
        0,
        "slots another thread freed had not reached their block while it ran \
         (a chain kept without membarrier)"
    );
}
