// `whale distill` (reason/distill.h): the prompts file's errors by FILE:LINE, the SFT line that
// `whale sft` renders back into the teacher's exact completion, the tokenizer check, and the CLI
// on a scripted R1 teacher whose one answer is right for some prompts only: exactly those are kept.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "reason/distill.h"
#include "reason/task.h"
#include "test_util.h"
#include "train/sft_data.h"

namespace whale::reason {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using whale::testing::file_bytes;
using whale::testing::Result;
using whale::testing::scripted_model;
using whale::testing::sh;

// The same script (and so the same cached model) as test_reason_eval's.
const std::string kSevenScript =
    "Four plus three makes seven.\n</think>\n\nThe answer is \\boxed{7}.";

struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name)
      : path(fs::temp_directory_path() /
             ("whale_distill_" + name + "_" + std::to_string(getpid()))) {
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name, const std::string& text = "") const {
    const std::string p = (path / name).string();
    if (!text.empty()) std::ofstream(p) << text;
    return p;
  }
};

void expect_error(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "no error";
  } catch (const std::invalid_argument& e) {
    for (const std::string& p : parts)
      EXPECT_NE(std::string(e.what()).find(p), std::string::npos) << e.what() << "\nmissing " << p;
  }
}

TEST(ReasonDistill, PromptsFile) {
  TempDir d("prompts");
  const std::string ok = d.file("ok.jsonl",
                                "{\"prompt\": \"What is 3 + 4?\"}\n\n"
                                "{\"family\": \"mul\", \"prompt\": \"What is 12 * 34?\"}\n"
                                "{\"prompt\": \"Using the numbers 3, 5, 7, make 32.\"}\n");
  std::vector<Problem> ps = read_distill_prompts(ok, "all", 0);
  ASSERT_EQ(ps.size(), 3u);
  EXPECT_EQ(ps[0].family, "add_sub");
  EXPECT_EQ(ps[0].answer, "7");
  EXPECT_EQ(ps[1].answer, "408");
  EXPECT_EQ(ps[2].family, "countdown");
  EXPECT_EQ(read_distill_prompts(ok, "all", 2).size(), 2u);

  const std::string bad_json = d.file("a.jsonl", "{\"prompt\": \"What is 3 + 4?\"}\n{\"prompt\n");
  expect_error([&] { read_distill_prompts(bad_json, "all", 0); }, {bad_json + ":2:", "not JSON"});
  const std::string no_prompt = d.file("b.jsonl", "{\"messages\": []}\n");
  expect_error([&] { read_distill_prompts(no_prompt, "all", 0); },
               {no_prompt + ":1:", "\"prompt\""});
  const std::string foreign = d.file("c.jsonl", "{\"prompt\": \"Write a poem.\"}\n");
  expect_error([&] { read_distill_prompts(foreign, "all", 0); },
               {foreign + ":1:", "no problem of the tasks", "Write a poem."});
  expect_error([&] { read_distill_prompts(ok, "mul", 0); }, {ok + ":1:", "add_sub", "mul"});
  const std::string empty = d.file("d.jsonl", "\n\n");
  expect_error([&] { read_distill_prompts(empty, "all", 0); }, {empty, "no prompts"});
  expect_error([&] { read_distill_prompts((d.path / "missing.jsonl").string(), "all", 0); },
               {"missing.jsonl"});
}

TEST(ReasonDistill, OptionsChecked) {
  DistillOptions o;
  o.teacher_dir = "t";
  o.out_path = "o.jsonl";
  EXPECT_NO_THROW(check_distill_options(o));
  for (auto change : std::vector<std::function<void(DistillOptions&)>>{
           [](DistillOptions& x) { x.samples = 0; }, [](DistillOptions& x) { x.keep = 0; },
           [](DistillOptions& x) { x.temperature = 0; }, [](DistillOptions& x) { x.n = 0; },
           [](DistillOptions& x) { x.max_tokens = 0; }, [](DistillOptions& x) { x.batch = 0; },
           [](DistillOptions& x) { x.temperature = NAN; }}) {
    DistillOptions b = o;
    change(b);
    EXPECT_THROW(check_distill_options(b), std::invalid_argument);
  }
  o.n = 0;
  o.prompts_path = "p.jsonl";
  EXPECT_NO_THROW(check_distill_options(o));
}

// The SFT line gives back, through whale sft's R1 rendering, exactly the completion + eos as the
// assistant target after the generation prompt "...<｜Assistant｜><think>\n".
TEST(ReasonDistill, ExampleRendersBackToTheCompletion) {
  const std::string line = distill_example_json("What is 3 + 4?", kSevenScript);
  const json j = json::parse(line);
  EXPECT_EQ(j["messages"][0]["content"], "What is 3 + 4?");
  EXPECT_EQ(j["messages"][1]["reasoning_content"], "Four plus three makes seven.");
  EXPECT_EQ(j["messages"][1]["content"], "The answer is \\boxed{7}.");
  const std::optional<train::ChatExample> ex = train::parse_chat_line(line, "x:1");
  ASSERT_TRUE(ex);
  const std::vector<train::ChatPiece> pieces =
      train::render_training_pieces(ex->messages, ChatStyle::R1, "<BOS>", "<EOS>");
  std::string prompt, target;
  for (const train::ChatPiece& p : pieces) (p.target ? target : prompt) += p.text;
  EXPECT_EQ(prompt.substr(prompt.size() - 8), "<think>\n") << prompt;
  EXPECT_EQ(target, kSevenScript + "<EOS>");
}

TEST(ReasonDistill, CliKeepsOnlyVerifiedTraces) {
  const std::string teacher = scripted_model("eval-seven", kSevenScript);
  TempDir d("cli");
  // Right answers: 3 + 4 and 10 - 3 (7); wrong: 1 + 1, 12 * 34, and a countdown whose target is 8
  // (the box holds "7", not an expression making 8).
  const std::string prompts = d.file("p.jsonl",
                                     "{\"prompt\": \"What is 3 + 4?\"}\n"
                                     "{\"prompt\": \"What is 1 + 1?\"}\n"
                                     "{\"prompt\": \"What is 12 * 34?\"}\n"
                                     "{\"prompt\": \"What is 10 - 3?\"}\n"
                                     "{\"prompt\": \"Using the numbers 1, 3, 4, make 8.\"}\n");
  const std::string out = d.file("sft.jsonl");
  const std::string cmd = std::string(WHALE_BINARY) + " distill --teacher " + teacher +
                          " --prompts " + prompts + " --samples 3 --keep 2 --batch 2 --temp 1" +
                          " --max-tokens 40 --threads 1 --out " + out;
  const Result r = sh(cmd);
  ASSERT_EQ(r.code, 0) << r.out;
  std::istringstream in(file_bytes(out));
  std::vector<json> lines;
  for (std::string l; std::getline(in, l);) lines.push_back(json::parse(l));
  ASSERT_EQ(lines.size(), 2u) << file_bytes(out);  // identical samples are kept once
  EXPECT_EQ(lines[0]["messages"][0]["content"], "What is 3 + 4?");
  EXPECT_EQ(lines[1]["messages"][0]["content"], "What is 10 - 3?");
  EXPECT_EQ(lines[1]["messages"][1]["content"], "The answer is \\boxed{7}.");
  // The counts: 5 prompts x 3 samples, 6 accepted, 2 kept.
  EXPECT_NE(r.out.find("accepted 6/15"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("2 examples"), std::string::npos) << r.out;
  // The file is what whale sft reads.
  EXPECT_EQ(train::read_chat_jsonl(out).size(), 2u);

  // The task narrows the verifier: with --task mul the add_sub prompts are an error by line.
  const Result wrong = sh(cmd + " --task mul");
  EXPECT_NE(wrong.code, 0);
  EXPECT_NE(wrong.out.find(prompts + ":1:"), std::string::npos) << wrong.out;

  // From the task's own problems: the run works and is deterministic.
  const std::string gen = d.file("gen.jsonl");
  const std::string g = std::string(WHALE_BINARY) + " distill --teacher " + teacher +
                        " --task add_sub --n 40 --samples 1 --max-tokens 40 --threads 1" +
                        " --no-progress --seed 5 --out " + gen;
  ASSERT_EQ(sh(g).code, 0);
  const std::string first = file_bytes(gen);
  ASSERT_EQ(sh(g).code, 0);
  EXPECT_EQ(file_bytes(gen), first);
  std::istringstream gin(first);
  for (std::string l; std::getline(gin, l);) {
    const std::optional<Problem> p =
        parse_problem(json::parse(l)["messages"][0]["content"].get<std::string>());
    ASSERT_TRUE(p);
    EXPECT_EQ(p->answer, "7");
    EXPECT_EQ(problem_split(*p), Split::Train);
  }
}

TEST(ReasonDistill, BadTeacherOrStudentLosesNothing) {
  const std::string teacher = scripted_model("eval-seven", kSevenScript);
  TempDir d("bad");
  const std::string out = d.file("sft.jsonl", "precious\n");
  const std::string base =
      std::string(WHALE_BINARY) + " distill --n 4 --max-tokens 20" + " --threads 1 --out " + out;

  // A student whose tokenizer differs in one token.
  const fs::path student = d.path / "student";
  fs::create_directories(student);
  json tok = json::parse(file_bytes(teacher + "/tokenizer.json"));
  const std::string victim = tok["model"]["vocab"].begin().key();
  const json id = tok["model"]["vocab"][victim];
  tok["model"]["vocab"].erase(victim);
  tok["model"]["vocab"]["zzz-not-a-token"] = id;
  std::ofstream(student / "tokenizer.json") << tok.dump();
  Result r = sh(base + " --teacher " + teacher + " --student " + student.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("differs"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(student.string()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("zzz-not-a-token"), std::string::npos) << r.out;
  EXPECT_EQ(file_bytes(out), "precious\n");
  // The same tokenizer passes.
  EXPECT_NO_THROW(check_same_tokenizer(teacher, teacher));

  // A teacher without a chat template.
  const fs::path bare = d.path / "bare";
  fs::create_directories(bare);
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"})
    fs::copy_file(fs::path(teacher) / f, bare / f);
  r = sh(base + " --teacher " + bare.string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("chat template"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(bare.string()), std::string::npos) << r.out;
  EXPECT_EQ(file_bytes(out), "precious\n");

  // An unknown task, a missing teacher.
  r = sh(base + " --teacher " + teacher + " --task nope");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("nope"), std::string::npos) << r.out;
  r = sh(base + " --teacher " + (d.path / "none").string());
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("config.json"), std::string::npos) << r.out;
  EXPECT_EQ(file_bytes(out), "precious\n");
}

}  // namespace
}  // namespace whale::reason
