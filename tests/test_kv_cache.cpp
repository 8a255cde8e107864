// The KV cache's storage types (--kv-type, model/kv_cache.h): each type's rounding against its
// definition, bytes per token, the q8 constraint named, and on the bundled model (trained, so
// its attention is not a coin toss) what bf16 and q8 caches cost: logits against the f32 cache,
// both attention forms, greedy answers, and the server's prompt cache reusing q8 prefixes.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <thread>

#include "formats/tokenizer.h"
#include "model/kv_cache.h"
#include "model/model.h"
#include "reason/task.h"
#include "run/chat.h"
#include "run/session.h"
#include "serve/engine.h"
#include "test_util.h"

namespace whale {
namespace {

using namespace std::chrono_literals;

const std::string kBundled = std::string(WHALE_SOURCE_DIR) + "/models/whale-r1-tiny";

ModelConfig small_config(int64_t kv_lora_rank, int64_t rope) {
  ModelConfig c;
  c.num_hidden_layers = 2;
  c.kv_lora_rank = kv_lora_rank;
  c.qk_rope_head_dim = rope;
  return c;
}

TEST(KvCache, EachTypeRoundsAsDefinedAndTakesItsBytes) {
  const ModelConfig c = small_config(64, 16);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd;
  std::vector<float> lat(64), kr(16);
  for (KvType t : {KvType::F32, KvType::BF16, KvType::Q8}) {
    KVCache cache(c, 8, t);
    cache.reserve(3);
    std::vector<std::vector<float>> lats, krs;
    for (int p = 0; p < 3; p++) {
      for (float& v : lat) v = nd(rng) * (p + 1);
      for (float& v : kr) v = nd(rng);
      cache.store(1, p, lat.data(), kr.data());
      lats.push_back(lat);
      krs.push_back(kr);
    }
    std::vector<float> got(3 * 64), k(16);
    cache.latents_f32(1, 3, got.data());
    for (int p = 0; p < 3; p++) {
      for (int b = 0; b < 2; b++) {  // Q8_0 blocks of 32: error at most half a step
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(lats[p][32 * b + j]));
        for (int j = 0; j < 32; j++) {
          const float want = lats[p][32 * b + j], g = got[64 * p + 32 * b + j];
          const float tol = t == KvType::F32    ? 0.0f
                            : t == KvType::BF16 ? std::fabs(want) / 256
                                                : amax / 127 / 2 * 1.01f;
          ASSERT_LE(std::fabs(g - want), tol) << kv_type_name(t) << " p=" << p;
        }
      }
      cache.k_rope_f32(1, p, k.data());
      for (int j = 0; j < 16; j++) {  // the rope key: f32, else bf16
        const float tol = t == KvType::F32 ? 0.0f : std::fabs(krs[p][j]) / 256;
        ASSERT_LE(std::fabs(k[j] - krs[p][j]), tol) << kv_type_name(t);
      }
    }
    // The views the attention reads are the stored rows.
    const WeightRef w = cache.latent_ref(1, 3);
    EXPECT_EQ(w.rows, 3);
    EXPECT_EQ(w.cols, 64);
    EXPECT_EQ(w.data, cache.latent_bytes(1));
  }
  EXPECT_EQ(KVCache::bytes_per_token(c, KvType::F32), 2u * (64 + 16) * 4);
  EXPECT_EQ(KVCache::bytes_per_token(c, KvType::BF16), 2u * (64 + 16) * 2);
  EXPECT_EQ(KVCache::bytes_per_token(c, KvType::Q8), 2u * (2 * 34 + 16 * 2));
}

TEST(KvCache, Q8NeedsWholeBlocksAndUnknownTypesAreNamed) {
  try {
    KVCache cache(small_config(48, 16), 8, KvType::Q8);
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("kv_lora_rank a multiple of 32"), std::string::npos)
        << e.what();
    EXPECT_NE(std::string(e.what()).find("48"), std::string::npos) << e.what();
  }
  try {
    parse_kv_type("q4");
    FAIL() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'q4'"), std::string::npos) << e.what();
  }
  EXPECT_EQ(parse_kv_type("bf16"), KvType::BF16);
}

struct Bundled {
  std::unique_ptr<Model> model;
  Tokenizer tok;
};

Bundled& bundled() {  // a model of its own: the tests change its cache type
  static Bundled b{Model::load(kBundled), Tokenizer::load(kBundled)};
  return b;
}

std::vector<int32_t> problem_prompt(const std::string& family, uint64_t index) {
  const reason::Problem p = reason::make_task(family)->generate(11, index, reason::Split::Eval);
  const std::string text =
      render_chat({{"user", p.prompt, ""}}, ChatStyle::R1, bundled().tok.bos_token());
  return bundled().tok.encode(text);
}

// Logits of every position: the prompt's first part as one segment (the naive form), then one
// token at a time (the absorbed form, through the cache).
std::vector<float> logits_of(const std::vector<int32_t>& ids, KvType t) {
  Model& m = *bundled().model;
  m.set_kv_type(t);
  KVCache cache = m.new_cache(512);
  EXPECT_EQ(cache.type(), t);
  const size_t half = ids.size() / 2;
  std::vector<float> out =
      m.forward(cache, std::span<const int32_t>(ids.data(), half), true, AttnMode::Naive);
  for (size_t i = half; i < ids.size(); i++) {
    const auto row = m.forward(cache, std::span<const int32_t>(&ids[i], 1), false);
    out.insert(out.end(), row.begin(), row.end());
  }
  m.set_kv_type(KvType::F32);
  return out;
}

// Against the f32 cache: the same argmax on every position, and the logit error relative to the
// largest |logit|: mean and largest. The model's attention is sharp (it copies digits), so a
// rounded key moves a few logits visibly: measured 2026-12-06 over the three families, largest
// 0.6-11% (bf16) and 2-11% (q8), mean 0.03-0.08% (bf16) and 0.03-0.08% (q8).
TEST(KvCache, Bf16AndQ8CostLittleOnTheBundledModel) {
  const int64_t V = bundled().model->config().vocab_size;
  for (const char* family : {"add_sub", "mul", "countdown"}) {
    std::vector<int32_t> ids = problem_prompt(family, 3);
    // And a reasoning trace after it: the f32 cache's greedy continuation.
    {
      Session s(*bundled().model, 512);
      GenerateOptions o;
      o.sampling.greedy = true;
      o.max_tokens = 120;
      const GenerateResult r = s.generate(ids, bundled().tok, o);
      ids.insert(ids.end(), r.ids.begin(), r.ids.end());
    }
    const std::vector<float> ref = logits_of(ids, KvType::F32);
    for (KvType t : {KvType::BF16, KvType::Q8}) {
      const std::vector<float> got = logits_of(ids, t);
      ASSERT_EQ(got.size(), ref.size());
      double max_ref = 0, max_err = 0, sum_err = 0;
      int argmax_diff = 0;
      for (size_t r = 0; r < ref.size() / size_t(V); r++) {
        const float* a = ref.data() + r * size_t(V);
        const float* b = got.data() + r * size_t(V);
        for (int64_t v = 0; v < V; v++) {
          max_ref = std::max(max_ref, double(std::fabs(a[v])));
          max_err = std::max(max_err, double(std::fabs(a[v] - b[v])));
          sum_err += std::fabs(a[v] - b[v]);
        }
        argmax_diff += (std::max_element(a, a + V) - a) != (std::max_element(b, b + V) - b);
      }
      const double mean_err = sum_err / double(ref.size());
      std::printf(
          "[%s %s] logit err / max |logit|: max %.2e, mean %.2e; argmax differs at %d of "
          "%zu\n",
          family, kv_type_name(t), max_err / max_ref, mean_err / max_ref, argmax_diff,
          ref.size() / size_t(V));
      EXPECT_LE(max_err, 0.25 * max_ref) << kv_type_name(t);
      EXPECT_LE(mean_err, (t == KvType::BF16 ? 0.003 : 0.01) * max_ref) << kv_type_name(t);
      EXPECT_EQ(argmax_diff, 0) << family << " " << kv_type_name(t);
    }
  }
}

// Both attention forms read the same stored values: naive (widened to f32) and absorbed (the
// stored rows as the weight) agree for each type. (q8's absorbed scores also round the queries
// to 8 bits, as llama.cpp's q8_0 cache does.)
TEST(KvCache, NaiveAndAbsorbedAgreeForEachType) {
  Model& m = *bundled().model;
  const std::vector<int32_t> ids = problem_prompt("countdown", 5);
  const int64_t V = m.config().vocab_size;
  for (KvType t : {KvType::F32, KvType::BF16, KvType::Q8}) {
    m.set_kv_type(t);
    KVCache a = m.new_cache(256), b = m.new_cache(256);
    const auto naive = m.forward(a, ids, true, AttnMode::Naive);
    const auto absorbed = m.forward(b, ids, true, AttnMode::Absorbed);
    double max_ref = 0, max_err = 0;
    for (size_t i = 0; i < naive.size(); i++) {
      max_ref = std::max(max_ref, double(std::fabs(naive[i])));
      max_err = std::max(max_err, double(std::fabs(naive[i] - absorbed[i])));
    }
    EXPECT_LE(max_err, (t == KvType::Q8 ? 0.02 : 1e-4) * max_ref) << kv_type_name(t);
    for (size_t r = 0; r < ids.size(); r++) {
      const float* x = naive.data() + r * size_t(V);
      const float* y = absorbed.data() + r * size_t(V);
      EXPECT_EQ(std::max_element(x, x + V) - x, std::max_element(y, y + V) - y)
          << kv_type_name(t) << " row " << r;
    }
  }
  m.set_kv_type(KvType::F32);
}

// The naive form works on blocks of 256 queries (model/mla.cpp): a 100-token prefix, then 500
// tokens in one segment (two blocks, the second seeing the first's keys), against one token at a
// time through the absorbed form.
TEST(KvCache, LongSegmentsInBlocksMatchTokenByToken) {
  Model& m = *bundled().model;
  const int64_t V = m.config().vocab_size;
  std::mt19937 rng(4);
  std::vector<int32_t> ids(600);
  for (int32_t& t : ids) t = int32_t(rng() % uint32_t(V));
  KVCache a = m.new_cache(1024), b = m.new_cache(1024);
  std::vector<float> naive =
      m.forward(a, std::span<const int32_t>(ids.data(), 100), true, AttnMode::Naive);
  const auto rest =
      m.forward(a, std::span<const int32_t>(ids.data() + 100, 500), true, AttnMode::Naive);
  naive.insert(naive.end(), rest.begin(), rest.end());
  std::vector<float> step;
  for (int32_t t : ids) {
    const auto row = m.forward(b, std::span<const int32_t>(&t, 1), false, AttnMode::Absorbed);
    step.insert(step.end(), row.begin(), row.end());
  }
  ASSERT_EQ(naive.size(), step.size());
  const auto gap = whale::testing::logit_gap(naive, step);
  EXPECT_LE(gap.max_err, 1e-4 * gap.max_ref);
}

// The server's prompt cache stores and restores q8 rows: a conversation's prefix comes back
// from the store after its slot was reused, and the text equals a lone session's (q8 too).
TEST(KvCache, ServerPromptCacheKeepsQ8Prefixes) {
  Model& m = *bundled().model;
  m.set_kv_type(KvType::Q8);
  serve::EngineOptions o;
  o.parallel = 1;
  o.ctx = 512;
  serve::Engine e(m, bundled().tok, o);
  auto job = [](std::vector<int32_t> prompt) {
    auto j = std::make_shared<serve::Job>();
    j->prompt = std::move(prompt);
    j->opt.max_tokens = 40;
    j->opt.sampling.greedy = true;
    return j;
  };
  auto collect = [](serve::Job& j) {
    std::string text, piece;
    while (j.wait_text(piece, 50ms)) text += piece;
    return text;
  };
  const std::vector<int32_t> x = problem_prompt("mul", 8);
  auto a = job(x);
  ASSERT_TRUE(e.submit(a));
  collect(*a);
  auto b = job(bundled().tok.encode("Completely different text, no chat template at all"));
  ASSERT_TRUE(e.submit(b));
  collect(*b);
  EXPECT_EQ(e.stats().store_entries, 1u);
  auto c = job(x);
  ASSERT_TRUE(e.submit(c));
  const std::string text = collect(*c);
  EXPECT_GE(c->cached_tokens, int64_t(x.size()) - 1);
  Session s(m, 512);
  EXPECT_EQ(text, s.generate(x, bundled().tok, c->opt).text);
  e.stop();
  m.set_kv_type(KvType::F32);
}

}  // namespace
}  // namespace whale
