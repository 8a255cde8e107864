// `whale train`: the pretraining loop.
//
// One optimiser step:
//   1. every process takes its share of the global batch (batch / processes sequences, in
//      micro-batches of batch / (processes * grad_accum)); sequence g of step s is a window of
//      seq+1 tokens starting at a position drawn from (seed, s, g), so the data order depends on
//      nothing else (not the thread or process count) and a resumed run sees the same windows;
//   2. forward + backward of each micro-batch, gradients accumulated with weight
//      1 / (grad_accum * processes); gradients, expert counts and losses all-reduced across
//      processes;
//   3. non-finite loss or gradient -> stop, keeping the last good checkpoint;
//   4. global-norm clipping, AdamW at the scheduled learning rate (warm-up, then cosine / WSD /
//      constant), then the auxiliary-loss-free bias update from the step's expert counts.
// Every `eval_every` steps: validation loss over fixed windows of the val shards. Every
// `save_every` steps and at the end: an atomic checkpoint in OUT/model (Hugging Face layout +
// optimiser state), which `whale run -m OUT/model` loads. OUT/log.jsonl gets one record per step /
// evaluation, and OUT/loss.png is drawn from it at the end.
#pragma once

#include <cstdint>
#include <string>

namespace whale::train {

struct TrainOptions {
  std::string config_path;    // Hugging Face config.json of the model to initialise
  std::string data_dir;       // `whale data` output (train_*.bin, val_*.bin, meta.json)
  std::string out_dir;        // checkpoints, log, plot
  std::string tokenizer_dir;  // copied into checkpoints; default: the one recorded in meta.json
  int64_t steps = 0;          // total optimiser steps (a resumed run continues up to it)
  int64_t batch = 8;          // sequences per optimiser step, over all processes
  int64_t seq = 256;          // tokens per sequence
  int64_t grad_accum = 1;     // micro-batches per step in each process

  // Optimiser and schedule.
  float lr = 1e-3f;                 // peak learning rate
  float min_lr = -1.0f;             // < 0: lr / 10
  std::string schedule = "cosine";  // cosine | wsd | constant
  int64_t warmup = -1;              // < 0: min(100, steps / 10)
  float wsd_decay = 0.2f;           // WSD: share of steps in the final decay
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weight_decay = 0.1f;
  float clip = 1.0f;  // global gradient-norm clip (<= 0: off)

  // DeepSeek-V3 losses and balancing.
  float mtp_lambda = 0.3f;
  float balance_alpha = 1e-4f;
  float bias_gamma = 0.001f;
  float init_std = 0.006f;

  uint64_t seed = 0;
  int threads = 0;  // 0: OpenMP's default
  bool resume = false;
  bool bf16 =
      false;  // BF16 compute (weights rounded for forward/backward) with FP32 master weights
  int64_t eval_every = 100;
  int64_t eval_batches = 4;  // validation windows = eval_batches * batch (capped by the val data)
  int64_t save_every = 500;
  bool progress = true;
  int64_t until = -1;           // stop after this step with a checkpoint (the schedule still
                                // spans `steps`); < 0: run to the end
  int64_t fault_nan_step = -1;  // testing hook: pretend the loss is NaN at this step
};

// Runs the whole training; returns the process exit status (0, or 3 when stopped by a non-finite
// loss). Throws std::runtime_error / std::invalid_argument with a clear message on bad input.
int run_train_command(const TrainOptions& options);

}  // namespace whale::train
