// Chat data for `whale sft` (supervised fine-tuning): JSONL conversations -> token ids with a loss
// mask -> rows of `seq` positions for the training loop.
//
// Input: one JSON object per line (blank lines skipped),
//   {"messages": [{"role": "system" | "user" | "assistant", "content": "...",
//                  "reasoning_content": "..." (optional, assistant)}, ...]}
// An assistant turn's reasoning is its reasoning_content, or else the text before the first
// "</think>" of its content (a leading "<think>" removed); either way without surrounding
// whitespace. Its answer is the content (after that "</think>" when there is one) without leading
// whitespace. Messages after the last assistant turn are dropped (nothing to learn from them).
// Errors name FILE:LINE and the problem: invalid JSON, no "messages" array, a message without
// string "role" and "content", an unknown role, both reasoning_content and a "</think>" in the
// content, no assistant turn.
//
// Rendering (run/chat.h, the model's own chat template style), as text pieces that are either
// context (never a target) or an assistant target:
//   every assistant turn but the last, as the template renders it in the history:
//     context  render(the conversation before it) + "<｜Assistant｜>"
//     target   the rest of the template's text for the turn: its answer (R1: only what follows a
//              "</think>" in it) + "<｜end▁of▁sentence｜>"
//   the last assistant turn, as the model generates it:
//     context  render(the conversation before it, with the generation prompt): ends
//              "<｜Assistant｜><think>\n" (R1) or "<｜Assistant｜>" (V3)
//     target   R1: reasoning + "\n</think>\n\n" + answer + eos_token, or "</think>\n\n" + answer +
//              eos_token without reasoning;  V3: answer + eos_token
// (so R1 drops the reasoning of earlier turns, as its template does). Each context piece is the
// difference between successive renderings, so the pieces concatenate to the template's text.
//
// Tokens: every piece is tokenized on its own and the ids concatenated, so the boundary between
// context and target is exact: a target never shares a token with its context. Tokenizing the whole
// text at once can merge across a boundary (ids may then differ slightly from these); the pieces
// start and end at special tokens or at "\n" after "<think>" in practice.
//
// Rows: an example of n tokens x_0..x_{n-1} takes n-1 positions: inputs x_0..x_{n-2}, targets
// x_1..x_{n-1}, where target i is kIgnoreIndex unless token i+1 is an assistant target token.
// Examples are packed greedily in their order into rows of `seq` positions (a row takes the next
// examples while they fit; with pack = false one example per row); the rest of a row is padding
// (pad id as input, ignored targets). Packed examples attend to the earlier examples of their row
// (there is no block-diagonal mask); only their own target tokens are trained. An example longer
// than `seq` + 1 tokens is an error naming FILE:LINE, or with truncate keeps its first seq + 1
// tokens (and is dropped when no target token is left).
// Epoch order: the rows of epoch e are visited in a permutation drawn from (seed, e) alone.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "formats/tokenizer.h"
#include "run/chat.h"

namespace whale::train {

// One conversation, reasoning separated from the answers.
struct ChatExample {
  std::vector<ChatMessage> messages;  // assistant turns: content = answer, reasoning_content
  std::string where;                  // "FILE:LINE"
};

// One JSONL line; nullopt for a blank line. Throws std::invalid_argument "WHERE: problem".
std::optional<ChatExample> parse_chat_line(std::string_view line, const std::string& where);
// Every conversation of one file. Throws std::invalid_argument "FILE:LINE: problem".
std::vector<ChatExample> read_chat_jsonl(const std::string& path);
// Files in order: a file as it is, a directory stands for its *.jsonl files (recursively, sorted).
std::vector<std::string> expand_chat_inputs(const std::vector<std::string>& inputs);

struct ChatPiece {
  std::string text;
  bool target = false;
};
// The pieces of a conversation (rules above); `eos_token` ends every target.
std::vector<ChatPiece> render_training_pieces(const std::vector<ChatMessage>& messages,
                                              ChatStyle style, const std::string& bos_token,
                                              const std::string& eos_token);

// Token ids of an example and, per token, whether it is an assistant target.
struct SftExample {
  std::vector<int32_t> ids;
  std::vector<uint8_t> target;
};
SftExample tokenize_pieces(const std::vector<ChatPiece>& pieces, const Tokenizer& tokenizer);

// Examples laid out in rows (rules above).
class SftRows {
 public:
  // Appends an example (at least 2 tokens, at most seq + 1).
  void add(const SftExample& example);
  // Packs the added examples into rows of `seq` positions.
  void pack(int64_t seq, bool pack);

  int64_t seq() const { return seq_; }
  int64_t num_rows() const { return int64_t(row_start_.size()) - 1; }
  size_t num_examples() const { return example_start_.size() - 1; }
  uint64_t num_targets() const { return targets_; }  // assistant target tokens
  // Row r as inputs / targets [seq]; `pad` fills the unused positions.
  void fill(int64_t r, int32_t pad, int32_t* inputs, int32_t* targets) const;
  // FNV-1a of every example's ids and mask and the row layout (resume checks).
  uint64_t fingerprint() const;

 private:
  int64_t seq_ = 0;
  std::vector<int32_t> ids_;
  std::vector<uint8_t> target_;
  std::vector<size_t> example_start_{0};  // example i: ids_[example_start_[i] .. [i+1])
  std::vector<size_t> row_start_{0};      // row r: examples row_start_[r] .. row_start_[r+1]
  uint64_t targets_ = 0;
};

// The order in which epoch `epoch` visits `rows` rows: a permutation of 0 .. rows-1 drawn from
// (seed, epoch) alone (Fisher-Yates over a splitmix64 stream).
std::vector<int64_t> epoch_order(int64_t rows, uint64_t seed, int64_t epoch);

}  // namespace whale::train
