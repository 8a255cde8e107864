#include "train/weights_io.h"

#include <cstring>
#include <stdexcept>

namespace whale::train {

namespace {

// The tensor's values as f32 into dst (numel floats), checked for shape and dtype.
void copy_tensor(const Checkpoint& ck, const std::string& name, const std::vector<int64_t>& shape,
                 float* dst) {
  const TensorView* t = ck.find(name);
  if (!t) throw std::runtime_error(ck.dir() + ": no tensor " + name);
  if (t->shape != shape) {
    TensorView want;
    want.shape = shape;
    throw std::runtime_error(ck.dir() + ": tensor " + name + " has shape " + t->shape_str() +
                             ", the config needs " + want.shape_str());
  }
  const int64_t n = t->numel();
  switch (t->dtype) {
    case DType::F32:
      std::memcpy(dst, t->data, size_t(n) * sizeof(float));
      return;
    case DType::BF16:
    case DType::F16:
      for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        std::memcpy(&h, t->data + 2 * i, 2);
        dst[i] = t->dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
      }
      return;
    default:
      throw std::runtime_error(ck.dir() + ": tensor " + name + " is " +
                               std::string(dtype_name(t->dtype)) +
                               "; training starts from F32, BF16 or F16 weights");
  }
}

}  // namespace

void load_train_weights(TrainModel& model, const Checkpoint& ck) {
  for (const ParamTensor& p : model.params()) copy_tensor(ck, p.name, p.shape, p.data);
  for (const BufferTensor& b : model.buffers()) copy_tensor(ck, b.name, b.shape, b.data);
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
