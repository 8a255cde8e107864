// DeepSeekMoE for training (V3 section 2.1.2), forward and backward on explicit f32 buffers,
// following the conventions of train/ops.h (caller-owned parameters and gradients, backward
// ACCUMULATES, bit-identical results run after run on the same thread count). The routed experts
// run as one GEMM per expert on its gathered rows (matmul_*_grouped); routing allocates nothing
// per token.
//
//   logits = u e^T,  s = sigmoid(logits)                       u [N][C], e [E][C]
//   selection: route_token (s + b, group-limited noaux_tc), exactly as inference
//   g_k = scale * s_k / sum_selected s   (norm_topk_prob, K > 1) or scale * s_k
//   y = shared(u) + sum_k g_k expert_{id_k}(u),  every expert a SwiGLU MLP
//
// The backward treats the selection as a constant: the router gets gradient only through s of
// the selected experts (normalisation included), plus whatever the caller adds on the logits (the
// sequence-wise balance loss below). The correction bias b is not a gradient parameter; it moves
// by update_expert_bias after each step (auxiliary-loss-free balancing).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"

namespace whale::train {

// Views of one MoE layer's parameters (or of their gradients, same layout), nn.Linear layout.
// Routed experts are stored one after another: expert e's gate_proj is w_gate + e*F*C.
struct MoeParams {
  float* router = nullptr;  // [E][C]      gate.weight
  float* w_gate = nullptr;  // [E][F][C]   experts.{e}.gate_proj.weight
  float* w_up = nullptr;    // [E][F][C]   experts.{e}.up_proj.weight
  float* w_down = nullptr;  // [E][C][F]   experts.{e}.down_proj.weight
  float* s_gate = nullptr;  // [Fs][C]     shared_experts.gate_proj.weight (null: no shared)
  float* s_up = nullptr;    // [Fs][C]     shared_experts.up_proj.weight
  float* s_down = nullptr;  // [C][Fs]     shared_experts.down_proj.weight
};

// Number of floats of one layer's parameters, and their views carved in the order above out of a
// flat buffer of that size. Throws std::invalid_argument for a config this layer cannot train
// (no routed experts, softmax scoring).
int64_t moe_num_params(const ModelConfig& c);
MoeParams moe_params_at(float* base, const ModelConfig& c);

// Everything the backward needs, plus its scratch; sized once by resize() and reused.
// Gathered rows are expert-major: expert e owns rows [offset[e], offset[e+1]), in token order.
struct MoeActs {
  void resize(const ModelConfig& c, int64_t N);

  int64_t N = 0, C = 0, E = 0, K = 0, F = 0, Fs = 0;
  std::vector<float> logits;       // [N][E] router logits
  std::vector<float> scores;       // [N][E] s = sigmoid(logits)
  std::vector<int32_t> ids;        // [N][K] selected experts, in route_token's order
  std::vector<float> gates;        // [N][K] g_k, exactly route_token's weights
  std::vector<int64_t> counts;     // [E] tokens routed to each expert in this call
  std::vector<int64_t> offset;     // [E+1] first gathered row of each expert
  std::vector<int32_t> row_token;  // [N*K] token of each gathered row
  std::vector<int32_t> row_of;     // [N][K] gathered row of (token, slot)
  std::vector<float> xg;           // [N*K][C] gathered inputs
  std::vector<float> hg, hu, h;    // [N*K][F] gate_proj, up_proj, silu(gate)*up
  std::vector<float> out;          // [N*K][C] expert outputs before gating
  std::vector<float> sg, su, sh;   // [N][Fs] the shared experts' gate, up, silu(gate)*up
  // Backward scratch.
  std::vector<float> dgate;         // [N][K] dL/dg_k
  std::vector<float> dxg, dout;     // [N*K][C]
  std::vector<float> dh, dhg, dhu;  // [N*K][F]  (also [N][Fs] for the shared experts)
  std::vector<float> dlogits;       // [N][E]
};

// y [N][C] = MoE(u [N][C]); bias [E] is e_score_correction_bias (empty: none). Fills `a`
// (resized as needed).
void moe_forward(float* y, MoeActs& a, const float* u, const MoeParams& p,
                 std::span<const float> bias, const ModelConfig& c, int64_t N);

// du [N][C] += dL/du; grads += dL/dparams (same layout as the parameters). dlogits_extra [N][E]
// (may be null) is an additional gradient on the router logits, e.g. from
// balance_loss_backward, folded into the router weight's and the input's gradients.
void moe_backward(float* du, const MoeParams& grads, MoeActs& a, const float* dy, const float* u,
                  const MoeParams& p, const float* dlogits_extra, const ModelConfig& c);

// ---- auxiliary-loss-free balancing ----
// b_i += gamma * sign(mean(c) - c_i): overloaded experts become less likely to be chosen,
// underloaded ones more. `counts` [E] are the step's token counts (summed over micro-batches and
// processes by the caller).
void update_expert_bias(std::span<float> bias, std::span<const int64_t> counts, float gamma);

struct ExpertLoad {
  int64_t total = 0;           // token-expert assignments
  double mean = 0.0;           // per expert
  double max_over_mean = 0.0;  // 1 = perfectly balanced; 0 when nothing was routed
  double min_over_mean = 0.0;
};
ExpertLoad expert_load(std::span<const int64_t> counts);

// ---- complementary sequence-wise balance loss (V3 eq. 17-20) ----
// For each sequence of T consecutive tokens (N = B*T):
//   f_i = E / (K*T) * #{t : i selected for t},  P_i = 1/T sum_t s_{i,t} / sum_j s_{j,t}
//   L = alpha * mean over sequences of sum_i f_i P_i.
// Uses the scores and selection of the last moe_forward.
float balance_loss_forward(const MoeActs& a, int64_t T, float alpha);
// dlogits [N][E] += dL/dlogits * dloss, f held constant (it counts a discrete selection).
void balance_loss_backward(float* dlogits, const MoeActs& a, int64_t T, float alpha, float dloss);

}  // namespace whale::train
