// Tokenizer::from_gguf: the tokenizer.ggml.* metadata of a GGUF file turned into the
// tokenizer.json / tokenizer_config.json objects it was converted from, then loaded as those are.
//
//   tokenizer.ggml.model       "gpt2" (byte-level BPE; the tokens are stored byte-level encoded)
//   tokenizer.ggml.tokens      token text by id
//   tokenizer.ggml.token_type  1 normal, 2 unknown, 3 control (special added token), 4 user
//                              defined (added token, not special), 5 unused (padding), 6 byte
//   tokenizer.ggml.merges      "left right" in rank order
//   tokenizer.ggml.pre         the pre-tokenizer by name: llama.cpp names the regex sets it knows
//                              instead of storing them, so whale keeps the same table
//   tokenizer.ggml.{bos,eos}_token_id, add_bos_token; tokenizer.chat_template
#include "formats/gguf_tokenizer.h"

#include <nlohmann/json.hpp>
#include <stdexcept>

#include "formats/gguf.h"
#include "formats/tokenizer.h"

namespace whale {

namespace {

using json = nlohmann::json;

json split(const char* regex) {
  return {{"type", "Split"},
          {"pattern", {{"Regex", regex}}},
          {"behavior", "Isolated"},
          {"invert", false}};
}

}  // namespace

json gguf_pre_tokenizer(const std::string& pre, const std::string& path) {
  const json byte_level = {
      {"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}};
  if (pre == "deepseek-v3") {  // DeepSeek-V3 / R1 (and the V3 tokenizer of whale's models)
    json bl = byte_level;
    bl["use_regex"] = false;
    return {
        {"type", "Sequence"},
        {"pretokenizers",
         {split("\\p{N}{1,3}"), split("[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"),
          split("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?"
                "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"),
          bl}}};
  }
  // Qwen2.5 (and the R1-Distill-Qwen models, "deepseek-r1-qwen" in llama.cpp): single digits;
  // Llama 3 ("llama-bpe"): digits in threes. The regexes as their tokenizer.json files hold them.
  if (pre == "qwen2" || pre == "deepseek-r1-qwen" || pre == "llama-bpe") {
    json bl = byte_level;
    bl["use_regex"] = false;
    bl["trim_offsets"] = pre == "llama-bpe";
    const char* digits = pre == "llama-bpe" ? "\\p{N}{1,3}" : "\\p{N}";
    const std::string regex =
        std::string("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|") + digits +
        "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
    return {{"type", "Sequence"}, {"pretokenizers", {split(regex.c_str()), bl}}};
  }
  if (pre == "default" || pre == "gpt2") {  // GPT-2's regex inside ByteLevel
    json bl = byte_level;
    bl["use_regex"] = true;
    return bl;
  }
  throw std::runtime_error(path + ": metadata 'tokenizer.ggml.pre' = '" + pre +
                           "' is not supported (whale knows deepseek-v3, qwen2, "
                           "deepseek-r1-qwen, llama-bpe, gpt2, default)");
}

std::string gguf_pre_name(const json& pre_tokenizer) {
  for (const char* name : {"deepseek-v3", "qwen2", "llama-bpe", "default"})
    if (gguf_pre_tokenizer(name, "") == pre_tokenizer) return name;
  return "";
}

Tokenizer Tokenizer::from_gguf(const std::string& path) {
  const GgufFile f(path);
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model != "gpt2")
    throw std::runtime_error(path + ": metadata 'tokenizer.ggml.model' = '" + model +
                             "' is not supported (whale reads byte-level BPE, 'gpt2')");
  const GgufValue& tokens = f.get_array("tokenizer.ggml.tokens", GgufValueType::STRING);
  const size_t n = tokens.strings.size();
  std::vector<int64_t> types(n, 1);
  if (f.has("tokenizer.ggml.token_type")) {
    const GgufValue& t = f.get_array("tokenizer.ggml.token_type", GgufValueType::I32);
    if (t.ints.size() != n)
      throw std::runtime_error(path + ": metadata 'tokenizer.ggml.token_type' has " +
                               std::to_string(t.ints.size()) + " entries for " + std::to_string(n) +
                               " tokens");
    types = t.ints;
  }

  json vocab = json::object(), added = json::array();
  for (size_t id = 0; id < n; id++) {
    const std::string& text = tokens.strings[id];
    switch (types[id]) {
      case 1:  // normal
      case 6:  // byte
        vocab[text] = id;
        break;
      case 3:  // control: special added token
      case 4:  // user defined: added token
        added.push_back({{"id", id},
                         {"content", text},
                         {"special", types[id] == 3},
                         {"lstrip", false},
                         {"rstrip", false},
                         {"normalized", false},
                         {"single_word", false}});
        break;
      default:  // unknown, unused (padding): never produced by the BPE
        break;
    }
  }
  json merges = json::array();
  if (f.has("tokenizer.ggml.merges"))
    for (const std::string& m : f.get_array("tokenizer.ggml.merges", GgufValueType::STRING).strings)
      merges.push_back(m);
  const std::string pre =
      f.has("tokenizer.ggml.pre") ? f.get_string("tokenizer.ggml.pre") : std::string("default");
  json pre_json;
  if (f.has(kWhalePreTokenizerKey)) {
    try {
      pre_json = json::parse(f.get_string(kWhalePreTokenizerKey));
    } catch (const json::exception& e) {
      throw std::runtime_error(path + ": metadata '" + kWhalePreTokenizerKey +
                               "' is not JSON: " + e.what());
    }
  } else {
    pre_json = gguf_pre_tokenizer(pre, path);
  }
  // What the Hugging Face files of these families say beside the regex: Qwen2.5 normalizes to
  // NFC, Llama 3 takes whole words from the vocabulary before merging (ignore_merges).
  const bool qwen = pre == "qwen2" || pre == "deepseek-r1-qwen";
  const json tok = {{"model",
                     {{"type", "BPE"},
                      {"vocab", vocab},
                      {"merges", merges},
                      {"ignore_merges", pre == "llama-bpe"}}},
                    {"added_tokens", added},
                    {"normalizer", qwen ? json{{"type", "NFC"}} : json()},
                    {"pre_tokenizer", pre_json},
                    {"decoder", {{"type", "ByteLevel"}}}};

  json config = {{"clean_up_tokenization_spaces", false}};  // llama.cpp never cleans up
  auto special = [&](const char* key, const char* field) {
    const std::string k = std::string("tokenizer.ggml.") + key;
    if (!f.has(k)) return;
    const int64_t id = f.get_int(k);
    if (id < 0 || size_t(id) >= n)
      throw std::runtime_error(path + ": metadata '" + k + "' = " + std::to_string(id) +
                               " is not a token id (" + std::to_string(n) + " tokens)");
    config[field] = tokens.strings[size_t(id)];
  };
  special("bos_token_id", "bos_token");
  special("eos_token_id", "eos_token");
  config["add_bos_token"] =
      f.has("tokenizer.ggml.add_bos_token") && f.get_bool("tokenizer.ggml.add_bos_token");
  if (f.has("tokenizer.chat_template"))
    config["chat_template"] = f.get_string("tokenizer.chat_template");
  return from_json(tok, path, config, path);
}

}  // namespace whale
