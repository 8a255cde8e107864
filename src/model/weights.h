// Looking up a layer's tensors in a checkpoint, checked against the config's shapes.
#pragma once

#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "kernels/linear.h"

namespace whale {

// `prefix.weight` as a [rows x cols] matrix in its stored dtype (F32, BF16, F16, or F8_E4M3 with
// `prefix.weight_scale_inv` [ceil(rows/128) x ceil(cols/128)] F32). Throws naming file and tensor.
WeightRef load_linear(const Checkpoint& ck, const std::string& prefix, int64_t rows, int64_t cols);

// A 1-D tensor of `n` values converted to f32 (norm weights, biases).
std::vector<float> load_vector(const Checkpoint& ck, const std::string& name, int64_t n);

// Bytes a weight occupies in the file, scales included.
size_t weight_bytes(const WeightRef& w);

}  // namespace whale
