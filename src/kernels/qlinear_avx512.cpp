// AVX-512 VNNI int8 kernels for the 32-value block types and the k-quants (read qlinear.h
// first).
//
// Two weight blocks (64 values) are unpacked into one zmm of unsigned bytes in natural order and
// multiplied into each token's 64 quantized activations with one vpdpbusd: 16 int32 lanes, eight
// per block. The lanes are converted to f32 and accumulated with the per-block scale dw * dx
// (lanes 0-7 the first block's, 8-15 the second's); the integer offset and the minimum, which
// only need the activation block's sum, go to a scalar accumulator. A row is unpacked once per
// group of up to four tokens and stays in L1 for the next group.
// No standard-library templates here (see linear_avx512.cpp).

#include "kernels/qlinear.h"
#include "kernels/repack.h"
#include "kernels/simd.h"

namespace whale::detail {
namespace {

inline uint32_t u32_at(const uint8_t* p) {
  uint32_t v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

// 32 nibbles of two blocks' 16 bytes each (qs of block 0 at a, block 1 at b) as 64 bytes:
// [a low nibbles, a high nibbles, b low, b high], i.e. both blocks' values in natural order:
// each 16 bytes broadcast to two 128-bit lanes, the upper copy shifted right by 4, masked.
inline __m512i nibbles_pair(const uint8_t* a, const uint8_t* b) {
  const __m512i z = _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)a))),
      _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i*)b)), 1);  // a a b b
  const __m512i shifted = _mm512_srlv_epi64(z, _mm512_set_epi64(4, 4, 0, 0, 4, 4, 0, 0));
  return _mm512_and_si512(shifted, _mm512_set1_epi8(15));
}

// How far ahead of the weight loads to prefetch (bytes).
constexpr int64_t kPrefetchAhead = 4096;

// [f16 at p x 8, f16 at q x 8] as f32.
inline __m512 two_halves(const uint8_t* p, const uint8_t* q) {
  uint16_t a, b;
  __builtin_memcpy(&a, p, 2);
  __builtin_memcpy(&b, q, 2);
  const __m128 f = _mm_cvtph_ps(_mm_cvtsi32_si128(int(uint32_t(a) | uint32_t(b) << 16)));
  return _mm512_permutexvar_ps(_mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
                               _mm512_castps128_ps512(f));
}

// Each weight type: block bytes, where qs starts, the offset, whether it has a minimum, and the
// unpacking of two consecutive blocks.
struct Q8_0 {
  static constexpr int kBytes = 34, kOff = 128, kShift = 7;
  static constexpr bool kMin = false;
  static __m512i pair(const uint8_t* p) {
    const __m512i v =
        _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i*)(p + 2))),
                           _mm256_loadu_si256((const __m256i*)(p + kBytes + 2)), 1);
    return _mm512_xor_si512(v, _mm512_set1_epi8(char(0x80)));
  }
};

struct Q4_0 {
  static constexpr int kBytes = 18, kOff = 8, kShift = 3;
  static constexpr bool kMin = false;
  static __m512i pair(const uint8_t* p) { return nibbles_pair(p + 2, p + kBytes + 2); }
};

struct Q4_1 {
  static constexpr int kBytes = 20, kOff = 0, kShift = 0;
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
  static constexpr int kBytes = 22, kOff = 16, kShift = 4;
  static constexpr bool kMin = false;
  static __m512i pair(const uint8_t* p) { return five_bit_pair<2, 6>(p, kBytes); }
};

struct Q5_1 {
  static constexpr int kBytes = 24, kOff = 0, kShift = 0;
  static constexpr bool kMin = true;
  static __m512i pair(const uint8_t* p) { return five_bit_pair<4, 8>(p, kBytes); }
};

// ---- The k-quants: 256-value super-blocks, one 64-value chunk (two activation blocks) per
// vpdpbusd. Per super-block the scales are unpacked once into f32 lanes; per chunk c a
// permutation spreads them over the 16 int32 lanes of the dot product (lane i covers values
// 4i..4i+3 of the chunk).

// Q4_K / Q5_K: the eight scales d sc_j in lanes 0-7 (8-15 unused) and the minimums dmin m_j.
inline void scales_k4(const uint8_t* blk, __m512* sc, __m256* mn) {
  uint8_t s[8], m[8];
  unpack_scale_min_k4(blk + 4, s, m);
  uint64_t s8, m8;
  __builtin_memcpy(&s8, s, 8);
  __builtin_memcpy(&m8, m, 8);
  uint16_t h[2];
  __builtin_memcpy(h, blk, 4);
  const __m128 dd = _mm_cvtph_ps(_mm_cvtsi32_si128(int(uint32_t(h[0]) | uint32_t(h[1]) << 16)));
  const __m256 d = _mm256_broadcastss_ps(dd);
  const __m256 dmin = _mm256_broadcastss_ps(_mm_movehdup_ps(dd));
  const __m256 scf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)s8)));
  *sc = _mm512_castps256_ps512(_mm256_mul_ps(d, scf));
  *mn = _mm256_mul_ps(dmin,
                      _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)m8))));
}

// 32 bytes of nibbles as 64 values: the low nibbles (the chunk's first 32 values), then the
// high ones.
inline __m512i nibbles64(const uint8_t* qs) {
  const __m256i v = _mm256_loadu_si256((const __m256i*)qs);
  const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(v), _mm256_srli_epi16(v, 4), 1);
  return _mm512_and_si512(z, _mm512_set1_epi8(15));
}

struct Q4_K {
  static constexpr int kBytes = 144, kShift = 0;
  static constexpr bool kMin = true, kOff = false;
  static void scales(const uint8_t* blk, __m512* sc, __m256* mn) { scales_k4(blk, sc, mn); }
  // Which scale each lane of chunk 0 takes (0 for lanes 0-7, 1 for 8-15); chunk c adds kStep c.
  static constexpr int kStep = 2;
  static __m512i lanes0() {
    return _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  }
  static __m512i chunk(const uint8_t* blk, int c) { return nibbles64(blk + 16 + 32 * c); }
};

struct Q5_K {
  static constexpr int kBytes = 176, kShift = 0;
  static constexpr bool kMin = true, kOff = false;
  static void scales(const uint8_t* blk, __m512* sc, __m256* mn) { scales_k4(blk, sc, mn); }
  static constexpr int kStep = 2;
  static __m512i lanes0() { return Q4_K::lanes0(); }
  // The fifth bit of value l of sub-block j is bit j of qh[l].
  static __m512i chunk(const uint8_t* blk, int c) {
    const __m256i qh = _mm256_loadu_si256((const __m256i*)(blk + 16));
    const uint64_t lo = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(char(1 << (2 * c))));
    const uint64_t hi = _mm256_test_epi8_mask(qh, _mm256_set1_epi8(char(2 << (2 * c))));
    const __m512i fifth = _mm512_maskz_mov_epi8(__mmask64(lo | hi << 32), _mm512_set1_epi8(16));
    return _mm512_or_si512(nibbles64(blk + 48 + 32 * c), fifth);
  }
};

struct Q6_K {
  static constexpr int kBytes = 210, kShift = 5;  // offset 32
  static constexpr bool kMin = false, kOff = true;
  // The sixteen int8 scales times d.
  static void scales(const uint8_t* blk, __m512* sc, __m256* mn) {
    uint16_t h;
    __builtin_memcpy(&h, blk + 208, 2);
    const __m512 d = _mm512_set1_ps(_cvtsh_ss(h));
    const __m512i s = _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(blk + 192)));
    *sc = _mm512_mul_ps(d, _mm512_cvtepi32_ps(s));
    *mn = _mm256_setzero_ps();
  }
  // Lane i of chunk 0 takes scale i / 4; chunk c adds 4c.
  static constexpr int kStep = 4;
  static __m512i lanes0() {
    return _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
  }
  // Chunk c = 2h + s2 (h: which 128 values, s2: low or high nibbles): the nibbles of
  // ql[64h .. 64h + 64) in natural order, and as top bits the 2-bit fields 4 s2 (first 32 values)
  // and 4 s2 + 2 (next 32) of qh[32h .. 32h + 32).
  static __m512i chunk(const uint8_t* blk, int c) {
    const int h = c / 2, s2 = c % 2;
    __m512i low = _mm512_loadu_si512(blk + 64 * h);
    if (s2) low = _mm512_srli_epi16(low, 4);
    low = _mm512_and_si512(low, _mm512_set1_epi8(15));
    const __m256i qh = _mm256_loadu_si256((const __m256i*)(blk + 128 + 32 * h));
    const __m512i qh2 = _mm512_inserti64x4(_mm512_castsi256_si512(qh), qh, 1);
    const long long a = 4 * s2, b = 4 * s2 + 2;
    __m512i high = _mm512_srlv_epi64(qh2, _mm512_set_epi64(b, b, b, b, a, a, a, a));
    high = _mm512_and_si512(high, _mm512_set1_epi8(3));
    return _mm512_or_si512(low, _mm512_slli_epi16(high, 4));
  }
};

// y[t * ldy] = row . token t for t < N; `row` holds nsb super-blocks. Per chunk and token the
// integer lanes (minus 32 times the 4-value activation sums for Q6_K) times the lanes' weight
// scales times dx (d2); the minimums once per super-block against dx_b s_b of its 8 blocks.
template <class Q, int N>
void row_tokens_k(const uint8_t* row, int64_t nsb, const QuantizedActs& x, int64_t t0, float* y,
                  int64_t ldy) {
  const int64_t np = x.K / 64, nb = x.blocks();
  __m512 acc[N];
  __m256 accm[N];
  for (int t = 0; t < N; t++) {
    acc[t] = _mm512_setzero_ps();
    accm[t] = _mm256_setzero_ps();
  }
  for (int64_t sb = 0; sb < nsb; sb++) {
    const uint8_t* blk = row + sb * Q::kBytes;
    for (int l = 0; l < Q::kBytes; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(blk) + kPrefetchAhead + l, _MM_HINT_T0);
    __m512 sc;
    __m256 mn;
    Q::scales(blk, &sc, &mn);
    __m512i lanes = Q::lanes0();
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
      const __m512i u = Q::chunk(blk, c);
      const __m512 wl = _mm512_permutexvar_ps(lanes, sc);
      lanes = _mm512_add_epi32(lanes, _mm512_set1_epi32(Q::kStep));
      const int64_t p = sb * 4 + c;
      for (int t = 0; t < N; t++) {
        const __m512i xv = _mm512_loadu_si512(x.q + (t0 + t) * x.K + 64 * p);
        __m512i start = _mm512_setzero_si512();
        if constexpr (Q::kOff)
          start = _mm512_sub_epi32(
              start,
              _mm512_slli_epi32(_mm512_dpbusd_epi32(start, _mm512_set1_epi8(1), xv), Q::kShift));
        const __m512i dot = _mm512_dpbusd_epi32(start, u, xv);
        const __m512 s = _mm512_mul_ps(wl, _mm512_loadu_ps(x.d2 + ((t0 + t) * np + p) * 16));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[t]);
      }
    }
    if constexpr (Q::kMin)
      for (int t = 0; t < N; t++) {
        const int64_t b = (t0 + t) * nb + sb * 8;
        const __m256 ds =
            _mm256_mul_ps(_mm256_loadu_ps(x.d + b),
                          _mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i*)(x.s + b))));
        accm[t] = _mm256_fmadd_ps(mn, ds, accm[t]);
      }
  }
  for (int t = 0; t < N; t++) {
    float m = 0.0f;
    if constexpr (Q::kMin) {
      const __m128 h =
          _mm_add_ps(_mm256_castps256_ps128(accm[t]), _mm256_extractf128_ps(accm[t], 1));
      m = _mm_cvtss_f32(_mm_hadd_ps(_mm_hadd_ps(h, h), _mm_hadd_ps(h, h)));
    }
    y[t * ldy] = _mm512_reduce_add_ps(acc[t]) - m;
  }
}

// [a0 + a1, a2 + a3, ..., a14 + a15, b0 + b1, ..., b14 + b15] (even, odd: the lane indices).
inline __m512i add_pairs(__m512i a, __m512i b, __m512i even, __m512i odd) {
  return _mm512_add_epi32(_mm512_permutex2var_epi32(a, even, b),
                          _mm512_permutex2var_epi32(a, odd, b));
}

// y[t * ldy] = row . token t for t < N; `row` holds nb blocks, nb even. Per pair of blocks and
// token: the integer accumulator starts at -offset * sum(xq) in the first lane of each block
// (ns2 << log2(offset)), so the lanes sum to sum_j u_j xq_j - offset * sum_j xq_j; times
// dw * dx (d2), plus m * dx * sum(xq) (ds2) for the types with a minimum.
//
// Sixteen blocks at a time (most of a row) the scales cost less: the eight products' lanes are
// summed per block (three levels of adding neighbouring lanes, 16 int32 lanes = 16 blocks), the
// offset comes off in the integers, the 16 blocks' dw (and m) arrive in one gather, and one
// multiply-add scales them all: about half the instructions per weight byte of the pairwise
// loop below, which takes the rest of the row.
template <class Q, int N>
void row_tokens(const uint8_t* row, int64_t nb, const QuantizedActs& x, int64_t t0, float* y,
                int64_t ldy) {
  const int64_t np = nb / 2;
  __m512 acc[N];
  for (int t = 0; t < N; t++) acc[t] = _mm512_setzero_ps();
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  const __m512i starts =
      _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                         _mm512_set1_epi32(Q::kBytes));
  int64_t p = 0;
  for (; p + 8 <= np; p += 8) {
    const uint8_t* blk = row + 2 * p * Q::kBytes;
    for (int l = 0; l < 16 * Q::kBytes; l += 64)
      _mm_prefetch(reinterpret_cast<const char*>(blk) + kPrefetchAhead + l, _MM_HINT_T0);
    __m512i u[8];
    for (int q = 0; q < 8; q++) u[q] = Q::pair(blk + 2 * q * Q::kBytes);
    // The first 4 bytes of each block: dw in the low half, m (Q4_1, Q5_1) in the high half.
    const __m512i head = _mm512_i32gather_epi32(starts, blk, 1);
    const __m512 dw = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(head));
    __m512 m = _mm512_setzero_ps();
    if constexpr (Q::kMin) m = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(head, 16)));
    for (int t = 0; t < N; t++) {
      const int8_t* xq = x.q + (t0 + t) * x.K + 64 * p;
      __m512i d[8];
      for (int q = 0; q < 8; q++)
        d[q] = _mm512_dpbusd_epi32(_mm512_setzero_si512(), u[q], _mm512_loadu_si512(xq + 64 * q));
      const __m512i d01 = add_pairs(d[0], d[1], even, odd), d23 = add_pairs(d[2], d[3], even, odd);
      const __m512i d45 = add_pairs(d[4], d[5], even, odd), d67 = add_pairs(d[6], d[7], even, odd);
      __m512i sum = add_pairs(add_pairs(d01, d23, even, odd), add_pairs(d45, d67, even, odd), even,
                              odd);  // lane j: block j's sum
      const int64_t b = (t0 + t) * nb + 2 * p;
      const __m512i sx = _mm512_loadu_si512(x.s + b);
      if constexpr (Q::kOff != 0) sum = _mm512_sub_epi32(sum, _mm512_slli_epi32(sx, Q::kShift));
      const __m512 dx = _mm512_loadu_ps(x.d + b);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), _mm512_mul_ps(dw, dx), acc[t]);
      if constexpr (Q::kMin)
        acc[t] = _mm512_fmadd_ps(m, _mm512_mul_ps(dx, _mm512_cvtepi32_ps(sx)), acc[t]);
    }
  }
  for (; p < np; p++) {
    const uint8_t* blk = row + 2 * p * Q::kBytes;
    // One stream per thread: without prefetching ahead, DRAM latency stalls the loop (the
    // hardware prefetcher alone gave 9 GB/s on one core for Q8_0, 2048 x 7168; 4096 bytes ahead:
    // 16 GB/s, 29 GB/s on two).
    _mm_prefetch(reinterpret_cast<const char*>(blk) + kPrefetchAhead, _MM_HINT_T0);
    if constexpr (2 * Q::kBytes > 64)
      _mm_prefetch(reinterpret_cast<const char*>(blk) + kPrefetchAhead + 64, _MM_HINT_T0);
    const __m512i u = Q::pair(blk);
    const __m512 dw = two_halves(blk, blk + Q::kBytes);
    __m512 m = _mm512_setzero_ps();
    if constexpr (Q::kMin) m = two_halves(blk + 2, blk + Q::kBytes + 2);
    for (int t = 0; t < N; t++) {
      const int64_t i = ((t0 + t) * np + p) * 16;
      __m512i start = _mm512_setzero_si512();
      if constexpr (Q::kOff != 0)
        start = _mm512_slli_epi32(_mm512_loadu_si512(x.ns2 + i), Q::kShift);
      const __m512i xv = _mm512_loadu_si512(x.q + (t0 + t) * x.K + 64 * p);
      const __m512i dot = _mm512_dpbusd_epi32(start, u, xv);
      const __m512 s = _mm512_mul_ps(dw, _mm512_loadu_ps(x.d2 + i));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), s, acc[t]);
      if constexpr (Q::kMin) acc[t] = _mm512_fmadd_ps(m, _mm512_loadu_ps(x.ds2 + i), acc[t]);
    }
  }
  for (int t = 0; t < N; t++) y[t * ldy] = _mm512_reduce_add_ps(acc[t]);
}

// Rows [r0, r1) for all tokens. Many tokens (prefill): tiles of 16 rows x 64 tokens, so that a
// tile's activations (64 x K bytes and their scales) stay in cache while its rows reuse them.
// One row against N tokens: a k-quant row by super-blocks, the others by pairs of blocks.
template <class Q, int N>
void row_n(const uint8_t* row, const QuantizedActs& x, int64_t t0, float* y, int64_t ldy) {
  if constexpr (requires { Q::lanes0(); })
    row_tokens_k<Q, N>(row, x.K / 256, x, t0, y, ldy);
  else
    row_tokens<Q, N>(row, x.blocks(), x, t0, y, ldy);
}

template <class Q>
void rows_q(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  constexpr int64_t kRowTile = 16, kTokenTile = 64;
  const size_t row_bytes = size_t(dtype_row_bytes(w.dtype, w.cols));
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t ra = r0; ra < r1; ra += kRowTile) {
    const int64_t rb = ra + kRowTile < r1 ? ra + kRowTile : r1;
    for (int64_t ta = 0; ta < x.n; ta += kTokenTile) {
      const int64_t tb = ta + kTokenTile < x.n ? ta + kTokenTile : x.n;
      for (int64_t r = ra; r < rb; r++) {
        const uint8_t* row = base + size_t(r) * row_bytes;
        int64_t t = ta;
        for (; t + 4 <= tb; t += 4) row_n<Q, 4>(row, x, t, y + t * w.rows + r, w.rows);
        switch (tb - t) {
          case 3:
            row_n<Q, 3>(row, x, t, y + t * w.rows + r, w.rows);
            break;
          case 2:
            row_n<Q, 2>(row, x, t, y + t * w.rows + r, w.rows);
            break;
          case 1:
            row_n<Q, 1>(row, x, t, y + t * w.rows + r, w.rows);
            break;
          default:
            break;
        }
      }
    }
  }
}

// ---- Many tokens (prefill), the 32-value types, Q4_K and Q5_K: a GEMM with the int32 lanes over
// 16 rows. ----
//
// The weights of 16 rows are unpacked once into a panel, interleaved by 4 values: for each 4-value
// step k, 16 rows x 4 bytes = one zmm of unsigned u. A token's 4 activations at k are broadcast
// to all lanes, so one vpdpbusd accumulates 64 products for 16 rows; per block (8 steps) a
// token's int32 lanes start at -offset * sum(xq) (as in row_tokens) and are then scaled by the
// rows' dw times dx, plus the rows' minimum m times dx * sum(xq) for Q4_1 / Q5_1 / Q4_K / Q5_K
// (Q6_K, with a scale per 16 values, takes the dequantizing GEMM of linear_avx512.cpp). The panel
// is reused by every token: 16 K bytes, in L1 or L2.

// The panel: u[K / 4][kPanelRows][4] bytes, dw[b][kPanelRows] and m[b][kPanelRows] (b < K / 32);
// rows past the matrix's end are zero. Two zmm of 16 rows per step: each broadcast activation
// feeds two vpdpbusd.
constexpr int64_t kPanelRows = 32;
struct Panel {
  uint8_t* u;
  float *dw, *m;
};

inline float half_at(const uint8_t* p) {
  uint16_t h;
  __builtin_memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// Q4_K / Q5_K: sub-block j of a super-block is an activation block with dw = d sc_j and the
// minimum m = -dmin m_j, like Q4_1 / Q5_1.
template <class Q>
void fill_panel_k(const uint8_t* base, size_t row_bytes, int64_t rows, int64_t nb, Panel p) {
  alignas(64) uint8_t v[64];
  for (int64_t i = 0; i < kPanelRows; i++)
    for (int64_t sb = 0; sb < nb / 8; sb++) {
      const uint8_t* blk = base + size_t(i) * row_bytes + size_t(sb) * Q::kBytes;
      uint8_t sc[8] = {}, mn[8] = {};
      float d = 0.0f, dmin = 0.0f;
      if (i < rows) {
        unpack_scale_min_k4(blk + 4, sc, mn);
        d = half_at(blk);
        dmin = half_at(blk + 2);
      }
      for (int c = 0; c < 4; c++) {
        const int64_t b = sb * 8 + 2 * c;
        if (i < rows)
          _mm512_store_si512(v, Q::chunk(blk, c));
        else
          __builtin_memset(v, 0, 64);
        for (int k = 0; k < 16; k++)
          __builtin_memcpy(p.u + ((b * 8 + k) * kPanelRows + i) * 4, v + 4 * k, 4);
        for (int h = 0; h < 2; h++) {
          p.dw[(b + h) * kPanelRows + i] = d * float(sc[2 * c + h]);
          p.m[(b + h) * kPanelRows + i] = -dmin * float(mn[2 * c + h]);
        }
      }
    }
}

template <class Q>
void fill_panel_32(const uint8_t* base, size_t row_bytes, int64_t rows, int64_t nb, Panel p) {
  alignas(64) uint8_t v[64];
  for (int64_t i = 0; i < kPanelRows; i++)
    for (int64_t b = 0; b < nb; b += 2) {
      float dw[2] = {0.0f, 0.0f}, m[2] = {0.0f, 0.0f};
      if (i < rows) {
        const uint8_t* blk = base + size_t(i) * row_bytes + size_t(b) * Q::kBytes;
        _mm512_store_si512(v, Q::pair(blk));
        for (int h = 0; h < 2; h++) {
          dw[h] = half_at(blk + h * Q::kBytes);
          if constexpr (Q::kMin) m[h] = half_at(blk + h * Q::kBytes + 2);
        }
      } else {
        __builtin_memset(v, 0, 64);
      }
      for (int k = 0; k < 16; k++)
        __builtin_memcpy(p.u + ((b * 8 + k) * kPanelRows + i) * 4, v + 4 * k, 4);
      for (int h = 0; h < 2; h++) {
        p.dw[(b + h) * kPanelRows + i] = dw[h];
        p.m[(b + h) * kPanelRows + i] = m[h];
      }
    }
}

template <class Q>
void fill_panel(const uint8_t* base, size_t row_bytes, int64_t rows, int64_t nb, Panel p) {
  if constexpr (requires { Q::lanes0(); })
    fill_panel_k<Q>(base, row_bytes, rows, nb, p);
  else
    fill_panel_32<Q>(base, row_bytes, rows, nb, p);
}

// y[t][0..kPanelRows) for tokens t0 .. t0 + T: the panel's rows' products with T tokens.
template <class Q, int T>
void gemm_tile(const Panel& p, int64_t nb, const QuantizedActs& x, int64_t t0, float* y,
               int64_t ldy) {
  constexpr int G = kPanelRows / 16;
  __m512 acc[G][T];
  for (int g = 0; g < G; g++)
    for (int t = 0; t < T; t++) acc[g][t] = _mm512_setzero_ps();
  const int8_t* xq = x.q + t0 * x.K;
  for (int64_t b = 0; b < nb; b++) {
    __m512i i32[G][T];
    for (int t = 0; t < T; t++) {
      const __m512i start = Q::kOff != 0 ? _mm512_set1_epi32(-(x.s[(t0 + t) * nb + b] << Q::kShift))
                                         : _mm512_setzero_si512();
      for (int g = 0; g < G; g++) i32[g][t] = start;
    }
    const uint8_t* u = p.u + b * 8 * 4 * kPanelRows;
#pragma GCC unroll 8
    for (int k = 0; k < 8; k++) {
      __m512i w[G];
      for (int g = 0; g < G; g++) w[g] = _mm512_load_si512(u + (k * G + g) * 64);
      for (int t = 0; t < T; t++) {
        int32_t x4;
        __builtin_memcpy(&x4, xq + t * x.K + b * 32 + k * 4, 4);
        const __m512i xb = _mm512_set1_epi32(x4);
        for (int g = 0; g < G; g++) i32[g][t] = _mm512_dpbusd_epi32(i32[g][t], w[g], xb);
      }
    }
    for (int g = 0; g < G; g++) {
      const __m512 dw = _mm512_load_ps(p.dw + b * kPanelRows + 16 * g);
      __m512 m = _mm512_setzero_ps();
      if constexpr (Q::kMin) m = _mm512_load_ps(p.m + b * kPanelRows + 16 * g);
      for (int t = 0; t < T; t++) {
        const int64_t tb = (t0 + t) * nb + b;
        const float dx = x.d[tb];
        acc[g][t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i32[g][t]),
                                    _mm512_mul_ps(dw, _mm512_set1_ps(dx)), acc[g][t]);
        if constexpr (Q::kMin)
          acc[g][t] = _mm512_fmadd_ps(m, _mm512_set1_ps(dx * float(x.s[tb])), acc[g][t]);
      }
    }
  }
  for (int g = 0; g < G; g++)
    for (int t = 0; t < T; t++) _mm512_storeu_ps(y + t * ldy + 16 * g, acc[g][t]);
}

template <class Q, int T>
void gemm_tail(const Panel& p, int64_t nb, const QuantizedActs& x, int64_t t0, int64_t n, float* y,
               int64_t ldy) {
  if constexpr (T > 1) {
    if (n < T) return gemm_tail<Q, T - 1>(p, nb, x, t0, n, y, ldy);
  }
  gemm_tile<Q, T>(p, nb, x, t0, y, ldy);
}

template <class Q>
void gemm_q(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  constexpr int64_t kT = 7;
  const int64_t nb = x.blocks(), K = x.K;
  const size_t row_bytes = size_t(dtype_row_bytes(w.dtype, w.cols));
  const auto* base = static_cast<const uint8_t*>(w.data);
  // Scratch: the panel (kPanelRows K bytes, 64-byte aligned) and 2 x kPanelRows nb floats.
  constexpr int64_t R = kPanelRows;
  float* scratch = thread_scratch(3, R * K / 4 + 2 * R * nb + 16);
  const Panel p{reinterpret_cast<uint8_t*>(scratch), scratch + R * K / 4,
                scratch + R * K / 4 + R * nb};
  alignas(64) float tile[kT * R];
  for (int64_t ra = r0; ra < r1; ra += R) {
    const int64_t rows = r1 - ra < R ? r1 - ra : R;
    fill_panel<Q>(base + size_t(ra) * row_bytes, row_bytes, rows, nb, p);
    for (int64_t t = 0; t < x.n; t += kT) {
      const int64_t T = x.n - t < kT ? x.n - t : kT;
      const bool direct = rows == R;  // else through `tile`, then the valid rows
      float* dst = direct ? y + t * w.rows + ra : tile;
      const int64_t ld = direct ? w.rows : R;
      gemm_tail<Q, kT>(p, nb, x, t, T, dst, ld);
      if (!direct)
        for (int64_t j = 0; j < T; j++)
          for (int64_t i = 0; i < rows; i++) y[(t + j) * w.rows + ra + i] = tile[j * R + i];
    }
  }
}

// ---- Q4_0_X16, Q8_0_X16 (kernels/repack.h): one kernel for decode and prefill. For each block,
// 16 rows' int32 lanes per group: each 64-byte chunk holds 4 values of every row (Q4_0: chunk c's
// low nibbles values 4c..4c+3, its high nibbles 16+4c..; Q8_0: chunk c values 4c..4c+3, unsigned),
// multiplied by the token's 4 activations there, broadcast; the lanes start at -offset sum(xq)
// and are scaled by the 16 rows' d times dx. G groups (16 G rows) and T tokens per pass: each
// loaded chunk feeds T tokens, each broadcast G groups.
struct X16Q4 {
  static constexpr int kChunks = 4, kShift = 3, kBlockBytes = x16_block_bytes(DType::Q4_0_X16);
  static constexpr bool kNibbles = true;
};
struct X16Q8 {
  static constexpr int kChunks = 8, kShift = 7, kBlockBytes = x16_block_bytes(DType::Q8_0_X16);
  static constexpr bool kNibbles = false;
};

template <class L, int G, int T>
void x16_tile(const uint8_t* w, size_t group_bytes, const QuantizedActs& x, int64_t t0, float* y,
              int64_t ldy) {
  const int64_t nb = x.blocks();
  const __m512i m4 = _mm512_set1_epi8(15);
  __m512 acc[G][T];
  for (int g = 0; g < G; g++)
    for (int t = 0; t < T; t++) acc[g][t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* blk = w + b * L::kBlockBytes;
    for (int g = 0; g < G; g++)
      for (int l = 0; l < L::kBlockBytes; l += 64)
        _mm_prefetch(reinterpret_cast<const char*>(blk + g * group_bytes) + kPrefetchAhead + l,
                     _MM_HINT_T0);
    __m512i s[G][T];
    for (int t = 0; t < T; t++) {
      const __m512i start = _mm512_set1_epi32(-(x.s[(t0 + t) * nb + b] << L::kShift));
      for (int g = 0; g < G; g++) s[g][t] = start;
    }
    // Values `at`..`at` + 3 of every row (u) times each token's activations there.
    auto step = [&](const __m512i* u, int at) {
      for (int t = 0; t < T; t++) {
        int32_t x4;
        __builtin_memcpy(&x4, x.q + (t0 + t) * x.K + 32 * b + at, 4);
        const __m512i xb = _mm512_set1_epi32(x4);
        for (int g = 0; g < G; g++) s[g][t] = _mm512_dpbusd_epi32(s[g][t], u[g], xb);
      }
    };
    for (int c = 0; c < L::kChunks; c++) {
      __m512i v[G];
      for (int g = 0; g < G; g++) v[g] = _mm512_loadu_si512(blk + g * group_bytes + 32 + 64 * c);
      if constexpr (L::kNibbles) {
        __m512i u[G];
        for (int g = 0; g < G; g++) u[g] = _mm512_and_si512(v[g], m4);
        step(u, 4 * c);
        for (int g = 0; g < G; g++) u[g] = _mm512_and_si512(_mm512_srli_epi16(v[g], 4), m4);
        step(u, 16 + 4 * c);
      } else {
        step(v, 4 * c);
      }
    }
    for (int g = 0; g < G; g++) {
      const __m512 dw = _mm512_cvtph_ps(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + g * group_bytes)));
      for (int t = 0; t < T; t++)
        acc[g][t] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[g][t]),
                            _mm512_mul_ps(dw, _mm512_set1_ps(x.d[(t0 + t) * nb + b])), acc[g][t]);
    }
  }
  for (int g = 0; g < G; g++)
    for (int t = 0; t < T; t++) _mm512_storeu_ps(y + t * ldy + 16 * g, acc[g][t]);
}

template <class L, int G, int T>
void x16_tail(const uint8_t* w, size_t group_bytes, const QuantizedActs& x, int64_t t0, int64_t n,
              float* y, int64_t ldy) {
  if constexpr (T > 1) {
    if (n < T) return x16_tail<L, G, T - 1>(w, group_bytes, x, t0, n, y, ldy);
  }
  x16_tile<L, G, T>(w, group_bytes, x, t0, y, ldy);
}

// Rows [r0, r1) (r0 on a group) for all tokens: two groups (32 rows) per pass, all tokens in
// tiles of up to 6 while those rows' bytes stay in cache.
template <class L>
void x16_rows(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  constexpr int64_t kT = 6, R = 2 * kX16Rows;
  const size_t group_bytes = size_t(kX16Rows) * dtype_row_bytes(w.dtype, w.cols);
  const auto* base = static_cast<const uint8_t*>(w.data);
  alignas(64) float tile[kT * R];
  for (int64_t ra = r0; ra < r1; ra += R) {
    const int64_t rows = r1 - ra < R ? r1 - ra : R;
    const uint8_t* g = base + size_t(ra / kX16Rows) * group_bytes;
    for (int64_t t = 0; t < x.n; t += kT) {
      const int64_t T = x.n - t < kT ? x.n - t : kT;
      const bool direct = rows == R || rows == kX16Rows;  // else through `tile`
      float* dst = direct ? y + t * w.rows + ra : tile;
      const int64_t ld = direct ? w.rows : R;
      if (rows > kX16Rows)
        x16_tail<L, 2, kT>(g, group_bytes, x, t, T, dst, ld);
      else
        x16_tail<L, 1, kT>(g, group_bytes, x, t, T, dst, ld);
      if (!direct)
        for (int64_t j = 0; j < T; j++)
          for (int64_t i = 0; i < rows; i++) y[(t + j) * w.rows + ra + i] = tile[j * R + i];
    }
  }
}

template <class Q>
void rows_or_gemm(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1, float* y) {
  if (x.n > kInt8MaxTokens) return gemm_q<Q>(x, w, r0, r1, y);
  rows_q<Q>(x, w, r0, r1, y);
}

void qlinear_rows_avx512(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1,
                         float* y) {
  // Rows of an odd number of blocks (K = 32 (2k + 1)) are rare (no DeepSeek matrix has one): the
  // portable kernel takes them. The per-row kernels need the expanded activation scales (d2),
  // the GEMM (more than kInt8MaxTokens tokens, 32-value types) does not.
  if (dtype_is_x16(w.dtype)) {
    if (r0 % kX16Rows != 0) return qlinear_x16_via_plain(kQLinearScalar, x, w, r0, r1, y);
    if (w.dtype == DType::Q8_0_X16) return x16_rows<X16Q8>(x, w, r0, r1, y);
    return x16_rows<X16Q4>(x, w, r0, r1, y);
  }
  const bool gemm = x.n > kInt8MaxTokens && int8_gemm_dtype(w.dtype);
  if (x.blocks() % 2 != 0 || (!x.d2 && !gemm)) return kQLinearScalar(x, w, r0, r1, y);
  switch (w.dtype) {
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
      return rows_or_gemm<Q4_K>(x, w, r0, r1, y);
    case DType::Q5_K:
      return rows_or_gemm<Q5_K>(x, w, r0, r1, y);
    case DType::Q6_K:
      return rows_q<Q6_K>(x, w, r0, r1, y);
    default:
      return kQLinearScalar(x, w, r0, r1, y);
  }
}

}  // namespace

const QLinearRows kQLinearAvx512 = qlinear_rows_avx512;

void quantize_activations_avx512(const float* x, int64_t n, int64_t K, int8_t* q, float* d,
                                 int32_t* s) {
  const int64_t nb = K / 32;
  const __m512 lo = _mm512_set1_ps(-127.0f), hi = _mm512_set1_ps(127.0f);
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  for (int64_t t = 0; t < n; t++)
    for (int64_t b = 0; b < nb; b++) {
      const float* xb = x + t * K + 32 * b;
      const __m512 x0 = _mm512_loadu_ps(xb), x1 = _mm512_loadu_ps(xb + 16);
      // max_ps returns its second operand when the first is NaN: NaN is ignored, as in the loop.
      __m512 m = _mm512_max_ps(_mm512_and_ps(x0, abs_mask), _mm512_setzero_ps());
      m = _mm512_max_ps(_mm512_and_ps(x1, abs_mask), m);
      const float amax = _mm512_reduce_max_ps(m);
      const float dx = amax / 127.0f, id = dx != 0.0f ? 1.0f / dx : 0.0f;
      const __m512 vid = _mm512_set1_ps(id);
      // Clamped before rounding (the same result: 127 and -127 are integers); min_ps(NaN, 127)
      // is 127, as std::min(127, NaN) in the loop.
      const __m512i q0 =
          _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(x0, vid), hi), lo));
      const __m512i q1 =
          _mm512_cvtps_epi32(_mm512_max_ps(_mm512_min_ps(_mm512_mul_ps(x1, vid), hi), lo));
      int8_t* qb = q + t * K + 32 * b;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qb), _mm512_cvtepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qb + 16), _mm512_cvtepi32_epi8(q1));
      d[t * nb + b] = dx;
      s[t * nb + b] = _mm512_reduce_add_epi32(_mm512_add_epi32(q0, q1));
    }
}

}  // namespace whale::detail
