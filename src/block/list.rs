//! Lists of blocks, linked by unit index (no link holds an address): the intrusive
//! doubly linked [`BlockList`] and the lock-free [`BlockStack`].

use super::*;

/// Where a block's links point: unit indices counted from a base (the region's), so no
/// link holds an absolute address. Block `u` is at `base + u * BLOCK_SIZE`.
#[derive(Clone, Copy)]
pub(crate) struct Units<'a> {
    base: usize,
    _blocks: PhantomData<&'a Header>,
}

impl<'a> Units<'a> {
    /// Units counted from `base`, [`BLOCK_SIZE`]-aligned.
    ///
    /// # Safety
    /// Every unit index a list or stack built on these units holds names a block header
    /// that stays mapped for `'a`.
    pub(crate) unsafe fn new(base: *mut u8) -> Units<'a> {
        debug_assert_eq!(base as usize % BLOCK_SIZE, 0);
        Units {
            base: base as usize,
            _blocks: PhantomData,
        }
    }

    /// The header of block `u`.
    #[inline]
    pub(crate) fn block(self, u: u32) -> &'a Header {
        let h = (self.base + ((u as usize) << BLOCK_SIZE.trailing_zeros())) as *const Header;
        // SAFETY: `u` came from a link, which names a mapped block (`new`'s contract).
        unsafe { &*h }
    }

    /// The unit index of block `h`.
    #[inline]
    pub(crate) fn index(self, h: &Header) -> u32 {
        ((h.base() as usize - self.base) >> BLOCK_SIZE.trailing_zeros()) as u32
    }
}

/// Where a [`BlockList`] keeps its links: `[next, prev]` per block, in the blocks' headers
/// ([`Units`]) or in a table beside them.
pub(crate) trait Links<'a>: Copy {
    /// How links name blocks.
    fn units(self) -> Units<'a>;
    /// `[next, prev]` of block `u`.
    fn links(self, u: u32) -> &'a [AtomicU32; 2];
}

impl<'a> Links<'a> for Units<'a> {
    fn units(self) -> Units<'a> {
        self
    }
    fn links(self, u: u32) -> &'a [AtomicU32; 2] {
        &self.block(u).links
    }
}

/// An intrusive doubly linked list of blocks: its first block's unit index, and per block
/// `[next, prev]` links ([`Links`]). Only the list's owner (a heap's thread, or the pool-lock
/// holder) touches it and its blocks' links.
///
/// Invariants: a block is on at most one list of each kind of links; for every listed
/// block `b`, `next(prev(b)) == b` (or `first == b`) and `prev(next(b)) == b` (or `next(b)
/// == NONE`).
#[repr(transparent)]
pub(crate) struct BlockList {
    first: u32,
}

const NEXT: usize = 0;
const PREV: usize = 1;
/// A `prev` link no push writes (unit indices are below it): see
/// [`BlockList::mark_unlisted`].
const UNLISTED: u32 = NONE - 1;

impl BlockList {
    /// An empty list.
    pub(crate) const fn new() -> BlockList {
        BlockList { first: NONE }
    }

    /// True when no block is listed.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.first == NONE
    }

    /// The first block's unit index ([`NONE`] when empty), unchecked: what `verify` checks
    /// before it follows the link.
    #[inline]
    pub(crate) fn first_unit(&self) -> u32 {
        self.first
    }

    /// The first block.
    #[inline]
    pub(crate) fn first<'a>(&self, links: impl Links<'a>) -> Option<&'a Header> {
        (!self.is_empty()).then(|| links.units().block(self.first))
    }

    /// Puts `h` first.
    pub(crate) fn push<'a>(&mut self, links: impl Links<'a>, h: &Header) {
        let u = links.units().index(h);
        let l = links.links(u);
        l[PREV].store(NONE, Ordering::Relaxed);
        l[NEXT].store(self.first, Ordering::Relaxed);
        if !self.is_empty() {
            links.links(self.first)[PREV].store(u, Ordering::Relaxed);
        }
        self.first = u;
    }

    /// Unlinks `h`, which is on this list.
    pub(crate) fn remove<'a>(&mut self, links: impl Links<'a>, h: &Header) {
        let u = links.units().index(h);
        let l = links.links(u);
        let (next, prev) = (
            l[NEXT].load(Ordering::Relaxed),
            l[PREV].load(Ordering::Relaxed),
        );
        if prev == NONE {
            debug_assert_eq!(self.first, u);
            self.first = next;
        } else {
            links.links(prev)[NEXT].store(next, Ordering::Relaxed);
        }
        if next != NONE {
            links.links(next)[PREV].store(prev, Ordering::Relaxed);
        }
        l[NEXT].store(NONE, Ordering::Relaxed);
        l[PREV].store(NONE, Ordering::Relaxed);
    }

    /// Unlinks and returns the first block.
    pub(crate) fn pop<'a>(&mut self, links: impl Links<'a>) -> Option<&'a Header> {
        let h = self.first(links)?;
        self.remove(links, h);
        Some(h)
    }

    /// The listed blocks, first to last. The walk reads a block's link before it yields
    /// the block, so the caller may remove the block it was given (and no other) meanwhile.
    pub(crate) fn iter<'a, L: Links<'a>>(&self, links: L) -> ListIter<'a, L> {
        ListIter {
            links,
            next: self.first,
            way: NEXT,
            _blocks: PhantomData,
        }
    }

    /// The listed blocks from `last` (a listed block) back to the first, as
    /// [`BlockList::iter`] the other way.
    pub(crate) fn iter_back<'a, L: Links<'a>>(links: L, last: &Header) -> ListIter<'a, L> {
        ListIter {
            links,
            next: links.units().index(last),
            way: PREV,
            _blocks: PhantomData,
        }
    }

    /// Marks block `h` as on no list of these links: its `prev` link holds [`UNLISTED`],
    /// which no push leaves (the repair of a pool whose lock holder died tells by it which
    /// blocks it listed again).
    pub(crate) fn mark_unlisted<'a>(links: impl Links<'a>, h: &Header) {
        let l = links.links(links.units().index(h));
        l[NEXT].store(NONE, Ordering::Relaxed);
        l[PREV].store(UNLISTED, Ordering::Relaxed);
    }

    /// True when block `h` was marked by [`BlockList::mark_unlisted`] and listed by no
    /// push since.
    pub(crate) fn is_unlisted<'a>(links: impl Links<'a>, h: &Header) -> bool {
        links.links(links.units().index(h))[PREV].load(Ordering::Relaxed) == UNLISTED
    }

    /// True when block `h`'s successor links back to it: `prev(next(h)) == h`.
    pub(crate) fn links_back<'a>(links: impl Links<'a>, h: &Header) -> bool {
        let u = links.units().index(h);
        let next = links.links(u)[NEXT].load(Ordering::Relaxed);
        next == NONE || links.links(next)[PREV].load(Ordering::Relaxed) == u
    }
}

/// [`BlockList::iter`].
pub(crate) struct ListIter<'a, L> {
    links: L,
    next: u32,
    /// The link followed: `NEXT`, or `PREV` (first to last, or back).
    way: usize,
    _blocks: PhantomData<&'a Header>,
}

impl<'a, L: Links<'a>> Iterator for ListIter<'a, L> {
    type Item = &'a Header;

    fn next(&mut self) -> Option<&'a Header> {
        if self.next == NONE {
            return None;
        }
        let u = self.next;
        self.next = self.links.links(u)[self.way].load(Ordering::Relaxed);
        Some(self.links.units().block(u))
    }
}

/// A lock-free stack of blocks (unit indices linked through `Header::returned_next`): the
/// blocks a free took out of `FULL` state, waiting for their owner to list them again.
/// Any thread pushes; only the owner takes, and it takes everything at once, so the stack
/// is ABA-free for the same reason as the remote free list.
pub(crate) struct BlockStack {
    top: AtomicU32,
}

impl BlockStack {
    const_unless_loom! {
        pub(crate) fn new() -> Self {
            BlockStack {
                top: AtomicU32::new(NONE),
            }
        }
    }

    /// Pushes block `h`.
    pub(crate) fn push(&self, units: Units<'_>, h: &Header) {
        let unit = units.index(h);
        let mut top = self.top.load(Ordering::Relaxed);
        loop {
            h.returned_next.store(top, Ordering::Relaxed);
            // Release: the link stored above happens before the Acquire in `take_all`.
            match self
                .top
                .compare_exchange_weak(top, unit, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => top = now,
            }
        }
    }

    /// Takes every block: the stack is empty after the call, and the caller walks what it
    /// took.
    pub(crate) fn take_all<'a>(&self, units: Units<'a>) -> StackIter<'a> {
        let top = if self.top.load(Ordering::Relaxed) == NONE {
            NONE
        } else {
            self.top.swap(NONE, Ordering::Acquire)
        };
        StackIter { units, next: top }
    }
}

/// The blocks [`BlockStack::take_all`] took, last pushed first. The walk reads a block's
/// link before it yields the block, so the caller may list the block elsewhere.
pub(crate) struct StackIter<'a> {
    units: Units<'a>,
    next: u32,
}

impl<'a> Iterator for StackIter<'a> {
    type Item = &'a Header;

    fn next(&mut self) -> Option<&'a Header> {
        if self.next == NONE {
            return None;
        }
        let h = self.units.block(self.next);
        self.next = h.returned_next.load(Ordering::Relaxed);
        Some(h)
    }
}
