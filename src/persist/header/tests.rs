use super::*;
use quickcheck::{QuickCheck, TestResult};

/// A state measure shaped like the instance's: a fixed part, per-unit links, per-class
/// lists and, checked, one bit per byte of the blocks.
pub(crate) fn state_len(units: usize, life: usize, checked: bool) -> Option<usize> {
    let shadow = if checked { units.checked_mul(BLOCK_SIZE / 8)? } else { 0 };
    let bytes = (64usize << 10)
        .checked_add(units.checked_mul(8)?)?
        .checked_add(life * 4096)?
        .checked_add(shadow)?;
    bytes.checked_next_multiple_of(4096)
}

pub(crate) fn expected(life_count: usize) -> Expected {
    Expected {
        life_count,
        life_names: names_hash(&["a"; 3][..life_count.min(3)]),
        inside_count: life_count + 9,
        checked: false,
        page_size: 4096,
        state_layout: u64::from(crate::pool::place::STATE_LAYOUT),
        state_len,
    }
}

fn formatted(capacity: usize) -> ([u64; WORDS], Layout) {
    let e = expected(3);
    let layout = Layout::new(capacity, &e).unwrap();
    (format_words(&layout, &e, 1234, 99), layout)
}

#[test]
fn a_formatted_header_validates_to_its_layout() {
    let (w, layout) = formatted(64 << 20);
    assert_eq!(layout.capacity, (64 << 20) + 4096, "the blocks asked for, and the tail seal");
    assert_eq!(layout.state_offset, HEADER_BYTES);
    assert_eq!(layout.blocks_offset, BLOCK_SIZE, "the state fits in the first block");
    assert_eq!(layout.unit_count, 31);
    assert_eq!(validate(&w, layout.capacity as u64, &expected(3)).unwrap(), layout);
    assert_eq!(
        validate(&w, 1 << 40, &expected(3)).unwrap(),
        layout,
        "a longer file is fine"
    );
}

#[test]
fn the_layout_equations_hold_for_every_capacity_and_mode() {
    for checked in [false, true] {
        let e = Expected {
            checked,
            ..expected(2)
        };
        for blocks in [2usize, 3, 9, 10, 17, 100, 1000] {
            let Ok(l) = Layout::new(blocks * BLOCK_SIZE, &e) else {
                assert!(!checked || blocks < 3, "{blocks} blocks, checked {checked}");
                continue;
            };
            assert_eq!(Some(l.state_len), state_len(l.unit_count, 11, checked));
            assert_eq!(
                l.blocks_offset,
                (e.state_offset() + l.state_len + e.seal_bytes()).next_multiple_of(BLOCK_SIZE)
            );
            assert_eq!(
                l.capacity,
                l.blocks_offset + l.unit_count * BLOCK_SIZE + e.seal_bytes()
            );
            assert!(l.capacity <= blocks * BLOCK_SIZE + e.seal_bytes() && l.unit_count >= 1);
            let w = format_words(&l, &e, 1, 1);
            assert_eq!(validate(&w, l.capacity as u64, &e).unwrap(), l);
        }
    }
}

#[test]
fn a_capacity_too_small_or_too_large_is_refused_with_the_minimum() {
    let e = expected(1);
    match Layout::new(BLOCK_SIZE, &e) {
        Err(RegionError::Capacity {
            requested,
            minimum: Some(min),
        }) => {
            assert_eq!(requested, BLOCK_SIZE);
            assert_eq!(min, 2 * BLOCK_SIZE);
            assert!(Layout::new(min, &e).is_ok());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        Layout::new(usize::MAX - 5, &e),
        Err(RegionError::Capacity { minimum: None, .. })
    ));
}

/// The error for the header `w` after `edit`, checksum recomputed unless `keep_sum`.
fn after(edit: impl FnOnce(&mut [u64; WORDS]), keep_sum: bool, file_len: u64) -> RegionError {
    let (mut w, _) = formatted(64 << 20);
    edit(&mut w);
    if !keep_sum {
        w[W_CHECKSUM] = checksum(&w);
    }
    validate(&w, file_len, &expected(3)).unwrap_err()
}

#[test]
fn every_field_that_differs_is_named() {
    let len = (64 << 20) + 4096;
    let e = after(|w| w[W_MAGIC] = u64::from_le_bytes(*b"garbage!"), false, len);
    assert!(matches!(e, RegionError::BadMagic { found } if &found == b"garbage!"), "{e}");
    let e = after(|w| w[W_VERSION] = LAYOUT_VERSION + 1, false, len);
    assert!(
        matches!(e, RegionError::Version { what: "region", expected: LAYOUT_VERSION, found }
            if found == LAYOUT_VERSION + 1),
        "{e}"
    );
    let state_layout = u64::from(crate::pool::place::STATE_LAYOUT);
    let e = after(|w| w[W_STATE_LAYOUT] = state_layout + 1, false, len);
    assert!(
        matches!(e, RegionError::Version { what: "instance state", expected, found }
            if expected == state_layout && found == state_layout + 1),
        "{e}"
    );
    let e = after(|w| w[W_CAPACITY] += 1, true, len);
    assert!(matches!(e, RegionError::Corrupt { .. }), "{e}");
    let e = after(|w| w[W_LIFE_COUNT] = 4, false, len);
    assert!(matches!(e, RegionError::LifetimeClasses { expected: 3, found: 4 }), "{e}");
    let e = after(|w| w[W_LIFE_NAMES] ^= 1, false, len);
    assert!(matches!(e, RegionError::LifetimeNames { .. }), "{e}");
    let fields = [
        (W_BLOCK_SIZE, "block size"),
        (W_PAGE_SIZE, "page size"),
        (W_CLASS_COUNT, "size-class count"),
        (W_CLASS_HASH, "size-class table hash"),
        (W_FLAGS, "checked-build flag"),
        (W_STATE_OFFSET, "state offset"),
        (W_STATE_LEN, "state length"),
        (W_BLOCKS_OFFSET, "blocks offset"),
        (W_CAPACITY, "capacity"),
    ];
    for (word, name) in fields {
        let e = after(|w| w[word] ^= 1 << 12, false, len);
        assert!(
            matches!(e, RegionError::Geometry { field, .. } if field == name),
            "word {word}: {e}"
        );
        assert!(e.to_string().contains(name), "{e}");
    }
    let e = after(|w| w[W_UNIT_COUNT] = 0, false, len);
    assert!(matches!(e, RegionError::Geometry { field: "block count", .. }), "{e}");
    let e = after(|w| w[W_UNIT_COUNT] = u64::MAX, false, len);
    assert!(matches!(e, RegionError::Geometry { field: "block count", .. }), "{e}");
    let e = after(|w| w[W_UNIT_COUNT] += 1, false, len);
    assert!(matches!(e, RegionError::Geometry { .. }), "{e}");
    let e = after(|_| {}, false, len - 1);
    assert!(
        matches!(e, RegionError::Truncated { expected, found } if expected == len && found == len - 1),
        "{e}"
    );
    let e = after(|w| w[W_ROOTS + 5] = len, false, len);
    assert!(matches!(e, RegionError::Root { slot: 5, .. }), "{e}");
}

#[test]
fn the_state_starts_on_a_page() {
    let e = Expected {
        page_size: 64 << 10,
        ..expected(1)
    };
    let l = Layout::new(16 << 20, &e).unwrap();
    assert_eq!(l.state_offset, 64 << 10);
    let w = format_words(&l, &e, 1, 1);
    assert_eq!(validate(&w, l.capacity as u64, &e).unwrap(), l);
    assert_eq!(expected(1).state_offset(), HEADER_BYTES);
}

#[test]
fn the_state_and_the_roots_are_outside_the_checksum() {
    let (mut w, layout) = formatted(64 << 20);
    w[W_STATE] = READY;
    w[W_ROOTS] = 4096;
    w[W_ROOTS + ROOT_SLOTS - 1] = (64 << 20) - 8;
    assert_eq!(validate(&w, layout.capacity as u64, &expected(3)).unwrap(), layout);
}

#[test]
fn quickcheck_garbage_words_never_validate_and_never_panic() {
    fn prop(words: Vec<u64>, len: u64, magic: bool, sum: bool) -> TestResult {
        let mut w = [0u64; WORDS];
        for (d, s) in w.iter_mut().zip(words) {
            *d = s;
        }
        // Help garbage past the first checks half the time: the later ones get tried too.
        if magic {
            w[W_MAGIC] = MAGIC;
            w[W_VERSION] = LAYOUT_VERSION;
            w[W_STATE_LAYOUT] = u64::from(crate::pool::place::STATE_LAYOUT);
        }
        if sum {
            w[W_CHECKSUM] = checksum(&w);
        }
        let r = validate(&w, len, &expected(3));
        // Garbage that names this geometry exactly is a header; nothing else passes.
        TestResult::from_bool(r.is_err() || (magic && sum && w[W_LIFE_COUNT] == 3))
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(prop as fn(Vec<u64>, u64, bool, bool) -> TestResult);
}

#[test]
fn quickcheck_any_changed_byte_of_a_header_is_caught() {
    fn prop(at: usize, xor: u8) -> TestResult {
        if xor == 0 {
            return TestResult::discard();
        }
        let (w, _) = formatted(64 << 20);
        // The checked words, as bytes: everything before the roots but the state.
        let mut bytes: Vec<u8> = w[..W_ROOTS].iter().flat_map(|w| w.to_le_bytes()).collect();
        let at = at % bytes.len();
        if at / 8 == W_STATE {
            return TestResult::discard();
        }
        bytes[at] ^= xor;
        let mut changed = w;
        for (i, chunk) in bytes.chunks(8).enumerate() {
            changed[i] = u64::from_le_bytes(chunk.try_into().unwrap());
        }
        TestResult::from_bool(validate(&changed, 64 << 20, &expected(3)).is_err())
    }
    QuickCheck::new()
        .tests(5000)
        .quickcheck(prop as fn(usize, u8) -> TestResult);
}

#[test]
fn the_class_hash_sees_the_table() {
    assert_eq!(class_hash(), class_hash());
    assert_ne!(class_hash(), Fnv::new().0);
}
