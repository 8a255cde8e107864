#include "reason/grpo.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "train/ops.h"

namespace whale::reason {

using train::kIgnoreIndex;

AdvantageMode parse_advantage_mode(std::string_view name) {
  if (name == "std") return AdvantageMode::Std;
  if (name == "mean") return AdvantageMode::Mean;
  throw std::invalid_argument("unknown advantage mode \"" + std::string(name) +
                              "\" (expected std or mean)");
}

const char* advantage_mode_name(AdvantageMode mode) {
  return mode == AdvantageMode::Std ? "std" : "mean";
}

void GrpoConfig::validate() const {
  auto bad = [](const std::string& field, double v, const std::string& rule) {
    throw std::invalid_argument(field + " must be " + rule + ", got " + std::to_string(v));
  };
  if (!(eps_low >= 0.0f && eps_low < 1.0f)) bad("eps_low", eps_low, "in [0, 1)");
  if (!(eps_high >= 0.0f) || !std::isfinite(eps_high)) bad("eps_high", eps_high, "finite, >= 0");
  if (!(beta >= 0.0f) || !std::isfinite(beta)) bad("beta", beta, "finite, >= 0");
  if (!(adv_eps > 0.0) || !std::isfinite(adv_eps)) bad("adv_eps", adv_eps, "finite, > 0");
}

GroupAdvantages group_advantages(std::span<const double> rewards, int64_t G, const GrpoConfig& c) {
  if (G < 2)
    throw std::invalid_argument("group size " + std::to_string(G) +
                                ": GRPO needs at least 2 completions per prompt");
  if (rewards.size() % size_t(G) != 0)
    throw std::invalid_argument(std::to_string(rewards.size()) +
                                " rewards are not whole groups of " + std::to_string(G));
  for (double r : rewards)
    if (!std::isfinite(r)) throw std::invalid_argument("a reward is not finite");
  const size_t P = rewards.size() / size_t(G);
  GroupAdvantages out;
  out.advantage.assign(rewards.size(), 0.0);
  out.skipped.assign(P, 0);
  for (size_t g = 0; g < P; g++) {
    const std::span<const double> r = rewards.subspan(g * size_t(G), size_t(G));
    if (std::all_of(r.begin(), r.end(), [&](double x) { return x == r[0]; })) {
      out.skipped[g] = 1;
      out.skipped_groups++;
      continue;
    }
    double mean = 0;
    for (double x : r) mean += x;
    mean /= double(G);
    double ss = 0;
    for (double x : r) ss += (x - mean) * (x - mean);
    const double div = c.adv == AdvantageMode::Std ? std::sqrt(ss / double(G - 1)) + c.adv_eps : 1;
    for (size_t i = 0; i < r.size(); i++) out.advantage[g * size_t(G) + i] = (r[i] - mean) / div;
  }
  return out;
}

int64_t GrpoBatch::tokens() const {
  return std::count_if(targets.begin(), targets.end(), [](int32_t t) { return t != kIgnoreIndex; });
}

GrpoBatch make_grpo_batch(std::span<const GrpoSequence> seqs, int64_t min_T) {
  GrpoBatch b;
  b.B = int64_t(seqs.size());
  b.T = min_T;
  for (const GrpoSequence& s : seqs) {
    if (s.prompt.empty() || s.completion.empty())
      throw std::invalid_argument("grpo: a sequence with an empty prompt or completion");
    b.T = std::max(b.T, int64_t(s.prompt.size() + s.completion.size()) - 1);
  }
  b.inputs.assign(size_t(b.B * b.T), 0);
  b.targets.assign(size_t(b.B * b.T), kIgnoreIndex);
  for (int64_t i = 0; i < b.B; i++) {
    const GrpoSequence& s = seqs[size_t(i)];
    const int64_t P = int64_t(s.prompt.size()), n = P + int64_t(s.completion.size());
    auto token = [&](int64_t t) {
      return t < P ? s.prompt[size_t(t)] : s.completion[size_t(t - P)];
    };
    for (int64_t t = 0; t + 1 < n; t++) {
      b.inputs[size_t(i * b.T + t)] = token(t);
      if (t + 1 >= P) b.targets[size_t(i * b.T + t)] = token(t + 1);
    }
    b.advantage.push_back(s.advantage);
  }
  return b;
}

GrpoSums& GrpoSums::operator+=(const GrpoSums& o) {
  objective += o.objective;
  kl += o.kl;
  tokens += o.tokens;
  clip_low += o.clip_low;
  clip_high += o.clip_high;
  return *this;
}

GrpoSums grpo_weights(const GrpoBatch& b, const float* logp, const float* logp_old,
                      const float* logp_ref, double inv_n, const GrpoConfig& c, float* w) {
  if (c.beta > 0.0f && !logp_ref)
    throw std::invalid_argument("grpo: beta > 0 needs the reference model's log-probabilities");
  const double lo = 1.0 - double(c.eps_low), hi = 1.0 + double(c.eps_high);
  GrpoSums s;
  for (int64_t n = 0; n < b.B * b.T; n++) {
    w[n] = 0.0f;
    if (b.targets[size_t(n)] == kIgnoreIndex) continue;
    const double A = b.advantage[size_t(n / b.T)];
    const double rho = std::exp(double(logp[n]) - double(logp_old[n]));
    const bool clip_high = A > 0 && rho > hi, clip_low = A < 0 && rho < lo;
    double J = std::min(rho * A, std::clamp(rho, lo, hi) * A);
    double dJ = clip_high || clip_low ? 0.0 : rho * A;
    if (c.beta > 0.0f) {
      // expm1: no cancellation for small d; the max keeps k3 >= 0 against the last rounding.
      const double d = double(logp_ref[n]) - double(logp[n]);
      const double k3 = std::max(0.0, std::expm1(d) - d);
      J -= double(c.beta) * k3;
      dJ += double(c.beta) * std::expm1(d);
      s.kl += k3;
    }
    w[n] = float(inv_n * dJ);
    s.objective += J;
    s.tokens++;
    s.clip_low += clip_low;
    s.clip_high += clip_high;
  }
  return s;
}

GrpoSums grpo_backward(train::TrainModel& policy, const GrpoBatch& b, const float* logp_old,
                       const float* logp_ref, double inv_n, const GrpoConfig& c,
                       const float* logp) {
  const size_t n = size_t(b.B * b.T);
  std::vector<float> own, w(n);
  if (!logp) {
    own.resize(n);
    policy.token_logprobs(b.inputs.data(), b.targets.data(), b.B, b.T, own.data());
    logp = own.data();
  }
  const GrpoSums s = grpo_weights(b, logp, logp_old, logp_ref, inv_n, c, w.data());
  policy.forward_backward(b.inputs.data(), b.targets.data(), b.B, b.T, 1.0f, w.data());
  return s;
}

}  // namespace whale::reason
