#include "reason/verify.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace whale::reason {
namespace {

constexpr std::string_view kThinkEnd = "</think>";
constexpr std::string_view kThinkOpen = "<think>";
constexpr std::string_view kBoxed = "\\boxed";
// What may follow the box: the end of its sentence.
constexpr std::string_view kTrailing = " \t\r\n.,;:!?)]\"'*_`$";
constexpr size_t kQuoteBytes = 40;
constexpr int kMaxDepth = 100;
constexpr size_t kMaxDigits = 18;

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

size_t count_of(std::string_view s, std::string_view what) {
  size_t n = 0;
  for (size_t at = s.find(what); at != std::string_view::npos; at = s.find(what, at + what.size()))
    n++;
  return n;
}

// "two boxes", "3 boxes".
std::string times(size_t n, std::string_view plural) {
  return (n == 2 ? std::string("two") : std::to_string(n)) + " " + std::string(plural);
}
// "once", "twice", "three times", "4 times".
std::string times(size_t n) {
  return n == 1 ? "once" : n == 2 ? "twice" : n == 3 ? "three times" : std::to_string(n) + " times";
}

// The text, cut to kQuoteBytes at a UTF-8 character boundary ("..." when cut).
std::string cut(std::string_view s) {
  if (s.size() <= kQuoteBytes) return std::string(s);
  size_t n = kQuoteBytes;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) n--;
  return std::string(s.substr(0, n)) + "...";
}

// Digits without leading zeros ("0" for none); -1 when more than kMaxDigits remain.
int64_t digits_value(std::string_view digits) {
  while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
  if (digits.size() > kMaxDigits) return -1;
  int64_t v = 0;
  for (char c : digits) v = v * 10 + (c - '0');
  return v;
}

// ------------------------------------------------------------------ expressions

// Recursive descent over the grammar of verify.h. A syntax error stops the parse; an evaluation
// error (division by zero, overflow) only drops the value, so the numbers are still all read.
class ExprParser {
 public:
  explicit ExprParser(std::string_view s) : s_(s) {}

  Expression run() {
    if (trim(s_).empty()) {
      fail("empty");
      return std::move(e_);
    }
    e_.value = expr(0);
    if (ok() && peek().kind == '=') {
      next();
      const Token t = next();
      if (t.kind == 'n')
        e_.equals = t.number;
      else
        fail("'=' not followed by an integer");
    }
    if (ok() && peek().kind != 0)
      fail(peek().kind == ')' ? "unbalanced parentheses" : "unexpected " + quote(peek().text));
    if (!ok()) e_.value.reset();
    return std::move(e_);
  }

 private:
  using Value = std::optional<Rational>;
  struct Token {
    char kind = 0;  // 0 end, 'n' number, + - * / ( ) =, '?' anything else
    std::string_view text;
    size_t end = 0;  // offset after the token
    int64_t number = 0;
  };

  bool ok() const { return e_.error.empty(); }
  Value fail(const std::string& why) {
    if (ok()) e_.error = why;
    return std::nullopt;
  }
  Value note(const char* why) {
    if (e_.eval_error.empty()) e_.eval_error = why;
    return std::nullopt;
  }

  // The token at pos_, after whitespace.
  Token peek() const {
    static constexpr std::pair<std::string_view, char> kAliases[] = {
        {"×", '*'}, {"·", '*'},     {"\\times", '*'}, {"\\cdot", '*'},
        {"÷", '/'}, {"\\div", '/'}, {"−", '-'}};
    size_t start = pos_;
    while (start < s_.size() && is_space(s_[start])) start++;
    const std::string_view rest = s_.substr(start);
    auto token = [&](char kind, size_t len, int64_t number = 0) {
      return Token{kind, rest.substr(0, len), start + len, number};
    };
    if (rest.empty()) return token(0, 0);
    if (is_digit(rest[0])) {
      size_t len = 1;
      while (len < rest.size() && is_digit(rest[len])) len++;
      return token('n', len, digits_value(rest.substr(0, len)));
    }
    for (const auto& [alias, op] : kAliases)
      if (rest.starts_with(alias)) return token(op, alias.size());
    if (std::string_view("+-*/()=").find(rest[0]) != std::string_view::npos)
      return token(rest[0], 1);
    // Anything else: one UTF-8 character, for the message.
    size_t len = 1;
    while (len < rest.size() && (static_cast<unsigned char>(rest[len]) & 0xC0) == 0x80) len++;
    return token('?', len);
  }
  Token next() {
    const Token t = peek();
    pos_ = t.end;
    return t;
  }

  Value combine(char op, const Value& a, const Value& b) {
    if (!a || !b) return std::nullopt;
    if (op == '/' && b->num == 0) return note("division by zero");
    const Value r = op == '+'   ? add(*a, *b)
                    : op == '-' ? sub(*a, *b)
                    : op == '*' ? mul(*a, *b)
                                : div(*a, *b);
    return r ? r : note("overflow");
  }

  Value expr(int depth) {
    Value v = term(depth);
    while (ok() && (peek().kind == '+' || peek().kind == '-')) {
      const char op = next().kind;
      const Value r = term(depth);
      v = combine(op, v, r);
    }
    return v;
  }

  Value term(int depth) {
    Value v = factor(depth);
    while (ok() && (peek().kind == '*' || peek().kind == '/')) {
      const char op = next().kind;
      const Value r = factor(depth);
      v = combine(op, v, r);
    }
    return v;
  }

  Value factor(int depth) {
    const Token t = next();
    switch (t.kind) {
      case 'n':
        e_.numbers.push_back(t.number);
        return t.number < 0 ? note("overflow") : Value(Rational{t.number, 1});
      case '(': {
        if (depth >= kMaxDepth) return fail("more than 100 nested parentheses");
        Value v = expr(depth + 1);
        if (ok() && next().kind != ')') fail("unbalanced parentheses");
        return v;
      }
      case '+':
      case '-':
        return fail("a sign before a number");
      case 0:
        return fail("ends too early");
      default:
        return fail("unexpected " + quote(t.text));
    }
  }

  std::string_view s_;
  size_t pos_ = 0;
  Expression e_;
};

std::string number_text(int64_t n) {
  return n < 0 ? "a number of more than 18 digits" : std::to_string(n);
}

// Each given number used exactly as often as it is given, and no other: "" or the reason.
std::string check_numbers(const std::vector<int64_t>& used, const std::vector<int64_t>& given) {
  auto in = [](const std::vector<int64_t>& v, int64_t n) {
    return std::count(v.begin(), v.end(), n);
  };
  for (int64_t n : used)
    if (in(given, n) == 0) return "uses " + number_text(n) + " which is not given";
  for (int64_t n : used) {
    const auto u = in(used, n), g = in(given, n);
    if (u > g)
      return "uses " + number_text(n) + " " + times(u) + (g > 1 ? " (given " + times(g) + ")" : "");
  }
  for (int64_t n : given) {
    const auto u = in(used, n), g = in(given, n);
    if (u == 0) return "does not use " + std::to_string(n);
    if (u < g) return "uses " + std::to_string(n) + " " + times(u) + " (given " + times(g) + ")";
  }
  return "";
}

// ------------------------------------------------------------------ completions

// Why a completion is not formatted ("" when it is).
std::string format_reason(std::string_view text, const Completion& c) {
  if (c.think_ends == 0) return "no </think>";
  if (c.think_ends > 1) return times(c.think_ends, "</think>");
  if (c.think_opens > 0) return "<think> in the completion";
  if (c.boxes.empty()) return "no box after </think>";
  const Completion::Box& box = c.boxes.front();
  if (box.begin < c.first_think_end) return "a box before </think>";
  if (c.boxes.size() > 1) return times(c.boxes.size(), "boxes");
  if (!box.has_brace) return "\\boxed without {";
  if (!box.closed) return "unbalanced braces in the box";
  const size_t extra = text.find_first_not_of(kTrailing, box.end);
  if (extra != std::string_view::npos) return "text after the box: " + quote(text.substr(extra));
  return "";
}

// Why the content of the deciding box is not right ("" when it is).
std::string content_reason(const Problem& p, std::string_view boxed) {
  const auto& n = p.numbers;
  if (p.family == "add_sub" && n.size() == 2 && (p.op == '+' || p.op == '-')) {
    int64_t r = 0;
    const bool overflow = p.op == '+' ? __builtin_add_overflow(n[0], n[1], &r)
                                      : __builtin_sub_overflow(n[0], n[1], &r);
    return overflow ? "the problem's result overflows" : check_integer(boxed, r);
  }
  if (p.family == "mul" && n.size() == 2) {
    int64_t r = 0;
    if (__builtin_mul_overflow(n[0], n[1], &r)) return "the problem's result overflows";
    return check_integer(boxed, r);
  }
  if (p.family == "countdown" && n.size() == 4)
    return check_countdown(boxed, {n[0], n[1], n[2]}, n[3]);
  return "not a problem of a known family";
}

}  // namespace

// ------------------------------------------------------------------ rationals

std::optional<Rational> Rational::make(int64_t num, int64_t den) {
  constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
  if (den == 0 || num == kMin || den == kMin) return std::nullopt;
  if (den < 0) num = -num, den = -den;
  const int64_t g = std::gcd(num, den);
  return Rational{num / g, den / g};
}

std::string Rational::str() const {
  return den == 1 ? std::to_string(num) : std::to_string(num) + "/" + std::to_string(den);
}

std::optional<Rational> add(Rational a, Rational b) {
  const int64_t g = std::gcd(a.den, b.den);
  int64_t x, y, num, den;
  if (__builtin_mul_overflow(a.num, b.den / g, &x) ||
      __builtin_mul_overflow(b.num, a.den / g, &y) || __builtin_add_overflow(x, y, &num) ||
      __builtin_mul_overflow(a.den, b.den / g, &den))
    return std::nullopt;
  return Rational::make(num, den);
}

std::optional<Rational> sub(Rational a, Rational b) {
  if (b.num == std::numeric_limits<int64_t>::min()) return std::nullopt;
  return add(a, Rational{-b.num, b.den});
}

std::optional<Rational> mul(Rational a, Rational b) {
  const int64_t g1 = std::gcd(a.num, b.den), g2 = std::gcd(b.num, a.den);
  int64_t num, den;
  if (__builtin_mul_overflow(a.num / g1, b.num / g2, &num) ||
      __builtin_mul_overflow(a.den / g2, b.den / g1, &den))
    return std::nullopt;
  return Rational::make(num, den);
}

std::optional<Rational> div(Rational a, Rational b) {
  if (b.num == 0 || b.num == std::numeric_limits<int64_t>::min()) return std::nullopt;
  return mul(a, b.num < 0 ? Rational{-b.den, -b.num} : Rational{b.den, b.num});
}

// ------------------------------------------------------------------ verdicts

Expression parse_expression(std::string_view text) {
  return ExprParser(text).run();
}

std::string quote(std::string_view text) {
  std::string s = "'";
  s += cut(text);
  s += "'";
  return s;
}

std::string check_integer(std::string_view boxed, int64_t expected) {
  const std::string_view s = trim(boxed);
  if (s.empty()) return "empty box";
  std::string_view digits = s;
  bool negative = false;
  if (digits.starts_with("+")) {
    digits.remove_prefix(1);
  } else if (digits.starts_with("-") || digits.starts_with("−")) {
    negative = true;
    digits.remove_prefix(digits[0] == '-' ? 1 : std::string_view("−").size());
  }
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), is_digit))
    return quote(s) + " is not an integer";
  while (digits.size() > 1 && digits.front() == '0') digits.remove_prefix(1);
  std::string got = negative && digits != "0" ? "-" : "";
  got += digits;
  if (got == std::to_string(expected)) return "";
  return "value " + cut(got) + ", not " + std::to_string(expected);
}

std::string check_countdown(std::string_view boxed, const std::vector<int64_t>& given,
                            int64_t target) {
  const Expression e = parse_expression(boxed);
  if (!e.error.empty()) return "not an expression: " + e.error;
  if (e.equals && *e.equals != target)
    return "states = " + number_text(*e.equals) + ", not " + std::to_string(target);
  if (std::string why = check_numbers(e.numbers, given); !why.empty()) return why;
  if (!e.eval_error.empty()) return e.eval_error;
  if (*e.value != Rational{target, 1})
    return "value " + e.value->str() + ", not " + std::to_string(target);
  return "";
}

Completion read_completion(std::string_view s) {
  Completion c;
  c.think_ends = count_of(s, kThinkEnd);
  c.think_opens = count_of(s, kThinkOpen);
  c.first_think_end = s.find(kThinkEnd);
  // One pass: the brace depth, and the boxes whose "{" still waits for its "}" (with the depth
  // inside it), innermost last.
  std::vector<std::pair<size_t, int64_t>> open;
  int64_t depth = 0;
  for (size_t i = 0; i < s.size();) {
    if (s.substr(i).starts_with(kBoxed)) {
      Completion::Box box;
      box.begin = i;
      box.end = s.size();
      i += kBoxed.size();
      if (i < s.size() && s[i] == '{') {
        box.has_brace = true;
        box.content = s.substr(i + 1);
        open.emplace_back(c.boxes.size(), ++depth);
        i++;
      }
      c.boxes.push_back(box);
      continue;
    }
    if (s[i] == '{') {
      depth++;
    } else if (s[i] == '}') {
      if (!open.empty() && open.back().second == depth) {
        Completion::Box& box = c.boxes[open.back().first];
        box.closed = true;
        box.end = i + 1;
        const size_t from = box.begin + kBoxed.size() + 1;
        box.content = s.substr(from, i - from);
        open.pop_back();
      }
      depth--;
    }
    i++;
  }
  return c;
}

Score score_completion(const Problem& p, std::string_view completion, const RewardWeights& w) {
  Score score;
  const Completion c = read_completion(completion);
  const std::string format_why = format_reason(completion, c);
  std::string why;
  if (c.first_think_end == std::string_view::npos) {
    why = "no </think>";
  } else {
    std::vector<const Completion::Box*> after;
    for (const auto& box : c.boxes)
      if (box.begin > c.first_think_end) after.push_back(&box);
    for (const auto* box : after)
      if (box->closed) score.answer = std::string(box->content);
    if (after.empty())
      why = "no box after </think>";
    else if (after.size() > 1)
      why = times(after.size(), "boxes");
    else if (!after[0]->has_brace)
      why = "\\boxed without {";
    else if (!after[0]->closed)
      why = "unbalanced braces in the box";
    else
      why = content_reason(p, after[0]->content);
  }
  score.correct = why.empty();
  score.formatted = format_why.empty();
  if (!score.formatted && format_why != why) why += (why.empty() ? "" : "; ") + format_why;
  score.why = std::move(why);
  score.reward = w.correct * (score.correct ? 1.0 : 0.0) + w.format * (score.formatted ? 1.0 : 0.0);
  return score;
}

}  // namespace whale::reason
