//! Giving unused memory back on a schedule: what an instance keeps of the memory its
//! program no longer uses ([`Retention`]: bounds in bytes and a delay), and for how long
//! ([`Decay`]: a delay that adapts to the program).
//!
//! Two kinds of memory are kept for reuse: freed large mappings (the large cache) and empty
//! small blocks (the pool's retained blocks). Both are bounded in bytes at all times, and
//! both are given back once unused for longer than the current delay `d`. Nothing runs in
//! the background: the slow paths (a block taken, a large allocation or free) look at the
//! clock and give back what is due.
//!
//! **The delay adapts.** With `max` the configured delay and `floor = max / 8`:
//! `floor <= d <= max` at all times, and `d` starts at `floor`. A give-back that a request
//! regrets (the request found nothing kept and had to ask the OS, less than `d` after the
//! give-back) was premature: `d` doubles (at most `max`). A give-back that no request regrets
//! before the next one was right: `d` shrinks by a quarter (at least `floor`). A program
//! that reuses its memory every `P` milliseconds thus settles on `d > P` (when `P < max`) and
//! stops paying for fresh pages; a program that frees a burst and stays idle gets it back
//! after `floor` to `max`.
//!
//! **Without timestamps** ([`Idle`]): empty blocks carry no time; the pool counts, per
//! window of `d / 2`, the fewest blocks it kept at any moment of the window (`low`). Those
//! `low` blocks were unused for the whole window: at the window's end they are given back.
//! So a block is given back after at least `d / 2` and at most `d` unused.
//!
//! Times are milliseconds of the system's monotonic clock ([`crate::os::now_ms`]), the
//! same in every process (see [`now`]).

use crate::class::BLOCK_SIZE;
use core::time::Duration;

/// The time kept memory is judged by: milliseconds of the monotonic clock. Under loom, a
/// clock that never moves (models must not depend on the time they take).
pub(crate) fn now() -> u64 {
    #[cfg(loom)]
    return 0;
    #[cfg(not(loom))]
    crate::os::now_ms()
}

/// What an instance keeps of the memory it no longer uses, and for how long. The defaults
/// ([`Retention::DEFAULT`]) can be changed for every instance of a process from the
/// environment ([`Retention::from_environment`]) and for one instance by
/// [`crate::Cohort::set_retention`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Most bytes of freed large mappings kept for reuse (0: none; every large free unmaps).
    /// `COHORT_LARGE_CACHE`.
    pub large_cache_bytes: usize,
    /// Most freed large mappings kept, at most [`Retention::MAX_LARGE_CACHE_MAPPINGS`].
    /// `COHORT_LARGE_CACHE_MAPPINGS`.
    pub large_cache_mappings: usize,
    /// Most bytes of empty small blocks kept committed (counted in whole 2 MiB blocks).
    /// `COHORT_EMPTY_BLOCKS`.
    pub empty_block_bytes: usize,
    /// The longest time kept memory stays unused before it is given back (the adaptive
    /// delay runs from an eighth of it to all of it; zero: at once). `COHORT_DECAY`.
    pub delay: Duration,
}

impl Retention {
    /// The most mappings the large cache can hold.
    pub const MAX_LARGE_CACHE_MAPPINGS: usize = 64;
    /// The longest delay accepted (one hour).
    pub const MAX_DELAY: Duration = Duration::from_secs(3600);

    /// 256 MiB and 32 mappings of large cache, 256 MiB (128 blocks) of empty blocks, 1 s.
    /// (The delay gives what is kept back within a second of disuse; the byte bounds cap
    /// what stays kept when no slow path comes to give it back, a program idle after a
    /// burst. The large cache's is large enough for a few threads cycling buffers of tens
    /// of MiB; the empty blocks' lets a burst that frees a few hundred MiB of small objects
    /// keep them until the delay, where a smaller bound gave the blocks past it back inside
    /// the frees, one `madvise` of 2 MiB per block emptied.)
    pub const DEFAULT: Retention = Retention {
        large_cache_bytes: 256 << 20,
        large_cache_mappings: 32,
        empty_block_bytes: 256 << 20,
        delay: Duration::from_secs(1),
    };

    /// The defaults, with what the environment sets instead (each variable read once per
    /// process; a bad value is reported on standard error once and the default kept): see
    /// the crate's environment variables.
    pub fn from_environment() -> Retention {
        let env = crate::os::env::retention();
        let d = Retention::DEFAULT;
        Retention {
            large_cache_bytes: env.large_cache_bytes.unwrap_or(d.large_cache_bytes),
            large_cache_mappings: env.large_cache_mappings.unwrap_or(d.large_cache_mappings),
            empty_block_bytes: env.empty_block_bytes.unwrap_or(d.empty_block_bytes),
            delay: env
                .delay_ms
                .map_or(d.delay, |ms| Duration::from_millis(ms as u64)),
        }
    }

    /// What an instance keeps when asked for `self`: empty blocks in whole blocks, at most
    /// [`Retention::MAX_LARGE_CACHE_MAPPINGS`] mappings and [`Retention::MAX_DELAY`].
    pub(crate) fn effective(self) -> Retention {
        Retention {
            large_cache_bytes: self.large_cache_bytes,
            large_cache_mappings: self
                .large_cache_mappings
                .min(Self::MAX_LARGE_CACHE_MAPPINGS),
            empty_block_bytes: self.empty_block_bytes / BLOCK_SIZE * BLOCK_SIZE,
            delay: self.delay.min(Self::MAX_DELAY),
        }
    }

    /// The delay in milliseconds, at most [`Retention::MAX_DELAY`].
    pub(crate) fn delay_ms(&self) -> u64 {
        self.delay.min(Self::MAX_DELAY).as_millis() as u64
    }
}

impl Default for Retention {
    fn default() -> Self {
        Retention::DEFAULT
    }
}

/// The adaptive delay of one kind of kept memory (see the module docs). Invariant:
/// `max / 8 <= delay <= max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Decay {
    max: u64,
    delay: u64,
    /// When memory was last given back, while no request has judged that give-back yet.
    unjudged: Option<u64>,
}

impl Decay {
    /// A delay adapting up to `max` milliseconds, starting at `max / 8`.
    pub(crate) const fn new(max: u64) -> Decay {
        Decay {
            max,
            delay: max / 8,
            unjudged: None,
        }
    }

    /// The current delay in milliseconds.
    pub(crate) fn delay(&self) -> u64 {
        self.delay
    }

    /// The configured (longest) delay.
    pub(crate) fn max(&self) -> u64 {
        self.max
    }

    /// A request at `now` found nothing kept and asked the OS: a give-back less than the
    /// delay before was premature (the delay doubles).
    pub(crate) fn missed(&mut self, now: u64) {
        if let Some(at) = self.unjudged.take() {
            if now.saturating_sub(at) <= self.delay {
                self.delay = self.delay.saturating_mul(2).clamp(self.max / 8, self.max);
            }
        }
    }

    /// Memory unused for the delay was given back at `now`: the previous give-back, which
    /// no request regretted, was right (the delay shrinks by a quarter).
    pub(crate) fn gave_back(&mut self, now: u64) {
        if self.unjudged.is_some() {
            self.delay = (self.delay - self.delay / 4).max(self.max / 8);
        }
        self.unjudged = Some(now);
    }
}

/// Counts kept items without timestamps (see the module docs): `low` is the fewest kept at
/// any moment since the window began at `since`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Idle {
    since: u64,
    low: usize,
}

impl Idle {
    pub(crate) const fn new() -> Idle {
        Idle { since: 0, low: 0 }
    }

    /// The kept count dropped to `count` (an item was taken).
    pub(crate) fn taken(&mut self, count: usize) {
        self.low = self.low.min(count);
    }

    /// At `now`, with `count` items kept and a delay of `delay` ms: how many were unused for
    /// a whole window of `delay / 2` and go back now (a new window begins), or 0 while the
    /// window lasts.
    pub(crate) fn due(&mut self, now: u64, count: usize, delay: u64) -> usize {
        if now.saturating_sub(self.since) < delay / 2 {
            return 0;
        }
        let n = self.low.min(count);
        self.since = now;
        self.low = count - n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_grows_on_regret_and_shrinks_when_right() {
        let mut d = Decay::new(800);
        assert_eq!(d.delay(), 100);
        // Given back at 1000, needed at 1050: premature.
        d.gave_back(1000);
        d.missed(1050);
        assert_eq!(d.delay(), 200);
        d.gave_back(2000);
        d.missed(2100);
        d.gave_back(3000);
        d.missed(3100);
        d.gave_back(4000);
        d.missed(4100);
        assert_eq!(d.delay(), 800, "at most the configured delay");
        // A miss long after a give-back judges it right, without shrinking...
        d.gave_back(5000);
        d.missed(9000);
        assert_eq!(d.delay(), 800);
        // ...and two give-backs in a row shrink it, down to the floor.
        d.gave_back(10_000);
        d.gave_back(11_000);
        assert_eq!(d.delay(), 600);
        for t in 0..100 {
            d.gave_back(12_000 + t * 1000);
        }
        assert_eq!(d.delay(), 100);
        let mut zero = Decay::new(0);
        zero.gave_back(1);
        zero.missed(1);
        assert_eq!(zero.delay(), 0);
    }

    #[test]
    fn idle_items_go_back_after_a_whole_window() {
        let mut idle = Idle::new();
        // Window [0, 50): 4 kept at 10, one taken at 20 (low 3 at most of what was kept
        // when the window began: 0).
        assert_eq!(idle.due(0, 0, 100), 0);
        idle.taken(0);
        assert_eq!(idle.due(49, 4, 100), 0);
        // The first window began with none kept: nothing was unused for all of it.
        assert_eq!(idle.due(50, 4, 100), 0);
        // Window [50, 100): 4 kept at its start, 3 after a take.
        idle.taken(3);
        assert_eq!(idle.due(99, 3, 100), 0);
        assert_eq!(idle.due(100, 3, 100), 3, "unused for the whole window");
        // Zero delay: every look gives back what was kept since the last one.
        assert_eq!(idle.due(100, 2, 0), 0);
        assert_eq!(idle.due(100, 2, 0), 2);
    }
}
