#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "model/weights.h"

namespace whale {

// Indices of the k largest values (ties: lower index first), in descending order of value.
static void top_k(const float* v, int64_t n, int64_t k, int32_t* idx) {
  std::vector<int32_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return v[a] > v[b] || (v[a] == v[b] && a < b);
  });
  std::copy(order.begin(), order.begin() + k, idx);
}

void route_token(const ModelConfig& c, const float* logits, std::span<const float> bias,
                 int32_t* expert_ids, float* weights) {
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
  std::vector<float> scores(static_cast<size_t>(E));
  if (c.scoring_func == ScoringFunc::Sigmoid) {
    for (int64_t e = 0; e < E; e++) scores[size_t(e)] = 1.0f / (1.0f + std::exp(-logits[e]));
  } else {
    float m = *std::max_element(logits, logits + E);
    double sum = 0.0;
    for (int64_t e = 0; e < E; e++) sum += std::exp(double(logits[e] - m));
    for (int64_t e = 0; e < E; e++) scores[size_t(e)] = float(std::exp(double(logits[e] - m)) / sum);
  }

  // Choice scores: biased for noaux_tc, else the scores themselves.
  std::vector<float> choice = scores;
  if (c.topk_method == TopkMethod::NoauxTc && !bias.empty())
    for (int64_t e = 0; e < E; e++) choice[size_t(e)] += bias[size_t(e)];

  if (c.topk_method != TopkMethod::Greedy && c.n_group > 1) {
    const int64_t G = c.n_group, per = E / G;
    std::vector<float> group_score(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; g++) {
      const float* gs = choice.data() + g * per;
      if (c.topk_method == TopkMethod::NoauxTc) {
        int32_t best[2];
        top_k(gs, per, 2, best);
        group_score[size_t(g)] = gs[best[0]] + gs[best[1]];
      } else {
        group_score[size_t(g)] = *std::max_element(gs, gs + per);
      }
    }
    std::vector<int32_t> keep(size_t(c.topk_group));
    top_k(group_score.data(), G, c.topk_group, keep.data());
    std::vector<bool> kept(size_t(G), false);
    for (int32_t g : keep) kept[size_t(g)] = true;
    for (int64_t e = 0; e < E; e++)
      if (!kept[size_t(e / per)]) choice[size_t(e)] = -INFINITY;
  }

  top_k(choice.data(), E, K, expert_ids);
  for (int64_t k = 0; k < K; k++) weights[k] = scores[size_t(expert_ids[k])];

  const bool normalise = K > 1 && c.norm_topk_prob;
  if (normalise) {
    double sum = 1e-20;
    for (int64_t k = 0; k < K; k++) sum += weights[k];
    for (int64_t k = 0; k < K; k++) weights[k] = float(weights[k] / sum);
  }
  if (c.arch == Arch::DeepseekV3 || !normalise)
    for (int64_t k = 0; k < K; k++) weights[k] *= float(c.routed_scaling_factor);
}

MoE::MoE(const ModelConfig& c, const Checkpoint& ck, const std::string& prefix) : c_(c) {
  gate_ = load_linear(ck, prefix + ".gate", c.n_routed_experts, c.hidden_size);
  if (c.topk_method == TopkMethod::NoauxTc)
    score_bias_ = load_vector(ck, prefix + ".gate.e_score_correction_bias", c.n_routed_experts);
  experts_.reserve(size_t(c.n_routed_experts));
  for (int64_t e = 0; e < c.n_routed_experts; e++)
    experts_.emplace_back(ck, prefix + ".experts." + std::to_string(e), c.hidden_size,
                          c.moe_intermediate_size);
  if (c.n_shared_experts > 0) {
    shared_experts_ = Mlp(ck, prefix + ".shared_experts", c.hidden_size,
                          c.moe_intermediate_size * c.n_shared_experts);
    has_shared_ = true;
  }
}

void MoE::forward(const float* x, int64_t N, float* y) const {
  const int64_t D = c_.hidden_size, E = c_.n_routed_experts, K = c_.num_experts_per_tok;
  std::vector<float> scratch;

  // Shared experts see every token.
  if (has_shared_)
    shared_experts_.forward(x, N, y, scratch);
  else
    std::fill(y, y + N * D, 0.0f);

  // Route every token.
  std::vector<float> logits(size_t(N * E));
  linear(x, N, gate_, logits.data());
  std::vector<int32_t> ids(size_t(N * K));
  std::vector<float> w(size_t(N * K));
  for (int64_t t = 0; t < N; t++)
    route_token(c_, logits.data() + t * E, score_bias_, ids.data() + t * K, w.data() + t * K);

  // Group tokens by expert and run each expert once on its tokens.
  std::vector<std::vector<std::pair<int64_t, float>>> assigned(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; t++)
    for (int64_t k = 0; k < K; k++)
      assigned[size_t(ids[size_t(t * K + k)])].push_back({t, w[size_t(t * K + k)]});
  std::vector<float> xin, xout;
  for (int64_t e = 0; e < E; e++) {
    const auto& a = assigned[size_t(e)];
    if (a.empty()) continue;
    const int64_t m = int64_t(a.size());
    xin.resize(size_t(m * D));
    xout.resize(size_t(m * D));
    for (int64_t i = 0; i < m; i++) std::copy(x + a[i].first * D, x + (a[i].first + 1) * D, xin.data() + i * D);
    experts_[size_t(e)].forward(xin.data(), m, xout.data(), scratch);
    for (int64_t i = 0; i < m; i++) {
      float* yt = y + a[i].first * D;
      const float g = a[i].second;
      for (int64_t d = 0; d < D; d++) yt[d] += g * xout[size_t(i * D + d)];
    }
  }
}

size_t MoE::bytes() const {
  size_t n = weight_bytes(gate_) + (has_shared_ ? shared_experts_.bytes() : 0);
  for (const auto& e : experts_) n += e.bytes();
  return n;
}

size_t MoE::active_bytes() const {
  size_t n = weight_bytes(gate_) + (has_shared_ ? shared_experts_.bytes() : 0);
  if (!experts_.empty()) n += size_t(c_.num_experts_per_tok) * experts_[0].bytes();
  return n;
}

}  // namespace whale
