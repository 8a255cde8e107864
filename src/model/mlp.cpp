#include "model/mlp.h"

#include "kernels/ops.h"
#include "model/weights.h"

namespace whale {

Mlp::Mlp(const Checkpoint& ck, const std::string& prefix, int64_t dim_, int64_t inter_)
    : dim(dim_), inter(inter_) {
  gate_proj = load_linear(ck, prefix + ".gate_proj", inter, dim);
  up_proj = load_linear(ck, prefix + ".up_proj", inter, dim);
  down_proj = load_linear(ck, prefix + ".down_proj", dim, inter);
}

void Mlp::forward(const float* x, int64_t n, float* y, std::vector<float>& scratch) const {
  scratch.resize(size_t(2 * n * inter));
  float* g = scratch.data();
  float* u = g + n * inter;
  const LinearJob jobs[2] = {{x, n, gate_proj, g}, {x, n, up_proj, u}};
  linear_many(jobs);
  silu_mul(g, u, n * inter, g);  // g = silu(g) * u
  linear(g, n, down_proj, y);
}

size_t Mlp::bytes() const {
  return weight_bytes(gate_proj) + weight_bytes(up_proj) + weight_bytes(down_proj);
}

}  // namespace whale
