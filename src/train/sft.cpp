#include "train/sft.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <stdexcept>

#include "formats/safetensors.h"
#include "formats/tokenizer.h"
#include "run/chat.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/dist.h"
#include "train/model_train.h"
#include "train/sft_data.h"
#include "train/weights_io.h"

namespace whale::train {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

[[noreturn]] void fail(const std::string& message) {
  throw std::invalid_argument("whale sft: " + message);
}

// Every parameter of `model` from a model directory (whale checkpoint or Hugging Face, F32/BF16);
// a missing e_score_correction_bias starts at zero.
void load_init_weights(const std::string& dir, TrainModel& model) {
  try {
    load_train_weights(model, dir);
  } catch (const std::runtime_error& e) {
    fail(std::string("--init: ") + e.what());
  }
  model.zero_grad();
  model.reset_expert_counts();
}

// One conversation as tokens, checked against the vocabulary and the row length; nullopt when
// truncation left no target token.
std::optional<SftExample> prepare(const ChatExample& c, const Tokenizer& tok, ChatStyle style,
                                  int64_t vocab, int64_t seq, bool truncate) {
  SftExample ex = tokenize_pieces(
      render_training_pieces(c.messages, style, tok.bos_token(), tok.eos_token()), tok);
  for (int32_t id : ex.ids)
    if (id < 0 || id >= vocab)
      throw std::invalid_argument(c.where + ": token id " + std::to_string(id) +
                                  " is outside the model's vocabulary (vocab_size " +
                                  std::to_string(vocab) + "; is --tokenizer the model's?)");
  const size_t limit = size_t(seq) + 1;
  if (ex.ids.size() > limit) {
    if (!truncate)
      throw std::invalid_argument(c.where + ": the conversation is " +
                                  std::to_string(ex.ids.size()) + " tokens, more than --seq " +
                                  std::to_string(seq) + " + 1 (raise --seq, or --truncate)");
    ex.ids.resize(limit);
    ex.target.resize(limit);
  }
  // Token 0 is no position's target.
  if (ex.ids.size() < 2 || std::count(ex.target.begin() + 1, ex.target.end(), uint8_t(1)) == 0) {
    if (!truncate)
      throw std::invalid_argument(c.where + ": the conversation has no target token to train on");
    return std::nullopt;
  }
  return ex;
}

// Tokenizes the conversations in parallel (the first error in input order is thrown) and packs
// them into rows. `dropped` counts conversations truncation left without a target.
SftRows build_rows(const std::vector<ChatExample>& convs, const Tokenizer& tok, ChatStyle style,
                   int64_t vocab, const SftOptions& o, size_t& dropped) {
  const int64_t n = int64_t(convs.size());
  std::vector<std::optional<SftExample>> examples(convs.size());
  std::vector<std::string> errors(convs.size());
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < n; i++) {
    try {
      examples[size_t(i)] = prepare(convs[size_t(i)], tok, style, vocab, o.train.seq, o.truncate);
    } catch (const std::exception& e) {
      errors[size_t(i)] = e.what();
    }
  }
  for (const std::string& e : errors)
    if (!e.empty()) throw std::invalid_argument("whale sft: " + e);
  SftRows rows;
  for (const auto& ex : examples) {
    if (ex)
      rows.add(*ex);
    else
      dropped++;
  }
  rows.pack(o.train.seq, o.pack);
  return rows;
}

// Row g of step s is row order_e[i] of the training rows, where s * batch + g = e * rows + i:
// every epoch visits every row once, in its own order.
class SftSource : public BatchSource {
 public:
  SftSource(SftRows train, SftRows val, int32_t pad, uint64_t seed, int64_t batch, size_t dropped)
      : train_(std::move(train)),
        val_(std::move(val)),
        pad_(pad),
        seed_(seed),
        batch_(batch),
        dropped_(dropped) {}

  void train_rows(int64_t step, std::span<const int64_t> rows, std::vector<int32_t>& inputs,
                  std::vector<int32_t>& targets) override {
    const int64_t T = train_.seq(), R = train_.num_rows();
    inputs.resize(rows.size() * size_t(T));
    targets.resize(rows.size() * size_t(T));
    for (size_t b = 0; b < rows.size(); b++) {
      const int64_t r = step * batch_ + rows[b], epoch = r / R;
      if (epoch != order_epoch_) {
        order_ = epoch_order(R, seed_, epoch);
        order_epoch_ = epoch;
      }
      train_.fill(order_[size_t(r % R)], pad_, inputs.data() + b * size_t(T),
                  targets.data() + b * size_t(T));
    }
  }
  int64_t num_val_rows() const override { return val_.num_rows(); }
  void val_rows(std::span<const int64_t> rows, std::vector<int32_t>& inputs,
                std::vector<int32_t>& targets) override {
    const size_t T = size_t(val_.seq());
    inputs.resize(rows.size() * T);
    targets.resize(rows.size() * T);
    for (size_t b = 0; b < rows.size(); b++)
      val_.fill(rows[b], pad_, inputs.data() + b * T, targets.data() + b * T);
  }
  bool weight_by_targets() const override { return true; }
  std::string summary() const override {
    std::string s = std::to_string(train_.num_examples()) + " conversations in " +
                    std::to_string(train_.num_rows()) + " rows (" +
                    std::to_string(train_.num_targets()) + " target tokens), " +
                    std::to_string(val_.num_examples()) + " val conversations";
    if (dropped_ > 0) s += ", " + std::to_string(dropped_) + " dropped (nothing left to train)";
    return s;
  }
  json identity() const override {
    char fp[32];
    std::snprintf(fp, sizeof fp, "%016llx",
                  (unsigned long long)(train_.fingerprint() ^ (val_.fingerprint() * 31)));
    return {{"conversations", train_.num_examples()},
            {"rows", train_.num_rows()},
            {"val_conversations", val_.num_examples()},
            {"val_rows", val_.num_rows()},
            {"fingerprint", fp}};
  }
  int64_t num_rows() const { return train_.num_rows(); }

 private:
  SftRows train_, val_;
  int32_t pad_;
  uint64_t seed_;
  int64_t batch_;
  size_t dropped_;
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;
};

class SftTask : public TrainTask {
 public:
  explicit SftTask(const SftOptions& o) : o_(o) {}
  std::string command() const override { return "whale sft"; }

  void fresh_config(std::string& text, std::string& origin) override {
    if (o_.init_dir.empty()) fail("--init DIR (the model to fine-tune) is required");
    origin = (fs::path(o_.init_dir) / "config.json").string();
    text = read_file(origin);
  }

  std::unique_ptr<BatchSource> open_data(const ModelConfig& config, const json& resumed,
                                         TrainOptions& o) override;

  std::string tokenizer_dir() const override { return tokenizer_dir_; }

  void init_model(TrainModel& model, const TrainOptions&) override {
    load_init_weights(o_.init_dir, model);
  }

  json saved_options() const override {
    return {{"task", "sft"},
            {"init", o_.init_dir},
            {"tokenizer", tokenizer_dir_},
            {"epochs", o_.epochs}};
  }

 private:
  std::string pick_tokenizer_dir(const json& resumed) const;
  void split(std::vector<ChatExample>& all, std::vector<ChatExample>& val) const;
  void set_steps(TrainOptions& o, int64_t rows, const json& resumed) const;

  const SftOptions& o_;
  std::string tokenizer_dir_;
};

// --tokenizer, else on a resume the one the run started with (or the checkpoint's copy), else
// the --init directory.
std::string SftTask::pick_tokenizer_dir(const json& resumed) const {
  if (!o_.train.tokenizer_dir.empty()) return o_.train.tokenizer_dir;
  if (resumed.is_null()) return o_.init_dir;
  const std::string saved = resumed.at("options").value("tokenizer", std::string());
  if (!saved.empty() && fs::exists(fs::path(saved) / "tokenizer.json")) return saved;
  return (fs::path(o_.train.out_dir) / "model").string();
}

// Moves the validation conversations out of `all` (by --val-fraction unless --val FILE).
void SftTask::split(std::vector<ChatExample>& all, std::vector<ChatExample>& val) const {
  if (!o_.val_file.empty()) {
    val = read_chat_jsonl(o_.val_file);
    return;
  }
  std::vector<bool> is_val;
  try {
    is_val = split_validation(all.size(), o_.val_fraction, o_.train.seed);
  } catch (const std::runtime_error& e) {
    fail(std::string("--val-fraction: ") + e.what());
  }
  std::vector<ChatExample> train;
  for (size_t i = 0; i < all.size(); i++) (is_val[i] ? val : train).push_back(std::move(all[i]));
  all = std::move(train);
}

// Steps from --epochs (or one epoch; on a resume, the checkpoint's), and the fine-tuning warm-up
// of 3% of them.
void SftTask::set_steps(TrainOptions& o, int64_t rows, const json& resumed) const {
  if (o_.epochs < 0) fail("--epochs must be > 0");
  if (o.steps > 0 && o_.epochs > 0) fail("give --epochs or --steps, not both");
  if (o.steps <= 0 && o_.epochs == 0 && !resumed.is_null())
    o.steps = resumed.at("options").at("steps").get<int64_t>();
  if (o.steps <= 0) {
    const int64_t epochs = std::max<int64_t>(o_.epochs, 1);
    o.steps = (epochs * rows + o.batch - 1) / o.batch;
  }
  if (o.warmup < 0) o.warmup = std::llround(0.03 * double(o.steps));
}

std::unique_ptr<BatchSource> SftTask::open_data(const ModelConfig& config, const json& resumed,
                                                TrainOptions& o) {
  if (!resumed.is_null() && resumed.at("options").value("task", std::string()) != "sft")
    fail(o.out_dir + "/model was not written by whale sft (continue it with whale train --resume)");
  tokenizer_dir_ = pick_tokenizer_dir(resumed);
  const Tokenizer tok = Tokenizer::load(tokenizer_dir_);
  if (tok.chat_template().empty())
    fail((fs::path(tokenizer_dir_) / "tokenizer_config.json").string() +
         ": the model has no chat template (conversations are rendered with it; pass "
         "--tokenizer DIR with one)");
  const ChatStyle style = detect_chat_style(tok.chat_template());

  if (o_.data.empty()) fail("--data is required");
  std::vector<ChatExample> train, val;
  for (const std::string& f : expand_chat_inputs(o_.data)) {
    std::vector<ChatExample> part = read_chat_jsonl(f);
    std::move(part.begin(), part.end(), std::back_inserter(train));
  }
  split(train, val);
  size_t dropped = 0;
  SftRows train_rows = build_rows(train, tok, style, config.vocab_size, o_, dropped);
  SftRows val_rows = build_rows(val, tok, style, config.vocab_size, o_, dropped);
  if (train_rows.num_rows() == 0) fail("no training conversations in --data");
  set_steps(o, train_rows.num_rows(), resumed);
  const int32_t pad = std::max<int32_t>(tok.eos_id(), 0);
  auto source = std::make_unique<SftSource>(std::move(train_rows), std::move(val_rows), pad, o.seed,
                                            o.batch, dropped);
  if (Dist().is_root())
    std::fprintf(stderr, "whale sft: %s chat format, %lld steps (%.2f epochs of %lld rows)\n",
                 chat_style_name(style), (long long)o.steps,
                 double(o.steps * o.batch) / double(source->num_rows()),
                 (long long)source->num_rows());
  return source;
}

}  // namespace

int run_sft_command(const SftOptions& options) {
  SftTask task(options);
  return run_training(options.train, task);
}

}  // namespace whale::train
