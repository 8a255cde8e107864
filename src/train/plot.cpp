#include "train/plot.h"

#include <png.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace whale::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

std::runtime_error error(const std::string& where, const std::string& msg) {
  return std::runtime_error(where + ": " + msg);
}

// ------------------------------------------------------------------ reading the log

std::string snippet(const std::string& line) {
  return line.size() <= 60 ? line : line.substr(0, 57) + "...";
}

// A number field: its value, NaN when absent or null; anything else is an error.
double number_field(const json& j, const char* field, const std::string& where) {
  const auto it = j.find(field);
  if (it == j.end() || it->is_null()) return kNaN;
  if (!it->is_number())
    throw error(where, std::string("field \"") + field + "\" is not a number (" + it->dump() + ")");
  return it->get<double>();
}

double step_field(const json& j, const std::string& type, const std::string& where) {
  const double step = number_field(j, "step", where);
  if (std::isnan(step)) throw error(where, type + " record without a \"step\" number");
  return step;
}

std::vector<double> load_field(const json& j, const std::string& where) {
  std::vector<double> load;
  const auto it = j.find("expert_load");
  if (it == j.end() || it->is_null()) return load;
  if (!it->is_array())
    throw error(where, "field \"expert_load\" is not an array (" + snippet(it->dump()) + ")");
  for (const json& v : *it) {
    if (!v.is_null() && !v.is_number())
      throw error(where, "field \"expert_load\" holds a non-number (" + v.dump() + ")");
    load.push_back(v.is_null() ? kNaN : v.get<double>());
  }
  return load;
}

// A resumed run re-logs steps that a killed run had logged after its last checkpoint: the later
// records win, from their step on.
template <class Record>
void drop_from_step(std::vector<Record>& records, double step) {
  while (!records.empty() && records.back().step >= step) records.pop_back();
}

void read_record(const json& j, const std::string& where, TrainingLog& log) {
  const auto type_it = j.find("type");
  if (type_it == j.end()) return;
  if (!type_it->is_string()) throw error(where, "field \"type\" is not a string");
  const std::string type = type_it->get<std::string>();
  if (type == "train") {
    TrainingLog::Train t{step_field(j, type, where), number_field(j, "loss", where),
                         number_field(j, "main", where), load_field(j, where)};
    drop_from_step(log.train, t.step);
    log.train.push_back(std::move(t));
  } else if (type == "val") {
    const double step = step_field(j, type, where);
    double loss = number_field(j, "val_main", where);
    if (std::isnan(loss)) loss = number_field(j, "val_loss", where);
    drop_from_step(log.val, step);
    log.val.push_back({step, loss});
  } else if (type == "grpo") {
    TrainingLog::Grpo g{step_field(j, type, where), number_field(j, "reward", where),
                        number_field(j, "accuracy", where), number_field(j, "format", where),
                        number_field(j, "length", where)};
    drop_from_step(log.grpo, g.step);
    log.grpo.push_back(g);
  } else if (type == "event") {
    const double step = number_field(j, "step", where);
    if (!std::isnan(step)) log.event_steps.push_back(step);
  }
}

bool blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isspace(c); });
}

// ------------------------------------------------------------------ the 5x7 font

// One glyph: 7 rows of 5 pixels, bit 4 is the leftmost column.
struct Glyph {
  char c;
  uint8_t rows[7];
};

// clang-format off
constexpr Glyph kFont[] = {
  {' ', {0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00}},
  {'0', {0b01110, 0b10001, 0b10011, 0b10101, 0b11001, 0b10001, 0b01110}},
  {'1', {0b00100, 0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110}},
  {'2', {0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b01000, 0b11111}},
  {'3', {0b11111, 0b00010, 0b00100, 0b00010, 0b00001, 0b10001, 0b01110}},
  {'4', {0b00010, 0b00110, 0b01010, 0b10010, 0b11111, 0b00010, 0b00010}},
  {'5', {0b11111, 0b10000, 0b11110, 0b00001, 0b00001, 0b10001, 0b01110}},
  {'6', {0b00110, 0b01000, 0b10000, 0b11110, 0b10001, 0b10001, 0b01110}},
  {'7', {0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b01000, 0b01000}},
  {'8', {0b01110, 0b10001, 0b10001, 0b01110, 0b10001, 0b10001, 0b01110}},
  {'9', {0b01110, 0b10001, 0b10001, 0b01111, 0b00001, 0b00010, 0b01100}},
  {'A', {0b01110, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001}},
  {'B', {0b11110, 0b10001, 0b10001, 0b11110, 0b10001, 0b10001, 0b11110}},
  {'C', {0b01110, 0b10001, 0b10000, 0b10000, 0b10000, 0b10001, 0b01110}},
  {'D', {0b11100, 0b10010, 0b10001, 0b10001, 0b10001, 0b10010, 0b11100}},
  {'E', {0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b11111}},
  {'F', {0b11111, 0b10000, 0b10000, 0b11110, 0b10000, 0b10000, 0b10000}},
  {'G', {0b01110, 0b10001, 0b10000, 0b10111, 0b10001, 0b10001, 0b01111}},
  {'H', {0b10001, 0b10001, 0b10001, 0b11111, 0b10001, 0b10001, 0b10001}},
  {'I', {0b01110, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110}},
  {'J', {0b00111, 0b00010, 0b00010, 0b00010, 0b00010, 0b10010, 0b01100}},
  {'K', {0b10001, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010, 0b10001}},
  {'L', {0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b10000, 0b11111}},
  {'M', {0b10001, 0b11011, 0b10101, 0b10101, 0b10001, 0b10001, 0b10001}},
  {'N', {0b10001, 0b10001, 0b11001, 0b10101, 0b10011, 0b10001, 0b10001}},
  {'O', {0b01110, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110}},
  {'P', {0b11110, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000, 0b10000}},
  {'Q', {0b01110, 0b10001, 0b10001, 0b10001, 0b10101, 0b10010, 0b01101}},
  {'R', {0b11110, 0b10001, 0b10001, 0b11110, 0b10100, 0b10010, 0b10001}},
  {'S', {0b01111, 0b10000, 0b10000, 0b01110, 0b00001, 0b00001, 0b11110}},
  {'T', {0b11111, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100}},
  {'U', {0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01110}},
  {'V', {0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100}},
  {'W', {0b10001, 0b10001, 0b10001, 0b10101, 0b10101, 0b10101, 0b01010}},
  {'X', {0b10001, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001, 0b10001}},
  {'Y', {0b10001, 0b10001, 0b10001, 0b01010, 0b00100, 0b00100, 0b00100}},
  {'Z', {0b11111, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b11111}},
  {'a', {0b00000, 0b00000, 0b01110, 0b00001, 0b01111, 0b10001, 0b01111}},
  {'b', {0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b11110}},
  {'c', {0b00000, 0b00000, 0b01110, 0b10000, 0b10000, 0b10001, 0b01110}},
  {'d', {0b00001, 0b00001, 0b01101, 0b10011, 0b10001, 0b10001, 0b01111}},
  {'e', {0b00000, 0b00000, 0b01110, 0b10001, 0b11111, 0b10000, 0b01110}},
  {'f', {0b00110, 0b01001, 0b01000, 0b11100, 0b01000, 0b01000, 0b01000}},
  {'g', {0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110}},
  {'h', {0b10000, 0b10000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001}},
  {'i', {0b00100, 0b00000, 0b01100, 0b00100, 0b00100, 0b00100, 0b01110}},
  {'j', {0b00010, 0b00000, 0b00110, 0b00010, 0b00010, 0b10010, 0b01100}},
  {'k', {0b10000, 0b10000, 0b10010, 0b10100, 0b11000, 0b10100, 0b10010}},
  {'l', {0b01100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b01110}},
  {'m', {0b00000, 0b00000, 0b11010, 0b10101, 0b10101, 0b10001, 0b10001}},
  {'n', {0b00000, 0b00000, 0b10110, 0b11001, 0b10001, 0b10001, 0b10001}},
  {'o', {0b00000, 0b00000, 0b01110, 0b10001, 0b10001, 0b10001, 0b01110}},
  {'p', {0b11110, 0b10001, 0b10001, 0b10001, 0b11110, 0b10000, 0b10000}},
  {'q', {0b01111, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b00001}},
  {'r', {0b00000, 0b00000, 0b10110, 0b11001, 0b10000, 0b10000, 0b10000}},
  {'s', {0b00000, 0b00000, 0b01110, 0b10000, 0b01110, 0b00001, 0b11110}},
  {'t', {0b01000, 0b01000, 0b11100, 0b01000, 0b01000, 0b01001, 0b00110}},
  {'u', {0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b10011, 0b01101}},
  {'v', {0b00000, 0b00000, 0b10001, 0b10001, 0b10001, 0b01010, 0b00100}},
  {'w', {0b00000, 0b00000, 0b10001, 0b10001, 0b10101, 0b10101, 0b01010}},
  {'x', {0b00000, 0b00000, 0b10001, 0b01010, 0b00100, 0b01010, 0b10001}},
  {'y', {0b10001, 0b10001, 0b10001, 0b10001, 0b01111, 0b00001, 0b01110}},
  {'z', {0b00000, 0b00000, 0b11111, 0b00010, 0b00100, 0b01000, 0b11111}},
  {'.', {0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b01100}},
  {',', {0b00000, 0b00000, 0b00000, 0b00000, 0b01100, 0b00100, 0b01000}},
  {'-', {0b00000, 0b00000, 0b00000, 0b11111, 0b00000, 0b00000, 0b00000}},
  {'+', {0b00000, 0b00100, 0b00100, 0b11111, 0b00100, 0b00100, 0b00000}},
  {':', {0b00000, 0b01100, 0b01100, 0b00000, 0b01100, 0b01100, 0b00000}},
  {'/', {0b00000, 0b00001, 0b00010, 0b00100, 0b01000, 0b10000, 0b00000}},
  {'(', {0b00010, 0b00100, 0b01000, 0b01000, 0b01000, 0b00100, 0b00010}},
  {')', {0b01000, 0b00100, 0b00010, 0b00010, 0b00010, 0b00100, 0b01000}},
  {'[', {0b01110, 0b01000, 0b01000, 0b01000, 0b01000, 0b01000, 0b01110}},
  {']', {0b01110, 0b00010, 0b00010, 0b00010, 0b00010, 0b00010, 0b01110}},
  {'<', {0b00010, 0b00100, 0b01000, 0b10000, 0b01000, 0b00100, 0b00010}},
  {'>', {0b01000, 0b00100, 0b00010, 0b00001, 0b00010, 0b00100, 0b01000}},
  {'=', {0b00000, 0b00000, 0b11111, 0b00000, 0b11111, 0b00000, 0b00000}},
  {'%', {0b11000, 0b11001, 0b00010, 0b00100, 0b01000, 0b10011, 0b00011}},
  {'_', {0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b00000, 0b11111}},
  {'\'', {0b01100, 0b00100, 0b01000, 0b00000, 0b00000, 0b00000, 0b00000}},
  {'"', {0b01010, 0b01010, 0b01010, 0b00000, 0b00000, 0b00000, 0b00000}},
  {'!', {0b00100, 0b00100, 0b00100, 0b00100, 0b00100, 0b00000, 0b00100}},
  {'?', {0b01110, 0b10001, 0b00001, 0b00010, 0b00100, 0b00000, 0b00100}},
  {'*', {0b00000, 0b00100, 0b10101, 0b01110, 0b10101, 0b00100, 0b00000}},
  {'#', {0b01010, 0b01010, 0b11111, 0b01010, 0b11111, 0b01010, 0b01010}},
};
// clang-format on

// Letters with a descender (their rows above) are drawn 2 rows lower, below the baseline.
bool descends(char c) {
  return c == 'g' || c == 'p' || c == 'q' || c == 'y';
}

// Characters without a glyph are drawn as a hollow box.
constexpr Glyph kMissingGlyph{'?', {0b11111, 0b10001, 0b10001, 0b10001, 0b10001, 0b10001, 0b11111}};

const Glyph& glyph(char c) {
  for (const Glyph& g : kFont)
    if (g.c == c) return g;
  return kMissingGlyph;
}

constexpr int kTextScale = 2;
constexpr int kCharAdvance = 6 * kTextScale;  // 5 columns + 1 of spacing
constexpr int kTextHeight = 7 * kTextScale;

int text_width(const std::string& s) {
  return int(s.size()) * kCharAdvance - kTextScale;
}

// ------------------------------------------------------------------ the canvas

constexpr PlotRect kWholeImage{0, 0, kPlotWidth - 1, kPlotHeight - 1};
constexpr Rgb kInk{40, 40, 40};
constexpr Rgb kGrid{225, 225, 225};
constexpr Rgb kFrame{120, 120, 120};
constexpr Rgb kEventLine{170, 170, 170};
constexpr Rgb kLoadBand{212, 236, 212};

struct Canvas {
  std::vector<uint8_t> rgb = std::vector<uint8_t>(size_t(kPlotWidth) * kPlotHeight * 3, 255);

  void set(int x, int y, Rgb c, const PlotRect& clip = kWholeImage) {
    if (x < clip.x0 || x > clip.x1 || y < clip.y0 || y > clip.y1) return;
    uint8_t* p = &rgb[(size_t(y) * kPlotWidth + size_t(x)) * 3];
    p[0] = c.r, p[1] = c.g, p[2] = c.b;
  }

  void fill(const PlotRect& r, Rgb c) {
    for (int y = r.y0; y <= r.y1; y++)
      for (int x = r.x0; x <= r.x1; x++) set(x, y, c);
  }

  void frame(const PlotRect& r, Rgb c) {
    for (int x = r.x0; x <= r.x1; x++) set(x, r.y0, c), set(x, r.y1, c);
    for (int y = r.y0; y <= r.y1; y++) set(r.x0, y, c), set(r.x1, y, c);
  }

  // A horizontal or vertical line, every `period` pixels drawn for `on` of them.
  void hline(int x0, int x1, int y, Rgb c, int on = 1, int period = 1) {
    for (int x = x0; x <= x1; x++)
      if ((x - x0) % period < on) set(x, y, c);
  }
  void vline(int x, int y0, int y1, Rgb c, int on = 1, int period = 1) {
    for (int y = y0; y <= y1; y++)
      if ((y - y0) % period < on) set(x, y, c);
  }

  // A segment `thick` pixels wide, clipped to `clip` (Liang-Barsky, so points far outside cost
  // nothing), rasterised by sampling once per pixel of its longer extent.
  void line(double xa, double ya, double xb, double yb, Rgb c, const PlotRect& clip, int thick) {
    double t0 = 0, t1 = 1;
    const double dx = xb - xa, dy = yb - ya;
    const double p[4] = {-dx, dx, -dy, dy};
    const double q[4] = {xa - clip.x0, clip.x1 - xa, ya - clip.y0, clip.y1 - ya};
    for (int i = 0; i < 4; i++) {
      if (p[i] == 0) {
        if (q[i] < 0) return;
        continue;
      }
      const double t = q[i] / p[i];
      if (p[i] < 0)
        t0 = std::max(t0, t);
      else
        t1 = std::min(t1, t);
      if (t0 > t1) return;
    }
    const double x0 = xa + t0 * dx, y0 = ya + t0 * dy, x1 = xa + t1 * dx, y1 = ya + t1 * dy;
    const int n = std::max(1, int(std::ceil(std::max(std::fabs(x1 - x0), std::fabs(y1 - y0)))));
    for (int i = 0; i <= n; i++) {
      const int x = int(std::lround(x0 + (x1 - x0) * i / n));
      const int y = int(std::lround(y0 + (y1 - y0) * i / n));
      for (int oy = 0; oy < thick; oy++)
        for (int ox = 0; ox < thick; ox++) set(x + ox, y + oy, c, clip);
    }
  }

  // Text with its top-left corner at (x, y).
  void text(int x, int y, const std::string& s, Rgb c) {
    for (char ch : s) {
      const Glyph& g = glyph(ch);
      const int top = y + (descends(ch) ? 2 * kTextScale : 0);
      for (int row = 0; row < 7; row++)
        for (int col = 0; col < 5; col++)
          if (g.rows[row] & (0x10 >> col))
            fill({x + col * kTextScale, top + row * kTextScale, x + (col + 1) * kTextScale - 1,
                  top + (row + 1) * kTextScale - 1},
                 c);
      x += kCharAdvance;
    }
  }
};

// Writes the canvas to `path` through a temporary file and a rename.
void write_png(const Canvas& canvas, const std::string& path) {
  const fs::path parent = fs::path(path).parent_path();
  if (!parent.empty() && !fs::is_directory(parent))
    throw error(path, "cannot write the plot: directory " + parent.string() + " does not exist");
  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  image.width = kPlotWidth;
  image.height = kPlotHeight;
  image.format = PNG_FORMAT_RGB;
  if (!png_image_write_to_file(&image, tmp.c_str(), 0, canvas.rgb.data(), 0, nullptr)) {
    const std::string why = image.message;
    png_image_free(&image);
    std::remove(tmp.c_str());
    throw error(path, "cannot write the plot (libpng: " + why + ")");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw error(path, "cannot write the plot: " + ec.message());
  }
}

// ------------------------------------------------------------------ axes

struct Axis {
  double lo = 0, hi = 1;
  bool clipped = false;
  double cap = 0;  // the value above which lines leave the panel, when clipped
};

// The y rule of plot.h: [min, min(max, lo + 2 (p95 - lo))], padded by 5%.
Axis value_axis(std::vector<double> v) {
  Axis a;
  std::sort(v.begin(), v.end());
  double lo = v.front(), hi = v.back();
  const double p95 = v[size_t(0.95 * double(v.size() - 1))];
  const double cap = lo + 2 * (p95 - lo);
  if (hi > cap && cap > lo) {
    hi = cap;
    a.clipped = true;
    a.cap = cap;
  }
  if (!(hi - lo > 1e-12 * std::max(1.0, std::fabs(lo)))) {  // a flat curve
    const double half = std::fabs(lo) > 0 ? 0.05 * std::fabs(lo) : 0.5;
    lo -= half;
    hi += half;
  }
  const double pad = 0.05 * (hi - lo);
  a.lo = lo - pad;
  a.hi = hi + pad;
  return a;
}

// A 1-2-5 tick spacing giving about `target` ticks over the range.
double tick_step(double range, int target, double at_least) {
  const double raw = range / target;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  const double norm = raw / mag;
  const double step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  return std::max(step, at_least);
}

std::vector<double> ticks(double lo, double hi, double step) {
  std::vector<double> t;
  for (double k = std::ceil(lo / step - 1e-9); k * step <= hi + 1e-9 * step; k++)
    t.push_back(k * step);
  return t;
}

std::string tick_label(double v, double step) {
  if (std::fabs(v) < 1e-9 * step) v = 0;  // no "-0"
  char buf[64];
  const double a = std::fabs(v);
  if (a >= 1e6 || (a > 0 && a < 1e-4)) {
    std::snprintf(buf, sizeof buf, "%.3g", v);
  } else {
    const int decimals = std::clamp(int(-std::floor(std::log10(step) + 1e-9)), 0, 6);
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  }
  return buf;
}

std::string short_number(double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

// Maps data to pixels in one panel.
struct Frame {
  PlotRect r;
  double x_lo, x_hi, y_lo, y_hi;
  double x(double step) const { return r.x0 + (step - x_lo) / (x_hi - x_lo) * (r.x1 - r.x0); }
  double y(double v) const { return r.y1 - (v - y_lo) / (y_hi - y_lo) * (r.y1 - r.y0); }
};

void draw_y_axis(Canvas& c, const Frame& f, int target_ticks) {
  const double step = tick_step(f.y_hi - f.y_lo, target_ticks, 0);
  for (double v : ticks(f.y_lo, f.y_hi, step)) {
    const int y = int(std::lround(f.y(v)));
    c.hline(f.r.x0, f.r.x1, y, kGrid);
    const std::string s = tick_label(v, step);
    c.text(f.r.x0 - 8 - text_width(s), y - kTextHeight / 2, s, kInk);
  }
}

// Steps are whole numbers: the tick spacing is at least 1.
void draw_x_axis(Canvas& c, const Frame& f) {
  const double step = tick_step(f.x_hi - f.x_lo, 8, 1);
  for (double v : ticks(f.x_lo, f.x_hi, step)) {
    const int x = int(std::lround(f.x(v)));
    c.vline(x, f.r.y0, f.r.y1, kGrid);
    c.vline(x, f.r.y1, f.r.y1 + 4, kFrame);
    const std::string s = tick_label(v, step);
    const int left = std::clamp(x - text_width(s) / 2, 0, kPlotWidth - text_width(s));
    c.text(left, f.r.y1 + 7, s, kInk);
  }
}

void draw_events(Canvas& c, const Frame& f, const std::vector<double>& steps) {
  for (double s : steps) {
    if (s < f.x_lo || s > f.x_hi) continue;
    c.vline(int(std::lround(f.x(s))), f.r.y0, f.r.y1, kEventLine, 3, 6);
  }
}

// A polyline through (steps[i], values[i]), broken where a value is NaN. A point without a
// neighbour to join gets a marker even when `markers` is off.
void draw_series(Canvas& c, const Frame& f, const std::vector<double>& steps,
                 const std::vector<double>& values, Rgb colour, bool markers) {
  const auto valid = [&](size_t i) { return i < values.size() && !std::isnan(values[i]); };
  for (size_t i = 0; i < steps.size(); i++) {
    if (!valid(i)) continue;
    const double x = f.x(steps[i]), y = f.y(values[i]);
    if (i > 0 && valid(i - 1)) c.line(f.x(steps[i - 1]), f.y(values[i - 1]), x, y, colour, f.r, 2);
    if (markers || ((i == 0 || !valid(i - 1)) && !valid(i + 1)))
      for (int dy = -2; dy <= 2; dy++)
        for (int dx = -2; dx <= 2; dx++)
          c.set(int(std::lround(x)) + dx, int(std::lround(y)) + dy, colour, f.r);
  }
}

// The band between lo[i] and hi[i], filled column by column between consecutive points.
void draw_band(Canvas& c, const Frame& f, const std::vector<double>& steps,
               const std::vector<double>& lo, const std::vector<double>& hi, Rgb colour) {
  for (size_t i = 1; i < steps.size(); i++) {
    if (std::isnan(lo[i - 1]) || std::isnan(lo[i])) continue;
    const double xa = f.x(steps[i - 1]), xb = f.x(steps[i]);
    for (int x = int(std::ceil(xa)); x <= int(std::floor(xb)); x++) {
      const double t = xb > xa ? (x - xa) / (xb - xa) : 0;
      const double top = f.y(hi[i - 1] + t * (hi[i] - hi[i - 1]));
      const double bottom = f.y(lo[i - 1] + t * (lo[i] - lo[i - 1]));
      const int y0 = std::max(f.r.y0, int(std::lround(top)));
      const int y1 = std::min(f.r.y1, int(std::lround(bottom)));
      c.vline(x, y0, y1, colour);
    }
  }
}

struct LegendEntry {
  std::string label;
  Rgb colour;
  bool band;
};

void draw_legend(Canvas& c, const PlotRect& r, const std::vector<LegendEntry>& entries) {
  int width = 0;
  for (const LegendEntry& e : entries) width = std::max(width, text_width(e.label));
  const int row = kTextHeight + 6;
  const PlotRect box{r.x1 - 10 - (width + 46), r.y0 + 10, r.x1 - 10,
                     r.y0 + 10 + int(entries.size()) * row + 8};
  c.fill(box, kColourBackground);
  c.frame(box, kFrame);
  int y = box.y0 + 6;
  for (const LegendEntry& e : entries) {
    const int mid = y + kTextHeight / 2;
    if (e.band)
      c.fill({box.x0 + 8, mid - 5, box.x0 + 34, mid + 5}, e.colour);
    else
      c.fill({box.x0 + 8, mid - 1, box.x0 + 34, mid}, e.colour);
    c.text(box.x0 + 40, y, e.label, kInk);
    y += row;
  }
}

// ------------------------------------------------------------------ the two panels

struct LossSeries {
  std::vector<double> steps, main, loss, val_steps, val;
  bool draw_loss = false;
};

LossSeries loss_series(const TrainingLog& log) {
  LossSeries s;
  for (const TrainingLog::Train& t : log.train) {
    s.steps.push_back(t.step);
    // "main" is the next-token loss; without it, "loss" is the only curve.
    s.main.push_back(std::isnan(t.main) ? t.loss : t.main);
    s.loss.push_back(t.loss);
    if (!std::isnan(t.main) && !std::isnan(t.loss) &&
        std::fabs(t.loss - t.main) > 1e-9 * std::max(1.0, std::fabs(t.main)))
      s.draw_loss = true;
  }
  for (const TrainingLog::Val& v : log.val) {
    s.val_steps.push_back(v.step);
    s.val.push_back(v.loss);
  }
  return s;
}

// A panel with nothing to plot: its x axis, frame, `message` inside and the title above.
void draw_empty_panel(Canvas& c, const PlotRect& r, double x_lo, double x_hi,
                      const std::string& message, const std::string& title) {
  draw_x_axis(c, Frame{r, x_lo, x_hi, 0, 1});
  c.frame(r, kFrame);
  c.text(r.x0 + 20, (r.y0 + r.y1) / 2 - kTextHeight / 2, message, kInk);
  c.text(r.x0, r.y0 - 30, title, kInk);
}

// The panel's frame for values on axis `a`: y axis with about `ticks` ticks, x axis, events.
Frame draw_panel_axes(Canvas& c, const PlotRect& r, double x_lo, double x_hi, const Axis& a,
                      int ticks, const std::vector<double>& event_steps) {
  const Frame f{r, x_lo, x_hi, a.lo, a.hi};
  draw_y_axis(c, f, ticks);
  draw_x_axis(c, f);
  draw_events(c, f, event_steps);
  return f;
}

// Frame, legend and the title above (noting a clipped axis).
void finish_panel(Canvas& c, const PlotRect& r, const std::vector<LegendEntry>& legend,
                  const Axis& a, std::string title) {
  c.frame(r, kFrame);
  draw_legend(c, r, legend);
  if (a.clipped) title += " (clipped above " + short_number(a.cap) + ")";
  c.text(r.x0, r.y0 - 30, title, kInk);
}

void draw_loss_panel(Canvas& c, const TrainingLog& log, double x_lo, double x_hi,
                     PlotSummary& summary) {
  const LossSeries s = loss_series(log);
  std::vector<double> values;
  for (double v : s.main)
    if (!std::isnan(v)) values.push_back(v);
  if (s.draw_loss)
    for (double v : s.loss)
      if (!std::isnan(v)) values.push_back(v);
  for (double v : s.val)
    if (!std::isnan(v)) values.push_back(v);
  const PlotRect& r = kLossPanel;
  if (values.empty())
    return draw_empty_panel(c, r, x_lo, x_hi, "no loss values in this log", "loss");
  const Axis a = value_axis(values);
  summary.loss_lo = a.lo, summary.loss_hi = a.hi, summary.loss_clipped = a.clipped;
  const Frame f = draw_panel_axes(c, r, x_lo, x_hi, a, 6, log.event_steps);
  if (s.draw_loss) draw_series(c, f, s.steps, s.loss, kColourTrainLoss, false);
  draw_series(c, f, s.steps, s.main, kColourTrainMain, false);
  draw_series(c, f, s.val_steps, s.val, kColourVal, true);
  std::vector<LegendEntry> legend;
  if (!s.steps.empty())
    legend.push_back({s.draw_loss ? "train (main)" : "train", kColourTrainMain, false});
  if (s.draw_loss) legend.push_back({"train (total)", kColourTrainLoss, false});
  if (!s.val_steps.empty()) legend.push_back({"val", kColourVal, false});
  finish_panel(c, r, legend, a, "loss");
}

void draw_load_panel(Canvas& c, const TrainingLog& log, double x_lo, double x_hi,
                     PlotSummary& summary) {
  std::vector<double> steps, lo, mean, hi, values{1.0};
  for (const TrainingLog::Train& t : log.train) {
    double sum = 0, mn = kNaN, mx = kNaN;
    int n = 0;
    for (double v : t.expert_load) {
      if (std::isnan(v)) continue;
      sum += v, n++;
      mn = std::isnan(mn) ? v : std::min(mn, v);
      mx = std::isnan(mx) ? v : std::max(mx, v);
      values.push_back(v);
    }
    summary.moe_layers = std::max(summary.moe_layers, t.expert_load.size());
    steps.push_back(t.step);
    lo.push_back(mn);
    hi.push_back(mx);
    mean.push_back(n > 0 ? sum / n : kNaN);
  }
  const PlotRect& r = kBalancePanel;
  const std::string title = "expert load: max/mean tokens per expert";
  if (values.size() == 1)
    return draw_empty_panel(c, r, x_lo, x_hi, "no MoE layers in this log", title);
  const Axis a = value_axis(values);
  summary.load_lo = a.lo, summary.load_hi = a.hi, summary.load_clipped = a.clipped;
  const Frame f = draw_panel_axes(c, r, x_lo, x_hi, a, 4, log.event_steps);
  draw_band(c, f, steps, lo, hi, kLoadBand);
  c.hline(r.x0, r.x1, int(std::lround(f.y(1.0))), kFrame, 4, 8);
  draw_series(c, f, steps, mean, kColourLoadMean, false);
  draw_series(c, f, steps, hi, kColourLoadMax, false);
  finish_panel(c, r,
               {{"mean over layers", kColourLoadMean, false},
                {"max over layers", kColourLoadMax, false},
                {"min..max", kLoadBand, true}},
               a, title);
}

// ------------------------------------------------------------------ the GRPO panels

// One panel of series over the GRPO steps: axes from every finite value, a legend, the title.
void draw_grpo_panel(Canvas& c, const PlotRect& r, const TrainingLog& log, double x_lo, double x_hi,
                     const std::vector<std::pair<double TrainingLog::Grpo::*, LegendEntry>>& series,
                     const std::string& title, double& lo, double& hi) {
  std::vector<double> steps, values;
  for (const TrainingLog::Grpo& g : log.grpo) {
    steps.push_back(g.step);
    for (const auto& s : series)
      if (!std::isnan(g.*s.first)) values.push_back(g.*s.first);
  }
  if (values.empty()) return draw_empty_panel(c, r, x_lo, x_hi, "no values in this log", title);
  const Axis a = value_axis(values);
  lo = a.lo, hi = a.hi;
  const Frame f = draw_panel_axes(c, r, x_lo, x_hi, a, r.y1 - r.y0 > 200 ? 6 : 4, log.event_steps);
  std::vector<LegendEntry> legend;
  for (const auto& s : series) {
    std::vector<double> v;
    for (const TrainingLog::Grpo& g : log.grpo) v.push_back(g.*s.first);
    draw_series(c, f, steps, v, s.second.colour, false);
    legend.push_back(s.second);
  }
  finish_panel(c, r, legend, a, title);
}

void draw_grpo(Canvas& c, const TrainingLog& log, double x_lo, double x_hi, PlotSummary& summary) {
  using G = TrainingLog::Grpo;
  draw_grpo_panel(c, kLossPanel, log, x_lo, x_hi,
                  {{&G::reward, {"reward", kColourReward, false}},
                   {&G::accuracy, {"accuracy", kColourAccuracy, false}},
                   {&G::format, {"format", kColourFormat, false}}},
                  "reward, accuracy and format rate", summary.loss_lo, summary.loss_hi);
  draw_grpo_panel(c, kBalancePanel, log, x_lo, x_hi,
                  {{&G::length, {"mean length", kColourLength, false}}},
                  "completion length (tokens)", summary.load_lo, summary.load_hi);
}

}  // namespace

TrainingLog read_training_log(const std::string& log_path) {
  if (fs::is_directory(log_path)) throw error(log_path, "is a directory, not a training log");
  std::ifstream in(log_path, std::ios::binary);
  if (!in) throw error(log_path, std::string("cannot open: ") + std::strerror(errno));
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(std::move(line));
  }
  size_t last = lines.size();
  while (last > 0 && blank(lines[last - 1])) last--;
  TrainingLog log;
  for (size_t i = 0; i < last; i++) {
    if (blank(lines[i])) continue;
    const std::string where = log_path + ":" + std::to_string(i + 1);
    const json j = json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() && i + 1 == last) {
      std::fprintf(stderr, "whale plot: %s: skipping the malformed last line (a run cut short?)\n",
                   where.c_str());
      log.skipped_last_line = true;
      continue;
    }
    if (j.is_discarded()) throw error(where, "malformed JSON: " + snippet(lines[i]));
    if (!j.is_object()) throw error(where, "not a JSON object: " + snippet(lines[i]));
    read_record(j, where, log);
  }
  if (log.train.empty() && log.val.empty() && log.grpo.empty())
    throw error(log_path, last == 0 ? "the training log is empty"
                                    : "no \"train\", \"val\" or \"grpo\" records in the "
                                      "training log");
  return log;
}

PlotSummary plot_training_log(const std::string& log_path, const std::string& png_path) {
  const TrainingLog log = read_training_log(log_path);
  PlotSummary summary;
  summary.train_points = log.train.size();
  summary.val_points = log.val.size();
  summary.skipped_last_line = log.skipped_last_line;
  const bool grpo = log.train.empty() && log.val.empty();
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  for (const auto& t : log.train) x_lo = std::min(x_lo, t.step), x_hi = std::max(x_hi, t.step);
  for (const auto& v : log.val) x_lo = std::min(x_lo, v.step), x_hi = std::max(x_hi, v.step);
  if (grpo)
    for (const auto& g : log.grpo) x_lo = std::min(x_lo, g.step), x_hi = std::max(x_hi, g.step);
  if (x_hi == x_lo) x_lo -= 1, x_hi += 1;
  summary.step_lo = x_lo, summary.step_hi = x_hi;

  Canvas c;
  if (grpo) {
    summary.grpo_points = log.grpo.size();
    draw_grpo(c, log, x_lo, x_hi, summary);
  } else {
    draw_loss_panel(c, log, x_lo, x_hi, summary);
    draw_load_panel(c, log, x_lo, x_hi, summary);
  }
  const std::string xlabel = "step";
  c.text((kBalancePanel.x0 + kBalancePanel.x1 - text_width(xlabel)) / 2, kPlotHeight - 22, xlabel,
         kInk);
  write_png(c, png_path);
  return summary;
}

int run_plot_command(const std::string& log_path, const std::string& out_png) {
  std::string out = out_png;
  if (out.empty()) {
    const TrainingLog log = read_training_log(log_path);
    const bool grpo = log.train.empty() && log.val.empty();
    out = (fs::path(log_path).parent_path() / (grpo ? "reward.png" : "loss.png")).string();
  }
  std::error_code ec;
  if (fs::exists(out) && fs::equivalent(out, log_path, ec))
    throw error(out, "the plot would overwrite the training log");
  const PlotSummary s = plot_training_log(log_path, out);
  if (s.grpo_points > 0) {
    std::printf("whale plot: wrote %s (%zu GRPO steps)\n", out.c_str(), s.grpo_points);
    return 0;
  }
  std::printf("whale plot: wrote %s (%zu train points, %zu val points, %zu MoE layers)\n",
              out.c_str(), s.train_points, s.val_points, s.moe_layers);
  return 0;
}

}  // namespace whale::train
