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
