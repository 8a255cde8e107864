#include "model/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

namespace whale {

double yarn_get_mscale(double scale, double mscale) {
  if (scale <= 1.0) return 1.0;
  return 0.1 * mscale * std::log(scale) + 1.0;
}

// The rotary dimension index whose wavelength completes `num_rotations` turns over `max_pos`.
static double yarn_find_correction_dim(double num_rotations, double dim, double base,
                                       double max_pos) {
  return (dim * std::log(max_pos / (num_rotations * 2.0 * std::numbers::pi))) /
         (2.0 * std::log(base));
}

Rope::Rope(const ModelConfig& c) : dim_(c.rope_dim()), half_split_(c.rope_half_split) {
  const int64_t half = dim_ / 2;
  inv_freq_.resize(static_cast<size_t>(half));
  const double base = c.rope_theta;
  for (int64_t i = 0; i < half; i++)
    inv_freq_[size_t(i)] = 1.0 / std::pow(base, double(2 * i) / double(dim_));
  if (c.llama3_rope.enabled) {
    const Llama3RopeConfig& l = c.llama3_rope;
    const double L = double(l.original_max_position_embeddings);
    const double low_wavelen = L / l.low_freq_factor, high_wavelen = L / l.high_freq_factor;
    for (double& f : inv_freq_) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_wavelen) {
        f /= l.factor;
      } else if (wavelen >= high_wavelen) {
        const double s =
            (L / wavelen - l.low_freq_factor) / (l.high_freq_factor - l.low_freq_factor);
        f = (1.0 - s) * f / l.factor + s * f;
      }
    }
  }
  if (!c.yarn.enabled) return;

  const YarnConfig& y = c.yarn;
  const double orig = double(y.original_max_position_embeddings);
  double low = std::floor(yarn_find_correction_dim(y.beta_fast, double(dim_), base, orig));
  double high = std::ceil(yarn_find_correction_dim(y.beta_slow, double(dim_), base, orig));
  low = std::max(low, 0.0);
  high = std::min(high, double(dim_ - 1));
  if (low == high) high += 0.001;  // avoid a zero-width ramp
  for (int64_t i = 0; i < half; i++) {
    const double extra = inv_freq_[size_t(i)];  // original frequency (extrapolation)
    const double inter = extra / y.factor;      // interpolated frequency
    const double ramp = std::clamp((double(i) - low) / (high - low), 0.0, 1.0);
    const double keep_extra = 1.0 - ramp;
    inv_freq_[size_t(i)] = inter * (1.0 - keep_extra) + extra * keep_extra;
  }
  attn_factor_ = yarn_get_mscale(y.factor, y.mscale) / yarn_get_mscale(y.factor, y.mscale_all_dim);
}

void Rope::divide_frequencies(const float* factors) {
  for (size_t i = 0; i < inv_freq_.size(); i++) inv_freq_[i] /= double(factors[i]);
}

void Rope::apply(float* x, int64_t n_heads, int64_t stride, int64_t pos) const {
  const int64_t half = dim_ / 2;
  // The partner of value i: i + 1 (interleaved pairs) or i + d/2 (half split).
  const int64_t step = half_split_ ? 1 : 2, partner = half_split_ ? half : 1;
  for (int64_t i = 0; i < half; i++) {
    const double angle = double(pos) * inv_freq_[size_t(i)];
    const float c = float(std::cos(angle) * attn_factor_);
    const float s = float(std::sin(angle) * attn_factor_);
    for (int64_t h = 0; h < n_heads; h++) {
      float* p = x + h * stride + step * i;
      const float a = p[0], b = p[partner];
      p[0] = a * c - b * s;
      p[partner] = b * c + a * s;
    }
  }
}

}  // namespace whale
