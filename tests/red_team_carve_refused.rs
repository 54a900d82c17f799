//! Red team (session 20, third round) on RED-84's fix: a private reservation is mapped
//! without access and each carve makes its unit accessible (`mprotect`), which the kernel
//! may refuse: the first carve splits the reservation's mapping in two, and a process at
//! its mapping limit (`vm.max_map_count`) gets `ENOMEM`. The allocation must then answer
//! null (out of memory), and the instance work again once mappings are freed, its
//! bookkeeping whole (verify).
//!
//! The split is what the limit refuses, and the layout decides whether there is one: a
//! unit made accessible merges with the mapping just below it when that one is anonymous,
//! private, readable and writable with the same flags (one of the allocator's own, which
//! the kernel may place there), and then needs no new mapping: nothing is refused. In
//! release builds the default reservation's first carve merged so on every run (with a
//! 1 MiB mapping of the allocator's), and the exact reservation's in one CI run ('no
//! allocation was refused at the mapping limit'). So the tests mark the reservation's
//! first two units (`MADV_DONTDUMP`, which changes nothing but what a core dump holds): no
//! other mapping has that flag, so the first unit cannot merge with its neighbour and its
//! carve splits a mapping, whatever the layout. They put the worst neighbour there too
//! when the page below the reservation is free: a mapping the unmarked unit would merge
//! with.

mod red_team_common;

use cohort::Cohort;
use red_team_common::{in_child, wait};

cohort::lifetime_classes! {
    enum Life { Short }
}

/// The size and alignment of the region's units.
const UNIT: usize = 2 << 20;

/// The kernel's page (the fill's mappings, the neighbour).
const PAGE: usize = 4096;

/// Maps single pages (alternately readable and not, so that none merge) until the kernel
/// refuses: the process is at its mapping limit. Returns the pages, to be unmapped. Their
/// vector holds the limit's number from the start: no allocation grows it at the limit.
fn fill_mapping_limit() -> Vec<usize> {
    let limit: usize = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 16);
    let mut pages = Vec::with_capacity(limit + 64);
    loop {
        let prot = if pages.len() % 2 == 0 {
            libc::PROT_READ
        } else {
            libc::PROT_NONE
        };
        // SAFETY: a fresh anonymous mapping at the kernel's choice.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                PAGE,
                prot,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return pages;
        }
        assert!(
            pages.len() < pages.capacity(),
            "{} mappings made and none refused (vm.max_map_count reads {limit})",
            pages.len() + 1
        );
        pages.push(p as usize);
    }
}

fn unmap(pages: &mut Vec<usize>, n: usize) {
    for p in pages.drain(..n.min(pages.len())) {
        // SAFETY: a page mapped by `fill_mapping_limit`, unused.
        unsafe { libc::munmap(p as *mut libc::c_void, PAGE) };
    }
}

/// The base of `a`'s region: the lowest unit boundary in one of this process's mappings
/// (`/proc/self/maps` lists them by address) that lies in the region.
fn region_base(a: &Cohort<Life>) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    for line in maps.lines() {
        let range = line.split(' ').next().unwrap_or("");
        let (start, end) = range.split_once('-').expect("a range");
        let start = usize::from_str_radix(start, 16).expect("hex");
        let end = usize::from_str_radix(end, 16).expect("hex");
        let mut p = start.next_multiple_of(UNIT);
        while p < end {
            if a.in_region(p as *const u8) {
                return p;
            }
            p += UNIT;
        }
    }
    panic!("no mapping holds the region");
}

/// Makes the first carve of `a`'s region (nothing carved yet) split a mapping, whatever the
/// layout (module docs): a mergeable mapping just below the base when that page is free,
/// and the first two units marked.
fn arrange_the_first_carve(a: &Cohort<Life>) {
    let base = region_base(a);
    assert!(
        a.in_region((base + 2 * UNIT - 1) as *const u8),
        "a region of two units at least"
    );
    // SAFETY: a fresh mapping of the page below the base if nothing is there (the kernel
    // refuses the address otherwise: MAP_FIXED_NOREPLACE), never touched.
    let neighbour = unsafe {
        libc::mmap(
            (base - PAGE) as *mut libc::c_void,
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE
                | libc::MAP_ANONYMOUS
                | libc::MAP_NORESERVE
                | libc::MAP_FIXED_NOREPLACE,
            -1,
            0,
        )
    };
    let placed = neighbour as usize == base - PAGE;
    println!(
        "neighbour below the base {base:#x}: {}",
        if placed {
            "placed"
        } else {
            "not placed (the page is taken)"
        }
    );
    // SAFETY: the first two units of the region's reservation, mapped (the region's
    // bounds); the advice changes what a core dump holds, not the memory.
    let rc = unsafe { libc::madvise(base as *mut libc::c_void, 2 * UNIT, libc::MADV_DONTDUMP) };
    assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
}

/// `make` gives an instance whose pool exists and which carved nothing yet; each size is
/// allocated with the process at its mapping limit, then again with mappings freed.
fn first_carve_refused(make: fn() -> Cohort<Life>, sizes: &'static [usize]) {
    let pid = in_child(20, move || {
        let a = make();
        arrange_the_first_carve(&a);
        let mut pages = fill_mapping_limit();
        let mut at_limit = Vec::new();
        let mut refused = vec![0; sizes.len()];
        // Each size is asked for with one more mapping allowed at each try: the carve's
        // steps (the reservation's split, the unit tables' commits) fail one after another.
        for (i, &size) in sizes.iter().enumerate() {
            for _ in 0..8 {
                let p = a.malloc(size, Life::Short);
                if !p.is_null() {
                    at_limit.push((size, p as usize));
                    break;
                }
                refused[i] += 1;
                unmap(&mut pages, 1);
            }
        }
        unmap(&mut pages, usize::MAX);
        println!("refused at the mapping limit, by size {sizes:?}: {refused:?}");
        assert!(
            refused[0] > 0,
            "the first carve ({} bytes) was not refused at the mapping limit",
            sizes[0]
        );
        let mut taken = Vec::new();
        for &size in sizes {
            let p = a.malloc(size, Life::Short);
            assert!(!p.is_null(), "{size} bytes after the mappings were freed");
            // SAFETY: p holds `size` bytes.
            unsafe { p.write_bytes(0x5a, size) };
            taken.push((size, p));
        }
        for (size, p) in at_limit
            .into_iter()
            .chain(taken.iter().map(|&(s, p)| (s, p as usize)))
        {
            if p != 0 {
                // SAFETY: allocated above with this size and class, freed once.
                unsafe { a.free(p as *mut u8, size, Life::Short) };
            }
        }
        // SAFETY: this process has one thread, which holds no allocation unaccounted.
        unsafe { a.verify() }.expect("verify");
        assert!(a.is_empty(), "everything freed");
    });
    assert_eq!(wait(pid), Ok(0), "the child failed (see its output)");
}

const SIZES: &[usize] = &[64, 640, 40_000, 300_000, 4 << 20];

/// Guard: the default reservation, its first carve refused.
#[test]
fn a_refused_first_carve_answers_null_and_the_instance_recovers() {
    first_carve_refused(
        || {
            let a = Cohort::<Life>::new();
            drop(a.join(0));
            a
        },
        SIZES,
    );
}

/// Guard: a reservation of exact capacity (large allocations as runs of its units).
#[test]
fn a_refused_first_carve_of_an_exact_reservation_answers_null_and_recovers() {
    first_carve_refused(
        || {
            let a = Cohort::<Life>::with_reservation(64 << 20);
            drop(a.join(0));
            a
        },
        SIZES,
    );
}
