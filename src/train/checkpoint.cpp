#include "train/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace whale::train {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// Files of a tokenizer directory that belong in a model directory (tokenizer.json is required).
constexpr const char* kTokenizerFiles[] = {"tokenizer.json", "tokenizer_config.json",
                                           "generation_config.json", "special_tokens_map.json",
                                           "chat_template.jinja"};

// DIR without a trailing separator; DIR.tmp and DIR.old beside it.
fs::path checkpoint_path(const std::string& dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  const std::string leaf = p.filename().string();
  if (leaf.empty() || leaf == "." || leaf == "..")
    throw std::invalid_argument("checkpoint directory '" + dir + "' must name a directory");
  return p;
}
fs::path sibling(const fs::path& p, const char* suffix) {
  return fs::path(p.string() + suffix);
}

std::string read_text(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path.string() + ": cannot open: " + std::strerror(errno));
  std::ostringstream s;
  s << f.rdbuf();
  if (f.bad()) throw std::runtime_error(path.string() + ": read error");
  return s.str();
}

// Writes `text` to `path` and fsyncs it.
void write_synced(const fs::path& path, const std::string& text) {
  auto fail = [&](const char* what) {
    return std::runtime_error(path.string() + ": " + what + ": " + std::strerror(errno));
  };
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw fail("cannot create");
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t w = ::write(fd, text.data() + done, text.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      const auto e = fail("write failed");
      ::close(fd);
      throw e;
    }
    done += size_t(w);
  }
  if (::fsync(fd) != 0) {
    const auto e = fail("fsync failed");
    ::close(fd);
    throw e;
  }
  if (::close(fd) != 0) throw fail("close failed");
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort
  (void)::fsync(fd);
  ::close(fd);
}

void rename_or_throw(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec)
    throw std::runtime_error("cannot rename " + from.string() + " to " + to.string() + ": " +
                             ec.message());
}

// Puts a checkpoint left by a crash between the two renames of a save back in place, and removes
// a DIR.old left by a crash just before its removal.
void recover(const fs::path& d) {
  const fs::path old = sibling(d, ".old");
  if (!fs::exists(old)) return;
  if (!fs::exists(d))
    rename_or_throw(old, d);
  else
    fs::remove_all(old);
}

std::vector<SafetensorsEntry> entries(std::span<const CkptTensor> tensors) {
  std::vector<SafetensorsEntry> out;
  out.reserve(tensors.size());
  for (const CkptTensor& t : tensors) out.push_back({t.name, DType::F32, t.shape, nullptr, t.data});
  return out;
}

// Everything but the swap, into the (fresh) directory tmp.
void write_contents(const fs::path& tmp, std::span<const CkptTensor> model,
                    std::span<const CkptTensor> optimizer, const std::string& config_json,
                    const json& state, const std::string& tokenizer_dir) {
  // Cheap checks first, so a bad call fails before writing gigabytes.
  if (!json::accept(config_json)) throw std::invalid_argument("config.json text is not valid JSON");
  const std::string state_text = state.dump(2) + "\n";
  const fs::path tok(tokenizer_dir);
  if (!tokenizer_dir.empty() && !fs::is_regular_file(tok / "tokenizer.json"))
    throw std::invalid_argument("tokenizer directory " + tokenizer_dir + " has no tokenizer.json");

  fs::create_directories(tmp);
  const std::map<std::string, std::string> meta = {{"format", "pt"}};
  write_safetensors((tmp / "model.safetensors").string(), entries(model), meta);
  write_safetensors((tmp / "optimizer.safetensors").string(), entries(optimizer), meta);
  write_synced(tmp / "config.json", config_json);
  write_synced(tmp / "trainer_state.json", state_text);
  if (!tokenizer_dir.empty())
    for (const char* name : kTokenizerFiles)
      if (fs::is_regular_file(tok / name)) write_synced(tmp / name, read_text(tok / name));
  fsync_dir(tmp);
}

}  // namespace

void save_checkpoint(const std::string& dir, std::span<const CkptTensor> model,
                     std::span<const CkptTensor> optimizer, const std::string& config_json,
                     const nlohmann::json& state, const std::string& tokenizer_dir) {
  const fs::path d = checkpoint_path(dir);
  const fs::path tmp = sibling(d, ".tmp"), old = sibling(d, ".old");
  auto failed = [&](const std::string& what) {
    return std::runtime_error("saving checkpoint " + d.string() + ": " + what);
  };
  try {
    recover(d);
    fs::remove_all(tmp);  // left by an earlier failed save
    write_contents(tmp, model, optimizer, config_json, state, tokenizer_dir);
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw failed(e.what());
  }
  // The swap: DIR -> DIR.old, DIR.tmp -> DIR, then DIR.old is dropped.
  const bool had = fs::exists(d);
  try {
    if (had) rename_or_throw(d, old);
    try {
      rename_or_throw(tmp, d);
    } catch (...) {
      std::error_code ec;
      if (had) fs::rename(old, d, ec);
      throw;
    }
  } catch (const std::exception& e) {
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw failed(e.what());
  }
  fsync_dir(d.parent_path().empty() ? fs::path(".") : d.parent_path());
  std::error_code ec;
  fs::remove_all(old, ec);  // a leftover is removed by the next save
}

bool checkpoint_exists(const std::string& dir) {
  const fs::path d = checkpoint_path(dir);
  if (fs::exists(d)) return fs::exists(d / "trainer_state.json");
  return fs::exists(sibling(d, ".old") / "trainer_state.json");
}

// ------------------------------------------------------------------ loading

namespace {

std::map<std::string, const TensorView*> index_of(const SafetensorsFile& f) {
  std::map<std::string, const TensorView*> m;
  for (const TensorView& t : f.tensors()) m[t.name] = &t;
  return m;
}

std::string shape_str(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); i++) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

void copy_into(const std::map<std::string, const TensorView*>& index, const SafetensorsFile& file,
               const std::string& name, std::span<const int64_t> shape, float* dst) {
  auto it = index.find(name);
  if (it == index.end())
    throw std::runtime_error(file.file().path() + ": missing tensor '" + name + "'");
  copy_tensor_f32(*it->second, shape, dst);
}

}  // namespace

void copy_tensor_f32(const TensorView& t, std::span<const int64_t> shape, float* dst) {
  if (!std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end()))
    throw std::runtime_error(t.file + ": tensor '" + t.name + "' has shape " + t.shape_str() +
                             ", expected " + shape_str(shape));
  const int64_t n = t.numel();
  if (t.dtype == DType::F32) {
    if (n > 0) std::memcpy(dst, t.data, size_t(n) * 4);
  } else if (t.dtype == DType::BF16) {
    for (int64_t i = 0; i < n; i++) {
      uint16_t h;
      std::memcpy(&h, t.data + 2 * i, 2);
      dst[i] = bf16_to_f32(h);
    }
  } else {
    throw std::runtime_error(t.file + ": tensor '" + t.name + "' has dtype " +
                             std::string(dtype_name(t.dtype)) + ", expected F32 (or BF16)");
  }
}

void LoadedCheckpoint::model_tensor(const std::string& name, std::span<const int64_t> shape,
                                    float* dst) const {
  copy_into(model_index_, *model_, name, shape, dst);
}

void LoadedCheckpoint::optimizer_tensor(const std::string& name, std::span<const int64_t> shape,
                                        float* dst) const {
  copy_into(optimizer_index_, *optimizer_, name, shape, dst);
}

LoadedCheckpoint load_checkpoint(const std::string& dir) {
  const fs::path d = checkpoint_path(dir), old = sibling(d, ".old");
  fs::path use = d;
  if (!fs::exists(d)) {
    if (!fs::exists(old)) throw std::runtime_error(dir + ": no checkpoint there (not found)");
    use = old;  // a save crashed between its renames: DIR.old is the last complete checkpoint
  }
  for (const char* f :
       {"config.json", "model.safetensors", "optimizer.safetensors", "trainer_state.json"})
    if (!fs::is_regular_file(use / f))
      throw std::runtime_error((use / f).string() +
                               ": missing (not a complete whale training checkpoint)");
  LoadedCheckpoint ck;
  ck.dir = use.string();
  ck.config_json = read_text(use / "config.json");
  const fs::path state_path = use / "trainer_state.json";
  try {
    ck.state = json::parse(read_text(state_path));
  } catch (const json::exception& e) {
    throw std::runtime_error(state_path.string() + ": bad JSON: " + e.what());
  }
  ck.model_ = std::make_unique<SafetensorsFile>((use / "model.safetensors").string());
  ck.optimizer_ = std::make_unique<SafetensorsFile>((use / "optimizer.safetensors").string());
  ck.model_index_ = index_of(*ck.model_);
  ck.optimizer_index_ = index_of(*ck.optimizer_);
  return ck;
}

}  // namespace whale::train
