// GRPO, the policy-gradient objective of DeepSeekMath (section 4.1) and DeepSeek-R1: group-relative
// advantages, a clipped importance ratio, and a KL penalty towards a frozen reference model.
//
// For P prompts with G completions each, completion i of a group scored r_i:
//   A_i   = (r_i - mean r) / (std r + eps)    "std" (std unbiased, as TRL's torch.std; eps 1e-4)
//   A_i   = r_i - mean r                      "mean" (Dr. GRPO: no division by the std)
// A group whose rewards are all equal has nothing to learn from (A = 0): it is skipped, not trained
// on, and counted. Each completion token t of the other groups (prompt and padding masked), with
// log-probabilities logp under the policy being trained, logp_old under the policy that sampled
// the completions, logp_ref under the reference model:
//   rho_t = exp(logp_t - logp_old_t)
//   k3_t  = exp(logp_ref_t - logp_t) - (logp_ref_t - logp_t) - 1                  (>= 0)
//   J_t   = min(rho_t A, clip(rho_t, 1 - eps_low, 1 + eps_high) A) - beta k3_t
//   loss  = -(1/N) sum_t J_t,  N = the completion tokens of every non-skipped group of the batch
//           (token-level averaging, as DAPO: a long completion is not worth less per token).
// eps_low < eps_high is DAPO's clip-higher. The clipped branch is taken (the token gives no
// gradient) when rho_t > 1 + eps_high with A > 0 ("clip high") or rho_t < 1 - eps_low with A < 0
// ("clip low"); the fractions of tokens in each are reported.
//
// Gradient: dJ_t/dlogp_t = [the unclipped branch is taken] rho_t A - beta (1 - exp(logp_ref_t -
// logp_t)). With the constants w_t = (1/N) dJ_t/dlogp_t, the loss -sum_t w_t logp_t has the same
// gradient as the GRPO loss, and that is exactly TrainModel::forward_backward with per-target
// weights w_t (CE_t = -logp_t). So a pass is: a forward for logp (TrainModel::token_logprobs), the
// weights, then one forward_backward with them. On the first pass over fresh rollouts logp =
// logp_old (rho = 1) and the first forward is the one that gave logp_old.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "train/model_train.h"

namespace whale::reason {

enum class AdvantageMode { Std, Mean };

// "std" | "mean"; throws std::invalid_argument naming the string otherwise.
AdvantageMode parse_advantage_mode(std::string_view name);
const char* advantage_mode_name(AdvantageMode mode);

struct GrpoConfig {
  float eps_low = 0.2f;   // clip(rho, 1 - eps_low, 1 + eps_high)
  float eps_high = 0.2f;  // DAPO clip-higher: eps_high > eps_low
  float beta = 0.001f;    // KL penalty weight (0: no reference model needed)
  AdvantageMode adv = AdvantageMode::Std;
  double adv_eps = 1e-4;  // std mode: A = (r - mean) / (std + adv_eps)

  // Throws std::invalid_argument naming the field: eps_low outside [0, 1), eps_high < 0, beta < 0,
  // adv_eps <= 0, anything non-finite.
  void validate() const;
};

// Advantages of P groups of G consecutive completions.
struct GroupAdvantages {
  std::vector<double> advantage;  // [P*G]; 0 in skipped groups
  std::vector<char> skipped;      // [P]: 1 where all rewards of the group are equal
  int64_t skipped_groups = 0;
};

// rewards [P*G], group g = rewards[g*G, (g+1)*G). Throws std::invalid_argument for G < 2 or a
// size that is not a multiple of G, or a non-finite reward.
GroupAdvantages group_advantages(std::span<const double> rewards, int64_t G, const GrpoConfig& c);

// B sequences of T tokens (prompt + completion, right-padded) as the objective sees them:
// targets[b][t] is the next token where that is a completion token (eos included when sampled),
// kIgnoreIndex on the prompt and the padding; advantage[b] is the sequence's A.
struct GrpoBatch {
  int64_t B = 0, T = 0;
  std::vector<int32_t> inputs, targets;  // [B][T]
  std::vector<double> advantage;         // [B]

  int64_t tokens() const;  // completion tokens (targets that count)
};

// One sequence for make_grpo_batch: its prompt, its completion (eos included when sampled) and A.
struct GrpoSequence {
  std::span<const int32_t> prompt, completion;
  double advantage = 0;
};

// The batch of the given sequences in order, T = the longest prompt + completion - 1 (at least
// min_T: micro-batches of one shape reuse the model's activation buffers), padded with token 0.
// Throws std::invalid_argument for an empty prompt or completion.
GrpoBatch make_grpo_batch(std::span<const GrpoSequence> seqs, int64_t min_T = 0);

// Sums over the tokens of a batch, to be added over batches and processes: the loss is
// -objective / N, the mean KL kl / N, the clip fractions clip_low / N and clip_high / N.
struct GrpoSums {
  double objective = 0;  // sum_t J_t
  double kl = 0;         // sum_t k3_t
  int64_t tokens = 0;
  int64_t clip_low = 0, clip_high = 0;

  GrpoSums& operator+=(const GrpoSums& o);
};

// The per-target weights w_t = inv_n dJ_t/dlogp_t [B*T] (0 on ignored targets) and the sums, from
// logp, logp_old and logp_ref [B*T] (logp_ref may be null when c.beta == 0). Computed in double.
GrpoSums grpo_weights(const GrpoBatch& b, const float* logp, const float* logp_old,
                      const float* logp_ref, double inv_n, const GrpoConfig& c, float* w);

// One pass of the objective over a batch: logp from the policy (or `logp` when the caller has it:
// the first pass over fresh rollouts, where it is logp_old), the weights with inv_n = 1 / N, and
// forward_backward, whose gradients ACCUMULATE into the policy's (a batch may be one of several
// micro-batches or one process's share: N counts them all). The policy's LossConfig should have
// mtp_lambda = 0 and balance_alpha = 0 (else those losses are added to the gradient).
GrpoSums grpo_backward(train::TrainModel& policy, const GrpoBatch& b, const float* logp_old,
                       const float* logp_ref, double inv_n, const GrpoConfig& c,
                       const float* logp = nullptr);

}  // namespace whale::reason
