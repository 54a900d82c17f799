//! The stacks of fork children still running shortly before their alarm
//! (`common::processes::wait_status`): written by the test binary's own process only, one
//! child at a time, at most `MOST_STACK_DUMPS` per binary (an incident had 306 gdb
//! processes at once, one per hung child and grandchild). One test: the counts are the
//! process's.

mod common;

use common::processes::{in_child, stack_dumps, wait_ok, wait_status, MOST_STACK_DUMPS};

/// A child that hangs until its alarm, long enough (9 s) to be looked into before it.
fn hung_child() -> libc::pid_t {
    in_child(9, || loop {
        // SAFETY: pause has no preconditions; the alarm ends the child.
        unsafe { libc::pause() };
    })
}

fn died_of_its_alarm(status: i32) -> bool {
    libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM
}

#[test]
fn hung_children_have_a_few_stacks_written_one_at_a_time_and_none_by_a_child() {
    // A child of the test waits for a hung child of its own: it writes no stacks.
    let waiter = in_child(60, || {
        let status = wait_status(hung_child());
        assert!(died_of_its_alarm(status), "the grandchild: {status:#x}");
        assert_eq!(stack_dumps(), (0, 0), "a child wrote its child's stacks");
    });
    let hung: Vec<libc::pid_t> = (0..MOST_STACK_DUMPS + 2).map(|_| hung_child()).collect();
    std::thread::scope(|s| {
        for &pid in &hung {
            s.spawn(move || {
                let status = wait_status(pid);
                assert!(died_of_its_alarm(status), "child {pid}: {status:#x}");
            });
        }
    });
    wait_ok(waiter);
    let (dumps, at_once) = stack_dumps();
    assert!(
        (1..=MOST_STACK_DUMPS).contains(&dumps),
        "{dumps} dumps of {} hung children",
        hung.len()
    );
    assert_eq!(at_once, 1, "dumps at once");
}
