// config.json parsing: real configs load with the right values; impossible or unsupported values
// are errors naming the field.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "model/config.h"
#include "model/rope.h"

using namespace whale;
using json = nlohmann::json;

namespace {

// The published DeepSeek-V3 config.json (the fields that matter).
json v3_config() {
  return json::parse(R"({
    "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
    "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
    "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128,
    "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8,
    "moe_layer_freq": 1, "first_k_dense_replace": 3, "norm_topk_prob": true,
    "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 163840,
    "rms_norm_eps": 1e-06, "rope_theta": 10000, "attention_bias": false,
    "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                     "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096, "type": "yarn"},
    "tie_word_embeddings": false, "num_nextn_predict_layers": 1,
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8",
                            "weight_block_size": [128, 128]}
  })");
}

std::string error_of(const json& j) {
  try {
    ModelConfig::from_json_text(j.dump(), "config.json");
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, ParsesDeepSeekV3) {
  ModelConfig c = ModelConfig::from_json_text(v3_config().dump(), "config.json");
  EXPECT_EQ(c.arch, Arch::DeepseekV3);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.topk_method, TopkMethod::NoauxTc);
  EXPECT_EQ(c.scoring_func, ScoringFunc::Sigmoid);
  EXPECT_TRUE(c.fp8_block_quant);
  EXPECT_TRUE(c.yarn.enabled);
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  // softmax scale = 192^-0.5 * (0.1 ln 40 + 1)^2
  const double m = 0.1 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.softmax_scale(), m * m / std::sqrt(192.0), 1e-12);
}

TEST(Config, ParsesV2LiteWithNullQLora) {
  json j = v3_config();
  j["architectures"] = {"DeepseekV2ForCausalLM"};
  j["q_lora_rank"] = nullptr;
  j["scoring_func"] = "softmax";
  j["topk_method"] = "greedy";
  j.erase("rope_scaling");
  j.erase("quantization_config");
  ModelConfig c = ModelConfig::from_json_text(j.dump(), "config.json");
  EXPECT_EQ(c.arch, Arch::DeepseekV2);
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_FALSE(c.yarn.enabled);
  EXPECT_NEAR(c.softmax_scale(), 1.0 / std::sqrt(192.0), 1e-12);
}

TEST(Config, ImpossibleValuesNameTheField) {
  auto with = [](const char* key, json v) {
    json j = v3_config();
    j[key] = v;
    return error_of(j);
  };
  EXPECT_NE(with("num_experts_per_tok", 300).find("num_experts_per_tok"), std::string::npos);
  EXPECT_NE(with("kv_lora_rank", 0).find("\"kv_lora_rank\" must be > 0"), std::string::npos);
  EXPECT_NE(with("n_group", 7).find("n_group"), std::string::npos);
  EXPECT_NE(with("topk_group", 9).find("topk_group"), std::string::npos);
  EXPECT_NE(with("qk_rope_head_dim", 63).find("qk_rope_head_dim"), std::string::npos);
  EXPECT_NE(with("scoring_func", "relu").find("\"relu\" is not supported"), std::string::npos);
  EXPECT_NE(with("topk_method", "top1").find("topk_method"), std::string::npos);
  EXPECT_NE(with("hidden_size", "big").find("must be an integer"), std::string::npos);
  EXPECT_NE(with("architectures", json::array({"LlamaForCausalLM"})).find("not supported"),
            std::string::npos);
  EXPECT_NE(with("hidden_act", "gelu").find("hidden_act"), std::string::npos);
  EXPECT_NE(with("num_key_value_heads", 1).find("num_key_value_heads"), std::string::npos);
  json j = v3_config();
  j["rope_scaling"]["type"] = "dynamic";
  EXPECT_NE(error_of(j).find("rope_scaling"), std::string::npos);
  j = v3_config();
  j["quantization_config"]["weight_block_size"] = {64, 64};
  EXPECT_NE(error_of(j).find("weight_block_size"), std::string::npos);
  j = v3_config();
  j.erase("hidden_size");
  EXPECT_NE(error_of(j).find("\"hidden_size\" is required"), std::string::npos);
  EXPECT_NE(error_of(json::parse("[1]")).find("not a JSON object"), std::string::npos);
  try {
    ModelConfig::from_json_text("{bad", "config.json");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("bad JSON"), std::string::npos);
  }
}

// YaRN frequencies against values computed by hand from the formulas (dim 64, base 10000,
// factor 40, original 4096, beta 32/1): correction range [10, 23].
TEST(Rope, YarnFrequenciesBlendAsSpecified) {
  ModelConfig c = ModelConfig::from_json_text(v3_config().dump(), "config.json");
  Rope r(c);
  const auto& f = r.inv_freq();
  ASSERT_EQ(f.size(), 32u);
  auto base = [](int i) { return 1.0 / std::pow(10000.0, 2.0 * i / 64.0); };
  // low = floor(64 ln(4096/(32*2pi)) / (2 ln 10000)) = floor(10.9) = 10 ; high = ceil(22.3) = 23
  for (int i = 0; i <= 10; i++) EXPECT_NEAR(f[size_t(i)], base(i), 1e-15) << i;
  for (int i = 23; i < 32; i++) EXPECT_NEAR(f[size_t(i)], base(i) / 40.0, 1e-15) << i;
  const double ramp = (16.0 - 10.0) / 13.0;
  EXPECT_NEAR(f[16], base(16) / 40.0 * ramp + base(16) * (1 - ramp), 1e-15);
  EXPECT_NEAR(r.attn_factor(), 1.0, 1e-15);  // mscale == mscale_all_dim
}

TEST(Rope, RotatesInterleavedPairs) {
  ModelConfig c = ModelConfig::from_json_text(v3_config().dump(), "config.json");
  c.yarn.enabled = false;
  c.qk_rope_head_dim = 4;
  Rope r(c);
  float x[4] = {1, 0, 0, 1};
  r.apply(x, 1, 4, 3);
  // pair 0 rotates by 3 rad, pair 1 by 3 * 10000^-0.5 rad
  EXPECT_NEAR(x[0], std::cos(3.0), 1e-6);
  EXPECT_NEAR(x[1], std::sin(3.0), 1e-6);
  EXPECT_NEAR(x[2], -std::sin(0.03), 1e-6);
  EXPECT_NEAR(x[3], std::cos(0.03), 1e-6);
}

// ------------------------------------------------------------------ the R1-Distill architectures

namespace {

// The published config.json of DeepSeek-R1-Distill-Qwen-1.5B (the fields that matter).
json qwen_1_5b_config() {
  return json::parse(R"({
    "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 1536, "initializer_range": 0.02,
    "intermediate_size": 8960, "max_position_embeddings": 131072, "max_window_layers": 21,
    "model_type": "qwen2", "num_attention_heads": 12, "num_hidden_layers": 28,
    "num_key_value_heads": 2, "rms_norm_eps": 1e-06, "rope_theta": 10000, "sliding_window": 4096,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "use_cache": true,
    "use_mrope": false, "use_sliding_window": false, "vocab_size": 151936
  })");
}

// The published config.json of DeepSeek-R1-Distill-Llama-8B.
json llama_8b_config() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"], "attention_bias": false, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 128001, "hidden_act": "silu", "hidden_size": 4096,
    "initializer_range": 0.02, "intermediate_size": 14336, "max_position_embeddings": 131072,
    "mlp_bias": false, "model_type": "llama", "num_attention_heads": 32, "num_hidden_layers": 32,
    "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "use_cache": true, "vocab_size": 128256
  })");
}

}  // namespace

TEST(Config, ParsesR1DistillQwen) {
  const ModelConfig c = ModelConfig::from_json_text(qwen_1_5b_config().dump(), "config.json");
  EXPECT_EQ(c.arch, Arch::Qwen2);
  EXPECT_FALSE(c.is_mla());
  EXPECT_EQ(c.num_attention_heads, 12);
  EXPECT_EQ(c.num_key_value_heads, 2);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_EQ(c.rope_dim(), 128);
  EXPECT_TRUE(c.qkv_bias);
  EXPECT_FALSE(c.o_bias);
  EXPECT_TRUE(c.rope_half_split);
  EXPECT_FALSE(c.tie_word_embeddings);
  EXPECT_EQ(c.vocab_size, 151936);
  EXPECT_DOUBLE_EQ(c.softmax_scale(), 1.0 / std::sqrt(128.0));
  EXPECT_EQ(c.arch_name(), "Qwen2ForCausalLM");
}

TEST(Config, ParsesR1DistillLlama) {
  const ModelConfig c = ModelConfig::from_json_text(llama_8b_config().dump(), "config.json");
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.num_key_value_heads, 8);
  EXPECT_EQ(c.head_dim, 128);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_TRUE(c.llama3_rope.enabled);
  EXPECT_DOUBLE_EQ(c.llama3_rope.factor, 8.0);
  EXPECT_EQ(c.llama3_rope.original_max_position_embeddings, 8192);
  EXPECT_DOUBLE_EQ(c.rms_norm_eps, 1e-5);
  // Llama 3's scaling, against the formula computed here: frequency i of 64 for theta 5e5.
  const Rope rope(c);
  const auto& f = rope.inv_freq();
  ASSERT_EQ(f.size(), 64u);
  for (size_t i = 0; i < f.size(); i++) {
    const double base = 1.0 / std::pow(500000.0, double(2 * i) / 128.0);
    const double wavelen = 2 * M_PI / base;
    double want = base;
    if (wavelen > 8192.0)
      want = base / 8.0;
    else if (wavelen >= 2048.0) {
      const double s = (8192.0 / wavelen - 1.0) / 3.0;
      want = (1 - s) * base / 8.0 + s * base;
    }
    EXPECT_NEAR(f[i], want, 1e-12 * base) << i;
  }
  EXPECT_LT(f[63], 1.0 / std::pow(500000.0, 126.0 / 128.0) / 7.9);  // the longest wavelengths
  EXPECT_DOUBLE_EQ(f[0], 1.0);                                      // the shortest: kept
}

TEST(Config, UnsupportedDenseSettingsNameTheField) {
  json q = qwen_1_5b_config();
  q["use_sliding_window"] = true;
  EXPECT_NE(error_of(q).find("\"use_sliding_window\""), std::string::npos) << error_of(q);
  json l = llama_8b_config();
  l["rope_scaling"]["rope_type"] = "longrope";
  EXPECT_NE(error_of(l).find("\"rope_scaling\""), std::string::npos) << error_of(l);
  EXPECT_NE(error_of(l).find("longrope"), std::string::npos) << error_of(l);
  l = llama_8b_config();
  l["num_key_value_heads"] = 5;
  EXPECT_NE(error_of(l).find("\"num_key_value_heads\""), std::string::npos) << error_of(l);
  l = llama_8b_config();
  l["mlp_bias"] = true;
  EXPECT_NE(error_of(l).find("\"mlp_bias\""), std::string::npos) << error_of(l);
  q = qwen_1_5b_config();
  q["hidden_act"] = "gelu";
  EXPECT_NE(error_of(q).find("\"hidden_act\""), std::string::npos) << error_of(q);
}

TEST(Rope, HalfSplitRotatesFirstWithSecondHalf) {
  ModelConfig c = ModelConfig::from_json_text(qwen_1_5b_config().dump(), "config.json");
  c.head_dim = 4;
  const Rope rope(c);
  // Pairs (x0, x2) and (x1, x3), angles pos * inv_freq[0] and pos * inv_freq[1].
  float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  rope.apply(x, 1, 4, 3);
  const double a0 = 3 * rope.inv_freq()[0], a1 = 3 * rope.inv_freq()[1];
  EXPECT_NEAR(x[0], 1 * std::cos(a0) - 3 * std::sin(a0), 1e-6);
  EXPECT_NEAR(x[2], 3 * std::cos(a0) + 1 * std::sin(a0), 1e-6);
  EXPECT_NEAR(x[1], 2 * std::cos(a1) - 4 * std::sin(a1), 1e-6);
  EXPECT_NEAR(x[3], 4 * std::cos(a1) + 2 * std::sin(a1), 1e-6);
}
