// Training plots: the JSONL log of `whale train` drawn as a PNG (at the end of a run, and by
// `whale plot LOG`).
//
// The log, one JSON object per line (blank lines skipped):
//   {"type":"train","step":12,"loss":4.1,"main":3.9,"expert_load":[1.3,1.1,...],...}
//   {"type":"val","step":50,"val_loss":4.0,"val_main":3.8}
//   {"type":"event","step":60,"message":"..."}
//   {"type":"grpo","step":3,"reward":0.4,"accuracy":0.35,"format":0.9,"length":41.5,...}
//   {"type":"config",...}
// Read: train "step" (required), "loss", "main", "expert_load" (per MoE layer: max/mean tokens per
// expert); val "step" (required), "val_main" or else "val_loss"; event "step"; grpo (`whale grpo`)
// "step" (required), "reward", "accuracy", "format", "length". A number field may
// be null or absent (no point; the trainer's JSON writer turns NaN into null). Anything else is
// ignored: other types and fields. A line that is not a JSON object, or a field of the wrong type,
// is an error "PATH:LINE: ..." -- except a malformed LAST line, which a killed run may leave
// half-written: it is skipped with a warning on stderr. A log without train or val points is an
// error (grpo records count as train points here). When a step number goes back (a resumed run
// appends to the log of a run that was killed after its last checkpoint), the later records replace
// the earlier ones from that step on.
//
// The picture (kPlotWidth x kPlotHeight, RGB, white background), two panels sharing the x axis:
//   top     loss against step: train "main" (kColourTrainMain), train "loss" when it differs
//           from "main" anywhere (MTP and balance terms included; kColourTrainLoss), val
//           (kColourVal, with markers);
//   bottom  expert load (max/mean tokens per expert; 1 is perfect balance): the mean and the max
//           over MoE layers as lines, the min..max range over layers as a band, a dotted line at 1.
// Axes: x spans exactly [first step, last step] (train and val) over the plot area's width, the
// same in both panels (a single step is widened to +-1). y spans [lo, hi] padded by 5% of
// (hi - lo) at both ends, where lo is the smallest value plotted (and at most 1 in the bottom
// panel) and hi the largest, except that hi is capped at lo + 2 * (p95 - lo), p95 being the 95th
// percentile (the value at index floor(0.95 * (n - 1)) of the sorted values) of everything drawn
// in the panel. So a huge first loss (or an early load spike) does not flatten the rest of the
// curve: lines to points above the cap leave through the top of the panel, whose title then says
// "clipped above ...". (A log scale would still let one value of 1e4 squeeze the interesting range
// into a few pixels; a percentile cap does not.) A flat series is widened to +-5% of its value.
// Tick labels at 1-2-5 steps on both axes of both panels, light grid lines, a legend in each
// panel, dotted vertical lines at event steps. Text uses the built-in 5x7 bitmap font, drawn at 2x.
//
// A GRPO log (grpo records, no train or val records) gets the reinforcement-learning panels
// instead, with the same axes rules:
//   top     reward (kColourReward), accuracy: share of completions correct (kColourAccuracy),
//           format rate (kColourFormat), against step;
//   bottom  mean completion length in tokens (kColourLength).
//
// The file is written atomically: PNG_PATH.tmp.PID, then renamed over PNG_PATH.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace whale::train {

inline constexpr int kPlotWidth = 1000, kPlotHeight = 700;

// A panel's plot area, inclusive pixel bounds (x grows right, y grows down).
struct PlotRect {
  int x0, y0, x1, y1;
};
inline constexpr PlotRect kLossPanel{90, 44, 975, 400};
inline constexpr PlotRect kBalancePanel{90, 478, 975, 640};

struct Rgb {
  uint8_t r, g, b;
  bool operator==(const Rgb&) const = default;
};
inline constexpr Rgb kColourBackground{255, 255, 255};
inline constexpr Rgb kColourTrainMain{31, 119, 180};
inline constexpr Rgb kColourTrainLoss{255, 127, 14};
inline constexpr Rgb kColourVal{214, 39, 40};
inline constexpr Rgb kColourLoadMean{44, 160, 44};
inline constexpr Rgb kColourLoadMax{148, 103, 189};
inline constexpr Rgb kColourReward{31, 119, 180};
inline constexpr Rgb kColourAccuracy{44, 160, 44};
inline constexpr Rgb kColourFormat{255, 127, 14};
inline constexpr Rgb kColourLength{148, 103, 189};

// The log's content as the plot uses it. NaN marks a missing value.
struct TrainingLog {
  struct Train {
    double step, loss, main;
    std::vector<double> expert_load;
  };
  struct Val {
    double step, loss;
  };
  struct Grpo {
    double step, reward, accuracy, format, length;
  };
  std::vector<Train> train;
  std::vector<Val> val;
  std::vector<Grpo> grpo;
  std::vector<double> event_steps;
  bool skipped_last_line = false;
};

// Reads and validates a log (rules above). Throws std::runtime_error "PATH: ..." / "PATH:LINE:
// ...".
TrainingLog read_training_log(const std::string& log_path);

// What was drawn.
struct PlotSummary {
  size_t train_points = 0, val_points = 0, moe_layers = 0;
  size_t grpo_points = 0;  // a GRPO log: the reinforcement-learning panels were drawn
  bool skipped_last_line = false;
  double step_lo = 0, step_hi = 0;  // the x axis
  double loss_lo = 0, loss_hi = 0;  // the top panel's y axis (padding included; GRPO: reward)
  double load_lo = 0, load_hi = 0;  // the bottom panel's y axis (0, 0 without MoE layers; GRPO:
                                    // length)
  bool loss_clipped = false, load_clipped = false;
};

// Reads LOG_PATH and writes the PNG. Throws std::runtime_error naming the file on bad input or
// when the PNG cannot be written.
PlotSummary plot_training_log(const std::string& log_path, const std::string& png_path);

// `whale plot LOG [-o OUT]`: OUT defaults to loss.png beside the log (reward.png for a GRPO log).
// Prints where it wrote.
int run_plot_command(const std::string& log_path, const std::string& out_png);

}  // namespace whale::train
