// End-to-end logits against the independent PyTorch references (tests/reference/deepseek_ref.py,
// and dense_ref.py for the Qwen2 / Llama architectures of the R1-Distill models; float64), on tiny
// random checkpoints written in exactly the published formats by scripts/gen_fixtures.py. (The
// attention modes naive / absorbed are MLA's; grouped-query attention has one.) Tolerance: 1e-4 of
// the largest |logit|, same argmax on every row, same greedy ids.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>

#include "model/model.h"

using namespace whale;
using json = nlohmann::json;

namespace {

const std::string kFixtures = std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/models/";

struct Reference {
  std::vector<int32_t> tokens, greedy;
  int64_t vocab = 0;
  std::vector<float> logits;  // [tokens][vocab]
};

Reference load_reference(const std::string& dir) {
  std::ifstream f(dir + "/reference.json");
  if (!f) throw std::runtime_error(dir + "/reference.json missing: run scripts/gen_fixtures.py");
  json j = json::parse(f);
  Reference r;
  r.tokens = j["tokens"].get<std::vector<int32_t>>();
  r.greedy = j["greedy"].get<std::vector<int32_t>>();
  r.vocab = j["vocab_size"].get<int64_t>();
  std::ifstream lf(dir + "/" + j["logits"].get<std::string>(), std::ios::binary);
  r.logits.resize(r.tokens.size() * size_t(r.vocab));
  lf.read(reinterpret_cast<char*>(r.logits.data()), std::streamsize(r.logits.size() * 4));
  if (!lf) throw std::runtime_error(dir + ": reference logits file short");
  return r;
}

int64_t argmax(const float* v, int64_t n) {
  return std::max_element(v, v + n) - v;
}

// Compares rows; returns the worst error relative to the largest |reference logit|.
double compare_rows(const std::vector<float>& got, const std::vector<float>& want, int64_t V,
                    const std::string& what) {
  EXPECT_EQ(got.size(), want.size()) << what;
  double max_ref = 0, max_err = 0;
  for (float w : want) max_ref = std::max(max_ref, double(std::fabs(w)));
  for (size_t i = 0; i < std::min(got.size(), want.size()); i++)
    max_err = std::max(max_err, double(std::fabs(got[i] - want[i])));
  const int64_t rows = int64_t(want.size()) / V;
  for (int64_t r = 0; r < rows && size_t(r * V + V) <= got.size(); r++)
    EXPECT_EQ(argmax(got.data() + r * V, V), argmax(want.data() + r * V, V))
        << what << ": argmax differs at row " << r;
  EXPECT_LE(max_err, 1e-4 * max_ref)
      << what << ": max |err| " << max_err << ", max |logit| " << max_ref;
  return max_err / max_ref;
}

class ModelReference : public ::testing::TestWithParam<std::string> {};

}  // namespace

TEST_P(ModelReference, PrefillNaiveMatches) {
  const std::string dir = kFixtures + GetParam();
  Reference ref = load_reference(dir);
  auto m = Model::load(dir);
  ASSERT_EQ(m->config().vocab_size, ref.vocab);
  KVCache cache = m->new_cache();
  auto got = m->forward(cache, ref.tokens, true, AttnMode::Naive);
  double e = compare_rows(got, ref.logits, ref.vocab, GetParam() + " naive prefill");
  std::printf("[%s] naive prefill: max err / max |logit| = %.2e\n", GetParam().c_str(), e);
}

TEST_P(ModelReference, PrefillAbsorbedMatches) {
  const std::string dir = kFixtures + GetParam();
  Reference ref = load_reference(dir);
  auto m = Model::load(dir);
  KVCache cache = m->new_cache();
  auto got = m->forward(cache, ref.tokens, true, AttnMode::Absorbed);
  double e = compare_rows(got, ref.logits, ref.vocab, GetParam() + " absorbed prefill");
  std::printf("[%s] absorbed prefill: max err / max |logit| = %.2e\n", GetParam().c_str(), e);
}

// One token at a time through the KV cache gives the reference logits at every position, and the
// same logits as a single prefill (to f32 rounding).
TEST_P(ModelReference, DecodeOneTokenAtATimeMatchesPrefill) {
  const std::string dir = kFixtures + GetParam();
  Reference ref = load_reference(dir);
  auto m = Model::load(dir);
  const int64_t V = ref.vocab;
  KVCache c1 = m->new_cache();
  auto prefill = m->forward(c1, ref.tokens, true, AttnMode::Naive);
  KVCache c2 = m->new_cache();
  std::vector<float> decoded;
  for (int32_t t : ref.tokens) {
    auto row = m->forward(c2, std::span<const int32_t>(&t, 1), false, AttnMode::Absorbed);
    decoded.insert(decoded.end(), row.begin(), row.end());
  }
  compare_rows(decoded, ref.logits, V, GetParam() + " decode");
  double max_ref = 0, max_diff = 0;
  for (size_t i = 0; i < prefill.size(); i++) {
    max_ref = std::max(max_ref, double(std::fabs(prefill[i])));
    max_diff = std::max(max_diff, double(std::fabs(prefill[i] - decoded[i])));
  }
  EXPECT_LE(max_diff, 2e-5 * max_ref) << "prefill vs decode";
}

// Greedy continuation through the cache equals the reference's (full recompute each step).
TEST_P(ModelReference, GreedyIdsMatch) {
  const std::string dir = kFixtures + GetParam();
  Reference ref = load_reference(dir);
  auto m = Model::load(dir);
  KVCache cache = m->new_cache();
  auto logits = m->forward(cache, ref.tokens, false);
  std::vector<int32_t> out;
  for (size_t i = 0; i < ref.greedy.size(); i++) {
    int32_t next = int32_t(argmax(logits.data(), ref.vocab));
    out.push_back(next);
    logits = m->forward(cache, std::span<const int32_t>(&next, 1), false);
  }
  EXPECT_EQ(out, ref.greedy);
}

// Chunked prefill and a two-sequence batch give the same logits as one prefill.
TEST_P(ModelReference, ChunksAndBatchesAgree) {
  const std::string dir = kFixtures + GetParam();
  Reference ref = load_reference(dir);
  auto m = Model::load(dir);
  const int64_t V = ref.vocab, n = int64_t(ref.tokens.size()), half = n / 2;
  std::span<const int32_t> all(ref.tokens);
  KVCache a = m->new_cache();
  auto first = m->forward(a, all.subspan(0, size_t(half)), true, AttnMode::Naive);
  auto second = m->forward(a, all.subspan(size_t(half)), true, AttnMode::Naive);
  first.insert(first.end(), second.begin(), second.end());
  compare_rows(first, ref.logits, V, GetParam() + " chunked");

  KVCache b1 = m->new_cache(), b2 = m->new_cache();
  SeqInput batch[2] = {{&b1, all, true}, {&b2, all.subspan(0, size_t(half)), false}};
  auto both = m->forward(batch);
  ASSERT_EQ(int64_t(both.size()), (n + 1) * V);
  std::vector<float> seq1(both.begin(), both.begin() + n * V);
  compare_rows(seq1, ref.logits, V, GetParam() + " batched seq 1");
  std::vector<float> seq2(both.begin() + n * V, both.end());
  std::vector<float> want2(ref.logits.begin() + (half - 1) * V, ref.logits.begin() + half * V);
  compare_rows(seq2, want2, V, GetParam() + " batched seq 2");
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ModelReference,
                         ::testing::Values("v2_lite", "v2_group", "v2_scaled", "v3", "v3_fp8",
                                           "v3_sharded", "v3_tied", "qwen2", "qwen2_tied",
                                           "llama3"));
