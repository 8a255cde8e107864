// `whale sft`: supervised fine-tuning on chat data, with the loop of `whale train`
// (train/trainer.h: the same optimiser, schedules, clipping, checkpoints, exact resume, NaN stop,
// Ctrl-C save, log, plot and MPI data parallelism).
//
// What differs from pretraining:
//   - the model starts from --init DIR: a whale checkpoint or a Hugging Face DeepSeek-V3 directory
//     of F32/BF16 safetensors (single file or sharded) holding every parameter of its config.json
//     under TrainModel's names; e_score_correction_bias tensors it lacks start at zero. The config
//     comes from DIR and the tokenizer files (and chat template) from DIR or --tokenizer. The
//     optimiser starts fresh (AdamW moments zero); --resume continues OUT/model instead.
//   - the data are chat conversations (train/sft_data.h): rendered with the model's chat template
//     style, loss only on the assistant target tokens, packed into rows of --seq positions, rows
//     visited in an order drawn from (seed, epoch);
//   - micro-batches are weighted by their counted targets, so a step's loss is the mean over all
//     of its target tokens (trainer.h);
//   - validation: the conversations whose FNV hash of (seed, index) falls under --val-fraction
//     (the rule of `whale data`, train/data.h), or the conversations of --val FILE;
//   - steps: --steps, or --epochs E -> ceil(E * rows / batch) (default one epoch); defaults suited
//   to
//     fine-tuning: lr 1e-4, warm-up round(0.03 * steps), cosine to lr / 10, weight decay 0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "train/trainer.h"

namespace whale::train {

struct SftOptions {
  TrainOptions train;    // the loop's options (config_path, data_dir and init_std are not used)
  std::string init_dir;  // the model to fine-tune (a fresh run needs it)
  std::vector<std::string> data;  // JSONL files, or directories of *.jsonl
  std::string val_file;           // validation conversations; empty: split by val_fraction
  double val_fraction = 0.02;     // share of the conversations held out (0: none)
  int64_t epochs = 0;             // > 0: steps = ceil(epochs * rows / batch); 0 with no --steps: 1
  bool pack = true;               // several conversations per row (false: one per row)
  bool truncate = false;          // cut conversations longer than seq + 1 tokens (else an error)

  SftOptions() {
    train.lr = 1e-4f;
    train.weight_decay = 0.0f;
  }
};

// Runs the fine-tuning; returns the exit status as run_train_command (0, 3 on a non-finite loss,
// 130 on Ctrl-C). Throws std::invalid_argument / std::runtime_error naming the problem.
int run_sft_command(const SftOptions& options);

}  // namespace whale::train
