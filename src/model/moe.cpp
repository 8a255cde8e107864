#include "model/moe.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "kernels/ops.h"
#include "model/weights.h"

namespace whale {

// Indices of the k largest values (ties: lower index first), in descending order of value.
// `order` is scratch.
static void top_k(const float* v, int64_t n, int64_t k, int32_t* idx, std::vector<int32_t>& order) {
  order.resize(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(),
                    [&](int32_t a, int32_t b) { return v[a] > v[b] || (v[a] == v[b] && a < b); });
  std::copy(order.begin(), order.begin() + k, idx);
}

void route_token(const ModelConfig& c, const float* logits, std::span<const float> bias,
                 int32_t* expert_ids, float* weights) {
  RouteScratch scratch;
  route_token(c, logits, bias, expert_ids, weights, scratch);
}

void route_token(const ModelConfig& c, const float* logits, std::span<const float> bias,
                 int32_t* expert_ids, float* weights, RouteScratch& sc) {
  const int64_t E = c.n_routed_experts, K = c.num_experts_per_tok;
  std::vector<float>& scores = sc.scores;
  scores.resize(static_cast<size_t>(E));
  if (c.scoring_func == ScoringFunc::Sigmoid) {
    for (int64_t e = 0; e < E; e++) scores[size_t(e)] = 1.0f / (1.0f + std::exp(-logits[e]));
  } else {
    float m = *std::max_element(logits, logits + E);
    double sum = 0.0;
    for (int64_t e = 0; e < E; e++) sum += std::exp(double(logits[e] - m));
    for (int64_t e = 0; e < E; e++)
      scores[size_t(e)] = float(std::exp(double(logits[e] - m)) / sum);
  }

  // Choice scores: biased for noaux_tc, else the scores themselves.
  std::vector<float>& choice = sc.choice;
  choice.assign(scores.begin(), scores.end());
  if (c.topk_method == TopkMethod::NoauxTc && !bias.empty())
    for (int64_t e = 0; e < E; e++) choice[size_t(e)] += bias[size_t(e)];

  if (c.topk_method != TopkMethod::Greedy && c.n_group > 1) {
    const int64_t G = c.n_group, per = E / G;
    std::vector<float>& group_score = sc.group_score;
    group_score.resize(static_cast<size_t>(G));
    for (int64_t g = 0; g < G; g++) {
      const float* gs = choice.data() + g * per;
      if (c.topk_method == TopkMethod::NoauxTc) {
        int32_t best[2];
        top_k(gs, per, 2, best, sc.order);
        group_score[size_t(g)] = gs[best[0]] + gs[best[1]];
      } else {
        group_score[size_t(g)] = *std::max_element(gs, gs + per);
      }
    }
    sc.keep.resize(size_t(c.topk_group));
    top_k(group_score.data(), G, c.topk_group, sc.keep.data(), sc.order);
    sc.kept.assign(size_t(G), 0);
    for (int32_t g : sc.keep) sc.kept[size_t(g)] = 1;
    for (int64_t e = 0; e < E; e++)
      if (!sc.kept[size_t(e / per)]) choice[size_t(e)] = -INFINITY;
  }

  top_k(choice.data(), E, K, expert_ids, sc.order);
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

// All experts' products run as two batched kernel calls (linear_many): first gate_proj and
// up_proj of every active expert and of the shared experts, then, after silu(gate) * up, every
// down_proj. One fork/join per stage instead of one per small matrix; results are the same as
// running the experts one by one.
void MoE::forward(const float* x, int64_t N, float* y) const {
  const int64_t D = c_.hidden_size, E = c_.n_routed_experts, K = c_.num_experts_per_tok;
  const int64_t I = c_.moe_intermediate_size;

  // Route every token.
  std::vector<float> logits(size_t(N * E));
  linear(x, N, gate_, logits.data());
  std::vector<int32_t> ids(size_t(N * K));
  std::vector<float> w(size_t(N * K));
  RouteScratch scratch;
  for (int64_t t = 0; t < N; t++)
    route_token(c_, logits.data() + t * E, score_bias_, ids.data() + t * K, w.data() + t * K,
                scratch);

  // Tokens of each expert, in token order.
  std::vector<std::vector<std::pair<int64_t, float>>> assigned(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; t++)
    for (int64_t k = 0; k < K; k++)
      assigned[size_t(ids[size_t(t * K + k)])].push_back({t, w[size_t(t * K + k)]});

  // Buffer layout per active expert: its gathered input rows (unless it sees every token, then x
  // itself), gate and up activations, and its output rows.
  struct Active {
    int64_t e, m;
    const float* xin;
    float *g, *u, *out;
  };
  std::vector<Active> active;
  int64_t rows = 0;  // token rows over all active experts
  for (int64_t e = 0; e < E; e++) {
    const int64_t m = int64_t(assigned[size_t(e)].size());
    if (m > 0) active.push_back({e, m, nullptr, nullptr, nullptr, nullptr});
    rows += m;
  }
  const int64_t Is = has_shared_ ? shared_experts_.inter : 0;
  // Reused across calls (every element is written before it is read): allocating and zeroing
  // ~1 MB per layer per step cost ~3% of a batched decode step.
  thread_local std::vector<float> buf;
  const size_t need = size_t(rows * (2 * D + 2 * I) + 2 * N * Is);
  if (buf.size() < need) buf.resize(need);
  float* p = buf.data();
  for (Active& a : active) {
    const auto& tok = assigned[size_t(a.e)];
    if (a.m == N) {
      a.xin = x;  // tokens 0..N-1 in order
    } else {
      float* xin = p;
      for (int64_t i = 0; i < a.m; i++)
        std::copy(x + tok[size_t(i)].first * D, x + (tok[size_t(i)].first + 1) * D, xin + i * D);
      a.xin = xin;
    }
    p += a.m * D;
    a.g = p;
    a.u = a.g + a.m * I;
    a.out = a.u + a.m * I;
    p = a.out + a.m * D;
  }
  float* gs = p;  // shared experts' gate and up
  float* us = gs + N * Is;

  // Stage 1: gate_proj and up_proj of everything.
  std::vector<LinearJob> jobs;
  jobs.reserve(2 * active.size() + 2);
  if (has_shared_) {
    jobs.push_back({x, N, shared_experts_.gate_proj, gs});
    jobs.push_back({x, N, shared_experts_.up_proj, us});
  }
  for (const Active& a : active) {
    const Mlp& mlp = experts_[size_t(a.e)];
    jobs.push_back({a.xin, a.m, mlp.gate_proj, a.g});
    jobs.push_back({a.xin, a.m, mlp.up_proj, a.u});
  }
  linear_many(jobs);

  // silu(gate) * up, in place in the gate buffers.
  if (has_shared_) silu_mul(gs, us, N * Is, gs);
  for (const Active& a : active) silu_mul(a.g, a.u, a.m * I, a.g);

  // Stage 2: every down_proj; the shared experts write y directly.
  jobs.clear();
  if (has_shared_) jobs.push_back({gs, N, shared_experts_.down_proj, y});
  for (const Active& a : active) jobs.push_back({a.g, a.m, experts_[size_t(a.e)].down_proj, a.out});
  if (!has_shared_) std::fill(y, y + N * D, 0.0f);
  linear_many(jobs);

  // y += g_i * MLP_i(u), experts in index order.
  for (const Active& a : active) {
    const auto& tok = assigned[size_t(a.e)];
    for (int64_t i = 0; i < a.m; i++)
      axpy(tok[size_t(i)].second, a.out + i * D, y + tok[size_t(i)].first * D, D);
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
