// The MLA key/value cache of one sequence.
//
// MLA caches only what it needs to rebuild keys and values: per token and layer, the compressed
// latent c_KV (kv_lora_rank values, after kv_a_layernorm) and the shared rope key k_R
// (qk_rope_head_dim values, after RoPE). DeepSeek-V3: 512 + 64 = 576 values, against
// 2 * 128 heads * 192 for a plain multi-head cache.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "model/config.h"

namespace whale {

class KVCache {
 public:
  KVCache(const ModelConfig& c, int64_t max_len);

  int64_t len() const { return len_; }
  int64_t max_len() const { return max_len_; }
  // Makes room for positions [0, n); throws when n exceeds max_len.
  void reserve(int64_t n);
  void set_len(int64_t n) { len_ = n; }  // after a forward pass, or to drop a suffix
  float* latent(int64_t layer, int64_t pos) {
    return latent_[size_t(layer)].data() + pos * kv_lora_rank_;
  }
  float* k_rope(int64_t layer, int64_t pos) {
    return k_rope_[size_t(layer)].data() + pos * rope_dim_;
  }
  const float* latent(int64_t layer, int64_t pos) const {
    return latent_[size_t(layer)].data() + pos * kv_lora_rank_;
  }
  const float* k_rope(int64_t layer, int64_t pos) const {
    return k_rope_[size_t(layer)].data() + pos * rope_dim_;
  }
  int64_t kv_lora_rank() const { return kv_lora_rank_; }
  int64_t rope_dim() const { return rope_dim_; }
  // Bytes this cache format needs per token over all layers (f32 storage).
  static size_t bytes_per_token(const ModelConfig& c) {
    return size_t(c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim)) * sizeof(float);
  }

 private:
  int64_t kv_lora_rank_, rope_dim_, max_len_, len_ = 0, capacity_ = 0;
  std::vector<std::vector<float>> latent_, k_rope_;  // [layer][pos * dim]
};

}  // namespace whale
