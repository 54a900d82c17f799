//! Large frees: the large table checked (every build: a hash look-up beside a system call),
//! then the mapping cached or unmapped. The small requests a full region served from
//! mappings of their own (`RegionOptions::fallback`) and the medium requests the region had
//! no room for are freed here too, checked against the size class or granule count their
//! entry keeps.

use crate::class::{class_of, medium_granules, CLASSES, GRANULE, MAX_MEDIUM};
use crate::instance::Instance;
use crate::large::{unmap_evicted, Kind, LargeTable, Mapping};
use crate::misuse::{report, Misuse, Problem};
use crate::os;
use crate::route::Route;
use crate::sync::Ordering;

impl Instance {
    /// A free of a short medium allocation (`granules <= CACHED_MAX`) into the route's
    /// heap's medium cache (`crate::medium_cache`), taking no lock: true when `p` starts a
    /// live run of `granules` granules in a medium block of lifetime class `life` and the
    /// cache had room; false changes nothing (the locked free follows and reports misuse).
    #[inline(never)]
    pub(super) fn free_into_cache<R: Route>(&self, route: R, p: *mut u8, granules: usize, life: usize) -> bool {
        let Some(pool) = self.pool_if_any().filter(|pool| pool.region.contains(p as usize)) else {
            return false;
        };
        route
            .with_heap(self.instance.load(Ordering::Relaxed), |heap| {
                pool.medium_cache_free(&heap.medium, p, granules, life).then_some(())
            })
            .is_some()
    }

    /// Frees a medium or large allocation (a size above the small classes): in the region,
    /// a medium one, after checking its run (every build: the run table), or a run of the
    /// region's units, after checking its word; outside it, a large one, after checking the
    /// large table (every build: a hash look-up beside a system call): the pointer must
    /// start a live large allocation of this lifetime class whose mapped length `size`
    /// rounds to.
    ///
    /// # Safety
    /// As [`Instance::free_sized`], with `size` a large size: if a large allocation of
    /// this instance starts at `p`, it is the caller's to free (nothing uses it after).
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(super) unsafe fn free_large<const ABORT: bool>(&self, p: *mut u8, size: usize, life: usize) {
        if p.is_null() {
            return; // A null free does nothing (see `free_sized`).
        }
        // SAFETY: forwarded contract.
        if let Err(m) = unsafe { self.free_large_checked(p, size, life) } {
            report::<ABORT>(m);
        }
    }

    /// Frees the medium allocation at `p` (in the region) if a live run of `size`'s
    /// granules in lifetime class `life` starts there, the large allocation at `p` if a
    /// run of the region's units of this length and lifetime class starts there, or the
    /// allocation at `p` (outside the region) if the large table holds it made for a request
    /// of `size` (medium or large) in lifetime class `life`; else returns what is wrong,
    /// having changed nothing. No lock is held on return (reporting may allocate).
    ///
    /// # Safety
    /// As [`Instance::free_large`], with `p` not null.
    pub(crate) unsafe fn free_large_checked(
        &self,
        p: *mut u8,
        size: usize,
        life: usize,
    ) -> Result<(), Misuse> {
        let Some(pool) = self.pool_if_any() else {
            return Err(self.misuse(p, size, life, Problem::Foreign));
        };
        if pool.region.contains(p as usize) {
            // In the region: a run of its units (a large allocation, `Pool::free_run`), told
            // by its unit's state; else a medium allocation (a run of granules in a medium
            // block, `Pool::medium_free`), checked against its block's run table; or misuse.
            let freed = if self.in_run(p) {
                // SAFETY: forwarded contract.
                unsafe { pool.free_run(p, size, life) }
            } else {
                match pool.medium_free(p, size, life) {
                    // Not a medium block: for a large size, no large allocation (a small
                    // block, a run freed already, or never one).
                    Err(Problem::NotMedium { .. }) if size > MAX_MEDIUM => Err(Problem::NotLarge),
                    freed => freed,
                }
            };
            return freed.map_err(|problem| self.misuse(p, size, life, problem));
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_mapping_checked(p, Named::Size(size), life) }
            .map_err(|problem| self.misuse(p, size, life, problem))
    }

    /// Frees the mapping at `p` (outside the region) if the large table holds it made for
    /// what `named` names in lifetime class `life` ([`large_match`]); else returns what is
    /// wrong, having changed nothing. No lock is held on return.
    ///
    /// # Safety
    /// If the large table holds a mapping at `p`, it is the caller's to free.
    unsafe fn free_mapping_checked(
        &self,
        p: *mut u8,
        named: Named,
        life: usize,
    ) -> Result<(), Problem> {
        let Some(pool) = self.pool_if_any() else {
            return Err(Problem::Foreign);
        };
        // One clock read (before the lock) serves the cache and the empty blocks.
        let now = crate::decay::now();
        let mut large = pool.large.lock();
        let found = large_match(&large, p, named, life);
        let evicted = found.map(|m| {
            large.remove(p as usize);
            // Cached, not unmapped: the caller gives the mapping up.
            large.cache_freed(p as usize, m.mapped, now)
        });
        drop(large);
        let evicted = evicted?;
        // SAFETY: what the cache gave up (or would not keep): mappings of no allocation.
        unsafe { unmap_evicted(&evicted) };
        // A slow path: empty blocks unused for the delay go back (see `pool`'s `empty`).
        pool.decay_if_due(now);
        self.give_back_idle_own(now);
        Ok(())
    }

    /// A free of a small size of `p`, outside the region: when the region falls back and
    /// `p` is one of its mappings, frees it (misuse of it is reported) and returns true;
    /// false when `p` is no such mapping.
    #[cold]
    #[inline(never)]
    #[track_caller]
    pub(super) fn free_fallback<const ABORT: bool>(&self, p: *mut u8, size: usize, align: usize, life: usize) -> bool {
        let Some(pool) = self.pool_if_any() else {
            return false;
        };
        let (Some(class), true) = (class_of(size, align), pool.region.falls_back()) else {
            return false;
        };
        if pool.large.lock().get(p as usize).is_none() {
            return false;
        }
        // SAFETY: a live mapping of the large table (checked again under its lock), the
        // caller's to free if it was made for a request of this class.
        if let Err(problem) = unsafe { self.free_mapping_checked(p, Named::Class(class), life) } {
            report::<ABORT>(self.misuse(p, size, life, problem));
        }
        true
    }
}

/// What a free (or a resize's old side) names of a mapping of the large table besides its
/// lifetime class: the size class of a small size, or a size above the small classes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Named {
    /// A small size of this size class.
    Class(usize),
    /// A medium or large size.
    Size(usize),
}

impl Named {
    /// True when a free naming this (in lifetime class `life`) is right for `m`: a small
    /// request's mapping with the request's size class; a medium one's with a size of its
    /// granule count; a large one's with a size that rounds to its length.
    fn fits(self, m: &Mapping, life: usize) -> bool {
        m.request.life == life
            && match (m.request.kind, self) {
                (Kind::Small(class), Named::Class(c)) => class == c,
                (Kind::Medium(granules), Named::Size(size)) => {
                    medium_granules(size, 1) == Some(granules)
                }
                (Kind::Large, Named::Size(size)) => os::page_round(size) == Some(m.len),
                _ => false,
            }
    }
}

/// The live large allocation at `p` when a free naming `named` in lifetime class `life` is
/// right for it ([`Named::fits`]); else what is wrong (a cached address was freed already:
/// a double free).
pub(crate) fn large_match(
    large: &LargeTable,
    p: *mut u8,
    named: Named,
    life: usize,
) -> Result<Mapping, Problem> {
    match large.get(p as usize) {
        Some(m) if named.fits(&m, life) => Ok(m),
        Some(m) => Err(mismatch(m)),
        None => Err(large.not_a_start(p as usize).unwrap_or(Problem::NotLarge)),
    }
}

/// What is wrong with a call that names another request than the one `m` was made for.
pub(crate) fn mismatch(m: Mapping) -> Problem {
    let life = m.request.life;
    match m.request.kind {
        Kind::Small(class) => Problem::FallbackMismatch {
            class,
            stride: CLASSES[class].stride as usize,
            life,
        },
        Kind::Medium(granules) => Problem::WrongRun {
            usable: granules * GRANULE,
            block_life: life,
        },
        Kind::Large => Problem::LargeMismatch {
            mapped: m.len,
            life,
        },
    }
}
