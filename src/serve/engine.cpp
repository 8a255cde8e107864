#include "serve/engine.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "run/chat.h"
#include "run/stop.h"

namespace whale::serve {

using clk = std::chrono::steady_clock;

namespace {

double seconds_since(clk::time_point t) {
  return std::chrono::duration<double>(clk::now() - t).count();
}

size_t common_prefix(std::span<const int32_t> a, std::span<const int32_t> b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) n++;
  return n;
}

}  // namespace

// ------------------------------------------------------------------ Job

void Job::push_text(const std::string& s) {
  if (s.empty()) return;
  {
    std::lock_guard lk(mu_);
    pending_ += s;
  }
  cv_.notify_all();
}

void Job::push_logprob(TokenLogprob lp) {
  {
    std::lock_guard lk(mu_);
    pending_lp_.push_back(std::move(lp));
  }
  cv_.notify_all();
}

void Job::finish(const std::string& reason) {
  {
    std::lock_guard lk(mu_);
    finish_reason = reason;
    total_seconds = seconds_since(submitted_);
    done_ = true;
  }
  cv_.notify_all();
}

bool Job::wait_text(std::string& out, std::chrono::milliseconds timeout,
                    std::vector<TokenLogprob>* logprobs) {
  std::unique_lock lk(mu_);
  cv_.wait_for(lk, timeout,
               [&] { return done_ || !pending_.empty() || (logprobs && !pending_lp_.empty()); });
  out.clear();
  std::swap(out, pending_);
  bool got_lp = false;
  if (logprobs) {
    logprobs->clear();
    std::swap(*logprobs, pending_lp_);
    got_lp = !logprobs->empty();
  }
  return !(done_ && out.empty() && !got_lp);
}

void Job::wait_done() {
  std::unique_lock lk(mu_);
  cv_.wait(lk, [&] { return done_; });
}

// ------------------------------------------------------------------ Slot

struct Engine::Slot {
  Slot(const Model& m, int64_t ctx) : cache(m.new_cache(ctx)) {}

  KVCache cache;
  std::vector<int32_t> tokens;  // ids whose keys/values are in `cache`
  std::shared_ptr<Job> job;     // null when free
  size_t prompt_pos = 0;        // prompt tokens already in the cache
  int32_t last = -1;            // sampled token, fed at the next step
  int64_t last_used = 0;        // step of the last admission (LRU among free slots)
  std::optional<Sampler> sampler;
  std::optional<StreamDecoder> detok;
  std::optional<StopMatcher> stops;
  JsonState json;
  SchemaState schema;
  const JsonSchema* active = nullptr;  // the schema in force (job.schema, or a triggered one)
  std::string trigger_tail;            // recent output, while a trigger may complete
  std::vector<int32_t> ids;            // generated
  std::vector<float> raw_logits;       // the logits before masking, when logprobs are asked for
  std::string think_tail;              // the end of the text so far, while "</think>" is not in it
  bool think_closed = false;
  // Speculative decoding (as run/session.h): the MTP cache holds positions [0, mtp->len());
  // pend_h the main model's hidden states of positions [mtp->len(), cache.len()) and pend_t the
  // tokens after all of them but the last. `pair` is this step's [last, draft] input.
  std::unique_ptr<KVCache> mtp;
  std::vector<float> pend_h, hidden;
  std::vector<int32_t> pend_t;
  int32_t pair[2] = {-1, -1};

  bool prefilling() const { return job && prompt_pos < job->prompt.size(); }
};

// ------------------------------------------------------------------ Engine

Engine::Engine(const Model& model, const Tokenizer& tok, EngineOptions opt)
    : model_(model), tok_(tok), opt_(opt) {
  if (opt_.parallel < 1) throw std::invalid_argument("--parallel must be at least 1");
  if (opt_.ctx < 2) throw std::invalid_argument("--ctx must be at least 2");
  if (opt_.prefill_chunk < 1) throw std::invalid_argument("prefill chunk must be at least 1");
  if (opt_.spec_mtp && !model_.has_mtp())
    throw std::invalid_argument("--spec mtp: the model has no MTP module");
  for (int i = 0; i < opt_.parallel; i++) {
    slots_.push_back(std::make_unique<Slot>(model_, opt_.ctx));
    // The whole context's KV memory up front (as llama.cpp allocates its cache): resident from
    // the start instead of page-faulted in by the first long prompt, which on a VM is slower than
    // filling it from the prompt store or the disk cache.
    slots_.back()->cache.reserve(opt_.ctx);
    if (opt_.spec_mtp)
      slots_.back()->mtp = std::make_unique<KVCache>(model_.new_mtp_cache(opt_.ctx));
  }
  stats_.slots = opt_.parallel;
  if (!opt_.cache_dir.empty() && !opt_.spec_mtp) {
    disk_ = std::make_unique<DiskCache>(opt_.cache_dir, opt_.cache_disk_bytes, opt_.cache_key);
    loader_ = std::thread([this] { loader(); });
  }
  thread_ = std::thread([this] { loop(); });
}

Engine::~Engine() {
  stop();
}

void Engine::stop() {
  {
    std::lock_guard lk(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  load_cv_.notify_all();
  if (loader_.joinable()) loader_.join();  // first: it may still hand a job to the queue
  if (thread_.joinable()) thread_.join();
}

void Engine::loader() {
  std::unique_lock lk(mu_);
  for (;;) {
    load_cv_.wait(lk, [&] { return stopping_ || !loads_.empty(); });
    if (stopping_) break;
    auto [job, index] = std::move(loads_.front());
    loads_.pop_front();
    lk.unlock();
    std::optional<KvEntry> e = disk_->load(index);  // nullopt (and removed) when damaged
    lk.lock();
    if (stopping_) {
      job->finish("cancelled");
      break;
    }
    job->disk_entry_ = std::move(e);
    queue_.push_front(std::move(job));  // it was admitted once: first in line again
    stats_.queue_depth = int(queue_.size());
    cv_.notify_all();
  }
  for (auto& [job, index] : loads_) job->finish("cancelled");
  loads_.clear();
}

bool Engine::submit(const std::shared_ptr<Job>& job) {
  job->submitted_ = clk::now();
  {
    std::lock_guard lk(mu_);
    if (stopping_ || int(queue_.size()) >= opt_.max_queue) return false;
    queue_.push_back(job);
    stats_.queue_depth = int(queue_.size());
  }
  cv_.notify_all();
  return true;
}

EngineStats Engine::stats() const {
  std::lock_guard lk(mu_);
  EngineStats s = stats_;
  if (disk_) {
    s.disk_entries = disk_->entries();
    s.disk_bytes = disk_->bytes();
    s.disk_damaged = disk_->damaged();
  }
  double tokens = 0;
  for (const auto& r : recent_) tokens += double(r.second);
  s.decode_tokens_per_second = tokens / 10.0;
  return s;
}

void Engine::loop() {
  while (true) {
    std::vector<std::shared_ptr<Job>> admitted;
    {
      std::unique_lock lk(mu_);
      const auto busy = [&] {
        return std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->job; });
      };
      if (!busy()) cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) break;
      int free =
          int(std::count_if(slots_.begin(), slots_.end(), [](const auto& s) { return !s->job; }));
      while (free-- > 0 && !queue_.empty()) {
        admitted.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      stats_.queue_depth = int(queue_.size());
    }
    for (auto& job : admitted) admit(job);
    step();
  }
  // Shutting down: nothing more will run.
  for (auto& s : slots_)
    if (s->job) finish(*s, "cancelled");
  std::lock_guard lk(mu_);
  for (auto& job : queue_) job->finish("cancelled");
  queue_.clear();
}

void Engine::admit(const std::shared_ptr<Job>& job) {
  if (job->cancelled()) return job->finish("cancelled");
  if (job->prompt.empty() || int64_t(job->prompt.size()) >= opt_.ctx) {
    job->error = "prompt of " + std::to_string(job->prompt.size()) +
                 " tokens does not fit the context of " + std::to_string(opt_.ctx);
    return job->finish("error");
  }
  // The free slot holding the longest prefix of the prompt; ties: least recently used.
  Slot* best = nullptr;
  size_t best_n = 0;
  for (auto& s : slots_) {
    if (s->job) continue;
    const size_t n = common_prefix(s->tokens, job->prompt);
    if (!best || n > best_n || (n == best_n && s->last_used < best->last_used)) {
      best = s.get();
      best_n = n;
    }
  }
  Slot& s = *best;
  // The context cache on disk, whose entries outlive restarts: when it holds a longer prefix than
  // memory does, the job is parked while the loader thread reads the entry (other slots run on
  // meanwhile; a big entry takes a while to read and check) and comes back to the head of the
  // queue with it. (Not under --spec mtp: a stored prefix has no MTP entries, which would have to
  // be rebuilt from the main model's hidden states, i.e. by running the prefix again.)
  if (disk_ && !job->disk_checked_) {
    job->disk_checked_ = true;
    const auto [index, disk_n] = disk_->find(job->prompt);
    const size_t mem_n = std::max(best_n, s.mtp ? size_t(0) : store_find(job->prompt).second);
    if (disk_n > mem_n && std::min(disk_n, job->prompt.size() - 1) > mem_n &&
        int64_t(disk_n) >= opt_.min_store_tokens) {
      {
        std::lock_guard lk(mu_);
        loads_.emplace_back(job, index);
      }
      load_cv_.notify_one();
      return;
    }
  }
  // The slot's content beyond the common prefix is about to be overwritten: keep it in the store,
  // then take the store's best prefix if it beats the slot's.
  if (s.tokens.size() > best_n && int64_t(s.tokens.size()) >= opt_.min_store_tokens) store_save(s);
  if (auto [entry, stored_n] = store_find(job->prompt); !s.mtp && stored_n > best_n) {
    store_load(s, *entry, stored_n);
    best_n = stored_n;
  }
  // Then what the loader read from disk (a damaged entry was dropped, never loaded).
  if (job->disk_entry_) {
    const size_t n = common_prefix(job->disk_entry_->tokens, job->prompt);
    if (n > best_n) {
      store_load(s, *job->disk_entry_, n);
      best_n = n;
      std::lock_guard lk(mu_);
      stats_.disk_hit_jobs++;
    }
    job->disk_entry_.reset();
  }
  size_t reuse = std::min(best_n, job->prompt.size() - 1);  // run at least one token
  if (s.mtp) {
    // MTP position i needs h_i and token i + 1: positions below reuse - 1 stay valid, and the
    // main model reruns from the first position whose hidden state is not at hand.
    reuse = std::min<size_t>(reuse > 0 ? reuse - 1 : 0, size_t(s.mtp->len()));
    s.mtp->set_len(int64_t(reuse));
    s.pend_h.clear();
    s.pend_t.clear();
  }
  s.cache.set_len(int64_t(reuse));
  s.tokens.resize(reuse);
  s.prompt_pos = reuse;
  s.job = job;
  s.last_used = stats_.steps;
  s.ids.clear();
  s.think_tail.clear();
  s.think_closed = false;
  s.json = JsonState();
  s.active = job->schema.get();
  if (s.active) s.schema = SchemaState(s.active);
  s.trigger_tail = job->trigger_prefix;
  s.detok.emplace(tok_, /*skip_special=*/true);
  s.stops.emplace(job->opt.stop);
  {
    std::lock_guard lk(mu_);
    stats_.active_slots++;
  }
  try {
    s.sampler.emplace(job->opt.sampling);
    if ((job->json_object || job->schema || !job->schema_triggers.empty()) && !json_filter_)
      json_filter_ = std::make_unique<JsonTokenFilter>(tok_, tok_.eos_id());
  } catch (const std::exception& e) {
    job->error = e.what();
    return finish(s, "error");
  }
  job->prompt_tokens = int64_t(job->prompt.size());
  job->cached_tokens = int64_t(reuse);
  job->queue_seconds = seconds_since(job->submitted_);
  std::lock_guard lk(mu_);
  stats_.jobs++;
  stats_.prompt_tokens += job->prompt_tokens;
  stats_.cache_hit_tokens += job->cached_tokens;
  stats_.cache_hit_jobs += reuse > 0;
}

void Engine::step() {
  // Decoding slots first (one token each), then prompt chunks within the budget.
  std::vector<SeqInput> batch;
  std::vector<Slot*> who;
  std::vector<size_t> chunk;  // prompt tokens each prefilling slot runs this step
  for (auto& s : slots_) {
    if (!s->job || s->prefilling()) continue;
    if (s->job->cancelled()) {
      finish(*s, "cancelled");
      continue;
    }
    if (s->mtp) {
      // [last, draft] when two more tokens fit the context, else [last] alone.
      s->pair[0] = s->last;
      s->pair[1] = draft(*s);
      const size_t n = s->cache.len() + 2 < opt_.ctx ? 2 : 1;
      batch.push_back({&s->cache, std::span<const int32_t>(s->pair, n), n == 2, &s->hidden});
    } else {
      batch.push_back({&s->cache, std::span<const int32_t>(&s->last, 1), false});
    }
    who.push_back(s.get());
    chunk.push_back(0);
  }
  int64_t budget = opt_.prefill_chunk;
  for (auto& s : slots_) {
    if (!s->prefilling()) continue;
    if (s->job->cancelled()) {
      finish(*s, "cancelled");
      continue;
    }
    if (budget <= 0) break;
    const size_t n = std::min<size_t>(s->job->prompt.size() - s->prompt_pos, size_t(budget));
    budget -= int64_t(n);
    batch.push_back({&s->cache, std::span(s->job->prompt).subspan(s->prompt_pos, n), false,
                     s->mtp ? &s->hidden : nullptr});
    who.push_back(s.get());
    chunk.push_back(n);
  }
  if (batch.empty()) return;

  const auto t0 = clk::now();
  std::vector<float> logits;
  try {
    logits = model_.forward(batch);
  } catch (const std::exception& e) {
    for (Slot* s : who) {
      s->job->error = e.what();
      finish(*s, "error");
    }
    return;
  }
  const size_t V = size_t(model_.config().vocab_size);
  int64_t prefilled = 0, decoded = 0;
  size_t row = 0;  // logits row of input i
  for (size_t i = 0; i < who.size(); i++) {
    Slot& s = *who[i];
    const size_t rows = batch[i].all_logits ? batch[i].tokens.size() : 1;
    const std::span<float> out = std::span(logits).subspan(row * V, rows * V);
    row += rows;
    if (chunk[i] == 0 && s.mtp) {
      const int64_t before = int64_t(s.ids.size());
      s.tokens.push_back(s.pair[0]);
      take_spec(s, out, s.hidden, rows == 2);
      decoded += int64_t(s.ids.size()) - before;
      continue;
    }
    s.tokens.insert(s.tokens.end(), batch[i].tokens.begin(), batch[i].tokens.end());
    if (chunk[i] > 0) {
      s.prompt_pos += chunk[i];
      prefilled += int64_t(chunk[i]);
      if (s.mtp) mtp_prefill(s, s.hidden, chunk[i]);
      if (s.prefilling()) continue;  // more of the prompt next step
    }
    if (next_token(s, out.subspan(0, V))) decoded++;
  }
  std::lock_guard lk(mu_);
  stats_.steps++;
  stats_.prefill_tokens += prefilled;
  stats_.busy_seconds += seconds_since(t0);
  const auto now = clk::now();
  recent_.emplace_back(now, decoded);
  while (!recent_.empty() && now - recent_.front().first > std::chrono::seconds(10))
    recent_.pop_front();
}

bool Engine::next_token(Slot& s, std::span<float> logits) {
  Job& job = *s.job;
  if (job.cancelled()) {
    finish(s, "cancelled");
    return false;
  }
  int32_t next;
  // JSON mode and schemas constrain the answer: in an R1 chat, the text after "</think>".
  const bool answering = !(job.count_reasoning && !s.think_closed);
  const bool constrained = (job.json_object || s.active) && answering;
  try {
    // Log-probabilities are the model's own: taken before JSON masking.
    std::span<const float> raw = logits;
    if (constrained) {
      if (job.top_logprobs >= 0) {
        s.raw_logits.assign(logits.begin(), logits.end());
        raw = s.raw_logits;
      }
      if (s.active)
        json_filter_->mask(s.schema, logits);
      else
        json_filter_->mask(s.json, logits);
    }
    next = s.sampler->sample(logits, s.ids);
    if (job.top_logprobs >= 0 && !(job.opt.stop_at_eos && next == tok_.eos_id()))
      job.push_logprob(token_logprobs(raw, next, job.top_logprobs));
  } catch (const std::exception& e) {
    job.error = e.what();
    finish(s, "error");
    return false;
  }
  if (s.ids.empty()) job.ttft_seconds = seconds_since(job.submitted_);
  if (job.opt.stop_at_eos && next == tok_.eos_id()) {
    finish(s, "stop");
    return false;
  }
  s.ids.push_back(next);
  job.completion_tokens = int64_t(s.ids.size());
  {
    std::lock_guard lk(mu_);
    stats_.completion_tokens++;
  }
  const std::string text = s.detok->push(next);
  std::string json_bytes = constrained ? tok_.token_text(next) : std::string();
  if (job.count_reasoning && !s.think_closed) {
    job.reasoning_tokens = job.completion_tokens;  // this token is still reasoning
    s.think_tail += text;
    const size_t end = s.think_tail.find(kThinkEnd);
    s.think_closed = end != std::string::npos;
    // The answer may start in the token that closes the think block.
    if (s.think_closed) json_bytes = s.think_tail.substr(end + kThinkEnd.size());
    if (s.think_tail.size() > kThinkEnd.size())
      s.think_tail.erase(0, s.think_tail.size() - kThinkEnd.size());
  }
  const StopMatcher::Result r = s.stops->push(text);
  job.push_text(r.emit);
  if (r.stopped) {
    job.stop_sequence = s.stops->matched();
    finish(s, "stop");
    return false;
  }
  // Bytes after "</think>" in the closing token were not masked: when they cannot start the
  // value, the value starts after them instead.
  if (!constrained && !json_bytes.empty()) {
    JsonState j = s.json;
    SchemaState sc = s.schema;
    if (job.json_object && j.push(json_bytes)) s.json = j;
    if (s.active && sc.push(json_bytes)) s.schema = sc;
    json_bytes.clear();
  }
  if (job.json_object && !json_bytes.empty() && s.json.push(json_bytes) && s.json.complete()) {
    finish(s, "stop");
    return false;
  }
  if (s.active && !json_bytes.empty() && s.schema.push(json_bytes) && s.schema.closed()) {
    if (s.active == job.schema.get()) {
      if (!job.schema_tail.empty()) {
        const StopMatcher::Result t = s.stops->push(s.detok->flush() + job.schema_tail);
        job.push_text(t.emit);
      }
      finish(s, "stop");
      return false;
    }
    s.active = nullptr;  // a triggered value closed: the model goes on (its call's markup)
  } else if (!s.active && answering && !job.schema_triggers.empty()) {
    trigger(s, tok_.token_text(next));
  }
  if (int64_t(s.ids.size()) >= job.opt.max_tokens || s.cache.len() + 1 >= opt_.ctx) {
    finish(s, "length");
    return false;
  }
  s.last = next;
  return true;
}

void Engine::trigger(Slot& s, const std::string& bytes) {
  s.trigger_tail += bytes;
  size_t longest = 0;
  for (const auto& [text, schema] : s.job->schema_triggers) {
    longest = std::max(longest, text.size());
    const size_t at = s.trigger_tail.find(text);
    if (at == std::string::npos) continue;
    s.active = schema.get();
    s.schema = SchemaState(s.active);
    // Bytes of this token after the trigger were not masked: kept when they start the value.
    SchemaState rest = s.schema;
    if (rest.push(std::string_view(s.trigger_tail).substr(at + text.size()))) s.schema = rest;
    if (s.schema.closed()) s.active = nullptr;
    s.trigger_tail.clear();
    return;
  }
  if (s.trigger_tail.size() > longest) s.trigger_tail.erase(0, s.trigger_tail.size() - longest);
}

// ------------------------------------------------------------------ speculative decoding

void Engine::mtp_prefill(Slot& s, const std::vector<float>& hidden, size_t n) {
  const size_t D = size_t(model_.config().hidden_size);
  s.pend_h.insert(s.pend_h.end(), hidden.begin(), hidden.begin() + std::ptrdiff_t(n * D));
  // Every pending position but the cache's last now has its next token in s.tokens.
  const size_t first = size_t(s.mtp->len()), known = s.tokens.size() - 1 - first;
  if (known == 0) return;
  model_.mtp_forward(*s.mtp, s.pend_h.data(), std::span(s.tokens).subspan(first + 1, known));
  s.pend_h.erase(s.pend_h.begin(), s.pend_h.begin() + std::ptrdiff_t(known * D));
}

int32_t Engine::draft(Slot& s) {
  s.pend_t.push_back(s.last);
  const std::vector<float> dl = model_.mtp_forward(*s.mtp, s.pend_h.data(), s.pend_t);
  return int32_t(std::max_element(dl.begin(), dl.end()) - dl.begin());
}

// After the pass over [last, draft] (or [last] alone when `drafted` is false): row 0 gives the
// token after `last`; when the sampler picks the draft, the draft is taken and row 1 gives the
// next one, else the draft leaves the cache. Mirrors Session::decode_speculative.
bool Engine::take_spec(Slot& s, std::span<float> logits, const std::vector<float>& hidden,
                       bool drafted) {
  const size_t V = size_t(model_.config().vocab_size), D = size_t(model_.config().hidden_size);
  const int32_t dr = s.pair[1];
  // The draft leaves the cache unless it is taken, so that the slot's tokens, the context check
  // and a finished slot's reusable prefix are those of plain decoding.
  if (drafted) s.cache.set_len(s.cache.len() - 1);
  {
    std::lock_guard lk(mu_);
    stats_.drafted += drafted;
  }
  if (!next_token(s, logits.subspan(0, V))) return false;
  if (drafted && s.last == dr) {
    {
      std::lock_guard lk(mu_);
      stats_.accepted++;
    }
    s.cache.set_len(s.cache.len() + 1);  // its keys and values are still there
    s.tokens.push_back(dr);
    s.pend_h.assign(hidden.begin(), hidden.begin() + std::ptrdiff_t(2 * D));
    s.pend_t.assign(1, dr);
    return next_token(s, logits.subspan(V, V));
  }
  s.pend_h.assign(hidden.begin(), hidden.begin() + std::ptrdiff_t(D));
  s.pend_t.clear();
  return true;
}

void Engine::finish(Slot& s, const std::string& reason) {
  std::string why = reason;
  if ((why == "stop" || why == "length") && !s.stops->stopped()) {
    // Release what the detokenizer and the stop matcher still hold.
    const StopMatcher::Result r = s.stops->push(s.detok->flush());
    s.job->push_text(r.emit);
    if (r.stopped) {
      why = "stop";
      s.job->stop_sequence = s.stops->matched();
    } else
      s.job->push_text(s.stops->flush());
  }
  // A finished prefix goes to disk (the writer thread writes it) unless an entry holds it already.
  if (disk_ && (why == "stop" || why == "length") &&
      int64_t(s.tokens.size()) >= opt_.min_store_tokens && !disk_->covers(s.tokens))
    disk_->save(snapshot(s));
  s.job->finish(why);
  s.job.reset();
  s.sampler.reset();
  // A slot that stopped mid-prompt holds only what it prefilled: s.tokens stays consistent.
  std::lock_guard lk(mu_);
  stats_.active_slots--;
}

// ------------------------------------------------------------------ prompt store

std::pair<std::list<Engine::StoreEntry>::iterator, size_t> Engine::store_find(
    std::span<const int32_t> prompt) {
  auto best = store_.end();
  size_t best_n = 0;
  for (auto it = store_.begin(); it != store_.end(); ++it) {
    const size_t n = common_prefix(it->tokens, prompt);
    if (n > best_n) {
      best = it;
      best_n = n;
    }
  }
  return {best, best_n};
}

KvEntry Engine::snapshot(const Slot& s) const {
  const size_t n = s.tokens.size();
  const KVCache& cache = s.cache;
  const size_t rank = cache.latent_row_bytes(), rd = cache.k_rope_row_bytes();
  KvEntry e;
  e.tokens = s.tokens;
  e.kv.resize(size_t(cache.layers()) * n * (rank + rd));
  uint8_t* out = e.kv.data();
  for (int64_t l = 0; l < cache.layers(); l++) {
    if (n == 0) break;
    std::memcpy(out, cache.latent_bytes(l), n * rank);
    out += n * rank;
    std::memcpy(out, cache.k_rope_bytes(l), n * rd);
    out += n * rd;
  }
  return e;
}

void Engine::store_save(const Slot& s) {
  const size_t n = s.tokens.size();
  const KVCache& cache = s.cache;
  const size_t rank = cache.latent_row_bytes(), rd = cache.k_rope_row_bytes();
  const size_t bytes = size_t(cache.layers()) * n * (rank + rd);
  if (bytes > opt_.cache_bytes) return;
  // Already stored (as a prefix of an entry): just mark it used.
  for (auto it = store_.begin(); it != store_.end(); ++it) {
    if (it->tokens.size() >= n && common_prefix(it->tokens, s.tokens) == n) {
      store_.splice(store_.begin(), store_, it);
      return;
    }
  }
  // Entries that are prefixes of this one become redundant.
  for (auto it = store_.begin(); it != store_.end();) {
    if (common_prefix(it->tokens, s.tokens) == it->tokens.size()) {
      store_bytes_ -= it->kv.size();
      it = store_.erase(it);
    } else {
      ++it;
    }
  }
  while (!store_.empty() && store_bytes_ + bytes > opt_.cache_bytes) {
    store_bytes_ -= store_.back().kv.size();
    store_.pop_back();
  }
  StoreEntry e = snapshot(s);
  store_bytes_ += bytes;
  store_.push_front(std::move(e));
  std::lock_guard lk(mu_);
  stats_.store_bytes = store_bytes_;
  stats_.store_entries = store_.size();
}

void Engine::store_load(Slot& s, const StoreEntry& e, size_t n) {
  const size_t rank = s.cache.latent_row_bytes(), rd = s.cache.k_rope_row_bytes();
  const size_t len = e.tokens.size();
  s.cache.reserve(int64_t(n));
  const uint8_t* in = e.kv_bytes().data();
  for (int64_t l = 0; l < s.cache.layers(); l++) {
    if (n == 0) break;
    std::memcpy(s.cache.latent_bytes(l), in, n * rank);
    in += len * rank;
    std::memcpy(s.cache.k_rope_bytes(l), in, n * rd);
    in += len * rd;
  }
  s.tokens.assign(e.tokens.begin(), e.tokens.begin() + std::ptrdiff_t(n));
  s.cache.set_len(int64_t(n));
  for (auto it = store_.begin(); it != store_.end(); ++it)
    if (&*it == &e) {
      store_.splice(store_.begin(), store_, it);
      break;
    }
}

}  // namespace whale::serve
