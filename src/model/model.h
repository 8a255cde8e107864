// DeepseekV2ForCausalLM / DeepseekV3ForCausalLM: embedding, decoder layers, final norm, head.
//
//   h = embed_tokens[token]
//   for each layer:  h = h + MLA(input_layernorm(h))
//                    h = h + FFN(post_attention_layernorm(h))   (dense MLP for the first
//                                                                 first_k_dense_replace layers,
//                                                                 DeepSeekMoE after)
//   logits = lm_head(norm(h))
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
#include "model/kv_cache.h"
#include "model/mla.h"
#include "model/mlp.h"
#include "model/moe.h"
#include "model/norm.h"
#include "model/rope.h"

namespace whale {

struct DecoderLayer {
  RMSNorm input_layernorm, post_attention_layernorm;
  std::unique_ptr<MLA> self_attn;
  std::optional<Mlp> mlp;    // dense layers
  std::unique_ptr<MoE> moe;  // MoE layers
};

// One sequence's new tokens in a batch.
struct SeqInput {
  KVCache* cache;
  std::span<const int32_t> tokens;
  bool all_logits = false;  // logits for every new token, else only the last
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

 private:
  Model() = default;
  ModelConfig c_;
  std::unique_ptr<Checkpoint> ck_;
  Rope rope_;
  WeightRef embed_tokens_, lm_head_;
  RMSNorm norm_;
  std::vector<DecoderLayer> layers_;
  std::vector<std::string> mtp_tensors_;
};

}  // namespace whale
