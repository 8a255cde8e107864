// The optimiser side of training: AdamW, learning-rate schedules, global-norm gradient clipping and
// BF16 rounding (BF16 compute with FP32 master weights).
//
// AdamW is exactly torch.optim.AdamW (Loshchilov & Hutter, decoupled weight decay), per element,
// with t = the number of steps taken so far including this one:
//   p   <- p * (1 - lr * weight_decay)                     (only where ParamTensor::decay)
//   m   <- beta1 * m + (1 - beta1) * g                     exp_avg
//   v   <- beta2 * v + (1 - beta2) * g^2                   exp_avg_sq
//   p   <- p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// Every update is element-wise, so the result does not depend on the thread count.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "train/model_train.h"

namespace whale::train {

// ------------------------------------------------------------------ AdamW

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

class AdamW {
 public:
  // Keeps a reference to `params` (the vector must outlive the optimiser; the data/grad pointers
  // it holds are read at every step, so they may be changed between steps). Moments start at zero.
  // Throws std::invalid_argument for betas outside [0, 1), eps < 0 or weight_decay < 0.
  explicit AdamW(const std::vector<ParamTensor>& params, const AdamWConfig& config = {});

  // One update of every parameter from its .grad at learning rate `lr` (>= 0, finite).
  void step(float lr);

  int64_t step_count() const { return step_count_; }
  void set_step_count(int64_t t);  // when restoring a checkpoint (t >= 0)
  const AdamWConfig& config() const { return config_; }
  size_t num_tensors() const { return exp_avg_.size(); }

  // The moments of params[i] (numel floats each), for checkpoints.
  std::span<float> exp_avg(size_t i) { return exp_avg_.at(i); }
  std::span<float> exp_avg_sq(size_t i) { return exp_avg_sq_.at(i); }
  std::span<const float> exp_avg(size_t i) const { return exp_avg_.at(i); }
  std::span<const float> exp_avg_sq(size_t i) const { return exp_avg_sq_.at(i); }

 private:
  const std::vector<ParamTensor>* params_;
  AdamWConfig config_;
  int64_t step_count_ = 0;
  std::vector<std::vector<float>> exp_avg_, exp_avg_sq_;
};

// ------------------------------------------------------------------ learning-rate schedules

enum class ScheduleKind { cosine, wsd, constant };

// "cosine" | "wsd" | "constant"; throws std::invalid_argument naming the string otherwise.
ScheduleKind parse_schedule_kind(std::string_view name);
const char* schedule_kind_name(ScheduleKind kind);

// lr(step) for step = 0, 1, ..., total_steps - 1 (the step about to be taken):
//   warm-up, step < W:      max_lr * (step + 1) / W          (linear from max_lr / W to max_lr)
//   cosine, step >= W:      min_lr + (max_lr - min_lr) * (1 + cos(pi * p)) / 2,
//                           p = (step + 1 - W) / (total_steps - W)
//   wsd (warm-up, stable, decay): max_lr until the last D = round(decay_fraction * total_steps)
//                           steps, which decay LINEARLY: max_lr - (max_lr - min_lr) * p,
//                           p = (step + 1 - (total_steps - D)) / D
//   constant:               max_lr after the warm-up
// so the last step (total_steps - 1) of cosine and wsd runs at exactly min_lr, and steps at or
// beyond total_steps stay there (constant: max_lr).
struct LrSchedule {
  ScheduleKind kind = ScheduleKind::cosine;
  float max_lr = 3e-4f;
  float min_lr = 3e-5f;
  int64_t warmup_steps = 0;
  int64_t total_steps = 1;
  float decay_fraction = 0.2f;  // wsd only

  // Throws std::invalid_argument naming the field and value: max_lr not > 0, min_lr outside
  // [0, max_lr], total_steps < 1, warmup_steps outside [0, total_steps], and for wsd a
  // decay_fraction outside (0, 1] or a decay phase overlapping the warm-up.
  void validate() const;
  float at(int64_t step) const;
  int64_t wsd_decay_steps() const;  // D above
};

// ------------------------------------------------------------------ gradients

// The global L2 norm of every .grad, accumulated in double in a fixed order (blocks of a fixed
// size, summed in sequence), so it is bit-identical for any thread count. When the norm exceeds
// max_norm > 0 every gradient is multiplied by max_norm / (norm + 1e-6) (as
// torch.nn.utils.clip_grad_norm_). max_norm <= 0: no clipping. Returns the norm before clipping;
// it is NaN or Inf when a gradient is (and then nothing is scaled).
double clip_grad_norm(const std::vector<ParamTensor>& params, double max_norm);

// True when every gradient element is finite.
bool all_finite(const std::vector<ParamTensor>& params);

// dst[i] = src[i] rounded to the nearest bfloat16 (ties to even, NaN stays NaN) and widened back
// to f32. dst may equal src.
void round_to_bf16(float* dst, const float* src, int64_t n);

}  // namespace whale::train
