// GGUF files (llama.cpp's model format), versions 2 and 3, little-endian.
//
// Layout:
//   "GGUF", u32 version, u64 tensor_count, u64 kv_count
//   kv_count x (string key, u32 value_type, value)        the metadata
//   tensor_count x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset)
//   padding to `general.alignment` (default 32), then the tensor data; each tensor's `offset`
//   is relative to the start of the data and a multiple of the alignment.
// A string is a u64 length and that many bytes (no terminator). An array value is u32 element
// type, u64 count, the elements. ne[0] is the innermost (contiguous) dimension: a GGUF matrix
// with ne = [cols, rows] is the row-major [rows x cols] matrix of PyTorch / safetensors.
//
// Every check on untrusted bytes happens here: a truncated file, an unknown type, a shape whose
// bytes overflow or leave the file, overlapping names... is an error naming the file and the key
// or tensor, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "tensor/quant.h"

namespace whale {

enum class GgufValueType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};

std::string_view gguf_value_type_name(GgufValueType t);

// True when `path` names a GGUF file (it ends in .gguf) rather than a model directory.
bool is_gguf_path(const std::string& path);

// One metadata value. Scalars: integers in `i` (u64 values above INT64_MAX in `u` as well), floats
// in `f`, booleans in `i` (0/1), strings in `str`. Arrays: `elem` is the element type and the
// elements are in `ints` (integers and booleans), `floats` or `strings`; arrays of arrays keep
// their elements in `items`.
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string str;
  GgufValueType elem = GgufValueType::U8;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
  std::vector<GgufValue> items;

  bool is_array() const { return type == GgufValueType::ARRAY; }
  bool is_integer() const;  // U8..I64 or BOOL
  bool is_float() const;    // F32 or F64
  size_t size() const;      // elements of an array (0 for a scalar)
};

struct GgufTensor {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> ne;  // GGUF order: ne[0] innermost
  uint64_t offset = 0;      // from the start of the data section
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
  // Row-major shape (ne reversed): what safetensors would call the shape.
  std::vector<int64_t> shape() const;
  std::string shape_str() const;  // "[rows, cols]" in row-major order
};

struct GgufHeader {
  uint32_t version = 0;
  uint64_t alignment = 32;
  size_t data_offset = 0;  // where the tensor data starts in the file
  std::map<std::string, GgufValue> metadata;
  std::vector<GgufTensor> tensors;  // in file order
};

// Parses a whole GGUF file held in memory (tensor data pointers point into `bytes`). Throws
// std::runtime_error naming `path` and the key or tensor. Exposed for tests and the fuzzer.
GgufHeader parse_gguf(const uint8_t* bytes, size_t size, const std::string& path);

// The files of a model: [path] for one file; for the first shard of a split model, named as
// llama.cpp's gguf-split names them (PREFIX-00001-of-0000N.gguf), the N shard paths.
std::vector<std::string> gguf_shard_paths(const std::string& path);

// A GGUF file, memory-mapped or read into RAM, with typed access to its metadata.
//
// A split model (llama.cpp's `split.count` > 1) is opened through its first shard: the metadata
// is the first shard's, the tensors are those of every shard (each shard must say its own
// `split.no` and the same `split.count`, the total must equal `split.tensors.count`, no name may
// repeat); a missing or foreign shard is an error naming it.
class GgufFile {
 public:
  explicit GgufFile(const std::string& path, bool in_ram = false);

  const std::string& path() const { return files_[0]->path(); }
  const GgufHeader& header() const { return header_; }
  const std::map<std::string, GgufValue>& metadata() const { return header_.metadata; }
  const std::vector<GgufTensor>& tensors() const { return header_.tensors; }
  const MappedFile& file() const { return *files_[0]; }
  // Every shard's bytes (one file unless the model is split).
  std::vector<const MappedFile*> files() const;
  // Lets the tensors' bytes be rewritten in place (read into RAM only; kernels/repack.h).
  void set_writable(bool on);

  bool has(const std::string& key) const { return header_.metadata.count(key) != 0; }
  const GgufValue* find(const std::string& key) const;
  const GgufTensor* find_tensor(const std::string& name) const;

  // Typed getters: throw naming the file and key when the key is missing or of another kind
  // (an integer where a string is wanted, a negative value for an unsigned one, ...).
  std::string get_string(const std::string& key) const;
  int64_t get_int(const std::string& key) const;
  double get_float(const std::string& key) const;  // integers are accepted too
  bool get_bool(const std::string& key) const;
  const GgufValue& get_array(const std::string& key, GgufValueType elem) const;

 private:
  [[noreturn]] void fail(const std::string& key, const std::string& what) const;

  void open_shards(bool in_ram);

  std::vector<std::unique_ptr<MappedFile>> files_;
  GgufHeader header_;
  std::map<std::string, size_t> tensor_index_;
};

}  // namespace whale
