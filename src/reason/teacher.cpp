#include "reason/teacher.h"

#include <string_view>
#include <type_traits>
#include <vector>

namespace whale::reason {
namespace {

constexpr std::string_view kContentHead = "The answer is \\boxed{";
constexpr std::string_view kContentTail = "}.";

using Lines = std::vector<std::string>;

// cat(47, '*', 8, ":") == "47*8:" (integers in decimal, chars and strings as they are).
template <class T>
void put(std::string& s, const T& v) {
  if constexpr (std::is_same_v<T, char> || !std::is_integral_v<T>)
    s += v;
  else
    s += std::to_string(v);
}
template <class... T>
std::string cat(const T&... parts) {
  std::string s;
  (put(s, parts), ...);
  return s;
}

std::string join(const Lines& lines, std::string_view sep) {
  std::string s;
  for (size_t i = 0; i < lines.size(); i++) s += (i ? std::string(sep) : "") + lines[i];
  return s;
}

// The last digit of `s`, removed from it (0 when `s` is empty).
int64_t pop_digit(std::string& s) {
  if (s.empty()) return 0;
  const int64_t d = s.back() - '0';
  s.pop_back();
  return d;
}

void push_digit(std::string& r, int64_t d) {
  r.insert(r.begin(), char('0' + d));
}

// Column addition of non-negative a + b: the header line, one line per column, the result line.
int64_t add_lines(int64_t a, int64_t b, Lines& lines) {
  std::string A = std::to_string(a), B = std::to_string(b), r;
  lines.push_back(cat(A, '+', B));
  int64_t carry = 0;
  while (!A.empty() || !B.empty() || carry) {
    const int64_t x = pop_digit(A), y = pop_digit(B), s = x + y + carry;
    carry = s / 10;
    push_digit(r, s % 10);
    lines.push_back(
        cat(x, '+', y, '+', s - x - y, '=', s, ", ", A, '+', B, ", c", carry, ", r", r));
  }
  const int64_t res = r.empty() ? 0 : std::stoll(r);
  lines.push_back(cat(a, '+', b, '=', res));
  return res;
}

// Column subtraction a - b of non-negative numbers. When a < b the trace says so first and
// subtracts the other way round, so that every number it copies is on the line above.
int64_t sub_lines(int64_t a, int64_t b, Lines& lines) {
  std::string A = std::to_string(a), B = std::to_string(b), r;
  lines.push_back(cat(A, '-', B));
  if (a < b) {
    lines.push_back(cat(a, '<', b, ", so ", a, '-', b, "=-(", b, '-', a, ')'));
    const int64_t res = -sub_lines(b, a, lines);
    lines.push_back(cat(a, '-', b, '=', res));
    return res;
  }
  int64_t borrow = 0;
  while (!A.empty() || !B.empty()) {
    const int64_t x = pop_digit(A), y = pop_digit(B);
    int64_t d = x - y - borrow;
    std::string head = cat(x, '-', y, '-', borrow, '=', d);
    borrow = d < 0;
    if (borrow) {
      d += 10;
      head += cat(", +10=", d);
    }
    push_digit(r, d);
    lines.push_back(cat(head, ", ", A, '-', B, ", b", borrow, ", r", r));
  }
  const int64_t res = std::stoll(r);
  lines.push_back(cat(a, '-', b, '=', res));
  return res;
}

// top * d for one digit d.
int64_t mul_digit_lines(int64_t top, int64_t d, Lines& lines) {
  std::string T = std::to_string(top), r;
  lines.push_back(cat(top, '*', d, ':'));
  int64_t carry = 0;
  while (!T.empty() || carry) {
    const int64_t x = pop_digit(T), p = x * d + carry;
    lines.push_back(cat(x, '*', d, '+', carry, '=', p, ", ", T, ", c", p / 10, ", r", p % 10, r));
    carry = p / 10;
    push_digit(r, p % 10);
  }
  const int64_t res = std::stoll(r);
  lines.push_back(cat(top, '*', d, '=', res));
  return res;
}

// The longer operand (the first when equally long) times each digit of the other, shifted, added.
int64_t mul_lines(int64_t a, int64_t b, Lines& lines) {
  const std::string sa = std::to_string(a), sb = std::to_string(b);
  const bool a_on_top = sa.size() >= sb.size();
  const int64_t top = a_on_top ? a : b;
  const std::string& bottom = a_on_top ? sb : sa;
  lines.push_back(cat(a, '*', b));
  std::vector<int64_t> partials;
  for (size_t k = 0; k < bottom.size(); k++) {
    const char ch = bottom[bottom.size() - 1 - k];
    int64_t p = mul_digit_lines(top, ch - '0', lines);
    if (k) {
      for (size_t i = 0; i < k; i++) p *= 10;
      lines.push_back(cat(top, '*', ch, std::string(k, '0'), '=', p));
    }
    partials.push_back(p);
  }
  int64_t total = partials[0];
  for (size_t i = 1; i < partials.size(); i++) total = add_lines(total, partials[i], lines);
  lines.push_back(cat(a, '*', b, '=', a * b));
  return a * b;
}

// ------------------------------------------------------------------ countdown

// A value the pair must make for "pair (op) c" or "c (op) pair" to give t.
struct Need {
  int64_t value;
  std::string text;      // "32-7"
  std::string_view rel;  // "r+c", "r-c", "c-r", "r/c", "r*c", "c/r" (r: the pair's value)
};

std::vector<Need> needs(int64_t t, int64_t c) {
  std::vector<Need> out;
  if (t - c >= 0) out.push_back({t - c, cat(t, '-', c), "r+c"});
  out.push_back({t + c, cat(t, '+', c), "r-c"});
  if (c - t > 0) out.push_back({c - t, cat(c, '-', t), "c-r"});
  out.push_back({t * c, cat(t, '*', c), "r/c"});
  if (t % c == 0) out.push_back({t / c, cat(t, '/', c), "r*c"});
  if (c % t == 0) out.push_back({c / t, cat(c, '/', t), "c/r"});
  return out;
}

// A value the pair makes: a+b, a-b, a*b, a/b (the larger first for - and /; / when exact).
struct PairValue {
  int64_t value;
  std::string text;  // "7*5"
  std::string expr;  // "7 * 5"
};

std::vector<PairValue> pair_values(int64_t a, int64_t b) {
  const int64_t big = a >= b ? a : b, small = a >= b ? b : a;
  std::vector<PairValue> out = {{a + b, cat(a, '+', b), cat(a, " + ", b)},
                                {big - small, cat(big, '-', small), cat(big, " - ", small)},
                                {a * b, cat(a, '*', b), cat(a, " * ", b)}};
  if (big % small == 0) out.push_back({big / small, cat(big, '/', small), cat(big, " / ", small)});
  return out;
}

template <class T>
std::string values_text(const std::vector<T>& items) {
  Lines parts;
  for (const auto& item : items) parts.push_back(cat(item.text, '=', item.value));
  return join(parts, " ");
}

// The check line's "35-3=32" and the final expression "(7 * 5) - 3" of a found relation.
std::pair<std::string, std::string> finish(const PairValue& pair, std::string_view rel, int64_t c,
                                           int64_t t) {
  const int64_t v = pair.value;
  const std::string& e = pair.expr;
  if (rel == "r+c") return {cat(v, '+', c, '=', t), cat('(', e, ") + ", c)};
  if (rel == "r-c") return {cat(v, '-', c, '=', t), cat('(', e, ") - ", c)};
  if (rel == "c-r") return {cat(c, '-', v, '=', t), cat(c, " - (", e, ')')};
  if (rel == "r/c") return {cat(v, '/', c, '=', t), cat('(', e, ") / ", c)};
  if (rel == "r*c") return {cat(v, '*', c, '=', t), cat('(', e, ") * ", c)};
  return {cat(c, '/', v, '=', t), cat(c, " / (", e, ')')};
}

}  // namespace

std::string answer_content(const std::string& answer) {
  return cat(kContentHead, answer, kContentTail);
}

std::string content_answer(const std::string& content) {
  const std::string_view s = content;
  if (!s.starts_with(kContentHead) || !s.ends_with(kContentTail) ||
      s.size() < kContentHead.size() + kContentTail.size())
    return "";
  return std::string(
      s.substr(kContentHead.size(), s.size() - kContentHead.size() - kContentTail.size()));
}

Trace add_sub_trace(int64_t a, char op, int64_t b) {
  Lines lines;
  const int64_t res = op == '+' ? add_lines(a, b, lines) : sub_lines(a, b, lines);
  return {join(lines, "\n"), answer_content(std::to_string(res))};
}

Trace mul_trace(int64_t a, int64_t b) {
  Lines lines;
  const int64_t res = mul_lines(a, b, lines);
  return {join(lines, "\n"), answer_content(std::to_string(res))};
}

std::optional<Trace> countdown_trace(int64_t x, int64_t y, int64_t z, int64_t t) {
  if (x <= 0 || y <= 0 || z <= 0 || t <= 0) return std::nullopt;
  const int64_t nums[3] = {x, y, z};
  Lines lines{cat(x, ' ', y, ' ', z, " -> ", t)};
  for (int i = 0; i < 3; i++) {
    const int64_t c = nums[i], a = nums[i == 0 ? 1 : 0], b = nums[i == 2 ? 1 : 2];
    const std::vector<Need> need = needs(t, c);
    const std::vector<PairValue> pairs = pair_values(a, b);
    const std::string head = cat(c, ": ", values_text(need), " | ", values_text(pairs), " | ");
    for (const PairValue& pair : pairs) {
      for (const Need& n : need) {
        if (n.value != pair.value || (n.rel == "c/r" && pair.value == 0)) continue;
        const auto [check, final_expr] = finish(pair, n.rel, c, t);
        lines.push_back(cat(head, "found ", pair.text, '=', pair.value, ", ", check));
        return Trace{join(lines, "\n"), answer_content(final_expr)};
      }
    }
    lines.push_back(head + "no");
  }
  return std::nullopt;
}

}  // namespace whale::reason
