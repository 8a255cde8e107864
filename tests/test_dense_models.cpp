// The R1-Distill architectures (Qwen2ForCausalLM, LlamaForCausalLM: grouped-query attention,
// model/gqa.h) beyond the logits against the float64 reference (test_model_reference.cpp): their
// KV cache in every --kv-type, what a missing tensor or an impossible cache type says, the
// server's prompt cache over them, and that training refuses them with a reason.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "formats/gguf.h"
#include "formats/tokenizer.h"
#include "model/model.h"
#include "run/session.h"
#include "serve/engine.h"
#include "test_util.h"
#include "train/model_train.h"

namespace whale {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using namespace std::chrono_literals;

const std::string kFixtures = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/models/";

std::vector<int32_t> reference_tokens(const std::string& name) {
  std::ifstream f(kFixtures + name + "/reference.json");
  return json::parse(f)["tokens"].get<std::vector<int32_t>>();
}

// Logits of every position: half the tokens as one prefill, then one at a time.
std::vector<float> logits_of(const Model& m, const std::vector<int32_t>& ids) {
  KVCache cache = m.new_cache(64);
  const size_t half = ids.size() / 2;
  std::vector<float> out = m.forward(cache, std::span<const int32_t>(ids.data(), half), true);
  for (size_t i = half; i < ids.size(); i++) {
    const auto row = m.forward(cache, std::span<const int32_t>(&ids[i], 1), false);
    out.insert(out.end(), row.begin(), row.end());
  }
  return out;
}

// A long prompt in one prefill (its attention scores split over the threads, several query blocks)
// gives the logits of feeding it one token at a time, on both architectures.
TEST(DenseModels, LongPrefillMatchesTokenByToken) {
  for (const char* name : {"qwen2", "llama3"}) {
    auto m = Model::load(kFixtures + name);
    const int64_t V = m->config().vocab_size;
    std::mt19937 rng(8);
    std::vector<int32_t> ids(400);
    for (int32_t& t : ids) t = int32_t(rng() % uint32_t(V));
    KVCache a = m->new_cache(512), b = m->new_cache(512);
    const std::vector<float> all = m->forward(a, ids, true);
    std::vector<float> step;
    for (int32_t t : ids) {
      const auto row = m->forward(b, std::span<const int32_t>(&t, 1), false);
      step.insert(step.end(), row.begin(), row.end());
    }
    ASSERT_EQ(all.size(), step.size());
    const auto gap = whale::testing::logit_gap(all, step);
    EXPECT_LE(gap.max_err, 1e-4 * gap.max_ref) << name;
  }
}

TEST(DenseModels, KvCacheTypesStoreKeysAndValues) {
  auto m = Model::load(kFixtures + "llama3");
  const ModelConfig& c = m->config();
  // Keys and values of 2 KV heads x 32 per layer (each KV head a cache layer of its own).
  EXPECT_EQ(KVCache::bytes_per_token(c, KvType::F32), size_t(3 * 2 * 2 * 32 * 4));
  EXPECT_EQ(KVCache::bytes_per_token(c, KvType::BF16), size_t(3 * 2 * 2 * 32 * 2));
  EXPECT_EQ(KVCache::bytes_per_token(c, KvType::Q8), size_t(3 * 2 * 2 * 34));
  EXPECT_EQ(m->new_cache(8).layers(), 3 * 2);
  const std::vector<int32_t> ids = reference_tokens("llama3");
  const std::vector<float> want = logits_of(*m, ids);
  const int64_t V = c.vocab_size;
  for (KvType t : {KvType::BF16, KvType::Q8}) {
    m->set_kv_type(t);
    EXPECT_EQ(m->new_cache(8).type(), t);
    const std::vector<float> got = logits_of(*m, ids);
    ASSERT_EQ(got.size(), want.size());
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < want.size(); i++) {
      max_ref = std::max(max_ref, double(std::fabs(want[i])));
      max_err = std::max(max_err, double(std::fabs(got[i] - want[i])));
    }
    // Rounded keys and values move the logits a little, not to zero (the types really differ).
    EXPECT_LT(max_err, 0.03 * max_ref) << kv_type_name(t);
    EXPECT_GT(max_err, 1e-6 * max_ref) << kv_type_name(t);
    for (size_t r = 0; r < ids.size(); r++) {
      const float* g = got.data() + r * size_t(V);
      const float* w = want.data() + r * size_t(V);
      EXPECT_EQ(std::max_element(g, g + V) - g, std::max_element(w, w + V) - w)
          << kv_type_name(t) << " row " << r;
    }
  }
  // The qwen2 fixture's heads are 16 values: not whole Q8_0 blocks, and the error says which
  // size must be a multiple of 32.
  auto q = Model::load(kFixtures + "qwen2");
  try {
    q->set_kv_type(KvType::Q8);
    ADD_FAILURE() << "q8 accepted for 16-value rows";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("head_dim"), std::string::npos) << e.what();
  }
}

TEST(DenseModels, AMissingTensorIsNamed) {
  const fs::path dir =
      fs::path(::testing::TempDir()) / ("qwen2-missing-" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::copy(kFixtures + "qwen2", dir);
  // Rename one bias inside the safetensors header (same length: the file stays valid).
  std::string bytes = whale::testing::file_bytes((dir / "model.safetensors").string());
  const std::string from = "model.layers.1.self_attn.k_proj.bias",
                    to = "model.layers.1.self_attn.k_proj.bia_";
  const size_t at = bytes.find(from);
  ASSERT_NE(at, std::string::npos);
  bytes.replace(at, from.size(), to);
  std::ofstream(dir / "model.safetensors", std::ios::binary) << bytes;
  try {
    Model::load(dir.string());
    ADD_FAILURE() << "loaded without " << from;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(from), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

// The server's engine over a GQA cache (q8): a repeated prompt reuses its stored prefix and
// answers as a plain session does. (The bundled tokenizer only turns ids into text here: the
// fixture's 256 ids are all in its vocabulary.)
TEST(DenseModels, ServerPromptCacheReusesGqaPrefixes) {
  auto m = Model::load(kFixtures + "llama3");
  m->set_kv_type(KvType::Q8);
  const Tokenizer tok = Tokenizer::load(std::string(WHALE_SOURCE_DIR) + "/models/whale-r1-tiny");
  serve::EngineOptions o;
  o.parallel = 1;
  o.ctx = 128;
  serve::Engine e(*m, tok, o);
  auto job = [](std::vector<int32_t> prompt) {
    auto j = std::make_shared<serve::Job>();
    j->prompt = std::move(prompt);
    j->opt.max_tokens = 12;
    j->opt.sampling.greedy = true;
    return j;
  };
  auto collect = [](serve::Job& j) {
    std::string text, piece;
    while (j.wait_text(piece, 50ms)) text += piece;
    return text;
  };
  const std::vector<int32_t> x = reference_tokens("llama3");
  auto a = job(x);
  ASSERT_TRUE(e.submit(a));
  const std::string first = collect(*a);
  auto b = job({5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15});
  ASSERT_TRUE(e.submit(b));
  collect(*b);
  auto c = job(x);
  ASSERT_TRUE(e.submit(c));
  const std::string again = collect(*c);
  EXPECT_GE(c->cached_tokens, int64_t(x.size()) - 1);
  EXPECT_EQ(again, first);
  Session s(*m, 128);
  EXPECT_EQ(again, s.generate(x, tok, c->opt).text);
  e.stop();
}

// whale quantize writes llama.cpp's qwen2 / llama files (q/k rows of llama permuted into rotary
// pairs, Llama 3's scaling as rope_freqs.weight, Qwen2's biases in F32): F32 files give the
// reference logits, Q8_0 files nearly (random weights: a few percent of max |logit|).
TEST(DenseModels, QuantizeWritesLlamaCppsLayouts) {
  for (const std::string name : {"qwen2", "qwen2_tied", "llama3"}) {
    const std::string dir = kFixtures + name;
    const json ref = json::parse(whale::testing::file_bytes(dir + "/reference.json"));
    const std::vector<int32_t> tokens = ref["tokens"].get<std::vector<int32_t>>();
    const int64_t V = ref["vocab_size"].get<int64_t>();
    std::vector<float> want(tokens.size() * size_t(V));
    std::ifstream(dir + "/reference_logits.bin", std::ios::binary)
        .read(reinterpret_cast<char*>(want.data()), std::streamsize(want.size() * 4));
    for (const std::string type : {"f32", "q8_0"}) {
      const std::string out = ::testing::TempDir() + "/dense-" + name + "-" + type + "-" +
                              std::to_string(::getpid()) + ".gguf";
      const auto r =
          whale::testing::run_whale("quantize -m " + dir + " --type " + type + " --out " + out);
      ASSERT_EQ(r.code, 0) << r.out;
      const GgufFile f(out, false);
      EXPECT_EQ(f.get_string("general.architecture"), name == "llama3" ? "llama" : "qwen2");
      EXPECT_EQ(f.find_tensor("rope_freqs.weight") != nullptr, name == "llama3") << name;
      EXPECT_EQ(f.find_tensor("blk.0.attn_k.bias") != nullptr, name != "llama3") << name;
      EXPECT_EQ(f.find_tensor("output.weight") != nullptr, name != "qwen2_tied") << name;
      auto m = Model::load(out);
      EXPECT_EQ(m->config().rope_half_split, name != "llama3");
      KVCache cache = m->new_cache();
      const std::vector<float> got = m->forward(cache, tokens, true);
      ASSERT_EQ(got.size(), want.size());
      double max_ref = 0, max_err = 0;
      int same = 0;
      for (size_t i = 0; i < want.size(); i++) {
        max_ref = std::max(max_ref, double(std::fabs(want[i])));
        max_err = std::max(max_err, double(std::fabs(got[i] - want[i])));
      }
      for (size_t t = 0; t < tokens.size(); t++) {
        const float* g = got.data() + t * size_t(V);
        const float* w = want.data() + t * size_t(V);
        same += (std::max_element(g, g + V) - g) == (std::max_element(w, w + V) - w);
      }
      std::printf("[%s %s] max err / max |logit| = %.2e, argmax equal on %d of %zu rows\n",
                  name.c_str(), type.c_str(), max_err / max_ref, same, tokens.size());
      if (type == "f32") {
        EXPECT_LE(max_err, 1e-4 * max_ref) << name;
        EXPECT_EQ(same, int(tokens.size())) << name;
      } else {
        EXPECT_LE(max_err, 0.05 * max_ref) << name;
        EXPECT_GE(same, int(tokens.size()) - 2) << name;
      }
      fs::remove(out);
    }
  }
}

// `whale run --chat` on an R1-Distill-Qwen-shaped model, from its directory and from the Q8_0
// GGUF whale quantize makes of it (the tokenizer and template travel in the metadata): the same
// reasoning and answer.
TEST(DenseModels, DistillQwenChatsFromSafetensorsAndGguf) {
  const std::string script =
      "Okay, the user wants a sum. Two plus two makes four.\n</think>\n\nThe answer is 4!";
  const std::string dir = whale::testing::scripted_distill_qwen("distill-qwen-four", script);
  const std::string gguf =
      ::testing::TempDir() + "/distill-qwen-" + std::to_string(::getpid()) + ".gguf";
  const auto q = whale::testing::run_whale("quantize -m " + dir + " --type q8_0 --out " + gguf);
  ASSERT_EQ(q.code, 0) << q.out;
  for (const std::string& model : {dir, gguf}) {
    const auto r = whale::testing::run_whale("run -m " + model +
                                             " --chat -p 'What is 2+2?' -n 60 --temp 0 2>&1");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_NE(r.out.find(script), std::string::npos) << model << ":\n" << r.out;
  }
  fs::remove(gguf);
}

// The other commands on the same model: logits (the first row equals a forward pass), generate
// (the scripted ids through the cache), bench, perplexity and info (the GQA cache's bytes).
TEST(DenseModels, EveryCommandRunsOnThem) {
  const std::string dir = whale::testing::scripted_distill_qwen(
      "distill-qwen-four",
      "Okay, the user wants a sum. Two plus two makes four.\n</think>\n\nThe answer is 4!");
  auto m = Model::load(dir);
  const std::vector<int32_t> ids = {151646, 3838, 374, 220, 17, 10, 17, 30};
  KVCache cache = m->new_cache(64);
  const std::vector<float> want = m->forward(cache, ids, true);
  auto r = whale::testing::run_whale("logits -m " + dir +
                                     " --tokens 151646,3838,374,220,17,10,17,30 --all");
  ASSERT_EQ(r.code, 0) << r.out;
  const json rows = json::parse(r.out);
  ASSERT_EQ(rows.size(), ids.size());
  const int64_t V = m->config().vocab_size;
  for (size_t t = 0; t < ids.size(); t += 7)
    for (int64_t v = 0; v < V; v += 997)
      EXPECT_NEAR(rows[t][size_t(v)].get<double>(), want[t * size_t(V) + size_t(v)], 1e-4);

  r = whale::testing::run_whale("generate -m " + dir + " --tokens " +
                                "151646,3838,374 -n 3 --greedy --print-ids");
  ASSERT_EQ(r.code, 0) << r.out;
  KVCache c2 = m->new_cache(64);
  std::vector<int32_t> seq = {151646, 3838, 374};
  std::vector<float> lg = m->forward(c2, seq, false);
  std::string expect = "[";
  for (int i = 0; i < 3; i++) {
    const int32_t next = int32_t(std::max_element(lg.begin(), lg.end()) - lg.begin());
    if (i > 0) expect += ",";
    expect += std::to_string(next);
    lg = m->forward(c2, std::span<const int32_t>(&next, 1), false);
  }
  EXPECT_NE(r.out.find(expect + "]"), std::string::npos) << r.out << " want " << expect;

  r = whale::testing::run_whale("bench -m " + dir + " -p 16 -n 4 -t 1 --kv-type bf16");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"decode_tok_s\""), std::string::npos) << r.out;

  const std::string text = ::testing::TempDir() + "/dense-ppl-" + std::to_string(::getpid());
  {
    std::ofstream f(text);
    for (int i = 0; i < 20; i++) f << "The whale is a large animal that lives in the sea.\n";
  }
  r = whale::testing::run_whale("perplexity -m " + dir + " -f " + text + " --ctx 32 --json");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"ppl\""), std::string::npos) << r.out;
  fs::remove(text);

  r = whale::testing::run_whale("info -m " + dir + " --kv-type bf16");
  ASSERT_EQ(r.code, 0) << r.out;
  const json info = json::parse(r.out);
  EXPECT_EQ(info["architecture"], "Qwen2ForCausalLM");
  // 2 layers x 2 KV heads x (key + value) x 16 values.
  EXPECT_EQ(info["kv_cache_bytes_per_token_f32"], 2 * 2 * 2 * 16 * 4);
  EXPECT_EQ(info["kv_cache_bytes_per_token"], 2 * 2 * 2 * 16 * 2);
  // q8 needs whole Q8_0 blocks per head: a clear error, exit code 1.
  r = whale::testing::run_whale("info -m " + dir + " --kv-type q8 2>&1");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("head_dim a multiple of 32"), std::string::npos) << r.out;
}

TEST(DenseModels, TrainingRefusesThemWithAReason) {
  const ModelConfig c = ModelConfig::load(kFixtures + "qwen2");
  try {
    train::TrainModel t(c, train::LossConfig{});
    ADD_FAILURE() << "a Qwen2 config trained";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("Qwen2ForCausalLM"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace whale
