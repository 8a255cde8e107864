// The HTTP server through a real HTTP client (cpp-httplib's) on 127.0.0.1: response shapes,
// streaming equal to non-streaming, errors as OpenAI error objects with the right statuses,
// authentication, queue limits, clients that go away, metrics, and a clean SIGTERM.
// (tests/web/*.mjs drive the same server with the official openai package and a browser.)
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <thread>
#include <tuple>

#include "formats/tokenizer.h"
#include "model/model.h"
#include "run/chat.h"
#include "run/session.h"
#include "serve/engine.h"
#include "serve/server.h"
#include "serve/tools.h"
#include "test_util.h"

using namespace whale;
using namespace whale::serve;
using json = nlohmann::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

// A running server on a free port, stopped at destruction.
struct Running {
  std::unique_ptr<Model> model;
  Tokenizer tok;
  std::unique_ptr<Engine> engine;
  std::unique_ptr<Server> server;
  std::thread thread;
  int port = 0;

  Running(const std::string& dir, EngineOptions eo, ServerOptions so)
      : model(Model::load(dir)), tok(Tokenizer::load(dir)) {
    so.port = 0;
    so.model_id = "tiny";
    engine = std::make_unique<Engine>(*model, tok, eo);
    server = std::make_unique<Server>(*engine, tok, so);
    port = server->bind();
    thread = std::thread([this] { server->listen(); });
  }
  ~Running() {
    server->stop();
    thread.join();
    engine->stop();
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(60s);
    return c;
  }
};

EngineOptions engine_opts(int parallel = 2, int64_t ctx = 256, int queue = 64) {
  EngineOptions o;
  o.parallel = parallel;
  o.ctx = ctx;
  o.max_queue = queue;
  return o;
}

json chat_body(const std::string& user, int max_tokens, bool stream = false) {
  return {{"model", "tiny"},
          {"messages",
           {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", user}}}},
          {"max_tokens", max_tokens},
          {"temperature", 0},
          {"stream", stream}};
}

httplib::Result post(const httplib::Client& c0, const std::string& path, const std::string& body,
                     const httplib::Headers& h = {}) {
  httplib::Client& c = const_cast<httplib::Client&>(c0);
  return c.Post(path.c_str(), h, body, "application/json");
}

// The data payloads of an SSE body, in order.
std::vector<std::string> sse_data(const std::string& body) {
  std::vector<std::string> out;
  size_t pos = 0;
  while ((pos = body.find("data: ", pos)) != std::string::npos) {
    const size_t end = body.find("\n\n", pos);
    out.push_back(body.substr(pos + 6, end - pos - 6));
    pos = end;
  }
  return out;
}

void expect_error(const httplib::Result& r, int status, const std::string& code = "",
                  const std::string& param = "") {
  ASSERT_TRUE(r) << "no response";
  EXPECT_EQ(r->status, status) << r->body;
  const json j = json::parse(r->body, nullptr, false);
  ASSERT_TRUE(j.is_object() && j.contains("error")) << r->body;
  EXPECT_TRUE(j["error"]["message"].is_string());
  EXPECT_TRUE(j["error"]["type"].is_string());
  if (!code.empty()) {
    EXPECT_EQ(j["error"]["code"], code) << r->body;
  }
  if (!param.empty()) {
    EXPECT_EQ(j["error"]["param"], param) << r->body;
  }
}

double metric(const std::string& text, const std::string& name) {
  size_t pos = 0;
  while ((pos = text.find(name, pos)) != std::string::npos) {
    if ((pos == 0 || text[pos - 1] == '\n') && text[pos + name.size()] == ' ')
      return std::stod(text.substr(pos + name.size() + 1));
    pos += name.size();
  }
  return -1;
}

// chat-tiny with the R1 chat template: a reasoning model for the API's purposes.
std::string r1_model() {
  const std::string base = whale::testing::chat_tiny_model();
  const fs::path dir = fs::path(base).parent_path() / "chat-tiny-r1";
  if (fs::exists(dir / "tokenizer_config.json")) return dir;
  const fs::path tmp = dir.string() + ".tmp." + std::to_string(getpid());
  fs::create_directories(tmp);
  for (const auto& e : fs::directory_iterator(base))
    if (e.path().filename() != "tokenizer_config.json")
      fs::create_symlink(fs::absolute(e.path()), tmp / e.path().filename());
  json cfg = json::parse(std::ifstream(fs::path(base) / "tokenizer_config.json"));
  cfg["chat_template"] =
      "{{ bos_token }}{% for m in messages %}<｜User｜>{{ m['content'] }}{% endfor %}"
      "{% if add_generation_prompt %}<｜Assistant｜><think>\\n{% endif %}";
  std::ofstream(tmp / "tokenizer_config.json") << cfg.dump();
  std::error_code ec;
  fs::rename(tmp, dir, ec);
  if (ec) fs::remove_all(tmp);
  return dir;
}

}  // namespace

TEST(Server, ChatCompletionMatchesTheEngineAndCountsUsage) {
  Running s(whale::testing::chat_tiny_model(), engine_opts(), {});
  auto c = s.client();
  auto r = post(c, "/v1/chat/completions", chat_body("Hello", 8).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["model"], "tiny");
  EXPECT_TRUE(j["id"].get<std::string>().starts_with("chatcmpl-"));
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  EXPECT_FALSE(j["choices"][0]["message"].contains("reasoning_content"));  // V3 template
  const json& u = j["usage"];
  EXPECT_EQ(u["total_tokens"], u["prompt_tokens"].get<int>() + u["completion_tokens"].get<int>());
  EXPECT_EQ(u["prompt_cache_hit_tokens"].get<int>() + u["prompt_cache_miss_tokens"].get<int>(),
            u["prompt_tokens"].get<int>());
  // OpenAI's detail fields beside DeepSeek's: no reasoning in a V3 chat.
  EXPECT_EQ(u["prompt_tokens_details"]["cached_tokens"], u["prompt_cache_hit_tokens"]);
  EXPECT_EQ(u["completion_tokens_details"]["reasoning_tokens"], 0);
  // The same text as `whale run` (a lone Session) on the rendered prompt.
  std::vector<ChatMessage> msgs = {{"system", "Be brief.", ""}, {"user", "Hello", ""}};
  const auto prompt = s.tok.encode(render_chat(msgs, ChatStyle::V3, s.tok.bos_token()));
  EXPECT_EQ(u["prompt_tokens"], prompt.size());
  Session session(*s.model, 256);
  GenerateOptions go;
  go.max_tokens = 8;
  go.sampling.greedy = true;
  const GenerateResult ref = session.generate(prompt, s.tok, go);
  EXPECT_EQ(j["choices"][0]["message"]["content"], ref.text);
  EXPECT_EQ(j["choices"][0]["finish_reason"], ref.finish_reason);
  // Asked again: the prompt comes from the cache.
  r = post(c, "/v1/chat/completions", chat_body("Hello", 8).dump());
  ASSERT_TRUE(r);
  const json j2 = json::parse(r->body);
  EXPECT_EQ(j2["usage"]["prompt_cache_hit_tokens"], prompt.size() - 1);
  EXPECT_EQ(j2["usage"]["prompt_tokens_details"]["cached_tokens"], prompt.size() - 1);
  EXPECT_EQ(j2["choices"][0]["message"]["content"], ref.text);
}

TEST(Server, StreamReassemblesToTheSameText) {
  Running s(whale::testing::chat_tiny_model(), engine_opts(), {});
  auto c = s.client();
  auto plain = post(c, "/v1/chat/completions", chat_body("Stream this", 12).dump());
  ASSERT_TRUE(plain);
  const json pj = json::parse(plain->body);
  json body = chat_body("Stream this", 12, true);
  body["stream_options"] = {{"include_usage", true}};
  auto r = post(c, "/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  EXPECT_EQ(r->get_header_value("Content-Type"), "text/event-stream");
  const auto events = sse_data(r->body);
  ASSERT_GE(events.size(), 4u);
  EXPECT_EQ(events.back(), "[DONE]");
  std::string text, finish;
  json usage;
  for (size_t i = 0; i + 1 < events.size(); i++) {
    const json e = json::parse(events[i]);
    EXPECT_EQ(e["object"], "chat.completion.chunk");
    EXPECT_EQ(e["id"], json::parse(events[0])["id"]);
    if (e["choices"].empty()) {
      usage = e["usage"];
      continue;
    }
    const json& ch = e["choices"][0];
    if (i == 0) {
      EXPECT_EQ(ch["delta"]["role"], "assistant");
    }
    if (ch["delta"].contains("content")) text += ch["delta"]["content"].get<std::string>();
    if (!ch["finish_reason"].is_null()) finish = ch["finish_reason"];
  }
  EXPECT_EQ(text, pj["choices"][0]["message"]["content"]);
  EXPECT_EQ(finish, pj["choices"][0]["finish_reason"]);
  ASSERT_TRUE(usage.is_object());
  EXPECT_EQ(usage["completion_tokens"], pj["usage"]["completion_tokens"]);
  EXPECT_EQ(usage["prompt_tokens"], pj["usage"]["prompt_tokens"]);
}

TEST(Server, ReasoningModelSplitsReasoningContent) {
  Running s(r1_model(), engine_opts(), {});
  auto c = s.client();
  auto r = post(c, "/v1/chat/completions", chat_body("Think", 10).dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  const json& m = j["choices"][0]["message"];
  ASSERT_TRUE(m.contains("reasoning_content")) << r->body;
  // A random model does not close its think block: all of it is reasoning, exactly as the split
  // of the raw text says.
  Session session(*s.model, 256);
  GenerateOptions go;
  go.max_tokens = 10;
  go.sampling.greedy = true;
  std::vector<ChatMessage> msgs = {{"system", "Be brief.", ""}, {"user", "Think", ""}};
  const auto prompt = s.tok.encode(render_chat(msgs, ChatStyle::R1, s.tok.bos_token()));
  const std::string text = session.generate(prompt, s.tok, go).text;
  const ReasoningSplit sp = split_reasoning(text);
  EXPECT_EQ(m["reasoning_content"], sp.reasoning);
  EXPECT_EQ(m["content"], sp.content);
  // Every token of a think block that never closes is a reasoning token.
  ASSERT_EQ(text.find("</think>"), std::string::npos) << text;
  EXPECT_EQ(j["usage"]["completion_tokens_details"]["reasoning_tokens"],
            j["usage"]["completion_tokens"]);
  // Streamed: the same split in delta.reasoning_content / delta.content.
  auto st = post(c, "/v1/chat/completions", chat_body("Think", 10, true).dump());
  ASSERT_TRUE(st);
  std::string reasoning, content;
  for (const std::string& e : sse_data(st->body)) {
    if (e == "[DONE]") break;
    const json d = json::parse(e)["choices"][0]["delta"];
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (d.contains("content")) content += d["content"].get<std::string>();
  }
  EXPECT_EQ(reasoning, sp.reasoning);
  EXPECT_EQ(content, sp.content);
}

// An R1-Distill-Qwen model (Qwen2 architecture, Qwen's BPE with DeepSeek's special tokens, the R1
// template) answers through the server with its reasoning split off, as R1 does: the scripted
// model thinks "...makes four." and answers "The answer is 4!".
TEST(Server, DistillQwenModelSplitsReasoningContent) {
  const std::string script =
      "Okay, the user wants a sum. Two plus two makes four.\n</think>\n\nThe answer is 4!";
  const std::string dir = whale::testing::scripted_distill_qwen("distill-qwen-four", script);
  Running s(dir, engine_opts(), {});
  auto c = s.client();
  json body = chat_body("What is 2+2?", 60);
  auto r = post(c, "/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  const json& m = j["choices"][0]["message"];
  EXPECT_EQ(m["reasoning_content"], "Okay, the user wants a sum. Two plus two makes four.");
  EXPECT_EQ(m["content"], "The answer is 4!");
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  // The prompt: bos, the system text, <｜User｜>..., <｜Assistant｜><think>\n in Qwen's ids.
  std::vector<ChatMessage> msgs = {{"system", "Be brief.", ""}, {"user", "What is 2+2?", ""}};
  const auto prompt = s.tok.encode(render_chat(msgs, ChatStyle::R1, s.tok.bos_token()));
  EXPECT_EQ(j["usage"]["prompt_tokens"], int64_t(prompt.size()));
  EXPECT_EQ(prompt.front(), 151646);  // <｜begin▁of▁sentence｜>
  // The script's tokens up to and including </think> (151649) are the reasoning tokens.
  const auto ids = s.tok.encode(script);
  const auto close = std::find(ids.begin(), ids.end(), 151649);
  ASSERT_NE(close, ids.end());
  EXPECT_EQ(j["usage"]["completion_tokens"], int64_t(ids.size()));
  EXPECT_EQ(j["usage"]["completion_tokens_details"]["reasoning_tokens"],
            int64_t(close - ids.begin()) + 1);
  // Streamed: the same split.
  body["stream"] = true;
  auto st = post(c, "/v1/chat/completions", body.dump());
  ASSERT_TRUE(st);
  std::string reasoning, content;
  for (const std::string& e : sse_data(st->body)) {
    if (e == "[DONE]") break;
    const json d = json::parse(e)["choices"][0]["delta"];
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (d.contains("content")) content += d["content"].get<std::string>();
  }
  EXPECT_EQ(reasoning, m["reasoning_content"]);
  EXPECT_EQ(content, m["content"]);
}

TEST(Server, CompletionsModelsHealthAndPage) {
  Running s(whale::testing::chat_tiny_model(), engine_opts(), {});
  auto c = s.client();
  auto r = post(
      c, "/v1/completions",
      json{{"prompt", "The sea"}, {"max_tokens", 5}, {"temperature", 0}, {"echo", true}}.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_TRUE(j["choices"][0]["text"].get<std::string>().starts_with("The sea"));
  EXPECT_EQ(j["usage"]["completion_tokens"], 5);
  // Token-id prompts.
  r = post(c, "/v1/completions", json{{"prompt", {1, 2, 3}}, {"max_tokens", 2}}.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  auto m = c.Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(json::parse(m->body)["data"][0]["id"], "tiny");
  auto h = c.Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(json::parse(h->body)["status"], "ok");
  auto p = c.Get("/");
  ASSERT_TRUE(p);
  EXPECT_EQ(p->status, 200);
  EXPECT_NE(p->get_header_value("Content-Type").find("text/html"), std::string::npos);
  EXPECT_NE(p->body.find("<html"), std::string::npos);
}

TEST(Server, BadRequestsGetOpenAIErrors) {
  ServerOptions so;
  so.max_body = 4096;
  Running s(whale::testing::chat_tiny_model(), engine_opts(2, 64), so);
  auto c = s.client();
  expect_error(post(c, "/v1/chat/completions", "{not json"), 400);
  expect_error(post(c, "/v1/chat/completions", "[1,2]"), 400);
  expect_error(post(c, "/v1/chat/completions", R"({"model":"x"})"), 400, "", "messages");
  expect_error(
      post(c, "/v1/chat/completions", R"({"messages":[{"role":"wizard","content":"hi"}]})"), 400,
      "", "messages[0].role");
  expect_error(post(c, "/v1/chat/completions",
                    R"({"messages":[{"role":"user","content":"hi"}],"temperature":"hot"})"),
               400, "", "temperature");
  expect_error(
      post(c, "/v1/chat/completions", R"({"messages":[{"role":"user","content":"hi"}],"n":2})"),
      400, "", "n");
  // Longer than the 64-token context.
  const json long_body = chat_body(std::string(400, 'a') + " b c d e f g h i j k l m n o p", 4);
  expect_error(post(c, "/v1/chat/completions", long_body.dump()), 400, "context_length_exceeded");
  expect_error(post(c, "/v1/chat/completions", chat_body(std::string(5000, 'x'), 4).dump()), 413);
  auto nf = c.Get("/v1/nothing");
  expect_error(nf, 404, "unknown_url");
  // Unknown fields are ignored.
  json ok = chat_body("hi", 2);
  ok["some_future_field"] = {{"x", 1}};
  auto r = post(c, "/v1/chat/completions", ok.dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  // None of that disturbed the server.
  EXPECT_EQ(c.Get("/health")->status, 200);
}

TEST(Server, ApiKeyIsRequiredWhenSet) {
  ServerOptions so;
  so.api_key = "sekrit";
  Running s(whale::testing::chat_tiny_model(), engine_opts(), so);
  auto c = s.client();
  const std::string body = chat_body("hi", 2).dump();
  expect_error(post(c, "/v1/chat/completions", body), 401, "invalid_api_key");
  expect_error(post(c, "/v1/chat/completions", body, {{"Authorization", "Bearer wrong"}}), 401,
               "invalid_api_key");
  auto r = post(c, "/v1/chat/completions", body, {{"Authorization", "Bearer sekrit"}});
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(c.Get("/health")->status, 200);  // health checks need no key
}

TEST(Server, FullQueueAnswers503AndDisconnectsCancel) {
  Running s(whale::testing::chat_tiny_model(), engine_opts(1, 2048, 1), {});
  // A streaming client that reads a few chunks and hangs up: holds the only slot until then.
  std::atomic<int> chunks{0};
  std::atomic<bool> hang_up{false};
  std::thread streamer([&] {
    auto c = s.client();
    httplib::Request req;
    req.method = "POST";
    req.path = "/v1/chat/completions";
    json b = chat_body("go on", 2000, true);
    req.body = b.dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) {
      chunks++;
      return !hang_up.load();
    };
    c.send(req);
  });
  while (chunks < 3) std::this_thread::sleep_for(5ms);
  // A second request waits in the queue (one place), a third is refused.
  std::thread waiter([&] {
    auto c = s.client();
    auto r = post(c, "/v1/chat/completions", chat_body("wait", 2).dump());
    EXPECT_TRUE(r && r->status == 200);
  });
  while (s.engine->stats().queue_depth < 1) std::this_thread::sleep_for(5ms);
  auto c = s.client();
  auto r = post(c, "/v1/chat/completions", chat_body("refused", 2).dump());
  expect_error(r, 503, "server_overloaded");
  EXPECT_EQ(r->get_header_value("Retry-After"), "1");
  hang_up = true;  // the streamer goes away: its job is cancelled, the waiter gets the slot
  streamer.join();
  waiter.join();
  // A non-streaming client that disconnects mid-generation is noticed too.
  {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(s.port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
    const int64_t jobs_before = s.engine->stats().jobs;
    const std::string body = chat_body("long", 2000).dump();
    const std::string req =
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
        "application/json\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n" + body;
    ASSERT_EQ(write(fd, req.data(), req.size()), ssize_t(req.size()));
    // Its job must be running (not only the previous one's slot still counted) before it hangs up.
    while (s.engine->stats().jobs <= jobs_before || s.engine->stats().active_slots < 1)
      std::this_thread::sleep_for(5ms);
    close(fd);
  }
  std::string m;
  for (int i = 0; i < 400; i++) {
    m = s.server->metrics();
    if (metric(m, "whale_client_disconnects_total") >= 2 && metric(m, "whale_active_slots") == 0)
      break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_GE(metric(m, "whale_client_disconnects_total"), 2) << m;
  EXPECT_EQ(metric(m, "whale_active_slots"), 0) << m;
  EXPECT_LT(metric(m, "whale_completion_tokens_total"), 3000) << m;  // nobody ran to 2000 tokens
}

TEST(Server, MetricsCountRequestsAndTokens) {
  Running s(whale::testing::chat_tiny_model(), engine_opts(), {});
  auto c = s.client();
  for (int i = 0; i < 3; i++) post(c, "/v1/chat/completions", chat_body("count", 4).dump());
  post(c, "/v1/chat/completions", "{");
  auto r = c.Get("/metrics");
  ASSERT_TRUE(r);
  const std::string& m = r->body;
  EXPECT_EQ(metric(m, "whale_requests_total{endpoint=\"chat\",status=\"200\"}"), 3) << m;
  EXPECT_EQ(metric(m, "whale_requests_total{endpoint=\"chat\",status=\"400\"}"), 1) << m;
  EXPECT_EQ(metric(m, "whale_completion_tokens_total"), 12) << m;
  EXPECT_GT(metric(m, "whale_prompt_cache_hit_tokens_total"), 0) << m;
  EXPECT_EQ(metric(m, "whale_slots"), 2) << m;
  EXPECT_NE(m.find("# TYPE whale_queue_depth gauge"), std::string::npos);
}

TEST(Server, SigtermShutsDownCleanly) {
  const std::string cmd =
      "bash -c '" + std::string(WHALE_BINARY) + " serve -m " + whale::testing::chat_tiny_model() +
      " --port 0 2> /tmp/whale_sigterm_$$.log & pid=$!; "
      "for i in $(seq 200); do grep -q \"listening on\" /tmp/whale_sigterm_$$.log && break; "
      "sleep 0.1; done; kill -TERM $pid; wait $pid; rc=$?; rm -f /tmp/whale_sigterm_$$.log; "
      "exit $rc'";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

// ------------------------------------------------------------------ the front end: slow clients

namespace {

// A raw client socket, for what an HTTP library will not do: half requests, pipelining, 1.0.
struct RawConn {
  int fd = -1;
  std::string buf;  // received, not yet consumed
  explicit RawConn(int port) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(uint16_t(port));
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      close(fd);
      fd = -1;
    }
  }
  ~RawConn() {
    if (fd >= 0) close(fd);
  }
  RawConn(const RawConn&) = delete;
  RawConn(RawConn&& o) noexcept : fd(o.fd), buf(std::move(o.buf)) { o.fd = -1; }
  bool send(const std::string& s) const {
    return ::send(fd, s.data(), s.size(), MSG_NOSIGNAL) == ssize_t(s.size());
  }
  // Reads more into buf; false on EOF, error or after `wait`.
  bool fill(std::chrono::milliseconds wait) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, int(wait.count())) <= 0) return false;
    char tmp[65536];
    const ssize_t n = recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, size_t(n));
    return true;
  }
  // True when the server closed the connection (EOF) within `wait`, with nothing more sent.
  bool closed_by_server(std::chrono::milliseconds wait) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, int(wait.count())) <= 0) return false;
    char c;
    return recv(fd, &c, 1, 0) <= 0;
  }
};

struct RawResponse {
  int status = 0;
  std::string head, body;
  bool ok = false;
  std::string header(const std::string& name) const {
    const size_t pos = head.find("\r\n" + name + ": ");
    if (pos == std::string::npos) return "";
    const size_t start = pos + name.size() + 4;
    return head.substr(start, head.find("\r\n", start) - start);
  }
};

// Reads one response (Content-Length or chunked body, or to EOF) from `c` within `wait`.
RawResponse read_response(RawConn& c, std::chrono::milliseconds wait = 10000ms) {
  RawResponse r;
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto left = [&] {
    return std::max(0ms, std::chrono::duration_cast<std::chrono::milliseconds>(
                             deadline - std::chrono::steady_clock::now()));
  };
  size_t end;
  while ((end = c.buf.find("\r\n\r\n")) == std::string::npos)
    if (!c.fill(left())) return r;
  r.head = c.buf.substr(0, end + 2);
  c.buf.erase(0, end + 4);
  r.status = std::atoi(r.head.c_str() + 9);
  if (r.status == 100) {
    r.ok = true;
    return r;
  }
  if (const std::string cl = r.header("Content-Length"); !cl.empty()) {
    const size_t n = std::stoul(cl);
    while (c.buf.size() < n)
      if (!c.fill(left())) return r;
    r.body = c.buf.substr(0, n);
    c.buf.erase(0, n);
  } else if (r.header("Transfer-Encoding") == "chunked") {
    for (;;) {
      size_t eol;
      while ((eol = c.buf.find("\r\n")) == std::string::npos)
        if (!c.fill(left())) return r;
      const size_t n = std::stoul(c.buf.substr(0, eol), nullptr, 16);
      while (c.buf.size() < eol + 2 + n + 2)
        if (!c.fill(left())) return r;
      r.body += c.buf.substr(eol + 2, n);
      c.buf.erase(0, eol + 2 + n + 2);
      if (n == 0) break;
    }
  } else {
    while (c.fill(left())) {
    }
    r.body = std::move(c.buf);
    c.buf.clear();
  }
  r.ok = true;
  return r;
}

// Lets this process hold `n` descriptors (the soft limit is often 1024).
bool allow_fds(rlim_t n) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_cur >= n) return true;
  rl.rlim_cur = std::min(n, rl.rlim_max);
  return setrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur >= n;
}

}  // namespace

// 1000 connections that stay silent, trickle a head a byte a second, or stop halfway through a
// body hold no HTTP thread (there are only 4 here): /health answers within a second, a chat
// completion and a stream as usual, keep-alive keeps one connection for several requests. When
// their deadlines pass, the half requests get 408 with an error object and the silent ones are
// closed.
TEST(Server, SlowClientsDoNotStarveOthers) {
  ASSERT_TRUE(allow_fds(4096)) << "cannot raise the descriptor limit";
  ServerOptions so;
  so.http_threads = 4;
  so.header_timeout_s = 4;
  so.body_timeout_s = 4;
  Running s(whale::testing::chat_tiny_model(), engine_opts(), so);
  std::vector<RawConn> silent, heads, bodies;
  for (int i = 0; i < 1000; i++) {
    RawConn c(s.port);
    ASSERT_GE(c.fd, 0) << "connection " << i;
    if (i % 3 == 1) {
      ASSERT_TRUE(c.send("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: "));
      heads.push_back(std::move(c));
    } else if (i % 3 == 2) {
      ASSERT_TRUE(c.send(
          "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"mo"));
      bodies.push_back(std::move(c));
    } else {
      silent.push_back(std::move(c));
    }
  }
  std::atomic<bool> done{false};
  std::thread trickle([&] {
    while (!done) {
      for (auto& c : heads) c.send("a");
      for (int i = 0; i < 10 && !done; i++) std::this_thread::sleep_for(100ms);
    }
  });
  for (int i = 0; i < 200 && metric(s.server->metrics(), "whale_http_connections") < 1000; i++)
    std::this_thread::sleep_for(10ms);
  EXPECT_GE(metric(s.server->metrics(), "whale_http_connections"), 1000);

  auto c = s.client();
  c.set_keep_alive(true);
  const auto t0 = std::chrono::steady_clock::now();
  auto h = c.Get("/health");
  const double health_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  EXPECT_LT(health_s, 1.0);
  const double accepted = metric(s.server->metrics(), "whale_http_connections_total");
  auto r = post(c, "/v1/chat/completions", chat_body("Hi", 4).dump());
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(json::parse(r->body)["usage"]["completion_tokens"], 4);
  auto st = post(c, "/v1/chat/completions", chat_body("Hi", 4, true).dump());
  ASSERT_TRUE(st);
  EXPECT_EQ(st->status, 200);
  EXPECT_EQ(sse_data(st->body).back(), "[DONE]");
  // /health, the completion and the stream went over one kept-alive connection.
  EXPECT_EQ(metric(s.server->metrics(), "whale_http_connections_total"), accepted);

  // The deadlines: 408 with an error object for the half requests, a plain close for the silent.
  std::this_thread::sleep_for(4500ms);
  done = true;
  trickle.join();
  int timed_out = 0;
  for (auto* group : {&heads, &bodies})
    for (auto& hc : *group) {
      const RawResponse rr = read_response(hc, 2000ms);
      if (rr.ok && rr.status == 408 && json::parse(rr.body)["error"]["code"] == "request_timeout")
        timed_out++;
    }
  EXPECT_EQ(timed_out, int(heads.size() + bodies.size()));
  int closed = 0;
  for (auto& sc : silent) closed += sc.closed_by_server(2000ms);
  EXPECT_EQ(closed, int(silent.size()));
  const size_t half = heads.size() + bodies.size();
  heads.clear();
  bodies.clear();
  std::string m;
  for (int i = 0; i < 300; i++) {
    m = s.server->metrics();
    if (metric(m, "whale_http_connections") <= 1) break;
    std::this_thread::sleep_for(10ms);
  }
  EXPECT_EQ(metric(m, "whale_http_request_timeouts_total"), double(half));
  EXPECT_LE(metric(m, "whale_http_connections"), 1) << m;  // the kept-alive client
}

// Past --max-connections a connection gets 503 with Retry-After; once others close, it works.
TEST(Server, ConnectionBoundAnswers503) {
  ServerOptions so;
  so.max_connections = 16;
  Running s(whale::testing::chat_tiny_model(), engine_opts(), so);
  std::vector<RawConn> idle;
  for (int i = 0; i < 16; i++) idle.emplace_back(s.port);
  for (int i = 0; i < 200 && metric(s.server->metrics(), "whale_http_connections") < 16; i++)
    std::this_thread::sleep_for(10ms);
  RawConn extra(s.port);
  ASSERT_TRUE(extra.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"));
  const RawResponse r = read_response(extra);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.header("Retry-After"), "1");
  EXPECT_EQ(json::parse(r.body)["error"]["code"], "too_many_connections");
  EXPECT_EQ(metric(s.server->metrics(), "whale_http_connections_rejected_total"), 1);
  while (idle.size() > 8) idle.pop_back();
  for (int i = 0; i < 200 && metric(s.server->metrics(), "whale_http_connections") > 8; i++)
    std::this_thread::sleep_for(10ms);
  auto h = s.client().Get("/health");
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
}

// The front end speaks HTTP/1.1 as clients expect: pipelined requests answered in order on one
// connection, HTTP/1.0 closed after its answer, 100-continue, chunked request bodies, streamed
// responses followed by another request, framing errors answered with an error object.
TEST(Server, FrontEndKeepsHttpSemantics) {
  Running s(whale::testing::chat_tiny_model(), engine_opts(), {});
  {
    RawConn c(s.port);
    ASSERT_TRUE(c.send("GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/models HTTP/1.1\r\n\r\n"));
    RawResponse a = read_response(c), b = read_response(c);
    ASSERT_TRUE(a.ok && b.ok);
    EXPECT_EQ(a.body, R"({"status":"ok"})");
    EXPECT_EQ(json::parse(b.body)["data"][0]["id"], "tiny");
    EXPECT_EQ(a.header("Connection"), "");
    // A streamed chat on the same connection, then one more request.
    const std::string body = chat_body("Hi", 3, true).dump();
    ASSERT_TRUE(c.send("POST /v1/chat/completions HTTP/1.1\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n" + body));
    RawResponse st = read_response(c);
    ASSERT_TRUE(st.ok);
    EXPECT_EQ(st.header("Transfer-Encoding"), "chunked");
    EXPECT_EQ(sse_data(st.body).back(), "[DONE]");
    ASSERT_TRUE(c.send("GET /health HTTP/1.1\r\n\r\n"));
    EXPECT_EQ(read_response(c).status, 200);
  }
  {
    RawConn c(s.port);
    ASSERT_TRUE(c.send("GET /health HTTP/1.0\r\n\r\n"));
    RawResponse r = read_response(c);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.header("Connection"), "close");
    EXPECT_TRUE(c.closed_by_server(2000ms));
  }
  const std::string body = chat_body("Hi", 3).dump();
  {  // 100-continue: the front asks for the body itself, and the answer is the usual one.
    RawConn c(s.port);
    ASSERT_TRUE(
        c.send("POST /v1/chat/completions HTTP/1.1\r\nExpect: 100-continue\r\n"
               "Content-Length: " +
               std::to_string(body.size()) + "\r\n\r\n"));
    EXPECT_EQ(read_response(c).status, 100);
    ASSERT_TRUE(c.send(body));
    RawResponse r = read_response(c);
    EXPECT_EQ(r.status, 200) << r.body;
  }
  std::string plain;
  {
    auto r = post(s.client(), "/v1/chat/completions", body);
    ASSERT_TRUE(r);
    plain = json::parse(r->body)["choices"][0]["message"]["content"];
  }
  {  // A chunked request body, sent in pieces.
    RawConn c(s.port);
    ASSERT_TRUE(c.send("POST /v1/chat/completions HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"));
    for (size_t pos = 0; pos < body.size(); pos += 10) {
      const std::string piece = body.substr(pos, 10);
      char size[16];
      std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
      ASSERT_TRUE(c.send(size + piece + "\r\n"));
    }
    ASSERT_TRUE(c.send("0\r\n\r\n"));
    RawResponse r = read_response(c);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(json::parse(r.body)["choices"][0]["message"]["content"], plain);
  }
  for (const std::string bad : {
           "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: "
           "chunked\r\n\r\n",
           "GET /health HTTP/3.0\r\n\r\n",
           "POST /v1/chat/completions HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
       }) {
    RawConn c(s.port);
    ASSERT_TRUE(c.send(bad));
    RawResponse r = read_response(c);
    ASSERT_TRUE(r.ok) << bad;
    EXPECT_GE(r.status, 400) << bad;
    EXPECT_TRUE(json::parse(r.body)["error"]["message"].is_string()) << r.body;
    EXPECT_TRUE(c.closed_by_server(3000ms)) << bad;
  }
  EXPECT_EQ(metric(s.server->metrics(), "whale_http_bad_requests_total"), 3);
}

// ------------------------------------------------------------------ logprobs, prefix, FIM

namespace {

// log_softmax of the logits after `prompt`, by the model directly (one sequence, fresh cache).
std::vector<double> reference_logprobs(const Model& model, const std::vector<int32_t>& prompt) {
  KVCache cache = model.new_cache(256);
  const std::vector<float> z = model.forward(cache, prompt, false);
  double m = -INFINITY, sum = 0;
  for (float v : z) m = std::max(m, double(v));
  for (float v : z) sum += std::exp(double(v) - m);
  std::vector<double> out;
  for (float v : z) out.push_back(double(v) - m - std::log(sum));
  return out;
}

// A string as the server's JSON carries it: bytes that are not valid UTF-8 become U+FFFD.
json as_json_text(const std::string& s) {
  return json::parse(json(s).dump(-1, ' ', false, json::error_handler_t::replace));
}

}  // namespace

// Chat logprobs (OpenAI's shape): the first token's logprob and its top alternatives equal the
// model's own log_softmax; greedy picks the top alternative every time; streamed chunks carry the
// same entries; completions give the legacy shape; bad values are 400s naming the field.
TEST(Server, LogprobsAreTheModelsAndStreamTheSame) {
  Running s(whale::testing::chat_tiny_model(), engine_opts(), {});
  auto c = s.client();
  json body = chat_body("Hello", 6);
  body["logprobs"] = true;
  body["top_logprobs"] = 5;
  auto r = post(c, "/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  const json& content = j["choices"][0]["logprobs"]["content"];
  ASSERT_TRUE(content.is_array()) << r->body;
  ASSERT_EQ(content.size(), j["usage"]["completion_tokens"].get<size_t>());
  for (const json& e : content) {
    ASSERT_EQ(e["top_logprobs"].size(), 5u);
    EXPECT_EQ(e["token"], e["top_logprobs"][0]["token"]);  // greedy: the most likely token
    EXPECT_FLOAT_EQ(e["logprob"].get<float>(), e["top_logprobs"][0]["logprob"].get<float>());
    EXPECT_LE(e["logprob"].get<double>(), 0.0);
    for (size_t k = 1; k < 5; ++k)
      EXPECT_GE(e["top_logprobs"][k - 1]["logprob"].get<double>(),
                e["top_logprobs"][k]["logprob"].get<double>());
  }
  // The tokens' bytes make up the text (a token that ends inside a UTF-8 character shows U+FFFD
  // in "token"; "bytes" has its real bytes).
  std::string joined;
  for (const json& e : content)
    for (const json& b : e["bytes"]) joined += char(b.get<int>());
  EXPECT_EQ(as_json_text(joined), j["choices"][0]["message"]["content"]);
  // The first token against the model's log_softmax after the prompt.
  std::vector<ChatMessage> msgs = {{"system", "Be brief.", ""}, {"user", "Hello", ""}};
  const auto prompt = s.tok.encode(render_chat(msgs, ChatStyle::V3, s.tok.bos_token()));
  const std::vector<double> ref = reference_logprobs(*s.model, prompt);
  std::vector<int32_t> order(ref.size());
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                    [&](int32_t a, int32_t b) { return ref[size_t(a)] > ref[size_t(b)]; });
  for (size_t k = 0; k < 5; ++k) {
    const json& alt = content[0]["top_logprobs"][k];
    EXPECT_EQ(alt["token"], as_json_text(s.tok.token_text(order[k]))) << k;
    EXPECT_NEAR(alt["logprob"].get<double>(), ref[size_t(order[k])], 1e-4) << k;
  }
  // Streamed: the chunks' entries in order are the same.
  body["stream"] = true;
  auto st = post(c, "/v1/chat/completions", body.dump());
  ASSERT_TRUE(st);
  json streamed = json::array();
  for (const std::string& e : sse_data(st->body)) {
    if (e == "[DONE]") break;
    const json lp = json::parse(e)["choices"][0]["logprobs"];
    if (lp.is_object())
      for (const json& x : lp["content"]) streamed.push_back(x);
  }
  // (The second request reuses the cached prompt: its logits come from a one-token pass and may
  // differ from the full prefill's in the last float bits.)
  ASSERT_EQ(streamed.size(), content.size());
  for (size_t i = 0; i < content.size(); ++i) {
    EXPECT_EQ(streamed[i]["token"], content[i]["token"]);
    EXPECT_EQ(streamed[i]["bytes"], content[i]["bytes"]);
    EXPECT_NEAR(streamed[i]["logprob"].get<double>(), content[i]["logprob"].get<double>(), 1e-4);
    EXPECT_EQ(streamed[i]["top_logprobs"].size(), 5u);
  }
  // Without logprobs the field is null.
  r = post(c, "/v1/chat/completions", chat_body("Hello", 2).dump());
  ASSERT_TRUE(r);
  EXPECT_TRUE(json::parse(r->body)["choices"][0]["logprobs"].is_null());

  // Completions: the legacy shape, offsets counting the text's bytes.
  json cb = {
      {"prompt", "Once upon a time"}, {"max_tokens", 5}, {"temperature", 0}, {"logprobs", 3}};
  r = post(c, "/v1/completions", cb.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json cj = json::parse(r->body);
  const json& lp = cj["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), cj["usage"]["completion_tokens"].get<size_t>()) << r->body;
  ASSERT_EQ(lp["token_logprobs"].size(), lp["tokens"].size());
  ASSERT_EQ(lp["top_logprobs"].size(), lp["tokens"].size());
  size_t offset = 0;
  for (size_t i = 0; i < lp["tokens"].size(); ++i) {
    EXPECT_EQ(lp["text_offset"][i], offset);
    offset += lp["tokens"][i].get<std::string>().size();
    EXPECT_LE(lp["top_logprobs"][i].size(), 3u);
    EXPECT_GE(lp["top_logprobs"][i].size(), 1u);
  }
  cb["stream"] = true;
  st = post(c, "/v1/completions", cb.dump());
  ASSERT_TRUE(st);
  json tokens = json::array(), offsets = json::array();
  for (const std::string& e : sse_data(st->body)) {
    if (e == "[DONE]") break;
    const json x = json::parse(e)["choices"][0]["logprobs"];
    if (!x.is_object()) continue;
    for (const json& t : x["tokens"]) tokens.push_back(t);
    for (const json& t : x["text_offset"]) offsets.push_back(t);
  }
  EXPECT_EQ(tokens, lp["tokens"]);
  EXPECT_EQ(offsets, lp["text_offset"]);

  // Bad values.
  json bad = chat_body("Hello", 2);
  bad["logprobs"] = true;
  bad["top_logprobs"] = 21;
  expect_error(post(c, "/v1/chat/completions", bad.dump()), 400, "", "top_logprobs");
  bad["logprobs"] = false;
  bad["top_logprobs"] = 2;
  expect_error(post(c, "/v1/chat/completions", bad.dump()), 400, "", "top_logprobs");
  bad.erase("top_logprobs");
  bad["logprobs"] = 3;
  expect_error(post(c, "/v1/chat/completions", bad.dump()), 400, "", "logprobs");
  cb.erase("stream");
  cb["logprobs"] = 21;
  expect_error(post(c, "/v1/completions", cb.dump()), 400, "", "logprobs");
  cb["logprobs"] = 1;
  cb["echo"] = true;
  expect_error(post(c, "/v1/completions", cb.dump()), 400, "", "echo");
}

// Chat prefix completion: the last assistant message, marked "prefix", is continued; the answer
// is what `whale run` gives on the open turn, under /beta and /v1 alike. R1: content in the
// prefix closes the think block, so the continuation is all content.
TEST(Server, ChatPrefixCompletionContinuesTheLastMessage) {
  Running s(whale::testing::chat_tiny_model(), engine_opts(), {});
  auto c = s.client();
  std::vector<ChatMessage> msgs = {{"user", "Write code", "", false},
                                   {"assistant", "```python\n", "", true}};
  const std::string rendered = render_chat(msgs, ChatStyle::V3, s.tok.bos_token());
  EXPECT_TRUE(rendered.ends_with("<｜User｜>Write code<｜Assistant｜>```python\n")) << rendered;
  Session session(*s.model, 256);
  GenerateOptions go;
  go.max_tokens = 8;
  go.sampling.greedy = true;
  const GenerateResult ref = session.generate(s.tok.encode(rendered), s.tok, go);
  const json body = {{"messages",
                      {{{"role", "user"}, {"content", "Write code"}},
                       {{"role", "assistant"}, {"content", "```python\n"}, {"prefix", true}}}},
                     {"max_tokens", 8},
                     {"temperature", 0}};
  for (const char* path : {"/beta/chat/completions", "/v1/chat/completions"}) {
    auto r = post(c, path, body.dump());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json j = json::parse(r->body);
    EXPECT_EQ(j["choices"][0]["message"]["content"], ref.text) << path;
    EXPECT_EQ(j["usage"]["prompt_tokens"], s.tok.encode(rendered).size());
  }
  // Only the last message, an assistant one, can be a prefix.
  json bad = body;
  bad["messages"][0]["prefix"] = true;
  expect_error(post(c, "/beta/chat/completions", bad.dump()), 400, "", "messages[0].prefix");
  bad = body;
  bad["messages"][1]["prefix"] = "yes";
  expect_error(post(c, "/beta/chat/completions", bad.dump()), 400, "", "messages[1].prefix");

  // R1: a prefix with content continues the answer after a closed think block.
  std::vector<ChatMessage> r1 = {{"user", "Hi", "", false},
                                 {"assistant", "The answer", "Easy.", true}};
  EXPECT_TRUE(render_chat(r1, ChatStyle::R1, "<s>")
                  .ends_with("<｜Assistant｜><think>\nEasy.\n</think>\n\nThe answer"));
  EXPECT_FALSE(continues_reasoning(r1, ChatStyle::R1));
  r1[1].content.clear();
  EXPECT_TRUE(render_chat(r1, ChatStyle::R1, "<s>").ends_with("<｜Assistant｜><think>\nEasy."));
  EXPECT_TRUE(continues_reasoning(r1, ChatStyle::R1));
  Running r1s(r1_model(), engine_opts(), {});
  auto c1 = r1s.client();
  json rb = body;
  rb["messages"][1]["reasoning_content"] = "Simple.";
  auto r = post(c1, "/beta/chat/completions", rb.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_FALSE(j["choices"][0]["message"].contains("reasoning_content")) << r->body;
  EXPECT_EQ(j["usage"]["completion_tokens_details"]["reasoning_tokens"], 0);
}

// Fill in the middle on /v1/completions (and /beta/completions) with `suffix`: a model scripted to
// answer FIM prompts writes the known middle; the prompt is rendered with the tokenizer's FIM
// tokens.
TEST(Server, FimWritesTheMiddle) {
  const std::string middle = "    return a + b";
  const std::string dir = whale::testing::scripted_model("fim-add", middle, "scripted-r1.json",
                                                         whale::testing::kTokenizerDir, "fim");
  Running s(dir, engine_opts(), {});
  auto c = s.client();
  const json body = {{"prompt", "def add(a, b):\n"},
                     {"suffix", "\n\nprint(add(1, 2))\n"},
                     {"max_tokens", 32},
                     {"temperature", 0}};
  const auto want = s.tok.encode(
      "<｜begin▁of▁sentence｜><｜fim▁begin｜>def add(a, b):\n<｜fim▁hole｜>\n\nprint(add(1, "
      "2))\n<｜fim▁end｜>");
  for (const char* path : {"/beta/completions", "/v1/completions"}) {
    auto r = post(c, path, body.dump());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const json j = json::parse(r->body);
    EXPECT_EQ(j["choices"][0]["text"], middle) << path;
    EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
    EXPECT_EQ(j["usage"]["prompt_tokens"], want.size());
  }
  // Streamed, the same middle.
  json sb = body;
  sb["stream"] = true;
  auto st = post(c, "/beta/completions", sb.dump());
  ASSERT_TRUE(st);
  std::string text;
  for (const std::string& e : sse_data(st->body)) {
    if (e == "[DONE]") break;
    text += json::parse(e)["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, middle);
  // Without a suffix the prompt is plain text: no FIM answer.
  auto plain =
      post(c, "/v1/completions",
           json{{"prompt", "def add(a, b):\n"}, {"max_tokens", 4}, {"temperature", 0}}.dump());
  ASSERT_TRUE(plain);
  EXPECT_NE(json::parse(plain->body)["choices"][0]["text"], middle.substr(0, 4));
  json bad = body;
  bad["suffix"] = 3;
  expect_error(post(c, "/v1/completions", bad.dump()), 400, "", "suffix");
  bad["suffix"] = "x";
  bad["echo"] = true;
  expect_error(post(c, "/v1/completions", bad.dump()), 400, "", "echo");
}

// ------------------------------------------------------------------ function calling

// A model scripted to think briefly and then call get_weather (the V3.1 call layout: a bigram
// chain cannot repeat the "\n" and "```" of the V3 one; tests/test_tools.cpp covers both layouts):
// the call comes back as message.tool_calls / streamed fragments with finish_reason tool_calls;
// tool_choice required forces it through the prompt, none leaves the text alone; a tool result
// round trip renders the history.
TEST(Server, ToolCallsFromAScriptedModel) {
  const std::string call = std::string(kCallsBegin) + std::string(kCallBegin) + "get_weather" +
                           std::string(kToolSep) + R"({"city": "Paris"})" + std::string(kCallEnd) +
                           std::string(kCallsEnd);
  const std::string dir = whale::testing::scripted_model(
      "tool-weather", "I will look up the weather.\n</think>\n\n" + call);
  Running s(dir, engine_opts(), {});
  auto c = s.client();
  const json tools = json::parse(R"([{"type": "function", "function": {"name": "get_weather",
      "description": "The weather in a city.", "parameters": {"type": "object",
      "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])");
  const json user = {{"role", "user"}, {"content", "Weather in Paris?"}};
  json body = {{"messages", {user}}, {"tools", tools}, {"max_tokens", 64}, {"temperature", 0}};
  ToolDef def;
  def.name = "get_weather";
  def.description = "The weather in a city.";
  def.parameters = tools[0]["function"]["parameters"];
  const std::vector<ChatMessage> msgs = {{"user", "Weather in Paris?"}};
  const std::string rendered =
      render_chat(msgs, ChatStyle::R1, s.tok.bos_token(), true, tools_prompt({def}));

  auto r = post(c, "/v1/chat/completions", body.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  json j = json::parse(r->body);
  const json m = j["choices"][0]["message"];
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls") << r->body;
  EXPECT_TRUE(m["content"].is_null()) << r->body;
  EXPECT_EQ(m["reasoning_content"], "I will look up the weather.");
  ASSERT_EQ(m["tool_calls"].size(), 1u) << r->body;
  const json tc = m["tool_calls"][0];
  EXPECT_TRUE(tc["id"].get<std::string>().starts_with("call_"));
  EXPECT_EQ(tc["type"], "function");
  EXPECT_EQ(tc["function"]["name"], "get_weather");
  EXPECT_EQ(tc["function"]["arguments"], R"({"city": "Paris"})");
  EXPECT_EQ(j["usage"]["prompt_tokens"], s.tok.encode(rendered).size());

  // Streamed: reasoning, then the call in OpenAI's fragments.
  json sb = body;
  sb["stream"] = true;
  auto st = post(c, "/v1/chat/completions", sb.dump());
  ASSERT_TRUE(st);
  std::string reasoning, content, finish, name, args, call_id;
  int fragments = 0;
  for (const std::string& e : sse_data(st->body)) {
    if (e == "[DONE]") break;
    const json ch = json::parse(e)["choices"][0];
    const json& d = ch["delta"];
    if (d.contains("reasoning_content")) reasoning += d["reasoning_content"].get<std::string>();
    if (d.contains("content") && d["content"].is_string())
      content += d["content"].get<std::string>();
    if (ch["finish_reason"].is_string()) finish = ch["finish_reason"];
    if (!d.contains("tool_calls")) continue;
    for (const json& f : d["tool_calls"]) {
      EXPECT_EQ(f["index"], 0);
      if (fragments++ == 0) {
        EXPECT_EQ(f["type"], "function");
        call_id = f["id"];
        name = f["function"]["name"];
      } else {
        EXPECT_FALSE(f.contains("id")) << f;
        EXPECT_FALSE(f["function"].contains("name")) << f;  // never "name": null
      }
      args += f["function"]["arguments"].get<std::string>();
    }
  }
  EXPECT_EQ(reasoning, "I will look up the weather.");
  EXPECT_EQ(content, "");
  EXPECT_EQ(name, "get_weather");
  EXPECT_EQ(args, R"({"city": "Paris"})");
  EXPECT_TRUE(call_id.starts_with("call_"));
  EXPECT_EQ(finish, "tool_calls");
  EXPECT_GE(fragments, 2);

  // tool_choice required: the calls section is opened in the prompt (after an empty think block)
  // and the model's continuation completes the call.
  json req = body;
  req["tool_choice"] = "required";
  r = post(c, "/v1/chat/completions", req.dump());
  ASSERT_TRUE(r);
  j = json::parse(r->body);
  ASSERT_EQ(j["choices"][0]["message"]["tool_calls"].size(), 1u) << r->body;
  EXPECT_EQ(j["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            R"({"city": "Paris"})");
  EXPECT_EQ(j["usage"]["prompt_tokens"],
            s.tok.encode(rendered + forced_call_prefix({ToolChoice::kRequired, ""}, true)).size());
  // tool_choice none: no tool list, no parsing: the text as the model wrote it.
  req["tool_choice"] = "none";
  r = post(c, "/v1/chat/completions", req.dump());
  ASSERT_TRUE(r);
  j = json::parse(r->body);
  EXPECT_EQ(j["choices"][0]["message"]["content"], call) << r->body;
  EXPECT_FALSE(j["choices"][0]["message"].contains("tool_calls"));
  EXPECT_EQ(j["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(j["usage"]["prompt_tokens"],
            s.tok.encode(render_chat(msgs, ChatStyle::R1, s.tok.bos_token())).size());

  // The round trip: the call and its result in the history.
  json trip = body;
  trip["messages"] = {
      user,
      {{"role", "assistant"},
       {"content", nullptr},
       {"tool_calls",
        {{{"id", tc["id"]},
          {"type", "function"},
          {"function", {{"name", "get_weather"}, {"arguments", tc["function"]["arguments"]}}}}}}},
      {{"role", "tool"}, {"tool_call_id", tc["id"]}, {"content", "18C and sunny"}}};
  r = post(c, "/v1/chat/completions", trip.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  std::vector<ChatMessage> hist = msgs;
  hist.push_back({"assistant", ""});
  hist.back().tool_calls = {{tc["id"], "function", "get_weather", R"({"city": "Paris"})"}};
  hist.push_back({"tool", "18C and sunny"});
  EXPECT_EQ(
      json::parse(r->body)["usage"]["prompt_tokens"],
      s.tok.encode(render_chat(hist, ChatStyle::R1, s.tok.bos_token(), true, tools_prompt({def})))
          .size());

  // A strict function the model calls on its own (two tools: nothing is forced by name): from the
  // call's head on, its arguments follow the schema, which this model's own {"city": ...} breaks.
  json strict = body;
  strict["tools"][0]["function"]["strict"] = true;
  strict["tools"][0]["function"]["parameters"] = json::parse(R"({"type": "object", "properties":
      {"location": {"type": "string"}}, "required": ["location"], "additionalProperties": false})");
  strict["tools"].push_back(
      {{"type", "function"}, {"function", {{"name", "get_time"}, {"parameters", json::object()}}}});
  strict["tool_choice"] = "required";
  r = post(c, "/v1/chat/completions", strict.dump());
  ASSERT_TRUE(r);
  j = json::parse(r->body);
  ASSERT_EQ(j["choices"][0]["message"]["tool_calls"].size(), 1u) << r->body;
  const json sargs = json::parse(
      j["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"].get<std::string>());
  EXPECT_TRUE(sargs.is_object() && sargs.size() == 1 && sargs["location"].is_string())
      << sargs << " in " << r->body;

  // Bad tool requests.
  json bad = body;
  bad["tool_choice"] = {{"type", "function"}, {"function", {{"name", "nope"}}}};
  expect_error(post(c, "/v1/chat/completions", bad.dump()), 400, "", "tool_choice.function.name");
  bad = body;
  bad["tools"][0]["type"] = "retrieval";
  expect_error(post(c, "/v1/chat/completions", bad.dump()), 400, "", "tools[0].type");
  bad = body;
  bad["tools"][0]["function"]["name"] = "bad name!";
  expect_error(post(c, "/v1/chat/completions", bad.dump()), 400, "", "tools[0].function.name");
  bad = body;
  bad.erase("tools");
  bad["tool_choice"] = "required";
  expect_error(post(c, "/v1/chat/completions", bad.dump()), 400, "", "tool_choice");
}

// Structured outputs: a random model constrained by a JSON schema writes a valid value and stops
// when it closes; a strict function's arguments follow its parameters schema; unsupported schema
// keywords are 400s naming them.
TEST(Server, JsonSchemaAndStrictToolsConstrainTheOutput) {
  Running s(whale::testing::chat_tiny_model(), engine_opts(1, 512), {});
  auto c = s.client();
  const json schema = json::parse(R"({"type": "object", "properties": {
      "ok": {"type": "boolean"}, "n": {"enum": [1, 2, 3]},
      "mode": {"anyOf": [{"const": "fast"}, {"type": "null"}]}},
      "required": ["ok", "n", "mode"], "additionalProperties": false})");
  json body = chat_body("Give me JSON", 200);
  body["response_format"] = {
      {"type", "json_schema"},
      {"json_schema", {{"name", "answer"}, {"schema", schema}, {"strict", true}}}};
  for (const bool stream : {false, true}) {
    body["stream"] = stream;
    auto r = post(c, "/v1/chat/completions", body.dump());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    std::string content, finish;
    if (!stream) {
      const json j = json::parse(r->body);
      content = j["choices"][0]["message"]["content"];
      finish = j["choices"][0]["finish_reason"];
    } else {
      for (const std::string& e : sse_data(r->body)) {
        if (e == "[DONE]") break;
        const json ch = json::parse(e)["choices"][0];
        if (ch["delta"].contains("content")) content += ch["delta"]["content"].get<std::string>();
        if (ch["finish_reason"].is_string()) finish = ch["finish_reason"];
      }
    }
    EXPECT_EQ(finish, "stop") << content;
    const json v = json::parse(content, nullptr, false);
    ASSERT_TRUE(v.is_object()) << content;
    EXPECT_TRUE(v["ok"].is_boolean()) << content;
    EXPECT_TRUE(v["n"] == 1 || v["n"] == 2 || v["n"] == 3) << content;
    EXPECT_TRUE(v["mode"] == "fast" || v["mode"].is_null()) << content;
    EXPECT_EQ(v.size(), 3u) << content;
  }
  // A strict function named by tool_choice: its arguments follow the schema.
  json tb = chat_body("Call it", 200);
  tb["tools"] = {{{"type", "function"},
                  {"function", {{"name", "set_mode"}, {"strict", true}, {"parameters", schema}}}}};
  tb["tool_choice"] = {{"type", "function"}, {"function", {{"name", "set_mode"}}}};
  auto r = post(c, "/v1/chat/completions", tb.dump());
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  const json j = json::parse(r->body);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "tool_calls") << r->body;
  ASSERT_EQ(j["choices"][0]["message"]["tool_calls"].size(), 1u) << r->body;
  const json& f = j["choices"][0]["message"]["tool_calls"][0]["function"];
  EXPECT_EQ(f["name"], "set_mode");
  const json args = json::parse(f["arguments"].get<std::string>(), nullptr, false);
  ASSERT_TRUE(args.is_object()) << f;
  EXPECT_TRUE(args["ok"].is_boolean()) << f;
  EXPECT_EQ(args.size(), 3u) << f;
  // Keywords not supported are named.
  json bad = body;
  bad["response_format"]["json_schema"]["schema"]["properties"]["ok"] = {{"type", "string"},
                                                                         {"pattern", "a+"}};
  expect_error(post(c, "/v1/chat/completions", bad.dump()), 400, "",
               "response_format.json_schema.schema.properties.ok.pattern");
  bad = body;
  bad["response_format"]["json_schema"].erase("schema");
  expect_error(post(c, "/v1/chat/completions", bad.dump()), 400, "",
               "response_format.json_schema.schema");
  tb["tools"][0]["function"]["parameters"] = {{"type", "object"}, {"minProperties", 1}};
  expect_error(post(c, "/v1/chat/completions", tb.dump()), 400, "",
               "tools[0].function.parameters.minProperties");
}

// ------------------------------------------------------------------ the context cache on disk

namespace {

// `whale serve` as a child process (so that it can be killed with SIGKILL), stderr to a file.
struct ServeProcess {
  pid_t pid = -1;
  int port = 0;
  std::string log;
  ServeProcess(const std::string& model, const std::vector<std::string>& extra) {
    log = (fs::temp_directory_path() /
           ("whale_disk_" + std::to_string(getpid()) + "_" + std::to_string(counter()++) + ".log"))
              .string();
    std::vector<std::string> args = {WHALE_BINARY, "serve", "-m", model, "--port", "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    pid = fork();
    if (pid == 0) {
      FILE* f = std::freopen(log.c_str(), "w", stderr);
      (void)f;
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 600 && port == 0; ++i) {
      std::this_thread::sleep_for(50ms);
      std::ifstream in(log);
      const std::string text((std::istreambuf_iterator<char>(in)), {});
      if (const size_t at = text.find("listening on http://127.0.0.1:"); at != std::string::npos)
        port = std::atoi(text.c_str() + at + 30);
    }
  }
  ~ServeProcess() { stop(SIGTERM); }
  void stop(int sig) {
    if (pid <= 0) return;
    kill(pid, sig);
    int st = 0;
    waitpid(pid, &st, 0);
    pid = -1;
    fs::remove(log);
  }
  static int& counter() {
    static int n = 0;
    return n;
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_read_timeout(120s);
    return c;
  }
};

// A completion of `prompt` (text or token ids; greedy, `max_tokens`): (text, cache hit tokens,
// seconds).
std::tuple<std::string, int64_t, double> complete(const ServeProcess& p, const json& prompt,
                                                  int max_tokens) {
  const auto t0 = std::chrono::steady_clock::now();
  auto r = post(p.client(), "/v1/completions",
                json{{"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}}.dump());
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!r || r->status != 200) return {"", -1, secs};
  const json j = json::parse(r->body);
  return {j["choices"][0]["text"], j["usage"]["prompt_cache_hit_tokens"], secs};
}

// Waits until the server's disk cache holds `n` entries (the writer thread is done).
bool wait_disk_entries(const ServeProcess& p, double n) {
  for (int i = 0; i < 200; ++i) {
    auto m = p.client().Get("/metrics");
    if (m && metric(m->body, "whale_disk_cache_entries") >= n) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

}  // namespace

// A long prompt's prefix survives a SIGKILL and a restart: the restarted server reuses it (cache
// hit, the same text, a faster first token; the ratio is printed); damaged, truncated, foreign and
// half-written files are removed and never served; another KV type is another model.
TEST(Server, DiskCacheSurvivesRestartsAndDamage) {
  const std::string model = whale::testing::scripted_model(
      "fim-add", "    return a + b", "scripted-r1.json", whale::testing::kTokenizerDir, "fim");
  const fs::path dir = fs::temp_directory_path() / ("whale_disk_cache_" + std::to_string(getpid()));
  fs::remove_all(dir);
  const std::vector<std::string> opts = {"--cache-dir", dir.string(), "--ctx", "4096"};
  std::string prompt;
  for (int i = 0; prompt.size() < 9000; ++i) prompt += "word" + std::to_string(i % 97) + " ";
  // The timed requests send token ids: the time to first token is then prefill (cold) against
  // a disk read (warm), without the tokenizer's share, which both pay alike.
  const std::vector<int32_t> ids = Tokenizer::load(model).encode(prompt, true);
  ASSERT_GT(ids.size(), 1900u);
  std::string cold_text;
  double cold = 0, warm = 0;
  {
    ServeProcess a(model, opts);
    ASSERT_GT(a.port, 0);
    for (int i = 0; i < 3; ++i) complete(a, "warm up", 1);  // first-use costs out of the timing
    auto [text, hit, secs] = complete(a, ids, 1);
    ASSERT_LE(hit, 1);  // <｜begin▁of▁sentence｜>, from the warm-up
    cold_text = text;
    cold = secs;
    ASSERT_TRUE(wait_disk_entries(a, 1));
    a.stop(SIGKILL);
  }
  {
    ServeProcess b(model, opts);
    ASSERT_GT(b.port, 0);
    for (int i = 0; i < 3; ++i) complete(b, "warm up", 1);
    auto [text, hit, secs] = complete(b, ids, 1);
    EXPECT_GT(hit, 1900) << "the prefix did not come back from disk";
    EXPECT_EQ(text, cold_text);
    warm = secs;
    auto m = b.client().Get("/metrics");
    ASSERT_TRUE(m);
    EXPECT_EQ(metric(m->body, "whale_disk_cache_hits_total"), 1);
  }
  std::printf(
      "disk cache: 2000-token prompt, first token cold %.1f ms, from disk %.1f ms (%.0fx)\n",
      cold * 1e3, warm * 1e3, cold / warm);
  // Speed is a benchmark (README: 10x and more on a quiet machine); here only the direction, which
  // holds even on a loaded one.
  EXPECT_LT(warm, cold);

  // Damage every entry (one byte flipped in the KV), add a half-written and a foreign file.
  int damaged = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    std::fstream f(e.path(), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(std::streamoff(e.file_size() / 2));
    char c = 0;
    f.read(&c, 1);
    f.seekp(std::streamoff(e.file_size() / 2));
    c ^= 0x5A;
    f.write(&c, 1);
    ++damaged;
  }
  ASSERT_GE(damaged, 1);
  std::ofstream(dir / "0123456789abcdef.kv.tmp.99") << "half";
  std::ofstream(dir / "fedcba9876543210.kv") << "WHALEKV1 not really";
  {
    ServeProcess c(model, opts);
    ASSERT_GT(c.port, 0);
    EXPECT_FALSE(fs::exists(dir / "0123456789abcdef.kv.tmp.99"));
    EXPECT_FALSE(fs::exists(dir / "fedcba9876543210.kv"));
    auto [text, hit, secs] = complete(c, prompt, 1);
    EXPECT_LE(hit, 1) << "a damaged entry was served";
    EXPECT_EQ(text, cold_text);
    auto m = c.client().Get("/metrics");
    ASSERT_TRUE(m);
    EXPECT_GE(metric(m->body, "whale_disk_cache_damaged_total"), 2);
    ASSERT_TRUE(wait_disk_entries(c, 1));  // rewritten from this run
  }
  // Killed right after answering (the write may be in flight), twice: whatever is on disk
  // then gives the cold answer or none.
  std::string p2;
  for (int round = 0; round < 2; ++round) {
    p2 = "round " + std::to_string(round) + " " + prompt.substr(0, 1500);
    std::string want;
    {
      ServeProcess k(model, opts);
      want = std::get<0>(complete(k, p2, 2));
      k.stop(SIGKILL);
    }
    ServeProcess r(model, opts);
    EXPECT_EQ(std::get<0>(complete(r, p2, 2)), want) << round;
  }
  // Another KV type: the entries are foreign.
  {
    std::vector<std::string> bf16 = opts;
    bf16.insert(bf16.end(), {"--kv-type", "bf16"});
    ServeProcess q(model, bf16);
    EXPECT_LE(std::get<1>(complete(q, p2, 1)), 0);
  }
  fs::remove_all(dir);
}

// FIM with each tokenizer's own tokens: Qwen's <|fim_prefix|>/<|fim_suffix|>/<|fim_middle|> for an
// R1-Distill-Qwen model; a tokenizer without FIM tokens is a 400 naming `suffix`.
TEST(Server, FimUsesTheTokenizersOwnTokensOrSaysItHasNone) {
  {
    const std::string dir = whale::testing::scripted_distill_qwen(
        "distill-qwen-four",
        "Okay, the user wants a sum. Two plus two makes four.\n</think>\n\nThe answer is 4!");
    Running s(dir, engine_opts(), {});
    auto r = post(s.client(), "/v1/completions",
                  json{{"prompt", "def f():"}, {"suffix", "\nf()"}, {"max_tokens", 1}}.dump());
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto want =
        s.tok.encode("<|fim_prefix|>def f():<|fim_suffix|>\nf()<|fim_middle|>", s.tok.add_bos());
    EXPECT_EQ(json::parse(r->body)["usage"]["prompt_tokens"], want.size());
  }
  // chat-tiny with its FIM tokens renamed.
  const fs::path base = whale::testing::chat_tiny_model();
  const fs::path dir = base.parent_path() / ("chat-tiny-nofim-" + std::to_string(getpid()));
  fs::create_directories(dir);
  for (const auto& e : fs::directory_iterator(base))
    if (e.path().filename() != "tokenizer.json")
      fs::create_symlink(e.path(), dir / e.path().filename());
  json tj = json::parse(std::ifstream(base / "tokenizer.json"));
  for (json& t : tj["added_tokens"]) {
    std::string c = t["content"];
    if (const size_t at = c.find("fim"); at != std::string::npos)
      t["content"] = c.replace(at, 3, "mif");
  }
  std::ofstream(dir / "tokenizer.json") << tj.dump();
  {
    Running s(dir.string(), engine_opts(), {});
    expect_error(post(s.client(), "/v1/completions",
                      json{{"prompt", "a"}, {"suffix", "b"}, {"max_tokens", 1}}.dump()),
                 400, "", "suffix");
    auto r = post(s.client(), "/v1/completions", json{{"prompt", "a"}, {"max_tokens", 1}}.dump());
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200) << r->body;
  }
  fs::remove_all(dir);
}
