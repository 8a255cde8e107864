#include "model/gqa.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu.h"
#include "kernels/ops.h"
#include "model/weights.h"

namespace whale {

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

// The softmax rows of a block are split over the threads above this many scores.
constexpr int64_t kParallelScores = 1 << 16;

// v holds at least n values (its contents are scratch).
void grow(std::vector<float>& v, int64_t n) {
  if (v.size() < size_t(n)) v.resize(size_t(n));
}

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
  // Work buffers kept between calls (a prompt's are megabytes: allocating them per layer cost
  // page faults and zero-filling on every layer).
  thread_local std::vector<float> q, k, v, o;
  grow(q, N * qd);
  grow(k, N * kvd);
  grow(v, N * kvd);
  grow(o, N * qd);
  // The three projections read the same input: one parallel region, the input quantized once.
  const LinearJob jobs[] = {
      {x, N, q_proj_, q.data()}, {x, N, k_proj_, k.data()}, {x, N, v_proj_, v.data()}};
  linear_many(jobs);
  add_bias(q.data(), N, q_bias_);
  add_bias(k.data(), N, k_bias_);
  add_bias(v.data(), N, v_bias_);

  for (const AttnSegment& s : segs) {
    s.cache->reserve(s.cache->len() + s.n);
    for (int64_t i = 0; i < s.n; i++) {
      const int64_t t = s.start + i, pos = s.cache->len() + i;
      rope_->apply(q.data() + t * qd, H, hd, pos);
      rope_->apply(k.data() + t * kvd, G, hd, pos);
      for (int64_t g = 0; g < G; g++)  // each KV head is a cache layer of its own
        s.cache->store(layer_ * G + g, pos, k.data() + t * kvd + g * hd,
                       v.data() + t * kvd + g * hd);
    }
    attend(s, q.data() + s.start * qd, o.data() + s.start * qd);
  }
  linear(o.data(), N, o_proj_, y);
  add_bias(y, N, o_bias_);
}

// Per KV head g and block of queries: the queries of g's `group` heads as rows Q [rows][head_dim]
// (row (i, hh): token i, head g * group + hh), then
//   S = scale * Q K^T      K: g's keys [T][head_dim], in the cache's stored type
//   causal mask (query i sees positions 0 .. pos0 + i), softmax per row
//   O = S V                V: g's values [T][head_dim]
// as two matrix products (kernels/linear.h), the blocks small enough that S stays ~16 MB.
void GQA::attend(const AttnSegment& s, const float* q, float* out) const {
  const int64_t H = c_.num_attention_heads, G = c_.num_key_value_heads, hd = c_.head_dim;
  const int64_t qd = H * hd, group = H / G;
  const int64_t pos0 = s.cache->len(), T = pos0 + s.n;
  const int64_t block = std::clamp<int64_t>((int64_t(1) << 22) / (group * T), 1, 256);
  thread_local std::vector<float> Q, S, O;
  for (int64_t g = 0; g < G; g++) {
    const WeightRef K = s.cache->key_ref(layer_ * G + g, T),
                    V = s.cache->value_ref(layer_ * G + g, T);
    for (int64_t i0 = 0; i0 < s.n; i0 += block) {
      const int64_t nb = std::min(block, s.n - i0), rows = nb * group, Tb = pos0 + i0 + nb;
      grow(Q, rows * hd);
      grow(S, rows * Tb);
      grow(O, rows * hd);
      for (int64_t i = 0; i < nb; i++)
        std::copy_n(q + (i0 + i) * qd + g * group * hd, group * hd, Q.data() + i * group * hd);
      linear(Q.data(), rows, K.slice_rows(0, Tb), S.data());
      // (The buffer through a plain pointer: inside the parallel region `S` would name each
      // thread's own thread_local vector.)
      float* const scores = S.data();
#pragma omp parallel for schedule(static) if (rows * Tb > kParallelScores) \
    num_threads(num_threads())
      for (int64_t r = 0; r < rows; r++) {
        float* row = scores + r * Tb;
        const int64_t seen = pos0 + i0 + r / group + 1;  // causal: positions 0 .. pos
        for (int64_t j = 0; j < seen; j++) row[j] *= scale_;
        softmax_inplace(row, seen);
        std::fill(row + seen, row + Tb, 0.0f);
      }
      linear_t(S.data(), rows, V.slice_rows(0, Tb), O.data());
      for (int64_t i = 0; i < nb; i++)
        std::copy_n(O.data() + i * group * hd, group * hd, out + (i0 + i) * qd + g * group * hd);
    }
  }
}

}  // namespace whale
