#include "train/sft_data.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>
#include <stdexcept>

#include "train/data.h"
#include "train/ops.h"

namespace whale::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr std::string_view kAssistant = "<｜Assistant｜>";
constexpr std::string_view kThinkEnd = "</think>";

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string trim(std::string_view s, bool back) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (back && !s.empty() && is_space(s.back())) s.remove_suffix(1);
  return std::string(s);
}

// An assistant message: content = the answer, reasoning_content = the reasoning (header rules).
ChatMessage assistant_turn(const json& m, const std::string& content, const std::string& which,
                           const std::string& where) {
  ChatMessage msg{"assistant", "", ""};
  const auto rc = m.find("reasoning_content");
  const bool has_rc = rc != m.end() && !rc->is_null();
  if (has_rc && !rc->is_string())
    throw std::invalid_argument(where + ": " + which + ": \"reasoning_content\" is not a string");
  if (has_rc) {
    if (content.find(kThinkEnd) != std::string::npos)
      throw std::invalid_argument(where + ": " + which +
                                  " has both \"reasoning_content\" and a </think> in its content");
    msg.reasoning_content = trim(rc->get<std::string>(), true);
    msg.content = trim(content, false);
  } else if (content.find(kThinkEnd) != std::string::npos) {
    ReasoningSplit split = split_reasoning(content);
    msg.reasoning_content = std::move(split.reasoning);
    msg.content = std::move(split.content);
  } else {
    msg.content = trim(content, false);
  }
  return msg;
}

// One element of "messages"; throws naming it.
ChatMessage parse_message(const json& m, size_t i, const std::string& where) {
  const std::string which = "message " + std::to_string(i);
  auto fail = [&](const std::string& problem) {
    throw std::invalid_argument(where + ": " + which + " " + problem);
  };
  if (!m.is_object()) fail("is not an object");
  const auto role = m.find("role"), content = m.find("content");
  if (role == m.end() || !role->is_string()) fail("has no string \"role\"");
  if (content == m.end() || !content->is_string()) fail("has no string \"content\"");
  const std::string r = role->get<std::string>();
  if (r == "assistant") return assistant_turn(m, content->get<std::string>(), which, where);
  if (r != "system" && r != "user")
    fail("has the unknown role \"" + r + "\" (expected system, user or assistant)");
  return ChatMessage{r, content->get<std::string>(), ""};
}

size_t last_assistant(const std::vector<ChatMessage>& messages) {
  for (size_t i = messages.size(); i-- > 0;)
    if (messages[i].role == "assistant") return i;
  return std::string::npos;
}

// The target of the last assistant turn, as the model generates it after the generation prompt.
std::string final_target(const ChatMessage& m, ChatStyle style, const std::string& eos) {
  if (style != ChatStyle::R1) return m.content + eos;  // V3.1: non-thinking mode
  if (m.reasoning_content.empty()) return "</think>\n\n" + m.content + eos;
  return m.reasoning_content + "\n</think>\n\n" + m.content + eos;
}

uint64_t fnv1a(uint64_t h, const void* data, size_t n) {
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull;
  return h;
}

}  // namespace

std::optional<ChatExample> parse_chat_line(std::string_view line, const std::string& where) {
  if (line.find_first_not_of(" \t\r") == std::string_view::npos) return std::nullopt;
  json obj;
  try {
    obj = json::parse(line);
  } catch (const json::parse_error& e) {
    throw std::invalid_argument(where + ": invalid JSON: " + e.what());
  }
  if (!obj.is_object()) throw std::invalid_argument(where + ": expected a JSON object");
  const auto messages = obj.find("messages");
  if (messages == obj.end() || !messages->is_array())
    throw std::invalid_argument(where + ": no \"messages\" array");
  ChatExample ex;
  ex.where = where;
  for (size_t i = 0; i < messages->size(); i++)
    ex.messages.push_back(parse_message((*messages)[i], i, where));
  const size_t last = last_assistant(ex.messages);
  if (last == std::string::npos)
    throw std::invalid_argument(where + ": the conversation has no assistant turn to train on");
  ex.messages.resize(last + 1);
  return ex;
}

std::vector<ChatExample> read_chat_jsonl(const std::string& path) {
  std::vector<ChatExample> out;
  for_each_line(read_file(path), [&](std::string_view line, size_t line_no) {
    if (auto ex = parse_chat_line(line, path + ":" + std::to_string(line_no)))
      out.push_back(std::move(*ex));
  });
  return out;
}

std::vector<std::string> expand_chat_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (fs::is_directory(input, ec)) {
      std::vector<std::string> found;
      for (const auto& e : fs::recursive_directory_iterator(input))
        if (e.is_regular_file() && e.path().extension() == ".jsonl")
          found.push_back(e.path().string());
      if (found.empty()) throw std::invalid_argument(input + ": no *.jsonl files in the directory");
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(input, ec)) {
      files.push_back(input);
    } else {
      throw std::invalid_argument(input + ": not found");
    }
  }
  return files;
}

std::vector<ChatPiece> render_training_pieces(const std::vector<ChatMessage>& messages,
                                              ChatStyle style, const std::string& bos_token,
                                              const std::string& eos_token) {
  const size_t last = last_assistant(messages);
  if (last == std::string::npos)
    throw std::invalid_argument("the conversation has no assistant turn to train on");
  // Every system message is rendered first whatever its place, so the history starts with them.
  std::vector<ChatMessage> history;
  for (const ChatMessage& m : messages)
    if (m.role == "system") history.push_back(m);
  std::vector<ChatPiece> pieces;
  std::string done;  // the text of the pieces so far
  // The next piece: what `rendered` adds to the text so far.
  auto extend_to = [&](const std::string& rendered, bool target) {
    if (!rendered.starts_with(done))
      throw std::logic_error("render_training_pieces: a rendering does not extend the last one");
    if (rendered.size() > done.size()) pieces.push_back({rendered.substr(done.size()), target});
    done = rendered;
  };
  for (size_t i = 0; i <= last; i++) {
    const ChatMessage& m = messages[i];
    if (m.role == "user") history.push_back(m);
    if (m.role != "assistant") continue;
    if (i < last) {
      // The turn's opening: "<｜Assistant｜>" (R1 without its "<think>\n", which the turn's own
      // text has), or V3.1's generation prompt ("<｜Assistant｜></think>").
      extend_to(style == ChatStyle::V31
                    ? render_chat(history, style, bos_token, true)
                    : render_chat(history, style, bos_token, false) + std::string(kAssistant),
                false);
      history.push_back(m);
      extend_to(render_chat(history, style, bos_token, false), true);
    } else {
      extend_to(render_chat(history, style, bos_token, true), false);
      extend_to(done + final_target(m, style, eos_token), true);
    }
  }
  return pieces;
}

SftExample tokenize_pieces(const std::vector<ChatPiece>& pieces, const Tokenizer& tokenizer) {
  SftExample ex;
  for (const ChatPiece& p : pieces) {
    const std::vector<int32_t> ids = tokenizer.encode(p.text, false);
    ex.ids.insert(ex.ids.end(), ids.begin(), ids.end());
    ex.target.insert(ex.target.end(), ids.size(), p.target ? 1 : 0);
  }
  return ex;
}

// ------------------------------------------------------------------ rows

void SftRows::add(const SftExample& example) {
  if (example.ids.size() < 2 || example.ids.size() != example.target.size())
    throw std::invalid_argument("SftRows::add: an example needs >= 2 tokens, each with a flag");
  ids_.insert(ids_.end(), example.ids.begin(), example.ids.end());
  target_.insert(target_.end(), example.target.begin(), example.target.end());
  example_start_.push_back(ids_.size());
  // Token 0 is never predicted (it is no position's target).
  targets_ += uint64_t(std::count(example.target.begin() + 1, example.target.end(), uint8_t(1)));
}

void SftRows::pack(int64_t seq, bool pack) {
  seq_ = seq;
  row_start_.assign(1, 0);
  int64_t used = 0;
  for (size_t e = 0; e < num_examples(); e++) {
    const int64_t len = int64_t(example_start_[e + 1] - example_start_[e]) - 1;
    if (len > seq) throw std::invalid_argument("SftRows::pack: an example is longer than seq");
    if (e > 0 && (!pack || used + len > seq)) {
      row_start_.push_back(e);
      used = 0;
    }
    used += len;
  }
  if (num_examples() > 0) row_start_.push_back(num_examples());
}

void SftRows::fill(int64_t r, int32_t pad, int32_t* inputs, int32_t* targets) const {
  int64_t pos = 0;
  for (size_t e = row_start_[size_t(r)]; e < row_start_[size_t(r) + 1]; e++) {
    for (size_t k = example_start_[e]; k + 1 < example_start_[e + 1]; k++, pos++) {
      inputs[pos] = ids_[k];
      targets[pos] = target_[k + 1] ? ids_[k + 1] : kIgnoreIndex;
    }
  }
  std::fill(inputs + pos, inputs + seq_, pad);
  std::fill(targets + pos, targets + seq_, kIgnoreIndex);
}

uint64_t SftRows::fingerprint() const {
  uint64_t h = 0xCBF29CE484222325ull;
  h = fnv1a(h, &seq_, sizeof seq_);
  h = fnv1a(h, ids_.data(), ids_.size() * sizeof(int32_t));
  h = fnv1a(h, target_.data(), target_.size());
  for (size_t s : example_start_) h = fnv1a(h, &s, sizeof s);
  for (size_t s : row_start_) h = fnv1a(h, &s, sizeof s);
  return h;
}

std::vector<int64_t> epoch_order(int64_t rows, uint64_t seed, int64_t epoch) {
  std::vector<int64_t> order(size_t(std::max<int64_t>(rows, 0)));
  std::iota(order.begin(), order.end(), int64_t(0));
  const uint64_t base = splitmix64(splitmix64(seed ^ 0x2545F4914F6CDD1Dull) + uint64_t(epoch));
  for (int64_t i = rows - 1; i > 0; i--) {
    const uint64_t j = splitmix64(base + uint64_t(i)) % uint64_t(i + 1);
    std::swap(order[size_t(i)], order[size_t(j)]);
  }
  return order;
}

}  // namespace whale::train
