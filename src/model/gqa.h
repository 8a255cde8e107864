// Grouped-query attention, as in Qwen2ForCausalLM and LlamaForCausalLM: the attention of the dense
// models DeepSeek distilled R1 into (R1-Distill-Qwen-1.5B/7B/14B/32B, R1-Distill-Llama-8B/70B).
//
//   q = W_Q x + b_Q       num_attention_heads heads of head_dim values   (q_proj; bias: Qwen2)
//   k = W_K x + b_K       num_key_value_heads heads                      (k_proj)
//   v = W_V x + b_V       num_key_value_heads heads                      (v_proj)
//   q, k = RoPE(q), RoPE(k)                                              (whole heads, rope.h)
//   query head h reads key/value head h / (num_attention_heads / num_key_value_heads)
//   score(i, j) = q_i . k_j / sqrt(head_dim), causal softmax over j <= i, output sum_j p_ij v_j
//   y = W_O concat(heads) + b_O                                          (o_proj; bias: Llama's
//                                                                         attention_bias only)
// The cache holds k (after RoPE) and v of every position: 2 * num_key_value_heads * head_dim
// values per token and layer (model/kv_cache.h), against MLA's kv_lora_rank + qk_rope_head_dim.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "kernels/linear.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/rope.h"

namespace whale {

class GQA {
 public:
  GQA(const ModelConfig& c, const Checkpoint& ck, const std::string& prefix, int64_t layer,
      const Rope* rope);

  // x: [N][hidden] (already input_layernorm'd) -> y: [N][hidden]. Writes the new tokens' keys
  // and values into each segment's cache (the caller advances cache->len() after the last layer).
  void forward(const float* x, int64_t N, std::span<const AttnSegment> segs, float* y) const;
  size_t bytes() const;

 private:
  // Causal attention of one segment's queries q [n][heads * head_dim] over its cache.
  void attend(const AttnSegment& s, const float* q, float* out) const;

  const ModelConfig& c_;
  int64_t layer_;
  const Rope* rope_;
  float scale_;
  WeightRef q_proj_, k_proj_, v_proj_, o_proj_;
  std::vector<float> q_bias_, k_bias_, v_bias_, o_bias_;  // empty when the model has none
};

}  // namespace whale
