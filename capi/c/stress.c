/* Multi-threaded stress of the drop-in malloc: threads allocate blocks of mixed sizes
 * (small, medium, large), pattern every byte, hand them to other threads through shared
 * mailboxes, and the receivers check every byte before freeing (free, free_sized or
 * realloc then free), while each thread also churns blocks of its own.
 * Usage: stress [threads] [rounds]. Exits 0 when every byte checked out. */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* C23; weak, so that the program also runs on a C library without it (then free). */
void free_sized(void *p, size_t size) __attribute__((weak));

#define MAILBOX 256

struct block {
  unsigned char *p;
  size_t size;
  uint32_t seed;
};

struct mailbox {
  pthread_mutex_t lock;
  struct block items[MAILBOX];
  int count;
};

static struct mailbox *boxes;
static int threads, rounds;
static long bad_bytes;
static pthread_mutex_t bad_lock = PTHREAD_MUTEX_INITIALIZER;

static uint32_t next(uint32_t *s) {
  *s ^= *s << 13;
  *s ^= *s >> 17;
  *s ^= *s << 5;
  return *s;
}

static unsigned char byte_at(uint32_t seed, size_t i) {
  return (unsigned char)(seed * 2654435761u + i * 40503u + (i >> 8));
}

static void pattern(struct block *b) {
  for (size_t i = 0; i < b->size; i++)
    b->p[i] = byte_at(b->seed, i);
}

static void check(const struct block *b, size_t upto) {
  long bad = 0;
  for (size_t i = 0; i < upto; i++)
    bad += b->p[i] != byte_at(b->seed, i);
  if (bad) {
    pthread_mutex_lock(&bad_lock);
    bad_bytes += bad;
    fprintf(stderr, "stress: %ld bad bytes in a block of %zu at %p\n", bad, b->size, (void *)b->p);
    pthread_mutex_unlock(&bad_lock);
  }
}

static size_t pick_size(uint32_t *s) {
  uint32_t r = next(s) % 1000;
  if (r < 600)
    return next(s) % 128;
  if (r < 950)
    return next(s) % 4096;
  if (r < 995)
    return next(s) % 65536;
  return 65536 + next(s) % (1 << 20);
}

static void dispose(struct block *b, uint32_t *s) {
  check(b, b->size);
  switch (next(s) % 3) {
  case 0:
    free(b->p);
    break;
  case 1:
    if (free_sized)
      free_sized(b->p, b->size);
    else
      free(b->p);
    break;
  default: {
    size_t n = b->size / 2 + 1;
    unsigned char *q = realloc(b->p, n);
    if (!q) {
      fprintf(stderr, "stress: realloc failed\n");
      exit(2);
    }
    b->p = q;
    check(b, b->size < n ? b->size : n);
    free(q);
  }
  }
}

static void *worker(void *arg) {
  int me = (int)(intptr_t)arg;
  uint32_t s = 0x9e3779b9u ^ (uint32_t)(me * 7919 + 1);
  struct block own[64] = {{0}};
  for (int r = 0; r < rounds; r++) {
    /* Churn: replace one of our own blocks. */
    struct block *o = &own[next(&s) % 64];
    if (o->p)
      dispose(o, &s);
    o->size = pick_size(&s);
    o->seed = next(&s);
    o->p = malloc(o->size);
    pattern(o);
    /* Hand a block to another thread. */
    struct block b = {NULL, pick_size(&s), next(&s)};
    b.p = malloc(b.size);
    if (!b.p) {
      fprintf(stderr, "stress: malloc(%zu) failed\n", b.size);
      exit(2);
    }
    pattern(&b);
    struct mailbox *to = &boxes[(me + 1 + next(&s) % (threads - 1 ? threads - 1 : 1)) % threads];
    pthread_mutex_lock(&to->lock);
    if (to->count < MAILBOX) {
      to->items[to->count++] = b;
      b.p = NULL;
    }
    pthread_mutex_unlock(&to->lock);
    if (b.p)
      dispose(&b, &s);
    /* Free what others sent us. */
    struct mailbox *mine = &boxes[me];
    pthread_mutex_lock(&mine->lock);
    int n = mine->count;
    struct block got[MAILBOX];
    memcpy(got, mine->items, sizeof(struct block) * (size_t)n);
    mine->count = 0;
    pthread_mutex_unlock(&mine->lock);
    for (int i = 0; i < n; i++)
      dispose(&got[i], &s);
  }
  for (int i = 0; i < 64; i++)
    if (own[i].p)
      dispose(&own[i], &s);
  return NULL;
}

int main(int argc, char **argv) {
  threads = argc > 1 ? atoi(argv[1]) : 8;
  rounds = argc > 2 ? atoi(argv[2]) : 20000;
  if (threads < 1)
    threads = 1;
  boxes = calloc((size_t)threads, sizeof *boxes);
  for (int i = 0; i < threads; i++)
    pthread_mutex_init(&boxes[i].lock, NULL);
  pthread_t *t = malloc(sizeof *t * (size_t)threads);
  for (int i = 0; i < threads; i++)
    pthread_create(&t[i], NULL, worker, (void *)(intptr_t)i);
  for (int i = 0; i < threads; i++)
    pthread_join(t[i], NULL);
  /* What is left in the mailboxes (sent after the receiver finished). */
  uint32_t s = 12345;
  for (int i = 0; i < threads; i++)
    for (int j = 0; j < boxes[i].count; j++)
      dispose(&boxes[i].items[j], &s);
  free(t);
  free(boxes);
  if (bad_bytes) {
    fprintf(stderr, "stress: %ld bad bytes\n", bad_bytes);
    return 1;
  }
  printf("stress: %d threads x %d rounds, every byte checked\n", threads, rounds);
  return 0;
}
