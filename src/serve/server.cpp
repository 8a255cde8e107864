#include "serve/server.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <httplib.h>
#include <poll.h>
#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <optional>
#include <random>

#include "serve/anthropic.h"
#include "serve/api.h"
#include "serve/page.h"

namespace whale::serve {

using json = nlohmann::json;
using namespace std::chrono_literals;

namespace {

// ---- noticing a client that went away -------------------------------------------------------
// httplib 0.11 gives a handler no way to ask whether its client is still there, and a streaming
// write only fails once the peer has reset the connection. So the handler finds its own socket
// (the one whose peer is the request's remote address and port and whose local port is ours)
// and peeks at it: a readable socket with nothing to read means the peer closed it.

uint16_t port_of(const sockaddr_storage& a) {
  if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port);
  if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port);
  return 0;
}

int find_client_socket(int remote_port, int local_port) {
  DIR* d = opendir("/proc/self/fd");
  if (!d) return -1;
  int found = -1;
  while (dirent* e = readdir(d)) {
    const int fd = std::atoi(e->d_name);
    if (fd <= 2) continue;
    sockaddr_storage peer{}, self{};
    socklen_t pl = sizeof peer, sl = sizeof self;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&self), &sl) != 0) continue;
    if (port_of(peer) == remote_port && port_of(self) == local_port) {
      found = fd;
      break;
    }
  }
  closedir(d);
  return found;
}

bool peer_closed(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  char c;
  return (p.revents & POLLIN) && recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

std::string random_id(const char* prefix) {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)rng());
  return std::string(prefix) + buf;
}

uint64_t random_seed() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng();
}

// The fill-in-the-middle tokens in prompt order, where the tokenizer has them: DeepSeek's
// <｜fim▁begin｜> prefix <｜fim▁hole｜> suffix <｜fim▁end｜> or Qwen's
// <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|>; the model writes the middle.
std::optional<std::array<int32_t, 3>> fim_tokens(const Tokenizer& tok) {
  for (const auto& names :
       {std::array<const char*, 3>{"<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"},
        std::array<const char*, 3>{"<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"}}) {
    const auto a = tok.token_id(names[0]), b = tok.token_id(names[1]), c = tok.token_id(names[2]);
    if (a && b && c) return std::array<int32_t, 3>{*a, *b, *c};
  }
  return std::nullopt;
}

std::vector<LogprobEntry> logprob_entries(const Tokenizer& tok,
                                          const std::vector<TokenLogprob>& lps) {
  std::vector<LogprobEntry> out;
  for (const TokenLogprob& lp : lps) {
    LogprobEntry e{tok.token_text(lp.id), lp.logprob, {}};
    for (const auto& [id, v] : lp.top) e.top.emplace_back(tok.token_text(id), v);
    out.push_back(std::move(e));
  }
  return out;
}

Usage usage_of(const Job& job) {
  return Usage{job.prompt_tokens, job.completion_tokens, job.cached_tokens, job.reasoning_tokens};
}

// A whole chat output as both APIs return it: the reasoning (R1 chats), the answer text and the
// tool calls read from it (`forced_calls`: the calls section the prompt opened).
struct ChatAnswer {
  std::optional<std::string> reasoning;
  std::string content;
  std::vector<ToolCall> calls;
};
ChatAnswer split_answer(const std::string& text, const GenRequest& g, bool reasoning,
                        bool use_tools, const std::string& forced_calls,
                        const std::string& call_base) {
  ChatAnswer a;
  a.content = text;
  if (reasoning) {
    ReasoningSplit sp = split_reasoning(text);
    a.reasoning = std::move(sp.reasoning);
    a.content = std::move(sp.content);
  }
  if (use_tools) {
    ParsedCalls pc = parse_tool_calls(forced_calls + a.content, call_base);
    a.content = std::move(pc.content);
    a.calls = std::move(pc.calls);
    if (!g.parallel_tool_calls && a.calls.size() > 1) a.calls.resize(1);
  }
  return a;
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status;
  res.set_content(e.to_json().dump(), "application/json");
}

}  // namespace

Server::Server(Engine& engine, const Tokenizer& tok, ServerOptions opt)
    : engine_(engine),
      tok_(tok),
      opt_(std::move(opt)),
      style_(detect_chat_style(tok.chat_template())),
      http_(std::make_unique<httplib::Server>()),
      started_(std::time(nullptr)) {
  routes();
}

Server::~Server() = default;

int Server::bind() {
  backend_port_ = http_->bind_to_any_port("127.0.0.1");
  if (backend_port_ <= 0) throw std::runtime_error("cannot listen on 127.0.0.1 (loopback)");
  FrontOptions fo;
  fo.host = opt_.host;
  fo.port = opt_.port;
  fo.backend_port = backend_port_;
  fo.max_connections = opt_.max_connections;
  fo.header_timeout_s = opt_.header_timeout_s;
  fo.body_timeout_s = opt_.body_timeout_s;
  fo.idle_timeout_s = opt_.idle_timeout_s;
  fo.max_body = opt_.max_body;
  front_ = std::make_unique<HttpFront>(fo);
  opt_.port = front_->bind();
  return opt_.port;
}

void Server::listen() {
  if (!front_) throw std::logic_error("Server::listen() before bind()");
  std::atomic<bool> routes_done{false};
  std::thread routes([this, &routes_done] {
    http_->listen_after_bind();
    routes_done = true;
  });
  // Wait until httplib runs, so that its stop() below reaches it.
  while (!http_->is_running() && !routes_done) std::this_thread::sleep_for(1ms);
  front_->run();
  http_->stop();
  routes.join();
}

void Server::stop() {
  if (front_) front_->stop();
}

void Server::count(const std::string& endpoint, int status) {
  std::lock_guard lk(mu_);
  requests_[{endpoint, status}]++;
}

void Server::routes() {
  httplib::Server& s = *http_;
  const int threads = opt_.http_threads;
  s.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  s.set_payload_max_length(opt_.max_body);
  s.set_read_timeout(30s);
  s.set_write_timeout(30s);

  // Authentication for the API routes when a key is set.
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const bool anthropic = req.path.starts_with("/anthropic/");
    if (opt_.api_key.empty() ||
        !(req.path.starts_with("/v1/") || req.path.starts_with("/beta/") || anthropic))
      return httplib::Server::HandlerResponse::Unhandled;
    if (req.get_header_value("Authorization") == "Bearer " + opt_.api_key ||
        (anthropic && req.get_header_value("x-api-key") == opt_.api_key))
      return httplib::Server::HandlerResponse::Unhandled;
    if (anthropic) {
      res.status = 401;
      res.set_content(
          anthropic_error(ApiError(401, "authentication_error", "invalid x-api-key")).dump(),
          "application/json");
      count("anthropic", 401);
      return httplib::Server::HandlerResponse::Handled;
    }
    send_error(res, ApiError(401, "invalid_request_error",
                             "Incorrect or missing API key: send 'Authorization: Bearer <key>'.",
                             "invalid_api_key"));
    count("auth", 401);
    return httplib::Server::HandlerResponse::Handled;
  });
  // Errors httplib produces itself (unknown route, body too large, bad HTTP) get an OpenAI body.
  s.set_error_handler(
      httplib::Server::HandlerWithResponse([](const httplib::Request& req, httplib::Response& res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        std::string msg = "HTTP error " + std::to_string(res.status), code;
        if (res.status == 404) {
          msg = "Unknown request URL: " + req.method + " " + req.path;
          code = "unknown_url";
        } else if (res.status == 413) {
          msg = "Request body too large.";
          code = "request_too_large";
        }
        send_error(res, ApiError(res.status, "invalid_request_error", msg, code));
        return httplib::Server::HandlerResponse::Handled;
      }));
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string msg = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          msg = e.what();
        } catch (...) {
        }
        send_error(res, ApiError(500, "server_error", msg));
      });

  s.Get("/", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(kChatPage), "text/html; charset=utf-8");
    count("page", 200);
  });
  s.Get("/health", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", "application/json");
    count("health", 200);
  });
  s.Get("/v1/models", [this](const httplib::Request&, httplib::Response& res) {
    json m = {
        {"id", opt_.model_id}, {"object", "model"}, {"created", started_}, {"owned_by", "whale"}};
    res.set_content(json{{"object", "list"}, {"data", json::array({m})}}.dump(),
                    "application/json");
    count("models", 200);
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.set_content(metrics(), "text/plain; version=0.0.4");
  });

  auto generate = [this](bool chat) {
    return [this, chat](const httplib::Request& req, httplib::Response& res) {
      const std::string endpoint = chat ? "chat" : "completions";
      try {
        handle(req, res, chat);
      } catch (const ApiError& e) {
        send_error(res, e);
      }
      count(endpoint, res.status == -1 ? 200 : res.status);
    };
  };
  // DeepSeek serves its beta features (chat prefix completion, FIM) under /beta; whale serves
  // every route under both.
  for (const char* root : {"/v1", "/beta"}) {
    s.Post(std::string(root) + "/chat/completions", generate(true));
    s.Post(std::string(root) + "/completions", generate(false));
  }
  s.Post("/anthropic/v1/messages", [this](const httplib::Request& req, httplib::Response& res) {
    try {
      handle_anthropic(req, res);
    } catch (const ApiError& e) {
      res.status = e.status;
      res.set_content(anthropic_error(e).dump(), "application/json");
    }
    count("anthropic", res.status == -1 ? 200 : res.status);
  });
}

// ------------------------------------------------------------------ generation requests

// The job for a parsed request: the prompt rendered (chat template, tool list, forced call, FIM)
// and tokenized, limits and sampling set. Throws ApiError.
Server::Prepared Server::prepare(const GenRequest& g, bool chat) {
  const int64_t ctx = engine_.options().ctx;
  Prepared p;
  p.job = std::make_shared<Job>();
  Job* job = p.job.get();
  std::string& echo = p.echo;
  // Function calling: the tool list goes into the system prompt; a forced call opens the calls
  // section in the prompt, and that opening is read back as the start of the output.
  const bool use_tools = p.use_tools = chat && g.tool_choice.kind != ToolChoice::kNone;
  const bool prefix = chat && g.messages.back().prefix;
  const bool thinking = g.thinking >= 0 ? g.thinking == 1 : opt_.thinking;
  bool reasoning = chat && continues_reasoning(g.messages, style_, thinking);
  // `required` with one strict tool is that tool named; a named strict tool's arguments are
  // constrained to its schema, and the call's closing markup follows them.
  ToolChoice choice = g.tool_choice;
  if (choice.kind == ToolChoice::kRequired && g.tools.size() == 1 && g.tools[0].strict)
    choice = {ToolChoice::kNamed, g.tools[0].name};
  std::string forced;
  if (use_tools && !prefix) forced = forced_call_prefix(choice, reasoning, style_);
  if (!forced.empty() && choice.kind == ToolChoice::kNamed) {
    for (const ToolDef& d : g.tools)
      if (d.name == choice.name && d.strict) {
        job->schema = d.schema;
        job->schema_tail = forced_call_tail(style_);
      }
  } else if (g.json_schema) {
    job->schema = g.json_schema;
  }
  // Strict functions the model may call on its own: their arguments are constrained from the
  // call's head on (both layouts).
  if (!forced.empty()) job->trigger_prefix = forced.substr(forced.find(kCallsBegin));
  if (use_tools && !job->schema)
    for (const ToolDef& d : g.tools)
      if (d.strict) {
        job->schema_triggers.emplace_back(
            "function" + std::string(kToolSep) + d.name + "\n```json\n", d.schema);
        job->schema_triggers.emplace_back(std::string(kCallBegin) + d.name + std::string(kToolSep),
                                          d.schema);
      }
  if (!forced.empty()) reasoning = false;  // R1: the forced call comes after an empty think block
  p.forced_calls = forced.empty() ? std::string() : forced.substr(forced.find(kCallsBegin));
  if (use_tools && prefix &&
      (g.tool_choice.kind == ToolChoice::kRequired || g.tool_choice.kind == ToolChoice::kNamed))
    throw ApiError(400, "invalid_request_error",
                   "tool_choice: a forced call cannot continue a prefix message", "",
                   "tool_choice");
  if (chat) {
    job->prompt =
        tok_.encode(render_chat(g.messages, style_, tok_.bos_token(), true,
                                use_tools ? tools_prompt(g.tools, style_) : "", thinking) +
                    forced);
  } else {
    if (!g.prompt_ids.empty()) {
      for (int32_t id : g.prompt_ids)
        if (id < 0 || size_t(id) >= tok_.vocab_size())
          throw ApiError(400, "invalid_request_error",
                         "prompt: token id " + std::to_string(id) + " is outside the vocabulary",
                         "", "prompt");
      if (g.echo) echo = tok_.decode(g.prompt_ids, true);
    } else if (g.echo) {
      echo = g.prompt;
    }
    const bool bos = tok_.add_bos() && g.prompt_ids.empty();
    std::vector<int32_t> ids = g.prompt_ids.empty() ? tok_.encode(g.prompt, false) : g.prompt_ids;
    if (g.suffix) {
      const auto fim = fim_tokens(tok_);
      if (!fim)
        throw ApiError(400, "invalid_request_error",
                       "suffix: this model's tokenizer has no fill-in-the-middle tokens "
                       "(<｜fim▁begin｜>, <｜fim▁hole｜>, <｜fim▁end｜>)",
                       "", "suffix");
      ids.insert(ids.begin(), (*fim)[0]);
      ids.push_back((*fim)[1]);
      const std::vector<int32_t> sfx = tok_.encode(*g.suffix, false);
      ids.insert(ids.end(), sfx.begin(), sfx.end());
      ids.push_back((*fim)[2]);
    }
    if (bos && tok_.bos_id() >= 0) ids.insert(ids.begin(), tok_.bos_id());
    job->prompt = std::move(ids);
  }
  const int64_t n_prompt = int64_t(job->prompt.size());
  if (n_prompt >= ctx)
    throw ApiError(400, "invalid_request_error",
                   "This model's maximum context length is " + std::to_string(ctx) +
                       " tokens. However, your prompt has " + std::to_string(n_prompt) + " tokens.",
                   "context_length_exceeded", chat ? "messages" : "prompt");
  job->opt.sampling = g.sampling;
  if (!g.has_seed) job->opt.sampling.seed = random_seed();
  job->opt.max_tokens = std::min(g.max_tokens.value_or(opt_.default_max_tokens), ctx - n_prompt);
  job->opt.stop = g.stop;
  job->json_object = g.json_object;
  job->count_reasoning = p.reasoning = reasoning;
  job->top_logprobs = g.top_logprobs;
  return p;
}

void Server::client_gone(Job& job) {
  job.cancel();
  std::lock_guard lk(mu_);
  disconnects_++;
}

void Server::submit(const std::shared_ptr<Job>& job, httplib::Response& res) {
  if (!engine_.submit(job)) {
    res.set_header("Retry-After", "1");
    throw ApiError(503, "server_error", "The server is busy (request queue full); retry shortly.",
                   "server_overloaded");
  }
}

void Server::handle(const httplib::Request& req, httplib::Response& res, bool chat) {
  const GenRequest g = parse_request(req.body, chat);
  const Prepared p = prepare(g, chat);
  const std::shared_ptr<Job>& job = p.job;
  const std::string& echo = p.echo;
  const bool use_tools = p.use_tools, reasoning = p.reasoning;
  const std::string& forced_calls = p.forced_calls;
  const bool want_lp = g.top_logprobs >= 0;
  submit(job, res);

  const std::string id = random_id(chat ? "chatcmpl-" : "cmpl-");
  const int64_t created = std::time(nullptr);
  const std::string model = g.model.empty() ? opt_.model_id : g.model;
  const int fd = find_client_socket(req.remote_port, backend_port_);
  auto usage = [job] { return usage_of(*job); };
  auto gone = [this, job] { client_gone(*job); };

  if (!g.stream) {
    std::string text = echo, piece;
    std::vector<TokenLogprob> lps, got;
    while (job->wait_text(piece, 100ms, want_lp ? &got : nullptr)) {
      text += piece;
      lps.insert(lps.end(), got.begin(), got.end());
      if (peer_closed(fd)) {
        gone();
        job->wait_done();
        return;  // nobody to answer
      }
    }
    if (job->finish_reason == "error") throw ApiError(500, "server_error", job->error);
    json body, lp = nullptr;
    if (want_lp)
      lp = chat ? chat_logprobs(logprob_entries(tok_, lps))
                : completion_logprobs(logprob_entries(tok_, lps), 0);
    if (!chat) {
      body = completion_response(id, created, model, text, job->finish_reason, usage(), lp);
    } else {
      const ChatAnswer a =
          split_answer(text, g, reasoning, use_tools, forced_calls, id.substr(id.find('-') + 1));
      body =
          chat_response(id, created, model, a.content, a.reasoning,
                        a.calls.empty() ? job->finish_reason : "tool_calls", usage(), lp, a.calls);
    }
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    return;
  }

  // Streaming: server-sent events, written from httplib's content provider on this thread.
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  const bool include_usage = g.include_usage;
  res.set_chunked_content_provider(
      "text/event-stream",
      [=, this](size_t, httplib::DataSink& sink) {
        auto send = [&](const json& j) {
          const std::string ev = sse_event(j);
          return sink.write(ev.data(), ev.size());
        };
        ReasoningStream split;
        bool ok = true;
        // Log-probabilities ride on the next chunk sent after their tokens arrive (the final
        // chunk takes what is left); completions number their text offsets in token bytes.
        std::vector<TokenLogprob> got, held;
        size_t lp_offset = 0;
        auto take_lp = [&]() -> json {
          if (!want_lp) return nullptr;
          const std::vector<LogprobEntry> e = logprob_entries(tok_, held);
          held.clear();
          if (chat) return chat_logprobs(e);
          json j = completion_logprobs(e, lp_offset);
          for (const LogprobEntry& x : e) lp_offset += x.token.size();
          return j;
        };
        if (chat) {
          ChatDelta first;
          first.role = true;
          first.content = "";
          ok = send(chat_chunk(id, created, model, first, ""));
        } else if (!echo.empty()) {
          ok = send(completion_chunk(id, created, model, echo, ""));
        }
        // Answer text goes through the tool-call parser when tools are on: content as it is
        // released, each call in two fragments (id, type and name; then its arguments).
        ToolCallStream calls(id.substr(id.find('-') + 1));
        size_t n_calls = 0;
        auto emit = [&](const ToolCallStream::Events& ev) {
          if (!ev.content.empty()) {
            ChatDelta d;
            d.content = ev.content;
            ok = ok && send(chat_chunk(id, created, model, d, "", take_lp()));
          }
          for (const ToolCall& c : ev.calls) {
            if (!g.parallel_tool_calls && n_calls > 0) break;
            const int index = int(n_calls++);
            ChatDelta head, args;
            head.tool_calls.push_back({index, c.id, c.name, ""});
            args.tool_calls.push_back({index, "", "", c.arguments});
            ok = ok && send(chat_chunk(id, created, model, head, "", take_lp()));
            ok = ok && send(chat_chunk(id, created, model, args, ""));
          }
        };
        auto answer = [&](const std::string& text) {
          if (use_tools) return emit(calls.push(text));
          ToolCallStream::Events ev;
          ev.content = text;
          emit(ev);
        };
        if (!forced_calls.empty()) answer(forced_calls);
        auto relay = [&](const ReasoningStream::Piece& p) {
          if (!p.reasoning.empty()) {
            ChatDelta d;
            d.reasoning_content = p.reasoning;
            ok = ok && send(chat_chunk(id, created, model, d, "", take_lp()));
          }
          if (!p.content.empty()) answer(p.content);
        };
        std::string piece;
        while (ok && job->wait_text(piece, 100ms, want_lp ? &got : nullptr)) {
          if (peer_closed(fd)) ok = false;
          held.insert(held.end(), got.begin(), got.end());
          if (piece.empty() || !ok) continue;
          if (!chat) {
            ok = send(completion_chunk(id, created, model, piece, "", take_lp()));
          } else if (reasoning) {
            relay(split.push(piece));
          } else {
            answer(piece);
          }
        }
        if (!ok) {
          gone();
          job->wait_done();
          return false;
        }
        if (reasoning) relay(split.flush());
        if (chat && use_tools) {
          // The rest: held content, or a calls section that did not close well (as content).
          emit(calls.flush());
        }
        const std::string finish =
            n_calls > 0 && job->finish_reason != "error" ? "tool_calls" : job->finish_reason;
        const json rest = held.empty() ? json(nullptr) : take_lp();
        if (job->finish_reason == "error") {
          ok = ok && send(ApiError(500, "server_error", job->error).to_json());
        } else if (chat) {
          ok = ok && send(chat_chunk(id, created, model, ChatDelta{}, finish, rest));
        } else {
          ok = ok && send(completion_chunk(id, created, model, "", job->finish_reason, rest));
        }
        if (ok && include_usage) ok = send(usage_chunk(id, created, model, chat, usage()));
        const std::string done = sse_done();
        if (ok) ok = sink.write(done.data(), done.size());
        if (ok) sink.done();
        return ok;
      },
      [job](bool success) {
        if (!success) job->cancel();  // connection failed before or while streaming
      });
}

// ------------------------------------------------------------------ the Anthropic route

void Server::handle_anthropic(const httplib::Request& req, httplib::Response& res) {
  const GenRequest g = parse_anthropic_request(req.body);
  const Prepared p = prepare(g, true);
  const std::shared_ptr<Job> job = p.job;
  submit(job, res);
  const std::string id = random_id("msg_");
  const std::string model = g.model.empty() ? opt_.model_id : g.model;
  const int fd = find_client_socket(req.remote_port, backend_port_);
  auto usage = [job] { return usage_of(*job); };
  auto gone = [this, job] { client_gone(*job); };
  const std::string call_base = id.substr(4);

  if (!g.stream) {
    std::string text, piece;
    while (job->wait_text(piece, 100ms)) {
      text += piece;
      if (peer_closed(fd)) {
        gone();
        job->wait_done();
        return;
      }
    }
    if (job->finish_reason == "error") throw ApiError(500, "api_error", job->error);
    ChatAnswer a = split_answer(text, g, p.reasoning, p.use_tools, p.forced_calls, call_base);
    std::vector<AnthropicBlock> blocks;
    if (a.reasoning && !a.reasoning->empty())
      blocks.push_back({AnthropicBlock::kThinking, *a.reasoning, {}});
    if (!a.content.empty()) blocks.push_back({AnthropicBlock::kText, a.content, {}});
    for (ToolCall& c : a.calls) blocks.push_back({AnthropicBlock::kToolUse, "", std::move(c)});
    const json body = anthropic_response(
        id, model, blocks,
        anthropic_stop_reason(job->finish_reason, !a.calls.empty(), job->stop_sequence),
        job->stop_sequence, usage());
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
    return;
  }

  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      "text/event-stream",
      [=, this](size_t, httplib::DataSink& sink) {
        bool ok = true;
        auto send = [&](const json& j) {
          const std::string ev = anthropic_event(j);
          ok = ok && sink.write(ev.data(), ev.size());
        };
        json start = anthropic_response(id, model, {}, "", "", usage());
        start["stop_reason"] = nullptr;
        start["usage"]["output_tokens"] = 0;
        send({{"type", "message_start"}, {"message", start}});
        // Content blocks: one open at a time; a change of kind closes it and opens the next.
        int index = -1;
        int open = -1;  // AnthropicBlock::Kind of the open block, -1 none
        auto close_block = [&] {
          if (open < 0) return;
          send({{"type", "content_block_stop"}, {"index", index}});
          open = -1;
        };
        auto delta = [&](AnthropicBlock::Kind kind, const std::string& text) {
          if (text.empty()) return;
          if (open != kind) {
            close_block();
            open = kind;
            ++index;
            send({{"type", "content_block_start"},
                  {"index", index},
                  {"content_block", anthropic_block({kind, "", {}})}});
          }
          json d = kind == AnthropicBlock::kThinking
                       ? json{{"type", "thinking_delta"}, {"thinking", text}}
                       : json{{"type", "text_delta"}, {"text", text}};
          send({{"type", "content_block_delta"}, {"index", index}, {"delta", d}});
        };
        ToolCallStream calls(call_base);
        size_t n_calls = 0;
        auto answer = [&](const ToolCallStream::Events& ev) {
          delta(AnthropicBlock::kText, ev.content);
          for (const ToolCall& c : ev.calls) {
            if (!g.parallel_tool_calls && n_calls > 0) break;
            ++n_calls;
            close_block();
            ++index;
            json block = {
                {"type", "tool_use"}, {"id", c.id}, {"name", c.name}, {"input", json::object()}};
            send({{"type", "content_block_start"}, {"index", index}, {"content_block", block}});
            send({{"type", "content_block_delta"},
                  {"index", index},
                  {"delta", {{"type", "input_json_delta"}, {"partial_json", c.arguments}}}});
            send({{"type", "content_block_stop"}, {"index", index}});
          }
        };
        auto text_in = [&](const std::string& t) {
          if (p.use_tools) return answer(calls.push(t));
          ToolCallStream::Events ev;
          ev.content = t;
          answer(ev);
        };
        if (!p.forced_calls.empty()) text_in(p.forced_calls);
        ReasoningStream split;
        auto relay = [&](const ReasoningStream::Piece& piece) {
          delta(AnthropicBlock::kThinking, piece.reasoning);
          if (!piece.content.empty()) text_in(piece.content);
        };
        std::string piece;
        while (ok && job->wait_text(piece, 100ms)) {
          if (peer_closed(fd)) ok = false;
          if (piece.empty() || !ok) continue;
          if (p.reasoning)
            relay(split.push(piece));
          else
            text_in(piece);
        }
        if (!ok) {
          gone();
          job->wait_done();
          return false;
        }
        if (p.reasoning) relay(split.flush());
        if (p.use_tools) answer(calls.flush());
        close_block();
        if (job->finish_reason == "error") {
          send(anthropic_error(ApiError(500, "api_error", job->error)));
        } else {
          send({{"type", "message_delta"},
                {"delta",
                 {{"stop_reason",
                   anthropic_stop_reason(job->finish_reason, n_calls > 0, job->stop_sequence)},
                  {"stop_sequence",
                   job->stop_sequence.empty() ? json(nullptr) : json(job->stop_sequence)}}},
                {"usage", {{"output_tokens", job->completion_tokens}}}});
          send({{"type", "message_stop"}});
        }
        if (ok) sink.done();
        return ok;
      },
      [job](bool success) {
        if (!success) job->cancel();
      });
}

// ------------------------------------------------------------------ metrics

std::string Server::metrics() const {
  const EngineStats e = engine_.stats();
  std::string out;
  auto metric = [&](const char* name, const char* type, const char* help) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  };
  auto value = [&](const std::string& name, double v) {
    char buf[64];
    std::snprintf(buf, sizeof buf, " %.17g\n", v);
    out += name + buf;
  };
  auto single = [&](const char* name, const char* type, const char* help, double v) {
    metric(name, type, help);
    value(name, v);
  };
  const FrontStats front = front_ ? front_->stats() : FrontStats{};  // (zeros without one)
  metric("whale_requests_total", "counter", "HTTP requests by endpoint and status.");
  {
    std::lock_guard lk(mu_);
    std::map<std::pair<std::string, int>, int64_t> requests = requests_;
    if (front.health > 0) requests[{"health", 200}] += front.health;
    for (const auto& [k, n] : requests)
      value("whale_requests_total{endpoint=\"" + k.first + "\",status=\"" +
                std::to_string(k.second) + "\"}",
            double(n));
    single("whale_client_disconnects_total", "counter",
           "Generations cancelled because the client went away.", double(disconnects_));
  }
  if (front_) {
    single("whale_http_connections", "gauge", "Client connections held by the front end.",
           double(front.open));
    single("whale_http_connections_total", "counter", "Client connections accepted.",
           double(front.accepted));
    single("whale_http_connections_rejected_total", "counter",
           "Connections answered 503 because --max-connections were open.", double(front.rejected));
    single("whale_http_request_timeouts_total", "counter",
           "Requests not received within their header or body deadline (408).",
           double(front.timeouts));
    single("whale_http_bad_requests_total", "counter",
           "Requests the front end rejected for their framing (4xx).", double(front.bad_requests));
  }
  single("whale_jobs_total", "counter", "Generation jobs started.", double(e.jobs));
  single("whale_prompt_tokens_total", "counter", "Prompt tokens of started jobs.",
         double(e.prompt_tokens));
  single("whale_prefill_tokens_total", "counter", "Prompt tokens run through the model.",
         double(e.prefill_tokens));
  single("whale_completion_tokens_total", "counter", "Generated tokens.",
         double(e.completion_tokens));
  single("whale_prompt_cache_hit_tokens_total", "counter",
         "Prompt tokens served from the prompt cache.", double(e.cache_hit_tokens));
  single("whale_prompt_cache_hits_total", "counter", "Jobs that reused a cached prefix.",
         double(e.cache_hit_jobs));
  single("whale_prompt_cache_bytes", "gauge", "Bytes held by the prompt store.",
         double(e.store_bytes));
  single("whale_prompt_cache_entries", "gauge", "Sequences held by the prompt store.",
         double(e.store_entries));
  single("whale_disk_cache_entries", "gauge", "Prefixes in the context cache on disk.",
         double(e.disk_entries));
  single("whale_disk_cache_bytes", "gauge", "Bytes of the context cache on disk.",
         double(e.disk_bytes));
  single("whale_disk_cache_hits_total", "counter", "Jobs that started from a prefix on disk.",
         double(e.disk_hit_jobs));
  single("whale_disk_cache_damaged_total", "counter",
         "Disk cache entries found damaged or foreign and removed.", double(e.disk_damaged));
  single("whale_queue_depth", "gauge", "Jobs waiting for a slot.", e.queue_depth);
  single("whale_active_slots", "gauge", "Slots running a job.", e.active_slots);
  single("whale_slots", "gauge", "Slots (--parallel).", e.slots);
  single("whale_decode_tokens_per_second", "gauge", "Generated tokens per second, last 10 s.",
         e.decode_tokens_per_second);
  single("whale_engine_steps_total", "counter", "Batched forward passes.", double(e.steps));
  single("whale_engine_busy_seconds_total", "counter", "Seconds spent in forward passes.",
         e.busy_seconds);
  single("whale_spec_drafted_total", "counter", "MTP drafts checked (--spec mtp).",
         double(e.drafted));
  single("whale_spec_accepted_total", "counter", "MTP drafts accepted (--spec mtp).",
         double(e.accepted));
  return out;
}

}  // namespace whale::serve
