// The serving engine: continuous batching over a fixed set of slots, with a prompt cache.
//
// One engine thread owns the model. Each step it
//   1. admits waiting jobs into free slots (a slot is one sequence's MLA latent KV cache),
//      reusing the longest cached prefix of the job's prompt (see below);
//   2. runs ONE batched forward pass over every busy slot: the next chunk of the prompt for slots
//      still prefilling (at most `prefill_chunk` prompt tokens per step in all, so decoding slots
//      keep streaming while a long prompt comes in), one token for decoding slots;
//   3. samples the next token of each slot that finished its prompt, streams its text to the
//      job, and frees the slot when the job ends (eos, stop string, max_tokens, context full,
//      JSON complete, cancelled by the client).
// A job that arrives while others decode joins at the next step; nobody waits for a batch to end.
//
// Prompt cache. A free slot keeps its tokens and KV cache. A new job takes the free slot whose
// tokens share the longest prefix with its prompt (the previous turns of a chat, a common system
// prompt), and only the rest of the prompt is prefilled. Before a slot's content is overwritten
// it is copied to the prompt store, an LRU map from token sequences to their latent KV bounded
// by `cache_bytes`; a job whose prompt matches a stored sequence better than any free slot gets
// that prefix copied back into its slot. MLA makes this cheap: (kv_lora_rank + qk_rope_head_dim)
// floats per token and layer.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "formats/tokenizer.h"
#include "model/model.h"
#include "run/sampler.h"
#include "run/session.h"
#include "serve/disk_cache.h"
#include "serve/json_mode.h"
#include "serve/json_schema.h"

namespace whale::serve {

struct EngineOptions {
  int parallel = 4;                 // slots: sequences decoded together
  int64_t ctx = 4096;               // tokens per slot (prompt + completion)
  size_t cache_bytes = 256u << 20;  // prompt store bound (the slots' own caches not included)
  int max_queue = 256;              // waiting jobs beyond this are refused
  int64_t prefill_chunk = 512;      // prompt tokens per step over all prefilling slots
  int64_t min_store_tokens = 16;    // shorter sequences are not worth storing
  // MTP speculative decoding (see GenerateOptions::spec_mtp): each decoding slot feeds the MTP
  // module's draft with its next token, two tokens in the batch, and keeps the draft when the
  // sampler picks it. The model must have an MTP module.
  bool spec_mtp = false;
  // The context cache on disk (serve/disk_cache.h): "" = none. Finished jobs' prefixes are written
  // there and a new job's prompt may start from one, across restarts. Not under spec_mtp.
  std::string cache_dir;
  uint64_t cache_disk_bytes = 0;
  uint64_t cache_key = 0;  // names the model (weights and KV type): other keys' entries are foreign
};

// One generation request as the engine sees it. The HTTP side fills the inputs, submits, then
// reads text with wait_text() until it returns false; the engine fills the results.
class Job {
 public:
  // Inputs.
  std::vector<int32_t> prompt;
  GenerateOptions opt;
  bool json_object = false;
  // Structured output: the text must be a value valid for this schema (serve/json_schema.h).
  // Once the value is closed, `schema_tail` is appended to the output and the job ends (a strict
  // function call: the rest of the call's markup).
  std::shared_ptr<const JsonSchema> schema;
  std::string schema_tail;
  // Schemas that take effect when the output reaches a trigger text (strict functions the model
  // may call: the head of a call to one), until their value closes; then generation goes on.
  std::vector<std::pair<std::string, std::shared_ptr<const JsonSchema>>> schema_triggers;
  std::string trigger_prefix;  // text the output counts as starting with (a forced call's opening)
  // The completion starts inside a think block (an R1 chat): its tokens up to the one that
  // completes "</think>" (all of them if none does) are counted as reasoning_tokens.
  bool count_reasoning = false;
  // Log-probabilities: -1 none; else each generated token's (run/sampler.h token_logprobs) with
  // this many alternatives, handed out by wait_text beside the text.
  int top_logprobs = -1;

  // Cancels the job (client gone); the engine frees its slot at the next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

  // Moves the text produced since the last call into `out` (and, when `logprobs` is given, the
  // log-probabilities of the tokens generated since then into it); blocks up to `timeout` when
  // there is nothing yet. Returns false once the job is finished and all its output has been taken.
  // A token's logprob can come before its text (the stop matcher holds text back) and exists for
  // tokens whose text is cut by a stop string.
  bool wait_text(std::string& out, std::chrono::milliseconds timeout,
                 std::vector<TokenLogprob>* logprobs = nullptr);
  // Blocks until the job is finished.
  void wait_done();

  // Results, valid once finished.
  std::string finish_reason;  // "stop", "length", "cancelled", or "error"
  std::string error;          // message when finish_reason == "error"
  std::string stop_sequence;  // the stop string that ended it, if one did
  int64_t prompt_tokens = 0, cached_tokens = 0, completion_tokens = 0, reasoning_tokens = 0;
  double queue_seconds = 0, ttft_seconds = 0, total_seconds = 0;  // from submit()

 private:
  friend class Engine;
  void push_text(const std::string& s);
  void push_logprob(TokenLogprob lp);
  void finish(const std::string& reason);

  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;
  std::vector<TokenLogprob> pending_lp_;
  bool done_ = false;
  std::atomic<bool> cancelled_{false};
  std::chrono::steady_clock::time_point submitted_;
  // The context cache on disk: whether admission looked there, and the entry the loader thread
  // read for this job (then it is admitted again, at the head of the queue).
  bool disk_checked_ = false;
  std::optional<KvEntry> disk_entry_;
};

// Counters for /metrics; all monotonic except the gauges.
struct EngineStats {
  int64_t jobs = 0, prompt_tokens = 0, prefill_tokens = 0, completion_tokens = 0;
  int64_t cache_hit_tokens = 0, cache_hit_jobs = 0, steps = 0;
  int64_t drafted = 0, accepted = 0;  // speculative decoding: drafts checked, drafts taken
  int queue_depth = 0, active_slots = 0, slots = 0;
  size_t store_bytes = 0, store_entries = 0;
  size_t disk_bytes = 0, disk_entries = 0;  // the context cache on disk
  int64_t disk_hit_jobs = 0, disk_damaged = 0;
  double busy_seconds = 0;
  double decode_tokens_per_second = 0;  // over the last 10 s
};

class Engine {
 public:
  Engine(const Model& model, const Tokenizer& tok, EngineOptions opt);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Queues a job. Returns false when the queue is full (the caller answers 503).
  bool submit(const std::shared_ptr<Job>& job);
  // Stops the engine thread; running and queued jobs finish as "cancelled".
  void stop();

  EngineStats stats() const;
  const EngineOptions& options() const { return opt_; }

 private:
  struct Slot;
  // Per layer: the latent rows [n] then the rope-key rows [n], in the cache's stored type.
  using StoreEntry = KvEntry;
  KvEntry snapshot(const Slot& s) const;

  void loop();
  void admit(const std::shared_ptr<Job>& job);
  void step();
  // Speculative decoding: the draft for slot s's next token (runs the MTP module on its pending
  // positions); after the batch, keeps or drops it. Returns whether the slot goes on.
  int32_t draft(Slot& s);
  bool take_spec(Slot& s, std::span<float> logits, const std::vector<float>& hidden, bool drafted);
  // The MTP cache after a prefill chunk of n tokens whose hidden states are `hidden`.
  void mtp_prefill(Slot& s, const std::vector<float>& hidden, size_t n);
  // Samples and streams one token for a slot whose prompt is complete; false when it finished.
  bool next_token(Slot& s, std::span<float> logits);
  // Looks for the job's schema triggers at the end of the output (`bytes`: the new token's).
  void trigger(Slot& s, const std::string& bytes);
  void finish(Slot& s, const std::string& reason);

  // Prompt store.
  void store_save(const Slot& s);
  // Best stored prefix of `prompt`: entry and length (0 when none).
  std::pair<std::list<StoreEntry>::iterator, size_t> store_find(std::span<const int32_t> prompt);
  void store_load(Slot& s, const StoreEntry& e, size_t n);

  // Reads disk cache entries for parked jobs, off the engine thread, and queues the jobs again.
  void loader();

  const Model& model_;
  const Tokenizer& tok_;
  EngineOptions opt_;
  std::unique_ptr<JsonTokenFilter> json_filter_;  // built on first JSON-mode job
  std::vector<std::unique_ptr<Slot>> slots_;
  std::list<StoreEntry> store_;  // front: most recently used
  size_t store_bytes_ = 0;
  std::unique_ptr<DiskCache> disk_;

  mutable std::mutex mu_;  // guards queue_, loads_, stats_, stopping_
  std::condition_variable cv_, load_cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::deque<std::pair<std::shared_ptr<Job>, size_t>> loads_;  // (job, disk entry index)
  EngineStats stats_;
  std::deque<std::pair<std::chrono::steady_clock::time_point, int64_t>> recent_;  // decode rate
  bool stopping_ = false;
  std::thread thread_, loader_;
};

}  // namespace whale::serve
