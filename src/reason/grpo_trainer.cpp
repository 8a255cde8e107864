#include "reason/grpo_trainer.h"

#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "formats/tokenizer.h"
#include "kernels/cpu.h"
#include "model/config.h"
#include "reason/grpo.h"
#include "reason/rollout.h"
#include "run/chat.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/dist.h"
#include "train/model_train.h"
#include "train/optim.h"
#include "train/plot.h"
#include "train/weights_io.h"

namespace whale::reason {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using train::Dist;
using train::ParamTensor;
using train::TrainModel;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// NaN as JSON null (the log's convention).
json number(double v) {
  return std::isfinite(v) ? json(v) : json(nullptr);
}

// The sampler seed of completion g of problem `index`: a function of (seed, index, g) only.
uint64_t completion_seed(uint64_t seed, uint64_t index, int64_t g) {
  return splitmix64(splitmix64(splitmix64(seed ^ 0x6772706Full) + index) + uint64_t(g));
}

std::atomic<bool> g_interrupted{false};
extern "C" void on_grpo_interrupt(int) {
  g_interrupted = true;
}

// One step's rollouts on this process.
struct Rollouts {
  std::vector<Problem> problems;
  std::vector<std::vector<int32_t>> prompts;  // [P_local]
  std::vector<Completion> completions;        // [P_local * G]
  std::vector<Score> scores;                  // [P_local * G]
  double snapshot_s = 0, sample_s = 0, score_s = 0;
};

// What a step reports (sums over processes, then means).
struct StepReport {
  double reward = 0, accuracy = 0, format = 0, length = 0;
  int64_t completions = 0, skipped = 0, tokens = 0;
  double loss = NAN, kl = NAN, clip_low = NAN, clip_high = NAN, grad_norm = NAN;
  double rollout_s = 0, train_s = 0, snapshot_s = 0;
  bool trained = false;
};

// The objective's settings from the options.
GrpoConfig objective_config(const GrpoOptions& o) {
  GrpoConfig c;
  c.eps_low = o.eps_low;
  c.eps_high = o.eps_high;
  c.beta = o.beta;
  c.adv = parse_advantage_mode(o.adv);
  return c;
}

void check_options(const GrpoOptions& o, int processes) {
  auto bad = [](const std::string& m) { throw std::invalid_argument("whale grpo: " + m); };
  if (!o.resume && o.init_dir.empty()) bad("--init is required (the model to start from)");
  if (o.out_dir.empty()) bad("--out is required");
  if (o.steps <= 0) bad("--steps must be > 0");
  if (o.prompts <= 0) bad("--prompts must be > 0");
  if (o.group < 2)
    bad("--group must be >= 2 (advantages are relative to the other completions of a prompt), "
        "got " +
        std::to_string(o.group));
  if (o.inner_steps < 1) bad("--inner-steps must be >= 1");
  if (o.micro_batch < 0) bad("--micro-batch must be >= 0");
  if (o.max_tokens < 1) bad("--max-tokens must be >= 1");
  if (!(o.lr > 0) || !std::isfinite(o.lr)) bad("--lr must be a positive number");
  if (!(o.weight_decay >= 0)) bad("--weight-decay must be >= 0");
  if (!(o.temperature > 0) || !std::isfinite(o.temperature))
    bad("--temp must be > 0 (sampling: the completions of a group must differ)");
  if (!(o.top_p > 0)) bad("--top-p must be > 0");
  if (o.save_every < 0) bad("--save-every must be >= 0");
  if (o.prompts % processes != 0)
    bad("--prompts " + std::to_string(o.prompts) + " must be a multiple of the processes (" +
        std::to_string(processes) + ")");
  try {
    objective_config(o).validate();
  } catch (const std::invalid_argument& e) {
    bad(std::string(e.what()) + " (--eps, --eps-low, --eps-high, --beta, --adv)");
  }
}

class GrpoTrainer {
 public:
  GrpoTrainer(const GrpoOptions& o, const Task& task) : o_(o), task_(task) {}
  int run();

 private:
  void setup();
  void load_resume_state(const train::LoadedCheckpoint& ck);
  Rollouts rollout(int64_t step);
  // Trains on the rollouts; false when a loss or gradient is not finite (nothing saved).
  bool train_step(int64_t step, const Rollouts& r, StepReport& rep);
  void summarise(const Rollouts& r, StepReport& rep) const;
  void allreduce_grads();
  void save(int64_t step, double elapsed_s);
  void log(const json& record);
  void start_log();
  void progress_line(int64_t step, const StepReport& r, double eta_s);

  GrpoOptions o_;
  const Task& task_;
  GrpoConfig cfg_;
  Dist dist_;
  fs::path out_, ckpt_dir_, log_path_, png_path_, scratch_;
  std::string init_dir_, config_text_;
  ModelConfig config_;
  std::unique_ptr<Tokenizer> tok_;
  ChatStyle style_ = ChatStyle::V3;
  std::unique_ptr<TrainModel> policy_, ref_;
  std::unique_ptr<train::AdamW> opt_;
  int64_t start_step_ = 0, last_saved_ = -1;
  double elapsed_before_ = 0;
  std::vector<float> flat_;
  bool tty_ = false;
};

void GrpoTrainer::setup() {
  tty_ = isatty(STDERR_FILENO) && dist_.is_root();
  if (o_.threads > 0) {
    set_num_threads(o_.threads);
    omp_set_num_threads(o_.threads);  // also the OpenMP regions that take the default team
  }
  check_options(o_, dist_.size());
  cfg_ = objective_config(o_);
  out_ = o_.out_dir;
  ckpt_dir_ = out_ / "model";
  log_path_ = out_ / "log.jsonl";
  png_path_ = out_ / "reward.png";
  scratch_ = out_ / (".rollout-" + std::to_string(dist_.rank()));
  if (dist_.is_root()) fs::create_directories(out_);
  dist_.barrier();

  std::unique_ptr<train::LoadedCheckpoint> ck;
  init_dir_ = o_.init_dir;
  if (o_.resume) {
    ck = std::make_unique<train::LoadedCheckpoint>(train::load_checkpoint(ckpt_dir_.string()));
    const json& st = ck->state;
    if (st.value("format", "") != "whale-grpo-state")
      throw std::invalid_argument("whale grpo --resume: " + ckpt_dir_.string() +
                                  " is not a GRPO checkpoint");
    if (init_dir_.empty()) init_dir_ = st.at("init").get<std::string>();
  } else if (train::checkpoint_exists(ckpt_dir_.string())) {
    throw std::invalid_argument("whale grpo: " + ckpt_dir_.string() +
                                " already holds a checkpoint; pass --resume to continue it, or "
                                "choose another --out");
  }
  if (!fs::exists(fs::path(init_dir_) / "config.json"))
    throw std::invalid_argument("whale grpo: --init " + init_dir_ +
                                ": no config.json (a model directory is needed)");
  if (!fs::exists(fs::path(init_dir_) / "tokenizer.json"))
    throw std::invalid_argument("whale grpo: --init " + init_dir_ +
                                ": no tokenizer.json (the prompts and completions need it)");
  config_text_ = read_file((fs::path(init_dir_) / "config.json").string());
  config_ = ModelConfig::from_json_text(config_text_, init_dir_);
  if (ck && json::parse(ck->config_json) != json::parse(config_text_))
    throw std::invalid_argument("whale grpo --resume: the config of --init " + init_dir_ +
                                " differs from the checkpoint's");
  tok_ = std::make_unique<Tokenizer>(Tokenizer::load(init_dir_));
  style_ = detect_chat_style(tok_->chat_template());

  // Policy and reference: MTP and balance losses off (GRPO trains the main head only).
  const train::LossConfig lc{0.0f, 0.0f};
  policy_ = std::make_unique<TrainModel>(config_, lc);
  if (!ck) train::load_train_weights(*policy_, init_dir_);  // else from the checkpoint below
  if (cfg_.beta > 0) {
    ref_ = std::make_unique<TrainModel>(config_, lc);
    train::load_train_weights(*ref_, init_dir_);
  }
  train::AdamWConfig ac;
  ac.beta1 = 0.9f;
  ac.beta2 = 0.99f;
  ac.eps = 1e-8f;
  ac.weight_decay = o_.weight_decay;
  opt_ = std::make_unique<train::AdamW>(policy_->params(), ac);
  if (ck) load_resume_state(*ck);
}

void GrpoTrainer::load_resume_state(const train::LoadedCheckpoint& ck) {
  const json& saved = ck.state.at("options");
  auto same = [&](const char* key, const json& now, const char* flag) {
    if (saved.at(key) != now)
      throw std::invalid_argument("whale grpo --resume: " + std::string(flag) + " " + now.dump() +
                                  " differs from the checkpoint's " + saved.at(key).dump() +
                                  " (pass the same value)");
  };
  same("task", task_.name(), "--task");
  same("seed", o_.seed, "--seed");
  same("prompts", o_.prompts, "--prompts");
  same("group", o_.group, "--group");
  for (const ParamTensor& p : policy_->params()) ck.model_tensor(p.name, p.shape, p.data);
  for (const train::BufferTensor& b : policy_->buffers()) ck.model_tensor(b.name, b.shape, b.data);
  for (size_t i = 0; i < policy_->params().size(); i++) {
    const ParamTensor& p = policy_->params()[i];
    ck.optimizer_tensor("exp_avg." + p.name, p.shape, opt_->exp_avg(i).data());
    ck.optimizer_tensor("exp_avg_sq." + p.name, p.shape, opt_->exp_avg_sq(i).data());
  }
  opt_->set_step_count(ck.state.at("adam_steps").get<int64_t>());
  start_step_ = ck.state.at("step").get<int64_t>();
  last_saved_ = start_step_;
  elapsed_before_ = ck.state.at("elapsed_s").get<double>();
  if (start_step_ >= o_.steps)
    throw std::invalid_argument("whale grpo --resume: the checkpoint is at step " +
                                std::to_string(start_step_) + ", not before --steps " +
                                std::to_string(o_.steps));
}

// ------------------------------------------------------------------ one step

Rollouts GrpoTrainer::rollout(int64_t step) {
  Rollouts r;
  const int64_t local = o_.prompts / dist_.size();
  const uint64_t first = uint64_t(step * o_.prompts + dist_.rank() * local);
  std::vector<uint64_t> seeds;
  for (int64_t p = 0; p < local; p++) {
    r.problems.push_back(task_.generate(o_.seed, first + uint64_t(p), Split::Train));
    const std::string text =
        render_chat({{"user", r.problems.back().prompt, ""}}, style_, tok_->bos_token(), true);
    r.prompts.push_back(tok_->encode(text));
    for (int64_t g = 0; g < o_.group; g++)
      seeds.push_back(completion_seed(o_.seed, first + uint64_t(p), g));
  }
  auto t0 = Clock::now();
  const std::unique_ptr<Model> model = inference_model(*policy_, config_text_, scratch_.string());
  r.snapshot_s = seconds_since(t0);

  t0 = Clock::now();
  RolloutOptions ro;
  ro.group = o_.group;
  ro.max_tokens = o_.max_tokens;
  ro.temperature = o_.temperature;
  ro.top_p = o_.top_p;
  r.completions = sample_completions(*model, r.prompts, seeds, ro, tok_->eos_id());
  r.sample_s = seconds_since(t0);

  t0 = Clock::now();
  for (size_t i = 0; i < r.completions.size(); i++) {
    const Completion& c = r.completions[i];
    const size_t n = c.ids.size() - (c.eos ? 1 : 0);
    const std::string text =
        tok_->decode(std::span<const int32_t>(c.ids.data(), n), /*skip_special=*/true);
    r.scores.push_back(task_.score(r.problems[i / size_t(o_.group)], text));
  }
  r.score_s = seconds_since(t0);
  return r;
}

void GrpoTrainer::allreduce_grads() {
  if (dist_.size() == 1) return;
  const std::vector<ParamTensor>& ps = policy_->params();
  size_t n = 0;
  for (const ParamTensor& p : ps) n += size_t(p.numel);
  flat_.resize(n);
  float* f = flat_.data();
  for (const ParamTensor& p : ps) f = std::copy(p.grad, p.grad + p.numel, f);
  dist_.allreduce_sum(std::span<float>(flat_));
  f = flat_.data();
  for (const ParamTensor& p : ps) {
    std::copy(f, f + p.numel, p.grad);
    f += p.numel;
  }
}

// The GRPO passes; fills rep's loss, kl, clip fractions, grad norm.
bool GrpoTrainer::train_step(int64_t step, const Rollouts& r, StepReport& rep) {
  std::vector<double> rewards;
  for (const Score& s : r.scores) rewards.push_back(s.reward);
  const GroupAdvantages adv = group_advantages(rewards, o_.group, cfg_);

  // This process's micro-batches of the non-skipped groups' sequences.
  std::vector<GrpoSequence> seqs;
  for (size_t i = 0; i < r.completions.size(); i++)
    if (!adv.skipped[i / size_t(o_.group)])
      seqs.push_back({r.prompts[i / size_t(o_.group)], r.completions[i].ids, adv.advantage[i]});
  const size_t mb = o_.micro_batch > 0 ? size_t(o_.micro_batch) : std::max<size_t>(1, seqs.size());
  // Micro-batches of similar lengths, each padded only to its own longest sequence (the model's
  // buffers keep their storage across shapes): short and long completions do not share padding.
  if (mb < seqs.size())
    std::stable_sort(seqs.begin(), seqs.end(), [](const GrpoSequence& x, const GrpoSequence& y) {
      return x.prompt.size() + x.completion.size() < y.prompt.size() + y.completion.size();
    });
  std::vector<GrpoBatch> batches;
  for (size_t i = 0; i < seqs.size(); i += mb)
    batches.push_back(make_grpo_batch(
        std::span<const GrpoSequence>(seqs).subspan(i, std::min(mb, seqs.size() - i))));

  int64_t counts[2] = {adv.skipped_groups, 0};
  for (const GrpoBatch& b : batches) counts[1] += b.tokens();
  dist_.allreduce_sum(std::span<int64_t>(counts, 2));
  rep.skipped = counts[0];
  rep.tokens = counts[1];
  if (rep.tokens == 0) return true;  // every group skipped: nothing to learn this step
  const double inv_n = 1.0 / double(rep.tokens);

  std::vector<std::vector<float>> logp_old(batches.size()), logp_ref(batches.size());
  for (size_t k = 0; k < batches.size(); k++) {
    const GrpoBatch& b = batches[k];
    logp_old[k].resize(size_t(b.B * b.T));
    policy_->token_logprobs(b.inputs.data(), b.targets.data(), b.B, b.T, logp_old[k].data());
    if (ref_) {
      logp_ref[k].resize(size_t(b.B * b.T));
      ref_->token_logprobs(b.inputs.data(), b.targets.data(), b.B, b.T, logp_ref[k].data());
    }
  }

  double sums[5] = {0, 0, 0, 0, 0};  // loss, kl, clip_low, clip_high, grad norm over passes
  for (int64_t pass = 0; pass < o_.inner_steps; pass++) {
    policy_->zero_grad();
    GrpoSums s;
    for (size_t k = 0; k < batches.size(); k++)
      s += grpo_backward(*policy_, batches[k], logp_old[k].data(),
                         ref_ ? logp_ref[k].data() : nullptr, inv_n, cfg_,
                         pass == 0 ? logp_old[k].data() : nullptr);
    allreduce_grads();
    double v[4] = {s.objective, s.kl, double(s.clip_low), double(s.clip_high)};
    dist_.allreduce_sum(std::span<double>(v, 4));
    double loss = -v[0] * inv_n;
    if (o_.fault_nan_step == step) loss = NAN;
    const double norm = train::clip_grad_norm(policy_->params(), o_.clip);
    rep.loss = loss;
    rep.grad_norm = norm;
    if (!std::isfinite(loss) || !std::isfinite(norm)) return false;
    opt_->step(o_.lr);
    sums[0] += loss;
    sums[1] += v[1] * inv_n;
    sums[2] += v[2] * inv_n;
    sums[3] += v[3] * inv_n;
    sums[4] += norm;
  }
  const double k = double(o_.inner_steps);
  rep.loss = sums[0] / k;
  rep.kl = ref_ ? sums[1] / k : NAN;  // no reference model when beta = 0
  rep.clip_low = sums[2] / k;
  rep.clip_high = sums[3] / k;
  rep.grad_norm = sums[4] / k;
  rep.trained = true;
  return true;
}

// Rewards, accuracy, format rate and length over every process's completions.
void GrpoTrainer::summarise(const Rollouts& r, StepReport& rep) const {
  double v[5] = {0, 0, 0, 0, 0};
  for (size_t i = 0; i < r.scores.size(); i++) {
    v[0] += r.scores[i].reward;
    v[1] += r.scores[i].correct;
    v[2] += r.scores[i].formatted;
    v[3] += double(r.completions[i].ids.size());
    v[4] += 1;
  }
  dist_.allreduce_sum(std::span<double>(v, 5));
  rep.completions = int64_t(v[4]);
  rep.reward = v[0] / v[4];
  rep.accuracy = v[1] / v[4];
  rep.format = v[2] / v[4];
  rep.length = v[3] / v[4];
}

// ------------------------------------------------------------------ checkpoints and logs

void GrpoTrainer::save(int64_t step, double elapsed_s) {
  if (dist_.is_root()) {
    const std::vector<train::CkptTensor> model = train::checkpoint_tensors(*policy_);
    std::vector<train::CkptTensor> opt;
    for (size_t i = 0; i < policy_->params().size(); i++) {
      const ParamTensor& p = policy_->params()[i];
      opt.push_back({"exp_avg." + p.name, p.shape, opt_->exp_avg(i).data()});
      opt.push_back({"exp_avg_sq." + p.name, p.shape, opt_->exp_avg_sq(i).data()});
    }
    const json options = {{"task", task_.name()},
                          {"seed", o_.seed},
                          {"prompts", o_.prompts},
                          {"group", o_.group},
                          {"inner_steps", o_.inner_steps},
                          {"lr", o_.lr},
                          {"beta", o_.beta},
                          {"eps_low", o_.eps_low},
                          {"eps_high", o_.eps_high},
                          {"adv", o_.adv},
                          {"max_tokens", o_.max_tokens},
                          {"temperature", o_.temperature},
                          {"top_p", o_.top_p},
                          {"steps", o_.steps},
                          {"processes", dist_.size()}};
    const json state = {{"format", "whale-grpo-state"},
                        {"version", 1},
                        {"step", step},
                        {"adam_steps", opt_->step_count()},
                        {"elapsed_s", elapsed_s},
                        {"init", fs::absolute(init_dir_).string()},
                        {"options", options}};
    train::save_checkpoint(ckpt_dir_.string(), model, opt, config_text_, state, init_dir_);
  }
  last_saved_ = step;
  dist_.barrier();
}

void GrpoTrainer::log(const json& record) {
  if (!dist_.is_root()) return;
  std::ofstream out(log_path_, std::ios::app);
  out << record.dump() << "\n";
  if (!out) throw std::runtime_error(log_path_.string() + ": cannot append to the log");
}

// A fresh log, or on resume the old one without the records past the checkpoint (those steps are
// redone); then the config record.
void GrpoTrainer::start_log() {
  if (!dist_.is_root()) return;
  restart_jsonl_log(log_path_.string(), o_.resume, start_step_);
  log({{"type", "config"},
       {"run", "grpo"},
       {"task", task_.name()},
       {"init", init_dir_},
       {"params", policy_->num_params()},
       {"processes", dist_.size()},
       {"threads", num_threads()},
       {"prompts", o_.prompts},
       {"group", o_.group},
       {"inner_steps", o_.inner_steps},
       {"eps_low", o_.eps_low},
       {"eps_high", o_.eps_high},
       {"beta", o_.beta},
       {"adv", o_.adv},
       {"lr", o_.lr},
       {"temperature", o_.temperature},
       {"top_p", o_.top_p},
       {"max_tokens", o_.max_tokens},
       {"steps", o_.steps},
       {"start_step", start_step_},
       {"model", json::parse(config_text_)}});
}

void GrpoTrainer::progress_line(int64_t step, const StepReport& r, double eta_s) {
  if (!dist_.is_root() || !o_.progress) return;
  std::string s = "step " + std::to_string(step) + "/" + std::to_string(o_.steps) + " | reward " +
                  fmt("%.3f", r.reward) + " | acc " + fmt("%.1f%%", 100 * r.accuracy) + " | fmt " +
                  fmt("%.1f%%", 100 * r.format) + " | len " + fmt("%.1f", r.length);
  if (r.trained)
    s += " | loss " + fmt("%.4f", r.loss) + " | kl " + fmt("%.4g", r.kl) + " | clip " +
         fmt("%.1f%%", 100 * (r.clip_low + r.clip_high));
  else
    s += " | not trained";
  s += " | skipped " + std::to_string(r.skipped) + "/" + std::to_string(o_.prompts) +
       " | rollout " + fmt("%.1fs", r.rollout_s) + " train " + fmt("%.1fs", r.train_s) + " | ETA " +
       fmt("%.0fs", eta_s);
  if (tty_)
    std::fprintf(stderr, "\r\033[K%s", s.c_str());
  else
    std::fprintf(stderr, "%s\n", s.c_str());
  std::fflush(stderr);
}

// ------------------------------------------------------------------ the loop

int GrpoTrainer::run() {
  setup();
  if (dist_.is_root())
    std::fprintf(stderr,
                 "whale grpo: %s parameters, task %s, %lld prompts x %lld completions per step, "
                 "%d process(es) x %d thread(s)%s\n",
                 fmt("%.2fM", double(policy_->num_params()) / 1e6).c_str(), task_.name().c_str(),
                 (long long)o_.prompts, (long long)o_.group, dist_.size(), num_threads(),
                 o_.resume ? (", resuming at step " + std::to_string(start_step_)).c_str() : "");
  start_log();
  // Ctrl-C / SIGTERM end the run after the current step, with a checkpoint; the previous
  // handlers come back when the run ends.
  struct Handlers {
    void (*interrupt)(int) = std::signal(SIGINT, on_grpo_interrupt);
    void (*terminate)(int) = std::signal(SIGTERM, on_grpo_interrupt);
    ~Handlers() {
      std::signal(SIGINT, interrupt);
      std::signal(SIGTERM, terminate);
    }
  } handlers;
  g_interrupted = false;

  // The inference snapshots go when the run ends, however it ends.
  struct Scratch {
    fs::path dir;
    ~Scratch() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } scratch{scratch_};
  const auto t_run = Clock::now();
  double avg_step_s = 0;
  for (int64_t step = start_step_; step < o_.steps; step++) {
    const auto t0 = Clock::now();
    StepReport rep;
    const Rollouts r = rollout(step);
    summarise(r, rep);
    rep.snapshot_s = r.snapshot_s;
    rep.rollout_s = seconds_since(t0);
    const auto t1 = Clock::now();
    const bool ok = train_step(step, r, rep);
    rep.train_s = seconds_since(t1);
    if (!ok) {
      const std::string what = !std::isfinite(rep.loss)
                                   ? "the loss is " + fmt("%g", rep.loss)
                                   : "the gradient norm is " + fmt("%g", rep.grad_norm);
      const std::string kept =
          last_saved_ >= 0 ? "the last good checkpoint is " + ckpt_dir_.string() + " (step " +
                                 std::to_string(last_saved_) + "), left as it was"
                           : "no checkpoint had been saved yet";
      log({{"type", "event"}, {"step", step}, {"message", "stopped: " + what}});
      if (dist_.is_root())
        std::fprintf(stderr, "%swhale grpo: stopped at step %lld: %s; %s. Try a lower --lr.\n",
                     tty_ ? "\n" : "", (long long)step, what.c_str(), kept.c_str());
      return 3;
    }
    const int64_t done = step + 1;
    const double elapsed = elapsed_before_ + seconds_since(t_run);
    log({{"type", "grpo"},
         {"step", done},
         {"reward", rep.reward},
         {"accuracy", rep.accuracy},
         {"format", rep.format},
         {"length", rep.length},
         {"kl", number(rep.kl)},
         {"clip_low", number(rep.clip_low)},
         {"clip_high", number(rep.clip_high)},
         {"clip", number(rep.clip_low + rep.clip_high)},
         {"skipped", rep.skipped},
         {"groups", o_.prompts},
         {"completions", rep.completions},
         {"tokens", rep.tokens},
         {"loss", number(rep.loss)},
         {"grad_norm", number(rep.grad_norm)},
         {"lr", o_.lr},
         {"trained", rep.trained},
         {"rollout_s", rep.rollout_s},
         {"snapshot_s", rep.snapshot_s},
         {"train_s", rep.train_s},
         {"elapsed_s", elapsed}});
    const double dt = seconds_since(t0);
    avg_step_s = step == start_step_ ? dt : 0.9 * avg_step_s + 0.1 * dt;
    progress_line(done, rep, avg_step_s * double(o_.steps - done));

    int64_t stop = g_interrupted ? 1 : 0;
    dist_.allreduce_sum(std::span<int64_t>(&stop, 1));
    if (done == o_.until) stop = 1;
    if ((o_.save_every > 0 && done % o_.save_every == 0) || done == o_.steps || stop)
      save(done, elapsed);
    if (stop) {
      const bool until = done == o_.until && !g_interrupted;
      if (dist_.is_root())
        std::fprintf(stderr, "%swhale grpo: %s after step %lld; checkpoint in %s\n",
                     tty_ ? "\n" : "", until ? "stopped (--until)" : "interrupted", (long long)done,
                     ckpt_dir_.string().c_str());
      return until ? 0 : 130;
    }
  }
  if (dist_.is_root()) {
    if (tty_) std::fprintf(stderr, "\n");
    train::plot_training_log(log_path_.string(), png_path_.string());
    std::fprintf(stderr, "whale grpo: done; checkpoint %s, log %s, plot %s\n",
                 ckpt_dir_.string().c_str(), log_path_.string().c_str(),
                 png_path_.string().c_str());
  }
  return 0;
}

}  // namespace

void check_grpo_options(const GrpoOptions& options) {
  check_options(options, 1);
}

int run_grpo_command(const GrpoOptions& options, const Task& task) {
  GrpoTrainer t(options, task);
  return t.run();
}

}  // namespace whale::reason
