// The context cache on disk (`whale serve --cache-dir DIR --cache-disk-gb N`): prompt prefixes and
// their KV (for MLA the compressed latent: small) kept across restarts, as DeepSeek's API does.
//
// One file per entry, DIR/<hash>.kv:
//   "WHALEKV1" | u64 model key | u64 n_tokens | u64 kv_bytes | i32 tokens[n] | kv bytes | u32 crc32
// (little-endian; the CRC covers everything before it). The model key (EngineOptions::cache_key)
// names the model, its weights files and the KV type, so that another model's entries are
// foreign. Files are written to DIR/<hash>.kv.tmp.<pid> on a writer thread and renamed into place,
// so a server killed mid-write leaves at most a .tmp file (removed at the next start).
//
// At start the directory is scanned (headers and tokens only): temporary files, foreign entries
// and files whose size does not match their header are removed. An entry's CRC is checked when it
// is loaded; a damaged one is removed and never served. LRU by file modification time (a load
// touches it); writing beyond the byte budget removes the least recently used entries.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

namespace whale::serve {

// A prefix and its KV: per layer the latent rows [n] then the rope-key rows [n] (the cache's
// stored type), as the engine's prompt store holds them.
struct KvEntry {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> kv;
  // An entry read from disk keeps its KV in a read-only mapping of its file instead (kv empty):
  // no buffer to allocate and fill, which on a VM costs more than reading the file.
  std::shared_ptr<const void> mapping;
  std::span<const uint8_t> mapped;
  std::span<const uint8_t> kv_bytes() const { return kv.empty() ? mapped : std::span(kv); }
};

class DiskCache {
 public:
  // Creates DIR if needed and scans it. Throws std::runtime_error when DIR cannot be used.
  DiskCache(std::string dir, uint64_t max_bytes, uint64_t model_key);
  ~DiskCache();  // finishes the queued writes
  DiskCache(const DiskCache&) = delete;
  DiskCache& operator=(const DiskCache&) = delete;

  // The entry sharing the longest prefix with `prompt`: (index, length); length 0 when none.
  std::pair<size_t, size_t> find(std::span<const int32_t> prompt) const;
  // Reads entry `index` (from find); nullopt, and the file removed, when it is damaged.
  std::optional<KvEntry> load(size_t index);
  // Whether an entry already holds `tokens` (as itself or a prefix).
  bool covers(std::span<const int32_t> tokens) const;
  // Queues `e` for writing; entries it extends are replaced. Entries over the budget are dropped.
  void save(KvEntry e);
  // Blocks until the queued writes are done (tests).
  void flush();

  size_t entries() const;
  uint64_t bytes() const;
  int64_t damaged() const { return damaged_; }  // entries found damaged and removed

  static uint64_t file_bytes(size_t n_tokens, size_t kv_bytes);

 private:
  struct Item {
    std::string file;  // name inside dir_
    std::vector<int32_t> tokens;
    uint64_t size = 0;
    int64_t used = 0;  // modification time, seconds (LRU)
  };
  void scan();
  void writer();
  void write(const KvEntry& e);
  void remove_item(size_t i);
  void evict(uint64_t incoming);

  std::string dir_;
  uint64_t max_bytes_, key_;
  mutable std::mutex mu_;  // guards items_, queue_, stop_, busy_
  std::condition_variable cv_;
  std::vector<Item> items_;
  std::deque<KvEntry> queue_;
  bool stop_ = false, busy_ = false;
  int64_t damaged_ = 0;
  std::thread thread_;
};

}  // namespace whale::serve
