// Integer dot-product kernels for GGML's 32-value block types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1)
// and the k-quants of the q4_k_m / q5_k_m mixes (Q4_K, Q5_K, Q6_K).
//
// As in llama.cpp, the activations are quantized too: each token's row of K values is cut into
// blocks of 32, and block b becomes 32 int8 values xq with one f32 scale dx = max|x| / 127,
// xq = x / dx rounded to the nearest integer (llama.cpp's Q8_0 rule, except that halves round to
// even here, as the vector conversions do). A weight block is stored
// as small unsigned integers u (0..255) with an f16 scale dw, an offset `off` and, for the _1
// types, a minimum m:
//   Q8_0  w = dw * (u - 128)   (u = q + 128: the int8 value with its top bit flipped)
//   Q4_0  w = dw * (u - 8)     Q5_0  w = dw * (u - 16)
//   Q4_1  w = dw * u + m       Q5_1  w = dw * u + m
// so the dot product of one weight block with one activation block is
//   dx * (dw * (sum_j u_j xq_j - off * sum_j xq_j) + m * sum_j xq_j)
// where sum_j u_j xq_j is an exact integer (unsigned 8-bit times signed 8-bit: one AVX-512 VNNI
// vpdpbusd per 64 bytes; AVX2 has vpmaddubsw) and sum_j xq_j is computed once per activation
// block. Only the f32 accumulation across blocks differs between the instruction sets.
//
// The k-quants hold 256 values per super-block, with a scale per 32 values (Q4_K, Q5_K: a 6-bit
// scale sc_j and minimum m_j times the f16 d and dmin) or per 16 values (Q6_K: an int8 scale
// times d):
//   Q4_K, Q5_K  w = d sc_j u - dmin m_j     (u 0..15 or 0..31)
//   Q6_K        w = d sc_k (u - 32)         (u 0..63)
// and the same 32-value activation blocks serve them (llama.cpp quantizes activations for these
// types in blocks of 256 instead, Q8_K: one scale per 256 values, so its rounding is coarser):
// per activation block b the integer dot products of the block's one (or two 16-value) weight
// groups times dx_b and the group's scale, minus the minimum (or the offset 32) times the
// activation sums.
//
// What this costs in accuracy is the activation rounding: each x is moved by at most dx / 2
// (relative error <= 1/254 of the block's largest value).
#pragma once

#include <cstdint>

#include "kernels/linear.h"

namespace whale {

// Whether linear()/linear_many() compute products with these weight types through the int8
// kernels (default: yes, unless the environment sets WHALE_INT8=0). When off, the weights are
// dequantized to f32 and the activations used as they are (slower, no activation rounding).
bool int8_activations_enabled();
void set_int8_activations(bool on);

// True for the weight types the int8 kernels handle (the k-quants need K a multiple of 256).
bool int8_dtype(DType t);
// The types whose prefill (more than kInt8MaxTokens tokens) the AVX-512 int8 GEMM takes (with K a
// multiple of 64): all int8 types but Q6_K, whose scale per 16 values keeps the dequantizing GEMM.
inline bool int8_gemm_dtype(DType t) {
  return int8_dtype(t) && t != DType::Q6_K;
}

// Activations quantized in 32-value blocks, token-major: for token t and block b (K / 32 blocks),
// the values q[t * K + 32 b + j], the scale d[t * nb + b] and the sum s[t * nb + b] of the 32
// values.
struct QuantizedActs {
  const int8_t* q = nullptr;
  const float* d = nullptr;
  const int32_t* s = nullptr;
  int64_t n = 0, K = 0;  // tokens, values per token (a multiple of 32)
  int64_t blocks() const { return K / 32; }
  // For the AVX-512 kernel (K a multiple of 64), per token and pair of blocks (b, b + 1), 16
  // lanes ready to use (expand_activation_pairs): d2 = [d_b x 8, d_b+1 x 8]; ns2 = -s_b in
  // lane 0 and -s_b+1 in lane 8, else 0 (an integer accumulator's start, shifted left by
  // log2(offset)); ds2 = d_b s_b in lane 0 and d_b+1 s_b+1 in lane 8, else 0 (for the minimum).
  // [n][K / 64][16] each; null when absent.
  const float* d2 = nullptr;
  const int32_t* ns2 = nullptr;
  const float* ds2 = nullptr;
};

// Quantizes x [n][K] (K a multiple of 32) into q [n][K], d and s [n][K / 32].
void quantize_activations(const float* x, int64_t n, int64_t K, int8_t* q, float* d, int32_t* s);
// Fills a.d2, a.ns2, a.ds2's storage ([n][K / 64][16] each, K a multiple of 64) from a.d, a.s.
void expand_activation_pairs(const QuantizedActs& a, float* d2, int32_t* ns2, float* ds2);

namespace detail {

// quantize_activations: the plain loop, and the AVX-512 one (the same bytes: the same scale
// arithmetic, rounding half to even, NaN ignored by the maximum and mapped to 127).
void quantize_activations_scalar(const float* x, int64_t n, int64_t K, int8_t* q, float* d,
                                 int32_t* s);
void quantize_activations_avx512(const float* x, int64_t n, int64_t K, int8_t* q, float* d,
                                 int32_t* s);

// One instruction set's int8 kernel: rows [r0, r1) of y = linear(x, n, w) from the quantized
// activations, y[t * w.rows + r], on the calling thread.
using QLinearRows = void (*)(const QuantizedActs& x, const WeightRef& w, int64_t r0, int64_t r1,
                             float* y);
extern const QLinearRows kQLinearScalar;
extern const QLinearRows kQLinearAvx2;    // qlinear_avx2.cpp
extern const QLinearRows kQLinearAvx512;  // qlinear_avx512.cpp (VNNI)
// The table of the active instruction set (kernels/cpu.h).
QLinearRows active_qlinear();
// Rows [r0, r1) of an _X16 matrix (kernels/repack.h) through `kernel`, which only knows the
// GGML layout: each group of 16 rows is rebuilt as GGML rows in a per-thread buffer first.
void qlinear_x16_via_plain(QLinearRows kernel, const QuantizedActs& x, const WeightRef& w,
                           int64_t r0, int64_t r1, float* y);

// Per weight block: the unsigned values u[32], the scale dw, the minimum m and the offset.
// The plain reference the kernels follow (and the scalar kernel).
struct UnpackedBlock {
  uint8_t u[32];
  float dw = 0, m = 0;
  int32_t off = 0;
};
void unpack_block(DType t, const uint8_t* block, UnpackedBlock* out);

// Per k-quant super-block (256 values): the unsigned values u[256], the scale of each 16 values
// (Q4_K / Q5_K: d sc_j for both halves of sub-block j), the minimum term of each 32 values
// (-dmin m_j; 0 for Q6_K) and the offset (32 for Q6_K, else 0):
//   w[16 k + i] = dw16[k] * (u[16 k + i] - off) + m32[k / 2]
struct UnpackedSuper {
  uint8_t u[256];
  float dw16[16];
  float m32[8];
  int32_t off = 0;
};
void unpack_superblock(DType t, const uint8_t* block, UnpackedSuper* out);
// True for the k-quants the int8 kernels handle (Q4_K, Q5_K, Q6_K).
inline bool kquant_dtype(DType t) {
  return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}
// The six-bit scales and minimums of Q4_K / Q5_K (12 bytes at `packed`) as bytes: sc[0..8) the
// scales, mn[0..8) the minimums. Bytes 0-3 hold scales 0-3 and bytes 4-7 minimums 0-3 in their
// low six bits; the top two bits of bytes 0-3 (4-7) are the top bits of scales (minimums) 4-7,
// whose low four bits are the low (high) nibbles of bytes 8-11. Four at a time in 32-bit words
// (inline: the kernels call it once per super-block).
inline void unpack_scale_min_k4(const uint8_t* packed, uint8_t sc[8], uint8_t mn[8]) {
  uint32_t w[3];
  __builtin_memcpy(w, packed, 12);
  constexpr uint32_t k6 = 0x3f3f3f3f, k4 = 0x0f0f0f0f, k2 = 0x03030303;
  const uint32_t s_lo = w[0] & k6, m_lo = w[1] & k6;
  const uint32_t s_hi = (w[2] & k4) | ((w[0] >> 6) & k2) << 4;
  const uint32_t m_hi = ((w[2] >> 4) & k4) | ((w[1] >> 6) & k2) << 4;
  __builtin_memcpy(sc, &s_lo, 4);
  __builtin_memcpy(sc + 4, &s_hi, 4);
  __builtin_memcpy(mn, &m_lo, 4);
  __builtin_memcpy(mn + 4, &m_hi, 4);
}

}  // namespace detail

}  // namespace whale
