// `whale train` and `whale sft`: the training loop, shared by pretraining and fine-tuning.
//
// One optimiser step:
//   1. every process takes its share of the global batch (batch / processes rows, in micro-batches
//      of batch / (processes * grad_accum)); row g of step s comes from the run's BatchSource as a
//      function of (s, g) only, so the data order depends on nothing else (not the thread or
//      process count) and a resumed run sees the same rows. `whale train`: a window of seq+1
//      tokens of the token shards starting at a position drawn from (seed, s, g); `whale sft`:
//      packed chat examples with a loss mask (train/sft.h);
//   2. forward + backward of each micro-batch, gradients accumulated with a weight per
//      micro-batch (below); gradients, expert counts and losses all-reduced across processes;
//   3. non-finite loss or gradient -> stop, keeping the last good checkpoint;
//   4. global-norm clipping, AdamW at the scheduled learning rate (warm-up, then cosine / WSD /
//      constant), then the auxiliary-loss-free bias update from the step's expert counts.
// Micro-batch weights. TrainModel::forward_backward returns the mean over the micro-batch's counted
// targets and scales its gradients by grad_scale. Pretraining windows count every target, so every
// micro-batch gets 1 / (grad_accum * processes). Masked rows count different numbers of targets,
// so there micro-batch m with n_m counted targets gets n_m / N, N = the targets of the whole step
// over every process (one integer all-reduce before the first backward): the step's loss is then
// the mean over all of its counted targets, whatever the split into micro-batches and processes.
// (The MTP and balance parts of a micro-batch share that weight.)
// Every `eval_every` steps: validation loss over fixed validation rows. Every `save_every` steps
// and at the end: an atomic checkpoint in OUT/model (Hugging Face layout + optimiser state), which
// `whale run -m OUT/model` loads. OUT/log.jsonl gets one record per step / evaluation, and
// OUT/loss.png is drawn from it at the end.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"

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

// ------------------------------------------------------------------ the shared loop

class TrainModel;

// Where a run's rows come from. Every row is seq positions: inputs and targets (kIgnoreIndex
// where nothing is predicted).
class BatchSource {
 public:
  virtual ~BatchSource() = default;
  // Rows `rows` (indices into the global batch, 0 <= g < batch) of step `step`: [rows.size()][T].
  virtual void train_rows(int64_t step, std::span<const int64_t> rows, std::vector<int32_t>& inputs,
                          std::vector<int32_t>& targets) = 0;
  // The fixed validation rows 0 .. num_val_rows() - 1.
  virtual int64_t num_val_rows() const = 0;
  virtual void val_rows(std::span<const int64_t> rows, std::vector<int32_t>& inputs,
                        std::vector<int32_t>& targets) = 0;
  // False: every target of a row counts (micro-batches weighted 1 / count); true: masked rows,
  // micro-batches weighted by their counted targets (see the header comment).
  virtual bool weight_by_targets() const = 0;
  // What the start-up line says about the data ("N train / M val tokens").
  virtual std::string summary() const = 0;
  // Saved in the checkpoint's options as "data"; a resume must find the same (null: not checked).
  virtual nlohmann::json identity() const { return nullptr; }
};

// What differs between `whale train` and `whale sft`: where the config, the starting parameters,
// the tokenizer and the data come from.
class TrainTask {
 public:
  virtual ~TrainTask() = default;
  virtual std::string command() const = 0;  // "whale train", opening messages
  // A fresh run's config.json text, and the path that names it in errors.
  virtual void fresh_config(std::string& text, std::string& origin) = 0;
  // Opens the data once the config is known; may fill in options that depend on it (steps from
  // epochs, the warm-up). `resumed`: the checkpoint's trainer state when resuming, else null.
  virtual std::unique_ptr<BatchSource> open_data(const ModelConfig& config,
                                                 const nlohmann::json& resumed,
                                                 TrainOptions& options) = 0;
  // The tokenizer directory copied into checkpoints ("" for none); asked after open_data.
  virtual std::string tokenizer_dir() const = 0;
  // A fresh run's starting parameters and buffers.
  virtual void init_model(TrainModel& model, const TrainOptions& options) = 0;
  // Added to the options saved in every checkpoint's trainer state.
  virtual nlohmann::json saved_options() const { return nlohmann::json::object(); }
};

// The loop above for `task`: setup, steps, evaluation, checkpoints, log and plot. Returns the exit
// status as run_train_command.
int run_training(TrainOptions options, TrainTask& task);

}  // namespace whale::train
