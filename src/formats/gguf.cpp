#include "formats/gguf.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <set>
#include <stdexcept>

namespace whale {
namespace {

constexpr int kMaxArrayDepth = 4;
constexpr int kMaxDims = 4;  // GGML_MAX_DIMS

std::runtime_error error(const std::string& path, const std::string& msg) {
  return std::runtime_error(path + ": " + msg);
}

// Bounds-checked little-endian reads from the file's bytes.
class Reader {
 public:
  Reader(const uint8_t* p, size_t n, const std::string& path) : p_(p), n_(n), path_(path) {}

  size_t pos() const { return pos_; }
  size_t left() const { return n_ - pos_; }

  template <class T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string string(const std::string& what) {
    const uint64_t len = read<uint64_t>(what);
    if (len > left())
      throw error(path_, what + ": a string of " + std::to_string(len) +
                             " bytes runs past the end (" + std::to_string(left()) +
                             " bytes left at offset " + std::to_string(pos_) + ")");
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(len));
    pos_ += size_t(len);
    return s;
  }

  void need(size_t bytes, const std::string& what) const {
    if (bytes > left())
      throw error(path_, "truncated: " + what + " needs " + std::to_string(bytes) +
                             " bytes at offset " + std::to_string(pos_) + ", " +
                             std::to_string(left()) + " left");
  }

 private:
  const uint8_t* p_;
  size_t n_, pos_ = 0;
  const std::string& path_;
};

// Smallest encoding of one element of type t (strings: the length field), for count checks.
size_t min_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::BOOL:
      return 1;
    case GgufValueType::U16:
    case GgufValueType::I16:
      return 2;
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::F32:
      return 4;
    case GgufValueType::ARRAY:
      return 12;
    default:
      return 8;
  }
}

bool known_value_type(uint32_t t) {
  return t <= uint32_t(GgufValueType::F64);
}

bool is_float_type(GgufValueType t) {
  return t == GgufValueType::F32 || t == GgufValueType::F64;
}

bool is_int_type(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8:
    case GgufValueType::I8:
    case GgufValueType::U16:
    case GgufValueType::I16:
    case GgufValueType::U32:
    case GgufValueType::I32:
    case GgufValueType::U64:
    case GgufValueType::I64:
    case GgufValueType::BOOL:
      return true;
    default:
      return false;
  }
}

// Reads one integer of type t. Unsigned values also go to *u; a u64 above INT64_MAX returns -1
// (the caller reports it from *u).
int64_t read_int(Reader& r, GgufValueType t, const std::string& what, uint64_t* u,
                 const std::string& path) {
  switch (t) {
    case GgufValueType::U8:
      return *u = r.read<uint8_t>(what);
    case GgufValueType::I8:
      return r.read<int8_t>(what);
    case GgufValueType::U16:
      return *u = r.read<uint16_t>(what);
    case GgufValueType::I16:
      return r.read<int16_t>(what);
    case GgufValueType::U32:
      return *u = r.read<uint32_t>(what);
    case GgufValueType::I32:
      return r.read<int32_t>(what);
    case GgufValueType::I64:
      return r.read<int64_t>(what);
    case GgufValueType::U64: {
      *u = r.read<uint64_t>(what);
      return *u > uint64_t(std::numeric_limits<int64_t>::max()) ? -1 : int64_t(*u);
    }
    case GgufValueType::BOOL: {
      const uint8_t b = r.read<uint8_t>(what);
      if (b > 1) throw error(path, what + ": boolean byte " + std::to_string(b) + " is not 0 or 1");
      return b;
    }
    default:
      throw error(path, what + ": not an integer type");
  }
}

GgufValue read_value(Reader& r, GgufValueType t, const std::string& key, int depth,
                     const std::string& path) {
  GgufValue v;
  v.type = t;
  if (is_int_type(t)) {
    v.i = read_int(r, t, key, &v.u, path);
    if (v.i >= 0 && t != GgufValueType::U64) v.u = uint64_t(v.i);
    return v;
  }
  switch (t) {
    case GgufValueType::F32:
      v.f = r.read<float>(key);
      return v;
    case GgufValueType::F64:
      v.f = r.read<double>(key);
      return v;
    case GgufValueType::STRING:
      v.str = r.string(key);
      return v;
    case GgufValueType::ARRAY:
      break;
    default:
      throw error(path, key + ": unknown value type " + std::to_string(uint32_t(t)));
  }
  const uint32_t et = r.read<uint32_t>(key + " (array element type)");
  if (!known_value_type(et))
    throw error(path, key + ": unknown array element type " + std::to_string(et));
  v.elem = GgufValueType(et);
  const uint64_t count = r.read<uint64_t>(key + " (array length)");
  if (count > r.left() / min_size(v.elem))
    throw error(path, key + ": an array of " + std::to_string(count) + " " +
                          std::string(gguf_value_type_name(v.elem)) +
                          " runs past the end of the file");
  const size_t n = size_t(count);
  if (is_int_type(v.elem)) {
    v.ints.resize(n);
    uint64_t u = 0;
    for (size_t k = 0; k < n; k++) {
      v.ints[k] = read_int(r, v.elem, key, &u, path);
      if (v.elem == GgufValueType::U64 && v.ints[k] < 0)
        throw error(path, key + ": array element " + std::to_string(k) + " = " + std::to_string(u) +
                              " does not fit in int64");
    }
  } else if (v.elem == GgufValueType::F32 || v.elem == GgufValueType::F64) {
    v.floats.resize(n);
    for (size_t k = 0; k < n; k++)
      v.floats[k] = v.elem == GgufValueType::F32 ? double(r.read<float>(key)) : r.read<double>(key);
  } else if (v.elem == GgufValueType::STRING) {
    v.strings.resize(n);
    for (size_t k = 0; k < n; k++) v.strings[k] = r.string(key + "[" + std::to_string(k) + "]");
  } else {  // arrays of arrays
    if (depth >= kMaxArrayDepth)
      throw error(path, key + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    v.items.reserve(n);
    for (size_t k = 0; k < n; k++)
      v.items.push_back(read_value(r, GgufValueType::ARRAY, key, depth + 1, path));
  }
  return v;
}

}  // namespace

std::string_view gguf_value_type_name(GgufValueType t) {
  static constexpr std::string_view names[] = {"u8",  "i8",  "u16",  "i16",    "u32",
                                               "i32", "f32", "bool", "string", "array",
                                               "u64", "i64", "f64"};
  const auto k = uint32_t(t);
  return k < std::size(names) ? names[k] : std::string_view("unknown");
}

bool GgufValue::is_integer() const {
  return is_int_type(type);
}

bool GgufValue::is_float() const {
  return is_float_type(type);
}

size_t GgufValue::size() const {
  if (!is_array()) return 0;
  return ints.size() + floats.size() + strings.size() + items.size();
}

int64_t GgufTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  return n;
}

std::vector<int64_t> GgufTensor::shape() const {
  return {ne.rbegin(), ne.rend()};
}

std::string GgufTensor::shape_str() const {
  std::string s = "[";
  const std::vector<int64_t> sh = shape();
  for (size_t i = 0; i < sh.size(); i++) s += (i ? ", " : "") + std::to_string(sh[i]);
  return s + "]";
}

GgufHeader parse_gguf(const uint8_t* bytes, size_t size, const std::string& path) {
  Reader r(bytes, size, path);
  GgufHeader h;
  r.need(4, "the magic");
  if (std::memcmp(bytes, "GGUF", 4) != 0) throw error(path, "not a GGUF file (no 'GGUF' magic)");
  r.read<uint32_t>("the magic");
  h.version = r.read<uint32_t>("the version");
  if (h.version == 1)
    throw error(path, "GGUF version 1 (before August 2023) is not supported; convert it again");
  if (h.version != 2 && h.version != 3) {
    uint32_t swapped = __builtin_bswap32(h.version);
    if (swapped == 2 || swapped == 3) throw error(path, "big-endian GGUF files are not supported");
    throw error(path, "unknown GGUF version " + std::to_string(h.version));
  }
  const uint64_t n_tensors = r.read<uint64_t>("the tensor count");
  const uint64_t n_kv = r.read<uint64_t>("the metadata count");
  // Each key-value takes at least 13 bytes and each tensor info at least 32.
  if (n_kv > r.left() / 13)
    throw error(path, "metadata count " + std::to_string(n_kv) + " is larger than the file");
  if (n_tensors > r.left() / 32)
    throw error(path, "tensor count " + std::to_string(n_tensors) + " is larger than the file");

  for (uint64_t k = 0; k < n_kv; k++) {
    std::string key = r.string("metadata key " + std::to_string(k));
    if (key.empty()) throw error(path, "metadata key " + std::to_string(k) + " is empty");
    const uint32_t t = r.read<uint32_t>(key + " (value type)");
    if (!known_value_type(t)) throw error(path, key + ": unknown value type " + std::to_string(t));
    GgufValue v = read_value(r, GgufValueType(t), key, 0, path);
    if (!h.metadata.emplace(key, std::move(v)).second)
      throw error(path, "metadata key '" + key + "' appears twice");
  }
  if (auto it = h.metadata.find("general.alignment"); it != h.metadata.end()) {
    const GgufValue& a = it->second;
    if (!a.is_integer() || a.type == GgufValueType::BOOL || a.i <= 0 || (a.i & (a.i - 1)) != 0 ||
        a.i > (1 << 24))
      throw error(path, "general.alignment must be a positive power of two, got " +
                            (a.is_integer() ? std::to_string(a.i)
                                            : std::string(gguf_value_type_name(a.type))));
    h.alignment = uint64_t(a.i);
  }

  std::set<std::string> names;
  h.tensors.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; k++) {
    GgufTensor t;
    t.name = r.string("tensor " + std::to_string(k) + " name");
    if (!names.insert(t.name).second) throw error(path, "tensor '" + t.name + "' appears twice");
    const std::string what = "tensor '" + t.name + "'";
    const uint32_t n_dims = r.read<uint32_t>(what + " (dimension count)");
    if (n_dims < 1 || n_dims > kMaxDims)
      throw error(path, what + ": " + std::to_string(n_dims) + " dimensions (1 to 4 allowed)");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; d++) {
      const uint64_t n = r.read<uint64_t>(what + " (shape)");
      // At most 2^52 values in all, so that byte counts cannot overflow.
      if (n > (uint64_t(1) << 52) || (n && numel > (uint64_t(1) << 52) / n))
        throw error(path, what + ": shape too large");
      numel *= n;
      t.ne.push_back(int64_t(n));
    }
    const uint32_t type = r.read<uint32_t>(what + " (type)");
    const GgmlTypeInfo* info = ggml_type_info(type);
    if (!info)
      throw error(path, what + ": unknown or unsupported tensor type " + std::to_string(type));
    t.type = GgmlType(type);
    if (t.ne[0] % info->block_size != 0)
      throw error(path, what + ": rows of " + std::to_string(t.ne[0]) + " values are not whole " +
                            std::string(info->name) + " blocks of " +
                            std::to_string(info->block_size));
    t.nbytes = size_t(numel / uint64_t(info->block_size)) * size_t(info->block_bytes);
    t.offset = r.read<uint64_t>(what + " (offset)");
    if (t.offset % h.alignment != 0)
      throw error(path, what + ": offset " + std::to_string(t.offset) + " is not a multiple of " +
                            "the alignment " + std::to_string(h.alignment));
    h.tensors.push_back(std::move(t));
  }
  // The data section starts at the next multiple of the alignment.
  const size_t pos = r.pos();
  h.data_offset = size_t((pos + h.alignment - 1) / h.alignment * h.alignment);
  for (GgufTensor& t : h.tensors) {
    if (t.nbytes == 0) continue;
    const uint64_t avail = h.data_offset <= size ? size - h.data_offset : 0;
    if (t.offset > avail || t.nbytes > avail - t.offset)
      throw error(path, "tensor '" + t.name + "' (" + t.shape_str() + " " +
                            std::string(ggml_type_info(uint32_t(t.type))->name) + ", " +
                            std::to_string(t.nbytes) + " bytes at data offset " +
                            std::to_string(t.offset) + ") runs past the end of the file (" +
                            std::to_string(size) + " bytes): truncated?");
    t.data = bytes + h.data_offset + t.offset;
  }
  return h;
}

// ---------------------------------------------------------------- GgufFile

bool is_gguf_path(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0;
}

namespace {

// "PREFIX-00001-of-0000N.gguf" -> PREFIX and N (false for other names).
bool split_name(const std::string& path, std::string* prefix, int* count) {
  constexpr size_t kTail = 20;  // "-00001-of-00003.gguf"
  if (path.size() <= kTail) return false;
  const std::string tail = path.substr(path.size() - kTail);
  auto digits = [&](size_t at) {
    for (size_t i = at; i < at + 5; i++)
      if (tail[i] < '0' || tail[i] > '9') return false;
    return true;
  };
  if (tail[0] != '-' || !digits(1) || tail.compare(6, 4, "-of-") != 0 || !digits(10) ||
      tail.compare(15, 5, ".gguf") != 0 || tail.compare(1, 5, "00001") != 0)
    return false;
  *prefix = path.substr(0, path.size() - kTail);
  *count = std::stoi(tail.substr(10, 5));
  return *count >= 1;
}

std::string shard_path(const std::string& prefix, int no, int count) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "-%05d-of-%05d.gguf", no, count);
  return prefix + buf;
}

}  // namespace

std::vector<std::string> gguf_shard_paths(const std::string& path) {
  std::string prefix;
  int count = 0;
  if (!split_name(path, &prefix, &count)) return {path};
  std::vector<std::string> out;
  for (int i = 1; i <= count; i++) out.push_back(shard_path(prefix, i, count));
  return out;
}

GgufFile::GgufFile(const std::string& path, bool in_ram) {
  files_.push_back(std::make_unique<MappedFile>(path, in_ram));
  header_ = parse_gguf(files_[0]->data(), files_[0]->size(), path);
  open_shards(in_ram);
  for (size_t i = 0; i < header_.tensors.size(); i++) tensor_index_[header_.tensors[i].name] = i;
}

void GgufFile::set_writable(bool on) {
  for (auto& f : files_) f->set_writable(on);
}

void GgufFile::open_shards(bool in_ram) {
  if (!has("split.count")) return;
  const int64_t count = get_int("split.count");
  const int64_t no = has("split.no") ? get_int("split.no") : 0;
  if (count < 1 || count > 99999) fail("split.count", std::to_string(count) + " shards");
  if (count == 1) return;
  if (no != 0)
    throw error(path(), "shard " + std::to_string(no + 1) + " of a model split into " +
                            std::to_string(count) + " files: open the first one, PREFIX" +
                            shard_path("", 1, int(count)));
  std::string prefix;
  int named = 0;
  if (!split_name(path(), &prefix, &named) || named != count)
    throw error(path(), "the first shard of a model split into " + std::to_string(count) +
                            " files must be named PREFIX" + shard_path("", 1, int(count)) +
                            " (its shards are found by that name)");
  std::set<std::string> names;
  for (const GgufTensor& t : header_.tensors) names.insert(t.name);
  for (int i = 1; i < count; i++) {
    const std::string p = shard_path(prefix, i + 1, int(count));
    std::error_code ec;
    if (!std::filesystem::exists(p, ec))
      throw error(path(), "split into " + std::to_string(count) + " files, but shard " +
                              std::to_string(i + 1) + " (" + p + ") is missing");
    files_.push_back(std::make_unique<MappedFile>(p, in_ram));
    GgufHeader h = parse_gguf(files_.back()->data(), files_.back()->size(), p);
    auto number = [&](const char* key) -> int64_t {
      auto it = h.metadata.find(key);
      if (it == h.metadata.end() || !it->second.is_integer())
        throw error(
            p, std::string("metadata '") + key + "': missing (not a shard of " + path() + "?)");
      return it->second.i;
    };
    if (number("split.no") != i || number("split.count") != count)
      throw error(p, "says it is shard " + std::to_string(number("split.no") + 1) + " of " +
                         std::to_string(number("split.count")) + ", expected shard " +
                         std::to_string(i + 1) + " of " + std::to_string(count) + " (of " + path() +
                         ")");
    for (GgufTensor& t : h.tensors) {
      if (!names.insert(t.name).second)
        throw error(p, "tensor '" + t.name + "' is also in another shard of " + path());
      header_.tensors.push_back(std::move(t));
    }
  }
  if (has("split.tensors.count") &&
      get_int("split.tensors.count") != int64_t(header_.tensors.size()))
    throw error(path(), "split.tensors.count is " + std::to_string(get_int("split.tensors.count")) +
                            " but the " + std::to_string(count) + " shards hold " +
                            std::to_string(header_.tensors.size()) + " tensors");
}

std::vector<const MappedFile*> GgufFile::files() const {
  std::vector<const MappedFile*> out;
  for (const auto& f : files_) out.push_back(f.get());
  return out;
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = header_.metadata.find(key);
  return it == header_.metadata.end() ? nullptr : &it->second;
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &header_.tensors[it->second];
}

void GgufFile::fail(const std::string& key, const std::string& what) const {
  throw error(path(), "metadata '" + key + "': " + what);
}

std::string GgufFile::get_string(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(key, "missing");
  if (v->type != GgufValueType::STRING)
    fail(key, "expected a string, found " + std::string(gguf_value_type_name(v->type)));
  return v->str;
}

int64_t GgufFile::get_int(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(key, "missing");
  if (!v->is_integer() || v->type == GgufValueType::BOOL)
    fail(key, "expected an integer, found " + std::string(gguf_value_type_name(v->type)));
  if (v->type == GgufValueType::U64 && v->i < 0)
    fail(key, std::to_string(v->u) + " does not fit in int64");
  return v->i;
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(key, "missing");
  if (v->is_float()) return v->f;
  if (v->is_integer() && v->type != GgufValueType::BOOL) return double(get_int(key));
  fail(key, "expected a number, found " + std::string(gguf_value_type_name(v->type)));
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) fail(key, "missing");
  if (v->type != GgufValueType::BOOL)
    fail(key, "expected a boolean, found " + std::string(gguf_value_type_name(v->type)));
  return v->i != 0;
}

const GgufValue& GgufFile::get_array(const std::string& key, GgufValueType elem) const {
  const GgufValue* v = find(key);
  if (!v) fail(key, "missing");
  if (!v->is_array())
    fail(key, "expected an array, found " + std::string(gguf_value_type_name(v->type)));
  // Any integer width for an integer array (not booleans), either float width for a float one.
  const bool ints = is_int_type(elem) && is_int_type(v->elem) && elem != GgufValueType::BOOL &&
                    v->elem != GgufValueType::BOOL;
  const bool ok =
      v->elem == elem || ints || (is_float_type(elem) && is_float_type(v->elem)) || v->size() == 0;
  if (!ok)
    fail(key, "expected an array of " + std::string(gguf_value_type_name(elem)) +
                  ", found one of " + std::string(gguf_value_type_name(v->elem)));
  return *v;
}

}  // namespace whale
