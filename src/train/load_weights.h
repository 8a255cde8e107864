// Starting a TrainModel from an existing model directory (Hugging Face layout: config.json and
// model.safetensors or shards listed by model.safetensors.index.json), such as a `whale train`
// checkpoint or a released DeepSeek-V3-architecture model stored in F32, BF16 or F16.
#pragma once

#include <string>

#include "formats/safetensors.h"
#include "train/model_train.h"

namespace whale::train {

// Copies every parameter and buffer of `model` (params(), buffers()) from the checkpoint,
// converting BF16 / F16 to f32. Tensors the model does not have (the MTP module's copies of the
// embedding and head, anything else) are ignored. Throws std::runtime_error naming the tensor and
// the directory when one is missing, mis-shaped, or of another dtype (FP8 weights included).
void load_train_weights(TrainModel& model, const Checkpoint& ck);
void load_train_weights(TrainModel& model, const std::string& dir);

}  // namespace whale::train
