// Activation quantization, the block layouts as unsigned integers, and the portable int8 kernel.
#include "kernels/qlinear.h"

#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "kernels/cpu.h"
#include "kernels/linear.h"
#include "kernels/repack.h"
#include "tensor/dtype.h"

namespace whale {

namespace {

std::atomic<bool>& int8_slot() {
  static std::atomic<bool> slot{[] {
    const char* env = std::getenv("WHALE_INT8");
    return !(env && std::string_view(env) == "0");
  }()};
  return slot;
}

float half_at(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}

}  // namespace

bool int8_activations_enabled() {
  return int8_slot().load(std::memory_order_relaxed);
}

void set_int8_activations(bool on) {
  int8_slot().store(on, std::memory_order_relaxed);
}

bool int8_dtype(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || dtype_is_x16(t) || t == DType::Q4_1 ||
         t == DType::Q5_0 || t == DType::Q5_1 || detail::kquant_dtype(t);
}

void quantize_activations(const float* x, int64_t n, int64_t K, int8_t* q, float* d, int32_t* s) {
  if (active_isa() == Isa::Avx512) return detail::quantize_activations_avx512(x, n, K, q, d, s);
  detail::quantize_activations_scalar(x, n, K, q, d, s);
}

namespace detail {

void quantize_activations_scalar(const float* x, int64_t n, int64_t K, int8_t* q, float* d,
                                 int32_t* s) {
  const int64_t nb = K / 32;
  for (int64_t t = 0; t < n; t++)
    for (int64_t b = 0; b < nb; b++) {
      const float* xb = x + t * K + 32 * b;
      float amax = 0.0f;
      for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(xb[j]));  // NaN: ignored
      const float dx = amax / 127.0f, id = dx != 0.0f ? 1.0f / dx : 0.0f;
      int32_t sum = 0;
      int8_t* qb = q + t * K + 32 * b;
      for (int j = 0; j < 32; j++) {
        // Round half to even, as the vector conversions do: adding and removing 1.5 * 2^23
        // leaves the nearest integer for |v| < 2^22 (here |v| <= 127 up to rounding), with no
        // libm call in the loop.
        constexpr float kRound = 12582912.0f;
        const float v = (xb[j] * id + kRound) - kRound;
        qb[j] = int8_t(std::max(-127.0f, std::min(127.0f, v)));
        sum += qb[j];
      }
      d[t * nb + b] = dx;
      s[t * nb + b] = sum;
    }
}

}  // namespace detail

void expand_activation_pairs(const QuantizedActs& a, float* d2, int32_t* ns2, float* ds2) {
  const int64_t nb = a.blocks(), np = nb / 2;
  for (int64_t t = 0; t < a.n; t++)
    for (int64_t p = 0; p < np; p++) {
      const int64_t i = (t * np + p) * 16, b = t * nb + 2 * p;
      for (int j = 0; j < 16; j++) {
        const int64_t bj = b + j / 8;
        d2[i + j] = a.d[bj];
        ns2[i + j] = j % 8 == 0 ? -a.s[bj] : 0;
        ds2[i + j] = j % 8 == 0 ? a.d[bj] * float(a.s[bj]) : 0.0f;
      }
    }
}

namespace detail {

void unpack_block(DType t, const uint8_t* b, UnpackedBlock* out) {
  out->m = 0.0f;
  out->off = 0;
  out->dw = half_at(b);
  switch (t) {
    case DType::Q8_0:
      for (int j = 0; j < 32; j++) out->u[j] = uint8_t(b[2 + j] ^ 0x80);
      out->off = 128;
      return;
    case DType::Q4_0:
    case DType::Q4_1: {
      const uint8_t* qs = b + (t == DType::Q4_0 ? 2 : 4);
      if (t == DType::Q4_1) out->m = half_at(b + 2);
      for (int j = 0; j < 16; j++) {
        out->u[j] = qs[j] & 15;
        out->u[j + 16] = qs[j] >> 4;
      }
      out->off = t == DType::Q4_0 ? 8 : 0;
      return;
    }
    case DType::Q5_0:
    case DType::Q5_1: {
      const int h = t == DType::Q5_0 ? 2 : 4;  // where qh starts
      if (t == DType::Q5_1) out->m = half_at(b + 2);
      uint32_t qh;
      std::memcpy(&qh, b + h, 4);
      const uint8_t* qs = b + h + 4;
      for (int j = 0; j < 16; j++) {
        out->u[j] = uint8_t((qs[j] & 15) | ((qh >> j) & 1) << 4);
        out->u[j + 16] = uint8_t((qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
      }
      out->off = t == DType::Q5_0 ? 16 : 0;
      return;
    }
    default:
      std::memset(out->u, 0, sizeof out->u);
  }
}

void unpack_superblock(DType t, const uint8_t* b, UnpackedSuper* out) {
  std::memset(out->m32, 0, sizeof out->m32);
  out->off = 0;
  if (t == DType::Q6_K) {  // ql[128], qh[64], scales[16] (int8), d
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const float d = half_at(b + 208);
    for (int e = 0; e < 256; e++) {
      const int h = e / 128, s = (e / 32) % 4, l = e % 32;
      const int low = (ql[64 * h + 32 * (s % 2) + l] >> (4 * (s / 2))) & 15;
      const int high = (qh[32 * h + l] >> (2 * s)) & 3;
      out->u[e] = uint8_t(low | high << 4);
    }
    for (int k = 0; k < 16; k++) out->dw16[k] = d * float(int8_t(b[192 + k]));
    out->off = 32;
    return;
  }
  if (t != DType::Q4_K && t != DType::Q5_K) {
    std::memset(out->u, 0, sizeof out->u);
    std::memset(out->dw16, 0, sizeof out->dw16);
    return;
  }
  // Q4_K: d, dmin, scales[12], qs[128]; Q5_K: the same with qh[32] before qs.
  const float d = half_at(b), dmin = half_at(b + 2);
  uint8_t sc[8], mn[8];
  unpack_scale_min_k4(b + 4, sc, mn);
  const bool five = t == DType::Q5_K;
  const uint8_t* qh = b + 16;
  const uint8_t* qs = b + (five ? 48 : 16);
  for (int j = 0; j < 8; j++) {
    for (int l = 0; l < 32; l++) {
      int u = (qs[32 * (j / 2) + l] >> (4 * (j % 2))) & 15;
      if (five) u |= ((qh[l] >> j) & 1) << 4;
      out->u[32 * j + l] = uint8_t(u);
    }
    out->dw16[2 * j] = out->dw16[2 * j + 1] = d * float(sc[j]);
    out->m32[j] = -dmin * float(mn[j]);
  }
}

namespace {

// The k-quants: per super-block and activation block b (32 values, two 16-value weight groups
// g = 0, 1), dx_b (dw16 (sum u xq - off sum xq) per group + m32 sum xq).
void scalar_kquant_rows(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1,
                        float* y) {
  const int64_t nb = x.blocks(), nsb = x.K / 256;
  const size_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
  const size_t sb_bytes = row_bytes / size_t(nsb);
  UnpackedSuper u;
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* row = static_cast<const uint8_t*>(w.data) + size_t(r) * row_bytes;
    for (int64_t t = 0; t < x.n; t++) y[t * w.rows + r] = 0.0f;
    for (int64_t sb = 0; sb < nsb; sb++) {
      unpack_superblock(w.dtype, row + size_t(sb) * sb_bytes, &u);
      for (int64_t t = 0; t < x.n; t++) {
        float acc = 0.0f;
        for (int j = 0; j < 8; j++) {
          const int64_t b = sb * 8 + j;
          const int8_t* xq = x.q + t * x.K + 32 * b;
          float blk = 0.0f;
          for (int g = 0; g < 2; g++) {
            int32_t dot = 0, sum = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
              dot += int32_t(u.u[32 * j + i]) * xq[i];
              sum += xq[i];
            }
            blk += u.dw16[2 * j + g] * float(dot - u.off * sum);
          }
          acc += x.d[t * nb + b] * (blk + u.m32[j] * float(x.s[t * nb + b]));
        }
        y[t * w.rows + r] += acc;
      }
    }
  }
}

void scalar_qlinear_rows(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1,
                         float* y) {
  if (kquant_dtype(w.dtype)) return scalar_kquant_rows(x, w, r0, r1, y);
  const int64_t nb = x.blocks();
  const size_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
  const size_t block_bytes = row_bytes / size_t(nb);
  const DType t_blocks = block_dtype(w.dtype);
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* row = plain_row(w, r);
    for (int64_t t = 0; t < x.n; t++) {
      float acc = 0.0f;
      for (int64_t b = 0; b < nb; b++) {
        UnpackedBlock u;
        unpack_block(t_blocks, row + size_t(b) * block_bytes, &u);
        const int8_t* xq = x.q + t * x.K + 32 * b;
        int32_t dot = 0;
        for (int j = 0; j < 32; j++) dot += int32_t(u.u[j]) * xq[j];
        const int32_t xs = x.s[t * nb + b];
        acc += x.d[t * nb + b] * (u.dw * float(dot - u.off * xs) + u.m * float(xs));
      }
      y[t * w.rows + r] = acc;
    }
  }
}

}  // namespace

const QLinearRows kQLinearScalar = scalar_qlinear_rows;

void qlinear_x16_via_plain(QLinearRows kernel, const QuantizedActs& x, const WeightRef& w,
                           int64_t r0, int64_t r1, float* y) {
  const size_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
  // One group's rows in the GGML layout (bytes) and its outputs, in per-thread buffers.
  float* buf = thread_scratch(2, int64_t((kX16Rows * row_bytes + 3) / 4) + kX16Rows * x.n);
  uint8_t* rows = reinterpret_cast<uint8_t*>(buf);
  float* out = buf + (kX16Rows * row_bytes + 3) / 4;
  WeightRef plain = w;
  plain.dtype = block_dtype(w.dtype);
  plain.rows = kX16Rows;
  plain.data = rows;
  for (int64_t g0 = r0 / kX16Rows * kX16Rows; g0 < r1; g0 += kX16Rows) {
    const int64_t a = g0 > r0 ? g0 : r0, b = g0 + kX16Rows < r1 ? g0 + kX16Rows : r1;
    for (int64_t r = a; r < b; r++)
      unpack_x16_row(w.dtype, static_cast<const uint8_t*>(w.data), w.cols, r,
                     rows + size_t(r - g0) * row_bytes);
    kernel(x, plain, a - g0, b - g0, out);
    for (int64_t t = 0; t < x.n; t++)
      for (int64_t r = a; r < b; r++) y[t * w.rows + r] = out[t * kX16Rows + r - g0];
  }
}

QLinearRows active_qlinear() {
  switch (active_isa()) {
    case Isa::Avx512:
      return kQLinearAvx512;
    case Isa::Avx2:
      return kQLinearAvx2;
    case Isa::Scalar:
      break;
  }
  return kQLinearScalar;
}

}  // namespace detail

}  // namespace whale
