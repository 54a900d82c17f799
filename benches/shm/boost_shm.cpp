// Boost.Interprocess managed_shared_memory running the workloads of ../shm_cohort.rs, for
// the shared-memory comparison (run by run.sh, which builds this file). Each workload
// prints `name<TAB>value` lines: the same names, the same operation sequences (the same
// generator and seeds) as the cohort binary.
//
//   boost_shm churn1 OPS      one process: a window of 10 000 live objects of 16 B to 1 KiB,
//                             each step frees the oldest and allocates one (ns per pair)
//   boost_shm churn2 OPS      the same in two processes at once on one segment
//   boost_shm overhead        bytes of shared memory per object beyond its size, for 16,
//                             64, 256 and 1024 B objects (100 000 of each)
//   boost_shm prodcons N      a producer process allocates and writes 64-byte objects and
//                             passes their handles through a ring in the segment to a
//                             consumer process, which reads and frees them (ns per object)
#include <boost/interprocess/managed_shared_memory.hpp>

#include <atomic>
#include <sched.h>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <vector>

namespace bip = boost::interprocess;

static const std::size_t SEGMENT = 512u << 20;
static const std::size_t WINDOW = 10000;

static uint64_t splitmix(uint64_t &s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// 16 to 1024 bytes, log-uniform: as many objects of 16-31 B as of 512-1023 B.
static std::size_t churn_size(uint64_t &s) {
  uint64_t r = splitmix(s);
  unsigned shift = 4 + (unsigned)(r % 6);  // 16 .. 512
  std::size_t base = std::size_t(1) << shift;
  return base + (std::size_t)((r >> 8) % base) + (shift == 9 ? 1 : 0);
}

static double now_ns(clockid_t clock) {
  timespec t;
  clock_gettime(clock, &t);
  return t.tv_sec * 1e9 + t.tv_nsec;
}

static std::string name_of(const char *tag) {
  return std::string("cohort-bench-boost-") + tag + "-" + std::to_string(getpid());
}

// The churn: returns thread CPU ns per free+allocate pair.
static double churn(bip::managed_shared_memory &seg, uint64_t seed, std::size_t ops) {
  std::vector<void *> ptrs(WINDOW);
  std::vector<std::size_t> sizes(WINDOW);
  for (std::size_t i = 0; i < WINDOW; i++) {
    sizes[i] = churn_size(seed);
    ptrs[i] = seg.allocate(sizes[i]);
    std::memset(ptrs[i], 1, 8);
  }
  double t0 = now_ns(CLOCK_THREAD_CPUTIME_ID);
  for (std::size_t i = 0; i < ops; i++) {
    std::size_t at = i % WINDOW;
    seg.deallocate(ptrs[at]);
    sizes[at] = churn_size(seed);
    ptrs[at] = seg.allocate(sizes[at]);
    *static_cast<volatile char *>(ptrs[at]) = 1;
  }
  double t1 = now_ns(CLOCK_THREAD_CPUTIME_ID);
  for (std::size_t i = 0; i < WINDOW; i++) seg.deallocate(ptrs[i]);
  return (t1 - t0) / ops;
}

static void wait_all(int n) {
  for (int i = 0; i < n; i++) {
    int status = 0;
    wait(&status);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      std::fprintf(stderr, "a child failed\n");
      std::exit(1);
    }
  }
}

// Bytes the segment's object holds in RAM (tmpfs pages allocated to it).
static long long shm_bytes(const std::string &name) {
  struct stat st;
  std::string path = "/dev/shm/" + name;
  if (stat(path.c_str(), &st) != 0) return -1;
  return (long long)st.st_blocks * 512;
}

struct Ring {
  static const std::size_t CAP = 1024;
  std::atomic<uint64_t> head, tail;
  bip::managed_shared_memory::handle_t slots[CAP];
};

int main(int argc, char **argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: boost_shm churn1|churn2|overhead|prodcons [N]\n");
    return 2;
  }
  std::string mode = argv[1];
  std::size_t n = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 0;
  std::string name = name_of(mode.c_str());
  bip::shared_memory_object::remove(name.c_str());
  if (mode == "churn1") {
    bip::managed_shared_memory seg(bip::create_only, name.c_str(), SEGMENT);
    std::printf("churn1_ns_per_pair\t%.2f\n", churn(seg, 1, n));
  } else if (mode == "churn2") {
    { bip::managed_shared_memory seg(bip::create_only, name.c_str(), SEGMENT); }
    int fds[2];
    if (pipe(fds) != 0) return 1;
    double wall0 = now_ns(CLOCK_MONOTONIC);
    for (int c = 0; c < 2; c++) {
      if (fork() == 0) {
        bip::managed_shared_memory seg(bip::open_only, name.c_str());
        double ns = churn(seg, 100 + c, n);
        if (write(fds[1], &ns, sizeof ns) != sizeof ns) _exit(1);
        _exit(0);
      }
    }
    wait_all(2);
    double wall = (now_ns(CLOCK_MONOTONIC) - wall0) / n;
    double a, b;
    if (read(fds[0], &a, sizeof a) != sizeof a || read(fds[0], &b, sizeof b) != sizeof b) return 1;
    std::printf("churn2_ns_per_pair\t%.2f\n", (a + b) / 2);
    std::printf("churn2_wall_ns_per_pair\t%.2f\n", wall);
  } else if (mode == "overhead") {
    const std::size_t sizes[] = {16, 64, 256, 1024};
    const std::size_t count = 100000;
    for (std::size_t s : sizes) {
      std::string nm = name + "-" + std::to_string(s);
      bip::shared_memory_object::remove(nm.c_str());
      bip::managed_shared_memory seg(bip::create_only, nm.c_str(), SEGMENT);
      long long before = shm_bytes(nm);
      std::vector<void *> ptrs(count);
      for (std::size_t i = 0; i < count; i++) {
        ptrs[i] = seg.allocate(s);
        std::memset(ptrs[i], 0xab, s);
      }
      long long after = shm_bytes(nm);
      std::printf("overhead_bytes_per_object:%zu\t%.2f\n", s,
                  double(after - before) / count - double(s));
      for (void *p : ptrs) seg.deallocate(p);
      bip::shared_memory_object::remove(nm.c_str());
    }
  } else if (mode == "prodcons") {
    {
      bip::managed_shared_memory seg(bip::create_only, name.c_str(), SEGMENT);
      seg.construct<Ring>("ring")();
    }
    double wall0 = now_ns(CLOCK_MONOTONIC);
    if (fork() == 0) {  // producer
      bip::managed_shared_memory seg(bip::open_only, name.c_str());
      Ring *r = seg.find<Ring>("ring").first;
      for (uint64_t i = 0; i < n; i++) {
        uint64_t *p = static_cast<uint64_t *>(seg.allocate(64));
        for (int w = 0; w < 8; w++) p[w] = i + w;
        uint64_t t = r->tail.load(std::memory_order_relaxed);
        while (t - r->head.load(std::memory_order_acquire) == Ring::CAP) sched_yield();
        r->slots[t % Ring::CAP] = seg.get_handle_from_address(p);
        r->tail.store(t + 1, std::memory_order_release);
      }
      _exit(0);
    }
    if (fork() == 0) {  // consumer
      bip::managed_shared_memory seg(bip::open_only, name.c_str());
      Ring *r = seg.find<Ring>("ring").first;
      for (uint64_t i = 0; i < n; i++) {
        uint64_t h = r->head.load(std::memory_order_relaxed);
        while (r->tail.load(std::memory_order_acquire) == h) sched_yield();
        uint64_t *p = static_cast<uint64_t *>(seg.get_address_from_handle(r->slots[h % Ring::CAP]));
        r->head.store(h + 1, std::memory_order_release);
        if (p[0] != i || p[7] != i + 7) _exit(3);
        seg.deallocate(p);
      }
      _exit(0);
    }
    wait_all(2);
    std::printf("prodcons_ns_per_object\t%.2f\n", (now_ns(CLOCK_MONOTONIC) - wall0) / n);
  } else {
    std::fprintf(stderr, "unknown workload %s\n", mode.c_str());
    return 2;
  }
  bip::shared_memory_object::remove(name.c_str());
  return 0;
}
