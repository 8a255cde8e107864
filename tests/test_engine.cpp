// The serving engine without HTTP: continuous batching gives the same text as a lone Session,
// the prompt cache reuses prefixes (from free slots and from the LRU store) without changing the
// output, and cancellation, queue limits, stop strings, context limits and JSON mode behave.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "formats/tokenizer.h"
#include "model/model.h"
#include "run/chat.h"
#include "run/session.h"
#include "serve/engine.h"
#include "serve/json_mode.h"
#include "test_util.h"

using namespace whale;
using namespace whale::serve;
using namespace std::chrono_literals;

namespace {

struct Fixture {
  std::unique_ptr<Model> model;
  Tokenizer tok;
};

const Fixture& fixture() {
  static Fixture f{Model::load(whale::testing::chat_tiny_model()),
                   Tokenizer::load(whale::testing::chat_tiny_model())};
  return f;
}

std::vector<int32_t> chat_prompt(const std::string& user, const std::string& system = "") {
  std::vector<ChatMessage> m;
  if (!system.empty()) m.push_back({"system", system, ""});
  m.push_back({"user", user, ""});
  return fixture().tok.encode(render_chat(m, ChatStyle::V3, fixture().tok.bos_token()));
}

std::shared_ptr<Job> make_job(std::vector<int32_t> prompt, int max_tokens, uint64_t seed = 0,
                              bool greedy = true) {
  auto j = std::make_shared<Job>();
  j->prompt = std::move(prompt);
  j->opt.max_tokens = max_tokens;
  j->opt.sampling.greedy = greedy;
  j->opt.sampling.seed = seed;
  return j;
}

std::string collect(Job& j) {
  std::string text, piece;
  while (j.wait_text(piece, 50ms)) text += piece;
  return text;
}

// What a lone Session (the `whale run` path) generates for the same job.
GenerateResult reference(const Job& j, int64_t ctx = 512) {
  Session s(*fixture().model, ctx);
  return s.generate(j.prompt, fixture().tok, j.opt);
}

void wait_until(const std::function<bool()>& cond) {
  for (int i = 0; i < 2000 && !cond(); i++) std::this_thread::sleep_for(5ms);
}

}  // namespace

TEST(Engine, ConcurrentJobsMatchLoneSessions) {
  EngineOptions o;
  o.parallel = 4;
  o.ctx = 512;
  o.prefill_chunk = 7;  // prompts arrive over several steps, interleaved with decoding
  Engine e(*fixture().model, fixture().tok, o);
  std::vector<std::shared_ptr<Job>> jobs;
  const char* users[] = {
      "Hello there", "What is a whale?", "Tell me a story about the sea", "1 2 3 4 5 6",
      "Why?",        "Write JSON"};
  for (int i = 0; i < 6; i++) {
    // Half greedy, half sampled with a seed: both must equal the lone session.
    jobs.push_back(make_job(chat_prompt(users[i]), 12 + i, 100 + i, i % 2 == 0));
    jobs.back()->opt.sampling.temperature = 0.9f;
    ASSERT_TRUE(e.submit(jobs.back()));
  }
  for (auto& j : jobs) {
    const std::string text = collect(*j);
    const GenerateResult ref = reference(*j);
    EXPECT_EQ(text, ref.text);
    EXPECT_EQ(j->finish_reason, ref.finish_reason);
    EXPECT_EQ(j->completion_tokens, int64_t(ref.ids.size()));
    EXPECT_EQ(j->prompt_tokens, int64_t(j->prompt.size()));
  }
  wait_until([&] { return e.stats().active_slots == 0; });
  EXPECT_EQ(e.stats().active_slots, 0);
  EXPECT_EQ(e.stats().jobs, 6);
}

TEST(Engine, NewJobJoinsWhileAnotherDecodes) {
  EngineOptions o;
  o.parallel = 2;
  o.ctx = 512;
  Engine e(*fixture().model, fixture().tok, o);
  auto long_job = make_job(chat_prompt("long"), 200);
  long_job->opt.stop_at_eos = false;
  ASSERT_TRUE(e.submit(long_job));
  std::string piece;
  while (piece.empty()) ASSERT_TRUE(long_job->wait_text(piece, 1000ms));
  auto short_job = make_job(chat_prompt("short"), 3);
  ASSERT_TRUE(e.submit(short_job));
  collect(*short_job);
  // The short job finished while the long one was still decoding: it did not wait for it.
  EXPECT_EQ(short_job->finish_reason, "length");
  EXPECT_LT(long_job->completion_tokens, 200);
  EXPECT_GT(e.stats().active_slots, 0);
  collect(*long_job);
  EXPECT_EQ(long_job->completion_tokens, 200);
}

TEST(Engine, FreeSlotPrefixIsReused) {
  EngineOptions o;
  o.parallel = 1;
  o.ctx = 512;
  Engine e(*fixture().model, fixture().tok, o);
  const std::string sys = "You are a helpful assistant who answers briefly and precisely.";
  auto a = make_job(chat_prompt("First question", sys), 5);
  ASSERT_TRUE(e.submit(a));
  collect(*a);
  EXPECT_EQ(a->cached_tokens, 0);
  // Same system prompt: everything up to the user's text is reused.
  auto b = make_job(chat_prompt("Second question", sys), 5);
  ASSERT_TRUE(e.submit(b));
  const std::string text = collect(*b);
  const auto common = [&] {
    size_t n = 0;
    while (a->prompt[n] == b->prompt[n]) n++;
    return int64_t(n);
  }();
  EXPECT_EQ(b->cached_tokens, common);
  EXPECT_GT(common, 10);
  EXPECT_EQ(text, reference(*b).text);  // reuse does not change the output
}

TEST(Engine, StoredPrefixComesBackAfterTheSlotWasReused) {
  EngineOptions o;
  o.parallel = 1;
  o.ctx = 512;
  Engine e(*fixture().model, fixture().tok, o);
  const auto x = chat_prompt("A long first conversation about whales, dolphins and the deep sea");
  auto a = make_job(x, 4);
  ASSERT_TRUE(e.submit(a));
  collect(*a);
  // An unrelated prompt takes the only slot: its content (x + generated) moves to the store.
  auto b = make_job(fixture().tok.encode("Completely different text, no chat template at all"), 4);
  ASSERT_TRUE(e.submit(b));
  collect(*b);
  EXPECT_EQ(b->cached_tokens, 0);
  EXPECT_EQ(e.stats().store_entries, 1u);
  // The first conversation continues: its prefix comes back from the store.
  std::vector<int32_t> y = x;
  for (int32_t t : fixture().tok.encode(" and more")) y.push_back(t);
  auto c = make_job(y, 6);
  ASSERT_TRUE(e.submit(c));
  const std::string text = collect(*c);
  EXPECT_EQ(c->cached_tokens, int64_t(x.size()));
  EXPECT_EQ(text, reference(*c).text);
  EXPECT_GT(e.stats().cache_hit_tokens, int64_t(x.size()) - 1);
}

TEST(Engine, StoreIsBoundedLeastRecentlyUsedFirst) {
  const ModelConfig& c = fixture().model->config();
  const size_t per_token =
      size_t(c.num_hidden_layers * (c.kv_lora_rank + c.qk_rope_head_dim)) * sizeof(float);
  EngineOptions o;
  o.parallel = 1;
  o.ctx = 512;
  o.min_store_tokens = 1;
  o.cache_bytes = per_token * 60;  // room for about two of the sequences below
  Engine e(*fixture().model, fixture().tok, o);
  std::vector<std::vector<int32_t>> prompts;
  for (int i = 0; i < 4; i++)
    prompts.push_back(chat_prompt("Prompt number " + std::to_string(i) +
                                  ": the quick brown fox jumps over the lazy dog again and again, "
                                  "while the whale sings " +
                                  std::to_string(i * 7919)));
  ASSERT_GT(prompts[0].size(), 20u);
  ASSERT_LT(prompts[0].size(), 30u);
  for (auto& p : prompts) {
    auto j = make_job(p, 2);
    ASSERT_TRUE(e.submit(j));
    collect(*j);
  }
  const EngineStats s = e.stats();
  EXPECT_LE(s.store_bytes, o.cache_bytes);
  EXPECT_GE(s.store_entries, 1u);
  EXPECT_LT(s.store_entries, 3u);
  // The oldest sequence was evicted: no prefix beyond the shared template start comes back.
  auto j = make_job(prompts[0], 2);
  ASSERT_TRUE(e.submit(j));
  collect(*j);
  EXPECT_LT(j->cached_tokens, int64_t(prompts[0].size()) - 1);
}

TEST(Engine, CancelFreesTheSlot) {
  EngineOptions o;
  o.parallel = 1;
  o.ctx = 512;
  Engine e(*fixture().model, fixture().tok, o);
  auto j = make_job(chat_prompt("cancel me"), 400);
  j->opt.stop_at_eos = false;
  ASSERT_TRUE(e.submit(j));
  std::string piece;
  while (piece.empty()) ASSERT_TRUE(j->wait_text(piece, 1000ms));
  j->cancel();
  j->wait_done();
  EXPECT_EQ(j->finish_reason, "cancelled");
  EXPECT_LT(j->completion_tokens, 400);
  wait_until([&] { return e.stats().active_slots == 0; });
  EXPECT_EQ(e.stats().active_slots, 0);
  auto k = make_job(chat_prompt("next"), 3);  // the slot serves the next job
  ASSERT_TRUE(e.submit(k));
  collect(*k);
  EXPECT_EQ(k->finish_reason, "length");
}

TEST(Engine, FullQueueRefusesAndStopCancelsEverything) {
  EngineOptions o;
  o.parallel = 1;
  o.ctx = 512;
  o.max_queue = 1;
  auto e = std::make_unique<Engine>(*fixture().model, fixture().tok, o);
  auto a = make_job(chat_prompt("a"), 400);
  a->opt.stop_at_eos = false;
  ASSERT_TRUE(e->submit(a));
  std::string piece;
  while (piece.empty()) ASSERT_TRUE(a->wait_text(piece, 1000ms));  // a holds the only slot
  auto b = make_job(chat_prompt("b"), 3), c = make_job(chat_prompt("c"), 3);
  EXPECT_TRUE(e->submit(b));   // waits in the queue
  EXPECT_FALSE(e->submit(c));  // queue full
  EXPECT_EQ(e->stats().queue_depth, 1);
  e->stop();
  a->wait_done();
  b->wait_done();
  EXPECT_EQ(a->finish_reason, "cancelled");
  EXPECT_EQ(b->finish_reason, "cancelled");
  EXPECT_FALSE(e->submit(c));  // stopped
}

TEST(Engine, StopStringsAndContextLimit) {
  EngineOptions o;
  o.parallel = 2;
  o.ctx = 40;
  Engine e(*fixture().model, fixture().tok, o);
  // Find what the model says, then stop on a piece of it.
  auto probe = make_job(chat_prompt("stop test"), 10);
  ASSERT_TRUE(e.submit(probe));
  const std::string full = collect(*probe);
  ASSERT_GT(full.size(), 6u);
  auto s = make_job(chat_prompt("stop test"), 10);
  const std::string stop = full.substr(3, 3);
  s->opt.stop = {stop};
  ASSERT_TRUE(e.submit(s));
  EXPECT_EQ(collect(*s), full.substr(0, full.find(stop)));
  EXPECT_EQ(s->finish_reason, "stop");
  // A 40-token context: generation ends as "length" when it is full.
  auto l = make_job(chat_prompt("context"), 1000);
  l->opt.stop_at_eos = false;
  ASSERT_TRUE(e.submit(l));
  collect(*l);
  EXPECT_EQ(l->finish_reason, "length");
  EXPECT_EQ(l->prompt_tokens + l->completion_tokens, o.ctx);
  // A prompt that does not fit is an error, not a crash.
  auto big = make_job(std::vector<int32_t>(50, 100), 5);
  ASSERT_TRUE(e.submit(big));
  collect(*big);
  EXPECT_EQ(big->finish_reason, "error");
  EXPECT_NE(big->error.find("context"), std::string::npos);
}

TEST(Engine, JsonModeGivesJsonObjects) {
  EngineOptions o;
  o.parallel = 4;
  o.ctx = 512;
  Engine e(*fixture().model, fixture().tok, o);
  std::vector<std::shared_ptr<Job>> jobs;
  for (int i = 0; i < 8; i++) {
    jobs.push_back(make_job(chat_prompt("Reply in JSON"), 60, 1000 + i, false));
    jobs.back()->json_object = true;
    ASSERT_TRUE(e.submit(jobs.back()));
  }
  int complete = 0;
  for (auto& j : jobs) {
    const std::string text = collect(*j);
    JsonState st;
    EXPECT_TRUE(st.push(text)) << text;  // always a valid prefix, even when cut by max_tokens
    if (j->finish_reason == "stop") {
      complete++;
      EXPECT_TRUE(st.complete()) << text;
      const auto parsed = nlohmann::json::parse(text, nullptr, false);
      EXPECT_TRUE(parsed.is_object()) << text;
    }
  }
  EXPECT_GT(complete, 0);
}
