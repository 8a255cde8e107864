// Writing GGUF files (the layout is in formats/gguf.h).
//
// Metadata and tensor declarations are collected first; write() then streams the file: header,
// metadata, tensor infos, padding, and each tensor's bytes produced on demand by its callback (so
// a model is never held in memory twice). The file is written to PATH.tmp and renamed at the end,
// so a failure leaves no half-written PATH behind (and an existing PATH untouched).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "tensor/quant.h"

namespace whale {

class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = 32);

  void set_string(const std::string& key, const std::string& v);
  void set_u32(const std::string& key, uint32_t v);
  void set_i32(const std::string& key, int32_t v);
  void set_f32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_strings(const std::string& key, const std::vector<std::string>& v);
  void set_i32s(const std::string& key, const std::vector<int32_t>& v);

  // A tensor of row-major `shape` (the last dimension contiguous, a whole number of blocks of
  // `type`); `fill(dst)` writes its ggml_row_bytes(type, cols) * rows bytes when the file is
  // written.
  using Fill = std::function<void(uint8_t* dst)>;
  void add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> shape, Fill fill);

  // Writes everything to `path` (via path.tmp). Throws std::runtime_error naming the file.
  void write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> shape;
    size_t bytes;
    Fill fill;
  };
  void key(const std::string& k, uint32_t type);
  uint32_t alignment_;
  uint64_t n_kv_ = 0;
  std::vector<uint8_t> kv_;  // the encoded metadata
  std::vector<Tensor> tensors_;
};

}  // namespace whale
