#include "serve/disk_cache.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace whale::serve {

namespace fs = std::filesystem;

namespace {

constexpr char kMagic[8] = {'W', 'H', 'A', 'L', 'E', 'K', 'V', '1'};
constexpr size_t kHeader = 8 + 3 * 8;

uint64_t now_seconds() {
  return uint64_t(std::chrono::duration_cast<std::chrono::seconds>(
                      std::chrono::system_clock::now().time_since_epoch())
                      .count());
}

int64_t mtime_of(const fs::path& p) {
  std::error_code ec;
  const auto t = fs::last_write_time(p, ec);
  if (ec) return 0;
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

uint32_t crc(uint32_t c, const void* p, size_t n) {
  const auto* b = static_cast<const Bytef*>(p);
  while (n > 0) {  // zlib takes uInt lengths
    const uInt k = uInt(std::min<size_t>(n, 1u << 30));
    c = uint32_t(crc32(c, b, k));
    b += k;
    n -= k;
  }
  return c;
}

size_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) n++;
  return n;
}

// FNV-1a of the tokens: the file name.
std::string name_of(std::span<const int32_t> tokens) {
  uint64_t h = 1469598103934665603ull;
  for (int32_t t : tokens)
    for (int k = 0; k < 4; ++k) h = (h ^ (uint32_t(t) >> (8 * k) & 0xFF)) * 1099511628211ull;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx.kv", (unsigned long long)h);
  return buf;
}

}  // namespace

uint64_t DiskCache::file_bytes(size_t n_tokens, size_t kv_bytes) {
  return kHeader + 4 * uint64_t(n_tokens) + kv_bytes + 4;
}

DiskCache::DiskCache(std::string dir, uint64_t max_bytes, uint64_t model_key)
    : dir_(std::move(dir)), max_bytes_(max_bytes), key_(model_key) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (!fs::is_directory(dir_))
    throw std::runtime_error("--cache-dir " + dir_ + ": not a usable directory");
  scan();
  thread_ = std::thread([this] { writer(); });
}

DiskCache::~DiskCache() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void DiskCache::scan() {
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string name = e.path().filename().string();
    if (name.find(".kv.tmp.") != std::string::npos) {  // a write that did not finish
      fs::remove(e.path());
      continue;
    }
    if (!name.ends_with(".kv") || !e.is_regular_file()) continue;
    std::ifstream f(e.path(), std::ios::binary);
    char magic[8];
    uint64_t key = 0, n = 0, kv = 0;
    f.read(magic, 8);
    f.read(reinterpret_cast<char*>(&key), 8);
    f.read(reinterpret_cast<char*>(&n), 8);
    f.read(reinterpret_cast<char*>(&kv), 8);
    const uint64_t size = e.file_size();
    const bool ok = f && std::memcmp(magic, kMagic, 8) == 0 && key == key_ && n < (1u << 30) &&
                    kv < (uint64_t(1) << 48) && size == file_bytes(n, kv);
    Item it;
    if (ok) {
      it.tokens.resize(n);
      f.read(reinterpret_cast<char*>(it.tokens.data()), std::streamsize(4 * n));
    }
    if (!ok || !f) {  // foreign, truncated or not ours: never served
      f.close();
      fs::remove(e.path());
      ++damaged_;
      continue;
    }
    it.file = name;
    it.size = size;
    it.used = mtime_of(e.path());
    items_.push_back(std::move(it));
  }
  evict(0);
}

std::pair<size_t, size_t> DiskCache::find(std::span<const int32_t> prompt) const {
  std::lock_guard lk(mu_);
  size_t best = 0, best_n = 0;
  for (size_t i = 0; i < items_.size(); ++i) {
    const size_t n = common_prefix(items_[i].tokens, prompt);
    if (n > best_n) best = i, best_n = n;
  }
  return {best, best_n};
}

bool DiskCache::covers(std::span<const int32_t> tokens) const {
  std::lock_guard lk(mu_);
  for (const Item& it : items_)
    if (it.tokens.size() >= tokens.size() && common_prefix(it.tokens, tokens) == tokens.size())
      return true;
  for (const KvEntry& e : queue_)
    if (e.tokens.size() >= tokens.size() && common_prefix(e.tokens, tokens) == tokens.size())
      return true;
  return false;
}

std::optional<KvEntry> DiskCache::load(size_t index) {
  std::string file;
  uint64_t size = 0;
  {
    std::lock_guard lk(mu_);
    if (index >= items_.size()) return std::nullopt;
    file = items_[index].file;
    size = items_[index].size;
  }
  const fs::path path = fs::path(dir_) / file;
  // Mapped read-only (the kernel's page cache holds the file already when it was used lately).
  KvEntry e;
  bool ok = false;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    struct stat st {};
    if (fstat(fd, &st) == 0 && uint64_t(st.st_size) == size && size >= kHeader + 4) {
      void* m = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      if (m != MAP_FAILED) {
        e.mapping = std::shared_ptr<const void>(
            m, [size](const void* p) { munmap(const_cast<void*>(p), size); });
        const auto* buf = static_cast<const uint8_t*>(m);
        uint32_t stored;
        std::memcpy(&stored, buf + size - 4, 4);
        uint64_t key, n, kv;
        std::memcpy(&key, buf + 8, 8);
        std::memcpy(&n, buf + 16, 8);
        std::memcpy(&kv, buf + 24, 8);
        ok = std::memcmp(buf, kMagic, 8) == 0 && key == key_ && size == file_bytes(n, kv) &&
             crc(0, buf, size - 4) == stored;
        if (ok) {
          e.tokens.resize(n);
          std::memcpy(e.tokens.data(), buf + kHeader, 4 * n);
          e.mapped = std::span<const uint8_t>(buf + kHeader + 4 * n, kv);
        }
      }
    }
    ::close(fd);
  }
  std::lock_guard lk(mu_);
  // The index may have moved while reading: find the item again by name.
  size_t i = 0;
  while (i < items_.size() && items_[i].file != file) ++i;
  if (!ok) {
    if (i < items_.size()) remove_item(i);
    ++damaged_;
    return std::nullopt;
  }
  if (i < items_.size()) {
    items_[i].used = int64_t(now_seconds());
    std::error_code ec;
    fs::last_write_time(path, fs::file_time_type::clock::now(), ec);  // LRU across restarts
  }
  return e;
}

void DiskCache::save(KvEntry e) {
  if (file_bytes(e.tokens.size(), e.kv.size()) > max_bytes_) return;
  {
    std::lock_guard lk(mu_);
    queue_.push_back(std::move(e));
  }
  cv_.notify_all();
}

void DiskCache::flush() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return queue_.empty() && !busy_; });
}

size_t DiskCache::entries() const {
  std::lock_guard lk(mu_);
  return items_.size();
}

uint64_t DiskCache::bytes() const {
  std::lock_guard lk(mu_);
  uint64_t b = 0;
  for (const Item& it : items_) b += it.size;
  return b;
}

void DiskCache::writer() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ with nothing left
    KvEntry e = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    lk.unlock();
    write(e);
    lk.lock();
    busy_ = false;
    cv_.notify_all();
  }
}

void DiskCache::write(const KvEntry& e) {
  const std::string name = name_of(e.tokens);
  const fs::path final_path = fs::path(dir_) / name;
  const fs::path tmp = fs::path(dir_) / (name + ".tmp." + std::to_string(::getpid()));
  const uint64_t n = e.tokens.size(), kv = e.kv.size(), size = file_bytes(n, kv);
  {
    std::lock_guard lk(mu_);
    evict(size);
  }
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    uint32_t c = 0;
    auto put = [&](const void* p, size_t k) {
      f.write(static_cast<const char*>(p), std::streamsize(k));
      c = crc(c, p, k);
    };
    put(kMagic, 8);
    put(&key_, 8);
    put(&n, 8);
    put(&kv, 8);
    put(e.tokens.data(), 4 * n);
    put(e.kv.data(), kv);
    f.write(reinterpret_cast<const char*>(&c), 4);
    f.flush();
    if (!f) {
      f.close();
      std::error_code ec;
      fs::remove(tmp, ec);
      return;  // disk full or gone: the cache is best effort
    }
  }
  std::error_code ec;
  fs::rename(tmp, final_path, ec);
  if (ec) {
    fs::remove(tmp, ec);
    return;
  }
  std::lock_guard lk(mu_);
  // Entries that are prefixes of this one (and an older file of the same name) are redundant.
  for (size_t i = 0; i < items_.size();) {
    if (items_[i].file == name) {
      items_.erase(items_.begin() + std::ptrdiff_t(i));
    } else if (items_[i].tokens.size() <= n &&
               common_prefix(items_[i].tokens, e.tokens) == items_[i].tokens.size()) {
      remove_item(i);
    } else {
      ++i;
    }
  }
  items_.push_back({name, e.tokens, size, int64_t(now_seconds())});
}

void DiskCache::remove_item(size_t i) {
  std::error_code ec;
  fs::remove(fs::path(dir_) / items_[i].file, ec);
  items_.erase(items_.begin() + std::ptrdiff_t(i));
}

void DiskCache::evict(uint64_t incoming) {
  uint64_t total = incoming;
  for (const Item& it : items_) total += it.size;
  while (total > max_bytes_ && !items_.empty()) {
    size_t oldest = 0;
    for (size_t i = 1; i < items_.size(); ++i)
      if (items_[i].used < items_[oldest].used) oldest = i;
    total -= items_[oldest].size;
    remove_item(oldest);
  }
}

}  // namespace whale::serve
