#include "serve/http_framing.h"

#include <algorithm>
#include <cstdint>
#include <optional>

#include "serve/api.h"

namespace whale::serve {

namespace {

// Splits `data` at its first line end (LF, an optional CR before it dropped). Returns false when
// no full line is there.
bool next_line(std::string_view data, size_t& pos, std::string_view& line) {
  const size_t lf = data.find('\n', pos);
  if (lf == std::string_view::npos) return false;
  size_t end = lf;
  if (end > pos && data[end - 1] == '\r') --end;
  line = data.substr(pos, end - pos);
  pos = lf + 1;
  return true;
}

char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? char(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 9110 token characters (method and field names).
bool is_tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), is_tchar);
}

// Calls fn(item) for each comma-separated, trimmed, non-empty item of a field value.
template <class Fn>
void for_each_item(std::string_view v, Fn fn) {
  while (!v.empty()) {
    const size_t comma = v.find(',');
    const std::string_view item = trim(v.substr(0, comma));
    if (!item.empty()) fn(item);
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
}

// A field line "name: value". Returns false when it is not one.
bool split_field(std::string_view line, std::string_view& name, std::string_view& value) {
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return false;
  name = line.substr(0, colon);
  if (!is_token(name)) return false;  // also rejects "name : value" (RFC 9112 5.1)
  value = trim(line.substr(colon + 1));
  return true;
}

bool is_hop_by_hop(std::string_view name) {
  for (std::string_view h :
       {"connection", "keep-alive", "expect", "proxy-connection", "te", "upgrade"})
    if (iequals(name, h)) return true;
  return false;
}

RequestFrame fail(RequestFrame f, int status, std::string message) {
  f.state = FrameState::kError;
  f.status = status;
  f.error = std::move(message);
  return f;
}

// Scans a chunked body starting at `pos`. Returns the offset just past the body (last chunk and
// trailer included), std::nullopt when more bytes are needed, or sets *err.
std::optional<size_t> chunked_end(std::string_view data, size_t pos, size_t max_body, int* status,
                                  std::string* err) {
  uint64_t body = 0;
  for (;;) {
    std::string_view line;
    const size_t line_start = pos;
    if (!next_line(data, pos, line)) {
      if (data.size() - line_start > 1024) {
        *status = 400;
        *err = "chunk size line too long";
      }
      return std::nullopt;
    }
    const std::string_view size_text = trim(line.substr(0, line.find(';')));
    if (size_text.empty() || size_text.size() > 15) {
      *status = 400;
      *err = "invalid chunk size";
      return std::nullopt;
    }
    uint64_t size = 0;
    for (char c : size_text) {
      int d = (c >= '0' && c <= '9')   ? c - '0'
              : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                       : -1;
      if (d < 0) {
        *status = 400;
        *err = "invalid chunk size";
        return std::nullopt;
      }
      size = size * 16 + uint64_t(d);
    }
    body += size;
    if (body > max_body) {
      *status = 413;
      *err = "Request body too large.";
      return std::nullopt;
    }
    if (size == 0) {  // the trailer section: field lines up to an empty line
      for (;;) {
        const size_t t_start = pos;
        if (!next_line(data, pos, line)) {
          if (data.size() - t_start > 8192) {
            *status = 400;
            *err = "chunked trailer too long";
          }
          return std::nullopt;
        }
        if (line.empty()) return pos;
      }
    }
    if (data.size() - pos < size + 1) return std::nullopt;
    pos += size;
    if (data[pos] == '\n') {
      pos += 1;
    } else if (data[pos] == '\r') {
      if (data.size() - pos < 2) return std::nullopt;
      if (data[pos + 1] != '\n') {
        *status = 400;
        *err = "chunk data not followed by a line end";
        return std::nullopt;
      }
      pos += 2;
    } else {
      *status = 400;
      *err = "chunk data not followed by a line end";
      return std::nullopt;
    }
  }
}

}  // namespace

RequestFrame frame_request(std::string_view data, size_t max_head, size_t max_body) {
  RequestFrame f;
  size_t pos = 0;
  // Empty lines before a request line are ignored (RFC 9112 2.2).
  while (pos < data.size() && (data[pos] == '\r' || data[pos] == '\n')) ++pos;
  if (pos > max_head) return fail(f, 400, "request starts with too many empty lines");

  // Find the end of the head before parsing it: a head still arriving is not judged yet.
  size_t end = pos;
  bool found = false;
  {
    std::string_view line;
    size_t p = pos;
    while (next_line(data, p, line)) {
      if (line.empty()) {
        end = p;
        found = true;
        break;
      }
    }
    if (!found) {
      if (data.size() > max_head) return fail(f, 431, "request header fields too large");
      return f;
    }
  }
  if (end > max_head) return fail(f, 431, "request header fields too large");
  f.head_done = true;
  f.head_len = end;

  // Request line: method SP target SP HTTP-version.
  std::string_view line;
  size_t p = pos;
  next_line(data, p, line);
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos)
    return fail(f, 400, "malformed request line");
  const std::string_view method = line.substr(0, sp1);
  const std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string_view version = line.substr(sp2 + 1);
  if (!is_token(method)) return fail(f, 400, "malformed request method");
  if (target.empty()) return fail(f, 400, "empty request target");
  for (char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f)
      return fail(f, 400, "invalid character in the request target");
  if (!version.starts_with("HTTP/")) return fail(f, 400, "malformed HTTP version");
  const bool http10 = version == "HTTP/1.0";
  if (!http10 && version != "HTTP/1.1") return fail(f, 505, "HTTP version not supported");
  f.head_method = method == "HEAD";
  f.http10 = http10;
  f.method = method;
  f.target = target;

  // Fields.
  std::optional<uint64_t> content_length;
  bool chunked = false, has_te = false, conn_close = false, conn_keep = false;
  while (next_line(data, p, line) && !line.empty()) {
    if (line.front() == ' ' || line.front() == '\t')
      return fail(f, 400, "obsolete line folding in a header field");
    std::string_view name, value;
    if (!split_field(line, name, value)) return fail(f, 400, "malformed header field");
    if (iequals(name, "content-length")) {
      if (value.empty() || value.size() > 18 ||
          !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return fail(f, 400, "invalid Content-Length");
      uint64_t n = 0;
      for (char c : value) n = n * 10 + uint64_t(c - '0');
      if (content_length && *content_length != n)
        return fail(f, 400, "conflicting Content-Length fields");
      content_length = n;
    } else if (iequals(name, "transfer-encoding")) {
      has_te = true;
      bool bad = false;
      int items = 0;
      for_each_item(value, [&](std::string_view item) {
        ++items;
        if (iequals(item, "chunked") && !chunked)
          chunked = true;
        else
          bad = true;
      });
      if (bad || items == 0) return fail(f, 501, "unsupported Transfer-Encoding");
    } else if (iequals(name, "connection")) {
      for_each_item(value, [&](std::string_view item) {
        if (iequals(item, "close")) conn_close = true;
        if (iequals(item, "keep-alive")) conn_keep = true;
      });
    } else if (iequals(name, "expect")) {
      if (!iequals(value, "100-continue")) return fail(f, 417, "unsupported Expect value");
      f.expect_continue = true;
    }
  }
  f.keep_alive = !conn_close && (!http10 || conn_keep);
  if (has_te && content_length) return fail(f, 400, "both Content-Length and Transfer-Encoding");
  if (has_te && http10) return fail(f, 400, "Transfer-Encoding in an HTTP/1.0 request");

  if (content_length) {
    if (*content_length > max_body) return fail(f, 413, "Request body too large.");
    if (data.size() - end < *content_length) return f;
    f.total_len = end + size_t(*content_length);
  } else if (chunked) {
    int status = 0;
    std::string err;
    const std::optional<size_t> body_end = chunked_end(data, end, max_body, &status, &err);
    if (status) return fail(f, status, err);
    if (!body_end) return f;
    f.total_len = *body_end;
  } else {
    f.total_len = end;  // no body
  }
  f.state = FrameState::kComplete;
  return f;
}

std::string backend_request_head(std::string_view head) {
  std::string out;
  out.reserve(head.size() + 32);
  size_t pos = 0;
  while (pos < head.size() && (head[pos] == '\r' || head[pos] == '\n')) ++pos;
  std::string_view line;
  bool first = true;
  while (next_line(head, pos, line) && !line.empty()) {
    if (!first) {
      std::string_view name, value;
      if (split_field(line, name, value) && is_hop_by_hop(name)) continue;
    }
    first = false;
    out.append(line).append("\r\n");
  }
  out.append("Connection: close\r\n\r\n");
  return out;
}

size_t response_head_end(std::string_view data) {
  size_t pos = 0;
  std::string_view line;
  while (next_line(data, pos, line))
    if (line.empty()) return pos;
  return 0;
}

std::string client_response_head(std::string_view head, bool keep_alive, bool http10,
                                 bool head_method, bool* close_after) {
  size_t pos = 0;
  std::string_view line;
  if (!next_line(head, pos, line) || !line.starts_with("HTTP/1.") || line.size() < 12) return "";
  const std::string_view status_text = line.substr(9, 3);
  if (!std::all_of(status_text.begin(), status_text.end(),
                   [](char c) { return c >= '0' && c <= '9'; }))
    return "";
  const int status = std::stoi(std::string(status_text));
  std::string out;
  out.reserve(head.size() + 32);
  out.append(line).append("\r\n");
  bool delimited = head_method || status < 200 || status == 204 || status == 304;
  while (next_line(head, pos, line) && !line.empty()) {
    std::string_view name, value;
    if (!split_field(line, name, value)) return "";
    if (iequals(name, "connection") || iequals(name, "keep-alive")) continue;
    if (iequals(name, "content-length")) delimited = true;
    if (iequals(name, "transfer-encoding"))
      for_each_item(value, [&](std::string_view item) {
        if (iequals(item, "chunked")) delimited = true;
      });
    out.append(line).append("\r\n");
  }
  *close_after = !(keep_alive && delimited);
  if (*close_after)
    out.append("Connection: close\r\n");
  else if (http10)
    out.append("Connection: keep-alive\r\n");
  out.append("\r\n");
  return out;
}

std::string front_error_response(int status, std::string_view message, std::string_view code) {
  const char* reason = "Error";
  switch (status) {
    case 400:
      reason = "Bad Request";
      break;
    case 408:
      reason = "Request Timeout";
      break;
    case 413:
      reason = "Payload Too Large";
      break;
    case 417:
      reason = "Expectation Failed";
      break;
    case 431:
      reason = "Request Header Fields Too Large";
      break;
    case 501:
      reason = "Not Implemented";
      break;
    case 502:
      reason = "Bad Gateway";
      break;
    case 503:
      reason = "Service Unavailable";
      break;
    case 505:
      reason = "HTTP Version Not Supported";
      break;
  }
  const std::string type =
      status >= 500 && status != 501 && status != 505 ? "server_error" : "invalid_request_error";
  const std::string body =
      ApiError(status, type, std::string(message), std::string(code)).to_json().dump();
  std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason + "\r\n";
  out += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\nConnection: close\r\n";
  if (status == 503) out += "Retry-After: 1\r\n";
  out += "\r\n" + body;
  return out;
}

}  // namespace whale::serve
