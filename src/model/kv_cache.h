// The key/value cache of one sequence: two rows per token and layer.
//
// Grouped-query attention (model/gqa.h) caches the keys (after RoPE) and the values of each of
// its num_key_value_heads heads as a cache layer of its own (decoder layer l, head g: cache layer
// l * num_key_value_heads + g), rows of head_dim values, the "latent" row holding the key and the
// "rope" row the value (accessors key_ref / value_ref): one head's keys of all positions are then
// one contiguous matrix, the weight of the attention's matrix products.
//
// MLA caches only what it needs to rebuild keys and values: per token and layer, the compressed
// latent c_KV (kv_lora_rank values, after kv_a_layernorm) and the shared rope key k_R
// (qk_rope_head_dim values, after RoPE). DeepSeek-V3: 512 + 64 = 576 values, against
// 2 * 128 heads * 192 for a plain multi-head cache.
//
// Storage type (`--kv-type`):
//   f32   both as computed (the default; what the reference does)
//   bf16  both rounded to bfloat16: half the bytes
//   q8    the latent in GGML's Q8_0 blocks (32 values, one f16 scale: 34 bytes per 32 values,
//         about a quarter of f32), k_R in bf16: the rope key is an eighth of the entry and
//         carries the position, and the tiny models' rope widths (16) are not whole blocks.
//         (GQA: keys and values both in Q8_0, as llama.cpp's q8_0 cache.)
// The attention reads the cache in its stored type as the weight of its matrix products
// (kernels/linear.h converts on the fly), so the smaller types also read fewer bytes per token.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/linear.h"
#include "model/config.h"

namespace whale {

enum class KvType { F32, BF16, Q8 };

// "f32" | "bf16" | "q8"; throws std::invalid_argument naming the value otherwise.
KvType parse_kv_type(const std::string& name);
const char* kv_type_name(KvType t);

class KVCache {
 public:
  // Throws std::invalid_argument for q8 when kv_lora_rank (GQA: head_dim) is not a multiple of
  // 32.
  KVCache(const ModelConfig& c, int64_t max_len, KvType type = KvType::F32);

  int64_t len() const { return len_; }
  int64_t layers() const { return int64_t(latent_.size()); }
  int64_t max_len() const { return max_len_; }
  KvType type() const { return type_; }
  // Makes room for positions [0, n); throws when n exceeds max_len.
  void reserve(int64_t n);
  void set_len(int64_t n) { len_ = n; }  // after a forward pass, or to drop a suffix

  // Stores position `pos` of `layer` (room must have been reserved), converting to the type.
  void store(int64_t layer, int64_t pos, const float* latent, const float* k_rope);
  // Positions [0, n) of a layer as [n x kv_lora_rank] and [n x rope_dim] matrices in the
  // stored types, for the kernels.
  WeightRef latent_ref(int64_t layer, int64_t n) const;
  WeightRef k_rope_ref(int64_t layer, int64_t n) const;
  // As f32: positions [0, n) of the latents into out [n][kv_lora_rank]; one rope key.
  void latents_f32(int64_t layer, int64_t n, float* out) const;
  void k_rope_f32(int64_t layer, int64_t pos, float* out) const;
  // GQA's names for the two rows: one KV head's keys and values [n x head_dim], and the values of
  // positions [0, n) as f32.
  WeightRef key_ref(int64_t layer, int64_t n) const { return latent_ref(layer, n); }
  WeightRef value_ref(int64_t layer, int64_t n) const { return k_rope_ref(layer, n); }
  void values_f32(int64_t layer, int64_t n, float* out) const;

  // The stored bytes of positions [0, n) of a layer (rows are contiguous), for copies between
  // caches of the same type (the server's prompt cache).
  size_t latent_row_bytes() const { return latent_row_; }
  size_t k_rope_row_bytes() const { return rope_row_; }
  uint8_t* latent_bytes(int64_t layer) { return latent_[size_t(layer)].data(); }
  uint8_t* k_rope_bytes(int64_t layer) { return k_rope_[size_t(layer)].data(); }
  const uint8_t* latent_bytes(int64_t layer) const { return latent_[size_t(layer)].data(); }
  const uint8_t* k_rope_bytes(int64_t layer) const { return k_rope_[size_t(layer)].data(); }

  int64_t kv_lora_rank() const { return kv_lora_rank_; }
  int64_t rope_dim() const { return rope_dim_; }
  // Bytes this cache format needs per token over all layers.
  static size_t bytes_per_token(const ModelConfig& c, KvType type = KvType::F32);

 private:
  int64_t kv_lora_rank_, rope_dim_, max_len_, len_ = 0, capacity_ = 0;
  KvType type_;
  DType latent_dtype_, rope_dtype_;
  size_t latent_row_, rope_row_;
  std::vector<std::vector<uint8_t>> latent_, k_rope_;  // [layer][pos * row bytes]
};

// A run of consecutive tokens of one sequence inside a batch: rows [start, start + n) of the
// batch's hidden states, at positions cache->len() .. cache->len() + n - 1.
struct AttnSegment {
  KVCache* cache;
  int64_t start, n;
};

}  // namespace whale
