// Matrix kernels over weights kept in their stored dtype.
//
// A WeightRef is a view of a row-major [rows x cols] matrix as it sits in the (memory-mapped)
// checkpoint, e.g. an nn.Linear weight [out_features x in_features]. F8_E4M3 weights carry the
// DeepSeek-V3 release's per-block inverse scales: element (r, c) is
//   fp8(r, c) * scale_inv[(row0 + r) / 128][c / 128]
// where `row0` lets a view start part-way into a larger quantised matrix (a head's slice of
// kv_b_proj) and still find its block scales. Partial edge blocks are allowed.
//
// All activations are f32. The kernels convert weights on the fly, so resident memory stays the
// size of the file.
#pragma once

#include <cstdint>
#include <span>

#include "tensor/dtype.h"

namespace whale {

struct WeightRef {
  DType dtype = DType::F32;
  int64_t rows = 0, cols = 0;
  const void* data = nullptr;  // first element of row 0 of this view; rows are `cols` apart
  // F8_E4M3 only:
  const float* scale_inv = nullptr;  // [ceil(total_rows/128)][scale_cols] block scales
  int64_t scale_cols = 0;            // ceil(cols/128)
  int64_t row0 = 0;                  // this view's first row within the quantised matrix
  static constexpr int64_t kBlock = 128;

  // The view of rows [r0, r0 + n).
  WeightRef slice_rows(int64_t r0, int64_t n) const;
};

// y[t][r] = sum_c x[t][c] * W[r][c]  for t < n, r < W.rows.   x: [n][W.cols], y: [n][W.rows].
// Multithreaded (OpenMP). Accumulates in f32.
void linear(const float* x, int64_t n, const WeightRef& w, float* y);

// One product of a batch for linear_many: y = linear(x, n, w).
struct LinearJob {
  const float* x = nullptr;  // [n][w.cols]
  int64_t n = 0;
  WeightRef w;
  float* y = nullptr;  // [n][w.rows]; must not overlap another job's x or y
};

// Runs independent products in ONE parallel region: all jobs' rows are split evenly across the
// threads, so many small matrices (a MoE layer's active experts) cost one fork/join instead of
// one each. Each output equals what linear() gives for its job.
void linear_many(std::span<const LinearJob> jobs);

// y[t][c] = sum_r x[t][r] * W[r][c]  for t < n, c < W.cols.   x: [n][W.rows], y: [n][W.cols].
// The transposed product, used by absorbed MLA to fold W_UK into the query.
void linear_t(const float* x, int64_t n, const WeightRef& w, float* y);

// dst[c] = W[r][c] as f32 (embedding lookup).
void weight_row(const WeightRef& w, int64_t r, float* dst);

// Scalar reference implementations: the plain loops the fast kernels are tested against.
namespace ref {
float weight_at(const WeightRef& w, int64_t r, int64_t c);
void linear(const float* x, int64_t n, const WeightRef& w, float* y);
void linear_t(const float* x, int64_t n, const WeightRef& w, float* y);
}  // namespace ref

// ---- Internals shared by the per-instruction-set kernel files (not for callers). ----
namespace detail {

// One instruction set's implementation of linear / linear_t / weight_row. The public functions
// dispatch to the table of active_isa() (kernels/cpu.h). Each table handles F32, BF16, F16 and
// F8_E4M3 weights; other dtypes go to ref::.
struct LinearKernels {
  // Rows [r0, r1) of y = linear(x, n, w), i.e. y[t * w.rows + r], on the calling thread. The
  // callers (linear, linear_many) split rows across threads at multiples of kRowAlign from the
  // view's first row, so every output is computed in the same order for any thread count.
  void (*linear_rows)(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1,
                      float* y);
  void (*linear_t)(const float* x, int64_t n, const WeightRef& w, float* y);
  void (*weight_row)(const WeightRef& w, int64_t r, float* dst);
};
extern const LinearKernels kLinearScalar;
extern const LinearKernels kLinearAvx2;    // linear_avx2.cpp
extern const LinearKernels kLinearAvx512;  // linear_avx512.cpp
// Rows [r0, r1) of linear() for a GGML block type (any dequantizable one) with n > 4 tokens on
// AVX-512: the prefill GEMM on f32 panels dequantized once per tile (exact f32 activations).
void gemm_blocks_avx512(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1,
                        float* y);
// Up to this many tokens the 32-value block types take the int8 kernels (qlinear.h); with more,
// on AVX-512, the dequantizing GEMM, several times faster there.
constexpr int64_t kInt8MaxTokens = 4;

// A per-thread f32 work buffer of at least n floats, 64-byte aligned, reused across calls.
// `slot` (0..3) selects independent buffers. Lives in linear.cpp so that the ISA-specific files
// instantiate no standard-library templates (whose out-of-line copies the linker could share
// with code compiled for a lesser ISA).
float* thread_scratch(int slot, int64_t n);

// The block scale of element (r, c) of an F8_E4M3 view (1 when it has no scales).
inline float fp8_block_scale(const WeightRef& w, int64_t r, int64_t c) {
  if (!w.scale_inv) return 1.0f;
  return w.scale_inv[((w.row0 + r) / WeightRef::kBlock) * w.scale_cols + c / WeightRef::kBlock];
}

// Work (multiply-adds) below which the kernels stay on the calling thread: an OpenMP fork/join
// costs a few microseconds.
constexpr int64_t kParallelMinWork = int64_t(1) << 17;
// Thread boundaries inside one matrix fall on multiples of this many rows.
constexpr int64_t kRowAlign = 32;

// The AVX-512 FP8 kernels convert with a 128-entry byte table (vpermi2b, AVX512_VBMI) where the
// CPU has it. Tests switch it off to cover the shift-based fallback; `on` only takes effect on a
// CPU with VBMI. Not thread-safe against kernels running concurrently.
bool fp8_vbmi_enabled();
void set_fp8_vbmi(bool on);
// The FP8 E4M3 -> bf16 table: bytes [0, 128) are the high bytes and [128, 256) the low bytes of
// the bf16 of magnitude code c (sign excluded; every E4M3 value is exact in bf16; 0x7f -> NaN).
const uint8_t* fp8_bf16_table();

}  // namespace detail

}  // namespace whale
