// Data-parallel plumbing for `whale train` (`mpirun -np K whale train ...`): who am I, how many
// are we, sum these gradients, share this string.
//
// Single process unless launched: init() starts MPI only when an MPI launcher started the process
// (OMPI_COMM_WORLD_SIZE from Open MPI's mpirun, PMI_SIZE from MPICH/Hydra or Slurm PMI, PMIX_RANK
// from a PMIx launcher). A plain `whale train` never calls into MPI at all: size() = 1, rank() = 0
// and every collective is a no-op. Without MPI support compiled in (no WHALE_HAVE_MPI) the same API
// works for one process, and being launched as one of several processes is a clear error.
//
// Sums of floating-point values (allreduce_sum on float/double) are computed in RANK ORDER,
// ((x_0 + x_1) + x_2) + ... + x_{K-1}, along a chain 0 -> 1 -> ... -> K-1 in chunks (pipelined, so
// every link carries the buffer once), and the last rank then broadcasts its bits to everyone.
// Why not MPI_Allreduce: the MPI standard does not promise that every rank gets the same bits, and
// Open MPI picks its reduction tree (hence the rounding) by message size and process count. The
// chain gives
//   - identical bits on every rank (they all receive one rank's result), so the replicated
//     parameters never drift apart;
//   - a summation order that does not depend on the MPI library, its tuning or the message size,
//     so runs repeat exactly;
//   - the order in which one process accumulates the same micro-batches (rank r's share is the
//     r-th), so K processes and one process with --grad-accum K add the same partial gradients in
//     the same order; with different micro-batch shapes the sums still agree to float rounding
//     (~1e-7 relative), well inside the 1e-5 the trainer promises.
// Integer sums (int64) are exact in any order and use MPI_Allreduce.
//
// Errors: collectives check that every rank passes the same element count (a mismatch aborts the
// whole job with a message, since the ranks could otherwise hang). A rank that leaves by an
// exception must not wait for the others at MPI_Finalize (they may be blocked in a collective it
// will never join): a Dist destroyed while an exception unwinds marks the process as failed, and
// the exit handler then calls MPI_Abort, which stops every rank. Call abort() directly to stop the
// job on purpose.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace whale::train {

// The number of processes an MPI launcher announced in the environment: OMPI_COMM_WORLD_SIZE, else
// PMI_SIZE; -1 when only PMIX_RANK is set (launched, size unknown); 0 when not launched. A
// malformed value throws std::runtime_error naming the variable.
int launcher_world_size();

// A handle on the process's (single, global) communicator. Copies are cheap and all the same.
class Dist {
 public:
  // Calls init().
  Dist();
  // If destroyed while an exception unwinds, marks the process as failed (see above).
  ~Dist();
  Dist(const Dist&);
  Dist& operator=(const Dist&) = default;

  // Idempotent. Initialises MPI (MPI_THREAD_FUNNELED: only the main thread calls MPI, OpenMP
  // threads never do) when launched, and registers finalize() to run at exit. Throws
  // std::runtime_error when launched as one of several processes without MPI support.
  static void init();
  // True when MPI was initialised (launched and built with MPI), false in the single-process path.
  static bool mpi_active();
  // MPI_Finalize if MPI is active and not finalized yet (collective: every rank must call it, or
  // let the exit handler do it). Idempotent.
  static void finalize();

  int rank() const;
  int size() const;
  bool is_root() const { return rank() == 0; }

  // In place: x[i] = sum over ranks of x[i], the same bits on every rank (see above).
  void allreduce_sum(std::span<float> x) const;
  void allreduce_sum(std::span<double> x) const;
  void allreduce_sum(std::span<int64_t> x) const;

  // Copies root's bytes into every rank's buffer; all ranks pass the same size.
  void broadcast(std::span<std::byte> bytes, int root = 0) const;
  // Every rank ends with root's string (other ranks' strings are replaced, any length).
  void broadcast(std::string& s, int root = 0) const;

  void barrier() const;

  // Stops the whole job with exit status `code` (MPI_Abort), after printing `message` (if not
  // empty) to stderr; in the single-process path, std::exit(code).
  [[noreturn]] void abort(int code, const std::string& message = "") const;

 private:
  int uncaught_at_construction_;
};

}  // namespace whale::train
