// DeepSeek models from GGUF files written by llama.cpp's own gguf-py (tests/reference/
// gguf_model_fixture.py): split attn_k_b / attn_v_b and the older attn_kv_b, stacked experts,
// exp_probs_b, Q8_0 / Q4_0 / Q4_1 / Q5_0 / Q5_1 / BF16 / F16 / F32 tensors. Logits against the
// float64 PyTorch reference run on the weights gguf-py dequantizes from the same file: with the
// int8 kernels off (exact f32 activations) whale reads the blocks in place and computes in f32, so
// the tolerance is the usual 1e-4 of max |logit|. With them on (the default, kernels/qlinear.h)
// the activations are rounded to 8 bits: the kernels' bound is tested in test_qlinear.cpp, and the
// cost on a trained model (where routing is not a coin toss between near-tied experts, as in these
// random fixtures) below.

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "formats/gguf.h"
#include "formats/gguf_export.h"
#include "formats/gguf_model.h"
#include "formats/tokenizer.h"
#include "kernels/cpu.h"
#include "kernels/linear.h"
#include "kernels/qlinear.h"
#include "kernels/repack.h"
#include "model/model.h"
#include "reason/examples.h"
#include "reason/task.h"
#include "run/perplexity.h"
#include "tensor/quant.h"
#include "test_util.h"

using namespace whale;
using json = nlohmann::json;

namespace {

const std::string kDir = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/gguf/models/";

struct Reference {
  std::vector<int32_t> tokens, greedy;
  int64_t vocab = 0;
  std::vector<float> logits;
  std::vector<std::string> files;  // the GGUF files (a split model's shards), the first first
  std::string path() const { return kDir + files.at(0); }
};

Reference load_reference(const std::string& name) {
  std::ifstream f(kDir + name + ".json");
  if (!f)
    throw std::runtime_error(name + ".json missing: run tests/reference/gguf_model_fixture.py");
  const json j = json::parse(f);
  Reference r;
  r.tokens = j["tokens"].get<std::vector<int32_t>>();
  r.greedy = j["greedy"].get<std::vector<int32_t>>();
  r.vocab = j["vocab_size"].get<int64_t>();
  r.files = j.value("files", std::vector<std::string>{name + ".gguf"});
  std::ifstream lf(kDir + j["logits"].get<std::string>(), std::ios::binary);
  r.logits.resize(r.tokens.size() * size_t(r.vocab));
  lf.read(reinterpret_cast<char*>(r.logits.data()), std::streamsize(r.logits.size() * 4));
  if (!lf) throw std::runtime_error(name + ": reference logits short");
  return r;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, int64_t V,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double max_ref = 0, max_err = 0;
  for (size_t i = 0; i < want.size(); i++) {
    max_ref = std::max(max_ref, double(std::fabs(want[i])));
    max_err = std::max(max_err, double(std::fabs(got[i] - want[i])));
  }
  for (size_t r = 0; r < want.size() / size_t(V); r++) {
    const float* g = got.data() + r * size_t(V);
    const float* w = want.data() + r * size_t(V);
    EXPECT_EQ(std::max_element(g, g + V) - g, std::max_element(w, w + V) - w)
        << what << ": argmax differs at row " << r;
  }
  EXPECT_LE(max_err, 1e-4 * max_ref) << what << ": max |err| " << max_err;
  std::printf("[%s] max err / max |logit| = %.2e\n", what.c_str(), max_err / max_ref);
}

class Int8Off {
 public:
  Int8Off() : saved_(int8_activations_enabled()) { set_int8_activations(false); }
  ~Int8Off() { set_int8_activations(saved_); }

 private:
  bool saved_;
};

class GgufModel : public ::testing::TestWithParam<std::string> {
  Int8Off exact_;
};

TEST_P(GgufModel, LogitsMatchReferenceInEveryAttentionPath) {
  const Reference ref = load_reference(GetParam());
  auto m = Model::load(ref.path());
  ASSERT_EQ(m->config().vocab_size, ref.vocab);
  for (AttnMode mode : {AttnMode::Naive, AttnMode::Absorbed}) {
    KVCache cache = m->new_cache();
    expect_close(m->forward(cache, ref.tokens, true, mode), ref.logits, ref.vocab,
                 GetParam() + (mode == AttnMode::Naive ? " naive" : " absorbed"));
  }
  KVCache cache = m->new_cache();  // one token at a time through the cache
  std::vector<float> decoded;
  for (int32_t t : ref.tokens) {
    auto row = m->forward(cache, std::span<const int32_t>(&t, 1), false);
    decoded.insert(decoded.end(), row.begin(), row.end());
  }
  expect_close(decoded, ref.logits, ref.vocab, GetParam() + " decode");
}

TEST_P(GgufModel, GreedyIdsMatchReference) {
  const Reference ref = load_reference(GetParam());
  auto m = Model::load(ref.path());
  KVCache cache = m->new_cache();
  std::vector<float> logits = m->forward(cache, ref.tokens, false);
  std::vector<int32_t> got;
  for (size_t i = 0; i < ref.greedy.size(); i++) {
    const int32_t next = int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
    got.push_back(next);
    logits = m->forward(cache, std::span<const int32_t>(&next, 1), false);
  }
  EXPECT_EQ(got, ref.greedy);
}

INSTANTIATE_TEST_SUITE_P(Files, GgufModel,
                         ::testing::Values("v3_q8_0", "v3_mixed", "v2_bf16", "v3_split",
                                           "qwen2_q8_0", "llama3_q4_0"));

// Read into RAM on AVX-512, the Q4_0 / Q8_0 matrices that only linear() reads (MLA's k_b / v_b
// halves included: linear() reads them a head at a time) are repacked in place
// (kernels/repack.h); mapped, or with repacking off, they stay as stored. The repacked model's
// logits equal the stored layout's up to the f32 summation order (the same int8 products), and
// its greedy ids too, in prefill and decode.
TEST(GgufRepack, RepackedModelsComputeWhatTheFileSays) {
  if (active_isa() != Isa::Avx512) GTEST_SKIP() << "repacking is for the AVX-512 kernels";
  struct RepackScope {
    ~RepackScope() { set_repack(true); }
  } restore;
  for (const std::string name : {"llama3_q4_0", "v3_mixed", "v3_q8_0", "qwen2_q8_0"}) {
    const Reference ref = load_reference(name);
    Model::Options ram, mapped;
    ram.load = LoadMode::Ram;
    mapped.load = LoadMode::Mmap;
    set_repack(true);
    auto packed = Model::load(ref.path(), ram);
    auto as_mapped = Model::load(ref.path(), mapped);
    set_repack(false);
    auto plain = Model::load(ref.path(), ram);
    set_repack(true);
    int repacked = 0, left = 0;
    for (const std::string& t : packed->checkpoint().names()) {
      const DType d = packed->checkpoint().get(t).dtype;
      repacked += dtype_is_x16(d);
      left += d == DType::Q4_0 || d == DType::Q8_0;
      EXPECT_FALSE(dtype_is_x16(plain->checkpoint().get(t).dtype)) << t;
      EXPECT_FALSE(dtype_is_x16(as_mapped->checkpoint().get(t).dtype)) << t;
      for (const char* other : {"embed_tokens", "kv_b_proj"}) {
        if (t.find(other) != std::string::npos) {
          EXPECT_FALSE(dtype_is_x16(d)) << t << " is not read by linear() alone";
        }
      }
    }
    EXPECT_GT(repacked, 3) << name;
    std::printf("[%s] %d matrices repacked, %d Q4_0 / Q8_0 left as stored\n", name.c_str(),
                repacked, left);
    KVCache a = packed->new_cache(), b = plain->new_cache();
    expect_close(packed->forward(a, ref.tokens, true), plain->forward(b, ref.tokens, true),
                 ref.vocab, name + " repacked vs stored, prefill");
    std::vector<float> la, lb;
    for (size_t i = 0; i < 6; i++) {
      const int32_t t = ref.greedy.at(i % ref.greedy.size());
      la = packed->forward(a, std::span<const int32_t>(&t, 1), false);
      lb = plain->forward(b, std::span<const int32_t>(&t, 1), false);
      expect_close(la, lb, ref.vocab, name + " repacked vs stored, decode");
    }
  }
}

TEST(GgufModelConfig, HyperParametersComeFromTheMetadata) {
  const ModelConfig v3 = gguf_model_config(kDir + "v3_q8_0.gguf");
  EXPECT_EQ(v3.arch, Arch::DeepseekV3);
  EXPECT_EQ(v3.hidden_size, 64);
  EXPECT_EQ(v3.num_hidden_layers, 3);
  EXPECT_EQ(v3.num_attention_heads, 2);
  EXPECT_EQ(v3.q_lora_rank, 64);
  EXPECT_EQ(v3.kv_lora_rank, 32);
  EXPECT_EQ(v3.qk_nope_head_dim, 32);
  EXPECT_EQ(v3.qk_rope_head_dim, 32);
  EXPECT_EQ(v3.v_head_dim, 32);
  EXPECT_EQ(v3.n_routed_experts, 8);
  EXPECT_EQ(v3.n_shared_experts, 1);
  EXPECT_EQ(v3.num_experts_per_tok, 2);
  EXPECT_EQ(v3.first_k_dense_replace, 1);
  EXPECT_EQ(v3.scoring_func, ScoringFunc::Sigmoid);
  EXPECT_EQ(v3.topk_method, TopkMethod::NoauxTc);
  EXPECT_EQ(v3.n_group, 4);
  EXPECT_EQ(v3.topk_group, 2);
  EXPECT_TRUE(v3.norm_topk_prob);
  EXPECT_NEAR(v3.routed_scaling_factor, 2.5, 1e-6);
  EXPECT_TRUE(v3.yarn.enabled);
  EXPECT_NEAR(v3.yarn.factor, 40, 1e-6);
  EXPECT_NEAR(v3.yarn.mscale_all_dim, 1.0, 1e-6);
  EXPECT_FALSE(v3.tie_word_embeddings);
  const ModelConfig v2 = gguf_model_config(kDir + "v2_bf16.gguf");
  EXPECT_EQ(v2.arch, Arch::DeepseekV2);
  EXPECT_EQ(v2.q_lora_rank, 0);
  EXPECT_EQ(v2.scoring_func, ScoringFunc::Softmax);
  EXPECT_EQ(v2.topk_method, TopkMethod::Greedy);
  EXPECT_NEAR(v2.yarn.mscale_all_dim, 0.707, 1e-6);
}

// A copy of a fixture with `from` replaced by `to` (same length) at its first occurrence.
std::string patched(const std::string& name, const std::string& from, const std::string& to) {
  std::string bytes = whale::testing::file_bytes(kDir + name);
  const size_t at = bytes.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  EXPECT_EQ(from.size(), to.size());
  bytes.replace(at, from.size(), to);
  const std::string path = ::testing::TempDir() + "/patched-" + std::to_string(::getpid()) + "-" +
                           std::to_string(std::hash<std::string>{}(to)) + ".gguf";
  std::ofstream(path, std::ios::binary) << bytes;
  return path;
}

std::string load_error(const std::string& path) {
  try {
    Model::load(path);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

// load_error on a temporary file, which is then removed.
std::string load_error_once(const std::string& path) {
  const std::string e = load_error(path);
  std::filesystem::remove(path);
  return e;
}

// v3_split is v3_q8_0's tensors in three shards written by gguf-py: the same logits bit for bit.
// A missing shard, a shard opened first, a first shard under another name, and a shard of
// another model are errors naming the file.
TEST(GgufSplit, ShardsLoadAsOneModelAndBadSetsAreNamed) {
  const Reference ref = load_reference("v3_split");
  ASSERT_EQ(ref.files.size(), 3u);
  EXPECT_EQ(ref.files[0], "v3_split-00001-of-00003.gguf");
  EXPECT_EQ(gguf_shard_paths(ref.path()).size(), 3u);
  {
    const GgufFile f(ref.path());
    EXPECT_EQ(f.files().size(), 3u);
    const GgufFile one(kDir + "v3_q8_0.gguf");
    EXPECT_EQ(f.tensors().size(), one.tensors().size());
    for (const GgufTensor& t : one.tensors()) {
      const GgufTensor* s = f.find_tensor(t.name);
      ASSERT_NE(s, nullptr) << t.name;
      ASSERT_EQ(s->nbytes, t.nbytes) << t.name;
      EXPECT_EQ(std::memcmp(s->data, t.data, t.nbytes), 0) << t.name;
    }
  }
  {
    Int8Off exact;
    auto split = Model::load(ref.path());
    auto one = Model::load(kDir + "v3_q8_0.gguf");
    KVCache a = split->new_cache(), b = one->new_cache();
    EXPECT_EQ(split->forward(a, ref.tokens, true), one->forward(b, ref.tokens, true));
  }
  // Copies of the shards in a folder of their own, then broken in turn.
  const std::string dir = ::testing::TempDir() + "/split-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  auto copy_set = [&](const std::string& prefix) {
    for (size_t i = 0; i < ref.files.size(); i++)
      std::filesystem::copy_file(kDir + ref.files[i],
                                 dir + "/" + prefix + ref.files[i].substr(8),  // "-0000K-of-..."
                                 std::filesystem::copy_options::overwrite_existing);
    return dir + "/" + prefix + "-00001-of-00003.gguf";
  };
  const std::string first = copy_set("m");
  EXPECT_NO_THROW(Model::load(first));
  std::filesystem::remove(dir + "/m-00003-of-00003.gguf");
  const std::string missing = load_error(first);
  EXPECT_NE(missing.find("shard 3 (" + dir + "/m-00003-of-00003.gguf) is missing"),
            std::string::npos)
      << missing;
  const std::string second = load_error(dir + "/m-00002-of-00003.gguf");
  EXPECT_NE(second.find("shard 2 of a model split into 3 files: open the first one"),
            std::string::npos)
      << second;
  std::filesystem::copy_file(first, dir + "/renamed.gguf");
  const std::string renamed = load_error(dir + "/renamed.gguf");
  EXPECT_NE(renamed.find("must be named PREFIX-00001-of-00003.gguf"), std::string::npos) << renamed;
  // Shard 3 replaced by shard 2 of the same set: it says it is shard 2.
  std::filesystem::copy_file(dir + "/m-00002-of-00003.gguf", dir + "/m-00003-of-00003.gguf");
  const std::string foreign = load_error(first);
  EXPECT_NE(foreign.find("says it is shard 2 of 3, expected shard 3 of 3"), std::string::npos)
      << foreign;
  std::filesystem::remove_all(dir);
}

TEST(GgufModelErrors, NameTheArchitectureTensorOrKey) {
  const std::string arch = load_error_once(patched("v3_q8_0.gguf", "deepseek2", "deepseek9"));
  EXPECT_NE(arch.find("architecture 'deepseek9' is not supported"), std::string::npos) << arch;

  const std::string missing = load_error_once(
      patched("v3_q8_0.gguf", "blk.1.attn_output.weight", "blk.1.attn_outpux.weight"));
  EXPECT_NE(missing.find("'blk.1.attn_output.weight'"), std::string::npos) << missing;

  // A key renamed away: the hyper-parameter is missing.
  const std::string key = load_error_once(patched(
      "v3_q8_0.gguf", "deepseek2.attention.kv_lora_rank", "deepseek2.attention.kv_lora_ranx"));
  EXPECT_NE(key.find("deepseek2.attention.kv_lora_rank"), std::string::npos) << key;

  // No split and no unsplit kv_b in a layer.
  const std::string kvb =
      load_error_once(patched("v3_q8_0.gguf", "blk.2.attn_k_b.weight", "blk.2.attn_k_x.weight"));
  EXPECT_NE(kvb.find("attn_k_b.weight"), std::string::npos) << kvb;

  // Truncated: an error naming the file, no crash.
  std::string bytes = whale::testing::file_bytes(kDir + "v3_q8_0.gguf");
  const std::string cut = ::testing::TempDir() + "/cut-" + std::to_string(::getpid()) + ".gguf";
  std::ofstream(cut, std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  const std::string trunc = load_error_once(cut);
  EXPECT_NE(trunc.find(cut), std::string::npos) << trunc;
}

}  // namespace

// ------------------------------------------------------------------ tokenizer from GGUF metadata

namespace {

const std::string kTokDir = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/gguf/tokenizer";

}  // namespace

// The same cut-down DeepSeek-V3 tokenizer as Hugging Face files and as GGUF metadata written by
// gguf-py (tests/reference/gguf_tokenizer_fixture.py) give the same ids, text and specials.
TEST(GgufTokenizer, EncodesLikeTheHuggingFaceFiles) {
  const Tokenizer hf = Tokenizer::load(kTokDir);
  const Tokenizer gg = Tokenizer::load(kTokDir + "/deepseek-v3-cut.gguf");
  EXPECT_EQ(gg.bos_id(), hf.bos_id());
  EXPECT_EQ(gg.eos_id(), hf.eos_id());
  EXPECT_EQ(gg.add_bos(), hf.add_bos());
  EXPECT_EQ(gg.chat_template(), hf.chat_template());
  EXPECT_FALSE(gg.chat_template().empty());
  const std::vector<std::string> texts = {
      "The quick brown fox jumps over the lazy dog.",
      "Numbers: 1234567 + 89 = 1234656; pi ~ 3.14159",
      "你好，世界！こんにちは、カタカナ。",
      "def f(x):\n    return x * 2  # comment\n\n\tindented\r\n",
      "<｜User｜>What is "
      "2+2?<｜Assistant｜><think>\nsimple</think>\n\n\\boxed{4}<｜end▁of▁sentence｜>",
      "Émigré naïve café — “quotes” and 'single' ... !!! ???",
      "emoji 🐳🐋 and mixed русский текст",
      std::string("bad utf-8: \xff\xfe\xc3 end"),
      "   leading and trailing spaces   ",
  };
  for (const std::string& t : texts) {
    const std::vector<int32_t> a = hf.encode(t, true), b = gg.encode(t, true);
    EXPECT_EQ(a, b) << t;
    EXPECT_EQ(gg.decode(b), hf.decode(a)) << t;
  }
}

TEST(GgufTokenizer, AFileWithoutTokenizerMetadataNamesTheKey) {
  try {
    Tokenizer::load(kDir + "v3_q8_0.gguf");
    FAIL() << "expected an error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("tokenizer.ggml.model"), std::string::npos) << e.what();
  }
}

TEST(GgufCli, BenchRunsOnAGgufFile) {
  const auto r =
      whale::testing::run_whale("bench -m " + kDir + "v3_q8_0.gguf -p 16 -n 8 -t 1 --mmap");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("\"decode_tok_s\""), std::string::npos) << r.out;
}

// ------------------------------------------------------------------ kernels on GGUF blocks

namespace {

// Every 2-D tensor of the file as a WeightRef: linear, linear_t, weight_row and row slices through
// the dispatched kernels equal the reference loops (which dequantize element by element).
void check_kernels_on(const std::string& path) {
  const GgufFile f(path);
  int checked = 0;
  for (const GgufTensor& g : f.tensors()) {
    DType dt;
    if (g.ne.size() != 2 || !ggml_to_dtype(g.type, &dt)) continue;
    WeightRef w;
    w.dtype = dt;
    w.rows = g.ne[1];
    w.cols = g.ne[0];
    w.data = g.data;
    std::mt19937 rng(uint32_t(w.rows * 31 + w.cols));
    std::normal_distribution<float> nd;
    for (int64_t n : {1, 3, 17}) {
      std::vector<float> x(size_t(n * w.cols)), xt(size_t(n * w.rows));
      for (float& v : x) v = nd(rng);
      for (float& v : xt) v = nd(rng);
      std::vector<float> y(size_t(n * w.rows)), yr(y.size()), z(size_t(n * w.cols)), zr(z.size());
      linear(x.data(), n, w, y.data());
      ref::linear(x.data(), n, w, yr.data());
      linear_t(xt.data(), n, w, z.data());
      ref::linear_t(xt.data(), n, w, zr.data());
      for (size_t i = 0; i < y.size(); i++)
        ASSERT_NEAR(y[i], yr[i], 1e-4f * (1 + std::fabs(yr[i]))) << g.name << " n=" << n;
      for (size_t i = 0; i < z.size(); i++)
        ASSERT_NEAR(z[i], zr[i], 1e-4f * (1 + std::fabs(zr[i]))) << g.name << " linear_t";
    }
    const int64_t r0 = w.rows / 3, nr = std::max<int64_t>(1, w.rows / 2);
    const WeightRef s = w.slice_rows(r0, nr);
    std::vector<float> row(size_t(w.cols));
    for (int64_t r = 0; r < nr; r += std::max<int64_t>(1, nr / 5)) {
      weight_row(s, r, row.data());
      for (int64_t c = 0; c < w.cols; c++)
        ASSERT_EQ(row[size_t(c)], ref::weight_at(w, r0 + r, c)) << g.name << " row " << r0 + r;
    }
    checked++;
  }
  EXPECT_GT(checked, 3) << path;
}

}  // namespace

TEST(GgufKernels, QuantizedWeightsMatchTheReferenceLoops) {
  Int8Off exact;
  check_kernels_on(kDir + "v3_mixed.gguf");  // Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 BF16 F16 F32
  check_kernels_on(std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/gguf/types.gguf");  // K, IQ4
}

// whale's quantizers write the bytes llama.cpp's reference quantizers write (gguf-py's
// gguf.quants, tests/fixtures/gguf/quantize.gguf): normal, tiny, zero, outlier, constant and ramp
// rows. A 4/5-bit code may differ by one where x / d lands within float rounding of a half
// (float vs numpy's arithmetic order); the scales must be identical and such codes rare.
// Quantizes rows x cols floats row by row with whale's writer; and back to floats.
static std::vector<uint8_t> quantize_rows(GgmlType t, const float* x, int64_t rows, int64_t cols) {
  const size_t rb = ggml_row_bytes(t, cols);
  std::vector<uint8_t> q(rb * size_t(rows));
  for (int64_t r = 0; r < rows; r++) quantize_row(t, x + r * cols, cols, q.data() + r * rb);
  return q;
}
static std::vector<float> dequantize_rows(GgmlType t, const uint8_t* q, int64_t rows,
                                          int64_t cols) {
  const size_t rb = ggml_row_bytes(t, cols);
  std::vector<float> y(size_t(rows * cols));
  for (int64_t r = 0; r < rows; r++) dequantize_row(t, q + r * rb, cols, y.data() + r * cols);
  return y;
}

TEST(GgufQuantize, RowsMatchLlamaCppReferenceQuantizers) {
  const GgufFile f(std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/gguf/quantize.gguf");
  const GgufTensor* src = f.find_tensor("src");
  ASSERT_NE(src, nullptr);
  const int64_t rows = src->ne[1], cols = src->ne[0];
  const float* x = reinterpret_cast<const float*>(src->data);
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1,
                     GgmlType::F16, GgmlType::BF16}) {
    const std::string name = std::string(ggml_type_info(uint32_t(t))->name);
    const GgufTensor* q = f.find_tensor("q." + name);
    ASSERT_NE(q, nullptr) << name;
    const std::vector<uint8_t> got = quantize_rows(t, x, rows, cols);
    size_t differ = 0;
    for (size_t i = 0; i < got.size(); i++) differ += got[i] != q->data[i];
    // Dequantized, the two agree to one quantization step at most.
    const std::vector<float> a = dequantize_rows(t, got.data(), rows, cols),
                             b = dequantize_rows(t, q->data, rows, cols);
    size_t values_differ = 0;
    for (size_t i = 0; i < a.size(); i++) values_differ += a[i] != b[i];
    EXPECT_LE(values_differ, a.size() / 200) << name << ": " << values_differ << " values differ";
    std::printf("[%s] %zu of %zu bytes and %zu of %zu values differ from gguf-py\n", name.c_str(),
                differ, got.size(), values_differ, a.size());
  }
}

// The k-quant writers against llama.cpp's own C quantizers (ggml_quantize_chunk without an
// importance matrix, tests/reference/kquant_fixture.py): normal, tiny, zero, outlier, constant,
// ramp, positive and heavy-tailed rows of two super-blocks each. The search for each sub-block's
// scale and offset is a float computation in a fixed order, so the bytes should be the same; a
// code may differ where a product lands within float rounding of a half (llama.cpp's build may
// fuse multiply-adds), so at most one value in 200 may differ, and whale's squared error must not
// exceed llama.cpp's by more than 0.1%.
TEST(GgufQuantize, KQuantRowsMatchLlamaCpp) {
  const GgufFile f(std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/gguf/kquant.gguf");
  const GgufTensor* src = f.find_tensor("src");
  ASSERT_NE(src, nullptr);
  const int64_t rows = src->ne[1], cols = src->ne[0];
  const float* x = reinterpret_cast<const float*>(src->data);
  for (GgmlType t : {GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    const std::string name = std::string(ggml_type_info(uint32_t(t))->name);
    ASSERT_TRUE(quantizable(t)) << name;
    const GgufTensor* q = f.find_tensor("q." + name);
    ASSERT_NE(q, nullptr) << name;
    const std::vector<uint8_t> got = quantize_rows(t, x, rows, cols);
    size_t differ = 0;
    for (size_t i = 0; i < got.size(); i++) differ += got[i] != q->data[i];
    const std::vector<float> a = dequantize_rows(t, got.data(), rows, cols),
                             b = dequantize_rows(t, q->data, rows, cols);
    size_t values_differ = 0;
    double err_whale = 0, err_llama = 0;
    for (size_t i = 0; i < a.size(); i++) {
      values_differ += a[i] != b[i];
      err_whale += (double(a[i]) - x[i]) * (double(a[i]) - x[i]);
      err_llama += (double(b[i]) - x[i]) * (double(b[i]) - x[i]);
    }
    std::printf(
        "[%s] %zu of %zu bytes and %zu of %zu values differ from llama.cpp; squared error "
        "%.6g vs %.6g\n",
        name.c_str(), differ, got.size(), values_differ, a.size(), err_whale, err_llama);
    EXPECT_EQ(differ, 0u) << name;  // the same search and rounding: the same bytes
    EXPECT_EQ(values_differ, 0u) << name;
    EXPECT_LE(err_whale, err_llama * 1.001 + 1e-12) << name;
    // The zero row stays exactly zero; the constant row is reproduced to f16 precision.
    for (int64_t c = 0; c < cols; c++) {
      ASSERT_EQ(a[size_t(2 * cols + c)], 0.0f) << name;
      ASSERT_NEAR(a[size_t(4 * cols + c)], -0.75f, 2e-3) << name;
    }
  }
}

// Which tensors get which type: llama-quantize's rules for q4_k_m / q5_k_m (llama.cpp's
// llama_tensor_get_type: use_more_bits layers of ffn_down in Q6_K, output.weight in Q6_K) and its
// fallbacks for rows that are not whole 256-value super-blocks.
TEST(GgufQuantize, KMixRecipesFollowLlamaQuantize) {
  const QuantRecipe m4 = parse_quant_type("q4_k_m"), m5 = parse_quant_type("q5_k_m"),
                    q4 = parse_quant_type("q4_0"), q8 = parse_quant_type("q8_0"),
                    k6 = parse_quant_type("q6_k");
  EXPECT_EQ(m4.type, GgmlType::Q4_K);
  EXPECT_EQ(m4.file_type, 15u);
  EXPECT_EQ(m5.file_type, 17u);
  // 12 layers: use_more_bits is true for layers 0, 3, 6, 9, 10, 11.
  std::string more;
  for (int i = 0; i < 12; i++) {
    const std::string n = "blk." + std::to_string(i) + ".ffn_down_exps.weight";
    if (quant_tensor_type(m4, n, 2048, 12, 64) == GgmlType::Q6_K) more += std::to_string(i) + " ";
    EXPECT_EQ(
        quant_tensor_type(m4, "blk." + std::to_string(i) + ".ffn_up_exps.weight", 2048, 12, 64),
        GgmlType::Q4_K);
  }
  EXPECT_EQ(more, "0 3 6 9 10 11 ");
  EXPECT_EQ(quant_tensor_type(m5, "blk.3.ffn_down_shexp.weight", 2048, 12, 64), GgmlType::Q6_K);
  EXPECT_EQ(quant_tensor_type(m5, "blk.4.ffn_down_shexp.weight", 2048, 12, 64), GgmlType::Q5_K);
  EXPECT_EQ(quant_tensor_type(parse_quant_type("q4_k"), "blk.0.ffn_down.weight", 2048, 12, 64),
            GgmlType::Q4_K);  // the pure type: no mix
  EXPECT_EQ(quant_tensor_type(m4, "output.weight", 2048, 12, 64), GgmlType::Q6_K);
  EXPECT_EQ(quant_tensor_type(q4, "output.weight", 2048, 12, 64), GgmlType::Q6_K);
  EXPECT_EQ(quant_tensor_type(q4, "output.weight", 2080, 12, 64), GgmlType::Q8_0);  // 2080 % 256
  EXPECT_EQ(quant_tensor_type(m4, "output.weight", 2080, 12, 64), GgmlType::Q8_0);
  EXPECT_EQ(quant_tensor_type(q8, "output.weight", 2048, 12, 64), GgmlType::Q8_0);
  // Fallbacks: rows of 128 (MLA's qk_nope in attn_k_b) are not whole super-blocks.
  EXPECT_EQ(quant_tensor_type(m4, "blk.1.attn_k_b.weight", 128, 12, 64), GgmlType::Q5_0);
  EXPECT_EQ(quant_tensor_type(m5, "blk.1.attn_k_b.weight", 128, 12, 64), GgmlType::Q5_1);
  EXPECT_EQ(quant_tensor_type(k6, "blk.1.attn_k_b.weight", 128, 12, 64), GgmlType::Q8_0);
  EXPECT_EQ(quant_tensor_type(m4, "blk.1.attn_k_b.weight", 24, 12, 64), GgmlType::F16);
  // Eight routed experts: q4_k_m's attn_output in Q5_K.
  EXPECT_EQ(quant_tensor_type(m4, "blk.1.attn_output.weight", 2048, 12, 8), GgmlType::Q5_K);
  EXPECT_EQ(quant_tensor_type(m4, "blk.1.attn_output.weight", 2048, 12, 64), GgmlType::Q4_K);
}

TEST(GgufQuantize, HalfPrecisionRoundsToNearestEven) {
  for (uint32_t h = 0; h < 0x10000; h++) {  // every half survives the round trip
    const float f = f16_to_f32(uint16_t(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(f32_to_f16(f), uint16_t(h)) << h;
  }
  EXPECT_EQ(f32_to_f16(1.0f + 1.0f / 2048), 0x3c00);  // halfway: to even (down)
  EXPECT_EQ(f32_to_f16(1.0f + 3.0f / 2048), 0x3c02);  // halfway: to even (up)
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);            // rounds past the largest half
  EXPECT_EQ(f32_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0);  // half the smallest subnormal: to even 0
  EXPECT_EQ(f32_to_f16(std::ldexp(1.5f, -25)), 1);
}

// ------------------------------------------------------------------ whale quantize

namespace {

std::string tmp_gguf(const std::string& tag) {
  return ::testing::TempDir() + "/quantize-" + tag + "-" + std::to_string(::getpid()) + ".gguf";
}

std::vector<float> read_floats(const std::string& path, size_t n) {
  std::vector<float> v(n);
  std::ifstream f(path, std::ios::binary);
  f.read(reinterpret_cast<char*>(v.data()), std::streamsize(n * 4));
  return v;
}

}  // namespace

// A BF16 checkpoint written as F32 GGUF loses nothing: the reference logits to 1e-4; in Q8_0
// (with the 24-wide heads and 16-wide experts in F16, their rows not whole blocks) within 5% of
// max |logit| (random weights: measured 2.6%), the same argmax on most rows.
TEST(GgufQuantize, HuggingFaceCheckpointToGguf) {
  const std::string dir = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/models/v3";
  const json ref = json::parse(whale::testing::file_bytes(dir + "/reference.json"));
  const std::vector<int32_t> tokens = ref["tokens"].get<std::vector<int32_t>>();
  const int64_t V = ref["vocab_size"].get<int64_t>();
  const std::vector<float> want = read_floats(dir + "/reference_logits.bin", tokens.size() * V);
  for (const std::string type : {"f32", "q8_0"}) {
    const std::string out = tmp_gguf(type);
    const auto r =
        whale::testing::run_whale("quantize -m " + dir + " --type " + type + " --out " + out);
    ASSERT_EQ(r.code, 0) << r.out;
    auto m = Model::load(out);
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
      const float* g = got.data() + t * V;
      const float* w = want.data() + t * V;
      same += (std::max_element(g, g + V) - g) == (std::max_element(w, w + V) - w);
    }
    std::printf("[%s] max err / max |logit| = %.2e, argmax equal on %d of %zu rows\n", type.c_str(),
                max_err / max_ref, same, tokens.size());
    if (type == "f32") {
      EXPECT_LE(max_err, 1e-4 * max_ref);
      EXPECT_EQ(same, int(tokens.size()));
      EXPECT_NE(r.out.find(" 0 in F16"), std::string::npos) << r.out;  // nothing fell back
    } else {
      EXPECT_LE(max_err, 0.05 * max_ref);
      EXPECT_GE(same, int(tokens.size()) - 2);
      EXPECT_NE(r.out.find("in F16"), std::string::npos) << r.out;
    }
    std::filesystem::remove(out);
  }
}

// A model with the real DeepSeek-V3 tokenizer: the GGUF names its pre-tokenizer "deepseek-v3"
// (whale's regex table equals the file's), and run gives the same text from the GGUF (BF16, exact)
// as from the directory; the bundled model's own pre-tokenizer (single digits) travels as JSON.
TEST(GgufQuantize, TokenizerAndTextSurviveTheRoundTrip) {
  const std::string tiny = whale::testing::chat_tiny_model();
  const std::string out = tmp_gguf("tiny");
  auto r = whale::testing::run_whale("quantize -m " + tiny + " --type bf16 --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  {
    const GgufFile f(out);
    EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "deepseek-v3");
    EXPECT_FALSE(f.has("whale.tokenizer.pre_tokenizer"));
  }
  const std::string args = " -p 'The whale is 1234 km' -n 12 --temp 0 -t 1 --no-stats";
  const auto a = whale::testing::run_whale("run -m " + tiny + args);
  const auto b = whale::testing::run_whale("run -m " + out + args);
  ASSERT_EQ(a.code, 0) << a.out;
  ASSERT_EQ(b.code, 0) << b.out;
  EXPECT_EQ(b.out, a.out);
  std::filesystem::remove(out);

  const std::string bundled = std::string(WHALE_SOURCE_DIR) + "/models/whale-r1-tiny";
  const std::string out2 = tmp_gguf("bundled");
  r = whale::testing::run_whale("quantize -m " + bundled + " --type q8_0 --out " + out2);
  ASSERT_EQ(r.code, 0) << r.out;
  {
    const GgufFile f(out2);
    EXPECT_TRUE(f.has("whale.tokenizer.pre_tokenizer"));
  }
  const std::string text2 = "--text 'What is 3517 - 864?'";
  const auto t1 = whale::testing::run_whale("tokenize -m " + bundled + " " + text2);
  const auto t2 = whale::testing::run_whale("tokenize -m " + out2 + " " + text2);
  EXPECT_EQ(t1.code, 0);
  EXPECT_EQ(t2.out, t1.out);
  std::filesystem::remove(out2);
}

TEST(GgufQuantize, BadRequestsNameTheProblem) {
  const std::string dir = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/models/v3";
  auto r = whale::testing::run_whale("quantize -m " + dir + " --type q9_9 --out " + tmp_gguf("x"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("q9_9"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("q4_0"), std::string::npos) << r.out;  // the choices
  r = whale::testing::run_whale("quantize -m " + kDir + "v3_q8_0.gguf --type q8_0 --out " +
                                tmp_gguf("y"));
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("not a GGUF file"), std::string::npos) << r.out;
}

// A model whose matrices are whole super-blocks (tests/configs/kquant-256.json) through
// `whale quantize` in the K types: the file holds the types the recipe names, loads, and its
// logits approach the BF16 checkpoint's in the order of bits (q4_0 > q4_k_m > q5_k_m > q6_k).
TEST(GgufQuantize, KQuantModelsLoadAndErrorsShrinkWithBits) {
  namespace fs = std::filesystem;
  const std::string root = WHALE_SOURCE_DIR;
  const std::string dir = ::testing::TempDir() + "/kquant-model-" + std::to_string(::getpid());
  const auto g = whale::testing::sh("/usr/bin/python3 " + root + "/scripts/gen_model.py --config " +
                                    root + "/tests/configs/kquant-256.json --out " + dir +
                                    " --dtype bf16 --seed 3 > /dev/null");
  ASSERT_EQ(g.code, 0) << g.out;
  std::vector<int32_t> tokens;
  for (int i = 0; i < 24; i++) tokens.push_back(int32_t((i * 37 + 11) % 512));
  auto ref_model = Model::load(dir);
  KVCache rc = ref_model->new_cache();
  const std::vector<float> want = ref_model->forward(rc, tokens, true);
  double max_ref = 0;
  for (float v : want) max_ref = std::max(max_ref, double(std::fabs(v)));
  Int8Off exact;
  double prev = 1e30;
  for (const std::string type : {"q4_0", "q4_k_m", "q5_k_m", "q6_k"}) {
    const std::string out = tmp_gguf("k-" + type);
    const auto r =
        whale::testing::run_whale("quantize -m " + dir + " --type " + type + " --out " + out);
    ASSERT_EQ(r.code, 0) << r.out;
    {
      const GgufFile f(out);
      auto type_of = [&](const std::string& n) {
        const GgufTensor* t = f.find_tensor(n);
        return t ? std::string(ggml_type_info(uint32_t(t->type))->name) : std::string("missing");
      };
      EXPECT_EQ(type_of("output.weight"), "Q6_K") << type;
      if (type == "q4_k_m") {
        EXPECT_EQ(type_of("blk.1.ffn_up_exps.weight"), "Q4_K");
        EXPECT_EQ(type_of("blk.1.ffn_down_exps.weight"), "Q4_K");
        EXPECT_EQ(type_of("blk.2.ffn_down_exps.weight"), "Q6_K");  // use_more_bits(2, 4)
        EXPECT_EQ(type_of("blk.3.ffn_down_shexp.weight"), "Q6_K");
        EXPECT_EQ(type_of("blk.0.attn_q_a.weight"), "Q4_K");
        EXPECT_EQ(type_of("blk.0.attn_k_b.weight"), "Q5_0");  // rows of 32: the fallback
        EXPECT_EQ(type_of("blk.0.attn_v_b.weight"), "Q4_K");
        EXPECT_EQ(type_of("blk.1.ffn_gate_inp.weight"), "F32");
        EXPECT_EQ(f.get_int("general.file_type"), 15);
      }
    }
    auto m = Model::load(out);
    KVCache cache = m->new_cache();
    const std::vector<float> got = m->forward(cache, tokens, true);
    ASSERT_EQ(got.size(), want.size());
    double sq = 0;
    for (size_t i = 0; i < want.size(); i++) sq += (got[i] - want[i]) * (got[i] - want[i]);
    const double rms = std::sqrt(sq / double(want.size())) / max_ref;
    std::printf("[%s] rms logit error / max |logit| = %.3e\n", type.c_str(), rms);
    EXPECT_LT(rms, prev) << type;
    // measured on this random model: 0.137, 0.089, 0.079, 0.017
    const double bound = type == "q4_0"     ? 0.2
                         : type == "q4_k_m" ? 0.12
                         : type == "q5_k_m" ? 0.1
                                            : 0.03;
    EXPECT_LT(rms, bound) << type;
    prev = rms;
    fs::remove(out);
  }
  fs::remove_all(dir);
}

// ------------------------------------------------------------------ whale perplexity

// whale perplexity equals llama-perplexity's method run on the float64 PyTorch reference
// (tests/reference/perplexity_ref.py) over the same ids, on the HF directory and on its GGUF.
TEST(Perplexity, MatchesTheReferenceMethod) {
  const std::string tiny = whale::testing::chat_tiny_model();
  const std::string text_file = ::testing::TempDir() + "/ppl-" + std::to_string(::getpid());
  std::ofstream(text_file) << "The whale is the largest animal that ever lived. It swims in every "
                              "ocean, sings long songs, and eats tiny krill by the ton. Sailors "
                              "once hunted it for oil; now people watch it from small boats.";
  const auto ids = whale::testing::run_whale("tokenize --bos -m " + tiny + " --text \"$(cat " +
                                             text_file + ")\"");
  ASSERT_EQ(ids.code, 0) << ids.out;
  std::vector<int32_t> v = json::parse(ids.out).get<std::vector<int32_t>>();
  std::string csv;
  for (int32_t x : v) {
    if (!csv.empty()) csv += ",";
    csv += std::to_string(x);
  }
  const Tokenizer tok = Tokenizer::load(tiny);
  ASSERT_TRUE(tok.add_bos());
  const auto want = whale::testing::sh("/usr/bin/python3 " + std::string(WHALE_SOURCE_DIR) +
                                       "/tests/reference/perplexity_ref.py " + tiny + " 16 " +
                                       std::to_string(tok.bos_id()) + " " + csv);
  ASSERT_EQ(want.code, 0) << want.out;
  const json w = json::parse(want.out.substr(want.out.rfind('{')));
  const std::string gguf = tmp_gguf("ppl");
  ASSERT_EQ(whale::testing::run_whale("quantize -m " + tiny + " --type f32 --out " + gguf).code, 0);
  for (const std::string& m : {tiny, gguf}) {
    const auto r =
        whale::testing::run_whale("perplexity --json -t 1 --ctx 16 -m " + m + " -f " + text_file);
    ASSERT_EQ(r.code, 0) << r.out;
    const json g = json::parse(r.out.substr(r.out.rfind('{')));
    EXPECT_EQ(g["scored"], w["scored"]) << m;
    EXPECT_EQ(g["chunks"], int64_t(v.size()) / 16) << m;
    EXPECT_NEAR(g["ppl"].get<double>(), w["ppl"].get<double>(), 1e-4 * w["ppl"].get<double>()) << m;
    EXPECT_NEAR(g["error"].get<double>(), w["error"].get<double>(),
                1e-3 * w["error"].get<double>() + 1e-9)
        << m;
  }
  std::filesystem::remove(gguf);
  const auto short_text =
      whale::testing::run_whale("perplexity --ctx 4096 -m " + tiny + " -f " + text_file);
  EXPECT_NE(short_text.code, 0);
  EXPECT_NE(short_text.out.find("fewer than one chunk"), std::string::npos) << short_text.out;
}

// ------------------------------------------------------------------ int8 activations

// The bundled (trained) model quantized to q8_0 and q4_0: with the int8 kernels the perplexity of
// held-out task text moves by under 0.5% from the exact f32-activation path on the same file, and
// the top token changes at no more than 6 of 256 positions; the int8 path is what runs by default.
TEST(GgufInt8, ActivationRoundingCostsLittleOnATrainedModel) {
  const std::string bundled = std::string(WHALE_SOURCE_DIR) + "/models/whale-r1-tiny";
  const Tokenizer tok = Tokenizer::load(bundled);
  std::string text;  // held-out problems with their traces, as the model was trained on them
  for (const char* family : {"add_sub", "mul", "countdown"}) {
    const auto task = reason::make_task(family);
    for (uint64_t i = 0; i < 8; i++) {
      const json line = json::parse(reason::example_json(
          reason::task_example(*task, 77, i, reason::Split::Eval), reason::ExampleFormat::Text));
      text += "<｜begin▁of▁sentence｜>" + line["text"].get<std::string>() + "<｜end▁of▁sentence｜>";
    }
  }
  const std::vector<int32_t> ids = tok.encode(text);
  ASSERT_GT(ids.size(), 256u);
  EXPECT_TRUE(int8_activations_enabled());
  for (const char* type : {"q8_0", "q4_0"}) {
    const std::string out = tmp_gguf(std::string("int8-") + type);
    quantize_to_gguf(bundled, parse_quant_type(type), out);
    auto m = Model::load(out);
    double ppl[2];
    std::vector<float> logits[2];
    for (int on = 0; on < 2; on++) {
      set_int8_activations(on == 1);
      ppl[on] = perplexity(*m, ids, 128, -1, 6).ppl();
      KVCache cache = m->new_cache();
      logits[on] = m->forward(cache, std::span<const int32_t>(ids.data(), 256), true);
    }
    set_int8_activations(true);
    const int64_t V = m->config().vocab_size;
    int same = 0;
    for (int64_t r = 0; r < 256; r++) {
      const float* a = logits[0].data() + r * V;
      const float* c = logits[1].data() + r * V;
      same += std::max_element(a, a + V) - a == std::max_element(c, c + V) - c;
    }
    std::printf("[%s] ppl exact %.4f int8 %.4f, argmax equal at %d of 256 positions\n", type,
                ppl[0], ppl[1], same);
    EXPECT_LT(std::fabs(ppl[1] / ppl[0] - 1), 0.005) << type;
    EXPECT_GE(same, 250) << type;
    std::filesystem::remove(out);
  }
}
