#include "formats/gguf_export.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "formats/gguf_tokenizer.h"
#include "formats/gguf_writer.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "model/weights.h"

namespace whale {

namespace {

using json = nlohmann::json;

// --type names, their main type, whether llama.cpp's _M mix applies, and general.file_type
// (LLAMA_FTYPE_*; the pure K types are filed under the nearest llama.cpp name).
constexpr QuantRecipe kRecipes[] = {
    {"f32", GgmlType::F32, false, 0},     {"f16", GgmlType::F16, false, 1},
    {"bf16", GgmlType::BF16, false, 32},  {"q8_0", GgmlType::Q8_0, false, 7},
    {"q4_0", GgmlType::Q4_0, false, 2},   {"q4_1", GgmlType::Q4_1, false, 3},
    {"q5_0", GgmlType::Q5_0, false, 8},   {"q5_1", GgmlType::Q5_1, false, 9},
    {"q4_k", GgmlType::Q4_K, false, 14},  {"q5_k", GgmlType::Q5_K, false, 16},
    {"q6_k", GgmlType::Q6_K, false, 18},  {"q4_k_m", GgmlType::Q4_K, true, 15},
    {"q5_k_m", GgmlType::Q5_K, true, 17},
};

// tokenizer.json / tokenizer_config.json -> tokenizer.ggml.* (as llama.cpp's converter writes
// them: the vocabulary padded to the model's with "[PAD{i}]" tokens of type UNUSED).
void add_tokenizer(GgufWriter& w, const std::string& dir, int64_t n_vocab) {
  const std::string path = dir + "/tokenizer.json";
  if (!std::filesystem::exists(path)) return;  // a model without a tokenizer: weights only
  json tok;
  try {
    std::ifstream f(path);
    tok = json::parse(f);
    const json& model = tok.at("model");
    if (model.value("type", "BPE") != "BPE")
      throw std::runtime_error("only byte-level BPE tokenizers go into GGUF");
    for (auto& [t, id] : model.at("vocab").items())
      n_vocab = std::max(n_vocab, id.get<int64_t>() + 1);
    for (const json& a : tok.value("added_tokens", json::array()))
      n_vocab = std::max(n_vocab, a.at("id").get<int64_t>() + 1);
    std::vector<std::string> tokens(static_cast<size_t>(n_vocab));
    std::vector<int32_t> types(static_cast<size_t>(n_vocab), 5);  // UNUSED until set
    for (int64_t i = 0; i < n_vocab; i++) tokens[size_t(i)] = "[PAD" + std::to_string(i) + "]";
    for (auto& [t, id] : model.at("vocab").items()) {
      tokens[size_t(id.get<int64_t>())] = t;
      types[size_t(id.get<int64_t>())] = 1;  // NORMAL
    }
    for (const json& a : tok.value("added_tokens", json::array())) {
      const size_t id = size_t(a.at("id").get<int64_t>());
      tokens[id] = a.at("content").get<std::string>();
      types[id] = a.value("special", false) ? 3 : 4;  // CONTROL : USER_DEFINED
    }
    std::vector<std::string> merges;
    for (const json& m : model.value("merges", json::array()))
      merges.push_back(m.is_string()
                           ? m.get<std::string>()
                           : m.at(0).get<std::string>() + " " + m.at(1).get<std::string>());
    w.set_string("tokenizer.ggml.model", "gpt2");
    const json pre = tok.value("pre_tokenizer", json());
    const std::string pre_name = gguf_pre_name(pre);
    w.set_string("tokenizer.ggml.pre", pre_name.empty() ? "default" : pre_name);
    if (pre_name.empty()) w.set_string(kWhalePreTokenizerKey, pre.dump());
    w.set_strings("tokenizer.ggml.tokens", tokens);
    w.set_i32s("tokenizer.ggml.token_type", types);
    w.set_strings("tokenizer.ggml.merges", merges);

    const std::string cpath = dir + "/tokenizer_config.json";
    if (!std::filesystem::exists(cpath)) return;
    std::ifstream cf(cpath);
    const json cfg = json::parse(cf);
    auto token_id = [&](const json& v) -> int64_t {
      const std::string s = v.is_string()   ? v.get<std::string>()
                            : v.is_object() ? v.value("content", std::string())
                                            : std::string();
      for (int64_t i = 0; i < n_vocab; i++)
        if (!s.empty() && tokens[size_t(i)] == s) return i;
      return -1;
    };
    if (cfg.contains("bos_token") && token_id(cfg["bos_token"]) >= 0)
      w.set_u32("tokenizer.ggml.bos_token_id", uint32_t(token_id(cfg["bos_token"])));
    if (cfg.contains("eos_token") && token_id(cfg["eos_token"]) >= 0)
      w.set_u32("tokenizer.ggml.eos_token_id", uint32_t(token_id(cfg["eos_token"])));
    w.set_bool("tokenizer.ggml.add_bos_token", cfg.value("add_bos_token", false));
    if (cfg.contains("chat_template") && cfg["chat_template"].is_string())
      w.set_string("tokenizer.chat_template", cfg["chat_template"].get<std::string>());
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

// The keys every architecture writes under its own prefix.
void add_common_hparams(GgufWriter& w, const ModelConfig& c, const std::string& dir,
                        const std::string& arch, int64_t head_count_kv) {
  const std::string a = arch + ".";
  w.set_string("general.architecture", arch);
  w.set_string("general.name", std::filesystem::path(dir).filename().string());
  w.set_u32("general.quantization_version", 2);
  w.set_u32(a + "vocab_size", uint32_t(c.vocab_size));
  w.set_u32(a + "context_length", uint32_t(c.max_position_embeddings));
  w.set_u32(a + "embedding_length", uint32_t(c.hidden_size));
  w.set_u32(a + "feed_forward_length", uint32_t(c.intermediate_size));
  w.set_u32(a + "block_count", uint32_t(c.num_hidden_layers));
  w.set_u32(a + "attention.head_count", uint32_t(c.num_attention_heads));
  w.set_u32(a + "attention.head_count_kv", uint32_t(head_count_kv));
  w.set_f32(a + "rope.freq_base", float(c.rope_theta));
  w.set_f32(a + "attention.layer_norm_rms_epsilon", float(c.rms_norm_eps));
}

void add_hparams(GgufWriter& w, const ModelConfig& c, const std::string& dir) {
  auto refuse = [&](const std::string& field, const std::string& why) {
    throw std::runtime_error(dir + "/config.json: \"" + field + "\" " + why +
                             "; GGUF's deepseek2 metadata cannot express it");
  };
  if (c.moe_layer_freq != 1) refuse("moe_layer_freq", "is not 1");
  if (c.yarn.enabled && c.yarn.mscale != c.yarn.mscale_all_dim)
    refuse("rope_scaling.mscale", "differs from mscale_all_dim");
  if (c.arch == Arch::DeepseekV2 && c.norm_topk_prob && c.routed_scaling_factor != 1.0)
    refuse("routed_scaling_factor", "is not 1 with norm_topk_prob in a V2 model");
  if (c.scoring_func == ScoringFunc::Sigmoid && c.arch != Arch::DeepseekV3)
    refuse("scoring_func", "is sigmoid in a V2 model");
  const std::string a = "deepseek2.";
  add_common_hparams(w, c, dir, "deepseek2", 1);  // MLA as MQA over the latent
  w.set_u32(a + "leading_dense_block_count",
            uint32_t(c.n_routed_experts > 0 ? c.first_k_dense_replace : c.num_hidden_layers));
  if (c.q_lora_rank > 0) w.set_u32(a + "attention.q_lora_rank", uint32_t(c.q_lora_rank));
  w.set_u32(a + "attention.kv_lora_rank", uint32_t(c.kv_lora_rank));
  w.set_u32(a + "attention.key_length", uint32_t(c.kv_lora_rank + c.qk_rope_head_dim));
  w.set_u32(a + "attention.value_length", uint32_t(c.kv_lora_rank));
  w.set_u32(a + "attention.key_length_mla", uint32_t(c.qk_head_dim()));
  w.set_u32(a + "attention.value_length_mla", uint32_t(c.v_head_dim));
  w.set_u32(a + "expert_feed_forward_length",
            uint32_t(c.n_routed_experts > 0 ? c.moe_intermediate_size : c.intermediate_size));
  if (c.n_routed_experts > 0) {
    w.set_u32(a + "expert_count", uint32_t(c.n_routed_experts));
    w.set_u32(a + "expert_used_count", uint32_t(c.num_experts_per_tok));
  }
  w.set_u32(a + "expert_shared_count", uint32_t(c.n_shared_experts));
  w.set_f32(a + "expert_weights_scale", float(c.routed_scaling_factor));
  if (c.norm_topk_prob) w.set_bool(a + "expert_weights_norm", true);
  w.set_u32(a + "expert_gating_func", c.scoring_func == ScoringFunc::Sigmoid ? 2 : 1);
  if (c.topk_method != TopkMethod::Greedy && c.n_group > 1) {
    w.set_u32(a + "expert_group_count", uint32_t(c.n_group));
    w.set_u32(a + "expert_group_used_count", uint32_t(c.topk_group));
  }
  w.set_u32(a + "rope.dimension_count", uint32_t(c.qk_rope_head_dim));
  if (c.yarn.enabled) {
    w.set_string(a + "rope.scaling.type", "yarn");
    w.set_f32(a + "rope.scaling.factor", float(c.yarn.factor));
    w.set_u32(a + "rope.scaling.original_context_length",
              uint32_t(c.yarn.original_max_position_embeddings));
    w.set_f32(a + "rope.scaling.yarn_log_multiplier", float(0.1 * c.yarn.mscale_all_dim));
    w.set_f32(a + "rope.scaling.yarn_beta_fast", float(c.yarn.beta_fast));
    w.set_f32(a + "rope.scaling.yarn_beta_slow", float(c.yarn.beta_slow));
  }
}

// llama.cpp's `qwen2` / `llama` metadata (its converter's Qwen2Model / LlamaModel).
void add_dense_hparams(GgufWriter& w, const ModelConfig& c, const std::string& dir) {
  const std::string arch = c.arch == Arch::Qwen2 ? "qwen2" : "llama", a = arch + ".";
  add_common_hparams(w, c, dir, arch, c.num_key_value_heads);
  if (c.arch == Arch::Llama) w.set_u32(a + "rope.dimension_count", uint32_t(c.head_dim));
  if (c.head_dim * c.num_attention_heads != c.hidden_size) {
    w.set_u32(a + "attention.key_length", uint32_t(c.head_dim));
    w.set_u32(a + "attention.value_length", uint32_t(c.head_dim));
  }
}

// Llama 3's rope_scaling as llama.cpp's converter stores it: rope_freqs.weight, the divisor of
// each frequency (computed from float32 frequencies, as there).
std::vector<float> llama3_rope_factors(const ModelConfig& c) {
  const Llama3RopeConfig& l = c.llama3_rope;
  const double L = double(l.original_max_position_embeddings);
  std::vector<float> out;
  for (int64_t i = 0; i < c.head_dim / 2; i++) {
    const float f = 1.0f / std::pow(float(c.rope_theta), float(2 * i) / float(c.head_dim));
    const double wavelen = 2.0 * M_PI / double(f);
    if (wavelen < L / l.high_freq_factor) {
      out.push_back(1.0f);
    } else if (wavelen > L / l.low_freq_factor) {
      out.push_back(float(l.factor));
    } else {
      const double s = (L / wavelen - l.low_freq_factor) / (l.high_freq_factor - l.low_freq_factor);
      out.push_back(float(1.0 / ((1.0 - s) / l.factor + s)));
    }
  }
  return out;
}

// Adds tensors; `type` for matrices (with the exceptions in gguf_export.h).
class Exporter {
 public:
  Exporter(GgufWriter& w, const Checkpoint& ck, const QuantRecipe& r, const ModelConfig& c,
           QuantizeStats& st)
      : w_(w),
        ck_(ck),
        recipe_(r),
        n_layer_(c.num_hidden_layers),
        n_expert_(c.n_routed_experts),
        st_(st) {}

  GgmlType matrix_type(const std::string& gname, int64_t cols) const {
    const GgmlType t = quant_tensor_type(recipe_, gname, cols, n_layer_, n_expert_);
    if (t == GgmlType::F16 && recipe_.type != GgmlType::F16) st_.fallback++;
    return t;
  }

  // A 1-D tensor of the checkpoint, F32.
  void vector(const std::string& gname, const std::string& hf, int64_t n) {
    vector_values(gname, load_vector(ck_, hf, n));
  }

  // A vector given as values.
  void vector_values(const std::string& gname, std::vector<float> v) {
    const int64_t n = int64_t(v.size());
    add(gname, GgmlType::F32, {n},
        [v](uint8_t* dst) { std::memcpy(dst, v.data(), v.size() * sizeof(float)); });
  }

  // One matrix (`f32` forces F32: the router). pair_heads > 0: llama.cpp's permutation of a
  // llama q_proj / k_proj, whose heads of `rows / pair_heads` rows go from (first half, second
  // half) to adjacent rotary pairs: row 2i + j of a head is row i + j * half of the original.
  void matrix(const std::string& gname, const std::string& hf_prefix, int64_t rows, int64_t cols,
              bool f32 = false, int64_t pair_heads = 0) {
    const WeightRef wr = load_linear(ck_, hf_prefix, rows, cols);
    const GgmlType t = f32 ? GgmlType::F32 : matrix_type(gname, cols);
    add(gname, t, {rows, cols}, [wr, t, pair_heads](uint8_t* dst) {
      std::vector<int64_t> order(static_cast<size_t>(wr.rows));
      const int64_t hd = pair_heads > 0 ? wr.rows / pair_heads : 0, half = hd / 2;
      for (int64_t r = 0; r < wr.rows; r++)
        order[size_t(r)] =
            pair_heads > 0 ? (r / hd) * hd + (r % hd) / 2 + (r % 2) * half : r;  // source row
      write_rows(wr, t, dst, order);
    });
  }

  // Experts e = 0..E-1 of `hf_prefix`.experts.{e}.`proj` stacked into [E, rows, cols].
  void experts(const std::string& gname, const std::string& mlp, const std::string& proj, int64_t E,
               int64_t rows, int64_t cols) {
    std::vector<WeightRef> ws;
    for (int64_t e = 0; e < E; e++)
      ws.push_back(load_linear(ck_, mlp + "experts." + std::to_string(e) + "." + proj, rows, cols));
    const GgmlType t = matrix_type(gname, cols);
    const size_t per = size_t(rows) * ggml_row_bytes(t, cols);
    add(gname, t, {E, rows, cols}, [ws, t, per](uint8_t* dst) {
      for (size_t e = 0; e < ws.size(); e++) write_rows(ws[e], t, dst + e * per);
    });
  }

  // kv_b_proj [H * (Dn + Dv), L] split as llama.cpp's converter does: attn_k_b [H, L, Dn] (W_UK
  // transposed per head) and attn_v_b [H, Dv, L].
  void split_kv_b(const std::string& b, const std::string& hf_prefix, const ModelConfig& c) {
    const int64_t H = c.num_attention_heads, L = c.kv_lora_rank, Dn = c.qk_nope_head_dim,
                  Dv = c.v_head_dim;
    const WeightRef kv = load_linear(ck_, hf_prefix, H * (Dn + Dv), L);
    const GgmlType tk = matrix_type(b + "attn_k_b.weight", Dn);
    add(b + "attn_k_b.weight", tk, {H, L, Dn}, [kv, tk, H, L, Dn, Dv](uint8_t* dst) {
      std::vector<float> rows(size_t(Dn * L)), t(static_cast<size_t>(Dn));
      const size_t rb = ggml_row_bytes(tk, Dn);
      for (int64_t h = 0; h < H; h++) {
        for (int64_t j = 0; j < Dn; j++) weight_row(kv, h * (Dn + Dv) + j, rows.data() + j * L);
        for (int64_t l = 0; l < L; l++) {
          for (int64_t j = 0; j < Dn; j++) t[size_t(j)] = rows[size_t(j * L + l)];
          quantize_row(tk, t.data(), Dn, dst + size_t(h * L + l) * rb);
        }
      }
    });
    const GgmlType tv = matrix_type(b + "attn_v_b.weight", L);
    add(b + "attn_v_b.weight", tv, {H, Dv, L}, [kv, tv, H, L, Dn, Dv](uint8_t* dst) {
      std::vector<float> row(static_cast<size_t>(L));
      const size_t rb = ggml_row_bytes(tv, L);
      for (int64_t h = 0; h < H; h++)
        for (int64_t j = 0; j < Dv; j++) {
          weight_row(kv, h * (Dn + Dv) + Dn + j, row.data());
          quantize_row(tv, row.data(), L, dst + size_t(h * Dv + j) * rb);
        }
    });
  }

 private:
  // Rows of w in `order` (source row of each destination row; empty: as stored).
  static void write_rows(const WeightRef& w, GgmlType t, uint8_t* dst,
                         const std::vector<int64_t>& order = {}) {
    std::vector<float> row(size_t(w.cols));
    const size_t rb = ggml_row_bytes(t, w.cols);
    for (int64_t r = 0; r < w.rows; r++) {
      weight_row(w, order.empty() ? r : order[size_t(r)], row.data());
      quantize_row(t, row.data(), w.cols, dst + size_t(r) * rb);
    }
  }

  void add(const std::string& name, GgmlType t, std::vector<int64_t> shape, GgufWriter::Fill f) {
    size_t n = 1;
    for (size_t i = 0; i + 1 < shape.size(); i++) n *= size_t(shape[i]);
    st_.bytes += n * ggml_row_bytes(t, shape.back());
    st_.tensors++;
    w_.add_tensor(name, t, std::move(shape), std::move(f));
  }

  GgufWriter& w_;
  const Checkpoint& ck_;
  const QuantRecipe& recipe_;
  int64_t n_layer_, n_expert_;
  QuantizeStats& st_;
};

}  // namespace

QuantRecipe parse_quant_type(const std::string& name) {
  std::string all;
  for (const QuantRecipe& r : kRecipes) {
    if (name == r.name) return r;
    all += std::string(all.empty() ? "" : ", ") + r.name;
  }
  throw std::invalid_argument("--type '" + name + "' is not one whale writes (" + all + ")");
}

GgmlType quant_tensor_type(const QuantRecipe& r, const std::string& gname, int64_t cols,
                           int64_t n_layer, int64_t n_expert) {
  GgmlType t = r.type;
  const bool quantized = t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16;
  if (!quantized) return t;
  int layer = -1;
  std::sscanf(gname.c_str(), "blk.%d.", &layer);
  // llama.cpp's use_more_bits: the first and last eighth of the layers and every third between.
  const auto more_bits = [&](int64_t i) {
    return i < n_layer / 8 || i >= 7 * n_layer / 8 || (i - n_layer / 8) % 3 == 2;
  };
  if (gname == "output.weight") {
    if (cols % ggml_type_info(uint32_t(t))->block_size != 0)
      t = GgmlType::Q8_0;
    else if (t != GgmlType::Q8_0)
      t = GgmlType::Q6_K;
  } else if (r.k_mix &&
             (gname.find("ffn_down") != std::string::npos ||
              gname.find("attn_v.weight") != std::string::npos) &&
             layer >= 0 && more_bits(layer)) {
    t = GgmlType::Q6_K;  // (attn_v: the dense models' value projection, as llama.cpp)
  } else if (r.k_mix && r.type == GgmlType::Q4_K && n_expert == 8 &&
             gname.find("attn_output.weight") != std::string::npos) {
    t = GgmlType::Q5_K;
  }
  if (cols % ggml_type_info(uint32_t(t))->block_size != 0) {  // llama.cpp's fallbacks
    t = t == GgmlType::Q4_K   ? GgmlType::Q5_0
        : t == GgmlType::Q5_K ? GgmlType::Q5_1
        : t == GgmlType::Q6_K ? GgmlType::Q8_0
                              : t;
    if (cols % ggml_type_info(uint32_t(t))->block_size != 0) t = GgmlType::F16;
  }
  return t;
}

QuantizeStats quantize_to_gguf(const std::string& dir, const QuantRecipe& recipe,
                               const std::string& out) {
  const ModelConfig c = ModelConfig::load(dir);
  const Checkpoint ck(dir, LoadMode::Mmap);
  GgufWriter w;
  if (c.is_mla())
    add_hparams(w, c, dir);
  else
    add_dense_hparams(w, c, dir);
  w.set_u32("general.file_type", recipe.file_type);
  add_tokenizer(w, dir, c.vocab_size);

  QuantizeStats st;
  Exporter x(w, ck, recipe, c, st);
  const int64_t D = c.hidden_size, H = c.num_attention_heads;
  x.matrix("token_embd.weight", "model.embed_tokens", c.vocab_size, D);
  if (!c.is_mla()) {
    const bool llama = c.arch == Arch::Llama;
    if (c.llama3_rope.enabled) x.vector_values("rope_freqs.weight", llama3_rope_factors(c));
    const int64_t qd = H * c.head_dim, kvd = c.num_key_value_heads * c.head_dim;
    for (int64_t i = 0; i < c.num_hidden_layers; i++) {
      const std::string b = "blk." + std::to_string(i) + ".";
      const std::string p = "model.layers." + std::to_string(i) + ".";
      const std::string a = p + "self_attn.";
      x.vector(b + "attn_norm.weight", p + "input_layernorm.weight", D);
      x.matrix(b + "attn_q.weight", a + "q_proj", qd, D, false, llama ? H : 0);
      x.matrix(b + "attn_k.weight", a + "k_proj", kvd, D, false, llama ? c.num_key_value_heads : 0);
      x.matrix(b + "attn_v.weight", a + "v_proj", kvd, D);
      if (c.qkv_bias) {
        if (llama)  // a permuted projection's bias would need the same order: none is published
          throw std::runtime_error(dir +
                                   ": a llama model with attention_bias cannot be written "
                                   "as llama.cpp's llama GGUF");
        x.vector(b + "attn_q.bias", a + "q_proj.bias", qd);
        x.vector(b + "attn_k.bias", a + "k_proj.bias", kvd);
        x.vector(b + "attn_v.bias", a + "v_proj.bias", kvd);
      }
      x.matrix(b + "attn_output.weight", a + "o_proj", D, qd);
      if (c.o_bias) x.vector(b + "attn_output.bias", a + "o_proj.bias", D);
      x.vector(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", D);
      x.matrix(b + "ffn_gate.weight", p + "mlp.gate_proj", c.intermediate_size, D);
      x.matrix(b + "ffn_up.weight", p + "mlp.up_proj", c.intermediate_size, D);
      x.matrix(b + "ffn_down.weight", p + "mlp.down_proj", D, c.intermediate_size);
    }
  }
  for (int64_t i = 0; i < (c.is_mla() ? c.num_hidden_layers : 0); i++) {
    const std::string b = "blk." + std::to_string(i) + ".";
    const std::string p = "model.layers." + std::to_string(i) + ".";
    const std::string a = p + "self_attn.";
    x.vector(b + "attn_norm.weight", p + "input_layernorm.weight", D);
    if (c.q_lora_rank > 0) {
      x.matrix(b + "attn_q_a.weight", a + "q_a_proj", c.q_lora_rank, D);
      x.vector(b + "attn_q_a_norm.weight", a + "q_a_layernorm.weight", c.q_lora_rank);
      x.matrix(b + "attn_q_b.weight", a + "q_b_proj", H * c.qk_head_dim(), c.q_lora_rank);
    } else {
      x.matrix(b + "attn_q.weight", a + "q_proj", H * c.qk_head_dim(), D);
    }
    x.matrix(b + "attn_kv_a_mqa.weight", a + "kv_a_proj_with_mqa",
             c.kv_lora_rank + c.qk_rope_head_dim, D);
    x.vector(b + "attn_kv_a_norm.weight", a + "kv_a_layernorm.weight", c.kv_lora_rank);
    x.split_kv_b(b, a + "kv_b_proj", c);
    x.matrix(b + "attn_output.weight", a + "o_proj", D, H * c.v_head_dim);
    x.vector(b + "ffn_norm.weight", p + "post_attention_layernorm.weight", D);
    const std::string m = p + "mlp.";
    if (!c.is_moe_layer(i)) {
      x.matrix(b + "ffn_gate.weight", m + "gate_proj", c.intermediate_size, D);
      x.matrix(b + "ffn_up.weight", m + "up_proj", c.intermediate_size, D);
      x.matrix(b + "ffn_down.weight", m + "down_proj", D, c.intermediate_size);
      continue;
    }
    const int64_t E = c.n_routed_experts, I = c.moe_intermediate_size;
    x.matrix(b + "ffn_gate_inp.weight", m + "gate", E, D, /*f32=*/true);
    if (c.topk_method == TopkMethod::NoauxTc)
      x.vector(b + "exp_probs_b.bias", m + "gate.e_score_correction_bias", E);
    x.experts(b + "ffn_gate_exps.weight", m, "gate_proj", E, I, D);
    x.experts(b + "ffn_up_exps.weight", m, "up_proj", E, I, D);
    x.experts(b + "ffn_down_exps.weight", m, "down_proj", E, D, I);
    if (c.n_shared_experts > 0) {
      const int64_t S = I * c.n_shared_experts;
      x.matrix(b + "ffn_gate_shexp.weight", m + "shared_experts.gate_proj", S, D);
      x.matrix(b + "ffn_up_shexp.weight", m + "shared_experts.up_proj", S, D);
      x.matrix(b + "ffn_down_shexp.weight", m + "shared_experts.down_proj", D, S);
    }
  }
  x.vector("output_norm.weight", "model.norm.weight", D);
  if (!(c.tie_word_embeddings && !ck.has("lm_head.weight")))
    x.matrix("output.weight", "lm_head", c.vocab_size, D);
  w.write(out);
  return st;
}

}  // namespace whale
