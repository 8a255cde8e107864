#include "train/weights_io.h"

#include <algorithm>
#include <stdexcept>

namespace whale::train {

void load_train_weights(TrainModel& model, const Checkpoint& ck) {
  for (const ParamTensor& p : model.params()) {
    const TensorView* t = ck.find(p.name);
    if (!t)
      throw std::runtime_error(ck.dir() + ": no tensor '" + p.name +
                               "' (the model of its config.json needs every parameter, named as "
                               "in the DeepSeek-V3 checkpoints)");
    copy_tensor_f32(*t, p.shape, p.data);
  }
  for (const BufferTensor& b : model.buffers()) {
    if (const TensorView* t = ck.find(b.name))
      copy_tensor_f32(*t, b.shape, b.data);
    else
      std::fill_n(b.data, b.numel, 0.0f);
  }
}

void load_train_weights(TrainModel& model, const std::string& dir) {
  load_train_weights(model, Checkpoint(dir, LoadMode::Mmap));
}

std::vector<CkptTensor> checkpoint_tensors(const TrainModel& model) {
  std::vector<CkptTensor> out;
  for (const ParamTensor& p : model.params()) out.push_back({p.name, p.shape, p.data});
  for (const BufferTensor& b : model.buffers()) out.push_back({b.name, b.shape, b.data});
  const ModelConfig& c = model.config();
  if (c.num_nextn_predict_layers == 0) return out;
  const std::string mtp = "model.layers." + std::to_string(c.num_hidden_layers) + ".";
  for (const ParamTensor& p : model.params()) {
    if (p.name == "model.embed_tokens.weight")
      out.push_back({mtp + "embed_tokens.weight", p.shape, p.data});
    if (p.name == "lm_head.weight")
      out.push_back({mtp + "shared_head.head.weight", p.shape, p.data});
  }
  return out;
}

}  // namespace whale::train
