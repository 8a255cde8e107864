// A TrainModel's weights in and out of model directories (Hugging Face layout): starting from an
// existing model (config.json and model.safetensors or shards listed by
// model.safetensors.index.json: a `whale train` checkpoint, or a DeepSeek-V3-architecture model
// stored in F32, BF16 or F16), and the tensors a checkpoint of it holds.
#pragma once

#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "train/checkpoint.h"
#include "train/model_train.h"

namespace whale::train {

// Copies every parameter and buffer of `model` (params(), buffers()) from the checkpoint, F32 or
// BF16 (train/checkpoint.h copy_tensor_f32); a routing bias (e_score_correction_bias) the files do
// not have starts at zero. Tensors the model does not have (the MTP module's copies of the
// embedding and head, anything else) are ignored. Throws std::runtime_error naming the directory
// or file and the tensor when a parameter is missing or has another shape or dtype.
void load_train_weights(TrainModel& model, const Checkpoint& ck);
void load_train_weights(TrainModel& model, const std::string& dir);

// The model's tensors as a checkpoint stores them (views of params() and buffers()), and, when
// the config has an MTP module, its copies of the shared embedding and head under the MTP layer's
// names (model.layers.L.embed_tokens.weight, model.layers.L.shared_head.head.weight) as in the
// released DeepSeek-V3 checkpoints.
std::vector<CkptTensor> checkpoint_tensors(const TrainModel& model);

}  // namespace whale::train
