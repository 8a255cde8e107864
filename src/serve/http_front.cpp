#include "serve/http_front.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <unordered_set>

#include "serve/http_framing.h"

namespace whale::serve {

namespace {

timeval to_timeval(double s) {
  if (s < 0) s = 0;
  timeval tv;
  tv.tv_sec = static_cast<time_t>(s);
  tv.tv_usec = static_cast<suseconds_t>((s - double(tv.tv_sec)) * 1e6);
  return tv;
}

constexpr size_t kRelayHighWater = 1 << 20;  // response bytes queued to a client before pausing
constexpr double kLingerSeconds = 2;         // after an error answer: wait for the client's close

}  // namespace

struct HttpFront::Impl {
  // One client connection and, while a request is in flight, its backend connection.
  struct Conn {
    enum class State {
      kFresh,     // accepted, nothing received yet (header deadline from accept)
      kIdle,      // kept alive between requests (idle deadline)
      kHead,      // a request's head is arriving (header deadline)
      kBody,      // its body is arriving (body deadline)
      kInFlight,  // passed to the backend; the response is being relayed
      kClosing,   // a last answer is being written; then shut down and closed
    };
    Impl* f = nullptr;
    bufferevent* client = nullptr;
    bufferevent* backend = nullptr;
    event* timer = nullptr;
    State state = State::kFresh;
    bool counted = false;  // counts toward max_connections (connections answered 503 do not)
    // The request in flight.
    bool keep_alive = true, http10 = false, head_method = false;
    bool response_started = false, close_after = false, sent_continue = false;
    bool backend_paused = false, shut = false;
  };

  FrontOptions opt;
  event_base* base = nullptr;
  evconnlistener* listener = nullptr;
  event* wake = nullptr;    // stop(): an eventfd written from another thread
  event* resume = nullptr;  // re-enables accepting after running out of file descriptors
  int wake_fd = -1;
  sockaddr_in backend_addr{};
  std::unordered_set<Conn*> conns;
  std::atomic<int64_t> open{0}, accepted{0}, rejected{0}, timeouts{0}, bad{0}, backend_errors{0},
      health{0};

  // ---- connection lifetime ----
  void destroy(Conn* c) {
    if (c->backend) bufferevent_free(c->backend);
    if (c->timer) event_free(c->timer);
    if (c->client) bufferevent_free(c->client);
    if (c->counted) open--;
    conns.erase(c);
    delete c;
  }

  void arm(Conn* c, double seconds) {
    const timeval tv = to_timeval(seconds);
    evtimer_add(c->timer, &tv);
  }

  // Writes `answer` (may be empty), then shuts the socket down for writing and waits a little
  // for the client to close, so it reads the answer instead of a reset.
  void close_with(Conn* c, const std::string& answer) {
    if (c->backend) {
      bufferevent_free(c->backend);
      c->backend = nullptr;
    }
    c->state = Conn::State::kClosing;
    evbuffer* in = bufferevent_get_input(c->client);
    evbuffer_drain(in, evbuffer_get_length(in));
    arm(c, opt.write_timeout_s + kLingerSeconds);
    if (!answer.empty()) bufferevent_write(c->client, answer.data(), answer.size());
    if (evbuffer_get_length(bufferevent_get_output(c->client)) == 0) shut_down(c);
  }

  void shut_down(Conn* c) {
    if (c->shut) return;
    c->shut = true;
    shutdown(bufferevent_getfd(c->client), SHUT_WR);
    arm(c, kLingerSeconds);
  }

  // ---- accepting ----
  void accept(evutil_socket_t fd) {
    accepted++;
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    Conn* c = new Conn;
    c->f = this;
    c->client = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    c->timer = evtimer_new(base, on_timer, c);
    if (!c->client || !c->timer) {
      if (!c->client) evutil_closesocket(fd);
      destroy(c);
      return;
    }
    conns.insert(c);
    bufferevent_setcb(c->client, on_client_read, on_client_write, on_client_event, c);
    // Reading stops once a pipelined request's worth is buffered behind one in flight.
    bufferevent_setwatermark(c->client, EV_READ, 0, opt.max_head + opt.max_body + 4096);
    const timeval wt = to_timeval(opt.write_timeout_s);
    bufferevent_set_timeouts(c->client, nullptr, &wt);
    bufferevent_enable(c->client, EV_READ | EV_WRITE);
    if (open >= opt.max_connections) {
      rejected++;
      close_with(c, front_error_response(503,
                                         "The server holds its maximum number of connections; "
                                         "retry shortly.",
                                         "too_many_connections"));
      return;
    }
    c->counted = true;
    open++;
    arm(c, opt.header_timeout_s);
  }

  // ---- requests ----
  // Frames what the client sent; forwards a complete request, answers a broken one. /health is
  // answered here, by the event loop itself, so that a liveness probe needs no worker thread and
  // stays fast however busy the workers are (loopback requests for the routes still show whether
  // those answer).
  void process_input(Conn* c) {
    for (;;) {
      evbuffer* in = bufferevent_get_input(c->client);
      const size_t n = evbuffer_get_length(in);
      if (n == 0) return;
      const char* data = reinterpret_cast<const char*>(evbuffer_pullup(in, -1));
      const RequestFrame fr = frame_request({data, n}, opt.max_head, opt.max_body);
      if (fr.state == FrameState::kError) {
        bad++;
        const char* code = fr.status == 413   ? "request_too_large"
                           : fr.status == 431 ? "headers_too_large"
                                              : "bad_request";
        close_with(c, front_error_response(fr.status, fr.error, code));
        return;
      }
      if (fr.state == FrameState::kNeedMore) {
        if (c->state == Conn::State::kIdle) arm(c, opt.header_timeout_s);
        if (c->state == Conn::State::kIdle || c->state == Conn::State::kFresh)
          c->state = Conn::State::kHead;
        if (fr.head_done && c->state == Conn::State::kHead) {
          c->state = Conn::State::kBody;
          arm(c, opt.body_timeout_s);
          if (fr.expect_continue && !c->sent_continue) {
            static constexpr char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
            bufferevent_write(c->client, kContinue, sizeof kContinue - 1);
            c->sent_continue = true;
          }
        }
        return;
      }
      if ((fr.method == "GET" || fr.method == "HEAD") && fr.target == "/health") {
        health++;
        evbuffer_drain(in, fr.total_len);
        static constexpr char kBody[] = R"({"status":"ok"})";
        std::string r = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                        std::to_string(sizeof kBody - 1) + "\r\n";
        if (!fr.keep_alive)
          r += "Connection: close\r\n";
        else if (fr.http10)
          r += "Connection: keep-alive\r\n";
        r += "\r\n";
        if (!fr.head_method) r += kBody;
        c->sent_continue = false;
        if (!fr.keep_alive) {
          close_with(c, r);
          return;
        }
        bufferevent_write(c->client, r.data(), r.size());
        c->state = Conn::State::kIdle;
        arm(c, opt.idle_timeout_s);
        continue;  // a pipelined request may follow
      }
      forward(c, fr, data);
      return;
    }
  }

  void forward(Conn* c, const RequestFrame& fr, const char* data) {
    evtimer_del(c->timer);
    c->keep_alive = fr.keep_alive;
    c->http10 = fr.http10;
    c->head_method = fr.head_method;
    c->response_started = false;
    c->close_after = false;
    c->sent_continue = false;
    c->state = Conn::State::kInFlight;
    const std::string head = backend_request_head({data, fr.head_len});
    c->backend = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (c->backend) {
      bufferevent_setcb(c->backend, on_backend_read, nullptr, on_backend_event, c);
      bufferevent_enable(c->backend, EV_READ | EV_WRITE);
      bufferevent_write(c->backend, head.data(), head.size());
      bufferevent_write(c->backend, data + fr.head_len, fr.total_len - fr.head_len);
    }
    evbuffer_drain(bufferevent_get_input(c->client), fr.total_len);
    if (!c->backend ||
        bufferevent_socket_connect(c->backend, reinterpret_cast<const sockaddr*>(&backend_addr),
                                   sizeof backend_addr) != 0)
      backend_failed(c);
  }

  void backend_failed(Conn* c) {
    backend_errors++;
    if (c->response_started) {  // a response cut short: the client must not take it as whole
      destroy(c);
      return;
    }
    close_with(c, front_error_response(502, "The model server did not answer.", "bad_gateway"));
  }

  // Moves what the backend sent to the client, the head rewritten for the client's connection.
  // Returns false when `c` was destroyed.
  bool relay(Conn* c) {
    evbuffer* in = bufferevent_get_input(c->backend);
    if (!c->response_started) {
      const size_t n = evbuffer_get_length(in);
      if (n == 0) return true;
      const char* data = reinterpret_cast<const char*>(evbuffer_pullup(in, -1));
      const size_t end = response_head_end({data, n});
      if (end == 0) {
        if (n <= 65536) return true;
        backend_failed(c);
        return false;
      }
      const std::string head = client_response_head({data, end}, c->keep_alive, c->http10,
                                                    c->head_method, &c->close_after);
      if (head.empty()) {
        backend_failed(c);
        return false;
      }
      evbuffer_drain(in, end);
      bufferevent_write(c->client, head.data(), head.size());
      c->response_started = true;
    }
    evbuffer* out = bufferevent_get_output(c->client);
    evbuffer_add_buffer(out, in);
    if (evbuffer_get_length(out) > kRelayHighWater && !c->backend_paused) {
      bufferevent_disable(c->backend, EV_READ);
      c->backend_paused = true;
    }
    return true;
  }

  // The backend closed: the response is complete.
  void response_done(Conn* c) {
    if (!relay(c)) return;
    if (!c->response_started) {
      backend_failed(c);
      return;
    }
    bufferevent_free(c->backend);
    c->backend = nullptr;
    c->backend_paused = false;
    if (c->close_after) {
      close_with(c, "");  // (anything pipelined after a closing request is dropped)
      return;
    }
    c->state = Conn::State::kIdle;
    arm(c, opt.idle_timeout_s);
    process_input(c);  // a pipelined request may be waiting
  }

  // ---- libevent callbacks ----
  static void on_accept(evconnlistener*, evutil_socket_t fd, sockaddr*, int, void* arg) {
    static_cast<Impl*>(arg)->accept(fd);
  }

  static void on_accept_error(evconnlistener* l, void* arg) {
    // Out of file descriptors (or another transient accept error): pause accepting briefly
    // instead of spinning; the waiting connections stay in the kernel's backlog.
    Impl* f = static_cast<Impl*>(arg);
    evconnlistener_disable(l);
    const timeval tv = to_timeval(0.1);
    evtimer_add(f->resume, &tv);
  }

  static void on_resume(evutil_socket_t, short, void* arg) {
    evconnlistener_enable(static_cast<Impl*>(arg)->listener);
  }

  static void on_wake(evutil_socket_t fd, short, void* arg) {
    uint64_t v;
    [[maybe_unused]] ssize_t r = ::read(fd, &v, sizeof v);
    event_base_loopbreak(static_cast<Impl*>(arg)->base);
  }

  static void on_client_read(bufferevent* bev, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    switch (c->state) {
      case Conn::State::kClosing:
        evbuffer_drain(bufferevent_get_input(bev), evbuffer_get_length(bufferevent_get_input(bev)));
        return;
      case Conn::State::kInFlight:
        return;  // the next request waits for this response
      default:
        c->f->process_input(c);
    }
  }

  static void on_client_write(bufferevent*, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    if (c->backend_paused && c->backend) {
      c->backend_paused = false;
      bufferevent_enable(c->backend, EV_READ);
    }
    if (c->state == Conn::State::kClosing) c->f->shut_down(c);
  }

  static void on_client_event(bufferevent*, short what, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    // End of stream, an error or a write timeout: the client is gone (or stuck). Freeing the
    // backend connection tells the handler, which cancels the request.
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) c->f->destroy(c);
  }

  static void on_backend_read(bufferevent*, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    c->f->relay(c);
  }

  static void on_backend_event(bufferevent*, short what, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    if (what & BEV_EVENT_CONNECTED) return;
    if (what & BEV_EVENT_EOF)
      c->f->response_done(c);
    else if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT))
      c->f->backend_failed(c);
  }

  static void on_timer(evutil_socket_t, short, void* arg) {
    Conn* c = static_cast<Conn*>(arg);
    Impl* f = c->f;
    switch (c->state) {
      case Conn::State::kHead:
      case Conn::State::kBody:
        f->timeouts++;
        f->close_with(c, front_error_response(408,
                                              c->state == Conn::State::kHead
                                                  ? "The request head did not arrive in time."
                                                  : "The request body did not arrive in time.",
                                              "request_timeout"));
        return;
      case Conn::State::kInFlight:
        return;
      default:  // nothing asked (fresh or idle), or done closing
        f->destroy(c);
    }
  }
};

HttpFront::HttpFront(FrontOptions opt) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(opt);
  impl_->base = event_base_new();
  impl_->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (!impl_->base || impl_->wake_fd < 0) throw std::runtime_error("cannot start the event loop");
  impl_->wake =
      event_new(impl_->base, impl_->wake_fd, EV_READ | EV_PERSIST, Impl::on_wake, impl_.get());
  impl_->resume = evtimer_new(impl_->base, Impl::on_resume, impl_.get());
  event_add(impl_->wake, nullptr);
  impl_->backend_addr.sin_family = AF_INET;
  impl_->backend_addr.sin_port = htons(uint16_t(impl_->opt.backend_port));
  impl_->backend_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

HttpFront::~HttpFront() {
  Impl& f = *impl_;
  while (!f.conns.empty()) f.destroy(*f.conns.begin());
  if (f.listener) evconnlistener_free(f.listener);
  event_free(f.wake);
  event_free(f.resume);
  close(f.wake_fd);
  event_base_free(f.base);
}

int HttpFront::bind() {
  Impl& f = *impl_;
  const std::string where = f.opt.host + ":" + std::to_string(f.opt.port);
  evutil_addrinfo hints{}, *res = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE;
  if (evutil_getaddrinfo(f.opt.host.c_str(), std::to_string(f.opt.port).c_str(), &hints, &res) !=
          0 ||
      !res)
    throw std::runtime_error("cannot listen on " + where + " (unknown address)");
  f.listener =
      evconnlistener_new_bind(f.base, Impl::on_accept, &f,
                              LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
                              1024, res->ai_addr, int(res->ai_addrlen));
  evutil_freeaddrinfo(res);
  if (!f.listener)
    throw std::runtime_error("cannot listen on " + where + " (address in use or not available)");
  evconnlistener_set_error_cb(f.listener, Impl::on_accept_error);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(evconnlistener_get_fd(f.listener), reinterpret_cast<sockaddr*>(&ss), &len);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6&>(ss).sin6_port);
  return ntohs(reinterpret_cast<sockaddr_in&>(ss).sin_port);
}

void HttpFront::run() {
  std::signal(SIGPIPE, SIG_IGN);
  event_base_dispatch(impl_->base);
  Impl& f = *impl_;
  while (!f.conns.empty()) f.destroy(*f.conns.begin());
}

void HttpFront::stop() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t r = ::write(impl_->wake_fd, &one, sizeof one);
}

FrontStats HttpFront::stats() const {
  const Impl& f = *impl_;
  return {f.open.load(), f.accepted.load(),       f.rejected.load(), f.timeouts.load(),
          f.bad.load(),  f.backend_errors.load(), f.health.load()};
}

}  // namespace whale::serve
