// Rotary position embedding: on MLA's decoupled rope dimensions (with YaRN context extension) or
// on whole heads of grouped-query attention (with Llama 3's frequency scaling).
//
// The Hugging Face DeepSeek checkpoints store q_pe / k_pe with rotary pairs interleaved:
// (x[2i], x[2i+1]) is rotated by angle pos * inv_freq[i]. (HF de-interleaves and uses rotate_half;
// the official code uses complex pairs: both give the same dot products.) The Qwen2 and Llama
// checkpoints pair x[i] with x[i + d/2] (rotate_half on the stored order): config.rope_half_split.
//
// Llama 3 (rope_scaling type "llama3", as Hugging Face's _compute_llama3_parameters): with
// wavelength w_i = 2 pi / inv_freq_i, L = original_max_position_embeddings,
//   w_i > L / low_freq_factor:   inv_freq_i / factor
//   w_i < L / high_freq_factor:  inv_freq_i
//   between:                     (1 - s) inv_freq_i / factor + s inv_freq_i,
//                                s = (L / w_i - low_freq_factor) / (high_freq_factor -
//                                low_freq_factor)
//
// YaRN (as DeepseekV3YarnRotaryEmbedding): frequencies below the correction range are interpolated
// (divided by `factor`), those above it kept, with a linear ramp between; cos/sin are multiplied by
// mscale(factor, mscale) / mscale(factor, mscale_all_dim).
#pragma once

#include <cstdint>
#include <vector>

#include "model/config.h"

namespace whale {

// 0.1 * mscale * ln(scale) + 1 for scale > 1, else 1.
double yarn_get_mscale(double scale, double mscale);

class Rope {
 public:
  Rope() = default;
  explicit Rope(const ModelConfig& c);
  // Divides each frequency by factors[i] (dim/2 values): llama.cpp's rope_freqs tensor, in which
  // its converter stores Llama 3's scaling.
  void divide_frequencies(const float* factors);

  // Rotates `x` ([n_heads][stride], rope part at x + h*stride) in place for position `pos`.
  void apply(float* x, int64_t n_heads, int64_t stride, int64_t pos) const;
  const std::vector<double>& inv_freq() const { return inv_freq_; }
  double attn_factor() const { return attn_factor_; }

 private:
  int64_t dim_ = 0;
  bool half_split_ = false;
  std::vector<double> inv_freq_;  // [dim/2]
  double attn_factor_ = 1.0;      // YaRN's multiplier on cos and sin
};

}  // namespace whale
