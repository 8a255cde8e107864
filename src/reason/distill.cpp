#include "reason/distill.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

#include "kernels/cpu.h"
#include "reason/eval.h"
#include "run/chat.h"
#include "train/data.h"

namespace whale::reason {

namespace fs = std::filesystem;
using json = nlohmann::json;

void check_distill_options(const DistillOptions& o) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("whale distill: " + what); };
  if (o.teacher_dir.empty()) bad("--teacher is needed (the model that writes the traces)");
  if (o.out_path.empty()) bad("--out is needed (the SFT JSONL to write)");
  if (o.n < 0 || (o.n == 0 && o.prompts_path.empty()))
    bad("--n must be at least 1 (0 only with --prompts: every line)");
  if (o.samples < 1) bad("--samples must be at least 1");
  if (o.keep < 1) bad("--keep must be at least 1");
  if (o.max_tokens < 1) bad("--max-tokens must be at least 1");
  if (o.batch < 1) bad("--batch must be at least 1");
  if (std::isnan(o.temperature) || o.temperature <= 0)
    bad("--temp must be above 0 (rejection sampling needs samples)");
}

std::vector<Problem> read_distill_prompts(const std::string& path, const std::string& task,
                                          int64_t n) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const std::exception& e) {
    throw std::invalid_argument(std::string("whale distill: --prompts: ") + e.what());
  }
  std::vector<Problem> out;
  for_each_line(text, [&](std::string_view line, size_t number) {
    if (n > 0 && int64_t(out.size()) >= n) return;
    if (line.find_first_not_of(" \t\r") == std::string_view::npos) return;
    const std::string where = path + ":" + std::to_string(number) + ": ";
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      throw std::invalid_argument(where + "not JSON (" + e.what() + ")");
    }
    if (!j.is_object() || !j.contains("prompt") || !j["prompt"].is_string())
      throw std::invalid_argument(where + "no \"prompt\" string (one {\"prompt\": ...} per line)");
    const std::string prompt = j["prompt"].get<std::string>();
    const std::optional<Problem> p = parse_problem(prompt);
    if (!p)
      throw std::invalid_argument(where + "the prompt states no problem of the tasks, so no " +
                                  "verifier can check it: \"" + prompt.substr(0, 80) + "\"");
    if (task != "all" && p->family != task)
      throw std::invalid_argument(where + "a " + p->family + " problem, but --task is " + task);
    out.push_back(*p);
  });
  if (out.empty()) throw std::invalid_argument("whale distill: --prompts " + path + ": no prompts");
  return out;
}

namespace {

json load_json_file(const std::string& path) {
  try {
    return json::parse(read_file(path));
  } catch (const std::exception& e) {
    throw std::invalid_argument(path + ": " + e.what());
  }
}

// id -> token text: the BPE vocabulary and the added tokens.
std::map<int64_t, std::string> token_table(const json& tok) {
  std::map<int64_t, std::string> t;
  if (tok.contains("model") && tok["model"].contains("vocab") && tok["model"]["vocab"].is_object())
    for (const auto& [text, id] : tok["model"]["vocab"].items())
      if (id.is_number_integer()) t[id.get<int64_t>()] = text;
  if (tok.contains("added_tokens") && tok["added_tokens"].is_array())
    for (const json& a : tok["added_tokens"])
      if (a.contains("id") && a["id"].is_number_integer() && a.contains("content") &&
          a["content"].is_string())
        t[a["id"].get<int64_t>()] = a["content"].get<std::string>();
  return t;
}

json field(const json& j, const char* a, const char* b = nullptr) {
  if (!j.contains(a)) return nullptr;
  if (!b) return j[a];
  return j[a].is_object() && j[a].contains(b) ? j[a][b] : json(nullptr);
}

}  // namespace

void check_same_tokenizer(const std::string& teacher_dir, const std::string& student_dir) {
  const std::string tp = (fs::path(teacher_dir) / "tokenizer.json").string();
  const std::string sp = (fs::path(student_dir) / "tokenizer.json").string();
  if (!fs::exists(sp))
    throw std::invalid_argument("whale distill: --student " + student_dir +
                                ": no tokenizer.json to compare with the teacher's");
  const json t = load_json_file(tp), s = load_json_file(sp);
  auto differ = [&](const std::string& what) {
    throw std::invalid_argument("whale distill: the teacher's tokenizer (" + tp +
                                ") differs from the student's (" + sp + "): " + what +
                                "; the student would learn from traces tokenized otherwise");
  };
  const std::map<int64_t, std::string> tt = token_table(t), st = token_table(s);
  if (tt.size() != st.size())
    differ(std::to_string(tt.size()) + " tokens vs " + std::to_string(st.size()));
  for (auto a = tt.begin(), b = st.begin(); a != tt.end(); ++a, ++b)
    if (a->first != b->first || a->second != b->second)
      differ("token id " + std::to_string(a->first) + " is " + json(a->second).dump() + " vs " +
             (a->first == b->first
                  ? json(b->second).dump()
                  : "id " + std::to_string(b->first) + " " + json(b->second).dump()));
  if (field(t, "model", "merges") != field(s, "model", "merges")) differ("the merges differ");
  if (field(t, "pre_tokenizer") != field(s, "pre_tokenizer")) differ("the pre-tokenizers differ");
  if (field(t, "normalizer") != field(s, "normalizer")) differ("the normalizers differ");
}

std::string distill_example_json(const std::string& prompt, const std::string& completion) {
  const ReasoningSplit r = split_reasoning(completion);
  json msgs = json::array();
  msgs.push_back({{"role", "user"}, {"content", prompt}});
  msgs.push_back(
      {{"role", "assistant"}, {"reasoning_content", r.reasoning}, {"content", r.content}});
  return json{{"messages", msgs}}.dump();
}

DistillStats::Family DistillStats::total() const {
  Family t;
  t.family = "all";
  for (const Family& f : families) {
    t.prompts += f.prompts;
    t.samples += f.samples;
    t.correct += f.correct;
    t.accepted += f.accepted;
    t.kept += f.kept;
  }
  return t;
}

namespace {

uint64_t distill_seed(uint64_t seed, uint64_t index, int64_t g) {
  return splitmix64(splitmix64(splitmix64(seed ^ 0x6469737469ull) + index) + uint64_t(g));
}

DistillStats::Family& family_of(DistillStats& st, const std::string& name) {
  for (DistillStats::Family& f : st.families)
    if (f.family == name) return f;
  st.families.push_back({});
  st.families.back().family = name;
  return st.families.back();
}

void print_stats(const DistillStats& st) {
  std::fprintf(stderr, "%-10s %8s %8s %8s %8s %8s %9s\n", "family", "prompts", "samples", "correct",
               "accepted", "kept", "accept %");
  auto row = [](const DistillStats::Family& f) {
    std::fprintf(stderr, "%-10s %8lld %8lld %8lld %8lld %8lld %8.1f%%\n", f.family.c_str(),
                 (long long)f.prompts, (long long)f.samples, (long long)f.correct,
                 (long long)f.accepted, (long long)f.kept,
                 f.samples ? 100.0 * double(f.accepted) / double(f.samples) : 0.0);
  };
  for (const DistillStats::Family& f : st.families) row(f);
  if (st.families.size() > 1) row(st.total());
}

}  // namespace

int run_distill_command(const DistillOptions& o, const Task& task) {
  check_distill_options(o);
  const auto t0 = std::chrono::steady_clock::now();
  if (o.threads > 0) set_num_threads(o.threads);
  // Everything that can be wrong with the inputs is checked before the long part.
  std::vector<Problem> problems;
  if (!o.prompts_path.empty())
    problems = read_distill_prompts(o.prompts_path, o.task, o.n);
  else
    for (int64_t i = 0; i < o.n; i++)
      problems.push_back(task.generate(o.seed, uint64_t(i), Split::Train));
  const ModelCompleter teacher(o.teacher_dir, "whale distill: --teacher");
  if (!o.student_dir.empty()) check_same_tokenizer(o.teacher_dir, o.student_dir);
  if (o.progress)
    std::fprintf(stderr, "distill: %zu prompts x %lld samples from %s, %d threads\n",
                 problems.size(), (long long)o.samples, o.teacher_dir.c_str(), num_threads());

  DistillStats st;
  std::string out;
  for (size_t first = 0; first < problems.size(); first += size_t(o.batch)) {
    const size_t m = std::min(size_t(o.batch), problems.size() - first);
    std::vector<std::string> users;
    std::vector<uint64_t> seeds;
    for (size_t i = 0; i < m; i++) {
      users.push_back(problems[first + i].prompt);
      for (int64_t g = 0; g < o.samples; g++) seeds.push_back(distill_seed(o.seed, first + i, g));
    }
    const std::vector<EvalSample> cs =
        teacher.complete(users, o.samples, o.temperature, o.max_tokens, seeds);
    for (size_t i = 0; i < m; i++) {
      const Problem& p = problems[first + i];
      DistillStats::Family& f = family_of(st, p.family);
      f.prompts++;
      std::set<std::string> kept;
      for (int64_t g = 0; g < o.samples; g++) {
        const std::string& text = cs[i * size_t(o.samples) + size_t(g)].text;
        const Score s = task.score(p, text);
        f.samples++;
        f.correct += s.correct;
        if (!(s.correct && s.formatted)) continue;
        f.accepted++;
        if (int64_t(kept.size()) >= o.keep || !kept.insert(text).second) continue;
        f.kept++;
        out += distill_example_json(p.prompt, text);
        out += '\n';
      }
    }
    if (o.progress) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      const DistillStats::Family t = st.total();
      std::fprintf(stderr, "distill: %zu/%zu prompts  accepted %lld/%lld  kept %lld  %.1fs\n",
                   first + m, problems.size(), (long long)t.accepted, (long long)t.samples,
                   (long long)t.kept, s);
    }
  }
  write_file_atomically(o.out_path, [&](std::ofstream& f) { f << out; });
  print_stats(st);
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "whale distill: %lld examples -> %s (%.1fs)\n", (long long)st.total().kept,
               o.out_path.c_str(), wall);
  return 0;
}

}  // namespace whale::reason
