// DeepseekV2ForCausalLM / DeepseekV3ForCausalLM: embedding, decoder layers, final norm, head.
//
//   h = embed_tokens[token]
//   for each layer:  h = h + MLA(input_layernorm(h))
//                    h = h + FFN(post_attention_layernorm(h))   (dense MLP for the first
//                                                                 first_k_dense_replace layers,
//                                                                 DeepSeekMoE after)
//   logits = lm_head(norm(h))
//
// The R1-Distill models (Qwen2ForCausalLM, LlamaForCausalLM) are the same skeleton with
// grouped-query attention (model/gqa.h) in place of MLA and a dense MLP in every layer.
//
// Weights stay memory-mapped in their stored dtype. A forward pass takes a batch of segments, one
// per sequence, each with its own KV cache: the projections run on all tokens of the batch at
// once, attention per sequence.
#pragma once

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "kernels/linear.h"
#include "model/config.h"
#include "model/gqa.h"
#include "model/kv_cache.h"
#include "model/mla.h"
#include "model/mlp.h"
#include "model/moe.h"
#include "model/norm.h"
#include "model/rope.h"

namespace whale {

struct DecoderLayer {
  RMSNorm input_layernorm, post_attention_layernorm;
  std::unique_ptr<MLA> self_attn;  // DeepSeek models
  std::unique_ptr<GQA> gqa;        // Qwen2, Llama
  std::optional<Mlp> mlp;          // dense layers
  std::unique_ptr<MoE> moe;        // MoE layers
};

// One sequence's new tokens in a batch.
struct SeqInput {
  KVCache* cache;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // logits for every new token, else only the last
  // When set, receives the last layer's hidden states h (before the final norm) of every new
  // token, [tokens][hidden]: the MTP module's input.
  std::vector<float>* hidden = nullptr;
};

// DeepSeek-V3's multi-token-prediction module of depth 1 (model.layers.{num_hidden_layers}.*).
// At position i it combines the main model's last hidden state h_i with the embedding of the
// next token t_{i+1} and predicts t_{i+2}:
//   m_i = eh_proj([enorm(embed(t_{i+1})) ; hnorm(h_i)])      (the embedding half first)
//   m_i = decoder block(m_i)                                  (its own MLA cache, position i)
//   logits = head(shared_head.norm(m_i))
// Used as the draft model of speculative decoding (run/session.h).
struct MtpModule {
  WeightRef embed_tokens, eh_proj, head;  // eh_proj: [hidden x 2 hidden]
  RMSNorm enorm, hnorm, shared_head_norm;
  DecoderLayer block;
};

struct ModelStats {
  int64_t params = 0;         // all parameters in the main model (MTP layers excluded)
  int64_t active_params = 0;  // per token: shared + top-k experts, attention, dense, head
  int64_t mtp_params = 0;     // parameters in MTP modules present in the file
  size_t weight_bytes = 0;    // bytes read per token at decode (approx.: active weights)
};

class Model {
 public:
  struct Options {
    bool progress = false;  // progress bar on a terminal while paging weights in
    bool prefault = false;  // touch every page at load (when the files end up memory-mapped)
    LoadMode load = LoadMode::Auto;  // read into huge-page RAM or map (formats/safetensors.h)
  };
  static std::unique_ptr<Model> load(const std::string& dir, const Options& opt);
  static std::unique_ptr<Model> load(const std::string& dir) { return load(dir, Options{}); }

  const ModelConfig& config() const { return c_; }
  const Checkpoint& checkpoint() const { return *ck_; }
  ModelStats stats() const;

  // Runs the new tokens of each sequence through the model, appends them to the caches, and returns
  // logits rows [rows][vocab]: for each input in order, every position if all_logits, else the
  // last one.
  std::vector<float> forward(std::span<const SeqInput> batch, AttnMode mode = AttnMode::Auto) const;

  // Convenience: one sequence.
  std::vector<float> forward(KVCache& cache, std::span<const int32_t> tokens, bool all_logits,
                             AttnMode mode = AttnMode::Auto) const;

  KVCache new_cache(int64_t max_len = 0) const;  // 0: max_position_embeddings
  // The storage type of the caches new_cache / new_mtp_cache make (model/kv_cache.h; default
  // f32). Checks the model can use it (q8: kv_lora_rank a multiple of 32).
  void set_kv_type(KvType t);
  KvType kv_type() const { return kv_type_; }

  // Whether the file holds a complete MTP module (GGUF files do not: llama.cpp drops it).
  bool has_mtp() const { return mtp_ != nullptr; }
  // The MTP module's cache (one layer).
  KVCache new_mtp_cache(int64_t max_len = 0) const;
  // Runs the MTP module on positions [cache.len(), cache.len() + n): row j combines hidden[j]
  // (h of main position cache.len() + j) with next_tokens[j] (the token after it). Appends to the
  // cache and returns the logits of the last row [vocab] (the draft for the token after
  // next_tokens' last one).
  std::vector<float> mtp_forward(KVCache& cache, const float* hidden,
                                 std::span<const int32_t> next_tokens) const;

 private:
  Model() = default;
  ModelConfig c_;
  std::unique_ptr<Checkpoint> ck_;
  Rope rope_;
  WeightRef embed_tokens_, lm_head_;
  RMSNorm norm_;
  std::vector<DecoderLayer> layers_;
  std::vector<std::string> mtp_tensors_;
  std::unique_ptr<MtpModule> mtp_;
  ModelConfig mtp_config_;  // c_ with one layer: the shape of the MTP cache
  KvType kv_type_ = KvType::F32;

  DecoderLayer load_layer(const std::string& prefix, int64_t layer, int64_t cache_layer) const;
  static void layer_forward(const DecoderLayer& L, std::vector<float>& h, int64_t N,
                            std::span<const AttnSegment> segs, AttnMode mode,
                            std::vector<float>& xn, std::vector<float>& f,
                            std::vector<float>& scratch);
};

}  // namespace whale
