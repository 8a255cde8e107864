#include "model/config.h"

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "model/rope.h"

namespace whale {

using json = nlohmann::json;

namespace {

struct Reader {
  const json& j;
  const std::string& origin;

  std::runtime_error err(const std::string& key, const std::string& msg) const {
    return std::runtime_error(origin + ": field \"" + key + "\" " + msg);
  }
  bool present(const std::string& key) const { return j.contains(key) && !j[key].is_null(); }
  int64_t integer(const std::string& key, int64_t def, bool required = false) const {
    if (!present(key)) {
      if (required) throw err(key, "is required");
      return def;
    }
    const json& v = j[key];
    if (v.is_number_integer()) return v.get<int64_t>();
    if (v.is_number_float()) {
      const double d = v.get<double>();
      if (std::floor(d) == d && std::fabs(d) < 9.0e15) return int64_t(d);
    }
    if (v.is_number_unsigned()) throw err(key, "is too large: " + v.dump());
    throw err(key, "must be an integer, got " + v.dump());
  }
  double number(const std::string& key, double def) const {
    if (!present(key)) return def;
    if (!j[key].is_number()) throw err(key, "must be a number, got " + j[key].dump());
    return j[key].get<double>();
  }
  bool boolean(const std::string& key, bool def) const {
    if (!present(key)) return def;
    if (!j[key].is_boolean()) throw err(key, "must be true or false, got " + j[key].dump());
    return j[key].get<bool>();
  }
  std::string string(const std::string& key, const std::string& def) const {
    if (!present(key)) return def;
    if (!j[key].is_string()) throw err(key, "must be a string, got " + j[key].dump());
    return j[key].get<std::string>();
  }
};

}  // namespace

namespace {

// Qwen2ForCausalLM / LlamaForCausalLM (Hugging Face's modeling_qwen2.py / modeling_llama.py).
void dense_from_json(const json& j, const Reader& r, ModelConfig& c) {
  const bool qwen = c.arch == Arch::Qwen2;
  c.vocab_size = r.integer("vocab_size", 0, true);
  c.hidden_size = r.integer("hidden_size", 0, true);
  c.intermediate_size = r.integer("intermediate_size", 0, true);
  c.num_hidden_layers = r.integer("num_hidden_layers", 0, true);
  c.num_attention_heads = r.integer("num_attention_heads", 0, true);
  c.num_key_value_heads = r.integer("num_key_value_heads", c.num_attention_heads);
  if (c.num_attention_heads <= 0)
    throw r.err("num_attention_heads", "must be > 0, got " + std::to_string(c.num_attention_heads));
  // Qwen2 has no head_dim field: hidden_size / heads; Llama's is optional with that default.
  c.head_dim = qwen ? c.hidden_size / c.num_attention_heads
                    : r.integer("head_dim", c.hidden_size / c.num_attention_heads);
  if (qwen && c.hidden_size % c.num_attention_heads != 0)
    throw r.err("hidden_size", "must be a multiple of num_attention_heads");
  c.max_position_embeddings = r.integer("max_position_embeddings", qwen ? 32768 : 2048);
  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  c.rope_theta = r.number("rope_theta", 10000.0);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.rope_half_split = true;
  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu") throw r.err("hidden_act", "\"" + act + "\" is not supported (silu)");
  if (qwen) {
    c.qkv_bias = true;  // Qwen2's q/k/v projections always have biases, o_proj none
    // Sliding-window attention: off in every Qwen2.5 / R1-Distill config.
    if (r.boolean("use_sliding_window", false))
      throw r.err("use_sliding_window", "true is not supported (sliding-window attention)");
  } else {
    c.qkv_bias = c.o_bias = r.boolean("attention_bias", false);
    if (r.boolean("mlp_bias", false))
      throw r.err("mlp_bias", "true is not supported (no Llama release has MLP biases)");
    if (r.integer("pretraining_tp", 1) != 1)
      throw r.err("pretraining_tp", "must be 1 (the split only changes rounding; set it to 1)");
  }
  if (r.present("rope_scaling")) {
    const json& rs = j["rope_scaling"];
    if (!rs.is_object()) throw r.err("rope_scaling", "must be an object");
    Reader y{rs, r.origin};
    const std::string type = y.string("rope_type", y.string("type", ""));
    if (type == "llama3") {
      c.llama3_rope.enabled = true;
      c.llama3_rope.factor = y.number("factor", 8.0);
      c.llama3_rope.low_freq_factor = y.number("low_freq_factor", 1.0);
      c.llama3_rope.high_freq_factor = y.number("high_freq_factor", 4.0);
      c.llama3_rope.original_max_position_embeddings =
          y.integer("original_max_position_embeddings", 8192);
    } else if (type != "default") {
      throw r.err("rope_scaling", "type \"" + type + "\" is not supported (llama3, default)");
    }
  }
  if (r.present("quantization_config"))
    throw r.err("quantization_config",
                "is not supported for " + c.arch_name() + " (use the BF16 files or a GGUF)");
}

}  // namespace

ModelConfig ModelConfig::from_json_text(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    throw std::runtime_error(origin + ": bad JSON: " + e.what());
  }
  if (!j.is_object()) throw std::runtime_error(origin + ": not a JSON object");
  Reader r{j, origin};
  ModelConfig c;

  // Architecture: from "architectures" (HF) or "model_type".
  std::string arch;
  if (r.present("architectures")) {
    if (!j["architectures"].is_array() || j["architectures"].empty() ||
        !j["architectures"][0].is_string())
      throw r.err("architectures", "must be a list of names");
    arch = j["architectures"][0].get<std::string>();
  } else {
    std::string mt = r.string("model_type", "");
    arch = mt == "deepseek_v2"   ? "DeepseekV2ForCausalLM"
           : mt == "deepseek_v3" ? "DeepseekV3ForCausalLM"
                                 : mt;
  }
  if (arch == "DeepseekV2ForCausalLM")
    c.arch = Arch::DeepseekV2;
  else if (arch == "DeepseekV3ForCausalLM")
    c.arch = Arch::DeepseekV3;
  else if (arch == "Qwen2ForCausalLM" || arch == "qwen2")
    c.arch = Arch::Qwen2;
  else if (arch == "LlamaForCausalLM" || arch == "llama")
    c.arch = Arch::Llama;
  else
    throw r.err("architectures", "\"" + arch +
                                     "\" is not supported (DeepseekV2ForCausalLM, "
                                     "DeepseekV3ForCausalLM, Qwen2ForCausalLM, LlamaForCausalLM)");
  if (!c.is_mla()) {
    dense_from_json(j, r, c);
    c.validate(origin);
    return c;
  }

  c.vocab_size = r.integer("vocab_size", 0, true);
  c.hidden_size = r.integer("hidden_size", 0, true);
  c.intermediate_size = r.integer("intermediate_size", 0, true);
  c.moe_intermediate_size = r.integer("moe_intermediate_size", 0);
  c.num_hidden_layers = r.integer("num_hidden_layers", 0, true);
  c.num_attention_heads = r.integer("num_attention_heads", 0, true);
  if (r.present("num_key_value_heads") &&
      r.integer("num_key_value_heads", 0) != c.num_attention_heads)
    throw r.err("num_key_value_heads", "must equal num_attention_heads for MLA");
  c.max_position_embeddings = r.integer("max_position_embeddings", 4096);

  c.q_lora_rank = r.integer("q_lora_rank", 0);
  c.kv_lora_rank = r.integer("kv_lora_rank", 0, true);
  c.qk_nope_head_dim = r.integer("qk_nope_head_dim", 0, true);
  c.qk_rope_head_dim = r.integer("qk_rope_head_dim", 0, true);
  c.v_head_dim = r.integer("v_head_dim", 0, true);

  c.n_routed_experts = r.integer("n_routed_experts", 0);
  c.n_shared_experts = r.integer("n_shared_experts", 0);
  c.num_experts_per_tok = r.integer("num_experts_per_tok", 0);
  c.first_k_dense_replace = r.integer("first_k_dense_replace", 0);
  c.moe_layer_freq = r.integer("moe_layer_freq", 1);

  const std::string scoring = r.string("scoring_func", "softmax");
  if (scoring == "softmax")
    c.scoring_func = ScoringFunc::Softmax;
  else if (scoring == "sigmoid")
    c.scoring_func = ScoringFunc::Sigmoid;
  else
    throw r.err("scoring_func", "\"" + scoring + "\" is not supported (softmax, sigmoid)");

  const std::string topk = r.string("topk_method", "greedy");
  if (topk == "greedy")
    c.topk_method = TopkMethod::Greedy;
  else if (topk == "group_limited_greedy")
    c.topk_method = TopkMethod::GroupLimitedGreedy;
  else if (topk == "noaux_tc")
    c.topk_method = TopkMethod::NoauxTc;
  else
    throw r.err("topk_method",
                "\"" + topk + "\" is not supported (greedy, group_limited_greedy, noaux_tc)");
  c.n_group = r.integer("n_group", 1);
  c.topk_group = r.integer("topk_group", 1);
  c.norm_topk_prob = r.boolean("norm_topk_prob", false);
  c.routed_scaling_factor = r.number("routed_scaling_factor", 1.0);

  c.rms_norm_eps = r.number("rms_norm_eps", 1e-6);
  c.rope_theta = r.number("rope_theta", 10000.0);
  c.tie_word_embeddings = r.boolean("tie_word_embeddings", false);
  c.num_nextn_predict_layers = r.integer("num_nextn_predict_layers", 0);

  const std::string act = r.string("hidden_act", "silu");
  if (act != "silu") throw r.err("hidden_act", "\"" + act + "\" is not supported (silu)");
  if (r.boolean("attention_bias", false))
    throw r.err("attention_bias", "true is not supported (DeepSeek models have no bias)");

  if (r.present("rope_scaling")) {
    const json& rs = j["rope_scaling"];
    if (!rs.is_object()) throw r.err("rope_scaling", "must be an object");
    Reader y{rs, origin};
    std::string type = y.string("type", y.string("rope_type", ""));
    if (type != "yarn")
      throw r.err("rope_scaling", "type \"" + type + "\" is not supported (yarn)");
    c.yarn.enabled = true;
    c.yarn.factor = y.number("factor", 1.0);
    c.yarn.original_max_position_embeddings = y.integer("original_max_position_embeddings", 4096);
    c.yarn.beta_fast = y.number("beta_fast", 32.0);
    c.yarn.beta_slow = y.number("beta_slow", 1.0);
    c.yarn.mscale = y.number("mscale", 1.0);
    c.yarn.mscale_all_dim = y.number("mscale_all_dim", 0.0);
  }

  if (r.present("quantization_config")) {
    const json& q = j["quantization_config"];
    Reader qr{q, origin};
    const std::string method = qr.string("quant_method", "");
    if (method != "fp8")
      throw r.err("quantization_config", "quant_method \"" + method + "\" is not supported (fp8)");
    const std::string fmt = qr.string("fmt", "e4m3");
    if (fmt != "e4m3")
      throw r.err("quantization_config", "fmt \"" + fmt + "\" is not supported (e4m3)");
    if (qr.present("weight_block_size")) {
      const json& b = q["weight_block_size"];
      if (!b.is_array() || b.size() != 2 || b[0] != 128 || b[1] != 128)
        throw r.err("quantization_config", "weight_block_size must be [128, 128]");
    }
    c.fp8_block_quant = true;
  }
  c.validate(origin);
  return c;
}

void ModelConfig::validate(const std::string& origin) const {
  auto fail = [&](const std::string& key, const std::string& msg) {
    throw std::runtime_error(origin + ": field \"" + key + "\" " + msg);
  };
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) fail(key, "must be > 0, got " + std::to_string(v));
  };
  // Upper bounds far beyond any real model, so that a corrupt file cannot ask for absurd memory.
  auto at_most = [&](const char* key, int64_t v, int64_t hi) {
    if (v > hi) fail(key, "is implausibly large: " + std::to_string(v));
  };
  const int64_t kBig = int64_t(1) << 24;
  // The fields every architecture has.
  at_most("vocab_size", vocab_size, kBig);
  at_most("hidden_size", hidden_size, kBig);
  at_most("intermediate_size", intermediate_size, kBig);
  at_most("num_hidden_layers", num_hidden_layers, 1 << 16);
  at_most("num_attention_heads", num_attention_heads, 1 << 16);
  at_most("max_position_embeddings", max_position_embeddings, int64_t(1) << 32);
  positive("vocab_size", vocab_size);
  positive("hidden_size", hidden_size);
  positive("intermediate_size", intermediate_size);
  positive("num_hidden_layers", num_hidden_layers);
  positive("num_attention_heads", num_attention_heads);
  if (!is_mla()) {  // Qwen2 / Llama
    at_most("head_dim", head_dim, 1 << 16);
    positive("max_position_embeddings", max_position_embeddings);
    if (num_key_value_heads <= 0 || num_attention_heads % num_key_value_heads != 0)
      fail("num_key_value_heads", "must divide num_attention_heads (" +
                                      std::to_string(num_attention_heads) + "), got " +
                                      std::to_string(num_key_value_heads));
    if (head_dim <= 0 || head_dim % 2)
      fail("head_dim", "must be a positive even number, got " + std::to_string(head_dim));
    if (rms_norm_eps <= 0) fail("rms_norm_eps", "must be > 0");
    if (rope_theta <= 0) fail("rope_theta", "must be > 0");
    if (llama3_rope.enabled) {
      const Llama3RopeConfig& l = llama3_rope;
      if (l.factor <= 0) fail("rope_scaling.factor", "must be > 0");
      if (l.low_freq_factor <= 0 || l.high_freq_factor <= l.low_freq_factor)
        fail("rope_scaling.high_freq_factor", "must exceed low_freq_factor (> 0)");
      if (l.original_max_position_embeddings <= 0)
        fail("rope_scaling.original_max_position_embeddings", "must be > 0");
    }
    return;
  }
  at_most("moe_intermediate_size", moe_intermediate_size, kBig);
  at_most("q_lora_rank", q_lora_rank, kBig);
  at_most("kv_lora_rank", kv_lora_rank, kBig);
  at_most("qk_nope_head_dim", qk_nope_head_dim, 1 << 16);
  at_most("qk_rope_head_dim", qk_rope_head_dim, 1 << 16);
  at_most("v_head_dim", v_head_dim, 1 << 16);
  at_most("n_routed_experts", n_routed_experts, 1 << 20);
  at_most("n_shared_experts", n_shared_experts, 1 << 20);
  at_most("num_nextn_predict_layers", num_nextn_predict_layers, 1 << 10);
  positive("kv_lora_rank", kv_lora_rank);
  positive("qk_nope_head_dim", qk_nope_head_dim);
  positive("v_head_dim", v_head_dim);
  if (q_lora_rank < 0) fail("q_lora_rank", "must be >= 0 or null");
  if (qk_rope_head_dim <= 0 || qk_rope_head_dim % 2)
    fail("qk_rope_head_dim",
         "must be a positive even number, got " + std::to_string(qk_rope_head_dim));
  if (rms_norm_eps <= 0) fail("rms_norm_eps", "must be > 0");
  if (rope_theta <= 0) fail("rope_theta", "must be > 0");
  if (n_routed_experts < 0) fail("n_routed_experts", "must be >= 0");
  if (n_routed_experts > 0) {
    positive("moe_intermediate_size", moe_intermediate_size);
    positive("moe_layer_freq", moe_layer_freq);
    if (num_experts_per_tok <= 0 || num_experts_per_tok > n_routed_experts)
      fail("num_experts_per_tok", "must be in 1.." + std::to_string(n_routed_experts) + ", got " +
                                      std::to_string(num_experts_per_tok));
    if (n_shared_experts < 0) fail("n_shared_experts", "must be >= 0");
    if (first_k_dense_replace < 0) fail("first_k_dense_replace", "must be >= 0");
    if (topk_method != TopkMethod::Greedy) {
      if (n_group <= 0 || n_routed_experts % n_group)
        fail("n_group", "must divide n_routed_experts (" + std::to_string(n_routed_experts) +
                            "), got " + std::to_string(n_group));
      if (topk_group <= 0 || topk_group > n_group)
        fail("topk_group", "must be in 1..n_group, got " + std::to_string(topk_group));
      if (num_experts_per_tok > topk_group * (n_routed_experts / n_group))
        fail("num_experts_per_tok", "exceeds the experts in topk_group groups");
      if (topk_method == TopkMethod::NoauxTc && n_routed_experts / n_group < 2)
        fail("n_group", "noaux_tc needs at least 2 experts per group");
    }
  }
  if (yarn.enabled) {
    if (yarn.factor <= 0) fail("rope_scaling.factor", "must be > 0");
    if (yarn.original_max_position_embeddings <= 0)
      fail("rope_scaling.original_max_position_embeddings", "must be > 0");
  }
  if (num_nextn_predict_layers < 0) fail("num_nextn_predict_layers", "must be >= 0");
}

double ModelConfig::softmax_scale() const {
  if (!is_mla()) return 1.0 / std::sqrt(double(head_dim));
  double s = 1.0 / std::sqrt(double(qk_head_dim()));
  if (yarn.enabled && yarn.mscale_all_dim != 0.0) {
    const double m = yarn_get_mscale(yarn.factor, yarn.mscale_all_dim);
    s *= m * m;
  }
  return s;
}

ModelConfig ModelConfig::load(const std::string& dir) {
  const std::string path = dir + "/config.json";
  std::ifstream f(path);
  if (!f) throw std::runtime_error(path + ": cannot open");
  std::stringstream ss;
  ss << f.rdbuf();
  return from_json_text(ss.str(), path);
}

std::string ModelConfig::arch_name() const {
  switch (arch) {
    case Arch::DeepseekV2:
      return "DeepseekV2ForCausalLM";
    case Arch::Qwen2:
      return "Qwen2ForCausalLM";
    case Arch::Llama:
      return "LlamaForCausalLM";
    case Arch::DeepseekV3:
      break;
  }
  return "DeepseekV3ForCausalLM";
}

}  // namespace whale
