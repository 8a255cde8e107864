// DeepSeek-V2/V3 models from GGUF files (llama.cpp's architecture "deepseek2").
//
// A GGUF file is presented to the model code as the Hugging Face checkpoint it was converted from:
// the hyper-parameters become a ModelConfig and every tensor gets its Hugging Face name, so MLA,
// MoE and the rest load it exactly as they load safetensors. What llama.cpp's converter changed is
// undone here:
//   token_embd / output_norm / output          model.embed_tokens / model.norm / lm_head
//   blk.N.attn_norm, ffn_norm                  model.layers.N.input_layernorm, post_attention_...
//   blk.N.attn_q_a, attn_q_a_norm, attn_q_b    self_attn.q_a_proj, q_a_layernorm, q_b_proj
//   blk.N.attn_q (no q_lora_rank)              self_attn.q_proj
//   blk.N.attn_kv_a_mqa, attn_kv_a_norm        self_attn.kv_a_proj_with_mqa, kv_a_layernorm
//   blk.N.attn_kv_b (older files), or          self_attn.kv_b_proj
//   blk.N.attn_k_b [H, kv_lora, nope] (W_UK transposed per head) and blk.N.attn_v_b
//   [H, v_head, kv_lora]: re-interleaved into kv_b_proj [H * (nope + v_head), kv_lora] in f32
//   (exact; 4 * H * (nope + v_head) * kv_lora bytes per layer, 0.3% of DeepSeek-V3 in Q4_0)
//   blk.N.attn_output                          self_attn.o_proj
//   blk.N.ffn_gate / ffn_up / ffn_down         mlp.gate_proj / up_proj / down_proj (dense layers)
//   blk.N.ffn_gate_inp, exp_probs_b            mlp.gate.weight, mlp.gate.e_score_correction_bias
//   blk.N.ffn_{gate,up,down}_exps [E, r, c]    mlp.experts.{e}.{gate,up,down}_proj (views)
//   blk.N.ffn_{gate,up,down}_shexp             mlp.shared_experts.{gate,up,down}_proj
// Quantized tensors keep their GGML blocks (DType::Q4_K, ...); the kernels read them in place.
//
// Hyper-parameters that GGUF does not store are taken as the published DeepSeek models have them:
// YaRN's mscale equals mscale_all_dim (= yarn_log_multiplier / 0.1, the converter's convention);
// the routing method is noaux_tc when exp_probs_b is present, group_limited_greedy when
// expert_group_count > 1, greedy otherwise; softmax gating is V2's formula, sigmoid V3's.
#pragma once

#include <memory>
#include <string>

#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/config.h"

namespace whale {

struct GgufModel {
  ModelConfig config;
  std::unique_ptr<Checkpoint> checkpoint;
};

// Opens a deepseek2 GGUF file. Throws std::runtime_error naming the file and the key or tensor: an
// architecture other than deepseek2, a missing or inconsistent hyper-parameter, a tensor whose
// shape disagrees with them, a tensor type whale cannot compute with.
GgufModel load_gguf_model(const std::string& path, LoadMode mode = LoadMode::Mmap);

// The config alone (metadata only; the tensors are checked for presence, not read).
ModelConfig gguf_model_config(const std::string& path);

}  // namespace whale
