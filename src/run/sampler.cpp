#include "run/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

namespace whale {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// Loops over the vocabulary keep kLanes independent partial results so that the compiler can
// vectorise them without reassociating floating-point sums (no -ffast-math needed).
constexpr size_t kLanes = 16;
// w_ is summed per block of this many tokens; a draw walks block sums, then one block.
constexpr size_t kBlock = 256;

// Candidate thresholds on z = (logit - max) / T, i.e. on log(p / p_max). top-k and top-p first
// collect every token with z >= the highest threshold that provably contains the answer, and
// only then select / sort, so that the whole vocabulary is never sorted.
constexpr float kThresholds[] = {-1.0f, -2.0f, -4.0f, -8.0f, -16.0f, -32.0f, -64.0f, -kInf};

// The first top-p round sorts this many of the candidates; each later round four times as many
// as are already sorted. Real next-token distributions rarely need a second round.
constexpr size_t kTopPFirstRound = 64;

// For floats x <= 0 (from -0 down to -inf) the bit pattern of |x|, read as a non-negative
// int32, grows with |x|, so comparisons can be done on integers. Float compare-and-select does
// not vectorise under GCC's default -ftrapping-math; integer compare-and-select does.
inline int32_t nonpositive_key(float x) {
  return std::bit_cast<int32_t>(x) & 0x7fffffff;
}

// A signed integer with the same order as the float x (NaN excluded): negative floats have
// their magnitude bits flipped. The map is its own inverse.
inline int32_t ordered_key(float x) {
  const int32_t b = std::bit_cast<int32_t>(x);
  return b ^ ((b >> 31) & 0x7fffffff);
}
inline float from_ordered_key(int32_t k) {
  return std::bit_cast<float>(k ^ ((k >> 31) & 0x7fffffff));
}

// max(v) (no NaN allowed), vectorised through ordered_key.
float max_of(const std::vector<float>& v) {
  int32_t lane[kLanes];
  std::fill(lane, lane + kLanes, ordered_key(-kInf));
  const size_t n = v.size();
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) lane[j] = std::max(lane[j], ordered_key(v[i + j]));
  }
  for (; i < n; ++i) lane[0] = std::max(lane[0], ordered_key(v[i]));
  return from_ordered_key(*std::max_element(lane, lane + kLanes));
}

// How many z >= t, for z, t <= 0.
size_t count_at_least(const std::vector<float>& z, float t) {
  const int32_t key_t = nonpositive_key(t);  // z >= t  <=>  key(z) <= key(t)
  uint32_t lane[kLanes] = {};
  const size_t n = z.size();
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (size_t j = 0; j < kLanes; ++j) lane[j] += uint32_t(nonpositive_key(z[i + j]) <= key_t);
  }
  size_t count = 0;
  for (; i < n; ++i) count += z[i] >= t;
  for (uint32_t c : lane) count += c;
  return count;
}

// Sum of w[i] over z[i] >= t, for z, t <= 0. Written with GCC/Clang vector extensions: the
// auto-vectoriser leaves the masked float sum scalar, these map onto SSE2 (or wider) directly.
double mass_at_least(const std::vector<float>& z, const std::vector<float>& w, float t) {
  using VecF = float __attribute__((vector_size(kLanes * sizeof(float))));
  using VecI = int32_t __attribute__((vector_size(kLanes * sizeof(float))));
  const int32_t key_t = nonpositive_key(t);  // z >= t  <=>  key(z) <= key(t)
  const size_t n = z.size();
  double mass = 0.0;
  for (size_t lo = 0; lo < n; lo += kBlock) {
    const size_t hi = std::min(n, lo + kBlock);
    VecF lane = {};
    size_t i = lo;
    for (; i + kLanes <= hi; i += kLanes) {
      VecI zb, wb;
      std::memcpy(&zb, z.data() + i, sizeof zb);
      std::memcpy(&wb, w.data() + i, sizeof wb);
      // key_t - key(z) is negative exactly when z < t: its sign bit, spread, masks w out. (An
      // arithmetic mask, because GCC turns a compare-and-mask into scalar selects here.)
      lane += reinterpret_cast<VecF>(wb & ~((key_t - (zb & 0x7fffffff)) >> 31));
    }
    for (; i < hi; ++i) mass += nonpositive_key(z[i]) <= key_t ? w[i] : 0.0f;
    for (size_t j = 0; j < kLanes; ++j) mass += lane[j];
  }
  return mass;
}

// exp(x) for x <= 0 (including -inf), relative error ~2e-7, exactly 1 at x = 0 and exactly 0
// below -87 (where exp(x) < 2^-125: irrelevant next to the maximum's 1). Plain arithmetic, no
// library call, so it vectorises and gives the same bits with every libm.
inline float exp_nonpositive(float x) {
  constexpr int32_t kLimit = 0x42ae0000;  // bits of 87.0f
  const int32_t key = nonpositive_key(x);
  const uint32_t keep = 0u - uint32_t(key <= kLimit);  // all ones unless exp(x) underflows
  x = -std::bit_cast<float>(std::min(key, kLimit));    // clamped to [-87, 0]
  // x = n ln2 + r with integer n and |r| <= ln2 / 2; ln2 is split in two for an exact n ln2.
  // Adding 1.5 * 2^23 rounds to an integer, which then sits in the low mantissa bits.
  constexpr float kRound = 12582912.0f;
  constexpr uint32_t kRoundBits = 0x4b400000u;
  const float shifted = x * 1.44269504089f + kRound;
  const float n = shifted - kRound;
  const float r = (x - n * 0.693359375f) - n * -2.12194440e-4f;
  // exp(r) by its Taylor series to r^7 (truncation error < 6e-9 for |r| <= ln2 / 2).
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n from the exponent bits; -126 <= n <= 0 here, so it is a normal float.
  const uint32_t n_plus_bias = std::bit_cast<uint32_t>(shifted) - kRoundBits + 127u;
  const float two_n = std::bit_cast<float>(n_plus_bias << 23);
  return std::bit_cast<float>(std::bit_cast<uint32_t>(p * two_n) & keep);
}

// Tokens with higher z first; equal z: lower id first. A strict total order (z has no NaN).
inline bool before(float za, int32_t a, float zb, int32_t b) {
  return za > zb || (za == zb && a < b);
}

}  // namespace

Sampler::Sampler(SamplingParams params) : params_(params), rng_(params.seed) {
  const SamplingParams& p = params_;
  if (std::isnan(p.temperature) || std::isnan(p.top_p) || std::isnan(p.min_p) ||
      std::isnan(p.frequency_penalty) || std::isnan(p.presence_penalty) ||
      std::isnan(p.repetition_penalty)) {
    throw std::invalid_argument("Sampler: NaN sampling parameter");
  }
  if (std::isinf(p.temperature)) throw std::invalid_argument("Sampler: infinite temperature");
  if (p.top_k < 0) throw std::invalid_argument("Sampler: top_k must be >= 0");
  if (!(p.repetition_penalty > 0.0f)) {
    throw std::invalid_argument("Sampler: repetition_penalty must be > 0");
  }
}

void Sampler::reseed(uint64_t seed) {
  params_.seed = seed;
  rng_.seed(seed);
}

double Sampler::next_uniform() {
  // 53 random bits scaled by 2^-53: every double k * 2^-53, k < 2^53, equally likely.
  return double(rng_() >> 11) * 0x1.0p-53;
}

// ---- steps 1-3 ----

void Sampler::apply_penalties(std::span<const int32_t> history) {
  const float rp = params_.repetition_penalty;
  const float fp = params_.frequency_penalty;
  const float pp = params_.presence_penalty;
  if (history.empty() || (rp == 1.0f && fp == 0.0f && pp == 0.0f)) return;
  const int64_t n = int64_t(z_.size());
  hist_.clear();
  for (int32_t id : history) {
    if (id >= 0 && id < n) hist_.push_back(id);
  }
  std::sort(hist_.begin(), hist_.end());
  // Run-length over the sorted ids gives each distinct token and its count.
  for (size_t i = 0; i < hist_.size();) {
    size_t j = i;
    while (j < hist_.size() && hist_[j] == hist_[i]) ++j;
    float& l = z_[size_t(hist_[i])];
    if (rp != 1.0f) l = l > 0.0f ? l / rp : l * rp;
    l -= float(j - i) * fp + pp;
    if (std::isnan(l)) l = -kInf;  // e.g. inf - inf with infinite penalties
    i = j;
  }
}

float Sampler::prepare(std::span<const float> logits, std::span<const int32_t> history) {
  if (logits.empty()) throw std::invalid_argument("Sampler: empty logits");
  if (logits.size() > size_t(std::numeric_limits<int32_t>::max())) {
    throw std::invalid_argument("Sampler: vocabulary too large for int32 ids");
  }
  const size_t n = logits.size();
  z_.resize(n);
  float* z = z_.data();
  for (size_t i = 0; i < n; ++i) z[i] = std::isnan(logits[i]) ? -kInf : logits[i];
  apply_penalties(history);

  const float m = max_of(z_);
  if (m == kInf) {
    // softmax's limit when some logits go to +inf: those tokens split the mass equally.
    for (size_t k = 0; k < n; ++k) z[k] = z[k] == kInf ? 0.0f : -kInf;
    return 0.0f;
  }
  return m;
}

// ---- steps 4-7 ----

void Sampler::exp_all() {
  const size_t n = z_.size();
  w_.resize(n);
  block_.resize((n + kBlock - 1) / kBlock);
  const float* z = z_.data();
  float* w = w_.data();
  for (size_t b = 0; b < block_.size(); ++b) {
    const size_t hi = std::min(n, (b + 1) * kBlock);
    float lane[kLanes] = {};
    size_t i = b * kBlock;
    for (; i + kLanes <= hi; i += kLanes) {
      for (size_t j = 0; j < kLanes; ++j) {
        w[i + j] = exp_nonpositive(z[i + j]);
        lane[j] += w[i + j];
      }
    }
    double sum = 0.0;
    for (float v : lane) sum += v;
    for (; i < hi; ++i) sum += w[i] = exp_nonpositive(z[i]);
    block_[b] = sum;
  }
}

void Sampler::exp_candidates() {
  w_.resize(z_.size());
  for (const Cand& c : cand_) w_[size_t(c.id)] = exp_nonpositive(c.z);
}

float Sampler::top_k_threshold(size_t k) const {
  for (float t : kThresholds) {
    if (count_at_least(z_, t) >= k) return t;
  }
  return -kInf;
}

float Sampler::top_p_threshold(double target) const {
  for (float t : kThresholds) {
    if (mass_at_least(z_, w_, t) >= target) return t;
  }
  return -kInf;
}

void Sampler::collect_if_z_at_least(float threshold) {
  // z >= threshold  <=>  key(z) <= key(threshold); chunks without any such token are skipped
  // with one vectorised test, and kept chunks are copied branch-free (every token is written,
  // only kept ones advance the end).
  const int32_t key_t = nonpositive_key(threshold);
  const size_t n = z_.size();
  const float* z = z_.data();
  cand_.resize(count_at_least(z_, threshold) + kLanes);
  size_t end = 0;
  size_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    uint32_t any = 0;
    for (size_t j = 0; j < kLanes; ++j) any |= uint32_t(nonpositive_key(z[i + j]) <= key_t);
    if (!any) continue;
    for (size_t j = i; j < i + kLanes; ++j) {
      cand_[end] = {z[j], int32_t(j)};
      end += nonpositive_key(z[j]) <= key_t;
    }
  }
  for (; i < n; ++i) {
    cand_[end] = {z[i], int32_t(i)};
    end += nonpositive_key(z[i]) <= key_t;
  }
  cand_.resize(end);
  all_kept_ = false;
  sorted_ = false;
}

void Sampler::keep_top_k(size_t k) {
  collect_if_z_at_least(top_k_threshold(k));
  auto by_prob = [](const Cand& a, const Cand& b) { return before(a.z, a.id, b.z, b.id); };
  if (cand_.size() > k) {
    std::nth_element(cand_.begin(), cand_.begin() + ptrdiff_t(k), cand_.end(), by_prob);
    cand_.resize(k);
  }
  std::sort(cand_.begin(), cand_.end(), by_prob);
  sorted_ = true;
}

void Sampler::keep_min_p() {
  // p_i >= min_p * p_max  <=>  exp(z_i) >= min_p  <=>  z_i >= log(min_p), as z_max = 0.
  // min_p >= 1 keeps just the most probable token(s): threshold 0.
  const float threshold = std::min(std::log(params_.min_p), 0.0f);
  if (all_kept_) {
    collect_if_z_at_least(threshold);
  } else {
    std::erase_if(cand_, [threshold](const Cand& c) { return c.z < threshold; });
  }
}

void Sampler::keep_top_p(double target) {
  // The kept set is the shortest prefix of the sorted candidates whose mass reaches target.
  if (all_kept_) collect_if_z_at_least(top_p_threshold(target));
  auto by_prob = [](const Cand& a, const Cand& b) { return before(a.z, a.id, b.z, b.id); };
  const size_t n = cand_.size();
  double cum = 0.0;
  size_t done = 0;
  // Order the candidates in growing rounds until the mass is reached.
  while (done < n) {
    const size_t end = sorted_ ? n : std::min(n, std::max(kTopPFirstRound, 4 * done));
    auto first = cand_.begin() + ptrdiff_t(done), last = cand_.begin() + ptrdiff_t(end);
    if (!sorted_) {
      if (end < n) std::nth_element(first, last, cand_.end(), by_prob);
      std::sort(first, last, by_prob);
    }
    for (; done < end; ++done) {
      cum += w_[size_t(cand_[done].id)];
      if (cum >= target) {
        cand_.resize(done + 1);
        sorted_ = true;
        return;
      }
    }
  }
  sorted_ = true;  // target not reached (only by rounding): keep every candidate
}

double Sampler::kept_mass() const {
  double total = 0.0;
  if (all_kept_) {
    for (double b : block_) total += b;
  } else {
    for (const Cand& c : cand_) total += w_[size_t(c.id)];
  }
  return total;
}

void Sampler::filter(float max_z) {
  if (max_z == -kInf) throw std::invalid_argument("Sampler: every logit is NaN or -inf");
  // Temperature, shifted so that the most probable token has z = 0 (no overflow for small T).
  // Division, not a multiply by 1/T, which overflows for subnormal T and gives 0 * inf = NaN.
  const float t = params_.temperature;
  for (float& v : z_) v = (v - max_z) / t;

  all_kept_ = true;
  sorted_ = false;
  const size_t k = size_t(params_.top_k);
  const bool top_k = k > 0 && k < z_.size();
  const bool min_p = params_.min_p > 0.0f;
  const bool top_p = params_.top_p < 1.0f;
  // exp() only where a probability is needed: the candidates when top-k (or min-p alone) has
  // already cut the vocabulary down, else every token.
  if (top_k) {
    keep_top_k(k);
    exp_candidates();
  } else if (min_p && !top_p) {
    keep_min_p();
    exp_candidates();
    return;
  } else {
    exp_all();
  }
  if (top_p) {
    // Mass of what top-k kept: the top-p target is relative to it, not to what min-p keeps.
    const double total = kept_mass();
    if (min_p) keep_min_p();
    keep_top_p(double(params_.top_p) * total);
  } else if (min_p) {
    keep_min_p();
  }
}

// ---- step 8 ----

int32_t Sampler::draw() {
  // Inverse CDF: the first token whose cumulative mass exceeds u. Tokens with w = 0 never win.
  const double u = next_uniform() * kept_mass();
  double cum = 0.0;
  if (!all_kept_) {
    int32_t last_positive = -1;
    for (const Cand& c : cand_) {
      const float w = w_[size_t(c.id)];
      if (w <= 0.0f) continue;
      cum += w;
      last_positive = c.id;
      if (u < cum) return c.id;
    }
    return last_positive;  // only reached through rounding
  }
  // Find the block first, then the token inside it.
  size_t b = 0;
  while (b + 1 < block_.size() && !(u < cum + block_[b])) cum += block_[b++];
  if (block_[b] <= 0.0) {  // rounding walked past the last non-empty block: take its last token
    while (b > 0 && block_[b] <= 0.0) --b;
    cum = -kInf;
  }
  const size_t lo = b * kBlock, hi = std::min(w_.size(), lo + kBlock);
  int32_t last_positive = -1;
  for (size_t i = lo; i < hi; ++i) {
    if (w_[i] <= 0.0f) continue;
    cum += w_[i];
    last_positive = int32_t(i);
    if (u < cum) return int32_t(i);
  }
  return last_positive;
}

int32_t Sampler::sample(std::span<const float> logits, std::span<const int32_t> history) {
  const float m = prepare(logits, history);
  if (is_greedy()) {
    if (m == -kInf) throw std::invalid_argument("Sampler: every logit is NaN or -inf");
    return int32_t(std::find(z_.begin(), z_.end(), m) - z_.begin());  // ties: lowest id
  }
  filter(m);
  return draw();
}

std::vector<TokenProb> Sampler::distribution(std::span<const float> logits,
                                             std::span<const int32_t> history) {
  const float m = prepare(logits, history);
  if (is_greedy()) {
    if (m == -kInf) throw std::invalid_argument("Sampler: every logit is NaN or -inf");
    return {{int32_t(std::find(z_.begin(), z_.end(), m) - z_.begin()), 1.0f}};
  }
  filter(m);
  if (all_kept_) collect_if_z_at_least(-kInf);
  if (!sorted_) {
    std::sort(cand_.begin(), cand_.end(),
              [](const Cand& a, const Cand& b) { return before(a.z, a.id, b.z, b.id); });
  }
  const double total = kept_mass();
  std::vector<TokenProb> out;
  for (const Cand& c : cand_) {
    const float w = w_[size_t(c.id)];
    if (w > 0.0f) out.push_back({c.id, float(w / total)});
  }
  return out;
}

TokenLogprob token_logprobs(std::span<const float> logits, int32_t chosen, int top) {
  if (chosen < 0 || size_t(chosen) >= logits.size())
    throw std::invalid_argument("token_logprobs: token id outside the vocabulary");
  auto value = [&](size_t i) { return std::isnan(logits[i]) ? -kInf : logits[i]; };
  float m = -kInf;
  for (size_t i = 0; i < logits.size(); ++i) m = std::max(m, value(i));
  if (!std::isfinite(m)) throw std::invalid_argument("token_logprobs: no finite logit");
  double sum = 0;  // in double: 129280 terms
  for (size_t i = 0; i < logits.size(); ++i) sum += std::exp(double(value(i)) - m);
  const double lse = double(m) + std::log(sum);
  TokenLogprob out;
  out.id = chosen;
  out.logprob = float(double(value(size_t(chosen))) - lse);
  const size_t k = std::min(size_t(std::max(top, 0)), logits.size());
  if (k == 0) return out;
  // Keep a sorted list of the k best seen so far; most tokens fail the first comparison.
  std::vector<std::pair<int32_t, float>> best;
  best.reserve(k + 1);
  auto better = [](const std::pair<int32_t, float>& a, const std::pair<int32_t, float>& b) {
    return a.second > b.second || (a.second == b.second && a.first < b.first);
  };
  for (size_t i = 0; i < logits.size(); ++i) {
    const std::pair<int32_t, float> c{int32_t(i), value(i)};
    if (best.size() == k && !better(c, best.back())) continue;
    best.insert(std::upper_bound(best.begin(), best.end(), c, better), c);
    if (best.size() > k) best.pop_back();
  }
  for (auto& [id, z] : best) out.top.emplace_back(id, float(double(z) - lse));
  return out;
}

}  // namespace whale
