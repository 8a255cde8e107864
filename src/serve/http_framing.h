// HTTP/1.x message framing for the server's front end (serve/http_front.h): where a request in a
// byte stream ends, what its head says about the connection, and the heads the front passes on.
// Pure functions over bytes, no sockets, so they are unit tested and fuzzed on their own.
//
// The front reads a whole request (head and body) before anything else sees it, so a request is
// only "complete" here once its last body byte is in the buffer: Content-Length bytes, or a
// chunked body up to its last chunk and trailer. Everything the front would have to guess about
// is an error with the status RFC 9112 asks for: both Content-Length and Transfer-Encoding (a
// request-smuggling shape), a Content-Length that is not one number, an unknown transfer coding,
// an HTTP version other than 1.0/1.1, a head or body over its bound.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace whale::serve {

enum class FrameState { kNeedMore, kComplete, kError };

struct RequestFrame {
  FrameState state = FrameState::kNeedMore;
  bool head_done = false;        // the head (request line, fields, blank line) is all there
  size_t head_len = 0;           // bytes of the head, blank line included (when head_done)
  size_t total_len = 0;          // head + body (when kComplete)
  bool keep_alive = true;        // HTTP/1.1 unless "Connection: close"; HTTP/1.0 only if asked
  bool expect_continue = false;  // "Expect: 100-continue"
  bool head_method = false;      // a HEAD request (its response has no body)
  bool http10 = false;           // an HTTP/1.0 request
  std::string method, target;    // from the request line (when head_done and no error)
  int status = 0;                // kError: the HTTP status to answer with
  std::string error;             // kError: what is wrong, for the error body
};

// Frames the request at the start of `data` (leading empty lines are skipped and counted in
// head_len). `max_head` bounds the head (431 past it), `max_body` the body (413 past it).
RequestFrame frame_request(std::string_view data, size_t max_head, size_t max_body);

// The request head as the front passes it to the backend: the same request line and fields in
// CRLF lines, less the hop-by-hop fields (Connection, Keep-Alive, Expect, Proxy-Connection, TE,
// Upgrade), plus "Connection: close" (the backend serves one request per connection). `head` is
// head_len bytes of a framed request.
std::string backend_request_head(std::string_view head);

// A response head from the backend (status line to blank line), as the client gets it. When the
// client keeps the connection (`keep_alive`) and the response ends by itself (Content-Length, a
// chunked body, a bodiless status, or a HEAD request), the backend's "Connection: close" is dropped
// (HTTP/1.0 clients get "Connection: keep-alive") and *close_after is false; otherwise the head
// says "Connection: close" and *close_after is true. Returns "" for a head that is not HTTP.
std::string client_response_head(std::string_view head, bool keep_alive, bool http10,
                                 bool head_method, bool* close_after);

// Where a response head ends in `data` (bytes up to and including its blank line), or 0 when it
// has not all arrived.
size_t response_head_end(std::string_view data);

// A complete small response the front makes itself (errors: 400, 408, 413, 431, 501, 502, 503,
// 505): an OpenAI-style JSON error body, "Connection: close".
std::string front_error_response(int status, std::string_view message, std::string_view code);

}  // namespace whale::serve
