// RMSNorm: y = w * x / sqrt(mean(x^2) + eps), per row. Statistics in f32 (double for the sum).
#pragma once

#include <cstdint>
#include <vector>

namespace whale {

struct RMSNorm {
  std::vector<float> weight;
  float eps = 1e-6f;

  // x, y: [n][weight.size()]; y may alias x.
  void forward(const float* x, int64_t n, float* y) const;
};

}  // namespace whale
