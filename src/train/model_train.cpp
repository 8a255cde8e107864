#include "train/model_train.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <stdexcept>
#include <string>

#include "model/rope.h"
#include "train/mla_train.h"
#include "train/moe_train.h"
#include "train/ops.h"

namespace whale::train {

namespace {

using Vec = std::vector<float>;

// A trainable tensor's values and gradient.
struct Tensor {
  Vec w, g;
  explicit Tensor(int64_t n = 0) : w(size_t(n), 0.0f), g(size_t(n), 0.0f) {}
};

// One decoder layer (a main layer or the MTP block): parameters and their gradients.
struct Layer {
  Layer(const ModelConfig& c, int64_t index_)
      : index(index_), moe(c.is_moe_layer(index_)), attn(c), attn_grad(c) {
    const int64_t C = c.hidden_size, I = c.intermediate_size;
    input_layernorm = Tensor(C);
    post_attention_layernorm = Tensor(C);
    if (moe) {
      experts = Tensor(moe_num_params(c));
      moe_w = moe_params_at(experts.w.data(), c);
      moe_g = moe_params_at(experts.g.data(), c);
      bias.assign(size_t(c.n_routed_experts), 0.0f);
    } else {
      gate_proj = Tensor(I * C);
      up_proj = Tensor(I * C);
      down_proj = Tensor(C * I);
    }
  }
  int64_t index;
  bool moe;
  int64_t moe_slot = -1;  // position among the MoE layers (buffers(), expert_counts())
  Tensor input_layernorm, post_attention_layernorm;
  MlaParams attn, attn_grad;
  Tensor gate_proj, up_proj, down_proj;  // dense MLP [I][C], [I][C], [C][I]
  Tensor experts;                        // MoE: router, routed and shared experts (moe_params_at)
  MoeParams moe_w, moe_g;                // views of experts.w / experts.g
  Vec bias;                              // e_score_correction_bias [E]
};

// What one layer's forward saves for its backward (y = mid + FFN(xn2), mid = x + MLA(xn1)).
struct LayerActs {
  Vec xn1, rstd1;  // input_layernorm(x)
  Vec mid;         // the residual stream between the two sublayers
  Vec xn2, rstd2;  // post_attention_layernorm(mid)
  std::unique_ptr<MlaActs> mla;
  MoeActs moe;
  Vec g, u, h;  // dense MLP: gate_proj, up_proj, silu(gate) * up   [N][I]
};

// The activation buffers for B sequences of T tokens. A training set keeps every layer's for the
// backward; a lean set (forward only: validation, logits) has one layer's, reused by all, and two
// residual buffers used in turn, so that validation batches of another shape cost little memory.
struct Activations {
  int64_t B = 0, T = 0, N = 0;
  bool lean = false;
  std::unique_ptr<RopeTable> rope;
  std::vector<Vec> res;          // [N][C] the residual stream entering layer i (training: L+1)
  std::vector<LayerActs> layer;  // training: per layer, MTP block last; lean: one
  Vec f;                         // [N][C] sublayer output
  Vec xn, rstd, logits, lse;     // head: normed rows [N][C], [N], logits [N][V], [N]
  std::vector<int32_t> mtp_ids, mtp_targets;            // [N] t_{i+1} embedded, t_{i+2} predicted
  Vec me, me_n, rstd_e, mh_n, rstd_h, cat, m0, m1;      // MTP: embedding, norms, concat, block
  Vec dres, dxn, dxf, dlog, dg, du, dh, dcat, dme, dm;  // backward scratch (training only)

  float* h(int64_t i) { return res[size_t(lean ? i % 2 : i)].data(); }
  LayerActs& at(int64_t i) { return layer[size_t(lean ? 0 : i)]; }
};

void zero(Vec& v) {
  std::fill(v.begin(), v.end(), 0.0f);
}

// y = a + b elementwise.
void add(float* y, const float* a, const float* b, int64_t n) {
#pragma omp parallel for schedule(static) num_threads(threads_for(n))
  for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

// ---- the initialisation generator: splitmix64 and Box-Muller, written out so that every
// platform draws the same numbers ----
uint64_t splitmix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Uniform in (0, 1): 53 random bits, centred in their interval so 0 never occurs.
double uniform01(uint64_t& state) {
  return (double(splitmix64(state) >> 11) + 0.5) * 0x1.0p-53;
}

// FNV-1a, so that each tensor's stream depends on its name, not on its position in the list.
uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ull;
  return h;
}

void fill_normal(float* x, int64_t n, uint64_t seed, const std::string& name, float std) {
  uint64_t state = seed ^ fnv1a(name);
  constexpr double kTwoPi = 6.283185307179586476925;
  for (int64_t i = 0; i < n; i += 2) {
    const double r = std::sqrt(-2.0 * std::log(uniform01(state)));
    const double a = kTwoPi * uniform01(state);
    x[i] = float(double(std) * r * std::cos(a));
    if (i + 1 < n) x[i + 1] = float(double(std) * r * std::sin(a));
  }
}

void check_config(const ModelConfig& c, const LossConfig& loss) {
  try {
    c.validate("model config");
  } catch (const std::runtime_error& e) {
    throw std::invalid_argument(e.what());
  }
  auto fail = [](const std::string& field, const std::string& msg) {
    throw std::invalid_argument("model config: field \"" + field + "\" " + msg);
  };
  if (c.tie_word_embeddings)
    fail("tie_word_embeddings", "true is not supported for training (V3 has its own lm_head)");
  if (c.num_nextn_predict_layers < 0 || c.num_nextn_predict_layers > 1)
    fail("num_nextn_predict_layers", "must be 0 or 1 for training (V3: depth-1 MTP), got " +
                                         std::to_string(c.num_nextn_predict_layers));
  if (c.fp8_block_quant) fail("quantization_config", "FP8 weights cannot be trained");
  if (c.n_routed_experts > 0 && c.scoring_func != ScoringFunc::Sigmoid)
    fail("scoring_func", "must be \"sigmoid\" for training (DeepSeek-V3 routing)");
  if (!(loss.mtp_lambda >= 0.0f) || !std::isfinite(loss.mtp_lambda))
    throw std::invalid_argument("mtp_lambda must be a finite number >= 0, got " +
                                std::to_string(loss.mtp_lambda));
  if (!(loss.balance_alpha >= 0.0f) || !std::isfinite(loss.balance_alpha))
    throw std::invalid_argument("balance_alpha must be a finite number >= 0, got " +
                                std::to_string(loss.balance_alpha));
}

}  // namespace

struct TrainModel::Impl {
  Impl(const ModelConfig& config, const LossConfig& lc);

  ModelConfig c;
  LossConfig loss;
  int64_t L = 0, C = 0, V = 0, I = 0, E = 0;
  float eps = 1e-6f;
  bool has_mtp = false;  // the MTP module exists (num_nextn_predict_layers == 1)
  bool run_mtp = false;  // ... and is trained (mtp_lambda > 0)

  Tensor embed_tokens, norm, lm_head;
  Tensor enorm, hnorm, eh_proj, shared_head_norm;  // MTP
  std::vector<std::unique_ptr<Layer>> layers;      // main layers, then the MTP block
  std::vector<ParamTensor> params;
  std::vector<BufferTensor> buffers;
  std::vector<Layer*> moe_layers;  // order of buffers()
  std::vector<std::vector<int64_t>> counts;

  std::vector<std::vector<int32_t>> routed;  // per MoE layer: the last forward's selection

  Rope rope_freqs;
  Activations train_acts, eval_acts;
  Activations* A = nullptr;  // the set the current call uses

  void add_param(const std::string& name, std::vector<int64_t> shape, Tensor& t);
  void add_param(const std::string& name, std::vector<int64_t> shape, float* w, float* g);
  void register_layer(Layer& l);
  int64_t active_params(const Layer& l) const;

  void check_batch(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T) const;
  void use(Activations& a, bool lean, int64_t B, int64_t T);

  double layer_forward(Layer& l, LayerActs& a, const float* x, float* y, bool count);
  void layer_backward(Layer& l, LayerActs& a, const float* x, float* d, float scale);
  double head(const float* h, Tensor& norm_w, const int32_t* targets, float dloss, float* dh,
              const float* weights = nullptr);
  double trunk_forward(const int32_t* inputs, bool count);
  double mtp(const int32_t* inputs, const int32_t* targets, bool backward, float scale,
             float& mtp_loss);
  StepLosses run(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T, bool backward,
                 float scale, const float* weights = nullptr);
};

TrainModel::Impl::Impl(const ModelConfig& config, const LossConfig& lc) : c(config), loss(lc) {
  check_config(c, loss);
  L = c.num_hidden_layers;
  C = c.hidden_size;
  V = c.vocab_size;
  I = c.intermediate_size;
  E = c.n_routed_experts;
  eps = float(c.rms_norm_eps);
  has_mtp = c.num_nextn_predict_layers == 1;
  run_mtp = has_mtp && loss.mtp_lambda > 0.0f;
  rope_freqs = Rope(c);

  embed_tokens = Tensor(V * C);
  norm = Tensor(C);
  lm_head = Tensor(V * C);
  for (int64_t i = 0; i < L + (has_mtp ? 1 : 0); i++) {
    layers.push_back(std::make_unique<Layer>(c, i));
    if (layers.back()->moe) {
      layers.back()->moe_slot = int64_t(moe_layers.size());
      moe_layers.push_back(layers.back().get());
    }
  }
  counts.assign(moe_layers.size(), std::vector<int64_t>(size_t(E), 0));
  routed.resize(moe_layers.size());

  // Registration order: embedding, layers, norm, head, MTP.
  add_param("model.embed_tokens.weight", {V, C}, embed_tokens);
  for (int64_t i = 0; i < L; i++) register_layer(*layers[size_t(i)]);
  add_param("model.norm.weight", {C}, norm);
  add_param("lm_head.weight", {V, C}, lm_head);
  if (has_mtp) {
    const std::string p = "model.layers." + std::to_string(L) + ".";
    enorm = Tensor(C);
    hnorm = Tensor(C);
    eh_proj = Tensor(C * 2 * C);
    shared_head_norm = Tensor(C);
    add_param(p + "enorm.weight", {C}, enorm);
    add_param(p + "hnorm.weight", {C}, hnorm);
    add_param(p + "eh_proj.weight", {C, 2 * C}, eh_proj);
    register_layer(*layers[size_t(L)]);
    add_param(p + "shared_head.norm.weight", {C}, shared_head_norm);
  }
  for (Layer* l : moe_layers)
    buffers.push_back(
        {"model.layers." + std::to_string(l->index) + ".mlp.gate.e_score_correction_bias",
         {E},
         l->bias.data(),
         E});
}

void TrainModel::Impl::add_param(const std::string& name, std::vector<int64_t> shape, float* w,
                                 float* g) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  const bool decay = shape.size() > 1;  // matrices and the embedding; not the norm weights
  params.push_back({name, std::move(shape), w, g, n, decay});
}

void TrainModel::Impl::add_param(const std::string& name, std::vector<int64_t> shape, Tensor& t) {
  add_param(name, std::move(shape), t.w.data(), t.g.data());
}

void TrainModel::Impl::register_layer(Layer& l) {
  const std::string p = "model.layers." + std::to_string(l.index) + ".";
  add_param(p + "input_layernorm.weight", {C}, l.input_layernorm);
  std::vector<MlaTensor> w = l.attn.tensors(), g = l.attn_grad.tensors();
  for (size_t i = 0; i < w.size(); i++)
    add_param(p + "self_attn." + w[i].name, w[i].shape, w[i].data->data(), g[i].data->data());
  add_param(p + "post_attention_layernorm.weight", {C}, l.post_attention_layernorm);
  if (!l.moe) {
    add_param(p + "mlp.gate_proj.weight", {I, C}, l.gate_proj);
    add_param(p + "mlp.up_proj.weight", {I, C}, l.up_proj);
    add_param(p + "mlp.down_proj.weight", {C, I}, l.down_proj);
    return;
  }
  const int64_t F = c.moe_intermediate_size, Fs = F * c.n_shared_experts;
  const MoeParams &mw = l.moe_w, &mg = l.moe_g;
  add_param(p + "mlp.gate.weight", {E, C}, mw.router, mg.router);
  for (int64_t e = 0; e < E; e++) {
    const std::string x = p + "mlp.experts." + std::to_string(e) + ".";
    add_param(x + "gate_proj.weight", {F, C}, mw.w_gate + e * F * C, mg.w_gate + e * F * C);
    add_param(x + "up_proj.weight", {F, C}, mw.w_up + e * F * C, mg.w_up + e * F * C);
    add_param(x + "down_proj.weight", {C, F}, mw.w_down + e * C * F, mg.w_down + e * C * F);
  }
  if (Fs > 0) {
    add_param(p + "mlp.shared_experts.gate_proj.weight", {Fs, C}, mw.s_gate, mg.s_gate);
    add_param(p + "mlp.shared_experts.up_proj.weight", {Fs, C}, mw.s_up, mg.s_up);
    add_param(p + "mlp.shared_experts.down_proj.weight", {C, Fs}, mw.s_down, mg.s_down);
  }
}

// Parameters one token multiplies by in this layer: routed experts top-k of E.
int64_t TrainModel::Impl::active_params(const Layer& l) const {
  const int64_t H = c.num_attention_heads, QL = c.q_lora_rank, R = c.kv_lora_rank;
  const int64_t q = QL > 0 ? QL * C + QL + H * c.qk_head_dim() * QL : H * c.qk_head_dim() * C;
  const int64_t kv = (R + c.qk_rope_head_dim) * C + R + H * (c.qk_nope_head_dim + c.v_head_dim) * R;
  int64_t n = 2 * C + q + kv + C * H * c.v_head_dim;  // norms, MLA
  if (!l.moe) return n + 3 * I * C;
  const int64_t F = c.moe_intermediate_size, Fs = F * c.n_shared_experts;
  return n + E * C + 3 * Fs * C + c.num_experts_per_tok * 3 * F * C;
}

void TrainModel::Impl::check_batch(const int32_t* inputs, const int32_t* targets, int64_t B_,
                                   int64_t T_) const {
  if (B_ <= 0 || T_ <= 0)
    throw std::invalid_argument("batch of " + std::to_string(B_) + " sequences of " +
                                std::to_string(T_) + " tokens: both must be > 0");
  if (T_ > c.max_position_embeddings)
    throw std::invalid_argument("sequence length " + std::to_string(T_) +
                                " exceeds max_position_embeddings (" +
                                std::to_string(c.max_position_embeddings) + ")");
  if (!inputs) throw std::invalid_argument("no input tokens (null pointer)");
  auto where = [T_](int64_t n) {
    return "[" + std::to_string(n / T_) + "][" + std::to_string(n % T_) + "] = ";
  };
  for (int64_t n = 0; n < B_ * T_; n++)
    if (inputs[n] < 0 || inputs[n] >= V)
      throw std::invalid_argument("inputs" + where(n) + std::to_string(inputs[n]) +
                                  " is outside the vocabulary (vocab_size " + std::to_string(V) +
                                  ")");
  if (!targets) return;
  for (int64_t n = 0; n < B_ * T_; n++)
    if ((targets[n] < 0 && targets[n] != kIgnoreIndex) || targets[n] >= V)
      throw std::invalid_argument("targets" + where(n) + std::to_string(targets[n]) +
                                  " is outside the vocabulary (vocab_size " + std::to_string(V) +
                                  ") and not the ignore index " + std::to_string(kIgnoreIndex));
}

// Sizes `a` for B sequences of T tokens (a no-op when it already fits) and makes it current.
void TrainModel::Impl::use(Activations& a, bool lean, int64_t B, int64_t T) {
  A = &a;
  if (a.B == B && a.T == T && a.lean == lean) return;
  a.B = B;
  a.T = T;
  a.N = B * T;
  a.lean = lean;
  const size_t NC = size_t(a.N * C), n = size_t(a.N), NI = n * size_t(I);
  a.rope = std::make_unique<RopeTable>(rope_freqs, T);
  a.res.assign(lean ? 2 : size_t(L + 1), Vec(NC));
  // Buffers keep their storage across shapes (assign reuses the capacity): GRPO's batches change
  // shape every step, and fresh pages would cost more than the step's arithmetic.
  a.layer.resize(lean ? 1 : layers.size());
  for (size_t i = 0; i < a.layer.size(); i++) {
    LayerActs& l = a.layer[i];
    for (Vec* v : {&l.xn1, &l.mid, &l.xn2}) v->assign(NC, 0.0f);
    l.rstd1.assign(n, 0.0f);
    l.rstd2.assign(n, 0.0f);
    if (l.mla)
      l.mla->resize(c, B, T);
    else
      l.mla = std::make_unique<MlaActs>(c, B, T);
    // A lean set serves every layer: dense and MoE buffers both, where the model has both.
    const bool moe = lean ? !moe_layers.empty() : layers[i]->moe;
    const bool dense = lean ? moe_layers.size() < layers.size() : !layers[i]->moe;
    if (moe) l.moe.resize(c, a.N);
    if (dense)
      for (Vec* v : {&l.g, &l.u, &l.h}) v->assign(NI, 0.0f);
  }
  a.f.assign(NC, 0.0f);
  a.xn.assign(NC, 0.0f);
  a.rstd.assign(n, 0.0f);
  a.logits.assign(n * size_t(V), 0.0f);
  a.lse.assign(n, 0.0f);
  if (has_mtp) {
    a.mtp_ids.assign(n, 0);
    a.mtp_targets.assign(n, kIgnoreIndex);
    for (Vec* v : {&a.me, &a.me_n, &a.mh_n, &a.m0, &a.m1}) v->assign(NC, 0.0f);
    a.rstd_e.assign(n, 0.0f);
    a.rstd_h.assign(n, 0.0f);
    a.cat.assign(2 * NC, 0.0f);
  }
  if (lean) return;
  for (Vec* v : {&a.dres, &a.dxn, &a.dxf}) v->assign(NC, 0.0f);
  a.dlog.assign(n * size_t(E), 0.0f);
  for (Vec* v : {&a.dg, &a.du, &a.dh}) v->assign(NI, 0.0f);
  if (has_mtp) {
    a.dme.assign(NC, 0.0f);
    a.dm.assign(NC, 0.0f);
    a.dcat.assign(2 * NC, 0.0f);
  }
}

// ---- one decoder layer ----

// y = mid + FFN(post_attention_layernorm(mid)), mid = x + MLA(input_layernorm(x)). Returns the
// layer's balance loss (0 for a dense layer); adds its routing to the expert counts if `count`.
double TrainModel::Impl::layer_forward(Layer& l, LayerActs& a, const float* x, float* y,
                                       bool count) {
  Activations& s = *A;
  const int64_t N = s.N;
  float* f = s.f.data();
  rmsnorm_forward(a.xn1.data(), a.rstd1.data(), x, l.input_layernorm.w.data(), N, C, eps);
  mla_forward(f, a.xn1.data(), l.attn, *a.mla, *s.rope, c);
  add(a.mid.data(), x, f, N * C);
  rmsnorm_forward(a.xn2.data(), a.rstd2.data(), a.mid.data(), l.post_attention_layernorm.w.data(),
                  N, C, eps);
  double balance = 0.0;
  if (l.moe) {
    moe_forward(f, a.moe, a.xn2.data(), l.moe_w, l.bias, c, N);
    if (loss.balance_alpha > 0.0f) balance = balance_loss_forward(a.moe, s.T, loss.balance_alpha);
    const size_t slot = size_t(l.moe_slot);
    routed[slot].assign(a.moe.ids.begin(), a.moe.ids.begin() + N * c.num_experts_per_tok);
    if (count)
      for (int64_t e = 0; e < E; e++) counts[slot][size_t(e)] += a.moe.counts[size_t(e)];
  } else {
    matmul_forward(a.g.data(), a.xn2.data(), l.gate_proj.w.data(), N, C, I);
    matmul_forward(a.u.data(), a.xn2.data(), l.up_proj.w.data(), N, C, I);
    swiglu_forward(a.h.data(), a.g.data(), a.u.data(), N * I);
    matmul_forward(f, a.h.data(), l.down_proj.w.data(), N, I, C);
  }
  add(y, a.mid.data(), f, N * C);
  return balance;
}

// In place on d [N][C]: given dL/dy, leaves dL/dx (both residual branches summed), and
// accumulates the layer's parameter gradients. `scale` is the balance loss's weight in the total.
void TrainModel::Impl::layer_backward(Layer& l, LayerActs& a, const float* x, float* d,
                                      float scale) {
  Activations& s = *A;
  const int64_t N = s.N;
  zero(s.dxn);
  if (l.moe) {
    const bool balance = loss.balance_alpha > 0.0f;
    if (balance) {
      zero(s.dlog);
      balance_loss_backward(s.dlog.data(), a.moe, s.T, loss.balance_alpha, scale);
    }
    moe_backward(s.dxn.data(), l.moe_g, a.moe, d, a.xn2.data(), l.moe_w,
                 balance ? s.dlog.data() : nullptr, c);
  } else {
    zero(s.dg);
    zero(s.du);
    zero(s.dh);
    matmul_backward(s.dh.data(), l.down_proj.g.data(), d, a.h.data(), l.down_proj.w.data(), N, I,
                    C);
    swiglu_backward(s.dg.data(), s.du.data(), s.dh.data(), a.g.data(), a.u.data(), N * I);
    matmul_backward(s.dxn.data(), l.gate_proj.g.data(), s.dg.data(), a.xn2.data(),
                    l.gate_proj.w.data(), N, C, I);
    matmul_backward(s.dxn.data(), l.up_proj.g.data(), s.du.data(), a.xn2.data(), l.up_proj.w.data(),
                    N, C, I);
  }
  // d already holds the residual path's share of dL/dmid; the norm adds the FFN's.
  rmsnorm_backward(d, l.post_attention_layernorm.g.data(), s.dxn.data(), a.mid.data(),
                   l.post_attention_layernorm.w.data(), a.rstd2.data(), N, C);
  zero(s.dxn);
  mla_backward(s.dxn.data(), l.attn_grad, d, a.xn1.data(), l.attn, *a.mla, *s.rope, c);
  rmsnorm_backward(d, l.input_layernorm.g.data(), s.dxn.data(), x, l.input_layernorm.w.data(),
                   a.rstd1.data(), N, C);
}

// ---- the output head ----

// Mean cross-entropy of lm_head(norm_w(h)) against `targets` (with `weights`: their weighted sum
// instead). With dh non-null, also the backward at once (the logits buffer then holds their
// gradient): dh += dL/dh for dL/dloss = dloss, and the head's and norm's gradients accumulate.
double TrainModel::Impl::head(const float* h, Tensor& norm_w, const int32_t* targets, float dloss,
                              float* dh_out, const float* weights) {
  Activations& s = *A;
  const int64_t N = s.N;
  rmsnorm_forward(s.xn.data(), s.rstd.data(), h, norm_w.w.data(), N, C, eps);
  matmul_forward(s.logits.data(), s.xn.data(), lm_head.w.data(), N, C, V);
  const float mean = cross_entropy_forward(s.lse.data(), s.logits.data(), targets, N, V);
  const double l =
      weights ? cross_entropy_weighted_loss(s.lse.data(), s.logits.data(), targets, weights, N, V)
              : double(mean);
  if (dh_out) {
    if (weights)
      cross_entropy_weighted_backward(s.logits.data(), s.logits.data(), targets, weights, N, V,
                                      dloss);
    else
      cross_entropy_backward(s.logits.data(), s.logits.data(), s.lse.data(), targets, N, V, dloss);
    zero(s.dxf);
    matmul_backward(s.dxf.data(), lm_head.g.data(), s.logits.data(), s.xn.data(), lm_head.w.data(),
                    N, C, V);
    rmsnorm_backward(dh_out, norm_w.g.data(), s.dxf.data(), h, norm_w.w.data(), s.rstd.data(), N,
                     C);
  }
  return l;
}

// ---- the main model and the MTP module ----

// h_0 = embed_tokens[inputs], then every main layer up to h_L. Returns the balance losses.
double TrainModel::Impl::trunk_forward(const int32_t* inputs, bool count) {
  Activations& s = *A;
  embedding_forward(s.h(0), inputs, embed_tokens.w.data(), s.N, C, V);
  double balance = 0.0;
  for (int64_t i = 0; i < L; i++)
    balance += layer_forward(*layers[size_t(i)], s.at(i), s.h(i), s.h(i + 1), count);
  return balance;
}

// The depth-1 MTP module on h_L (see the header): sets mtp_loss, returns the block's balance
// loss; with `backward`, adds dL/dh_L to dres and accumulates its parameters' gradients.
double TrainModel::Impl::mtp(const int32_t* inputs, const int32_t* targets, bool backward,
                             float scale, float& mtp_loss) {
  Activations& s = *A;
  const int64_t B = s.B, T = s.T, N = s.N;
  // Position i embeds t_{i+1} = inputs[i+1] and predicts t_{i+2} = targets[i+1]; the last
  // position of each sequence embeds inputs[T-1] and predicts nothing.
  for (int64_t b = 0; b < B; b++)
    for (int64_t i = 0; i < T; i++) {
      const int64_t n = b * T + i, next = i + 1 < T ? n + 1 : n;
      s.mtp_ids[size_t(n)] = inputs[next];
      s.mtp_targets[size_t(n)] = i + 1 < T ? targets[n + 1] : kIgnoreIndex;
    }
  embedding_forward(s.me.data(), s.mtp_ids.data(), embed_tokens.w.data(), N, C, V);
  rmsnorm_forward(s.me_n.data(), s.rstd_e.data(), s.me.data(), enorm.w.data(), N, C, eps);
  const float* hL = s.h(L);
  rmsnorm_forward(s.mh_n.data(), s.rstd_h.data(), hL, hnorm.w.data(), N, C, eps);
  // cat [N][2C] = [enorm(e) ; hnorm(h)], the embedding first.
#pragma omp parallel for schedule(static) num_threads(threads_for(2 * N * C))
  for (int64_t n = 0; n < N; n++) {
    std::copy_n(s.me_n.data() + n * C, C, s.cat.data() + n * 2 * C);
    std::copy_n(s.mh_n.data() + n * C, C, s.cat.data() + n * 2 * C + C);
  }
  matmul_forward(s.m0.data(), s.cat.data(), eh_proj.w.data(), N, 2 * C, C);
  Layer& block = *layers[size_t(L)];
  LayerActs& a = s.at(L);
  const double balance = layer_forward(block, a, s.m0.data(), s.m1.data(), backward);
  if (backward) zero(s.dm);
  mtp_loss = float(head(s.m1.data(), shared_head_norm, s.mtp_targets.data(),
                        scale * loss.mtp_lambda, backward ? s.dm.data() : nullptr));
  if (!backward) return balance;

  layer_backward(block, a, s.m0.data(), s.dm.data(), scale);  // dm: dL/dm0
  zero(s.dcat);
  matmul_backward(s.dcat.data(), eh_proj.g.data(), s.dm.data(), s.cat.data(), eh_proj.w.data(), N,
                  2 * C, C);
  // Split dcat back into its halves (me_n / mh_n are free again: reuse them for the gradients).
#pragma omp parallel for schedule(static) num_threads(threads_for(2 * N * C))
  for (int64_t n = 0; n < N; n++) {
    std::copy_n(s.dcat.data() + n * 2 * C, C, s.me_n.data() + n * C);
    std::copy_n(s.dcat.data() + n * 2 * C + C, C, s.mh_n.data() + n * C);
  }
  rmsnorm_backward(s.dres.data(), hnorm.g.data(), s.mh_n.data(), hL, hnorm.w.data(),
                   s.rstd_h.data(), N, C);
  zero(s.dme);
  rmsnorm_backward(s.dme.data(), enorm.g.data(), s.me_n.data(), s.me.data(), enorm.w.data(),
                   s.rstd_e.data(), N, C);
  embedding_backward(embed_tokens.g.data(), s.dme.data(), s.mtp_ids.data(), N, C, V);
  return balance;
}

StepLosses TrainModel::Impl::run(const int32_t* inputs, const int32_t* targets, int64_t B,
                                 int64_t T, bool backward, float scale, const float* weights) {
  if (!targets) throw std::invalid_argument("no targets (null pointer)");
  check_batch(inputs, targets, B, T);
  use(backward ? train_acts : eval_acts, !backward, B, T);
  Activations& s = *A;
  double balance = trunk_forward(inputs, backward);

  // The main head first, so that its logits buffer is free for the MTP head.
  if (backward) zero(s.dres);
  const double main =
      head(s.h(L), norm, targets, scale, backward ? s.dres.data() : nullptr, weights);
  float mtp_loss = 0.0f;
  if (run_mtp) balance += mtp(inputs, targets, backward, scale, mtp_loss);

  if (backward) {
    for (int64_t i = L - 1; i >= 0; i--)
      layer_backward(*layers[size_t(i)], s.at(i), s.h(i), s.dres.data(), scale);
    embedding_backward(embed_tokens.g.data(), s.dres.data(), inputs, s.N, C, V);
  }

  StepLosses out;
  out.main = main;
  out.mtp = mtp_loss;
  out.balance = balance;
  out.loss = out.main + double(loss.mtp_lambda) * out.mtp + out.balance;
  out.tokens = std::count_if(targets, targets + s.N, [](int32_t t) { return t != kIgnoreIndex; });
  return out;
}

// ---- TrainModel ----

namespace {
const ModelConfig& trainable(const ModelConfig& c) {
  if (!c.is_mla())
    throw std::invalid_argument(c.arch_name() +
                                " runs (run, chat, serve) but does not train: whale trains the "
                                "DeepSeek-V2/V3 architecture (MLA, DeepSeekMoE, MTP)");
  return c;
}
}  // namespace

TrainModel::TrainModel(const ModelConfig& c, const LossConfig& loss)
    : impl_(std::make_unique<Impl>(trainable(c), loss)) {}
TrainModel::~TrainModel() = default;

const ModelConfig& TrainModel::config() const {
  return impl_->c;
}
const LossConfig& TrainModel::loss_config() const {
  return impl_->loss;
}
const std::vector<ParamTensor>& TrainModel::params() const {
  return impl_->params;
}
const std::vector<BufferTensor>& TrainModel::buffers() const {
  return impl_->buffers;
}

int64_t TrainModel::num_params() const {
  int64_t n = 0;
  for (const ParamTensor& p : impl_->params) n += p.numel;
  return n;
}

int64_t TrainModel::num_active_params() const {
  const Impl& m = *impl_;
  int64_t n = m.V * m.C + m.C + m.V * m.C;  // embedding, norm, head
  for (int64_t i = 0; i < m.L; i++) n += m.active_params(*m.layers[size_t(i)]);
  if (m.run_mtp)  // enorm, hnorm, eh_proj, the block, shared_head.norm, and the head again
    n += 2 * m.C + 2 * m.C * m.C + m.active_params(*m.layers[size_t(m.L)]) + m.C + m.V * m.C;
  return n;
}

void TrainModel::init(uint64_t seed, float std) {
  if (!(std >= 0.0f) || !std::isfinite(std))
    throw std::invalid_argument("init: std must be a finite number >= 0, got " +
                                std::to_string(std));
  for (const ParamTensor& p : impl_->params) {
    if (p.shape.size() > 1)
      fill_normal(p.data, p.numel, seed, p.name, std);
    else
      std::fill_n(p.data, p.numel, 1.0f);  // RMSNorm weights
  }
  for (const BufferTensor& b : impl_->buffers) std::fill_n(b.data, b.numel, 0.0f);
  zero_grad();
  reset_expert_counts();
}

void TrainModel::zero_grad() {
  for (const ParamTensor& p : impl_->params) std::fill_n(p.grad, p.numel, 0.0f);
}

StepLosses TrainModel::forward_backward(const int32_t* inputs, const int32_t* targets, int64_t B,
                                        int64_t T, float grad_scale) {
  return impl_->run(inputs, targets, B, T, true, grad_scale);
}

StepLosses TrainModel::forward_backward(const int32_t* inputs, const int32_t* targets, int64_t B,
                                        int64_t T, float grad_scale, const float* weights) {
  if (!weights) throw std::invalid_argument("no loss weights (null pointer)");
  return impl_->run(inputs, targets, B, T, true, grad_scale, weights);
}

StepLosses TrainModel::forward(const int32_t* inputs, const int32_t* targets, int64_t B,
                               int64_t T) {
  return impl_->run(inputs, targets, B, T, false, 0.0f);
}

void TrainModel::token_logprobs(const int32_t* inputs, const int32_t* targets, int64_t B, int64_t T,
                                float* out) {
  Impl& m = *impl_;
  if (!targets) throw std::invalid_argument("no targets (null pointer)");
  m.check_batch(inputs, targets, B, T);
  m.use(m.eval_acts, true, B, T);
  m.trunk_forward(inputs, false);
  Activations& s = *m.A;
  m.head(s.h(m.L), m.norm, targets, 0.0f, nullptr);
  // logits[t] - lse, as the cross-entropy's lse - logits[t] negated (exact in floating point).
  for (int64_t n = 0; n < s.N; n++)
    out[n] = targets[n] == kIgnoreIndex ? 0.0f
                                        : s.logits[size_t(n * m.V + targets[n])] - s.lse[size_t(n)];
}

void TrainModel::forward_logits(const int32_t* inputs, int64_t B, int64_t T, float* out) {
  Impl& m = *impl_;
  m.check_batch(inputs, nullptr, B, T);
  m.use(m.eval_acts, true, B, T);
  m.trunk_forward(inputs, false);
  Activations& s = *m.A;
  rmsnorm_forward(s.xn.data(), s.rstd.data(), s.h(m.L), m.norm.w.data(), s.N, m.C, m.eps);
  matmul_forward(out, s.xn.data(), m.lm_head.w.data(), s.N, m.C, m.V);
}

std::span<const int32_t> TrainModel::routed_experts(size_t moe_layer) const {
  const Impl& m = *impl_;
  if (moe_layer >= m.routed.size())
    throw std::out_of_range("routed_experts: MoE layer " + std::to_string(moe_layer) + " of " +
                            std::to_string(m.routed.size()));
  return m.routed[moe_layer];
}

const std::vector<std::vector<int64_t>>& TrainModel::expert_counts() const {
  return impl_->counts;
}
std::vector<std::vector<int64_t>>& TrainModel::expert_counts() {
  return impl_->counts;
}
void TrainModel::reset_expert_counts() {
  for (auto& v : impl_->counts) std::fill(v.begin(), v.end(), 0);
}

void TrainModel::update_expert_biases(float gamma) {
  Impl& m = *impl_;
  for (Layer* l : m.moe_layers) update_expert_bias(l->bias, m.counts[size_t(l->moe_slot)], gamma);
}

}  // namespace whale::train
