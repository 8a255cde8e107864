// libFuzzer target: arbitrary bytes as what a client sends to the server's front end, and as what
// the backend answers (serve/http_framing.h). Framing never claims bytes that are not there; a
// complete request frames the same alone and with bytes after it, its strict prefixes need more,
// and the head passed to the backend frames to the same body; a rewritten response head is one
// whole head.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "serve/http_framing.h"

namespace {

void check(bool ok) {
  if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace whale::serve;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  constexpr size_t kHead = 4096, kBody = 8192;
  const RequestFrame f = frame_request(in, kHead, kBody);
  if (f.state == FrameState::kError) check(f.status >= 400 && f.status < 600 && !f.error.empty());
  if (f.head_done) check(f.head_len <= size && f.head_len <= kHead);
  if (f.state == FrameState::kComplete) {
    check(f.head_done && f.head_len <= f.total_len && f.total_len <= size);
    const std::string_view req = in.substr(0, f.total_len);
    const RequestFrame again = frame_request(req, kHead, kBody);
    check(again.state == FrameState::kComplete && again.total_len == f.total_len);
    for (size_t cut : {f.total_len - 1, f.total_len / 2, f.head_len})
      if (cut < f.total_len)
        check(frame_request(req.substr(0, cut), kHead, kBody).state == FrameState::kNeedMore);
    // The backend's head: the same request and body, one request per connection.
    const std::string back =
        backend_request_head(req.substr(0, f.head_len)) + std::string(req.substr(f.head_len));
    const RequestFrame b = frame_request(back, 2 * kHead + 64, kBody);
    check(b.state == FrameState::kComplete && b.total_len == back.size() && !b.keep_alive);
    check(b.total_len - b.head_len == f.total_len - f.head_len);
    check(!b.expect_continue);
  }
  // The same bytes as a response head from the backend.
  const size_t end = response_head_end(in);
  check(end <= size);
  if (end > 0) {
    for (int flags = 0; flags < 8; ++flags) {
      bool close_after = false;
      const std::string out =
          client_response_head(in.substr(0, end), flags & 1, flags & 2, flags & 4, &close_after);
      if (!out.empty()) check(response_head_end(out) == out.size());
      if (!(flags & 1) && !out.empty()) check(close_after);
    }
  }
  return 0;
}
