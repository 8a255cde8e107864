// The MTP module at inference (Model::mtp_forward) and speculative decoding with it
// (--spec mtp), on the bundled model, whose MTP module was trained.
//  - The module's predictions equal the training code's (train/model_train.cpp, a separate
//    implementation): the mean MTP cross-entropy of a held-out trace, computed one position at a
//    time through the module's cache, matches TrainModel's batched MTP loss.
//  - Speculative decoding changes nothing but the speed: greedy and seeded sampled text are
//    byte-identical with and without it, over prompts of every family, text it cannot answer,
//    and a two-turn chat (the cache's prefix reuse); the drafts are mostly accepted.
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "formats/tokenizer.h"
#include "model/model.h"
#include "reason/examples.h"
#include "reason/task.h"
#include "run/chat.h"
#include "run/session.h"
#include "serve/engine.h"
#include "test_util.h"
#include "train/model_train.h"
#include "train/weights_io.h"

using namespace whale;
using json = nlohmann::json;

namespace {

const std::string kModel = std::string(WHALE_SOURCE_DIR) + "/models/whale-r1-tiny";

std::vector<int32_t> held_out_trace(const Tokenizer& tok, const char* family, uint64_t i) {
  const auto task = reason::make_task(family);
  const json line = json::parse(reason::example_json(
      reason::task_example(*task, 91, i, reason::Split::Eval), reason::ExampleFormat::Text));
  return tok.encode("<｜begin▁of▁sentence｜>" + line["text"].get<std::string>() +
                    "<｜end▁of▁sentence｜>");
}

}  // namespace

TEST(Mtp, InferenceModuleMatchesTheTrainingCode) {
  auto m = Model::load(kModel);
  ASSERT_TRUE(m->has_mtp());
  const Tokenizer tok = Tokenizer::load(kModel);
  train::TrainModel tm(m->config(), train::LossConfig{1.0f, 0.0f});
  train::load_train_weights(tm, kModel);
  for (const char* family : {"add_sub", "countdown"}) {
    const std::vector<int32_t> ids = held_out_trace(tok, family, 3);
    const int64_t T = int64_t(ids.size()) - 1;
    ASSERT_GT(T, 20);
    const std::vector<int32_t> inputs(ids.begin(), ids.end() - 1),
        targets(ids.begin() + 1, ids.end());
    const train::StepLosses want = tm.forward(inputs.data(), targets.data(), 1, T);

    // Position i combines h_i with inputs[i + 1] and predicts targets[i + 1], for i < T - 1.
    KVCache cache = m->new_cache(), mcache = m->new_mtp_cache();
    std::vector<float> hidden;
    const SeqInput in{&cache, inputs, false, &hidden};
    m->forward(std::span<const SeqInput>(&in, 1));
    ASSERT_EQ(hidden.size(), size_t(T * m->config().hidden_size));
    double ce = 0;
    for (int64_t i = 0; i + 1 < T; i++) {
      const auto logits = m->mtp_forward(mcache, hidden.data() + i * m->config().hidden_size,
                                         std::span<const int32_t>(&inputs[size_t(i + 1)], 1));
      double mx = -1e30, sum = 0;
      for (float v : logits) mx = std::max(mx, double(v));
      for (float v : logits) sum += std::exp(double(v) - mx);
      ce += mx + std::log(sum) - logits[size_t(targets[size_t(i + 1)])];
    }
    ce /= double(T - 1);
    std::printf("[%s] MTP cross-entropy: inference %.6f, training code %.6f\n", family, ce,
                want.mtp);
    EXPECT_NEAR(ce, want.mtp, 1e-4 * (1 + want.mtp)) << family;
    EXPECT_LT(ce, 0.5) << family;  // the module was trained: it predicts two ahead well
  }
}

namespace {

struct Gen {
  std::string text;
  int64_t drafted = 0, accepted = 0;
};

// Two turns of a chat through one Session (the second reuses the first's cache).
std::vector<Gen> chat(const Model& m, const Tokenizer& tok, const std::vector<std::string>& users,
                      bool spec, float temp, uint64_t seed) {
  Session session(m, 1024);
  std::vector<ChatMessage> msgs;
  std::vector<Gen> out;
  for (const std::string& u : users) {
    msgs.push_back({"user", u, ""});
    GenerateOptions opt;
    opt.max_tokens = 300;
    opt.spec_mtp = spec;
    opt.sampling.temperature = temp;
    opt.sampling.seed = seed;
    const GenerateResult r =
        session.generate(tok.encode(render_chat(msgs, ChatStyle::R1, tok.bos_token())), tok, opt);
    out.push_back({r.text, r.drafted, r.accepted});
    msgs.push_back({"assistant", r.text, ""});
  }
  return out;
}

}  // namespace

TEST(MtpSpec, SameTextWithAndWithoutSpeculation) {
  auto m = Model::load(kModel);
  const Tokenizer tok = Tokenizer::load(kModel);
  std::vector<std::vector<std::string>> convs;
  for (const char* family : {"add_sub", "mul", "countdown"}) {
    const auto task = reason::make_task(family);
    for (uint64_t i = 0; i < (whale::testing::kSanitized ? 1 : 2); i++)
      convs.push_back({task->generate(5, i, reason::Split::Eval).prompt,
                       task->generate(5, i + 10, reason::Split::Eval).prompt});
  }
  convs.push_back({"Tell me about whales.", "What is 12 + 30?"});
  int64_t drafted = 0, accepted = 0;
  for (const auto& users : convs)
    for (float temp : {0.0f, 0.8f}) {
      const auto plain = chat(*m, tok, users, false, temp, 17);
      const auto spec = chat(*m, tok, users, true, temp, 17);
      for (size_t t = 0; t < users.size(); t++) {
        EXPECT_EQ(spec[t].text, plain[t].text) << users[t] << " (temperature " << temp << ")";
        EXPECT_EQ(plain[t].drafted, 0);
        drafted += spec[t].drafted;
        accepted += spec[t].accepted;
      }
    }
  std::printf("MTP drafts accepted: %lld of %lld\n", (long long)accepted, (long long)drafted);
  EXPECT_GT(drafted, 300);
  EXPECT_GT(double(accepted), 0.6 * double(drafted));
}

TEST(MtpSpec, CommandLine) {
  using whale::testing::run_whale;
  const std::string args = " --chat -p 'What is 4821 + 379?' --temp 0 -n 200";
  const auto plain = run_whale("run -m " + kModel + args + " --no-stats");
  const auto spec = run_whale("run -m " + kModel + args + " --spec mtp");
  ASSERT_EQ(plain.code, 0) << plain.out;
  ASSERT_EQ(spec.code, 0) << spec.out;
  EXPECT_EQ(spec.out.substr(0, plain.out.size()), plain.out);
  EXPECT_NE(spec.out.find("MTP drafts accepted"), std::string::npos) << spec.out;

  const auto bench = run_whale("bench -m " + kModel + " -p 16 -n 32 --spec mtp");
  ASSERT_EQ(bench.code, 0) << bench.out;
  const json j = json::parse(bench.out.substr(bench.out.find('{')));
  EXPECT_EQ(j["spec"], "mtp");
  EXPECT_GT(j["drafted"].get<int64_t>(), 0);

  // A model without an MTP module: a clear error, not a silent no-op.
  const std::string gguf =
      std::string(WHALE_SOURCE_DIR) + "/tests/fixtures/gguf/models/v3_q8_0.gguf";
  const auto bad = run_whale("bench -m " + gguf + " -p 8 -n 4 --spec mtp");
  EXPECT_NE(bad.code, 0);
  EXPECT_NE(bad.out.find("no MTP module"), std::string::npos) << bad.out;
  const auto bad2 = run_whale("run -m " + kModel + " -p hi --spec medusa");
  EXPECT_NE(bad2.code, 0);
  EXPECT_NE(bad2.out.find("medusa"), std::string::npos) << bad2.out;
}

// The serving engine with --spec mtp: every slot drafts with the MTP module and feeds [next, draft]
// in the batch. Across three slots, chunked prompts (8 tokens a step, so the MTP cache follows the
// prompt chunk by chunk), greedy and seeded sampling, second turns that reuse a slot's prefix, and
// a context that runs out, each job's text, finish reason and token count equal those of the same
// engine without speculation.
TEST(MtpSpec, ServingEngineGivesTheSameText) {
  using namespace whale::serve;
  using namespace std::chrono_literals;
  auto m = Model::load(kModel);
  const Tokenizer tok = Tokenizer::load(kModel);
  std::vector<std::vector<ChatMessage>> convs;
  for (const char* family : {"add_sub", "mul", "countdown"}) {
    const auto task = reason::make_task(family);
    for (uint64_t i = 0; i < 2; i++)
      convs.push_back({{"user", task->generate(6, i, reason::Split::Eval).prompt, ""}});
  }
  convs.push_back({{"user", "Tell me about whales.", ""}});
  struct Out {
    std::string text, finish;
    int64_t tokens;
  };
  auto serve_all = [&](bool spec, int64_t ctx, EngineStats* stats) {
    EngineOptions eo;
    eo.parallel = 3;
    eo.ctx = ctx;
    eo.prefill_chunk = 8;
    eo.spec_mtp = spec;
    Engine engine(*m, tok, eo);
    std::vector<Out> outs;
    for (int turn = 0; turn < 2; turn++) {
      std::vector<std::shared_ptr<Job>> jobs;
      for (size_t c = 0; c < convs.size(); c++) {
        std::vector<ChatMessage> msgs = convs[c];
        if (turn == 1) {  // the first answer and a follow-up: the slot's prefix is reused
          msgs.push_back({"assistant", outs[c].text, ""});
          msgs.push_back({"user", "And what is 7 + 8?", ""});
        }
        auto j = std::make_shared<Job>();
        j->prompt = tok.encode(render_chat(msgs, ChatStyle::R1, tok.bos_token()));
        j->opt.max_tokens = 120;
        j->opt.sampling.temperature = c % 2 ? 0.8f : 0.0f;
        j->opt.sampling.seed = 17 + c;
        EXPECT_TRUE(engine.submit(j));
        jobs.push_back(j);
      }
      for (auto& j : jobs) {
        std::string text, piece;
        while (j->wait_text(piece, 50ms)) text += piece;
        outs.push_back({text, j->finish_reason, j->completion_tokens});
      }
    }
    if (stats) *stats = engine.stats();
    return outs;
  };
  for (int64_t ctx : {1024, 80}) {  // 80: the longer prompts run out of context
    EngineStats st;
    const std::vector<Out> plain = serve_all(false, ctx, nullptr);
    const std::vector<Out> spec = serve_all(true, ctx, &st);
    ASSERT_EQ(spec.size(), plain.size());
    int lengths = 0;
    for (size_t i = 0; i < plain.size(); i++) {
      EXPECT_EQ(spec[i].text, plain[i].text) << "job " << i << " ctx " << ctx;
      EXPECT_EQ(spec[i].finish, plain[i].finish) << "job " << i << " ctx " << ctx;
      EXPECT_EQ(spec[i].tokens, plain[i].tokens) << "job " << i << " ctx " << ctx;
      lengths += plain[i].finish == "length";
    }
    std::printf("ctx %lld: MTP drafts accepted %lld of %lld, %d jobs ended by length\n",
                (long long)ctx, (long long)st.accepted, (long long)st.drafted, lengths);
    EXPECT_GT(st.drafted, ctx == 1024 ? 300 : 20);
    EXPECT_GT(double(st.accepted), 0.5 * double(st.drafted));
    if (ctx == 80) {
      EXPECT_GT(lengths, 0);
    }
  }
}
