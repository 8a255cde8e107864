#include "train/data.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <stdexcept>

#include "formats/safetensors.h"
#include "formats/tokenizer.h"
#include "run/progress.h"

namespace whale {

// Shards are read and written with memcpy of host integers.
static_assert(std::endian::native == std::endian::little,
              "token shards assume a little-endian host");

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

static std::runtime_error error(const std::string& path, const std::string& msg) {
  return std::runtime_error(path + ": " + msg);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw error(path, std::string("cannot open: ") + std::strerror(errno));
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw error(path, "read error");
  return s;
}

void write_file_atomically(const std::string& path,
                           const std::function<void(std::ofstream&)>& fill) {
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) throw error(tmp, std::string("cannot create: ") + std::strerror(errno));
    fill(out);
    out.flush();
    if (!out) {
      std::error_code ec;
      fs::remove(tmp, ec);
      throw error(tmp, "write failed (disk full?)");
    }
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    throw error(path, "cannot rename the temporary file into place: " + ec.message());
  }
}

// ---------------------------------------------------------------- shard files

uint32_t token_dtype_for_vocab(size_t vocab_size) {
  return vocab_size <= 65536 ? 2 : 4;
}

void write_token_shard(const std::string& path, std::span<const int32_t> tokens,
                       size_t vocab_size) {
  if (vocab_size == 0 || vocab_size > std::numeric_limits<uint32_t>::max())
    throw error(path, "vocab_size " + std::to_string(vocab_size) + " does not fit a token shard");
  for (size_t i = 0; i < tokens.size(); ++i)
    if (tokens[i] < 0 || size_t(tokens[i]) >= vocab_size)
      throw error(path, "token " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                            " is outside the vocabulary [0, " + std::to_string(vocab_size) + ")");
  const uint32_t dtype = token_dtype_for_vocab(vocab_size);
  uint8_t header[kTokenShardHeaderBytes] = {};
  const uint32_t fields[4] = {kTokenShardVersion, uint32_t(vocab_size), dtype, 0};
  const uint64_t count = tokens.size();
  std::memcpy(header, kTokenShardMagic, 8);
  std::memcpy(header + 8, fields, sizeof(fields));
  std::memcpy(header + 24, &count, 8);
  write_file_atomically(path, [&](std::ofstream& out) {
    out.write(reinterpret_cast<const char*>(header), sizeof(header));
    // Narrow in chunks so a 100M-token shard does not need a second full-size buffer.
    std::vector<uint8_t> chunk;
    constexpr size_t kChunk = 1 << 16;
    for (size_t start = 0; start < tokens.size(); start += kChunk) {
      const size_t n = std::min(kChunk, tokens.size() - start);
      chunk.resize(n * dtype);
      for (size_t i = 0; i < n; ++i) {
        if (dtype == 2) {
          const uint16_t v = uint16_t(tokens[start + i]);
          std::memcpy(chunk.data() + 2 * i, &v, 2);
        } else {
          const uint32_t v = uint32_t(tokens[start + i]);
          std::memcpy(chunk.data() + 4 * i, &v, 4);
        }
      }
      out.write(reinterpret_cast<const char*>(chunk.data()), std::streamsize(chunk.size()));
    }
  });
}

static uint32_t token_at(const uint8_t* p, uint32_t dtype, size_t i) {
  if (dtype == 2) {
    uint16_t v;
    std::memcpy(&v, p + 2 * i, 2);
    return v;
  }
  uint32_t v;
  std::memcpy(&v, p + 4 * i, 4);
  return v;
}

TokenShard::TokenShard(const std::string& path, size_t expected_vocab)
    : file_(std::make_unique<MappedFile>(path)) {
  const uint8_t* p = file_->data();
  const size_t size = file_->size();
  if (size < kTokenShardHeaderBytes)
    throw error(path, "truncated: " + std::to_string(size) + " bytes, shorter than the " +
                          std::to_string(kTokenShardHeaderBytes) + "-byte token shard header");
  if (std::memcmp(p, kTokenShardMagic, 8) != 0)
    throw error(path, "not a whale token shard (bad magic, expected \"WHALETOK\")");
  uint32_t fields[4];
  uint64_t count;
  std::memcpy(fields, p + 8, sizeof(fields));
  std::memcpy(&count, p + 24, 8);
  const uint32_t version = fields[0], dtype = fields[2], reserved = fields[3];
  vocab_size_ = fields[1];
  if (version != kTokenShardVersion)
    throw error(path, "unsupported token shard version " + std::to_string(version) + " (expected " +
                          std::to_string(kTokenShardVersion) + ")");
  if (vocab_size_ == 0) throw error(path, "vocab_size is 0");
  if (dtype != 2 && dtype != 4)
    throw error(path, "bad token dtype " + std::to_string(dtype) + " (expected 2 or 4 bytes)");
  if (dtype != token_dtype_for_vocab(vocab_size_))
    throw error(path, "token dtype " + std::to_string(dtype) + " does not match vocab_size " +
                          std::to_string(vocab_size_) + " (expected " +
                          std::to_string(token_dtype_for_vocab(vocab_size_)) + ")");
  if (reserved != 0) throw error(path, "reserved header field is " + std::to_string(reserved));
  if (expected_vocab != 0 && vocab_size_ != expected_vocab)
    throw error(path, "vocab_size mismatch: the shard has vocab_size " +
                          std::to_string(vocab_size_) + " but the tokenizer/model expects " +
                          std::to_string(expected_vocab));
  const size_t payload = size - kTokenShardHeaderBytes;
  if (count > payload / dtype)
    throw error(path, "truncated: the header says " + std::to_string(count) + " tokens (" +
                          std::to_string(count) + " x " + std::to_string(dtype) +
                          " bytes) but the file holds " + std::to_string(payload) +
                          " bytes of tokens");
  if (count * dtype != payload)
    throw error(path, std::to_string(payload - count * dtype) + " trailing bytes after the " +
                          std::to_string(count) + " tokens the header announces");
  count_ = size_t(count);
  dtype_ = dtype;
  tokens_ = p + kTokenShardHeaderBytes;
  for (size_t i = 0; i < count_; ++i) {
    const uint32_t id = token_at(tokens_, dtype_, i);
    if (id >= vocab_size_)
      throw error(path, "token " + std::to_string(id) + " at position " + std::to_string(i) +
                            " is >= vocab_size " + std::to_string(vocab_size_));
  }
}

TokenShard::~TokenShard() = default;
TokenShard::TokenShard(TokenShard&&) noexcept = default;
TokenShard& TokenShard::operator=(TokenShard&&) noexcept = default;

const std::string& TokenShard::path() const {
  return file_->path();
}

int32_t TokenShard::operator[](size_t i) const {
  return int32_t(token_at(tokens_, dtype_, i));
}

void TokenShard::read(size_t offset, std::span<int32_t> out) const {
  if (offset > count_ || out.size() > count_ - offset)
    throw std::out_of_range(path() + ": reading tokens [" + std::to_string(offset) + ", " +
                            std::to_string(offset + out.size()) + ") of " + std::to_string(count_));
  for (size_t i = 0; i < out.size(); ++i) out[i] = int32_t(token_at(tokens_, dtype_, offset + i));
}

// ---------------------------------------------------------------- inputs

InputFormat parse_input_format(std::string_view name) {
  if (name == "auto") return InputFormat::Auto;
  if (name == "text") return InputFormat::Text;
  if (name == "jsonl") return InputFormat::Jsonl;
  if (name == "brown") return InputFormat::Brown;
  throw std::runtime_error("unknown input format '" + std::string(name) +
                           "' (expected auto, text, jsonl or brown)");
}

// Punctuation that hugs the previous word ("word ," -> "word,"): Brown words made only of these.
static bool attaches_left(std::string_view w) {
  return !w.empty() && w.find_first_not_of(".,;:?!)]'") == std::string_view::npos;
}

std::string strip_brown_tags(std::string_view annotated) {
  std::string out;
  size_t line_start = 0;
  while (line_start < annotated.size()) {
    size_t line_end = annotated.find('\n', line_start);
    if (line_end == std::string_view::npos) line_end = annotated.size();
    const std::string_view line = annotated.substr(line_start, line_end - line_start);
    line_start = line_end + 1;

    std::string sentence;
    std::string_view previous;  // the previous word
    bool glue_next = false;     // the previous token opens a bracket or quote
    size_t pos = 0;
    while (true) {
      pos = line.find_first_not_of(" \t\r\f\v", pos);
      if (pos == std::string_view::npos) break;
      size_t end = line.find_first_of(" \t\r\f\v", pos);
      if (end == std::string_view::npos) end = line.size();
      const std::string_view token = line.substr(pos, end - pos);
      pos = end;
      // Words may contain '/' themselves ("and/or/cc", "1/2/cd"): the tag follows the last one.
      const size_t slash = token.rfind('/');
      if (slash == std::string_view::npos || slash == 0 || slash + 1 == token.size())
        throw std::runtime_error("not a Brown word/TAG token: '" + std::string(token) + "'");
      std::string_view word = token.substr(0, slash);
      // This copy of the corpus doubles every ; ? ! and sentence-final : ("Ann/np ;/. ;/.").
      const bool doubled =
          word == previous && (word == ";" || word == "?" || word == "!" || word == ":");
      previous = word;
      if (doubled) continue;
      bool glue_left = false, opens = false;
      if (word == "``") {
        word = "\"";
        opens = true;
      } else if (word == "''") {
        word = "\"";
        glue_left = true;
      } else if (word == "(" || word == "[") {
        opens = true;
      } else {
        glue_left = attaches_left(word);
      }
      if (!sentence.empty() && !glue_left && !glue_next) sentence += ' ';
      sentence += word;
      glue_next = opens;
    }
    if (sentence.empty()) continue;
    if (!out.empty()) out += '\n';
    out += sentence;
  }
  return out;
}

static bool is_brown_file_name(const std::string& name) {
  return name.size() == 4 && name[0] == 'c' && name[1] >= 'a' && name[1] <= 'r' &&
         std::isdigit(static_cast<unsigned char>(name[2])) &&
         std::isdigit(static_cast<unsigned char>(name[3]));
}

bool looks_like_brown_dir(const std::string& path) {
  std::error_code ec;
  return fs::is_directory(path, ec) && fs::is_regular_file(fs::path(path) / "cats.txt", ec) &&
         fs::is_regular_file(fs::path(path) / "ca01", ec);
}

std::vector<std::string> read_jsonl_documents(const std::string& path,
                                              const std::string& text_field) {
  std::vector<std::string> docs;
  for_each_line(read_file(path), [&](std::string_view line, size_t line_no) {
    const auto where = [&] { return path + ":" + std::to_string(line_no); };
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;
    ojson obj;
    try {
      obj = ojson::parse(line);
    } catch (const ojson::parse_error& e) {
      throw std::runtime_error(where() + ": invalid JSON: " + e.what());
    }
    if (!obj.is_object()) throw std::runtime_error(where() + ": expected a JSON object");
    const auto it = obj.find(text_field);
    if (it == obj.end()) throw std::runtime_error(where() + ": no field \"" + text_field + "\"");
    if (!it->is_string())
      throw std::runtime_error(where() + ": field \"" + text_field + "\" is not a string");
    std::string text = it->get<std::string>();
    if (!text.empty()) docs.push_back(std::move(text));
  });
  return docs;
}

void for_each_line(std::string_view text, const std::function<void(std::string_view, size_t)>& fn) {
  size_t start = 0, line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    fn(text.substr(start, end - start), ++line_no);
    start = end + 1;
  }
}

void restart_jsonl_log(const std::string& path, bool resume, int64_t step) {
  if (!resume) {
    std::error_code ec;
    std::filesystem::remove(path, ec);
    return;
  }
  std::vector<std::string> keep;
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    try {
      const nlohmann::json r = nlohmann::json::parse(line);
      if (r.contains("step") && r["step"].get<int64_t>() > step) continue;
    } catch (const nlohmann::json::exception&) {
      continue;  // a half-written last line of a killed run
    }
    keep.push_back(line);
  }
  in.close();
  write_file_atomically(path, [&](std::ofstream& out) {
    for (const std::string& l : keep) out << l << "\n";
  });
}

std::vector<LoadedInput> load_documents(const std::vector<std::string>& inputs, InputFormat format,
                                        const std::string& text_field,
                                        std::vector<std::string>& docs) {
  std::vector<LoadedInput> loaded;
  const auto add = [&](LoadedInput& info, std::string text) {
    if (text.empty()) return;
    docs.push_back(std::move(text));
    ++info.documents;
  };
  const auto load_file = [&](const std::string& path, InputFormat fmt) {
    if (fmt == InputFormat::Auto)
      fmt = fs::path(path).extension() == ".jsonl" ? InputFormat::Jsonl : InputFormat::Text;
    LoadedInput info{path, "text", 0, 0};
    if (fmt == InputFormat::Jsonl) {
      info.format = "jsonl";
      std::error_code ec;
      info.bytes = fs::file_size(path, ec);
      for (std::string& d : read_jsonl_documents(path, text_field)) {
        docs.push_back(std::move(d));
        ++info.documents;
      }
    } else if (fmt == InputFormat::Brown) {
      info.format = "brown";
      const std::string raw = read_file(path);
      info.bytes = raw.size();
      try {
        add(info, strip_brown_tags(raw));
      } catch (const std::runtime_error& e) {
        throw error(path, e.what());
      }
    } else {
      std::string text = read_file(path);
      info.bytes = text.size();
      add(info, std::move(text));
    }
    loaded.push_back(std::move(info));
  };

  for (const std::string& input : inputs) {
    std::error_code ec;
    if (!fs::exists(input, ec)) throw error(input, "no such file or directory");
    if (!fs::is_directory(input, ec)) {
      load_file(input, format);
      continue;
    }
    std::vector<std::string> files;
    const bool brown = format == InputFormat::Brown ||
                       (format == InputFormat::Auto && looks_like_brown_dir(input));
    if (brown) {
      for (const auto& e : fs::directory_iterator(input))
        if (e.is_regular_file() && is_brown_file_name(e.path().filename().string()))
          files.push_back(e.path().string());
      if (files.empty()) throw error(input, "no Brown corpus files (ca01 ... cr09) in directory");
      std::sort(files.begin(), files.end());
      LoadedInput info{input, "brown", 0, 0};
      for (const std::string& f : files) {
        const std::string raw = read_file(f);
        info.bytes += raw.size();
        try {
          add(info, strip_brown_tags(raw));
        } catch (const std::runtime_error& e) {
          throw error(f, e.what());
        }
      }
      loaded.push_back(std::move(info));
      continue;
    }
    for (const auto& e : fs::recursive_directory_iterator(input))
      if (e.is_regular_file() && e.path().filename().string().front() != '.')
        files.push_back(e.path().string());
    if (files.empty()) throw error(input, "directory has no files");
    std::sort(files.begin(), files.end());
    for (const std::string& f : files) load_file(f, format);
  }
  return loaded;
}

// ---------------------------------------------------------------- split

static uint64_t fnv1a64(uint64_t seed, uint64_t index) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint64_t v : {seed, index})
    for (int b = 0; b < 8; ++b) {
      h ^= (v >> (8 * b)) & 0xff;
      h *= 0x100000001b3ull;
    }
  return h;
}

std::vector<bool> split_validation(size_t n, double val_fraction, uint64_t seed) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0))
    throw std::runtime_error("val_fraction " + std::to_string(val_fraction) + " must be in [0, 1)");
  if (n == 0) throw std::runtime_error("the inputs hold no (non-empty) documents");
  std::vector<bool> val(n, false);
  if (val_fraction == 0.0) return val;
  if (n < 2)
    throw std::runtime_error(
        "a validation split needs at least 2 documents but the inputs hold 1 (use a val fraction "
        "of 0, or split the text into more documents)");
  std::vector<uint64_t> hash(n);
  size_t n_val = 0;
  for (size_t i = 0; i < n; ++i) {
    hash[i] = fnv1a64(seed, i);
    // The top 53 bits as a uniform double in [0, 1).
    val[i] = double(hash[i] >> 11) * 0x1p-53 < val_fraction;
    n_val += val[i];
  }
  if (n_val == 0) val[std::min_element(hash.begin(), hash.end()) - hash.begin()] = true;
  if (n_val == n) val[std::max_element(hash.begin(), hash.end()) - hash.begin()] = false;
  return val;
}

// ---------------------------------------------------------------- building

namespace {

// Accumulates one split's token stream and writes it out in shards of `shard_tokens`.
class ShardWriter {
 public:
  ShardWriter(std::string dir, std::string prefix, size_t shard_tokens, size_t vocab)
      : dir_(std::move(dir)),
        prefix_(std::move(prefix)),
        shard_tokens_(shard_tokens),
        vocab_(vocab) {}

  void append(std::span<const int32_t> tokens) {
    total_ += tokens.size();
    while (!tokens.empty()) {
      const size_t n = std::min(tokens.size(), shard_tokens_ - buffer_.size());
      buffer_.insert(buffer_.end(), tokens.begin(), tokens.begin() + n);
      tokens = tokens.subspan(n);
      if (buffer_.size() == shard_tokens_) flush();
    }
  }
  void finish() {
    if (!buffer_.empty()) flush();
  }
  const std::vector<std::string>& names() const { return names_; }
  uint64_t total() const { return total_; }

 private:
  void flush() {
    char name[64];
    std::snprintf(name, sizeof(name), "%s_%06zu.bin", prefix_.c_str(), names_.size());
    write_token_shard((fs::path(dir_) / name).string(), buffer_, vocab_);
    names_.push_back(name);
    buffer_.clear();
  }
  std::string dir_, prefix_;
  size_t shard_tokens_, vocab_;
  std::vector<int32_t> buffer_;
  std::vector<std::string> names_;
  uint64_t total_ = 0;
};

}  // namespace

DataSummary build_token_shards(const DataOptions& o) {
  if (o.inputs.empty()) throw std::runtime_error("whale data: no --input given");
  if (o.tokenizer_dir.empty()) throw std::runtime_error("whale data: no --tokenizer given");
  if (o.out_dir.empty()) throw std::runtime_error("whale data: no --out given");
  if (o.shard_tokens == 0) throw std::runtime_error("whale data: shard size must be > 0 tokens");
  if (o.text_field.empty()) throw std::runtime_error("whale data: empty JSONL text field name");

  const Tokenizer tok = Tokenizer::load(o.tokenizer_dir);
  const size_t vocab = tok.vocab_size();
  const int32_t bos = tok.bos_id(), eos = tok.eos_id();
  if (eos < 0)
    throw error(o.tokenizer_dir,
                "the tokenizer has no eos token (tokenizer_config.json eos_token), which separates "
                "documents");
  if (vocab > std::numeric_limits<uint32_t>::max())
    throw error(o.tokenizer_dir, "vocabulary too large for token shards");

  std::vector<std::string> docs;
  const std::vector<LoadedInput> loaded = load_documents(o.inputs, o.format, o.text_field, docs);
  const std::vector<bool> is_val = split_validation(docs.size(), o.val_fraction, o.seed);

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec) throw error(o.out_dir, "cannot create the output directory: " + ec.message());

  DataSummary s;
  s.vocab_size = vocab;
  ShardWriter train(o.out_dir, "train", o.shard_tokens, vocab);
  ShardWriter val(o.out_dir, "val", o.shard_tokens, vocab);
  size_t total_bytes = 0;
  for (const std::string& d : docs) total_bytes += d.size();
  ProgressBar bar("tokenizing", total_bytes, o.progress);
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();

  // Batches bound the memory held in token vectors; inside a batch documents are encoded in
  // parallel and appended in document order, so the output does not depend on the thread count.
  constexpr size_t kBatchBytes = size_t(32) << 20;
  size_t done_bytes = 0;
  for (size_t begin = 0; begin < docs.size();) {
    size_t end = begin, batch_bytes = 0;
    while (end < docs.size() && (end == begin || batch_bytes < kBatchBytes))
      batch_bytes += docs[end++].size();
    std::vector<std::vector<int32_t>> encoded(end - begin);
    std::exception_ptr failure;  // exceptions must not escape an OpenMP region
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
    for (size_t i = begin; i < end; ++i) {
      try {
        std::vector<int32_t>& ids = encoded[i - begin];
        if (bos >= 0) ids.push_back(bos);
        const std::vector<int32_t> body = tok.encode(docs[i]);
        ids.insert(ids.end(), body.begin(), body.end());
        ids.push_back(eos);
      } catch (...) {
#pragma omp critical(whale_data_failure)
        if (!failure) failure = std::current_exception();
      }
    }
    if (failure) std::rethrow_exception(failure);
    for (size_t i = begin; i < end; ++i) {
      (is_val[i] ? val : train).append(encoded[i - begin]);
      ++(is_val[i] ? s.val_documents : s.train_documents);
      std::vector<int32_t>().swap(encoded[i - begin]);
    }
    done_bytes += batch_bytes;
    bar.update(done_bytes);
    begin = end;
  }
  train.finish();
  val.finish();
  bar.finish();
  s.train_tokens = train.total();
  s.val_tokens = val.total();
  s.train_shards = train.names();
  s.val_shards = val.names();

  ojson meta;
  meta["format"] = "whale-token-shards";
  meta["version"] = kTokenShardVersion;
  meta["vocab_size"] = vocab;
  meta["token_dtype"] = token_dtype_for_vocab(vocab);
  meta["bos_id"] = bos;
  meta["eos_id"] = eos;
  meta["tokenizer"] = o.tokenizer_dir;
  meta["val_fraction"] = o.val_fraction;
  meta["seed"] = o.seed;
  meta["shard_tokens"] = o.shard_tokens;
  meta["train"] = {
      {"documents", s.train_documents}, {"tokens", s.train_tokens}, {"shards", s.train_shards}};
  meta["val"] = {
      {"documents", s.val_documents}, {"tokens", s.val_tokens}, {"shards", s.val_shards}};
  ojson in = ojson::array();
  for (const LoadedInput& l : loaded)
    in.push_back(
        {{"path", l.path}, {"format", l.format}, {"bytes", l.bytes}, {"documents", l.documents}});
  meta["inputs"] = std::move(in);
  const std::string text = meta.dump(2) + "\n";
  write_file_atomically((fs::path(o.out_dir) / "meta.json").string(), [&](std::ofstream& out) {
    out.write(text.data(), std::streamsize(text.size()));
  });

  // Shards left by an earlier run that produced more of them would be mistaken for data.
  const std::set<std::string> keep(s.train_shards.begin(), s.train_shards.end());
  const std::set<std::string> keep_val(s.val_shards.begin(), s.val_shards.end());
  static const std::regex shard_name(R"((train|val)_\d{6}\.bin)");
  for (const auto& e : fs::directory_iterator(o.out_dir)) {
    const std::string name = e.path().filename().string();
    if (std::regex_match(name, shard_name) && !keep.count(name) && !keep_val.count(name))
      fs::remove(e.path(), ec);
  }
  return s;
}

int run_data_command(const DataOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  const DataSummary s = build_token_shards(options);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(
      stderr,
      "whale data: %s: train %llu tokens (%zu documents, %zu shards), val %llu tokens (%zu "
      "documents, %zu shards), vocab %zu, %.1f s\n",
      options.out_dir.c_str(), (unsigned long long)s.train_tokens, s.train_documents,
      s.train_shards.size(), (unsigned long long)s.val_tokens, s.val_documents, s.val_shards.size(),
      s.vocab_size, secs);
  return 0;
}

}  // namespace whale
