//! Memory the caller provides, formatted as a region ([`Cohort::format_in`], sized by
//! [`Cohort::footprint`]): a shared `memfd` mapping holding garbage is formatted,
//! allocated from (small and large, `calloc` reading zero in dirty memory), left, and
//! attached again at another address ([`Cohort::attach_in`]), where what it holds is
//! found by offset and freed. Memory too small or misaligned is a clear error. Memory
//! formatted to fall back is this process's alone: served from private mappings when
//! full, and refused to any later attach (a shared-anonymous region is refused the
//! fallback, as named ones are: `tests/region_named.rs`).

mod common;

use cohort::{Cohort, PlacementError, RegionOptions};
use common::memory::{garbage_mapping, map_aligned, memfd};

cohort::lifetime_classes! {
    enum Life { Short, Long }
}

const MIB: usize = 1 << 20;
const ALIGN: usize = 2 * MIB;

#[test]
fn the_footprint_is_what_format_needs() {
    let f = Cohort::<Life>::footprint(16 * MIB).expect("fits");
    assert_eq!(f.align, 2 * MIB);
    assert!(
        f.bytes >= 16 * MIB + 4096 && f.bytes.is_multiple_of(2 * MIB),
        "{f:?}"
    );
    let bigger = Cohort::<Life>::footprint(32 * MIB).unwrap();
    assert!(
        bigger.bytes >= f.bytes + 16 * MIB,
        "16 MiB more of blocks: {bigger:?}"
    );
    assert_eq!(
        Cohort::<Life>::footprint(usize::MAX),
        None,
        "past the address space"
    );
}

#[test]
fn bad_memory_is_a_clear_error() {
    let f = Cohort::<Life>::footprint(8 * MIB).unwrap();
    let fd = memfd(f.bytes + ALIGN);
    let mem = map_aligned(fd, f.bytes + ALIGN);
    let options = RegionOptions::new(8 * MIB);
    // SAFETY: the mapping is ours and unused; every call below is refused before it
    // writes anything.
    unsafe {
        let e = Cohort::<Life>::format_in(mem.add(4096), f.bytes, &options).unwrap_err();
        assert_eq!(
            e,
            PlacementError::Misaligned {
                align: 2 * MIB,
                addr: mem as usize + 4096
            }
        );
        let e = Cohort::<Life>::format_in(mem, f.bytes - 1, &options).unwrap_err();
        assert_eq!(
            e,
            PlacementError::TooSmall {
                needed: f.bytes,
                given: f.bytes - 1
            }
        );
        assert!(e.to_string().contains("needs"), "{e}");
        let e = Cohort::<Life>::attach_in(mem, f.bytes, 8 * MIB).unwrap_err();
        assert_eq!(e, PlacementError::Refused, "no region was formatted there");
        libc::munmap(mem.cast(), f.bytes + ALIGN);
        libc::close(fd);
    }
}

#[repr(C)]
struct Node {
    next: usize,
    value: u64,
}

#[test]
fn caller_memory_is_formatted_used_left_and_attached_at_another_address() {
    let f = Cohort::<Life>::footprint(32 * MIB).unwrap();
    // Garbage where the region goes: the state is zeroed by the format, the blocks not.
    let (fd, a) = garbage_mapping(f.bytes);
    // SAFETY: ours, unused, mapped for as long as the instance lives.
    let c = unsafe { Cohort::<Life>::format_in(a, f.bytes, &RegionOptions::new(32 * MIB)) }
        .expect("formatted");
    let mut head = 0;
    for value in 0..1000u64 {
        let n = c.calloc(size_of::<Node>(), Life::Long).cast::<Node>();
        assert!(!n.is_null() && c.in_region(n.cast()));
        // SAFETY: fresh, ours.
        unsafe {
            assert_eq!(
                (*n).next | (*n).value as usize,
                0,
                "calloc reads zero in dirty memory"
            );
            n.write(Node { next: head, value });
        }
        head = n as usize - a as usize;
    }
    let big = c.calloc(5 * MIB, Life::Long);
    assert!(
        !big.is_null() && c.in_region(big),
        "large: from the caller's memory"
    );
    // SAFETY: 5 MiB of ours.
    let zero = unsafe { std::slice::from_raw_parts(big, 5 * MIB) }
        .iter()
        .all(|&b| b == 0);
    assert!(zero, "calloc of a run in dirty memory reads zero");
    // SAFETY: as above.
    unsafe { big.write_bytes(0x5a, 5 * MIB) };
    let big_at = big as usize - a as usize;
    drop(c);
    // The same memory at another address.
    let b = map_aligned(fd, f.bytes);
    assert_ne!(a, b);
    // SAFETY: the region formatted above, mapped for as long as the instance lives.
    let c = unsafe { Cohort::<Life>::attach_in(b, f.bytes, 32 * MIB) }.expect("attached");
    let mut at = head;
    let mut expect = 1000;
    while at != 0 {
        let n = (b as usize + at) as *mut Node;
        // SAFETY: a node of the list, at its offset.
        let node = unsafe { n.read() };
        expect -= 1;
        assert_eq!(node.value, expect);
        at = node.next;
        // SAFETY: allocated before the leave, freed once.
        unsafe { c.free(n.cast(), size_of::<Node>(), Life::Long) };
    }
    assert_eq!(expect, 0);
    let big = (b as usize + big_at) as *mut u8;
    // SAFETY: the large allocation made before the leave, 5 MiB.
    assert!(unsafe { std::slice::from_raw_parts(big, 5 * MIB) }
        .iter()
        .all(|&x| x == 0x5a));
    // SAFETY: allocated before the leave, freed once.
    unsafe { c.free(big, 5 * MIB, Life::Long) };
    assert!(c.is_empty());
    // SAFETY: nobody else uses the region.
    unsafe { c.verify() }.expect("verifies at the second address");
    drop(c);
    // SAFETY: both mappings are ours, unused now.
    unsafe {
        libc::munmap(a.cast(), f.bytes);
        libc::munmap(b.cast(), f.bytes);
        libc::close(fd);
    }
}

#[test]
fn caller_memory_formatted_to_fall_back_serves_private_mappings_and_is_never_attached() {
    let f = Cohort::<Life>::footprint(4 * MIB).unwrap();
    let fd = memfd(f.bytes);
    let a = map_aligned(fd, f.bytes);
    let options = RegionOptions::new(4 * MIB).fallback(true);
    // SAFETY: ours, unused, mapped for as long as the instance lives.
    let c = unsafe { Cohort::<Life>::format_in(a, f.bytes, &options) }
        .expect("a region of this process's alone may fall back");
    let run = c.malloc(3 * MIB, Life::Long);
    assert!(!run.is_null() && c.in_region(run), "the region's two units");
    let big = c.malloc(3 * MIB, Life::Long);
    assert!(
        !big.is_null() && !c.in_region(big),
        "full: a private mapping"
    );
    let small = c.malloc(100, Life::Short);
    assert!(
        !small.is_null() && !c.in_region(small),
        "small requests too"
    );
    // SAFETY: ours; each freed once with its size and class.
    unsafe {
        big.write_bytes(1, 3 * MIB);
        small.write_bytes(2, 100);
        c.free(big, 3 * MIB, Life::Long);
        c.try_free(small, 100, Life::Short)
            .expect("found by the free");
    }
    assert_eq!(c.stats().large_allocations, 1, "the run is left");
    drop(c);
    // SAFETY: the region formatted above, mapped while the instance would live.
    let e = unsafe { Cohort::<Life>::attach_in(a, f.bytes, 4 * MIB) }.unwrap_err();
    println!("{e}");
    assert!(
        matches!(e, PlacementError::Unsupported { option } if option.contains("falls back")),
        "{e}"
    );
    let e = Cohort::<Life>::shared_anonymous_with(&options).unwrap_err();
    println!("{e}");
    assert!(
        matches!(e, PlacementError::Unsupported { option } if option.starts_with("fallback")),
        "{e}"
    );
    // SAFETY: the mapping is ours, unused now.
    unsafe {
        libc::munmap(a.cast(), f.bytes);
        libc::close(fd);
    }
}
