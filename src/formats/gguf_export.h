// `whale quantize`: a Hugging Face DeepSeek checkpoint (F32, BF16, F16 or FP8 block-scaled) to a
// llama.cpp "deepseek2" GGUF file, laid out as llama.cpp's converter + llama-quantize write it:
// the names and metadata of formats/gguf_model.h, kv_b_proj split into attn_k_b (W_UK transposed
// per head) and attn_v_b, experts stacked [E, rows, cols], the tokenizer as tokenizer.ggml.*.
//
// Types: every matrix in the chosen type, except
//   - norms, the router (ffn_gate_inp) and its bias (exp_probs_b): F32;
//   - output.weight in the 4- and 5-bit types: Q8_0 (llama.cpp gives it Q6_K, which whale
//     cannot write yet);
//   - a matrix whose rows are not whole blocks of the type (e.g. a 24-wide head): F16.
// The MTP modules are left out, as llama.cpp's converter does.
#pragma once

#include <string>

#include "tensor/quant.h"

namespace whale {

// "q8_0" -> Q8_0 ...; throws std::invalid_argument naming the choices for anything else.
GgmlType parse_quant_type(const std::string& name);

struct QuantizeStats {
  int64_t tensors = 0;
  size_t bytes = 0;      // tensor data written
  int64_t fallback = 0;  // matrices written in F16 because their rows are not whole blocks
};

// Writes `out` (via out.tmp). Throws std::runtime_error naming the file, tensor or field.
QuantizeStats quantize_to_gguf(const std::string& model_dir, GgmlType type, const std::string& out);

}  // namespace whale
