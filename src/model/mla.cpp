#include "model/mla.h"

#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels/cpu.h"
#include "kernels/ops.h"
#include "model/weights.h"

namespace whale {

// The latent norms (q_a_layernorm, kv_a_layernorm) are built without an eps argument in both the
// official and the Hugging Face code, so they use 1e-6 whatever config.rms_norm_eps says.
constexpr float kLatentNormEps = 1e-6f;

// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelWork = 1 << 16;

MLA::MLA(const ModelConfig& c, const Checkpoint& ck, const std::string& prefix, int64_t layer,
         const Rope* rope)
    : c_(c), layer_(layer), rope_(rope), scale_(float(c.softmax_scale())) {
  const int64_t H = c.num_attention_heads, D = c.hidden_size;
  if (c.q_lora_rank > 0) {
    q_a_proj_ = load_linear(ck, prefix + ".q_a_proj", c.q_lora_rank, D);
    q_a_layernorm_ = {load_vector(ck, prefix + ".q_a_layernorm.weight", c.q_lora_rank),
                      kLatentNormEps};
    q_b_proj_ = load_linear(ck, prefix + ".q_b_proj", H * c.qk_head_dim(), c.q_lora_rank);
  } else {
    q_proj_ = load_linear(ck, prefix + ".q_proj", H * c.qk_head_dim(), D);
  }
  kv_a_proj_with_mqa_ =
      load_linear(ck, prefix + ".kv_a_proj_with_mqa", c.kv_lora_rank + c.qk_rope_head_dim, D);
  kv_a_layernorm_ = {load_vector(ck, prefix + ".kv_a_layernorm.weight", c.kv_lora_rank),
                     kLatentNormEps};
  kv_b_proj_ = load_linear(ck, prefix + ".kv_b_proj", H * (c.qk_nope_head_dim + c.v_head_dim),
                           c.kv_lora_rank);
  o_proj_ = load_linear(ck, prefix + ".o_proj", D, H * c.v_head_dim);
  // GGUF files with llama.cpp's split attn_k_b / attn_v_b also offer those halves as stored
  // (formats/gguf_model.h): absorbed decoding reads them instead of the f32 kv_b_proj rebuilt
  // from them, so a 4-bit file's decode reads 4-bit bytes there too.
  if (ck.has(prefix + ".k_b_proj.weight")) {
    k_b_proj_ = load_linear(ck, prefix + ".k_b_proj", H * c.kv_lora_rank, c.qk_nope_head_dim);
    v_b_proj_ = load_linear(ck, prefix + ".v_b_proj", H * c.v_head_dim, c.kv_lora_rank);
  }
}

size_t MLA::bytes() const {
  const size_t kv_b =
      k_b_proj_.data ? weight_bytes(k_b_proj_) + weight_bytes(v_b_proj_) : weight_bytes(kv_b_proj_);
  size_t n = weight_bytes(kv_a_proj_with_mqa_) + kv_b + weight_bytes(o_proj_);
  if (c_.q_lora_rank > 0) return n + weight_bytes(q_a_proj_) + weight_bytes(q_b_proj_);
  return n + weight_bytes(q_proj_);
}

void MLA::forward(const float* x, int64_t N, std::span<const AttnSegment> segs, float* y,
                  AttnMode mode) const {
  const int64_t H = c_.num_attention_heads, dq = c_.qk_head_dim(), nope = c_.qk_nope_head_dim;
  const int64_t R = c_.kv_lora_rank, rope = c_.qk_rope_head_dim;

  // Down-projections, both reading x (one pass over the threads):
  //   queries c_Q = W_DQ x (or q = q_proj x directly),  keys/values [c_KV ; k_R] = W_DKV x.
  std::vector<float> q(static_cast<size_t>(N * H * dq));
  std::vector<float> kv(static_cast<size_t>(N * (R + rope)));
  std::vector<float> cq;
  if (c_.q_lora_rank > 0) {
    cq.resize(static_cast<size_t>(N * c_.q_lora_rank));
    const LinearJob jobs[2] = {{x, N, q_a_proj_, cq.data()},
                               {x, N, kv_a_proj_with_mqa_, kv.data()}};
    linear_many(jobs);
    // Queries: q = W_UQ RMSNorm(c_Q).  [N][H][nope + rope]
    q_a_layernorm_.forward(cq.data(), N, cq.data());
    linear(cq.data(), N, q_b_proj_, q.data());
  } else {
    const LinearJob jobs[2] = {{x, N, q_proj_, q.data()}, {x, N, kv_a_proj_with_mqa_, kv.data()}};
    linear_many(jobs);
  }

  // RoPE on the decoupled dims, and write c_KV (normed) and k_R into the cache (in its type).
  std::vector<float> latent(static_cast<size_t>(R));
  for (const AttnSegment& s : segs) {
    s.cache->reserve(s.cache->len() + s.n);
    for (int64_t i = 0; i < s.n; i++) {
      const int64_t t = s.start + i, pos = s.cache->len() + i;
      rope_->apply(q.data() + t * H * dq + nope, H, dq, pos);
      float* kvt = kv.data() + t * (R + rope);
      rope_->apply(kvt + R, 1, rope, pos);
      kv_a_layernorm_.forward(kvt, 1, latent.data());
      s.cache->store(layer_, pos, latent.data(), kvt + R);
    }
  }

  // Attention per segment, into out [N][H * v_head_dim]. Short segments (decode) take the
  // absorbed form, all together; long ones (prefill) the naive form, one by one.
  std::vector<float> out(size_t(N * H * c_.v_head_dim));
  std::vector<AttnSegment> absorbed;
  for (const AttnSegment& s : segs) {
    if (mode == AttnMode::Absorbed || (mode == AttnMode::Auto && s.n <= 8))
      absorbed.push_back(s);
    else
      attend_naive(s, q.data(), out.data());
  }
  if (!absorbed.empty()) attend_absorbed(absorbed, q.data(), out.data());
  linear(out.data(), N, o_proj_, y);
}

// Naive form: decompress k_C and v for all T positions, then standard attention per head.
void MLA::attend_naive(const AttnSegment& s, const float* q, float* out) const {
  const int64_t H = c_.num_attention_heads, dq = c_.qk_head_dim(), nope = c_.qk_nope_head_dim;
  const int64_t rope = c_.qk_rope_head_dim, dv = c_.v_head_dim;
  const int64_t pos0 = s.cache->len(), T = pos0 + s.n, dkv = nope + dv;

  // kvb[j] = W_UKV c_KV[j]: per head [k_C (nope) ; v (dv)]. The cache rows are contiguous; a
  // cache of another type than f32 is converted first (the latents are this product's input).
  const KVCache& cache = *s.cache;
  std::vector<float> lat_f32, kr_f32;
  const float* lat = reinterpret_cast<const float*>(cache.latent_bytes(layer_));
  const float* kr = reinterpret_cast<const float*>(cache.k_rope_bytes(layer_));
  if (cache.type() != KvType::F32) {
    lat_f32.resize(size_t(T * c_.kv_lora_rank));
    cache.latents_f32(layer_, T, lat_f32.data());
    lat = lat_f32.data();
    kr_f32.resize(size_t(T * rope));
    for (int64_t j = 0; j < T; j++) cache.k_rope_f32(layer_, j, kr_f32.data() + j * rope);
    kr = kr_f32.data();
  }
  std::vector<float> kvb(size_t(T * H * dkv));
  linear(lat, T, kv_b_proj_, kvb.data());

  // Per head, two matrix products over blocks of up to kRows queries (the matrix kernels, not a
  // dot product per query and key):
  //   S = scale * Q_h K_h^T  [m x keys]   with K_h[j] = [k_C(j, h) ; k_R(j)],
  //   causal mask and softmax per row,  O_h = S V_h  [m x dv]  (as S times the rows of V_h^T).
  // A block's keys run to its last query's position; its earlier queries mask the tail.
  constexpr int64_t kRows = 256;
  const int64_t rows = std::min(s.n, kRows);
  std::vector<float> K(size_t(T * dq)), Vt(size_t(dv * T)), Q(size_t(rows * dq));
  std::vector<float> S(size_t(rows * T)), O(size_t(rows * dv));
  for (int64_t h = 0; h < H; h++) {
    for (int64_t j = 0; j < T; j++) {
      const float* kvj = kvb.data() + j * H * dkv + h * dkv;
      std::copy(kvj, kvj + nope, K.data() + j * dq);
      std::copy(kr + j * rope, kr + (j + 1) * rope, K.data() + j * dq + nope);
      for (int64_t c = 0; c < dv; c++) Vt[size_t(c * T + j)] = kvj[nope + c];
    }
    for (int64_t i0 = 0; i0 < s.n; i0 += kRows) {
      const int64_t m = std::min(kRows, s.n - i0), keys = pos0 + i0 + m;
      for (int64_t i = 0; i < m; i++) {
        const float* qi = q + (s.start + i0 + i) * H * dq + h * dq;
        std::copy(qi, qi + dq, Q.data() + i * dq);
      }
      WeightRef kw;
      kw.rows = keys;
      kw.cols = dq;
      kw.data = K.data();
      linear(Q.data(), m, kw, S.data());  // [m][keys]
#pragma omp parallel for schedule(static) if (m * keys > kParallelWork) num_threads(num_threads())
      for (int64_t i = 0; i < m; i++) {
        float* row = S.data() + i * keys;
        const int64_t n_keys = pos0 + i0 + i + 1;  // causal
        for (int64_t j = 0; j < n_keys; j++) row[j] *= scale_;
        softmax_inplace(row, n_keys);
        std::fill(row + n_keys, row + keys, 0.0f);
      }
      // O = S V_h: the rows of V_h^T (their first `keys` values) as the weight.
      WeightRef vw;
      vw.rows = dv;
      vw.cols = keys;
      vw.data = Vt.data();
      if (keys == T) {
        linear(S.data(), m, vw, O.data());
      } else {  // the keys of this block are a prefix of each V_h^T row: a packed copy
        std::vector<float> Vp(size_t(dv * keys));
        for (int64_t c = 0; c < dv; c++)
          std::copy(Vt.data() + c * T, Vt.data() + c * T + keys, Vp.data() + c * keys);
        vw.data = Vp.data();
        linear(S.data(), m, vw, O.data());
      }
      for (int64_t i = 0; i < m; i++)
        std::copy(O.data() + i * dv, O.data() + (i + 1) * dv,
                  out + (s.start + i0 + i) * H * dv + h * dv);
    }
  }
}

namespace {

// Per-thread work buffers for for_each.
struct Scratch {
  std::vector<float> a, b, c, d;
};

// fn(i, scratch) for i in [0, n): split over the threads when `parallel`, else on the calling
// thread outside any parallel region (so the kernels fn calls can still use the threads; an
// inactive `omp parallel if (false)` region would make their regions nested).
template <class Fn>
void for_each(int64_t n, bool parallel, const Fn& fn) {
  if (!parallel) {
    Scratch sc;
    for (int64_t i = 0; i < n; i++) fn(i, sc);
    return;
  }
#pragma omp parallel num_threads(num_threads())
  {
    Scratch sc;
#pragma omp for schedule(dynamic, 1)
    for (int64_t i = 0; i < n; i++) fn(i, sc);
  }
}

}  // namespace

// Absorbed form: q_lat = W_UK^T q_C (per head), scores on the latents, ctx = sum p c_KV, then
// the head output W_UV ctx. Nothing is decompressed per cached position. Three steps:
//   1. per head (threads over heads): q_lat[m][h] = W_UK_h^T q_C[m][h] for every token m;
//   2. per token (threads over tokens), all heads at once against that sequence's cache, as two
//      small matrix products with the cached latents [n_keys x R] as the weight:
//        scores[h][j] = scale * (q_lat[m][h] . c_KV[j] + q_R[m][h] . k_R[j]),
//        softmax over j,  ctx[m][h] = sum_j p[h][j] c_KV[j]   (linear_t);
//   3. per head: out[m][h] = W_UV_h ctx[m][h].
// Each head's W_UK / W_UV slices are read once per call, not once per sequence (what makes
// batched decoding of many sequences cheap), and each cached latent once per token, not once per
// head.
void MLA::attend_absorbed(std::span<const AttnSegment> segs, const float* q, float* out) const {
  const int64_t H = c_.num_attention_heads, dq = c_.qk_head_dim(), nope = c_.qk_nope_head_dim;
  const int64_t rope = c_.qk_rope_head_dim, dv = c_.v_head_dim, R = c_.kv_lora_rank;
  const int64_t dkv = nope + dv;
  // The tokens of these segments, in order: M of them, with their segment and position.
  struct Tok {
    int64_t row;  // row of the batch
    const KVCache* cache;
    int64_t n_keys;  // causal: positions 0 .. pos
  };
  std::vector<Tok> toks;
  int64_t keys = 0;  // attention work: sum over tokens of the keys each sees
  for (const AttnSegment& s : segs)
    for (int64_t i = 0; i < s.n; i++) {
      toks.push_back({s.start + i, s.cache, s.cache->len() + i + 1});
      keys += s.cache->len() + i + 1;
    }
  const int64_t M = int64_t(toks.size());
  std::vector<float> qlat(size_t(M * H * R)), ctx(size_t(M * H * R));
  const bool par_heads = H * M * (nope + dv) * R > kParallelWork;
  const bool par_tokens = M > 1 && H * keys * (2 * R + rope) > kParallelWork;

  // 1. q_lat = W_UK^T q_C, per head.
  for_each(H, par_heads, [&](int64_t h, Scratch& sc) {
    sc.a.resize(size_t(M * nope));
    sc.b.resize(size_t(M * R));
    for (int64_t m = 0; m < M; m++) {
      const float* qm = q + toks[size_t(m)].row * H * dq + h * dq;
      std::copy(qm, qm + nope, sc.a.data() + m * nope);
    }
    if (k_b_proj_.data)  // W_UK_h^T stored as such: [R x nope]
      linear(sc.a.data(), M, k_b_proj_.slice_rows(h * R, R), sc.b.data());
    else
      linear_t(sc.a.data(), M, kv_b_proj_.slice_rows(h * dkv, nope), sc.b.data());  // [M][R]
    for (int64_t m = 0; m < M; m++)
      std::copy(sc.b.data() + m * R, sc.b.data() + (m + 1) * R, qlat.data() + (m * H + h) * R);
  });

  // 2. Scores, softmax and context for all heads of one token at a time.
  for_each(M, par_tokens, [&](int64_t m, Scratch& sc) {
    const Tok& t = toks[size_t(m)];
    const int64_t T = t.n_keys;
    // The cache as matrices [T x R] and [T x rope] in its stored type.
    const WeightRef lat = t.cache->latent_ref(layer_, T), kr = t.cache->k_rope_ref(layer_, T);
    sc.a.resize(size_t(H * rope));
    for (int64_t h = 0; h < H; h++) {
      const float* qm = q + t.row * H * dq + h * dq + nope;
      std::copy(qm, qm + rope, sc.a.data() + h * rope);
    }
    sc.b.resize(size_t(H * T));
    sc.c.resize(size_t(H * T));
    linear(qlat.data() + m * H * R, H, lat, sc.b.data());  // [H][T]: q_lat . c_KV
    linear(sc.a.data(), H, kr, sc.c.data());               // [H][T]: q_R . k_R
    for (int64_t h = 0; h < H; h++) {
      float* row = sc.b.data() + h * T;
      const float* rr = sc.c.data() + h * T;
      for (int64_t j = 0; j < T; j++) row[j] = scale_ * (row[j] + rr[j]);
      softmax_inplace(row, T);
    }
    // [H][R] = P [H x T] . c_KV. The transposed product has no kernel for blocks: a Q8_0 cache
    // is widened to f32 for it.
    WeightRef lat_t = lat;
    if (dtype_is_quantized(lat.dtype)) {
      sc.d.resize(size_t(T * R));
      t.cache->latents_f32(layer_, T, sc.d.data());
      lat_t.dtype = DType::F32;
      lat_t.data = sc.d.data();
    }
    linear_t(sc.b.data(), H, lat_t, ctx.data() + m * H * R);
  });

  // 3. out = W_UV ctx, per head.
  for_each(H, par_heads, [&](int64_t h, Scratch& sc) {
    sc.a.resize(size_t(M * R));
    sc.b.resize(size_t(M * dv));
    for (int64_t m = 0; m < M; m++)
      std::copy(ctx.data() + (m * H + h) * R, ctx.data() + (m * H + h + 1) * R,
                sc.a.data() + m * R);
    const WeightRef w_uv = v_b_proj_.data ? v_b_proj_.slice_rows(h * dv, dv)
                                          : kv_b_proj_.slice_rows(h * dkv + nope, dv);
    linear(sc.a.data(), M, w_uv, sc.b.data());  // [M][dv]
    for (int64_t m = 0; m < M; m++)
      std::copy(sc.b.data() + m * dv, sc.b.data() + (m + 1) * dv,
                out + toks[size_t(m)].row * H * dv + h * dv);
  });
}

}  // namespace whale
