// Tokenizers in GGUF metadata: llama.cpp names the pre-tokenizer regex sets it knows
// ("deepseek-v3", ...) instead of storing them; whale keeps the same table, and stores any other
// pre-tokenizer (its own tokenizers split numbers into single digits) as JSON under its own key.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace whale {

// The tokenizer.json "pre_tokenizer" object llama.cpp's `name` stands for; throws naming `path`
// and the key for a name whale does not know.
nlohmann::json gguf_pre_tokenizer(const std::string& name, const std::string& path);

// llama.cpp's name for a tokenizer.json "pre_tokenizer" object, or "" when it has none.
std::string gguf_pre_name(const nlohmann::json& pre_tokenizer);

// The metadata key holding a pre-tokenizer llama.cpp has no name for (tokenizer.json's JSON).
inline constexpr const char* kWhalePreTokenizerKey = "whale.tokenizer.pre_tokenizer";

}  // namespace whale
