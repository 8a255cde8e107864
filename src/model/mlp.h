// The SwiGLU feed-forward block used by dense layers, routed experts and shared experts:
//   MLP(x) = down_proj( silu(gate_proj(x)) * up_proj(x) )
#pragma once

#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "kernels/linear.h"

namespace whale {

struct Mlp {
  WeightRef gate_proj, up_proj, down_proj;  // [inter x dim], [inter x dim], [dim x inter]
  int64_t dim = 0, inter = 0;

  Mlp() = default;
  Mlp(const Checkpoint& ck, const std::string& prefix, int64_t dim, int64_t inter);

  // x: [n][dim] -> y: [n][dim]. `scratch` is resized as needed.
  void forward(const float* x, int64_t n, float* y, std::vector<float>& scratch) const;
  size_t bytes() const;
};

}  // namespace whale
