// Training checkpoints: a directory in the Hugging Face layout, so `whale run -m DIR` loads it as
// it is, with the optimiser and trainer state beside the model:
//   DIR/config.json             the model config (text given by the caller)
//   DIR/model.safetensors       model tensors, F32 (an exact resume needs the master weights)
//   DIR/optimizer.safetensors   optimiser tensors, F32, named by the caller ("exp_avg.<name>", ...)
//   DIR/trainer_state.json      the trainer's JSON (step, data position, options, ...)
//   DIR/tokenizer.json, tokenizer_config.json, and when present generation_config.json,
//   special_tokens_map.json, chat_template.jinja: copied from the caller's tokenizer directory.
//
// Saving is atomic. Everything is written and fsync'ed in DIR.tmp (same parent), then swapped in:
// rename DIR -> DIR.old, rename DIR.tmp -> DIR, remove DIR.old. A failure before the swap removes
// DIR.tmp and leaves DIR as it was; a crash between the two renames leaves DIR missing and DIR.old
// whole, which load_checkpoint reads and the next save_checkpoint moves back first.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "formats/safetensors.h"

namespace whale::train {

// One f32 tensor to save (numel = product of shape floats at data).
struct CkptTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

// Copies tensor `t` (F32, or BF16 widened) into dst after checking that its shape is `shape`.
// Throws std::runtime_error naming t's file and name for another shape or dtype.
void copy_tensor_f32(const TensorView& t, std::span<const int64_t> shape, float* dst);

// Writes the checkpoint DIR atomically (see above). tokenizer_dir empty: no tokenizer files;
// otherwise it must hold tokenizer.json. Throws std::runtime_error "saving checkpoint DIR: what
// failed", leaving the previous checkpoint in DIR intact and loadable.
void save_checkpoint(const std::string& dir, std::span<const CkptTensor> model,
                     std::span<const CkptTensor> optimizer, const std::string& config_json,
                     const nlohmann::json& state, const std::string& tokenizer_dir);

// True when DIR (or, after a crash between the renames of a save, DIR.old) holds a checkpoint.
bool checkpoint_exists(const std::string& dir);

// A loaded checkpoint: its config text and state JSON, and both safetensors files memory-mapped.
class LoadedCheckpoint {
 public:
  std::string dir;          // the directory read: DIR, or DIR.old when recovering from a crash
  std::string config_json;  // DIR/config.json as text
  nlohmann::json state;     // DIR/trainer_state.json

  // Copies tensor `name` of model.safetensors / optimizer.safetensors into dst (numel floats),
  // converting BF16 to f32. Throws std::runtime_error naming the file and tensor when it is
  // missing, or its shape or dtype (F32 or BF16) differs from the expected one.
  void model_tensor(const std::string& name, std::span<const int64_t> shape, float* dst) const;
  void optimizer_tensor(const std::string& name, std::span<const int64_t> shape, float* dst) const;

  const SafetensorsFile& model_file() const { return *model_; }
  const SafetensorsFile& optimizer_file() const { return *optimizer_; }

 private:
  friend LoadedCheckpoint load_checkpoint(const std::string& dir);
  std::unique_ptr<SafetensorsFile> model_, optimizer_;
  std::map<std::string, const TensorView*> model_index_, optimizer_index_;
};

// Reads DIR (or DIR.old when DIR is missing, see above). Throws std::runtime_error naming the
// file for a missing file, bad JSON or malformed safetensors.
LoadedCheckpoint load_checkpoint(const std::string& dir);

}  // namespace whale::train
