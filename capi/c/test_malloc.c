/* The drop-in malloc family and the cohort C API, checked from C: every function, its
 * errno, its alignment, pointers that are not cohort's, threads that exit, fork.
 * Built and run by .ci/capi.sh, linked with libcohort (and again under LD_PRELOAD).
 * Exits 0 when every check passes; prints each failure with its line. */
#define _GNU_SOURCE
#include "cohort.h"
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* C23 names, declared here for C libraries that do not have them yet. */
void free_sized(void *p, size_t size);
void free_aligned_sized(void *p, size_t align, size_t size);
/* The C library's own allocator, which cohort must recognise as foreign. */
extern void *__libc_malloc(size_t size);
extern void *__libc_memalign(size_t align, size_t size);

static int failures;
#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
      failures++;                                                                \
    }                                                                            \
  } while (0)

#define ALIGNED(p, a) (((uintptr_t)(p) & ((a)-1)) == 0)

/* The usable size cohort gives a malloc(100): the 112-byte class (glibc: 104). */
static void test_it_is_cohort(void) {
  void *p = malloc(100);
  CHECK(p && malloc_usable_size(p) == 112);
  free(p);
}

static void fill_and_check(unsigned char *p, size_t n, unsigned char v) {
  memset(p, v, n);
  for (size_t i = 0; i < n; i++)
    if (p[i] != v) {
      CHECK(!"pattern");
      return;
    }
}

static void test_malloc_free(void) {
  free(NULL); /* no-op */
  size_t sizes[] = {0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 24, 100, 1000, 1024, 1025, 4096,
                    16384, 16385, 100000, 3 << 20};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
    size_t n = sizes[i];
    unsigned char *p = malloc(n);
    CHECK(p != NULL);
    CHECK(ALIGNED(p, n <= 8 ? 8 : 16));
    CHECK(malloc_usable_size(p) >= n);
    fill_and_check(p, malloc_usable_size(p), 0xa5);
    free(p);
  }
  /* Two zero-size allocations are distinct. */
  void *a = malloc(0), *b = malloc(0);
  CHECK(a && b && a != b);
  free(a);
  free(b);
  errno = 0;
  CHECK(malloc(SIZE_MAX) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(malloc((size_t)PTRDIFF_MAX + 1) == NULL && errno == ENOMEM);
  CHECK(malloc_usable_size(NULL) == 0);
}

static void test_calloc(void) {
  for (size_t n = 1; n < 70000; n = n * 3 + 1) {
    unsigned char *p = malloc(n);
    memset(p, 0xff, n);
    free(p);
    unsigned char *q = calloc(n, 1);
    CHECK(q != NULL);
    for (size_t i = 0; i < n; i++)
      if (q[i]) {
        CHECK(!"calloc zero");
        break;
      }
    free(q);
  }
  void *z = calloc(0, 5);
  CHECK(z != NULL);
  free(z);
  errno = 0;
  CHECK(calloc(SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
  errno = 0;
  CHECK(calloc((size_t)1 << 40, (size_t)1 << 30) == NULL && errno == ENOMEM);
}

static void test_realloc(void) {
  unsigned char *p = realloc(NULL, 10); /* malloc */
  CHECK(p != NULL);
  for (int i = 0; i < 10; i++)
    p[i] = (unsigned char)i;
  size_t len = 10;
  size_t steps[] = {24, 200, 1000, 5000, 20000, 200000, 4 << 20, 300, 12, 1, 64};
  for (size_t s = 0; s < sizeof steps / sizeof *steps; s++) {
    size_t n = steps[s];
    unsigned char *q = realloc(p, n);
    CHECK(q != NULL);
    CHECK(ALIGNED(q, n <= 8 ? 8 : 16));
    size_t keep = len < n ? len : n;
    for (size_t i = 0; i < keep; i++)
      if (q[i] != (unsigned char)i) {
        CHECK(!"realloc keeps contents");
        break;
      }
    for (size_t i = 0; i < n; i++)
      q[i] = (unsigned char)i;
    p = q;
    len = n;
  }
  /* Too large: null, ENOMEM, the old block untouched. */
  errno = 0;
  CHECK(realloc(p, SIZE_MAX) == NULL && errno == ENOMEM);
  CHECK(p[63] == 63);
  /* realloc(p, 0) frees p and returns null (GNU behaviour, documented). */
  CHECK(realloc(p, 0) == NULL);

  unsigned char *r = reallocarray(NULL, 10, 10);
  CHECK(r != NULL);
  memset(r, 7, 100);
  r = reallocarray(r, 100, 10);
  CHECK(r != NULL && r[99] == 7);
  errno = 0;
  CHECK(reallocarray(r, SIZE_MAX / 2, 3) == NULL && errno == ENOMEM);
  CHECK(r[0] == 7);
  free(r);
}

static void test_aligned(void) {
  for (size_t align = 8; align <= (1 << 16); align <<= 1) {
    size_t sizes[] = {0, 1, 24, 100, 4096, 20000};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
      size_t n = sizes[i];
      void *p = NULL;
      CHECK(posix_memalign(&p, align, n) == 0);
      CHECK(p && ALIGNED(p, align));
      memset(p, 1, n);
      free(p);
      p = aligned_alloc(align, n);
      CHECK(p && ALIGNED(p, align));
      memset(p, 2, n);
      free_aligned_sized(p, align, n);
      p = memalign(align, n);
      CHECK(p && ALIGNED(p, align));
      CHECK(malloc_usable_size(p) >= n);
      free(p);
    }
  }
  void *p = (void *)1;
  errno = 0;
  CHECK(posix_memalign(&p, 3, 10) == EINVAL);
  CHECK(posix_memalign(&p, 4, 10) == EINVAL); /* not a multiple of sizeof(void *) */
  CHECK(posix_memalign(&p, 0, 10) == EINVAL);
  CHECK(p == (void *)1 && errno == 0); /* untouched on failure, errno left alone */
  CHECK(posix_memalign(&p, 64, SIZE_MAX) == ENOMEM);
  errno = 0;
  CHECK(aligned_alloc(24, 10) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(aligned_alloc(0, 10) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(memalign((size_t)1 << 63, 10) == NULL && errno == EINVAL);
  p = memalign(24, 10); /* rounded up to 32 */
  CHECK(p && ALIGNED(p, 32));
  free(p);
  long page = sysconf(_SC_PAGESIZE);
  p = valloc(10);
  CHECK(p && ALIGNED(p, page));
  free(p);
  p = pvalloc(10);
  CHECK(p && ALIGNED(p, page) && malloc_usable_size(p) >= (size_t)page);
  free(p);
  p = pvalloc(0);
  CHECK(p && ALIGNED(p, page));
  free(p);
  errno = 0;
  CHECK(pvalloc(SIZE_MAX - 10) == NULL && errno == ENOMEM);
}

static void test_sized_frees(void) {
  for (size_t n = 0; n < 70000; n = n * 2 + 3) {
    void *p = malloc(n);
    free_sized(p, n);
    p = calloc(1, n);
    free_sized(p, n);
    p = realloc(NULL, n);
    free_sized(p, n);
  }
  free_sized(NULL, 10);
  free_aligned_sized(NULL, 64, 10);
  /* Any size up to the usable size is right. */
  void *p = malloc(100);
  free_sized(p, malloc_usable_size(p));
}

/* Blocks of the C library's allocator reach free, realloc and malloc_usable_size. */
static void test_foreign_pointers(void) {
  char *p = __libc_malloc(100);
  CHECK(p != NULL);
  strcpy(p, "glibc's");
  CHECK(malloc_usable_size(p) >= 100);
  p = realloc(p, 200000);
  CHECK(p && strcmp(p, "glibc's") == 0);
  free(p);
  p = __libc_memalign(64, 50);
  free_sized(p, 50); /* outside the region: handed over, never a crash */
  p = __libc_malloc(10);
  free(p);
}

static void test_cohort_api(void) {
  errno = 0;
  CHECK(cohort_malloc(10, COHORT_CLASSES) == NULL && errno == EINVAL);
  errno = 0;
  CHECK(cohort_malloc(SIZE_MAX, 1) == NULL && errno == ENOMEM);
  void *ptrs[1000];
  for (int i = 0; i < 1000; i++) {
    ptrs[i] = cohort_malloc(48, 3);
    CHECK(ptrs[i] && ALIGNED(ptrs[i], 64));
    memset(ptrs[i], 3, 48);
  }
  for (int i = 0; i < 500; i++)
    cohort_free(ptrs[i], 48, 3);
  unsigned char *z = cohort_calloc(5000, 4);
  CHECK(z && z[4999] == 0);
  size_t usable = 0;
  void *a = cohort_malloc_at_least(100, 4, &usable);
  CHECK(a && usable >= 100);
  memset(a, 9, usable);
  cohort_free(a, usable, 4);
  unsigned char *r = cohort_remalloc(NULL, 0, 16, 5);
  memset(r, 5, 16);
  r = cohort_remalloc(r, 16, 4000, 5);
  CHECK(r && r[15] == 5);
  memset(r, 5, 4000);
  r = cohort_recalloc(r, 4000, 9000, 5);
  CHECK(r && r[3999] == 5 && r[8999] == 0);
  cohort_free(r, 9000, 5);
  cohort_free(z, 5000, 4);
  /* A zero size is a unique allocation, freed with size 0 or by free(p). */
  void *z0 = cohort_malloc(0, 2), *z1 = cohort_malloc(0, 2);
  CHECK(z0 && z1 && z0 != z1);
  cohort_free(z0, 0, 2);
  free(z1);
  z0 = cohort_remalloc(NULL, 0, 0, 2);
  CHECK(z0 != NULL);
  z0 = cohort_remalloc(z0, 0, 40, 2);
  CHECK(z0 != NULL);
  cohort_free(z0, 40, 2);
  /* free(p) frees any class. */
  void *any = cohort_malloc(300, 7);
  free(any);
  /* Release class 3: the 500 left go at once; a malloc'd block stays. */
  char *kept = malloc(48);
  strcpy(kept, "kept");
  /* The drop-in malloc's blocks are in a hidden class: releasing class 0 (or any) leaves
   * them alone, so the next malloc of the same size cannot return `kept` again. */
  cohort_release_class(0);
  char *other = malloc(48);
  CHECK(other != kept && strcmp(kept, "kept") == 0);
  free(other);
  void *large = cohort_malloc(2 << 20, 3); /* above the medium sizes (up to 1 MiB) */
  CHECK(large != NULL);
  cohort_released rel = cohort_release_class(3);
  CHECK(rel.slots >= 500 && rel.large == 1);
  CHECK(strcmp(kept, "kept") == 0);
  free(kept);
  cohort_compacted c = cohort_compact();
  CHECK(c.resident_after <= c.resident_before);
  void *mid = cohort_malloc(100000, 2); /* a medium size: a run in a medium block */
  CHECK(mid != NULL);
  cohort_stats s = cohort_get_stats();
  CHECK(s.blocks > 0);
  CHECK(s.medium_allocations >= 1 && s.medium_bytes >= 100000 && s.medium_blocks >= 1);
  CHECK(cohort_stats_print(2) == 0);
  cohort_free(mid, 100000, 2);
  char msg[256];
  CHECK(cohort_verify(msg, sizeof msg) == 0);
}

/* A thread-local destructor that allocates and frees while its thread exits, after
 * cohort's own exit hook may have run. */
static pthread_key_t key;
static void at_exit_of_thread(void *v) {
  free(v);
  void *p = malloc(64);
  memset(p, 1, 64);
  free(p);
}
static void *thread_body(void *arg) {
  (void)arg;
  pthread_setspecific(key, malloc(32));
  void *p[100];
  for (int i = 0; i < 100; i++)
    p[i] = malloc((size_t)i * 7);
  for (int i = 0; i < 100; i++)
    free(p[i]);
  return malloc(128); /* freed by the joining thread */
}
static void test_threads(void) {
  pthread_key_create(&key, at_exit_of_thread);
  for (int round = 0; round < 20; round++) {
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
      CHECK(pthread_create(&t[i], NULL, thread_body, NULL) == 0);
    for (int i = 0; i < 4; i++) {
      void *r;
      pthread_join(t[i], &r);
      free(r);
    }
  }
}

static void test_fork(void) {
  void *before = malloc(1000);
  memset(before, 4, 1000);
  pid_t pid = fork();
  if (pid == 0) {
    /* The child frees what the parent allocated and allocates on. */
    int bad = ((unsigned char *)before)[999] != 4;
    free(before);
    for (int i = 0; i < 10000; i++)
      free(malloc((size_t)(i % 3000)));
    _exit(bad);
  }
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
  free(before);
}

int main(void) {
  test_it_is_cohort();
  test_malloc_free();
  test_calloc();
  test_realloc();
  test_aligned();
  test_sized_frees();
  test_foreign_pointers();
  test_cohort_api();
  test_threads();
  test_fork();
  if (failures) {
    fprintf(stderr, "test_malloc: %d failures\n", failures);
    return 1;
  }
  printf("test_malloc: all checks passed\n");
  return 0;
}
