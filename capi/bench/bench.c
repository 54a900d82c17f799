/* C allocator workloads, run unmodified under LD_PRELOAD of each allocator by
 * capi/bench/run.sh. Usage: bench WORKLOAD [threads] [ops per thread]
 *
 *   larson   each thread replaces random slots of its array of 1000 blocks (16 to 1024
 *            bytes); every 5000 operations it swaps its array with a shared one, so the
 *            blocks another thread allocated are freed here (cross-thread frees).
 *   xmalloc  half the threads allocate (16 to 256 bytes) and pass batches of 256 blocks
 *            through a shared queue; the other half free them (every free is remote).
 *   churn    each thread keeps 4096 live blocks of mixed sizes (60% 8-64 bytes, 30%
 *            64-512, 10% 512-16384), replacing a random one per operation; one in eight
 *            replacements is a realloc.
 *   large    each thread keeps 16 blocks of 32 KiB to 4 MiB, replacing one per operation
 *            and touching one byte per page.
 *   pair16   one thread: malloc(16) then free: the fast paths (for the instruction count
 *            under callgrind; `pair16 1 N sized` frees with free_sized).
 *
 * Prints: workload, threads, seconds, million operations per second, peak RSS in MiB. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

void free_sized(void *p, size_t size) __attribute__((weak));

static long ops;
static int threads;

static uint32_t next(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static void *must(void *p) {
  if (!p) {
    fprintf(stderr, "bench: out of memory\n");
    exit(2);
  }
  return p;
}

/* ---- larson ---- */
#define LARSON_SLOTS 1000
static pthread_mutex_t exchange_lock = PTHREAD_MUTEX_INITIALIZER;
static void **exchange;

static void *larson(void *arg) {
  uint32_t s = 7 + (uint32_t)(intptr_t)arg * 31;
  void **mine = must(calloc(LARSON_SLOTS, sizeof(void *)));
  for (int i = 0; i < LARSON_SLOTS; i++)
    mine[i] = must(malloc(16 + next(&s) % 1009));
  for (long op = 0; op < ops; op++) {
    uint32_t i = next(&s) % LARSON_SLOTS;
    free(mine[i]);
    mine[i] = must(malloc(16 + next(&s) % 1009));
    ((char *)mine[i])[0] = 1;
    if (op % 5000 == 4999) {
      pthread_mutex_lock(&exchange_lock);
      void **t = exchange;
      exchange = mine;
      mine = t;
      pthread_mutex_unlock(&exchange_lock);
    }
  }
  for (int i = 0; i < LARSON_SLOTS; i++)
    free(mine[i]);
  free(mine);
  return NULL;
}

/* ---- xmalloc ---- */
#define BATCH 256
struct batch {
  struct batch *next;
  void *p[BATCH];
};
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_cond = PTHREAD_COND_INITIALIZER;
static struct batch *queue;
static int producers_left;

static void *producer(void *arg) {
  uint32_t s = 11 + (uint32_t)(intptr_t)arg * 17;
  for (long op = 0; op < ops; op += BATCH) {
    struct batch *b = must(malloc(sizeof *b));
    for (int i = 0; i < BATCH; i++) {
      b->p[i] = must(malloc(16 + next(&s) % 241));
      ((char *)b->p[i])[0] = 1;
    }
    pthread_mutex_lock(&queue_lock);
    b->next = queue;
    queue = b;
    pthread_cond_signal(&queue_cond);
    pthread_mutex_unlock(&queue_lock);
  }
  pthread_mutex_lock(&queue_lock);
  producers_left--;
  pthread_cond_broadcast(&queue_cond);
  pthread_mutex_unlock(&queue_lock);
  return NULL;
}

static void *consumer(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&queue_lock);
    while (!queue && producers_left)
      pthread_cond_wait(&queue_cond, &queue_lock);
    struct batch *b = queue;
    if (b)
      queue = b->next;
    pthread_mutex_unlock(&queue_lock);
    if (!b)
      return NULL;
    for (int i = 0; i < BATCH; i++)
      free(b->p[i]);
    free(b);
  }
}

/* ---- churn ---- */
#define CHURN_SLOTS 4096
static size_t churn_size(uint32_t *s) {
  uint32_t r = next(s) % 10;
  if (r < 6)
    return 8 + next(s) % 57;
  if (r < 9)
    return 64 + next(s) % 449;
  return 512 + next(s) % 15873;
}

static void *churn(void *arg) {
  uint32_t s = 3 + (uint32_t)(intptr_t)arg * 13;
  void **slot = must(calloc(CHURN_SLOTS, sizeof(void *)));
  for (long op = 0; op < ops; op++) {
    uint32_t i = next(&s) % CHURN_SLOTS;
    size_t n = churn_size(&s);
    if (slot[i] && next(&s) % 8 == 0) {
      slot[i] = must(realloc(slot[i], n));
    } else {
      free(slot[i]);
      slot[i] = must(malloc(n));
    }
    ((char *)slot[i])[n - 1] = 1;
  }
  for (int i = 0; i < CHURN_SLOTS; i++)
    free(slot[i]);
  free(slot);
  return NULL;
}

/* ---- large ---- */
static void *large(void *arg) {
  uint32_t s = 5 + (uint32_t)(intptr_t)arg * 7;
  void *slot[16] = {0};
  for (long op = 0; op < ops; op++) {
    uint32_t i = next(&s) % 16;
    size_t n = (32 << 10) + next(&s) % (4 << 20);
    free(slot[i]);
    char *p = must(malloc(n));
    for (size_t at = 0; at < n; at += 4096)
      p[at] = 1;
    slot[i] = p;
  }
  for (int i = 0; i < 16; i++)
    free(slot[i]);
  return NULL;
}

/* ---- pair16 ---- */
static int sized;
static void *pair16(void *arg) {
  (void)arg;
  for (long op = 0; op < ops; op++) {
    void *volatile p = must(malloc(16));
    if (sized && free_sized)
      free_sized(p, 16);
    else
      free(p);
  }
  return NULL;
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench larson|xmalloc|churn|large|pair16 [threads] [ops]\n");
    return 2;
  }
  const char *w = argv[1];
  threads = argc > 2 ? atoi(argv[2]) : 4;
  ops = argc > 3 ? atol(argv[3]) : 1000000;
  sized = argc > 4 && strcmp(argv[4], "sized") == 0;
  if (threads < 1)
    threads = 1;
  void *(*body)(void *) = NULL;
  if (!strcmp(w, "larson")) {
    body = larson;
    exchange = must(calloc(LARSON_SLOTS, sizeof(void *)));
    for (int i = 0; i < LARSON_SLOTS; i++)
      exchange[i] = must(malloc(16));
  } else if (!strcmp(w, "churn"))
    body = churn;
  else if (!strcmp(w, "large"))
    body = large;
  else if (!strcmp(w, "pair16"))
    body = pair16;
  else if (strcmp(w, "xmalloc")) {
    fprintf(stderr, "bench: unknown workload %s\n", w);
    return 2;
  }
  pthread_t *t = must(malloc(sizeof *t * (size_t)threads));
  double start = now();
  if (!body) {
    int half = threads / 2 ? threads / 2 : 1;
    producers_left = half;
    for (int i = 0; i < threads; i++)
      pthread_create(&t[i], NULL, i < half ? producer : consumer, (void *)(intptr_t)i);
  } else {
    for (int i = 0; i < threads; i++)
      pthread_create(&t[i], NULL, body, (void *)(intptr_t)i);
  }
  for (int i = 0; i < threads; i++)
    pthread_join(t[i], NULL);
  double secs = now() - start;
  long total = body ? ops * threads : ops * (threads / 2 ? threads / 2 : 1);
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  printf("%s %d %.3f %.4f %.1f\n", w, threads, secs, (double)total / secs / 1e6,
         (double)ru.ru_maxrss / 1024.0);
  free(t);
  return 0;
}
