//! The large table's unit tests: growth, removal, release.

use super::*;

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
        assert!(t.insert(p as usize, page));
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
        assert!(t.insert(i << 16, made(i)));
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
    let mut unmapped = 0;
    let released = t.release_life(1, 0, |out| {
        for (addr, len) in out.iter() {
            assert_eq!(len, (addr >> 16) * 4096);
            unmapped += 1;
        }
    });
    assert_eq!((t.count() + released, unmapped), (2500, released));
    assert!(t.remove(12345 << 16).is_none());
    let expect: usize = (2..=5000usize)
        .step_by(2)
        .filter(|i| i % 3 != 1)
        .map(|i| i * 4096)
        .sum();
    assert_eq!(t.bytes, expect);
}
