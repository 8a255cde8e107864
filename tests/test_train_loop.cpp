// `whale train` end to end, as a user runs it: text -> `whale tokenizer train` -> `whale data` ->
// `whale train` -> `whale run` on the checkpoint. The loss must fall, a resumed run must repeat the
// uninterrupted one exactly, a NaN must stop the run without touching the last checkpoint, bad
// input must be a clear error, and two MPI processes must give the losses of one.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "test_util.h"

using json = nlohmann::json;
namespace fs = std::filesystem;

namespace {

using whale::testing::file_bytes;
using whale::testing::Result;
using whale::testing::run_whale;
using whale::testing::sh;

// A small synthetic language with a learnable structure: sentences from a tiny grammar.
std::string make_document(uint64_t seed) {
  static const char* subj[] = {"the cat", "a dog", "the old whale", "my friend", "the bird"};
  static const char* verb[] = {"sees", "likes", "follows", "finds", "helps"};
  static const char* obj[] = {"the fish", "a red ball", "the small boat", "her brother", "the sea"};
  std::string s;
  uint64_t x = seed * 2654435761u + 1;
  for (int i = 0; i < 60; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    s += subj[(x >> 33) % 5];
    s += " ";
    s += verb[(x >> 40) % 5];
    s += " ";
    s += obj[(x >> 47) % 5];
    s += ". ";
  }
  return s;
}

const char* kConfig = R"({
  "model_type": "deepseek_v3", "architectures": ["DeepseekV3ForCausalLM"],
  "vocab_size": 320, "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
  "num_hidden_layers": 2, "num_attention_heads": 2, "q_lora_rank": 16, "kv_lora_rank": 16,
  "qk_nope_head_dim": 8, "qk_rope_head_dim": 8, "v_head_dim": 8, "n_routed_experts": 4,
  "n_shared_experts": 1, "num_experts_per_tok": 2, "n_group": 1, "topk_group": 1,
  "topk_method": "noaux_tc", "scoring_func": "sigmoid", "norm_topk_prob": true,
  "routed_scaling_factor": 2.5, "first_k_dense_replace": 1, "moe_layer_freq": 1,
  "max_position_embeddings": 128, "rms_norm_eps": 1e-6, "rope_theta": 10000.0,
  "num_nextn_predict_layers": 1, "tie_word_embeddings": false, "bos_token_id": 0,
  "eos_token_id": 1
})";

class TrainLoop : public ::testing::Test {
 protected:
  static fs::path root_;

  // Tokenizer, shards and config, built once for the suite.
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("whale_train_loop_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "text");
    for (int d = 0; d < 24; d++)
      std::ofstream(root_ / "text" / ("doc" + std::to_string(100 + d) + ".txt"))
          << make_document(d);
    Result r = run_whale("tokenizer train --input " + (root_ / "text").string() +
                         " --vocab 300 --no-progress --out " + (root_ / "tok").string());
    ASSERT_EQ(r.code, 0) << r.out;
    r = run_whale("data --input " + (root_ / "text").string() + " --tokenizer " +
                  (root_ / "tok").string() + " --out " + (root_ / "data").string() +
                  " --val-fraction 0.15 --no-progress");
    ASSERT_EQ(r.code, 0) << r.out;
    std::ofstream(root_ / "config.json") << kConfig;
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static std::string base_args(const std::string& out, int batch = 4) {
    return "train --config " + (root_ / "config.json").string() + " --data " +
           (root_ / "data").string() + " --out " + (root_ / out).string() + " --batch " +
           std::to_string(batch) +
           " --seq 32 --lr 1e-2 --warmup 5 --init-std 0.02 --eval-every 10 "
           "--eval-batches 2 --no-progress";
  }

  // The "train" records of a log: step -> total loss.
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
fs::path TrainLoop::root_;

}  // namespace

TEST_F(TrainLoop, LossFallsAndTheCheckpointRuns) {
  Result r = run_whale(base_args("fall") + " --steps 60 --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto train = records("fall", "train");
  ASSERT_EQ(train.size(), 60u);
  const double first = train.front()["main"], last = train.back()["main"];
  EXPECT_NEAR(first, std::log(320.0), 0.3);  // a fresh model is close to uniform
  EXPECT_LT(last, 0.5 * first) << r.out;
  const auto val = records("fall", "val");
  ASSERT_EQ(val.size(), 6u);
  EXPECT_LT(double(val.back()["val_loss"]), 0.6 * first);
  for (const json& t : train) {
    EXPECT_TRUE(t.contains("lr") && t.contains("tok_s") && t.contains("mfu") &&
                t.contains("grad_norm") && t.contains("expert_load"));
    EXPECT_EQ(t["expert_load"].size(), 2u);  // the MoE layer and the MTP block
  }

  // The checkpoint is a Hugging Face model directory with the optimiser state beside it.
  const fs::path ck = root_ / "fall" / "model";
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(ck / f)) << f;
  whale::Checkpoint cp(ck.string());
  EXPECT_TRUE(cp.has("model.layers.2.eh_proj.weight"));
  EXPECT_TRUE(cp.has("model.layers.2.shared_head.head.weight"));
  EXPECT_TRUE(cp.has("model.layers.1.mlp.gate.e_score_correction_bias"));
  EXPECT_TRUE(cp.has("model.layers.1.mlp.experts.3.down_proj.weight"));
  EXPECT_EQ(file_bytes(root_ / "fall" / "loss.png").substr(1, 3), "PNG");

  // `whale run` loads it and continues in the language it learnt.
  r = run_whale("run -m " + ck.string() + " -p \"the cat\" -n 12 --temp 0 -t 1");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("the cat"), std::string::npos) << r.out;

  // `whale plot` redraws the PNG from the log.
  r = run_whale("plot " + (root_ / "fall" / "log.jsonl").string() + " -o " +
                (root_ / "fall" / "again.png").string());
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_TRUE(fs::exists(root_ / "fall" / "again.png"));
}

TEST_F(TrainLoop, ResumeRepeatsTheUninterruptedRunExactly) {
  for (int threads : {1, 2}) {
    const std::string t = std::to_string(threads);
    Result r = run_whale(base_args("whole" + t) + " --steps 16 --threads " + t);
    ASSERT_EQ(r.code, 0) << r.out;
    r = run_whale(base_args("parts" + t) + " --steps 16 --until 7 --save-every 100 --threads " + t);
    ASSERT_EQ(r.code, 0) << r.out;
    EXPECT_EQ(records("parts" + t, "train").size(), 7u);
    r = run_whale(base_args("parts" + t) + " --steps 16 --resume --threads " + t);
    ASSERT_EQ(r.code, 0) << r.out;
    const auto whole = records("whole" + t, "train"), parts = records("parts" + t, "train");
    ASSERT_EQ(parts.size(), 16u);
    for (size_t i = 0; i < whole.size(); i++) {
      // Same thread count: bit-equal (the JSON numbers round-trip doubles exactly).
      EXPECT_EQ(double(whole[i]["loss"]), double(parts[i]["loss"])) << "step " << i + 1;
      EXPECT_EQ(double(whole[i]["grad_norm"]), double(parts[i]["grad_norm"])) << "step " << i + 1;
    }
    EXPECT_EQ(file_bytes(root_ / ("whole" + t) / "model" / "model.safetensors"),
              file_bytes(root_ / ("parts" + t) / "model" / "model.safetensors"));
    const auto vw = records("whole" + t, "val"), vp = records("parts" + t, "val");
    ASSERT_EQ(vw.size(), vp.size());
    for (size_t i = 0; i < vw.size(); i++)
      EXPECT_EQ(double(vw[i]["val_loss"]), double(vp[i]["val_loss"]));
  }
}

TEST_F(TrainLoop, NanLossStopsAndKeepsTheLastCheckpoint) {
  Result r =
      run_whale(base_args("nan") + " --steps 20 --save-every 5 --fault-nan-step 7 --threads 1");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("stopped at step 7"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("nan"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 5"), std::string::npos) << r.out;
  std::ifstream st(root_ / "nan" / "model" / "trainer_state.json");
  EXPECT_EQ(json::parse(st)["step"], 5);
  // The checkpoint left behind resumes.
  r = run_whale(base_args("nan") + " --steps 8 --resume --threads 1");
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST_F(TrainLoop, BadInputIsAClearError) {
  auto config_with = [&](const std::string& key, const std::string& value) {
    json c = json::parse(kConfig);
    c[key] = json::parse(value);
    const fs::path p = root_ / ("config_" + key + ".json");
    std::ofstream(p) << c.dump();
    return p.string();
  };
  auto train_with = [&](const std::string& config, const std::string& out) {
    return run_whale("train --config " + config + " --data " + (root_ / "data").string() +
                     " --out " + (root_ / out).string() +
                     " --steps 2 --batch 2 --seq 16 --no-progress");
  };
  Result r = train_with(config_with("vocab_size", "100"), "bad_vocab");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("vocab_size"), std::string::npos) << r.out;
  r = train_with(config_with("num_experts_per_tok", "9"), "bad_topk");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("num_experts_per_tok"), std::string::npos) << r.out;
  r = train_with(config_with("kv_lora_rank", "0"), "bad_kv");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("kv_lora_rank"), std::string::npos) << r.out;
  r = run_whale(base_args("bad_batch", 3) + " --steps 6 --grad-accum 2");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--batch"), std::string::npos) << r.out;

  // An existing checkpoint is never overwritten by a fresh run, and a resume must keep the batch.
  r = run_whale(base_args("keep") + " --steps 6");
  ASSERT_EQ(r.code, 0) << r.out;
  const std::string before = file_bytes(root_ / "keep" / "model" / "model.safetensors");
  r = run_whale(base_args("keep") + " --steps 8");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--resume"), std::string::npos) << r.out;
  r = run_whale(base_args("keep", 8) + " --steps 8 --resume");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("--batch"), std::string::npos) << r.out;
  EXPECT_EQ(file_bytes(root_ / "keep" / "model" / "model.safetensors"), before);

  // A damaged shard names the file.
  fs::copy(root_ / "data", root_ / "data_bad", fs::copy_options::recursive);
  fs::resize_file(root_ / "data_bad" / "train_000000.bin", 40);
  r = run_whale("train --config " + (root_ / "config.json").string() + " --data " +
                (root_ / "data_bad").string() + " --out " + (root_ / "bad_data").string() +
                " --steps 2 --batch 2 --seq 16 --no-progress");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("train_000000.bin"), std::string::npos) << r.out;
}

TEST_F(TrainLoop, BF16ComputeTrainsToo) {
  Result r = run_whale(base_args("bf16") + " --steps 30 --bf16 --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto train = records("bf16", "train");
  ASSERT_EQ(train.size(), 30u);
  EXPECT_LT(double(train.back()["main"]), 0.7 * double(train.front()["main"]));
}

TEST_F(TrainLoop, TwoMpiProcessesGiveTheLossesOfOne) {
  if (sh("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not installed";
  Result r = run_whale(base_args("one") + " --steps 8 --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  r =
      sh("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
         "OMPI_MCA_rmaps_base_oversubscribe=1 ASAN_OPTIONS=detect_leaks=0 "
         "mpirun -np 2 " +
         std::string(WHALE_BINARY) + " " + base_args("two") + " --steps 8 --threads 1 < /dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto one = records("one", "train"), two = records("two", "train");
  ASSERT_EQ(one.size(), 8u);
  ASSERT_EQ(two.size(), 8u);
  for (size_t i = 0; i < one.size(); i++)
    EXPECT_NEAR(double(one[i]["loss"]), double(two[i]["loss"]), 1e-5) << "step " << i + 1;
  EXPECT_EQ(records("two", "config").at(0)["processes"], 2);
}
