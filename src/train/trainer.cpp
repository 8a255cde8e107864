#include "train/trainer.h"

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
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/dist.h"
#include "train/model_train.h"
#include "train/moe_train.h"
#include "train/ops.h"
#include "train/optim.h"
#include "train/plot.h"

namespace whale::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

// ------------------------------------------------------------------ data

// The token shards of one split read as one stream (documents may cross shard boundaries).
class TokenStream {
 public:
  TokenStream(const fs::path& dir, const std::vector<std::string>& names, size_t max_vocab) {
    for (const std::string& n : names) {
      shards_.emplace_back((dir / n).string());
      const TokenShard& s = shards_.back();
      if (s.vocab_size() > max_vocab)
        throw std::invalid_argument(
            s.path() + ": tokenized with a vocabulary of " + std::to_string(s.vocab_size()) +
            " ids, but the model's config has vocab_size " + std::to_string(max_vocab) +
            " (tokenize with the model's tokenizer, or raise vocab_size in the config)");
      starts_.push_back(total_);
      total_ += s.size();
    }
  }
  uint64_t size() const { return total_; }
  // Tokens [offset, offset + out.size()) of the stream.
  void read(uint64_t offset, std::span<int32_t> out) const {
    size_t done = 0;
    auto it = std::upper_bound(starts_.begin(), starts_.end(), offset);
    size_t s = size_t(it - starts_.begin()) - 1;
    while (done < out.size()) {
      const uint64_t in_shard = offset + done - starts_[s];
      const size_t n = std::min<uint64_t>(out.size() - done, shards_[s].size() - in_shard);
      shards_[s].read(in_shard, out.subspan(done, n));
      done += n;
      s++;
    }
  }

 private:
  std::vector<TokenShard> shards_;
  std::vector<uint64_t> starts_;
  uint64_t total_ = 0;
};

// Start of sequence g (of the global batch) at step s: a function of (seed, s, g) only.
uint64_t window_start(uint64_t seed, int64_t step, int64_t g, uint64_t range) {
  const uint64_t h =
      splitmix64(splitmix64(splitmix64(seed ^ 0x5DEECE66Dull) + uint64_t(step)) + uint64_t(g));
  return h % range;
}

// Fills inputs/targets [n][T] with windows of T+1 tokens.
void fill_windows(const TokenStream& data, const std::vector<uint64_t>& starts, int64_t T,
                  std::vector<int32_t>& inputs, std::vector<int32_t>& targets) {
  const int64_t n = int64_t(starts.size());
  inputs.resize(size_t(n * T));
  targets.resize(size_t(n * T));
  std::vector<int32_t> w(size_t(T + 1));
  for (int64_t b = 0; b < n; b++) {
    data.read(starts[size_t(b)], w);
    std::copy(w.begin(), w.end() - 1, inputs.begin() + b * T);
    std::copy(w.begin() + 1, w.end(), targets.begin() + b * T);
  }
}

// ------------------------------------------------------------------ formatting

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string duration(double s) {
  if (!std::isfinite(s) || s < 0) return "?";
  const int64_t t = int64_t(s + 0.5);
  char buf[64];
  if (t >= 3600)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(t / 3600), (long long)(t / 60 % 60));
  else if (t >= 60)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(t / 60), (long long)(t % 60));
  else
    std::snprintf(buf, sizeof buf, "%llds", (long long)t);
  return buf;
}

// ------------------------------------------------------------------ MFU

// Achieved single-precision GEMM throughput of this machine with the current threads (GFLOP/s),
// the denominator of the MFU estimate: the fraction of what the BLAS itself reaches.
double measure_peak_gflops() {
  const int64_t n = 1024;
  std::vector<float> a(size_t(n * n), 0.5f), b(size_t(n * n), 0.25f), c(size_t(n * n));
  matmul_forward(c.data(), a.data(), b.data(), n, n, n);  // warm-up
  double best = 0;
  for (int r = 0; r < 4; r++) {
    const auto t0 = Clock::now();
    matmul_forward(c.data(), a.data(), b.data(), n, n, n);
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best = std::max(best, 2.0 * double(n * n * n) / s / 1e9);
  }
  return best;
}

// Training FLOPs per token: 6 per active parameter (forward 2, backward 4) outside the embedding
// lookup, plus the attention scores and weighted sums (causal: T/2 keys on average).
double flops_per_token(const TrainModel& m, int64_t T) {
  const ModelConfig& c = m.config();
  const double active = double(m.num_active_params() - c.vocab_size * c.hidden_size);
  const int64_t layers = c.num_hidden_layers + (c.num_nextn_predict_layers > 0 ? 1 : 0);
  const double attn = 2.0 * double(layers) * double(c.num_attention_heads) *
                      double(c.qk_head_dim() + c.v_head_dim) * double(T) / 2.0;
  return 6.0 * active + 3.0 * attn;
}

// ------------------------------------------------------------------ Ctrl-C

std::atomic<bool> g_interrupted{false};
extern "C" void on_interrupt(int) {
  g_interrupted = true;
}

// ------------------------------------------------------------------ pretraining (`whale train`)

// Row g of step s: the window of seq+1 tokens at window_start(seed, s, g); validation row w: the
// window at w * seq of the validation stream.
class WindowSource : public BatchSource {
 public:
  WindowSource(std::unique_ptr<TokenStream> train, std::unique_ptr<TokenStream> val, uint64_t seed,
               int64_t seq)
      : train_(std::move(train)), val_(std::move(val)), seed_(seed), seq_(seq) {}

  void train_rows(int64_t step, std::span<const int64_t> rows, std::vector<int32_t>& inputs,
                  std::vector<int32_t>& targets) override {
    const uint64_t range = train_->size() - uint64_t(seq_);
    std::vector<uint64_t> starts;
    for (int64_t g : rows) starts.push_back(window_start(seed_, step, g, range));
    fill_windows(*train_, starts, seq_, inputs, targets);
  }
  int64_t num_val_rows() const override {
    return val_->size() > uint64_t(seq_) ? int64_t((val_->size() - 1) / uint64_t(seq_)) : 0;
  }
  void val_rows(std::span<const int64_t> rows, std::vector<int32_t>& inputs,
                std::vector<int32_t>& targets) override {
    std::vector<uint64_t> starts;
    for (int64_t w : rows) starts.push_back(uint64_t(w) * uint64_t(seq_));
    fill_windows(*val_, starts, seq_, inputs, targets);
  }
  bool weight_by_targets() const override { return false; }
  std::string summary() const override {
    return std::to_string(train_->size()) + " train / " + std::to_string(val_->size()) +
           " val tokens";
  }

 private:
  std::unique_ptr<TokenStream> train_, val_;
  uint64_t seed_;
  int64_t seq_;
};

// A model initialised from --config, trained on the token shards of `whale data`.
class PretrainTask : public TrainTask {
 public:
  explicit PretrainTask(const TrainOptions& o) : o_(o) {}
  std::string command() const override { return "whale train"; }

  void fresh_config(std::string& text, std::string& origin) override {
    if (o_.config_path.empty()) throw std::invalid_argument("whale train: --config is required");
    text = read_file(o_.config_path);
    origin = o_.config_path;
  }

  std::unique_ptr<BatchSource> open_data(const ModelConfig& config, const json&,
                                         TrainOptions& o) override {
    const fs::path data(o.data_dir);
    const fs::path meta_path = data / "meta.json";
    if (!fs::exists(meta_path))
      throw std::invalid_argument("whale train: " + meta_path.string() +
                                  " not found (make the data with `whale data`)");
    json meta;
    try {
      meta = json::parse(read_file(meta_path.string()));
    } catch (const json::exception& e) {
      throw std::runtime_error(meta_path.string() + ": " + e.what());
    }
    const size_t vocab = size_t(config.vocab_size);
    auto train = std::make_unique<TokenStream>(
        data, meta.at("train").at("shards").get<std::vector<std::string>>(), vocab);
    auto val = std::make_unique<TokenStream>(
        data, meta.at("val").at("shards").get<std::vector<std::string>>(), vocab);
    if (train->size() < uint64_t(o.seq + 2))
      throw std::invalid_argument(
          "whale train: " + data.string() + " has " + std::to_string(train->size()) +
          " training tokens, fewer than one sequence of --seq " + std::to_string(o.seq) + " + 1");

    tokenizer_dir_ = o.tokenizer_dir;
    if (tokenizer_dir_.empty() && meta.contains("tokenizer") && meta["tokenizer"].is_string())
      tokenizer_dir_ = meta["tokenizer"].get<std::string>();
    if (!tokenizer_dir_.empty() && !fs::exists(fs::path(tokenizer_dir_) / "tokenizer.json"))
      throw std::invalid_argument("whale train: no tokenizer.json in " + tokenizer_dir_ +
                                  " (recorded in " + meta_path.string() +
                                  "; pass --tokenizer DIR)");
    return std::make_unique<WindowSource>(std::move(train), std::move(val), o.seed, o.seq);
  }

  std::string tokenizer_dir() const override { return tokenizer_dir_; }

  void init_model(TrainModel& model, const TrainOptions& o) override {
    model.init(o.seed, o.init_std);
  }

 private:
  const TrainOptions& o_;
  std::string tokenizer_dir_;
};

// ------------------------------------------------------------------ the trainer

class Trainer {
 public:
  Trainer(TrainOptions o, TrainTask& task) : o_(std::move(o)), task_(task) {}
  int run();

 private:
  void setup();
  void check_options() const;
  [[noreturn]] void bad(const std::string& message) const;
  void load_resume_state(const json& state);
  void write_start(bool resuming);
  void report_non_finite(int64_t step, const StepLosses& l, double grad_norm);
  StepLosses train_step(int64_t step, double& grad_norm);
  StepLosses evaluate();
  void save(int64_t step, double elapsed_s);
  void log(const json& record);
  void progress_line(int64_t step, const StepLosses& l, double lr, double tok_s, double mfu,
                     double eta_s);

  TrainOptions o_;
  TrainTask& task_;
  std::string cmd_;  // "whale train" / "whale sft"
  Dist dist_;
  fs::path out_, ckpt_dir_, log_path_, png_path_;
  std::string config_text_, tokenizer_dir_;
  ModelConfig config_;
  std::unique_ptr<TrainModel> model_;
  std::unique_ptr<AdamW> opt_;
  std::vector<ParamTensor> opt_params_;  // what the optimiser updates (master weights under bf16)
  std::vector<std::vector<float>> master_;  // bf16 mode: FP32 master copies of every parameter
  LrSchedule sched_;
  std::unique_ptr<BatchSource> data_;
  int64_t n_val_rows_ = 0;
  int64_t start_step_ = 0, last_saved_ = -1;
  uint64_t tokens_seen_ = 0;
  double elapsed_before_ = 0;
  double peak_gflops_ = 0, flops_tok_ = 0;
  double last_val_ = NAN;
  std::vector<float> flat_;                             // all-reduce staging
  std::vector<std::vector<int32_t>> inputs_, targets_;  // one per micro-batch
  bool tty_ = false;
};

void Trainer::bad(const std::string& message) const {
  throw std::invalid_argument(cmd_ + ": " + message);
}

void Trainer::check_options() const {
  if (o_.batch <= 0) bad("--batch must be > 0");
  if (o_.seq <= 1) bad("--seq must be > 1");
  if (o_.grad_accum <= 0) bad("--grad-accum must be > 0");
  const int64_t procs = dist_.size();
  if (o_.batch % (procs * o_.grad_accum) != 0)
    bad("--batch " + std::to_string(o_.batch) + " must be a multiple of processes (" +
        std::to_string(procs) + ") x --grad-accum (" + std::to_string(o_.grad_accum) + ")");
  if (!(o_.lr > 0) || !std::isfinite(o_.lr)) bad("--lr must be a positive number");
  if (o_.eval_every < 0 || o_.save_every < 0) bad("--eval-every / --save-every must be >= 0");
  if (o_.mtp_lambda < 0 || o_.balance_alpha < 0 || o_.bias_gamma < 0)
    bad("--mtp-lambda, --balance-alpha and --bias-gamma must be >= 0");
  if (!(o_.init_std > 0)) bad("--init-std must be > 0");
}

void Trainer::setup() {
  cmd_ = task_.command();
  tty_ = isatty(STDERR_FILENO) && dist_.is_root();
  if (o_.threads > 0) omp_set_num_threads(o_.threads);
  check_options();
  out_ = o_.out_dir;
  ckpt_dir_ = out_ / "model";
  log_path_ = out_ / "log.jsonl";
  png_path_ = out_ / "loss.png";
  if (dist_.is_root()) fs::create_directories(out_);

  // The model's config: from the checkpoint when resuming, else from the task.
  json state;
  std::string origin = ckpt_dir_.string();
  if (o_.resume) {
    LoadedCheckpoint ck = load_checkpoint(ckpt_dir_.string());
    config_text_ = ck.config_json;
    state = ck.state;
  } else {
    if (checkpoint_exists(ckpt_dir_.string()))
      bad(ckpt_dir_.string() +
          " already holds a checkpoint; pass --resume to continue it, or choose another --out");
    task_.fresh_config(config_text_, origin);
  }
  config_ = ModelConfig::from_json_text(config_text_, origin);
  if (o_.seq > config_.max_position_embeddings)
    bad("--seq " + std::to_string(o_.seq) + " exceeds the config's max_position_embeddings " +
        std::to_string(config_.max_position_embeddings));
  LossConfig lc;
  lc.mtp_lambda = config_.num_nextn_predict_layers > 0 ? o_.mtp_lambda : 0.0f;
  lc.balance_alpha = o_.balance_alpha;
  model_ = std::make_unique<TrainModel>(config_, lc);

  data_ = task_.open_data(config_, state, o_);
  if (o_.steps <= 0) bad("--steps must be > 0");
  n_val_rows_ = std::min(data_->num_val_rows(), std::max<int64_t>(o_.eval_batches, 0) * o_.batch);
  tokenizer_dir_ = task_.tokenizer_dir();
  inputs_.resize(size_t(o_.grad_accum));
  targets_.resize(size_t(o_.grad_accum));

  // Parameters: from the task, or from the checkpoint.
  if (!o_.resume) task_.init_model(*model_, o_);
  opt_params_ = model_->params();
  if (o_.bf16) {
    master_.resize(opt_params_.size());
    for (size_t i = 0; i < opt_params_.size(); i++) {
      master_[i].assign(opt_params_[i].data, opt_params_[i].data + opt_params_[i].numel);
      opt_params_[i].data = master_[i].data();
    }
  }
  AdamWConfig ac;
  ac.beta1 = o_.beta1;
  ac.beta2 = o_.beta2;
  ac.eps = o_.eps;
  ac.weight_decay = o_.weight_decay;
  opt_ = std::make_unique<AdamW>(opt_params_, ac);

  sched_.kind = parse_schedule_kind(o_.schedule);
  sched_.max_lr = o_.lr;
  sched_.min_lr = o_.min_lr >= 0 ? o_.min_lr : o_.lr / 10;
  sched_.warmup_steps = o_.warmup >= 0 ? o_.warmup : std::min<int64_t>(100, o_.steps / 10);
  sched_.total_steps = o_.steps;
  sched_.decay_fraction = o_.wsd_decay;
  sched_.validate();

  if (o_.resume) load_resume_state(state);
  if (o_.bf16)  // the compute copy is the master rounded to bf16
    for (size_t i = 0; i < opt_params_.size(); i++)
      round_to_bf16(model_->params()[i].data, master_[i].data(), opt_params_[i].numel);

  peak_gflops_ = measure_peak_gflops();
  flops_tok_ = flops_per_token(*model_, o_.seq);
}

void Trainer::load_resume_state(const json& state) {
  LoadedCheckpoint ck = load_checkpoint(ckpt_dir_.string());
  // The run must continue with the settings that decide the data order and the batch.
  const json& saved = ck.state.at("options");
  auto same = [&](const char* key, int64_t now) {
    const int64_t was = saved.at(key).get<int64_t>();
    if (was != now)
      throw std::invalid_argument(cmd_ + " --resume: --" + std::string(key) + " " +
                                  std::to_string(now) + " differs from the checkpoint's " +
                                  std::to_string(was) + " (an exact resume needs the same value)");
  };
  same("batch", o_.batch);
  same("seq", o_.seq);
  same("grad_accum", o_.grad_accum);
  if (saved.at("seed").get<uint64_t>() != o_.seed)
    throw std::invalid_argument(cmd_ + " --resume: --seed differs from the checkpoint's " +
                                std::to_string(saved.at("seed").get<uint64_t>()));
  const json data = data_->identity();
  if (!data.is_null() && saved.value("data", json()) != data)
    throw std::invalid_argument(
        cmd_ + " --resume: the data (" + data.dump() + ") differ from the checkpoint's (" +
        saved.value("data", json()).dump() + "); an exact resume needs the same files and options");
  for (const ParamTensor& p : model_->params()) ck.model_tensor(p.name, p.shape, p.data);
  if (o_.bf16)
    for (size_t i = 0; i < opt_params_.size(); i++)
      std::copy(model_->params()[i].data, model_->params()[i].data + opt_params_[i].numel,
                master_[i].data());
  for (const BufferTensor& b : model_->buffers()) ck.model_tensor(b.name, b.shape, b.data);
  for (size_t i = 0; i < opt_params_.size(); i++) {
    const ParamTensor& p = opt_params_[i];
    ck.optimizer_tensor("exp_avg." + p.name, p.shape, opt_->exp_avg(i).data());
    ck.optimizer_tensor("exp_avg_sq." + p.name, p.shape, opt_->exp_avg_sq(i).data());
  }
  opt_->set_step_count(state.at("adam_steps").get<int64_t>());
  start_step_ = state.at("step").get<int64_t>();
  last_saved_ = start_step_;
  tokens_seen_ = state.at("tokens").get<uint64_t>();
  elapsed_before_ = state.at("elapsed_s").get<double>();
  if (state.contains("val_loss") && state["val_loss"].is_number())
    last_val_ = state["val_loss"].get<double>();
  if (start_step_ >= o_.steps)
    throw std::invalid_argument(cmd_ + " --resume: the checkpoint is at step " +
                                std::to_string(start_step_) + ", not before --steps " +
                                std::to_string(o_.steps));
}

StepLosses Trainer::train_step(int64_t step, double& grad_norm) {
  const int64_t procs = dist_.size(), rank = dist_.rank();
  const int64_t local = o_.batch / procs, micro = local / o_.grad_accum;
  model_->zero_grad();
  model_->reset_expert_counts();

  // This process's micro-batches, and what each weighs in the step (see trainer.h).
  inputs_.resize(size_t(o_.grad_accum));
  targets_.resize(size_t(o_.grad_accum));
  std::vector<int64_t> counted(size_t(o_.grad_accum));
  for (int64_t a = 0; a < o_.grad_accum; a++) {
    std::vector<int64_t> rows;
    for (int64_t b = 0; b < micro; b++) rows.push_back(rank * local + a * micro + b);
    data_->train_rows(step, rows, inputs_[size_t(a)], targets_[size_t(a)]);
    const std::vector<int32_t>& t = targets_[size_t(a)];
    counted[size_t(a)] =
        std::count_if(t.begin(), t.end(), [](int32_t v) { return v != kIgnoreIndex; });
  }
  const bool by_targets = data_->weight_by_targets();
  int64_t step_targets = 0;
  if (by_targets) {
    for (int64_t c : counted) step_targets += c;
    dist_.allreduce_sum(std::span<int64_t>(&step_targets, 1));
  }
  StepLosses sum;
  for (int64_t a = 0; a < o_.grad_accum; a++) {
    // Uniform: 1 / (grad_accum * processes); by targets: this micro-batch's share of the step's.
    const double w =
        by_targets ? (step_targets > 0 ? double(counted[size_t(a)]) / double(step_targets) : 0.0)
                   : 1.0;
    const float scale = by_targets ? float(w) : 1.0f / float(o_.grad_accum * procs);
    const StepLosses l = model_->forward_backward(inputs_[size_t(a)].data(),
                                                  targets_[size_t(a)].data(), micro, o_.seq, scale);
    sum.loss += w * l.loss;
    sum.main += w * l.main;
    sum.mtp += w * l.mtp;
    sum.balance += w * l.balance;
    sum.tokens += l.tokens;
  }
  // Everything the processes must agree on, in one all-reduce: the gradients, the losses and the
  // expert counts (exact in float up to 2^24 tokens per expert and step).
  const std::vector<ParamTensor>& ps = model_->params();
  size_t n = 4;
  for (const ParamTensor& p : ps) n += size_t(p.numel);
  for (const auto& c : model_->expert_counts()) n += c.size();
  if (procs > 1) {
    flat_.resize(n);
    float* f = flat_.data();
    for (const ParamTensor& p : ps) f = std::copy(p.grad, p.grad + p.numel, f);
    for (const auto& c : model_->expert_counts())
      for (int64_t v : c) *f++ = float(v);
    *f++ = float(sum.loss);
    *f++ = float(sum.main);
    *f++ = float(sum.mtp);
    *f++ = float(sum.balance);
    dist_.allreduce_sum(std::span<float>(flat_));
    f = flat_.data();
    for (const ParamTensor& p : ps) {
      std::copy(f, f + p.numel, p.grad);
      f += p.numel;
    }
    for (auto& c : model_->expert_counts())
      for (int64_t& v : c) v = int64_t(std::llround(*f++));
    sum.loss = f[0];
    sum.main = f[1];
    sum.mtp = f[2];
    sum.balance = f[3];
    int64_t t = sum.tokens;
    dist_.allreduce_sum(std::span<int64_t>(&t, 1));
    sum.tokens = t;
  }
  if (!by_targets) {
    const double k = double(o_.grad_accum * procs);
    sum.loss /= k;
    sum.main /= k;
    sum.mtp /= k;
    sum.balance /= k;
  }
  if (o_.fault_nan_step == step) sum.loss = NAN;

  // In bf16 mode the gradients belong to the master copies.
  if (o_.bf16)
    for (size_t i = 0; i < ps.size(); i++) opt_params_[i].grad = ps[i].grad;
  grad_norm = clip_grad_norm(opt_params_, o_.clip);
  return sum;
}

StepLosses Trainer::evaluate() {
  const int64_t procs = dist_.size(), rank = dist_.rank();
  const int64_t micro = std::max<int64_t>(1, o_.batch / (procs * o_.grad_accum));
  double main_sum = 0, mtp_sum = 0, tokens = 0;
  std::vector<int64_t> mine;
  for (int64_t w = rank; w < n_val_rows_; w += procs) mine.push_back(w);
  std::vector<int32_t>&inputs = inputs_.at(0), &targets = targets_.at(0);
  for (size_t i = 0; i < mine.size(); i += size_t(micro)) {
    const std::span<const int64_t> rows(mine.data() + i, std::min(mine.size() - i, size_t(micro)));
    data_->val_rows(rows, inputs, targets);
    const StepLosses l =
        model_->forward(inputs.data(), targets.data(), int64_t(rows.size()), o_.seq);
    main_sum += l.main * double(l.tokens);
    mtp_sum += l.mtp * double(l.tokens);
    tokens += double(l.tokens);
  }
  double v[3] = {main_sum, mtp_sum, tokens};
  dist_.allreduce_sum(std::span<double>(v, 3));
  StepLosses r;
  r.tokens = int64_t(v[2]);
  r.main = v[2] > 0 ? v[0] / v[2] : NAN;
  r.mtp = v[2] > 0 ? v[1] / v[2] : NAN;
  return r;
}

void Trainer::save(int64_t step, double elapsed_s) {
  // Rank 0 writes; everyone holds identical parameters.
  if (dist_.is_root()) {
    std::vector<CkptTensor> model, opt;
    for (size_t i = 0; i < opt_params_.size(); i++) {
      const ParamTensor& p = opt_params_[i];  // master weights under bf16
      model.push_back({p.name, p.shape, p.data});
      opt.push_back({"exp_avg." + p.name, p.shape, opt_->exp_avg(i).data()});
      opt.push_back({"exp_avg_sq." + p.name, p.shape, opt_->exp_avg_sq(i).data()});
    }
    for (const BufferTensor& b : model_->buffers()) model.push_back({b.name, b.shape, b.data});
    // The MTP module's shared embedding and head are stored again under its own names, as in the
    // released DeepSeek-V3 checkpoints.
    if (config_.num_nextn_predict_layers > 0) {
      const std::string mtp = "model.layers." + std::to_string(config_.num_hidden_layers) + ".";
      for (const CkptTensor& t : std::vector<CkptTensor>(model)) {
        if (t.name == "model.embed_tokens.weight")
          model.push_back({mtp + "embed_tokens.weight", t.shape, t.data});
        if (t.name == "lm_head.weight")
          model.push_back({mtp + "shared_head.head.weight", t.shape, t.data});
      }
    }
    json options = {{"batch", o_.batch},
                    {"seq", o_.seq},
                    {"grad_accum", o_.grad_accum},
                    {"seed", o_.seed},
                    {"lr", o_.lr},
                    {"schedule", o_.schedule},
                    {"steps", o_.steps},
                    {"processes", dist_.size()}};
    options.update(task_.saved_options());
    if (const json data = data_->identity(); !data.is_null()) options["data"] = data;
    json state = {{"step", step},
                  {"adam_steps", opt_->step_count()},
                  {"tokens", tokens_seen_},
                  {"elapsed_s", elapsed_s},
                  {"val_loss", std::isfinite(last_val_) ? json(last_val_) : json(nullptr)},
                  {"options", options},
                  {"format", "whale-train-state"},
                  {"version", 1}};
    save_checkpoint(ckpt_dir_.string(), model, opt, config_text_, state, tokenizer_dir_);
  }
  last_saved_ = step;
  dist_.barrier();
}

void Trainer::log(const json& record) {
  if (!dist_.is_root()) return;
  std::ofstream out(log_path_, std::ios::app);
  out << record.dump() << "\n";
  if (!out) throw std::runtime_error(log_path_.string() + ": cannot append to the log");
}

void Trainer::progress_line(int64_t step, const StepLosses& l, double lr, double tok_s, double mfu,
                            double eta_s) {
  if (!dist_.is_root()) return;
  std::string s = "step " + std::to_string(step) + "/" + std::to_string(o_.steps) + " | loss " +
                  fmt("%.4f", l.loss);
  if (config_.num_nextn_predict_layers > 0)
    s += " (main " + fmt("%.4f", l.main) + ", mtp " + fmt("%.4f", l.mtp) + ")";
  s += " | val " + (std::isfinite(last_val_) ? fmt("%.4f", last_val_) : std::string("-"));
  s += " | lr " + fmt("%.2e", lr) + " | " + fmt("%.0f", tok_s) + " tok/s | MFU " +
       fmt("%.1f", 100 * mfu) + "% | ETA " + duration(eta_s);
  if (tty_)
    std::fprintf(stderr, "\r\033[K%s", s.c_str());
  else
    std::fprintf(stderr, "%s\n", s.c_str());
  std::fflush(stderr);
}

// The start-up line and the log's opening: a fresh log, or the resumed one cut at the checkpoint.
void Trainer::write_start(bool resuming) {
  if (!dist_.is_root()) return;
  std::fprintf(stderr,
               "%s: %s parameters (%s active per token), %d process(es) x %d thread(s), "
               "batch %lld x seq %lld = %lld tokens/step, %s%s\n",
               cmd_.c_str(), fmt("%.2fM", double(model_->num_params()) / 1e6).c_str(),
               fmt("%.2fM", double(model_->num_active_params()) / 1e6).c_str(), dist_.size(),
               omp_get_max_threads(), (long long)o_.batch, (long long)o_.seq,
               (long long)(o_.batch * o_.seq), data_->summary().c_str(),
               resuming ? (", resuming at step " + std::to_string(start_step_)).c_str() : "");
  restart_jsonl_log(log_path_.string(), resuming, start_step_);
  json cfg = {{"type", "config"},
              {"params", model_->num_params()},
              {"active_params", model_->num_active_params()},
              {"processes", dist_.size()},
              {"threads", omp_get_max_threads()},
              {"batch", o_.batch},
              {"seq", o_.seq},
              {"grad_accum", o_.grad_accum},
              {"lr", o_.lr},
              {"schedule", o_.schedule},
              {"steps", o_.steps},
              {"start_step", start_step_},
              {"peak_gflops", peak_gflops_},
              {"model", json::parse(config_text_)}};
  cfg.update(task_.saved_options());
  log(cfg);
}

// A non-finite loss or gradient norm at `step`: logged and explained; the checkpoint stays.
void Trainer::report_non_finite(int64_t step, const StepLosses& l, double grad_norm) {
  const std::string what = !std::isfinite(l.loss) ? "the loss is " + fmt("%g", l.loss)
                                                  : "the gradient norm is " + fmt("%g", grad_norm);
  const std::string kept = last_saved_ >= 0
                               ? "the last good checkpoint is " + ckpt_dir_.string() + " (step " +
                                     std::to_string(last_saved_) + "), left as it was"
                               : "no checkpoint had been saved yet";
  log({{"type", "event"}, {"step", step}, {"message", "stopped: " + what}});
  if (!dist_.is_root()) return;
  if (tty_) std::fprintf(stderr, "\n");
  std::fprintf(stderr,
               "%s: stopped at step %lld: %s (main %g, mtp %g, balance %g); %s. "
               "Try a lower --lr or a longer --warmup.\n",
               cmd_.c_str(), (long long)step, what.c_str(), l.main, l.mtp, l.balance, kept.c_str());
}

int Trainer::run() {
  setup();
  write_start(o_.resume);
  std::signal(SIGINT, on_interrupt);
  std::signal(SIGTERM, on_interrupt);

  const double tokens_per_step = double(o_.batch * o_.seq);
  double avg_step_s = 0;
  const auto t_run = Clock::now();
  StepLosses l;
  for (int64_t step = start_step_; step < o_.steps; step++) {
    const auto t0 = Clock::now();
    double grad_norm = 0;
    l = train_step(step, grad_norm);
    if (!std::isfinite(l.loss) || !std::isfinite(grad_norm)) {
      report_non_finite(step, l, grad_norm);
      return 3;
    }
    const float lr = sched_.at(step);
    opt_->step(lr);
    if (o_.bf16)
      for (size_t i = 0; i < opt_params_.size(); i++)
        round_to_bf16(model_->params()[i].data, master_[i].data(), opt_params_[i].numel);
    std::vector<double> load;
    for (const auto& counts : model_->expert_counts())
      load.push_back(expert_load(counts).max_over_mean);
    model_->update_expert_biases(o_.bias_gamma);
    tokens_seen_ += uint64_t(tokens_per_step);

    const double dt = std::chrono::duration<double>(Clock::now() - t0).count();
    // The first step also allocates and faults in every buffer: the average starts after it.
    avg_step_s = step <= start_step_ + 1 ? dt : 0.9 * avg_step_s + 0.1 * dt;
    const double tok_s = tokens_per_step / dt;
    const double mfu =
        peak_gflops_ > 0 ? tok_s * flops_tok_ / (peak_gflops_ * 1e9 * dist_.size()) : 0;
    const double elapsed =
        elapsed_before_ + std::chrono::duration<double>(Clock::now() - t_run).count();
    const int64_t done = step + 1;
    json record = {{"type", "train"},    {"step", done},           {"loss", l.loss},
                   {"main", l.main},     {"mtp", l.mtp},           {"balance", l.balance},
                   {"lr", lr},           {"grad_norm", grad_norm}, {"tok_s", tok_s},
                   {"mfu", mfu},         {"tokens", tokens_seen_}, {"elapsed_s", elapsed},
                   {"expert_load", load}};
    if (data_->weight_by_targets()) record["targets"] = l.tokens;  // counted (unmasked) targets
    log(record);
    if (n_val_rows_ > 0 && o_.eval_every > 0 && (done % o_.eval_every == 0 || done == o_.steps)) {
      const StepLosses v = evaluate();
      last_val_ = v.main;
      log({{"type", "val"},
           {"step", done},
           {"val_loss", v.main},
           {"val_mtp", v.mtp},
           {"tokens", v.tokens}});
    }
    progress_line(done, l, lr, tok_s, mfu, avg_step_s * double(o_.steps - done));

    int64_t stop = g_interrupted ? 1 : 0;
    dist_.allreduce_sum(std::span<int64_t>(&stop, 1));
    if (done == o_.until) stop = 1;
    if ((o_.save_every > 0 && done % o_.save_every == 0) || done == o_.steps || stop) {
      save(done, elapsed);
    }
    if (stop && done == o_.until && !g_interrupted) {
      if (dist_.is_root())
        std::fprintf(stderr, "%s%s: stopped after step %lld (--until); checkpoint in %s\n",
                     tty_ ? "\n" : "", cmd_.c_str(), (long long)done, ckpt_dir_.string().c_str());
      return 0;
    }
    if (stop) {
      if (dist_.is_root())
        std::fprintf(stderr, "%s%s: interrupted; checkpoint saved at step %lld in %s\n",
                     tty_ ? "\n" : "", cmd_.c_str(), (long long)done, ckpt_dir_.string().c_str());
      return 130;
    }
  }
  if (dist_.is_root()) {
    if (tty_) std::fprintf(stderr, "\n");
    plot_training_log(log_path_.string(), png_path_.string());
    std::fprintf(stderr, "%s: done; checkpoint %s, log %s, plot %s\n", cmd_.c_str(),
                 ckpt_dir_.string().c_str(), log_path_.string().c_str(),
                 png_path_.string().c_str());
  }
  return 0;
}

}  // namespace

int run_training(TrainOptions options, TrainTask& task) {
  Trainer t(std::move(options), task);
  return t.run();
}

int run_train_command(const TrainOptions& options) {
  PretrainTask task(options);
  return run_training(options, task);
}

}  // namespace whale::train
