// The front end of `whale serve` that slow clients cannot starve.
//
// cpp-httplib (the routes, serve/server.cpp) gives every connection one worker thread for as long
// as the connection lives, and waits up to its read timeout for each request: a few dozen clients
// that send half a request, or trickle a byte a second, hold every thread and stall everyone else.
// So clients never talk to httplib directly. This front owns the public socket and runs one event
// loop (libevent 2.1, Debian's libevent-dev: a maintained loop with buffered sockets, timers and a
// listener, so this file only holds the HTTP policy) that
//   - holds any number of connections up to `max_connections` at the cost of a few KB each, and
//     answers connections past it with 503;
//   - reads each request whole, head and body, under deadlines (header_timeout from the request's
//     first byte, or from accept for a new connection; body_timeout from the end of the head); a
//     request not done in time gets 408 and the connection is closed;
//   - only then hands it to httplib on a fresh loopback connection ("Connection: close"), so an
//     httplib thread is only ever busy with a complete request;
//   - relays the response back as it comes (streamed SSE included), keeps the client's connection
//     alive when the response allows it, and closes the backend connection when the client goes
//     away, which is how a handler notices a disconnect (serve/server.cpp peer_closed);
//   - answers malformed framing itself (serve/http_framing.h): 400, 413, 431, 501, 505;
//   - answers GET /health itself: a liveness probe then needs no worker thread, and says within
//     milliseconds that the process serves connections, however busy the workers are.
// A kept-alive connection with no request for idle_timeout is closed; a client that reads none of
// its response for write_timeout is dropped (and the backend connection with it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace whale::serve {

struct FrontOptions {
  std::string host = "127.0.0.1";
  int port = 8080;               // 0: any free port
  int backend_port = 0;          // the HTTP server behind the front, on 127.0.0.1
  int max_connections = 4096;    // client connections held at once; the next ones get 503
  double header_timeout_s = 10;  // request line and fields must arrive within this
  double body_timeout_s = 60;    // the body must arrive within this after the head
  double idle_timeout_s = 30;    // a kept-alive connection waiting for its next request
  double write_timeout_s = 60;   // a client that accepts none of its response for this long
  size_t max_head = 64 << 10;    // bytes; larger heads get 431
  size_t max_body = 1 << 20;     // bytes; larger bodies get 413 before they are read
};

struct FrontStats {
  int64_t open = 0;            // client connections held now
  int64_t accepted = 0;        // all connections accepted
  int64_t rejected = 0;        // answered 503 because max_connections were open
  int64_t timeouts = 0;        // requests not received within their deadline (408)
  int64_t bad_requests = 0;    // framing errors answered by the front (4xx)
  int64_t backend_errors = 0;  // the server behind could not be reached or answered nothing (502)
  int64_t health = 0;          // GET/HEAD /health, answered by the front itself
};

class HttpFront {
 public:
  explicit HttpFront(FrontOptions opt);
  ~HttpFront();
  HttpFront(const HttpFront&) = delete;
  HttpFront& operator=(const HttpFront&) = delete;

  // Binds host:port; returns the bound port. Throws std::runtime_error when the address is
  // unusable.
  int bind();
  // Runs the event loop until stop(). SIGPIPE is ignored from here on (a write to a client that
  // went away must fail, not kill the process).
  void run();
  // Ends run(); callable from any thread, also before run() started.
  void stop();
  FrontStats stats() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace whale::serve
