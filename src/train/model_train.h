// The whole DeepSeek-V3 model for training: embedding, dense and MoE decoder layers (MLA + SwiGLU /
// DeepSeekMoE), final norm, output head, and the depth-1 multi-token-prediction (MTP) module, with
// one forward+backward over a batch of B sequences of T tokens.
//
//   h_0     = embed_tokens[inputs]
//   h_l+1   = h_l + MLA(input_layernorm(h_l));  then  h_l+1 += FFN(post_attention_layernorm(h_l+1))
//             (FFN: the dense SwiGLU MLP or DeepSeekMoE)
//   logits  = lm_head(norm(h_L))                      main loss: CE(logits, targets)
// MTP (V3 section 2.2, depth 1; checkpoint layer index L = num_hidden_layers):
//   e_i     = enorm(embed_tokens[t_{i+1}])            the NEXT token's embedding (shared)
//   m_i     = eh_proj([e_i ; hnorm(h_L,i)])           concat order: embedding first (as the
//                                                     released checkpoints are used by vLLM/SGLang)
//   m       = one decoder block (MLA + MoE) over m, causal, positions 0..T-1
//   logits' = lm_head(shared_head.norm(m))            predicts t_{i+2}; the head is shared
//   loss    = CE_main + mtp_lambda * CE_mtp + sum over MoE layers of the sequence-wise balance loss
// Position i < T-1 of the MTP module embeds inputs[i+1] (= t_{i+1}) and predicts targets[i+1]
// (= t_{i+2}); the last position has no target (it embeds inputs[T-1]; no other position attends
// to it, and it enters the loss only through the MTP block's balance loss, which counts all T
// tokens). CE_mtp is the mean over counted targets. h_L is the residual stream before the final
// norm. The balance loss of every MoE layer (MTP block included) is alpha * mean over sequences of
// sum_i f_i P_i (V3 eq. 17-20; train/moe_train.h), not weighted by mtp_lambda.
//
// Checkpoint names are those of the Hugging Face DeepSeek-V3 checkpoints:
//   model.embed_tokens.weight, model.norm.weight, lm_head.weight,
//   model.layers.{l}.input_layernorm.weight, .post_attention_layernorm.weight,
//   model.layers.{l}.self_attn.{q_a_proj,q_a_layernorm,q_b_proj|q_proj,kv_a_proj_with_mqa,
//                               kv_a_layernorm,kv_b_proj,o_proj}.weight,
//   model.layers.{l}.mlp.{gate_proj,up_proj,down_proj}.weight                       (dense layers)
//   model.layers.{l}.mlp.gate.weight, mlp.gate.e_score_correction_bias (a buffer, not trained by
//   gradient), mlp.experts.{e}.{gate,up,down}_proj.weight,
//   mlp.shared_experts.{gate,up,down}_proj.weight                                   (MoE layers)
//   MTP, l = L: model.layers.L.{enorm,hnorm}.weight, model.layers.L.eh_proj.weight [C][2C],
//   the block's tensors as above (an MoE block when L is an MoE layer index, else dense),
//   model.layers.L.shared_head.norm.weight; and, written as COPIES of the shared tensors when
//   saving, model.layers.L.embed_tokens.weight and model.layers.L.shared_head.head.weight.
//
// Conventions as train/ops.h: f32 buffers, results independent of the number of OpenMP threads,
// gradients accumulate across calls until zero_grad(). Activation buffers are allocated on the
// first call for a batch shape (B, T) and reused while it stays the same: one set for training,
// with every layer's activations, and a leaner one for forward-only calls (one layer's, reused).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"

namespace whale::train {

struct LossConfig {
  float mtp_lambda = 0.3f;      // weight of the MTP loss (V3: 0.3, then 0.1); 0 disables MTP
  float balance_alpha = 1e-4f;  // sequence-wise balance loss weight (0: off)
};

// One trainable tensor: its checkpoint name and shape, and where its values and gradient live.
// The pointers stay valid for the model's lifetime.
struct ParamTensor {
  std::string name;
  std::vector<int64_t> shape;
  float* data = nullptr;
  float* grad = nullptr;
  int64_t numel = 0;
  bool decay = true;  // AdamW weight decay applies (matrices, embedding) or not (norm weights)
};

// A tensor that is saved and loaded but not trained by gradient (e_score_correction_bias).
struct BufferTensor {
  std::string name;
  std::vector<int64_t> shape;
  float* data = nullptr;
  int64_t numel = 0;
};

struct StepLosses {
  double loss = 0;     // the optimised total: main + mtp_lambda * mtp + balance
  double main = 0;     // mean next-token cross-entropy
  double mtp = 0;      // mean MTP cross-entropy (0 when disabled)
  double balance = 0;  // sum over MoE layers of the balance loss (alpha included)
  int64_t tokens = 0;  // targets counted by the main loss
};

class TrainModel {
 public:
  // Throws std::invalid_argument naming the field for a config it cannot train (softmax scoring,
  // tie_word_embeddings, num_nextn_predict_layers > 1, impossible shapes, ...). The MTP module
  // exists iff c.num_nextn_predict_layers == 1; with mtp_lambda == 0 it is kept (initialised,
  // saved) but not run, and its gradients stay zero.
  TrainModel(const ModelConfig& c, const LossConfig& loss);
  ~TrainModel();
  TrainModel(const TrainModel&) = delete;
  TrainModel& operator=(const TrainModel&) = delete;

  const ModelConfig& config() const;
  const LossConfig& loss_config() const;

  // Every trainable tensor, in a fixed order (embedding, layers in order, norm, head, MTP).
  const std::vector<ParamTensor>& params() const;
  // The e_score_correction_bias of every MoE layer (MTP block included), zero-initialised.
  const std::vector<BufferTensor>& buffers() const;
  int64_t num_params() const;  // sum of params()[i].numel
  // Parameters a token's forward multiplies by (for the MFU estimate): routed experts counted
  // top-k of E; the embedding once; the head once more and the MTP module when MTP runs (the
  // head is applied twice then).
  int64_t num_active_params() const;

  // V3 initialisation: every matrix and the embedding ~ N(0, std^2), norm weights 1, biases 0.
  // Deterministic in `seed` (its own generator, identical on every platform).
  void init(uint64_t seed, float std = 0.006f);

  void zero_grad();

  // Forward and backward over B sequences of T tokens: inputs, targets [B][T] (targets may hold
  // kIgnoreIndex). Gradients of (loss * grad_scale) ACCUMULATE into params()[i].grad, so gradient
  // accumulation over micro-batches passes grad_scale = 1 / micro_batches (and data parallelism
  // divides further). Adds the tokens routed to each expert to expert_counts().
  // Throws std::invalid_argument for ids outside the vocabulary or T > max_position_embeddings.
  StepLosses forward_backward(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T,
                              float grad_scale);
  // Per-target loss weights [B*T]: the main loss is sum_n weights[n] * CE_n over the targets that
  // are not kIgnoreIndex, NOT divided by their count (so weights[n] = dL/dCE_n; the policy-gradient
  // losses of reason/grpo.h use it with L = -sum_n w_n log p_n). StepLosses::main reports that sum;
  // the MTP and balance terms are as above (LossConfig 0 switches them off entirely).
  StepLosses forward_backward(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T,
                              float grad_scale, const float* weights);
  // The same losses without gradients (validation), bit-equal to forward_backward's. Leaves the
  // gradients and expert_counts() alone.
  StepLosses forward(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T);
  // The main model's next-token logits [B*T][vocab_size] (no MTP, no losses, no gradients).
  void forward_logits(const int32_t* inputs, int64_t B, int64_t T, float* logits);
  // out[n] = log softmax(main head logits[n])[targets[n]] [B*T], 0 where targets[n] is
  // kIgnoreIndex: forward only (no MTP), gradients and expert_counts() untouched. Bit-equal to the
  // -CE_n that forward_backward computes on the same weights (the same logits and log-sum-exp).
  void token_logprobs(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T,
                      float* out);

  // The experts each token selected in MoE layer `moe_layer` (order of buffers()) during the last
  // forward: [B*T][num_experts_per_tok]. For tests and diagnostics.
  std::span<const int32_t> routed_experts(size_t moe_layer) const;

  // Tokens routed to each expert by forward_backward since the last reset: one [n_routed_experts]
  // vector per MoE layer, in the order of buffers().
  const std::vector<std::vector<int64_t>>& expert_counts() const;
  std::vector<std::vector<int64_t>>& expert_counts();
  void reset_expert_counts();
  // Auxiliary-loss-free balancing: every bias moves by gamma towards balance according to its
  // layer's expert_counts() (the caller sums them over processes first).
  void update_expert_biases(float gamma);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace whale::train
