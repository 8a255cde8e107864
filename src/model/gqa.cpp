#include "model/gqa.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/ops.h"
#include "model/weights.h"

namespace whale {

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelWork = 1 << 16;

GQA::GQA(const ModelConfig& c, const Checkpoint& ck, const std::string& prefix, int64_t layer,
         const Rope* rope)
    : c_(c), layer_(layer), rope_(rope), scale_(float(c.softmax_scale())) {
  const int64_t D = c.hidden_size, qd = c.num_attention_heads * c.head_dim,
                kvd = c.num_key_value_heads * c.head_dim;
  q_proj_ = load_linear(ck, prefix + ".q_proj", qd, D);
  k_proj_ = load_linear(ck, prefix + ".k_proj", kvd, D);
  v_proj_ = load_linear(ck, prefix + ".v_proj", kvd, D);
  o_proj_ = load_linear(ck, prefix + ".o_proj", D, qd);
  if (c.qkv_bias) {
    q_bias_ = load_vector(ck, prefix + ".q_proj.bias", qd);
    k_bias_ = load_vector(ck, prefix + ".k_proj.bias", kvd);
    v_bias_ = load_vector(ck, prefix + ".v_proj.bias", kvd);
  }
  if (c.o_bias) o_bias_ = load_vector(ck, prefix + ".o_proj.bias", D);
}

size_t GQA::bytes() const {
  return weight_bytes(q_proj_) + weight_bytes(k_proj_) + weight_bytes(v_proj_) +
         weight_bytes(o_proj_);
}

namespace {

// rows [N][b.size()] += b per row (no-op for an empty bias).
void add_bias(float* rows, int64_t N, const std::vector<float>& b) {
  if (b.empty()) return;
  for (int64_t t = 0; t < N; t++)
    add_inplace(rows + t * int64_t(b.size()), b.data(), int64_t(b.size()));
}

}  // namespace

void GQA::forward(const float* x, int64_t N, std::span<const AttnSegment> segs, float* y) const {
  const int64_t H = c_.num_attention_heads, G = c_.num_key_value_heads, hd = c_.head_dim;
  const int64_t qd = H * hd, kvd = G * hd;
  std::vector<float> q(size_t(N * qd)), k(size_t(N * kvd)), v(size_t(N * kvd));
  // The three projections read the same input: one parallel region, the input quantized once.
  const LinearJob jobs[] = {
      {x, N, q_proj_, q.data()}, {x, N, k_proj_, k.data()}, {x, N, v_proj_, v.data()}};
  linear_many(jobs);
  add_bias(q.data(), N, q_bias_);
  add_bias(k.data(), N, k_bias_);
  add_bias(v.data(), N, v_bias_);

  std::vector<float> o(size_t(N * qd));
  for (const AttnSegment& s : segs) {
    s.cache->reserve(s.cache->len() + s.n);
    for (int64_t i = 0; i < s.n; i++) {
      const int64_t t = s.start + i, pos = s.cache->len() + i;
      rope_->apply(q.data() + t * qd, H, hd, pos);
      rope_->apply(k.data() + t * kvd, G, hd, pos);
      s.cache->store(layer_, pos, k.data() + t * kvd, v.data() + t * kvd);
    }
    attend(s, q.data() + s.start * qd, o.data() + s.start * qd);
  }
  linear(o.data(), N, o_proj_, y);
  add_bias(y, N, o_bias_);
}

void GQA::attend(const AttnSegment& s, const float* q, float* out) const {
  const int64_t H = c_.num_attention_heads, G = c_.num_key_value_heads, hd = c_.head_dim;
  const int64_t qd = H * hd, kvd = G * hd, group = H / G;
  const int64_t pos0 = s.cache->len(), T = pos0 + s.n;
  // Keys and values of positions [0, T) as f32: the stored rows themselves for an f32 cache,
  // else widened once per call.
  const KVCache& cache = *s.cache;
  std::vector<float> k_f32, v_f32;
  const float* K = reinterpret_cast<const float*>(cache.latent_bytes(layer_));
  const float* V = reinterpret_cast<const float*>(cache.k_rope_bytes(layer_));
  if (cache.type() != KvType::F32) {
    k_f32.resize(size_t(T * kvd));
    v_f32.resize(size_t(T * kvd));
    cache.latents_f32(layer_, T, k_f32.data());
    cache.values_f32(layer_, T, v_f32.data());
    K = k_f32.data();
    V = v_f32.data();
  }
  const int64_t work = s.n * H * T * hd;
#pragma omp parallel if (work > kParallelWork && !omp_in_parallel())
  {
    std::vector<float> p(static_cast<size_t>(T));
#pragma omp for collapse(2) schedule(dynamic, 4)
    for (int64_t i = 0; i < s.n; i++)
      for (int64_t h = 0; h < H; h++) {
        const float* qh = q + i * qd + h * hd;
        const int64_t kv = (h / group) * hd, n = pos0 + i + 1;  // causal: positions 0..pos
        for (int64_t j = 0; j < n; j++) p[size_t(j)] = scale_ * dot(qh, K + j * kvd + kv, hd);
        softmax_inplace(p.data(), n);
        float* oh = out + i * qd + h * hd;
        std::fill(oh, oh + hd, 0.0f);
        for (int64_t j = 0; j < n; j++) axpy(p[size_t(j)], V + j * kvd + kv, oh, hd);
      }
  }
}

}  // namespace whale
