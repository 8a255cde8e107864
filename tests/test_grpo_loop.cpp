// `whale grpo` end to end on a tiny model (a BPE tokenizer trained here with an R1-style chat
// template, a randomly initialised DeepSeek-V3-architecture checkpoint) and a tiny task a random
// model already solves sometimes: the mean reward must rise, the checkpoint must load in `whale
// run`, a resumed run must repeat the uninterrupted one bit for bit, a NaN must stop the run and
// keep the last checkpoint, and bad options must be clear errors. Also the rollouts themselves
// (reason/rollout.h): deterministic per seed, eos and max_tokens, the inference snapshot.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "formats/tokenizer.h"
#include "model/model.h"
#include "reason/grpo_trainer.h"
#include "reason/rollout.h"
#include "reason/task.h"
#include "test_util.h"
#include "train/bpe_trainer.h"
#include "train/checkpoint.h"
#include "train/model_train.h"
#include "train/weights_io.h"

namespace whale::reason {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// "Say a word with the letter e": correct when the completion contains an "e"; formatted when it
// starts with an ASCII letter. A random model over a 300-token byte-level vocabulary writes an "e"
// in a few tokens now and then, so most groups have rewards to compare.
class LetterTask : public Task {
 public:
  std::string name() const override { return "letter_e"; }
  Problem generate(uint64_t seed, uint64_t index, Split split) const override {
    Problem p;
    p.family = "letter";
    p.prompt = "Say a word with the letter e (" + std::to_string((seed + index) % 5) + ").";
    p.answer = "e";
    p.numbers = {int64_t(index), split == Split::Train ? 0 : 1};
    return p;
  }
  Score score(const Problem&, std::string_view completion, const RewardWeights& w) const override {
    Score s;
    s.correct = completion.find('e') != std::string_view::npos;
    s.formatted = !completion.empty() && std::isalpha(static_cast<unsigned char>(completion[0]));
    s.reward = w.correct * s.correct + w.format * s.formatted;
    s.answer.assign(s.correct ? 1 : 0, 'e');
    return s;
  }
  Trace trace(const Problem&) const override { return {"An e.", "\\boxed{e}"}; }
};

using whale::testing::file_bytes;
using whale::testing::Result;
using whale::testing::run_whale;
using whale::testing::sh;

std::string config_json(int64_t vocab) {
  return R"({
  "model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"],
  "vocab_size": )" +
         std::to_string(vocab) + R"(, "hidden_size": 32, "intermediate_size": 64,
  "moe_intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
  "q_lora_rank": 16, "kv_lora_rank": 16, "qk_nope_head_dim": 8, "qk_rope_head_dim": 8,
  "v_head_dim": 8, "n_routed_experts": 4, "n_shared_experts": 1, "num_experts_per_tok": 2,
  "n_group": 1, "topk_group": 1, "topk_method": "noaux_tc", "scoring_func": "sigmoid",
  "norm_topk_prob": true, "routed_scaling_factor": 2.5, "first_k_dense_replace": 1,
  "moe_layer_freq": 1, "max_position_embeddings": 128, "rms_norm_eps": 1e-6,
  "rope_theta": 10000.0, "num_nextn_predict_layers": 1, "tie_word_embeddings": false,
  "bos_token_id": 0, "eos_token_id": 1
})";
}

class GrpoLoop : public ::testing::Test {
 protected:
  static fs::path root_;
  static LetterTask task_;

  // Tokenizer (R1 chat template) and the initial model, once for the suite.
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("whale_grpo_loop_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "template");
    // The DeepSeek-V3 pre-tokenizer, with R1's generation prompt in the chat template.
    const std::string dir = testing::kTokenizerDir;
    json tok = json::parse(file_bytes(dir + "/tokenizer.json"));
    json cfg = json::parse(file_bytes(dir + "/tokenizer_config.json"));
    std::string tmpl = cfg["chat_template"];
    const std::string v3 = "{{'<｜Assistant｜>'}}{% endif %}";
    ASSERT_NE(tmpl.rfind(v3), std::string::npos);
    tmpl.replace(tmpl.rfind(v3), v3.size(), "{{'<｜Assistant｜><think>\\n'}}{% endif %}");
    std::ofstream(root_ / "template" / "tokenizer.json")
        << json({{"pre_tokenizer", tok["pre_tokenizer"]},
                 {"post_processor", tok["post_processor"]},
                 {"decoder", tok["decoder"]}})
               .dump();
    std::ofstream(root_ / "template" / "tokenizer_config.json")
        << json({{"chat_template", tmpl}, {"model_max_length", 4096}}).dump();
    std::vector<std::string> docs;
    for (int d = 0; d < 20; d++)
      docs.push_back("the green tree sees the deep sea. we need three sheep here. " +
                     std::to_string(d) + " a cat sat on a mat; my dog is in a box.");
    BpeTrainOptions bo;
    bo.out_dir = (root_ / "init").string();
    bo.vocab_size = 300;
    bo.template_dir = (root_ / "template").string();
    bo.progress = false;
    const BpeTrainSummary s = train_bpe_tokenizer(docs, bo);

    const std::string config = config_json(int64_t(s.vocab_size));
    train::TrainModel m(ModelConfig::from_json_text(config, "test"), train::LossConfig{});
    m.init(5, 0.02f);
    train::save_checkpoint((root_ / "init").string(), train::checkpoint_tensors(m), {}, config,
                           json::object(), (root_ / "init").string());
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static GrpoOptions options(const std::string& out, int64_t steps) {
    GrpoOptions o;
    o.init_dir = (root_ / "init").string();
    o.out_dir = (root_ / out).string();
    o.steps = steps;
    o.prompts = 4;
    o.group = 8;
    o.max_tokens = 4;
    o.lr = 1e-2f;
    o.beta = 0.001f;
    o.eps_low = 0.2f;
    o.eps_high = 0.28f;
    o.seed = 11;
    o.threads = 1;
    o.progress = false;
    return o;
  }

  static std::vector<json> records(const std::string& out, const std::string& type) {
    std::ifstream in(root_ / out / "log.jsonl");
    std::vector<json> v;
    for (std::string line; std::getline(in, line);) {
      json r = json::parse(line);
      if (r["type"] == type) v.push_back(r);
    }
    return v;
  }
};
fs::path GrpoLoop::root_;
LetterTask GrpoLoop::task_;

double mean_of(const std::vector<json>& r, const char* key, size_t from, size_t to) {
  double s = 0;
  for (size_t i = from; i < to; i++) s += r[i][key].get<double>();
  return s / double(to - from);
}

TEST_F(GrpoLoop, MeanRewardRisesAndTheCheckpointRuns) {
  GrpoOptions o = options("learn", 30);
  o.save_every = 10;
  ASSERT_EQ(run_grpo_command(o, task_), 0);
  const auto steps = records("learn", "grpo");
  ASSERT_EQ(steps.size(), 30u);
  const double first = mean_of(steps, "reward", 0, 5), last = mean_of(steps, "reward", 25, 30);
  const double acc0 = mean_of(steps, "accuracy", 0, 5), acc1 = mean_of(steps, "accuracy", 25, 30);
  std::printf(
      "[ grpo     ] mean reward, steps 1-5: %.3f, steps 26-30: %.3f (accuracy %.2f -> %.2f)\n",
      first, last, acc0, acc1);
  EXPECT_GT(first, 0.02) << "the random model must succeed sometimes";
  EXPECT_LT(acc0, 0.6);
  EXPECT_GT(last, first + 0.3);
  EXPECT_GT(acc1, 0.8);
  double rollout = 0, snapshot = 0, train = 0;
  for (const json& r : steps) {
    for (const char* k : {"reward", "accuracy", "format", "length", "skipped", "loss", "kl",
                          "clip_low", "clip_high", "grad_norm", "lr", "rollout_s", "train_s"})
      EXPECT_TRUE(r.contains(k)) << k;
    EXPECT_EQ(r["completions"], 32);
    EXPECT_LE(r["length"].get<double>(), 4.0);
    rollout += r["rollout_s"].get<double>();
    snapshot += r["snapshot_s"].get<double>();
    train += r["train_s"].get<double>();
  }
  std::printf(
      "[ grpo     ] per step: rollout %.1f ms (of which the inference snapshot %.1f ms), "
      "training %.1f ms\n",
      1e3 * rollout / 30, 1e3 * snapshot / 30, 1e3 * train / 30);
  // Training moves the policy away from the reference, and skipped groups are counted.
  EXPECT_GT(steps.back()["kl"].get<double>(), 0.0);
  int skipped = 0;
  for (const json& r : steps) skipped += r["skipped"].get<int>();
  EXPECT_GT(skipped, 0);

  // The checkpoint: whale train's format, loadable by `whale run`.
  const fs::path ck = root_ / "learn" / "model";
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(ck / f)) << f;
  Checkpoint cp(ck.string());
  EXPECT_TRUE(cp.has("model.layers.2.shared_head.head.weight"));
  EXPECT_TRUE(cp.has("model.layers.1.mlp.gate.e_score_correction_bias"));
  EXPECT_EQ(file_bytes(root_ / "learn" / "reward.png").substr(1, 3), "PNG");
  const Result r = sh(std::string(WHALE_BINARY) + " run -m " + ck.string() +
                      " --chat -p \"Say a word with the letter e (1).\" -n 4 --temp 0 -t 1 "
                      "--no-stats < /dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find('e'), std::string::npos) << r.out;
  // `whale plot` draws the GRPO panels from the log.
  const Result p =
      sh(std::string(WHALE_BINARY) + " plot " + (root_ / "learn" / "log.jsonl").string());
  ASSERT_EQ(p.code, 0) << p.out;
  EXPECT_NE(p.out.find("30 GRPO steps"), std::string::npos) << p.out;
}

TEST_F(GrpoLoop, ResumeRepeatsTheUninterruptedRunExactly) {
  GrpoOptions whole = options("whole", 6);
  whole.inner_steps = 2;
  whole.micro_batch = 5;
  ASSERT_EQ(run_grpo_command(whole, task_), 0);
  GrpoOptions parts = whole;
  parts.out_dir = (root_ / "parts").string();
  parts.until = 3;
  parts.save_every = 100;
  ASSERT_EQ(run_grpo_command(parts, task_), 0);
  EXPECT_EQ(records("parts", "grpo").size(), 3u);
  parts.until = -1;
  parts.resume = true;
  parts.init_dir = "";  // the recorded one
  ASSERT_EQ(run_grpo_command(parts, task_), 0);
  const auto a = records("whole", "grpo"), b = records("parts", "grpo");
  ASSERT_EQ(a.size(), 6u);
  ASSERT_EQ(b.size(), 6u);
  for (size_t i = 0; i < a.size(); i++)
    for (const char* k : {"reward", "length", "loss", "kl", "grad_norm", "clip", "skipped"})
      EXPECT_EQ(a[i][k], b[i][k]) << k << " at step " << i + 1;
  EXPECT_EQ(file_bytes(root_ / "whole" / "model" / "model.safetensors"),
            file_bytes(root_ / "parts" / "model" / "model.safetensors"));
  EXPECT_EQ(file_bytes(root_ / "whole" / "model" / "optimizer.safetensors"),
            file_bytes(root_ / "parts" / "model" / "optimizer.safetensors"));
}

TEST_F(GrpoLoop, NanStopsAndKeepsTheLastCheckpoint) {
  GrpoOptions o = options("nan", 8);
  o.save_every = 2;
  o.fault_nan_step = 3;
  EXPECT_EQ(run_grpo_command(o, task_), 3);
  std::ifstream st(root_ / "nan" / "model" / "trainer_state.json");
  EXPECT_EQ(json::parse(st)["step"], 2);
  EXPECT_EQ(records("nan", "grpo").size(), 3u);
  EXPECT_EQ(records("nan", "event").size(), 1u);
  // The checkpoint left behind resumes.
  o.fault_nan_step = -1;
  o.steps = 4;
  o.resume = true;
  EXPECT_EQ(run_grpo_command(o, task_), 0);
  EXPECT_EQ(records("nan", "grpo").size(), 4u);
}

// Ctrl-C during step 3 (here: raised by the task while it scores): the step finishes, a checkpoint
// is saved, exit 130; the run resumes from it, and the handler is the previous one again.
class InterruptingTask : public LetterTask {
 public:
  Score score(const Problem& p, std::string_view completion,
              const RewardWeights& w) const override {
    if (p.numbers[0] == 2 * 4) std::raise(SIGINT);  // the first problem of step 3 (4 a step)
    return LetterTask::score(p, completion, w);
  }
};

TEST_F(GrpoLoop, CtrlCSavesACheckpoint) {
  std::signal(SIGINT, SIG_IGN);
  const InterruptingTask task;
  GrpoOptions o = options("interrupted", 6);
  o.save_every = 100;
  EXPECT_EQ(run_grpo_command(o, task), 130);
  std::ifstream st(root_ / "interrupted" / "model" / "trainer_state.json");
  EXPECT_EQ(json::parse(st)["step"], 3);
  EXPECT_EQ(records("interrupted", "grpo").size(), 3u);
  EXPECT_EQ(std::signal(SIGINT, SIG_DFL), SIG_IGN) << "the handler before the run is back";
  o.resume = true;
  o.steps = 4;
  EXPECT_EQ(run_grpo_command(o, task_), 0);
  EXPECT_EQ(records("interrupted", "grpo").size(), 4u);
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning " << needle;
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST_F(GrpoLoop, BadOptionsAreClearErrors) {
  auto run = [](GrpoOptions o) { return [o] { run_grpo_command(o, task_); }; };
  GrpoOptions o = options("bad", 2);
  o.group = 1;
  expect_error(run(o), "--group must be >= 2");
  o = options("bad", 2);
  o.init_dir = "";
  expect_error(run(o), "--init is required");
  o.init_dir = (root_ / "nowhere").string();
  expect_error(run(o), "no config.json");
  o = options("bad", 2);
  o.adv = "median";
  expect_error(run(o), "median");
  o = options("bad", 2);
  o.eps_low = 1.5f;
  expect_error(run(o), "eps_low");
  o = options("bad", 2);
  o.temperature = 0;
  expect_error(run(o), "--temp");
  o = options("bad", 0);
  expect_error(run(o), "--steps");
  o = options("bad", 2);
  o.resume = true;
  expect_error(run(o), "no checkpoint");

  // An existing checkpoint is never overwritten by a fresh run; a resume must keep the group.
  o = options("keep", 1);
  ASSERT_EQ(run_grpo_command(o, task_), 0);
  const std::string before = file_bytes(root_ / "keep" / "model" / "model.safetensors");
  o.steps = 2;
  expect_error(run(o), "--resume");
  o.resume = true;
  o.group = 4;
  expect_error(run(o), "--group");
  EXPECT_EQ(file_bytes(root_ / "keep" / "model" / "model.safetensors"), before);
}

// The command line: a bad flag is reported before anything is loaded; an unknown task is an error
// naming it.
TEST_F(GrpoLoop, CommandLineErrorsAreClear) {
  const std::string whale = std::string(WHALE_BINARY) + " grpo --out " + (root_ / "cli").string() +
                            " --steps 2 --no-progress";
  const std::string init = " --init " + (root_ / "init").string();
  Result r = sh(whale + init + " --task nosuchtask < /dev/null");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("nosuchtask"), std::string::npos) << r.out;
  r = sh(whale + init + " --task nosuchtask --group 1 < /dev/null");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--group must be >= 2"), std::string::npos) << r.out;
  r = sh(whale + " --task nosuchtask < /dev/null");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--init is required"), std::string::npos) << r.out;
  r = sh(whale + init + " --task nosuchtask --eps-low 1.2 < /dev/null");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("eps_low must be in [0, 1)"), std::string::npos) << r.out;
  r = sh(std::string(WHALE_BINARY) + " grpo --out x --steps 2 < /dev/null");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.out.find("--task"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(root_ / "cli" / "model"));
}

// A real reasoning task through the command line: the random model writes no \boxed answer, so
// its groups have equal rewards and are skipped; a step with nothing to learn trains nothing and
// still logs and saves.
TEST_F(GrpoLoop, ARealTaskThroughTheCommandLine) {
  const Result r = sh(std::string(WHALE_BINARY) + " grpo --init " + (root_ / "init").string() +
                      " --task add_sub --out " + (root_ / "add_sub").string() +
                      " --steps 2 --prompts 2 --group 3 --max-tokens 8 --threads 1 --no-progress"
                      " < /dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto steps = records("add_sub", "grpo");
  ASSERT_EQ(steps.size(), 2u);
  for (const json& s : steps) {
    EXPECT_EQ(s["completions"], 6);
    EXPECT_EQ(s["groups"], 2);
    const bool all_skipped = s["skipped"] == 2;
    EXPECT_EQ(s["trained"], !all_skipped);
    if (all_skipped) {
      EXPECT_TRUE(s["loss"].is_null());
      EXPECT_EQ(s["tokens"], 0);
    }
  }
  EXPECT_EQ(records("add_sub", "config").at(0)["task"], "add_sub");
  EXPECT_TRUE(fs::exists(root_ / "add_sub" / "model" / "model.safetensors"));
}

// ---------------------------------------------------------------- MPI

// The run both sides of the MPI comparison make: 4 prompts per step, so 2 per process under
// mpirun -np 2.
GrpoOptions mpi_options(const std::string& init, const std::string& out) {
  GrpoOptions o;
  o.init_dir = init;
  o.out_dir = out;
  o.steps = 4;
  o.prompts = 4;
  o.group = 4;
  o.max_tokens = 6;
  o.lr = 1e-2f;
  o.beta = 0.01f;
  o.seed = 3;
  o.threads = 1;
  o.progress = false;
  return o;
}

// Run by GrpoLoop.TwoMpiProcessesGiveTheResultsOfOne under mpirun, in every process; skipped when
// started otherwise.
TEST(GrpoMpiWorker, Run) {
  const char* init = std::getenv("WHALE_GRPO_MPI_INIT");
  const char* out = std::getenv("WHALE_GRPO_MPI_OUT");
  if (!init || !out) GTEST_SKIP() << "started by GrpoLoop.TwoMpiProcessesGiveTheResultsOfOne";
  const LetterTask task;
  EXPECT_EQ(run_grpo_command(mpi_options(init, out), task), 0);
}

TEST_F(GrpoLoop, TwoMpiProcessesGiveTheResultsOfOne) {
  if (sh("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not installed";
  const std::string init = (root_ / "init").string();
  ASSERT_EQ(run_grpo_command(mpi_options(init, (root_ / "mpi1").string()), task_), 0);
  const std::string self = fs::read_symlink("/proc/self/exe").string();
  const Result r =
      sh("WHALE_GRPO_MPI_INIT=" + init + " WHALE_GRPO_MPI_OUT=" + (root_ / "mpi2").string() +
         " OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
         "OMPI_MCA_rmaps_base_oversubscribe=1 ASAN_OPTIONS=detect_leaks=0 "
         "mpirun -np 2 " +
         self + " --gtest_filter=GrpoMpiWorker.Run < /dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto one = records("mpi1", "grpo"), two = records("mpi2", "grpo");
  ASSERT_EQ(one.size(), 4u);
  ASSERT_EQ(two.size(), 4u) << r.out;
  EXPECT_EQ(records("mpi2", "config").at(0)["processes"], 2);
  for (size_t i = 0; i < one.size(); i++) {
    // The same prompts and samplers: the same completions and rewards; the gradients are summed in
    // another order, to float rounding.
    for (const char* k : {"skipped", "tokens", "completions"})
      EXPECT_EQ(one[i][k], two[i][k]) << k << " at step " << i + 1;
    for (const char* k : {"reward", "accuracy", "length"})  // means summed in another order
      EXPECT_NEAR(one[i][k].get<double>(), two[i][k].get<double>(), 1e-12)
          << k << " at step " << i + 1;
    for (const char* k : {"loss", "kl", "grad_norm"})
      EXPECT_NEAR(one[i][k].get<double>(), two[i][k].get<double>(),
                  1e-5 * (1 + std::fabs(one[i][k].get<double>())))
          << k << " at step " << i + 1;
  }
}

// ---------------------------------------------------------------- rollouts

TEST_F(GrpoLoop, RolloutsAreDeterministicAndStopAtEosOrMaxTokens) {
  train::TrainModel m(ModelConfig::load((root_ / "init").string()), train::LossConfig{0, 0});
  train::load_train_weights(m, (root_ / "init").string());
  const std::string config = file_bytes(root_ / "init" / "config.json");
  const auto model = inference_model(m, config, (root_ / "snap").string());
  const std::vector<std::vector<int32_t>> prompts{{0, 5, 9, 12}, {0, 7}};
  std::vector<uint64_t> seeds;
  for (uint64_t i = 0; i < 6; i++) seeds.push_back(100 + i);
  RolloutOptions ro;
  ro.group = 3;
  ro.max_tokens = 30;
  const int32_t eos = 1;
  const auto a = sample_completions(*model, prompts, seeds, ro, eos);
  const auto b = sample_completions(*model, prompts, seeds, ro, eos);
  ASSERT_EQ(a.size(), 6u);
  bool differ = false;
  for (size_t i = 0; i < a.size(); i++) {
    EXPECT_EQ(a[i].ids, b[i].ids) << i;
    EXPECT_FALSE(a[i].ids.empty());
    EXPECT_LE(a[i].ids.size(), 30u);
    EXPECT_EQ(a[i].eos, a[i].ids.back() == eos);
    if (!a[i].eos) {
      EXPECT_EQ(a[i].ids.size(), 30u);
    }
    differ |= a[i].ids != a[0].ids;
  }
  EXPECT_TRUE(differ) << "different seeds, the same completions";
  // A completion is what a lone Session-style decode of the same prompt and seed gives.
  ro.group = 1;
  const std::vector<std::vector<int32_t>> one{prompts[1]};
  const std::vector<uint64_t> seed{seeds[4]};
  EXPECT_EQ(sample_completions(*model, one, seed, ro, eos)[0].ids, a[4].ids);
  // An eos that is always sampled: every completion is that one token.
  ro.group = 3;
  ro.temperature = 1e-4f;
  const auto greedy = sample_completions(*model, prompts, seeds, ro, -1);
  int32_t top = greedy[0].ids[0];
  const auto ended = sample_completions(*model, prompts, seeds, ro, top);
  EXPECT_TRUE(ended[0].eos);
  EXPECT_EQ(ended[0].ids, std::vector<int32_t>{top});
  EXPECT_THROW(sample_completions(*model, prompts, std::vector<uint64_t>(5), ro, eos),
               std::invalid_argument);
  const std::vector<std::vector<int32_t>> empty{{}};
  EXPECT_THROW(sample_completions(*model, empty, std::vector<uint64_t>(3), ro, eos),
               std::invalid_argument);
}

}  // namespace
}  // namespace whale::reason
