// AVX-512 matrix kernels (compiled with -mavx512f/bw/vl/dq/bf16/vnni -mfma -mf16c; called only
// when cpu.h says the CPU has them).
//
// Every entry point computes a range of output rows on the calling thread; linear.cpp splits the
// rows of one or many products (linear_many) across threads.
//
// Decode (n <= 4 tokens): a GEMV that streams each weight byte once. Eight (one token) or four
// weight rows at a time are converted to f32 in registers and multiplied into up to four
// activation rows; each row prefetches ahead into the same row of the next group, so short rows
// (small expert matrices) stream as well as long ones.
// Small batches (n <= kSmallN, e.g. a MoE expert's share of a prompt): the same GEMV, with each
// group of rows converted once per chunk of up to 6 tokens (the chunks re-read it from cache).
// Prefill (larger n): a GEMM. A tile of up to 128 weight rows x 256 columns is converted to f32
// once into a per-thread buffer, stored transposed in 32-row groups ([column][32 rows]), and a
// register-blocked micro-kernel (12 tokens x 32 rows = 24 zmm accumulators) reuses it for every
// token.
//
// FP8 E4M3 -> f32: sign-extend each byte to 16 bits and shift left by 7. The sign lands in bit 15
// (a copy in bit 14, cleared with a mask), exponent in bits 13..10 and mantissa in 9..7: an IEEE
// half whose value is exactly fp8 * 2^-8 (the biases are 15 and 7; subnormals map to subnormals).
// vcvtph2ps widens it exactly. The one pattern this gets wrong is NaN (S.1111.111), which has no
// half equivalent here, so it is patched with a mask (exact conversion) or, in the GEMV, detected
// per row (a NaN weight makes the whole output NaN, as in the reference loop). The GEMV uses a
// cheaper variant on 64 bytes at once (fp8x64_even_odd) and folds the 2^8 and the block scale
// into a scaled copy of the activations, so the inner loop is convert + FMA only. On CPUs with
// AVX512_VBMI, FP8 products for n <= kSmallNFp8 use a cheaper, exact table conversion instead
// (fp8x64_lut; NaN needs no special case there).
//
// This file deliberately uses no standard-library templates: an out-of-line copy compiled here
// could be picked by the linker for code that must run on CPUs without AVX-512.

#include <omp.h>

#include "kernels/cpu.h"
#include "kernels/linear.h"
#include "kernels/qlinear.h"
#include "kernels/repack.h"
#include "kernels/simd.h"
#include "tensor/quant.h"

namespace whale::detail {
namespace {

constexpr int64_t kB = WeightRef::kBlock;
// How far ahead of the GEMV's loads each weight row is prefetched. The hardware prefetcher alone
// leaves DRAM latency exposed when four rows are streamed at once (measured: bf16 n=4 14 -> 18
// GB/s, fp8 n=1 12 -> 14 GB/s on one core).
constexpr int64_t kPrefetchBytes = 1024;
constexpr int64_t kPrefetchLut = 1024;
// Up to this many tokens the GEMV-style kernels beat the packed GEMM (measured on Zen 4).
constexpr int64_t kSmallN = 32;
constexpr int64_t kSmallNFp8 = 16;

// Prefetches `ahead` bytes past column c of row i of a group of R rows [R x K] (element size es)
// as if each of the R rows continued into the same row of the next group: with short rows (a
// 512 x 1024 expert matrix) the next group's rows start streaming before they are needed, which
// the hardware prefetcher and a plain "row + distance" prefetch do not do.
inline void prefetch_ahead(const void* w, int64_t i, int64_t c, int64_t K, int64_t R, int64_t es,
                           int64_t ahead) {
  const int64_t row_bytes = K * es;
  int64_t off = c * es + ahead, row = i;
  if (off >= row_bytes) {
    off -= row_bytes;
    row += R;
  }
  _mm_prefetch(static_cast<const char*>(w) + row * row_bytes + off, _MM_HINT_T0);
}

inline int64_t imin(int64_t a, int64_t b) {
  return a < b ? a : b;
}
inline int64_t imax(int64_t a, int64_t b) {
  return a > b ? a : b;
}
// Keeps v in a register: GCC otherwise folds the load behind v into every FMA that uses it, so
// an activation vector shared by R weight rows is loaded R times, which made the multi-token
// kernels load-bound (measured: 8 tokens x 2 rows 24 -> 36-42 GMAC/s on one core).
inline void in_register(__m512& v) {
  __asm__("" : "+v"(v));
}

// Mask of the first n (0..16) lanes.
inline __mmask16 lanes(int64_t n) {
  return __mmask16((1u << n) - 1u);
}

// ---- Loading 16 weights as f32 ----
// load(): the value used in dot products; exact(): the exact f32 value (differs only for FP8,
// where load() is the value times 2^-8 and NaN is not handled).

struct F32W {
  using T = float;
  static constexpr bool kFp8 = false, kBf16 = false;
  static __m512 load(const T* p) { return _mm512_loadu_ps(p); }
  static __m512 load(const T* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
  static __m512 exact(const T* p) { return load(p); }
  static __m512 exact(const T* p, __mmask16 m) { return load(p, m); }
};

struct Bf16W {
  using T = uint16_t;
  static constexpr bool kFp8 = false, kBf16 = true;
  // bf16 is the top half of an f32.
  static __m512 widen(__m256i h) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  static __m512 load(const T* p) { return widen(_mm256_loadu_si256((const __m256i*)p)); }
  static __m512 load(const T* p, __mmask16 m) { return widen(_mm256_maskz_loadu_epi16(m, p)); }
  static __m512 exact(const T* p) { return load(p); }
  static __m512 exact(const T* p, __mmask16 m) { return load(p, m); }
};

struct F16W {
  using T = uint16_t;
  static constexpr bool kFp8 = false, kBf16 = false;
  static __m512 load(const T* p) { return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i*)p)); }
  static __m512 load(const T* p, __mmask16 m) {
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
  }
  static __m512 exact(const T* p) { return load(p); }
  static __m512 exact(const T* p, __mmask16 m) { return load(p, m); }
};

struct Fp8W {
  using T = uint8_t;
  static constexpr bool kFp8 = true, kBf16 = false;
  static constexpr float kUnscale = 256.0f;  // load() * kUnscale == exact() (non-NaN)
  static __m512 widen(__m128i b) {
    __m256i h = _mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7);
    h = _mm256_and_si256(h, _mm256_set1_epi16(int16_t(0xBFFF)));
    return _mm512_cvtph_ps(h);
  }
  static __m512 fix(__m128i b) {
    const __mmask16 nan =
        _mm_cmpeq_epi8_mask(_mm_or_si128(b, _mm_set1_epi8(char(0x80))), _mm_set1_epi8(-1));
    const __m512 v = _mm512_mul_ps(widen(b), _mm512_set1_ps(kUnscale));
    return _mm512_mask_mov_ps(v, nan, _mm512_set1_ps(__builtin_nanf("")));
  }
  static __m512 load(const T* p) { return widen(_mm_loadu_si128((const __m128i*)p)); }
  static __m512 load(const T* p, __mmask16 m) { return widen(_mm_maskz_loadu_epi8(m, p)); }
  static __m512 exact(const T* p) { return fix(_mm_loadu_si128((const __m128i*)p)); }
  static __m512 exact(const T* p, __mmask16 m) { return fix(_mm_maskz_loadu_epi8(m, p)); }
};

// Whether any of the n bytes is an FP8 NaN (S.1111.111).
bool fp8_has_nan(const uint8_t* p, int64_t n) {
  for (int64_t i = 0; i < n; i++)
    if ((p[i] & 0x7f) == 0x7f) return true;
  return false;
}

// ---- Threading ----

int threads_for(int64_t work) {
  return work >= kParallelMinWork ? num_threads() : 1;
}

// Calls fn(begin, end) on `nt` threads for contiguous ranges of [0, total) whose boundaries are
// multiples of `align`.
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

// ---- Decode: GEMV for N = 1..4 tokens ----

// 64 FP8 weights as four f32 vectors holding 2^-8 times elements {0, 2, .., 30}, {32, .., 62},
// {1, 3, .., 31} and {33, .., 63} (NaN not handled). Each 16-bit word holds an even element in
// its low byte and an odd one in its high byte; an arithmetic shift right by 1 and a mask turn
// the high byte into the half S.0EEEE.MMM0000000 (see the file comment), and shifting the low
// byte up first does the same for it. This costs half the instructions of widening byte by byte.
inline void fp8x64_even_odd(__m512i b, __m512 out[4]) {
  const __m512i mask = _mm512_set1_epi16(int16_t(0xBF80));
  const __m512i odd = _mm512_and_si512(_mm512_srai_epi16(b, 1), mask);
  const __m512i even = _mm512_and_si512(_mm512_srai_epi16(_mm512_slli_epi16(b, 8), 1), mask);
  out[0] = _mm512_cvtph_ps(_mm512_castsi512_si256(even));
  out[1] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(even, 1));
  out[2] = _mm512_cvtph_ps(_mm512_castsi512_si256(odd));
  out[3] = _mm512_cvtph_ps(_mm512_extracti64x4_epi64(odd, 1));
}

// The activation order fp8x64_even_odd produces: position j of a 64-block holds element
// kEvenOdd(j).
constexpr int kEvenOdd(int j) {
  return j < 32 ? 2 * j : 2 * (j - 32) + 1;
}

// y[t * ldy + i] = sum_c x[t * K + c] * w[i * K + c] for i < R rows, t < N tokens.
// For FP8, x holds scaled activations (scale_activations): even/odd order in the first K/64*64
// columns, natural order after. Each (row, token) sum is split over A accumulators so that
// enough independent FMA chains are in flight to hide the FMA latency.
template <class W, int R, int N>
void gemv_group(const typename W::T* w, int64_t K, const float* x, float* y, int64_t ldy) {
  constexpr int A = R * N <= 4 ? 4 : R * N <= 8 ? 2 : 1;
  __m512 acc[R][N][A];
  for (int i = 0; i < R; i++)
    for (int t = 0; t < N; t++)
      for (int a = 0; a < A; a++) acc[i][t][a] = _mm512_setzero_ps();
  // Columns [c, c + 16) (the first `m` of them) into accumulator a.
  auto step = [&](int64_t c, int a, __mmask16 m, bool full) {
    __m512 xv[N];
    for (int t = 0; t < N; t++) {
      xv[t] = full ? _mm512_loadu_ps(x + t * K + c) : _mm512_maskz_loadu_ps(m, x + t * K + c);
      if (R > 1) in_register(xv[t]);
    }
    for (int i = 0; i < R; i++) {
      const __m512 wv = full ? W::load(w + i * K + c) : W::load(w + i * K + c, m);
      for (int t = 0; t < N; t++) acc[i][t][a] = _mm512_fmadd_ps(wv, xv[t], acc[i][t][a]);
    }
  };
  int64_t c = 0;
  bool nan[R] = {};
  if constexpr (W::kFp8) {
    // Per row, the byte-wise max of (byte | 0x80) reaches 0xff iff some byte is a NaN.
    __m512i seen[R];
    for (int i = 0; i < R; i++) seen[i] = _mm512_setzero_si512();
    const __m512i top = _mm512_set1_epi8(char(0x80));
    for (; c + 64 <= K; c += 64) {
      __m512 xv[N][4];
      for (int t = 0; t < N; t++)
        for (int j = 0; j < 4; j++) {
          xv[t][j] = _mm512_loadu_ps(x + t * K + c + 16 * j);
          if (R > 1) in_register(xv[t][j]);
        }
      for (int i = 0; i < R; i++) {
        const __m512i b = _mm512_loadu_si512(w + i * K + c);
        prefetch_ahead(w, i, c, K, R, 1, kPrefetchBytes);
        seen[i] = _mm512_max_epu8(seen[i], _mm512_or_si512(b, top));
        __m512 wv[4];
        fp8x64_even_odd(b, wv);
        for (int j = 0; j < 4; j++)
          for (int t = 0; t < N; t++)
            acc[i][t][j % A] = _mm512_fmadd_ps(wv[j], xv[t][j], acc[i][t][j % A]);
      }
    }
    for (int i = 0; i < R; i++)
      nan[i] = _mm512_cmpeq_epi8_mask(seen[i], _mm512_set1_epi8(-1)) != 0 ||
               fp8_has_nan(w + i * K + c, K - c);
  } else {
    for (; c + 16 * A <= K; c += 16 * A) {
      if (c % (64 / sizeof(typename W::T)) == 0)
        for (int i = 0; i < R; i++)
          prefetch_ahead(w, i, c, K, R, sizeof(typename W::T), kPrefetchBytes);
      for (int a = 0; a < A; a++) step(c + 16 * a, a, 0xffff, true);
    }
  }
  for (; c + 16 <= K; c += 16) step(c, 0, 0xffff, true);
  if (c < K) step(c, 0, lanes(K - c), false);
  for (int i = 0; i < R; i++)
    for (int t = 0; t < N; t++) {
      __m512 sum = acc[i][t][0];
      for (int a = 1; a < A; a++) sum = _mm512_add_ps(sum, acc[i][t][a]);
      y[t * ldy + i] = nan[i] ? __builtin_nanf("") : _mm512_reduce_add_ps(sum);
    }
}

template <class W, int N>
void gemv_rows(const typename W::T* w, int64_t nrows, int64_t K, const float* x, float* y,
               int64_t ldy) {
  // One token: 8 rows stream at once (more DRAM streams in flight; 8 accumulator chains).
  constexpr int R = N == 1 && !W::kFp8 ? 8 : 4;
  int64_t i = 0;
  for (; i + R <= nrows; i += R) gemv_group<W, R, N>(w + i * K, K, x, y + i, ldy);
  for (; i < nrows; i++) gemv_group<W, 1, N>(w + i * K, K, x, y + i, ldy);
}

// xs[t][c] = x[t][c] * scale(r, c) * 2^8: the FP8 block scales (constant over the 128-row block
// of row r) and the 2^-8 of the FP8 conversion folded into the activations, in the order
// gemv_group expects (even/odd within whole 64-column blocks).
void scale_activations(const float* x, int64_t n, const WeightRef& w, int64_t r, float* xs) {
  const int64_t K = w.cols, K64 = K / 64 * 64;
  // Permutation indices: vector j of a 64-block takes elements kEvenOdd(16j .. 16j + 15), all
  // from the same half of the block (0..31 or 32..63), as indices into that half.
  __m512i perm[4];
  for (int j = 0; j < 4; j++) {
    alignas(64) int32_t idx[16];
    for (int l = 0; l < 16; l++) idx[l] = kEvenOdd(16 * j + l) % 32;
    perm[j] = _mm512_load_si512(idx);
  }
  for (int64_t c0 = 0; c0 < K; c0 += kB) {
    const __m512 s = _mm512_set1_ps(fp8_block_scale(w, r, c0) * Fp8W::kUnscale);
    const int64_t c1 = imin(K, c0 + kB);
    for (int64_t t = 0; t < n; t++) {
      const float* xt = x + t * K;
      float* st = xs + t * K;
      int64_t c = c0;
      for (; c + 64 <= imin(c1, K64); c += 64) {
        const __m512 a0 = _mm512_loadu_ps(xt + c), a1 = _mm512_loadu_ps(xt + c + 16);
        const __m512 b0 = _mm512_loadu_ps(xt + c + 32), b1 = _mm512_loadu_ps(xt + c + 48);
        for (int j = 0; j < 4; j++) {
          const bool first_half = kEvenOdd(16 * j) < 32;  // vectors 0 and 2
          const __m512 v = first_half ? _mm512_permutex2var_ps(a0, perm[j], a1)
                                      : _mm512_permutex2var_ps(b0, perm[j], b1);
          _mm512_storeu_ps(st + c + 16 * j, _mm512_mul_ps(v, s));
        }
      }
      for (; c < c1; c += 16) {
        const __mmask16 m = lanes(imin(16, c1 - c));
        _mm512_mask_storeu_ps(st + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xt + c), s));
      }
    }
  }
}

// Up to 6 tokens x 4 rows (24 accumulators) per pass over the weights, for the small-n path.
constexpr int kMaxChunk = 6;

// Calls fn(t0, count) for chunks of at most `most` tokens, as equal as possible. Depends on n
// only, so each output's summation order does too.
template <class Fn>
void token_chunks(int64_t n, int64_t most, const Fn& fn) {
  const int64_t chunks = (n + most - 1) / most;
  for (int64_t k = 0, t0 = 0; k < chunks; k++) {
    const int64_t cnt = (n - t0) / (chunks - k);
    fn(t0, cnt);
    t0 += cnt;
  }
}

template <class W, int R>
void gemv_group_n(const typename W::T* w, int64_t K, const float* x, int64_t n, float* y,
                  int64_t ldy) {
  switch (n) {
    case 1:
      return gemv_group<W, R, 1>(w, K, x, y, ldy);
    case 2:
      return gemv_group<W, R, 2>(w, K, x, y, ldy);
    case 3:
      return gemv_group<W, R, 3>(w, K, x, y, ldy);
    case 4:
      return gemv_group<W, R, 4>(w, K, x, y, ldy);
    case 5:
      return gemv_group<W, R, 5>(w, K, x, y, ldy);
    default:
      return gemv_group<W, R, 6>(w, K, x, y, ldy);
  }
}

// Small n (5 .. kSmallN tokens): each group of 4 weight rows is converted in registers once per
// chunk of <= 6 tokens; the chunks after the first re-read the rows from L1/L2, not DRAM. Cheaper
// than the GEMM's packing when there are too few tokens to amortise it.
template <class W>
void gemv_multi(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  const int64_t rows = w.rows, K = w.cols;
  const auto* base = static_cast<const typename W::T*>(w.data);
  int64_t i = r0;
  for (; i + 4 <= r1; i += 4)
    token_chunks(n, kMaxChunk, [&](int64_t t0, int64_t cnt) {
      gemv_group_n<W, 4>(base + i * K, K, x + t0 * K, cnt, y + t0 * rows + i, rows);
    });
  for (; i < r1; i++)
    token_chunks(n, kMaxChunk, [&](int64_t t0, int64_t cnt) {
      gemv_group_n<W, 1>(base + i * K, K, x + t0 * K, cnt, y + t0 * rows + i, rows);
    });
}

// ---- BF16, 5 .. kSmallN tokens: even/odd conversion, 8 tokens per pass ----
//
// 32 bf16 weights loaded as 16 dwords hold the even elements in the low halves and the odd ones
// in the high halves: (dword << 16) is the f32 of each even element, (dword & 0xFFFF0000) of each
// odd one, one instruction per 16 weights instead of two (widen + shift). The activations are
// copied once per call into the matching order (xs: per 32-column block, the 16 even columns,
// then the 16 odd ones), so each group of 3 weight rows is converted once per chunk of up to 8
// tokens and the 3 x 8 (row, token) sums stay in registers. This is the output head and the
// dense projections of a batched decoding step, where gemv_multi (4 rows x 4 tokens, widen +
// shift, each row converted twice for 8 tokens) was compute-bound: the 1B model's head
// [129280 x 1024] for 8 tokens took 18-20 ms against 13-15 ms for one token; 16-18 ms now
// (2 threads, Xeon 2026-12-02; one thread from L2, 31 -> 40-50 GMAC/s).

constexpr int64_t kEoChunk = 8;  // tokens per pass
constexpr int64_t kEoRows = 3;   // weight rows per pass
constexpr int64_t kPrefetchEo = 2048;

// xs[t] = x[t] in even/odd order within whole 32-column blocks, natural order after.
void bf16_eo_activations(const float* x, int64_t n, int64_t K, float* xs) {
  alignas(64) int32_t ev[16], od[16];
  for (int j = 0; j < 16; j++) ev[j] = 2 * j, od[j] = 2 * j + 1;
  const __m512i ie = _mm512_load_si512(ev), io = _mm512_load_si512(od);
  for (int64_t t = 0; t < n; t++) {
    const float* xt = x + t * K;
    float* st = xs + t * K;
    int64_t c = 0;
    for (; c + 32 <= K; c += 32) {
      const __m512 a = _mm512_loadu_ps(xt + c), b = _mm512_loadu_ps(xt + c + 16);
      _mm512_storeu_ps(st + c, _mm512_permutex2var_ps(a, ie, b));
      _mm512_storeu_ps(st + c + 16, _mm512_permutex2var_ps(a, io, b));
    }
    for (; c < K; c++) st[c] = xt[c];
  }
}

// y[t * ldy + i] = sum_c xs[t * K + c] * w[i * K + c] for i < R rows, t < N tokens.
template <int R, int N>
void gemv_group_bf16(const uint16_t* w, int64_t K, const float* xs, float* y, int64_t ldy) {
  __m512 acc[R][N];
  for (int i = 0; i < R; i++)
    for (int t = 0; t < N; t++) acc[i][t] = _mm512_setzero_ps();
  const __m512i top = _mm512_set1_epi32(int(0xFFFF0000u));
  int64_t c = 0;
  for (; c + 32 <= K; c += 32) {
    __m512 we[R], wo[R];
    for (int i = 0; i < R; i++) {
      prefetch_ahead(w, i, c, K, R, 2, kPrefetchEo);
      const __m512i v = _mm512_loadu_si512(w + i * K + c);
      we[i] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
      wo[i] = _mm512_castsi512_ps(_mm512_and_si512(v, top));
    }
    for (int t = 0; t < N; t++) {
      __m512 xe = _mm512_loadu_ps(xs + t * K + c), xo = _mm512_loadu_ps(xs + t * K + c + 16);
      in_register(xe);
      in_register(xo);
      for (int i = 0; i < R; i++) {
        acc[i][t] = _mm512_fmadd_ps(we[i], xe, acc[i][t]);
        acc[i][t] = _mm512_fmadd_ps(wo[i], xo, acc[i][t]);
      }
    }
  }
  for (; c < K; c += 16) {  // tail: natural order
    const __mmask16 m = lanes(imin(16, K - c));
    __m512 wv[R];
    for (int i = 0; i < R; i++) wv[i] = Bf16W::load(w + i * K + c, m);
    for (int t = 0; t < N; t++) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, xs + t * K + c);
      for (int i = 0; i < R; i++) acc[i][t] = _mm512_fmadd_ps(wv[i], xv, acc[i][t]);
    }
  }
  for (int i = 0; i < R; i++)
    for (int t = 0; t < N; t++) y[t * ldy + i] = _mm512_reduce_add_ps(acc[i][t]);
}

// gemv_group_bf16<R, cnt> for 1 <= cnt <= NMax.
template <int R, int NMax>
void bf16_group(int64_t cnt, const uint16_t* w, int64_t K, const float* xs, float* y, int64_t ldy) {
  if constexpr (NMax > 1) {
    if (cnt < NMax) return bf16_group<R, NMax - 1>(cnt, w, K, xs, y, ldy);
  }
  gemv_group_bf16<R, NMax>(w, K, xs, y, ldy);
}

void gemv_bf16_multi(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1,
                     float* y) {
  const int64_t rows = w.rows, K = w.cols;
  const auto* base = static_cast<const uint16_t*>(w.data);
  float* xs = thread_scratch(1, n * K);
  bf16_eo_activations(x, n, K, xs);
  constexpr int R = int(kEoRows);
  int64_t i = r0;
  for (; i + R <= r1; i += R)
    token_chunks(n, kEoChunk, [&](int64_t t0, int64_t cnt) {
      bf16_group<R, kEoChunk>(cnt, base + i * K, K, xs + t0 * K, y + t0 * rows + i, rows);
    });
  for (; i < r1; i++)
    token_chunks(n, kEoChunk, [&](int64_t t0, int64_t cnt) {
      bf16_group<1, kEoChunk>(cnt, base + i * K, K, xs + t0 * K, y + t0 * rows + i, rows);
    });
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

// ---- FP8 GEMV with a conversion table (AVX512_VBMI) ----
//
// vpermi2b looks up 64 bytes at once in a 128-entry table indexed by the low 7 bits. Two lookups
// give the high and low bytes of each weight's bf16 (fp8_bf16_table(): every E4M3 value is exact
// in bf16, and the NaN codes map to a NaN, so NaN weights propagate through the FMAs with no
// extra test), the sign is merged into the high byte, and interleaving the two makes 16-bit
// bf16 words; a bf16 in the high half of a 32-bit lane IS the f32 (mask the low half), the one in
// the low half becomes it after a shift by 16. Nine cheap instructions per 64 weights, no
// vcvtph2ps. The block scale is folded into a copy of the activations, permuted into the order
// the conversion produces (kLutOrder).

#define WHALE_VBMI __attribute__((target("avx512vbmi")))

struct Fp8Lut {
  __m512i hi0, hi1, lo0, lo1;
};

Fp8Lut load_fp8_lut() {
  const uint8_t* t = fp8_bf16_table();
  return {_mm512_loadu_si512(t), _mm512_loadu_si512(t + 64), _mm512_loadu_si512(t + 128),
          _mm512_loadu_si512(t + 192)};
}

// Position p of a converted 64-block (vector p / 16, 128-bit lane (p / 4) % 4, dword p % 4)
// holds element kLutOrder(p) of the block.
constexpr int kLutOrder(int p) {
  const int j = p / 16, lane = (p / 4) % 4, m = p % 4;
  return 16 * lane + 2 * m + (j & 1) + 8 * (j >> 1);
}

// 64 FP8 weights (exact f32, NaN kept) in kLutOrder.
WHALE_VBMI inline void fp8x64_lut(__m512i b, const Fp8Lut& t, __m512 out[4]) {
  __m512i hi = _mm512_permutex2var_epi8(t.hi0, b, t.hi1);
  hi = _mm512_ternarylogic_epi32(hi, b, _mm512_set1_epi8(char(0x80)), 0xF8);  // hi | (b & 0x80)
  const __m512i lo = _mm512_permutex2var_epi8(t.lo0, b, t.lo1);
  const __m512i w0 = _mm512_unpacklo_epi8(lo, hi), w1 = _mm512_unpackhi_epi8(lo, hi);
  const __m512i top = _mm512_set1_epi32(int(0xFFFF0000u));
  out[0] = _mm512_castsi512_ps(_mm512_slli_epi32(w0, 16));
  out[1] = _mm512_castsi512_ps(_mm512_and_si512(w0, top));
  out[2] = _mm512_castsi512_ps(_mm512_slli_epi32(w1, 16));
  out[3] = _mm512_castsi512_ps(_mm512_and_si512(w1, top));
}

// y[t * ldy + i] = sum_c xs[t * K + c] * w[i * K + c], i < R, t < N; xs from scale_lut. All R
// rows of a 64-column block are converted first, then each activation vector is loaded once and
// used for the R rows.
template <int R, int N>
WHALE_VBMI void gemv_group_lut(const uint8_t* w, int64_t K, const float* x, float* y, int64_t ldy,
                               const Fp8Lut& lut) {
  // Decode (N <= 3): the block's activations stay in registers and each row is converted and
  // used at once, so 4-8 rows stream together. Otherwise all R rows of the block are converted
  // first and each activation vector is loaded once for the R rows.
  constexpr bool kXFirst = N <= 3;
  constexpr int A = R * N >= 8 ? 1 : R * N >= 4 ? 2 : 4;  // ~8 independent FMA chains
  __m512 acc[R][N][A];
  for (int i = 0; i < R; i++)
    for (int t = 0; t < N; t++)
      for (int a = 0; a < A; a++) acc[i][t][a] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 64 <= K; c += 64) {
    if constexpr (kXFirst) {
      __m512 xv[N][4];
      for (int t = 0; t < N; t++)
        for (int j = 0; j < 4; j++) {
          xv[t][j] = _mm512_loadu_ps(x + t * K + c + 16 * j);
          if (R > 1) in_register(xv[t][j]);
        }
      for (int i = 0; i < R; i++) {
        prefetch_ahead(w, i, c, K, R, 1, kPrefetchLut);
        __m512 wv[4];
        fp8x64_lut(_mm512_loadu_si512(w + i * K + c), lut, wv);
        for (int j = 0; j < 4; j++)
          for (int t = 0; t < N; t++)
            acc[i][t][j % A] = _mm512_fmadd_ps(wv[j], xv[t][j], acc[i][t][j % A]);
      }
    } else {
      __m512 wv[R][4];
      for (int i = 0; i < R; i++) {
        prefetch_ahead(w, i, c, K, R, 1, kPrefetchLut);
        fp8x64_lut(_mm512_loadu_si512(w + i * K + c), lut, wv[i]);
      }
      for (int t = 0; t < N; t++)
        for (int j = 0; j < 4; j++) {
          __m512 xv = _mm512_loadu_ps(x + t * K + c + 16 * j);
          if (R > 1) in_register(xv);
          for (int i = 0; i < R; i++)
            acc[i][t][j % A] = _mm512_fmadd_ps(wv[i][j], xv, acc[i][t][j % A]);
        }
    }
  }
  for (; c < K; c += 16) {  // tail: natural order, exact conversion
    const __mmask16 m = lanes(imin(16, K - c));
    __m512 wv[R];
    for (int i = 0; i < R; i++) wv[i] = Fp8W::exact(w + i * K + c, m);
    for (int t = 0; t < N; t++) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + t * K + c);
      for (int i = 0; i < R; i++) acc[i][t][0] = _mm512_fmadd_ps(wv[i], xv, acc[i][t][0]);
    }
  }
  for (int i = 0; i < R; i++)
    for (int t = 0; t < N; t++) {
      __m512 sum = acc[i][t][0];
      for (int a = 1; a < A; a++) sum = _mm512_add_ps(sum, acc[i][t][a]);
      y[t * ldy + i] = _mm512_reduce_add_ps(sum);
    }
}

constexpr int kLutChunk = 8;  // tokens per pass

// gemv_group_lut<R, cnt> for 1 <= cnt <= NMax (instantiating only those).
template <int R, int NMax>
WHALE_VBMI void lut_group(int64_t cnt, const uint8_t* w, int64_t K, const float* x, float* y,
                          int64_t ldy, const Fp8Lut& lut) {
  if constexpr (NMax > 1) {
    if (cnt < NMax) return lut_group<R, NMax - 1>(cnt, w, K, x, y, ldy, lut);
  }
  gemv_group_lut<R, NMax>(w, K, x, y, ldy, lut);
}

// xs[t][c] = x[t][c] * scale(r, c), in kLutOrder within whole 64-column blocks.
WHALE_VBMI void scale_lut(const float* x, int64_t n, const WeightRef& w, int64_t r, float* xs) {
  const int64_t K = w.cols, K64 = K / 64 * 64;
  // Vector j takes lanes 0-1 from elements 0..31 and lanes 2-3 from 32..63.
  __m512i idx[4];
  for (int j = 0; j < 4; j++) {
    alignas(64) int32_t v[16];
    for (int q = 0; q < 16; q++) v[q] = kLutOrder(16 * j + q) % 32;
    idx[j] = _mm512_load_si512(v);
  }
  for (int64_t c0 = 0; c0 < K; c0 += kB) {
    const __m512 s = _mm512_set1_ps(fp8_block_scale(w, r, c0));
    const int64_t c1 = imin(K, c0 + kB);
    for (int64_t t = 0; t < n; t++) {
      const float* xt = x + t * K;
      float* st = xs + t * K;
      int64_t c = c0;
      for (; c + 64 <= imin(c1, K64); c += 64) {
        const __m512 a0 = _mm512_loadu_ps(xt + c), a1 = _mm512_loadu_ps(xt + c + 16);
        const __m512 b0 = _mm512_loadu_ps(xt + c + 32), b1 = _mm512_loadu_ps(xt + c + 48);
        for (int j = 0; j < 4; j++) {
          const __m512 lo = _mm512_permutex2var_ps(a0, idx[j], a1);
          const __m512 hi = _mm512_permutex2var_ps(b0, idx[j], b1);
          const __m512 v = _mm512_mask_mov_ps(lo, __mmask16(0xFF00), hi);
          _mm512_storeu_ps(st + c + 16 * j, _mm512_mul_ps(v, s));
        }
      }
      for (; c < c1; c += 16) {
        const __mmask16 m = lanes(imin(16, c1 - c));
        _mm512_mask_storeu_ps(st + c, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, xt + c), s));
      }
    }
  }
}

// Rows [i0, i1) in groups of R, tokens in chunks of at most NMax.
template <int R, int NMax>
WHALE_VBMI void lut_rows(const uint8_t* base, int64_t i0, int64_t i1, int64_t K, const float* xs,
                         int64_t n, float* y, int64_t rows, const Fp8Lut& lut) {
  int64_t i = i0;
  for (; i + R <= i1; i += R)
    token_chunks(n, NMax, [&](int64_t t0, int64_t cnt) {
      lut_group<R, NMax>(cnt, base + i * K, K, xs + t0 * K, y + t0 * rows + i, rows, lut);
    });
  for (; i < i1; i++)
    token_chunks(n, NMax, [&](int64_t t0, int64_t cnt) {
      lut_group<1, NMax>(cnt, base + i * K, K, xs + t0 * K, y + t0 * rows + i, rows, lut);
    });
}

// Rows [r0, r1) for any n, FP8 through the table. Decode streams 8 rows at once (one token) or 4
// (two or three): more DRAM streams in flight, measured 13 -> 22 GB/s on one core. With more
// tokens, 2 rows leave registers for the accumulators.
WHALE_VBMI void gemv_fp8_lut(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1,
                             float* y) {
  const int64_t rows = w.rows, K = w.cols;
  const auto* base = static_cast<const uint8_t*>(w.data);
  const Fp8Lut lut = load_fp8_lut();
  float* xs = thread_scratch(1, n * K);
  for (int64_t a = r0; a < r1;) {  // one pass per 128-row scale block
    const int64_t b = imin(r1, ((w.row0 + a) / kB + 1) * kB - w.row0);
    scale_lut(x, n, w, a, xs);
    if (n == 1)
      lut_rows<8, 1>(base, a, b, K, xs, n, y, rows, lut);
    else if (n <= 3)
      lut_rows<4, 3>(base, a, b, K, xs, n, y, rows, lut);
    else
      lut_rows<2, kLutChunk>(base, a, b, K, xs, n, y, rows, lut);
    a = b;
  }
}

// ---- Prefill: GEMM ----

constexpr int kNR = 32;       // weight rows per micro-tile (two zmm)
constexpr int kMT = 12;       // tokens per micro-tile
constexpr int64_t kKC = 256;  // columns per packed panel (a multiple of the 128 scale block)
constexpr int64_t kRT = 128;  // weight rows per packed tile

// In-place transpose of a 16x16 f32 block held in 16 registers.
void transpose16(__m512 m[16]) {
  __m512 t[16], u[16];
  for (int i = 0; i < 16; i += 2) {  // interleave row pairs
    t[i] = _mm512_unpacklo_ps(m[i], m[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(m[i], m[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {  // u[i + j]: rows i..i+3 of columns j, j+4, j+8, j+12
    const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]);
    const __m512d c = _mm512_castps_pd(t[i + 2]), d = _mm512_castps_pd(t[i + 3]);
    u[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    u[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    u[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    u[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  for (int j = 0; j < 4; j++) {  // gather the 128-bit lanes of column j, j+4, j+8, j+12
    const __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88);
    const __m512 v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
    const __m512 w0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
    const __m512 w1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
    m[j] = _mm512_shuffle_f32x4(v0, w0, 0x88);
    m[j + 8] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
    m[j + 4] = _mm512_shuffle_f32x4(v1, w1, 0x88);
    m[j + 12] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
  }
}

// Packs rows [r0, r0 + nr) (nr <= 32) x columns [k0, k0 + kc) of w as exact f32 into
// wp[c * 32 + i]; rows past nr are zero.
template <class W>
void pack_group(const WeightRef& w, int64_t r0, int64_t nr, int64_t k0, int64_t kc, float* wp) {
  const auto* base = static_cast<const typename W::T*>(w.data);
  for (int64_t h = 0; h < kNR; h += 16) {
    const int64_t hn = imax(0, imin(16, nr - h));
    for (int64_t c = 0; c < kc; c += 16) {
      const int64_t cn = imin(16, kc - c);
      __m512 m[16];
      for (int64_t i = 0; i < 16; i++) {
        if (i >= hn) {
          m[i] = _mm512_setzero_ps();
          continue;
        }
        const int64_t r = r0 + h + i;
        const auto* p = base + r * w.cols + k0 + c;
        m[i] = cn == 16 ? W::exact(p) : W::exact(p, lanes(cn));
        if constexpr (W::kFp8)
          m[i] = _mm512_mul_ps(m[i], _mm512_set1_ps(fp8_block_scale(w, r, k0 + c)));
      }
      transpose16(m);
      for (int64_t j = 0; j < cn; j++) _mm512_store_ps(wp + (c + j) * kNR + h, m[j]);
    }
  }
}

// n values (whole blocks) of a GGML row as f32: Q8_0, Q4_0 and the k-quants of the q4_k_m mix
// widened here (the same operations as tensor/quant.h's reference, so the same values), the
// other types by the reference.
void dequantize_blocks(DType t, const uint8_t* p, int64_t n, float* out) {
  if (t == DType::Q8_0) {
    for (int64_t b = 0; b < n / 32; b++, p += 34, out += 32) {
      uint16_t h;
      __builtin_memcpy(&h, p, 2);
      const __m512 d = _mm512_set1_ps(_cvtsh_ss(h));
      const __m128i q0 = _mm_loadu_si128((const __m128i*)(p + 2));
      const __m128i q1 = _mm_loadu_si128((const __m128i*)(p + 18));
      _mm512_store_ps(out, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q0))));
      _mm512_store_ps(out + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q1))));
    }
  } else if (t == DType::Q4_0) {
    const __m128i m = _mm_set1_epi8(15);
    const __m512i eight = _mm512_set1_epi32(8);
    for (int64_t b = 0; b < n / 32; b++, p += 18, out += 32) {
      uint16_t h;
      __builtin_memcpy(&h, p, 2);
      const __m512 d = _mm512_set1_ps(_cvtsh_ss(h));
      const __m128i v = _mm_loadu_si128((const __m128i*)(p + 2));
      const __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
      const __m512i l = _mm512_sub_epi32(_mm512_cvtepu8_epi32(lo), eight);
      const __m512i u = _mm512_sub_epi32(_mm512_cvtepu8_epi32(hi), eight);
      _mm512_store_ps(out, _mm512_mul_ps(d, _mm512_cvtepi32_ps(l)));
      _mm512_store_ps(out + 16, _mm512_mul_ps(d, _mm512_cvtepi32_ps(u)));
    }
  } else if (t == DType::Q4_K || t == DType::Q5_K) {
    // Per sub-block j: d sc_j * u - dmin m_j as the reference computes it. (d sc_j u is exact in
    // f32, an f16 times at most 6 + 5 bits, so a fused multiply-subtract rounds the same way.)
    const bool five = t == DType::Q5_K;
    const __m128i m = _mm_set1_epi8(15);
    for (int64_t sb = 0; sb < n / 256; sb++, p += five ? 176 : 144) {
      uint16_t h[2];
      __builtin_memcpy(h, p, 4);
      const float d = _cvtsh_ss(h[0]), dmin = _cvtsh_ss(h[1]);
      uint8_t sc[8], mn[8];
      unpack_scale_min_k4(p + 4, sc, mn);
      const uint8_t* qh = p + 16;
      const uint8_t* qs = p + (five ? 48 : 16);
      for (int j = 0; j < 8; j++, out += 32) {
        const __m512 dl = _mm512_set1_ps(d * float(sc[j])),
                     ml = _mm512_set1_ps(dmin * float(mn[j]));
        for (int half = 0; half < 2; half++) {
          __m128i v = _mm_loadu_si128((const __m128i*)(qs + 32 * (j / 2) + 16 * half));
          if (j % 2) v = _mm_srli_epi16(v, 4);
          __m512i u = _mm512_cvtepu8_epi32(_mm_and_si128(v, m));
          if (five) {
            const __m128i bits = _mm_loadu_si128((const __m128i*)(qh + 16 * half));
            const __mmask16 on = _mm_test_epi8_mask(bits, _mm_set1_epi8(char(1 << j)));
            u = _mm512_mask_add_epi32(u, on, u, _mm512_set1_epi32(16));
          }
          const __m512 q = _mm512_cvtepi32_ps(u);
          _mm512_store_ps(out + 16 * half, _mm512_sub_ps(_mm512_mul_ps(dl, q), ml));
        }
      }
    }
  } else if (t == DType::Q6_K) {
    // Value 128 h + 32 s + l: the low (s < 2) or high nibble of ql[64 h + 32 (s % 2) + l], bits
    // 2s, 2s + 1 of qh[32 h + l]; (d * scale) * (u - 32) as the reference.
    const __m128i m4 = _mm_set1_epi8(15), m2 = _mm_set1_epi8(3);
    for (int64_t sb = 0; sb < n / 256; sb++, p += 210) {
      uint16_t hd;
      __builtin_memcpy(&hd, p + 208, 2);
      const float d = _cvtsh_ss(hd);
      const auto* scales = reinterpret_cast<const int8_t*>(p + 192);
      for (int e = 0; e < 256; e += 16, out += 16) {
        const int h = e / 128, s = (e / 32) % 4, l = e % 32;
        __m128i lo = _mm_loadu_si128((const __m128i*)(p + 64 * h + 32 * (s % 2) + l));
        if (s >= 2) lo = _mm_srli_epi16(lo, 4);
        lo = _mm_and_si128(lo, m4);
        __m128i hi = _mm_loadu_si128((const __m128i*)(p + 128 + 32 * h + l));
        hi = _mm_and_si128(_mm_srl_epi16(hi, _mm_cvtsi32_si128(2 * s)), m2);
        const __m128i u = _mm_or_si128(lo, _mm_slli_epi16(hi, 4));
        const __m512 q =
            _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(u), _mm512_set1_epi32(32)));
        _mm512_store_ps(out, _mm512_mul_ps(_mm512_set1_ps(d * float(scales[e / 16])), q));
      }
    }
  } else {
    dequantize_row(dtype_to_ggml(t), p, n, out);
  }
}

// The same packing for GGML block types (prefill on GGUF weights): each of up to 16 rows'
// kc values is dequantized into a buffer (dequantize_blocks), then transposed.
// k0 is a multiple of kKC (256) and the row length a multiple of the block size, so every
// panel holds whole blocks.
void pack_group_blocks(const WeightRef& w, int64_t r0, int64_t nr, int64_t k0, int64_t kc,
                       float* wp) {
  const size_t skip = dtype_row_bytes(w.dtype, k0);
  alignas(64) float rows[16][kKC];
  for (int64_t h = 0; h < kNR; h += 16) {
    const int64_t hn = imax(0, imin(16, nr - h));
    for (int64_t i = 0; i < hn; i++)
      dequantize_blocks(block_dtype(w.dtype), plain_row(w, r0 + h + i) + skip, kc, rows[i]);
    for (int64_t c = 0; c < kc; c += 16) {
      __m512 m[16];
      for (int64_t i = 0; i < 16; i++)
        m[i] = i < hn ? _mm512_load_ps(rows[i] + c) : _mm512_setzero_ps();
      transpose16(m);
      for (int64_t j = 0; j < 16; j++) _mm512_store_ps(wp + (c + j) * kNR + h, m[j]);
    }
  }
}

// Which packing a weight type uses.
struct BlocksW {};
template <class W>
void pack(const WeightRef& w, int64_t r0, int64_t nr, int64_t k0, int64_t kc, float* wp) {
  pack_group<W>(w, r0, nr, k0, kc, wp);
}
template <>
void pack<BlocksW>(const WeightRef& w, int64_t r0, int64_t nr, int64_t k0, int64_t kc, float* wp) {
  pack_group_blocks(w, r0, nr, k0, kc, wp);
}

// y[t * ldy + i] (+)= sum_c x[t * ldx + c] * wp[c * 32 + i] for t < MT, i < nr.
template <int MT>
void micro(const float* x, int64_t ldx, const float* wp, int64_t kc, float* y, int64_t ldy,
           int64_t nr, bool accumulate) {
  __m512 a0[MT], a1[MT];
  for (int t = 0; t < MT; t++) a0[t] = a1[t] = _mm512_setzero_ps();
  for (int64_t c = 0; c < kc; c++) {
    const __m512 w0 = _mm512_load_ps(wp + c * kNR), w1 = _mm512_load_ps(wp + c * kNR + 16);
    for (int t = 0; t < MT; t++) {
      const __m512 xb = _mm512_set1_ps(x[t * ldx + c]);
      a0[t] = _mm512_fmadd_ps(xb, w0, a0[t]);
      a1[t] = _mm512_fmadd_ps(xb, w1, a1[t]);
    }
  }
  const __mmask16 m0 = lanes(imin(16, nr)), m1 = lanes(imax(0, nr - 16));
  for (int t = 0; t < MT; t++) {
    float* yt = y + t * ldy;
    if (accumulate) {
      a0[t] = _mm512_add_ps(a0[t], _mm512_maskz_loadu_ps(m0, yt));
      a1[t] = _mm512_add_ps(a1[t], _mm512_maskz_loadu_ps(m1, yt + 16));
    }
    _mm512_mask_storeu_ps(yt, m0, a0[t]);
    _mm512_mask_storeu_ps(yt + 16, m1, a1[t]);
  }
}

using MicroFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t,
                         bool);
constexpr MicroFn kMicro[kMT + 1] = {nullptr,   micro<1>,  micro<2>, micro<3>, micro<4>,
                                     micro<5>,  micro<6>,  micro<7>, micro<8>, micro<9>,
                                     micro<10>, micro<11>, micro<12>};

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
        pack<W>(w, r0 + g, imin(kNR, rt - g), k0, kc, wp + g * kKC);
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
  if constexpr (W::kFp8) {
    // n == 4: the shift conversion with 4 rows x 4 tokens measured faster (the table path keeps
    // fewer rows in registers there).
    if (fp8_vbmi_enabled() && n != 4 && n <= kSmallNFp8) return gemv_fp8_lut(x, n, w, r0, r1, y);
  } else if constexpr (W::kBf16) {
    if (n > 4 && n <= kSmallN) return gemv_bf16_multi(x, n, w, r0, r1, y);
  } else {
    if (n > 4 && n <= kSmallN) return gemv_multi<W>(x, n, w, r0, r1, y);
  }
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

constexpr int64_t kTW = 64;  // output columns per register block (4 zmm)

// Columns [c0, c0 + 64) (c0 a multiple of 64, so within one scale block) for N tokens; with
// kTail, only the first cw columns exist.
template <class W, int N, bool kTail>
void linear_t_block(const float* x, int64_t ldx, const WeightRef& w, int64_t c0, int64_t cw,
                    float* y) {
  const auto* base = static_cast<const typename W::T*>(w.data);
  __mmask16 m[4];
  for (int v = 0; v < 4; v++) m[v] = lanes(imax(0, imin(16, cw - 16 * v)));
  __m512 acc[N][4];
  for (int t = 0; t < N; t++)
    for (int v = 0; v < 4; v++) acc[t][v] = _mm512_setzero_ps();
  for (int64_t r = 0; r < w.rows; r++) {
    const auto* p = base + r * w.cols + c0;
    __m512 wv[4];
    for (int v = 0; v < 4; v++) wv[v] = kTail ? W::exact(p + 16 * v, m[v]) : W::exact(p + 16 * v);
    const float s = W::kFp8 ? fp8_block_scale(w, r, c0) : 1.0f;
    for (int t = 0; t < N; t++) {
      const __m512 xb = _mm512_set1_ps(x[t * ldx + r] * s);
      for (int v = 0; v < 4; v++) acc[t][v] = _mm512_fmadd_ps(xb, wv[v], acc[t][v]);
    }
  }
  for (int t = 0; t < N; t++)
    for (int v = 0; v < 4; v++)
      _mm512_mask_storeu_ps(y + t * w.cols + c0 + 16 * v, m[v], acc[t][v]);
}

// The FP8 case of a full 64-column block, cheaper: the raw even/odd conversion of the GEMV, with
// the block scale and 2^8 folded into each row's activation; NaN bytes are tracked per column
// and patched into the outputs (a NaN weight makes its column NaN, as in the reference).
template <int N>
void linear_t_block_fp8(const float* x, int64_t ldx, const WeightRef& w, int64_t c0, float* y) {
  const auto* base = static_cast<const uint8_t*>(w.data) + c0;
  const __m512i top = _mm512_set1_epi8(char(0x80));
  __m512i seen = _mm512_setzero_si512();  // byte-wise max of (byte | 0x80): 0xff marks a NaN
  __m512 acc[N][4];
  for (int t = 0; t < N; t++)
    for (int j = 0; j < 4; j++) acc[t][j] = _mm512_setzero_ps();
  for (int64_t r = 0; r < w.rows; r++) {
    const __m512i b = _mm512_loadu_si512(base + r * w.cols);
    seen = _mm512_max_epu8(seen, _mm512_or_si512(b, top));
    __m512 wv[4];
    fp8x64_even_odd(b, wv);
    const float s = fp8_block_scale(w, r, c0) * Fp8W::kUnscale;
    for (int t = 0; t < N; t++) {
      const __m512 xb = _mm512_set1_ps(x[t * ldx + r] * s);
      for (int j = 0; j < 4; j++) acc[t][j] = _mm512_fmadd_ps(xb, wv[j], acc[t][j]);
    }
  }
  // Back to column order: acc[.][0] holds columns 0, 2, .., 30, [1] 32, .., 62, [2] 1, .., 31 and
  // [3] 33, .., 63. Column k of a 32-column half is lane k / 2 of the even (k even) or odd vector.
  alignas(64) int32_t lo[16], hi[16];
  for (int k = 0; k < 16; k++) {
    lo[k] = (k & 1) * 16 + k / 2;
    hi[k] = (k & 1) * 16 + 8 + k / 2;
  }
  const __m512i idx[2] = {_mm512_load_si512(lo), _mm512_load_si512(hi)};
  const __mmask64 nan = _mm512_cmpeq_epi8_mask(seen, _mm512_set1_epi8(-1));
  for (int t = 0; t < N; t++)
    for (int v = 0; v < 4; v++) {
      const int half = v / 2;  // columns 0..31 or 32..63
      __m512 out = _mm512_permutex2var_ps(acc[t][half], idx[v % 2], acc[t][half + 2]);
      out = _mm512_mask_mov_ps(out, __mmask16(nan >> (16 * v)), _mm512_set1_ps(__builtin_nanf("")));
      _mm512_storeu_ps(y + t * w.cols + c0 + 16 * v, out);
    }
}

template <class W, int N>
void linear_t_cols(const float* x, int64_t ldx, const WeightRef& w, int64_t c0, int64_t c1,
                   float* y) {
  for (int64_t c = c0; c < c1; c += kTW) {
    if (c1 - c < kTW)
      linear_t_block<W, N, true>(x, ldx, w, c, c1 - c, y);
    else if constexpr (W::kFp8)
      linear_t_block_fp8<N>(x, ldx, w, c, y);
    else
      linear_t_block<W, N, false>(x, ldx, w, c, kTW, y);
  }
}

template <class W>
void linear_t_w(const float* x, int64_t n, const WeightRef& w, float* y) {
  const int64_t ldx = w.rows;
  split_range(w.cols, kTW, threads_for(n * w.rows * w.cols), [&](int64_t c0, int64_t c1) {
    int64_t t = 0;
    for (; t + 4 <= n; t += 4) linear_t_cols<W, 4>(x + t * ldx, ldx, w, c0, c1, y + t * w.cols);
    switch (n - t) {
      case 3:
        linear_t_cols<W, 3>(x + t * ldx, ldx, w, c0, c1, y + t * w.cols);
        break;
      case 2:
        linear_t_cols<W, 2>(x + t * ldx, ldx, w, c0, c1, y + t * w.cols);
        break;
      case 1:
        linear_t_cols<W, 1>(x + t * ldx, ldx, w, c0, c1, y + t * w.cols);
        break;
      default:
        break;
    }
  });
}

// ---- weight_row ----

template <class W>
void weight_row_w(const WeightRef& w, int64_t r, float* dst) {
  const auto* p = static_cast<const typename W::T*>(w.data) + r * w.cols;
  for (int64_t c = 0; c < w.cols; c += 16) {
    const __mmask16 m = lanes(imin(16, w.cols - c));
    __m512 v = W::exact(p + c, m);
    if constexpr (W::kFp8) v = _mm512_mul_ps(v, _mm512_set1_ps(fp8_block_scale(w, r, c)));
    _mm512_mask_storeu_ps(dst + c, m, v);
  }
}

// ---- dtype dispatch ----

void linear_rows_avx512(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1,
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

void linear_t_avx512(const float* x, int64_t n, const WeightRef& w, float* y) {
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

void weight_row_avx512(const WeightRef& w, int64_t r, float* dst) {
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

const LinearKernels kLinearAvx512 = {linear_rows_avx512, linear_t_avx512, weight_row_avx512};

void gemm_blocks_avx512(const float* x, int64_t n, const WeightRef& w, int64_t r0, int64_t r1,
                        float* y) {
  gemm<BlocksW>(x, n, w, r0, r1, y);
}

}  // namespace whale::detail
