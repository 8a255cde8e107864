// One Multi-head Latent Attention layer for training: forward and backward over B sequences of T
// tokens (positions 0..T-1 each), composed from the ops in train/ops.h. The math is that of the
// inference whale::MLA (model/mla.h) in its naive (decompressed) form:
//
//   q        = q_b_proj(RMSNorm(q_a_proj x))        or q_proj x when q_lora_rank == 0
//   [c ; kp] = kv_a_proj_with_mqa x                 latent c [kv_lora], k_pe [rope] (one head)
//   [kn ; v] = kv_b_proj(RMSNorm(c))                per head k_nope [nope], v [v_head]
//   q_pe, kp = RoPE(q_pe), RoPE(kp)                 (YaRN table of the inference Rope)
//   y        = o_proj(causal softmax attention)     scale = ModelConfig::softmax_scale()
//
// Conventions as train/ops.h: caller-owned buffers, backward ACCUMULATES into dx and every
// parameter gradient (the caller zeroes them once per step), deterministic for a given thread
// count.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/ops.h"

namespace whale::train {

// The latent norms have no eps argument in the reference code: always 1e-6 (as model/mla.cpp).
inline constexpr float kMlaLatentNormEps = 1e-6f;

// One tensor of a layer, named as in the checkpoint relative to `model.layers.{i}.self_attn.`.
struct MlaTensor {
  std::string name;            // e.g. "q_a_proj.weight"
  std::vector<int64_t> shape;  // [out, in] for projections, [n] for norm weights
  std::vector<float>* data;
};

// The parameters of one layer (also used for their gradients). Projections are [out][in] as
// nn.Linear. Tensors the config does not use stay empty: q_proj when q_lora_rank > 0, the
// q_a_proj / q_a_layernorm / q_b_proj trio otherwise.
struct MlaParams {
  // Zero-filled tensors of the config's shapes; throws std::invalid_argument on an impossible
  // config (naming the field).
  explicit MlaParams(const ModelConfig& c);

  std::vector<float> q_proj;              // [H*(nope+rope)][C]
  std::vector<float> q_a_proj;            // [q_lora][C]
  std::vector<float> q_a_layernorm;       // [q_lora]
  std::vector<float> q_b_proj;            // [H*(nope+rope)][q_lora]
  std::vector<float> kv_a_proj_with_mqa;  // [kv_lora+rope][C]
  std::vector<float> kv_a_layernorm;      // [kv_lora]
  std::vector<float> kv_b_proj;           // [H*(nope+v)][kv_lora]
  std::vector<float> o_proj;              // [C][H*v]

  // The tensors this config uses, with checkpoint names and shapes (for saving, loading,
  // initialising and the optimiser), in a fixed order.
  std::vector<MlaTensor> tensors();

 private:
  ModelConfig c_;
};

// What the forward saves for the backward, plus the backward's scratch, sized once for (B, T).
// N = B*T rows; sequence b owns rows [b*T, (b+1)*T).
struct MlaActs {
  MlaActs(const ModelConfig& c, int64_t B, int64_t T);
  void resize(const ModelConfig& c, int64_t B, int64_t T);  // reuses the storage
  int64_t B = 0, T = 0;

  // Saved by the forward.
  std::vector<float> cq;       // [N][q_lora] q_a_proj x (before the norm)    (q_lora > 0 only)
  std::vector<float> cq_rstd;  // [N]                                          (q_lora > 0 only)
  std::vector<float> cq_n;     // [N][q_lora] RMSNorm(cq)                      (q_lora > 0 only)
  std::vector<float> q;        // [N][H][nope+rope], q_pe rotated
  std::vector<float> kv_a;     // [N][kv_lora+rope] kv_a_proj_with_mqa x (unrotated, unnormed)
  std::vector<float> kv_lat;   // [N][kv_lora] the latent part of kv_a
  std::vector<float> kv_rstd;  // [N]
  std::vector<float> kv_n;     // [N][kv_lora] RMSNorm(latent)
  std::vector<float> k_pe;     // [N][rope] rotated
  std::vector<float> kvb;      // [N][H][nope+v] kv_b_proj kv_n
  std::vector<float> k_nope;   // [N][H][nope]
  std::vector<float> v;        // [N][H][v]
  std::vector<float> att;      // [B][H][T][T] softmax probabilities
  std::vector<float> out;      // [N][H*v] attention output, o_proj's input

  // Backward scratch: gradients of the intermediates above (overwritten each backward).
  std::vector<float> d_out, d_att, d_q, d_k_nope, d_k_pe, d_v, d_kvb, d_kv_n, d_kv_lat, d_kv_a,
      d_cq_n, d_cq;
};

// y [B*T][C] = MLA(x [B*T][C]) with x already input_layernorm'd. `rope` must cover T positions
// (throws std::invalid_argument otherwise, or when acts was sized for another config or B, T).
void mla_forward(float* y, const float* x, const MlaParams& p, MlaActs& acts, const RopeTable& rope,
                 const ModelConfig& c);

// Given dy [B*T][C]: dx += dL/dx (dx may be null) and g.* += dL/dparameters. Uses the
// activations of the last mla_forward on `acts` with the same x.
void mla_backward(float* dx, MlaParams& g, const float* dy, const float* x, const MlaParams& p,
                  MlaActs& acts, const RopeTable& rope, const ModelConfig& c);

}  // namespace whale::train
