// Multi-head Latent Attention (DeepSeek-V2 section 2.1), read top to bottom like the paper:
//
//   queries   c_Q = RMSNorm(W_DQ h)            (q_a_proj, q_a_layernorm; or none: q = q_proj h)
//             [q_C ; q_R] = W_UQ c_Q           (q_b_proj: per head qk_nope + qk_rope values)
//   keys/vals [c_KV ; k_R] = W_DKV h           (kv_a_proj_with_mqa: kv_lora_rank + qk_rope values)
//             c_KV = RMSNorm(c_KV)             (kv_a_layernorm)
//             [k_C ; v] = W_UKV c_KV           (kv_b_proj: per head qk_nope + v_head values)
//             q_R, k_R  = RoPE(q_R), RoPE(k_R) (k_R is ONE head shared by all heads)
//   attention score(i, j) = scale * (q_C,i . k_C,j + q_R,i . k_R,j), causal softmax, sum of v
//   output    o_proj(concat of heads)
//
// Only c_KV and k_R are cached. Two equivalent ways to attend:
//   naive:    decompress k_C and v for every cached position, then ordinary attention;
//   absorbed: fold W_UK into the query (q_C . W_UK c_KV = (W_UK^T q_C) . c_KV) and W_UV into the
//             output, so attention runs directly on the cached latents. Decode uses this.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "kernels/linear.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "model/norm.h"
#include "model/rope.h"

namespace whale {

enum class AttnMode { Auto, Naive, Absorbed };

class MLA {
 public:
  MLA(const ModelConfig& c, const Checkpoint& ck, const std::string& prefix, int64_t layer,
      const Rope* rope);

  // x: [N][hidden] (already input_layernorm'd) -> y: [N][hidden]. Writes the new tokens' latents
  // into each segment's cache (the caller advances cache->len() after the last layer).
  void forward(const float* x, int64_t N, std::span<const AttnSegment> segs, float* y,
               AttnMode mode) const;
  size_t bytes() const;

 private:
  void attend_naive(const AttnSegment& s, const float* q, float* out) const;
  // All segments at once: each head's W_UK / W_UV slices are read once per call, not once per
  // sequence (what makes batched decoding of many sequences cheap).
  void attend_absorbed(std::span<const AttnSegment> segs, const float* q, float* out) const;

  const ModelConfig& c_;
  int64_t layer_;
  const Rope* rope_;
  float scale_;
  // q_lora_rank > 0: q_a_proj, q_a_layernorm, q_b_proj; else q_proj.
  WeightRef q_proj_, q_a_proj_, q_b_proj_;
  RMSNorm q_a_layernorm_;
  WeightRef kv_a_proj_with_mqa_;  // [kv_lora_rank + qk_rope_head_dim x hidden]
  RMSNorm kv_a_layernorm_;
  WeightRef kv_b_proj_;  // [heads * (qk_nope_head_dim + v_head_dim) x kv_lora_rank]
  // GGUF only (data null otherwise): W_UK^T per head [heads * kv_lora_rank x qk_nope_head_dim]
  // and W_UV [heads * v_head_dim x kv_lora_rank] in the file's type (llama.cpp's attn_k_b,
  // attn_v_b), for the absorbed form.
  WeightRef k_b_proj_, v_b_proj_;
  WeightRef o_proj_;  // [hidden x heads * v_head_dim]
};

}  // namespace whale
