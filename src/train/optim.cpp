#include "train/optim.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>

#include "tensor/dtype.h"

namespace whale::train {

namespace {

std::string num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

// Element loops this short run on one thread (the team start-up costs more than the work).
constexpr int64_t kParallelMin = 1 << 14;

}  // namespace

// ------------------------------------------------------------------ AdamW

AdamW::AdamW(const std::vector<ParamTensor>& params, const AdamWConfig& config)
    : params_(&params), config_(config) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("AdamW: " + m); };
  if (!(config.beta1 >= 0 && config.beta1 < 1))
    bad("beta1 " + num(config.beta1) + " not in [0, 1)");
  if (!(config.beta2 >= 0 && config.beta2 < 1))
    bad("beta2 " + num(config.beta2) + " not in [0, 1)");
  if (!(config.eps >= 0) || !std::isfinite(config.eps)) bad("eps " + num(config.eps) + " < 0");
  if (!(config.weight_decay >= 0) || !std::isfinite(config.weight_decay))
    bad("weight_decay " + num(config.weight_decay) + " < 0");
  for (const ParamTensor& p : params) {
    if (p.numel < 0 || (p.numel > 0 && !p.data)) bad("parameter '" + p.name + "' has no data");
    exp_avg_.emplace_back(size_t(p.numel), 0.0f);
    exp_avg_sq_.emplace_back(size_t(p.numel), 0.0f);
  }
}

void AdamW::set_step_count(int64_t t) {
  if (t < 0) throw std::invalid_argument("AdamW: step count " + std::to_string(t) + " < 0");
  step_count_ = t;
}

void AdamW::step(float lr) {
  const std::vector<ParamTensor>& ps = *params_;
  if (ps.size() != exp_avg_.size())
    throw std::logic_error("AdamW: the parameter list changed size (" +
                           std::to_string(exp_avg_.size()) + " -> " + std::to_string(ps.size()) +
                           ")");
  if (!(lr >= 0) || !std::isfinite(lr))
    throw std::invalid_argument("AdamW: learning rate " + num(lr) + " is not a finite value >= 0");
  step_count_++;
  // The scalars as torch computes them: in double, then used in f32 arithmetic.
  const double b1 = config_.beta1, b2 = config_.beta2;
  const double t = double(step_count_);
  const float step_size = float(double(lr) / (1 - std::pow(b1, t)));  // lr / bias_correction1
  const float bc2_sqrt = float(std::sqrt(1 - std::pow(b2, t)));
  const float decay = float(1 - double(lr) * double(config_.weight_decay));
  const float beta1 = config_.beta1, beta2 = config_.beta2, eps = config_.eps;
  const float one_m_b1 = float(1 - b1), one_m_b2 = float(1 - b2);

  for (size_t i = 0; i < ps.size(); i++) {
    const ParamTensor& p = ps[i];
    if (size_t(p.numel) != exp_avg_[i].size())
      throw std::logic_error("AdamW: parameter '" + p.name + "' changed size");
    if (p.numel > 0 && (!p.data || !p.grad))
      throw std::invalid_argument("AdamW: parameter '" + p.name + "' has no data or gradient");
    float* w = p.data;
    const float* g = p.grad;
    float* m = exp_avg_[i].data();
    float* v = exp_avg_sq_[i].data();
    const float scale = p.decay ? decay : 1.0f;
    const int64_t n = p.numel;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t j = 0; j < n; j++) {
      float wj = w[j] * scale;  // decoupled weight decay
      m[j] = m[j] * beta1 + one_m_b1 * g[j];
      v[j] = v[j] * beta2 + one_m_b2 * g[j] * g[j];
      const float denom = std::sqrt(v[j]) / bc2_sqrt + eps;
      w[j] = wj - step_size * m[j] / denom;
    }
  }
}

// ------------------------------------------------------------------ learning-rate schedules

ScheduleKind parse_schedule_kind(std::string_view name) {
  if (name == "cosine") return ScheduleKind::cosine;
  if (name == "wsd") return ScheduleKind::wsd;
  if (name == "constant") return ScheduleKind::constant;
  throw std::invalid_argument("unknown learning-rate schedule '" + std::string(name) +
                              "' (expected cosine, wsd or constant)");
}

const char* schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::cosine:
      return "cosine";
    case ScheduleKind::wsd:
      return "wsd";
    case ScheduleKind::constant:
      return "constant";
  }
  return "?";
}

int64_t LrSchedule::wsd_decay_steps() const {
  return std::llround(double(decay_fraction) * double(total_steps));
}

void LrSchedule::validate() const {
  auto bad = [](const std::string& m) {
    throw std::invalid_argument("learning-rate schedule: " + m);
  };
  if (!(max_lr > 0) || !std::isfinite(max_lr)) bad("max_lr " + num(max_lr) + " must be > 0");
  if (!(min_lr >= 0) || !(min_lr <= max_lr))
    bad("min_lr " + num(min_lr) + " must be in [0, max_lr = " + num(max_lr) + "]");
  if (total_steps < 1) bad("total_steps " + std::to_string(total_steps) + " must be >= 1");
  if (warmup_steps < 0 || warmup_steps > total_steps)
    bad("warmup_steps " + std::to_string(warmup_steps) +
        " must be in [0, total_steps = " + std::to_string(total_steps) + "]");
  if (kind == ScheduleKind::wsd) {
    if (!(decay_fraction > 0 && decay_fraction <= 1))
      bad("wsd decay_fraction " + num(decay_fraction) + " must be in (0, 1]");
    const int64_t d = wsd_decay_steps();
    if (d < 1)
      bad("wsd decay_fraction " + num(decay_fraction) + " of " + std::to_string(total_steps) +
          " steps leaves no decay step");
    if (warmup_steps + d > total_steps)
      bad("warmup_steps " + std::to_string(warmup_steps) + " + wsd decay steps " +
          std::to_string(d) + " exceed total_steps " + std::to_string(total_steps));
  }
}

float LrSchedule::at(int64_t step) const {
  const double hi = max_lr, lo = min_lr;
  if (step < warmup_steps) return float(hi * double(step + 1) / double(warmup_steps));
  switch (kind) {
    case ScheduleKind::constant:
      return max_lr;
    case ScheduleKind::cosine: {
      if (step >= total_steps - 1) return min_lr;
      const double p = double(step + 1 - warmup_steps) / double(total_steps - warmup_steps);
      return float(lo + (hi - lo) * 0.5 * (1 + std::cos(M_PI * p)));
    }
    case ScheduleKind::wsd: {
      const int64_t d = wsd_decay_steps(), start = total_steps - d;
      if (step < start) return max_lr;
      if (step >= total_steps - 1) return min_lr;
      const double p = double(step + 1 - start) / double(d);
      return float(hi - (hi - lo) * p);
    }
  }
  return max_lr;
}

// ------------------------------------------------------------------ gradients

namespace {

// Sum of squares of every gradient, in double, over fixed blocks summed in order: the grouping
// depends only on the tensor sizes, never on the thread count.
double grad_sum_squares(const std::vector<ParamTensor>& params) {
  constexpr int64_t kBlock = 1 << 14;
  struct Block {
    const float* g;
    int64_t n;
  };
  std::vector<Block> blocks;
  for (const ParamTensor& p : params) {
    if (p.numel > 0 && !p.grad)
      throw std::invalid_argument("clip_grad_norm: parameter '" + p.name + "' has no gradient");
    for (int64_t b = 0; b < p.numel; b += kBlock)
      blocks.push_back({p.grad + b, std::min(kBlock, p.numel - b)});
  }
  std::vector<double> partial(blocks.size());
  const int64_t nb = int64_t(blocks.size());
#pragma omp parallel for schedule(static) if (nb > 1)
  for (int64_t b = 0; b < nb; b++) {
    double s = 0;
    for (int64_t j = 0; j < blocks[size_t(b)].n; j++) {
      const double x = blocks[size_t(b)].g[j];
      s += x * x;
    }
    partial[size_t(b)] = s;
  }
  double total = 0;
  for (double s : partial) total += s;
  return total;
}

}  // namespace

double clip_grad_norm(const std::vector<ParamTensor>& params, double max_norm) {
  const double norm = std::sqrt(grad_sum_squares(params));
  if (!(max_norm > 0) || !std::isfinite(norm)) return norm;
  const double coef = max_norm / (norm + 1e-6);
  if (coef >= 1) return norm;
  const float c = float(coef);
  for (const ParamTensor& p : params) {
    float* g = p.grad;
    const int64_t n = p.numel;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
    for (int64_t j = 0; j < n; j++) g[j] *= c;
  }
  return norm;
}

bool all_finite(const std::vector<ParamTensor>& params) {
  for (const ParamTensor& p : params) {
    const float* g = p.grad;
    const int64_t n = p.numel;
    if (n > 0 && !g) continue;
    bool ok = true;
#pragma omp parallel for schedule(static) reduction(&& : ok) if (n >= kParallelMin)
    for (int64_t j = 0; j < n; j++) ok = ok && std::isfinite(g[j]);
    if (!ok) return false;
  }
  return true;
}

void round_to_bf16(float* dst, const float* src, int64_t n) {
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int64_t j = 0; j < n; j++) dst[j] = bf16_to_f32(f32_to_bf16(src[j]));
}

}  // namespace whale::train
