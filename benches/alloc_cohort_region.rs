//! The workloads of the `workloads` library with cohort as the global allocator in a fixed
//! region made with `RegionOptions` (`Cohort::with_options`): a pool laid out as a shared
//! region's, in a private mapping that no other process uses. Not part of the suite's
//! columns: it compares the paths of such a region with the default instance's
//! (`alloc_cohort`), the cross-thread free above all (`ring`, `channel`).
//!
//! The region is made at the first allocation (the runtime's, before `main`), and its
//! capacity is `COHORT_BENCH_REGION_MIB` MiB (default 4096: reserved, not committed). With
//! `COHORT_BENCH_REGION_SHARED` set it is a shared-anonymous region instead
//! (`Cohort::shared_anonymous_with`): the paths of a pool other processes may use.

use cohort::{Cohort, RegionOptions};
use std::alloc::{GlobalAlloc, Layout};
use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU8, Ordering};

/// The instance, made once ([`Region::get`]).
struct Region {
    /// [`EMPTY`], [`MAKING`] or [`MADE`].
    state: AtomicU8,
    cohort: UnsafeCell<MaybeUninit<Cohort>>,
}

const EMPTY: u8 = 0;
const MAKING: u8 = 1;
const MADE: u8 = 2;

// SAFETY: `cohort` is written once, by the thread that moved `state` from EMPTY to MAKING,
// and read only after `state` reads MADE (Release/Acquire); `Cohort` is Sync.
unsafe impl Sync for Region {}

/// Writes `msg` to stderr and aborts (no allocation: this runs inside the allocator).
fn die(msg: &str) -> ! {
    // SAFETY: a valid buffer of msg.len() bytes.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    std::process::abort()
}

impl Region {
    #[inline]
    fn get(&self) -> &Cohort {
        if self.state.load(Ordering::Acquire) != MADE {
            self.make();
        }
        // SAFETY: MADE: written once, never again.
        unsafe { (*self.cohort.get()).assume_init_ref() }
    }

    #[cold]
    #[inline(never)]
    fn make(&self) {
        match self
            .state
            .compare_exchange(EMPTY, MAKING, Ordering::Acquire, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(MAKING) => {
                // Another thread makes it (a recursive call from `with_options` would wait
                // for ever: it allocates nothing, which this wait would show as a hang).
                while self.state.load(Ordering::Acquire) != MADE {
                    std::hint::spin_loop();
                }
                return;
            }
            Err(_) => return,
        }
        // Read without allocating (`std::env` would allocate, here, in the allocator).
        // SAFETY: a NUL-terminated name; the result is null or a NUL-terminated string,
        // read before anything can change the environment (no thread runs yet).
        let mib = unsafe {
            let s = libc::getenv(c"COHORT_BENCH_REGION_MIB".as_ptr());
            if s.is_null() {
                4096
            } else {
                std::ffi::CStr::from_ptr(s)
                    .to_str()
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .unwrap_or_else(|| die("COHORT_BENCH_REGION_MIB: a number of MiB\n"))
            }
        };
        let options = RegionOptions::new(mib << 20);
        // SAFETY: a NUL-terminated name, read as above.
        let shared = unsafe { !libc::getenv(c"COHORT_BENCH_REGION_SHARED".as_ptr()).is_null() };
        let made = if shared {
            Cohort::shared_anonymous_with(&options)
        } else {
            Cohort::with_options(&options)
        };
        let Ok(c) = made else {
            die("alloc_cohort_region: the region was refused\n");
        };
        // SAFETY: MAKING is ours: nobody reads the cell before MADE.
        unsafe { (*self.cohort.get()).write(c) };
        self.state.store(MADE, Ordering::Release);
    }
}

static REGION: Region = Region {
    state: AtomicU8::new(EMPTY),
    cohort: UnsafeCell::new(MaybeUninit::uninit()),
};

/// The global allocator: [`REGION`]'s instance.
struct Global;

// SAFETY: every method forwards its arguments unchanged to the instance's `GlobalAlloc`
// method of the same name; every pointer freed came from that instance.
unsafe impl GlobalAlloc for Global {
    #[inline]
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        // SAFETY: the caller upholds alloc's contract.
        unsafe { GlobalAlloc::alloc(REGION.get(), l) }
    }
    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above, for dealloc.
        unsafe { GlobalAlloc::dealloc(REGION.get(), p, l) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        // SAFETY: as above, for alloc_zeroed.
        unsafe { GlobalAlloc::alloc_zeroed(REGION.get(), l) }
    }
    #[inline]
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as above, for realloc.
        unsafe { GlobalAlloc::realloc(REGION.get(), p, l, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Global = Global;

fn main() {
    workloads::main(workloads::Hooks {
        compact: || {
            REGION.get().compact();
        },
        classes: None,
    });
}
