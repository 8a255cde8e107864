// Run-time dispatch of the matrix kernels, and the portable (scalar) implementation.
//
// The scalar path converts one weight row at a time into an f32 buffer and reuses it for every
// token, so it is far faster than ref:: while staying plain C++.
#include "kernels/linear.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <vector>

#include "kernels/cpu.h"
#include "kernels/qlinear.h"
#include "kernels/repack.h"
#include "tensor/quant.h"

namespace whale {

namespace detail {

float* thread_scratch(int slot, int64_t n) {
  thread_local std::array<std::vector<float>, 4> buffers;
  std::vector<float>& b = buffers[slot];
  const size_t need = size_t(n) + 16;  // room to align to 64 bytes
  if (b.size() < need) b.resize(need);
  auto addr = reinterpret_cast<uintptr_t>(b.data());
  return reinterpret_cast<float*>((addr + 63) & ~uintptr_t(63));
}

namespace {

// Types some kernel table handles: the element types in every table, the GGML block types in the
// portable one only for now (each row dequantized into f32 once, then dotted with every token).
bool kernel_dtype(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16 || t == DType::F8_E4M3 ||
         dtype_is_quantized(t);
}

// All 256 FP8 E4M3 values, so the scalar path converts with one load.
const std::array<float, 256>& fp8_table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int i = 0; i < 256; i++) t[i] = fp8_e4m3_to_f32(uint8_t(i));
    return t;
  }();
  return table;
}

// dst[c - c0] = W[r][c] for c in [c0, c1), block scale applied.
// For a quantized type c0 and c1 - c0 must be whole numbers of blocks (c1 may be w.cols).
void convert_row(const WeightRef& w, int64_t r, int64_t c0, int64_t c1, float* dst) {
  if (dtype_is_quantized(w.dtype)) {
    dequantize_row(dtype_to_ggml(block_dtype(w.dtype)),
                   plain_row(w, r) + dtype_row_bytes(w.dtype, c0), c1 - c0, dst);
    return;
  }
  const int64_t base = r * w.cols;
  switch (w.dtype) {
    case DType::F32: {
      const float* p = static_cast<const float*>(w.data) + base;
      for (int64_t c = c0; c < c1; c++) dst[c - c0] = p[c];
      break;
    }
    case DType::BF16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + base;
      for (int64_t c = c0; c < c1; c++) dst[c - c0] = bf16_to_f32(p[c]);
      break;
    }
    case DType::F16: {
      const uint16_t* p = static_cast<const uint16_t*>(w.data) + base;
      for (int64_t c = c0; c < c1; c++) dst[c - c0] = f16_to_f32(p[c]);
      break;
    }
    case DType::F8_E4M3: {
      const uint8_t* p = static_cast<const uint8_t*>(w.data) + base;
      const float* lut = fp8_table().data();
      for (int64_t cb = c0; cb < c1;) {  // one block scale per 128 columns
        const int64_t ce = std::min(c1, (cb / WeightRef::kBlock + 1) * WeightRef::kBlock);
        const float s = fp8_block_scale(w, r, cb);
        for (int64_t c = cb; c < ce; c++) dst[c - c0] = lut[p[c]] * s;
        cb = ce;
      }
      break;
    }
    default:
      for (int64_t c = c0; c < c1; c++) dst[c - c0] = ref::weight_at(w, r, c);
  }
}

int threads_for(int64_t work) {
  return work >= kParallelMinWork ? num_threads() : 1;
}

void scalar_linear_rows(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1,
                        float* y) {
  const int64_t K = w.cols;
  float* row = thread_scratch(0, K);
  for (int64_t r = r0; r < r1; r++) {
    convert_row(w, r, 0, K, row);
    for (int64_t t = 0; t < n; t++) {
      const float* xt = x + t * K;
      float acc = 0.0f;
      for (int64_t c = 0; c < K; c++) acc += xt[c] * row[c];
      y[t * w.rows + r] = acc;
    }
  }
}

void scalar_linear_t(const float* x, int64_t n, const WeightRef& w, float* y) {
  const int64_t N = w.cols;
  constexpr int64_t kChunk = 256;  // columns per work item
  const int64_t chunks = (N + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) num_threads(threads_for(n* w.rows* N))
  for (int64_t ch = 0; ch < chunks; ch++) {
    const int64_t c0 = ch * kChunk, c1 = std::min(N, c0 + kChunk);
    float* row = thread_scratch(0, kChunk);
    for (int64_t t = 0; t < n; t++)
      for (int64_t c = c0; c < c1; c++) y[t * N + c] = 0.0f;
    for (int64_t r = 0; r < w.rows; r++) {
      convert_row(w, r, c0, c1, row);
      for (int64_t t = 0; t < n; t++) {
        const float xr = x[t * w.rows + r];
        float* yt = y + t * N;
        for (int64_t c = c0; c < c1; c++) yt[c] += xr * row[c - c0];
      }
    }
  }
}

void scalar_weight_row(const WeightRef& w, int64_t r, float* dst) {
  convert_row(w, r, 0, w.cols, dst);
}

const LinearKernels& active_kernels(DType t) {
  if (dtype_is_quantized(t)) return kLinearScalar;
  switch (active_isa()) {
    case Isa::Avx512:
      return kLinearAvx512;
    case Isa::Avx2:
      return kLinearAvx2;
    case Isa::Scalar:
      break;
  }
  return kLinearScalar;
}

}  // namespace

namespace {

// Whether a job on a GGML block type takes the dequantizing AVX-512 GEMM (prefill).
// The 32-value types, Q4_K and Q5_K take the int8 GEMM instead (qlinear_avx512.cpp) when int8
// is on.
bool blocks_gemm(const LinearJob& job) {
  const bool int8_gemm =
      int8_activations_enabled() && int8_gemm_dtype(job.w.dtype) && job.w.cols % 64 == 0;
  if (!dtype_is_quantized(job.w.dtype) || job.n <= kInt8MaxTokens || active_isa() != Isa::Avx512 ||
      int8_gemm)
    return false;
  const GgmlTypeInfo* info = ggml_type_info(uint32_t(dtype_to_ggml(block_dtype(job.w.dtype))));
  return info && info->dequantizable;
}

// Rows [r0, r1) of one job: the int8 kernel where its activations were quantized, else the
// weight type's kernel.
void run_rows(const LinearJob& job, const QuantizedActs& qx, int64_t r0, int64_t r1) {
  if (qx.q)
    active_qlinear()(qx, job.w, r0, r1, job.y);
  else if (blocks_gemm(job))
    gemm_blocks_avx512(job.x, job.n, job.w, r0, r1, job.y);
  else
    active_kernels(job.w.dtype).linear_rows(job.x, job.n, job.w, r0, r1, job.y);
}

// A position in the concatenation of all jobs' rows.
struct RowPos {
  size_t job;
  int64_t row;
};

// Splits the jobs' rows into `nt` contiguous parts of about equal cost and runs part `id`.
// Boundaries inside a job are rounded to multiples of kRowAlign, computed identically by the two
// threads that share them. (Contiguous parts measured faster than handing out small chunks
// dynamically: each thread streams one long region.)
class RowSplitter {
 public:
  RowSplitter(std::span<const LinearJob> jobs, const QuantizedActs* qx) : jobs_(jobs), qx_(qx) {
    start_.resize(jobs.size() + 1, 0);
    for (size_t j = 0; j < jobs.size(); j++)
      start_[j + 1] = start_[j] + jobs[j].w.rows * row_cost(jobs[j]);
  }
  int64_t total() const { return start_.back(); }

  void run_part(int id, int nt) const {
    const RowPos a = locate(id, nt), b = locate(id + 1, nt);
    for (size_t j = a.job; j < jobs_.size() && j <= b.job; j++) {
      const LinearJob& job = jobs_[j];
      const int64_t r0 = j == a.job ? a.row : 0, r1 = j == b.job ? b.row : job.w.rows;
      if (r0 < r1) run_rows(job, qx_[j], r0, r1);
    }
  }

 private:
  // Cost of one output row: its weight bytes are streamed once and it takes n * cols
  // multiply-adds.
  static int64_t row_cost(const LinearJob& j) {
    return 2 * int64_t(dtype_row_bytes(j.w.dtype, j.w.cols)) + j.w.cols * j.n;
  }

  RowPos locate(int id, int nt) const {
    if (id >= nt) return {jobs_.size(), 0};
    const int64_t p = int64_t((__int128(total()) * id) / nt);
    // The last job starting at or before p.
    size_t j = size_t(std::upper_bound(start_.begin(), start_.end(), p) - start_.begin()) - 1;
    if (j >= jobs_.size()) return {jobs_.size(), 0};
    const int64_t cost = row_cost(jobs_[j]);
    int64_t r = ((p - start_[j]) / cost + kRowAlign / 2) / kRowAlign * kRowAlign;
    return {j, std::min(r, jobs_[j].w.rows)};
  }

  std::span<const LinearJob> jobs_;
  const QuantizedActs* qx_;
  std::vector<int64_t> start_;  // cumulative cost at each job's first row
};

// quantize_activations, its tokens split over the threads when there are many (a prompt: one
// thread alone would keep the other waiting for a few percent of the prefill time).
void quantize_in_parallel(const float* x, int64_t n, int64_t K, int8_t* q, float* d, int32_t* s) {
  const int nt = omp_in_parallel() || n < 32 ? 1 : threads_for(n * K * 64);
  if (nt <= 1) return quantize_activations(x, n, K, q, d, s);
  const int64_t nb = K / 32;
#pragma omp parallel num_threads(nt)
  {
    const int64_t id = omp_get_thread_num(), parts = omp_get_num_threads();
    const int64_t t0 = n * id / parts, t1 = n * (id + 1) / parts;
    quantize_activations(x + t0 * K, t1 - t0, K, q + t0 * K, d + t0 * nb, s + t0 * nb);
  }
}

// Quantizes the activations of the jobs that take the int8 kernels (qlinear.h) into per-thread
// buffers, once per distinct input: jobs that read the same x (a layer input feeding several
// projections, an expert's gate and up) share it. qx[j].q is null for the other jobs.
void quantize_job_inputs(std::span<const LinearJob> jobs, std::vector<QuantizedActs>& qx) {
  thread_local std::vector<int8_t> q;
  thread_local std::vector<float> d, d2, ds2;
  thread_local std::vector<int32_t> s, ns2;
  qx.assign(jobs.size(), QuantizedActs{});
  if (!int8_activations_enabled()) return;
  size_t nq = 0, nd = 0;
  std::vector<size_t> at(jobs.size(), SIZE_MAX);  // offsets into q (d and s: at / 32)
  for (size_t j = 0; j < jobs.size(); j++) {
    const LinearJob& job = jobs[j];
    if (!int8_dtype(job.w.dtype) || job.w.cols % 32 != 0 || blocks_gemm(job)) continue;
    if (detail::kquant_dtype(job.w.dtype) && job.w.cols % 256 != 0) continue;
    size_t same = SIZE_MAX;
    for (size_t i = 0; i < j && same == SIZE_MAX; i++)
      if (at[i] != SIZE_MAX && jobs[i].x == job.x && jobs[i].n == job.n &&
          jobs[i].w.cols == job.w.cols)
        same = at[i];
    if (same != SIZE_MAX) {
      at[j] = same;
      continue;
    }
    at[j] = nq;
    nq += size_t(job.n * job.w.cols);
    nd += size_t(job.n * job.w.cols / 32);
  }
  if (nq == 0) return;
  if (q.size() < nq) q.resize(nq);
  if (d.size() < nd) {
    d.resize(nd);
    s.resize(nd);
    d2.resize(nd * 8);  // 16 lanes per pair of blocks
    ns2.resize(nd * 8);
    ds2.resize(nd * 8);
  }
  for (size_t j = 0; j < jobs.size(); j++) {
    if (at[j] == SIZE_MAX) continue;
    const LinearJob& job = jobs[j];
    QuantizedActs& a = qx[j];
    a = {q.data() + at[j], d.data() + at[j] / 32, s.data() + at[j] / 32, job.n, job.w.cols};
    if (job.w.cols % 64 == 0 && job.n <= kInt8MaxTokens) {  // only the per-row kernels use them
      a.d2 = d2.data() + at[j] / 4;
      a.ns2 = ns2.data() + at[j] / 4;
      a.ds2 = ds2.data() + at[j] / 4;
    }
    bool first = true;
    for (size_t i = 0; i < j; i++) first = first && at[i] != at[j];
    if (first) {
      quantize_in_parallel(job.x, job.n, job.w.cols, q.data() + at[j], d.data() + at[j] / 32,
                           s.data() + at[j] / 32);
      if (a.d2)
        expand_activation_pairs(a, d2.data() + at[j] / 4, ns2.data() + at[j] / 4,
                                ds2.data() + at[j] / 4);
    }
  }
}

// Runs jobs whose dtype has kernels and whose shapes are non-empty.
void run_jobs(std::span<const LinearJob> jobs) {
  int64_t work = 0;
  for (const LinearJob& j : jobs) work += j.n * j.w.rows * j.w.cols;
  const int nt = omp_in_parallel() ? 1 : threads_for(work);
  thread_local std::vector<QuantizedActs> qx;
  quantize_job_inputs(jobs, qx);
  if (nt <= 1) {
    for (size_t j = 0; j < jobs.size(); j++) run_rows(jobs[j], qx[j], 0, jobs[j].w.rows);
    return;
  }
  const RowSplitter split(jobs, qx.data());
#pragma omp parallel num_threads(nt)
  split.run_part(omp_get_thread_num(), omp_get_num_threads());
}

// Handles the cases without kernel work; returns false when the job needs the kernels.
bool trivial_job(const LinearJob& j) {
  if (j.n <= 0 || j.w.rows <= 0) return true;
  if (j.w.cols <= 0) {  // empty sums
    std::fill(j.y, j.y + j.n * j.w.rows, 0.0f);
    return true;
  }
  if (!kernel_dtype(j.w.dtype)) {
    ref::linear(j.x, j.n, j.w, j.y);
    return true;
  }
  return false;
}

}  // namespace

const LinearKernels kLinearScalar = {scalar_linear_rows, scalar_linear_t, scalar_weight_row};

namespace {
bool g_fp8_vbmi = __builtin_cpu_supports("avx512vbmi");
}

bool fp8_vbmi_enabled() {
  return g_fp8_vbmi;
}

void set_fp8_vbmi(bool on) {
  g_fp8_vbmi = on && __builtin_cpu_supports("avx512vbmi");
}

const uint8_t* fp8_bf16_table() {
  static const std::array<uint8_t, 256> table = [] {
    std::array<uint8_t, 256> t{};
    for (int c = 0; c < 128; c++) {
      // Exact: an E4M3 value has at most 4 significant bits and exponent -9..8.
      const uint16_t h = c == 0x7f ? uint16_t(0x7fc0) : f32_to_bf16(fp8_e4m3_to_f32(uint8_t(c)));
      t[size_t(c)] = uint8_t(h >> 8);
      t[size_t(128 + c)] = uint8_t(h & 0xff);
    }
    return t;
  }();
  return table.data();
}

}  // namespace detail

void linear(const float* x, int64_t n, const WeightRef& w, float* y) {
  const LinearJob job{x, n, w, y};
  if (detail::trivial_job(job)) return;
  detail::run_jobs(std::span<const LinearJob>(&job, 1));
}

void linear_many(std::span<const LinearJob> jobs) {
  std::vector<LinearJob> work;
  work.reserve(jobs.size());
  for (const LinearJob& j : jobs)
    if (!detail::trivial_job(j)) work.push_back(j);
  if (!work.empty()) detail::run_jobs(work);
}

void linear_t(const float* x, int64_t n, const WeightRef& w, float* y) {
  if (n <= 0 || w.cols <= 0) return;
  if (w.rows <= 0) {  // empty sums
    std::fill(y, y + n * w.cols, 0.0f);
    return;
  }
  if (!detail::kernel_dtype(w.dtype)) return ref::linear_t(x, n, w, y);
  detail::active_kernels(w.dtype).linear_t(x, n, w, y);
}

void weight_row(const WeightRef& w, int64_t r, float* dst) {
  if (w.cols <= 0) return;
  if (!detail::kernel_dtype(w.dtype)) {
    for (int64_t c = 0; c < w.cols; c++) dst[c] = ref::weight_at(w, r, c);
    return;
  }
  detail::active_kernels(w.dtype).weight_row(w, r, dst);
}

}  // namespace whale
