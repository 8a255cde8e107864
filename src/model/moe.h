// DeepSeekMoE (DeepSeekMoE paper; V2 section 2.2; V3 section 2.1.2):
//   y = sum_shared MLP_s(u) + sum_{i in topK} g_i * MLP_i(u)
// The router scores experts, selects K of them, and weights them:
//   s_i = softmax(u . e)_i (V2) or sigmoid(u . e_i) (V3)
//   greedy:               top-K of s
//   group_limited_greedy: (V2) keep the topk_group groups with the highest MAX s, top-K inside them
//   noaux_tc:             (V3) choice score s_i + b_i (e_score_correction_bias, selection only);
//                         group score = sum of its top-2 choice scores; keep topk_group groups;
//                         top-K choice scores inside them (others -inf, as the official code)
//   g_i = s_i of the chosen experts (never biased), then
//   V3: normalised over the chosen if norm_topk_prob, and always times routed_scaling_factor;
//   V2: normalised if norm_topk_prob, else times routed_scaling_factor (the V2 reference code).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "kernels/linear.h"
#include "model/config.h"
#include "model/mlp.h"

namespace whale {

// Routes one token: `logits` [n_routed_experts] router logits, `bias` the correction bias (or
// empty). Writes num_experts_per_tok expert ids and gate weights.
void route_token(const ModelConfig& c, const float* logits, std::span<const float> bias,
                 int32_t* expert_ids, float* weights);

// Working memory of route_token, kept across tokens so that routing allocates nothing per token
// once it has grown (one per thread).
struct RouteScratch {
  std::vector<float> scores, choice, group_score;
  std::vector<int32_t> order, keep;
  std::vector<uint8_t> kept;
};
// The same routing (identical ids and weights) using `scratch`.
void route_token(const ModelConfig& c, const float* logits, std::span<const float> bias,
                 int32_t* expert_ids, float* weights, RouteScratch& scratch);

class MoE {
 public:
  MoE(const ModelConfig& c, const Checkpoint& ck, const std::string& prefix);

  // x: [N][hidden] (post_attention_layernorm'd) -> y: [N][hidden].
  void forward(const float* x, int64_t N, float* y) const;
  size_t bytes() const;         // all experts
  size_t active_bytes() const;  // shared + top-k routed + router

 private:
  const ModelConfig& c_;
  WeightRef gate_;                 // [n_routed_experts x hidden]
  std::vector<float> score_bias_;  // e_score_correction_bias, noaux_tc only
  std::vector<Mlp> experts_;
  Mlp shared_experts_;
  bool has_shared_ = false;
};

}  // namespace whale
