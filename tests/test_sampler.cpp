// Tests for run/sampler.h against hand-computed expectations and a double-precision reference.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "run/sampler.h"

namespace whale {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// softmax(l / T) in double, the reference distribution.
std::vector<double> softmax(const std::vector<float>& l, double t = 1.0) {
  double m = -std::numeric_limits<double>::infinity();
  for (float v : l) m = std::max(m, double(v));
  std::vector<double> p(l.size());
  double s = 0;
  for (size_t i = 0; i < l.size(); ++i) s += p[i] = std::exp((double(l[i]) - m) / t);
  for (double& v : p) v /= s;
  return p;
}

// Logits whose softmax is exactly `probs` (up to float rounding).
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(float(std::log(p)));
  return l;
}

std::vector<int> counts_of(Sampler& s, const std::vector<float>& logits, int draws,
                           std::span<const int32_t> history = {}) {
  std::vector<int> c(logits.size(), 0);
  for (int i = 0; i < draws; ++i) ++c.at(size_t(s.sample(logits, history)));
  return c;
}

// Pearson chi-square statistic of observed counts against expected probabilities; cells with
// zero expected probability must be empty (else +inf).
double chi_square(const std::vector<int>& counts, const std::vector<double>& p) {
  double n = std::accumulate(counts.begin(), counts.end(), 0.0), chi = 0;
  for (size_t i = 0; i < p.size(); ++i) {
    if (p[i] == 0) {
      if (counts[i] != 0) return std::numeric_limits<double>::infinity();
      continue;
    }
    const double e = n * p[i];
    chi += (counts[i] - e) * (counts[i] - e) / e;
  }
  return chi;
}

std::set<int32_t> kept_ids(const std::vector<TokenProb>& d) {
  std::set<int32_t> s;
  for (const TokenProb& t : d) s.insert(t.id);
  return s;
}

SamplingParams with_seed(uint64_t seed) {
  SamplingParams p;
  p.seed = seed;
  return p;
}

std::vector<float> random_logits(size_t n, uint64_t seed, float scale = 3.0f) {
  std::mt19937_64 g(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> l(n);
  for (float& v : l) v = d(g);
  return l;
}

TEST(SamplerGreedy, ArgmaxWithTiesToLowestId) {
  SamplingParams p;
  p.greedy = true;
  Sampler s(p);
  EXPECT_EQ(s.sample(std::vector<float>{0.1f, 2.0f, -3.0f, 1.9f}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{1.0f, 5.0f, 5.0f, 5.0f}), 1);
  EXPECT_EQ(s.sample(std::vector<float>{-7.0f}), 0);
  EXPECT_EQ(s.sample(std::vector<float>{-kInf, -1e30f, -kInf}), 1);
}

TEST(SamplerGreedy, ZeroOrNegativeTemperatureIsArgmax) {
  for (float t : {0.0f, -1.0f}) {
    SamplingParams p;
    p.temperature = t;
    p.top_k = 3;  // filters must not matter
    p.top_p = 0.1f;
    Sampler s(p);
    for (int i = 0; i < 20; ++i) EXPECT_EQ(s.sample(std::vector<float>{0.0f, 0.5f, 3.0f, 3.0f}), 2);
  }
}

TEST(SamplerTopK, TopKOneEqualsGreedy) {
  SamplingParams greedy;
  greedy.greedy = true;
  Sampler g(greedy);
  for (uint64_t seed = 0; seed < 20; ++seed) {
    SamplingParams p = with_seed(seed);
    p.top_k = 1;
    p.temperature = 1.5f;
    Sampler s(p);
    const std::vector<float> l = random_logits(1000, seed, 1.0f);
    EXPECT_EQ(s.sample(l), g.sample(l)) << "seed " << seed;
  }
}

TEST(SamplerTemperature, EmpiricalDistributionMatchesSoftmax) {
  const std::vector<float> l = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f};
  const int draws = 200000;
  for (float t : {1.0f, 0.7f, 2.0f}) {
    SamplingParams p = with_seed(42);
    p.temperature = t;
    Sampler s(p);
    const std::vector<int> c = counts_of(s, l, draws);
    // 4 degrees of freedom: P(chi2 > 25) ~ 5e-5. A wrong temperature gives thousands.
    EXPECT_LT(chi_square(c, softmax(l, t)), 25.0) << "T=" << t;
    // The distribution() view agrees with the reference to float precision.
    const std::vector<double> ref = softmax(l, t);
    for (const TokenProb& tp : s.distribution(l)) EXPECT_NEAR(tp.prob, ref[size_t(tp.id)], 1e-6);
  }
}

TEST(SamplerTemperature, WrongTemperatureFailsTheBound) {
  // Guards the bound above: samples at T=1 do not pass as T=0.7.
  const std::vector<float> l = {1.0f, 2.0f, 0.5f, -1.0f, 3.0f};
  Sampler s(with_seed(42));
  EXPECT_GT(chi_square(counts_of(s, l, 200000), softmax(l, 0.7)), 1000.0);
}

TEST(SamplerTopK, KeepsKMostProbable) {
  const std::vector<float> l = {0.3f, 2.0f, -1.0f, 1.5f, 0.9f, 1.5f};
  SamplingParams p;
  p.top_k = 3;
  Sampler s(p);
  const std::vector<TokenProb> d = s.distribution(l);
  ASSERT_EQ(d.size(), 3u);
  // 1.5 is tied between ids 3 and 5; both are above 0.9 so both stay.
  EXPECT_EQ(d[0].id, 1);
  EXPECT_EQ(d[1].id, 3);
  EXPECT_EQ(d[2].id, 5);
  const std::vector<double> ref = softmax({2.0f, 1.5f, 1.5f});
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(d[size_t(i)].prob, ref[size_t(i)], 1e-6);
  const std::vector<int> c = counts_of(s, l, 50000);
  EXPECT_LT(chi_square(c, {0, ref[0], 0, ref[1], 0, ref[2]}), 20.0);
}

TEST(SamplerTopP, KeepsSmallestPrefixReachingP) {
  // Probabilities 0.5, 0.25, 0.15, 0.1 placed at shuffled ids.
  const std::vector<double> probs = {0.15, 0.5, 0.1, 0.25};
  const std::vector<float> l = logits_of(probs);
  const std::vector<std::pair<float, std::set<int32_t>>> cases = {
      {0.3f, {1}},        {0.45f, {1}},          {0.7f, {1, 3}},
      {0.76f, {1, 3, 0}}, {0.95f, {1, 3, 0, 2}}, {0.0f, {1}}};
  for (const auto& [top_p, expect] : cases) {
    SamplingParams p = with_seed(7);
    p.top_p = top_p;
    Sampler s(p);
    EXPECT_EQ(kept_ids(s.distribution(l)), expect) << "top_p=" << top_p;
    // Draws stay in the kept set and follow the renormalised probabilities.
    std::vector<double> ref(4, 0.0);
    double mass = 0;
    for (int32_t id : expect) mass += probs[size_t(id)];
    for (int32_t id : expect) ref[size_t(id)] = probs[size_t(id)] / mass;
    EXPECT_LT(chi_square(counts_of(s, l, 40000), ref), 20.0) << "top_p=" << top_p;
  }
}

TEST(SamplerTopP, LargeVocabMatchesFullSortReference) {
  // 129280 entries: exercises the candidate thresholds and the growing partial sort.
  // Reference: a full sort of the double-precision softmax.
  for (float scale : {1.0f, 3.0f, 8.0f}) {
    const std::vector<float> l = random_logits(129280, 11, scale);
    const std::vector<double> p = softmax(l);
    std::vector<int32_t> order(l.size());
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return l[size_t(a)] > l[size_t(b)] || (l[size_t(a)] == l[size_t(b)] && a < b);
    });
    for (float top_p : {0.5f, 0.9f, 0.95f, 0.999f}) {
      size_t keep = 0;
      double cum = 0;
      while (cum < top_p) cum += p[size_t(order[keep++])];
      SamplingParams sp;
      sp.top_p = top_p;
      Sampler s(sp);
      const std::vector<TokenProb> d = s.distribution(l);
      const std::string where =
          "scale " + std::to_string(scale) + " top_p " + std::to_string(top_p);
      // Rounding may move the boundary by one token, no more.
      ASSERT_NEAR(double(d.size()), double(keep), 1.0) << where;
      // The kept tokens are the most probable ones: none dropped beats a kept one.
      std::vector<bool> kept(l.size(), false);
      float min_kept = std::numeric_limits<float>::infinity();
      double mass = 0, mass_but_last = 0;
      for (const TokenProb& t : d) {
        kept[size_t(t.id)] = true;
        min_kept = std::min(min_kept, l[size_t(t.id)]);
        mass_but_last = mass;
        mass += p[size_t(t.id)];
      }
      for (size_t i = 0; i < l.size(); ++i) ASSERT_TRUE(kept[i] || l[i] <= min_kept) << where;
      // Shortest prefix: the mass reaches top_p, and would not without the last token.
      EXPECT_GE(mass, top_p - 1e-5) << where;
      EXPECT_LT(mass_but_last, top_p + 1e-5) << where;
      // Renormalised probabilities.
      for (const TokenProb& t : d) ASSERT_NEAR(t.prob, p[size_t(t.id)] / mass, 1e-5) << where;
    }
  }
}

TEST(SamplerTopP, TopPIsRelativeToTopKSet) {
  // p = 0.4, 0.3, 0.2, 0.1. After top-k=2 the renormalised mass is 4/7, 3/7, so top-p=0.5 keeps
  // one token; without top-k, top-p=0.5 keeps two (0.4 < 0.5).
  const std::vector<float> l = logits_of({0.4, 0.3, 0.2, 0.1});
  SamplingParams p;
  p.top_p = 0.5f;
  EXPECT_EQ(kept_ids(Sampler(p).distribution(l)), (std::set<int32_t>{0, 1}));
  p.top_k = 2;
  EXPECT_EQ(kept_ids(Sampler(p).distribution(l)), (std::set<int32_t>{0}));
}

TEST(SamplerMinP, DropsTokensBelowMinPTimesMax) {
  // p = 0.5, 0.3, 0.12, 0.08; min_p = 0.2 -> threshold 0.1 keeps the first three.
  const std::vector<double> probs = {0.12, 0.08, 0.5, 0.3};
  const std::vector<float> l = logits_of(probs);
  SamplingParams p = with_seed(3);
  p.min_p = 0.2f;
  Sampler s(p);
  EXPECT_EQ(kept_ids(s.distribution(l)), (std::set<int32_t>{0, 2, 3}));
  EXPECT_LT(chi_square(counts_of(s, l, 40000), {0.12 / 0.92, 0, 0.5 / 0.92, 0.3 / 0.92}), 20.0);
  p.min_p = 0.5f;  // threshold 0.25
  EXPECT_EQ(kept_ids(Sampler(p).distribution(l)), (std::set<int32_t>{2, 3}));
  p.min_p = 1.0f;  // only the max
  EXPECT_EQ(kept_ids(Sampler(p).distribution(l)), (std::set<int32_t>{2}));
  p.min_p = 1.5f;  // more than the max itself: still the max, never nothing
  EXPECT_EQ(kept_ids(Sampler(p).distribution(l)), (std::set<int32_t>{2}));
  EXPECT_EQ(Sampler(p).sample(l), 2);
  p.top_k = 3;  // the same through the sorted top-k path
  EXPECT_EQ(kept_ids(Sampler(p).distribution(l)), (std::set<int32_t>{2}));
}

TEST(SamplerMinP, AppliesAfterTemperature) {
  // At T=2 the probabilities flatten: p_i / p_max = sqrt(original ratio).
  // Ratios 1, 0.6, 0.24, 0.16 become 1, 0.775, 0.490, 0.4; min_p=0.45 keeps three.
  const std::vector<float> l = logits_of({0.5, 0.3, 0.12, 0.08});
  SamplingParams p;
  p.min_p = 0.45f;
  EXPECT_EQ(kept_ids(Sampler(p).distribution(l)), (std::set<int32_t>{0, 1}));
  p.temperature = 2.0f;
  EXPECT_EQ(kept_ids(Sampler(p).distribution(l)), (std::set<int32_t>{0, 1, 2}));
}

TEST(SamplerPenalties, FrequencyAndPresence) {
  // logits [1, 2, 3], history {2, 2, 0}, frequency 0.5, presence 0.25:
  //   id0: 1 - 1*0.5 - 0.25 = 0.25;  id1: 2;  id2: 3 - 2*0.5 - 0.25 = 1.75.
  const std::vector<float> l = {1.0f, 2.0f, 3.0f};
  const std::vector<int32_t> hist = {2, 2, 0, 99, -1};  // out-of-range ids are ignored
  SamplingParams p;
  p.frequency_penalty = 0.5f;
  p.presence_penalty = 0.25f;
  const std::vector<double> ref = softmax({0.25f, 2.0f, 1.75f});
  Sampler s(p);
  const std::vector<TokenProb> d = s.distribution(l, hist);
  ASSERT_EQ(d.size(), 3u);
  for (const TokenProb& t : d) EXPECT_NEAR(t.prob, ref[size_t(t.id)], 1e-6);
  p.greedy = true;
  EXPECT_EQ(Sampler(p).sample(l, hist), 1);
  EXPECT_EQ(Sampler(p).sample(l), 2);  // no history, no penalty
}

TEST(SamplerPenalties, RepetitionDividesPositiveMultipliesNegative) {
  // [2, -1, 1.5] with history {0, 1, 0}, r = 2 -> [1, -2, 1.5]: argmax moves from 0 to 2.
  const std::vector<float> l = {2.0f, -1.0f, 1.5f};
  const std::vector<int32_t> hist = {0, 1, 0};
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  const std::vector<double> ref = softmax({1.0f, -2.0f, 1.5f});
  for (const TokenProb& t : Sampler(p).distribution(l, hist)) {
    EXPECT_NEAR(t.prob, ref[size_t(t.id)], 1e-6);
  }
  p.greedy = true;
  EXPECT_EQ(Sampler(p).sample(l, hist), 2);
}

TEST(SamplerSeed, SameSeedSameSequenceDifferentSeedDiffers) {
  const std::vector<float> l = random_logits(5000, 5, 1.0f);
  auto run = [&](uint64_t seed) {
    SamplingParams p = with_seed(seed);
    p.top_p = 0.9f;
    Sampler s(p);
    std::vector<int32_t> ids;
    for (int i = 0; i < 100; ++i) ids.push_back(s.sample(l));
    return ids;
  };
  EXPECT_EQ(run(1234), run(1234));
  EXPECT_NE(run(1234), run(1235));
  // reseed() restarts the stream.
  SamplingParams p = with_seed(77);
  p.top_p = 0.9f;
  Sampler s(p);
  std::vector<int32_t> a, b;
  for (int i = 0; i < 50; ++i) a.push_back(s.sample(l));
  s.reseed(77);
  for (int i = 0; i < 50; ++i) b.push_back(s.sample(l));
  EXPECT_EQ(a, b);
}

TEST(SamplerSeed, PinnedSequence) {
  // mt19937_64 is specified exactly by the standard and uniforms are built by hand, so this
  // sequence must be the same with every compiler and standard library.
  const std::vector<float> l = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
  Sampler s(with_seed(2024));
  std::mt19937_64 g(2024);
  for (int i = 0; i < 64; ++i) {
    // Uniform over 8 ids: id = floor(u * 8) with u = (bits >> 11) * 2^-53.
    const int32_t expect = int32_t(double(g() >> 11) * 0x1.0p-53 * 8.0);
    ASSERT_EQ(s.sample(l), expect) << "draw " << i;
  }
}

TEST(SamplerNonFinite, NaNAndInfinities) {
  Sampler s(with_seed(9));
  // NaN and -inf are never chosen.
  const std::vector<float> a = {kNaN, 0.0f, -kInf, 0.0f, kNaN};
  for (int i = 0; i < 2000; ++i) {
    const int32_t id = s.sample(a);
    ASSERT_TRUE(id == 1 || id == 3) << id;
  }
  // +inf tokens take all the mass and split it equally.
  const std::vector<float> b = {5.0f, kInf, kNaN, kInf, 1e30f};
  EXPECT_LT(chi_square(counts_of(s, b, 20000), {0, 0.5, 0, 0.5, 0}), 15.0);
  SamplingParams g;
  g.greedy = true;
  EXPECT_EQ(Sampler(g).sample(b), 1);
  // Huge logits and a tiny temperature neither overflow nor produce NaN.
  SamplingParams cold = with_seed(1);
  for (float t : {1e-30f, 1e-44f}) {
    cold.temperature = t;
    EXPECT_EQ(Sampler(cold).sample(std::vector<float>{3e38f, -3e38f, 1e38f}), 0);
  }
}

TEST(SamplerNonFinite, NothingToChooseThrows) {
  const std::vector<float> none = {kNaN, -kInf, kNaN};
  Sampler s(with_seed(1));
  EXPECT_THROW(s.sample(none), std::invalid_argument);
  EXPECT_THROW(s.sample(std::vector<float>{}), std::invalid_argument);
  SamplingParams g;
  g.greedy = true;
  EXPECT_THROW(Sampler(g).sample(none), std::invalid_argument);
}

TEST(SamplerParams, RejectsInvalid) {
  SamplingParams p;
  p.top_k = -1;
  EXPECT_THROW(Sampler{p}, std::invalid_argument);
  p = {};
  p.top_p = kNaN;
  EXPECT_THROW(Sampler{p}, std::invalid_argument);
  p = {};
  p.repetition_penalty = 0.0f;
  EXPECT_THROW(Sampler{p}, std::invalid_argument);
  p = {};
  p.temperature = kInf;
  EXPECT_THROW(Sampler{p}, std::invalid_argument);
}

// Timing on the DeepSeek-V3 vocabulary size; prints ns per sample, asserts only a loose bound.
// "flat": N(0, 2) logits, a very high-entropy worst case for top-p. "peaked": the same plus 30
// tokens lifted by 3..12, closer to a trained model's next-token distribution.
TEST(SamplerSpeed, Vocab129280) {
  const std::vector<float> flat = random_logits(129280, 17, 2.0f);
  std::vector<float> lifted = flat;
  for (size_t i = 0; i < 30; ++i) lifted[(i * 7919) % lifted.size()] += 12.0f - 0.3f * float(i);
  const std::vector<float>& peaked = lifted;
  std::vector<int32_t> hist(2000);
  for (size_t i = 0; i < hist.size(); ++i) hist[i] = int32_t((i * 7919) % 129280);
  struct Case {
    const char* name;
    SamplingParams p;
    bool with_history;
  };
  auto make = [](float t, int k, float top_p, float min_p, bool greedy) {
    SamplingParams p;
    p.temperature = t;
    p.top_k = k;
    p.top_p = top_p;
    p.min_p = min_p;
    p.greedy = greedy;
    return p;
  };
  SamplingParams pen = make(0.6f, 0, 0.95f, 0.0f, false);
  pen.frequency_penalty = 0.3f;
  pen.presence_penalty = 0.2f;
  pen.repetition_penalty = 1.1f;
  const std::vector<Case> cases = {
      {"greedy", make(1, 0, 1, 0, true), false},
      {"T=1 no filter", make(1, 0, 1, 0, false), false},
      {"top_k=40", make(1, 40, 1, 0, false), false},
      {"top_p=0.95 T=0.6", make(0.6f, 0, 0.95f, 0, false), false},
      {"min_p=0.05", make(1, 0, 1, 0.05f, false), false},
      {"top_k=50 top_p=0.9", make(0.8f, 50, 0.9f, 0, false), false},
      {"top_p=0.95 T=0.6 penalties(2000)", pen, true},
  };
  for (const auto& [kind, l] : {std::pair{"flat", &flat}, std::pair{"peaked", &peaked}}) {
    for (const Case& c : cases) {
      Sampler s(c.p);
      const std::span<const int32_t> h =
          c.with_history ? std::span<const int32_t>(hist) : std::span<const int32_t>();
      int iters = 0;
      const auto t0 = std::chrono::steady_clock::now();
      auto t1 = t0;
      while (iters < 5 || t1 - t0 < std::chrono::milliseconds(100)) {
        s.sample(*l, h);
        ++iters;
        t1 = std::chrono::steady_clock::now();
      }
      const double ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / iters;
      std::printf("[ SamplerSpeed ] %-6s %-34s %9.0f ns/sample\n", kind, c.name, ns);
      EXPECT_LT(ns, 1e9);  // even sanitized debug builds stay far below; catches only hangs
    }
  }
}

}  // namespace
}  // namespace whale

// token_logprobs: log_softmax of the raw logits (computed here in long double), the top
// alternatives sorted with ties to the lower id, NaN as -inf, bad ids rejected.
TEST(TokenLogprobs, MatchLogSoftmaxAndOrderTies) {
  const std::vector<float> z = {1.0f, 3.0f, NAN, 3.0f, -2.0f, 0.5f};
  long double sum = 0;
  for (float v : z)
    if (!std::isnan(v)) sum += std::exp((long double)v);
  auto lp = [&](int i) { return double((long double)z[size_t(i)] - std::log(sum)); };
  const whale::TokenLogprob t = whale::token_logprobs(z, 4, 3);
  EXPECT_EQ(t.id, 4);
  EXPECT_NEAR(t.logprob, lp(4), 1e-6);
  ASSERT_EQ(t.top.size(), 3u);
  EXPECT_EQ(t.top[0].first, 1);  // tie between 1 and 3: lower id first
  EXPECT_EQ(t.top[1].first, 3);
  EXPECT_EQ(t.top[2].first, 0);
  EXPECT_NEAR(t.top[0].second, lp(1), 1e-6);
  EXPECT_NEAR(t.top[2].second, lp(0), 1e-6);
  EXPECT_EQ(whale::token_logprobs(z, 2, 0).logprob, -INFINITY);  // the NaN token
  EXPECT_TRUE(whale::token_logprobs(z, 0, 0).top.empty());
  EXPECT_EQ(whale::token_logprobs(z, 0, 100).top.size(), z.size());
  EXPECT_THROW(whale::token_logprobs(z, 6, 1), std::invalid_argument);
  EXPECT_THROW(whale::token_logprobs(std::vector<float>{NAN, -INFINITY}, 0, 1),
               std::invalid_argument);
}
