// Tests of the training plot (train/plot.h): synthetic logs rendered to PNG and read back with
// libpng; the expected pixel positions come from the axis rules documented in plot.h, computed
// here from the log's numbers.
#include <gtest/gtest.h>
#include <png.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "train/plot.h"

namespace whale::train {
namespace {

namespace fs = std::filesystem;

struct TempDir {
  fs::path path;
  TempDir() {
    static int counter = 0;
    path = fs::temp_directory_path() /
           ("whale_train_plot_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

void spit(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << text;
}

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;
  Rgb at(int x, int y) const {
    const uint8_t* p = &rgb[(size_t(y) * size_t(width) + size_t(x)) * 3];
    return {p[0], p[1], p[2]};
  }
  // Pixels of `colour` within `radius` of (x, y).
  int count_near(double x, double y, Rgb colour, int radius = 3) const {
    int n = 0;
    for (int dy = -radius; dy <= radius; dy++)
      for (int dx = -radius; dx <= radius; dx++) {
        const int px = int(std::lround(x)) + dx, py = int(std::lround(y)) + dy;
        if (px >= 0 && py >= 0 && px < width && py < height && at(px, py) == colour) n++;
      }
    return n;
  }
  int count_in(const PlotRect& r, Rgb colour) const {
    int n = 0;
    for (int y = r.y0; y <= r.y1; y++)
      for (int x = r.x0; x <= r.x1; x++) n += at(x, y) == colour;
    return n;
  }
  int count_not_background(const PlotRect& r) const {
    return (r.x1 - r.x0 + 1) * (r.y1 - r.y0 + 1) - count_in(r, kColourBackground);
  }
};

// Reads a PNG with libpng's simplified API, as 8-bit RGB.
Image read_png(const std::string& path) {
  png_image png;
  std::memset(&png, 0, sizeof png);
  png.version = PNG_IMAGE_VERSION;
  Image im;
  if (!png_image_begin_read_from_file(&png, path.c_str())) {
    ADD_FAILURE() << path << ": " << png.message;
    return im;
  }
  png.format = PNG_FORMAT_RGB;
  im.width = int(png.width);
  im.height = int(png.height);
  im.rgb.resize(PNG_IMAGE_SIZE(png));
  if (!png_image_finish_read(&png, nullptr, im.rgb.data(), 0, nullptr)) {
    ADD_FAILURE() << path << ": " << png.message;
    im = Image{};
  }
  return im;
}

// Pixel coordinates of a data point, from the plot.h contract: x spans [step_lo, step_hi] over
// the panel's width, y the padded axis range over its height.
double px_x(const PlotRect& r, double step, double lo, double hi) {
  return r.x0 + (step - lo) / (hi - lo) * (r.x1 - r.x0);
}
double px_y(const PlotRect& r, double v, double lo, double hi) {
  return r.y1 - (v - lo) / (hi - lo) * (r.y1 - r.y0);
}

// 100 train steps, main falling linearly 5 -> 3, total loss = main + 0.3, val = main + 0.1 every
// 20 steps, two MoE layers with loads 2 (layer 0) and 3 (layer 1), plus records the plot ignores.
std::string synthetic_log() {
  std::string s = "{\"type\":\"config\",\"model\":{\"hidden_size\":64},\"processes\":1}\n";
  for (int step = 1; step <= 100; step++) {
    const double main = 5 - 2 * double(step - 1) / 99;
    s += "{\"type\":\"train\",\"step\":" + std::to_string(step) +
         ",\"loss\":" + std::to_string(main + 0.3) + ",\"main\":" + std::to_string(main) +
         ",\"mtp\":4.3,\"balance\":0.001,\"lr\":0.001,\"grad_norm\":0.8,\"tok_s\":5000,"
         "\"mfu\":0.05,\"tokens\":123456,\"elapsed_s\":12.5,\"expert_load\":[2.0,3.0],"
         "\"future_field\":[1,2]}\n";
    if (step % 20 == 0)
      s += "{\"type\":\"val\",\"step\":" + std::to_string(step) +
           ",\"val_loss\":" + std::to_string(main + 0.1) + "}\n";
    if (step == 60) s += "{\"type\":\"event\",\"step\":60,\"message\":\"resumed\"}\n";
  }
  s += "{\"type\":\"something_new\",\"x\":1}\n";
  return s;
}

TEST(TrainPlot, DrawsBothPanelsWithPointsWhereTheAxesSay) {
  TempDir dir;
  spit(dir.file("log.jsonl"), synthetic_log());
  const PlotSummary s = plot_training_log(dir.file("log.jsonl"), dir.file("loss.png"));
  EXPECT_EQ(s.train_points, 100u);
  EXPECT_EQ(s.val_points, 5u);
  EXPECT_EQ(s.moe_layers, 2u);
  EXPECT_FALSE(s.skipped_last_line);
  EXPECT_EQ(s.step_lo, 1);
  EXPECT_EQ(s.step_hi, 100);
  // The values plotted span [3, 5.3] (main .. total) with no outliers: no cap, 5% padding.
  EXPECT_FALSE(s.loss_clipped);
  EXPECT_NEAR(s.loss_lo, 3 - 0.05 * 2.3, 1e-4);
  EXPECT_NEAR(s.loss_hi, 5.3 + 0.05 * 2.3, 1e-4);
  // Loads 1 (always included), 2 and 3.
  EXPECT_NEAR(s.load_lo, 1 - 0.05 * 2, 1e-9);
  EXPECT_NEAR(s.load_hi, 3 + 0.05 * 2, 1e-9);

  const Image im = read_png(dir.file("loss.png"));
  ASSERT_EQ(im.width, kPlotWidth);
  ASSERT_EQ(im.height, kPlotHeight);
  EXPECT_GT(im.count_not_background(kLossPanel), 2000);
  EXPECT_GT(im.count_not_background(kBalancePanel), 2000);
  // Tick labels left of the panels and under them.
  EXPECT_GT(im.count_not_background({0, kLossPanel.y0, kLossPanel.x0 - 6, kLossPanel.y1}), 100);
  EXPECT_GT(im.count_not_background(
                {kBalancePanel.x0, kBalancePanel.y1 + 6, kBalancePanel.x1, kBalancePanel.y1 + 22}),
            100);

  // Train main at step 50 (value 5 - 2 * 49 / 99), the total loss above it, val at step 40.
  const auto at = [&](const PlotRect& r, double step, double v, double lo, double hi) {
    return std::pair{px_x(r, step, 1, 100), px_y(r, v, lo, hi)};
  };
  const double main50 = 5 - 2 * 49.0 / 99;
  auto [x, y] = at(kLossPanel, 50, main50, s.loss_lo, s.loss_hi);
  EXPECT_GT(im.count_near(x, y, kColourTrainMain), 0)
      << "train main near (" << x << "," << y << ")";
  EXPECT_EQ(im.count_near(x, y - 40, kColourTrainMain, 5), 0) << "the main line is not elsewhere";
  std::tie(x, y) = at(kLossPanel, 50, main50 + 0.3, s.loss_lo, s.loss_hi);
  EXPECT_GT(im.count_near(x, y, kColourTrainLoss), 0)
      << "total loss near (" << x << "," << y << ")";
  std::tie(x, y) = at(kLossPanel, 40, 5 - 2 * 39.0 / 99 + 0.1, s.loss_lo, s.loss_hi);
  EXPECT_GT(im.count_near(x, y, kColourVal, 2), 12) << "a val marker at (" << x << "," << y << ")";

  // Bottom panel: the mean (2.5) and the max (3) over the two layers.
  std::tie(x, y) = at(kBalancePanel, 30, 2.5, s.load_lo, s.load_hi);
  EXPECT_GT(im.count_near(x, y, kColourLoadMean), 0) << "load mean near (" << x << "," << y << ")";
  std::tie(x, y) = at(kBalancePanel, 30, 3.0, s.load_lo, s.load_hi);
  EXPECT_GT(im.count_near(x, y, kColourLoadMax), 0) << "load max near (" << x << "," << y << ")";
  EXPECT_EQ(im.count_in(kLossPanel, kColourLoadMean), 0);

  // Written atomically: nothing else is left in the directory.
  size_t files = 0;
  for (const auto& e : fs::directory_iterator(dir.path)) files += e.is_regular_file();
  EXPECT_EQ(files, 2u);
}

// A `whale grpo` log: reward rising 0.2 -> 1.0, accuracy 0.1 -> 0.9, format 0.5, length 40 -> 20
// over 50 steps; the reinforcement-learning panels instead of loss and expert load.
TEST(TrainPlot, GrpoLogsGetTheRewardAndLengthPanels) {
  TempDir dir;
  std::string log = "{\"type\":\"config\",\"run\":\"grpo\"}\n";
  for (int step = 1; step <= 50; step++) {
    const double t = double(step - 1) / 49;
    log += "{\"type\":\"grpo\",\"step\":" + std::to_string(step) +
           ",\"reward\":" + std::to_string(0.2 + 0.8 * t) +
           ",\"accuracy\":" + std::to_string(0.1 + 0.8 * t) +
           ",\"format\":0.5,\"length\":" + std::to_string(40 - 20 * t) +
           ",\"kl\":null,\"loss\":-0.01,\"skipped\":1}\n";
  }
  spit(dir.file("log.jsonl"), log);
  const PlotSummary s = plot_training_log(dir.file("log.jsonl"), dir.file("reward.png"));
  EXPECT_EQ(s.grpo_points, 50u);
  EXPECT_EQ(s.train_points, 0u);
  EXPECT_EQ(s.step_lo, 1);
  EXPECT_EQ(s.step_hi, 50);
  // Top: values in [0.1, 1.0]; bottom: lengths in [20, 40]; 5% padding.
  EXPECT_NEAR(s.loss_lo, 0.1 - 0.05 * 0.9, 1e-6);
  EXPECT_NEAR(s.loss_hi, 1.0 + 0.05 * 0.9, 1e-6);
  EXPECT_NEAR(s.load_lo, 20 - 0.05 * 20, 1e-6);
  EXPECT_NEAR(s.load_hi, 40 + 0.05 * 20, 1e-6);
  const Image im = read_png(dir.file("reward.png"));
  ASSERT_EQ(im.width, kPlotWidth);
  const auto x = [&](double step) { return px_x(kLossPanel, step, 1, 50); };
  EXPECT_GT(im.count_near(x(25), px_y(kLossPanel, 0.2 + 0.8 * 24 / 49, s.loss_lo, s.loss_hi),
                          kColourReward),
            0);
  EXPECT_GT(im.count_near(x(25), px_y(kLossPanel, 0.1 + 0.8 * 24 / 49, s.loss_lo, s.loss_hi),
                          kColourAccuracy),
            0);
  EXPECT_GT(im.count_near(x(10), px_y(kLossPanel, 0.5, s.loss_lo, s.loss_hi), kColourFormat), 0);
  EXPECT_GT(
      im.count_near(px_x(kBalancePanel, 25, 1, 50),
                    px_y(kBalancePanel, 40 - 20.0 * 24 / 49, s.load_lo, s.load_hi), kColourLength),
      0);
  EXPECT_EQ(im.count_in(kLossPanel, kColourLength), 0);
  EXPECT_EQ(im.count_in(kBalancePanel, kColourReward), 0);
  // `whale plot` names it reward.png beside the log by default.
  fs::remove(dir.file("reward.png"));
  EXPECT_EQ(run_plot_command(dir.file("log.jsonl"), ""), 0);
  EXPECT_TRUE(fs::exists(dir.file("reward.png")));
  EXPECT_FALSE(fs::exists(dir.file("loss.png")));
}

TEST(TrainPlot, AHugeFirstLossDoesNotFlattenTheCurve) {
  TempDir dir;
  std::string s;
  for (int step = 1; step <= 200; step++) {
    const double loss = step == 1 ? 10000 : 4 - double(step) / 200;  // 1e4, then 3.99 .. 3
    s += "{\"type\":\"train\",\"step\":" + std::to_string(step) +
         ",\"loss\":" + std::to_string(loss) + ",\"main\":" + std::to_string(loss) + "}\n";
  }
  spit(dir.file("log.jsonl"), s);
  const PlotSummary p = plot_training_log(dir.file("log.jsonl"), dir.file("out.png"));
  EXPECT_TRUE(p.loss_clipped);
  EXPECT_LT(p.loss_hi, 6);
  EXPECT_GT(p.loss_hi, 3.9);
  EXPECT_EQ(p.moe_layers, 0u);
  // Step 100 (loss 3.5) sits in the middle of the panel, not squashed at the bottom.
  const Image im = read_png(dir.file("out.png"));
  ASSERT_EQ(im.width, kPlotWidth);
  const double x = px_x(kLossPanel, 100, 1, 200), y = px_y(kLossPanel, 3.5, p.loss_lo, p.loss_hi);
  EXPECT_GT(y, kLossPanel.y0 + 0.25 * (kLossPanel.y1 - kLossPanel.y0));
  EXPECT_LT(y, kLossPanel.y1 - 0.25 * (kLossPanel.y1 - kLossPanel.y0));
  EXPECT_GT(im.count_near(x, y, kColourTrainMain), 0) << "(" << x << "," << y << ")";
  // The first segment heads for the top edge: main-colour pixels on the panel's top rows.
  EXPECT_GT(im.count_in({kLossPanel.x0, kLossPanel.y0, kLossPanel.x0 + 10, kLossPanel.y0 + 3},
                        kColourTrainMain),
            0);
}

TEST(TrainPlot, ResumedRunsReplaceTheStepsTheyRepeat) {
  TempDir dir;
  std::string s;
  auto train = [](int step, double loss) {
    return "{\"type\":\"train\",\"step\":" + std::to_string(step) +
           ",\"loss\":" + std::to_string(loss) + "}\n";
  };
  for (int step = 1; step <= 10; step++) s += train(step, 9);
  for (int step = 6; step <= 12; step++) s += train(step, 5);             // resumed from step 5
  s += "{\"type\":\"train\",\"step\":13,\"loss\":null,\"main\":null}\n";  // NaN loss
  spit(dir.file("log.jsonl"), s);
  const TrainingLog log = read_training_log(dir.file("log.jsonl"));
  ASSERT_EQ(log.train.size(), 13u);
  for (size_t i = 0; i < 13; i++) EXPECT_EQ(log.train[i].step, double(i + 1));
  EXPECT_EQ(log.train[4].loss, 9);
  EXPECT_EQ(log.train[5].loss, 5);
  EXPECT_TRUE(std::isnan(log.train[12].loss));
  EXPECT_NO_THROW(plot_training_log(dir.file("log.jsonl"), dir.file("p.png")));
}

TEST(TrainPlot, AHalfWrittenLastLineIsSkipped) {
  TempDir dir;
  spit(dir.file("log.jsonl"),
       "{\"type\":\"train\",\"step\":1,\"loss\":5}\n{\"type\":\"train\",\"step\":2,\"loss\":4}\n"
       "{\"type\":\"train\",\"st\n\n");
  const PlotSummary s = plot_training_log(dir.file("log.jsonl"), dir.file("p.png"));
  EXPECT_TRUE(s.skipped_last_line);
  EXPECT_EQ(s.train_points, 2u);
}

std::string plot_error(const std::string& log_text, const std::string& name = "log.jsonl") {
  TempDir dir;
  spit(dir.file(name), log_text);
  try {
    plot_training_log(dir.file(name), dir.file("p.png"));
  } catch (const std::runtime_error& e) {
    EXPECT_FALSE(fs::exists(dir.file("p.png")));
    const std::string msg = e.what();
    const size_t at = msg.find(dir.file(name));
    EXPECT_EQ(at, 0u) << msg;  // the message starts with the path
    return at == std::string::npos ? msg : msg.substr(dir.file(name).size());
  }
  ADD_FAILURE() << "no error for:\n" << log_text;
  return "";
}

TEST(TrainPlot, BadLogsAreClearErrors) {
  const std::string ok = "{\"type\":\"train\",\"step\":1,\"loss\":5}\n";
  EXPECT_EQ(plot_error(""), ": the training log is empty");
  EXPECT_EQ(plot_error("\n  \n"), ": the training log is empty");
  EXPECT_EQ(plot_error("{\"type\":\"config\"}\n"),
            ": no \"train\", \"val\" or \"grpo\" records in the training log");
  std::string msg = plot_error(ok + "{\"type\":\"train\",\"step\":2,,}\n" + ok);
  EXPECT_EQ(msg.rfind(":2: malformed JSON", 0), 0u) << msg;
  msg = plot_error(ok + "\n[1,2]\n" + ok);
  EXPECT_EQ(msg.rfind(":3: not a JSON object", 0), 0u) << msg;
  EXPECT_EQ(plot_error(ok + "{\"type\":\"train\",\"step\":2,\"loss\":\"high\"}\n"),
            ":2: field \"loss\" is not a number (\"high\")");
  EXPECT_EQ(plot_error(ok + "{\"type\":\"train\",\"loss\":3}\n"),
            ":2: train record without a \"step\" number");
  EXPECT_EQ(plot_error(ok + "{\"type\":\"val\",\"step\":\"7\",\"val_loss\":3}\n"),
            ":2: field \"step\" is not a number (\"7\")");
  EXPECT_EQ(plot_error(ok + "{\"type\":\"train\",\"step\":2,\"expert_load\":[1,\"x\"]}\n"),
            ":2: field \"expert_load\" holds a non-number (\"x\")");
  EXPECT_EQ(plot_error(ok + "{\"type\":3}\n"), ":2: field \"type\" is not a string");
  // A malformed last line is tolerated only when something else is left to plot.
  EXPECT_EQ(plot_error("{\"type\":\"tr"),
            ": no \"train\", \"val\" or \"grpo\" records in the training log");

  EXPECT_THROW(plot_training_log("/nonexistent/log.jsonl", "/tmp/x.png"), std::runtime_error);
}

TEST(TrainPlot, UnwritableOutputIsAClearError) {
  TempDir dir;
  spit(dir.file("log.jsonl"), "{\"type\":\"train\",\"step\":1,\"loss\":5}\n");
  const std::string out = dir.file("no/such/dir/p.png");
  try {
    plot_training_log(dir.file("log.jsonl"), out);
    ADD_FAILURE() << "no error";
  } catch (const std::runtime_error& e) {
    EXPECT_EQ(std::string(e.what()).rfind(out + ": ", 0), 0u) << e.what();
  }
}

TEST(TrainPlot, CommandWritesBesideTheLogByDefault) {
  TempDir dir;
  spit(dir.file("log.jsonl"), synthetic_log());
  ::testing::internal::CaptureStdout();
  EXPECT_EQ(run_plot_command(dir.file("log.jsonl"), ""), 0);
  const std::string out = ::testing::internal::GetCapturedStdout();
  EXPECT_NE(out.find(dir.file("loss.png")), std::string::npos) << out;
  EXPECT_NE(out.find("100 train points, 5 val points, 2 MoE layers"), std::string::npos) << out;
  EXPECT_EQ(read_png(dir.file("loss.png")).width, kPlotWidth);
  EXPECT_THROW(run_plot_command(dir.file("log.jsonl"), dir.file("log.jsonl")), std::runtime_error);
  EXPECT_FALSE(read_training_log(dir.file("log.jsonl")).train.empty()) << "the log survived";
}

}  // namespace
}  // namespace whale::train
