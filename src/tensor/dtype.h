// Element types of stored tensors and their scalar conversions to f32.
//
// whale computes in f32. Weights stay in the dtype they were stored in (BF16, F16, F8_E4M3 with
// 128x128 block scales, F32) and are converted inside the kernels; these scalar helpers are the
// reference conversions the vectorised kernels are tested against. GGUF files add GGML's
// block-quantized types (Q8_0, Q4_K, ...): a row of those is a sequence of fixed-size blocks, so
// its bytes come from dtype_row_bytes, not from dtype_size (tensor/quant.h has the layouts).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace whale {

enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  F8_E4M3,
  F64,
  I64,
  I32,
  I16,
  I8,
  U8,
  BOOL,
  // GGML block-quantized weights (GGUF only).
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q8_0,
  Q2_K,
  Q3_K,
  Q4_K,
  Q5_K,
  Q6_K,
  IQ4_NL,
  IQ4_XS,
  // Q4_0 / Q8_0 blocks of 16 rows interleaved for the AVX-512 VNNI kernels: whale's own
  // in-memory layouts, made at load (kernels/repack.h), never in a file. Same bytes per row as
  // Q4_0 / Q8_0.
  Q4_0_X16,
  Q8_0_X16,
};

// True for the repacked layouts (kernels/repack.h).
inline bool dtype_is_x16(DType t) {
  return t == DType::Q4_0_X16 || t == DType::Q8_0_X16;
}
// The GGML type whose blocks `t` holds (Q4_0 for Q4_0_X16, Q8_0 for Q8_0_X16, else `t`): sizes
// come from it.
inline DType block_dtype(DType t) {
  return t == DType::Q4_0_X16 ? DType::Q4_0 : t == DType::Q8_0_X16 ? DType::Q8_0 : t;
}

// True for the GGML block-quantized types.
inline bool dtype_is_quantized(DType t) {
  return t >= DType::Q4_0;
}

// Bytes of a row of `n` values; for a quantized type `n` must be a whole number of blocks
// (throws std::invalid_argument otherwise).
size_t dtype_row_bytes(DType t, int64_t n);
// Values per block: 1 for element types, 32 or 256 for quantized ones.
int64_t dtype_block_size(DType t);

// Bytes per element (element types only; see dtype_row_bytes).
inline size_t dtype_size(DType t) {
  switch (t) {
    case DType::F64:
    case DType::I64:
      return 8;
    case DType::F32:
    case DType::I32:
      return 4;
    case DType::F16:
    case DType::BF16:
    case DType::I16:
      return 2;
    default:
      return 1;
  }
}

// Name as written in safetensors headers ("F32", "BF16", "F8_E4M3", ...).
std::string_view dtype_name(DType t);
// Parses a safetensors dtype name; returns false for names whale does not know.
bool dtype_from_name(std::string_view name, DType* out);

inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Round to nearest even; NaN stays NaN.
inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// IEEE half precision.
inline float f16_to_f32(uint16_t h) {
  uint32_t sign = uint32_t(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t man = h & 0x3ffu;
  uint32_t u;
  if (exp == 0) {
    if (man == 0) {
      u = sign;
    } else {  // subnormal: value = man * 2^-24
      float f = std::ldexp(float(man), -24);
      std::memcpy(&u, &f, 4);
      u |= sign;
    }
  } else if (exp == 31) {
    u = sign | 0x7f800000u | (man << 13);
  } else {
    u = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// OCP FP8 E4M3 ("e4m3fn", as torch.float8_e4m3fn and the DeepSeek-V3 release): 1 sign bit,
// 4 exponent bits (bias 7), 3 mantissa bits, no infinities, 0x7f/0xff are NaN, max 448.
inline float fp8_e4m3_to_f32(uint8_t v) {
  uint32_t sign = v >> 7;
  uint32_t exp = (v >> 3) & 0xfu;
  uint32_t man = v & 0x7u;
  float r;
  if (exp == 0xf && man == 0x7) {
    r = NAN;
  } else if (exp == 0) {
    r = std::ldexp(float(man), -9);  // subnormal: man/8 * 2^-6
  } else {
    r = std::ldexp(1.0f + float(man) / 8.0f, int(exp) - 7);
  }
  return sign ? -r : r;
}

}  // namespace whale
