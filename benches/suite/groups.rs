//! The report's tables: what each measures, in the order they appear.

/// One table of the report: its rows are the metrics of the workloads of this group
/// (`Workload::group` in main.rs).
pub struct Group {
    pub name: &'static str,
    pub title: &'static str,
    /// The paragraph above the table: what was measured, and how.
    pub what: &'static str,
    /// What the bars of the group's plot are.
    pub bars: Bars,
    /// Rows named "... at N ms" are also drawn as lines against time (their unit the y
    /// axis), besides the bars of every row.
    pub timeline: bool,
}

/// The bars of a group's plot.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Bars {
    /// Each allocator's median divided by System's in the same run, against System's line
    /// at 1 (System's own bars, all 1, left out; no bar where System's median is 0).
    Ratios,
    /// The medians themselves, System's included, on one axis: for rows of one unit whose
    /// figures are often 0 (a ratio to 0 says nothing).
    Values,
}

/// Every table, in the report's order.
pub const GROUPS: &[Group] = &[
    Group {
        name: "churn",
        title: "Churn",
        what: "Batches of 1000 objects of one size, freed in random order, one thread. \
               Thread CPU time per malloc+free pair.",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "threads",
        title: "1 thread against 2 threads",
        what: "The churn above (all sizes) on one thread, then on two threads at once, each \
               independent. Thread CPU time per pair, averaged over the threads; the last row \
               is the slowdown from sharing the allocator (1 = perfect scaling).",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "producer-consumer",
        title: "Producer / consumer",
        what: "One thread allocates 64-byte objects in batches of 1000 and hands them over a \
               channel to another thread that frees them. Per object: wall time, and the \
               thread CPU time spent inside malloc (producer) and free (consumer).",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "handover",
        title: "Cross-thread free, one object at a time",
        what: "A producer thread allocates 64-byte objects one at a time and hands each to a \
               consumer thread that frees it, through a lock-free ring of 1024 slots or \
               `std::sync::mpsc::sync_channel(1024)`; 10 million objects. Per object: wall \
               time, and the thread CPU time of both threads (hand-over and waiting \
               included), then of each.",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "linked-list",
        title: "Linked list",
        what: "10 million nodes, each its own allocation, with a 40-byte string every 8th node; \
               build, walk 10 times, free. Thread CPU time per node; RSS growth per node at the \
               peak (strings included; the ideal is 21 B for 16-byte nodes, 29 B for 24).",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "memory-ratio",
        title: "Memory ratio",
        what: "4 million live objects of one size, every byte written: RSS growth divided by \
               the bytes requested (1 = no overhead).",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "realloc-growth",
        title: "Realloc growth",
        what: "A Vec<u8> grown to 64 MiB with `reserve_exact` + `extend_from_slice`, so every \
               step is one exact realloc. Thread CPU time per step (the copy included).",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "vec-growth",
        title: "Vec growth",
        what: "A Vec<u8> grown from empty to 64 MiB by one-byte `push`es or 4 KiB \
               `extend_from_slice`s (`Vec`'s own doubling decides the reallocs), then dropped; \
               4 rounds. Thread CPU time per round (copies and page faults included).",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "large-pairs",
        title: "Large malloc + free pairs",
        what: "malloc of one large size, one byte written per 4 KiB page, free; repeated \
               until 2 GiB were written. Thread CPU time (system calls included) and minor \
               page faults per pair: an allocator that keeps freed memory for reuse pays \
               neither a system call nor a fault per pair.",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "large-syscalls",
        title: "System calls per large pair",
        what: "The pairs above, in a separate short pass that is not timed: each allocator's \
               `large:N` run under `strace -f` twice, with P and with 2P pairs (P = 128 MiB / \
               N, at least 16), its calls counted from the workload's start on (the process's \
               start-up left out); the calls of the longer run less those of the shorter, \
               divided by P. The first rounds cancel: this is what each further pair costs in \
               system calls (0 = served from memory the allocator kept). Below the table: the \
               calls behind each figure that is not 0.",
        bars: Bars::Values,
        timeline: false,
    },
    Group {
        name: "mlarge",
        title: "The malloc-large pattern",
        what: "4 threads, each repeatedly allocating a buffer of a random size from 5 to 25 \
               MiB, writing one byte per 4 KiB page of its first half and freeing it; 1000 \
               buffers in all. Thread CPU time (system calls included) and minor page faults \
               of the process per buffer.",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "burst",
        title: "RSS after a burst",
        what: "1 GiB of mixed sizes allocated by one thread (80 % of the objects 16 B to \
               1 KiB, 17 % 1 to 64 KiB, 3 % 64 KiB to 4 MiB; every page written), freed in \
               random order; then 5 s of idle time with a little work every 50 ms (200 \
               small pairs, one 64 KiB and one 1 MiB pair: the calls that reach slow paths, \
               where an allocator without a background thread gives memory back). RSS above \
               the process's RSS before the burst; the last row is the first sample within \
               8 MiB of it (5000: not by the end).",
        bars: Bars::Ratios,
        timeline: true,
    },
    Group {
        name: "medium-churn",
        title: "Medium sizes: memory and churn",
        what: "400 live allocations of uniformly random sizes from 16 KiB to 1 MiB, every \
               byte written, then 4000 churn steps (one freed at random, one of a new random \
               size allocated and written). RSS growth divided by the live bytes requested, \
               before and after the churn (1 = no overhead); thread CPU time and minor page \
               faults per step (the writes included).",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "cross-thread",
        title: "Cross-thread frees",
        what: "Objects freed by another thread than the one that allocated them. Task \
               hand-off: two workers pass 256 tasks (a 16-2063 B buffer, a string, up to 3 \
               boxes each) back and forth; the receiving worker drops a task and allocates its \
               successor, 1 million times. Through a channel: a producer sends 500 000 \
               `Vec<u8>` of 1 to 1000 or 1 to 16 000 bytes through a 64-slot channel to a \
               consumer that drops them. Short-lived threads: 200 threads, two at a time, \
               each allocates 20 000 objects of 16-512 B and exits; the main thread keeps the \
               last 8 threads' objects and frees the older ones. Peak RSS of the whole process \
               (`ru_maxrss`) and the minor page faults taken during the workload.",
        bars: Bars::Ratios,
        timeline: false,
    },
    Group {
        name: "lifetime",
        title: "Lifetime classes",
        what: "4 million objects of 16 to 128 bytes, every 16th long-lived, allocated \
               interleaved; then the short-lived ones are freed, then the allocator is asked to \
               give memory back (System: `malloc_trim(0)`, mimalloc: `mi_collect(true)`, \
               jemalloc: purge all arenas, cohort: `compact()`). \"cohort (classes)\" runs the \
               same workload through cohort's own API with a `Request` and a `Long` lifetime \
               class (same layouts); \"cohort (release_class)\" too, but frees all the \
               short-lived objects at once with `release_class(Request)`. The other columns \
               use plain malloc/free.",
        bars: Bars::Ratios,
        timeline: false,
    },
];
