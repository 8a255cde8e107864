// The safetensors writer (round trip through whale's reader, and byte-identical to the independent
// Python writer of tests/reference/safetensors_io.py, whose reader also reads it) and the training
// checkpoint directory: layout, values, atomic replacement, recovery after a crash between the
// renames, and clear errors for failed saves and damaged checkpoints.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "formats/safetensors.h"
#include "test_util.h"
#include "train/checkpoint.h"

using namespace whale;
using namespace whale::train;
using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("whale_ckpt_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string str(const std::string& name) const { return (path / name).string(); }
  static inline int counter = 0;
};

std::string read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void write_file(const fs::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary) << bytes;
}

std::vector<float> iota_floats(size_t n, float start, float step = 1.0f) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; i++) v[i] = start + step * float(i);
  return v;
}

// The message of the std::exception thrown by f, or "" when none is.
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_HAS(msg, part) \
  EXPECT_NE(std::string(msg).find(part), std::string::npos) << "message: " << (msg)

// The leftovers of a save beside DIR.
bool has_leftovers(const fs::path& dir) {
  return fs::exists(dir.string() + ".tmp") || fs::exists(dir.string() + ".old");
}

}  // namespace

// ------------------------------------------------------------------ safetensors writer

TEST(TrainCheckpoint, SafetensorsWriterRoundTrip) {
  TempDir d;
  const std::vector<float> a = iota_floats(6, -1.5f, 0.25f);
  const std::vector<float> b = {1.0f, 1.00390625f, 3.14159265f, -2.5e-3f};  // to BF16 (a tie)
  const uint16_t raw_bf16[2] = {0x3f80, 0xc000};                            // 1, -2
  const int32_t ints[3] = {-7, 0, 123456789};
  std::vector<SafetensorsEntry> ts = {
      {"z.first", DType::F32, {2, 3}, nullptr, a.data()},
      {"a.bf16", DType::BF16, {4}, nullptr, b.data()},
      {"raw.bf16", DType::BF16, {1, 2}, raw_bf16, nullptr},
      {"ids", DType::I32, {3}, ints, nullptr},
      {"empty", DType::F32, {0, 5}, nullptr, nullptr},
      {"scalar", DType::F32, {}, nullptr, a.data()},
  };
  const std::string path = d.str("x.safetensors");
  write_safetensors(path, ts, {{"format", "pt"}});

  const std::string bytes = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u);
  EXPECT_EQ(bytes.substr(8, 30), R"({"__metadata__":{"format":"pt")");
  EXPECT_EQ(bytes.size(), 8 + n + 24 + 8 + 4 + 12 + 0 + 4);
  EXPECT_EQ(bytes[8 + n - 1] == ' ' || bytes[8 + n - 1] == '}', true);

  SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), ts.size());
  std::map<std::string, const TensorView*> by;
  for (const TensorView& t : f.tensors()) by[t.name] = &t;
  // data in the given order
  EXPECT_LT(by["z.first"]->data, by["a.bf16"]->data);
  EXPECT_LT(by["a.bf16"]->data, by["raw.bf16"]->data);
  EXPECT_LT(by["raw.bf16"]->data, by["ids"]->data);
  EXPECT_EQ(by["z.first"]->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(std::memcmp(by["z.first"]->data, a.data(), 24), 0);
  EXPECT_EQ(by["a.bf16"]->dtype, DType::BF16);
  for (int i = 0; i < 4; i++) {
    uint16_t h;
    std::memcpy(&h, by["a.bf16"]->data + 2 * i, 2);
    EXPECT_EQ(h, f32_to_bf16(b[size_t(i)])) << i;
  }
  uint16_t h1;
  std::memcpy(&h1, by["a.bf16"]->data + 2, 2);
  EXPECT_EQ(h1, 0x3f80);  // 1 + 2^-8 is a tie between 1 and 1 + 2^-7: even -> 1
  EXPECT_EQ(std::memcmp(by["raw.bf16"]->data, raw_bf16, 4), 0);
  EXPECT_EQ(by["ids"]->dtype, DType::I32);
  EXPECT_EQ(std::memcmp(by["ids"]->data, ints, 12), 0);
  EXPECT_EQ(by["empty"]->numel(), 0);
  EXPECT_EQ(by["scalar"]->shape.size(), 0u);
  EXPECT_EQ(by["scalar"]->numel(), 1);

  // overwrite in place: the new contents replace the old, no temporary file stays
  write_safetensors(path, std::span(ts).first(1));
  EXPECT_EQ(SafetensorsFile(path).tensors().size(), 1u);
  EXPECT_EQ(std::distance(fs::directory_iterator(d.path), fs::directory_iterator()), 1);
}

// The independent Python reader reads our file, and the Python writer, given what it read,
// writes the very same bytes.
TEST(TrainCheckpoint, SafetensorsMatchesPythonWriter) {
  TempDir d;
  const std::vector<float> w = iota_floats(12, 0.5f, -0.125f);
  const std::vector<float> bf = {0.1f, -3.0f, 65536.5f, 1e-20f, 7.0f, -0.0f};
  const int32_t ids[2] = {5, -9};
  std::vector<SafetensorsEntry> ts = {
      {"model.layers.0.mlp.gate.weight", DType::F32, {3, 4}, nullptr, w.data()},
      {"model.embed_tokens.weight", DType::BF16, {2, 3}, nullptr, bf.data()},
      {"b.ids", DType::I32, {2}, ids, nullptr},
      {"e", DType::F32, {0}, nullptr, nullptr},
      {"norm", DType::F32, {5}, nullptr, w.data() + 7},  // 5 * 4 bytes: the header needs padding
  };
  const std::string mine = d.str("cpp.safetensors"), theirs = d.str("py.safetensors");
  write_safetensors(mine, ts, {{"format", "pt"}, {"step", "12"}});

  const std::string script = d.str("rw.py"), out = d.str("out.json");
  write_file(script,
             "import json, sys\n"
             "sys.path.insert(0, sys.argv[1])\n"
             "import safetensors_io as st\n"
             "arrays, dtypes, meta = st.read_safetensors(sys.argv[2])\n"
             "st.write_safetensors(sys.argv[3], [(n, dtypes[n], arrays[n]) for n in arrays], "
             "meta)\n"
             "print(json.dumps({'meta': meta, 'order': list(arrays), 'tensors': {n: {'dtype': "
             "dtypes[n], 'shape': list(arrays[n].shape), 'values': st.decode(arrays[n], "
             "dtypes[n]).reshape(-1).tolist()} for n in arrays}}))\n");
  const std::string cmd = "/usr/bin/python3 " + script + " " + WHALE_SOURCE_DIR +
                          "/tests/reference " + mine + " " + theirs + " > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const json r = json::parse(read_file(out));

  EXPECT_EQ(r["meta"], json({{"format", "pt"}, {"step", "12"}}));
  std::vector<std::string> order;
  for (const auto& t : ts) order.push_back(t.name);
  EXPECT_EQ(r["order"].get<std::vector<std::string>>(), order);
  const json& t = r["tensors"];
  EXPECT_EQ(t["model.layers.0.mlp.gate.weight"]["values"].get<std::vector<float>>(), w);
  EXPECT_EQ(t["model.layers.0.mlp.gate.weight"]["shape"], json({3, 4}));
  EXPECT_EQ(t["model.embed_tokens.weight"]["dtype"], "BF16");
  const std::vector<float> got = t["model.embed_tokens.weight"]["values"].get<std::vector<float>>();
  ASSERT_EQ(got.size(), bf.size());
  for (size_t i = 0; i < bf.size(); i++) EXPECT_EQ(got[i], bf16_to_f32(f32_to_bf16(bf[i]))) << i;
  EXPECT_EQ(t["b.ids"]["values"], json({5.0, -9.0}));
  EXPECT_EQ(t["e"]["shape"], json({0}));
  EXPECT_EQ(t["norm"]["values"].get<std::vector<float>>(),
            std::vector<float>(w.begin() + 7, w.end()));

  const std::string a = read_file(mine), b = read_file(theirs);
  EXPECT_EQ(a.size(), b.size());
  EXPECT_TRUE(a == b) << "C++ and Python files differ\nC++ header: " << a.substr(8, 200)
                      << "\nPython header: " << b.substr(8, 200);
}

TEST(TrainCheckpoint, SafetensorsWriterErrors) {
  TempDir d;
  const float x[2] = {1, 2};
  const std::string path = d.str("e.safetensors");
  auto write = [&](std::vector<SafetensorsEntry> ts) {
    return error_of([&] { write_safetensors(path, ts); });
  };
  EXPECT_HAS(write({{"w", DType::F32, {2}, nullptr, x}, {"w", DType::F32, {2}, nullptr, x}}),
             "tensor 'w' given twice");
  EXPECT_HAS(write({{"", DType::F32, {2}, nullptr, x}}), "empty tensor name");
  EXPECT_HAS(write({{"__metadata__", DType::F32, {2}, nullptr, x}}), "reserved");
  EXPECT_HAS(write({{"neg", DType::F32, {2, -1}, nullptr, x}}), "negative dimension -1");
  EXPECT_HAS(write({{"nodata", DType::F32, {2}, nullptr, nullptr}}), "'nodata': no data");
  EXPECT_HAS(write({{"ints", DType::I32, {2}, nullptr, x}}), "not I32");
  EXPECT_HAS(write({{"both", DType::F32, {2}, x, x}}), "both");
  EXPECT_FALSE(fs::exists(path));
  const std::string missing = d.str("no/such/dir/f.safetensors");
  const std::string m = error_of([&] {
    write_safetensors(missing, std::vector<SafetensorsEntry>{{"w", DType::F32, {2}, nullptr, x}});
  });
  EXPECT_HAS(m, missing);
  EXPECT_HAS(m, "cannot create");
  // nothing left behind
  EXPECT_EQ(std::distance(fs::directory_iterator(d.path), fs::directory_iterator()), 0);
}

// ------------------------------------------------------------------ checkpoints

namespace {

// A small model and optimiser state whose values depend on `version`.
struct Fixture {
  std::vector<float> embed, norm, m_embed, v_embed, m_norm, v_norm;
  std::vector<CkptTensor> model, opt;
  std::string config = R"({"model_type": "deepseek_v3", "hidden_size": 4})";
  explicit Fixture(float version) {
    embed = iota_floats(12, version, 0.5f);
    norm = iota_floats(4, 1.0f + version, 0.0f);
    m_embed = iota_floats(12, -version, 0.01f);
    v_embed = iota_floats(12, version * 1e-3f, 1e-4f);
    m_norm = iota_floats(4, 0.0f, version);
    v_norm = iota_floats(4, 2.0f, version);
    model = {{"model.embed_tokens.weight", {3, 4}, embed.data()},
             {"model.norm.weight", {4}, norm.data()}};
    opt = {{"exp_avg.model.embed_tokens.weight", {3, 4}, m_embed.data()},
           {"exp_avg_sq.model.embed_tokens.weight", {3, 4}, v_embed.data()},
           {"exp_avg.model.norm.weight", {4}, m_norm.data()},
           {"exp_avg_sq.model.norm.weight", {4}, v_norm.data()}};
  }
  json state(int64_t step) const { return {{"step", step}, {"rng", {1, 2, 3}}, {"lr", 1e-3}}; }
};

std::vector<float> load_model(const LoadedCheckpoint& ck, const std::string& name,
                              std::vector<int64_t> shape) {
  std::vector<float> v(
      size_t(std::accumulate(shape.begin(), shape.end(), int64_t(1), std::multiplies<int64_t>())));
  ck.model_tensor(name, shape, v.data());
  return v;
}

// Asserts that DIR holds the checkpoint of Fixture(version) at `step`.
void expect_checkpoint(const std::string& dir, float version, int64_t step) {
  Fixture f(version);
  const LoadedCheckpoint ck = load_checkpoint(dir);
  EXPECT_EQ(ck.state["step"], step);
  EXPECT_EQ(ck.config_json, f.config);
  EXPECT_EQ(load_model(ck, "model.embed_tokens.weight", {3, 4}), f.embed);
  EXPECT_EQ(load_model(ck, "model.norm.weight", {4}), f.norm);
  std::vector<float> v(12);
  ck.optimizer_tensor("exp_avg_sq.model.embed_tokens.weight", std::vector<int64_t>{3, 4}, v.data());
  EXPECT_EQ(v, f.v_embed);
}

void make_tokenizer_dir(const fs::path& dir) {
  fs::create_directories(dir);
  write_file(dir / "tokenizer.json", R"({"model": {"type": "BPE"}})");
  write_file(dir / "tokenizer_config.json", R"({"bos_token": "<bos>"})");
  write_file(dir / "generation_config.json", R"({"bos_token_id": 0})");
  write_file(dir / "notes.txt", "not a tokenizer file");
}

}  // namespace

TEST(TrainCheckpoint, SaveAndLoad) {
  TempDir d;
  const std::string dir = d.str("out/model"), tok = d.str("tok");
  make_tokenizer_dir(tok);
  Fixture f(1.0f);
  EXPECT_FALSE(checkpoint_exists(dir));
  save_checkpoint(dir, f.model, f.opt, f.config, f.state(10), tok);
  EXPECT_TRUE(checkpoint_exists(dir));
  EXPECT_FALSE(has_leftovers(dir));

  std::set<std::string> files;
  for (const auto& e : fs::directory_iterator(dir)) files.insert(e.path().filename().string());
  EXPECT_EQ(files,
            (std::set<std::string>{"config.json", "model.safetensors", "optimizer.safetensors",
                                   "trainer_state.json", "tokenizer.json", "tokenizer_config.json",
                                   "generation_config.json"}));
  EXPECT_EQ(read_file(dir + "/tokenizer_config.json"), R"({"bos_token": "<bos>"})");
  EXPECT_EQ(json::parse(read_file(dir + "/trainer_state.json")), f.state(10));
  expect_checkpoint(dir, 1.0f, 10);

  // whale's inference loader sees the model, in F32, and none of the optimiser state
  Checkpoint ck(dir);
  EXPECT_EQ(ck.names(),
            (std::vector<std::string>{"model.embed_tokens.weight", "model.norm.weight"}));
  const TensorView& e = ck.get("model.embed_tokens.weight", std::vector<int64_t>{3, 4});
  EXPECT_EQ(e.dtype, DType::F32);
  EXPECT_EQ(std::memcmp(e.data, f.embed.data(), 48), 0);

  // a second save replaces the first entirely; a trailing slash names the same directory
  Fixture g(2.0f);
  save_checkpoint(dir + "/", g.model, g.opt, g.config, g.state(20), "");
  expect_checkpoint(dir, 2.0f, 20);
  EXPECT_FALSE(fs::exists(dir + "/tokenizer.json"));  // no tokenizer given this time
  EXPECT_FALSE(has_leftovers(dir));
}

// Every way a save can fail leaves the previous checkpoint as it was, and says what failed.
TEST(TrainCheckpoint, FailedSaveKeepsPreviousCheckpoint) {
  TempDir d;
  const std::string dir = d.str("model");
  Fixture good(1.0f), next(2.0f);
  save_checkpoint(dir, good.model, good.opt, good.config, good.state(5), "");

  auto save_error = [&](auto&& change) {
    Fixture f(2.0f);
    std::string tok;
    json state = f.state(9);
    change(f, tok, state);
    const std::string m =
        error_of([&] { save_checkpoint(dir, f.model, f.opt, f.config, state, tok); });
    expect_checkpoint(dir, 1.0f, 5);
    EXPECT_FALSE(has_leftovers(dir));
    return m;
  };
  // a tokenizer directory that does not exist
  std::string m = save_error([&](Fixture&, std::string& tok, json&) { tok = d.str("nope"); });
  EXPECT_HAS(m, "saving checkpoint " + dir);
  EXPECT_HAS(m, d.str("nope") + " has no tokenizer.json");
  // a throw in the middle: the model file is written, then an optimiser tensor is bad
  m = save_error([](Fixture& f, std::string&, json&) { f.opt[2].name = f.opt[0].name; });
  EXPECT_HAS(m, "tensor 'exp_avg.model.embed_tokens.weight' given twice");
  m = save_error([](Fixture& f, std::string&, json&) { f.opt[3].data = nullptr; });
  EXPECT_HAS(m, "optimizer.safetensors");
  EXPECT_HAS(m, "no data");
  // a state that cannot be serialised (invalid UTF-8), a config that is not JSON
  m = save_error([](Fixture&, std::string&, json& s) { s["bad"] = std::string("\xff\xfe"); });
  EXPECT_HAS(m, "saving checkpoint");
  m = save_error([](Fixture& f, std::string&, json&) { f.config = "{oops"; });
  EXPECT_HAS(m, "config.json text is not valid JSON");
  // an unwritable place: DIR.tmp cannot be created because the parent is a regular file
  write_file(d.path / "file", "x");
  m = error_of([&] {
    save_checkpoint(d.str("file/model"), next.model, next.opt, next.config, next.state(1), "");
  });
  EXPECT_HAS(m, "saving checkpoint " + d.str("file/model"));
  EXPECT_FALSE(checkpoint_exists(d.str("file/model")));
  // and afterwards a good save still works
  save_checkpoint(dir, next.model, next.opt, next.config, next.state(9), "");
  expect_checkpoint(dir, 2.0f, 9);
}

// A crash between "DIR -> DIR.old" and "DIR.tmp -> DIR" leaves DIR missing: the loader reads
// DIR.old, and the next save puts things right.
TEST(TrainCheckpoint, RecoversFromCrashBetweenRenames) {
  TempDir d;
  const std::string dir = d.str("model");
  Fixture v1(1.0f), v2(2.0f), v3(3.0f);
  save_checkpoint(dir, v1.model, v1.opt, v1.config, v1.state(1), "");
  fs::rename(dir, dir + ".old");
  fs::create_directories(dir + ".tmp");  // the half-swapped new one
  write_file(fs::path(dir + ".tmp") / "model.safetensors", "garbage");
  write_file(fs::path(dir + ".tmp") / "stale.bin", "garbage");
  EXPECT_TRUE(checkpoint_exists(dir));
  const LoadedCheckpoint ck = load_checkpoint(dir);
  EXPECT_EQ(ck.dir, dir + ".old");
  expect_checkpoint(dir, 1.0f, 1);
  // even a failed save first moves the last good checkpoint back to DIR (for `whale run -m DIR`)
  EXPECT_HAS(error_of([&] { save_checkpoint(dir, v2.model, v2.opt, "{", v2.state(2), ""); }),
             "not valid JSON");
  EXPECT_TRUE(fs::exists(dir + "/model.safetensors"));
  EXPECT_FALSE(has_leftovers(dir));
  EXPECT_EQ(load_checkpoint(dir).dir, dir);
  expect_checkpoint(dir, 1.0f, 1);
  // the crash again; this time the save succeeds, and nothing of the stale DIR.tmp survives
  fs::rename(dir, dir + ".old");
  fs::create_directories(dir + ".tmp");
  write_file(fs::path(dir + ".tmp") / "stale.bin", "garbage");
  save_checkpoint(dir, v2.model, v2.opt, v2.config, v2.state(2), "");
  expect_checkpoint(dir, 2.0f, 2);
  EXPECT_FALSE(has_leftovers(dir));
  EXPECT_FALSE(fs::exists(dir + "/stale.bin"));
  EXPECT_EQ(load_checkpoint(dir).dir, dir);

  // a crash after the swap, before DIR.old was removed: DIR is the newest
  fs::copy(dir, dir + ".old");
  save_checkpoint(dir, v3.model, v3.opt, v3.config, v3.state(3), "");
  expect_checkpoint(dir, 3.0f, 3);
  EXPECT_FALSE(has_leftovers(dir));
}

TEST(TrainCheckpoint, DamagedCheckpointErrors) {
  TempDir d;
  const std::string dir = d.str("model");
  Fixture f(1.0f);
  auto fresh = [&] {
    fs::remove_all(dir);
    save_checkpoint(dir, f.model, f.opt, f.config, f.state(3), "");
  };
  auto load_error = [&] { return error_of([&] { load_checkpoint(dir); }); };
  std::vector<float> buf(12);

  EXPECT_HAS(error_of([&] { load_checkpoint(d.str("none")); }), d.str("none"));
  fresh();
  {
    const LoadedCheckpoint ck = load_checkpoint(dir);
    std::string m = error_of([&] {
      ck.model_tensor("model.layers.0.mlp.gate.weight", std::vector<int64_t>{4, 4}, buf.data());
    });
    EXPECT_HAS(m, dir + "/model.safetensors");
    EXPECT_HAS(m, "missing tensor 'model.layers.0.mlp.gate.weight'");
    m = error_of([&] {
      ck.model_tensor("model.embed_tokens.weight", std::vector<int64_t>{4, 3}, buf.data());
    });
    EXPECT_HAS(m, "tensor 'model.embed_tokens.weight' has shape [3, 4], expected [4, 3]");
    m = error_of([&] {
      ck.optimizer_tensor("exp_avg.model.norm.weight", std::vector<int64_t>{5}, buf.data());
    });
    EXPECT_HAS(m, dir + "/optimizer.safetensors");
    EXPECT_HAS(m, "has shape [4], expected [5]");
  }
  // a tensor of another dtype
  const int32_t ints[4] = {1, 2, 3, 4};
  write_safetensors(dir + "/optimizer.safetensors",
                    std::vector<SafetensorsEntry>{{"exp_avg.x", DType::I32, {4}, ints, nullptr}});
  EXPECT_HAS(error_of([&] {
               load_checkpoint(dir).optimizer_tensor("exp_avg.x", std::vector<int64_t>{4},
                                                     buf.data());
             }),
             "tensor 'exp_avg.x' has dtype I32, expected F32");
  // truncated and corrupt files
  fresh();
  const std::string model = read_file(dir + "/model.safetensors");
  write_file(dir + "/model.safetensors", model.substr(0, model.size() - 10));
  std::string m = load_error();
  EXPECT_HAS(m, dir + "/model.safetensors");
  EXPECT_HAS(m, "truncated");
  write_file(dir + "/model.safetensors", "abc");
  EXPECT_HAS(load_error(), "too small");
  fresh();
  write_file(dir + "/trainer_state.json", "{\"step\": ");
  m = load_error();
  EXPECT_HAS(m, dir + "/trainer_state.json");
  EXPECT_HAS(m, "bad JSON");
  for (const char* name : {"optimizer.safetensors", "config.json", "trainer_state.json"}) {
    fresh();
    fs::remove(fs::path(dir) / name);
    m = load_error();
    EXPECT_HAS(m, (fs::path(dir) / name).string() + ": missing");
    EXPECT_FALSE(checkpoint_exists(dir) && std::string(name) == "trainer_state.json");
  }
}

// BF16 model tensors (a checkpoint written by another tool) load as their f32 values.
TEST(TrainCheckpoint, LoadsBf16ModelTensors) {
  TempDir d;
  const std::string dir = d.str("model");
  Fixture f(1.0f);
  save_checkpoint(dir, f.model, f.opt, f.config, f.state(3), "");
  const std::vector<float> w = {1.5f, -2.0f, 0.1f, 3.0f};
  write_safetensors(dir + "/model.safetensors",
                    std::vector<SafetensorsEntry>{{"n", DType::BF16, {4}, nullptr, w.data()}});
  const LoadedCheckpoint ck = load_checkpoint(dir);
  std::vector<float> got(4);
  ck.model_tensor("n", std::vector<int64_t>{4}, got.data());
  for (size_t i = 0; i < 4; i++) EXPECT_EQ(got[i], bf16_to_f32(f32_to_bf16(w[i])));
  EXPECT_NE(got[2], 0.1f);  // rounded
}

// `whale run -m DIR` loads a saved checkpoint as it is: the tiny chat model, re-saved through
// save_checkpoint (F32, with the tokenizer), generates exactly what the original does.
TEST(TrainCheckpoint, WhaleRunLoadsCheckpoint) {
  const std::string src = whale::testing::chat_tiny_model();
  TempDir d;
  const std::string dir = d.str("model");
  Checkpoint in(src);
  std::vector<std::vector<float>> store;
  std::vector<CkptTensor> model;
  for (const std::string& name : in.names()) {
    const TensorView& t = in.get(name);
    std::vector<float> v(size_t(t.numel()));
    for (size_t i = 0; i < v.size(); i++) {
      if (t.dtype == DType::BF16) {
        uint16_t h;
        std::memcpy(&h, t.data + 2 * i, 2);
        v[i] = bf16_to_f32(h);
      } else {
        ASSERT_EQ(t.dtype, DType::F32) << name;
        std::memcpy(&v[i], t.data + 4 * i, 4);
      }
    }
    store.push_back(std::move(v));
    model.push_back({name, t.shape, store.back().data()});
  }
  save_checkpoint(dir, model, {}, read_file(src + "/config.json"), json{{"step", 0}},
                  whale::testing::kTokenizerDir);
  auto generate = [&](const std::string& m) {
    const std::string out = d.str("generated.txt");
    const std::string cmd = std::string(WHALE_BINARY) + " run -m " + m +
                            " -p 'Once upon a time' -n 8 --temp 0 --no-stats > " + out + " 2>&1";
    EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd << "\n" << read_file(out);
    return read_file(out);
  };
  const std::string want = generate(src), got = generate(dir);
  EXPECT_FALSE(want.empty());
  EXPECT_EQ(got, want);
}
