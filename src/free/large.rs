//! Large frees: the large table checked (every build: a hash look-up beside a system call),
//! then the mapping cached or unmapped. The small requests a full region served from
//! mappings of their own (`RegionOptions::fallback`) are freed here too, checked against the
//! size class their entry keeps.

use crate::class::{class_of, CLASSES};
use crate::instance::Instance;
use crate::large::{unmap_evicted, LargeTable, Mapping, Request};
use crate::misuse::{report, Misuse, Problem};
use crate::os;

impl Instance {
    /// Frees a large allocation, after checking the large table (every build: a hash
    /// look-up beside a system call): the pointer must start a live large allocation of
    /// this lifetime class whose mapped length `size` rounds to.
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

    /// Frees the large allocation at `p` if the large table holds it with this length and
    /// lifetime class (a large request's); else returns what is wrong, having changed
    /// nothing. No lock is held on return (reporting may allocate).
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
            // A run of the region's units (`Pool::free_run`), or misuse.
            // SAFETY: forwarded contract.
            return unsafe { pool.free_run(p, size, life) }
                .map_err(|problem| self.misuse(p, size, life, problem));
        }
        // SAFETY: forwarded contract.
        unsafe { self.free_mapping_checked(p, size, Request::large(life)) }
            .map_err(|problem| self.misuse(p, size, life, problem))
    }

    /// Frees the mapping at `p` (outside the region) if the large table holds it made for
    /// `request` with a length `size` rounds to; else returns what is wrong, having changed
    /// nothing. No lock is held on return.
    ///
    /// # Safety
    /// If the large table holds a mapping at `p`, it is the caller's to free.
    unsafe fn free_mapping_checked(
        &self,
        p: *mut u8,
        size: usize,
        request: Request,
    ) -> Result<(), Problem> {
        let Some(pool) = self.pool_if_any() else {
            return Err(Problem::Foreign);
        };
        // One clock read (before the lock) serves the cache and the empty blocks.
        let now = crate::decay::now();
        let mut large = pool.large.lock();
        let found = large_match(&large, p, size, request);
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
        let stride = CLASSES[class].stride as usize;
        let request = Request {
            class: Some(class),
            life,
        };
        // SAFETY: a live mapping of the large table (checked again under its lock), the
        // caller's to free if it was made for this request.
        if let Err(problem) = unsafe { self.free_mapping_checked(p, stride, request) } {
            report::<ABORT>(self.misuse(p, size, life, problem));
        }
        true
    }
}

/// The live large allocation at `p` when it was made for `request` and `size` rounds to its
/// length; else what is wrong (a cached address was freed already: a double free).
pub(crate) fn large_match(
    large: &LargeTable,
    p: *mut u8,
    size: usize,
    request: Request,
) -> Result<Mapping, Problem> {
    match large.get(p as usize) {
        Some(m) if m.request == request && Some(m.len) == os::page_round(size) => Ok(m),
        Some(m) => Err(mismatch(m)),
        None if large.is_cached(p as usize) => Err(Problem::DoubleFree),
        None => Err(Problem::NotLarge),
    }
}

/// What is wrong with a call that names another request than the one `m` was made for.
pub(crate) fn mismatch(m: Mapping) -> Problem {
    match m.request.class {
        Some(class) => Problem::FallbackMismatch {
            class,
            stride: CLASSES[class].stride as usize,
            life: m.request.life,
        },
        None => Problem::LargeMismatch {
            mapped: m.len,
            life: m.request.life,
        },
    }
}
