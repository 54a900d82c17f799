use super::*;

#[test]
fn every_size_and_align_maps_to_the_smallest_fitting_class() {
    for align_shift in 0..=13 {
        let align = 1usize << align_shift;
        for size in 1..=MAX_SMALL + 64 {
            let got = class_of(size, align);
            let want = (0..CLASS_COUNT).find(|&i| {
                let s = CLASSES[i].stride as usize;
                s >= size && s.is_multiple_of(align) && align <= MAX_SMALL_ALIGN
            });
            assert_eq!(got, want, "size {size} align {align}");
            if let Some(c) = got {
                assert!(CLASSES[c].slot_align as usize >= align);
            }
        }
    }
}

/// Both table look-ups agree with the smallest fitting class wherever they answer, and
/// answer exactly where they say: `exact_class` for every request that rounds below
/// 2 KiB, `class_of_multiple` for every size below 2 KiB that is a multiple of its align
/// (and a zero size, as class 0).
#[test]
fn the_table_look_ups_answer_as_class_of() {
    for align_shift in 0..=13 {
        let align = 1usize << align_shift;
        for size in 0..=2 * TABLE_LEN {
            let want = class_of(size, align);
            let exact = LOOKUP.exact_class(size, align);
            let rounds_below = size > 0 && size.div_ceil(align) * align < TABLE_LEN;
            assert_eq!(exact.is_some(), rounds_below, "size {size} align {align}");
            if exact.is_some() {
                assert_eq!(exact, want, "size {size} align {align}");
            }
            let multiple = LOOKUP.class_of_multiple(size, align);
            let is_multiple = size.is_multiple_of(align) && size < TABLE_LEN;
            assert_eq!(multiple.is_some(), is_multiple, "size {size} align {align}");
            match multiple {
                Some(class) if size == 0 => assert_eq!(class, 0),
                Some(_) => assert_eq!(multiple, want, "size {size} align {align}"),
                None => {}
            }
        }
    }
}

#[test]
fn strides_cover_the_specified_grid() {
    let strides: Vec<usize> = CLASSES.iter().map(|c| c.stride as usize).collect();
    assert_eq!(&strides[..3], &[1, 2, 4]);
    for s in (8..=1024).step_by(8) {
        assert!(strides.contains(&s), "exact-fit stride {s}");
    }
    for w in strides.windows(2) {
        assert!(w[1] > w[0]);
        if w[0] >= 1024 {
            assert!(
                w[1] * 8 <= w[0] * 9,
                "{} -> {} more than 1/8 apart",
                w[0],
                w[1]
            );
        }
    }
    assert_eq!(*strides.last().unwrap(), MAX_SMALL);
}

#[test]
fn malloc_alignment_contract() {
    for size in 1..=MAX_SMALL {
        let align = malloc_align(size);
        let c = &CLASSES[class_of(size, align).unwrap()];
        assert!(c.slot_align as usize >= align, "size {size}");
        assert!(align >= size.next_power_of_two().min(4096));
    }
}

#[test]
fn huge_and_zero_sizes_are_large_without_overflow() {
    for size in [0, usize::MAX, usize::MAX - 4095, (1 << 63) + 1, 1 << 63] {
        assert_eq!(
            malloc_align(size),
            if size == 0 { 1 } else { MAX_SMALL_ALIGN }
        );
        for align in [1, 8, 4096, 1 << 21, 1 << 63] {
            assert_eq!(class_of(size, align), None, "{size}, {align}");
        }
    }
}

#[test]
fn a_head_index_names_its_pair() {
    let heads: Vec<HeadIndex> = HeadIndex::all(3).collect();
    assert_eq!(heads.len(), HeadIndex::count(3));
    for (i, h) in heads.iter().enumerate() {
        assert_eq!(h.get(), i);
        assert_eq!(HeadIndex::new(h.class(), h.life()), *h);
    }
    let life_1: Vec<HeadIndex> = HeadIndex::of_life(1).collect();
    assert_eq!(life_1.len(), CLASS_COUNT);
    assert!(life_1.iter().all(|h| h.life() == 1));
    assert_eq!(life_1[0].get(), CLASS_COUNT);
}

/// `slot_index` answers as the division it replaces at every offset of the block (and
/// past it) where it can differ: every offset of the first three and the last three
/// slots, everything before `first` and from the last slot to the block's end, and one
/// offset in each slot between (a multiple of the stride, or one off it by each of the
/// slot's residues in turn).
#[test]
fn slot_index_is_the_division_without_one() {
    for c in CLASSES.iter() {
        let (first, stride, limit) = (c.first as usize, c.stride as usize, c.limit as usize);
        let divided = |off: usize| {
            (off >= first && off < limit && (off - first).is_multiple_of(stride))
                .then(|| ((off - first) / stride) as u32)
        };
        let ends = (0..first + 3 * stride).chain(limit - 3 * stride..BLOCK_SIZE + stride);
        let middle = (3..c.capacity as usize - 3).map(|i| first + i * stride + i % stride);
        for off in ends.chain(middle) {
            let index = c.slot_index(off as u32);
            match divided(off) {
                Some(q) => assert_eq!(index, q, "stride {stride} offset {off}"),
                None => assert!(index >= c.capacity, "stride {stride} offset {off}"),
            }
            assert_eq!(
                c.is_slot(off),
                divided(off).is_some(),
                "stride {stride} offset {off}"
            );
        }
        // Offsets that wrap past 2^32 are never slots.
        assert!(!c.is_slot(first + (1 << 32)) && !c.is_slot(usize::MAX));
    }
}

#[test]
fn geometry_is_consistent() {
    for c in CLASSES.iter() {
        assert_eq!(c.first + c.capacity * c.stride, c.limit);
        assert!(c.limit as usize <= c.block_size());
        // No further slot fits: the tail is smaller than a stride.
        assert!((c.block_size() - c.limit as usize) < c.stride as usize);
    }
}
