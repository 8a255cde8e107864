#include "formats/gguf_writer.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>
#include <stdexcept>

#include "formats/gguf.h"

namespace whale {

namespace {

template <typename T>
void put(std::vector<uint8_t>& b, T v) {
  const size_t at = b.size();
  b.resize(at + sizeof(T));
  std::memcpy(b.data() + at, &v, sizeof(T));
}

void put_str(std::vector<uint8_t>& b, const std::string& s) {
  put<uint64_t>(b, s.size());
  b.insert(b.end(), s.begin(), s.end());
}

}  // namespace

GgufWriter::GgufWriter(uint32_t alignment) : alignment_(alignment) {
  if (alignment == 0 || (alignment & (alignment - 1)))
    throw std::invalid_argument("GGUF alignment must be a power of two");
  if (alignment != 32) set_u32("general.alignment", alignment);
}

void GgufWriter::key(const std::string& k, uint32_t type) {
  put_str(kv_, k);
  put<uint32_t>(kv_, type);
  n_kv_++;
}

void GgufWriter::set_string(const std::string& k, const std::string& v) {
  key(k, uint32_t(GgufValueType::STRING));
  put_str(kv_, v);
}
void GgufWriter::set_u32(const std::string& k, uint32_t v) {
  key(k, uint32_t(GgufValueType::U32));
  put(kv_, v);
}
void GgufWriter::set_i32(const std::string& k, int32_t v) {
  key(k, uint32_t(GgufValueType::I32));
  put(kv_, v);
}
void GgufWriter::set_f32(const std::string& k, float v) {
  key(k, uint32_t(GgufValueType::F32));
  put(kv_, v);
}
void GgufWriter::set_bool(const std::string& k, bool v) {
  key(k, uint32_t(GgufValueType::BOOL));
  put<uint8_t>(kv_, v ? 1 : 0);
}
void GgufWriter::set_strings(const std::string& k, const std::vector<std::string>& v) {
  key(k, uint32_t(GgufValueType::ARRAY));
  put<uint32_t>(kv_, uint32_t(GgufValueType::STRING));
  put<uint64_t>(kv_, v.size());
  for (const std::string& s : v) put_str(kv_, s);
}
void GgufWriter::set_i32s(const std::string& k, const std::vector<int32_t>& v) {
  key(k, uint32_t(GgufValueType::ARRAY));
  put<uint32_t>(kv_, uint32_t(GgufValueType::I32));
  put<uint64_t>(kv_, v.size());
  for (int32_t x : v) put(kv_, x);
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> shape,
                            Fill fill) {
  if (shape.empty()) throw std::invalid_argument("GGUF tensor '" + name + "' has no shape");
  size_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); i++) rows *= size_t(shape[i]);
  const size_t bytes = rows * ggml_row_bytes(type, shape.back());
  tensors_.push_back({name, type, std::move(shape), bytes, std::move(fill)});
}

void GgufWriter::write(const std::string& path) const {
  std::set<std::string> names;
  for (const Tensor& t : tensors_)
    if (!names.insert(t.name).second)
      throw std::runtime_error(path + ": tensor '" + t.name + "' added twice");
  auto align = [&](uint64_t n) { return (n + alignment_ - 1) / alignment_ * alignment_; };

  std::vector<uint8_t> head;
  head.insert(head.end(), {'G', 'G', 'U', 'F'});
  put<uint32_t>(head, 3);
  put<uint64_t>(head, tensors_.size());
  put<uint64_t>(head, n_kv_);
  head.insert(head.end(), kv_.begin(), kv_.end());
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    put_str(head, t.name);
    put<uint32_t>(head, uint32_t(t.shape.size()));
    for (size_t i = t.shape.size(); i-- > 0;) put<uint64_t>(head, uint64_t(t.shape[i]));
    put<uint32_t>(head, uint32_t(t.type));
    put<uint64_t>(head, offset);
    offset = align(offset + t.bytes);
  }
  head.resize(align(head.size()), 0);

  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw std::runtime_error(path + ": cannot create " + tmp);
  auto fail = [&](const std::string& what) {
    std::fclose(f);
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": " + what);
  };
  if (std::fwrite(head.data(), 1, head.size(), f) != head.size()) fail("write failed");
  std::vector<uint8_t> buf;
  for (const Tensor& t : tensors_) {
    buf.assign(align(t.bytes), 0);
    try {
      t.fill(buf.data());
    } catch (const std::exception& e) {
      fail("tensor '" + t.name + "': " + e.what());
    }
    if (std::fwrite(buf.data(), 1, buf.size(), f) != buf.size()) fail("write failed");
  }
  if (std::fflush(f) != 0 || std::fclose(f) != 0) {
    std::remove(tmp.c_str());
    throw std::runtime_error(path + ": write failed");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) throw std::runtime_error(path + ": cannot rename " + tmp + ": " + ec.message());
}

}  // namespace whale
