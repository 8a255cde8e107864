// `whale sft`: the loss mask of rendered conversations against an independent reference (the real
// DeepSeek-R1/V3 Jinja templates and tokenizer, scripts/gen_sft_fixture.mjs), the row packing, and
// the command end to end as a user runs it: a tiny model from `whale train`, fine-tuned on chat
// JSONL (the masked loss falls, `whale run` loads the result, a resumed run repeats the
// uninterrupted one exactly, a NaN stops it, two MPI processes give the losses of one), and bad
// input is an error naming FILE:LINE that leaves OUT as it was.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "formats/safetensors.h"
#include "formats/tokenizer.h"
#include "run/chat.h"
#include "test_util.h"
#include "train/ops.h"
#include "train/sft_data.h"

using json = nlohmann::json;
namespace fs = std::filesystem;
using whale::ChatStyle;
using whale::Tokenizer;
using namespace whale::train;

namespace {

using whale::testing::file_bytes;
using whale::testing::Result;
using whale::testing::run_whale;
using whale::testing::sh;

json read_json(const fs::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

}  // namespace

// ------------------------------------------------------------------ the mask

TEST(SftMask, MatchesTheReferenceTemplatesAndTokenizer) {
  const Tokenizer tok = Tokenizer::load(whale::testing::kTokenizerDir);
  const json templates =
      read_json(whale::testing::kRoot + "/tests/fixtures/tokenizer/chat_cases.json")["templates"];
  EXPECT_EQ(whale::detect_chat_style(templates["r1"].get<std::string>()), ChatStyle::R1);
  EXPECT_EQ(whale::detect_chat_style(templates["v3"].get<std::string>()), ChatStyle::V3);
  const json cases = read_json(whale::testing::kRoot + "/tests/fixtures/sft/cases.json")["cases"];
  ASSERT_EQ(cases.size(), 8u);
  std::set<std::string> styles;
  for (const json& c : cases) {
    const std::string name = c["name"].get<std::string>() + "/" + c["style"].get<std::string>();
    styles.insert(c["style"]);
    const json line = {{"messages", c["messages"]}};
    const auto ex = parse_chat_line(line.dump(), name);
    ASSERT_TRUE(ex.has_value()) << name;
    const ChatStyle style = c["style"] == "r1" ? ChatStyle::R1 : ChatStyle::V3;
    const auto pieces =
        render_training_pieces(ex->messages, style, tok.bos_token(), tok.eos_token());
    std::string text;
    for (const ChatPiece& p : pieces) text += p.text;
    EXPECT_EQ(text, c["text"].get<std::string>()) << name;
    const SftExample e = tokenize_pieces(pieces, tok);
    EXPECT_EQ(e.ids, c["ids"].get<std::vector<int32_t>>()) << name;
    std::vector<uint8_t> mask;
    for (int m : c["mask"]) mask.push_back(uint8_t(m));
    EXPECT_EQ(e.target, mask) << name;
    EXPECT_GT(std::count(mask.begin(), mask.end(), 1), 0) << name;
    EXPECT_LT(std::count(mask.begin(), mask.end(), 1), std::ptrdiff_t(mask.size())) << name;
  }
  EXPECT_EQ(styles, (std::set<std::string>{"r1", "v3"}));
}

// The R1 target of the last turn, written out: reasoning + "\n</think>\n\n" + answer + eos.
TEST(SftMask, LastTurnTargetIsReasoningThenAnswer) {
  const auto ex = parse_chat_line(R"({"messages":[{"role":"user","content":"q"},)"
                                  R"({"role":"assistant","content":"<think> r </think>  a"}]})",
                                  "x:1");
  ASSERT_TRUE(ex.has_value());
  const auto r1 = render_training_pieces(ex->messages, ChatStyle::R1, "<B>", "<E>");
  ASSERT_EQ(r1.size(), 2u);
  EXPECT_EQ(r1[0].text, "<B><｜User｜>q<｜Assistant｜><think>\n");
  EXPECT_FALSE(r1[0].target);
  EXPECT_EQ(r1[1].text, "r\n</think>\n\na<E>");
  EXPECT_TRUE(r1[1].target);
  const auto v3 = render_training_pieces(ex->messages, ChatStyle::V3, "<B>", "<E>");
  ASSERT_EQ(v3.size(), 2u);
  EXPECT_EQ(v3[1].text, "a<E>");
  // V3.1 (non-thinking mode): every turn opens with "<｜Assistant｜></think>"; the pieces put
  // together are the template's rendering of the whole conversation.
  const auto two = parse_chat_line(
      R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"},)"
      R"({"role":"user","content":"q2"},{"role":"assistant","content":"b"}]})",
      "x:4");
  ASSERT_TRUE(two.has_value());
  const std::string eos = "<｜end▁of▁sentence｜>";
  const auto v31 = render_training_pieces(two->messages, ChatStyle::V31, "<B>", eos);
  ASSERT_EQ(v31.size(), 4u);
  EXPECT_EQ(v31[0].text, "<B><｜User｜>q<｜Assistant｜></think>");
  EXPECT_EQ(v31[1].text, "a" + eos);
  EXPECT_TRUE(v31[1].target && v31[3].target && !v31[2].target);
  std::string all;
  for (const ChatPiece& p : v31) all += p.text;
  EXPECT_EQ(all, whale::render_chat(two->messages, ChatStyle::V31, "<B>", false));
  // Trailing messages after the last assistant turn are dropped.
  const auto tail = parse_chat_line(
      R"({"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"},)"
      R"({"role":"user","content":"more"}]})",
      "x:2");
  ASSERT_EQ(tail->messages.size(), 2u);
  EXPECT_FALSE(parse_chat_line("  \r", "x:3").has_value());
}

// ------------------------------------------------------------------ rows

TEST(SftRowsTest, PacksGreedilyAndMasksTargets) {
  SftRows rows;
  rows.add({{10, 11, 12, 13}, {0, 0, 1, 1}});         // 3 positions
  rows.add({{20, 21, 22}, {0, 1, 1}});                // 2 positions
  rows.add({{30, 31, 32, 33, 34}, {0, 0, 0, 1, 1}});  // 4 positions
  rows.pack(6, true);
  ASSERT_EQ(rows.num_rows(), 2);  // [ex0 ex1] [ex2]
  EXPECT_EQ(rows.num_examples(), 3u);
  EXPECT_EQ(rows.num_targets(), 6u);
  const int32_t I = kIgnoreIndex;
  std::vector<int32_t> in(6), tg(6);
  rows.fill(0, 99, in.data(), tg.data());
  EXPECT_EQ(in, (std::vector<int32_t>{10, 11, 12, 20, 21, 99}));
  EXPECT_EQ(tg, (std::vector<int32_t>{I, 12, 13, 21, 22, I}));
  rows.fill(1, 99, in.data(), tg.data());
  EXPECT_EQ(in, (std::vector<int32_t>{30, 31, 32, 33, 99, 99}));
  EXPECT_EQ(tg, (std::vector<int32_t>{I, I, 33, 34, I, I}));
  const uint64_t packed = rows.fingerprint();
  rows.pack(6, false);
  EXPECT_EQ(rows.num_rows(), 3);
  EXPECT_NE(rows.fingerprint(), packed);
}

TEST(SftRowsTest, EpochOrderIsAPermutationFromSeedAndEpoch) {
  const auto a = epoch_order(50, 7, 0), b = epoch_order(50, 7, 0), c = epoch_order(50, 7, 1);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  EXPECT_NE(a, epoch_order(50, 8, 0));
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 50; i++) EXPECT_EQ(sorted[size_t(i)], i);
}

// ------------------------------------------------------------------ the command

namespace {

const char* kSubj[] = {"the cat", "a dog", "the old whale", "my friend", "the bird"};
const char* kVerb[] = {"sees", "likes", "follows", "finds", "helps"};
const char* kObj[] = {"the fish", "a red ball", "the small boat", "her brother", "the sea"};

uint64_t lcg(uint64_t& x) {
  x = x * 6364136223846793005ull + 1442695040888963407ull;
  return x >> 33;
}

// A grammar document for the tokenizer and the base model.
std::string make_document(uint64_t seed) {
  std::string s;
  uint64_t x = seed * 2654435761u + 1;
  for (int i = 0; i < 40; i++) {
    s += std::string(kSubj[lcg(x) % 5]) + " " + kVerb[lcg(x) % 5] + " " + kObj[lcg(x) % 5] + ". ";
    s += std::string("the subject is ") + kSubj[lcg(x) % 5] + ". ";
  }
  return s;
}

// A conversation: the user says a sentence, the assistant reasons "the subject is S" and answers
// S. Reasoning as reasoning_content or inside <think>; every fifth one has two turns.
json make_conversation(uint64_t i) {
  uint64_t x = i * 7919 + 3;
  auto turn = [&](json& messages) {
    const std::string s = kSubj[lcg(x) % 5];
    messages.push_back({{"role", "user"},
                        {"content", s + " " + kVerb[lcg(x) % 5] + " " + kObj[lcg(x) % 5] + "."}});
    if (lcg(x) % 2)
      messages.push_back({{"role", "assistant"},
                          {"content", s + "."},
                          {"reasoning_content", "the subject is " + s}});
    else
      messages.push_back(
          {{"role", "assistant"},
           {"content", "<think>\nthe subject is " + s + "\n</think>\n\n" + s + "."}});
  };
  json messages = json::array();
  turn(messages);
  if (i % 5 == 0) turn(messages);
  return {{"messages", messages}};
}

class SftLoop : public ::testing::Test {
 protected:
  static fs::path root_;

  // Tokenizer (with DeepSeek-R1's chat template), a base model from 3 steps of `whale train`, and
  // the chat data, built once for the suite.
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("whale_sft_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_ / "text");
    for (int d = 0; d < 12; d++)
      std::ofstream(root_ / "text" / ("doc" + std::to_string(100 + d) + ".txt"))
          << make_document(d);
    Result r = run_whale("tokenizer train --input " + (root_ / "text").string() +
                         " --vocab 300 --no-progress --out " + (root_ / "tok").string());
    ASSERT_EQ(r.code, 0) << r.out;
    const fs::path tc = root_ / "tok" / "tokenizer_config.json";
    json config = read_json(tc);
    config["chat_template"] = read_json(
        whale::testing::kRoot + "/tests/fixtures/tokenizer/chat_cases.json")["templates"]["r1"];
    std::ofstream(tc) << config.dump();
    r = run_whale("data --input " + (root_ / "text").string() + " --tokenizer " +
                  (root_ / "tok").string() + " --out " + (root_ / "data").string() +
                  " --val-fraction 0.1 --no-progress");
    ASSERT_EQ(r.code, 0) << r.out;
    std::ofstream(root_ / "config.json") << kConfig;
    r = run_whale("train --config " + (root_ / "config.json").string() + " --data " +
                  (root_ / "data").string() + " --out " + (root_ / "base").string() +
                  " --steps 3 --batch 4 --seq 32 --lr 1e-2 --init-std 0.02 --no-progress "
                  "--threads 2");
    ASSERT_EQ(r.code, 0) << r.out;
    std::ofstream chat(root_ / "chat.jsonl");
    for (uint64_t i = 0; i < 100; i++) chat << make_conversation(i).dump() << "\n";
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static std::string base_args(const std::string& out) {
    return "sft --init " + (root_ / "base" / "model").string() + " --data " +
           (root_ / "chat.jsonl").string() + " --out " + (root_ / out).string() +
           " --batch 4 --seq 96 --lr 1e-2 --val-fraction 0.1 --eval-batches 2 "
           "--no-progress";
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

  static const char* kConfig;
};
fs::path SftLoop::root_;
const char* SftLoop::kConfig = R"({
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

}  // namespace

TEST_F(SftLoop, MaskedLossFallsAndTheCheckpointRuns) {
  Result r = run_whale(base_args("fall") + " --steps 120 --eval-every 20 --threads 2");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("R1 chat format"), std::string::npos) << r.out;
  const auto train = records("fall", "train");
  ASSERT_EQ(train.size(), 120u);
  const double first = train.front()["main"], last = train.back()["main"];
  EXPECT_LT(last, 0.1 * first) << r.out;
  for (const json& t : train) {
    // Only the assistant targets count: far fewer than the 4 x 96 positions of a step.
    EXPECT_GT(int64_t(t["targets"]), 0);
    EXPECT_LT(int64_t(t["targets"]), 4 * 96 / 2);
  }
  const auto val = records("fall", "val");
  ASSERT_EQ(val.size(), 6u);
  EXPECT_LT(double(val.back()["val_loss"]), 0.2 * double(val.front()["val_loss"]));
  // Fine-tuning defaults: warm-up 3% of the steps (4), cosine to lr / 10.
  EXPECT_NEAR(double(train[0]["lr"]), 0.25e-2, 1e-9);
  EXPECT_NEAR(double(train[3]["lr"]), 1e-2, 1e-9);
  EXPECT_NEAR(double(train.back()["lr"]), 1e-3, 1e-9);

  const fs::path ck = root_ / "fall" / "model";
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json",
                        "tokenizer_config.json", "optimizer.safetensors", "trainer_state.json"})
    EXPECT_TRUE(fs::exists(ck / f)) << f;
  EXPECT_EQ(read_json(ck / "trainer_state.json")["options"]["task"], "sft");
  EXPECT_EQ(file_bytes(root_ / "fall" / "loss.png").substr(1, 3), "PNG");

  // `whale run` loads it, and as a chat it answers in the trained form: reasoning, the end of the
  // think block, the answer, eos.
  r = run_whale("run -m " + ck.string() +
                " --chat -p \"the old whale likes the sea.\" -n 24 --temp 0 -t 1 --no-stats");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(r.out, "the subject is the old whale\n</think>\n\nthe old whale.\n");
}

TEST_F(SftLoop, ResumeRepeatsTheUninterruptedRunExactly) {
  // 100 conversations, ~45 train rows: 20 steps of 4 rows cross an epoch boundary.
  const std::string args = " --steps 20 --eval-every 5 --threads 1";
  Result r = run_whale(base_args("whole") + args);
  ASSERT_EQ(r.code, 0) << r.out;
  r = run_whale(base_args("parts") + args + " --until 9 --save-every 100");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_EQ(records("parts", "train").size(), 9u);
  r = run_whale(base_args("parts") + " --eval-every 5 --threads 1 --resume");  // its --steps
  ASSERT_EQ(r.code, 0) << r.out;
  const auto whole = records("whole", "train"), parts = records("parts", "train");
  ASSERT_EQ(whole.size(), 20u);
  ASSERT_EQ(parts.size(), 20u);
  for (size_t i = 0; i < whole.size(); i++) {
    EXPECT_EQ(double(whole[i]["loss"]), double(parts[i]["loss"])) << "step " << i + 1;
    EXPECT_EQ(double(whole[i]["grad_norm"]), double(parts[i]["grad_norm"])) << "step " << i + 1;
    EXPECT_EQ(whole[i]["targets"], parts[i]["targets"]) << "step " << i + 1;
  }
  EXPECT_EQ(file_bytes(root_ / "whole" / "model" / "model.safetensors"),
            file_bytes(root_ / "parts" / "model" / "model.safetensors"));
  const auto vw = records("whole", "val"), vp = records("parts", "val");
  ASSERT_EQ(vw.size(), 4u);
  ASSERT_EQ(vp.size(), 4u);
  for (size_t i = 0; i < vw.size(); i++)
    EXPECT_EQ(double(vw[i]["val_loss"]), double(vp[i]["val_loss"]));
  const int64_t rows =
      read_json(root_ / "whole" / "model" / "trainer_state.json")["options"]["data"]["rows"];
  EXPECT_LT(rows, 20 * 4);  // the run did cross into a second epoch
}

TEST_F(SftLoop, NanLossStopsAndKeepsTheLastCheckpoint) {
  Result r =
      run_whale(base_args("nan") + " --steps 10 --save-every 2 --fault-nan-step 3 --threads 1");
  EXPECT_EQ(r.code, 3) << r.out;
  EXPECT_NE(r.out.find("whale sft: stopped at step 3"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("step 2"), std::string::npos) << r.out;
  EXPECT_EQ(read_json(root_ / "nan" / "model" / "trainer_state.json")["step"], 2);
}

TEST_F(SftLoop, BadInputIsAnErrorNamingTheLineAndLeavesOutAlone) {
  Result r = run_whale(base_args("keep") + " --steps 3 --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  const fs::path keep = root_ / "keep";
  const std::string model = file_bytes(keep / "model" / "model.safetensors");
  const std::string state = file_bytes(keep / "model" / "trainer_state.json");
  const std::string log = file_bytes(keep / "log.jsonl");
  auto unchanged = [&] {
    EXPECT_EQ(file_bytes(keep / "model" / "model.safetensors"), model);
    EXPECT_EQ(file_bytes(keep / "model" / "trainer_state.json"), state);
    EXPECT_EQ(file_bytes(keep / "log.jsonl"), log);
  };
  const std::string good = make_conversation(1).dump();
  const std::vector<std::pair<std::string, std::string>> bad = {
      {R"({"messages": [)", "invalid JSON"},
      {R"({"conversation": []})", "no \"messages\" array"},
      {R"({"messages": [{"content": "hi"}]})", "message 0 has no string \"role\""},
      {R"({"messages": [{"role": "user", "content": 5}]})", "message 0 has no string \"content\""},
      {R"({"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]})",
       "message 1 has the unknown role \"robot\""},
      {R"({"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "a"}]})",
       "no assistant turn"},
  };
  for (size_t i = 0; i < bad.size(); i++) {
    // Line 3: a good line and a blank one before it.
    const fs::path f = root_ / ("bad" + std::to_string(i) + ".jsonl");
    std::ofstream(f) << good << "\n\n" << bad[i].first << "\n" << good << "\n";
    r = run_whale("sft --data " + f.string() + " --out " + keep.string() +
                  " --resume --batch 4 --seq 96 --lr 1e-2 --val-fraction 0.1 --no-progress");
    EXPECT_EQ(r.code, 1) << r.out;
    EXPECT_NE(r.out.find(f.string() + ":3: "), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(bad[i].second), std::string::npos) << r.out;
    unchanged();
  }

  // A conversation longer than --seq + 1 tokens, unless --truncate.
  const fs::path longf = root_ / "long.jsonl";
  {
    json c = make_conversation(2);
    std::string essay;
    for (int i = 0; i < 40; i++) essay += "the cat sees the fish. ";
    c["messages"][0]["content"] = essay;
    std::ofstream(longf) << good << "\n" << c.dump() << "\n";
    for (int i = 0; i < 20; i++) std::ofstream(longf, std::ios::app) << good << "\n";
  }
  r = run_whale("sft --data " + longf.string() + " --out " + keep.string() +
                " --resume --batch 4 --seq 96 --no-progress");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find(longf.string() + ":2: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("--truncate"), std::string::npos) << r.out;
  unchanged();
  r = run_whale(
      "sft --init " + (root_ / "base" / "model").string() + " --data " + longf.string() +
      " --out " + (root_ / "trunc").string() +
      " --batch 4 --seq 96 --steps 2 --truncate --no-pack --val-fraction 0 --no-progress");
  EXPECT_EQ(r.code, 0) << r.out;
  // The long one lost its target to the cut; the rest are one per row.
  EXPECT_NE(r.out.find("21 conversations in 21 rows"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 dropped"), std::string::npos) << r.out;

  // A model without a chat template; through --tokenizer on a resume, and as --init.
  const fs::path plain = root_ / "plain";
  fs::copy(root_ / "base" / "model", plain, fs::copy_options::recursive);
  json tc = read_json(plain / "tokenizer_config.json");
  tc.erase("chat_template");
  std::ofstream(plain / "tokenizer_config.json") << tc.dump();
  r = run_whale(base_args("keep") + " --steps 6 --resume --tokenizer " + plain.string());
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("the model has no chat template"), std::string::npos) << r.out;
  unchanged();
  r = run_whale("sft --init " + plain.string() + " --data " + (root_ / "chat.jsonl").string() +
                " --out " + (root_ / "plain_out").string() + " --steps 2 --seq 96 --no-progress");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(
      r.out.find((plain / "tokenizer_config.json").string() + ": the model has no chat template"),
      std::string::npos)
      << r.out;

  // A fresh run never overwrites a checkpoint; a resume needs the same data.
  r = run_whale(base_args("keep") + " --steps 6");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("--resume"), std::string::npos) << r.out;
  r = run_whale("sft --data " + longf.string() + " --out " + keep.string() +
                " --resume --truncate --batch 4 --seq 96 --lr 1e-2 --val-fraction 0.1 --steps 6 "
                "--no-progress");
  EXPECT_EQ(r.code, 1) << r.out;
  EXPECT_NE(r.out.find("differ from the checkpoint's"), std::string::npos) << r.out;
  unchanged();
}

// A Hugging Face directory (BF16 safetensors, the real DeepSeek-V3 tokenizer and its V3 chat
// template) as --init, validation from --val. One step at a learning rate too small to move any
// weight (and no bias update): the checkpoint holds the weights exactly, so every tensor was found
// and converted.
TEST_F(SftLoop, StartsFromAHuggingFaceBf16Directory) {
  const std::string hf = whale::testing::chat_tiny_model();
  // --data as a directory: its *.jsonl files in name order (60 + 40 conversations).
  fs::create_directories(root_ / "chats" / "more");
  {
    std::ifstream in(root_ / "chat.jsonl");
    std::ofstream a(root_ / "chats" / "a.jsonl"), b(root_ / "chats" / "more" / "b.jsonl");
    std::string line;
    for (int i = 0; std::getline(in, line); i++) (i < 60 ? a : b) << line << "\n";
    std::ofstream(root_ / "chats" / "notes.txt") << "not chat data\n";
  }
  Result r = run_whale("sft --init " + hf + " --data " + (root_ / "chats").string() + " --val " +
                       (root_ / "chat.jsonl").string() + " --out " + (root_ / "hf").string() +
                       " --steps 1 --lr 1e-20 --bias-gamma 0 --batch 2 --seq 96 --eval-every 1 "
                       "--eval-batches 1 --threads 2 --no-progress");
  ASSERT_EQ(r.code, 0) << r.out;
  EXPECT_NE(r.out.find("V3 chat format"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("100 conversations"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("100 val conversations"), std::string::npos) << r.out;
  ASSERT_EQ(records("hf", "train").size(), 1u);
  EXPECT_EQ(records("hf", "val").size(), 1u);
  const whale::Checkpoint before(hf), after((root_ / "hf" / "model").string());
  size_t compared = 0;
  for (const std::string& name : before.names()) {
    const whale::TensorView& b = before.get(name);
    const whale::TensorView* a = after.find(name);
    ASSERT_NE(a, nullptr) << name;
    ASSERT_EQ(a->dtype, whale::DType::F32) << name;
    ASSERT_EQ(a->numel(), b.numel()) << name;
    for (int64_t i = 0; i < b.numel(); i++) {
      float want, got;
      std::memcpy(&got, a->data + 4 * i, 4);
      if (b.dtype == whale::DType::BF16) {
        uint16_t h;
        std::memcpy(&h, b.data + 2 * i, 2);
        want = whale::bf16_to_f32(h);
      } else {
        ASSERT_EQ(b.dtype, whale::DType::F32) << name;  // the correction biases
        std::memcpy(&want, b.data + 4 * i, 4);
      }
      ASSERT_EQ(got, want) << name << "[" << i << "]";
    }
    compared++;
  }
  EXPECT_GT(compared, 30u);
  r = run_whale("run -m " + (root_ / "hf" / "model").string() +
                " --chat -p hello -n 4 --temp 0 -t 1 --no-stats");
  EXPECT_EQ(r.code, 0) << r.out;
}

TEST_F(SftLoop, TwoMpiProcessesGiveTheLossesOfOne) {
  if (sh("command -v mpirun").code != 0) GTEST_SKIP() << "mpirun not installed";
  Result r = run_whale(base_args("one") + " --steps 6 --threads 1");
  ASSERT_EQ(r.code, 0) << r.out;
  r =
      sh("OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "
         "OMPI_MCA_rmaps_base_oversubscribe=1 ASAN_OPTIONS=detect_leaks=0 "
         "mpirun -np 2 " +
         std::string(WHALE_BINARY) + " " + base_args("two") + " --steps 6 --threads 1 < /dev/null");
  ASSERT_EQ(r.code, 0) << r.out;
  const auto one = records("one", "train"), two = records("two", "train");
  ASSERT_EQ(one.size(), 6u);
  ASSERT_EQ(two.size(), 6u);
  for (size_t i = 0; i < one.size(); i++) {
    EXPECT_NEAR(double(one[i]["loss"]), double(two[i]["loss"]), 1e-5) << "step " << i + 1;
    EXPECT_EQ(one[i]["targets"], two[i]["targets"]) << "step " << i + 1;
  }
  EXPECT_EQ(records("two", "config").at(0)["processes"], 2);
}
