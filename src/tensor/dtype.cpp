#include "tensor/dtype.h"

#include "tensor/quant.h"

namespace whale {

namespace {
struct DTypeName {
  DType type;
  std::string_view name;
};
constexpr DTypeName kNames[] = {
    {DType::F32, "F32"}, {DType::F16, "F16"}, {DType::BF16, "BF16"}, {DType::F8_E4M3, "F8_E4M3"},
    {DType::F64, "F64"}, {DType::I64, "I64"}, {DType::I32, "I32"},   {DType::I16, "I16"},
    {DType::I8, "I8"},   {DType::U8, "U8"},   {DType::BOOL, "BOOL"},
};
}  // namespace

size_t dtype_row_bytes(DType t, int64_t n) {
  if (dtype_is_quantized(t)) return ggml_row_bytes(dtype_to_ggml(block_dtype(t)), n);
  return size_t(n) * dtype_size(t);
}

int64_t dtype_block_size(DType t) {
  if (!dtype_is_quantized(t)) return 1;
  return ggml_type_info(uint32_t(dtype_to_ggml(block_dtype(t))))->block_size;
}

std::string_view dtype_name(DType t) {
  for (const auto& n : kNames)
    if (n.type == t) return n.name;
  if (t == DType::Q4_0_X16) return "Q4_0x16";
  if (t == DType::Q8_0_X16) return "Q8_0x16";
  if (dtype_is_quantized(t)) return ggml_type_info(uint32_t(dtype_to_ggml(t)))->name;
  return "?";
}

bool dtype_from_name(std::string_view name, DType* out) {
  for (const auto& n : kNames) {
    if (n.name == name) {
      *out = n.type;
      return true;
    }
  }
  return false;
}

}  // namespace whale
