#include "formats/gguf_model.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <map>
#include <stdexcept>

#include "formats/gguf.h"
#include "kernels/repack.h"
#include "tensor/quant.h"

namespace whale {

namespace {

const std::string kArch = "deepseek2";

std::runtime_error error(const std::string& path, const std::string& what) {
  return std::runtime_error(path + ": " + what);
}

// Typed optional metadata of the file's architecture ("deepseek2." + key, "qwen2." + key, ...).
struct Meta {
  const GgufFile& f;
  std::string arch = kArch;
  std::string key(const std::string& k) const { return arch + "." + k; }
  bool has(const std::string& k) const { return f.has(key(k)); }
  int64_t i(const std::string& k) const { return f.get_int(key(k)); }
  int64_t i(const std::string& k, int64_t def) const { return has(k) ? i(k) : def; }
  double d(const std::string& k) const { return f.get_float(key(k)); }
  double d(const std::string& k, double def) const { return has(k) ? d(k) : def; }
};

// The vocabulary size and head tying, common to every architecture.
void vocab_from(const GgufFile& f, const Meta& m, ModelConfig& c) {
  const GgufTensor* embd = f.find_tensor("token_embd.weight");
  if (!embd) throw error(f.path(), "missing tensor 'token_embd.weight'");
  if (embd->ne.size() != 2)
    throw error(f.path(), "tensor 'token_embd.weight' has shape " + embd->shape_str() +
                              ", expected [vocab, embedding_length]");
  c.vocab_size = m.i("vocab_size", embd->ne[1]);
  c.tie_word_embeddings = f.find_tensor("output.weight") == nullptr;
}

// llama.cpp's `qwen2` and `llama` architectures (the R1-Distill models). Their RoPE: qwen2 files
// keep Hugging Face's q/k order (llama.cpp's NEOX rope, half split); the converter permutes llama's
// q_proj / k_proj rows so that each rotary pair is adjacent (its NORM rope). Llama 3's frequency
// scaling is stored as the tensor rope_freqs.weight (divisors), read by Model::load.
ModelConfig dense_config_from(const GgufFile& f, const std::string& arch) {
  const Meta m{f, arch};
  ModelConfig c;
  c.arch = arch == "qwen2" ? Arch::Qwen2 : Arch::Llama;
  c.hidden_size = m.i("embedding_length");
  c.num_hidden_layers = m.i("block_count");
  c.num_attention_heads = m.i("attention.head_count");
  c.num_key_value_heads = m.i("attention.head_count_kv", c.num_attention_heads);
  c.max_position_embeddings = m.i("context_length");
  c.intermediate_size = m.i("feed_forward_length");
  c.rms_norm_eps = m.d("attention.layer_norm_rms_epsilon");
  c.rope_theta = m.d("rope.freq_base", 10000.0);
  if (c.num_attention_heads <= 0)
    throw error(f.path(), "metadata '" + m.key("attention.head_count") + "' must be > 0");
  c.head_dim = m.i("attention.key_length",
                   m.i("rope.dimension_count", c.hidden_size / c.num_attention_heads));
  if (m.i("attention.value_length", c.head_dim) != c.head_dim)
    throw error(f.path(), "metadata '" + m.key("attention.value_length") +
                              "' differs from the key length (whale needs equal head sizes)");
  if (m.i("rope.dimension_count", c.head_dim) != c.head_dim)
    throw error(f.path(), "metadata '" + m.key("rope.dimension_count") +
                              "' must equal the head size (partial rotary is not supported)");
  c.rope_half_split = c.arch == Arch::Qwen2;
  c.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  c.o_bias = f.find_tensor("blk.0.attn_output.bias") != nullptr;
  if (m.has("rope.scaling.type")) {
    const std::string type = f.get_string(m.key("rope.scaling.type"));
    if (type != "none" && !(type == "linear" && m.d("rope.scaling.factor", 1.0) == 1.0))
      throw error(f.path(), "metadata '" + m.key("rope.scaling.type") + "' = '" + type +
                                "' is not supported (none; Llama 3's scaling comes as "
                                "rope_freqs.weight)");
  }
  vocab_from(f, m, c);
  c.validate(f.path());
  return c;
}

ModelConfig config_from(const GgufFile& f) {
  const std::string& path = f.path();
  const std::string arch = f.get_string("general.architecture");
  if (arch == "qwen2" || arch == "llama") return dense_config_from(f, arch);
  if (arch != kArch)
    throw error(path, "architecture '" + arch + "' is not supported (whale reads '" + kArch +
                          "': DeepSeek-V2/V3/R1, and 'qwen2' / 'llama': the R1-Distill models)");
  const Meta m{f};
  ModelConfig c;
  c.hidden_size = m.i("embedding_length");
  c.num_hidden_layers = m.i("block_count");
  c.num_attention_heads = m.i("attention.head_count");
  c.max_position_embeddings = m.i("context_length");
  c.intermediate_size = m.i("feed_forward_length");
  c.rms_norm_eps = m.d("attention.layer_norm_rms_epsilon");
  c.rope_theta = m.d("rope.freq_base", 10000.0);

  // MLA. Files with split attn_k_b / attn_v_b store the MQA view in key_length / value_length
  // and the per-head sizes in key_length_mla / value_length_mla; older files only the latter's
  // values in key_length / value_length.
  c.q_lora_rank = m.i("attention.q_lora_rank", 0);
  c.kv_lora_rank = m.i("attention.kv_lora_rank");
  c.qk_rope_head_dim = m.i("rope.dimension_count");
  const int64_t key_len = m.has("attention.key_length_mla") ? m.i("attention.key_length_mla")
                                                            : m.i("attention.key_length");
  c.v_head_dim = m.has("attention.value_length_mla") ? m.i("attention.value_length_mla")
                                                     : m.i("attention.value_length");
  c.qk_nope_head_dim = key_len - c.qk_rope_head_dim;
  if (c.qk_nope_head_dim <= 0)
    throw error(path, "metadata '" + m.key("attention.key_length") + "' (" +
                          std::to_string(key_len) + ") must exceed rope.dimension_count (" +
                          std::to_string(c.qk_rope_head_dim) + ")");

  // DeepSeekMoE.
  c.n_routed_experts = m.i("expert_count", 0);
  c.n_shared_experts = m.i("expert_shared_count", 0);
  c.num_experts_per_tok = m.i("expert_used_count", 0);
  c.moe_intermediate_size = m.i("expert_feed_forward_length", 0);
  c.first_k_dense_replace = m.i("leading_dense_block_count", 0);
  c.norm_topk_prob = m.has("expert_weights_norm") && f.get_bool(m.key("expert_weights_norm"));
  c.routed_scaling_factor = m.d("expert_weights_scale", 1.0);
  const int64_t gating = m.i("expert_gating_func", 1);
  if (gating != 1 && gating != 2)
    throw error(path, "metadata '" + m.key("expert_gating_func") + "' = " + std::to_string(gating) +
                          " (whale knows 1 = softmax, 2 = sigmoid)");
  c.scoring_func = gating == 2 ? ScoringFunc::Sigmoid : ScoringFunc::Softmax;
  c.arch = gating == 2 ? Arch::DeepseekV3 : Arch::DeepseekV2;
  c.n_group = m.i("expert_group_count", 1);
  c.topk_group = m.i("expert_group_used_count", c.n_group);
  if (f.find_tensor("blk." + std::to_string(c.first_k_dense_replace) + ".exp_probs_b.bias") ||
      f.find_tensor("blk." + std::to_string(c.first_k_dense_replace) + ".exp_probs_b"))
    c.topk_method = TopkMethod::NoauxTc;
  else if (c.n_group > 1)
    c.topk_method = TopkMethod::GroupLimitedGreedy;
  else
    c.topk_method = TopkMethod::Greedy;
  if (c.n_group < 1) c.n_group = 1;
  if (c.topk_group < 1) c.topk_group = 1;

  // YaRN.
  if (m.has("rope.scaling.type")) {
    const std::string type = f.get_string(m.key("rope.scaling.type"));
    if (type == "yarn") {
      c.yarn.enabled = true;
      c.yarn.factor = m.d("rope.scaling.factor");
      c.yarn.original_max_position_embeddings = m.i("rope.scaling.original_context_length");
      c.yarn.beta_fast = m.d("rope.scaling.yarn_beta_fast", 32.0);
      c.yarn.beta_slow = m.d("rope.scaling.yarn_beta_slow", 1.0);
      c.yarn.mscale_all_dim = m.d("rope.scaling.yarn_log_multiplier", 0.0) / 0.1;
      c.yarn.mscale = c.yarn.mscale_all_dim;
    } else if (type != "none") {
      throw error(path, "metadata '" + m.key("rope.scaling.type") + "' = '" + type +
                            "' is not supported (yarn or none)");
    }
  }
  c.num_nextn_predict_layers = 0;  // llama.cpp's converter drops the MTP modules

  vocab_from(f, m, c);
  c.validate(path);
  return c;
}

// The GGUF tensor `g` as a row-major TensorView named `name` (its shape is `g`'s, reversed).
TensorView view_of(const GgufTensor& g, const std::string& name, const std::string& path) {
  TensorView t;
  t.name = name;
  if (!ggml_to_dtype(g.type, &t.dtype))
    throw error(path, "tensor '" + g.name + "' has type " +
                          std::string(ggml_type_info(uint32_t(g.type))->name) +
                          ", which whale cannot compute with");
  t.shape = g.shape();
  t.data = g.data;
  t.nbytes = g.nbytes;
  t.file = path;
  return t;
}

// Expert e of a stacked [E, rows, cols] tensor.
TensorView expert_view(const GgufTensor& g, int64_t e, const std::string& name,
                       const std::string& path) {
  TensorView t = view_of(g, name, path);
  if (t.shape.size() != 3)
    throw error(path, "tensor '" + g.name + "' has shape " + g.shape_str() +
                          ", expected [experts, rows, cols]");
  const size_t bytes = size_t(t.shape[1]) * dtype_row_bytes(t.dtype, t.shape[2]);
  t.shape = {t.shape[1], t.shape[2]};
  t.data = g.data + size_t(e) * bytes;
  t.nbytes = bytes;
  return t;
}

struct Owned {
  std::shared_ptr<GgufFile> file;
  std::vector<std::vector<float>> buffers;  // kv_b_proj rebuilt from attn_k_b / attn_v_b
};

// kv_b_proj [H * (nope + v), kv_lora] in f32 from k_b [H, kv_lora, nope] and v_b [H, v, kv_lora].
std::vector<float> rebuild_kv_b(const GgufTensor& kb, const GgufTensor& vb, const ModelConfig& c,
                                const std::string& path) {
  const int64_t H = c.num_attention_heads, L = c.kv_lora_rank, Dn = c.qk_nope_head_dim,
                Dv = c.v_head_dim;
  auto check = [&](const GgufTensor& t, std::vector<int64_t> want) {
    if (t.shape() != want) {
      TensorView w;
      w.shape = want;
      throw error(path, "tensor '" + t.name + "' has shape " + t.shape_str() + ", config expects " +
                            w.shape_str());
    }
    DType d;
    if (!ggml_to_dtype(t.type, &d))
      throw error(path, "tensor '" + t.name + "' has type " +
                            std::string(ggml_type_info(uint32_t(t.type))->name) +
                            ", which whale cannot compute with");
  };
  check(kb, {H, L, Dn});
  check(vb, {H, Dv, L});
  std::vector<float> out(size_t(H * (Dn + Dv) * L));
  const size_t kb_row = ggml_row_bytes(kb.type, Dn), vb_row = ggml_row_bytes(vb.type, L);
  std::vector<float> row(size_t(std::max(Dn, L)));
  for (int64_t h = 0; h < H; h++) {
    float* base = out.data() + size_t(h * (Dn + Dv) * L);
    for (int64_t l = 0; l < L; l++) {  // k_b row (h, l) holds W_UK[h][0..Dn)[l]
      dequantize_row(kb.type, kb.data + size_t(h * L + l) * kb_row, Dn, row.data());
      for (int64_t j = 0; j < Dn; j++) base[j * L + l] = row[size_t(j)];
    }
    for (int64_t j = 0; j < Dv; j++)
      dequantize_row(vb.type, vb.data + size_t(h * Dv + j) * vb_row, L, base + (Dn + j) * L);
  }
  return out;
}

// Whether the view named `name` is a matrix only ever multiplied through linear() (so it may
// take a repacked layout): the projections and the output head, and MLA's k_b / v_b halves,
// which linear() reads one head's rows at a time (model/mla.cpp), when a head's rows
// (kv_lora_rank, v_head_dim) are whole groups of 16. Not the embedding (read row by row) nor
// kv_b_proj.
bool linear_only(const std::string& name, const ModelConfig& c) {
  static const char* const kSuffixes[] = {
      "q_a_proj.weight", "q_b_proj.weight", "q_proj.weight", "kv_a_proj_with_mqa.weight",
      "k_proj.weight",   "v_proj.weight",   "o_proj.weight", "gate_proj.weight",
      "up_proj.weight",  "down_proj.weight"};
  auto ends_with = [&](const char* s) {
    const size_t n = std::strlen(s);
    return name.size() > n && name.compare(name.size() - n, n, s) == 0 &&
           name[name.size() - n - 1] == '.';
  };
  if (name == "lm_head.weight") return true;
  if (ends_with("k_b_proj.weight")) return c.kv_lora_rank % kX16Rows == 0;
  if (ends_with("v_b_proj.weight")) return c.v_head_dim % kX16Rows == 0;
  return std::any_of(std::begin(kSuffixes), std::end(kSuffixes), ends_with);
}

bool repackable(const TensorView& v, const ModelConfig& c) {
  return x16_of(v.dtype) != DType::F32 && v.shape.size() == 2 && v.shape[0] % kX16Rows == 0 &&
         v.shape[1] % 32 == 0 && linear_only(v.name, c);
}

// Rewrites the Q4_0 and Q8_0 matrices that only linear() reads, rows a multiple of 16, in the
// repacked layouts (kernels/repack.h), in the RAM copy of the file: the AVX-512 kernels read
// them faster per byte, and memory stays the file's size.
void repack_for_kernels(GgufFile& f, std::vector<TensorView>& views, const ModelConfig& c) {
  if (std::none_of(views.begin(), views.end(),
                   [&](const TensorView& v) { return repackable(v, c); }))
    return;
  f.set_writable(true);
  for (TensorView& v : views) {
    if (!repackable(v, c)) continue;
    // The file's bytes, read into anonymous memory this process owns (made writable above).
    repack_x16(v.dtype, const_cast<uint8_t*>(v.data), v.shape[0], v.shape[1]);
    v.dtype = x16_of(v.dtype);
  }
  f.set_writable(false);
}

}  // namespace

ModelConfig gguf_model_config(const std::string& path) {
  return config_from(GgufFile(path, false));
}

GgufModel load_gguf_model(const std::string& path, LoadMode mode) {
  size_t size = 0;  // all shards of a split model (a missing one: GgufFile names it)
  for (const std::string& p : gguf_shard_paths(path)) {
    std::error_code ec;
    const auto n = std::filesystem::file_size(p, ec);
    if (ec && p == path) throw error(p, "cannot open: " + ec.message());
    if (!ec) size += size_t(n);
  }
  mode = resolve_load_mode(mode, size);
  auto owned = std::make_shared<Owned>();
  owned->file = std::make_shared<GgufFile>(path, mode == LoadMode::Ram);
  const GgufFile& f = *owned->file;
  GgufModel out;
  out.config = config_from(f);
  const ModelConfig& c = out.config;

  std::vector<TensorView> views;
  std::map<std::string, std::string> stored;  // Hugging Face name -> GGUF name, for errors
  auto add = [&](const std::string& gname, const std::string& hf) {
    stored.emplace(hf, gname);
    const GgufTensor* g = f.find_tensor(gname);
    if (g) views.push_back(view_of(*g, hf, path));
    return g != nullptr;
  };
  add("token_embd.weight", "model.embed_tokens.weight");
  add("output_norm.weight", "model.norm.weight");
  add("output.weight", "lm_head.weight");
  if (!c.is_mla()) {
    add("rope_freqs.weight", "model.rope_freqs");  // Llama 3's frequency divisors
    for (int64_t i = 0; i < c.num_hidden_layers; i++) {
      const std::string b = "blk." + std::to_string(i) + ".";
      const std::string p = "model.layers." + std::to_string(i) + ".";
      add(b + "attn_norm.weight", p + "input_layernorm.weight");
      add(b + "ffn_norm.weight", p + "post_attention_layernorm.weight");
      for (const auto& [g, hf] : {std::pair<std::string, std::string>{"attn_q", "q_proj"},
                                  {"attn_k", "k_proj"},
                                  {"attn_v", "v_proj"},
                                  {"attn_output", "o_proj"}}) {
        add(b + g + ".weight", p + "self_attn." + hf + ".weight");
        add(b + g + ".bias", p + "self_attn." + hf + ".bias");
      }
      add(b + "ffn_gate.weight", p + "mlp.gate_proj.weight");
      add(b + "ffn_up.weight", p + "mlp.up_proj.weight");
      add(b + "ffn_down.weight", p + "mlp.down_proj.weight");
    }
  }
  for (int64_t i = 0; i < (c.is_mla() ? c.num_hidden_layers : 0); i++) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const std::string p = "model.layers." + std::to_string(i) + ".";
    add(b + "attn_norm.weight", p + "input_layernorm.weight");
    add(b + "ffn_norm.weight", p + "post_attention_layernorm.weight");
    const std::string a = p + "self_attn.";
    add(b + "attn_q_a.weight", a + "q_a_proj.weight");
    add(b + "attn_q_a_norm.weight", a + "q_a_layernorm.weight");
    add(b + "attn_q_b.weight", a + "q_b_proj.weight");
    add(b + "attn_q.weight", a + "q_proj.weight");
    add(b + "attn_kv_a_mqa.weight", a + "kv_a_proj_with_mqa.weight");
    add(b + "attn_kv_a_norm.weight", a + "kv_a_layernorm.weight");
    add(b + "attn_output.weight", a + "o_proj.weight");
    if (!add(b + "attn_kv_b.weight", a + "kv_b_proj.weight")) {
      const GgufTensor* kb = f.find_tensor(b + "attn_k_b.weight");
      const GgufTensor* vb = f.find_tensor(b + "attn_v_b.weight");
      if (!kb || !vb)
        throw error(path, "layer " + std::to_string(i) + " has neither '" + b +
                              "attn_kv_b.weight' nor both '" + b + "attn_k_b.weight' and '" + b +
                              "attn_v_b.weight'");
      owned->buffers.push_back(rebuild_kv_b(*kb, *vb, c, path));
      const std::vector<float>& buf = owned->buffers.back();
      TensorView t;
      t.name = a + "kv_b_proj.weight";
      t.dtype = DType::F32;
      t.shape = {c.num_attention_heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank};
      t.data = reinterpret_cast<const uint8_t*>(buf.data());
      t.nbytes = buf.size() * sizeof(float);
      t.file = path;
      views.push_back(std::move(t));
      // The halves as stored, under names no Hugging Face checkpoint has (model/mla.h).
      TensorView k = view_of(*kb, a + "k_b_proj.weight", path);
      k.shape = {c.num_attention_heads * c.kv_lora_rank, c.qk_nope_head_dim};
      views.push_back(std::move(k));
      TensorView v = view_of(*vb, a + "v_b_proj.weight", path);
      v.shape = {c.num_attention_heads * c.v_head_dim, c.kv_lora_rank};
      views.push_back(std::move(v));
    }
    const std::string mlp = p + "mlp.";
    add(b + "ffn_gate.weight", mlp + "gate_proj.weight");
    add(b + "ffn_up.weight", mlp + "up_proj.weight");
    add(b + "ffn_down.weight", mlp + "down_proj.weight");
    add(b + "ffn_gate_inp.weight", mlp + "gate.weight");
    if (!add(b + "exp_probs_b.bias", mlp + "gate.e_score_correction_bias"))
      add(b + "exp_probs_b", mlp + "gate.e_score_correction_bias");
    for (const char* w : {"gate", "up", "down"}) {
      add(b + "ffn_" + w + "_shexp.weight", mlp + "shared_experts." + w + "_proj.weight");
      const std::string gname = b + "ffn_" + w + "_exps.weight";
      for (int64_t e = 0; e < c.n_routed_experts; e++)
        stored.emplace(mlp + "experts." + std::to_string(e) + "." + w + "_proj.weight", gname);
      const GgufTensor* g = f.find_tensor(gname);
      if (!g) continue;
      if (g->ne.size() != 3 || g->ne[2] != c.n_routed_experts)
        throw error(path, "tensor '" + g->name + "' has shape " + g->shape_str() + ", expected [" +
                              std::to_string(c.n_routed_experts) + " experts, rows, cols]");
      for (int64_t e = 0; e < c.n_routed_experts; e++)
        views.push_back(expert_view(
            *g, e, mlp + "experts." + std::to_string(e) + "." + w + "_proj.weight", path));
    }
  }
  if (mode == LoadMode::Ram && repack_enabled()) repack_for_kernels(*owned->file, views, c);
  std::vector<const MappedFile*> files = f.files();
  out.checkpoint = std::make_unique<Checkpoint>(path, mode, std::move(views), std::move(files),
                                                std::shared_ptr<const void>(owned, owned.get()),
                                                std::move(stored));
  return out;
}

}  // namespace whale
