// Next-token sampling from f32 logits.
//
// Pipeline, in this order (the order of Hugging Face `generate`: processors, then warpers):
//   1. penalties over the tokens in `history` (ids outside the vocabulary are ignored):
//      a. repetition_penalty r (CTRL / HF / llama.cpp): for every distinct token in history,
//         logit > 0 ? logit / r : logit * r;
//      b. OpenAI frequency / presence penalties:
//         logit -= count * frequency_penalty + (count > 0) * presence_penalty.
//   2. clean-up: NaN counts as -inf. If any logit is +inf, the +inf tokens share all the
//      probability equally (the limit of softmax) and every other token gets none.
//   3. greedy (greedy == true or temperature <= 0): the argmax, ties to the lowest id. The filters
//      below do not apply (they never remove the argmax anyway).
//   4. temperature: z = logit / T, p = softmax(z).
//   5. top-k (top_k > 0): keep the k most probable tokens.
//   6. top-p (top_p < 1): keep the smallest prefix of the tokens sorted by descending probability
//      whose probability mass, renormalised over what top-k kept, is >= top_p (at least 1 token).
//   7. min-p (min_p > 0): drop tokens with p < min_p * max(p) (min_p >= 1: only the max).
//      p / max(p) does not change with renormalisation, so min-p and top-p commute; both cut
//      the same sorted list.
//   8. draw one token from the kept set with probability proportional to p.
// Ties in probability are ordered by lower id first, so the kept set is always well defined.
//
// If no token has a finite or +inf logit (all NaN / -inf), or `logits` is empty, sample() throws
// std::invalid_argument: there is nothing meaningful to return.
//
// Determinism: the random stream is std::mt19937_64 seeded with `seed` (its output is fixed by
// the C++ standard), uniforms are made from its top 53 bits by hand, and exp() is computed by
// whale's own arithmetic rather than libm, so the same seed, logits and history give the same
// ids with any standard library (a build that contracts a*b+c into FMA could differ only when a
// draw lands within float rounding of a boundary). Each non-greedy sample() consumes one number.
//
// Speed (129280-entry vocabulary): a few vectorised passes over the logits (copy, max, scale,
// exp). top-k and top-p never sort the vocabulary: they first collect the tokens above the
// highest log-probability threshold (-1, -2, -4, ... below the max) that provably contains the
// answer, then nth_element / sort only those. min-p is a single threshold. exp() underflows to 0
// below z = -87 (p / p_max < 2^-125); such tokens are never drawn.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <utility>
#include <vector>

namespace whale {

struct SamplingParams {
  float temperature = 1.0f;
  int top_k = 0;       // 0 = off
  float top_p = 1.0f;  // >= 1 = off
  float min_p = 0.0f;  // <= 0 = off
  uint64_t seed = 0;
  bool greedy = false;
  float frequency_penalty = 0, presence_penalty = 0, repetition_penalty = 1;
};

// One entry of the distribution that sample() draws from.
struct TokenProb {
  int32_t id;
  float prob;
};

// Holds scratch buffers and the random stream: one Sampler per generation, not shared between
// threads.
class Sampler {
 public:
  // Throws std::invalid_argument on NaN parameters, infinite temperature, top_k < 0 or
  // repetition_penalty <= 0.
  explicit Sampler(SamplingParams params);

  // Picks the next token id in [0, logits.size()). `history`: previously generated ids, for the
  // penalties. Throws std::invalid_argument if no token can be chosen (see above).
  int32_t sample(std::span<const float> logits, std::span<const int32_t> history = {});

  // The kept tokens and their renormalised probabilities, exactly as sample() would draw from
  // them; sorted by descending probability (ties: lower id first). For greedy sampling this is
  // the single argmax with probability 1. Consumes no randomness.
  std::vector<TokenProb> distribution(std::span<const float> logits,
                                      std::span<const int32_t> history = {});

  // Restarts the random stream as if freshly constructed with this seed.
  void reseed(uint64_t seed);

  const SamplingParams& params() const { return params_; }

 private:
  // A kept token: its scaled logit z (for ordering) and id.
  struct Cand {
    float z;
    int32_t id;
  };

  bool is_greedy() const { return params_.greedy || params_.temperature <= 0.0f; }
  // Steps 1-2: copies logits into z_ with penalties and NaN/inf handling; returns max(z_).
  float prepare(std::span<const float> logits, std::span<const int32_t> history);
  void apply_penalties(std::span<const int32_t> history);
  // Steps 4-7. Afterwards either all_kept_ (every id, drawn in id order via w_ and block_) or
  // cand_ holds the kept tokens (sorted by descending z when sorted_).
  void filter(float max_z);
  void exp_all();
  void exp_candidates();  // w_ for the ids in cand_ only
  void collect_if_z_at_least(float threshold);
  float top_k_threshold(size_t k) const;
  float top_p_threshold(double target) const;
  void keep_top_k(size_t k);
  void keep_min_p();
  void keep_top_p(double target);
  double kept_mass() const;
  int32_t draw();
  // Uniform double in [0, 1) from the top 53 bits of the generator.
  double next_uniform();

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> z_;       // penalised logits; after filter(): (logit - max) / T <= 0
  std::vector<float> w_;       // exp(z): probabilities up to a common factor
  std::vector<double> block_;  // sums of w_ over consecutive blocks, for a fast draw
  std::vector<Cand> cand_;     // kept tokens when !all_kept_
  std::vector<int32_t> hist_;  // scratch: sorted history
  bool all_kept_ = true;
  bool sorted_ = false;
};

// The log-probability of token `chosen` under softmax(logits) (the model's own distribution:
// no penalties, temperature or filters), and the `top` most probable tokens with theirs, by
// descending log-probability (ties: lower id first). This is what the OpenAI API's `logprobs` /
// `top_logprobs` report. NaN logits count as -inf. Throws std::invalid_argument when no logit is
// finite or `chosen` is outside the vocabulary.
struct TokenLogprob {
  int32_t id = -1;
  float logprob = 0;
  std::vector<std::pair<int32_t, float>> top;  // (id, logprob)
};
TokenLogprob token_logprobs(std::span<const float> logits, int32_t chosen, int top);

}  // namespace whale
