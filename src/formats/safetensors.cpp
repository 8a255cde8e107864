#include "formats/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "run/progress.h"

namespace whale {

using json = nlohmann::json;
namespace fs = std::filesystem;

static std::runtime_error error(const std::string& path, const std::string& msg) {
  return std::runtime_error(path + ": " + msg);
}

// ---------------------------------------------------------------- MappedFile

MappedFile::MappedFile(const std::string& path, bool in_ram,
                       const std::function<void(size_t)>& on_read)
    : path_(path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw error(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw error(path, "cannot stat");
  }
  size_ = size_t(st.st_size);
  try {
    if (size_ > 0 && in_ram) {
      read_into_ram(fd, on_read);
    } else if (size_ > 0) {
      void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
      if (p == MAP_FAILED) throw error(path, std::string("cannot mmap: ") + std::strerror(errno));
      map_ = p;
      map_len_ = size_;
      data_ = static_cast<const uint8_t*>(p);
    }
  } catch (...) {
    ::close(fd);
    throw;
  }
  ::close(fd);
}

void MappedFile::read_into_ram(int fd, const std::function<void(size_t)>& on_read) {
  // A 2 MiB-aligned anonymous region (over-allocate, trim both ends) so that every 2 MiB of it
  // can be one huge page.
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t len = (size_ + kHuge - 1) / kHuge * kHuge;
  void* raw =
      ::mmap(nullptr, len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED)
    throw error(path_, "cannot allocate " + std::to_string(len >> 20) +
                           " MiB to read it into RAM (try --mmap): " + std::strerror(errno));
  const uintptr_t start = uintptr_t(raw), base = (start + kHuge - 1) / kHuge * kHuge;
  if (base > start) ::munmap(raw, base - start);
  if (start + kHuge > base) ::munmap(reinterpret_cast<void*>(base + len), start + kHuge - base);
  map_ = reinterpret_cast<void*>(base);
  map_len_ = len;
  ::madvise(map_, map_len_, MADV_HUGEPAGE);  // a hint: without THP the region stays 4 KiB pages

  uint8_t* dst = static_cast<uint8_t*>(map_);
  constexpr size_t kChunk = size_t(64) << 20;
  for (size_t off = 0; off < size_;) {
    const ssize_t n = ::pread(fd, dst + off, std::min(kChunk, size_ - off), off_t(off));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const std::string why = n < 0 ? std::strerror(errno) : "file shrank while being read";
      ::munmap(map_, map_len_);
      map_ = nullptr;
      throw error(path_, "read failed at byte " + std::to_string(off) + ": " + why);
    }
    off += size_t(n);
    if (on_read) on_read(off);
  }
  ::mprotect(map_, map_len_, PROT_READ);  // the weights are read-only from here on
  data_ = dst;
  in_ram_ = true;
}

void MappedFile::set_writable(bool on) {
  if (!in_ram_) throw error(path_, "a memory-mapped file cannot be rewritten in place");
  if (::mprotect(map_, map_len_, on ? PROT_READ | PROT_WRITE : PROT_READ) != 0)
    throw error(path_, std::string("mprotect failed: ") + std::strerror(errno));
}

MappedFile::~MappedFile() {
  if (map_) ::munmap(map_, map_len_);
}

LoadMode resolve_load_mode(LoadMode mode, size_t bytes) {
  if (mode != LoadMode::Auto) return mode;
  size_t avail_kb = 0;
  std::ifstream f("/proc/meminfo");
  std::string key;
  size_t value = 0;
  std::string unit;
  while (f >> key >> value >> unit)
    if (key == "MemAvailable:") {
      avail_kb = value;
      break;
    }
  // Unknown (no /proc/meminfo): map, which never over-commits memory.
  if (avail_kb == 0) return LoadMode::Mmap;
  return double(bytes) <= 0.6 * double(avail_kb) * 1024.0 ? LoadMode::Ram : LoadMode::Mmap;
}

// ---------------------------------------------------------------- TensorView

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorView::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// ---------------------------------------------------------------- header parsing

std::vector<TensorView> parse_safetensors(const uint8_t* bytes, size_t file_size,
                                          const std::string& path) {
  if (file_size < 8)
    throw error(path, "file too small to be safetensors (" + std::to_string(file_size) + " bytes)");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; i--) header_len = (header_len << 8) | bytes[i];
  if (header_len > file_size - 8)
    throw error(path, "header length " + std::to_string(header_len) + " exceeds file size " +
                          std::to_string(file_size) + " (truncated or not safetensors)");
  const size_t data_start = 8 + header_len;
  const size_t data_size = file_size - data_start;

  json header;
  try {
    header = json::parse(bytes + 8, bytes + data_start);
  } catch (const json::exception& e) {
    throw error(path, std::string("bad JSON header: ") + e.what());
  }
  if (!header.is_object()) throw error(path, "header is not a JSON object");

  std::vector<TensorView> out;
  out.reserve(header.size());
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const json& e = it.value();
    auto bad = [&](const std::string& msg) { return error(path, "tensor '" + name + "': " + msg); };
    if (!e.is_object()) throw bad("entry is not an object");
    if (!e.contains("dtype") || !e["dtype"].is_string()) throw bad("missing dtype");
    if (!e.contains("shape") || !e["shape"].is_array()) throw bad("missing shape");
    if (!e.contains("data_offsets") || !e["data_offsets"].is_array() ||
        e["data_offsets"].size() != 2)
      throw bad("missing data_offsets");

    TensorView t;
    t.name = name;
    t.file = path;
    const std::string dt = e["dtype"].get<std::string>();
    if (!dtype_from_name(dt, &t.dtype)) throw bad("unsupported dtype " + dt);

    // numel with overflow checks: dims are untrusted.
    uint64_t numel = 1;
    for (const json& d : e["shape"]) {
      if (!d.is_number_unsigned() && !(d.is_number_integer() && d.get<int64_t>() >= 0))
        throw bad("shape has a non-integer or negative dimension");
      uint64_t v = d.get<uint64_t>();
      if (v != 0 && numel > (uint64_t(1) << 62) / v) throw bad("shape too large");
      numel *= v;
      t.shape.push_back(int64_t(v));
    }
    const json& off = e["data_offsets"];
    if (!off[0].is_number_unsigned() || !off[1].is_number_unsigned())
      throw bad("data_offsets must be non-negative integers");
    uint64_t begin = off[0].get<uint64_t>(), end = off[1].get<uint64_t>();
    if (begin > end) throw bad("data_offsets begin > end");
    if (end > data_size)
      throw bad("data_offsets end " + std::to_string(end) + " beyond the data section (" +
                std::to_string(data_size) + " bytes): file truncated?");
    if (numel * dtype_size(t.dtype) != end - begin)
      throw bad("shape " + t.shape_str() + " x " + std::string(dtype_name(t.dtype)) + " needs " +
                std::to_string(numel * dtype_size(t.dtype)) + " bytes but data_offsets span " +
                std::to_string(end - begin));
    t.data = bytes + data_start + begin;
    t.nbytes = size_t(end - begin);
    out.push_back(std::move(t));
  }
  return out;
}

SafetensorsFile::SafetensorsFile(const std::string& path, bool in_ram,
                                 const std::function<void(size_t)>& on_read)
    : file_(std::make_unique<MappedFile>(path, in_ram, on_read)) {
  tensors_ = parse_safetensors(file_->data(), file_->size(), path);
}

// ---------------------------------------------------------------- Checkpoint

Checkpoint::Checkpoint(const std::string& dir, LoadMode mode, bool progress) : dir_(dir) {
  const fs::path root(dir);
  const fs::path index_path = root / "model.safetensors.index.json";
  std::vector<std::string> shard_names;
  if (fs::exists(index_path)) {
    json idx;
    try {
      std::ifstream f(index_path);
      idx = json::parse(f);
    } catch (const json::exception& e) {
      throw error(index_path.string(), std::string("bad JSON: ") + e.what());
    }
    if (!idx.contains("weight_map") || !idx["weight_map"].is_object())
      throw error(index_path.string(), "missing \"weight_map\" object");
    std::set<std::string> seen;
    for (auto& [name, file] : idx["weight_map"].items()) {
      if (!file.is_string())
        throw error(index_path.string(), "weight_map['" + name + "'] is not a file name");
      const std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f.find("..") != std::string::npos)
        throw error(index_path.string(),
                    "weight_map['" + name + "'] points outside the directory: " + f);
      if (seen.insert(f).second) shard_names.push_back(f);
    }
  } else if (fs::exists(root / "model.safetensors")) {
    shard_names.push_back("model.safetensors");
  } else {
    throw std::runtime_error(dir + ": no model.safetensors or model.safetensors.index.json");
  }
  size_t total = 0;
  for (const auto& s : shard_names) {
    const fs::path p = root / s;
    if (!fs::exists(p)) throw error(p.string(), "shard listed in the index is missing");
    std::error_code ec;
    const auto n = fs::file_size(p, ec);
    if (!ec) total += size_t(n);
  }
  mode_ = resolve_load_mode(mode, total);
  const bool in_ram = mode_ == LoadMode::Ram;
  ProgressBar bar("loading", total, progress && in_ram);
  size_t before = 0;  // bytes of the shards already read
  for (const auto& s : shard_names) {
    const fs::path p = root / s;
    files_.push_back(std::make_unique<SafetensorsFile>(p.string(), in_ram,
                                                       [&](size_t n) { bar.update(before + n); }));
    before += files_.back()->file().size();
  }
  bar.finish();
  for (const auto& f : files_) {
    mapped_.push_back(&f->file());
    for (const auto& t : f->tensors()) {
      auto [it, inserted] = index_.emplace(t.name, &t);
      if (!inserted)
        throw error(t.file, "tensor '" + t.name + "' also appears in " + it->second->file);
    }
  }
}

Checkpoint::Checkpoint(std::string origin, LoadMode mode, std::vector<TensorView> views,
                       std::vector<const MappedFile*> files, std::shared_ptr<const void> owner,
                       std::map<std::string, std::string> stored_names)
    : dir_(std::move(origin)),
      mode_(mode),
      mapped_(std::move(files)),
      views_(std::move(views)),
      owner_(std::move(owner)),
      stored_names_(std::move(stored_names)) {
  for (const TensorView& t : views_) {
    auto [it, inserted] = index_.emplace(t.name, &t);
    if (!inserted) throw error(t.file, "tensor '" + t.name + "' appears twice");
  }
}

std::string Checkpoint::quoted(const std::string& name) const {
  auto it = stored_names_.find(name);
  if (it == stored_names_.end()) return "'" + name + "'";
  return "'" + name + "' (in the file: '" + it->second + "')";
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second;
}

const TensorView& Checkpoint::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) throw std::runtime_error(dir_ + ": missing tensor " + quoted(name));
  return *t;
}

const TensorView& Checkpoint::get(const std::string& name, std::span<const int64_t> shape) const {
  const TensorView& t = get(name);
  if (!std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end())) {
    TensorView want;
    want.shape.assign(shape.begin(), shape.end());
    throw error(t.file, "tensor " + quoted(name) + " has shape " + t.shape_str() +
                            ", config expects " + want.shape_str());
  }
  return t;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& [k, v] : index_) out.push_back(k);
  return out;
}

size_t Checkpoint::total_bytes() const {
  size_t n = 0;
  for (const MappedFile* f : mapped_) n += f->size();
  return n;
}

void Checkpoint::prefault(bool progress) const {
  const size_t total = total_bytes();
  ProgressBar bar("loading", total, progress);
  size_t done = 0;
  volatile uint8_t sink = 0;
  const size_t page = 4096, chunk = size_t(64) << 20;
  for (const MappedFile* f : mapped_) {
    const uint8_t* p = f->data();
    const size_t n = f->size();
    for (size_t off = 0; off < n; off += chunk) {
      const size_t end = std::min(n, off + chunk);
      uint8_t acc = 0;
      for (size_t i = off; i < end; i += page) acc ^= p[i];
      sink = sink ^ acc;
      done += end - off;
      bar.update(done);
    }
  }
  bar.finish();
}

// ---------------------------------------------------------------- writing

namespace {

// A file descriptor written through a buffer; every failure names the file.
class SyncedWriter {
 public:
  explicit SyncedWriter(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw error(path, std::string("cannot create: ") + std::strerror(errno));
  }
  ~SyncedWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  SyncedWriter(const SyncedWriter&) = delete;
  SyncedWriter& operator=(const SyncedWriter&) = delete;

  void write(const void* p, size_t n) {
    if (buf_.size() + n > kBuffer) flush();
    if (n >= kBuffer) return write_fd(static_cast<const uint8_t*>(p), n);
    buf_.insert(buf_.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  }
  // Flushes, fsyncs and closes.
  void finish() {
    flush();
    if (::fsync(fd_) != 0) throw error(path_, std::string("fsync failed: ") + std::strerror(errno));
    const int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw error(path_, std::string("close failed: ") + std::strerror(errno));
  }

 private:
  static constexpr size_t kBuffer = size_t(1) << 20;
  void flush() {
    write_fd(buf_.data(), buf_.size());
    buf_.clear();
  }
  void write_fd(const uint8_t* p, size_t n) {
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) throw error(path_, std::string("write failed: ") + std::strerror(errno));
      p += w;
      n -= size_t(w);
    }
  }
  std::string path_;
  int fd_ = -1;
  std::vector<uint8_t> buf_;
};

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: some file systems cannot open or sync directories
  (void)::fsync(fd);
  ::close(fd);
}

// Checks one entry; returns its size in bytes.
uint64_t entry_bytes(const SafetensorsEntry& t, const std::string& path) {
  auto bad = [&](const std::string& m) {
    return std::invalid_argument(path + ": tensor '" + t.name + "': " + m);
  };
  if (t.name.empty()) throw bad("empty tensor name");
  if (t.name == "__metadata__") throw bad("the name __metadata__ is reserved");
  uint64_t numel = 1;
  for (int64_t d : t.shape) {
    if (d < 0) throw bad("negative dimension " + std::to_string(d));
    if (d != 0 && numel > (uint64_t(1) << 60) / uint64_t(d)) throw bad("shape too large");
    numel *= uint64_t(d);
  }
  if (t.data && t.f32) throw bad("both raw data and f32 values given");
  if (t.f32 && t.dtype != DType::F32 && t.dtype != DType::BF16)
    throw bad("f32 values can be stored as F32 or BF16, not " + std::string(dtype_name(t.dtype)));
  if (numel > 0 && !t.data && !t.f32) throw bad("no data");
  return numel * dtype_size(t.dtype);
}

std::string safetensors_header(std::span<const SafetensorsEntry> tensors,
                               const std::map<std::string, std::string>& metadata,
                               const std::string& path) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) h["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const SafetensorsEntry& t : tensors) {
    const uint64_t n = entry_bytes(t, path);
    if (h.contains(t.name))
      throw std::invalid_argument(path + ": tensor '" + t.name + "' given twice");
    h[t.name] = {{"dtype", std::string(dtype_name(t.dtype))},
                 {"shape", t.shape},
                 {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string text;
  try {
    text = h.dump();
  } catch (const nlohmann::json::exception& e) {  // invalid UTF-8 in a name or metadata
    throw std::invalid_argument(path + ": cannot encode the header: " + e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  return text;
}

void write_entry_data(SyncedWriter& w, const SafetensorsEntry& t, uint64_t nbytes) {
  if (nbytes == 0) return;
  if (!t.f32) return w.write(t.data, nbytes);
  const uint64_t numel = nbytes / dtype_size(t.dtype);
  if (t.dtype == DType::F32) return w.write(t.f32, nbytes);
  std::vector<uint16_t> chunk;  // BF16
  constexpr uint64_t kChunk = 1 << 16;
  for (uint64_t b = 0; b < numel; b += kChunk) {
    const uint64_t e = std::min(numel, b + kChunk);
    chunk.resize(e - b);
    for (uint64_t i = b; i < e; i++) chunk[i - b] = f32_to_bf16(t.f32[i]);
    w.write(chunk.data(), chunk.size() * 2);
  }
}

std::atomic<uint64_t> temp_counter{0};

}  // namespace

void write_safetensors(const std::string& path, std::span<const SafetensorsEntry> tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = safetensors_header(tensors, metadata, path);
  const std::string tmp =
      path + ".tmp." + std::to_string(::getpid()) + "." + std::to_string(temp_counter.fetch_add(1));
  try {
    SyncedWriter w(tmp);
    uint8_t len[8];
    for (int i = 0; i < 8; i++) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));
    w.write(len, 8);
    w.write(header.data(), header.size());
    for (const SafetensorsEntry& t : tensors) write_entry_data(w, t, entry_bytes(t, path));
    w.finish();
    if (::rename(tmp.c_str(), path.c_str()) != 0)
      throw error(path, std::string("cannot rename the temporary file into place: ") +
                            std::strerror(errno));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
  fsync_dir(fs::path(path).parent_path());
}

}  // namespace whale
