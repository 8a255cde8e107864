// The HTTP front end of `whale serve`: OpenAI-compatible routes over cpp-httplib, glued to the
// engine (serve/engine.h) through serve/api.h.
//
//   GET  /                     the chat page (serve/page/index.html, compiled in)
//   GET  /health               {"status":"ok"}
//   GET  /v1/models            the one model, named after its directory
//   POST /v1/chat/completions  chat, streamed (SSE) or not; reasoning_content for R1 templates
//   POST /v1/completions       plain text completion, FIM with `suffix`
//   (both also under /beta/)
//   POST /anthropic/v1/messages  the Anthropic Messages API
//   GET  /metrics              Prometheus text format
//
// Clients talk to an event-loop front end (serve/http_front.h) that reads each request whole under
// deadlines and bounds the connections, then passes it to httplib on a loopback connection.
// Each request runs on an HTTP worker thread that renders and tokenizes the prompt, submits a Job,
// and relays its text; the engine thread does all model work. A client that disconnects is
// noticed within ~100 ms (a peek at its socket, or a failed write) and its job is cancelled.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#include "formats/tokenizer.h"
#include "run/chat.h"
#include "serve/api.h"
#include "serve/engine.h"
#include "serve/http_front.h"

namespace httplib {
class Server;
struct Request;
struct Response;
}  // namespace httplib

namespace whale::serve {

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                    // 0: any free port
  std::string api_key;                // "" = no authentication
  size_t max_body = 1u << 20;         // bytes; larger bodies get 413
  int64_t default_max_tokens = 4096;  // when the request gives none (clamped to the context)
  int http_threads = 64;
  // The front end slow clients cannot starve (serve/http_front.h).
  int max_connections = 4096;    // client connections at once; more get 503
  double header_timeout_s = 10;  // a request's head must arrive within this (else 408)
  double body_timeout_s = 60;    // its body within this after the head (else 408)
  double idle_timeout_s = 30;    // a kept-alive connection without a request is closed
  std::string model_id;          // name in /v1/models
  // V3.1 models: thinking mode for requests that do not choose (see GenRequest::thinking).
  bool thinking = false;
};

class Server {
 public:
  Server(Engine& engine, const Tokenizer& tok, ServerOptions opt);
  ~Server();

  // Binds; returns the bound port (throws std::runtime_error when the address is unusable).
  int bind();
  // Serves until stop(). Call bind() first.
  void listen();
  void stop();

  // Prometheus text for /metrics.
  std::string metrics() const;

 private:
  void routes();
  struct Prepared {
    std::shared_ptr<Job> job;
    std::string echo;          // completions: the prompt text to echo
    bool use_tools = false;    // chat output goes through the tool-call parser
    bool reasoning = false;    // chat output starts inside an R1 think block
    std::string forced_calls;  // the calls section the prompt opened (a forced call)
  };
  Prepared prepare(const GenRequest& g, bool chat);
  void submit(const std::shared_ptr<Job>& job, httplib::Response& res);
  void client_gone(Job& job);  // cancels a job whose client went away and counts it
  // POST /anthropic/v1/messages (serve/anthropic.h); throws ApiError.
  void handle_anthropic(const httplib::Request& req, httplib::Response& res);
  // POST /v1/chat/completions (chat) and /v1/completions; throws ApiError.
  void handle(const httplib::Request& req, httplib::Response& res, bool chat);
  void count(const std::string& endpoint, int status);

  Engine& engine_;
  const Tokenizer& tok_;
  ServerOptions opt_;
  ChatStyle style_;
  std::unique_ptr<httplib::Server> http_;  // the routes, on 127.0.0.1:backend_port_
  std::unique_ptr<HttpFront> front_;       // the public socket, relaying to http_
  int backend_port_ = 0;
  int64_t started_;
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, int64_t> requests_;  // (endpoint, status) -> count
  int64_t disconnects_ = 0;
};

}  // namespace whale::serve
