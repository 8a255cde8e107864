#include "run/progress.h"

#include <unistd.h>

#include <cstdio>

namespace whale {

ProgressBar::ProgressBar(std::string label, size_t total, bool enabled)
    : label_(std::move(label)), total_(total), enabled_(enabled && isatty(STDERR_FILENO)) {
  start_ = last_ = std::chrono::steady_clock::now();
}

void ProgressBar::update(size_t done) {
  if (!enabled_ || finished_) return;
  auto now = std::chrono::steady_clock::now();
  if (done < total_ && now - last_ < std::chrono::milliseconds(100)) return;
  last_ = now;
  const double frac = total_ ? double(done) / double(total_) : 1.0;
  const int width = 30, filled = int(frac * width);
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double mb = double(done) / 1e6;
  std::fprintf(stderr, "\r%s [%.*s%*s] %5.1f%%  %.0f MB  %.0f MB/s", label_.c_str(), filled,
               "##############################", width - filled, "", frac * 100.0, mb,
               secs > 0 ? mb / secs : 0.0);
  std::fflush(stderr);
}

void ProgressBar::finish() {
  if (!enabled_ || finished_) return;
  update(total_);
  std::fprintf(stderr, "\n");
  finished_ = true;
}

}  // namespace whale
