// GGML's tensor types: the element and block-quantized formats of GGUF files, byte for byte as
// llama.cpp stores them.
//
// A quantized row is a sequence of blocks. Each block holds `block_size` consecutive values as
// small integers with one or more f16 scales:
//   Q8_0, Q4_0, Q5_0, IQ4_NL   32 values, one scale d:            x = d * q
//   Q4_1, Q5_1                 32 values, scale d and minimum m:  x = d * q + m
//   Q2_K .. Q6_K, IQ4_XS       256 values ("super-block") in 16 or 8 sub-blocks, each with its
//                              own 4- to 8-bit scale (and minimum) relative to the f16 d (dmin)
// The dequantize_* functions below are the plain reference loops: the layouts in one readable
// place, and what the fast kernels are tested against.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tensor/dtype.h"

namespace whale {

// Values as in ggml.h (they are what a GGUF tensor info stores).
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  IQ4_NL = 20,
  IQ4_XS = 23,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

struct GgmlTypeInfo {
  std::string_view name;  // "Q4_K"
  int64_t block_size;     // values per block (1 for plain element types)
  int64_t block_bytes;    // bytes per block
  bool dequantizable;     // dequantize_row() converts it to f32
};

// The type's layout, or nullptr for a value whale does not know (every type llama.cpp defines
// that whale does not read: the IQ1-IQ3 and ternary formats, MXFP4, ...).
const GgmlTypeInfo* ggml_type_info(uint32_t type);

// The DType a GGUF tensor of this type is held as (quantized types keep their blocks); false for
// the types whale does not compute with (Q8_1, Q8_K, the integer types).
bool ggml_to_dtype(GgmlType type, DType* out);
// The inverse, for DType::F32/F16/BF16 and the quantized DTypes (throws for the others).
GgmlType dtype_to_ggml(DType t);

// Bytes of a row of `n` values; `n` must be a multiple of the block size.
size_t ggml_row_bytes(GgmlType type, int64_t n);

// dst[0..n) = the n values stored at src (n a multiple of the block size) as f32. Throws
// std::invalid_argument for a type that is not dequantizable or a ragged n.
void dequantize_row(GgmlType type, const void* src, int64_t n, float* dst);

// Quantizes n values (n a multiple of 32) into `dst` (ggml_row_bytes(type, n) bytes) with
// llama.cpp's reference rounding (quantize_row_*_ref), so that files match llama-quantize's:
//   Q8_0  d = max|x| / 127, q = round(x / d)
//   Q4_0  d = m / -8 with m the value of largest magnitude, q = min(15, trunc(x / d + 8.5))
//   Q5_0  d = m / -16, q = min(31, trunc(x / d + 16.5))
//   Q4_1  d = (max - min) / 15, q = min(15, trunc((x - min) / d + 0.5)), stored minimum min
//   Q5_1  d = (max - min) / 31, q = min(31, trunc((x - min) / d + 0.5))
// also F32, F16 and BF16 (round to nearest even). Throws std::invalid_argument for other types.
void quantize_row(GgmlType type, const float* src, int64_t n, void* dst);
// True for the types quantize_row writes.
bool quantizable(GgmlType type);

// IEEE half precision, round to nearest even (overflow to infinity, NaN kept).
uint16_t f32_to_f16(float f);

}  // namespace whale
