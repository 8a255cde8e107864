#include "run/stop.h"

#include <algorithm>
#include <utility>

namespace whale {

namespace {

// Bytes in the UTF-8 sequence that starts with lead byte `c`; 0 for a continuation byte or a
// byte that cannot start a sequence.
size_t utf8_sequence_length(unsigned char c) {
  if (c < 0x80) return 1;
  if (c >= 0xc2 && c <= 0xdf) return 2;
  if (c >= 0xe0 && c <= 0xef) return 3;
  if (c >= 0xf0 && c <= 0xf4) return 4;
  return 0;
}

// Length of an incomplete UTF-8 sequence at the end of `s` (0 if the end is complete or the
// bytes there could never become valid UTF-8 anyway).
size_t incomplete_utf8_tail(std::string_view s) {
  const size_t max_back = std::min<size_t>(3, s.size());
  for (size_t back = 1; back <= max_back; ++back) {
    const unsigned char c = static_cast<unsigned char>(s[s.size() - back]);
    if ((c & 0xc0) == 0x80) continue;  // continuation byte: keep looking for the lead byte
    const size_t len = utf8_sequence_length(c);
    return len > back ? back : 0;
  }
  return 0;
}

}  // namespace

StopMatcher::StopMatcher(std::vector<std::string> stops) {
  for (std::string& s : stops) {
    if (!s.empty()) stops_.push_back(std::move(s));
  }
}

void StopMatcher::reset() {
  pending_.clear();
  stopped_ = false;
  matched_.clear();
}

size_t StopMatcher::find_stop() const {
  size_t best_pos = std::string::npos, best_end = std::string::npos;
  for (const std::string& s : stops_) {
    const size_t pos = pending_.find(s);  // the first occurrence of s also ends first
    if (pos == std::string::npos) continue;
    const size_t end = pos + s.size();
    if (end < best_end || (end == best_end && pos < best_pos)) {
      best_pos = pos;
      best_end = end;
    }
  }
  return best_pos;
}

size_t StopMatcher::partial_suffix() const {
  const std::string_view text = pending_;
  size_t longest = 0;
  for (const std::string& s : stops_) {
    const size_t max_len = std::min(text.size(), s.size() - 1);
    for (size_t len = max_len; len > longest; --len) {
      if (text.substr(text.size() - len) == std::string_view(s).substr(0, len)) {
        longest = len;
        break;
      }
    }
  }
  return longest;
}

StopMatcher::Result StopMatcher::push(std::string_view text) {
  if (stopped_) return {"", true};
  pending_.append(text);
  const size_t stop_pos = find_stop();
  if (stop_pos != std::string::npos) {
    for (const std::string& s : stops_)
      if (matched_.empty() && pending_.compare(stop_pos, s.size(), s) == 0) matched_ = s;
    Result r{pending_.substr(0, stop_pos), true};
    pending_.clear();
    stopped_ = true;
    return r;
  }
  // Every byte before the longest partial match can no longer start a stop string.
  const size_t hold = std::max(partial_suffix(), incomplete_utf8_tail(pending_));
  Result r{pending_.substr(0, pending_.size() - hold), false};
  pending_.erase(0, pending_.size() - hold);
  return r;
}

std::string StopMatcher::flush() {
  std::string out;
  out.swap(pending_);
  return out;
}

}  // namespace whale
