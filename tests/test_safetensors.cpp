// Safetensors parsing and checkpoint loading: valid files load, every kind of malformed file is a
// clear error naming the file and tensor.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/safetensors.h"

using namespace whale;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::string make_file(const json& header, const std::string& data, int64_t len_override = -1) {
  std::string h = header.dump();
  uint64_t n = len_override >= 0 ? uint64_t(len_override) : h.size();
  std::string out(8, '\0');
  for (int i = 0; i < 8; i++) out[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return out + h + data;
}

std::vector<TensorView> parse(const std::string& bytes) {
  return parse_safetensors(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(),
                           "x.safetensors");
}

std::string error_of(const std::string& bytes) {
  try {
    parse(bytes);
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "";
}

json one_tensor(const std::string& dtype, std::vector<int64_t> shape, uint64_t b, uint64_t e) {
  return {{"w", {{"dtype", dtype}, {"shape", shape}, {"data_offsets", {b, e}}}}};
}

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("whale_st_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  void write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path / name, std::ios::binary) << bytes;
  }
  static inline int counter = 0;
};

}  // namespace

TEST(Safetensors, ParsesValidFile) {
  std::string data(2 * 3 * 2 + 4, '\0');
  json h = {{"a", {{"dtype", "BF16"}, {"shape", {2, 3}}, {"data_offsets", {0, 12}}}},
            {"b", {{"dtype", "F32"}, {"shape", {1}}, {"data_offsets", {12, 16}}}},
            {"__metadata__", {{"format", "pt"}}}};
  auto ts = parse(make_file(h, data));
  ASSERT_EQ(ts.size(), 2u);
  EXPECT_EQ(ts[0].name, "a");
  EXPECT_EQ(ts[0].dtype, DType::BF16);
  EXPECT_EQ(ts[0].numel(), 6);
  EXPECT_EQ(ts[1].nbytes, 4u);
}

TEST(Safetensors, RejectsMalformedHeaders) {
  EXPECT_NE(error_of("abc").find("too small"), std::string::npos);
  EXPECT_NE(
      error_of(make_file(one_tensor("F32", {1}, 0, 4), "\0\0\0\0", 1 << 30)).find("header length"),
      std::string::npos);
  std::string bad_json = make_file(one_tensor("F32", {1}, 0, 4), "");
  bad_json[8] = '#';
  EXPECT_NE(error_of(bad_json).find("bad JSON"), std::string::npos);
  EXPECT_NE(error_of(make_file(json::array(), "")).find("not a JSON object"), std::string::npos);
}

TEST(Safetensors, RejectsBadEntriesNamingTheTensor) {
  const std::string four(4, '\0');
  auto err = error_of(make_file(one_tensor("Q4", {1}, 0, 4), four));
  EXPECT_NE(err.find("'w'"), std::string::npos);
  EXPECT_NE(err.find("unsupported dtype Q4"), std::string::npos);
  err = error_of(make_file(one_tensor("F32", {2}, 0, 4), four));
  EXPECT_NE(err.find("needs 8 bytes"), std::string::npos) << err;
  err = error_of(make_file(one_tensor("F32", {2}, 0, 8), four));
  EXPECT_NE(err.find("truncated"), std::string::npos) << err;
  err = error_of(make_file(one_tensor("F32", {1}, 4, 0), four));
  EXPECT_NE(err.find("begin > end"), std::string::npos) << err;
  err = error_of(make_file(one_tensor("F32", {-1}, 0, 4), four));
  EXPECT_NE(err.find("negative"), std::string::npos) << err;
  err = error_of(make_file(one_tensor("F32", {1LL << 40, 1LL << 40}, 0, 4), four));
  EXPECT_NE(err.find("too large"), std::string::npos) << err;
  json h = {{"w", {{"dtype", "F32"}, {"shape", {1}}}}};
  EXPECT_NE(error_of(make_file(h, four)).find("missing data_offsets"), std::string::npos);
  h = {{"w", 3}};
  EXPECT_NE(error_of(make_file(h, four)).find("not an object"), std::string::npos);
}

TEST(Checkpoint, LoadsShardsThroughTheIndex) {
  TempDir d;
  d.write("model-00001-of-00002.safetensors",
          make_file(one_tensor("F32", {1}, 0, 4), std::string(4, '\0')));
  json h2 = {{"v", {{"dtype", "F16"}, {"shape", {2}}, {"data_offsets", {0, 4}}}}};
  d.write("model-00002-of-00002.safetensors", make_file(h2, std::string(4, '\0')));
  json idx = {
      {"metadata", {{"total_size", 8}}},
      {"weight_map",
       {{"w", "model-00001-of-00002.safetensors"}, {"v", "model-00002-of-00002.safetensors"}}}};
  d.write("model.safetensors.index.json", idx.dump());
  Checkpoint ck(d.path.string());
  EXPECT_EQ(ck.num_files(), 2u);
  EXPECT_TRUE(ck.has("w"));
  EXPECT_TRUE(ck.has("v"));
  const int64_t shape[1] = {2};
  EXPECT_EQ(ck.get("v", shape).dtype, DType::F16);
  const int64_t wrong[1] = {3};
  try {
    ck.get("v", wrong);
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("model-00002-of-00002.safetensors"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("has shape [2], config expects [3]"), std::string::npos);
  }
  try {
    ck.get("nope");
    FAIL();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("missing tensor 'nope'"), std::string::npos);
  }
}

TEST(Checkpoint, MissingShardAndDuplicatesAreErrors) {
  TempDir d;
  json idx = {{"weight_map", {{"w", "model-00001-of-00002.safetensors"}}}};
  d.write("model.safetensors.index.json", idx.dump());
  EXPECT_THROW(Checkpoint(d.path.string()), std::runtime_error);
  TempDir e;
  e.write("a.safetensors", make_file(one_tensor("F32", {1}, 0, 4), std::string(4, '\0')));
  e.write("b.safetensors", make_file(one_tensor("F32", {1}, 0, 4), std::string(4, '\0')));
  json idx2 = {{"weight_map", {{"w", "a.safetensors"}, {"x", "b.safetensors"}}}};
  e.write("model.safetensors.index.json", idx2.dump());
  try {
    Checkpoint ck(e.path.string());
    FAIL();
  } catch (const std::runtime_error& err) {
    EXPECT_NE(std::string(err.what()).find("also appears"), std::string::npos);
  }
  TempDir f;
  json idx3 = {{"weight_map", {{"w", "../etc/passwd"}}}};
  f.write("model.safetensors.index.json", idx3.dump());
  EXPECT_THROW(Checkpoint(f.path.string()), std::runtime_error);
  TempDir empty;
  EXPECT_THROW(Checkpoint(empty.path.string()), std::runtime_error);
}
