// Plain-loop reference kernels. Slow, obvious, and the ground truth for tests.
#include <stdexcept>
#include <string>

#include "kernels/linear.h"
#include "kernels/repack.h"
#include "tensor/quant.h"

namespace whale {

WeightRef WeightRef::slice_rows(int64_t r0, int64_t n) const {
  if (dtype_is_x16(dtype) && r0 % kX16Rows != 0)
    throw std::invalid_argument("a view of a repacked matrix (" + std::string(dtype_name(dtype)) +
                                ") must start on a group of 16 rows, not at row " +
                                std::to_string(r0));
  WeightRef v = *this;
  v.rows = n;
  v.data = static_cast<const uint8_t*>(data) + size_t(r0) * dtype_row_bytes(dtype, cols);
  v.row0 = row0 + r0;
  return v;
}

namespace ref {

float weight_at(const WeightRef& w, int64_t r, int64_t c) {
  if (dtype_is_quantized(w.dtype)) {  // dequantize the block holding (r, c)
    const int64_t bs = dtype_block_size(w.dtype);
    const uint8_t* row = plain_row(w, r);
    float block[256];
    dequantize_row(dtype_to_ggml(block_dtype(w.dtype)), row + dtype_row_bytes(w.dtype, c / bs * bs),
                   bs, block);
    return block[c % bs];
  }
  const int64_t i = r * w.cols + c;
  switch (w.dtype) {
    case DType::F32:
      return static_cast<const float*>(w.data)[i];
    case DType::BF16:
      return bf16_to_f32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::F16:
      return f16_to_f32(static_cast<const uint16_t*>(w.data)[i]);
    case DType::F8_E4M3: {
      float s = w.scale_inv ? w.scale_inv[((w.row0 + r) / WeightRef::kBlock) * w.scale_cols +
                                          c / WeightRef::kBlock]
                            : 1.0f;
      return fp8_e4m3_to_f32(static_cast<const uint8_t*>(w.data)[i]) * s;
    }
    default:
      return 0.0f;
  }
}

void linear(const float* x, int64_t n, const WeightRef& w, float* y) {
  for (int64_t t = 0; t < n; t++)
    for (int64_t r = 0; r < w.rows; r++) {
      float acc = 0.0f;
      for (int64_t c = 0; c < w.cols; c++) acc += x[t * w.cols + c] * weight_at(w, r, c);
      y[t * w.rows + r] = acc;
    }
}

void linear_t(const float* x, int64_t n, const WeightRef& w, float* y) {
  for (int64_t t = 0; t < n; t++) {
    for (int64_t c = 0; c < w.cols; c++) y[t * w.cols + c] = 0.0f;
    for (int64_t r = 0; r < w.rows; r++) {
      const float xr = x[t * w.rows + r];
      for (int64_t c = 0; c < w.cols; c++) y[t * w.cols + c] += xr * weight_at(w, r, c);
    }
  }
}

}  // namespace ref
}  // namespace whale
