// `whale tokenizer train` (src/train/bpe_trainer.h): BPE merges against hand-computed sequences,
// the written files against whale's Tokenizer and the independent JS reference tokenizer
// (tests/reference/encode_with_js.mjs), determinism and clear errors.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "formats/tokenizer.h"
#include "test_util.h"
#include "train/bpe_trainer.h"

namespace whale {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using whale::testing::kRoot;
using whale::testing::kTokenizerDir;

std::string read_file(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_file(const fs::path& p, const std::string& text) {
  std::ofstream(p, std::ios::binary) << text;
}

// A fresh directory under the system temp dir, removed at the end of the test.
class TempDir {
 public:
  explicit TempDir(const std::string& name)
      : path_(fs::temp_directory_path() /
              ("whale_bpe_" + name + "_" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }
  std::string str(const std::string& sub = "") const { return (path_ / sub).string(); }

 private:
  fs::path path_;
};

// A small template directory holding only what training reads from DeepSeek-V3's files (the real
// tokenizer.json is 8 MB; parsing it in every test would be slow).
const std::string& template_dir() {
  static const std::string dir = [] {
    const fs::path d =
        fs::temp_directory_path() / ("whale_bpe_template_" + std::to_string(::getpid()));
    fs::create_directories(d);
    const json tok = json::parse(read_file(kTokenizerDir + "/tokenizer.json"));
    const json cfg = json::parse(read_file(kTokenizerDir + "/tokenizer_config.json"));
    json small_tok = {{"pre_tokenizer", tok["pre_tokenizer"]},
                      {"post_processor", tok["post_processor"]},
                      {"decoder", tok["decoder"]}};
    json small_cfg = {{"chat_template", cfg["chat_template"]},
                      {"model_max_length", cfg["model_max_length"]}};
    write_file(d / "tokenizer.json", small_tok.dump());
    write_file(d / "tokenizer_config.json", small_cfg.dump());
    std::atexit([] {
      fs::remove_all(fs::temp_directory_path() /
                     ("whale_bpe_template_" + std::to_string(::getpid())));
    });
    return d.string();
  }();
  return dir;
}

BpeTrainOptions options_for(const std::string& out, size_t vocab, uint64_t min_frequency = 1) {
  BpeTrainOptions o;
  o.out_dir = out;
  o.vocab_size = vocab;
  o.min_frequency = min_frequency;
  o.template_dir = template_dir();
  o.progress = false;
  return o;
}

std::vector<std::string> merge_strings(const BpeMerges& m) {
  std::vector<std::string> out;
  for (const auto& [l, r] : m.merges) out.push_back(m.tokens[l] + " " + m.tokens[r]);
  return out;
}

// The classic example (Hugging Face course, BPE chapter). Pair counts, merge by merge:
//   h-u 15, u-g 20, p-u 17, u-n 16, b-u 4, g-s 5          -> "u g" (20)
//   h-ug 15, p-ug 5, p-u 12, u-n 16, b-u 4, ug-s 5        -> "u n" (16)
//   h-ug 15, p-ug 5, p-un 12, b-un 4, ug-s 5              -> "h ug" (15)
//   p-ug 5, p-un 12, b-un 4, hug-s 5                      -> "p un" (12)
//   p-ug 5, b-un 4, hug-s 5: tie at 5, "hug" < "p"        -> "hug s", then "p ug", then "b un"
const std::map<std::string, uint64_t> kHugCorpus = {
    {"hug", 10}, {"pug", 5}, {"pun", 12}, {"bun", 4}, {"hugs", 5}};

TEST(BpeTrainer, HandComputedMerges) {
  const BpeMerges m = train_bpe(kHugCorpus, 1000, 1);
  EXPECT_EQ(merge_strings(m),
            (std::vector<std::string>{"u g", "u n", "h ug", "p un", "hug s", "p ug", "b un"}));
  ASSERT_EQ(m.tokens.size(), 256u + 7);
  EXPECT_EQ(m.tokens[256], "ug");
  EXPECT_EQ(m.tokens[262], "bun");
  EXPECT_EQ(m.produces, (std::vector<int32_t>{256, 257, 258, 259, 260, 261, 262}));
}

TEST(BpeTrainer, StopsAtVocabSizeAndMinFrequency) {
  EXPECT_EQ(merge_strings(train_bpe(kHugCorpus, 256 + 3, 1)),
            (std::vector<std::string>{"u g", "u n", "h ug"}));
  // "b un" occurs 4 times: below min_frequency 5.
  EXPECT_EQ(merge_strings(train_bpe(kHugCorpus, 1000, 5)),
            (std::vector<std::string>{"u g", "u n", "h ug", "p un", "hug s", "p ug"}));
  EXPECT_TRUE(train_bpe(kHugCorpus, 256, 1).merges.empty());
}

TEST(BpeTrainer, RepeatedSymbolsMergeLeftToRight) {
  // "aaa" x2: a-a counted 4 times; merging left to right gives "aa a", then "aa a" -> "aaa".
  EXPECT_EQ(merge_strings(train_bpe({{"aaa", 2}}, 1000, 1)),
            (std::vector<std::string>{"a a", "aa a"}));
  // "aaaa": "aa aa" after the first merge.
  EXPECT_EQ(merge_strings(train_bpe({{"aaaa", 1}}, 1000, 1)),
            (std::vector<std::string>{"a a", "aa aa"}));
}

// Through the whole pipeline: DeepSeek's pre-tokenizer and the special tokens. Pre-tokens of
// "ab ab ab, 12345": "ab", " ab" x2, ",", " ", "123", "45" (digits in runs of at most 3). The
// special tokens are cut out of "<think>xy</think>", leaving "xy".
//   a-b 3                                -> "a b"
//   " "-ab 2                             -> "Ġ ab"   (space is Ġ in byte-level strings)
//   1-2, 2-3, 4-5, x-y at 1: "1" first    -> "1 2", then "12 3" ("12" < "4"), "4 5", "x y"
// Without the special tokens cut out, "<" ">" "/" pairs would come before "x y".
TEST(BpeTrainer, PipelineMergesFollowPreTokenizer) {
  TempDir out("pipeline");
  const std::vector<std::string> docs = {"ab ab ab, 12345", "<think>xy</think>"};
  const BpeTrainSummary s = train_bpe_tokenizer(docs, options_for(out.str(), kMinBpeVocab + 6));
  EXPECT_EQ(s.vocab_size, kMinBpeVocab + 6);
  EXPECT_EQ(s.merges, 6u);
  const json tok = json::parse(read_file(out.path() / "tokenizer.json"));
  EXPECT_EQ(tok["model"]["merges"], json({"a b", "Ġ ab", "1 2", "12 3", "4 5", "x y"}));
  // Ids: bos eos pad, the bytes, the merged tokens, then User Assistant <think> </think>.
  const json& vocab = tok["model"]["vocab"];
  EXPECT_EQ(vocab.size(), 3u + 256 + 6);
  EXPECT_EQ(vocab["<｜begin▁of▁sentence｜>"], 0);
  EXPECT_EQ(vocab["<｜▁pad▁｜>"], 2);
  EXPECT_EQ(vocab["Ā"], 3);  // byte 0x00
  EXPECT_EQ(vocab["A"], 3 + 0x41);
  EXPECT_EQ(vocab["Ġab"], 3 + 256 + 1);
  EXPECT_EQ(tok["added_tokens"][6]["content"], "</think>");
  EXPECT_EQ(tok["added_tokens"][6]["id"], kMinBpeVocab + 6 - 1);

  const Tokenizer t = Tokenizer::load(out.str());
  EXPECT_EQ(t.vocab_size(), kMinBpeVocab + 6);
  EXPECT_EQ(t.encode("ab ab12"), (std::vector<int32_t>{3 + 256, 3 + 256 + 1, 3 + 256 + 2}));
}

TEST(BpeTrainer, FilesFollowDeepSeekLayout) {
  TempDir out("layout");
  train_bpe_tokenizer({"hello world"}, options_for(out.str(), kMinBpeVocab + 3));
  const json tok = json::parse(read_file(out.path() / "tokenizer.json"));
  const json cfg = json::parse(read_file(out.path() / "tokenizer_config.json"));
  const json real_tok = json::parse(read_file(kTokenizerDir + "/tokenizer.json"));
  const json real_cfg = json::parse(read_file(kTokenizerDir + "/tokenizer_config.json"));

  EXPECT_EQ(tok["pre_tokenizer"], real_tok["pre_tokenizer"]);
  EXPECT_EQ(tok["decoder"], real_tok["decoder"]);
  EXPECT_TRUE(tok["normalizer"].is_null());
  EXPECT_EQ(tok["model"]["type"], "BPE");
  // Special tokens keep DeepSeek's strings and flags (<think> and </think> are R1's).
  for (const json& a : tok["added_tokens"]) {
    bool found = false;
    for (const json& r : real_tok["added_tokens"]) {
      if (r["content"] != a["content"]) continue;
      found = true;
      EXPECT_EQ(a["special"], r["special"]) << a["content"];
      EXPECT_EQ(a["normalized"], r["normalized"]) << a["content"];
    }
    EXPECT_TRUE(found || a["content"] == "<think>" || a["content"] == "</think>") << a["content"];
  }
  EXPECT_EQ(tok["added_tokens"].size(), kNumSpecialTokens);

  EXPECT_EQ(cfg["chat_template"], real_cfg["chat_template"]);
  EXPECT_EQ(cfg["add_bos_token"], true);
  EXPECT_EQ(cfg["bos_token"]["content"], "<｜begin▁of▁sentence｜>");
  EXPECT_EQ(cfg["eos_token"]["content"], "<｜end▁of▁sentence｜>");

  const Tokenizer t = Tokenizer::load(out.str());
  EXPECT_EQ(t.bos_id(), 0);
  EXPECT_EQ(t.eos_id(), 1);
  EXPECT_TRUE(t.add_bos());
  EXPECT_EQ(t.chat_template(), real_cfg["chat_template"].get<std::string>());
  EXPECT_TRUE(t.is_special(2));
  EXPECT_FALSE(t.is_special(*t.token_id("<｜User｜>")));
  EXPECT_EQ(t.encode("<think>"), (std::vector<int32_t>{int32_t(kMinBpeVocab + 3 - 2)}));
}

// A corpus with English, numbers, punctuation, code and several scripts, for a few hundred merges.
std::vector<std::string> mixed_corpus() {
  const std::vector<std::string> base = {
      "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
      "age of foolishness, it was the epoch of belief, it was the epoch of incredulity.",
      "The committee met on Tuesday, March 3rd, at 10:30 a.m. in Room 214. Revenue rose 12.5% to "
      "$4,302,117.08; costs fell by roughly one-third. \"We can't keep this up,\" she warned.",
      "def fib(n: int) -> int:\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n"
      "    return a\n\nprint([fib(i) for i in range(10)])  # 0 1 1 2 3 5 8\n",
      "Straße, café, naïve, Ωμέγα, Привет мир! 你好，世界。日本語のテキストです。カタカナ。한국어 "
      "텍스트. emoji 🐳🐋 and 👍🏽 — “quotes” «guillemets» …",
      "<｜User｜>What is 2+2?<｜Assistant｜><think>Two plus two.</think>4<｜end▁of▁sentence｜>",
      "Tabs\tand  double  spaces,\r\nWindows lines\r\n\n\nblank lines   \n trailing ",
  };
  std::vector<std::string> docs;
  for (int r = 0; r < 8; ++r)
    for (const std::string& b : base) docs.push_back(b + " " + std::to_string(r * 37));
  return docs;
}

// Texts unlike the corpus too: words it never saw, odd whitespace, lone combining marks.
const std::vector<std::string> kCheckTexts = {
    "Hello, world!",
    "It was the best of times.",
    "the age of wisdom and of foolishness",
    "1234567890",
    "3.14159 + 2.71828 = 5.85987",
    "$4,302,117.08 (12.5%)",
    "a.m. p.m. U.S.A.",
    "can't won't they're I'm",
    "def f(x):\n    return x * 2\n",
    "    indented\n\tand tabbed",
    "   ",
    "\n\n\n",
    "trailing space ",
    "Straße café naïve",
    "Ωμέγα Привет",
    "你好，世界",
    "日本語のテキスト",
    "한국어",
    "🐳 whale 🐋",
    "👍🏽👩‍👩‍👧",
    "e\u0301 combining",
    "“quotes” and «guillemets» …",
    "<｜User｜>hi<｜Assistant｜>",
    "<think>reasoning</think>answer",
    "<｜begin▁of▁sentence｜>text<｜end▁of▁sentence｜>",
    "<｜▁pad▁｜><｜▁pad▁｜>",
    "<thinking> is not <think",
    "x<｜User｜>y</think>z",
    "MiXeD CaSe WoRdS",
    "!!!???...,,,;;;",
    "a\r\nb\rc\u2028d",
    "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
};

// Runs the JS reference on `texts` with the tokenizer in `dir`.
json js_encode(const std::string& dir, const std::vector<std::string>& texts) {
  const fs::path in = fs::path(dir) / "texts.json";
  write_file(in, json(texts).dump());
  const std::string cmd =
      "node " + kRoot + "/tests/reference/encode_with_js.mjs " + dir + " " + in.string() + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return json();
  std::string out;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) out.append(buf.data(), n);
  const int status = pclose(p);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << cmd << "\n" << out;
  fs::remove(in);
  return json::parse(out, nullptr, false);
}

TEST(BpeTrainer, WhaleAndJsReferenceGiveSameIds) {
  TempDir out("js");
  const size_t vocab = 600;
  const BpeTrainSummary s = train_bpe_tokenizer(mixed_corpus(), options_for(out.str(), vocab));
  ASSERT_EQ(s.vocab_size, vocab);
  const Tokenizer t = Tokenizer::load(out.str());
  EXPECT_EQ(t.vocab_size(), vocab);

  const json ref = js_encode(out.str(), kCheckTexts);
  ASSERT_TRUE(ref.is_object() && ref["ids"].size() == kCheckTexts.size()) << ref.dump();
  size_t merged_somewhere = 0;
  for (size_t i = 0; i < kCheckTexts.size(); ++i) {
    const std::string& text = kCheckTexts[i];
    const std::vector<int32_t> ids = t.encode(text);
    EXPECT_EQ(ids, ref["ids"][i].get<std::vector<int32_t>>()) << text;
    EXPECT_EQ(t.decode(ids), text);
    EXPECT_EQ(ref["decoded"][i], text);
    for (int32_t id : ids) {
      EXPECT_GE(id, 0);
      EXPECT_LT(static_cast<size_t>(id), vocab);
    }
    if (ids.size() < text.size()) ++merged_somewhere;
  }
  EXPECT_GT(merged_somewhere, kCheckTexts.size() / 2);  // the merges are used, not just bytes
}

TEST(BpeTrainer, Deterministic) {
  TempDir a("det_a"), b("det_b");
  BpeTrainOptions oa = options_for(a.str(), 500), ob = options_for(b.str(), 500);
  oa.threads = 1;
  ob.threads = 2;
  std::vector<std::string> docs = mixed_corpus();
  train_bpe_tokenizer(docs, oa);
  std::reverse(docs.begin(), docs.end());  // document order does not change pre-token counts
  train_bpe_tokenizer(docs, ob);
  for (const char* f : {"tokenizer.json", "tokenizer_config.json"}) {
    const std::string x = read_file(a.path() / f), y = read_file(b.path() / f);
    EXPECT_FALSE(x.empty());
    EXPECT_TRUE(x == y) << f;
  }
}

TEST(BpeTrainer, RunsOnInputFiles) {
  TempDir dir("files");
  fs::create_directories(dir.path() / "in");
  write_file(dir.path() / "in" / "a.txt", "the cat sat on the mat\n");
  write_file(dir.path() / "in" / "b.jsonl",
             "{\"text\": \"the cat ate the hat\"}\n{\"text\": \"that cat\"}\n");
  BpeTrainOptions o = options_for(dir.str("out"), kMinBpeVocab + 4, 2);
  o.inputs = {dir.str("in")};
  o.template_dir = kTokenizerDir;  // the real DeepSeek-V3 files
  EXPECT_EQ(run_tokenizer_train(o), 0);
  // Documents from a text file and a JSONL file: 4 merges, each pair seen at least twice.
  const json tok = json::parse(read_file(dir.path() / "out" / "tokenizer.json"));
  EXPECT_EQ(tok["model"]["merges"].size(), 4u);
  EXPECT_EQ(Tokenizer::load(dir.str("out")).vocab_size(), kMinBpeVocab + 4);
}

TEST(BpeTrainer, SmallCorpusGivesSmallerVocab) {
  TempDir out("small");
  const BpeTrainSummary s = train_bpe_tokenizer({"abab"}, options_for(out.str(), 1000));
  // "abab": a-b 2, b-a 1 -> "a b"; then ab-ab 1 -> "ab ab"; nothing left.
  EXPECT_EQ(s.merges, 2u);
  EXPECT_EQ(s.vocab_size, kMinBpeVocab + 2);
  EXPECT_EQ(Tokenizer::load(out.str()).vocab_size(), kMinBpeVocab + 2);
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one containing \"" << needle << "\"";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(BpeTrainer, BadInputGivesClearErrors) {
  TempDir out("errors");
  const std::vector<std::string> docs = {"some text"};
  expect_error([&] { train_bpe_tokenizer(docs, options_for(out.str(), kMinBpeVocab - 1)); },
               "must be at least 263");
  expect_error([&] { train_bpe_tokenizer({}, options_for(out.str(), 1000)); }, "no text");
  expect_error([&] { train_bpe_tokenizer({"<think></think>"}, options_for(out.str(), 1000)); },
               "no text");
  BpeTrainOptions o = options_for(out.str(), 1000);
  o.template_dir = out.str("missing");
  expect_error([&] { train_bpe_tokenizer(docs, o); }, "not found");
  o = options_for(out.str(), 1000);
  o.min_frequency = 0;
  expect_error([&] { train_bpe_tokenizer(docs, o); }, "min frequency");
  o = options_for(out.str(), 1000);
  o.inputs = {out.str("nothing.txt")};
  write_file(out.path() / "nothing.txt", "");
  expect_error([&] { run_tokenizer_train(o); }, "no text");
  // An unsupported pre-tokenizer in the template is named.
  expect_error([] { PreTokenizer(R"({"type": "Whitespace"})"); }, "Whitespace");
  expect_error(
      [] {
        PreTokenizer(R"({"type": "Split", "pattern": {"Regex": "("},
                                    "behavior": "Isolated"})");
      },
      "does not compile");
  EXPECT_FALSE(fs::exists(out.path() / "tokenizer.json"));
}

}  // namespace
}  // namespace whale
