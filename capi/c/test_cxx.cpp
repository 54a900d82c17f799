// The C++ operators new and delete in every form, served by cohort: plain, array, nothrow,
// aligned, sized (compiled with -fsized-deallocation), the new-handler and std::bad_alloc.
// Built and run by .ci/capi.sh, linked with libcohort (and again under LD_PRELOAD).
#include "cohort.h"
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <malloc.h>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <thread>
#include <vector>

static int failures;
#define CHECK(cond)                                                              \
  do {                                                                           \
    if (!(cond)) {                                                               \
      std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);       \
      failures++;                                                                \
    }                                                                            \
  } while (0)

static bool aligned(const void *p, std::size_t a) {
  return (reinterpret_cast<std::uintptr_t>(p) & (a - 1)) == 0;
}

struct alignas(64) Line {
  char bytes[64];
};
struct alignas(8192) Page2 {
  char bytes[100];
};
struct WithDtor {
  int v = 7;
  ~WithDtor() { v = 0; }
};

static int handler_calls;
static void handler() {
  handler_calls++;
  std::set_new_handler(nullptr); // the next failure throws
}

int main() {
  // Every operator, called directly.
  void *p = ::operator new(100);
  CHECK(malloc_usable_size(p) == 112); // cohort's class of 100 bytes
  ::operator delete(p, 100);            // sized
  p = ::operator new[](100);
  ::operator delete[](p, 100);
  p = ::operator new(100);
  ::operator delete(p);
  p = ::operator new[](100);
  ::operator delete[](p);
  p = ::operator new(100, std::nothrow);
  CHECK(p != nullptr);
  ::operator delete(p, std::nothrow);
  p = ::operator new[](100, std::nothrow);
  ::operator delete[](p, std::nothrow);
  for (std::size_t a = 16; a <= 65536; a <<= 1) {
    auto al = std::align_val_t(a);
    p = ::operator new(300, al);
    CHECK(aligned(p, a));
    ::operator delete(p, 300, al);
    p = ::operator new[](300, al);
    CHECK(aligned(p, a));
    ::operator delete[](p, 300, al);
    p = ::operator new(300, al);
    ::operator delete(p, al);
    p = ::operator new[](300, al);
    ::operator delete[](p, al);
    p = ::operator new(300, al, std::nothrow);
    CHECK(p && aligned(p, a));
    ::operator delete(p, al, std::nothrow);
    p = ::operator new[](300, al, std::nothrow);
    CHECK(p && aligned(p, a));
    ::operator delete[](p, al, std::nothrow);
  }
  ::operator delete(nullptr);
  ::operator delete(nullptr, 10);

  // new-expressions: over-aligned types, arrays with cookies, destructors.
  Line *l = new Line;
  CHECK(aligned(l, 64));
  delete l;
  Page2 *pg = new Page2[3];
  CHECK(aligned(pg, 8192));
  delete[] pg;
  WithDtor *w = new WithDtor[17];
  CHECK(w[16].v == 7);
  delete[] w;

  // Out of memory: nothrow gives null; the handler runs, then std::bad_alloc.
  CHECK(::operator new(SIZE_MAX / 2, std::nothrow) == nullptr);
  std::set_new_handler(handler);
  bool thrown = false;
  try {
    p = ::operator new(SIZE_MAX / 2);
  } catch (const std::bad_alloc &) {
    thrown = true;
  }
  CHECK(thrown && handler_calls == 1);

  // The standard library on top, across threads.
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; t++)
    ts.emplace_back([t] {
      std::map<int, std::string> m;
      for (int i = 0; i < 20000; i++)
        m[i] = std::string(static_cast<std::size_t>(i % 200), char('a' + t));
      std::size_t total = 0;
      for (auto &kv : m)
        total += kv.second.size();
      if (total != 20000 / 200 * (199 * 200 / 2))
        std::fprintf(stderr, "FAIL map total %zu\n", total), failures++;
      auto sp = std::make_shared<std::vector<int>>(10000, t);
      if ((*sp)[9999] != t)
        failures++;
    });
  for (auto &t : ts)
    t.join();

  char msg[256];
  CHECK(cohort_verify(msg, sizeof msg) == 0);
  if (failures) {
    std::fprintf(stderr, "test_cxx: %d failures\n", failures);
    return 1;
  }
  std::printf("test_cxx: all checks passed\n");
  return 0;
}
