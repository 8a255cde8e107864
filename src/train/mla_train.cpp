#include "train/mla_train.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace whale::train {

namespace {

using Vec = std::vector<float>;

Vec zeros(int64_t n) {
  return Vec(size_t(n), 0.0f);
}

void check_config(const ModelConfig& c) {
  auto need = [](bool ok, const std::string& what) {
    if (!ok) throw std::invalid_argument("MLA config: " + what);
  };
  need(c.hidden_size > 0, "hidden_size must be > 0");
  need(c.num_attention_heads > 0, "num_attention_heads must be > 0");
  need(c.q_lora_rank >= 0, "q_lora_rank must be >= 0 (0: no query compression)");
  need(c.kv_lora_rank > 0, "kv_lora_rank must be > 0");
  need(c.qk_nope_head_dim >= 0, "qk_nope_head_dim must be >= 0");
  need(c.qk_rope_head_dim > 0 && c.qk_rope_head_dim % 2 == 0,
       "qk_rope_head_dim must be a positive even number");
  need(c.v_head_dim > 0, "v_head_dim must be > 0");
}

// Copies columns [off, off + w) of the rows of src [n][ld] into dst [n][w], or back (kScatter).
template <bool kScatter>
void copy_cols(float* dst, const float* src, int64_t n, int64_t ld, int64_t off, int64_t w) {
  const int nt = threads_for(n * w);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n; i++) {
    if (kScatter)
      std::copy(src + i * w, src + (i + 1) * w, dst + i * ld + off);
    else
      std::copy(src + i * ld + off, src + i * ld + off + w, dst + i * w);
  }
}

void zero_fill(Vec& v) {
  constexpr int64_t kChunk = 1 << 14;
  const int64_t n = int64_t(v.size());
  const int nt = threads_for(n);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < n; i += kChunk) std::fill_n(v.data() + i, std::min(kChunk, n - i), 0.0f);
}

// The tensors a config uses: checkpoint name, MlaParams field, shape.
struct ParamSpec {
  std::string name;
  Vec MlaParams::*field;
  std::vector<int64_t> shape;
};

std::vector<ParamSpec> param_specs(const ModelConfig& c) {
  const int64_t C = c.hidden_size, H = c.num_attention_heads, dq = c.qk_head_dim();
  const int64_t QL = c.q_lora_rank, R = c.kv_lora_rank;
  std::vector<ParamSpec> s;
  if (QL > 0) {
    s.push_back({"q_a_proj.weight", &MlaParams::q_a_proj, {QL, C}});
    s.push_back({"q_a_layernorm.weight", &MlaParams::q_a_layernorm, {QL}});
    s.push_back({"q_b_proj.weight", &MlaParams::q_b_proj, {H * dq, QL}});
  } else {
    s.push_back({"q_proj.weight", &MlaParams::q_proj, {H * dq, C}});
  }
  s.push_back(
      {"kv_a_proj_with_mqa.weight", &MlaParams::kv_a_proj_with_mqa, {R + c.qk_rope_head_dim, C}});
  s.push_back({"kv_a_layernorm.weight", &MlaParams::kv_a_layernorm, {R}});
  s.push_back(
      {"kv_b_proj.weight", &MlaParams::kv_b_proj, {H * (c.qk_nope_head_dim + c.v_head_dim), R}});
  s.push_back({"o_proj.weight", &MlaParams::o_proj, {C, H * c.v_head_dim}});
  return s;
}

int64_t numel(const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

AttnShape attn_shape(const ModelConfig& c, int64_t B, int64_t T) {
  return {.T = T,
          .H = c.num_attention_heads,
          .nope = c.qk_nope_head_dim,
          .rope = c.qk_rope_head_dim,
          .dv = c.v_head_dim,
          .scale = float(c.softmax_scale()),
          .B = B};
}

// Buffers sized for another config or batch would be read out of bounds: refuse them.
void check_buffers(const MlaParams& p, const MlaActs& a, const RopeTable& rope,
                   const ModelConfig& c) {
  const int64_t N = a.B * a.T, H = c.num_attention_heads;
  if (a.q.size() != size_t(N * H * c.qk_head_dim()) ||
      a.kv_a.size() != size_t(N * (c.kv_lora_rank + c.qk_rope_head_dim)) ||
      a.kvb.size() != size_t(N * H * (c.qk_nope_head_dim + c.v_head_dim)) ||
      a.cq.size() != size_t(N * c.q_lora_rank))
    throw std::invalid_argument("MLA: activations were sized for another config");
  if (a.att.size() != size_t(a.B * H * a.T * a.T))
    throw std::invalid_argument("MLA: activations were sized for another batch");
  for (const ParamSpec& s : param_specs(c))
    if ((p.*s.field).size() != size_t(numel(s.shape)))
      throw std::invalid_argument("MLA: parameter " + s.name + " was sized for another config");
  if (a.T > rope.n_pos || 2 * rope.half != c.qk_rope_head_dim)
    throw std::invalid_argument("MLA: the RoPE table (" + std::to_string(rope.n_pos) +
                                " positions, dim " + std::to_string(2 * rope.half) +
                                ") does not cover " + std::to_string(a.T) + " tokens of dim " +
                                std::to_string(c.qk_rope_head_dim));
}

// `op` (rope_forward, or rope_backward for gradients) at positions 0..T-1 of each of the B
// sequences, on the rope dims of every query head (q [B*T][H][dq], rope dims after the nope ones)
// and on the shared key k_pe [B*T][rope].
void rope_sequences(void (*op)(float*, const RopeTable&, int64_t, int64_t, int64_t), float* q,
                    float* k_pe, const RopeTable& rope, const ModelConfig& c, int64_t B,
                    int64_t T) {
  const int64_t H = c.num_attention_heads, nope = c.qk_nope_head_dim, rd = c.qk_rope_head_dim;
  const int64_t dq = nope + rd;
  const int nt = threads_for(B * T * H * rd);
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t b = 0; b < B; b++) {
    const int64_t r0 = b * T;
    op(q + r0 * H * dq + nope, rope, T, H, dq);
    op(k_pe + r0 * rd, rope, T, 1, rd);
  }
}

}  // namespace

MlaParams::MlaParams(const ModelConfig& c) : c_(c) {
  check_config(c);
  for (const ParamSpec& s : param_specs(c)) this->*s.field = zeros(numel(s.shape));
}

std::vector<MlaTensor> MlaParams::tensors() {
  std::vector<MlaTensor> t;
  for (ParamSpec& s : param_specs(c_)) t.push_back({s.name, std::move(s.shape), &(this->*s.field)});
  return t;
}

MlaActs::MlaActs(const ModelConfig& c, int64_t B_, int64_t T_) {
  resize(c, B_, T_);
}

// Every buffer zeroed at its new size; storage is reused where it is large enough (assign keeps
// the capacity), so that batches of changing shapes (GRPO) do not map fresh pages every step.
void MlaActs::resize(const ModelConfig& c, int64_t B_, int64_t T_) {
  check_config(c);
  B = B_;
  T = T_;
  if (B <= 0 || T <= 0)
    throw std::invalid_argument("MLA: batch " + std::to_string(B) + " x " + std::to_string(T) +
                                " tokens: both must be > 0");
  const int64_t N = B * T, H = c.num_attention_heads, QL = c.q_lora_rank, R = c.kv_lora_rank;
  const int64_t nope = c.qk_nope_head_dim, rope = c.qk_rope_head_dim, dv = c.v_head_dim;
  cq.assign(size_t(N * QL), 0.0f);
  cq_rstd.assign(size_t(QL > 0 ? N : 0), 0.0f);
  cq_n.assign(size_t(N * QL), 0.0f);
  q.assign(size_t(N * H * (nope + rope)), 0.0f);
  kv_a.assign(size_t(N * (R + rope)), 0.0f);
  kv_lat.assign(size_t(N * R), 0.0f);
  kv_rstd.assign(size_t(N), 0.0f);
  kv_n.assign(size_t(N * R), 0.0f);
  k_pe.assign(size_t(N * rope), 0.0f);
  kvb.assign(size_t(N * H * (nope + dv)), 0.0f);
  k_nope.assign(size_t(N * H * nope), 0.0f);
  v.assign(size_t(N * H * dv), 0.0f);
  att.assign(size_t(B * H * T * T), 0.0f);
  out.assign(size_t(N * H * dv), 0.0f);
  d_out.assign(size_t(N * H * dv), 0.0f);
  d_att.assign(size_t(B * H * T * T), 0.0f);
  d_q.assign(size_t(N * H * (nope + rope)), 0.0f);
  d_k_nope.assign(size_t(N * H * nope), 0.0f);
  d_k_pe.assign(size_t(N * rope), 0.0f);
  d_v.assign(size_t(N * H * dv), 0.0f);
  d_kvb.assign(size_t(N * H * (nope + dv)), 0.0f);
  d_kv_n.assign(size_t(N * R), 0.0f);
  d_kv_lat.assign(size_t(N * R), 0.0f);
  d_kv_a.assign(size_t(N * (R + rope)), 0.0f);
  d_cq_n.assign(size_t(N * QL), 0.0f);
  d_cq.assign(size_t(N * QL), 0.0f);
}

void mla_forward(float* y, const float* x, const MlaParams& p, MlaActs& a, const RopeTable& rope,
                 const ModelConfig& c) {
  check_buffers(p, a, rope, c);
  const int64_t B = a.B, T = a.T, N = B * T, C = c.hidden_size, H = c.num_attention_heads;
  const int64_t QL = c.q_lora_rank, R = c.kv_lora_rank, nope = c.qk_nope_head_dim;
  const int64_t rd = c.qk_rope_head_dim, dv = c.v_head_dim, dq = nope + rd, dkv = nope + dv;

  // Queries.
  if (QL > 0) {
    matmul_forward(a.cq.data(), x, p.q_a_proj.data(), N, C, QL);
    rmsnorm_forward(a.cq_n.data(), a.cq_rstd.data(), a.cq.data(), p.q_a_layernorm.data(), N, QL,
                    kMlaLatentNormEps);
    matmul_forward(a.q.data(), a.cq_n.data(), p.q_b_proj.data(), N, QL, H * dq);
  } else {
    matmul_forward(a.q.data(), x, p.q_proj.data(), N, C, H * dq);
  }

  // Keys and values: split [latent ; k_pe], normalise the latent, decompress per head.
  matmul_forward(a.kv_a.data(), x, p.kv_a_proj_with_mqa.data(), N, C, R + rd);
  copy_cols<false>(a.kv_lat.data(), a.kv_a.data(), N, R + rd, 0, R);
  copy_cols<false>(a.k_pe.data(), a.kv_a.data(), N, R + rd, R, rd);
  rmsnorm_forward(a.kv_n.data(), a.kv_rstd.data(), a.kv_lat.data(), p.kv_a_layernorm.data(), N, R,
                  kMlaLatentNormEps);
  matmul_forward(a.kvb.data(), a.kv_n.data(), p.kv_b_proj.data(), N, R, H * dkv);
  copy_cols<false>(a.k_nope.data(), a.kvb.data(), N * H, dkv, 0, nope);
  copy_cols<false>(a.v.data(), a.kvb.data(), N * H, dkv, nope, dv);

  // RoPE at positions 0..T-1 of every sequence (check_buffers made sure the table covers T, so
  // nothing throws inside the parallel loop), then causal attention over all of them.
  rope_sequences(rope_forward, a.q.data(), a.k_pe.data(), rope, c, B, T);
  causal_attention_forward(a.out.data(), a.att.data(), a.q.data(), a.k_nope.data(), a.k_pe.data(),
                           a.v.data(), attn_shape(c, B, T));
  matmul_forward(y, a.out.data(), p.o_proj.data(), N, H * dv, C);
}

void mla_backward(float* dx, MlaParams& g, const float* dy, const float* x, const MlaParams& p,
                  MlaActs& a, const RopeTable& rope, const ModelConfig& c) {
  check_buffers(p, a, rope, c);
  check_buffers(g, a, rope, c);
  const int64_t B = a.B, T = a.T, N = B * T, C = c.hidden_size, H = c.num_attention_heads;
  const int64_t QL = c.q_lora_rank, R = c.kv_lora_rank, nope = c.qk_nope_head_dim;
  const int64_t rd = c.qk_rope_head_dim, dv = c.v_head_dim, dq = nope + rd, dkv = nope + dv;

  // The ops accumulate: start the intermediate gradients from zero.
  for (Vec* d : {&a.d_out, &a.d_q, &a.d_k_nope, &a.d_k_pe, &a.d_v, &a.d_kv_n, &a.d_kv_lat,
                 &a.d_cq_n, &a.d_cq})
    zero_fill(*d);

  matmul_backward(a.d_out.data(), g.o_proj.data(), dy, a.out.data(), p.o_proj.data(), N, H * dv, C);

  // Attention, then the inverse rotations (q_pe per head; k_pe, whose gradient the attention
  // backward already summed over the heads sharing it).
  causal_attention_backward(a.d_q.data(), a.d_k_nope.data(), a.d_k_pe.data(), a.d_v.data(),
                            a.d_att.data(), a.d_out.data(), a.q.data(), a.k_nope.data(),
                            a.k_pe.data(), a.v.data(), a.att.data(), attn_shape(c, B, T));
  rope_sequences(rope_backward, a.d_q.data(), a.d_k_pe.data(), rope, c, B, T);

  // Keys and values: reassemble [k_nope ; v] per head, through kv_b_proj and the latent norm,
  // then reassemble [latent ; k_pe] for kv_a_proj_with_mqa.
  copy_cols<true>(a.d_kvb.data(), a.d_k_nope.data(), N * H, dkv, 0, nope);
  copy_cols<true>(a.d_kvb.data(), a.d_v.data(), N * H, dkv, nope, dv);
  matmul_backward(a.d_kv_n.data(), g.kv_b_proj.data(), a.d_kvb.data(), a.kv_n.data(),
                  p.kv_b_proj.data(), N, R, H * dkv);
  rmsnorm_backward(a.d_kv_lat.data(), g.kv_a_layernorm.data(), a.d_kv_n.data(), a.kv_lat.data(),
                   p.kv_a_layernorm.data(), a.kv_rstd.data(), N, R);
  copy_cols<true>(a.d_kv_a.data(), a.d_kv_lat.data(), N, R + rd, 0, R);
  copy_cols<true>(a.d_kv_a.data(), a.d_k_pe.data(), N, R + rd, R, rd);
  matmul_backward(dx, g.kv_a_proj_with_mqa.data(), a.d_kv_a.data(), x, p.kv_a_proj_with_mqa.data(),
                  N, C, R + rd);

  // Queries.
  if (QL > 0) {
    matmul_backward(a.d_cq_n.data(), g.q_b_proj.data(), a.d_q.data(), a.cq_n.data(),
                    p.q_b_proj.data(), N, QL, H * dq);
    rmsnorm_backward(a.d_cq.data(), g.q_a_layernorm.data(), a.d_cq_n.data(), a.cq.data(),
                     p.q_a_layernorm.data(), a.cq_rstd.data(), N, QL);
    matmul_backward(dx, g.q_a_proj.data(), a.d_cq.data(), x, p.q_a_proj.data(), N, C, QL);
  } else {
    matmul_backward(dx, g.q_proj.data(), a.d_q.data(), x, p.q_proj.data(), N, C, H * dq);
  }
}

}  // namespace whale::train
