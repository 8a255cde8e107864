// `whale eval` (reason/eval.h): the pass@k estimator by hand, the tally on completions from a fake
// source, the problems from the held-out split, and the whole path on a scripted R1 model
// (scripts/gen_model.py --script) whose only answer is right for a known share of the problems.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "reason/eval.h"
#include "reason/task.h"
#include "test_util.h"

namespace whale::reason {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// "What is {a} + 3?" for a = index % 8 (Eval: a, Train: a + 100). Correct: the text after the
// first "</think>" holds exactly "\boxed{a+3}"; formatted: a "</think>" and a \boxed{...} after it.
class PlusThreeTask : public Task {
 public:
  mutable std::vector<Split> splits;  // every generate() call's split
  std::string name() const override { return "plus3"; }
  Problem generate(uint64_t, uint64_t index, Split split) const override {
    splits.push_back(split);
    Problem p;
    const int64_t a = int64_t(index % 8) + (split == Split::Train ? 100 : 0);
    p.family = index % 2 ? "odd" : "even";
    p.prompt = "What is " + std::to_string(a) + " + 3?";
    p.numbers = {a, 3};
    p.op = '+';
    p.answer = std::to_string(a + 3);
    return p;
  }
  Score score(const Problem& p, std::string_view c, const RewardWeights& w) const override {
    Score s;
    const size_t end = c.find("</think>");
    const size_t box = end == std::string_view::npos ? end : c.find("\\boxed{", end);
    s.formatted = box != std::string_view::npos;
    if (s.formatted) {
      const size_t close = c.find('}', box);
      s.answer = std::string(c.substr(box + 7, close - box - 7));
      s.correct = s.answer == p.answer;
    }
    s.why = s.correct ? "" : s.formatted ? "wrong answer" : "no </think> and \\boxed{}";
    s.reward = w.correct * s.correct + w.format * s.formatted;
    return s;
  }
  Trace trace(const Problem& p) const override {
    return {"Add.", "The answer is \\boxed{" + p.answer + "}."};
  }
};

std::string answer(const std::string& a) {
  return "Hmm.\n</think>\n\nThe answer is \\boxed{" + a + "}.";
}

TEST(ReasonEval, PassAtKByHand) {
  // 1 - C(n-c, k) / C(n, k)
  EXPECT_NEAR(pass_at_k(4, 1, 2), 1.0 - 3.0 / 6.0, 1e-12);
  EXPECT_NEAR(pass_at_k(5, 2, 1), 0.4, 1e-12);
  EXPECT_NEAR(pass_at_k(10, 3, 4), 1.0 - 35.0 / 210.0, 1e-12);
  EXPECT_DOUBLE_EQ(pass_at_k(8, 0, 8), 0.0);
  // n = k: any of the k correct.
  for (int64_t c = 1; c <= 8; c++) EXPECT_DOUBLE_EQ(pass_at_k(8, c, 8), 1.0) << c;
  EXPECT_THROW(pass_at_k(4, 5, 2), std::invalid_argument);
  EXPECT_THROW(pass_at_k(4, 1, 0), std::invalid_argument);
  EXPECT_THROW(pass_at_k(4, 1, 5), std::invalid_argument);
}

TEST(ReasonEval, ProblemsComeFromTheEvalSplit) {
  PlusThreeTask task;
  const std::vector<Problem> ps = eval_problems(task, 1000, 5);
  ASSERT_EQ(ps.size(), 5u);
  ASSERT_EQ(task.splits.size(), 5u);
  for (Split s : task.splits) EXPECT_EQ(s, Split::Eval);
  EXPECT_EQ(ps[4].prompt, "What is 4 + 3?");
}

// Completions chosen per problem: greedy right for a = 0, 1, 2 (of 0..7), wrong for 3, 4, and
// unformatted for 5, 6, 7; of the k = 2 samples, a's first is right iff a is even, the second
// never. Tokens: the greedy length is 10 + a.
TEST(ReasonEval, TallyOfAFakeSource) {
  PlusThreeTask task;
  EvalOptions o;
  o.k = 2;
  o.batch = 3;
  o.progress = false;
  std::vector<uint64_t> firsts;
  CompletionSource source = [&](std::span<const Problem> ps, uint64_t first, int64_t group,
                                bool greedy) {
    firsts.push_back(first);
    std::vector<EvalSample> out;
    for (const Problem& p : ps) {
      const int64_t a = p.numbers[0];
      if (greedy) {
        EXPECT_EQ(group, 1);
        const std::string text = a <= 2   ? answer(p.answer)
                                 : a <= 4 ? answer("99")
                                          : "I do not know.";
        out.push_back({text, 10 + a});
      } else {
        EXPECT_EQ(group, 2);
        out.push_back({answer(a % 2 == 0 ? p.answer : "0"), 5});
        out.push_back({answer("0"), 5});
      }
    }
    return out;
  };
  const std::vector<Problem> ps = eval_problems(task, 1, 8);
  const EvalTally t = evaluate(task, ps, source, o);
  EXPECT_EQ(firsts, (std::vector<uint64_t>{0, 0, 3, 3, 6, 6}));
  ASSERT_EQ(t.families().size(), 2u);
  const FamilyResult& even = t.families()[0];  // a = 0, 2, 4, 6
  const FamilyResult& odd = t.families()[1];   // a = 1, 3, 5, 7
  EXPECT_EQ(even.family, "even");
  EXPECT_EQ(even.n, 4);
  EXPECT_DOUBLE_EQ(even.pass1(), 0.5);         // 0, 2
  EXPECT_DOUBLE_EQ(even.pass_k(), 1.0);        // every even a has a right sample
  EXPECT_DOUBLE_EQ(even.format_rate(), 0.75);  // 6 unformatted
  EXPECT_DOUBLE_EQ(even.mean_length(), 13.0);  // 10 + mean(0, 2, 4, 6)
  EXPECT_NEAR(even.mean_reward(), (1.1 + 1.1 + 0.1 + 0) / 4, 1e-12);
  EXPECT_EQ(odd.n, 4);
  EXPECT_DOUBLE_EQ(odd.pass1(), 0.25);       // 1
  EXPECT_DOUBLE_EQ(odd.pass_k(), 0.0);       // odd samples are all wrong
  EXPECT_DOUBLE_EQ(odd.format_rate(), 0.5);  // 5, 7 unformatted
  const FamilyResult all = t.total();
  EXPECT_EQ(all.n, 8);
  EXPECT_DOUBLE_EQ(all.pass1(), 3.0 / 8);
  EXPECT_DOUBLE_EQ(all.pass_k(), 0.5);
  // Three examples per family, the first problems', with the verifier's reason.
  ASSERT_EQ(even.examples.size(), 3u);
  EXPECT_EQ(even.examples[2].prompt, "What is 4 + 3?");
  EXPECT_EQ(even.examples[2].why, "wrong answer");
  EXPECT_FALSE(even.examples[2].correct);
  // And the wrong ones: even a = 4, 6 and odd a = 3, 5, 7.
  ASSERT_EQ(even.failures.size(), 2u);
  EXPECT_EQ(even.failures[0].prompt, "What is 4 + 3?");
  EXPECT_EQ(odd.failures.size(), 3u);

  const std::string table = eval_table(t);
  EXPECT_NE(table.find("pass@2"), std::string::npos) << table;
  EXPECT_NE(table.find("even            4   0.500   1.000   0.750        13.0"), std::string::npos)
      << table;
  EXPECT_NE(table.find("all             8   0.375   0.500"), std::string::npos) << table;
  const json j = json::parse(eval_json(t, o, 1.5));
  EXPECT_EQ(j["k"], 2);
  EXPECT_EQ(j["wall_s"], 1.5);
  EXPECT_EQ(j["families"][1]["family"], "odd");
  EXPECT_DOUBLE_EQ(j["families"][1]["pass@1"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(j["total"]["pass@k"].get<double>(), 0.5);
  EXPECT_EQ(j["examples"].size(), 6u);
  ASSERT_EQ(j["failures"].size(), 5u);
  EXPECT_EQ(j["failures"][2]["family"], "odd");
  EXPECT_EQ(j["failures"][2]["correct"], false);

  // k = 0: no samples asked for, pass@k absent.
  o.k = 0;
  firsts.clear();
  const EvalTally t0 = evaluate(task, ps, source, o);
  EXPECT_EQ(firsts, (std::vector<uint64_t>{0, 3, 6}));
  EXPECT_TRUE(json::parse(eval_json(t0, o, 0))["total"]["pass@k"].is_null());
}

TEST(ReasonEval, OptionErrors) {
  EvalOptions o;
  EXPECT_NO_THROW(check_eval_options(o));
  auto bad = [](auto set) {
    EvalOptions x;
    set(x);
    EXPECT_THROW(check_eval_options(x), std::invalid_argument);
  };
  bad([](EvalOptions& x) { x.n = 0; });
  bad([](EvalOptions& x) { x.k = -1; });
  bad([](EvalOptions& x) { x.batch = 0; });
  bad([](EvalOptions& x) { x.max_tokens = 0; });
  bad([](EvalOptions& x) { x.temperature = 0; });
  o.k = 0;
  o.temperature = 0;
  EXPECT_NO_THROW(check_eval_options(o));
}

// ------------------------------------------------------------------ a scripted model

using whale::testing::file_bytes;
using whale::testing::Result;
using whale::testing::run_whale;
using whale::testing::scripted_model;
using whale::testing::sh;

const std::string kSevenScript =
    "Four plus three makes seven.\n</think>\n\nThe answer is \\boxed{7}.";

TEST(ReasonEval, ScriptedModelThroughTheModel) {
  const std::string dir = scripted_model("eval-seven", kSevenScript);
  const ModelCompleter model(dir, "--model");
  EXPECT_EQ(model.render("Hi").substr(model.render("Hi").size() - 8), "<think>\n");
  PlusThreeTask task;
  EvalOptions o;
  o.k = 2;
  o.batch = 3;
  o.max_tokens = 64;
  o.progress = false;
  const std::vector<Problem> ps = eval_problems(task, o.seed, 8);
  CompletionSource source = [&](std::span<const Problem> b, uint64_t first, int64_t group,
                                bool greedy) {
    std::vector<std::string> users;
    std::vector<uint64_t> seeds;
    for (size_t i = 0; i < b.size(); i++) {
      users.push_back(b[i].prompt);
      for (int64_t g = 0; g < group; g++) seeds.push_back(eval_seed(o.seed, first + i, g));
    }
    return model.complete(users, group, greedy ? 0.0f : o.temperature, o.max_tokens, seeds);
  };
  const EvalTally t = evaluate(task, ps, source, o);
  const FamilyResult all = t.total();
  EXPECT_EQ(all.n, 8);
  EXPECT_DOUBLE_EQ(all.pass1(), 1.0 / 8);  // only 4 + 3 is 7
  EXPECT_DOUBLE_EQ(all.pass_k(), 1.0 / 8);
  EXPECT_DOUBLE_EQ(all.format_rate(), 1.0);
  const int64_t len = int64_t(model.tokenizer().encode(kSevenScript).size());
  EXPECT_DOUBLE_EQ(all.mean_length(), double(len));
  ASSERT_FALSE(t.families()[0].examples.empty());
  EXPECT_EQ(t.families()[0].examples[0].completion, kSevenScript);  // eos stripped
}

TEST(ReasonEval, ModelErrors) {
  const std::string dir = scripted_model("eval-seven", kSevenScript);
  const fs::path bare = fs::temp_directory_path() / ("whale_eval_bare_" + std::to_string(getpid()));
  fs::remove_all(bare);
  fs::create_directories(bare);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"})
    fs::copy_file(fs::path(dir) / f, bare / f);
  try {
    ModelCompleter m(bare.string(), "whale eval: --model");
    ADD_FAILURE() << "no error without a chat template";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("chat template"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(bare.string()), std::string::npos) << e.what();
  }
  fs::remove(bare / "tokenizer.json");
  EXPECT_THROW(ModelCompleter(bare.string(), "--model"), std::invalid_argument);
  fs::remove_all(bare);

  const Result r = sh(std::string(WHALE_BINARY) + " eval --model " + dir + " --task nope --n 2");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
}

// The CLI on the real add_sub task, with a model scripted to answer the first held-out problem:
// that problem (and any other with the same answer) is right, every completion is formatted.
TEST(ReasonEval, CliOnAScriptedModel) {
  const std::unique_ptr<Task> task = make_task("add_sub");
  const std::vector<Problem> ps = eval_problems(*task, 1000, 6);
  for (const Problem& p : ps) EXPECT_EQ(problem_split(p), Split::Eval) << p.prompt;
  const std::string script = "Done.\n</think>\n\nThe answer is \\boxed{" + ps[0].answer + "}.";
  const std::string dir = scripted_model("eval-addsub-" + ps[0].answer, script);
  int64_t right = 0;
  for (const Problem& p : ps) right += p.answer == ps[0].answer;
  const fs::path out = fs::temp_directory_path() / ("whale_eval_" + std::to_string(getpid()));
  const Result r =
      sh(std::string(WHALE_BINARY) + " eval --model " + dir +
         " --task add_sub --n 6 --k 2 --batch 4 --max-tokens 48 --json " + out.string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("pass@1"), std::string::npos) << r.out;
  std::ifstream in(out);
  const json j = json::parse(in);
  EXPECT_EQ(j["n"], 6);
  EXPECT_EQ(j["families"][0]["family"], "add_sub");
  EXPECT_DOUBLE_EQ(j["families"][0]["pass@1"].get<double>(), double(right) / 6);
  EXPECT_DOUBLE_EQ(j["families"][0]["pass@k"].get<double>(), double(right) / 6);
  EXPECT_DOUBLE_EQ(j["families"][0]["format"].get<double>(), 1.0);
  EXPECT_EQ(j["examples"][0]["prompt"], ps[0].prompt);
  EXPECT_EQ(j["examples"][0]["completion"], script);
  fs::remove(out);
}

}  // namespace
}  // namespace whale::reason
