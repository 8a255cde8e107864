// Self-test of train/dist.h, run by CTest (tests/mpi/CMakeLists.txt) as
//   mpirun -np 2 dist_selftest --expect-size 2     (and -np 4, where the summation order shows)
//   dist_selftest --expect-size 1                  (no launcher: the single-process path)
//   OMPI_COMM_WORLD_SIZE=2 dist_selftest_nompi --expect-launcher-error   (built without MPI)
// Every rank computes the expected results itself: the inputs are functions of (rank, index), so
// the rank-order sum ((x_0 + x_1) + x_2) + ... can be formed locally and compared bit for bit.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "train/dist.h"

#ifdef WHALE_HAVE_MPI
// The C API only (the deprecated C++ bindings do not compile cleanly with -Wextra).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace {

using whale::train::Dist;

int g_failures = 0;
int g_rank = 0;

#define CHECK(cond, ...)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "dist_selftest: rank %d: FAILED %s: ", g_rank, #cond); \
      std::fprintf(stderr, __VA_ARGS__);                                          \
      std::fprintf(stderr, "\n");                                                 \
      g_failures++;                                                               \
    }                                                                             \
  } while (0)

// Inputs with mixed signs and magnitudes, so that the order of the additions changes the rounding.
template <class T>
T input(int rank, size_t i) {
  const double mag = std::pow(10.0, double(int((i * 7 + size_t(rank) * 3) % 9)) - 4.0);
  return T(std::sin(double(i) * 0.37 + rank * 1.91) * mag);
}

uint64_t fnv1a(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ static_cast<const unsigned char*>(p)[i]) * 1099511628211ull;
  return h;
}

// Every rank must hold the same bits: compare the hash with root's.
void check_identical_across_ranks(const Dist& d, const char* what, const void* p, size_t n) {
  const std::string mine = std::to_string(fnv1a(p, n));
  std::string root = mine;
  d.broadcast(root, 0);
  CHECK(root == mine, "%s differs from rank 0's", what);
}

template <class T>
void test_float_sum(const Dist& d, const char* what, size_t n) {
  std::vector<T> x(n), want(n);
  for (size_t i = 0; i < n; i++) {
    x[i] = input<T>(d.rank(), i);
    T acc = input<T>(0, i);
    for (int r = 1; r < d.size(); r++) acc = acc + input<T>(r, i);
    want[i] = acc;
  }
  d.allreduce_sum(std::span<T>(x));
  size_t bad = 0, first = n;
  for (size_t i = 0; i < n; i++)
    if (std::memcmp(&x[i], &want[i], sizeof(T)) != 0 && bad++ == 0) first = i;
  CHECK(bad == 0, "%s: %zu of %zu sums are not the rank-order sum (first at %zu: %.9g vs %.9g)",
        what, bad, n, first, double(first < n ? x[first] : 0), double(first < n ? want[first] : 0));
  check_identical_across_ranks(d, what, x.data(), n * sizeof(T));
}

void test_int64_sum(const Dist& d) {
  // Near 2^60 per rank: a double-based sum would lose the low bits.
  const size_t n = 1001;
  std::vector<int64_t> x(n);
  for (size_t i = 0; i < n; i++) x[i] = (int64_t(1) << 60) + d.rank() * 1000003 - int64_t(i);
  d.allreduce_sum(std::span<int64_t>(x));
  const int64_t k = d.size(), ranks = k * (k - 1) / 2;
  size_t bad = 0;
  for (size_t i = 0; i < n; i++)
    if (x[i] != k * (int64_t(1) << 60) + ranks * 1000003 - k * int64_t(i)) bad++;
  CHECK(bad == 0, "int64: %zu of %zu sums wrong", bad, n);
  int64_t one = 1;
  d.allreduce_sum(std::span<int64_t>(&one, 1));
  CHECK(one == k, "int64: sum of ones is %lld, not the size %lld", (long long)one, (long long)k);
}

void test_broadcast(const Dist& d) {
  for (int root : {0, d.size() - 1}) {
    std::string want(100001, 'a');
    for (size_t i = 0; i < want.size(); i++) want[i] = char('a' + (i * 13 + size_t(root)) % 26);
    std::string s = d.rank() == root ? want : std::string("other");
    d.broadcast(s, root);
    CHECK(s == want, "string broadcast from %d: got %zu bytes", root, s.size());
    std::string empty = d.rank() == root ? std::string() : std::string("not empty");
    d.broadcast(empty, root);
    CHECK(empty.empty(), "empty string broadcast from %d: got '%s'", root, empty.c_str());
    std::vector<std::byte> bytes(777, std::byte(d.rank()));
    d.broadcast(std::span<std::byte>(bytes), root);
    size_t bad = 0;
    for (std::byte b : bytes) bad += b != std::byte(root);
    CHECK(bad == 0, "byte broadcast from %d: %zu bytes wrong", root, bad);
  }
  bool threw = false;
  try {
    std::string s;
    d.broadcast(s, d.size());
  } catch (const std::invalid_argument& e) {
    threw = std::string(e.what()).find("root") != std::string::npos;
  }
  CHECK(threw, "broadcast from a rank that does not exist must throw");
}

// launcher_world_size() reads the launcher's variables (only in a process that has none).
void test_launcher_detection() {
  using whale::train::launcher_world_size;
  CHECK(launcher_world_size() == 0, "no launcher variables, got %d", launcher_world_size());
  setenv("PMI_SIZE", "3", 1);
  CHECK(launcher_world_size() == 3, "PMI_SIZE=3 gave %d", launcher_world_size());
  setenv("OMPI_COMM_WORLD_SIZE", "5", 1);
  CHECK(launcher_world_size() == 5, "OMPI_COMM_WORLD_SIZE=5 gave %d", launcher_world_size());
  setenv("OMPI_COMM_WORLD_SIZE", "two", 1);
  std::string msg;
  try {
    launcher_world_size();
  } catch (const std::runtime_error& e) {
    msg = e.what();
  }
  CHECK(msg.find("OMPI_COMM_WORLD_SIZE='two'") != std::string::npos, "malformed size: '%s'",
        msg.c_str());
  unsetenv("OMPI_COMM_WORLD_SIZE");
  unsetenv("PMI_SIZE");
  setenv("PMIX_RANK", "0", 1);
  CHECK(launcher_world_size() == -1, "PMIX_RANK alone gave %d", launcher_world_size());
  unsetenv("PMIX_RANK");
}

int launcher_error_test() {
  std::string msg;
  try {
    Dist d;
  } catch (const std::runtime_error& e) {
    msg = e.what();
  }
  std::fprintf(stderr, "dist_selftest: init under a launcher without MPI: '%s'\n", msg.c_str());
  CHECK(msg.find("without MPI") != std::string::npos, "no clear error");
  CHECK(msg.find("OMPI_COMM_WORLD_SIZE=2") != std::string::npos, "the variable is not named");
  return g_failures == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  int expect_size = 0;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a == "--expect-launcher-error") return launcher_error_test();
    if (a == "--expect-size" && i + 1 < argc) {
      expect_size = std::atoi(argv[++i]);
    } else {
      std::fprintf(stderr, "usage: dist_selftest [--expect-size N] [--expect-launcher-error]\n");
      return 2;
    }
  }
  const bool launched = whale::train::launcher_world_size() != 0;
  if (!launched) test_launcher_detection();

  Dist d;
  g_rank = d.rank();
  if (expect_size > 0) CHECK(d.size() == expect_size, "size %d", d.size());
  CHECK(d.rank() >= 0 && d.rank() < d.size(), "rank %d of %d", d.rank(), d.size());
  CHECK(d.is_root() == (d.rank() == 0), "is_root");
#ifdef WHALE_HAVE_MPI
  CHECK(Dist::mpi_active() == launched, "mpi_active %d, launched %d", Dist::mpi_active(), launched);
  int mpi_initialised = 0;
  MPI_Initialized(&mpi_initialised);
  CHECK(bool(mpi_initialised) == launched, "MPI_Initialized %d without a launcher",
        mpi_initialised);
#else
  CHECK(!Dist::mpi_active(), "mpi_active without MPI");
#endif

  // Sizes around the chain's 2^18-element chunks: one partial chunk, several with a remainder.
  test_float_sum<float>(d, "float", 5);
  test_float_sum<float>(d, "float (chunked)", (size_t(1) << 19) + 77);
  test_float_sum<double>(d, "double (chunked)", (size_t(1) << 18) + 3);
  test_float_sum<float>(d, "float (empty)", 0);
  test_int64_sum(d);
  test_broadcast(d);
  d.barrier();

  int64_t failures = g_failures;
  d.allreduce_sum(std::span<int64_t>(&failures, 1));
  std::printf("dist_selftest: rank %d of %d (%s): %s\n", d.rank(), d.size(),
              Dist::mpi_active() ? "MPI" : "single process", failures == 0 ? "ok" : "FAILED");
  return failures == 0 ? 0 : 1;
}
