#include "model/kv_cache.h"

#include <algorithm>
#include <string>

namespace whale {

KVCache::KVCache(const ModelConfig& c, int64_t max_len)
    : kv_lora_rank_(c.kv_lora_rank),
      rope_dim_(c.qk_rope_head_dim),
      max_len_(max_len),
      latent_(size_t(c.num_hidden_layers)),
      k_rope_(size_t(c.num_hidden_layers)) {}

void KVCache::reserve(int64_t n) {
  if (n > max_len_)
    throw std::length_error("context length exceeded: " + std::to_string(n) + " tokens > " +
                            std::to_string(max_len_));
  if (n <= capacity_) return;
  int64_t cap = std::min(max_len_, std::max<int64_t>({n, 2 * capacity_, 64}));
  for (auto& v : latent_) v.resize(size_t(cap * kv_lora_rank_));
  for (auto& v : k_rope_) v.resize(size_t(cap * rope_dim_));
  capacity_ = cap;
}

}  // namespace whale
