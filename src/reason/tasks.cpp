// The three task families (task.h): generators, keys and the held-out split, prompts and their
// parsing, countdown reachability. The teacher is in teacher.cpp, the verifier in verify.cpp.
#include <algorithm>
#include <array>
#include <bitset>
#include <charconv>
#include <stdexcept>

#include "reason/task.h"
#include "reason/teacher.h"
#include "reason/verify.h"
#include "train/data.h"

namespace whale::reason {
namespace {

constexpr int kCountdownMax = 25;  // x, y, z in 1..25
constexpr int kTargetMax = 100;    // t in 1..100
constexpr int kMaxAttempts = 100000;

// ------------------------------------------------------------------ random draws

// A counter-based stream: the splitmix64 sequence started at a key hashed from the problem's
// coordinates, so problem `index` needs no earlier draws.
class Draws {
 public:
  Draws(uint64_t seed, uint64_t family, uint64_t index, Split split, uint64_t attempt) {
    state_ = splitmix64(splitmix64(splitmix64(splitmix64(seed) ^ family) ^ index) ^
                        (attempt * 2 + (split == Split::Eval)));
  }
  uint64_t next() {
    state_ += 0x9E3779B97F4A7C15ull;
    return splitmix64(state_);
  }
  // Uniform in lo..hi: the high 64 bits of draw * n (bias below n / 2^64).
  int64_t uniform(int64_t lo, int64_t hi) {
    const auto n = static_cast<unsigned __int128>(hi - lo + 1);
    return lo + static_cast<int64_t>((n * next()) >> 64);
  }
  // A number with `digits` digits (1 digit: 0..9).
  int64_t number(int digits) {
    int64_t low = 1;
    for (int i = 1; i < digits; i++) low *= 10;
    return digits == 1 ? uniform(0, 9) : uniform(low, low * 10 - 1);
  }

 private:
  uint64_t state_ = 0;
};

uint64_t fnv1a(std::string_view s) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

// ------------------------------------------------------------------ countdown reachability

// The values r (op) c for every op (both orders, division when the divisor is not 0).
std::vector<Rational> combine(Rational p, Rational q) {
  std::vector<Rational> out;
  for (const auto& v : {add(p, q), sub(p, q), sub(q, p), mul(p, q), div(p, q), div(q, p)})
    if (v) out.push_back(*v);
  return out;
}

std::bitset<kTargetMax + 1> compute_reachable(int64_t x, int64_t y, int64_t z) {
  std::bitset<kTargetMax + 1> out;
  const Rational nums[3] = {{x, 1}, {y, 1}, {z, 1}};
  for (int i = 0; i < 3; i++) {
    const Rational a = nums[i == 0 ? 1 : 0], b = nums[i == 2 ? 1 : 2];
    for (const Rational& r : combine(a, b))
      for (const Rational& v : combine(r, nums[i]))
        if (v.den == 1 && v.num >= 1 && v.num <= kTargetMax) out.set(v.num);
  }
  return out;
}

// Reachability of every sorted triple in 1..25, computed once (it does not depend on the order).
const std::bitset<kTargetMax + 1>& cached_reachable(int64_t x, int64_t y, int64_t z) {
  static const auto table = [] {
    std::vector<std::bitset<kTargetMax + 1>> t(kCountdownMax * kCountdownMax * kCountdownMax);
    for (int a = 1; a <= kCountdownMax; a++)
      for (int b = a; b <= kCountdownMax; b++)
        for (int c = b; c <= kCountdownMax; c++)
          t[((a - 1) * kCountdownMax + b - 1) * kCountdownMax + c - 1] = compute_reachable(a, b, c);
    return t;
  }();
  std::array<int64_t, 3> s = {x, y, z};
  std::sort(s.begin(), s.end());
  return table[((s[0] - 1) * kCountdownMax + s[1] - 1) * kCountdownMax + s[2] - 1];
}

// ------------------------------------------------------------------ prompts

std::string arithmetic_prompt(int64_t a, char op, int64_t b) {
  return "What is " + std::to_string(a) + " " + op + " " + std::to_string(b) + "?";
}

// Reads a plainly written number (digits, no leading zero) at the front of `s`, removing it.
std::optional<int64_t> take_number(std::string_view& s) {
  size_t n = 0;
  while (n < s.size() && n < 6 && s[n] >= '0' && s[n] <= '9') n++;
  if (n == 0 || (n > 1 && s[0] == '0') || (n < s.size() && s[n] >= '0' && s[n] <= '9'))
    return std::nullopt;
  int64_t v = 0;
  std::from_chars(s.data(), s.data() + n, v);
  s.remove_prefix(n);
  return v;
}

bool take(std::string_view& s, std::string_view what) {
  if (!s.starts_with(what)) return false;
  s.remove_prefix(what.size());
  return true;
}

int digit_count(int64_t v) {
  return int(std::to_string(v).size());
}

bool mul_shape(int64_t a, int64_t b) {
  const int da = digit_count(a), db = digit_count(b);
  return (da == 2 && db == 2) || (da == 3 && db == 1) || (da == 1 && db == 3);
}

// "What is {a} {op} {b}?"
std::optional<Problem> parse_arithmetic(std::string_view s) {
  if (!take(s, "What is ")) return std::nullopt;
  const auto a = take_number(s);
  if (!a || s.size() < 3 || s[0] != ' ' || s[2] != ' ') return std::nullopt;
  const char op = s[1];
  s.remove_prefix(3);
  const auto b = take_number(s);
  if (!b || s != "?") return std::nullopt;
  if ((op == '+' || op == '-') && *a <= 9999 && *b <= 9999) return add_sub_problem(*a, op, *b);
  if (op == '*' && mul_shape(*a, *b)) return mul_problem(*a, *b);
  return std::nullopt;
}

// "Using the numbers {x}, {y}, {z}, make {t}."
std::optional<Problem> parse_countdown(std::string_view s) {
  std::optional<int64_t> n[4];
  if (!take(s, "Using the numbers ") || !(n[0] = take_number(s)) || !take(s, ", ") ||
      !(n[1] = take_number(s)) || !take(s, ", ") || !(n[2] = take_number(s)) ||
      !take(s, ", make ") || !(n[3] = take_number(s)) || s != ".")
    return std::nullopt;
  for (int i = 0; i < 3; i++)
    if (*n[i] < 1 || *n[i] > kCountdownMax) return std::nullopt;
  if (*n[3] < 1 || *n[3] > kTargetMax) return std::nullopt;
  return countdown_problem(*n[0], *n[1], *n[2], *n[3]);
}

// ------------------------------------------------------------------ the tasks

// A problem of one family, or nullopt to draw again.
using Sampler = std::optional<Problem> (*)(Draws&);

std::optional<Problem> sample_add_sub(Draws& d) {
  const char op = d.uniform(0, 1) ? '-' : '+';
  const int64_t a = d.number(int(d.uniform(1, 4)));
  const int64_t b = d.number(int(d.uniform(1, 4)));
  return add_sub_problem(a, op, b);
}

std::optional<Problem> sample_mul(Draws& d) {
  if (d.uniform(0, 1) == 0) {
    const int64_t a = d.number(2);
    return mul_problem(a, d.number(2));
  }
  int64_t a = d.number(3), b = d.number(1);
  if (d.uniform(0, 1)) std::swap(a, b);
  return mul_problem(a, b);
}

std::optional<Problem> sample_countdown(Draws& d) {
  const int64_t x = d.uniform(1, kCountdownMax), y = d.uniform(1, kCountdownMax),
                z = d.uniform(1, kCountdownMax);
  const std::vector<int> targets = reachable_targets(x, y, z);
  if (targets.empty()) return std::nullopt;
  const int64_t t = targets[d.uniform(0, int64_t(targets.size()) - 1)];
  return countdown_problem(x, y, z, t);
}

class FamilyTask : public Task {
 public:
  FamilyTask(std::string name, uint64_t id, Sampler sampler)
      : name_(std::move(name)), id_(id), sampler_(sampler) {}
  std::string name() const override { return name_; }

  Problem generate(uint64_t seed, uint64_t index, Split split) const override {
    for (uint64_t attempt = 0; attempt < kMaxAttempts; attempt++) {
      Draws draws(seed, id_, index, split, attempt);
      std::optional<Problem> p = sampler_(draws);
      if (p && problem_split(*p) == split) return std::move(*p);
    }
    throw std::logic_error(name_ + ": no problem in the split after many draws");
  }
  Score score(const Problem& p, std::string_view completion,
              const RewardWeights& w) const override {
    return score_completion(p, completion, w);
  }
  Trace trace(const Problem& p) const override { return teacher_trace(p); }

  // The teacher's trace of a problem of any family.
  static Trace teacher_trace(const Problem& p) {
    const auto& n = p.numbers;
    if (p.family == "add_sub" && n.size() == 2) return add_sub_trace(n[0], p.op, n[1]);
    if (p.family == "mul" && n.size() == 2) return mul_trace(n[0], n[1]);
    if (p.family == "countdown" && n.size() == 4)
      if (std::optional<Trace> t = countdown_trace(n[0], n[1], n[2], n[3])) return *t;
    throw std::invalid_argument("no teacher trace for the problem '" + p.prompt + "'");
  }

 private:
  std::string name_;
  uint64_t id_;
  Sampler sampler_;
};

// "all": family index % 3.
// Several families in one stream: problem `index` comes from family `index % n` (the family's
// own generator keyed by the same index, so "all" and a single family never share a problem
// draw). "all" is add_sub, mul, countdown; "mul,countdown" mixes the two (GRPO on both).
class MixTask : public Task {
 public:
  MixTask(std::string name, std::vector<std::unique_ptr<FamilyTask>> families)
      : name_(std::move(name)), families_(std::move(families)) {}
  std::string name() const override { return name_; }
  Problem generate(uint64_t seed, uint64_t index, Split split) const override {
    return families_[index % families_.size()]->generate(seed, index, split);
  }
  Score score(const Problem& p, std::string_view completion,
              const RewardWeights& w) const override {
    return score_completion(p, completion, w);
  }
  Trace trace(const Problem& p) const override { return FamilyTask::teacher_trace(p); }

 private:
  std::string name_;
  std::vector<std::unique_ptr<FamilyTask>> families_;
};

std::unique_ptr<FamilyTask> family_task(std::string_view name) {
  if (name == "add_sub") return std::make_unique<FamilyTask>("add_sub", 0, sample_add_sub);
  if (name == "mul") return std::make_unique<FamilyTask>("mul", 1, sample_mul);
  if (name == "countdown") return std::make_unique<FamilyTask>("countdown", 2, sample_countdown);
  return nullptr;
}

}  // namespace

Problem add_sub_problem(int64_t a, char op, int64_t b) {
  Problem p{"add_sub", arithmetic_prompt(a, op, b), {a, b}, op, ""};
  p.answer = content_answer(add_sub_trace(a, op, b).content);
  return p;
}

Problem mul_problem(int64_t a, int64_t b) {
  Problem p{"mul", arithmetic_prompt(a, '*', b), {a, b}, '*', ""};
  p.answer = content_answer(mul_trace(a, b).content);
  return p;
}

std::optional<Problem> countdown_problem(int64_t x, int64_t y, int64_t z, int64_t t) {
  const std::optional<Trace> trace = countdown_trace(x, y, z, t);
  if (!trace) return std::nullopt;
  const std::string prompt = "Using the numbers " + std::to_string(x) + ", " + std::to_string(y) +
                             ", " + std::to_string(z) + ", make " + std::to_string(t) + ".";
  return Problem{"countdown", prompt, {x, y, z, t}, 0, content_answer(trace->content)};
}

std::string problem_key(const Problem& p) {
  // Canonical: the same problem stated in another order is the same key (a + b and b + a,
  // a * b and b * a, the three countdown numbers in any order), so no reordered copy of an
  // evaluation problem is ever trained on.
  std::vector<int64_t> n = p.numbers;
  if (p.family == "countdown" && n.size() == 4) {
    std::sort(n.begin(), n.begin() + 3);
    return "countdown:" + std::to_string(n[0]) + "," + std::to_string(n[1]) + "," +
           std::to_string(n[2]) + "->" + std::to_string(n[3]);
  }
  if ((p.op == '+' || p.op == '*') && n.size() == 2 && n[0] > n[1]) std::swap(n[0], n[1]);
  std::string key = p.family + ":";
  for (size_t i = 0; i < n.size(); i++) {
    if (i) key += p.op;
    key += std::to_string(n[i]);
  }
  return key;
}

Split problem_split(const Problem& p) {
  return fnv1a(problem_key(p)) % 8 == 0 ? Split::Eval : Split::Train;
}

std::optional<Problem> parse_problem(std::string_view prompt) {
  if (prompt.starts_with("What is ")) return parse_arithmetic(prompt);
  return parse_countdown(prompt);
}

std::vector<int> reachable_targets(int64_t x, int64_t y, int64_t z) {
  const bool small = std::min({x, y, z}) >= 1 && std::max({x, y, z}) <= kCountdownMax;
  const std::bitset<kTargetMax + 1> bits =
      small ? cached_reachable(x, y, z) : compute_reachable(x, y, z);
  std::vector<int> out;
  for (int t = 1; t <= kTargetMax; t++)
    if (bits[t]) out.push_back(t);
  return out;
}

std::vector<std::string> task_names() {
  return {"add_sub", "mul", "countdown", "all"};
}

std::unique_ptr<Task> make_task(std::string_view name) {
  std::string known;
  for (const auto& n : task_names()) known += (known.empty() ? "" : ", ") + n;
  if (name == "all") {
    std::vector<std::unique_ptr<FamilyTask>> fams;
    for (const char* f : {"add_sub", "mul", "countdown"}) fams.push_back(family_task(f));
    return std::make_unique<MixTask>("all", std::move(fams));
  }
  if (name.find(',') == std::string_view::npos) {
    if (auto t = family_task(name)) return t;
    throw std::invalid_argument("unknown task '" + std::string(name) + "' (known: " + known +
                                ", or a comma-separated list of families)");
  }
  // "mul,countdown": a mixture of distinct families.
  std::vector<std::unique_ptr<FamilyTask>> fams;
  std::vector<std::string> seen;
  size_t start = 0;
  while (start <= name.size()) {
    const size_t comma = std::min(name.find(',', start), name.size());
    const std::string part(name.substr(start, comma - start));
    auto t = family_task(part);
    if (!t)
      throw std::invalid_argument("unknown task '" + part + "' in '" + std::string(name) +
                                  "' (families: add_sub, mul, countdown)");
    if (std::find(seen.begin(), seen.end(), part) != seen.end())
      throw std::invalid_argument("task '" + part + "' twice in '" + std::string(name) + "'");
    seen.push_back(part);
    fams.push_back(std::move(t));
    start = comma + 1;
  }
  return std::make_unique<MixTask>(std::string(name), std::move(fams));
}

}  // namespace whale::reason
