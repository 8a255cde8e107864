#include "model/kv_cache.h"

#include <algorithm>
#include <string>

#include "tensor/quant.h"

namespace whale {

KvType parse_kv_type(const std::string& name) {
  if (name == "f32") return KvType::F32;
  if (name == "bf16") return KvType::BF16;
  if (name == "q8" || name == "q8_0") return KvType::Q8;
  throw std::invalid_argument("unknown KV cache type '" + name + "' (f32, bf16 or q8)");
}

const char* kv_type_name(KvType t) {
  switch (t) {
    case KvType::BF16:
      return "bf16";
    case KvType::Q8:
      return "q8";
    case KvType::F32:
      break;
  }
  return "f32";
}

namespace {

DType latent_dtype(KvType t) {
  return t == KvType::F32 ? DType::F32 : t == KvType::BF16 ? DType::BF16 : DType::Q8_0;
}

// The second row: MLA's rope key stays bf16 under q8; GQA's values take Q8_0 as the keys.
DType rope_dtype(KvType t, bool mla) {
  if (t == KvType::Q8 && !mla) return DType::Q8_0;
  return t == KvType::F32 ? DType::F32 : DType::BF16;
}

// The two row widths: latent and rope key (MLA), one KV head's key and value (GQA).
int64_t first_width(const ModelConfig& c) {
  return c.is_mla() ? c.kv_lora_rank : c.head_dim;
}
int64_t second_width(const ModelConfig& c) {
  return c.is_mla() ? c.qk_rope_head_dim : c.head_dim;
}
// Cache layers: one per decoder layer (MLA), one per decoder layer and KV head (GQA).
int64_t cache_layers(const ModelConfig& c) {
  return c.is_mla() ? c.num_hidden_layers : c.num_hidden_layers * c.num_key_value_heads;
}

}  // namespace

KVCache::KVCache(const ModelConfig& c, int64_t max_len, KvType type)
    : kv_lora_rank_(first_width(c)),
      rope_dim_(second_width(c)),
      max_len_(max_len),
      type_(type),
      latent_dtype_(latent_dtype(type)),
      rope_dtype_(rope_dtype(type, c.is_mla())),
      latent_(size_t(cache_layers(c))),
      k_rope_(size_t(cache_layers(c))) {
  if (type == KvType::Q8 && kv_lora_rank_ % 32 != 0)
    throw std::invalid_argument(
        std::string("--kv-type q8 needs ") + (c.is_mla() ? "kv_lora_rank" : "head_dim") +
        " a multiple of 32 (Q8_0 blocks); this model's is " + std::to_string(kv_lora_rank_));
  latent_row_ = dtype_row_bytes(latent_dtype_, kv_lora_rank_);
  rope_row_ = dtype_row_bytes(rope_dtype_, rope_dim_);
}

size_t KVCache::bytes_per_token(const ModelConfig& c, KvType type) {
  if (type == KvType::Q8 && first_width(c) % 32 != 0) type = KvType::BF16;
  return size_t(cache_layers(c)) * (dtype_row_bytes(latent_dtype(type), first_width(c)) +
                                    dtype_row_bytes(rope_dtype(type, c.is_mla()), second_width(c)));
}

void KVCache::reserve(int64_t n) {
  if (n > max_len_)
    throw std::length_error("context length exceeded: " + std::to_string(n) + " tokens > " +
                            std::to_string(max_len_));
  if (n <= capacity_) return;
  int64_t cap = std::min(max_len_, std::max<int64_t>({n, 2 * capacity_, 64}));
  for (auto& v : latent_) v.resize(size_t(cap) * latent_row_);
  for (auto& v : k_rope_) v.resize(size_t(cap) * rope_row_);
  capacity_ = cap;
}

void KVCache::store(int64_t layer, int64_t pos, const float* latent, const float* k_rope) {
  // tensor/quant.h converts to and from each storage type (F32, BF16, Q8_0).
  quantize_row(dtype_to_ggml(latent_dtype_), latent, kv_lora_rank_,
               latent_bytes(layer) + size_t(pos) * latent_row_);
  quantize_row(dtype_to_ggml(rope_dtype_), k_rope, rope_dim_,
               k_rope_bytes(layer) + size_t(pos) * rope_row_);
}

WeightRef KVCache::latent_ref(int64_t layer, int64_t n) const {
  WeightRef w;
  w.dtype = latent_dtype_;
  w.rows = n;
  w.cols = kv_lora_rank_;
  w.data = latent_bytes(layer);
  return w;
}

WeightRef KVCache::k_rope_ref(int64_t layer, int64_t n) const {
  WeightRef w;
  w.dtype = rope_dtype_;
  w.rows = n;
  w.cols = rope_dim_;
  w.data = k_rope_bytes(layer);
  return w;
}

void KVCache::latents_f32(int64_t layer, int64_t n, float* out) const {
  for (int64_t p = 0; p < n; p++)
    dequantize_row(dtype_to_ggml(latent_dtype_), latent_bytes(layer) + size_t(p) * latent_row_,
                   kv_lora_rank_, out + p * kv_lora_rank_);
}

void KVCache::values_f32(int64_t layer, int64_t n, float* out) const {
  for (int64_t p = 0; p < n; p++)
    dequantize_row(dtype_to_ggml(rope_dtype_), k_rope_bytes(layer) + size_t(p) * rope_row_,
                   rope_dim_, out + p * rope_dim_);
}

void KVCache::k_rope_f32(int64_t layer, int64_t pos, float* out) const {
  dequantize_row(dtype_to_ggml(rope_dtype_), k_rope_bytes(layer) + size_t(pos) * rope_row_,
                 rope_dim_, out);
}

}  // namespace whale
