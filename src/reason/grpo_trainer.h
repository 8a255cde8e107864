// `whale grpo`: reinforcement learning on a reasoning task with GRPO (the objective:
// reason/grpo.h).
//
// The policy starts from --init (a model directory with its tokenizer); a frozen copy of it is the
// KL reference. Each step s (0-based):
//   1. prompts: problems s*P .. s*P+P-1 of the task's training stream (Task::generate(seed, index,
//      Split::Train)), each the user turn of the model's chat template with the generation prompt
//      (R1 style ends "<｜Assistant｜><think>\n"); with K processes (mpirun) process r takes the
//      P/K consecutive problems from s*P + r*P/K;
//   2. rollout: the inference model rebuilt from the policy's current weights samples G
//      completions of each prompt together (reason/rollout.h); completion g of problem i draws
//      from a sampler seeded by (seed, i, g) only;
//   3. rewards: Task::score of each completion's text (eos excluded); group advantages; a group
//      whose rewards are all equal is skipped;
//   4. logp_old from the policy as it is (the one that sampled), logp_ref from the reference model
//      (beta > 0 only);
//   5. inner_steps optimiser passes over these rollouts, each: the GRPO loss's gradient in
//      micro-batches, summed over the processes, clipped to the global norm, one AdamW step at
//      the constant learning rate. The first pass has rho = 1. A step whose groups are all skipped
//      trains nothing (no optimiser step).
// The MTP module and the routing biases are not trained (kept as in --init and saved); the
// sequence-wise balance loss is off.
//
// Outputs: OUT/model, a checkpoint in `whale train`'s format (train/checkpoint.h: model, AdamW
// moments, trainer_state.json, tokenizer copied from --init) that `whale run -m OUT/model` loads,
// every save_every steps and at the end; OUT/log.jsonl, one {"type":"grpo"} record per step (see
// README); OUT/reward.png drawn from it at the end. A resumed run (--resume) continues exactly:
// the problem stream and the samplers depend only on (seed, step), the policy and the AdamW moments
// come from the checkpoint, the reference from --init again.
#pragma once

#include <cstdint>
#include <string>

#include "reason/task.h"

namespace whale::reason {

struct GrpoOptions {
  std::string init_dir;  // starting model + tokenizer; on --resume: default the recorded one
  std::string out_dir;
  int64_t steps = 0;        // total steps (a resumed run continues up to it)
  int64_t prompts = 8;      // P per step, over all processes
  int64_t group = 8;        // G completions per prompt
  int64_t inner_steps = 1;  // optimiser passes over each step's rollouts
  int64_t micro_batch = 0;  // sequences per forward/backward (0: all of a process's)

  // The objective.
  float eps_low = 0.2f, eps_high = 0.2f;
  float beta = 0.001f;
  std::string adv = "std";  // std | mean

  // Optimiser: AdamW (beta1 0.9, beta2 0.99, eps 1e-8) at a constant learning rate.
  float lr = 1e-6f;
  float weight_decay = 0.0f;
  float clip = 1.0f;  // global gradient-norm clip (<= 0: off)

  // Sampling.
  float temperature = 1.0f;
  float top_p = 1.0f;
  int64_t max_tokens = 256;  // per completion

  uint64_t seed = 0;
  int threads = 0;  // 0: the default
  int64_t save_every = 50;
  int64_t until = -1;  // stop after this step with a checkpoint; < 0: run to the end
  bool resume = false;
  bool progress = true;
  int64_t fault_nan_step = -1;  // testing hook: pretend the loss is NaN at this step
};

// The checks on the options alone (ranges, required --init unless resuming, the objective's
// settings), as run_grpo_command starts with: std::invalid_argument "whale grpo: ..." naming the
// flag. For the command line, to report a bad flag before anything is loaded.
void check_grpo_options(const GrpoOptions& options);

// Runs the whole training; returns the process exit status: 0, 3 when stopped by a non-finite
// loss or gradient (the last checkpoint is kept as it was), 130 when interrupted (Ctrl-C / SIGTERM:
// a checkpoint is saved after the current step). Throws std::invalid_argument /
// std::runtime_error with a clear message on bad options or input.
int run_grpo_command(const GrpoOptions& options, const Task& task);

}  // namespace whale::reason
