#include "train/dist.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#ifdef WHALE_HAVE_MPI
// The C API only (the deprecated C++ bindings do not compile cleanly with -Wextra).
#define OMPI_SKIP_MPICXX 1
#define MPICH_SKIP_MPICXX 1
#include <mpi.h>
#endif

namespace whale::train {

namespace {

// The process's one communicator. Plain data: nothing to destroy at exit.
struct State {
  bool initialised = false;
  bool mpi = false;  // MPI_Init_thread was called by init()
  bool finalized = false;
  bool failed = false;  // a Dist was destroyed by an exception (see dist.h)
  int rank = 0;
  int size = 1;
};
State g_state;

struct Launcher {
  int size = 0;  // as launcher_world_size()
  const char* variable = nullptr;
  std::string value;
};

int parse_size(const char* variable, const char* text) {
  const std::string_view v(text);
  int n = 0;
  const auto [end, ec] = std::from_chars(v.data(), v.data() + v.size(), n);
  if (ec != std::errc() || end != v.data() + v.size() || n < 1)
    throw std::runtime_error(std::string("environment variable ") + variable + "='" + text +
                             "' is not a process count >= 1");
  return n;
}

Launcher detect_launcher() {
  for (const char* variable : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
    if (const char* v = std::getenv(variable)) return {parse_size(variable, v), variable, v};
  if (const char* v = std::getenv("PMIX_RANK")) return {-1, "PMIX_RANK", v};
  return {};
}

[[noreturn]] void stop_job(int code, const std::string& message) {
  if (!message.empty())
    std::fprintf(stderr, "whale: rank %d of %d: %s\n", g_state.rank, g_state.size, message.c_str());
  std::fflush(stdout);
  std::fflush(stderr);
#ifdef WHALE_HAVE_MPI
  if (g_state.mpi && !g_state.finalized) MPI_Abort(MPI_COMM_WORLD, code);
#endif
  std::_Exit(code);
}

#ifdef WHALE_HAVE_MPI

// Registered by init(): a clean exit finalizes; a failed one (see dist.h) stops every rank.
void at_exit() {
  if (!g_state.mpi || g_state.finalized) return;
  if (g_state.failed) stop_job(1, "failed; stopping all processes");
  Dist::finalize();
}

void require_live(const char* what) {
  if (g_state.finalized)
    throw std::logic_error(std::string("Dist::") + what + ": MPI was already finalized");
}

// MPI counts are int: every call moves at most this many elements.
constexpr size_t kMaxCount = size_t(1) << 30;

// Aborts the job (on every rank: they all see the same extremes) unless all ranks pass n.
void check_same_count(const char* what, size_t n) {
  int64_t v[2] = {int64_t(n), -int64_t(n)};
  MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_INT64_T, MPI_MAX, MPI_COMM_WORLD);
  if (v[0] != int64_t(n) || -v[1] != int64_t(n))
    stop_job(1, std::string("Dist::") + what + ": the ranks pass different element counts (" +
                    std::to_string(-v[1]) + " to " + std::to_string(v[0]) + ", this rank " +
                    std::to_string(n) + ")");
}

template <class T>
void bcast_chunks(T* x, size_t n, MPI_Datatype type, int root) {
  for (size_t off = 0; off < n; off += kMaxCount)
    MPI_Bcast(x + off, int(std::min(kMaxCount, n - off)), type, root, MPI_COMM_WORLD);
}

// The rank-order chain of dist.h: rank r receives the partial sum x_0 + ... + x_{r-1} of a chunk
// from rank r-1, adds its own x_r and passes it on; rank K-1 ends with the total and broadcasts it.
// While rank r adds chunk c, rank r-1 is already working on chunk c+1.
template <class T>
void chain_allreduce(std::span<T> x, MPI_Datatype type) {
  constexpr size_t kChunk = size_t(1) << 18;
  constexpr int kTag = 7411;
  const int rank = g_state.rank, size = g_state.size;
  std::vector<T> partial(std::min(x.size(), kChunk));
  for (size_t off = 0; off < x.size(); off += kChunk) {
    const size_t n = std::min(kChunk, x.size() - off);
    T* mine = x.data() + off;
    if (rank > 0) {
      MPI_Recv(partial.data(), int(n), type, rank - 1, kTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      for (size_t i = 0; i < n; i++) mine[i] = partial[i] + mine[i];
    }
    if (rank < size - 1) MPI_Send(mine, int(n), type, rank + 1, kTag, MPI_COMM_WORLD);
  }
  bcast_chunks(x.data(), x.size(), type, size - 1);
}

template <class T>
void float_allreduce(std::span<T> x, MPI_Datatype type) {
  if (g_state.size == 1) return;
  require_live("allreduce_sum");
  check_same_count("allreduce_sum", x.size());
  chain_allreduce(x, type);
}

#endif  // WHALE_HAVE_MPI

}  // namespace

int launcher_world_size() {
  return detect_launcher().size;
}

Dist::Dist() : uncaught_at_construction_(std::uncaught_exceptions()) {
  init();
}

Dist::Dist(const Dist&) : uncaught_at_construction_(std::uncaught_exceptions()) {}

Dist::~Dist() {
  if (std::uncaught_exceptions() > uncaught_at_construction_) g_state.failed = true;
}

void Dist::init() {
  if (g_state.initialised) return;
  const Launcher launcher = detect_launcher();
#ifdef WHALE_HAVE_MPI
  if (launcher.size != 0) {
    int provided = 0;
    MPI_Init_thread(nullptr, nullptr, MPI_THREAD_FUNNELED, &provided);
    MPI_Comm_rank(MPI_COMM_WORLD, &g_state.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &g_state.size);
    g_state.mpi = true;
    std::atexit(at_exit);
  }
#else
  if (launcher.size > 1 || launcher.size < 0)
    throw std::runtime_error(
        "this whale was built without MPI support, but an MPI launcher started it as one of " +
        (launcher.size > 1 ? std::to_string(launcher.size) : std::string("several")) +
        " processes (" + launcher.variable + "=" + launcher.value +
        "); install Open MPI (libopenmpi-dev), rebuild whale, or run it without mpirun");
#endif
  g_state.initialised = true;
}

bool Dist::mpi_active() {
  return g_state.mpi && !g_state.finalized;
}

void Dist::finalize() {
#ifdef WHALE_HAVE_MPI
  if (!g_state.mpi || g_state.finalized) return;
  g_state.finalized = true;
  MPI_Finalize();
#endif
}

int Dist::rank() const {
  return g_state.rank;
}
int Dist::size() const {
  return g_state.size;
}

#ifdef WHALE_HAVE_MPI

void Dist::allreduce_sum(std::span<float> x) const {
  float_allreduce(x, MPI_FLOAT);
}
void Dist::allreduce_sum(std::span<double> x) const {
  float_allreduce(x, MPI_DOUBLE);
}

void Dist::allreduce_sum(std::span<int64_t> x) const {
  if (g_state.size == 1) return;
  require_live("allreduce_sum");
  check_same_count("allreduce_sum", x.size());
  for (size_t off = 0; off < x.size(); off += kMaxCount)
    MPI_Allreduce(MPI_IN_PLACE, x.data() + off, int(std::min(kMaxCount, x.size() - off)),
                  MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD);
}

void Dist::broadcast(std::span<std::byte> bytes, int root) const {
  if (root < 0 || root >= g_state.size)
    throw std::invalid_argument("Dist::broadcast: root " + std::to_string(root) +
                                " is not a rank of " + std::to_string(g_state.size));
  if (g_state.size == 1) return;
  require_live("broadcast");
  check_same_count("broadcast", bytes.size());
  bcast_chunks(bytes.data(), bytes.size(), MPI_BYTE, root);
}

void Dist::broadcast(std::string& s, int root) const {
  if (root < 0 || root >= g_state.size)
    throw std::invalid_argument("Dist::broadcast: root " + std::to_string(root) +
                                " is not a rank of " + std::to_string(g_state.size));
  if (g_state.size == 1) return;
  require_live("broadcast");
  int64_t n = int64_t(s.size());
  MPI_Bcast(&n, 1, MPI_INT64_T, root, MPI_COMM_WORLD);
  s.resize(size_t(n));
  bcast_chunks(s.data(), s.size(), MPI_CHAR, root);
}

void Dist::barrier() const {
  if (g_state.size == 1) return;
  require_live("barrier");
  MPI_Barrier(MPI_COMM_WORLD);
}

#else  // one process: every collective is the identity

void Dist::allreduce_sum(std::span<float>) const {}
void Dist::allreduce_sum(std::span<double>) const {}
void Dist::allreduce_sum(std::span<int64_t>) const {}

void Dist::broadcast(std::span<std::byte>, int root) const {
  if (root != 0)
    throw std::invalid_argument("Dist::broadcast: root " + std::to_string(root) +
                                " is not a rank of 1");
}

void Dist::broadcast(std::string&, int root) const {
  if (root != 0)
    throw std::invalid_argument("Dist::broadcast: root " + std::to_string(root) +
                                " is not a rank of 1");
}

void Dist::barrier() const {}

#endif

void Dist::abort(int code, const std::string& message) const {
  stop_job(code, message);
}

}  // namespace whale::train
