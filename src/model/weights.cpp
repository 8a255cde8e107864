#include "model/weights.h"

#include <stdexcept>

namespace whale {

WeightRef load_linear(const Checkpoint& ck, const std::string& prefix, int64_t rows, int64_t cols) {
  const std::string name = prefix + ".weight";
  const int64_t shape[2] = {rows, cols};
  const TensorView& t = ck.get(name, shape);
  WeightRef w;
  w.dtype = t.dtype;
  w.rows = rows;
  w.cols = cols;
  w.data = t.data;
  switch (t.dtype) {
    case DType::F32:
    case DType::BF16:
    case DType::F16:
      break;
    case DType::F8_E4M3: {
      const int64_t b = WeightRef::kBlock;
      const int64_t sshape[2] = {(rows + b - 1) / b, (cols + b - 1) / b};
      const std::string sname = prefix + ".weight_scale_inv";
      if (!ck.has(sname))
        throw std::runtime_error(t.file + ": F8_E4M3 tensor '" + name + "' has no '" + sname + "'");
      const TensorView& s = ck.get(sname, sshape);
      if (s.dtype != DType::F32)
        throw std::runtime_error(s.file + ": tensor '" + sname + "' must be F32, got " +
                                 std::string(dtype_name(s.dtype)));
      if (reinterpret_cast<uintptr_t>(s.data) % alignof(float))
        throw std::runtime_error(s.file + ": tensor '" + sname + "' is not 4-byte aligned");
      w.scale_inv = reinterpret_cast<const float*>(s.data);
      w.scale_cols = sshape[1];
      break;
    }
    default:
      if (dtype_is_quantized(t.dtype)) {
        if (cols % dtype_block_size(t.dtype) != 0)
          throw std::runtime_error(t.file + ": tensor '" + name + "' of type " +
                                   std::string(dtype_name(t.dtype)) + " has rows of " +
                                   std::to_string(cols) + " values, not whole blocks of " +
                                   std::to_string(dtype_block_size(t.dtype)));
        break;
      }
      throw std::runtime_error(t.file + ": tensor '" + name + "' has dtype " +
                               std::string(dtype_name(t.dtype)) +
                               "; weights must be F32, BF16, F16, F8_E4M3 or a GGML block type");
  }
  if (t.dtype == DType::F32 && reinterpret_cast<uintptr_t>(t.data) % alignof(float))
    throw std::runtime_error(t.file + ": tensor '" + name + "' is not 4-byte aligned");
  return w;
}

std::vector<float> load_vector(const Checkpoint& ck, const std::string& name, int64_t n) {
  const int64_t shape[1] = {n};
  const TensorView& t = ck.get(name, shape);
  WeightRef w;
  w.dtype = t.dtype;
  w.rows = 1;
  w.cols = n;
  w.data = t.data;
  if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16)
    throw std::runtime_error(t.file + ": tensor '" + name + "' has dtype " +
                             std::string(dtype_name(t.dtype)) + "; expected F32, BF16 or F16");
  std::vector<float> out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; i++) out[size_t(i)] = ref::weight_at(w, 0, i);
  return out;
}

size_t weight_bytes(const WeightRef& w) {
  size_t n = size_t(w.rows) * dtype_row_bytes(w.dtype, w.cols);
  if (w.scale_inv) n += size_t((w.rows + 127) / 128 * w.scale_cols) * sizeof(float);
  return n;
}

}  // namespace whale
