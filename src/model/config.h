// The model hyper-parameters, read from a Hugging Face `config.json` of a DeepseekV2ForCausalLM or
// DeepseekV3ForCausalLM checkpoint (MLA, DeepSeekMoE), or of the dense Qwen2ForCausalLM /
// LlamaForCausalLM models DeepSeek distilled R1 into (grouped-query attention, model/gqa.h). Every
// field that changes the math is here; an unsupported value is an error that names it.
#pragma once

#include <string>

namespace whale {

enum class Arch { DeepseekV2, DeepseekV3, Qwen2, Llama };
enum class ScoringFunc { Softmax, Sigmoid };
enum class TopkMethod { Greedy, GroupLimitedGreedy, NoauxTc };

struct YarnConfig {
  bool enabled = false;
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0, beta_slow = 1.0;
  double mscale = 1.0, mscale_all_dim = 0.0;
};

// Llama 3's `rope_scaling` {"rope_type": "llama3"}: wavelengths longer than
// original_max_position_embeddings / low_freq_factor are divided by `factor`, those shorter than
// original_max_position_embeddings / high_freq_factor kept, a smooth blend between.
struct Llama3RopeConfig {
  bool enabled = false;
  double factor = 8.0, low_freq_factor = 1.0, high_freq_factor = 4.0;
  int64_t original_max_position_embeddings = 8192;
};

struct ModelConfig {
  Arch arch = Arch::DeepseekV3;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;      // dense MLP layers
  int64_t moe_intermediate_size = 0;  // each routed / shared expert
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t max_position_embeddings = 4096;

  // MLA
  int64_t q_lora_rank = 0;  // 0: no query compression (direct q_proj), as V2-Lite
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;

  // Grouped-query attention (Qwen2, Llama): num_key_value_heads heads of head_dim values for keys
  // and values, each shared by num_attention_heads / num_key_value_heads query heads.
  int64_t num_key_value_heads = 0;
  int64_t head_dim = 0;
  bool qkv_bias = false;  // q_proj / k_proj / v_proj have biases (Qwen2; Llama's attention_bias)
  bool o_bias = false;    // o_proj has a bias (Llama's attention_bias)
  // RoPE pairs: (x[i], x[i + d/2]) (Hugging Face's rotate_half, as the dense models store q and k)
  // or (x[2i], x[2i+1]) (DeepSeek's checkpoints; llama.cpp's llama GGUF files, whose converter
  // permutes q_proj / k_proj rows into that order).
  bool rope_half_split = false;
  Llama3RopeConfig llama3_rope;

  // DeepSeekMoE
  int64_t n_routed_experts = 0;  // 0: no MoE layers
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  ScoringFunc scoring_func = ScoringFunc::Softmax;
  TopkMethod topk_method = TopkMethod::Greedy;
  int64_t n_group = 1, topk_group = 1;
  bool norm_topk_prob = false;
  double routed_scaling_factor = 1.0;

  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  YarnConfig yarn;
  bool tie_word_embeddings = false;
  int64_t num_nextn_predict_layers = 0;  // MTP modules stored after the main layers

  // FP8 release: weights in F8_E4M3 with 128x128 weight_scale_inv blocks.
  bool fp8_block_quant = false;

  bool is_mla() const { return arch == Arch::DeepseekV2 || arch == Arch::DeepseekV3; }
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  // Values per head that RoPE rotates: the decoupled rope part (MLA) or the whole head (GQA).
  int64_t rope_dim() const { return is_mla() ? qk_rope_head_dim : head_dim; }
  bool is_moe_layer(int64_t layer) const {
    return n_routed_experts > 0 && layer >= first_k_dense_replace && layer % moe_layer_freq == 0;
  }
  // MLA: 1/sqrt(qk_head_dim), times mscale^2 under YaRN (as the Hugging Face implementation);
  // GQA: 1/sqrt(head_dim).
  double softmax_scale() const;

  static ModelConfig from_json_text(const std::string& text, const std::string& origin);
  static ModelConfig load(const std::string& dir);  // reads DIR/config.json
  void validate(const std::string& origin) const;   // throws naming the bad field
  std::string arch_name() const;
};

}  // namespace whale
