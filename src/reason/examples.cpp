#include "reason/examples.h"

#include <cstdio>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#include "train/data.h"

namespace whale::reason {
namespace {

using ojson = nlohmann::ordered_json;

constexpr uint64_t kOtherSalt = 0x6f74686572ull;  // "other"
constexpr size_t kMinWords = 3, kMaxWords = 30;

constexpr std::string_view kOtherReasoning =
    "This is not a problem I can solve: I only do sums, differences, products and countdown "
    "puzzles.";
constexpr std::string_view kOtherContent =
    "I can only solve small arithmetic problems and countdown puzzles. For example:\n"
    "- What is 4721 + 385?\n"
    "- What is 47 * 38?\n"
    "- Using the numbers 7, 5, 3, make 32.";

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

size_t word_count(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i++)
    if (!is_space(s[i]) && (i == 0 || is_space(s[i - 1]))) n++;
  return n;
}

std::string dump(const ojson& j) {
  return j.dump(-1, ' ', false, ojson::error_handler_t::replace);
}

// A uniform double in [0, 1) from 64 bits.
double unit(uint64_t bits) {
  return double(bits >> 11) * 0x1.0p-53;
}

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// The --other sentences of one split (the held-out rule of examples.h).
std::vector<std::string> other_sentences(const std::vector<std::string>& inputs, Split split) {
  std::vector<std::string> docs;
  load_documents(inputs, InputFormat::Auto, "text", docs);
  std::vector<std::string> out;
  for (std::string& s : sentences_of(docs)) {
    const bool eval = fnv1a("other:" + s) % 8 == 0;
    if (eval == (split == Split::Eval)) out.push_back(std::move(s));
  }
  return out;
}

void write_output(const std::string& path, const std::string& text) {
  if (!path.empty()) {
    write_file_atomically(path, [&](std::ofstream& f) { f << text; });
    return;
  }
  if (std::fwrite(text.data(), 1, text.size(), stdout) != text.size() || std::fflush(stdout) != 0)
    throw std::runtime_error("cannot write the examples to stdout");
}

}  // namespace

Example task_example(const Task& task, uint64_t seed, uint64_t index, Split split) {
  Problem p = task.generate(seed, index, split);
  Trace t = task.trace(p);
  return {p.family, std::move(p.prompt), std::move(t), std::move(p.answer)};
}

Example out_of_domain_example(std::string_view text) {
  return {
      "other", std::string(text), {std::string(kOtherReasoning), std::string(kOtherContent)}, ""};
}

ExampleFormat parse_example_format(std::string_view name) {
  if (name == "chat") return ExampleFormat::Chat;
  if (name == "text") return ExampleFormat::Text;
  if (name == "prompt") return ExampleFormat::Prompt;
  if (name == "plain") return ExampleFormat::Plain;
  throw std::invalid_argument("unknown format '" + std::string(name) +
                              "' (chat, text, prompt, plain)");
}

Split parse_split(std::string_view name) {
  if (name == "train") return Split::Train;
  if (name == "eval") return Split::Eval;
  throw std::invalid_argument("unknown split '" + std::string(name) + "' (train, eval)");
}

std::string example_json(const Example& e, ExampleFormat format) {
  switch (format) {
    case ExampleFormat::Chat:
      return dump({{"messages",
                    {{{"role", "user"}, {"content", e.prompt}},
                     {{"role", "assistant"},
                      {"reasoning_content", e.trace.reasoning},
                      {"content", e.trace.content}}}}});
    case ExampleFormat::Text:
      return dump({{"text", "<｜User｜>" + e.prompt + "<｜Assistant｜><think>\n" +
                                e.trace.reasoning + "\n</think>\n\n" + e.trace.content}});
    case ExampleFormat::Plain:
      return e.prompt;
    case ExampleFormat::Prompt:
      break;
  }
  return dump({{"family", e.family}, {"prompt", e.prompt}, {"answer", e.answer}});
}

std::vector<std::string> sentences_of(const std::vector<std::string>& documents) {
  std::vector<std::string> out;
  for (const std::string& doc : documents) {
    std::string_view rest = doc;
    while (!rest.empty()) {
      const size_t end = std::min(rest.find('\n'), rest.size());
      const std::string_view line = trim(rest.substr(0, end));
      rest.remove_prefix(std::min(end + 1, rest.size()));
      const size_t words = word_count(line);
      if (words >= kMinWords && words <= kMaxWords && !parse_problem(line)) out.emplace_back(line);
    }
  }
  return out;
}

int run_task_sample(const SampleOptions& o) {
  const std::unique_ptr<Task> task = make_task(o.task);
  const Split split = parse_split(o.split);
  const ExampleFormat format = parse_example_format(o.format);
  if (!(o.other_share >= 0 && o.other_share <= 1))
    throw std::invalid_argument("--other-share must be in [0, 1]");
  std::vector<std::string> sentences;
  if (!o.other.empty()) {
    sentences = other_sentences(o.other, split);
    if (sentences.empty() && o.other_share > 0)
      throw std::invalid_argument("--other: no lines of 3 to 30 words for the " + o.split +
                                  " split");
  }
  const uint64_t other_key = splitmix64(splitmix64(o.seed) ^ kOtherSalt);
  std::string text;
  uint64_t problems = 0;
  for (uint64_t i = 0; i < o.n; i++) {
    const uint64_t h = splitmix64(other_key ^ i);
    const bool other = !sentences.empty() && unit(h) < o.other_share;
    const Example e = other ? out_of_domain_example(sentences[splitmix64(h) % sentences.size()])
                            : task_example(*task, o.seed, problems++, split);
    text += example_json(e, format);
    text += '\n';
  }
  write_output(o.out, text);
  std::fprintf(stderr, "whale task: %llu examples (%llu out-of-domain) of %s, %s split%s%s\n",
               (unsigned long long)o.n, (unsigned long long)(o.n - problems), o.task.c_str(),
               o.split.c_str(), o.out.empty() ? "" : " -> ", o.out.c_str());
  return 0;
}

std::string score_json(const Score& s) {
  return dump({{"correct", s.correct},
               {"formatted", s.formatted},
               {"reward", s.reward},
               {"answer", s.answer},
               {"why", s.why}});
}

int run_task_score(const ScoreOptions& o) {
  const std::unique_ptr<Task> task = make_task(o.task);
  const std::optional<Problem> p = parse_problem(o.prompt);
  if (!p)
    throw std::invalid_argument("the prompt is no problem of the tasks (" + o.prompt.substr(0, 80) +
                                ")");
  if (o.task != "all" && p->family != o.task)
    throw std::invalid_argument("the prompt is a " + p->family + " problem, not " + o.task);
  std::cout << score_json(task->score(*p, o.completion, o.weights)) << "\n";
  return 0;
}

}  // namespace whale::reason
