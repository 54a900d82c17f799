//! The large table's unit tests: growth, removal, release.

use super::*;
use crate::decay::Retention;

/// Records a live allocation, the table grown first when it must be.
fn insert(t: &mut LargeTable, addr: usize, m: Mapping) {
    assert!(t.make_room(), "out of memory");
    t.insert(addr, m);
}

#[test]
fn growing_keeps_the_allocations_mapped() {
    let mut t = LargeTable::new();
    let live: Vec<*mut u8> = (0..2000)
        .map(|_| os::map(os::MIN_PAGE, os::MIN_PAGE))
        .collect();
    for &p in &live {
        let page = Mapping {
            len: os::MIN_PAGE,
            mapped: os::MIN_PAGE,
            request: Request {
                kind: Kind::Large,
                life: 0,
            },
        };
        insert(&mut t, p as usize, page);
        // SAFETY: mapped above; the table grows while earlier ones are live.
        unsafe { p.write(1) };
    }
    for &p in &live {
        // SAFETY: still mapped: growing the table must not unmap them.
        assert_eq!(unsafe { p.read() }, 1);
    }
    // SAFETY: not used again.
    unsafe { t.unmap_all() };
    assert_eq!(t.count(), 0);
}

#[test]
fn insert_remove_grow_and_drain() {
    let mut t = LargeTable::new();
    // Small, medium and large requests (their kind kept and given back).
    let made = |i: usize| Mapping {
        len: i * 4096,
        mapped: i * 4096,
        request: Request {
            kind: match i % 5 {
                0 => Kind::Small(i % 7),
                1 => Kind::Medium(i % 11),
                _ => Kind::Large,
            },
            life: i % 3,
        },
    };
    for i in 1..=5000usize {
        insert(&mut t, i << 16, made(i));
    }
    assert_eq!(t.count(), 5000);
    for i in (1..=5000usize).step_by(2) {
        assert_eq!(t.get(i << 16), Some(made(i)));
        assert_eq!(t.remove(i << 16), Some(made(i)));
        assert_eq!(t.get(i << 16), None);
        assert_eq!(t.remove(i << 16), None, "a second removal finds nothing");
    }
    assert_eq!(t.count(), 2500);
    // No cache: every released mapping is given up.
    let none = Retention {
        large_cache_bytes: 0,
        ..Retention::DEFAULT
    };
    assert_eq!(t.configure_cache(&none).len(), 0);
    let (mut unmapped, mut released, mut at) = (0, 0, Walk::default());
    while let Some((next, out)) = t.release_next(1, at, 0) {
        for (addr, len) in out.iter() {
            assert_eq!(len, (addr >> 16) * 4096);
            unmapped += 1;
        }
        (released, at) = (released + 1, next);
    }
    assert_eq!((t.count() + released, unmapped), (2500, released));
    assert!(t.remove(12345 << 16).is_none());
    let expect: usize = (2..=5000usize)
        .step_by(2)
        .filter(|i| i % 3 != 1)
        .map(|i| i * 4096)
        .sum();
    assert_eq!(t.bytes, expect);
}

/// A release walks the table one allocation per lock hold ([`LargeTable::release_next`]):
/// when other threads' inserts rebuild the table between two steps, its entries move, some
/// to slots the walk has passed (here: a class's entries displaced past another class's
/// by probing go back to their home slot when the others' removals let the rebuild place
/// them there), and the walk starts again: it still finds every allocation of the class.
#[test]
fn a_release_walk_finds_every_allocation_of_its_class_across_rebuilds() {
    let mut t = LargeTable::new();
    let none = Retention {
        large_cache_bytes: 0,
        ..Retention::DEFAULT
    };
    assert_eq!(t.configure_cache(&none).len(), 0);
    let entry = |life| Mapping {
        len: 4096,
        mapped: 4096,
        request: Request {
            kind: Kind::Large,
            life,
        },
    };
    insert(&mut t, 1 << 40, entry(0));
    assert!(t.remove(1 << 40).is_some());
    // Addresses whose home slot is 10, in this table's size.
    let capacity = t.capacity();
    let mut homed = (1usize..).map(|i| i << 16).filter(|&a| t.home(a) == 10);
    let others: Vec<usize> = homed.by_ref().take(20).collect();
    let class: Vec<usize> = homed.take(20).collect();
    for &a in &others {
        insert(&mut t, a, entry(0));
    }
    for &a in &class {
        insert(&mut t, a, entry(1));
    }
    // The first step releases the class's first entry, past the others' (slot 30).
    let (mut at, out) = t.release_next(1, Walk::default(), 0).expect("one");
    let mut released: Vec<usize> = out.iter().map(|(addr, _)| addr).collect();
    assert!(t.walk_from(at) > 30);
    // The others go, and inserts and removals of a third class fill the table with
    // tombstones until it is rebuilt at its size.
    for &a in &others {
        assert!(t.remove(a).is_some());
    }
    let rebuilds = t.rebuilds;
    let mut extra = (1usize << 44..).step_by(1 << 16);
    while t.rebuilds == rebuilds {
        let a = extra.next().unwrap();
        insert(&mut t, a, entry(2));
        assert!(t.remove(a).is_some());
    }
    assert_eq!(t.capacity(), capacity, "rebuilt at its size");
    while let Some((next, out)) = t.release_next(1, at, 0) {
        released.extend(out.iter().map(|(addr, _)| addr));
        at = next;
    }
    released.sort_unstable();
    let mut expect = class.clone();
    expect.sort_unstable();
    assert_eq!(released, expect, "every allocation of the class, each once");
    assert_eq!(t.count(), 0);
}

/// An entry taken out for a resize keeps its slot: while it is out, other inserts fill the
/// table to its bound (the kept slot counted) or rebuild it, and it goes back in (at its
/// address or another) with no growth, the table within its bound after.
#[test]
fn an_entry_taken_out_goes_back_in_with_no_growth() {
    let mut t = LargeTable::new();
    let entry = Mapping {
        len: 4096,
        mapped: 4096,
        request: Request {
            kind: Kind::Large,
            life: 0,
        },
    };
    let mut fresh = (1usize << 40..).step_by(1 << 16);
    let mut at = fresh.next().unwrap();
    insert(&mut t, at, entry);
    for round in 0..3 {
        let rebuilds = t.rebuilds;
        assert_eq!(t.take_out(at), Some(entry));
        if round == 1 {
            // Inserts that rebuild the table meanwhile (their growth counts the kept slot).
            while t.rebuilds == rebuilds {
                insert(&mut t, fresh.next().unwrap(), entry);
            }
        }
        // Inserts with no growth, to the table's bound.
        while t.has_room(1) {
            t.insert(fresh.next().unwrap(), entry);
        }
        let (capacity, count) = (t.capacity(), t.count());
        // Back where it was, then at another address.
        at = if round == 2 {
            at
        } else {
            fresh.next().unwrap()
        };
        t.put_in(at, entry);
        assert_eq!(
            (t.capacity(), t.count()),
            (capacity, count + 1),
            "round {round}"
        );
        assert_eq!(t.get(at), Some(entry));
        assert!(t.has_room(0), "round {round}: past the table's bound");
        assert!(t.make_room());
    }
}

/// `containing` finds the live entry an address lies in past its start, across a rebuild,
/// never the start itself, an address past the mapped end, nor a removed entry's bytes;
/// the span shrinks back once the table is empty.
#[test]
fn an_address_inside_a_live_entry_names_it() {
    let mut t = LargeTable::new();
    let large = |len: usize| Mapping {
        len,
        mapped: len,
        request: Request {
            kind: Kind::Large,
            life: 0,
        },
    };
    let (a, b) = (0x10_0000_0000usize, 0x20_0000_0000usize);
    insert(&mut t, a, large(1 << 20));
    insert(&mut t, b, large(8 << 20));
    for (addr, want) in [
        (a, None),
        (a + 1, Some((a, 1 << 20))),
        (a + (1 << 20) - 1, Some((a, 1 << 20))),
        (a + (1 << 20), None),
        (b + (4 << 20), Some((b, 8 << 20))),
        (b + (8 << 20), None),
        (a - 1, None),
    ] {
        assert_eq!(t.containing(addr), want, "{addr:#x}");
    }
    // Enough entries to rebuild the table: each keeps its answer.
    for i in 1..=MIN_CAPACITY {
        insert(&mut t, b + i * (16 << 20), large(4096));
    }
    assert!(t.rebuilds > 0);
    assert_eq!(t.containing(a + 100), Some((a, 1 << 20)));
    assert_eq!(
        t.containing(b + MIN_CAPACITY * (16 << 20) + 1),
        Some((b + MIN_CAPACITY * (16 << 20), 4096))
    );
    assert!(t.remove(a).is_some());
    assert_eq!(t.containing(a + 100), None);
    for i in 1..=MIN_CAPACITY {
        assert!(t.remove(b + i * (16 << 20)).is_some());
    }
    assert!(t.remove(b).is_some());
    assert_eq!(t.span, NO_SPAN);
}
