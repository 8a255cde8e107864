// Run-time dispatch of the matrix kernels, and the portable (scalar) implementation.
//
// The scalar path converts one weight row at a time into an f32 buffer and reuses it for every
// token, so it is far faster than ref:: while staying plain C++.
#include "kernels/linear.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <vector>

#include "kernels/cpu.h"

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

bool kernel_dtype(DType t) {
  return t == DType::F32 || t == DType::BF16 || t == DType::F16 || t == DType::F8_E4M3;
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
void convert_row(const WeightRef& w, int64_t r, int64_t c0, int64_t c1, float* dst) {
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

void scalar_linear(const float* x, int64_t n, const WeightRef& w, float* y) {
  const int64_t K = w.cols;
#pragma omp parallel for schedule(static) num_threads(threads_for(n* w.rows* K))
  for (int64_t r = 0; r < w.rows; r++) {
    float* row = thread_scratch(0, K);
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

const LinearKernels& active_kernels() {
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

const LinearKernels kLinearScalar = {scalar_linear, scalar_linear_t, scalar_weight_row};

}  // namespace detail

void linear(const float* x, int64_t n, const WeightRef& w, float* y) {
  if (n <= 0 || w.rows <= 0) return;
  if (w.cols <= 0) {  // empty sums
    std::fill(y, y + n * w.rows, 0.0f);
    return;
  }
  if (!detail::kernel_dtype(w.dtype)) return ref::linear(x, n, w, y);
  detail::active_kernels().linear(x, n, w, y);
}

void linear_t(const float* x, int64_t n, const WeightRef& w, float* y) {
  if (n <= 0 || w.cols <= 0) return;
  if (w.rows <= 0) {  // empty sums
    std::fill(y, y + n * w.cols, 0.0f);
    return;
  }
  if (!detail::kernel_dtype(w.dtype)) return ref::linear_t(x, n, w, y);
  detail::active_kernels().linear_t(x, n, w, y);
}

void weight_row(const WeightRef& w, int64_t r, float* dst) {
  if (w.cols <= 0) return;
  if (!detail::kernel_dtype(w.dtype)) {
    for (int64_t c = 0; c < w.cols; c++) dst[c] = ref::weight_at(w, r, c);
    return;
  }
  detail::active_kernels().weight_row(w, r, dst);
}

}  // namespace whale
