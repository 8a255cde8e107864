// Hugging Face safetensors checkpoints, memory-mapped or read into RAM.
//
// File layout: u64 little-endian header size N, N bytes of JSON
//   {"name": {"dtype": "BF16", "shape": [r, c], "data_offsets": [begin, end]}, ..., "__metadata__":
//   {...}}
// then the tensor bytes; offsets are relative to the end of the header.
// A checkpoint is one `model.safetensors`, or shards listed by `model.safetensors.index.json`
// ({"weight_map": {"name": "model-00001-of-00003.safetensors", ...}}).
//
// Every check on untrusted bytes happens here, so a malformed file is an error that names the file
// and the tensor, never a crash.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "tensor/dtype.h"

namespace whale {

// How a checkpoint's bytes are brought into memory.
//   Mmap: the files are memory-mapped; pages come in on first use (4 KiB each) and the kernel may
//         drop them again, so a model larger than RAM still runs, slowly.
//   Ram:  each file is read into anonymous memory on 2 MiB transparent huge pages (where the
//         kernel grants them) and made read-only. Decoding streams every active weight once per
//         token; on 4 KiB file pages the CPU's hardware prefetchers stop at every page boundary
//         and the TLB misses constantly. Measured on the 1B V3-shape BF16 model, 2 threads:
//         decode 56 -> 75 tok/s (the kernels' 37 -> 50 GB/s).
//   Auto: Ram when all files together take at most 60% of MemAvailable, else Mmap.
enum class LoadMode { Auto, Mmap, Ram };

// Auto resolved for `bytes` of files on this machine.
LoadMode resolve_load_mode(LoadMode mode, size_t bytes);

// A whole file, read-only: memory-mapped, or read into (huge-page) anonymous memory when `in_ram`.
// `on_read(n)` is called after each chunk read into RAM with the bytes read so far.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path, bool in_ram = false,
                      const std::function<void(size_t)>& on_read = {});
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  bool in_ram() const { return in_ram_; }
  // Read into RAM only: makes the bytes writable (for rewriting weights in place at load) or
  // read-only again. Throws for a memory-mapped file.
  void set_writable(bool on);

 private:
  void read_into_ram(int fd, const std::function<void(size_t)>& on_read);

  std::string path_;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;  // what munmap releases: map_len_ bytes
  size_t map_len_ = 0;
  bool in_ram_ = false;
};

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // which file it lives in (for error messages)

  int64_t numel() const;
  std::string shape_str() const;
};

// Parses a safetensors header held in memory. `file_size` bounds the data offsets. Throws
// std::runtime_error naming `path` and the offending tensor. Exposed for tests and the fuzzer.
std::vector<TensorView> parse_safetensors(const uint8_t* bytes, size_t file_size,
                                          const std::string& path);

class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path, bool in_ram = false,
                           const std::function<void(size_t)>& on_read = {});
  const std::vector<TensorView>& tensors() const { return tensors_; }
  const MappedFile& file() const { return *file_; }

 private:
  std::unique_ptr<MappedFile> file_;
  std::vector<TensorView> tensors_;
};

// All tensors of a model directory, single-file or sharded.
class Checkpoint {
 public:
  // `progress`: a progress bar on a terminal while files are read into RAM.
  explicit Checkpoint(const std::string& dir, LoadMode mode = LoadMode::Mmap,
                      bool progress = false);
  // A checkpoint of tensors held elsewhere (a GGUF file under Hugging Face names): `views` are
  // indexed by name (a repeated name is an error), `files` are the files their bytes live in (for
  // prefault and sizes), `owner` keeps those bytes alive. `origin` names it in errors.
  // `stored_names` maps a name to what the file calls it, for error messages.
  Checkpoint(std::string origin, LoadMode mode, std::vector<TensorView> views,
             std::vector<const MappedFile*> files, std::shared_ptr<const void> owner,
             std::map<std::string, std::string> stored_names = {});

  bool has(const std::string& name) const { return index_.count(name) != 0; }
  const TensorView* find(const std::string& name) const;
  // The tensor, checked for shape; throws naming file and tensor when missing or mis-shaped.
  const TensorView& get(const std::string& name, std::span<const int64_t> shape) const;
  const TensorView& get(const std::string& name) const;
  std::vector<std::string> names() const;
  size_t total_bytes() const;
  size_t num_files() const { return mapped_.size(); }
  const std::string& dir() const { return dir_; }
  // Mmap or Ram: how the files were loaded.
  LoadMode load_mode() const { return mode_; }

  // Reads every page once (so the first tokens are not slowed by page faults), drawing a progress
  // bar when `progress` is true.
  void prefault(bool progress) const;

 private:
  std::string dir_;
  LoadMode mode_ = LoadMode::Mmap;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<const MappedFile*> mapped_;  // every file the tensors live in
  std::vector<TensorView> views_;          // tensors not owned by files_ (GGUF)
  std::shared_ptr<const void> owner_;      // keeps views_'s bytes alive
  std::map<std::string, std::string> stored_names_;
  std::string quoted(const std::string& name) const;  // 'name' (the file's name for it)
  std::map<std::string, const TensorView*> index_;
};

// ---------------------------------------------------------------- writing

// One tensor to write: raw bytes already in `dtype` (numel * dtype_size bytes, little-endian), or
// f32 values converted on the way (to F32 or BF16, round-to-nearest-even). Exactly one of `data`
// and `f32` is set (either may be null for an empty tensor).
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  const float* f32 = nullptr;
};

// Writes a .safetensors file as the Hugging Face library lays it out: u64 header size, the JSON
// header ("__metadata__" first when not empty, then the tensors in the given order, compact)
// padded with spaces to a multiple of 8 bytes, then the tensor bytes in the given order,
// contiguous. Atomic: written to a temporary file in the same directory, fsync'ed, renamed over
// `path`, and the directory fsync'ed, so readers see the old file or the whole new one.
// Throws std::invalid_argument naming the tensor for an empty or duplicate name, a negative
// dimension, missing data or an f32 source for another dtype; std::runtime_error naming the path
// when the file cannot be written (the temporary file is removed).
void write_safetensors(const std::string& path, std::span<const SafetensorsEntry> tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace whale
