// DeepSeekMoE training layer: routing against an independent brute-force V3 router, the forward
// against a naive per-token reference and against the inference MoE on the same weights, every
// gradient against central finite differences (skipping perturbations that change the selection),
// the bias update and the sequence-wise balance loss on hand-worked examples.
#include <gtest/gtest.h>
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "grad_check.h"
#include "model/config.h"
#include "model/moe.h"
#include "train/moe_train.h"

namespace whale::train {
namespace {

using Vec = std::vector<float>;

// The V3 layer of the task: C=8, F=4, E=8 in 4 groups (keep 2), top-2, 2 shared experts.
ModelConfig small_config(int64_t groups = 4, int64_t topk_group = 2) {
  ModelConfig c;
  c.arch = Arch::DeepseekV3;
  c.hidden_size = 8;
  c.moe_intermediate_size = 4;
  c.n_routed_experts = 8;
  c.num_experts_per_tok = 2;
  c.n_shared_experts = 2;
  c.scoring_func = ScoringFunc::Sigmoid;
  c.topk_method = TopkMethod::NoauxTc;
  c.n_group = groups;
  c.topk_group = topk_group;
  c.norm_topk_prob = true;
  c.routed_scaling_factor = 2.5;
  return c;
}

using whale::testing::randn;

// A layer's parameters in one flat buffer, with their views.
struct Layer {
  explicit Layer(const ModelConfig& c, std::mt19937& rng)
      : flat(randn(size_t(moe_num_params(c)), rng, 0.5f)), p(moe_params_at(flat.data(), c)) {}
  Vec flat;
  MoeParams p;
};

double sigmoid(double x) {
  return 1.0 / (1.0 + std::exp(-x));
}

// Independent V3 noaux_tc router: group score = sum of the group's two largest biased scores, keep
// the topk_group best groups, then the K best biased scores inside them; ties to the lower index.
std::vector<int32_t> brute_force_route(const ModelConfig& c, const float* logits, const Vec& bias) {
  const int64_t E = c.n_routed_experts, G = c.n_group, per = E / G;
  Vec choice(static_cast<size_t>(E));
  for (int64_t e = 0; e < E; e++)
    choice[size_t(e)] = 1.0f / (1.0f + std::exp(-logits[e])) + bias[size_t(e)];
  auto better = [&](const Vec& v) {
    return [&v](int32_t a, int32_t b) {
      return v[size_t(a)] > v[size_t(b)] || (v[size_t(a)] == v[size_t(b)] && a < b);
    };
  };
  std::vector<bool> kept(size_t(G), true);
  if (G > 1) {
    Vec gscore(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; g++) {
      Vec m(choice.begin() + g * per, choice.begin() + (g + 1) * per);
      std::sort(m.begin(), m.end(), std::greater<>());
      gscore[size_t(g)] = m[0] + m[1];
    }
    std::vector<int32_t> go(static_cast<size_t>(G));
    std::iota(go.begin(), go.end(), 0);
    std::sort(go.begin(), go.end(), better(gscore));
    std::fill(kept.begin(), kept.end(), false);
    for (int64_t i = 0; i < c.topk_group; i++) kept[size_t(go[size_t(i)])] = true;
  }
  std::vector<int32_t> cand;
  for (int32_t e = 0; e < E; e++)
    if (kept[size_t(e / per)]) cand.push_back(e);
  std::sort(cand.begin(), cand.end(), better(choice));
  return {cand.begin(), cand.begin() + c.num_experts_per_tok};
}

// Naive SwiGLU MLP on one token in double: down(silu(gate x) * up x).
std::vector<double> mlp_ref(const float* x, const float* wg, const float* wu, const float* wd,
                            int64_t C, int64_t F) {
  std::vector<double> h(static_cast<size_t>(F)), y(size_t(C), 0.0);
  for (int64_t f = 0; f < F; f++) {
    double g = 0, u = 0;
    for (int64_t j = 0; j < C; j++)
      g += double(wg[f * C + j]) * x[j], u += double(wu[f * C + j]) * x[j];
    h[size_t(f)] = g * sigmoid(g) * u;
  }
  for (int64_t j = 0; j < C; j++)
    for (int64_t f = 0; f < F; f++) y[size_t(j)] += double(wd[j * F + f]) * h[size_t(f)];
  return y;
}

// Writes `tensors` (all f32) as DIR/model.safetensors.
void write_f32_safetensors(
    const std::string& dir,
    const std::vector<std::pair<std::string, std::pair<std::vector<int64_t>, Vec>>>& tensors) {
  nlohmann::json header = nlohmann::json::object();
  size_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const size_t bytes = t.second.size() * sizeof(float);
    header[name] = {
        {"dtype", "F32"}, {"shape", t.first}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');  // keeps the f32 data 4-byte aligned in the mapping
  std::ofstream f(dir + "/model.safetensors", std::ios::binary);
  const uint64_t n = h.size();
  f.write(reinterpret_cast<const char*>(&n), 8);
  f.write(h.data(), std::streamsize(h.size()));
  for (const auto& [name, t] : tensors)
    f.write(reinterpret_cast<const char*>(t.second.data()),
            std::streamsize(t.second.size() * sizeof(float)));
}

// ---- routing ----

// Logits from a 5-value set and biases from a 3-value set make many exact ties; the router logits
// are fed through an identity router (C = E) so u is the logits.
TEST(TrainMoeRouting, EqualsInferenceAndBruteForceWithTiesAndGroups) {
  for (auto [G, TG] : {std::pair<int64_t, int64_t>{4, 2}, {1, 1}, {2, 1}}) {
    ModelConfig c = small_config(G, TG);
    c.hidden_size = c.n_routed_experts;
    std::mt19937 rng(11);
    Layer L(c, rng);
    std::fill_n(L.p.router, 64, 0.0f);
    for (int e = 0; e < 8; e++) L.p.router[e * 8 + e] = 1.0f;
    const int64_t N = 300, E = 8, K = 2;
    std::uniform_int_distribution<int> pick(0, 4), pickb(0, 2);
    const float lv[5] = {-1.0f, -0.25f, 0.0f, 0.25f, 1.0f}, bv[3] = {0.0f, 0.0f, 0.125f};
    Vec u(size_t(N * E));
    for (float& x : u) x = lv[pick(rng)];
    Vec bias(static_cast<size_t>(E));
    for (float& b : bias) b = bv[pickb(rng)];
    MoeActs a;
    Vec y(size_t(N * 8));
    moe_forward(y.data(), a, u.data(), L.p, bias, c, N);
    int64_t total = 0;
    for (int64_t t = 0; t < N; t++) {
      int32_t ids[2];
      float w[2];
      route_token(c, u.data() + t * E, bias, ids, w);
      const auto want = brute_force_route(c, u.data() + t * E, bias);
      for (int64_t k = 0; k < K; k++) {
        EXPECT_EQ(a.ids[size_t(t * K + k)], ids[k]) << "token " << t << " G " << G;
        EXPECT_EQ(a.ids[size_t(t * K + k)], want[size_t(k)]) << "token " << t << " G " << G;
        EXPECT_EQ(a.gates[size_t(t * K + k)], w[k]);
        // Each (token, slot) has its gathered row inside its expert's block.
        const int32_t r = a.row_of[size_t(t * K + k)];
        EXPECT_EQ(a.row_token[size_t(r)], t);
        EXPECT_GE(r, a.offset[size_t(ids[k])]);
        EXPECT_LT(r, a.offset[size_t(ids[k]) + 1]);
      }
    }
    for (int64_t n : a.counts) total += n;
    EXPECT_EQ(total, N * K);
  }
}

// One scratch reused across tokens and across configs of different sizes (grouped V3, softmax
// V2 group-limited, greedy) routes exactly as the allocating route_token.
TEST(TrainMoeRouting, ReusedScratchRoutesAsFreshOne) {
  ModelConfig v2 = small_config(4, 2);
  v2.arch = Arch::DeepseekV2;
  v2.scoring_func = ScoringFunc::Softmax;
  v2.topk_method = TopkMethod::GroupLimitedGreedy;
  v2.n_routed_experts = 16;
  v2.num_experts_per_tok = 3;
  v2.norm_topk_prob = false;
  ModelConfig greedy = small_config(1, 1);
  greedy.topk_method = TopkMethod::Greedy;
  greedy.n_routed_experts = 4;
  greedy.num_experts_per_tok = 1;
  RouteScratch scratch;
  std::mt19937 rng(41);
  for (const ModelConfig& c : {small_config(4, 2), v2, greedy, small_config(2, 1)}) {
    const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
    const Vec bias = randn(size_t(E), rng, 0.1f);
    for (int t = 0; t < 50; t++) {
      const Vec logits = randn(size_t(E), rng);
      std::vector<int32_t> ids(static_cast<size_t>(K)), ids_fresh = ids;
      Vec w(static_cast<size_t>(K)), w_fresh = w;
      route_token(c, logits.data(), bias, ids.data(), w.data(), scratch);
      route_token(c, logits.data(), bias, ids_fresh.data(), w_fresh.data());
      ASSERT_EQ(ids, ids_fresh) << "E " << E << " token " << t;
      ASSERT_EQ(w, w_fresh) << "E " << E << " token " << t;
    }
  }
}

// ---- forward ----

TEST(TrainMoeForward, MatchesNaivePerTokenReference) {
  const ModelConfig c = small_config();
  std::mt19937 rng(1);
  Layer L(c, rng);
  const int64_t N = 7, C = 8, E = 8, K = 2, F = 4, Fs = 8;
  const Vec u = randn(size_t(N * C), rng), bias = randn(size_t(E), rng, 0.1f);
  MoeActs a;
  Vec y(size_t(N * C));
  moe_forward(y.data(), a, u.data(), L.p, bias, c, N);
  for (int64_t t = 0; t < N; t++) {
    const float* x = u.data() + t * C;
    Vec logits(static_cast<size_t>(E));
    for (int64_t e = 0; e < E; e++) {
      double l = 0;
      for (int64_t j = 0; j < C; j++) l += double(L.p.router[e * C + j]) * x[j];
      logits[size_t(e)] = float(l);
    }
    const auto ids = brute_force_route(c, logits.data(), bias);
    double S = 0;
    for (int32_t e : ids) S += sigmoid(logits[size_t(e)]);
    std::vector<double> ref = mlp_ref(x, L.p.s_gate, L.p.s_up, L.p.s_down, C, Fs);
    for (int64_t k = 0; k < K; k++) {
      const int32_t e = ids[size_t(k)];
      const double g = sigmoid(logits[size_t(e)]) / S * 2.5;
      const auto o =
          mlp_ref(x, L.p.w_gate + e * F * C, L.p.w_up + e * F * C, L.p.w_down + e * C * F, C, F);
      for (int64_t j = 0; j < C; j++) ref[size_t(j)] += g * o[size_t(j)];
    }
    for (int64_t j = 0; j < C; j++)
      EXPECT_NEAR(y[size_t(t * C + j)], ref[size_t(j)], 1e-4 * (1 + std::fabs(ref[size_t(j)])))
          << "token " << t << " dim " << j;
  }
}

TEST(TrainMoeForward, EqualsInferenceMoeOnTheSameWeights) {
  const ModelConfig c = small_config();
  std::mt19937 rng(2);
  Layer L(c, rng);
  const int64_t N = 9, C = 8, E = 8, F = 4, Fs = 8;
  const Vec u = randn(size_t(N * C), rng), bias = randn(size_t(E), rng, 0.1f);
  namespace fs = std::filesystem;
  const fs::path dir =
      fs::temp_directory_path() / ("whale-train-moe-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  std::vector<std::pair<std::string, std::pair<std::vector<int64_t>, Vec>>> t;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, const float* p) {
    const int64_t n = std::accumulate(shape.begin(), shape.end(), int64_t(1), std::multiplies<>());
    t.push_back({"mlp." + name, {shape, Vec(p, p + n)}});
  };
  add("gate.weight", {E, C}, L.p.router);
  add("gate.e_score_correction_bias", {E}, bias.data());
  for (int64_t e = 0; e < E; e++) {
    const std::string x = "experts." + std::to_string(e);
    add(x + ".gate_proj.weight", {F, C}, L.p.w_gate + e * F * C);
    add(x + ".up_proj.weight", {F, C}, L.p.w_up + e * F * C);
    add(x + ".down_proj.weight", {C, F}, L.p.w_down + e * C * F);
  }
  add("shared_experts.gate_proj.weight", {Fs, C}, L.p.s_gate);
  add("shared_experts.up_proj.weight", {Fs, C}, L.p.s_up);
  add("shared_experts.down_proj.weight", {C, Fs}, L.p.s_down);
  write_f32_safetensors(dir.string(), t);

  Vec want(size_t(N * C)), got(size_t(N * C));
  {
    Checkpoint ck(dir.string());
    MoE moe(c, ck, "mlp");
    moe.forward(u.data(), N, want.data());
  }
  fs::remove_all(dir);
  MoeActs a;
  moe_forward(got.data(), a, u.data(), L.p, bias, c, N);
  for (size_t i = 0; i < got.size(); i++)
    EXPECT_NEAR(got[i], want[i], 1e-5 * (1 + std::fabs(want[i]))) << i;
}

TEST(TrainMoeForward, RejectsBadInput) {
  ModelConfig c = small_config();
  std::mt19937 rng(3);
  Layer L(c, rng);
  const Vec u = randn(16, rng);
  Vec y(16);
  MoeActs a;
  const Vec short_bias(3, 0.0f);
  EXPECT_THROW(moe_forward(y.data(), a, u.data(), L.p, short_bias, c, 2), std::invalid_argument);
  moe_forward(y.data(), a, u.data(), L.p, {}, c, 2);
  EXPECT_THROW(balance_loss_forward(a, 3, 1.0f), std::invalid_argument);  // 2 tokens, T = 3
  EXPECT_THROW(balance_loss_forward(a, 0, 1.0f), std::invalid_argument);
  c.scoring_func = ScoringFunc::Softmax;
  EXPECT_THROW(moe_num_params(c), std::invalid_argument);
}

// ---- backward ----

// Checks the gradient of `loss` for every element of `x` against central differences, skipping
// elements whose +-h perturbation changes the expert selection (the loss is not differentiable
// across a selection change). Most elements must be checked.
void expect_grad_matches(float* x, const Vec& grad, const std::function<double()>& loss,
                         const std::function<std::vector<int32_t>()>& selection,
                         const std::string& what, float h = 1e-2f) {
  const std::vector<int32_t> base = selection();
  std::vector<double> numeric(grad.size());
  std::vector<bool> checked(grad.size(), false);
  double largest = 0.0;
  size_t skipped = 0;
  for (size_t i = 0; i < grad.size(); i++) {
    const float saved = x[i];
    x[i] = saved + h;
    const double lp = loss();
    const bool same_p = selection() == base;
    x[i] = saved - h;
    const double lm = loss();
    const bool same_m = selection() == base;
    x[i] = saved;
    if (!same_p || !same_m) {
      skipped++;
      continue;
    }
    checked[i] = true;
    numeric[i] = (lp - lm) / (2.0 * h);
    largest = std::max(largest, std::fabs(numeric[i]));
  }
  EXPECT_LE(skipped * 5, grad.size()) << what << ": too many selection changes";
  ASSERT_GT(largest, 1e-4) << what << ": the loss does not depend on it, nothing is checked";
  for (size_t i = 0; i < grad.size(); i++) {
    if (!checked[i]) continue;
    EXPECT_NEAR(grad[i], numeric[i], 1e-2 * std::fabs(numeric[i]) + 2e-3 * largest)
        << what << "[" << i << "]";
  }
}

// The loss sum(y * r) + balance-loss, its analytic gradients, and the check of every tensor.
void check_layer_gradients(const ModelConfig& c, float alpha, bool output_loss, uint32_t seed) {
  std::mt19937 rng(seed);
  Layer L(c, rng);
  const int64_t N = 6, T = 3, C = c.hidden_size, E = c.n_routed_experts;
  Vec u = randn(size_t(N * C), rng);
  const Vec bias = randn(size_t(E), rng, 0.05f);
  const Vec r = randn(size_t(N * C), rng);
  MoeActs a;
  Vec y(size_t(N * C));
  auto loss = [&]() {
    moe_forward(y.data(), a, u.data(), L.p, bias, c, N);
    double l = alpha > 0 ? balance_loss_forward(a, T, alpha) : 0.0;
    if (output_loss)
      for (size_t i = 0; i < y.size(); i++) l += double(y[i]) * r[i];
    return l;
  };
  auto selection = [&]() { return a.ids; };  // of the forward that loss() just ran

  loss();
  Vec grads(L.flat.size(), 0.0f), du(u.size(), 0.0f);
  const MoeParams gp = moe_params_at(grads.data(), c);
  Vec dlog(size_t(N * E), 0.0f);
  if (alpha > 0) balance_loss_backward(dlog.data(), a, T, alpha, 1.0f);
  const Vec dy = output_loss ? r : Vec(r.size(), 0.0f);
  moe_backward(du.data(), gp, a, dy.data(), u.data(), L.p, alpha > 0 ? dlog.data() : nullptr, c);

  auto slice = [](const Vec& v, const float* base, const float* from, size_t n) {
    const size_t o = size_t(from - base);
    return Vec(v.begin() + long(o), v.begin() + long(o + n));
  };
  const int64_t F = c.moe_intermediate_size, Fs = F * c.n_shared_experts;
  const float* b = L.flat.data();
  expect_grad_matches(u.data(), du, loss, selection, "input");
  expect_grad_matches(L.p.router, slice(grads, b, L.p.router, size_t(E * C)), loss, selection,
                      "router");
  if (!output_loss) return;  // the balance loss only reaches the router and the input
  expect_grad_matches(L.p.w_gate, slice(grads, b, L.p.w_gate, size_t(E * F * C)), loss, selection,
                      "experts gate_proj");
  expect_grad_matches(L.p.w_up, slice(grads, b, L.p.w_up, size_t(E * F * C)), loss, selection,
                      "experts up_proj");
  expect_grad_matches(L.p.w_down, slice(grads, b, L.p.w_down, size_t(E * C * F)), loss, selection,
                      "experts down_proj");
  if (Fs == 0) return;
  expect_grad_matches(L.p.s_gate, slice(grads, b, L.p.s_gate, size_t(Fs * C)), loss, selection,
                      "shared gate_proj");
  expect_grad_matches(L.p.s_up, slice(grads, b, L.p.s_up, size_t(Fs * C)), loss, selection,
                      "shared up_proj");
  expect_grad_matches(L.p.s_down, slice(grads, b, L.p.s_down, size_t(C * Fs)), loss, selection,
                      "shared down_proj");
}

TEST(TrainMoeBackward, GroupedRoutingMatchesFiniteDifferences) {
  check_layer_gradients(small_config(4, 2), 0.0f, true, 21);
}

TEST(TrainMoeBackward, SingleGroupWithoutNormalisationMatchesFiniteDifferences) {
  ModelConfig c = small_config(1, 1);
  c.norm_topk_prob = false;
  c.n_shared_experts = 0;
  check_layer_gradients(c, 0.0f, true, 22);
}

TEST(TrainMoeBackward, OutputPlusBalanceLossMatchesFiniteDifferences) {
  check_layer_gradients(small_config(4, 2), 0.5f, true, 23);
}

// Enough tokens that routing, the expert GEMMs (spread over the threads) and the router product
// (OpenBLAS on every thread) all run multi-threaded: the same bits run after run on a thread
// count (needed for exact resume), and the same values to rounding on 1 and 2 threads.
TEST(TrainMoeBackward, RepeatableOnAThreadCountAndCloseAcrossThem) {
  const ModelConfig c = small_config();
  const int64_t N = 1024, C = 8, E = 8;
  auto run = [&](int threads) {
    std::mt19937 rng(31);
    Layer L(c, rng);
    const Vec u = randn(size_t(N * C), rng), dy = randn(size_t(N * C), rng);
    const Vec bias = randn(size_t(E), rng, 0.05f);
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    MoeActs a;
    Vec y(size_t(N * C)), grads(L.flat.size(), 0.0f), du(u.size(), 0.0f), dlog(size_t(N * E), 0.0f);
    moe_forward(y.data(), a, u.data(), L.p, bias, c, N);
    balance_loss_backward(dlog.data(), a, 8, 0.1f, 1.0f);
    moe_backward(du.data(), moe_params_at(grads.data(), c), a, dy.data(), u.data(), L.p,
                 dlog.data(), c);
    omp_set_num_threads(saved);
    y.insert(y.end(), du.begin(), du.end());
    y.insert(y.end(), grads.begin(), grads.end());
    return y;
  };
  const Vec two = run(2);
  EXPECT_EQ(run(2), two);
  const Vec one = run(1);
  ASSERT_EQ(one.size(), two.size());
  double largest = 0.0;
  for (float v : two) largest = std::max(largest, std::fabs(double(v)));
  for (size_t i = 0; i < one.size(); i++) ASSERT_NEAR(one[i], two[i], 1e-5 * largest) << i;
}

// ---- auxiliary-loss-free balancing ----

TEST(TrainMoeBalance, BiasMovesTowardsBalance) {
  // mean 5: expert 0 overloaded (down), 1 underloaded (up), 2 exactly balanced (unchanged).
  std::vector<float> bias = {0.5f, 0.5f, 0.5f, 0.5f};
  const std::vector<int64_t> counts = {10, 1, 5, 4};
  update_expert_bias(bias, counts, 0.25f);
  EXPECT_EQ(bias, (std::vector<float>{0.25f, 0.75f, 0.5f, 0.75f}));
  const ExpertLoad l = expert_load(counts);
  EXPECT_EQ(l.total, 20);
  EXPECT_DOUBLE_EQ(l.mean, 5.0);
  EXPECT_DOUBLE_EQ(l.max_over_mean, 2.0);
  EXPECT_DOUBLE_EQ(l.min_over_mean, 0.2);
  std::vector<float> wrong(3);
  EXPECT_THROW(update_expert_bias(wrong, counts, 0.1f), std::invalid_argument);
}

// The update rule in a loop evens out a router that strongly prefers expert 0 and its group.
TEST(TrainMoeBalance, BiasUpdatesEvenOutASkewedRouter) {
  const ModelConfig c = small_config();
  std::mt19937 rng(5);
  const int64_t N = 256, E = 8, K = 2;
  Vec logits = randn(size_t(N * E), rng);
  for (int64_t t = 0; t < N; t++) logits[size_t(t * E)] += 3.0f, logits[size_t(t * E + 1)] += 2.0f;
  Vec bias(size_t(E), 0.0f);
  auto counts = [&]() {
    std::vector<int64_t> n(size_t(E), 0);
    int32_t ids[2];
    float w[2];
    for (int64_t t = 0; t < N; t++) {
      route_token(c, logits.data() + t * E, bias, ids, w);
      for (int64_t k = 0; k < K; k++) n[size_t(ids[k])]++;
    }
    return n;
  };
  const double before = expert_load(counts()).max_over_mean;
  for (int step = 0; step < 100; step++) update_expert_bias(bias, counts(), 0.01f);
  const double after = expert_load(counts()).max_over_mean;
  EXPECT_GT(before, 3.0);
  EXPECT_LT(after, 1.5);
  EXPECT_LT(bias[0], 0.0f);
}

// ---- sequence-wise balance loss ----

// E = 4, top-1, one group, identity router (u = logits), two sequences of T = 2.
//   seq 0: token 0 all logits 0 -> s = .5 each, s' = .25 each, picks expert 0 (tie, lowest id)
//          token 1 s = [.2 .1 .8 .5] (sum 1.6), s' = [.125 .0625 .5 .3125], picks expert 2
//          f = E/(K T) * counts = 2 * [1 0 1 0];  P = [.1875 .15625 .375 .28125]
//          sum f P = 2*.1875 + 2*.375 = 1.125
//   seq 1: both tokens all zeros -> expert 0 twice: f_0 = 4, P_0 = .25 -> 1.0
//   L = alpha * (1.125 + 1.0) / 2 = alpha * 1.0625
TEST(TrainMoeBalance, SequenceWiseLossOnAHandExample) {
  ModelConfig c = small_config(1, 1);
  c.hidden_size = 4;
  c.n_routed_experts = 4;
  c.num_experts_per_tok = 1;
  c.n_shared_experts = 0;
  std::mt19937 rng(6);
  Layer L(c, rng);
  std::fill_n(L.p.router, 16, 0.0f);
  for (int e = 0; e < 4; e++) L.p.router[e * 4 + e] = 1.0f;
  auto logit = [](float s) { return std::log(s / (1 - s)); };
  Vec u(16, 0.0f);
  const float s1[4] = {0.2f, 0.1f, 0.8f, 0.5f};
  for (int e = 0; e < 4; e++) u[size_t(4 + e)] = logit(s1[e]);
  MoeActs a;
  Vec y(16);
  moe_forward(y.data(), a, u.data(), L.p, {}, c, 4);
  EXPECT_EQ(a.ids, (std::vector<int32_t>{0, 2, 0, 0}));
  EXPECT_NEAR(balance_loss_forward(a, 2, 0.1f), 0.10625f, 1e-6f);
  // One sequence of 4: f = 1 * [3 0 1 0], P = [(.25*3+.125)/4, ..] -> 3*.21875 + .3125 = .96875.
  EXPECT_NEAR(balance_loss_forward(a, 4, 1.0f), 0.96875f, 1e-6f);
}

TEST(TrainMoeBalance, SequenceWiseLossGradientMatchesFiniteDifferences) {
  check_layer_gradients(small_config(4, 2), 1.0f, false, 24);
}

}  // namespace
}  // namespace whale::train
