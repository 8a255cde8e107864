// HTTP/1.x request framing and head rewriting for the server's front end (serve/http_framing.h):
// where requests end when they arrive in pieces, the errors RFC 9112 asks for, and the heads
// passed to the backend and back to the client.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "serve/http_framing.h"

using namespace whale::serve;

namespace {

constexpr size_t kHead = 8192, kBody = 1 << 16;

RequestFrame frame(const std::string& s, size_t max_head = kHead, size_t max_body = kBody) {
  return frame_request(s, max_head, max_body);
}

// Every proper prefix of `req` needs more bytes; the whole is complete with total_len == size,
// and the same with another request appended (pipelining).
void expect_frames_exactly(const std::string& req) {
  for (size_t i = 0; i < req.size(); ++i) {
    const RequestFrame f = frame(req.substr(0, i));
    ASSERT_EQ(f.state, FrameState::kNeedMore) << "prefix " << i << ": " << f.error;
  }
  RequestFrame f = frame(req);
  ASSERT_EQ(f.state, FrameState::kComplete) << f.error;
  EXPECT_EQ(f.total_len, req.size());
  f = frame(req + "GET /health HTTP/1.1\r\n\r\n");
  ASSERT_EQ(f.state, FrameState::kComplete);
  EXPECT_EQ(f.total_len, req.size());
}

void expect_error(const std::string& req, int status) {
  const RequestFrame f = frame(req);
  EXPECT_EQ(f.state, FrameState::kError) << req;
  EXPECT_EQ(f.status, status) << req << " -> " << f.error;
  EXPECT_FALSE(f.error.empty());
}

}  // namespace

TEST(HttpFraming, ContentLengthAndBodilessRequests) {
  expect_frames_exactly("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
  expect_frames_exactly(
      "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n{\"a\": 123}\n");
  expect_frames_exactly("POST /x HTTP/1.1\r\ncontent-length:   0  \r\n\r\n");
  // Repeated equal Content-Length fields are one length.
  expect_frames_exactly("POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc");
  // Bare LF line ends are tolerated; leading empty lines are skipped and counted.
  expect_frames_exactly("\r\n\nPOST /x HTTP/1.1\nContent-Length: 2\n\nhi");
  const RequestFrame f = frame("POST /x HTTP/1.1\r\nContent-Length: 4\r\n\r\nab");
  EXPECT_EQ(f.state, FrameState::kNeedMore);
  EXPECT_TRUE(f.head_done);
  EXPECT_EQ(f.head_len, 39u);
}

TEST(HttpFraming, ChunkedBodiesEndAtTheLastChunkAndTrailer) {
  expect_frames_exactly(
      "POST /x HTTP/1.1\r\nTransfer-Encoding: "
      "chunked\r\n\r\n5\r\nhello\r\n1;ext=1\r\n!\r\n0\r\n\r\n");
  expect_frames_exactly(
      "POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\nA\r\n0123456789\r\n0\r\nX-T: "
      "1\r\n\r\n");
  expect_frames_exactly("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
  // A chunk's data may contain anything, also what looks like a line end or a last chunk.
  expect_frames_exactly(
      "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n7\r\n0\r\n\r\n\r\n\r\n0\r\n\r\n");
  expect_error("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n", 400);
  expect_error("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabX\r\n0\r\n\r\n", 400);
  expect_error("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n", 400);
  // Over the body bound as soon as a chunk size says so, before its data arrives.
  expect_error("POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10001\r\n", 413);
}

TEST(HttpFraming, ErrorsNameTheProblemWithTheRightStatus) {
  expect_error("POST /x HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400);
  expect_error("POST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400);
  expect_error("POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400);
  expect_error("POST /x HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n", 400);
  expect_error("POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400);
  expect_error("POST /x HTTP/1.1\r\nContent-Length: 65537\r\n\r\n", 413);
  expect_error("POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501);
  expect_error("POST /x HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400);
  expect_error("GET /x HTTP/2.0\r\n\r\n", 505);
  expect_error("GET /x FTP/1.1\r\n\r\n", 400);
  expect_error("GET  /x HTTP/1.1\r\n\r\n", 400);
  expect_error("GET /x\r\n\r\n", 400);
  expect_error("G(T /x HTTP/1.1\r\n\r\n", 400);
  expect_error("GET /x HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400);
  expect_error("GET /x HTTP/1.1\r\nHost : x\r\n\r\n", 400);
  expect_error("GET /x HTTP/1.1\r\nno colon\r\n\r\n", 400);
  expect_error("POST /x HTTP/1.1\r\nExpect: 200-ok\r\n\r\n", 417);
  // A head over the bound is 431 whether or not it is complete.
  std::string big = "GET /x HTTP/1.1\r\nX: ";
  big.append(kHead, 'a').append("\r\n");
  expect_error(big, 431);
  expect_error(std::string(big).append("\r\n"), 431);
  // An incomplete head is not judged before it is complete.
  EXPECT_EQ(frame("G(T /x HTTP/1.1\r\n").state, FrameState::kNeedMore);
}

TEST(HttpFraming, ConnectionAndExpectFields) {
  EXPECT_TRUE(frame("GET / HTTP/1.1\r\n\r\n").keep_alive);
  EXPECT_FALSE(frame("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n").keep_alive);
  EXPECT_FALSE(frame("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n").keep_alive);
  EXPECT_FALSE(frame("GET / HTTP/1.0\r\n\r\n").keep_alive);
  EXPECT_TRUE(frame("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
  EXPECT_TRUE(frame("GET / HTTP/1.0\r\n\r\n").http10);
  EXPECT_TRUE(frame("HEAD / HTTP/1.1\r\n\r\n").head_method);
  const RequestFrame f =
      frame("POST /x HTTP/1.1\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n");
  EXPECT_EQ(f.state, FrameState::kNeedMore);
  EXPECT_TRUE(f.head_done && f.expect_continue);
}

TEST(HttpFraming, BackendHeadDropsHopByHopFieldsAndCloses) {
  const std::string head =
      "\r\nPOST /v1/chat/completions?x=1 HTTP/1.1\nHost: a\r\nConnection: keep-alive, Upgrade\r\n"
      "Keep-Alive: timeout=5\r\nExpect: 100-continue\r\nUpgrade: h2c\r\nTE: trailers\r\n"
      "Authorization: Bearer k\r\nContent-Length: 2\r\nTransfer-Encoding-Extra: y\r\n\r\n";
  EXPECT_EQ(backend_request_head(head),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer k\r\n"
            "Content-Length: 2\r\nTransfer-Encoding-Extra: y\r\nConnection: close\r\n\r\n");
}

TEST(HttpFraming, ClientResponseHeadKeepsTheConnectionOnlyWhenTheResponseEndsByItself) {
  bool close_after = false;
  const std::string sized =
      "HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\nKeep-Alive: x\r\n\r\n";
  EXPECT_EQ(client_response_head(sized, true, false, false, &close_after),
            "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\n");
  EXPECT_FALSE(close_after);
  EXPECT_EQ(client_response_head(sized, true, true, false, &close_after),
            "HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_FALSE(close_after);
  EXPECT_EQ(client_response_head(sized, false, false, false, &close_after),
            "HTTP/1.1 200 OK\r\nContent-Length: 15\r\nConnection: close\r\n\r\n");
  EXPECT_TRUE(close_after);
  // A chunked stream ends by itself; a body that only the close ends does not.
  client_response_head("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
                       true, false, false, &close_after);
  EXPECT_FALSE(close_after);
  client_response_head("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", true, false, false,
                       &close_after);
  EXPECT_TRUE(close_after);
  client_response_head("HTTP/1.1 204 No Content\r\n\r\n", true, false, false, &close_after);
  EXPECT_FALSE(close_after);
  client_response_head("HTTP/1.1 200 OK\r\n\r\n", true, false, /*head_method=*/true, &close_after);
  EXPECT_FALSE(close_after);
  EXPECT_EQ(client_response_head("garbage\r\n\r\n", true, false, false, &close_after), "");
  EXPECT_EQ(response_head_end("HTTP/1.1 200 OK\r\nA: b\r\n\r\nbody"), 25u);
  EXPECT_EQ(response_head_end("HTTP/1.1 200 OK\r\nA: b\r\n"), 0u);
}

TEST(HttpFraming, ErrorResponsesAreCompleteHttpWithAnOpenAIBody) {
  const std::string r = front_error_response(503, "busy", "too_many_connections");
  const size_t end = response_head_end(r);
  ASSERT_GT(end, 0u);
  EXPECT_TRUE(r.starts_with("HTTP/1.1 503 Service Unavailable\r\n"));
  EXPECT_NE(r.find("Retry-After: 1\r\n"), std::string::npos);
  const std::string body = r.substr(end);
  EXPECT_NE(r.find("Content-Length: " + std::to_string(body.size()) + "\r\n"), std::string::npos);
  const auto j = nlohmann::json::parse(body);
  EXPECT_EQ(j["error"]["message"], "busy");
  EXPECT_EQ(j["error"]["code"], "too_many_connections");
  EXPECT_EQ(j["error"]["type"], "server_error");
}

// Random requests cut at random places: framing the prefix never claims more than it has, and a
// complete request frames to exactly its length.
TEST(HttpFraming, RandomRequestsInRandomPieces) {
  std::mt19937 rng(7);
  for (int it = 0; it < 300; ++it) {
    std::string body(rng() % 300, 'x');
    for (char& c : body) c = char(rng() % 256);
    std::string req = "POST /p HTTP/1.1\r\nHost: h\r\n";
    if (rng() % 2) {
      req += "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    } else {
      req += "Transfer-Encoding: chunked\r\n\r\n";
      for (size_t pos = 0; pos < body.size();) {
        const size_t n = std::min<size_t>(body.size() - pos, 1 + rng() % 64);
        char size[16];
        std::snprintf(size, sizeof size, "%zx", n);
        req += std::string(size) + "\r\n" + body.substr(pos, n) + "\r\n";
        pos += n;
      }
      req += "0\r\n\r\n";
    }
    for (int cut = 0; cut < 5; ++cut) {
      const size_t at = rng() % req.size();
      const RequestFrame f = frame(req.substr(0, at));
      ASSERT_EQ(f.state, FrameState::kNeedMore) << it << " " << at << ": " << f.error;
    }
    const RequestFrame f = frame(req);
    ASSERT_EQ(f.state, FrameState::kComplete) << f.error;
    EXPECT_EQ(f.total_len, req.size());
  }
}
