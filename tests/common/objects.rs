//! Allocations under test: every live object carries the pattern of its pointer and size,
//! checked before it is freed or resized; a transfer array hands objects between threads.

use super::{fill, malloc_align, mismatch, nonzero, random_size, seed_of, Rng};
use cohort::class::{BLOCK_SIZE, MAX_MEDIUM, MAX_SMALL, MAX_SMALL_ALIGN, MEDIUM_CLASS};
use cohort::{Cohort, Lifetime};
use std::alloc::Layout;
use std::collections::HashMap;
use std::ptr;
use std::sync::atomic::{AtomicPtr, Ordering};

/// One live allocation under test.
#[derive(Clone, Copy, Debug)]
pub struct Obj<L> {
    pub ptr: *mut u8,
    /// The size asked for: the bytes that carry the pattern.
    pub size: usize,
    /// The size to give back at free: between `size` and the usable size.
    pub free_size: usize,
    /// 0 for the malloc family; the `Layout` align for `alloc`/`alloc_zeroed`.
    pub align: usize,
    pub life: L,
    pub seed: u64,
}

// SAFETY: an Obj describes an allocation; whoever holds it owns the allocation, and the
// allocator allows a free from any thread.
unsafe impl<L: Send> Send for Obj<L> {}

/// Slots through which threads hand objects to each other.
pub struct Transfer<L, const N: usize> {
    slots: [AtomicPtr<Obj<L>>; N],
}

impl<L, const N: usize> Transfer<L, N> {
    pub const fn new() -> Self {
        Transfer {
            slots: [const { AtomicPtr::new(ptr::null_mut()) }; N],
        }
    }

    /// Puts `obj` (or nothing) in slot `i % N`; returns what was there.
    pub fn swap(&self, i: usize, obj: Option<Obj<L>>) -> Option<Obj<L>> {
        let new = obj.map_or(ptr::null_mut(), |o| Box::into_raw(Box::new(o)));
        // AcqRel: the pattern written before the Release is visible to whoever takes it.
        let old = self.slots[i % N].swap(new, Ordering::AcqRel);
        // SAFETY: non-null slot values come from Box::into_raw above, each taken once.
        (!old.is_null()).then(|| *unsafe { Box::from_raw(old) })
    }

    /// Empties every slot.
    pub fn take_all(&self) -> Vec<Obj<L>> {
        (0..N).filter_map(|i| self.swap(i, None)).collect()
    }
}

fn assert_aligned(p: *mut u8, size: usize, align: usize) {
    assert_eq!(
        p as usize % align,
        0,
        "{p:?} ({size} B) is not aligned to {align}"
    );
}

/// The allocation calls of one allocator, driven by one thread's PRNG. Panics on any broken
/// contract (null, alignment, zeroing, a pattern).
pub struct Tester<'a, L: Lifetime> {
    pub a: &'a Cohort<L>,
    pub rng: Rng,
    /// The largest size of a large allocation.
    pub large_max: usize,
}

impl<'a, L: Lifetime + std::fmt::Debug> Tester<'a, L> {
    pub fn new(a: &'a Cohort<L>, seed: u64, large_max: usize) -> Self {
        Tester {
            a,
            rng: Rng::new(seed),
            large_max,
        }
    }

    /// A new object of a random size, through a random allocation call.
    pub fn alloc(&mut self, life: L) -> Obj<L> {
        let size = random_size(&mut self.rng, self.large_max);
        let a = self.a;
        let (ptr, free_size, align, zeroed) = match self.rng.below(100) {
            0..=44 => (a.malloc(size, life), size, 0, false),
            45..=59 => (a.calloc(size, life), size, 0, true),
            60..=74 => {
                let (p, usable) = a.malloc_at_least(size, life);
                assert!(
                    usable >= size,
                    "malloc_at_least({size}) reported usable {usable}"
                );
                (p, self.rng.range(size, usable), 0, false)
            }
            n => {
                let align = 1 << [0, 1, 2, 3, 4, 5, 6, 7, 12, 13][self.rng.below(10)];
                let layout = Layout::from_size_align(size, align).unwrap();
                let usable = a.usable_size(layout);
                assert!(usable >= size, "usable_size({layout:?}) = {usable}");
                let free_size = self.rng.range(size, usable);
                if n < 90 {
                    (a.alloc(layout, life), free_size, align, false)
                } else {
                    (a.alloc_zeroed(layout, life), free_size, align, true)
                }
            }
        };
        assert!(!ptr.is_null(), "allocation of {size} B returned null");
        assert_aligned(
            ptr,
            size,
            if align == 0 {
                malloc_align(size)
            } else {
                align
            },
        );
        if zeroed {
            // SAFETY: a fresh allocation of `size` bytes.
            let nz = unsafe { nonzero(ptr, size) };
            assert_eq!(
                nz, None,
                "zeroed allocation {ptr:?} of {size} B is not zero"
            );
        }
        let seed = seed_of(ptr, size);
        // SAFETY: ours, `size` bytes.
        unsafe { fill(ptr, seed, size) };
        Obj {
            ptr,
            size,
            free_size,
            align,
            life,
            seed,
        }
    }

    /// Panics unless `o` still carries its pattern.
    pub fn check(o: &Obj<L>, what: &str) {
        // SAFETY: a live allocation of `o.size` bytes.
        if let Some(at) = unsafe { mismatch(o.ptr, o.seed, o.size) } {
            panic!("{what}: {o:?}: pattern broken at byte {at}");
        }
    }

    /// Checks and frees `o`.
    pub fn free(&self, o: Obj<L>) {
        Self::check(&o, "free");
        // SAFETY: a live allocation of this allocator, given back with its class and a size
        // in its usable range.
        unsafe {
            if o.align == 0 {
                self.a.free(o.ptr, o.free_size, o.life);
            } else {
                let l = Layout::from_size_align(o.free_size, o.align).unwrap();
                self.a.dealloc(o.ptr, l, o.life);
            }
        }
    }

    /// Checks `o` and resizes it to a random size (remalloc, recalloc or realloc); checks
    /// that the kept bytes moved along and that recalloc zeroed the grown part.
    pub fn resize(&mut self, o: Obj<L>) -> Obj<L> {
        Self::check(&o, "resize");
        let new = random_size(&mut self.rng, self.large_max);
        let zeroing = o.align == 0 && self.rng.chance(40);
        // SAFETY: a live allocation, given back as `free` would.
        let p = unsafe {
            if o.align != 0 {
                let l = Layout::from_size_align(o.free_size, o.align).unwrap();
                self.a.realloc(o.ptr, l, new, o.life)
            } else if zeroing {
                self.a.recalloc(o.ptr, o.free_size, new, o.life)
            } else {
                self.a.remalloc(o.ptr, o.free_size, new, o.life)
            }
        };
        assert!(!p.is_null(), "resize of {o:?} to {new} returned null");
        assert_aligned(
            p,
            new,
            if o.align == 0 {
                malloc_align(new)
            } else {
                o.align
            },
        );
        // SAFETY: p holds `new` bytes, of which the first min(old, new) came from `o`.
        if let Some(at) = unsafe { mismatch(p, o.seed, o.size.min(new)) } {
            panic!("resize of {o:?} to {new} B at {p:?}: old contents lost at byte {at}");
        }
        if zeroing && new > o.free_size {
            // SAFETY: as above.
            let nz = unsafe { nonzero(p.add(o.free_size), new - o.free_size) };
            assert_eq!(
                nz, None,
                "recalloc of {o:?} to {new} B at {p:?}: grown part not zero"
            );
        }
        let seed = seed_of(p, new);
        // SAFETY: ours, `new` bytes.
        unsafe { fill(p, seed, new) };
        Obj {
            ptr: p,
            size: new,
            free_size: new,
            align: o.align,
            life: o.life,
            seed,
        }
    }
}

/// Checks every block's live count against the objects known to be live. Quiescent: no
/// thread may allocate or free from `a` during the call.
pub fn check_accounting<L: Lifetime>(a: &Cohort<L>, live: &[Obj<L>]) {
    let mut want: HashMap<usize, usize> = HashMap::new();
    for o in live.iter().filter(|o| o.size > 0) {
        let base = if o.align == 0 {
            a.block_of(o.ptr, o.size)
        } else {
            a.block_of_layout(o.ptr, o.size, o.align)
        };
        // A medium allocation lies in a medium block (a run of its granules, counted by
        // `runs`).
        let medium = o.size > MAX_SMALL && o.size <= MAX_MEDIUM && o.align <= MAX_SMALL_ALIGN;
        let base = base.or_else(|| medium.then_some(o.ptr as usize & !(BLOCK_SIZE - 1)));
        if let Some(base) = base {
            *want.entry(base).or_default() += 1;
        }
    }
    let mut wrong = Vec::new();
    a.for_each_block(|b| {
        let w = want.remove(&b.base).unwrap_or(0);
        let live = if b.size_class == MEDIUM_CLASS {
            b.runs
        } else {
            b.live
        };
        if live != w {
            wrong.push((b.base, b.stride, b.life, b.live, w));
        }
    });
    assert!(
        wrong.is_empty(),
        "blocks (base, stride, life, live, expected): {wrong:?}"
    );
    assert!(
        want.is_empty(),
        "live objects in blocks for_each_block did not report: {want:?}"
    );
}
