#include "formats/tokenizer.h"

#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <sstream>
#include <stdexcept>
#include <unordered_map>

#include "formats/ecma_regex.h"
#include "formats/gguf.h"

namespace whale {
namespace {

using json = nlohmann::json;

// ------------------------------------------------------------------------------------------------
// UTF-8 helpers
// ------------------------------------------------------------------------------------------------

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Decodes the code point of valid UTF-8 starting at s[i] and advances i past it.
uint32_t next_code_point(std::string_view s, size_t& i) {
  const auto b = static_cast<uint8_t>(s[i]);
  const int n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
  uint32_t cp = n == 1 ? b : b & (0x7F >> n);
  for (int k = 1; k < n && i + k < s.size(); ++k) cp = (cp << 6) | (s[i + k] & 0x3F);
  i += n;
  return cp;
}

// Start of the code point that ends at s[end-1] (s is valid UTF-8, end > 0).
size_t prev_code_point_start(std::string_view s, size_t end) {
  size_t i = end - 1;
  while (i > 0 && (static_cast<uint8_t>(s[i]) & 0xC0) == 0x80) --i;
  return i;
}

// ECMAScript WhiteSpace + LineTerminator: what JS's trim() and trimEnd() treat as space.
bool is_ecma_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || cp == 0x20 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

std::string_view trim_start(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    if (!is_ecma_space(next_code_point(s, j))) break;
    i = j;
  }
  return s.substr(i);
}

std::string_view trim_end(std::string_view s) {
  size_t end = s.size();
  while (end > 0) {
    size_t start = prev_code_point_start(s, end), j = start;
    if (!is_ecma_space(next_code_point(s, j))) break;
    end = start;
  }
  return s.substr(0, end);
}

// ------------------------------------------------------------------------------------------------
// GPT-2 byte <-> unicode mapping: printable Latin-1 bytes map to themselves, the 68 others
// (controls, space, 0x7F-0xA0, 0xAD) to U+0100.. in byte order, so every byte is a visible char.
// ------------------------------------------------------------------------------------------------

std::array<uint32_t, 256> make_byte_to_unicode() {
  std::array<uint32_t, 256> map{};
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
    map[b] = printable ? b : next++;
  }
  return map;
}

const std::array<uint32_t, 256> kByteToUnicode = make_byte_to_unicode();

// Byte-level token string (as in tokenizer.json) to raw bytes. A string with a char outside the
// mapping (e.g. "<｜begin▁of▁sentence｜>" in DeepSeek's vocab) stays as it is, like HF's decoder.
std::string byte_level_to_bytes(std::string_view s) {
  static const auto inverse = [] {
    std::unordered_map<uint32_t, char> m;
    for (int b = 0; b < 256; ++b) m[kByteToUnicode[b]] = static_cast<char>(b);
    return m;
  }();
  std::string out;
  for (size_t i = 0; i < s.size();) {
    auto it = inverse.find(next_code_point(s, i));
    if (it == inverse.end()) return std::string(s);
    out += it->second;
  }
  return out;
}

std::string unicode_of_byte(uint8_t b) {
  std::string s;
  append_utf8(kByteToUnicode[b], s);
  return s;
}

enum class SplitBehavior { kRemoved, kIsolated, kMergedWithPrevious, kMergedWithNext, kContiguous };

struct SplitStep {
  std::unique_ptr<Regex> regex;
  SplitBehavior behavior;
};

struct Piece {
  size_t begin, end;
  bool is_match;
};

// Applies one Split pre-tokenizer to `s`, appending the resulting ranges (offsets into `s`, plus
// `base`) to `out`. Behaviours follow HF tokenizers (SplitDelimiterBehavior).
void split_pieces(const SplitStep& step, pcre2_match_data* md, std::string_view s, size_t base,
                  std::vector<std::pair<size_t, size_t>>& out) {
  std::vector<Piece> parts;
  size_t prev = 0;
  step.regex->for_each_match(s, md, [&](size_t b, size_t e) {
    if (prev < b) parts.push_back({prev, b, false});
    if (e > b) parts.push_back({b, e, true});
    prev = e;
  });
  if (prev < s.size()) parts.push_back({prev, s.size(), false});

  std::vector<Piece> merged;
  bool last_absorbed_match = false;  // MergedWithPrevious: the last gap already took a match
  for (size_t i = 0; i < parts.size(); ++i) {
    const Piece& p = parts[i];
    switch (step.behavior) {
      case SplitBehavior::kRemoved:
        if (!p.is_match) merged.push_back(p);
        break;
      case SplitBehavior::kIsolated:
        merged.push_back(p);
        break;
      case SplitBehavior::kMergedWithPrevious:
        if (p.is_match && !merged.empty() && !merged.back().is_match && !last_absorbed_match) {
          merged.back().end = p.end;
          last_absorbed_match = true;
        } else {
          merged.push_back(p);
          last_absorbed_match = false;
        }
        break;
      case SplitBehavior::kMergedWithNext:
        if (!p.is_match && !merged.empty() && merged.back().is_match) {
          merged.back() = {merged.back().begin, p.end, false};
        } else {
          merged.push_back(p);
        }
        break;
      case SplitBehavior::kContiguous:
        if (p.is_match && !merged.empty() && merged.back().is_match) {
          merged.back().end = p.end;
        } else {
          merged.push_back(p);
        }
        break;
    }
  }
  for (const Piece& p : merged) out.emplace_back(base + p.begin, base + p.end);
}

// ------------------------------------------------------------------------------------------------
// JSON helpers
// ------------------------------------------------------------------------------------------------

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open file");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

json parse_json_file(const std::string& path) {
  const std::string text = read_file(path);
  try {
    return json::parse(text);
  } catch (const json::exception& e) {
    throw std::runtime_error(path + ": invalid JSON: " + e.what());
  }
}

// A token in tokenizer_config.json: a string, {"content": ...} object, or null.
std::string config_token(const json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content")) return it->at("content").get<std::string>();
  throw std::runtime_error(std::string("\"") + key +
                           "\" is neither a string nor {\"content\": ...}");
}

struct Hash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringMap = std::unordered_map<std::string, int32_t, Hash, std::equal_to<>>;

}  // namespace

// ------------------------------------------------------------------------------------------------
// Utf8Decoder (WHATWG Encoding Standard, "UTF-8 decoder")
// ------------------------------------------------------------------------------------------------

void Utf8Decoder::reset() {
  code_point_ = 0;
  bytes_needed_ = bytes_seen_ = 0;
  lower_ = 0x80;
  upper_ = 0xBF;
}

void Utf8Decoder::feed(std::string_view bytes, std::string& out) {
  static constexpr uint32_t kReplacement = 0xFFFD;
  for (size_t i = 0; i < bytes.size();) {
    const auto b = static_cast<uint8_t>(bytes[i]);
    if (bytes_needed_ == 0) {
      ++i;
      if (b < 0x80) {
        out += static_cast<char>(b);
      } else if (b >= 0xC2 && b <= 0xDF) {
        bytes_needed_ = 1;
        code_point_ = b & 0x1F;
      } else if (b >= 0xE0 && b <= 0xEF) {
        if (b == 0xE0) lower_ = 0xA0;  // no overlong forms
        if (b == 0xED) upper_ = 0x9F;  // no surrogates
        bytes_needed_ = 2;
        code_point_ = b & 0x0F;
      } else if (b >= 0xF0 && b <= 0xF4) {
        if (b == 0xF0) lower_ = 0x90;  // no overlong forms
        if (b == 0xF4) upper_ = 0x8F;  // nothing above U+10FFFF
        bytes_needed_ = 3;
        code_point_ = b & 0x07;
      } else {
        append_utf8(kReplacement, out);
      }
      continue;
    }
    if (b < lower_ || b > upper_) {
      // The sequence so far is one maximal invalid subpart; `b` is looked at again as a new start.
      reset();
      append_utf8(kReplacement, out);
      continue;
    }
    ++i;
    lower_ = 0x80;
    upper_ = 0xBF;
    code_point_ = (code_point_ << 6) | (b & 0x3F);
    if (++bytes_seen_ == bytes_needed_) {
      append_utf8(code_point_, out);
      reset();
    }
  }
}

void Utf8Decoder::finish(std::string& out) {
  if (bytes_needed_ != 0) append_utf8(0xFFFD, out);
  reset();
}

std::string utf8_sanitize(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  Utf8Decoder d;
  d.feed(bytes, out);
  d.finish(out);
  return out;
}

// ------------------------------------------------------------------------------------------------
// Tokenizer::Impl
// ------------------------------------------------------------------------------------------------

struct AddedToken {
  std::string content;
  int32_t id = -1;
  bool special = false, lstrip = false, rstrip = false;
};

struct Tokenizer::Impl {
  // Model.
  std::vector<std::string> token_bytes;  // id -> raw bytes ("" for holes)
  std::vector<uint8_t> token_kind;       // id -> 0 none, 1 vocab, 2 added, 3 added special
  StringMap bytes_to_id;                 // raw bytes -> vocab id
  std::array<int32_t, 256> byte_id{};    // single-byte token ids
  struct Merge {
    int32_t rank, id;
  };
  std::unordered_map<uint64_t, Merge> merges;  // (left id << 32 | right id) -> merge
  bool ignore_merges = false;

  // Added tokens and a byte trie over their contents for longest-match splitting.
  std::vector<AddedToken> added;
  StringMap added_to_index;
  struct TrieNode {
    std::vector<std::pair<uint8_t, int32_t>> next;
    int32_t token = -1;  // index into `added`
  };
  std::vector<TrieNode> trie{1};
  std::array<bool, 256> trie_first{};

  bool nfc = false;  // normalizer: NFC on the text between added tokens

  // Pre-tokenizer: Split steps, then ByteLevel.
  std::vector<SplitStep> splits;
  bool prefix_space = false;
  std::unique_ptr<Regex> byte_level_regex;  // null when use_regex is false

  // Config.
  int32_t bos = -1, eos = -1;
  std::string bos_text, eos_text, chat_template;
  bool add_bos = false, clean_up_spaces = true;

  // BPE cache per pre-token word (words up to kMaxCachedWord bytes).
  static constexpr size_t kMaxCachedWord = 256, kMaxCacheEntries = 1 << 18;
  mutable std::mutex cache_mu;
  mutable std::unordered_map<std::string, std::vector<int32_t>, Hash, std::equal_to<>> cache;

  void load_model(const json& model);
  void load_added_tokens(const json& tokens);
  void load_pre_tokenizer(const json& pre);
  void load_config(const json& config);
  void add_pre_tokenizer(const json& pre, bool& saw_byte_level);
  void set_token(int32_t id, std::string bytes, uint8_t kind);

  std::pair<int32_t, size_t> match_added(std::string_view text, size_t pos) const;
  void encode_section(std::string_view text, std::vector<int32_t>& out) const;
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
  void merge_word(std::string_view word, std::vector<int32_t>& out) const;
};

void Tokenizer::Impl::set_token(int32_t id, std::string bytes, uint8_t kind) {
  if (id < 0) throw std::runtime_error("negative token id " + std::to_string(id));
  if (static_cast<size_t>(id) >= token_bytes.size()) {
    token_bytes.resize(id + 1);
    token_kind.resize(id + 1, 0);
  }
  token_bytes[id] = std::move(bytes);
  token_kind[id] = kind;
}

void Tokenizer::Impl::load_model(const json& model) {
  const std::string type = model.value("type", "BPE");
  if (type != "BPE") throw std::runtime_error("unsupported model type \"" + type + "\"");
  if (model.value("byte_fallback", false))
    throw std::runtime_error("byte_fallback BPE is not supported (only byte-level BPE)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    auto it = model.find(key);
    if (it != model.end() && !it->is_null() && !it->get<std::string>().empty())
      throw std::runtime_error(std::string("model.") + key + " is not supported");
  }
  auto dropout = model.find("dropout");
  if (dropout != model.end() && !dropout->is_null() && dropout->get<double>() > 0)
    throw std::runtime_error("BPE dropout is not supported");
  ignore_merges = model.value("ignore_merges", false);

  if (!model.contains("vocab") || !model["vocab"].is_object())
    throw std::runtime_error("model.vocab is missing or not an object");
  if (!model.contains("merges") || !model["merges"].is_array())
    throw std::runtime_error("model.merges is missing or not an array");

  // Vocab: byte-level strings -> ids, stored as raw bytes. level_to_id views the JSON's keys.
  const json& vocab = model["vocab"];
  std::unordered_map<std::string_view, int32_t> level_to_id(vocab.size());
  bytes_to_id.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    const auto id = it.value().get<int32_t>();
    level_to_id.emplace(it.key(), id);
    std::string bytes = byte_level_to_bytes(it.key());
    bytes_to_id.emplace(bytes, id);
    set_token(id, std::move(bytes), 1);
  }
  for (int b = 0; b < 256; ++b) {
    auto it = level_to_id.find(unicode_of_byte(static_cast<uint8_t>(b)));
    if (it == level_to_id.end())
      throw std::runtime_error("model.vocab has no token for byte " + std::to_string(b) +
                               " (not a byte-level BPE vocabulary)");
    byte_id[b] = it->second;
  }

  // Merges: "left right" strings (older files) or ["left", "right"] pairs; rank = position.
  const json& list = model["merges"];
  merges.reserve(list.size());
  std::string joined;
  for (size_t rank = 0; rank < list.size(); ++rank) {
    const json& m = list[rank];
    std::string_view left, right;
    if (m.is_string()) {
      const std::string_view s = m.get_ref<const std::string&>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || s.find(' ', sp + 1) != std::string::npos)
        throw std::runtime_error("bad merge #" + std::to_string(rank) + " \"" + std::string(s) +
                                 "\": expected \"left right\"");
      left = s.substr(0, sp);
      right = s.substr(sp + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get_ref<const std::string&>();
      right = m[1].get_ref<const std::string&>();
    } else {
      throw std::runtime_error("bad merge #" + std::to_string(rank) + ": " + m.dump());
    }
    joined.assign(left).append(right);
    auto l = level_to_id.find(left), r = level_to_id.find(right), lr = level_to_id.find(joined);
    if (l == level_to_id.end() || r == level_to_id.end() || lr == level_to_id.end())
      throw std::runtime_error("bad merge #" + std::to_string(rank) + " \"" + std::string(left) +
                               " " + std::string(right) + "\": token not in vocab");
    const uint64_t key =
        (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
    merges.emplace(key, Merge{static_cast<int32_t>(rank), lr->second});  // first rank wins
  }
}

void Tokenizer::Impl::load_added_tokens(const json& tokens) {
  if (tokens.is_null()) return;
  if (!tokens.is_array()) throw std::runtime_error("added_tokens is not an array");
  for (const json& t : tokens) {
    AddedToken a;
    a.content = t.at("content").get<std::string>();
    a.id = t.at("id").get<int32_t>();
    a.special = t.value("special", false);
    a.lstrip = t.value("lstrip", false);
    a.rstrip = t.value("rstrip", false);
    // single_word and normalized are not applied: the JS reference ignores them too, and with an
    // identity normalizer `normalized` makes no difference.
    if (a.content.empty()) throw std::runtime_error("added token with empty content");
    set_token(a.id, a.content, a.special ? 3 : 2);
    auto [it, inserted] = added_to_index.emplace(a.content, static_cast<int32_t>(added.size()));
    if (!inserted) {
      added[it->second] = a;  // a later duplicate overrides the earlier one
      continue;
    }
    // Insert into the trie.
    int32_t node = 0;
    for (unsigned char c : a.content) {
      auto& next = trie[node].next;
      auto found = std::find_if(next.begin(), next.end(), [&](auto& e) { return e.first == c; });
      if (found != next.end()) {
        node = found->second;
      } else {
        const auto child = static_cast<int32_t>(trie.size());
        next.emplace_back(c, child);
        trie.emplace_back();
        node = child;
      }
    }
    trie[node].token = it->second;
    trie_first[static_cast<unsigned char>(a.content[0])] = true;
    added.push_back(std::move(a));
  }
}

void Tokenizer::Impl::add_pre_tokenizer(const json& pre, bool& saw_byte_level) {
  const std::string type = pre.at("type").get<std::string>();
  if (saw_byte_level)
    throw std::runtime_error("pre_tokenizer: \"" + type + "\" after ByteLevel is not supported");
  if (type == "Sequence") {
    for (const json& p : pre.at("pretokenizers")) add_pre_tokenizer(p, saw_byte_level);
  } else if (type == "Split") {
    if (pre.value("invert", false))
      throw std::runtime_error("pre_tokenizer: Split with invert=true is not supported");
    const json& pattern = pre.at("pattern");
    SplitStep step;
    if (pattern.contains("Regex")) {
      step.regex = std::make_unique<Regex>(pattern["Regex"].get<std::string>(), false);
    } else if (pattern.contains("String")) {
      step.regex = std::make_unique<Regex>(pattern["String"].get<std::string>(), true);
    } else {
      throw std::runtime_error("pre_tokenizer: Split pattern is neither Regex nor String");
    }
    static const std::unordered_map<std::string, SplitBehavior> kBehaviors = {
        {"Removed", SplitBehavior::kRemoved},
        {"Isolated", SplitBehavior::kIsolated},
        {"MergedWithPrevious", SplitBehavior::kMergedWithPrevious},
        {"MergedWithNext", SplitBehavior::kMergedWithNext},
        {"Contiguous", SplitBehavior::kContiguous}};
    const std::string behavior = pre.at("behavior").get<std::string>();
    auto b = kBehaviors.find(behavior);
    if (b == kBehaviors.end())
      throw std::runtime_error("pre_tokenizer: unknown Split behavior \"" + behavior + "\"");
    step.behavior = b->second;
    splits.push_back(std::move(step));
  } else if (type == "ByteLevel") {
    saw_byte_level = true;
    // Defaults as in the JS reference: a missing add_prefix_space is false, use_regex is true.
    prefix_space = pre.value("add_prefix_space", false);
    if (pre.value("use_regex", true)) {
      byte_level_regex = std::make_unique<Regex>(
          "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
          false);
    }
  } else {
    throw std::runtime_error("unsupported pre_tokenizer type \"" + type + "\"");
  }
}

void Tokenizer::Impl::load_pre_tokenizer(const json& pre) {
  bool saw_byte_level = false;
  if (!pre.is_null()) add_pre_tokenizer(pre, saw_byte_level);
  if (!saw_byte_level)
    throw std::runtime_error(
        "pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)");
}

// Normalizers: the identity (null, empty Sequences) and NFC (Qwen2.5's, hence the R1-Distill-Qwen
// models'). Returns whether NFC applies.
bool load_normalizer(const json& n) {
  if (n.is_null()) return false;
  const std::string type = n.at("type").get<std::string>();
  if (type == "NFC") return true;
  if (type != "Sequence") throw std::runtime_error("unsupported normalizer type \"" + type + "\"");
  bool nfc = false;
  for (const json& child : n.at("normalizers")) nfc = load_normalizer(child) || nfc;
  return nfc;
}

// Unicode canonical composition (NFC) of valid UTF-8, by utf8proc; ASCII is its own NFC.
std::string nfc(std::string_view text) {
  bool ascii = true;
  for (char c : text) ascii = ascii && static_cast<unsigned char>(c) < 0x80;
  if (ascii) return std::string(text);
  utf8proc_uint8_t* out = nullptr;
  const utf8proc_ssize_t n = utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                                          utf8proc_ssize_t(text.size()), &out,
                                          utf8proc_option_t(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
  if (n < 0) return std::string(text);  // not UTF-8: encode() sanitized it, so never here
  std::string result(reinterpret_cast<const char*>(out), size_t(n));
  std::free(out);
  return result;
}

void check_decoder(const json& d) {
  if (d.is_null()) return;
  const std::string type = d.at("type").get<std::string>();
  if (type == "Sequence") {
    for (const json& child : d.at("decoders")) check_decoder(child);
  } else if (type != "ByteLevel") {
    throw std::runtime_error("unsupported decoder type \"" + type + "\"");
  }
}

void Tokenizer::Impl::load_config(const json& config) {
  add_bos = config.value("add_bos_token", false);
  clean_up_spaces = config.value("clean_up_tokenization_spaces", true);
  bos_text = config_token(config, "bos_token");
  eos_text = config_token(config, "eos_token");
  auto id_of = [&](const std::string& text, const char* what) -> int32_t {
    if (text.empty()) return -1;
    if (auto it = added_to_index.find(text); it != added_to_index.end())
      return added[it->second].id;
    if (auto it = bytes_to_id.find(text); it != bytes_to_id.end()) return it->second;
    throw std::runtime_error(std::string(what) + " \"" + text + "\" is not a token");
  };
  bos = id_of(bos_text, "bos_token");
  eos = id_of(eos_text, "eos_token");
  if (auto it = config.find("chat_template"); it != config.end()) {
    if (it->is_string()) {
      chat_template = it->get<std::string>();
    } else if (it->is_array()) {  // [{"name": ..., "template": ...}]: take "default", else first
      for (const json& t : *it) {
        if (chat_template.empty() || t.value("name", "") == "default")
          chat_template = t.at("template").get<std::string>();
      }
    }
  }
}

// Longest added token starting at text[pos]: (index into `added`, length) or (-1, 0).
std::pair<int32_t, size_t> Tokenizer::Impl::match_added(std::string_view text, size_t pos) const {
  std::pair<int32_t, size_t> best{-1, 0};
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const auto& next = trie[node].next;
    auto it = std::find_if(next.begin(), next.end(), [&](auto& e) { return e.first == c; });
    if (it == next.end()) break;
    node = it->second;
    if (trie[node].token >= 0) best = {trie[node].token, i + 1 - pos};
  }
  return best;
}

// BPE over the bytes of one pre-token word: repeatedly merge the adjacent pair with the lowest
// merge rank (leftmost first on ties) until no pair has a merge. A priority queue holds candidate
// pairs; entries made stale by earlier merges are recognised by their ids and skipped.
void Tokenizer::Impl::merge_word(std::string_view word, std::vector<int32_t>& out) const {
  struct Symbol {
    int32_t id, prev, next;  // id -1: merged into its left neighbour
  };
  struct Candidate {
    int32_t rank, pos, left, right, merged;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  const auto n = static_cast<int32_t>(word.size());
  std::vector<Symbol> sym(n);
  for (int32_t i = 0; i < n; ++i)
    sym[i] = {byte_id[static_cast<uint8_t>(word[i])], i - 1, i + 1 < n ? i + 1 : -1};

  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t pos) {
    const int32_t next = sym[pos].next;
    if (next < 0) return;
    const uint64_t key =
        (static_cast<uint64_t>(sym[pos].id) << 32) | static_cast<uint32_t>(sym[next].id);
    auto it = merges.find(key);
    if (it != merges.end())
      queue.push({it->second.rank, pos, sym[pos].id, sym[next].id, it->second.id});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);

  while (!queue.empty()) {
    const Candidate c = queue.top();
    queue.pop();
    Symbol& left = sym[c.pos];
    if (left.id != c.left || left.next < 0 || sym[left.next].id != c.right) continue;  // stale
    const int32_t right = left.next;
    left.id = c.merged;
    left.next = sym[right].next;
    if (left.next >= 0) sym[left.next].prev = c.pos;
    sym[right].id = -1;
    if (left.prev >= 0) consider(left.prev);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out.push_back(sym[i].id);
}

void Tokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (word.size() == 1) {
    out.push_back(byte_id[static_cast<uint8_t>(word[0])]);
    return;
  }
  if (ignore_merges) {
    if (auto it = bytes_to_id.find(word); it != bytes_to_id.end()) {
      out.push_back(it->second);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu);
    if (auto it = cache.find(word); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = out.size();
  merge_word(word, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_mu);
    if (cache.size() >= kMaxCacheEntries) cache.clear();
    cache.emplace(std::string(word), std::vector<int32_t>(out.begin() + start, out.end()));
  }
}

// Pre-tokenizes one section of text (no added tokens in it) and appends its BPE ids.
void Tokenizer::Impl::encode_section(std::string_view text, std::vector<int32_t>& out) const {
  // Split steps: each one re-splits every piece of the previous one.
  std::vector<std::pair<size_t, size_t>> pieces{{0, text.size()}}, next;
  for (const SplitStep& step : splits) {
    Regex::MatchData md = step.regex->match_data();
    next.clear();
    for (auto [b, e] : pieces) split_pieces(step, md.get(), text.substr(b, e - b), b, next);
    pieces.swap(next);
  }
  // ByteLevel: optional prefix space, optional GPT-2 regex (keeping only matches), then BPE. The
  // byte-to-unicode mapping itself is implicit: BPE works on raw bytes.
  Regex::MatchData md = byte_level_regex ? byte_level_regex->match_data() : nullptr;
  std::string buffer;
  for (auto [b, e] : pieces) {
    std::string_view piece = text.substr(b, e - b);
    if (prefix_space && piece.front() != ' ') {
      buffer.clear();
      buffer.reserve(piece.size() + 1);
      buffer.push_back(' ');
      buffer.append(piece.data(), piece.size());
      piece = buffer;
    }
    if (!byte_level_regex) {
      bpe(piece, out);
      continue;
    }
    byte_level_regex->for_each_match(
        piece, md.get(), [&](size_t mb, size_t me) { bpe(piece.substr(mb, me - mb), out); });
  }
}

// ------------------------------------------------------------------------------------------------
// Tokenizer
// ------------------------------------------------------------------------------------------------

Tokenizer Tokenizer::load(const std::string& dir) {
  if (is_gguf_path(dir)) return from_gguf(dir);
  const std::string path = dir + "/tokenizer.json";
  const json tok = parse_json_file(path);
  const std::string config_path = dir + "/tokenizer_config.json";
  json config;
  if (std::ifstream(config_path).good()) config = parse_json_file(config_path);
  return from_json(tok, path, config, config_path);
}

Tokenizer Tokenizer::from_json(const json& tok, const std::string& origin, const json& config,
                               const std::string& config_origin) {
  auto impl = std::make_shared<Impl>();
  try {
    if (!tok.is_object()) throw std::runtime_error("top level is not an object");
    if (!tok.contains("model")) throw std::runtime_error("missing \"model\"");
    impl->load_model(tok["model"]);
    impl->load_added_tokens(tok.value("added_tokens", json()));
    impl->nfc = load_normalizer(tok.value("normalizer", json()));
    impl->load_pre_tokenizer(tok.value("pre_tokenizer", json()));
    check_decoder(tok.value("decoder", json()));
  } catch (const std::exception& e) {
    throw std::runtime_error(origin + ": " + e.what());
  }
  if (!config.is_null()) {
    try {
      if (!config.is_object()) throw std::runtime_error("top level is not an object");
      impl->load_config(config);
    } catch (const std::exception& e) {
      throw std::runtime_error(config_origin + ": " + e.what());
    }
  }
  return Tokenizer(std::move(impl));
}

std::vector<int32_t> Tokenizer::encode(std::string_view raw, bool add_bos) const {
  const Impl& m = *impl_;
  const std::string text = utf8_sanitize(raw);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 2);
  if (add_bos && m.bos >= 0) ids.push_back(m.bos);

  // Cut out added tokens (longest match, left to right); strip around lstrip/rstrip ones.
  struct Section {
    std::string_view text;
    int32_t added = -1;
  };
  std::vector<Section> sections;
  const std::string_view all(text);
  size_t start = 0;
  for (size_t i = 0; i < all.size();) {
    if (!m.trie_first[static_cast<unsigned char>(all[i])]) {
      ++i;
      continue;
    }
    auto [index, len] = m.match_added(all, i);
    if (index < 0) {
      ++i;
      continue;
    }
    if (i > start) sections.push_back({all.substr(start, i - start)});
    sections.push_back({all.substr(i, len), index});
    i += len;
    start = i;
  }
  if (start < all.size()) sections.push_back({all.substr(start)});
  for (size_t i = 0; i < sections.size(); ++i) {
    if (sections[i].added < 0) continue;
    const AddedToken& a = m.added[sections[i].added];
    if (a.lstrip && i > 0 && sections[i - 1].added < 0)
      sections[i - 1].text = trim_end(sections[i - 1].text);
    if (a.rstrip && i + 1 < sections.size() && sections[i + 1].added < 0)
      sections[i + 1].text = trim_start(sections[i + 1].text);
  }

  for (const Section& s : sections) {
    if (s.added >= 0)
      ids.push_back(m.added[s.added].id);
    else if (!s.text.empty() && m.nfc)
      m.encode_section(nfc(s.text), ids);
    else if (!s.text.empty())
      m.encode_section(s.text, ids);
  }
  return ids;
}

namespace {

// transformers' clean_up_tokenization: drops the space before some punctuation and contractions.
std::string clean_up_tokenization(std::string s) {
  static const std::pair<std::string_view, std::string_view> kRules[] = {
      {" .", "."},     {" ?", "?"},   {" !", "!"},   {" ,", ","},     {" ' ", "'"},
      {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
  for (auto [from, to] : kRules) {
    std::string out;
    size_t pos = 0;
    for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size()) {
      out.append(s, pos, hit - pos);
      out += to;
    }
    out.append(s, pos);
    s = std::move(out);
  }
  return s;
}

}  // namespace

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::string out;
  Utf8Decoder utf8;
  for (int32_t id : ids) {
    if (id < 0 || static_cast<size_t>(id) >= m.token_kind.size()) continue;
    const uint8_t kind = m.token_kind[id];
    if (kind == 0 || (skip_special && kind == 3)) continue;
    if (kind == 1) {
      utf8.feed(m.token_bytes[id], out);
    } else {  // added tokens are decoded on their own, as in the reference
      utf8.finish(out);
      out += m.token_bytes[id];
    }
  }
  utf8.finish(out);
  return m.clean_up_spaces ? clean_up_tokenization(std::move(out)) : out;
}

std::string Tokenizer::token_text(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= impl_->token_kind.size() || impl_->token_kind[id] == 0)
    throw std::out_of_range("token id " + std::to_string(id) + " has no token");
  return impl_->token_bytes[id];
}

std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  if (auto it = impl_->added_to_index.find(token); it != impl_->added_to_index.end())
    return impl_->added[it->second].id;
  if (auto it = impl_->bytes_to_id.find(token); it != impl_->bytes_to_id.end()) return it->second;
  return std::nullopt;
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->token_kind.size() &&
         impl_->token_kind[id] == 3;
}

bool Tokenizer::is_added(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->token_kind.size() &&
         impl_->token_kind[id] >= 2;
}

int32_t Tokenizer::bos_id() const {
  return impl_->bos;
}
int32_t Tokenizer::eos_id() const {
  return impl_->eos;
}
bool Tokenizer::add_bos() const {
  return impl_->add_bos;
}
size_t Tokenizer::vocab_size() const {
  return impl_->token_kind.size();
}
const std::string& Tokenizer::chat_template() const {
  return impl_->chat_template;
}
const std::string& Tokenizer::bos_token() const {
  return impl_->bos_text;
}
const std::string& Tokenizer::eos_token() const {
  return impl_->eos_text;
}

// ------------------------------------------------------------------------------------------------
// StreamDecoder
// ------------------------------------------------------------------------------------------------

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer, bool skip_special)
    : impl_(tokenizer.impl_), skip_special_(skip_special) {}

std::string StreamDecoder::push(int32_t id) {
  std::string out;
  const Tokenizer::Impl& m = *impl_;
  if (id < 0 || static_cast<size_t>(id) >= m.token_kind.size()) return out;
  const uint8_t kind = m.token_kind[id];
  if (kind == 0 || (skip_special_ && kind == 3)) return out;
  if (kind == 1) {
    utf8_.feed(m.token_bytes[id], out);
  } else {
    utf8_.finish(out);
    out += m.token_bytes[id];
  }
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  utf8_.finish(out);
  return out;
}

}  // namespace whale
