// Training ops: forwards against hand computations and naive references, backwards against central
// finite differences of a scalar loss (a random projection of the output, so every output element
// carries gradient).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "grad_check.h"
#include "model/config.h"
#include "model/rope.h"
#include "train/ops.h"

namespace whale::train {
namespace {

using Vec = std::vector<float>;

Vec randn(size_t n, std::mt19937& rng, float stddev = 1.0f) {
  std::normal_distribution<float> d(0.0f, stddev);
  Vec v(n);
  for (float& x : v) x = d(rng);
  return v;
}

using whale::testing::expect_grad_matches;
using whale::testing::project;

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

// ---- SwiGLU ----

TEST(TrainOpsSwiGLU, ForwardByHand) {
  const Vec g = {0, 1, -2}, u = {5, 2, 3};
  Vec h(3);
  swiglu_forward(h.data(), g.data(), u.data(), 3);
  EXPECT_EQ(h[0], 0.0f);
  EXPECT_NEAR(h[1], 2.0 / (1.0 + std::exp(-1.0)), 1e-6);
  EXPECT_NEAR(h[2], 3.0 * -2.0 / (1.0 + std::exp(2.0)), 1e-6);
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
    q = randn(s.T * s.H * s.dqk(), rng);
    k_nope = randn(s.T * s.H * s.nope, rng);
    k_pe = randn(s.T * s.rope, rng);
    v = randn(s.T * s.H * s.dv, rng);
  }
  Vec forward(Vec* att_out = nullptr) const {
    Vec out(s.T * s.H * s.dv), att(s.H * s.T * s.T);
    causal_attention_forward(out.data(), att.data(), q.data(), k_nope.data(), k_pe.data(), v.data(),
                             s);
    if (att_out) *att_out = att;
    return out;
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
