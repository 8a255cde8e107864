// AVX2 int8 kernels for the 32-value block types and the k-quants (read qlinear.h first).
//
// One weight block (32 values) per ymm. AVX2 has no vpdpbusd: vpmaddubsw multiplies unsigned by
// signed bytes into saturating 16-bit pair sums and vpmaddwd with ones widens them to 32 bits.
// The 4- and 5-bit values (< 32) cannot saturate; Q8_0 uses the signed weights directly with the
// usual sign trick (|w| times x with w's sign, at most 2 * 128 * 127 < 2^15) and no offset.
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

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 16 bytes of nibbles as 32 bytes: low nibbles (values 0..15), then high ones (16..31).
inline __m256i nibbles(const uint8_t* qs) {
  const __m128i v = _mm_loadu_si128((const __m128i*)qs);
  const __m128i m = _mm_set1_epi8(15);
  return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m), _mm_and_si128(v, m));
}

// Byte j = 16 where bit j of qh is set, else 0.
inline __m256i fifth_bits(uint32_t qh) {
  const __m256i spread = _mm256_setr_epi64x(0, 0x0101010101010101, 0x0202020202020202,
                                            0x0303030303030303);  // byte j <- byte j / 8
  __m256i v = _mm256_shuffle_epi8(_mm256_set1_epi32(int(qh)), spread);
  v = _mm256_or_si256(v, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));  // all but bit j % 8
  v = _mm256_cmpeq_epi8(v, _mm256_set1_epi64x(-1));
  return _mm256_and_si256(v, _mm256_set1_epi8(16));
}

// u8 x s8 dot products of 32 bytes, as 8 int32 lanes.
inline __m256i dot_u8s8(__m256i u, __m256i s) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
}

// Each type: block bytes, offset, minimum, and dot(block, xq) as 8 int32 lanes of
// sum_j u_j xq_j (Q8_0: sum_j q_j xq_j, offset 0).
struct Q8_0 {
  static constexpr int kBytes = 34, kOff = 0;
  static constexpr bool kMin = false;
  static __m256i weights(const uint8_t* p) { return _mm256_loadu_si256((const __m256i*)(p + 2)); }
  static __m256i dot(__m256i w, __m256i x) {
    return dot_u8s8(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
  }
};

struct Q4_0 {
  static constexpr int kBytes = 18, kOff = 8;
  static constexpr bool kMin = false;
  static __m256i weights(const uint8_t* p) { return nibbles(p + 2); }
  static __m256i dot(__m256i u, __m256i x) { return dot_u8s8(u, x); }
};

struct Q4_1 {
  static constexpr int kBytes = 20, kOff = 0;
  static constexpr bool kMin = true;
  static __m256i weights(const uint8_t* p) { return nibbles(p + 4); }
  static __m256i dot(__m256i u, __m256i x) { return dot_u8s8(u, x); }
};

struct Q5_0 {
  static constexpr int kBytes = 22, kOff = 16;
  static constexpr bool kMin = false;
  static __m256i weights(const uint8_t* p) {
    return _mm256_or_si256(nibbles(p + 6), fifth_bits(u32_at(p + 2)));
  }
  static __m256i dot(__m256i u, __m256i x) { return dot_u8s8(u, x); }
};

struct Q5_1 {
  static constexpr int kBytes = 24, kOff = 0;
  static constexpr bool kMin = true;
  static __m256i weights(const uint8_t* p) {
    return _mm256_or_si256(nibbles(p + 8), fifth_bits(u32_at(p + 4)));
  }
  static __m256i dot(__m256i u, __m256i x) { return dot_u8s8(u, x); }
};

template <class Q, int N>
void row_tokens(const uint8_t* row, int64_t nb, const QuantizedActs& x, int64_t t0, float* y,
                int64_t ldy) {
  __m256 acc[N];
  float corr[N];
  for (int t = 0; t < N; t++) {
    acc[t] = _mm256_setzero_ps();
    corr[t] = 0.0f;
  }
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* p = row + b * Q::kBytes;
    const __m256i u = Q::weights(p);
    const float dw = half_at(p);
    float c = -float(Q::kOff) * dw;
    if constexpr (Q::kMin) c += half_at(p + 2);
    for (int t = 0; t < N; t++) {
      const int64_t tb = (t0 + t) * nb + b;
      const __m256i xv = _mm256_loadu_si256((const __m256i*)(x.q + (t0 + t) * x.K + 32 * b));
      const __m256 s = _mm256_set1_ps(dw * x.d[tb]);
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(Q::dot(u, xv)), s, acc[t]);
      if constexpr (Q::kOff != 0 || Q::kMin) corr[t] += x.d[tb] * c * float(x.s[tb]);
    }
  }
  for (int t = 0; t < N; t++) y[t * ldy] = hsum(acc[t]) + corr[t];
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

// ---- Many tokens (prefill), the 32-value types: a GEMM with the int32 lanes over 8 rows. ----
//
// The weights of 8 rows are unpacked once into a panel, interleaved by 4 values: for each 4-value
// step k, 8 rows x 4 bytes = one ymm. A token's 4 activations at k are broadcast to all lanes,
// so one vpmaddubsw + one 16-bit add accumulate 32 products for 8 rows; every block (32 values)
// the 16-bit sums are widened (vpmaddwd) and scaled. The operands: for Q8_0, Q4_0, Q5_0 the
// signed weights w = u - offset with the sign trick (|w| times x with w's sign, so no offset
// correction); for Q4_1, Q5_1 the unsigned u times x, plus the minimum m times dx * sum(xq).
// The 16-bit sums stay exact: a pair is at most 2 * max|w| * 127, so Q4_x adds 8 steps (one block)
// before widening, Q5_x 4 and Q8_0 1.

// The panel: u[k][8][4] bytes (k < K / 4), dw[b][8] and m[b][8] (b < K / 32); rows past the
// matrix's end are zero.
struct Panel {
  uint8_t* u;
  float *dw, *m;
};

template <class Q>
constexpr bool kSignedGemm = Q::kOff != 0 || Q::kBytes == 34;  // Q8_0 (offset 0 here), Q4_0, Q5_0

template <class Q>
void fill_panel(const uint8_t* base, size_t row_bytes, int64_t rows, int64_t nb, Panel p) {
  alignas(32) uint8_t v[32];
  for (int64_t i = 0; i < 8; i++)
    for (int64_t b = 0; b < nb; b++) {
      float dw = 0.0f, m = 0.0f;
      if (i < rows) {
        const uint8_t* blk = base + size_t(i) * row_bytes + size_t(b) * Q::kBytes;
        __m256i u = Q::weights(blk);
        if constexpr (Q::kOff != 0) u = _mm256_sub_epi8(u, _mm256_set1_epi8(char(Q::kOff)));
        _mm256_store_si256((__m256i*)v, u);
        dw = half_at(blk);
        if constexpr (Q::kMin) m = half_at(blk + 2);
      } else {
        __builtin_memset(v, 0, 32);
      }
      for (int k = 0; k < 8; k++) __builtin_memcpy(p.u + ((b * 8 + k) * 8 + i) * 4, v + 4 * k, 4);
      p.dw[b * 8 + i] = dw;
      p.m[b * 8 + i] = m;
    }
}

// y[t][0..8) for tokens t0 .. t0 + T: 8 rows' products with T tokens.
template <class Q, int T>
void gemm_tile(const Panel& p, int64_t nb, const QuantizedActs& x, int64_t t0, float* y,
               int64_t ldy) {
  constexpr bool kSigned = kSignedGemm<Q>;
  constexpr int kSteps = Q::kBytes == 34 ? 1 : (Q::kBytes == 22 || Q::kBytes == 24) ? 4 : 8;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 acc[T];
  for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    // The block's 32 values in 8 / kSteps runs of 16-bit sums, widened to 32 bits after each
    // (one run for Q4_x: no 32-bit accumulator, which keeps the tile in registers).
    __m256i i32[T];
    for (int s = 0; s < 8; s += kSteps) {
      __m256i i16[T];
      for (int t = 0; t < T; t++) i16[t] = _mm256_setzero_si256();
      for (int k = s; k < s + kSteps; k++) {
        const __m256i w = _mm256_load_si256((const __m256i*)(p.u + (b * 8 + k) * 32));
        const __m256i a = kSigned ? _mm256_sign_epi8(w, w) : w;
        for (int t = 0; t < T; t++) {
          int32_t x4;
          __builtin_memcpy(&x4, x.q + (t0 + t) * x.K + b * 32 + k * 4, 4);
          __m256i xb = _mm256_set1_epi32(x4);
          if constexpr (kSigned) xb = _mm256_sign_epi8(xb, w);
          i16[t] = _mm256_add_epi16(i16[t], _mm256_maddubs_epi16(a, xb));
        }
      }
      for (int t = 0; t < T; t++) {
        const __m256i wide = _mm256_madd_epi16(i16[t], ones);
        i32[t] = s == 0 ? wide : _mm256_add_epi32(i32[t], wide);
      }
    }
    const __m256 dw = _mm256_load_ps(p.dw + b * 8);
    __m256 m = _mm256_setzero_ps();
    if constexpr (Q::kMin) m = _mm256_load_ps(p.m + b * 8);
    for (int t = 0; t < T; t++) {
      const int64_t tb = (t0 + t) * nb + b;
      const float dx = x.d[tb];
      acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i32[t]), _mm256_mul_ps(dw, _mm256_set1_ps(dx)),
                               acc[t]);
      if constexpr (Q::kMin)
        acc[t] = _mm256_fmadd_ps(m, _mm256_set1_ps(dx * float(x.s[tb])), acc[t]);
    }
  }
  for (int t = 0; t < T; t++) _mm256_storeu_ps(y + t * ldy, acc[t]);
}

template <class Q>
void gemm_q(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  const int64_t nb = x.blocks(), K = x.K;
  const size_t row_bytes = size_t(nb) * Q::kBytes;
  const auto* base = static_cast<const uint8_t*>(w.data);
  // Scratch: the panel (8 K bytes, 32-byte aligned) and 2 x 8 nb floats; T x 8 outputs.
  float* scratch = thread_scratch(3, 2 * K + 16 * nb + 64);
  const Panel p{reinterpret_cast<uint8_t*>(scratch), scratch + 2 * K, scratch + 2 * K + 8 * nb};
  alignas(32) float tile[4 * 8];
  for (int64_t ra = r0; ra < r1; ra += 8) {
    const int64_t rows = r1 - ra < 8 ? r1 - ra : 8;
    fill_panel<Q>(base + size_t(ra) * row_bytes, row_bytes, rows, nb, p);
    for (int64_t t = 0; t < x.n; t += 4) {
      const int64_t T = x.n - t < 4 ? x.n - t : 4;
      const bool direct = rows == 8;  // else through `tile`, then the valid rows
      float* dst = direct ? y + t * w.rows + ra : tile;
      const int64_t ld = direct ? w.rows : 8;
      switch (T) {
        case 4:
          gemm_tile<Q, 4>(p, nb, x, t, dst, ld);
          break;
        case 3:
          gemm_tile<Q, 3>(p, nb, x, t, dst, ld);
          break;
        case 2:
          gemm_tile<Q, 2>(p, nb, x, t, dst, ld);
          break;
        default:
          gemm_tile<Q, 1>(p, nb, x, t, dst, ld);
          break;
      }
      if (!direct)
        for (int64_t j = 0; j < T; j++)
          for (int64_t i = 0; i < rows; i++) y[(t + j) * w.rows + ra + i] = tile[j * 8 + i];
    }
  }
}

template <class Q>
void rows_or_gemm(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  if (x.n > kInt8MaxTokens) return gemm_q<Q>(x, w, r0, r1, y);
  rows_q<Q>(x, w, r0, r1, y);
}

// ---- The k-quants, one 32-value activation block at a time (read qlinear.h). ----

// Q4_K / Q5_K: sub-block j's values: the low (j even) or high nibbles of qs[32 (j / 2) ..), and
// for Q5_K bit j of qh[l] as the fifth bit.
template <bool kFive>
void row_tokens_k4(const uint8_t* row, int64_t nsb, const QuantizedActs& x, int64_t t0, float* y,
                   int64_t ldy, int n) {
  constexpr int kBytes = kFive ? 176 : 144;
  const int64_t nb = x.blocks();
  __m256 acc[4];
  float corr[4];
  for (int t = 0; t < n; t++) {
    acc[t] = _mm256_setzero_ps();
    corr[t] = 0.0f;
  }
  for (int64_t sb = 0; sb < nsb; sb++) {
    const uint8_t* blk = row + sb * kBytes;
    uint8_t sc[8], mn[8];
    unpack_scale_min_k4(blk + 4, sc, mn);
    const float d = half_at(blk), dmin = half_at(blk + 2);
    const uint8_t* qs = blk + (kFive ? 48 : 16);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kFive) qh = _mm256_loadu_si256((const __m256i*)(blk + 16));
    for (int j = 0; j < 8; j++) {
      __m256i u = _mm256_loadu_si256((const __m256i*)(qs + 32 * (j / 2)));
      if (j % 2) u = _mm256_srli_epi16(u, 4);
      u = _mm256_and_si256(u, _mm256_set1_epi8(15));
      if constexpr (kFive) {
        const __m256i bit = _mm256_set1_epi8(char(1 << j));
        const __m256i on = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
        u = _mm256_or_si256(u, _mm256_and_si256(on, _mm256_set1_epi8(16)));
      }
      const float dw = d * float(sc[j]), m = -dmin * float(mn[j]);
      for (int t = 0; t < n; t++) {
        const int64_t tb = (t0 + t) * nb + sb * 8 + j;
        const __m256i xv =
            _mm256_loadu_si256((const __m256i*)(x.q + (t0 + t) * x.K + (sb * 8 + j) * 32));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8s8(u, xv)), _mm256_set1_ps(dw * x.d[tb]),
                                 acc[t]);
        corr[t] += x.d[tb] * m * float(x.s[tb]);
      }
    }
  }
  for (int t = 0; t < n; t++) y[t * ldy] = hsum(acc[t]) + corr[t];
}

// Q6_K: value 128 h + 32 s + l from the low (s < 2) or high nibble of ql[64 h + 32 (s % 2) + l]
// and bits 2s, 2s + 1 of qh[32 h + l]; u - 32 with a scale per 16 values, so the integer lanes
// (4 values each) of the two halves get their own scales and the offset uses the lanes' sums.
void row_tokens_q6k(const uint8_t* row, int64_t nsb, const QuantizedActs& x, int64_t t0, float* y,
                    int64_t ldy, int n) {
  constexpr int kBytes = 210;
  const int64_t nb = x.blocks();
  __m256 acc[4];
  for (int t = 0; t < n; t++) acc[t] = _mm256_setzero_ps();
  for (int64_t sb = 0; sb < nsb; sb++) {
    const uint8_t* blk = row + sb * kBytes;
    const float d = half_at(blk + 208);
    const int8_t* scales = reinterpret_cast<const int8_t*>(blk + 192);
    for (int j = 0; j < 8; j++) {
      const int h = j / 4, s = j % 4;
      __m256i low = _mm256_loadu_si256((const __m256i*)(blk + 64 * h + 32 * (s % 2)));
      if (s >= 2) low = _mm256_srli_epi16(low, 4);
      low = _mm256_and_si256(low, _mm256_set1_epi8(15));
      __m256i high = _mm256_loadu_si256((const __m256i*)(blk + 128 + 32 * h));
      high =
          _mm256_and_si256(_mm256_srl_epi16(high, _mm_cvtsi32_si128(2 * s)), _mm256_set1_epi8(3));
      const __m256i u = _mm256_or_si256(low, _mm256_slli_epi16(high, 4));
      const __m256 w = _mm256_set_m128(_mm_set1_ps(d * float(scales[2 * j + 1])),
                                       _mm_set1_ps(d * float(scales[2 * j])));
      for (int t = 0; t < n; t++) {
        const int64_t tb = (t0 + t) * nb + sb * 8 + j;
        const __m256i xv =
            _mm256_loadu_si256((const __m256i*)(x.q + (t0 + t) * x.K + (sb * 8 + j) * 32));
        const __m256i sum4 = dot_u8s8(_mm256_set1_epi8(1), xv);
        const __m256i dot = _mm256_sub_epi32(dot_u8s8(u, xv), _mm256_slli_epi32(sum4, 5));
        acc[t] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_mul_ps(w, _mm256_set1_ps(x.d[tb])),
                                 acc[t]);
      }
    }
  }
  for (int t = 0; t < n; t++) y[t * ldy] = hsum(acc[t]);
}

void rows_kquant(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  const size_t row_bytes = dtype_row_bytes(w.dtype, w.cols);
  const int64_t nsb = x.K / 256;
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = r0; r < r1; r++) {
    const uint8_t* row = base + size_t(r) * row_bytes;
    for (int64_t t = 0; t < x.n; t += 4) {
      const int n = x.n - t < 4 ? int(x.n - t) : 4;
      float* yt = y + t * w.rows + r;
      if (w.dtype == DType::Q6_K)
        row_tokens_q6k(row, nsb, x, t, yt, w.rows, n);
      else if (w.dtype == DType::Q5_K)
        row_tokens_k4<true>(row, nsb, x, t, yt, w.rows, n);
      else
        row_tokens_k4<false>(row, nsb, x, t, yt, w.rows, n);
    }
  }
}

void qlinear_rows_avx2(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1,
                       float* y) {
  switch (w.dtype) {
    case DType::Q4_0_X16:
    case DType::Q8_0_X16:
      return qlinear_x16_via_plain(qlinear_rows_avx2, x, w, r0, r1, y);
    case DType::Q8_0:
      return rows_or_gemm<Q8_0>(x, w, r0, r1, y);
    case DType::Q4_0:
      return rows_or_gemm<Q4_0>(x, w, r0, r1, y);
    case DType::Q4_1:
      return rows_or_gemm<Q4_1>(x, w, r0, r1, y);
    case DType::Q5_0:
      return rows_or_gemm<Q5_0>(x, w, r0, r1, y);
    case DType::Q5_1:
      return rows_or_gemm<Q5_1>(x, w, r0, r1, y);
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return rows_kquant(x, w, r0, r1, y);
    default:
      return kQLinearScalar(x, w, r0, r1, y);
  }
}

}  // namespace

const QLinearRows kQLinearAvx2 = qlinear_rows_avx2;

}  // namespace whale::detail
