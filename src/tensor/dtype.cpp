#include "tensor/dtype.h"

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

std::string_view dtype_name(DType t) {
  for (const auto& n : kNames)
    if (n.type == t) return n.name;
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
