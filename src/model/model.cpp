#include "model/model.h"

#include <algorithm>
#include <stdexcept>

#include "formats/gguf_model.h"
#include "model/weights.h"

namespace whale {

std::unique_ptr<Model> Model::load(const std::string& dir, const Options& opt) {
  std::unique_ptr<Model> m(new Model());
  if (is_gguf_path(dir)) {  // a llama.cpp file, under Hugging Face names (formats/gguf_model.h)
    GgufModel g = load_gguf_model(dir, opt.load);
    m->c_ = g.config;
    m->ck_ = std::move(g.checkpoint);
  } else {
    m->c_ = ModelConfig::load(dir);
    m->ck_ = std::make_unique<Checkpoint>(dir, opt.load, opt.progress);
  }
  const ModelConfig& c = m->c_;
  const Checkpoint& ck = *m->ck_;
  if (opt.prefault && ck.load_mode() == LoadMode::Mmap) ck.prefault(opt.progress);

  m->rope_ = Rope(c);
  if (ck.has("model.rope_freqs")) {  // a llama GGUF's Llama 3 scaling (formats/gguf_model.cpp)
    const std::vector<float> f = load_vector(ck, "model.rope_freqs", c.rope_dim() / 2);
    for (float v : f)
      if (!(v > 0.0f))
        throw std::runtime_error(dir + ": rope_freqs.weight has a non-positive entry");
    m->rope_.divide_frequencies(f.data());
  }
  m->embed_tokens_ = load_linear(ck, "model.embed_tokens", c.vocab_size, c.hidden_size);
  if (m->embed_tokens_.dtype == DType::F8_E4M3)
    throw std::runtime_error(dir + ": model.embed_tokens.weight must not be F8_E4M3");
  m->norm_ = {load_vector(ck, "model.norm.weight", c.hidden_size), float(c.rms_norm_eps)};
  if (c.tie_word_embeddings && !ck.has("lm_head.weight"))
    m->lm_head_ = m->embed_tokens_;
  else
    m->lm_head_ = load_linear(ck, "lm_head", c.vocab_size, c.hidden_size);

  for (int64_t i = 0; i < c.num_hidden_layers; i++)
    m->layers_.push_back(m->load_layer("model.layers." + std::to_string(i), i, i));

  // Multi-token-prediction modules (model.layers.{num_hidden_layers + k}.*) are recognised and kept
  // in the mapping for speculative decoding; the main forward does not use them.
  for (const std::string& name : ck.names()) {
    const std::string pre = "model.layers.";
    if (name.rfind(pre, 0) != 0) continue;
    const int64_t idx = std::atoll(name.c_str() + pre.size());
    if (idx >= c.num_hidden_layers && idx < c.num_hidden_layers + c.num_nextn_predict_layers)
      m->mtp_tensors_.push_back(name);
  }
  // The first MTP module, when all of its tensors are there (enough for speculative decoding).
  const std::string mp = "model.layers." + std::to_string(c.num_hidden_layers);
  if (c.num_nextn_predict_layers > 0 && ck.has(mp + ".eh_proj.weight")) {
    auto mtp = std::make_unique<MtpModule>();
    const int64_t D = c.hidden_size;
    mtp->embed_tokens = ck.has(mp + ".embed_tokens.weight")
                            ? load_linear(ck, mp + ".embed_tokens", c.vocab_size, D)
                            : m->embed_tokens_;
    mtp->head = ck.has(mp + ".shared_head.head.weight")
                    ? load_linear(ck, mp + ".shared_head.head", c.vocab_size, D)
                    : m->lm_head_;
    mtp->eh_proj = load_linear(ck, mp + ".eh_proj", D, 2 * D);
    const float eps = float(c.rms_norm_eps);
    mtp->enorm = {load_vector(ck, mp + ".enorm.weight", D), eps};
    mtp->hnorm = {load_vector(ck, mp + ".hnorm.weight", D), eps};
    mtp->shared_head_norm = {load_vector(ck, mp + ".shared_head.norm.weight", D), eps};
    // Its attention uses layer 0 of its own one-layer cache.
    m->mtp_config_ = c;
    m->mtp_config_.num_hidden_layers = 1;
    mtp->block = m->load_layer(mp, c.num_hidden_layers, 0);
    m->mtp_ = std::move(mtp);
  }
  return m;
}

DecoderLayer Model::load_layer(const std::string& p, int64_t layer, int64_t cache_layer) const {
  const ModelConfig& c = c_;
  const Checkpoint& ck = *ck_;
  DecoderLayer L;
  L.input_layernorm = {load_vector(ck, p + ".input_layernorm.weight", c.hidden_size),
                       float(c.rms_norm_eps)};
  L.post_attention_layernorm = {
      load_vector(ck, p + ".post_attention_layernorm.weight", c.hidden_size),
      float(c.rms_norm_eps)};
  if (c.is_mla())
    L.self_attn = std::make_unique<MLA>(c, ck, p + ".self_attn", cache_layer, &rope_);
  else
    L.gqa = std::make_unique<GQA>(c, ck, p + ".self_attn", cache_layer, &rope_);
  if (c.is_moe_layer(layer))
    L.moe = std::make_unique<MoE>(c, ck, p + ".mlp");
  else
    L.mlp.emplace(ck, p + ".mlp", c.hidden_size, c.intermediate_size);
  return L;
}

KVCache Model::new_cache(int64_t max_len) const {
  return KVCache(c_, max_len > 0 ? max_len : c_.max_position_embeddings, kv_type_);
}

void Model::set_kv_type(KvType t) {
  (void)KVCache(c_, 1, t);  // throws when the model cannot use it
  kv_type_ = t;
}

KVCache Model::new_mtp_cache(int64_t max_len) const {
  if (!mtp_) throw std::logic_error("new_mtp_cache: the model has no MTP module");
  return KVCache(mtp_config_, max_len > 0 ? max_len : c_.max_position_embeddings, kv_type_);
}

// h += MLA(input_layernorm(h)); h += FFN(post_attention_layernorm(h)).
void Model::layer_forward(const DecoderLayer& L, std::vector<float>& h, int64_t N,
                          std::span<const AttnSegment> segs, AttnMode mode, std::vector<float>& xn,
                          std::vector<float>& f, std::vector<float>& scratch) {
  const int64_t total = int64_t(h.size());
  L.input_layernorm.forward(h.data(), N, xn.data());
  if (L.gqa)
    L.gqa->forward(xn.data(), N, segs, f.data());
  else
    L.self_attn->forward(xn.data(), N, segs, f.data(), mode);
  for (int64_t i = 0; i < total; i++) h[size_t(i)] += f[size_t(i)];
  L.post_attention_layernorm.forward(h.data(), N, xn.data());
  if (L.moe)
    L.moe->forward(xn.data(), N, f.data());
  else
    L.mlp->forward(xn.data(), N, f.data(), scratch);
  for (int64_t i = 0; i < total; i++) h[size_t(i)] += f[size_t(i)];
}

std::vector<float> Model::mtp_forward(KVCache& cache, const float* hidden,
                                      std::span<const int32_t> next_tokens) const {
  if (!mtp_) throw std::logic_error("mtp_forward: the model has no MTP module");
  const int64_t D = c_.hidden_size, V = c_.vocab_size, N = int64_t(next_tokens.size());
  if (N == 0) throw std::invalid_argument("mtp_forward: no positions");
  for (int32_t t : next_tokens)
    if (t < 0 || t >= V)
      throw std::out_of_range("token id " + std::to_string(t) + " outside the vocabulary (" +
                              std::to_string(V) + ")");
  cache.reserve(cache.len() + N);
  // cat = [enorm(embed(t_{i+1})) ; hnorm(h_i)] per row, then eh_proj.
  std::vector<float> cat(static_cast<size_t>(N * 2 * D)), e(static_cast<size_t>(D));
  for (int64_t j = 0; j < N; j++) {
    weight_row(mtp_->embed_tokens, next_tokens[size_t(j)], e.data());
    mtp_->enorm.forward(e.data(), 1, cat.data() + j * 2 * D);
    mtp_->hnorm.forward(hidden + j * D, 1, cat.data() + j * 2 * D + D);
  }
  std::vector<float> h(size_t(N * D)), xn(h.size()), f(h.size()), scratch;
  linear(cat.data(), N, mtp_->eh_proj, h.data());
  const AttnSegment seg{&cache, 0, N};
  layer_forward(mtp_->block, h, N, std::span<const AttnSegment>(&seg, 1), AttnMode::Auto, xn, f,
                scratch);
  cache.set_len(cache.len() + N);
  std::vector<float> last(static_cast<size_t>(D)), logits(static_cast<size_t>(V));
  mtp_->shared_head_norm.forward(h.data() + (N - 1) * D, 1, last.data());
  linear(last.data(), 1, mtp_->head, logits.data());
  return logits;
}

std::vector<float> Model::forward(KVCache& cache, std::span<const int32_t> tokens, bool all_logits,
                                  AttnMode mode) const {
  SeqInput in{&cache, tokens, all_logits};
  return forward(std::span<const SeqInput>(&in, 1), mode);
}

std::vector<float> Model::forward(std::span<const SeqInput> batch, AttnMode mode) const {
  const int64_t D = c_.hidden_size, V = c_.vocab_size;

  // Lay the batch out as rows of one matrix; one attention segment per sequence.
  std::vector<AttnSegment> segs;
  int64_t N = 0;
  for (const SeqInput& s : batch) {
    if (s.tokens.empty()) throw std::invalid_argument("forward: a sequence with no new tokens");
    for (int32_t t : s.tokens)
      if (t < 0 || t >= V)
        throw std::out_of_range("token id " + std::to_string(t) + " outside the vocabulary (" +
                                std::to_string(V) + ")");
    s.cache->reserve(s.cache->len() + int64_t(s.tokens.size()));
    segs.push_back({s.cache, N, int64_t(s.tokens.size())});
    N += int64_t(s.tokens.size());
  }

  std::vector<float> h(size_t(N * D)), xn(size_t(N * D)), f(size_t(N * D));
  int64_t row = 0;
  for (const SeqInput& s : batch)
    for (int32_t t : s.tokens) weight_row(embed_tokens_, t, h.data() + (row++) * D);

  std::vector<float> scratch;
  for (const DecoderLayer& L : layers_) layer_forward(L, h, N, segs, mode, xn, f, scratch);
  for (const AttnSegment& s : segs) s.cache->set_len(s.cache->len() + s.n);
  for (size_t b = 0; b < batch.size(); b++)
    if (batch[b].hidden)
      batch[b].hidden->assign(h.begin() + segs[b].start * D,
                              h.begin() + (segs[b].start + segs[b].n) * D);

  // Final norm and head, only on the rows whose logits are wanted.
  std::vector<int64_t> rows;
  for (size_t b = 0; b < batch.size(); b++) {
    const AttnSegment& s = segs[b];
    if (batch[b].all_logits)
      for (int64_t i = 0; i < s.n; i++) rows.push_back(s.start + i);
    else
      rows.push_back(s.start + s.n - 1);
  }
  std::vector<float> sel(rows.size() * size_t(D));
  for (size_t r = 0; r < rows.size(); r++)
    norm_.forward(h.data() + rows[r] * D, 1, sel.data() + r * size_t(D));
  std::vector<float> logits(rows.size() * size_t(V));
  linear(sel.data(), int64_t(rows.size()), lm_head_, logits.data());
  return logits;
}

ModelStats Model::stats() const {
  ModelStats s;
  const ModelConfig& c = c_;
  auto numel = [](const WeightRef& w) { return w.rows * w.cols; };
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  const int64_t qd = H * c.head_dim, kvd = c.num_key_value_heads * c.head_dim;
  const int64_t attn =
      !c.is_mla()
          ? 2 * qd * D + 2 * kvd * D + (c.qkv_bias ? qd + 2 * kvd : 0) + (c.o_bias ? D : 0)
          : (c.q_lora_rank > 0
                 ? c.q_lora_rank * D + c.q_lora_rank + H * c.qk_head_dim() * c.q_lora_rank
                 : H * c.qk_head_dim() * D) +
                (c.kv_lora_rank + c.qk_rope_head_dim) * D + c.kv_lora_rank +
                H * (c.qk_nope_head_dim + c.v_head_dim) * c.kv_lora_rank + D * H * c.v_head_dim;
  const int64_t expert = 3 * D * c.moe_intermediate_size;
  const int64_t dense = 3 * D * c.intermediate_size;
  const int64_t embed = numel(embed_tokens_);
  const bool tied = lm_head_.data == embed_tokens_.data;
  const int64_t head = tied ? 0 : numel(lm_head_);
  s.params = embed + head + D;
  s.active_params = D + numel(lm_head_);  // the embedding row is a lookup, not a matmul
  for (int64_t i = 0; i < c.num_hidden_layers; i++) {
    int64_t base = attn + 2 * D, all = base, act = base;
    if (c.is_moe_layer(i)) {
      const int64_t router = c.n_routed_experts * D;
      const int64_t shared = c.n_shared_experts * expert;
      all += router + shared + c.n_routed_experts * expert;
      act += router + shared + c.num_experts_per_tok * expert;
    } else {
      all += dense;
      act += dense;
    }
    s.params += all;
    s.active_params += act;
  }
  for (const std::string& n : mtp_tensors_) {
    const TensorView* t = ck_->find(n);
    if (t && n.find("weight_scale_inv") == std::string::npos) s.mtp_params += t->numel();
  }
  size_t bytes = weight_bytes(lm_head_);
  for (const DecoderLayer& L : layers_) {
    bytes += L.gqa ? L.gqa->bytes() : L.self_attn->bytes();
    bytes += L.moe ? L.moe->active_bytes() : L.mlp->bytes();
  }
  s.weight_bytes = bytes;
  return s;
}

}  // namespace whale
