// DeepSeekMoE routing on hand-worked examples, chosen so that each known mistake (top experts per
// group instead of top groups, bias in the gate values, V2's group rule for noaux_tc, scaling
// rules) gives a different answer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/config.h"
#include "model/moe.h"

using namespace whale;

namespace {

ModelConfig base(Arch arch, ScoringFunc f, TopkMethod m, int E, int K, int G, int TG) {
  ModelConfig c;
  c.arch = arch;
  c.scoring_func = f;
  c.topk_method = m;
  c.n_routed_experts = E;
  c.num_experts_per_tok = K;
  c.n_group = G;
  c.topk_group = TG;
  return c;
}

float logit_for(float sigmoid_value) {
  return std::log(sigmoid_value / (1 - sigmoid_value));
}

struct Routed {
  std::vector<int32_t> ids;
  std::vector<float> w;
};

Routed route(const ModelConfig& c, const std::vector<float>& logits,
             const std::vector<float>& bias) {
  Routed r{std::vector<int32_t>(size_t(c.num_experts_per_tok)),
           std::vector<float>(size_t(c.num_experts_per_tok))};
  route_token(c, logits.data(), bias, r.ids.data(), r.w.data());
  // order-independent comparison: sort by id
  std::vector<std::pair<int32_t, float>> p;
  for (size_t i = 0; i < r.ids.size(); i++) p.push_back({r.ids[i], r.w[i]});
  std::sort(p.begin(), p.end());
  for (size_t i = 0; i < p.size(); i++) r.ids[i] = p[i].first, r.w[i] = p[i].second;
  return r;
}

}  // namespace

// 8 experts in 4 groups of 2; keep 2 groups, choose 2 experts.
//   sigmoid scores s = [.90 .10 | .60 .55 | .70 .05 | .20 .15], bias b = 0 except b[7] = +0.8
//   choice s+b     = [.90 .10 | .60 .55 | .70 .05 | .20 .95]
//   group scores (sum of top-2 choice) = [1.00, 1.15, 0.75, 1.15] -> keep groups 1 and 3
//   top-2 among experts 2,3,6,7 by choice: 7 (.95), 2 (.60)
//   gate values: unbiased s: .15 and .60; normalised: .2 and .8; times 2.5: .5 and 2.0
// Mistakes: top by score across all experts -> {0, 4}; top-groups by max -> groups 0,3 -> {0,7};
// bias in weights -> 0.95/(0.95+0.6).
TEST(Routing, NoauxTcPicksTopGroupsBySumOfTop2) {
  ModelConfig c = base(Arch::DeepseekV3, ScoringFunc::Sigmoid, TopkMethod::NoauxTc, 8, 2, 4, 2);
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  std::vector<float> s = {.90f, .10f, .60f, .55f, .70f, .05f, .20f, .15f};
  std::vector<float> logits;
  for (float v : s) logits.push_back(logit_for(v));
  std::vector<float> bias(8, 0.0f);
  bias[7] = 0.8f;
  Routed r = route(c, logits, bias);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{2, 7}));
  EXPECT_NEAR(r.w[0], 2.0f, 1e-5);
  EXPECT_NEAR(r.w[1], 0.5f, 1e-5);
}

// Masked experts are -inf (official code), not 0: with negative biases every kept expert has a
// negative choice score, and a 0-filled masked expert would wrongly win.
TEST(Routing, NoauxTcMasksWithMinusInfinity) {
  ModelConfig c = base(Arch::DeepseekV3, ScoringFunc::Sigmoid, TopkMethod::NoauxTc, 4, 1, 2, 1);
  std::vector<float> s = {.5f, .4f, .3f, .2f};
  std::vector<float> logits;
  for (float v : s) logits.push_back(logit_for(v));
  std::vector<float> bias = {-1.0f, -1.0f, -2.0f, -2.0f};
  Routed r = route(c, logits, bias);  // group 0 choice sum -1.1 > group 1 -3.5; pick expert 0
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0}));
  EXPECT_NEAR(r.w[0], 0.5f, 1e-6);  // K == 1: no normalisation; scale 1
}

// V2 group_limited_greedy: group score = max; softmax scores.
TEST(Routing, GroupLimitedGreedyUsesGroupMax) {
  ModelConfig c =
      base(Arch::DeepseekV2, ScoringFunc::Softmax, TopkMethod::GroupLimitedGreedy, 6, 2, 3, 1);
  c.routed_scaling_factor = 16.0;
  // group maxima: g0 = 3.0 (expert 0), g1 = 2.9, g2 = 1.0; sum-of-top-2 would prefer g1 (2.9+2.8)
  std::vector<float> logits = {3.0f, -5.0f, 2.9f, 2.8f, 1.0f, 0.0f};
  Routed r = route(c, logits, {});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1}));
  double z = 0;
  for (float l : logits) z += std::exp(double(l));
  EXPECT_NEAR(r.w[0], 16.0 * std::exp(3.0) / z, 1e-5);  // not normalised: scaled
  EXPECT_NEAR(r.w[1], 16.0 * std::exp(-5.0) / z, 1e-6);
}

// V2 with norm_topk_prob: normalised and NOT scaled; V3: normalised AND scaled.
TEST(Routing, ScalingRuleDiffersBetweenV2AndV3) {
  std::vector<float> logits = {1.0f, 2.0f, 0.5f, -1.0f};
  ModelConfig v2 = base(Arch::DeepseekV2, ScoringFunc::Softmax, TopkMethod::Greedy, 4, 2, 1, 1);
  v2.norm_topk_prob = true;
  v2.routed_scaling_factor = 16.0;
  Routed r2 = route(v2, logits, {});
  EXPECT_EQ(r2.ids, (std::vector<int32_t>{0, 1}));
  EXPECT_NEAR(r2.w[0] + r2.w[1], 1.0f, 1e-6);
  EXPECT_NEAR(r2.w[1] / r2.w[0], std::exp(1.0), 1e-5);
  ModelConfig v3 = v2;
  v3.arch = Arch::DeepseekV3;
  Routed r3 = route(v3, logits, {});
  EXPECT_NEAR(r3.w[0] + r3.w[1], 16.0f, 1e-4);
}

TEST(Routing, GreedySigmoidWithoutNormalisation) {
  ModelConfig c = base(Arch::DeepseekV3, ScoringFunc::Sigmoid, TopkMethod::Greedy, 5, 3, 1, 1);
  c.routed_scaling_factor = 2.0;
  std::vector<float> logits = {0.0f, 3.0f, -1.0f, 2.0f, 1.0f};
  Routed r = route(c, logits, {});
  EXPECT_EQ(r.ids, (std::vector<int32_t>{1, 3, 4}));
  EXPECT_NEAR(r.w[0], 2.0 / (1 + std::exp(-3.0)), 1e-6);
  EXPECT_NEAR(r.w[2], 2.0 / (1 + std::exp(-1.0)), 1e-6);
}
