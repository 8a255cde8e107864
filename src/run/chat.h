// DeepSeek-V3 / DeepSeek-R1 chat formats: renders a conversation to the prompt string exactly as
// the models' Jinja `chat_template`s do (without a Jinja engine), and splits R1 output into its
// reasoning and its answer.
//
// Both templates: all system messages, joined by "\n\n", come right after bos_token; then
//   user       "<｜User｜>" + content
//   assistant  "<｜Assistant｜>" + content + "<｜end▁of▁sentence｜>"
//              (right after tool outputs: "<｜tool▁outputs▁end｜>" + content + eos instead)
//   tool       "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>" + content +
//   "<｜tool▁output▁end｜>"
//              for the first tool message of the conversation, "<｜tool▁output▁begin｜>" + ... for
//              later ones (V3 puts "\n" before those, R1 does not); "<｜tool▁outputs▁end｜>"
//              closes trailing tool outputs.
//   assistant with tool_calls: its content (if any), then
//              "<｜tool▁calls▁begin｜>" + per call ("\n" between calls)
//              "<｜tool▁call▁begin｜>" + type + "<｜tool▁sep｜>" + name + "\n```json\n" + arguments
//              +
//              "\n```<｜tool▁call▁end｜>", then "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>"; the
//              official V3 template's namespace flag drops "<｜Assistant｜><｜tool▁calls▁begin｜>"
//              from every tool-call turn but the first and the end tags from one-call turns: whale
//              renders every turn whole, as DeepSeek's later templates do.
//   other roles render nothing.
// Generation prompt (unless the conversation ends with tool outputs): V3 "<｜Assistant｜>",
// R1 "<｜Assistant｜><think>\n".
//
// DeepSeek-V3.1 (hybrid thinking; its template's `thinking` flag, off by default) differs:
//   user       "<｜User｜>" + content; the assistant turn right after a user turn opens with
//              "<｜Assistant｜></think>" (a closed, empty think block), or with
//              "<｜Assistant｜><think>" when it is the generation prompt in thinking mode;
//   assistant  content after its first "</think>" (as is right after tool outputs) + eos;
//              with tool_calls: content + "<｜tool▁calls▁begin｜>" + per call
//              "<｜tool▁call▁begin｜>" + name + "<｜tool▁sep｜>" + arguments +
//              "<｜tool▁call▁end｜>" (no separator) + "<｜tool▁calls▁end｜><｜end▁of▁sentence｜>";
//   tool       "<｜tool▁output▁begin｜>" + content + "<｜tool▁output▁end｜>" (no outputs wrapper);
//   generation prompt only right after a user turn; after tool outputs the model goes on directly.
// Prefix completion (DeepSeek's beta feature): a last assistant message with `prefix` set is not
// closed but continued. It renders as the generation prompt followed by its content (V3); R1 puts
// its reasoning_content after "<think>\n" and, when content is not empty, closes the think block
// first: "<｜Assistant｜><think>\n" + reasoning + "\n</think>\n\n" + content. V3.1 opens it
// as its generation prompt and, in thinking mode, puts the reasoning first:
// "<｜Assistant｜><think>"
// + reasoning + "</think>" + content (the "</think>" only when content is not empty).
// R1 only: an earlier assistant turn keeps just the text after its last "</think>"; its
// reasoning_content is never rendered (by either template).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace whale {

// Where an R1 completion's reasoning ends.
inline constexpr std::string_view kThinkEnd = "</think>";

// The tags of DeepSeek's function calls (see render_chat and serve/tools.h).
inline constexpr std::string_view kCallsBegin = "<｜tool▁calls▁begin｜>";
inline constexpr std::string_view kCallsEnd = "<｜tool▁calls▁end｜>";
inline constexpr std::string_view kCallBegin = "<｜tool▁call▁begin｜>";
inline constexpr std::string_view kCallEnd = "<｜tool▁call▁end｜>";
inline constexpr std::string_view kToolSep = "<｜tool▁sep｜>";

// A function call an assistant turn made (OpenAI's tool_calls entry).
struct ToolCall {
  std::string id, type = "function", name, arguments;  // arguments: JSON text
};

struct ChatMessage {
  std::string role = {};  // "system", "user", "assistant", "tool"
  std::string content = {};
  std::string reasoning_content = {};     // R1 reasoning of an assistant turn; not rendered
  bool prefix = false;                    // the last assistant message, to be continued (see above)
  std::vector<ToolCall> tool_calls = {};  // assistant: calls made after the content
  std::string tool_call_id = {};          // tool: the call this is the result of (not rendered)
};

enum class ChatStyle { V3, R1, V31 };

// V31 when the template closes an empty think block after "<｜Assistant｜>" (V3.1's hybrid
// thinking), R1 when its generation prompt opens one ("<｜Assistant｜><think>"), V3 otherwise
// (including an empty template).
ChatStyle detect_chat_style(std::string_view chat_template);

// `tools_prompt`: appended to the system prompt ("\n\n" after it when there is one): the tool
// list of a function-calling request (serve/tools.h). `thinking`: V3.1's thinking mode (the
// other styles ignore it).
std::string render_chat(const std::vector<ChatMessage>& messages, ChatStyle style,
                        const std::string& bos_token, bool add_generation_prompt = true,
                        const std::string& tools_prompt = "", bool thinking = false);

// Whether the continuation of `messages` starts inside a think block: an R1 chat, or a V3.1 chat
// in thinking mode whose generation prompt opens one, that does not end with a prefix whose
// content closes the reasoning or with tool outputs (no generation prompt follows those).
bool continues_reasoning(const std::vector<ChatMessage>& messages, ChatStyle style,
                         bool thinking = false);

// The chat style's name as `whale info` prints it: "V3", "R1", "V3.1".
const char* chat_style_name(ChatStyle style);

// Splits R1 output (generated after "<think>\n"; V3.1's after "<think>") at the first "</think>".
// reasoning: the text before it, without a leading "<think>" and surrounding whitespace; content:
// the text after it, without leading whitespace. Without "</think>" the model is still thinking:
// everything is reasoning, content is empty and thinking_done is false.
struct ReasoningSplit {
  std::string reasoning, content;
  bool thinking_done = false;
};
ReasoningSplit split_reasoning(std::string_view generated);

}  // namespace whale
