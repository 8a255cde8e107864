// The GRPO objective (reason/grpo.h): loss, statistics and gradients on a tiny DeepSeek-V3 model
// against the independent float64 PyTorch reference (tests/fixtures/grpo, written by
// scripts/gen_grpo_fixture.py), two inner AdamW steps against torch.optim.AdamW, the per-token
// weights against numerical derivatives of the objective, the advantages, and the errors.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "model/config.h"
#include "reason/grpo.h"
#include "train/model_train.h"
#include "train/ops.h"
#include "train/optim.h"
#include "train/weights_io.h"

namespace whale::reason {
namespace {

using json = nlohmann::json;
using train::kIgnoreIndex;
using train::ParamTensor;
using train::TrainModel;
using Vec = std::vector<float>;

const std::string kFixtureDir = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/grpo";

// The fixture: models, rollouts, settings, and the reference's numbers.
struct Fixture {
  json doc;
  ModelConfig config;
  std::unique_ptr<TrainModel> policy, ref;
  GrpoConfig objective;
  train::AdamWConfig adamw;
  float lr = 0;
  int64_t G = 0;
  std::vector<std::vector<int32_t>> prompts, completions;
  std::vector<double> rewards;
  std::unique_ptr<SafetensorsFile> expected;

  Fixture() {
    std::ifstream in(kFixtureDir + "/rollouts.json");
    EXPECT_TRUE(in.good()) << kFixtureDir
                           << " is missing: /usr/bin/python3 scripts/gen_grpo_fixture.py";
    doc = json::parse(in);
    config = ModelConfig::load(kFixtureDir);
    policy = std::make_unique<TrainModel>(config, train::LossConfig{0.0f, 0.0f});
    ref = std::make_unique<TrainModel>(config, train::LossConfig{0.0f, 0.0f});
    train::load_train_weights(*policy, kFixtureDir);
    train::load_train_weights(*ref, kFixtureDir + "/ref");
    const json& o = doc.at("objective");
    objective.eps_low = o.at("eps_low").get<float>();
    objective.eps_high = o.at("eps_high").get<float>();
    objective.beta = o.at("beta").get<float>();
    objective.adv = parse_advantage_mode(o.at("adv").get<std::string>());
    objective.adv_eps = o.at("adv_eps").get<double>();
    const json& a = doc.at("adamw");
    adamw = {a.at("beta1").get<float>(), a.at("beta2").get<float>(), a.at("eps").get<float>(),
             a.at("weight_decay").get<float>()};
    lr = a.at("lr").get<float>();
    G = doc.at("group").get<int64_t>();
    prompts = doc.at("prompts").get<std::vector<std::vector<int32_t>>>();
    completions = doc.at("completions").get<std::vector<std::vector<int32_t>>>();
    rewards = doc.at("rewards").get<std::vector<double>>();
    expected = std::make_unique<SafetensorsFile>(kFixtureDir + "/expected.safetensors");
  }

  Vec tensor(const std::string& name) const {
    for (const TensorView& t : expected->tensors())
      if (t.name == name) {
        Vec v(size_t(t.numel()));
        std::memcpy(v.data(), t.data, t.nbytes);
        return v;
      }
    ADD_FAILURE() << "expected.safetensors has no " << name;
    return {};
  }
};

// The batch of the groups that are not skipped, and logp_old laid out like it.
struct Prepared {
  GroupAdvantages adv;
  GrpoBatch batch;
  Vec logp_old, logp_ref;
  int64_t N = 0;
};

Prepared prepare(Fixture& f) {
  Prepared p;
  p.adv = group_advantages(f.rewards, f.G, f.objective);
  std::vector<GrpoSequence> seqs;
  std::vector<size_t> which;
  for (size_t i = 0; i < f.completions.size(); i++) {
    if (p.adv.skipped[i / size_t(f.G)]) continue;
    seqs.push_back({f.prompts[i / size_t(f.G)], f.completions[i], p.adv.advantage[i]});
    which.push_back(i);
  }
  p.batch = make_grpo_batch(seqs);
  const GrpoBatch& b = p.batch;
  p.logp_old.assign(size_t(b.B * b.T), 0.0f);
  const auto old = f.doc.at("logp_old").get<std::vector<std::vector<float>>>();
  for (int64_t r = 0; r < b.B; r++) {
    const size_t i = which[size_t(r)];
    const int64_t start = int64_t(f.prompts[i / size_t(f.G)].size()) - 1;
    for (size_t j = 0; j < old[i].size(); j++) {
      const size_t n = size_t(r * b.T + start) + j;
      EXPECT_EQ(b.targets[n], f.completions[i][j]) << "sequence " << i << ", token " << j;
      p.logp_old[n] = old[i][j];
    }
  }
  p.logp_ref.resize(size_t(b.B * b.T));
  f.ref->token_logprobs(b.inputs.data(), b.targets.data(), b.B, b.T, p.logp_ref.data());
  p.N = b.tokens();
  return p;
}

bool near_rel(double got, double want, double rel) {
  return std::fabs(got - want) <= rel * std::fabs(want);
}

void expect_pass(const GrpoSums& s, int64_t N, const json& want, const std::string& what) {
  EXPECT_EQ(N, want.at("tokens").get<int64_t>()) << what;
  EXPECT_EQ(s.tokens, N) << what;
  EXPECT_PRED3(near_rel, -s.objective / double(N), want.at("loss").get<double>(), 1e-6) << what;
  EXPECT_PRED3(near_rel, s.kl / double(N), want.at("kl").get<double>(), 1e-5) << what;
  EXPECT_EQ(s.clip_low, want.at("clip_low").get<int64_t>()) << what;
  EXPECT_EQ(s.clip_high, want.at("clip_high").get<int64_t>()) << what;
  std::printf("[ grpo     ] %s: loss %.9f (reference %.9f), kl %.6f, clip low %lld high %lld\n",
              what.c_str(), -s.objective / double(N), want.at("loss").get<double>(),
              s.kl / double(N), (long long)s.clip_low, (long long)s.clip_high);
}

// ---------------------------------------------------------------- the PyTorch reference

TEST(GrpoObjective, LossAndGradientsMatchThePyTorchReference) {
  Fixture f;
  Prepared p = prepare(f);
  const auto want_adv = f.doc.at("advantages").get<std::vector<double>>();
  ASSERT_EQ(p.adv.advantage.size(), want_adv.size());
  for (size_t i = 0; i < want_adv.size(); i++)
    EXPECT_NEAR(p.adv.advantage[i], want_adv[i], 1e-12) << i;
  EXPECT_EQ(p.adv.skipped_groups, 1);
  EXPECT_EQ(p.adv.skipped, (std::vector<char>{1, 0}));
  EXPECT_EQ(p.batch.B, 3);  // the skipped group is not in the batch

  f.policy->zero_grad();
  const GrpoSums s = grpo_backward(*f.policy, p.batch, p.logp_old.data(), p.logp_ref.data(),
                                   1.0 / double(p.N), f.objective);
  const json& pass = f.doc.at("passes").at(0);
  ASSERT_GT(pass.at("clip_low").get<int>(), 0);  // the case clips on both sides
  ASSERT_GT(pass.at("clip_high").get<int>(), 0);
  expect_pass(s, p.N, pass, "pass 1");

  double worst = 0;
  std::string worst_name;
  for (const ParamTensor& t : f.policy->params()) {
    const Vec want = f.tensor("grad." + t.name);
    ASSERT_EQ(want.size(), size_t(t.numel)) << t.name;
    double diff = 0, largest = 0;
    for (int64_t i = 0; i < t.numel; i++) {
      if (want[size_t(i)] == 0.0f) {
        EXPECT_EQ(t.grad[i], 0.0f) << t.name << "[" << i << "]";
      }
      diff = std::max(diff, std::fabs(double(t.grad[i]) - want[size_t(i)]));
      largest = std::max(largest, std::fabs(double(want[size_t(i)])));
    }
    if (largest == 0) continue;
    EXPECT_LE(diff, 1e-4 * largest) << t.name;
    if (diff / largest > worst) worst = diff / largest, worst_name = t.name;
  }
  std::printf("[ grpo     ] gradients: largest relative error %.2e (%s)\n", worst,
              worst_name.c_str());
}

TEST(GrpoObjective, TwoInnerStepsWithAdamWMatchTorchAdamW) {
  Fixture f;
  Prepared p = prepare(f);
  train::AdamW opt(f.policy->params(), f.adamw);
  for (int k = 0; k < 2; k++) {
    f.policy->zero_grad();
    const GrpoSums s = grpo_backward(*f.policy, p.batch, p.logp_old.data(), p.logp_ref.data(),
                                     1.0 / double(p.N), f.objective);
    expect_pass(s, p.N, f.doc.at("passes").at(size_t(k)), "pass " + std::to_string(k + 1));
    opt.step(f.lr);
  }
  // After two steps of +-lr each (roughly), the parameters agree far below the step size.
  double worst = 0;
  for (const ParamTensor& t : f.policy->params()) {
    const Vec want = f.tensor("param2." + t.name);
    ASSERT_EQ(want.size(), size_t(t.numel)) << t.name;
    for (int64_t i = 0; i < t.numel; i++) {
      const double err = std::fabs(double(t.data[i]) - want[size_t(i)]);
      EXPECT_LE(err, 1e-3 * f.lr + 1e-6 * std::fabs(want[size_t(i)])) << t.name << "[" << i << "]";
      worst = std::max(worst, err);
    }
  }
  std::printf("[ grpo     ] parameters after 2 AdamW steps: largest error %.2e (lr %g)\n", worst,
              double(f.lr));
}

// ---------------------------------------------------------------- the objective by hand

// One token: sums and weight for the given log-probabilities.
GrpoSums one_token(double logp, double logp_old, double logp_ref, double A, const GrpoConfig& c,
                   float* w) {
  GrpoBatch b;
  b.B = 1;
  b.T = 1;
  b.inputs = {0};
  b.targets = {0};
  b.advantage = {A};
  const float lp = float(logp), lo = float(logp_old), lr = float(logp_ref);
  return grpo_weights(b, &lp, &lo, &lr, 1.0, c, w);
}

// w_t = dJ_t/dlogp_t: against central differences of J in logp, clipped or not, with the KL term.
TEST(GrpoObjective, WeightsAreTheDerivativeOfTheObjective) {
  GrpoConfig c;
  c.eps_low = 0.2f;
  c.eps_high = 0.28f;
  c.beta = 0.1f;
  std::mt19937 rng(1);
  std::uniform_real_distribution<double> logp(-6, -0.5), shift(-0.6, 0.6), adv(-2, 2);
  int clipped = 0, free = 0;
  for (int i = 0; i < 200; i++) {
    const double lp = double(float(logp(rng))), old = double(float(lp + shift(rng)));
    const double ref = double(float(lp + shift(rng))), A = adv(rng);
    float w = 0, unused = 0;
    const GrpoSums s = one_token(lp, old, ref, A, c, &w);
    const double rho = std::exp(lp - old);
    if (std::fabs(rho - 0.8) < 1e-3 || std::fabs(rho - 1.28) < 1e-3) continue;  // at a kink
    const double h = 1e-3;
    const double up = one_token(lp + h, old, ref, A, c, &unused).objective;
    const double down = one_token(lp - h, old, ref, A, c, &unused).objective;
    EXPECT_NEAR(w, (up - down) / (2 * h), 1e-3 * (1 + std::fabs(w))) << "token " << i;
    const bool clip = s.clip_low + s.clip_high > 0;
    clipped += clip;
    free += !clip;
  }
  EXPECT_GT(clipped, 20);
  EXPECT_GT(free, 20);
}

TEST(GrpoObjective, ClipBranchesAndRatioOne) {
  GrpoConfig c;
  c.eps_low = 0.2f;
  c.eps_high = 0.28f;
  c.beta = 0.0f;
  float w = -1;
  // rho = 1 (the first pass over fresh rollouts): J = A, dJ/dlogp = A.
  GrpoSums s = one_token(-2.0, -2.0, 0, 0.7, c, &w);
  EXPECT_DOUBLE_EQ(s.objective, 0.7);
  EXPECT_FLOAT_EQ(w, 0.7f);
  // A > 0 above 1 + eps_high: clipped high, J = 1.28 A, no gradient.
  s = one_token(std::log(1.5), 0.0, 0, 2.0, c, &w);
  EXPECT_EQ(s.clip_high, 1);
  EXPECT_EQ(s.clip_low, 0);
  EXPECT_NEAR(s.objective, 1.28 * 2.0, 1e-6);
  EXPECT_EQ(w, 0.0f);
  // A > 0 below 1 - eps_low: the unclipped branch is the minimum, J = rho A.
  s = one_token(std::log(0.5), 0.0, 0, 2.0, c, &w);
  EXPECT_EQ(s.clip_low + s.clip_high, 0);
  EXPECT_NEAR(w, 1.0f, 1e-6);
  // A < 0 below 1 - eps_low: clipped low, J = 0.8 A.
  s = one_token(std::log(0.5), 0.0, 0, -1.0, c, &w);
  EXPECT_EQ(s.clip_low, 1);
  EXPECT_NEAR(s.objective, -0.8, 1e-6);
  EXPECT_EQ(w, 0.0f);
  // A < 0 above 1 + eps_high: unclipped, J = rho A.
  s = one_token(std::log(1.5), 0.0, 0, -1.0, c, &w);
  EXPECT_EQ(s.clip_low + s.clip_high, 0);
  EXPECT_NEAR(s.objective, -1.5, 1e-6);
  EXPECT_NEAR(w, -1.5f, 1e-6);
}

// k3 = exp(d) - d - 1 >= 0 for every d = logp_ref - logp, 0 at the reference, and its gradient
// pulls logp towards logp_ref.
TEST(GrpoObjective, KlIsNonNegativeAndZeroAtTheReference) {
  GrpoConfig c;
  c.beta = 1.0f;
  float w = 0;
  for (double d : {-5.0, -1.0, -1e-3, -1e-7, -1e-12, 0.0, 1e-12, 1e-7, 1e-3, 1.0, 5.0}) {
    const GrpoSums s = one_token(-3.0, -3.0, -3.0 + d, 0.0, c, &w);
    const double lp = double(float(-3.0)), ref = double(float(-3.0 + d)), dd = ref - lp;
    EXPECT_GE(s.kl, 0.0) << d;
    EXPECT_NEAR(s.kl, std::exp(dd) - dd - 1, 1e-12 + 1e-9 * std::fabs(dd)) << d;
    EXPECT_NEAR(s.objective, -s.kl, 1e-15) << d;
    // Raising logp towards the reference lowers the KL.
    EXPECT_EQ(w > 0.0f, dd > 0) << d;
    EXPECT_EQ(w < 0.0f, dd < 0) << d;
  }
  const GrpoSums s = one_token(-3.0, -3.0, -3.0, 0.0, c, &w);
  EXPECT_EQ(s.kl, 0.0);
  EXPECT_EQ(w, 0.0f);
  // Random log-probabilities: never negative.
  std::mt19937 rng(2);
  std::uniform_real_distribution<double> u(-10, 0);
  for (int i = 0; i < 1000; i++) EXPECT_GE(one_token(u(rng), -1, u(rng), 0.3, c, &w).kl, 0.0);
}

// ---------------------------------------------------------------- advantages and batches

TEST(GrpoAdvantages, EqualRewardsGiveZeroAdvantagesAndASkippedGroup) {
  GrpoConfig c;
  const std::vector<double> r{0.5, 0.5, 0.5, 1.0, 0.0, 1.0, 0.0, 0.0, 0.0};
  for (AdvantageMode mode : {AdvantageMode::Std, AdvantageMode::Mean}) {
    c.adv = mode;
    const GroupAdvantages a = group_advantages(r, 3, c);
    EXPECT_EQ(a.skipped, (std::vector<char>{1, 0, 1}));
    EXPECT_EQ(a.skipped_groups, 2);
    for (size_t i : {0, 1, 2, 6, 7, 8}) EXPECT_EQ(a.advantage[i], 0.0) << i;
    EXPECT_GT(a.advantage[3], 0.0);
    EXPECT_LT(a.advantage[4], 0.0);
  }
}

TEST(GrpoAdvantages, StdAndMeanModes) {
  GrpoConfig c;
  // Mean 0.25, unbiased std sqrt((0.5625 + 3 * 0.0625) / 3) = 0.5.
  const std::vector<double> r4{1.0, 0.0, 0.0, 0.0};
  c.adv = AdvantageMode::Mean;
  GroupAdvantages a = group_advantages(r4, 4, c);
  ASSERT_EQ(a.advantage.size(), 4u);
  EXPECT_EQ(a.skipped_groups, 0);
  EXPECT_DOUBLE_EQ(a.advantage[0], 0.75);
  EXPECT_DOUBLE_EQ(a.advantage[1], -0.25);
  c.adv = AdvantageMode::Std;
  a = group_advantages(r4, 4, c);
  EXPECT_DOUBLE_EQ(a.advantage[0], 0.75 / (0.5 + 1e-4));
  EXPECT_DOUBLE_EQ(a.advantage[3], -0.25 / (0.5 + 1e-4));
  c.adv_eps = 0.5;
  a = group_advantages(r4, 4, c);
  EXPECT_DOUBLE_EQ(a.advantage[0], 0.75);
  // Groups of 2: std = |r0 - r1| / sqrt(2); the advantages are +-1/sqrt(2) whatever the scale.
  c.adv_eps = 1e-4;
  a = group_advantages(std::vector<double>{3.0, 1.0}, 2, c);
  EXPECT_NEAR(a.advantage[0], 1.0 / (std::sqrt(2.0) + 1e-4), 1e-12);
  EXPECT_NEAR(a.advantage[1], -1.0 / (std::sqrt(2.0) + 1e-4), 1e-12);
  EXPECT_EQ(parse_advantage_mode("mean"), AdvantageMode::Mean);
  EXPECT_STREQ(advantage_mode_name(AdvantageMode::Std), "std");
}

TEST(GrpoAdvantages, BadInputIsAClearError) {
  GrpoConfig c;
  try {
    group_advantages(std::vector<double>{1.0, 0.0}, 1, c);
    ADD_FAILURE() << "group of 1 accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("at least 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(group_advantages(std::vector<double>{1.0, NAN}, 2, c), std::invalid_argument);
  EXPECT_THROW(group_advantages(std::vector<double>{1.0, 0.0, 1.0}, 2, c), std::invalid_argument);
  EXPECT_THROW(parse_advantage_mode("median"), std::invalid_argument);
  c.eps_low = 1.0f;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c = GrpoConfig{};
  c.beta = -1;
  EXPECT_THROW(c.validate(), std::invalid_argument);
  c = GrpoConfig{};
  EXPECT_NO_THROW(c.validate());
  // beta > 0 needs the reference's log-probabilities.
  GrpoBatch b;
  b.B = b.T = 1;
  b.inputs = b.targets = {0};
  b.advantage = {1.0};
  float lp = -1, w = 0;
  EXPECT_THROW(grpo_weights(b, &lp, &lp, nullptr, 1.0, c, &w), std::invalid_argument);
  c.beta = 0;
  EXPECT_NO_THROW(grpo_weights(b, &lp, &lp, nullptr, 1.0, c, &w));
}

TEST(GrpoBatch, PromptsAreMaskedAndSequencesPadded) {
  const std::vector<int32_t> p0{5, 6, 7}, c0{8, 9}, p1{4}, c1{1};
  const std::vector<GrpoSequence> seqs{{p0, c0, 0.5}, {p1, c1, -0.5}};
  const GrpoBatch b = make_grpo_batch(seqs);
  EXPECT_EQ(b.B, 2);
  EXPECT_EQ(b.T, 4);
  const int32_t I = kIgnoreIndex;
  EXPECT_EQ(b.inputs, (std::vector<int32_t>{5, 6, 7, 8, 4, 0, 0, 0}));
  EXPECT_EQ(b.targets, (std::vector<int32_t>{I, I, 8, 9, 1, I, I, I}));
  EXPECT_EQ(b.advantage, (std::vector<double>{0.5, -0.5}));
  EXPECT_EQ(b.tokens(), 3);
  const GrpoBatch wide = make_grpo_batch(seqs, 6);
  EXPECT_EQ(wide.T, 6);
  EXPECT_EQ(wide.targets, (std::vector<int32_t>{I, I, 8, 9, I, I, 1, I, I, I, I, I}));
  const std::vector<int32_t> none;
  const std::vector<GrpoSequence> bad{{p0, none, 0.0}};
  EXPECT_THROW(make_grpo_batch(bad), std::invalid_argument);
}

}  // namespace
}  // namespace whale::reason
