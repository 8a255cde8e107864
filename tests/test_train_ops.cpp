// Training ops: forwards against hand computations and naive references, backwards against central
// finite differences of a scalar loss (a random projection of the output, so every output element
// carries gradient).
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "grad_check.h"
#include "kernels/cpu.h"
#include "model/config.h"
#include "model/rope.h"
#include "train/ops.h"

namespace whale::train {
namespace {

using Vec = std::vector<float>;

using whale::testing::randn;

using whale::testing::expect_grad_matches;
using whale::testing::project;

// Largest |a[i] - b[i]| over the largest |b[i]| (b the reference).
double rel_diff(const Vec& a, const Vec& b) {
  double diff = 0.0, scale = 1e-30;
  for (size_t i = 0; i < b.size(); i++) {
    diff = std::max(diff, std::fabs(double(a[i]) - double(b[i])));
    scale = std::max(scale, std::fabs(double(b[i])));
  }
  return diff / scale;
}

// Runs f with OpenMP (and so whale, and OpenBLAS) on `threads` threads.
template <class F>
auto with_threads(int threads, F f) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(threads);
  auto r = f();
  omp_set_num_threads(saved);
  return r;
}

// ---- embedding ----

TEST(TrainOpsEmbedding, ForwardCopiesRowsBackwardAccumulatesRepeatedIds) {
  const int64_t V = 3, C = 2, N = 3;
  const Vec wte = {1, 2, 3, 4, 5, 6};
  const std::vector<int32_t> ids = {2, 0, 2};
  Vec out(N * C);
  embedding_forward(out.data(), ids.data(), wte.data(), N, C, V);
  EXPECT_EQ(out, (Vec{5, 6, 1, 2, 5, 6}));

  const Vec dout = {1, 10, 100, 1000, 0.5f, 0.25f};
  Vec dwte(V * C, 1.0f);  // accumulates onto what is there
  embedding_backward(dwte.data(), dout.data(), ids.data(), N, C, V);
  EXPECT_EQ(dwte, (Vec{101, 1001, 1, 1, 2.5f, 11.25f}));
}

TEST(TrainOpsEmbedding, IdOutsideVocabularyIsAnError) {
  const Vec wte(6);
  Vec out(2);
  const std::vector<int32_t> ids = {3};
  EXPECT_THROW(embedding_forward(out.data(), ids.data(), wte.data(), 1, 2, 3),
               std::invalid_argument);
  const std::vector<int32_t> neg = {-1};
  EXPECT_THROW(embedding_forward(out.data(), neg.data(), wte.data(), 1, 2, 3),
               std::invalid_argument);
}

// ---- RMSNorm ----

TEST(TrainOpsRmsNorm, ForwardByHand) {
  // mean(3^2, 4^2) = 12.5
  const Vec x = {3, 4}, w = {1, 2};
  Vec y(2), rstd(1);
  rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), 1, 2, 0.0f);
  EXPECT_NEAR(rstd[0], 1.0 / std::sqrt(12.5), 1e-7);
  EXPECT_NEAR(y[0], 3.0 / std::sqrt(12.5), 1e-6);
  EXPECT_NEAR(y[1], 8.0 / std::sqrt(12.5), 1e-6);
}

TEST(TrainOpsRmsNorm, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(1);
  const int64_t N = 3, C = 8;
  const float eps = 1e-5f;
  Vec x = randn(N * C, rng), w = randn(C, rng), r = randn(N * C, rng);
  Vec y(N * C), rstd(N);
  auto loss = [&] {
    rmsnorm_forward(y.data(), rstd.data(), x.data(), w.data(), N, C, eps);
    return project(y, r);
  };
  loss();
  Vec dx(N * C), dw(C);
  rmsnorm_backward(dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), N, C);
  expect_grad_matches(x, dx, loss, "dx");
  expect_grad_matches(w, dw, loss, "dw");
}

// ---- matmul ----

TEST(TrainOpsMatmul, ForwardByHand) {
  const Vec x = {1, 2, -1, 3};       // [2][2]
  const Vec W = {1, 0, 0, 1, 1, 1};  // [3][2]
  Vec y(6);
  matmul_forward(y.data(), x.data(), W.data(), 2, 2, 3);
  EXPECT_EQ(y, (Vec{1, 2, 3, -1, 3, 2}));
}

TEST(TrainOpsMatmul, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(2);
  const int64_t N = 4, in = 5, out = 3;
  Vec x = randn(N * in, rng), W = randn(out * in, rng), r = randn(N * out, rng);
  Vec y(N * out);
  auto loss = [&] {
    matmul_forward(y.data(), x.data(), W.data(), N, in, out);
    return project(y, r);
  };
  Vec dx(N * in), dW(out * in);
  matmul_backward(dx.data(), dW.data(), r.data(), x.data(), W.data(), N, in, out);
  expect_grad_matches(x, dx, loss, "dx");
  expect_grad_matches(W, dW, loss, "dW");

  // A second call adds the same again; without dx only dW is touched.
  Vec dW2 = dW;
  matmul_backward(nullptr, dW2.data(), r.data(), x.data(), W.data(), N, in, out);
  for (size_t i = 0; i < dW.size(); i++) EXPECT_FLOAT_EQ(dW2[i], 2 * dW[i]);
}

// The sgemm path against the plain loops, at odd sizes large enough to run on every thread.
TEST(TrainOpsMatmul, BlasMatchesPlainLoops) {
  std::mt19937 rng(3);
  const int64_t N = 67, in = 45, out = 130;
  ASSERT_GE(N * in * out, kParallelMinWork);
  const Vec x = randn(N * in, rng), W = randn(out * in, rng), dy = randn(N * out, rng);
  Vec y(N * out), y_ref(N * out);
  matmul_forward(y.data(), x.data(), W.data(), N, in, out);
  matmul_forward_ref(y_ref.data(), x.data(), W.data(), N, in, out);
  EXPECT_LT(rel_diff(y, y_ref), 1e-6);
  Vec again(N * out);  // the same bits on a second run (exact resume)
  matmul_forward(again.data(), x.data(), W.data(), N, in, out);
  EXPECT_EQ(again, y);

  // Both accumulate onto what the buffers hold.
  const Vec dx0 = randn(N * in, rng), dW0 = randn(out * in, rng);
  Vec dx = dx0, dW = dW0, dx_ref = dx0, dW_ref = dW0;
  matmul_backward(dx.data(), dW.data(), dy.data(), x.data(), W.data(), N, in, out);
  matmul_backward_ref(dx_ref.data(), dW_ref.data(), dy.data(), x.data(), W.data(), N, in, out);
  EXPECT_LT(rel_diff(dx, dx_ref), 1e-6);
  EXPECT_LT(rel_diff(dW, dW_ref), 1e-6);

  Vec dW_only = dW0;
  matmul_backward(nullptr, dW_only.data(), dy.data(), x.data(), W.data(), N, in, out);
  EXPECT_EQ(dW_only, dW);
}

// Each group's rows against matmul_*_ref with that group's weights; the two layouts of groups
// take the two paths (spread over the threads / one after another).
TEST(TrainOpsMatmul, GroupedEqualsOneProductPerGroup) {
  const int64_t in = 24, out = 40, G = 5;
  const std::vector<std::vector<int64_t>> layouts = {{0, 60, 120, 180, 240, 300},  // balanced
                                                     {0, 30, 30, 31, 290, 300}};   // skewed
  for (const auto& offset : layouts) {
    std::mt19937 rng(4);
    const int64_t rows = offset.back();
    const Vec x = randn(rows * in, rng), W = randn(G * out * in, rng), dy = randn(rows * out, rng);
    Vec y(rows * out, 7.0f), y_ref(rows * out, 7.0f);
    const Vec dx0 = randn(rows * in, rng), dW0 = randn(G * out * in, rng);
    Vec dx = dx0, dW = dW0, dx_ref = dx0, dW_ref = dW0;
    matmul_forward_grouped(y.data(), x.data(), W.data(), offset.data(), G, in, out);
    matmul_backward_grouped(dx.data(), dW.data(), dy.data(), x.data(), W.data(), offset.data(), G,
                            in, out);
    for (int64_t g = 0; g < G; g++) {
      const int64_t o = offset[size_t(g)], m = offset[size_t(g + 1)] - o;
      matmul_forward_ref(y_ref.data() + o * out, x.data() + o * in, W.data() + g * out * in, m, in,
                         out);
      matmul_backward_ref(dx_ref.data() + o * in, dW_ref.data() + g * out * in, dy.data() + o * out,
                          x.data() + o * in, W.data() + g * out * in, m, in, out);
    }
    EXPECT_LT(rel_diff(y, y_ref), 1e-6) << "layout ending " << offset[4];
    EXPECT_LT(rel_diff(dx, dx_ref), 1e-6) << "layout ending " << offset[4];
    EXPECT_LT(rel_diff(dW, dW_ref), 1e-6) << "layout ending " << offset[4];
  }
}

TEST(TrainOpsGemm, TransposesAndEmptyInnerDimension) {
  // A [2][3], B [3][2]; op(A) op(B) for each transpose flag, against a hand loop.
  const Vec A = {1, 2, 3, 4, 5, 6}, B = {1, -1, 2, 0, 0, 3};
  auto at = [&](bool t, int64_t i, int64_t k) {
    return t ? A[size_t(k * 2 + i)] : A[size_t(i * 3 + k)];
  };
  for (bool ta : {false, true})
    for (bool tb : {false, true}) {
      // op(A) [M][K] with M = 2, K = 3 uses A as [3][2] when transposed (same values, other view).
      const int64_t M = 2, N = 2, K = 3;
      Vec C(4, 1.0f);
      gemm(ta, tb, M, N, K, 2.0f, A.data(), ta ? 2 : 3, B.data(), tb ? 3 : 2, 0.5f, C.data(), 2, 1);
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
          double want = 0.5;
          for (int64_t k = 0; k < K; k++)
            want += 2.0 * at(ta, i, k) * (tb ? B[size_t(j * 3 + k)] : B[size_t(k * 2 + j)]);
          EXPECT_FLOAT_EQ(C[size_t(i * 2 + j)], float(want)) << ta << tb << i << j;
        }
    }
  Vec C = {1, 2, 3, 4};
  gemm(false, false, 2, 2, 0, 1.0f, nullptr, 0, nullptr, 0, 3.0f, C.data(), 2, 1);
  EXPECT_EQ(C, (Vec{3, 6, 9, 12}));
  gemm(false, false, 2, 2, 0, 1.0f, nullptr, 0, nullptr, 0, 0.0f, C.data(), 2, 1);
  EXPECT_EQ(C, Vec(4, 0.0f));
}

// With threads > 1, C is split by rows (M >= N) or by columns (N > M) over the team, at part
// boundaries that are not all multiples of the tile size: every transpose against a double loop.
TEST(TrainOpsGemm, SplitOverThreadsMatchesDoubleLoop) {
  std::mt19937 rng(6);
  for (auto [M, N] : {std::pair<int64_t, int64_t>{101, 37}, {37, 101}})
    for (bool ta : {false, true})
      for (bool tb : {false, true}) {
        const int64_t K = 50;
        const Vec A = randn(M * K, rng), B = randn(K * N, rng), C0 = randn(M * N, rng);
        const int64_t lda = ta ? M : K, ldb = tb ? K : N;
        Vec C = C0;
        gemm(ta, tb, M, N, K, 0.5f, A.data(), lda, B.data(), ldb, 2.0f, C.data(), N, 2);
        Vec want(M * N);
        for (int64_t i = 0; i < M; i++)
          for (int64_t j = 0; j < N; j++) {
            double d = 2.0 * C0[size_t(i * N + j)];
            for (int64_t k = 0; k < K; k++)
              d += 0.5 * A[size_t(ta ? k * lda + i : i * lda + k)] *
                   B[size_t(tb ? j * ldb + k : k * ldb + j)];
            want[size_t(i * N + j)] = float(d);
          }
        EXPECT_LT(rel_diff(C, want), 1e-6) << M << "x" << N << " " << ta << tb;
      }
}

// gemm sizes OpenBLAS's team for one call only: OpenMP's setting is back afterwards.
TEST(TrainOpsGemm, LeavesTheThreadSettingAlone) {
  std::mt19937 rng(5);
  const int64_t n = 64;
  const Vec A = randn(n * n, rng), B = randn(n * n, rng);
  Vec C(n * n);
  const int before = omp_get_max_threads();
  gemm(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n, 1);
  EXPECT_EQ(omp_get_max_threads(), before);
  gemm(false, false, n, n, n, 1.0f, A.data(), n, B.data(), n, 0.0f, C.data(), n, before + 1);
  EXPECT_EQ(omp_get_max_threads(), before);
  // whale's -t setting decides the count of threads_for.
  set_num_threads(1);
  EXPECT_EQ(threads_for(kParallelMinWork), 1);
  set_num_threads(0);
  EXPECT_EQ(threads_for(kParallelMinWork), omp_get_max_threads());
  EXPECT_EQ(threads_for(kParallelMinWork - 1), 1);
}

// ---- SwiGLU ----

TEST(TrainOpsSwiGLU, ForwardByHand) {
  const Vec g = {0, 1, -2}, u = {5, 2, 3};
  Vec h(3);
  swiglu_forward(h.data(), g.data(), u.data(), 3);
  EXPECT_EQ(h[0], 0.0f);
  EXPECT_NEAR(h[1], 2.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(h[2], 3.0 * -2.0 / (1.0 + std::exp(2.0)), 1e-6);
}

// Long enough for several chunks and threads: every element against the formula in double.
TEST(TrainOpsSwiGLU, ForwardOnManyElementsMatchesFormula) {
  std::mt19937 rng(12);
  const int64_t n = 3 * 4096 + 77;
  const Vec g = randn(n, rng, 4.0f), u = randn(n, rng);
  Vec h(n);
  swiglu_forward(h.data(), g.data(), u.data(), n);
  for (int64_t i = 0; i < n; i++) {
    const double want =
        double(g[size_t(i)]) / (1.0 + std::exp(-double(g[size_t(i)]))) * u[size_t(i)];
    ASSERT_NEAR(h[size_t(i)], want, 1e-6 * std::fabs(want) + 1e-7) << i;
  }
}

TEST(TrainOpsSwiGLU, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(3);
  const int64_t n = 12;
  Vec g = randn(n, rng, 2.0f), u = randn(n, rng), r = randn(n, rng);
  Vec h(n);
  auto loss = [&] {
    swiglu_forward(h.data(), g.data(), u.data(), n);
    return project(h, r);
  };
  Vec dg(n), du(n);
  swiglu_backward(dg.data(), du.data(), r.data(), g.data(), u.data(), n);
  expect_grad_matches(g, dg, loss, "dg");
  expect_grad_matches(u, du, loss, "du");
}

// ---- RoPE ----

// A rope config with YaRN and an attn_factor != 1, so both the frequency blend and the cos/sin
// scaling are exercised.
ModelConfig yarn_config(int64_t rope_dim) {
  ModelConfig c;
  c.qk_rope_head_dim = rope_dim;
  c.rope_theta = 10000.0;
  c.yarn.enabled = true;
  c.yarn.factor = 40.0;
  c.yarn.original_max_position_embeddings = 64;
  c.yarn.mscale = 1.0;
  c.yarn.mscale_all_dim = 0.5;
  return c;
}

TEST(TrainOpsRope, ForwardEqualsInferenceRope) {
  const int64_t T = 300, H = 3, nope = 3, rope = 8, dqk = nope + rope;
  const Rope inference(yarn_config(rope));
  ASSERT_NE(inference.attn_factor(), 1.0);
  const RopeTable tab(inference, T);
  std::mt19937 rng(4);
  const Vec q0 = randn(T * H * dqk, rng);
  Vec q = q0, want = q0;
  rope_forward(q.data() + nope, tab, T, H, dqk);
  for (int64_t t = 0; t < T; t++) inference.apply(want.data() + t * H * dqk + nope, H, dqk, t);
  EXPECT_EQ(q, want);  // the nope part untouched, the rope part bit-equal

  // Shared k_pe: one "head" with stride = rope dim.
  Vec k = randn(T * rope, rng), kwant = k;
  rope_forward(k.data(), tab, T, 1, rope);
  for (int64_t t = 0; t < T; t++) inference.apply(kwant.data() + t * rope, 1, rope, t);
  EXPECT_EQ(k, kwant);
}

TEST(TrainOpsRope, BackwardMatchesFiniteDifferences) {
  const int64_t T = 5, H = 2, nope = 2, rope = 4, dqk = nope + rope;
  const Rope inference(yarn_config(rope));
  const RopeTable tab(inference, T);
  std::mt19937 rng(5);
  Vec x = randn(T * H * dqk, rng), r = randn(T * H * dqk, rng);
  auto loss = [&] {
    Vec y = x;
    rope_forward(y.data() + nope, tab, T, H, dqk);
    return project(y, r);
  };
  Vec dx = r;
  rope_backward(dx.data() + nope, tab, T, H, dqk);
  expect_grad_matches(x, dx, loss, "dx");
}

TEST(TrainOpsRope, BackwardUndoesForwardWithoutYarn) {
  ModelConfig c = yarn_config(6);
  c.yarn.enabled = false;
  const RopeTable tab(Rope(c), 7);
  std::mt19937 rng(6);
  const Vec x0 = randn(7 * 6, rng);
  Vec x = x0;
  rope_forward(x.data(), tab, 7, 1, 6);
  EXPECT_NE(x, x0);
  rope_backward(x.data(), tab, 7, 1, 6);
  for (size_t i = 0; i < x.size(); i++) EXPECT_NEAR(x[i], x0[i], 1e-6) << i;
}

TEST(TrainOpsRope, SequenceLongerThanTableIsAnError) {
  const RopeTable tab(Rope(yarn_config(4)), 3);
  Vec x(4 * 4);
  EXPECT_THROW(rope_forward(x.data(), tab, 4, 1, 4), std::invalid_argument);
}

// ---- attention ----

struct AttnInputs {
  AttnShape s;
  Vec q, k_nope, k_pe, v;
  AttnInputs(const AttnShape& shape, uint32_t seed) : s(shape) {
    std::mt19937 rng(seed);
    q = randn(s.B * s.T * s.H * s.dqk(), rng);
    k_nope = randn(s.B * s.T * s.H * s.nope, rng);
    k_pe = randn(s.B * s.T * s.rope, rng);
    v = randn(s.B * s.T * s.H * s.dv, rng);
  }
  Vec forward(Vec* att_out = nullptr, bool ref = false) const {
    Vec out(s.B * s.T * s.H * s.dv), att(s.B * s.H * s.T * s.T);
    (ref ? causal_attention_forward_ref : causal_attention_forward)(
        out.data(), att.data(), q.data(), k_nope.data(), k_pe.data(), v.data(), s);
    if (att_out) *att_out = att;
    return out;
  }
  // Gradients accumulated onto `start` (dq, dk_nope, dk_pe, dv, then datt), given dout.
  std::vector<Vec> backward(const Vec& dout, const Vec& att, std::vector<Vec> start,
                            bool ref = false) const {
    start.resize(5);
    (ref ? causal_attention_backward_ref : causal_attention_backward)(
        start[0].data(), start[1].data(), start[2].data(), start[3].data(), start[4].data(),
        dout.data(), q.data(), k_nope.data(), k_pe.data(), v.data(), att.data(), s);
    return start;
  }
};

const AttnShape kShape{.T = 5, .H = 3, .nope = 4, .rope = 2, .dv = 3, .scale = 0.45f};

TEST(TrainOpsAttention, ForwardMatchesNaiveReference) {
  const AttnInputs a(kShape, 7);
  const AttnShape& s = a.s;
  Vec att;
  const Vec out = a.forward(&att);
  // Reference in double: full score matrix with -inf above the diagonal, softmax, weighted sum.
  for (int64_t h = 0; h < s.H; h++)
    for (int64_t i = 0; i < s.T; i++) {
      std::vector<double> sc(size_t(s.T));
      for (int64_t j = 0; j < s.T; j++) {
        double d = 0.0;
        for (int64_t c = 0; c < s.dqk(); c++) {
          const double kc = c < s.nope ? a.k_nope[size_t((j * s.H + h) * s.nope + c)]
                                       : a.k_pe[size_t(j * s.rope + c - s.nope)];
          d += double(a.q[size_t((i * s.H + h) * s.dqk() + c)]) * kc;
        }
        sc[size_t(j)] = j <= i ? d * s.scale : -INFINITY;
      }
      double z = 0.0;
      for (double x : sc) z += std::exp(x);
      for (int64_t c = 0; c < s.dv; c++) {
        double o = 0.0;
        for (int64_t j = 0; j < s.T; j++)
          o += std::exp(sc[size_t(j)]) / z * a.v[size_t((j * s.H + h) * s.dv + c)];
        EXPECT_NEAR(out[size_t((i * s.H + h) * s.dv + c)], o, 1e-5) << h << " " << i << " " << c;
      }
      for (int64_t j = 0; j < s.T; j++)
        EXPECT_NEAR(att[size_t((h * s.T + i) * s.T + j)], std::exp(sc[size_t(j)]) / z, 1e-6);
    }
}

TEST(TrainOpsAttention, LaterTokensDoNotChangeEarlierOutputs) {
  const AttnInputs a(kShape, 8);
  AttnInputs b = a;
  const AttnShape& s = a.s;
  const int64_t last = s.T - 1;
  for (int64_t c = 0; c < s.H * s.dqk(); c++) b.q[size_t(last * s.H * s.dqk() + c)] += 1.0f;
  for (int64_t c = 0; c < s.H * s.nope; c++) b.k_nope[size_t(last * s.H * s.nope + c)] -= 2.0f;
  for (int64_t c = 0; c < s.rope; c++) b.k_pe[size_t(last * s.rope + c)] += 3.0f;
  for (int64_t c = 0; c < s.H * s.dv; c++) b.v[size_t(last * s.H * s.dv + c)] *= -4.0f;
  const Vec oa = a.forward(), ob = b.forward();
  const size_t row = size_t(s.H * s.dv);
  for (size_t i = 0; i < size_t(last) * row; i++) EXPECT_EQ(oa[i], ob[i]) << i;
  bool last_changed = false;
  for (size_t i = size_t(last) * row; i < oa.size(); i++) last_changed |= oa[i] != ob[i];
  EXPECT_TRUE(last_changed);
}

// The plain reference, as the blocked version below, against central differences.
TEST(TrainOpsAttention, ReferenceBackwardMatchesFiniteDifferences) {
  AttnInputs a(kShape, 9);
  const AttnShape& s = a.s;
  std::mt19937 rng(10);
  const Vec r = randn(s.T * s.H * s.dv, rng);
  auto loss = [&] { return project(a.forward(nullptr, true), r); };
  Vec att;
  a.forward(&att, true);
  const std::vector<Vec> d = a.backward(
      r, att,
      {Vec(a.q.size()), Vec(a.k_nope.size()), Vec(a.k_pe.size()), Vec(a.v.size()), Vec(att.size())},
      true);
  expect_grad_matches(a.q, d[0], loss, "dq");
  expect_grad_matches(a.k_nope, d[1], loss, "dk_nope");
  expect_grad_matches(a.k_pe, d[2], loss, "dk_pe");
  expect_grad_matches(a.v, d[3], loss, "dv");
}

// Several sequences, several query blocks with a partial last one (T = 150 = 2 * 64 + 22): the
// blocked sgemm version against the plain loops, gradients accumulated onto nonzero buffers.
TEST(TrainOpsAttention, BlockedMatchesReferenceOverSequencesAndBlocks) {
  const AttnShape s{.T = 150, .H = 3, .nope = 16, .rope = 8, .dv = 12, .scale = 0.2f, .B = 2};
  const AttnInputs a(s, 13);
  Vec att, att_ref;
  const Vec out = a.forward(&att), out_ref = a.forward(&att_ref, true);
  EXPECT_LT(rel_diff(out, out_ref), 1e-5);
  EXPECT_LT(rel_diff(att, att_ref), 1e-5);
  for (size_t i = 0; i < att.size(); i++) {  // exactly zero above the diagonal
    const int64_t j = int64_t(i) % s.T, row = int64_t(i) / s.T % s.T;
    if (j > row) {
      ASSERT_EQ(att[i], 0.0f) << i;
    }
  }

  std::mt19937 rng(14);
  const Vec dout = randn(out.size(), rng);
  const std::vector<Vec> start = {randn(a.q.size(), rng), randn(a.k_nope.size(), rng),
                                  randn(a.k_pe.size(), rng), randn(a.v.size(), rng),
                                  Vec(att.size())};
  const std::vector<Vec> d = a.backward(dout, att, start),
                         d_ref = a.backward(dout, att_ref, start, true);
  const char* names[] = {"dq", "dk_nope", "dk_pe", "dv", "datt"};
  for (size_t t = 0; t < 5; t++) EXPECT_LT(rel_diff(d[t], d_ref[t]), 1e-5) << names[t];
}

// Every (sequence, head, block) runs on one thread with single-threaded sgemms: the same bits on
// one thread and on two, and run after run.
TEST(TrainOpsAttention, SameResultsOnAnyThreadCount) {
  const AttnShape s{.T = 130, .H = 4, .nope = 8, .rope = 8, .dv = 8, .scale = 0.3f, .B = 2};
  const AttnInputs a(s, 15);
  std::mt19937 rng(16);
  const Vec dout = randn(s.B * s.T * s.H * s.dv, rng);
  auto run = [&] {
    Vec att;
    const Vec out = a.forward(&att);
    std::vector<Vec> d = a.backward(dout, att,
                                    {Vec(a.q.size()), Vec(a.k_nope.size()), Vec(a.k_pe.size()),
                                     Vec(a.v.size()), Vec(att.size())});
    d.push_back(out);
    return d;
  };
  const auto two = with_threads(2, run);
  EXPECT_EQ(with_threads(2, run), two);
  EXPECT_EQ(with_threads(1, run), two);
}

TEST(TrainOpsAttention, BackwardMatchesFiniteDifferences) {
  AttnInputs a(kShape, 9);
  const AttnShape& s = a.s;
  std::mt19937 rng(10);
  const Vec r = randn(s.T * s.H * s.dv, rng);
  auto loss = [&] { return project(a.forward(), r); };
  Vec att;
  a.forward(&att);
  Vec dq(a.q.size()), dk_nope(a.k_nope.size()), dk_pe(a.k_pe.size()), dv(a.v.size());
  Vec datt(att.size());
  causal_attention_backward(dq.data(), dk_nope.data(), dk_pe.data(), dv.data(), datt.data(),
                            r.data(), a.q.data(), a.k_nope.data(), a.k_pe.data(), a.v.data(),
                            att.data(), s);
  expect_grad_matches(a.q, dq, loss, "dq");
  expect_grad_matches(a.k_nope, dk_nope, loss, "dk_nope");
  expect_grad_matches(a.k_pe, dk_pe, loss, "dk_pe");
  expect_grad_matches(a.v, dv, loss, "dv");
}

// ---- cross-entropy ----

TEST(TrainOpsCrossEntropy, ForwardByHandIgnoresMaskedTargets) {
  const Vec logits = {1, 2, 3, 0, 0, 0, 5, 5, 5};
  const std::vector<int32_t> targets = {2, kIgnoreIndex, 0};
  Vec lse(3);
  const float loss = cross_entropy_forward(lse.data(), logits.data(), targets.data(), 3, 3);
  const double l0 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0)) - 3.0;
  const double l2 = std::log(3.0);
  EXPECT_NEAR(loss, (l0 + l2) / 2.0, 1e-6);
  EXPECT_NEAR(lse[1], std::log(3.0), 1e-6);
}

TEST(TrainOpsCrossEntropy, BackwardMatchesFiniteDifferences) {
  std::mt19937 rng(11);
  const int64_t N = 4, V = 6;
  const float dloss = 0.7f;
  Vec logits = randn(N * V, rng, 2.0f);
  const std::vector<int32_t> targets = {3, kIgnoreIndex, 0, 5};
  Vec lse(N);
  auto loss = [&] {
    return double(dloss) * cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V);
  };
  loss();
  Vec dlogits(N * V, 9.0f);  // overwritten, not accumulated
  cross_entropy_backward(dlogits.data(), logits.data(), lse.data(), targets.data(), N, V, dloss);
  for (int64_t v = 0; v < V; v++) EXPECT_EQ(dlogits[size_t(V + v)], 0.0f);
  expect_grad_matches(logits, dlogits, loss, "dlogits");

  // In place over the logits gives the same.
  loss();  // lse of the unperturbed logits again
  Vec inplace = logits;
  cross_entropy_backward(inplace.data(), inplace.data(), lse.data(), targets.data(), N, V, dloss);
  EXPECT_EQ(inplace, dlogits);
}

// A vocabulary of thousands (several vector chunks, threads) against log-sum-exp and softmax in
// double.
TEST(TrainOpsCrossEntropy, LargeVocabularyMatchesDoubleReference) {
  std::mt19937 rng(17);
  const int64_t N = 9, V = 5003;
  const Vec logits = randn(N * V, rng, 3.0f);
  std::vector<int32_t> targets(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; n++) targets[size_t(n)] = int32_t((n * 977) % V);
  targets[3] = kIgnoreIndex;
  Vec lse(N), d(N * V);
  const float loss = cross_entropy_forward(lse.data(), logits.data(), targets.data(), N, V);
  cross_entropy_backward(d.data(), logits.data(), lse.data(), targets.data(), N, V, 2.0f);
  double want_loss = 0.0;
  for (int64_t n = 0; n < N; n++) {
    const float* l = logits.data() + n * V;
    double mx = l[0], z = 0.0;
    for (int64_t v = 0; v < V; v++) mx = std::max(mx, double(l[v]));
    for (int64_t v = 0; v < V; v++) z += std::exp(double(l[v]) - mx);
    const double want_lse = mx + std::log(z);
    EXPECT_NEAR(lse[size_t(n)], want_lse, 1e-5) << n;
    if (targets[size_t(n)] == kIgnoreIndex) continue;
    want_loss += want_lse - l[targets[size_t(n)]];
    for (int64_t v = 0; v < V; v++) {
      const double want =
          2.0 / (N - 1) * (std::exp(double(l[v]) - want_lse) - (v == targets[size_t(n)]));
      ASSERT_NEAR(d[size_t(n * V + v)], want, 1e-6 * std::fabs(want) + 1e-9) << n << " " << v;
    }
  }
  EXPECT_NEAR(loss, want_loss / (N - 1), 1e-5);
}

// A NaN logit must surface as a NaN loss (the trainer stops on it), not vanish in the max.
TEST(TrainOpsCrossEntropy, NanLogitGivesNanLoss) {
  Vec logits(3 * 40, 0.5f);
  logits[45] = std::nanf("");
  const std::vector<int32_t> targets = {1, 2, 3};
  Vec lse(3);
  EXPECT_TRUE(std::isnan(cross_entropy_forward(lse.data(), logits.data(), targets.data(), 3, 40)));
  EXPECT_FALSE(std::isnan(lse[0]));
  EXPECT_TRUE(std::isnan(lse[1]));
}

TEST(TrainOpsCrossEntropy, AllIgnoredGivesZeroLossAndGradient) {
  const Vec logits = {1, 2, 3, 4};
  const std::vector<int32_t> targets = {kIgnoreIndex, kIgnoreIndex};
  Vec lse(2), d(4, 1.0f);
  EXPECT_EQ(cross_entropy_forward(lse.data(), logits.data(), targets.data(), 2, 2), 0.0f);
  cross_entropy_backward(d.data(), logits.data(), lse.data(), targets.data(), 2, 2, 1.0f);
  EXPECT_EQ(d, Vec(4, 0.0f));
}

TEST(TrainOpsCrossEntropy, TargetOutsideVocabularyIsAnError) {
  const Vec logits = {1, 2, 3, 4};
  Vec lse(2);
  const std::vector<int32_t> bad = {0, 2};
  try {
    cross_entropy_forward(lse.data(), logits.data(), bad.data(), 2, 2);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("target 2 at position 1"), std::string::npos) << e.what();
  }
  const std::vector<int32_t> neg = {-2, 0};
  EXPECT_THROW(cross_entropy_forward(lse.data(), logits.data(), neg.data(), 2, 2),
               std::invalid_argument);
}

}  // namespace
}  // namespace whale::train
