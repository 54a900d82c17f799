/* cohort.h: the C interface of cohort, a sized-free allocator with lifetime classes.
 *
 * Generated from capi/src by cbindgen when the cohort-c package builds
 * (cargo build --release -p cohort-c); do not edit. The library: libcohort.so, libcohort.a.
 *
 * Loaded with LD_PRELOAD (or linked), libcohort also replaces the whole malloc family
 * (malloc, free, calloc, realloc, reallocarray, posix_memalign, aligned_alloc, memalign,
 * valloc, pvalloc, malloc_usable_size, free_sized, free_aligned_sized) and the C++
 * operators new and delete; their prototypes are the standard ones (stdlib.h, malloc.h,
 * new) and are not repeated here. */

#ifndef COHORT_H
#define COHORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// The number of lifetime classes of the C interface: `cls` arguments run from 0 to
// `COHORT_CLASSES - 1`.
#define COHORT_CLASSES 16

// What `cohort_release_class` did.
typedef struct cohort_released {
  // Blocks emptied.
  size_t blocks;
  // Live allocations freed with them.
  size_t slots;
  // Blocks of the class left alone: other live threads' allocations.
  size_t left_to_other_threads;
  // Large allocations of the class unmapped.
  size_t large;
} cohort_released;

// What `cohort_compact` did.
typedef struct cohort_compacted {
  // Empty blocks given back to the OS.
  size_t blocks;
  // Resident bytes of the allocator before.
  size_t resident_before;
  // Resident bytes after.
  size_t resident_after;
} cohort_compacted;

// The allocator's figures, from `cohort_get_stats`.
typedef struct cohort_stats {
  // Blocks (2 MiB each) holding small allocations.
  size_t blocks;
  // Live small allocations.
  size_t live;
  // Bytes of the live small allocations (their slots).
  size_t live_bytes;
  // Bytes of all slots of those blocks.
  size_t capacity_bytes;
  // Resident bytes of those blocks.
  size_t resident_bytes;
  // Live large allocations (above 1 MiB, each its own mapping).
  size_t large_allocations;
  // Their mapped bytes.
  size_t large_bytes;
  // Empty blocks kept for reuse.
  size_t retained_empty_blocks;
  // Times the shared pool's lock was taken (slow paths only).
  uint64_t lock_acquisitions;
  // Live medium allocations (above 16 KiB up to 1 MiB: runs of 2 KiB granules in
  // medium blocks).
  size_t medium_allocations;
  // Their usable bytes.
  size_t medium_bytes;
  // Medium blocks (2 MiB each) in use.
  size_t medium_blocks;
} cohort_stats;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

// Allocates `size` bytes in lifetime class `cls`.
//
// Returns memory aligned to the next power of two of `size` (at most 4096), or null when
// memory is exhausted (`errno = ENOMEM`) or `cls >= COHORT_CLASSES` (`errno = EINVAL`). A
// `size` of 0 is taken as 1 here and in every function below (a unique allocation, freed
// with size 0 or 1). Free it with `cohort_free(p, size, cls)`, the same size (or any size up to
// its usable size) and class; `free(p)` also works.
// Thread safety: any thread; lock-free on the fast path.
void *cohort_malloc(size_t size, uint32_t cls);

// As `cohort_malloc`, with the memory zeroed (memory fresh from the OS is not written).
// Thread safety: any thread.
void *cohort_calloc(size_t size, uint32_t cls);

// As `cohort_malloc`, and stores the usable size in `*usable` (when `usable` is not null):
// any size from `size` up to it may be passed to `cohort_free`, and the bytes up to it may
// be used. Null (with `*usable = 0`) on failure, as `cohort_malloc`.
// Thread safety: any thread.
//
// # Safety
// `usable` is null or valid for a write.
void *cohort_malloc_at_least(size_t size, uint32_t cls, size_t *usable);

// Frees `p`, allocated by `cohort_malloc`, `cohort_calloc`, `cohort_malloc_at_least`,
// `cohort_remalloc` or `cohort_recalloc` with lifetime class `cls` and a size whose usable
// size `size` does not exceed (the size asked for is always right). Null does nothing.
//
// The sized fast path: no look-up of the size. A size or class that does not match the
// block, or `cls >= COHORT_CLASSES`, is reported on standard error and aborts.
// Thread safety: any thread, including one that did not allocate `p` (lock-free).
//
// # Safety
// `p` is null or a live allocation as above, not used after the call.
void cohort_free(void *p, size_t size, uint32_t cls);

// Resizes `p` (from `old_size` to `new_size` bytes, in class `cls`): in place when the
// size class stays, else moved with its contents (`min(old_size, new_size)` bytes). Null
// `p` (or `old_size` 0) allocates. Returns null when memory is exhausted (`errno =
// ENOMEM`), `p` untouched. The old allocation is checked as `cohort_free` checks it.
// Thread safety: any thread.
//
// # Safety
// As `cohort_free` for `(p, old_size, cls)`.
void *cohort_remalloc(void *p, size_t old_size, size_t new_size, uint32_t cls);

// As `cohort_remalloc`, and the bytes past `old_size` read zero when it grows.
// Thread safety: any thread.
//
// # Safety
// As `cohort_remalloc`.
void *cohort_recalloc(void *p, size_t old_size, size_t new_size, uint32_t cls);

// Frees at once every allocation of lifetime class `cls` that is the calling thread's or
// an exited thread's, and every large allocation of the class (any thread's); other live
// threads' blocks are counted in `left_to_other_threads`, untouched. Time proportional to
// blocks, not allocations. The drop-in malloc's allocations are never released (they are in
// a class of their own). `cls >= COHORT_CLASSES` aborts.
//
// # Safety
// No allocation it frees is used or freed afterwards, and no thread allocates or frees in
// class `cls` while it runs.
struct cohort_released cohort_release_class(uint32_t cls);

// Gives every empty block the calling thread and the shared pool hold back to the OS
// (other live threads' empty blocks are theirs: each may call it).
// Thread safety: any thread, while others allocate.
struct cohort_compacted cohort_compact(void);

// True when no allocation is live (of any class, the drop-in malloc's included): a leak
// check. Thread safety: any thread; a snapshot while others allocate.
bool cohort_is_empty(void);

// Checks every block and list of the allocator. Returns 0 when all is consistent; else -1,
// with the problem written to `message` (NUL-terminated, truncated to `len` bytes) when
// `message` is not null and `len > 0`.
//
// # Safety
// No other thread allocates or frees meanwhile; `message` is null or valid for `len`
// bytes.
int cohort_verify(char *message, size_t len);

// The allocator's figures, gathered by walking its blocks (time proportional to blocks).
// Thread safety: any thread; a snapshot while others allocate.
struct cohort_stats cohort_get_stats(void);

// Writes a report of the allocator's figures to file descriptor `fd` (2 for standard
// error): the totals, then one line per (size class, lifetime class) with blocks. Returns 0,
// or -1 when a write fails (`errno` set by it).
// Thread safety: any thread.
int cohort_stats_print(int fd);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* COHORT_H */
