// Loading a model whose files disagree with its config: every problem is an error that names the
// file and the tensor (never a crash).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "model/model.h"

using namespace whale;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/models/";

std::string read_all(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Copies fixture `name` to a temp dir, letting `edit` rewrite the safetensors header JSON.
// The header keeps its length (padded with spaces) so the data offsets stay valid.
fs::path edited_copy(const std::string& name, const std::function<void(json&)>& edit) {
  static int n = 0;
  fs::path d = fs::temp_directory_path() /
               ("whale_load_" + std::to_string(::getpid()) + "_" + std::to_string(n++));
  fs::remove_all(d);
  fs::create_directories(d);
  fs::copy_file(kFixtures + name + "/config.json", d / "config.json");
  std::string bytes = read_all(kFixtures + name + "/model.safetensors");
  uint64_t len = 0;
  for (int i = 7; i >= 0; i--) len = (len << 8) | uint8_t(bytes[size_t(i)]);
  json h = json::parse(bytes.substr(8, len));
  h.erase("__metadata__");  // room for edits that lengthen the header
  edit(h);
  std::string text = h.dump();
  EXPECT_LE(text.size(), len);
  text.resize(len, ' ');
  bytes.replace(8, len, text);
  std::ofstream(d / "model.safetensors", std::ios::binary) << bytes;
  return d;
}

std::string load_error(const fs::path& d) {
  try {
    Model::load(d.string());
  } catch (const std::exception& e) {
    fs::remove_all(d);
    return e.what();
  }
  fs::remove_all(d);
  return "";
}

}  // namespace

TEST(ModelLoad, MissingTensorIsNamed) {
  auto d =
      edited_copy("v3", [](json& h) { h.erase("model.layers.1.mlp.experts.3.up_proj.weight"); });
  EXPECT_NE(load_error(d).find("missing tensor 'model.layers.1.mlp.experts.3.up_proj.weight'"),
            std::string::npos);
}

TEST(ModelLoad, WrongDtypeIsNamed) {
  auto d = edited_copy("v3", [](json& h) {
    h["model.layers.0.self_attn.o_proj.weight"]["dtype"] = "I16";  // same size as BF16
  });
  const std::string e = load_error(d);
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("'model.layers.0.self_attn.o_proj.weight' has dtype I16"), std::string::npos)
      << e;
  d = edited_copy("v3", [](json& h) { h["model.norm.weight"]["dtype"] = "I16"; });
  EXPECT_NE(load_error(d).find("'model.norm.weight' has dtype I16"), std::string::npos);
}

TEST(ModelLoad, WrongShapeIsNamed) {
  auto d = edited_copy("v3", [](json& h) {
    auto& t = h["model.layers.2.self_attn.kv_b_proj.weight"];
    auto s = t["shape"].get<std::vector<int64_t>>();
    t["shape"] = {s[1], s[0]};  // transposed: same byte count
  });
  const std::string e = load_error(d);
  EXPECT_NE(e.find("'model.layers.2.self_attn.kv_b_proj.weight' has shape"), std::string::npos)
      << e;
}

TEST(ModelLoad, Fp8WithoutScalesIsNamed) {
  auto d = edited_copy(
      "v3_fp8", [](json& h) { h.erase("model.layers.0.self_attn.q_a_proj.weight_scale_inv"); });
  const std::string e = load_error(d);
  EXPECT_NE(e.find("has no 'model.layers.0.self_attn.q_a_proj.weight_scale_inv'"),
            std::string::npos)
      << e;
}

TEST(ModelLoad, OffsetsPastTheEndAreNamed) {
  auto d = edited_copy("v3", [](json& h) {
    auto& off = h["model.embed_tokens.weight"]["data_offsets"];
    off = {off[0].get<uint64_t>() + (1ull << 32), off[1].get<uint64_t>() + (1ull << 32)};
  });
  const std::string e = load_error(d);
  EXPECT_NE(e.find("'model.embed_tokens.weight'"), std::string::npos) << e;
  EXPECT_NE(e.find("beyond the data section"), std::string::npos) << e;
}

TEST(ModelLoad, MtpLayersAreKeptNotAnError) {
  auto m = Model::load(kFixtures + "v3");
  EXPECT_GT(m->stats().mtp_params, 0);
  EXPECT_TRUE(m->checkpoint().has("model.layers.3.eh_proj.weight"));
}
