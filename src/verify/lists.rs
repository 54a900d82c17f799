//! `verify`'s walks of the lists of blocks: every heap's and the pool's lists, checked link
//! by link ([`Carved`]: damaged links are reported, never followed); and first the state
//! they start from ([`check_state`]).

use super::{ensure, Fault, Problem};
use crate::block::{BlockList, Header, Links, Role, HEAPLESS, NONE, NO_HOLDER, FULL};
use crate::class::HeadIndex;
use crate::heap_record::HeapState;
use crate::pool::{Pool, PoolState, EMPTY_KEY};
use crate::region::BLOCK;
use crate::sync::Ordering;

/// The region's carved blocks, as of the walk's lock: what every link a list walk follows
/// must name. A list walk is checked link by link (a link naming no carved block is
/// reported before it is followed) and takes at most `count` steps (a longer list holds a
/// block twice: a cycle), so damage costs no more than the blocks.
#[derive(Clone, Copy)]
pub(super) struct Carved<'a> {
    pool: &'a Pool,
    count: usize,
}

impl<'a> Carved<'a> {
    pub(super) fn new(pool: &'a Pool, st: &PoolState) -> Carved<'a> {
        let count = pool.region.carved_units(&st.region);
        Carved { pool, count }
    }

    /// True when unit `u` is a carved block.
    fn is_block(self, u: u32) -> bool {
        (u as usize) < self.count && self.pool.region.unit_state(u as usize) == BLOCK
    }

    /// Calls `f` on every block of `list` (linked by `links`) in order; the first link
    /// naming no carved block, or a walk longer than the carved blocks, is the error (in
    /// the block holding the link; the region's first unit for the list's head).
    pub(super) fn walk<'l, L: Links<'l>>(
        self,
        list: &BlockList,
        links: L,
        what: &'static str,
        mut f: impl FnMut(&'l Header) -> Result<(), Fault>,
    ) -> Result<(), Fault> {
        let (mut u, mut from, mut steps) = (list.first_unit(), None::<&Header>, 0);
        while u != NONE {
            let problem = if !self.is_block(u) {
                Problem::Link { what, unit: u }
            } else if steps == self.count {
                Problem::Cycle(what)
            } else {
                let h = links.units().block(u);
                f(h)?;
                (from, u, steps) = (Some(h), links.links(u)[0].load(Ordering::Relaxed), steps + 1);
                continue;
            };
            return Err(match from {
                Some(h) => Fault::new(h, problem),
                None => Fault {
                    block: self.pool.region.base(),
                    geometry: None,
                    problem,
                },
            });
        }
        Ok(())
    }

    /// [`BlockList::links_back`], reading no link a damaged `next` names outside the
    /// carved blocks (false then).
    pub(super) fn links_back<'l>(self, links: impl Links<'l>, h: &Header) -> bool {
        let next = links.links(links.units().index(h))[0].load(Ordering::Relaxed);
        next == NONE || (self.is_block(next) && BlockList::links_back(links, h))
    }
}

/// The pool state every walk starts from, which only a damaged shared region holds wrong:
/// `carved <= unit_count` (the unit table's length); every heap registry entry names no
/// heap or its heap's slot ([`Pool::misregistered`]); the abandoned heaps' list (which the
/// next joining thread walks) links registered heaps, abandoned, each once (a walk of at
/// most the registered heaps). Reported at the region's base.
pub(super) fn check_state(pool: &Pool, st: &PoolState) -> Result<(), Fault> {
    let (carved, units) = (pool.region.carved_units(&st.region), pool.region.unit_count());
    let problem = if carved > units {
        Problem::Carved { carved, units }
    } else if let Some((id, link)) = pool.misregistered() {
        Problem::Registry { id, link }
    } else if let Some(problem) = abandoned_fault(pool, st) {
        problem
    } else {
        return Ok(());
    };
    Err(Fault {
        block: pool.region.base(),
        geometry: None,
        problem,
    })
}

/// The first wrong link of the abandoned heaps' list (see [`check_state`]), if any.
fn abandoned_fault(pool: &Pool, st: &PoolState) -> Option<Problem> {
    let most = pool.registered_heaps().count();
    let (mut link, mut steps) = (st.abandoned, 0);
    while link != 0 {
        let record = pool.registered_record(link);
        // SAFETY: null, or a registered heap's record, mapped while the pool is.
        let Some(r) = (unsafe { record.as_ref() }) else {
            return Some(Problem::Abandoned { link, what: "names no registered heap" });
        };
        if steps == most {
            return Some(Problem::Abandoned { link, what: "is longer than the heaps (a cycle)" });
        }
        if r.state() != HeapState::Abandoned {
            return Some(Problem::Abandoned { link, what: "names a heap not abandoned" });
        }
        (link, steps) = (r.next_abandoned, steps + 1);
    }
    None
}

/// The pool's kept empty blocks (`Pool::take_retained` pops them): every block on the list
/// has no key, the list holds `retained_count` blocks, and so many blocks have no key
/// (`empty`, counted by the walk of every block): each is kept, once.
pub(super) fn check_retained(pool: &Pool, st: &PoolState, carved: Carved<'_>, empty: usize) -> Result<(), Fault> {
    let mut listed = 0;
    carved.walk(st.retained_list(), pool.units(), "the kept empty blocks' list", |h| {
        listed += 1;
        ensure(h.key() == EMPTY_KEY, h, Problem::Kept(h.key()))
    })?;
    let count = Pool::retained_blocks(st);
    if listed == count && listed == empty {
        return Ok(());
    }
    Err(Fault {
        block: pool.region.base(),
        geometry: None,
        problem: Problem::KeptCount { listed, count, empty },
    })
}

/// A block on a list of `what` whose blocks are owned by `owner`: key, owner, links.
fn check_listed(
    carved: Carved<'_>,
    h: &Header,
    owner: u64,
    what: &'static str,
) -> Result<(), Fault> {
    let listable = h.key() != EMPTY_KEY && h.remote.load(Ordering::Relaxed) & FULL == 0;
    ensure(listable, h, Problem::ListedEmptyOrFull(what))?;
    ensure(h.owner() == owner, h, Problem::ListedOwner(what, h.owner()))?;
    let linked = carved.links_back(carved.pool.units(), h);
    ensure(linked, h, Problem::BackLink(what))
}

/// Every heap's and the pool's lists: keys, owners, links, no `FULL` block listed.
pub(super) fn check_lists(pool: &Pool, st: &PoolState, carved: Carved<'_>) -> Result<(), Fault> {
    for heap in crate::heap::registered(pool) {
        // SAFETY: registered heaps stay mapped; verify's contract and the pool lock keep
        // them still.
        let hp = unsafe { &*heap };
        let mut res = Ok(());
        hp.for_each_head(pool, |current, partial| {
            if res.is_err() {
                return;
            }
            if let Some(h) = current {
                let unit = pool.units().index(h);
                res = ensure(carved.is_block(unit), h, Problem::Link { what: "a heap's current block", unit })
                    .and_then(|()| check_heap_listed(carved, hp, h, true));
            }
            res = res.and_then(|()| {
                carved.walk(partial, pool.units(), "a heap's list", |h| {
                    check_heap_listed(carved, hp, h, false)
                })
            });
        });
        res?;
    }
    for head in pool.heads() {
        carved.walk(st.partial_list(head), pool.units(), "the pool's list", |h| {
            check_listed(carved, h, 0, "the pool")?;
            ensure(h.role() == Role::Listed, h, Problem::PoolRole(h.role()))?;
            let listed_under = HeadIndex::new(h.class(), h.life());
            ensure(listed_under == head, h, Problem::PoolHead(head.get()))?;
            let holder = h.holder();
            let pools = holder == NO_HOLDER || holder == HEAPLESS;
            ensure(pools, h, Problem::PoolHolder(holder))
        })?;
    }
    Ok(())
}

/// A block heap `hp` lists (`current`: as a head's current block): key, owner, holder,
/// role, links.
fn check_heap_listed(
    carved: Carved<'_>,
    hp: &crate::heap::Heap,
    h: &Header,
    current: bool,
) -> Result<(), Fault> {
    // A key naming no class (an empty block's, or a damaged word) is reported before
    // anything asks the class's geometry.
    let Some(b) = h.snapshot() else {
        check_listed(carved, h, hp.token, "a heap")?;
        return Err(Fault::new(h, Problem::Key(h.key())));
    };
    // A heap's tiny blocks are pool-owned, held by the heap (see `crate::heap`).
    let tiny = b.geometry.is_tiny();
    check_listed(carved, h, if tiny { 0 } else { hp.token }, "a heap")?;
    let (heap, holder) = (hp.id, h.holder());
    ensure(!tiny || holder == heap, h, Problem::HeapTiny { heap, holder })?;
    let role = if current { Role::Current } else { Role::Listed };
    let says = h.role();
    ensure(says == role, h, Problem::HeapRole { role, says })
}

/// The lists `compact` follows under the pool lock, checked link by link first in a region
/// other processes use, whose state a stray write of another process may have damaged
/// since this process attached (RED-30): the pool's state ([`check_state`]), its partial
/// lists, its kept empty blocks, the lifetime classes' lists, the medium lists and the
/// partial lists of `heap` (the caller's own). Every link names a carved block whose next
/// links back to it, and no list is longer than the carved blocks. The problem found, if
/// any (`compact` then leaves the lists as they are: `verify` reports it).
pub(super) fn lists_fault(pool: &Pool, st: &PoolState, heap: Option<&crate::heap::Heap>) -> Option<Fault> {
    let carved = Carved::new(pool, st);
    let units = pool.units();
    let mut res = check_state(pool, st);
    for head in pool.heads() {
        let what = "the pool's list";
        res = res.and_then(|()| carved.walk(st.partial_list(head), units, what, linked(carved, units, what)));
    }
    let what = "the kept empty blocks' list";
    res = res.and_then(|()| carved.walk(st.retained_list(), units, what, linked(carved, units, what)));
    for life in 0..pool.life_count {
        let (links, what) = (pool.life_links(), "a lifetime class's list");
        res = res.and_then(|()| carved.walk(st.of_life(life), links, what, linked(carved, links, what)));
        let what = "a medium list";
        res = res.and_then(|()| carved.walk(st.medium_list(life), units, what, linked(carved, units, what)));
    }
    if let Some(hp) = heap {
        hp.for_each_head(pool, |_, partial| {
            let what = "a heap's list";
            res = core::mem::replace(&mut res, Ok(()))
                .and_then(|()| carved.walk(partial, units, what, linked(carved, units, what)));
        });
    }
    res.err()
}

/// A list walk's check of each block (`links`: the list's kind of links): its next links
/// back to it.
fn linked<'c, 'l, L: Links<'l>>(
    carved: Carved<'c>,
    links: L,
    what: &'static str,
) -> impl FnMut(&'l Header) -> Result<(), Fault> + use<'c, 'l, L> {
    move |h| ensure(carved.links_back(links, h), h, Problem::BackLink(what))
}
