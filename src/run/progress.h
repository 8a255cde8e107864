// A one-line progress bar on stderr, drawn only when stderr is a terminal.
#pragma once

#include <chrono>
#include <cstddef>
#include <string>

namespace whale {

class ProgressBar {
 public:
  // `enabled` false draws nothing; true draws only if stderr is a TTY.
  ProgressBar(std::string label, size_t total, bool enabled);
  void update(size_t done);
  void finish();

 private:
  std::string label_;
  size_t total_;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_, last_;
};

}  // namespace whale
