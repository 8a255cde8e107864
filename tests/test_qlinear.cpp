// The int8 kernels for GGML's 32-value block types and the k-quants (kernels/qlinear.h) on every
// instruction-set path this CPU runs: activation quantization against its definition, products
// against a plain float64 loop over the dequantized weights (tensor/quant.h's reference
// dequantizers) and the dequantized activations, and the cost of activation rounding against its
// bound. On AVX-512, more than kInt8MaxTokens tokens take the int8 GEMM (K a multiple of 64, any
// type but Q6_K) or else the dequantizing GEMM, checked against the same loop with the f32
// activations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "isa_scope.h"
#include "kernels/cpu.h"
#include "kernels/linear.h"
#include "kernels/qlinear.h"
#include "kernels/repack.h"
#include "tensor/quant.h"

namespace whale {
namespace {

class Int8Scope {
 public:
  explicit Int8Scope(bool on) : saved_(int8_activations_enabled()) { set_int8_activations(on); }
  ~Int8Scope() { set_int8_activations(saved_); }

 private:
  bool saved_;
};

const DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0,
                        DType::Q5_1, DType::Q4_K, DType::Q5_K, DType::Q6_K};

bool is_kquant(DType t) {
  return t == DType::Q4_K || t == DType::Q5_K || t == DType::Q6_K;
}

// Row lengths: ragged numbers of blocks (odd, not a multiple of 64) for the 32-value types, of
// super-blocks for the k-quants.
std::vector<int64_t> lengths(DType t) {
  if (is_kquant(t)) return {256, 768, 1024};
  return {32, 64, 96, 320, 1024, 1600};
}

std::vector<Isa> supported_isas() {
  std::vector<Isa> v;
  for (Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512})
    if (isa_supported(isa)) v.push_back(isa);
  return v;
}

// A [rows x cols] matrix of type t: quantized from normal values, or (raw) random bytes in
// every quant field with sane f16 scales, which reaches codes the quantizers never write (the
// int8 -128 of Q8_0).
std::vector<uint8_t> make_matrix(DType t, int64_t rows, int64_t cols, bool raw, std::mt19937& rng) {
  const size_t row_bytes = dtype_row_bytes(t, cols);
  std::vector<uint8_t> m(row_bytes * size_t(rows));
  std::normal_distribution<float> nd;
  if (!raw) {
    std::vector<float> v(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; r++) {
      for (float& x : v) x = nd(rng);
      quantize_row(dtype_to_ggml(t), v.data(), cols, m.data() + size_t(r) * row_bytes);
    }
    return m;
  }
  for (uint8_t& b : m) b = uint8_t(rng());
  const size_t bb = row_bytes / size_t(cols / (is_kquant(t) ? 256 : 32));
  // Q4_K / Q5_K: d and a positive dmin first; Q6_K: d last.
  const bool has_min = t == DType::Q4_1 || t == DType::Q5_1 || t == DType::Q4_K || t == DType::Q5_K;
  const size_t d_at = t == DType::Q6_K ? 208 : 0;
  for (size_t at = 0; at < m.size(); at += bb) {
    const uint16_t d = f32_to_f16(0.01f + 0.02f * float(rng() % 100) / 100.0f);
    std::memcpy(&m[at + d_at], &d, 2);
    if (has_min) {
      const float lo = is_kquant(t) ? 0.0f : -0.2f;
      const uint16_t mn = f32_to_f16(lo + 0.004f * float(rng() % 100));
      std::memcpy(&m[at + 2], &mn, 2);
    }
  }
  return m;
}

WeightRef ref_of(DType t, int64_t rows, int64_t cols, const std::vector<uint8_t>& m) {
  WeightRef w;
  w.dtype = t;
  w.rows = rows;
  w.cols = cols;
  w.data = m.data();
  return w;
}

TEST(QuantizeActivations, FollowsTheDefinition) {
  std::mt19937 rng(3);
  std::normal_distribution<float> nd;
  const int64_t n = 3, K = 96;
  std::vector<float> x(size_t(n * K));
  for (float& v : x) v = nd(rng) * 3.0f;
  for (int j = 0; j < 32; j++) x[size_t(32 + j)] = 0.0f;  // an all-zero block
  x[70] = 2.5f;                                           // block 2 of token 0: one large value
  std::vector<int8_t> q(x.size());
  std::vector<float> d(size_t(n * K / 32));
  std::vector<int32_t> s(d.size());
  quantize_activations(x.data(), n, K, q.data(), d.data(), s.data());
  for (int64_t b = 0; b < n * K / 32; b++) {
    float amax = 0;
    int32_t sum = 0, qmax = 0;
    for (int j = 0; j < 32; j++) {
      const float xv = x[size_t(32 * b + j)];
      const int8_t qv = q[size_t(32 * b + j)];
      amax = std::max(amax, std::fabs(xv));
      sum += qv;
      qmax = std::max(qmax, std::abs(int32_t(qv)));
      ASSERT_LE(std::abs(int32_t(qv)), 127);
      ASSERT_LE(std::fabs(xv - d[size_t(b)] * qv), d[size_t(b)] * 0.5f * (1 + 1e-5f) + 1e-30f);
    }
    EXPECT_EQ(d[size_t(b)], amax / 127.0f) << "block " << b;
    EXPECT_EQ(s[size_t(b)], sum) << "block " << b;
    if (amax > 0) {
      EXPECT_EQ(qmax, 127) << "block " << b;
    }
  }
  EXPECT_EQ(d[1], 0.0f);
}

// The AVX-512 quantizer writes the plain loop's bytes: normal values, ties (x = k + 1/2 times
// the scale), all-zero blocks, NaN and infinities, subnormals.
TEST(QuantizeActivations, VectorLoopEqualsThePlainLoop) {
  if (!isa_supported(Isa::Avx512)) GTEST_SKIP() << "no AVX-512 on this CPU";
  std::mt19937 rng(17);
  std::normal_distribution<float> nd;
  const int64_t n = 5, K = 320, nb = K / 32;
  std::vector<float> x(size_t(n * K));
  for (float& v : x) v = nd(rng) * 4.0f;
  for (int j = 0; j < 32; j++) {
    x[size_t(32 + j)] = 0.0f;                        // block 1: zeros
    x[size_t(64 + j)] = float(j % 7) - 3.0f + 0.5f;  // block 2: ties once scaled
    x[size_t(96 + j)] = 1e-40f * float(j + 1);       // block 3: subnormals
  }
  x[64] = 127.0f;  // block 2's scale: exactly 1
  x[130] = std::nanf("");
  x[170] = std::numeric_limits<float>::infinity();
  x[200] = -std::numeric_limits<float>::infinity();
  x[201] = std::nanf("");
  std::vector<int8_t> q1(x.size()), q2(x.size());
  std::vector<float> d1(size_t(n * nb)), d2(d1.size());
  std::vector<int32_t> s1(d1.size()), s2(d1.size());
  detail::quantize_activations_scalar(x.data(), n, K, q1.data(), d1.data(), s1.data());
  detail::quantize_activations_avx512(x.data(), n, K, q2.data(), d2.data(), s2.data());
  EXPECT_EQ(q1, q2);
  EXPECT_EQ(s1, s2);
  for (size_t i = 0; i < d1.size(); i++) EXPECT_EQ(std::memcmp(&d1[i], &d2[i], 4), 0) << i;
  EXPECT_EQ(q1[size_t(64 + 1)], -2);  // -1.5 rounds to even
  EXPECT_EQ(q1[size_t(64 + 4)], 2);   // 1.5 rounds to even
}

// y[t][r] in float64 from the dequantized weights and the dequantized activations, plus
// sum |w| |x| (the scale of the f32 rounding of the kernels' accumulation).
void reference(DType t, const std::vector<uint8_t>& m, int64_t rows, int64_t K,
               const std::vector<float>& x, int64_t n, std::vector<double>* y,
               std::vector<double>* mag, bool int8 = true) {
  std::vector<int8_t> q(size_t(n * K));
  std::vector<float> d(size_t(n * K / 32));
  std::vector<int32_t> s(d.size());
  quantize_activations(x.data(), n, K, q.data(), d.data(), s.data());
  std::vector<float> wr(static_cast<size_t>(K));
  y->assign(size_t(n * rows), 0.0);
  mag->assign(size_t(n * rows), 0.0);
  for (int64_t r = 0; r < rows; r++) {
    dequantize_row(dtype_to_ggml(t), m.data() + size_t(r) * dtype_row_bytes(t, K), K, wr.data());
    for (int64_t tk = 0; tk < n; tk++) {
      double acc = 0, a = 0;
      for (int64_t c = 0; c < K; c++) {
        const double xv = int8 ? double(d[size_t((tk * K + c) / 32)]) * q[size_t(tk * K + c)]
                               : double(x[size_t(tk * K + c)]);
        acc += double(wr[size_t(c)]) * xv;
        a += std::fabs(double(wr[size_t(c)]) * xv);
      }
      (*y)[size_t(tk * rows + r)] = acc;
      (*mag)[size_t(tk * rows + r)] = a;
    }
  }
}

TEST(Int8Kernels, MatchTheFloat64LoopOnEveryTypeAndPath) {
  Int8Scope on(true);
  std::mt19937 rng(11);
  std::normal_distribution<float> nd;
  int checked = 0;
  for (Isa isa : supported_isas()) {
    IsaScope scope(isa);
    for (DType t : kTypes)
      for (bool raw : {false, true})
        for (int64_t K : lengths(t))
          for (int64_t rows : {1, 7, 33, 100}) {
            const auto m = make_matrix(t, rows, K, raw, rng);
            const WeightRef w = ref_of(t, rows, K, m);
            for (int64_t n : {1, 2, 3, 4, 5, 9, 19}) {
              std::vector<float> x(size_t(n * K));
              for (float& v : x) v = nd(rng);
              std::vector<float> y(size_t(n * rows));
              linear(x.data(), n, w, y.data());
              // More than kInt8MaxTokens tokens on AVX-512: the int8 GEMM (K a multiple of 64;
              // not Q6_K), else the dequantizing GEMM with exact f32 activations.
              const bool int8 = !(isa == Isa::Avx512 && n > detail::kInt8MaxTokens &&
                                  (!int8_gemm_dtype(t) || K % 64 != 0));
              std::vector<double> want, mag;
              reference(t, m, rows, K, x, n, &want, &mag, int8);
              for (size_t i = 0; i < y.size(); i++)
                ASSERT_NEAR(y[i], want[i], 2e-6 * mag[i] + 1e-30)
                    << isa_name(isa) << " " << dtype_name(t) << (raw ? " raw" : "") << " K=" << K
                    << " rows=" << rows << " n=" << n << " i=" << i;
              checked++;
            }
          }
  }
  EXPECT_GT(checked, 1000);
}

// Against exact f32 activations the only difference is the activation rounding: each value moves
// by at most half its block's scale, so |y - y_f32| <= sum_c |w_c| dx(c) / 2 (plus f32 rounding).
// The typical error is far below that bound; the test also checks it stays under 1% of the
// output's scale on normal data.
TEST(Int8Kernels, ErrorIsTheActivationRoundingOnly) {
  Int8Scope on(true);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  const int64_t rows = 64, K = 512, n = 4;
  for (DType t : kTypes) {
    const auto m = make_matrix(t, rows, K, false, rng);
    const WeightRef w = ref_of(t, rows, K, m);
    std::vector<float> x(size_t(n * K));
    for (float& v : x) v = nd(rng);
    std::vector<float> y(size_t(n * rows)), yf(y.size());
    linear(x.data(), n, w, y.data());
    ref::linear(x.data(), n, w, yf.data());
    std::vector<float> wr(static_cast<size_t>(K));
    double err2 = 0, ref2 = 0;
    for (int64_t r = 0; r < rows; r++) {
      dequantize_row(dtype_to_ggml(t), m.data() + size_t(r) * dtype_row_bytes(t, K), K, wr.data());
      for (int64_t tk = 0; tk < n; tk++) {
        double bound = 0, scale = 0;
        for (int64_t b = 0; b < K / 32; b++) {
          float amax = 0;
          for (int j = 0; j < 32; j++)
            amax = std::max(amax, std::fabs(x[size_t(tk * K + 32 * b + j)]));
          for (int j = 0; j < 32; j++) {
            bound += std::fabs(wr[size_t(32 * b + j)]) * amax / 127.0 / 2;
            scale += std::fabs(wr[size_t(32 * b + j)] * x[size_t(tk * K + 32 * b + j)]);
          }
        }
        const size_t i = size_t(tk * rows + r);
        ASSERT_LE(std::fabs(y[i] - yf[i]), bound + 1e-5 * scale) << dtype_name(t);
        err2 += double(y[i] - yf[i]) * (y[i] - yf[i]);
        ref2 += double(yf[i]) * yf[i];
      }
    }
    EXPECT_LT(std::sqrt(err2 / ref2), 0.01) << dtype_name(t);
    std::printf("[%s] rms error of int8 activations / rms output = %.2e\n", dtype_name(t).data(),
                std::sqrt(err2 / ref2));
  }
}

// linear_many quantizes an input read by several jobs once; each output equals linear()'s. With
// the int8 path off the block types are dequantized and match the f32 reference loop.
TEST(Int8Kernels, SharedInputsAndTheExactPath) {
  std::mt19937 rng(9);
  std::normal_distribution<float> nd;
  const int64_t K = 256, n = 3;
  const auto a = make_matrix(DType::Q4_0, 40, K, false, rng);
  const auto b = make_matrix(DType::Q8_0, 24, K, false, rng);
  const WeightRef wa = ref_of(DType::Q4_0, 40, K, a), wb = ref_of(DType::Q8_0, 24, K, b);
  std::vector<float> x(size_t(n * K)), x2(x.size());
  for (float& v : x) v = nd(rng);
  for (float& v : x2) v = nd(rng);
  std::vector<float> ya(size_t(n * 40)), yb(size_t(n * 24)), yc(ya.size());
  {
    Int8Scope on(true);
    const LinearJob jobs[] = {
        {x.data(), n, wa, ya.data()}, {x.data(), n, wb, yb.data()}, {x2.data(), n, wa, yc.data()}};
    linear_many(jobs);
    std::vector<float> s(ya.size());
    linear(x.data(), n, wa, s.data());
    EXPECT_EQ(s, ya);
    s.resize(yb.size());
    linear(x.data(), n, wb, s.data());
    EXPECT_EQ(s, yb);
    s.resize(yc.size());
    linear(x2.data(), n, wa, s.data());
    EXPECT_EQ(s, yc);
  }
  {
    Int8Scope off(false);
    std::vector<float> y(ya.size()), yr(ya.size());
    linear(x.data(), n, wa, y.data());
    ref::linear(x.data(), n, wa, yr.data());
    for (size_t i = 0; i < y.size(); i++) ASSERT_NEAR(y[i], yr[i], 1e-4f * (1 + std::fabs(yr[i])));
  }
}

// ---- Q4_0_X16, Q8_0_X16 (kernels/repack.h): rows repacked in groups of 16.

// Every row comes back as it was; Q4_0's repacking only permutes the bytes of each group.
TEST(Repack, RowsComeBackAsTheyWere) {
  std::mt19937 rng(21);
  for (DType t : {DType::Q4_0, DType::Q8_0})
    for (int64_t K : {32, 96, 320}) {
      const int64_t rows = 48;
      const auto m = make_matrix(t, rows, K, true, rng);
      auto x = m;
      repack_x16(t, x.data(), rows, K);
      EXPECT_NE(x, m);
      const size_t rb = dtype_row_bytes(t, K), group = 16 * rb;
      for (int64_t g = 0; g < rows / 16 && t == DType::Q4_0; g++) {
        std::vector<uint8_t> a(m.begin() + g * group, m.begin() + (g + 1) * group);
        std::vector<uint8_t> b(x.begin() + g * group, x.begin() + (g + 1) * group);
        std::sort(a.begin(), a.end());
        std::sort(b.begin(), b.end());
        EXPECT_EQ(a, b) << "group " << g;
      }
      const WeightRef w = ref_of(x16_of(t), rows, K, x);
      for (int64_t r = 0; r < rows; r++) {
        const uint8_t* p = plain_row(w, r);
        ASSERT_TRUE(std::equal(p, p + rb, m.begin() + r * rb))
            << dtype_name(t) << " K=" << K << " row " << r;
      }
    }
  std::vector<uint8_t> odd(size_t(20 * 34));
  EXPECT_THROW(repack_x16(DType::Q4_0, odd.data(), 20, 32), std::invalid_argument);
  EXPECT_THROW(repack_x16(DType::Q4_1, odd.data(), 16, 32), std::invalid_argument);
}

// Every product path on a repacked matrix equals the float64 loop over the matrix it came from:
// the int8 kernels (native on AVX-512: decode tiles and the prefill GEMM, partial groups of a
// view; through plain rows on AVX2 and scalar), the dequantizing path (int8 off), both threads
// (large shapes), weight_row, linear_t and ref::.
TEST(Repack, EveryPathMatchesTheFloat64Loop) {
  std::mt19937 rng(23);
  std::normal_distribution<float> nd;
  int checked = 0;
  for (DType type : {DType::Q4_0, DType::Q8_0})
    for (Isa isa : supported_isas()) {
      IsaScope scope(isa);
      for (bool int8 : {true, false}) {
        Int8Scope i8(int8);
        for (bool raw : {false, true})
          for (int64_t K : {32, 64, 96, 320, 1600})
            for (int64_t rows : {16, 48, 96}) {
              const auto m = make_matrix(type, rows, K, raw, rng);
              auto xm = m;
              repack_x16(type, xm.data(), rows, K);
              const WeightRef w = ref_of(x16_of(type), rows, K, xm);
              for (int64_t n : {1, 2, 3, 4, 5, 6, 7, 13}) {
                std::vector<float> x(size_t(n * K));
                for (float& v : x) v = nd(rng);
                std::vector<float> y(size_t(n * rows));
                linear(x.data(), n, w, y.data());
                // With int8 on, the dequantizing GEMM takes n > 4 tokens on AVX-512 only when K
                // is not a multiple of 64; with it off, every path uses the f32 activations.
                const bool q8 =
                    int8 && !(isa == Isa::Avx512 && n > detail::kInt8MaxTokens && K % 64 != 0);
                std::vector<double> want, mag;
                reference(type, m, rows, K, x, n, &want, &mag, q8);
                for (size_t i = 0; i < y.size(); i++)
                  ASSERT_NEAR(y[i], want[i], 2e-6 * mag[i] + 1e-30)
                      << dtype_name(type) << " " << isa_name(isa) << (int8 ? "" : " int8 off")
                      << (raw ? " raw" : "") << " K=" << K << " rows=" << rows << " n=" << n
                      << " i=" << i;
                // A view from the second group on (a partial last pair of groups).
                if (rows > 16) {
                  const WeightRef v = w.slice_rows(16, rows - 16);
                  std::vector<float> yv(size_t(n * v.rows));
                  linear(x.data(), n, v, yv.data());
                  for (int64_t t = 0; t < n; t++)
                    for (int64_t r = 0; r < v.rows; r++)
                      ASSERT_NEAR(yv[size_t(t * v.rows + r)], y[size_t(t * rows + 16 + r)],
                                  2e-6 * mag[size_t(t * rows + 16 + r)] + 1e-30);
                }
                checked++;
              }
              // weight_row and linear_t dequantize the plain rows.
              std::vector<float> row(static_cast<size_t>(K)), want_row(row.size());
              for (int64_t r : {int64_t(0), rows / 2 + 1, rows - 1}) {
                weight_row(w, r, row.data());
                dequantize_row(dtype_to_ggml(type), m.data() + size_t(r) * dtype_row_bytes(type, K),
                               K, want_row.data());
                ASSERT_EQ(row, want_row) << "row " << r;
                ASSERT_EQ(ref::weight_at(w, r, K - 1), want_row[size_t(K - 1)]);
              }
              std::vector<float> xt(size_t(2 * rows)), yt(size_t(2 * K)), yt_ref(yt.size());
              for (float& v : xt) v = nd(rng);
              linear_t(xt.data(), 2, w, yt.data());
              ref::linear_t(xt.data(), 2, ref_of(type, rows, K, m), yt_ref.data());
              for (size_t i = 0; i < yt.size(); i++)
                ASSERT_NEAR(yt[i], yt_ref[i], 1e-4f * (1 + std::fabs(yt_ref[i])));
            }
      }
    }
  EXPECT_GT(checked, 2000);
  // Both threads: rows split at multiples of 32.
  const int64_t rows = 1024, K = 512;
  for (DType type : {DType::Q4_0, DType::Q8_0}) {
    const auto m = make_matrix(type, rows, K, false, rng);
    auto xm = m;
    repack_x16(type, xm.data(), rows, K);
    for (int64_t n : {1, 3, 40}) {
      std::vector<float> x(size_t(n * K));
      for (float& v : x) v = nd(rng);
      std::vector<float> y(size_t(n * rows));
      linear(x.data(), n, ref_of(x16_of(type), rows, K, xm), y.data());
      std::vector<double> want, mag;
      reference(type, m, rows, K, x, n, &want, &mag, true);
      for (size_t i = 0; i < y.size(); i++) ASSERT_NEAR(y[i], want[i], 2e-6 * mag[i] + 1e-30);
    }
    // A view must start on a group.
    EXPECT_THROW(ref_of(x16_of(type), rows, K, xm).slice_rows(8, 16), std::invalid_argument);
  }
}

}  // namespace
}  // namespace whale
