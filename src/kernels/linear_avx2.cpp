// AVX2 + FMA + F16C matrix kernels: the same algorithms as linear_avx512.cpp (read that file's
// header comment first) with 8-lane vectors and the smaller 16-register file:
//   GEMV: 4 (n <= 2) or 2 (n = 3, 4) weight rows at a time;
//   GEMM: 16-row packed groups, micro-kernel 6 tokens x 16 rows (12 ymm accumulators).
// AVX2 has no byte/word masked loads, so partial vectors go through a small zero-padded buffer.
// No standard-library templates here (see linear_avx512.cpp).

#include <omp.h>

#include "kernels/cpu.h"
#include "kernels/linear.h"
#include "kernels/simd.h"

namespace whale::detail {
namespace {

constexpr int64_t kB = WeightRef::kBlock;

inline int64_t imin(int64_t a, int64_t b) {
  return a < b ? a : b;
}
inline int64_t imax(int64_t a, int64_t b) {
  return a > b ? a : b;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Copies n (< 8) elements into a zeroed 8-element buffer.
template <class T>
inline void copy_tail(const T* p, int64_t n, T* buf) {
  for (int64_t i = 0; i < 8; i++) buf[i] = i < n ? p[i] : T(0);
}

inline __m256 load_f32_tail(const float* p, int64_t n) {
  float buf[8];
  copy_tail(p, n, buf);
  return _mm256_loadu_ps(buf);
}

inline void store_f32_tail(float* p, int64_t n, __m256 v) {
  float buf[8];
  _mm256_storeu_ps(buf, v);
  for (int64_t i = 0; i < n; i++) p[i] = buf[i];
}

// ---- Loading 8 weights as f32 (load(): for dot products; exact(): the exact value) ----

struct F32W {
  using T = float;
  static constexpr bool kFp8 = false;
  static __m256 load(const T* p) { return _mm256_loadu_ps(p); }
  static __m256 exact(const T* p) { return load(p); }
};

struct Bf16W {
  using T = uint16_t;
  static constexpr bool kFp8 = false;
  static __m256 load(const T* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static __m256 exact(const T* p) { return load(p); }
};

struct F16W {
  using T = uint16_t;
  static constexpr bool kFp8 = false;
  static __m256 load(const T* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
  static __m256 exact(const T* p) { return load(p); }
};

struct Fp8W {
  using T = uint8_t;
  static constexpr bool kFp8 = true;
  static constexpr float kUnscale = 256.0f;  // load() * kUnscale == exact() (non-NaN)
  // fp8 * 2^-8 via an IEEE half (see linear_avx512.cpp).
  static __m256 widen(__m128i b) {
    __m128i h = _mm_slli_epi16(_mm_cvtepi8_epi16(b), 7);
    h = _mm_and_si128(h, _mm_set1_epi16(int16_t(0xBFFF)));
    return _mm256_cvtph_ps(h);
  }
  static __m256 load(const T* p) { return widen(_mm_loadl_epi64((const __m128i*)p)); }
  static __m256 exact(const T* p) {
    const __m128i b = _mm_loadl_epi64((const __m128i*)p);
    const __m128i nan8 =
        _mm_cmpeq_epi8(_mm_or_si128(b, _mm_set1_epi8(char(0x80))), _mm_set1_epi8(-1));
    const __m256 nan = _mm256_castsi256_ps(_mm256_cvtepi8_epi32(nan8));
    const __m256 v = _mm256_mul_ps(widen(b), _mm256_set1_ps(kUnscale));
    return _mm256_blendv_ps(v, _mm256_set1_ps(__builtin_nanf("")), nan);
  }
};

template <class W>
inline __m256 load_tail(const typename W::T* p, int64_t n) {
  typename W::T buf[8];
  copy_tail(p, n, buf);
  return W::load(buf);
}

template <class W>
inline __m256 exact_tail(const typename W::T* p, int64_t n) {
  typename W::T buf[8];
  copy_tail(p, n, buf);
  return W::exact(buf);
}

// Whether any of the n bytes is an FP8 NaN (S.1111.111).
bool fp8_has_nan(const uint8_t* p, int64_t n) {
  const __m256i top = _mm256_set1_epi8(char(0x80));
  __m256i seen = _mm256_setzero_si256();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    seen = _mm256_max_epu8(seen, _mm256_or_si256(_mm256_loadu_si256((const __m256i*)(p + i)), top));
  if (_mm256_movemask_epi8(_mm256_cmpeq_epi8(seen, _mm256_set1_epi8(-1)))) return true;
  for (; i < n; i++)
    if ((p[i] & 0x7f) == 0x7f) return true;
  return false;
}

// ---- Threading ----

int threads_for(int64_t work) {
  return work >= kParallelMinWork ? num_threads() : 1;
}

template <class Fn>
void split_range(int64_t total, int64_t align, int nt, const Fn& fn) {
  const int64_t units = (total + align - 1) / align;
  if (nt > units) nt = int(units);
  if (nt <= 1) {
    fn(int64_t(0), total);
    return;
  }
#pragma omp parallel num_threads(nt)
  {
    const int64_t id = omp_get_thread_num(), cnt = omp_get_num_threads();
    const int64_t per = (units + cnt - 1) / cnt * align;
    const int64_t a = imin(total, id * per), b = imin(total, a + per);
    if (a < b) fn(a, b);
  }
}

// ---- Decode: GEMV ----

template <class W, int R, int N>
void gemv_group(const typename W::T* w, int64_t K, const float* x, float* y, int64_t ldy) {
  __m256 acc[R][N];
  for (int i = 0; i < R; i++)
    for (int t = 0; t < N; t++) acc[i][t] = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= K; c += 8) {
    __m256 xv[N];
    for (int t = 0; t < N; t++) xv[t] = _mm256_loadu_ps(x + t * K + c);
    for (int i = 0; i < R; i++) {
      const __m256 wv = W::load(w + i * K + c);
      for (int t = 0; t < N; t++) acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
    }
  }
  if (c < K) {
    __m256 xv[N];
    for (int t = 0; t < N; t++) xv[t] = load_f32_tail(x + t * K + c, K - c);
    for (int i = 0; i < R; i++) {
      const __m256 wv = load_tail<W>(w + i * K + c, K - c);
      for (int t = 0; t < N; t++) acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
    }
  }
  for (int i = 0; i < R; i++) {
    bool nan = false;
    if constexpr (W::kFp8) nan = fp8_has_nan(w + i * K, K);
    for (int t = 0; t < N; t++) y[t * ldy + i] = nan ? __builtin_nanf("") : hsum(acc[i][t]);
  }
}

template <class W, int N>
void gemv_rows(const typename W::T* w, int64_t nrows, int64_t K, const float* x, float* y,
               int64_t ldy) {
  constexpr int R = N <= 2 ? 4 : 2;
  int64_t i = 0;
  for (; i + R <= nrows; i += R) gemv_group<W, R, N>(w + i * K, K, x, y + i, ldy);
  for (; i < nrows; i++) gemv_group<W, 1, N>(w + i * K, K, x, y + i, ldy);
}

// xs[t][c] = x[t][c] * scale(r, c) * 2^8 (see linear_avx512.cpp).
void scale_activations(const float* x, int64_t n, const WeightRef& w, int64_t r, float* xs) {
  const int64_t K = w.cols;
  for (int64_t c0 = 0; c0 < K; c0 += kB) {
    const float s = fp8_block_scale(w, r, c0) * Fp8W::kUnscale;
    const int64_t c1 = imin(K, c0 + kB);
    for (int64_t t = 0; t < n; t++)
      for (int64_t c = c0; c < c1; c++) xs[t * K + c] = x[t * K + c] * s;
  }
}

// Rows [r0, r1) of the GEMV for N tokens, on the calling thread.
template <class W, int N>
void gemv(const float* x, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  const int64_t rows = w.rows, K = w.cols;
  const auto* base = static_cast<const typename W::T*>(w.data);
  if constexpr (W::kFp8) {
    float* xs = thread_scratch(1, N * K);
    for (int64_t a = r0; a < r1;) {  // one pass per 128-row scale block
      const int64_t b = imin(r1, ((w.row0 + a) / kB + 1) * kB - w.row0);
      scale_activations(x, N, w, a, xs);
      gemv_rows<W, N>(base + a * K, b - a, K, xs, y + a, rows);
      a = b;
    }
  } else {
    gemv_rows<W, N>(base + r0 * K, r1 - r0, K, x, y + r0, rows);
  }
}

// ---- Prefill: GEMM ----

constexpr int kNR = 16;       // weight rows per micro-tile (two ymm)
constexpr int kMT = 6;        // tokens per micro-tile
constexpr int64_t kKC = 256;  // columns per packed panel (a multiple of the 128 scale block)
constexpr int64_t kRT = 128;  // weight rows per packed tile

// In-place transpose of an 8x8 f32 block.
void transpose8(__m256 m[8]) {
  __m256 t[8], u[8];
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(m[i], m[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(m[i], m[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {  // u[i + j]: rows i..i+3 of columns j and j+4
    u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int j = 0; j < 4; j++) {
    m[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
    m[j + 4] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
  }
}

// Packs rows [r0, r0 + nr) (nr <= 16) x columns [k0, k0 + kc) as exact f32 into wp[c * 16 + i].
template <class W>
void pack_group(const WeightRef& w, int64_t r0, int64_t nr, int64_t k0, int64_t kc, float* wp) {
  const auto* base = static_cast<const typename W::T*>(w.data);
  for (int64_t h = 0; h < kNR; h += 8) {
    const int64_t hn = imax(0, imin(8, nr - h));
    for (int64_t c = 0; c < kc; c += 8) {
      const int64_t cn = imin(8, kc - c);
      __m256 m[8];
      for (int64_t i = 0; i < 8; i++) {
        if (i >= hn) {
          m[i] = _mm256_setzero_ps();
          continue;
        }
        const int64_t r = r0 + h + i;
        const auto* p = base + r * w.cols + k0 + c;
        m[i] = cn == 8 ? W::exact(p) : exact_tail<W>(p, cn);
        if constexpr (W::kFp8)
          m[i] = _mm256_mul_ps(m[i], _mm256_set1_ps(fp8_block_scale(w, r, k0 + c)));
      }
      transpose8(m);
      for (int64_t j = 0; j < cn; j++) _mm256_store_ps(wp + (c + j) * kNR + h, m[j]);
    }
  }
}

inline void store_rows(float* y, int64_t nr, __m256 v, bool accumulate) {
  if (nr >= 8) {
    if (accumulate) v = _mm256_add_ps(v, _mm256_loadu_ps(y));
    _mm256_storeu_ps(y, v);
  } else if (nr > 0) {
    if (accumulate) v = _mm256_add_ps(v, load_f32_tail(y, nr));
    store_f32_tail(y, nr, v);
  }
}

template <int MT>
void micro(const float* x, int64_t ldx, const float* wp, int64_t kc, float* y, int64_t ldy,
           int64_t nr, bool accumulate) {
  __m256 a0[MT], a1[MT];
  for (int t = 0; t < MT; t++) a0[t] = a1[t] = _mm256_setzero_ps();
  for (int64_t c = 0; c < kc; c++) {
    const __m256 w0 = _mm256_load_ps(wp + c * kNR), w1 = _mm256_load_ps(wp + c * kNR + 8);
    for (int t = 0; t < MT; t++) {
      const __m256 xb = _mm256_broadcast_ss(x + t * ldx + c);
      a0[t] = _mm256_fmadd_ps(xb, w0, a0[t]);
      a1[t] = _mm256_fmadd_ps(xb, w1, a1[t]);
    }
  }
  for (int t = 0; t < MT; t++) {
    store_rows(y + t * ldy, imin(8, nr), a0[t], accumulate);
    store_rows(y + t * ldy + 8, nr - 8, a1[t], accumulate);
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t,
                         bool);
constexpr MicroFn kMicro[kMT + 1] = {nullptr,  micro<1>, micro<2>, micro<3>,
                                     micro<4>, micro<5>, micro<6>};

// Rows [ra, rb) of the GEMM, on the calling thread.
template <class W>
void gemm(const float* x, int64_t n, const WeightRef& w, int64_t ra, int64_t rb, float* y) {
  const int64_t rows = w.rows, K = w.cols;
  float* wp = thread_scratch(2, kRT * kKC);
  for (int64_t r0 = ra; r0 < rb; r0 += kRT) {
    const int64_t rt = imin(kRT, rb - r0);
    for (int64_t k0 = 0; k0 < K; k0 += kKC) {
      const int64_t kc = imin(kKC, K - k0);
      for (int64_t g = 0; g < rt; g += kNR)
        pack_group<W>(w, r0 + g, imin(kNR, rt - g), k0, kc, wp + g * kKC);
      for (int64_t t0 = 0; t0 < n; t0 += kMT) {
        const int64_t mt = imin(kMT, n - t0);
        for (int64_t g = 0; g < rt; g += kNR)
          kMicro[mt](x + t0 * K + k0, K, wp + g * kKC, kc, y + t0 * rows + r0 + g, rows,
                     imin(kNR, rt - g), k0 > 0);
      }
    }
  }
}

template <class W>
void linear_w(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  switch (n) {
    case 1:
      return gemv<W, 1>(x, w, r0, r1, y);
    case 2:
      return gemv<W, 2>(x, w, r0, r1, y);
    case 3:
      return gemv<W, 3>(x, w, r0, r1, y);
    case 4:
      return gemv<W, 4>(x, w, r0, r1, y);
    default:
      return gemm<W>(x, n, w, r0, r1, y);
  }
}

// ---- linear_t: y[t][c] = sum_r x[t][r] W[r][c] ----

constexpr int64_t kTW = 32;  // output columns per register block (4 ymm)

// Columns [c0, c0 + cw) (cw <= 32; c0 a multiple of 32, so within one scale block), N tokens.
template <class W, int N, bool kTail>
void linear_t_block(const float* x, int64_t ldx, const WeightRef& w, int64_t c0, int64_t cw,
                    float* y) {
  const auto* base = static_cast<const typename W::T*>(w.data);
  __m256 acc[N][4];
  for (int t = 0; t < N; t++)
    for (int v = 0; v < 4; v++) acc[t][v] = _mm256_setzero_ps();
  for (int64_t r = 0; r < w.rows; r++) {
    const auto* p = base + r * w.cols + c0;
    __m256 wv[4];
    for (int v = 0; v < 4; v++)
      wv[v] = kTail ? exact_tail<W>(p + 8 * v, imax(0, imin(8, cw - 8 * v))) : W::exact(p + 8 * v);
    const float s = W::kFp8 ? fp8_block_scale(w, r, c0) : 1.0f;
    for (int t = 0; t < N; t++) {
      const __m256 xb = _mm256_set1_ps(x[t * ldx + r] * s);
      for (int v = 0; v < 4; v++) acc[t][v] = _mm256_fmadd_ps(xb, wv[v], acc[t][v]);
    }
  }
  for (int t = 0; t < N; t++)
    for (int v = 0; v < 4; v++) {
      float* yt = y + t * w.cols + c0 + 8 * v;
      if (kTail)
        store_f32_tail(yt, imax(0, imin(8, cw - 8 * v)), acc[t][v]);
      else
        _mm256_storeu_ps(yt, acc[t][v]);
    }
}

template <class W, int N>
void linear_t_cols(const float* x, int64_t ldx, const WeightRef& w, int64_t c0, int64_t c1,
                   float* y) {
  for (int64_t c = c0; c < c1; c += kTW) {
    if (c1 - c >= kTW)
      linear_t_block<W, N, false>(x, ldx, w, c, kTW, y);
    else
      linear_t_block<W, N, true>(x, ldx, w, c, c1 - c, y);
  }
}

template <class W>
void linear_t_w(const float* x, int64_t n, const WeightRef& w, float* y) {
  const int64_t ldx = w.rows;
  split_range(w.cols, kTW, threads_for(n * w.rows * w.cols), [&](int64_t c0, int64_t c1) {
    int64_t t = 0;
    for (; t + 2 <= n; t += 2) linear_t_cols<W, 2>(x + t * ldx, ldx, w, c0, c1, y + t * w.cols);
    if (t < n) linear_t_cols<W, 1>(x + t * ldx, ldx, w, c0, c1, y + t * w.cols);
  });
}

// ---- weight_row ----

template <class W>
void weight_row_w(const WeightRef& w, int64_t r, float* dst) {
  const auto* p = static_cast<const typename W::T*>(w.data) + r * w.cols;
  for (int64_t c = 0; c < w.cols; c += 8) {
    const int64_t cn = imin(8, w.cols - c);
    __m256 v = cn == 8 ? W::exact(p + c) : exact_tail<W>(p + c, cn);
    if constexpr (W::kFp8) v = _mm256_mul_ps(v, _mm256_set1_ps(fp8_block_scale(w, r, c)));
    if (cn == 8)
      _mm256_storeu_ps(dst + c, v);
    else
      store_f32_tail(dst + c, cn, v);
  }
}

// ---- dtype dispatch ----

void linear_rows_avx2(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1,
                      float* y) {
  switch (w.dtype) {
    case DType::F32:
      return linear_w<F32W>(x, n, w, r0, r1, y);
    case DType::BF16:
      return linear_w<Bf16W>(x, n, w, r0, r1, y);
    case DType::F16:
      return linear_w<F16W>(x, n, w, r0, r1, y);
    case DType::F8_E4M3:
      return linear_w<Fp8W>(x, n, w, r0, r1, y);
    default:
      break;  // linear() sends other dtypes to ref::
  }
}

void linear_t_avx2(const float* x, int64_t n, const WeightRef& w, float* y) {
  switch (w.dtype) {
    case DType::F32:
      return linear_t_w<F32W>(x, n, w, y);
    case DType::BF16:
      return linear_t_w<Bf16W>(x, n, w, y);
    case DType::F16:
      return linear_t_w<F16W>(x, n, w, y);
    case DType::F8_E4M3:
      return linear_t_w<Fp8W>(x, n, w, y);
    default:
      return ref::linear_t(x, n, w, y);
  }
}

void weight_row_avx2(const WeightRef& w, int64_t r, float* dst) {
  switch (w.dtype) {
    case DType::F32:
      return weight_row_w<F32W>(w, r, dst);
    case DType::BF16:
      return weight_row_w<Bf16W>(w, r, dst);
    case DType::F16:
      return weight_row_w<F16W>(w, r, dst);
    case DType::F8_E4M3:
      return weight_row_w<Fp8W>(w, r, dst);
    default:
      for (int64_t c = 0; c < w.cols; c++) dst[c] = ref::weight_at(w, r, c);
  }
}

}  // namespace

const LinearKernels kLinearAvx2 = {linear_rows_avx2, linear_t_avx2, weight_row_avx2};

}  // namespace whale::detail
