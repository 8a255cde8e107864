// AVX-512 VNNI int8 kernels for the 32-value block types (read qlinear.h first).
//
// Two weight blocks (64 values) are unpacked into one zmm of unsigned bytes in natural order and
// multiplied into each token's 64 quantized activations with one vpdpbusd: 16 int32 lanes, eight
// per block. The lanes are converted to f32 and accumulated with the per-block scale dw * dx
// (lanes 0-7 the first block's, 8-15 the second's); the integer offset and the minimum, which
// only need the activation block's sum, go to a scalar accumulator. A row is unpacked once per
// group of up to four tokens and stays in L1 for the next group.
// No standard-library templates here (see linear_avx512.cpp).

#include "kernels/qlinear.h"
#include "kernels/simd.h"

namespace whale::detail {
namespace {

inline float half_at(const uint8_t* p) {
  uint16_t h;
  __builtin_memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

inline uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

// 32 nibbles of two blocks' 16 bytes each (qs of block 0 at a, block 1 at b) as 64 bytes:
// [a low nibbles, a high nibbles, b low, b high], i.e. both blocks' values in natural order.
inline __m512i nibbles_pair(const uint8_t* a, const uint8_t* b) {
  const __m256i v =
      _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_loadu_si128((const __m128i*)a)),
                              _mm_loadu_si128((const __m128i*)b), 1);
  const __m256i m = _mm256_set1_epi8(15);
  const __m256i lo = _mm256_and_si256(v, m), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), m);
  const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);  // lo0 lo1 hi0 hi1
  return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));               // lo0 hi0 lo1 hi1
}

// Each weight type: block bytes, where qs starts, the offset, whether it has a minimum, and the
// unpacking of two consecutive blocks.
struct Q8_0 {
  static constexpr int kBytes = 34, kOff = 128;
  static constexpr bool kMin = false;
  static __m512i pair(const uint8_t* p) {
    const __m512i v =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(p + 2))),
                           _mm256_loadu_si256((const __m256i*)(p + kBytes + 2)), 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8(char(0x80)));
  }
};

struct Q4_0 {
  static constexpr int kBytes = 18, kOff = 8;
  static constexpr bool kMin = false;
  static __m512i pair(const uint8_t* p) { return nibbles_pair(p + 2, p + kBytes + 2); }
};

struct Q4_1 {
  static constexpr int kBytes = 20, kOff = 0;
  static constexpr bool kMin = true;
  static __m512i pair(const uint8_t* p) { return nibbles_pair(p + 4, p + kBytes + 4); }
};

// The fifth bits: bit j of a block's qh is value j's, so the two qh words form a 64-bit mask
// in the same order as the nibbles.
template <int kQh, int kQs>
inline __m512i five_bit_pair(const uint8_t* p, int bytes) {
  const uint64_t mask = uint64_t(u32_at(p + kQh)) | uint64_t(u32_at(p + bytes + kQh)) << 32;
  const __m512i hi = _mm512_maskz_mov_epi8(__mmask64(mask), _mm512_set1_epi8(16));
  return _mm512_or_si512(nibbles_pair(p + kQs, p + bytes + kQs), hi);
}

struct Q5_0 {
  static constexpr int kBytes = 22, kOff = 16;
  static constexpr bool kMin = false;
  static __m512i pair(const uint8_t* p) { return five_bit_pair<2, 6>(p, kBytes); }
};

struct Q5_1 {
  static constexpr int kBytes = 24, kOff = 0;
  static constexpr bool kMin = true;
  static __m512i pair(const uint8_t* p) { return five_bit_pair<4, 8>(p, kBytes); }
};

// [a x 8, b x 8]
inline __m512 two_scales(float a, float b) {
  return _mm512_mask_broadcastss_ps(_mm512_set1_ps(a), __mmask16(0xFF00), _mm_set_ss(b));
}

// y[t * ldy] = row . token t for t < N; `row` holds nb blocks, nb even.
template <class Q, int N>
void row_tokens(const uint8_t* row, int64_t nb, const QuantizedActs& x, int64_t t0, float* y,
                int64_t ldy) {
  __m512 acc[N];
  float corr[N];
  for (int t = 0; t < N; t++) {
    acc[t] = _mm512_setzero_ps();
    corr[t] = 0.0f;
  }
  const int8_t* xq[N];
  const float* dx[N];
  const int32_t* xs[N];
  for (int t = 0; t < N; t++) {
    xq[t] = x.q + (t0 + t) * x.K;
    dx[t] = x.d + (t0 + t) * nb;
    xs[t] = x.s + (t0 + t) * nb;
  }
  for (int64_t b = 0; b < nb; b += 2) {
    const uint8_t* p = row + b * Q::kBytes;
    const __m512i u = Q::pair(p);
    const float dw0 = half_at(p), dw1 = half_at(p + Q::kBytes);
    // The scalar part per activation block: (m - off * dw) * sum(xq).
    float c0 = -float(Q::kOff) * dw0, c1 = -float(Q::kOff) * dw1;
    if constexpr (Q::kMin) {
      c0 += half_at(p + 2);
      c1 += half_at(p + Q::kBytes + 2);
    }
    for (int t = 0; t < N; t++) {
      const __m512i xv = _mm512_loadu_si512(xq[t] + 32 * b);
      const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, xv);
      const float s0 = dw0 * dx[t][b], s1 = dw1 * dx[t][b + 1];
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), two_scales(s0, s1), acc[t]);
      corr[t] += dx[t][b] * c0 * float(xs[t][b]) + dx[t][b + 1] * c1 * float(xs[t][b + 1]);
    }
  }
  for (int t = 0; t < N; t++) y[t * ldy] = _mm512_reduce_add_ps(acc[t]) + corr[t];
}

template <class Q>
void rows_q(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  const int64_t nb = x.blocks();
  const size_t row_bytes = size_t(nb) * Q::kBytes;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* row = base + size_t(r) * row_bytes;
    int64_t t = 0;
    for (; t + 4 <= x.n; t += 4) row_tokens<Q, 4>(row, nb, x, t, y + t * w.rows + r, w.rows);
    switch (x.n - t) {
      case 3:
        row_tokens<Q, 3>(row, nb, x, t, y + t * w.rows + r, w.rows);
        break;
      case 2:
        row_tokens<Q, 2>(row, nb, x, t, y + t * w.rows + r, w.rows);
        break;
      case 1:
        row_tokens<Q, 1>(row, nb, x, t, y + t * w.rows + r, w.rows);
        break;
      default:
        break;
    }
  }
}

void qlinear_rows_avx512(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1,
                         float* y) {
  // Rows of an odd number of blocks (K = 32 (2k + 1)) are rare (no DeepSeek matrix has one): the
  // portable kernel takes them.
  if (x.blocks() % 2 != 0) return kQLinearScalar(x, w, r0, r1, y);
  switch (w.dtype) {
    case DType::Q8_0:
      return rows_q<Q8_0>(x, w, r0, r1, y);
    case DType::Q4_0:
      return rows_q<Q4_0>(x, w, r0, r1, y);
    case DType::Q4_1:
      return rows_q<Q4_1>(x, w, r0, r1, y);
    case DType::Q5_0:
      return rows_q<Q5_0>(x, w, r0, r1, y);
    case DType::Q5_1:
      return rows_q<Q5_1>(x, w, r0, r1, y);
    default:
      return kQLinearScalar(x, w, r0, r1, y);
  }
}

}  // namespace

const QLinearRows kQLinearAvx512 = qlinear_rows_avx512;

}  // namespace whale::detail
