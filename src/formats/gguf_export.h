// `whale quantize`: a Hugging Face DeepSeek checkpoint (F32, BF16, F16 or FP8 block-scaled) to a
// llama.cpp "deepseek2" GGUF file, laid out as llama.cpp's converter + llama-quantize write it:
// the names and metadata of formats/gguf_model.h, kv_b_proj split into attn_k_b (W_UK transposed
// per head) and attn_v_b, experts stacked [E, rows, cols], the tokenizer as tokenizer.ggml.*.
//
// Types (--type): f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q5_k, q6_k (every matrix in
// that type) and llama-quantize's mixes q4_k_m / q5_k_m, with llama.cpp's rules for the exceptions:
//   - norms, the router (ffn_gate_inp) and its bias (exp_probs_b): F32;
//   - output.weight: Q6_K in every quantized type but Q8_0 (Q8_0 if its rows are not whole
//   256-blocks);
//   - q4_k_m / q5_k_m: ffn_down (dense, routed and shared) in Q6_K in the first and last eighth of
//     the layers and every third layer between (use_more_bits); with 8 routed experts q4_k_m's
//     attn_output in Q5_K;
//   - a matrix whose rows are not whole blocks of its type: Q4_K -> Q5_0, Q5_K -> Q5_1,
//     Q6_K -> Q8_0, and F16 where even 32 does not divide them (e.g. a 24-wide head).
// The MTP modules are left out, as llama.cpp's converter does.
#pragma once

#include <string>

#include "tensor/quant.h"

namespace whale {

// A --type: the main matrix type and whether llama-quantize's _M mix applies.
struct QuantRecipe {
  const char* name;    // "q4_k_m"
  GgmlType type;       // Q4_K
  bool k_mix;          // q4_k_m / q5_k_m
  uint32_t file_type;  // llama.cpp's general.file_type (LLAMA_FTYPE_*)
};

// "q4_k_m" -> its recipe; throws std::invalid_argument naming the choices for anything else.
QuantRecipe parse_quant_type(const std::string& name);

// The type a matrix named `gname` ("blk.3.ffn_down_exps.weight") with rows of `cols` values gets
// under `recipe` (the rules above), in a model of n_layer layers and n_expert routed experts.
GgmlType quant_tensor_type(const QuantRecipe& recipe, const std::string& gname, int64_t cols,
                           int64_t n_layer, int64_t n_expert);

struct QuantizeStats {
  int64_t tensors = 0;
  size_t bytes = 0;      // tensor data written
  int64_t fallback = 0;  // matrices written in F16 because their rows are not whole blocks
};

// Writes `out` (via out.tmp). Throws std::runtime_error naming the file, tensor or field.
QuantizeStats quantize_to_gguf(const std::string& model_dir, const QuantRecipe& recipe,
                               const std::string& out);

}  // namespace whale
