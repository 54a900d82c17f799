//! Red team (session 22) of the test children's panic message (`tests/common/processes.rs`):
//! a child of `in_child` made while another thread of the test's process is inside a panic
//! (its hook runs with std's hook lock held for reading, as a misuse test's does on
//! purpose) ends as its closure says: exit 0 when it returns, 1 when it panics. On
//! 9356bc8 the child set its own hook at its start (`set_hook`, the lock for writing) and
//! waited for that reader for ever: a fork child of `remote_batch` hung so until its alarm.
//!
//! The schedule is forced: the other thread's panic waits inside the hook (this binary's
//! own, which runs the one it replaced after) until the children have ended.

#[path = "red_team_common/mod.rs"]
mod red_team_common;

use red_team_common::{in_child, wait};
use std::sync::atomic::{AtomicU8, Ordering::SeqCst};
use std::time::Duration;

/// The thread that panics on purpose.
const PANICKER: &str = "panicking on purpose";

/// 1 once the panicking thread is inside the hook; 2 lets it go on.
static INSIDE: AtomicU8 = AtomicU8::new(0);

#[test]
fn a_fork_child_made_while_another_thread_panics_ends_as_its_closure_says() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().name() == Some(PANICKER) {
            INSIDE.store(1, SeqCst);
            while INSIDE.load(SeqCst) != 2 {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        previous(info);
    }));
    let panicker = std::thread::Builder::new()
        .name(PANICKER.into())
        .spawn(|| std::panic::catch_unwind(|| panic!("on purpose")).is_err())
        .expect("a thread");
    while INSIDE.load(SeqCst) != 1 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let returns = in_child(10, || {});
    let panics = in_child(10, || panic!("on purpose, in the fork child"));
    let ended = (wait(returns), wait(panics));
    INSIDE.store(2, SeqCst);
    assert!(panicker.join().expect("the panicking thread"));
    assert_eq!(
        ended,
        (Ok(0), Ok(1)),
        "the children (Ok: exit code, Err: signal; 14 is SIGALRM: it hung)"
    );
}
