//! Named regions: every bad input is a clear error that leaves the region as it was;
//! persistence of a linked structure in a file across processes and addresses; unrelated
//! processes opening a shared-memory region by name; racing creators.
//!
//! Other processes are this test binary run again (`child` below, an ignored test run
//! with `--ignored --exact child`), told what to do by `COHORT_PERSIST_ROLE`.

use cohort::{CreateOptions, Off, OpenOptions, Place, RegionError, SharedCohort};
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

cohort::lifetime_classes! {
    enum Three { A, B, C }
}

cohort::lifetime_classes! {
    /// As many classes as `Life`, named otherwise.
    enum Renamed { Brief, Lasting }
}

const MIB: usize = 1 << 20;

/// A node of the persisted list: a link by offset and a payload that checks itself.
#[repr(C)]
struct Node {
    next: Option<Off<Node>>,
    value: u64,
    check: u64,
}

fn check_of(value: u64) -> u64 {
    value.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5555
}

/// A path in the temporary directory, unique to this process and `tag`, removed first.
fn temp_file(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("cohort-persist-{tag}-{}", std::process::id()));
    let _ = fs::remove_file(&p);
    p
}

fn shm_name(tag: &str) -> String {
    let name = format!("/cohort-persist-{tag}-{}", std::process::id());
    let _ = SharedCohort::<Life>::remove(Place::SharedMemory(&name));
    name
}

/// Runs this binary's `child` test with `role` and `arg`, and returns its output.
fn run_child(role: &str, arg: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("COHORT_PERSIST_ROLE", role)
        .env("COHORT_PERSIST_ARG", arg)
        .output()
        .unwrap()
}

fn child_ok(role: &str, arg: &str) -> String {
    let out = run_child(role, arg);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {role} failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The value a child printed as `key=value` (the test harness may print before it on the
/// same line).
fn printed(stdout: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    let at = stdout
        .find(&prefix)
        .unwrap_or_else(|| panic!("no {key} in {stdout}"));
    let digits: String = stdout[at + prefix.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

/// Overwrites `bytes` at `at` in the file.
fn patch(path: &Path, at: u64, bytes: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(bytes).unwrap();
}

fn open_file<L: cohort::Lifetime>(path: &Path) -> Result<SharedCohort<L>, RegionError> {
    SharedCohort::<L>::open(
        Place::File(path),
        OpenOptions::new().timeout(Duration::from_millis(200)),
    )
}

#[test]
fn every_bad_input_is_a_clear_error_and_leaves_the_region_as_it_was() {
    let path = temp_file("bad");
    let place = Place::File(&path);
    // Open of a missing name.
    let e = open_file::<Life>(&path).unwrap_err();
    assert!(matches!(e, RegionError::NotFound { .. }), "{e}");
    assert!(e.to_string().contains("no region named"), "{e}");
    // Create, then create again: the name is taken.
    let region = SharedCohort::<Life>::create(place, CreateOptions::new(16 * MIB)).unwrap();
    let e = SharedCohort::<Life>::create(place, CreateOptions::new(16 * MIB)).unwrap_err();
    assert!(matches!(e, RegionError::AlreadyExists { .. }), "{e}");
    // A process opens a region once: a second opening is refused, named so, and the first
    // goes on.
    let e = open_file::<Life>(&path).unwrap_err();
    assert!(matches!(e, RegionError::AlreadyOpen { .. }), "{e}");
    assert!(e.to_string().contains("open already"), "{e}");
    let p = region.malloc(40, Life::Short);
    assert!(!p.is_null());
    // SAFETY: allocated just above.
    unsafe { region.free(p, 40, Life::Short) };
    drop(region);
    let pristine = fs::read(&path).unwrap();
    // Another number of lifetime classes.
    let e = open_file::<Three>(&path).unwrap_err();
    assert!(
        matches!(
            e,
            RegionError::LifetimeClasses {
                expected: 3,
                found: 2
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("lifetime classes"), "{e}");
    assert!(
        fs::read(&path).unwrap() == pristine,
        "a refused open writes nothing"
    );
    // As many lifetime classes, of other names.
    let e = open_file::<Renamed>(&path).unwrap_err();
    assert!(matches!(e, RegionError::LifetimeNames { .. }), "{e}");
    assert!(e.to_string().contains("other names"), "{e}");
    assert!(
        fs::read(&path).unwrap() == pristine,
        "a refused open writes nothing"
    );
    // Bad magic, another layout version, a damaged header.
    type Case<'a> = (u64, &'a [u8], fn(&RegionError) -> bool);
    let cases: [Case; 4] = [
        (0, b"NOTCOHRT", |e| {
            matches!(e, RegionError::BadMagic { .. })
        }),
        (8, &[9], |e| {
            matches!(
                e,
                RegionError::Version {
                    what: "region",
                    found: 9,
                    ..
                }
            )
        }),
        (128, &[0xee], |e| {
            matches!(
                e,
                RegionError::Version {
                    what: "instance state",
                    ..
                }
            )
        }),
        (72, &[0xff], |e| matches!(e, RegionError::Corrupt { .. })),
    ];
    for (at, bytes, expected) in cases {
        fs::write(&path, &pristine).unwrap();
        patch(&path, at, bytes);
        let before = fs::read(&path).unwrap();
        let e = open_file::<Life>(&path).unwrap_err();
        assert!(expected(&e), "patch at {at}: {e}");
        assert!(fs::read(&path).unwrap() == before, "left as it was: {e}");
    }
    // Truncated.
    fs::write(&path, &pristine[..pristine.len() / 2]).unwrap();
    let e = open_file::<Life>(&path).unwrap_err();
    assert!(matches!(e, RegionError::Truncated { .. }), "{e}");
    fs::write(&path, &pristine[..100]).unwrap();
    let e = open_file::<Life>(&path).unwrap_err();
    assert!(
        matches!(
            e,
            RegionError::Truncated {
                expected: 4096,
                found: 100
            }
        ),
        "{e}"
    );
    // Garbage.
    let garbage: Vec<u8> = (0..pristine.len() as u64)
        .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
        .collect();
    fs::write(&path, &garbage).unwrap();
    let e = open_file::<Life>(&path).unwrap_err();
    assert!(matches!(e, RegionError::BadMagic { .. }), "{e}");
    // Another geometry: a process whose page size differs.
    fs::write(&path, &pristine).unwrap();
    let out = child_ok("open-expect-error", path.to_str().unwrap());
    assert!(out.contains("page size"), "{out}");
    // A capacity that holds no block.
    fs::remove_file(&path).unwrap();
    let e = SharedCohort::<Life>::create(place, CreateOptions::new(MIB)).unwrap_err();
    assert!(
        matches!(
            e,
            RegionError::Capacity {
                minimum: Some(_),
                ..
            }
        ),
        "{e}"
    );
    assert!(!path.exists(), "a refused create leaves no file");
    // Bad names.
    let e = SharedCohort::<Life>::create(
        Place::SharedMemory("no-slash"),
        CreateOptions::new(16 * MIB),
    )
    .unwrap_err();
    assert!(matches!(e, RegionError::InvalidName { .. }), "{e}");
    let e = SharedCohort::<Life>::remove(Place::File(Path::new(""))).unwrap_err();
    assert!(matches!(e, RegionError::InvalidName { .. }), "{e}");
    // Replacing takes the name over.
    fs::write(&path, b"junk").unwrap();
    let region =
        SharedCohort::<Life>::create(place, CreateOptions::new(16 * MIB).replace(true)).unwrap();
    region.destroy().unwrap();
    assert!(!path.exists());
}

/// Builds a list of `n` nodes through root slot 0 in a new file region (a child process).
fn build_list(path: &Path, n: u64) {
    let region =
        SharedCohort::<Life>::create(Place::File(path), CreateOptions::new(64 * MIB)).unwrap();
    let mut head = None;
    for value in 0..n {
        let node = Node {
            next: head,
            value,
            check: check_of(value),
        };
        head = Some(region.new_in(node, Life::Long).expect("memory"));
    }
    region.set_root(0, head);
    println!(
        "base={}",
        region.ptr(head.unwrap()) as usize - head.unwrap().get() as usize
    );
    region.leave().unwrap();
}

/// Walks the list of root slot 0, checks and frees it (a child process). The builder's
/// base is taken first (a reservation over it), so the region maps at another address.
fn walk_and_free(path: &Path, builder_base: usize) {
    // SAFETY: a new inaccessible mapping, at the builder's base if that range is free here;
    // it is never touched and lives until the process ends.
    let hold = unsafe {
        libc::mmap(
            builder_base as *mut libc::c_void,
            64 * MIB,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert_ne!(hold, libc::MAP_FAILED);
    let region = open_file::<Life>(path).unwrap();
    let head = region.root::<Node>(0).expect("the root survives");
    let base = region.ptr(head) as usize - head.get() as usize;
    assert_ne!(
        base, builder_base,
        "mapped at another address than the builder's"
    );
    println!("base={base}");
    let (mut count, mut expected, mut at) = (0u64, None, Some(head));
    while let Some(off) = at {
        // SAFETY: every link of the list names a live node (built by build_list).
        let node = unsafe { region.get(off) };
        assert_eq!(node.check, check_of(node.value), "node {count} intact");
        if let Some(e) = expected {
            assert_eq!(node.value, e, "in order");
        }
        expected = node.value.checked_sub(1);
        at = node.next;
        // SAFETY: allocated by new_in in class Long, freed once; `node` is not used after.
        unsafe { region.free_in(off, Life::Long) };
        count += 1;
    }
    region.set_root::<Node>(0, None);
    println!("count={count}");
    assert!(region.is_empty(), "every node freed");
    region.destroy().unwrap();
}

#[test]
fn a_list_built_in_a_file_is_found_walked_and_freed_by_a_later_process() {
    let path = temp_file("list");
    let n = 50_000;
    let built = child_ok("build", &format!("{}|{n}", path.display()));
    assert!(path.exists(), "the file outlives its creator");
    let walked = child_ok(
        "walk",
        &format!("{}|{}", path.display(), printed(&built, "base")),
    );
    assert_eq!(printed(&walked, "count"), n);
    println!(
        "bases: {:#x} (builder), {:#x} (walker)",
        printed(&built, "base"),
        printed(&walked, "base")
    );
    assert!(!path.exists(), "destroyed");
}

/// Pushes `n` nodes onto the lock-free stack of root slot 1 (a child process), half of
/// them through a join of its concurrency group.
fn push_nodes(name: &str, id: u64, n: u64) {
    let options = OpenOptions::new().cgroup_hint(id as usize);
    let region = SharedCohort::<Life>::open(Place::SharedMemory(name), options).unwrap();
    let join = region.join_group().expect("a heap");
    for i in 0..n {
        let value = id << 32 | i;
        let node = Node {
            next: None,
            value,
            check: check_of(value),
        };
        let node = if i % 2 == 0 {
            region.new_in(node, Life::Short).expect("memory")
        } else {
            let p = join
                .alloc(std::alloc::Layout::new::<Node>(), Life::Short)
                .cast::<Node>();
            assert!(!p.is_null());
            // SAFETY: a fresh allocation of a Node.
            unsafe { p.write(node) };
            region.offset_of(p).expect("in the region")
        };
        let mut head = region.root::<Node>(1);
        loop {
            // SAFETY: the node is ours until published.
            unsafe { region.get_mut(node) }.next = head;
            match region.compare_exchange_root(1, head, Some(node)) {
                Ok(_) => break,
                Err(now) => head = now,
            }
        }
    }
}

#[test]
fn unrelated_processes_open_a_region_by_name_and_share_objects() {
    let name = shm_name("peers");
    let region =
        SharedCohort::<Life>::create(Place::SharedMemory(&name), CreateOptions::new(64 * MIB))
            .unwrap();
    let (children, n) = (3u64, 5_000u64);
    let handles: Vec<_> = (0..children)
        .map(|id| {
            let arg = format!("{name}|{id}|{n}");
            std::thread::spawn(move || child_ok("push", &arg))
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Every node of every process, once, intact; then freed here (remote frees into
    // blocks of processes that have left).
    let mut seen = vec![0u32; (children * n) as usize];
    let mut at = region.set_root::<Node>(1, None);
    while let Some(off) = at {
        // SAFETY: every link of the stack names a live node pushed by a child.
        let node = unsafe { region.get(off) };
        assert_eq!(node.check, check_of(node.value));
        let (id, i) = (node.value >> 32, node.value & 0xffff_ffff);
        seen[(id * n + i) as usize] += 1;
        at = node.next;
        // SAFETY: allocated with new_in in class Short, freed once.
        unsafe { region.free_in(off, Life::Short) };
    }
    assert!(seen.iter().all(|&c| c == 1), "every node once");
    assert!(region.is_empty());
    // SAFETY: no other process uses the region any more.
    unsafe { region.verify() }.unwrap();
    region.destroy().unwrap();
}

#[test]
fn verify_walks_a_region_whose_heaps_other_processes_left() {
    let name = shm_name("verify");
    let region =
        SharedCohort::<Life>::create(Place::SharedMemory(&name), CreateOptions::new(64 * MIB))
            .unwrap();
    child_ok("push", &format!("{name}|0|1000"));
    // SAFETY: no other process uses the region any more.
    let walked = unsafe { region.verify() }.unwrap();
    assert_eq!(walked.live, 1000);
    let mut at = region.set_root::<Node>(1, None);
    while let Some(off) = at {
        // SAFETY: every link names a live node pushed by the child; each freed once.
        at = unsafe { region.get(off) }.next;
        unsafe { region.free_in(off, Life::Short) };
    }
    assert!(region.is_empty());
    region.destroy().unwrap();
}

#[test]
fn of_racing_creators_exactly_one_formats_and_the_others_open() {
    let name = shm_name("race");
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let name = name.clone();
            std::thread::spawn(move || child_ok("create-or-open", &name))
        })
        .collect();
    let created: u64 = handles
        .into_iter()
        .map(|h| printed(&h.join().unwrap(), "created"))
        .sum();
    assert_eq!(created, 1);
    let region =
        SharedCohort::<Life>::open(Place::SharedMemory(&name), OpenOptions::new()).unwrap();
    assert!(
        region.root::<u64>(2).is_some(),
        "the creator's root is there"
    );
    region.destroy().unwrap();
}

/// Creates the region, or opens it when another process did (a child process).
fn create_or_open(name: &str) {
    let place = Place::SharedMemory(name);
    // 64 MiB: with 64 KiB pages the state area leaves a 16 MiB region too few blocks for
    // the two lifetime classes used here.
    match SharedCohort::<Life>::create(place, CreateOptions::new(64 * MIB)) {
        Ok(region) => {
            let off = region.new_in(7u64, Life::Long).unwrap();
            region.set_root(2, Some(off));
            println!("created=1");
        }
        Err(RegionError::AlreadyExists { .. }) => {
            let region = SharedCohort::<Life>::open(place, OpenOptions::new()).unwrap();
            // Ready means formatted: allocation works at once.
            let p = region.malloc(24, Life::Short);
            assert!(!p.is_null());
            // SAFETY: allocated just above.
            unsafe { region.free(p, 24, Life::Short) };
            println!("created=0");
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
#[ignore = "run by the other tests as a child process"]
fn child() {
    let role = std::env::var("COHORT_PERSIST_ROLE").expect("run by a test, with a role");
    let arg = std::env::var("COHORT_PERSIST_ARG").unwrap();
    let parts: Vec<&str> = arg.split('|').collect();
    match role.as_str() {
        "build" => build_list(Path::new(parts[0]), parts[1].parse().unwrap()),
        "walk" => walk_and_free(Path::new(parts[0]), parts[1].parse().unwrap()),
        "push" => push_nodes(
            parts[0],
            parts[1].parse().unwrap(),
            parts[2].parse().unwrap(),
        ),
        "create-or-open" => create_or_open(parts[0]),
        "open-expect-error" => {
            // Re-run with a page size other than the creator's (the variable is read once
            // per process; CI runs the tests with 64K too).
            if std::env::var_os("COHORT_PERSIST_REEXEC").is_none() {
                let other = match std::env::var("COHORT_PAGE_SIZE").as_deref() {
                    Ok("64K") => "128K",
                    _ => "64K",
                };
                let out = Command::new(std::env::current_exe().unwrap())
                    .args(["--ignored", "--exact", "child", "--nocapture"])
                    .env("COHORT_PERSIST_ROLE", role)
                    .env("COHORT_PERSIST_ARG", arg)
                    .env("COHORT_PERSIST_REEXEC", "1")
                    .env("COHORT_PAGE_SIZE", other)
                    .output()
                    .unwrap();
                assert!(out.status.success());
                print!("{}", String::from_utf8_lossy(&out.stdout));
                return;
            }
            let e = open_file::<Life>(Path::new(parts[0])).unwrap_err();
            assert!(matches!(e, RegionError::Geometry { .. }), "{e}");
            println!("error: {e}");
        }
        other => panic!("unknown role {other}"),
    }
}
