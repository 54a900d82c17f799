//! The threads fork children start (`test_support::raw_thread`): they run while std's own
//! lock of its threads' start and end is held (as a thread of the parent starting or
//! ending at the fork leaves it in the child), where a std-spawned thread waits for ever;
//! they hand back what their closure returned, or its panic; a scope joins every thread
//! before it returns or unwinds.

mod common;

use common::processes::{failure, in_child, wait_ok, wait_status};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use test_support::raw_thread;

/// A function of this binary whose address and symbol locate the binary in memory.
#[no_mangle]
extern "C" fn raw_thread_test_anchor() {}

/// The address of std's lock of its threads' stack-guard table (`stack_overflow::thread_info`'s
/// `LOCK`, a futex word: 0 free, 1 held), which a std-spawned thread takes as it starts and
/// as it ends: found in this binary's symbol table. Panics, saying so, if std no longer
/// has it (then the hang this file shows moved elsewhere in std).
fn std_thread_info_lock() -> &'static AtomicU32 {
    let elf = std::fs::read("/proc/self/exe").expect("read /proc/self/exe");
    let u16_at = |at: usize| u16::from_le_bytes(elf[at..at + 2].try_into().unwrap()) as usize;
    let u32_at = |at: usize| u32::from_le_bytes(elf[at..at + 4].try_into().unwrap()) as usize;
    let u64_at = |at: usize| u64::from_le_bytes(elf[at..at + 8].try_into().unwrap()) as usize;
    assert_eq!(&elf[..5], b"\x7fELF\x02", "a 64-bit ELF binary");
    let (sections, size, count) = (u64_at(0x28), u16_at(0x3a), u16_at(0x3c));
    let header = |i: usize| sections + i * size;
    // SHT_SYMTAB: the full symbol table (std's statics are local symbols).
    let symtab = (0..count)
        .map(header)
        .find(|&h| u32_at(h + 4) == 2)
        .expect("a symbol table (the test binary is not stripped)");
    let strings = u64_at(header(u32_at(symtab + 0x28)) + 0x18);
    let (first, bytes) = (u64_at(symtab + 0x18), u64_at(symtab + 0x20));
    let symbol = |name_ends: &[u8]| {
        (first..first + bytes).step_by(24).find_map(|s| {
            let name = &elf[strings + u32_at(s)..];
            let name = &name[..name.iter().position(|&b| b == 0).unwrap()];
            name.ends_with(name_ends).then(|| u64_at(s + 8))
        })
    };
    let anchor = symbol(b"raw_thread_test_anchor").expect("the anchor's symbol");
    let lock = symbol(b"14stack_overflow11thread_info4LOCK").expect(
        "std's stack_overflow::thread_info::LOCK (std changed: find the lock its spawn takes)",
    );
    let base = raw_thread_test_anchor as *const () as usize - anchor;
    // SAFETY: the address of a static of this binary (a futex word, 4 aligned bytes).
    unsafe { &*((base + lock) as *const AtomicU32) }
}

/// In a fork child (its only thread): marks std's thread lock held, as a thread of the
/// parent inside std's thread start or end at the fork leaves it in the child.
fn as_if_held_at_the_fork(lock: &AtomicU32) {
    lock.store(1, Ordering::SeqCst);
}

/// The hazard itself: with std's thread lock held at the fork, a std-spawned thread of the
/// child never runs its closure (it waits for the lock), so the child hangs until its
/// alarm. This is what the raw threads avoid (next test).
#[test]
fn a_std_spawned_thread_of_a_fork_child_waits_for_ever_on_std_s_lock_held_at_the_fork() {
    let lock = std_thread_info_lock();
    let child = in_child(3, || {
        as_if_held_at_the_fork(lock);
        let r = std::thread::spawn(|| 6 * 7).join();
        test_support::say(&format!("std's spawn returned {r:?}\n"));
    });
    let status = wait_status(child);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGALRM,
        "std's spawn with its lock held should hang until the alarm: status {status:#x}"
    );
}

#[test]
fn a_raw_thread_of_a_fork_child_runs_with_std_s_lock_held_at_the_fork() {
    let lock = std_thread_info_lock();
    wait_ok(in_child(60, || {
        as_if_held_at_the_fork(lock);
        assert_eq!(raw_thread::spawn(|| 6 * 7).join().unwrap(), 42);
        let words = [1u64, 2, 3];
        let sums = raw_thread::scope(|s| {
            let t = s.spawn(|| words.iter().sum::<u64>());
            let u = s.spawn(|| words.iter().product::<u64>());
            (t.join().unwrap(), u.join().unwrap())
        });
        assert_eq!(sums, (6, 6));
        assert_eq!(lock.load(Ordering::SeqCst), 1, "still held: never taken");
    }));
}

/// A thread's panic comes back from its join (as std's), and a fork child that unwraps it
/// fails, its status saying so.
#[test]
fn a_raw_threads_panic_comes_back_from_its_join_and_fails_the_child() {
    let panic = raw_thread::spawn(|| -> u32 { panic!("the thread's own panic") })
        .join()
        .expect_err("the thread panicked");
    assert_eq!(
        panic.downcast_ref::<&str>(),
        Some(&"the thread's own panic")
    );
    let child = in_child(60, || {
        raw_thread::spawn(|| panic!("a child thread's panic"))
            .join()
            .unwrap();
    });
    let status = wait_status(child);
    assert_eq!(
        failure("the child", status).as_deref(),
        Some("the child: status 0x100 (see its output)"),
        "the child exits 1 (its closure panicked)"
    );
}

/// A scope joins the threads its closure did not join: their borrows end with it, and a
/// panic of such a thread panics the scope; a joined thread's panic is its join's only.
#[test]
fn a_raw_scope_joins_its_threads_and_reports_an_unjoined_panic() {
    let ran = AtomicUsize::new(0);
    raw_thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| ran.fetch_add(1, Ordering::SeqCst));
        }
    });
    assert_eq!(
        ran.load(Ordering::SeqCst),
        3,
        "every thread ended with the scope"
    );
    let joined = raw_thread::scope(|s| s.spawn(|| panic!("joined")).join().is_err());
    assert!(joined, "the joined thread's panic is its join's");
    let unjoined = std::panic::catch_unwind(|| {
        raw_thread::scope(|s| {
            s.spawn(|| panic!("not joined"));
        })
    });
    let message = unjoined.expect_err("the scope panicked");
    assert_eq!(
        message.downcast_ref::<&str>(),
        Some(&"a thread of the scope panicked")
    );
}

/// The scope's closure panics while a thread it started still runs: the scope joins the
/// thread, then unwinds with the closure's panic.
#[test]
fn a_raw_scope_whose_closure_panics_joins_its_threads_first() {
    let ended = AtomicUsize::new(0);
    let go = AtomicUsize::new(0);
    let unwound = std::panic::catch_unwind(|| {
        raw_thread::scope(|s| {
            s.spawn(|| {
                while go.load(Ordering::SeqCst) == 0 {
                    std::thread::yield_now();
                }
                ended.fetch_add(1, Ordering::SeqCst);
            });
            go.store(1, Ordering::SeqCst);
            panic!("the scope's closure");
        })
    });
    assert_eq!(
        unwound.expect_err("unwound").downcast_ref::<&str>(),
        Some(&"the scope's closure")
    );
    assert_eq!(ended.load(Ordering::SeqCst), 1, "joined before the unwind");
}

/// A handle dropped unjoined detaches its thread, which runs to its end.
#[test]
fn a_dropped_raw_handle_leaves_its_thread_running() {
    wait_ok(in_child(60, || {
        let (tx, rx) = std::sync::mpsc::channel();
        drop(raw_thread::spawn(move || tx.send(7).unwrap()));
        assert_eq!(rx.recv().unwrap(), 7);
    }));
}
