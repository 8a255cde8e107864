// Loading a model whose files disagree with its config: every problem is an error that names the
// file and the tensor (never a crash).
#include <gtest/gtest.h>

#include <cstring>
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

// Weights read into RAM (huge pages) and memory-mapped are the same bytes, so the model computes
// the same logits bit for bit; errors in a damaged file are named either way.
TEST(ModelLoad, RamAndMmapLoadTheSameWeights) {
  for (const char* name : {"v3_sharded", "v3_fp8"}) {
    Model::Options ram, map;
    ram.load = LoadMode::Ram;
    map.load = LoadMode::Mmap;
    auto a = Model::load(kFixtures + name, ram);
    auto b = Model::load(kFixtures + name, map);
    EXPECT_EQ(a->checkpoint().load_mode(), LoadMode::Ram);
    EXPECT_EQ(b->checkpoint().load_mode(), LoadMode::Mmap);
    ASSERT_EQ(a->checkpoint().names(), b->checkpoint().names());
    for (const std::string& t : a->checkpoint().names()) {
      const TensorView& x = a->checkpoint().get(t);
      const TensorView& y = b->checkpoint().get(t);
      ASSERT_EQ(x.nbytes, y.nbytes) << t;
      EXPECT_NE(x.data, y.data) << t;  // two copies, not one
      EXPECT_EQ(std::memcmp(x.data, y.data, x.nbytes), 0) << name << ": " << t;
    }
    const std::vector<int32_t> tokens = {1, 5, 9, 2, 7};
    KVCache ca = a->new_cache(16), cb = b->new_cache(16);
    const std::vector<float> la = a->forward(ca, tokens, true), lb = b->forward(cb, tokens, true);
    ASSERT_EQ(la.size(), lb.size());
    EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * sizeof(float)), 0) << name;
  }
}

TEST(ModelLoad, AutoReadsSmallModelsIntoRamAndMapsHugeOnes) {
  EXPECT_EQ(resolve_load_mode(LoadMode::Auto, size_t(1) << 20), LoadMode::Ram);
  EXPECT_EQ(resolve_load_mode(LoadMode::Auto, size_t(1) << 60), LoadMode::Mmap);
  EXPECT_EQ(resolve_load_mode(LoadMode::Mmap, 1), LoadMode::Mmap);
  EXPECT_EQ(resolve_load_mode(LoadMode::Ram, size_t(1) << 60), LoadMode::Ram);
  EXPECT_EQ(Model::load(kFixtures + "v3")->checkpoint().load_mode(), LoadMode::Ram);
}

TEST(ModelLoad, DamagedFileIsNamedInBothModes) {
  for (LoadMode mode : {LoadMode::Ram, LoadMode::Mmap}) {
    auto d = edited_copy("v3", [](json& h) {
      auto& off = h["model.norm.weight"]["data_offsets"];
      off = {off[0].get<uint64_t>() + (1ull << 32), off[1].get<uint64_t>() + (1ull << 32)};
    });
    std::string e;
    try {
      Model::Options o;
      o.load = mode;
      Model::load(d.string(), o);
    } catch (const std::exception& ex) {
      e = ex.what();
    }
    fs::remove_all(d);
    EXPECT_NE(e.find("'model.norm.weight'"), std::string::npos) << e;
    EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  }
}
