//! Cohort as the `#[global_allocator]`: std collections, zero-sized and over-aligned types,
//! objects sent between threads and dropped there, threads that exit while their allocations
//! live on, and thread-local destructors that allocate during thread exit. Every test checks
//! the contents it built. The test harness itself (its threads, channels and output capture)
//! runs on Cohort too.

mod common;

use common::{fill, mismatch, Rng};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Mutex};
use std::thread;

cohort::lifetime_classes! {
    /// The program's own lifetime classes, beside std's allocations.
    enum Life { Frame, Long }
}

#[global_allocator]
static A: cohort::Cohort<Life> = cohort::Cohort::new();

/// Bytes of a patterned buffer of `len` bytes whose pattern is keyed by `key`.
fn patterned(key: u64, len: usize) -> Box<[u8]> {
    let mut b = vec![0u8; len].into_boxed_slice();
    // SAFETY: `b` holds `len` bytes.
    unsafe { fill(b.as_mut_ptr(), key, len) };
    b
}

fn assert_patterned(b: &[u8], key: u64, what: &str) {
    // SAFETY: `b` holds `b.len()` bytes.
    let bad = unsafe { mismatch(b.as_ptr(), key, b.len()) };
    assert_eq!(
        bad,
        None,
        "{what}: {} bytes at {:p} corrupted",
        b.len(),
        b.as_ptr()
    );
}

#[test]
fn vec_growth_and_shrink() {
    let mut v: Vec<u64> = Vec::new();
    for i in 0..300_000u64 {
        v.push(i * 3);
    }
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
    v.truncate(1000);
    v.shrink_to_fit();
    assert!(v.capacity() >= 1000);
    assert!(v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3));
    for n in (0..1000).rev() {
        v.truncate(n);
        v.shrink_to_fit();
        assert!(
            v.iter().enumerate().all(|(i, &x)| x == i as u64 * 3),
            "len {n}"
        );
    }
    // Exact capacities: every size from 1 B to 2 KiB, then steps of 1/7 up to 3 MiB and
    // back down, through reserve_exact and shrink_to_fit (realloc within and across size
    // classes, and of large allocations).
    let byte = |i: usize| (i % 251) as u8;
    let mut b: Vec<u8> = Vec::new();
    let mut len = 1;
    while len < 3 << 20 {
        let old = b.len();
        b.reserve_exact(len - old);
        b.extend((old..len).map(byte));
        assert!(
            b.iter().enumerate().all(|(i, &x)| x == byte(i)),
            "growing to {len}"
        );
        len = if len < 2048 { len + 1 } else { len + len / 7 };
    }
    while len > 0 {
        len = len * 6 / 7;
        b.truncate(len);
        b.shrink_to_fit();
        assert!(
            b.iter().enumerate().all(|(i, &x)| x == byte(i)),
            "shrinking to {len}"
        );
    }
}

#[test]
fn strings() {
    let mut s = String::new();
    for i in 0..20_000 {
        s.push_str(&i.to_string());
        s.push(',');
    }
    let parsed: Vec<usize> = s
        .trim_end_matches(',')
        .split(',')
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(parsed, (0..20_000).collect::<Vec<_>>());
    let words: Vec<String> = (0..10_000)
        .map(|i| format!("{i:x}-{}", "é".repeat(i % 50)))
        .collect();
    for (i, w) in words.iter().enumerate() {
        assert_eq!(*w, format!("{i:x}-{}", "é".repeat(i % 50)));
    }
    let joined = words.concat();
    assert_eq!(joined.len(), words.iter().map(String::len).sum::<usize>());
}

#[test]
fn hash_map_and_btree_map() {
    let mut h: HashMap<u64, String> = HashMap::new();
    let mut t: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut rng = Rng::new(3);
    for round in 0..4u64 {
        for i in 0..20_000u64 {
            let k = rng.next_u64() % 50_000;
            h.insert(k, format!("{k}/{round}"));
            t.entry(format!("{:08}", k % 7919)).or_default().push(k);
            if i % 3 == 0 {
                h.remove(&(rng.next_u64() % 50_000));
            }
        }
        for (k, v) in &h {
            assert!(v.starts_with(&format!("{k}/")), "{k} -> {v}");
        }
        for (k, v) in &t {
            let k: u64 = k.parse().unwrap();
            assert!(v.iter().all(|x| x % 7919 == k));
        }
        h.shrink_to_fit();
        t.retain(|_, v| v.len() % 2 == 0);
    }
    let set: HashSet<Box<[u8]>> = (0..3000).map(|i| patterned(i, i as usize % 700)).collect();
    for i in 0..3000 {
        assert!(set.contains(&patterned(i, i as usize % 700)));
    }
}

#[test]
fn boxed_slices_of_many_sizes() {
    let mut sizes: Vec<usize> = (0..=2048).collect();
    let mut n = 2049;
    while n <= 20_000 {
        sizes.push(n);
        n += 61;
    }
    sizes.extend([16 << 10, (16 << 10) + 1, 64 << 10, 1 << 20, (4 << 20) + 3]);
    let boxes: Vec<Box<[u8]>> = sizes.iter().map(|&n| patterned(n as u64, n)).collect();
    for (b, &n) in boxes.iter().zip(&sizes) {
        assert_eq!(b.len(), n);
        assert_patterned(b, n as u64, "boxed slice");
    }
    // Free every other one, allocate again into the holes, check all.
    let mut boxes: Vec<Option<Box<[u8]>>> = boxes.into_iter().map(Some).collect();
    for b in boxes.iter_mut().step_by(2) {
        *b = None;
    }
    let again: Vec<Box<[u8]>> = sizes.iter().map(|&n| patterned(!(n as u64), n)).collect();
    for ((b, a), &n) in boxes.iter().zip(&again).zip(&sizes) {
        if let Some(b) = b {
            assert_patterned(b, n as u64, "kept slice");
        }
        assert_patterned(a, !(n as u64), "new slice");
    }
}

#[test]
fn vec_deque() {
    let mut q: VecDeque<(u32, Box<u64>)> = VecDeque::new();
    let mut next_in = 0u32;
    let mut next_out = 0u32;
    let mut rng = Rng::new(11);
    for _ in 0..200_000 {
        if rng.chance(55) {
            q.push_back((next_in, Box::new(u64::from(next_in) * 7)));
            next_in += 1;
        } else if let Some((i, b)) = q.pop_front() {
            assert_eq!((i, *b), (next_out, u64::from(next_out) * 7));
            next_out += 1;
        }
        if rng.chance(1) {
            q.shrink_to_fit();
        }
    }
    assert_eq!(q.len() as u32, next_in - next_out);
}

#[test]
fn zero_sized_types() {
    #[derive(Debug, PartialEq)]
    struct Unit;
    #[repr(align(4096))]
    struct AlignedUnit;
    let v: Vec<()> = vec![(); 1 << 20];
    assert_eq!(v.len(), 1 << 20);
    let units: Vec<Box<Unit>> = (0..1000).map(|_| Box::new(Unit)).collect();
    assert!(units.iter().all(|u| **u == Unit));
    let aligned: Vec<Box<AlignedUnit>> = (0..100).map(|_| Box::new(AlignedUnit)).collect();
    for a in &aligned {
        assert_eq!(&**a as *const AlignedUnit as usize % 4096, 0);
    }
    let mut empty: Vec<u64> = Vec::with_capacity(0);
    empty.shrink_to_fit();
    assert!(empty.is_empty());
    let slice: Box<[u64]> = Vec::new().into_boxed_slice();
    assert!(slice.is_empty());
    let s = String::new();
    assert!(s.is_empty());
}

macro_rules! aligned_type {
    ($name:ident, $align:literal, $bytes:literal) => {
        #[repr(C, align($align))]
        #[derive(Clone)]
        struct $name {
            tag: u64,
            bytes: [u8; $bytes],
        }

        impl $name {
            fn new(tag: u64) -> Self {
                $name {
                    tag,
                    bytes: [tag as u8; $bytes],
                }
            }

            fn ok(&self, tag: u64) -> bool {
                self.tag == tag
                    && self.bytes.iter().all(|&b| b == tag as u8)
                    && self as *const Self as usize % $align == 0
            }
        }
    };
}

aligned_type!(Line, 64, 8);
aligned_type!(Page, 4096, 100);
aligned_type!(TwoPages, 8192, 16);
aligned_type!(BigPage, 4096, 20000);

#[test]
fn over_aligned_types() {
    fn exercise<T: Clone>(new: impl Fn(u64) -> T, ok: impl Fn(&T, u64) -> bool, n: u64) {
        let boxes: Vec<Box<T>> = (0..n).map(|i| Box::new(new(i))).collect();
        assert!(boxes.iter().enumerate().all(|(i, b)| ok(b, i as u64)));
        // Vec growth reallocates with the type's alignment.
        let mut v: Vec<T> = Vec::new();
        for i in 0..n {
            v.push(new(i));
            assert!(ok(&v[0], 0) && ok(&v[i as usize], i));
        }
        assert!(v.iter().enumerate().all(|(i, x)| ok(x, i as u64)));
        v.truncate(n as usize / 3);
        v.shrink_to_fit();
        assert!(v.iter().enumerate().all(|(i, x)| ok(x, i as u64)));
        let mut grow: Vec<T> = Vec::with_capacity(1);
        for i in 0..n {
            grow.reserve_exact(1);
            grow.push(new(i));
        }
        assert!(grow.iter().enumerate().all(|(i, x)| ok(x, i as u64)));
    }
    exercise(Line::new, Line::ok, 5000);
    exercise(Page::new, Page::ok, 300);
    exercise(TwoPages::new, TwoPages::ok, 100);
    exercise(BigPage::new, BigPage::ok, 40);
}

#[test]
fn objects_sent_to_other_threads_are_dropped_there() {
    const PRODUCERS: u64 = 4;
    const PER: u64 = 20_000;
    let (tx, rx) = mpsc::sync_channel::<(u64, Box<[u8]>, String)>(256);
    let rx = Arc::new(Mutex::new(rx));
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let rx = Arc::clone(&rx);
            thread::spawn(move || {
                let mut n = 0u64;
                loop {
                    let msg = rx.lock().unwrap().recv();
                    let Ok((key, bytes, text)) = msg else { break n };
                    assert_patterned(&bytes, key, "received bytes");
                    assert_eq!(text, format!("message {key}"));
                    n += 1;
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let tx = tx.clone();
            thread::spawn(move || {
                let mut rng = Rng::new(p);
                for i in 0..PER {
                    let key = p * PER + i;
                    let len = common::random_size(&mut rng, 128 << 10);
                    tx.send((key, patterned(key, len), format!("message {key}")))
                        .unwrap();
                }
            })
        })
        .collect();
    drop(tx);
    for p in producers {
        p.join().unwrap();
    }
    let received: u64 = consumers.into_iter().map(|c| c.join().unwrap()).sum();
    assert_eq!(received, PRODUCERS * PER);
}

#[test]
fn allocations_outlive_their_threads() {
    // A chain of threads, each receiving the previous thread's objects, checking them,
    // adding its own and exiting; the main thread checks and drops them all at the end.
    let mut carried: Vec<(u64, Box<[u8]>)> = Vec::new();
    for generation in 0..40u64 {
        carried = thread::spawn(move || {
            for (key, b) in &carried {
                assert_patterned(b, *key, "carried");
            }
            // Drop a third here: frees into the blocks of exited threads' heaps.
            let mut kept: Vec<_> = carried.into_iter().filter(|(k, _)| k % 3 != 0).collect();
            let mut rng = Rng::new(generation);
            for i in 0..300 {
                let key = generation * 1000 + i;
                kept.push((key, patterned(key, common::random_size(&mut rng, 64 << 10))));
            }
            kept
        })
        .join()
        .unwrap();
    }
    for (key, b) in &carried {
        assert_patterned(b, *key, "final");
    }
    // Many short threads at once, each leaving a Vec to a shared sink.
    let sink = Arc::new(Mutex::new(Vec::new()));
    let start = Arc::new(Barrier::new(16));
    let threads: Vec<_> = (0..16u64)
        .map(|t| {
            let (sink, start) = (Arc::clone(&sink), Arc::clone(&start));
            thread::spawn(move || {
                start.wait();
                let v: Vec<u64> = (0..1000 + t).map(|i| i ^ t).collect();
                sink.lock().unwrap().push((t, v));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let sink = Arc::try_unwrap(sink).unwrap().into_inner().unwrap();
    assert_eq!(sink.len(), 16);
    for (t, v) in sink {
        assert!(
            v.iter().enumerate().all(|(i, &x)| x == i as u64 ^ t) && v.len() == 1000 + t as usize
        );
    }
}

/// What an [`ExitWork`] destructor sends: its id, strings and bytes built during exit.
type ExitMessage = (u64, Vec<String>, Box<[u8]>);

/// A thread-local whose destructor allocates, frees and sends what it built to the main
/// thread: it runs during thread exit, before or after cohort's own exit hook.
struct ExitWork {
    tx: RefCell<Option<mpsc::Sender<ExitMessage>>>,
    id: Cell<u64>,
    held: RefCell<Vec<Box<[u8]>>>,
}

impl Drop for ExitWork {
    fn drop(&mut self) {
        let id = self.id.get();
        // Frees of objects allocated while the thread ran.
        for (i, b) in self.held.take().into_iter().enumerate() {
            assert_patterned(&b, id * 100 + i as u64, "held at exit");
        }
        // Allocations and frees during exit.
        let mut scratch = Vec::new();
        for i in 0..2000u64 {
            scratch.push(vec![i; (i % 50) as usize]);
        }
        assert!(scratch
            .iter()
            .enumerate()
            .all(|(i, v)| v.iter().all(|&x| x == i as u64)));
        drop(scratch);
        let strings: Vec<String> = (0..100).map(|i| format!("{id}:{i}")).collect();
        if let Some(tx) = self.tx.take() {
            let _ = tx.send((id, strings, patterned(id, 3000)));
        }
    }
}

thread_local! {
    // Touched before the thread's first allocation: its destructor is normally registered
    // before cohort's, so it runs after cohort's exit hook (destructors run last-in,
    // first-out).
    static EARLY: ExitWork = const {
        ExitWork { tx: RefCell::new(None), id: Cell::new(0), held: RefCell::new(Vec::new()) }
    };
    // Touched after allocating: runs before cohort's exit hook.
    static LATE: ExitWork = const {
        ExitWork { tx: RefCell::new(None), id: Cell::new(0), held: RefCell::new(Vec::new()) }
    };
}

#[test]
fn thread_local_destructors_allocate_during_exit() {
    let (tx, rx) = mpsc::channel();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let tx = tx.clone();
            thread::spawn(move || {
                EARLY.with(|e| e.id.set(2 * t + 1));
                let _warm = std::hint::black_box(Box::new([0u8; 100]));
                LATE.with(|l| l.id.set(2 * t + 2));
                for (slot, id) in [(&EARLY, 2 * t + 1), (&LATE, 2 * t + 2)] {
                    slot.with(|w| {
                        *w.tx.borrow_mut() = Some(tx.clone());
                        let held = (0..50).map(|i| patterned(id * 100 + i, i as usize * 37));
                        w.held.borrow_mut().extend(held);
                    });
                }
            })
        })
        .collect();
    drop(tx);
    for t in threads {
        t.join().unwrap();
    }
    let mut seen: Vec<u64> = Vec::new();
    for (id, strings, bytes) in rx {
        assert_eq!(
            strings,
            (0..100).map(|i| format!("{id}:{i}")).collect::<Vec<_>>()
        );
        assert_patterned(&bytes, id, "sent at exit");
        seen.push(id);
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=16).collect::<Vec<_>>());
}

#[test]
fn mixed_churn_across_threads() {
    // Each thread keeps a random working set of patterned buffers and swaps some with the
    // other threads through a shared table.
    const THREADS: usize = 4;
    type Slot = Mutex<Option<(u64, Box<[u8]>)>>;
    let table: Arc<Vec<Slot>> = Arc::new((0..256).map(|_| Mutex::new(None)).collect());
    let threads: Vec<_> = (0..THREADS as u64)
        .map(|t| {
            let table = Arc::clone(&table);
            thread::spawn(move || {
                let mut rng = Rng::new(100 + t);
                let mut mine: Vec<(u64, Box<[u8]>)> = Vec::new();
                for i in 0..20_000u64 {
                    let key = common::mix(t << 32 | i);
                    mine.push((
                        key,
                        patterned(key, common::random_size(&mut rng, 256 << 10)),
                    ));
                    if mine.len() > 200 {
                        let (k, b) = mine.swap_remove(rng.below(mine.len()));
                        assert_patterned(&b, k, "own");
                    }
                    if rng.chance(25) {
                        let (k, b) = mine.swap_remove(rng.below(mine.len()));
                        let old = table[rng.below(256)].lock().unwrap().replace((k, b));
                        if let Some((k, b)) = old {
                            assert_patterned(&b, k, "swapped");
                        }
                    }
                }
                for (k, b) in mine {
                    assert_patterned(&b, k, "final own");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for slot in table.iter() {
        if let Some((k, b)) = slot.lock().unwrap().take() {
            assert_patterned(&b, k, "left in table");
        }
    }
}

/// Formatting the global allocator allocates through it: `Debug` reads atomics only, so it
/// never waits for a lock the allocation needs, and it creates nothing.
#[test]
fn the_global_allocator_formats_itself() {
    let s = format!("{A:?}");
    assert!(s.starts_with("Cohort { instance: Some("), "{s}");
    for field in ["reservation", "region: 0x", "heaps", "lock_acquisitions"] {
        assert!(s.contains(field), "{field} in {s}");
    }
    let unused: cohort::Cohort<Life> = cohort::Cohort::new();
    let s = format!("{unused:?}");
    assert!(
        s.starts_with("Cohort { instance: None") && !s.contains("region"),
        "{s}"
    );
    assert!(
        format!("{unused:?}").contains("instance: None"),
        "formatting created nothing"
    );
}

/// The environment variable that tells a test it is the child of
/// [`releasing_a_class_leaves_std_allocations_alone`].
const CHILD: &str = "COHORT_GLOBAL_RELEASE_CHILD";

/// std's allocations (through `GlobalAlloc`) live in a lifetime class of their own, which
/// no variant of `Life` names: releasing `Life::Frame`, the first variant, must leave the
/// thread's `String`s, `Vec`s and `Box`es alone. Run in a child process, since a failure
/// frees the test harness's own memory under it.
#[test]
fn releasing_a_class_leaves_std_allocations_alone() {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new(exe)
        .args([
            "--exact",
            "release_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && said.contains("std allocations intact"),
        "the child failed ({}): {said}",
        out.status
    );
}

/// The child of [`releasing_a_class_leaves_std_allocations_alone`] (does nothing unless
/// run as that child).
#[test]
fn release_child() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let strings: Vec<String> = (0..200).map(|i| format!("string number {i}")).collect();
    let boxes: Vec<Box<[u8]>> = (0..50)
        .map(|i| patterned(i, 16 + i as usize * 40))
        .collect();
    let big = patterned(99, 100_000);
    let frame = A.malloc(48, Life::Frame);
    assert!(!frame.is_null());
    // SAFETY: the only allocation of `Frame` is `frame`, never used again.
    let released = unsafe { A.release_class(Life::Frame) };
    assert_eq!((released.slots, released.large), (1, 0), "{released:?}");
    // New allocations must not reuse the strings' slots.
    let again: Vec<String> = (0..200).map(|i| format!("another string {i:>5}")).collect();
    for (i, s) in strings.iter().enumerate() {
        assert_eq!(s, &format!("string number {i}"));
    }
    for (i, b) in boxes.iter().enumerate() {
        assert_patterned(b, i as u64, "a box");
    }
    assert_patterned(&big, 99, "a large box");
    drop((strings, boxes, big, again));
    println!("std allocations intact");
}

/// Statistics show std's allocations under the class "global", apart from the program's.
#[test]
fn stats_show_std_allocations_as_global() {
    let keep: Vec<Box<[u8; 40]>> = (0..100).map(|_| Box::new([7; 40])).collect();
    let s = A.stats();
    let global: usize = s
        .heads
        .iter()
        .filter(|h| h.life_name == "global")
        .map(|h| h.live)
        .sum();
    assert!(global >= keep.len(), "{s}");
    assert!(s
        .heads
        .iter()
        .all(|h| h.life_name != "Frame" || h.live == 0 || std::env::var_os(CHILD).is_some()));
    assert!(format!("{s}").contains("global"), "{s}");
}

/// Scopes on the global allocator itself, from threads at once, with std's allocations
/// (through `GlobalAlloc`, the `"global"` class) made inside and outside them: each scope's
/// release frees only its own, and std's survive; a scope in a thread-local destructor at
/// thread exit (where std may allocate too) is released.
#[test]
fn scopes_on_the_global_allocator() {
    use cohort::allocator_api2::vec::Vec as ScopeVec;
    struct AtExit;
    impl Drop for AtExit {
        fn drop(&mut self) {
            let s = String::from("std, during exit");
            let n = A.scope(|f| {
                let mut v = ScopeVec::new_in(f);
                v.extend_from_slice(s.as_bytes());
                v.len()
            });
            assert_eq!(n, s.len());
        }
    }
    thread_local! {
        static AT_EXIT: AtExit = const { AtExit };
    }
    let kept: Vec<Box<[u8]>> = (0..50)
        .map(|i| patterned(i, 10 + i as usize * 300))
        .collect();
    thread::scope(|sc| {
        for t in 0..4u64 {
            sc.spawn(move || {
                AT_EXIT.with(|_| ());
                for round in 0..30u64 {
                    let mut std_made = Vec::new();
                    A.scope(|frame| {
                        let mut mine = ScopeVec::new_in(frame);
                        for i in 0..20u64 {
                            let key = t * 1000 + round * 20 + i;
                            mine.push(patterned_in_scope(
                                frame,
                                key,
                                1 + (key as usize * 37) % 20_000,
                            ));
                            std_made.push(patterned(key, 100 + i as usize));
                        }
                        for (i, b) in mine.iter().enumerate() {
                            assert_patterned(b, t * 1000 + round * 20 + i as u64, "scope");
                        }
                    });
                    for (i, b) in std_made.iter().enumerate() {
                        assert_patterned(b, t * 1000 + round * 20 + i as u64, "std in a scope");
                    }
                }
            });
        }
    });
    for (i, b) in kept.iter().enumerate() {
        assert_patterned(b, i as u64, "std outside the scopes");
    }
    // (No check that the scope classes are empty here: the threads' exit destructors may
    // still be running their scopes; tests/scope.rs checks that case on its own instance.)
}

/// `len` bytes patterned for `key`, in a scope.
fn patterned_in_scope<'s>(
    frame: cohort::ClassScope<'s, Life>,
    key: u64,
    len: usize,
) -> cohort::allocator_api2::boxed::Box<[u8], cohort::ClassScope<'s, Life>> {
    let mut b = cohort::allocator_api2::vec::Vec::with_capacity_in(len, frame);
    b.resize(len, 0u8);
    // SAFETY: `len` bytes.
    unsafe { fill(b.as_mut_ptr(), key, len) };
    b.into_boxed_slice()
}
