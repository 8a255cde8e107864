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
// Prefix completion (DeepSeek's beta feature): a last assistant message with `prefix` set is not
// closed but continued. It renders as the generation prompt followed by its content (V3); R1 puts
// its reasoning_content after "<think>\n" and, when content is not empty, closes the think block
// first: "<｜Assistant｜><think>\n" + reasoning + "\n</think>\n\n" + content.
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

enum class ChatStyle { V3, R1 };

// R1 when the template's generation prompt opens a think block ("<｜Assistant｜><think>"),
// V3 otherwise (including an empty template).
ChatStyle detect_chat_style(std::string_view chat_template);

// `tools_prompt`: appended to the system prompt ("\n\n" after it when there is one): the tool
// list of a function-calling request (serve/tools.h).
std::string render_chat(const std::vector<ChatMessage>& messages, ChatStyle style,
                        const std::string& bos_token, bool add_generation_prompt = true,
                        const std::string& tools_prompt = "");

// Whether the continuation of `messages` starts inside an R1 think block: an R1 chat that does not
// end with a prefix whose content closes the reasoning.
bool continues_reasoning(const std::vector<ChatMessage>& messages, ChatStyle style);

// Splits R1 output (generated after "<think>\n") at the first "</think>". reasoning: the text
// before it, without a leading "<think>" and surrounding whitespace; content: the text after it,
// without leading whitespace. Without "</think>" the model is still thinking: everything is
// reasoning, content is empty and thinking_done is false.
struct ReasoningSplit {
  std::string reasoning, content;
  bool thinking_done = false;
};
ReasoningSplit split_reasoning(std::string_view generated);

}  // namespace whale
