/*
 * comm_gloo: the Gloo shim, the only C++ in gyro. It gives comm.c a C API (comm_internal.h) over
 * Gloo's C++ one (Debian libgloo-dev): TCP transport, full-mesh rendezvous through gyro's store,
 * all-reduce (BCUBE for small buffers, RING for large ones), all-gather, broadcast, barrier.
 *
 * API, in order: gy__gloo_create() connects one group; gy__gloo_allreduce(), _allgather(),
 * _broadcast(), _barrier() run one collective each; gy__gloo_abort() kills the context from any
 * thread; gy__gloo_destroy() releases it.
 *
 * Invariants and the traps they answer (shared notes on Gloo from C):
 *  - No exception crosses the C boundary: every entry point catches std::exception (Gloo's
 *    IoException, Exception and EnforceNotMet, which derives only from std::exception) and
 *    anything else, and returns GY_ECOMM with the message in errmsg.
 *  - After the first error the context is dead: later calls fail at once with the first error's
 *    message, and its connections are closed at once (with RST), so the peers blocked on this
 *    rank see the failure in milliseconds instead of at their timeout, and pass it on the same
 *    way: one dead rank brings down the whole group quickly. A dead context is never reused (trap
 *    4): the caller builds a new gang with a new prefix.
 *  - The rendezvous goes through StoreAdapter, a gloo::rendezvous::Store on top of gy_store_t
 *    whose get() and wait() honour the configured timeout; Gloo's own stores wait a fixed 30 s
 *    (trap 2). Keys are "<prefix>/<gloo key>", the prefix unique per group and gang generation,
 *    so a new gang never reads an old gang's addresses (trap 3).
 *  - The context's timeout is set before connectFullMesh(), so it bounds the connection and
 *    every collective; Gloo reports a hung (stopped) peer at that timeout.
 *  - Each collective gets the next tag of a per-context counter; since every member issues the
 *    same calls in the same order (comm.h's contract), the tags agree (trap 5).
 *  - SIGPIPE (trap 1: Gloo writes without MSG_NOSIGNAL) is ignored by comm.c before any context
 *    is built.
 *  - abort() marks the context dead and shuts its sockets down (shutdown_pairs() below): calls
 *    in flight on other threads fail at once, the peers read end of file at once, and every
 *    later call fails without touching the network.
 *  - A transfer in flight when its peer dies is woken by the watcher (below) within about
 *    0.3 s; Gloo alone would leave it waiting until the timeout.
 *  - MAX propagates NaN (a NaN on one rank is seen by all), unlike std::max.
 */
#include "worker/comm_internal.h"

#include <gloo/allgather.h>
#include <gloo/allreduce.h>
#include <gloo/barrier.h>
#include <gloo/broadcast.h>
#include <gloo/rendezvous/context.h>
#include <gloo/rendezvous/store.h>
#include <gloo/transport/context.h>
#include <gloo/transport/unbound_buffer.h>
#include <gloo/transport/tcp/address.h>
#include <gloo/transport/tcp/device.h>

#include <dirent.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <mutex>
#include <new>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/err.h"

namespace {

// ---- the in-flight watcher (Gloo's gap) ----
//
// When a peer dies while a message to or from it is half transferred, Gloo's device loop sees
// the reset, fails the operations it still tracks and closes the pair, but the transfer in
// progress is tracked nowhere (tcp::Pair::signalException walks bound buffers, queued
// notifications and pending unbound operations, not the unbound buffer of the op being
// written or read): its waiter sleeps until the collective's timeout (30 s by default; on
// loopback about one SIGKILL in six). The watcher closes that gap from outside Gloo:
//  - every unbound buffer a collective creates is wrapped (WatchedBuffer, through a proxy
//    transport context installed after the rendezvous) and listed in a Registry while it lives;
//  - a thread per communicator, while a collective is in flight, checks every 100 ms that each
//    pair's socket still exists (Gloo closes it only on an error); once one has been gone for
//    200 ms and the collective still runs, it aborts the waits of every listed buffer, again
//    every 100 ms until the collective returns;
//  - a collective during which the watcher fired fails (GY_ECOMM), even if Gloo then returned:
//    an aborted wait returns as if its data had arrived.

struct Registry {
  std::mutex mu;
  std::set<gloo::transport::UnboundBuffer *> live; // the inner buffers of live WatchedBuffers
};

// Forwards everything to the transport's own buffer (which is what pairs see: the inner
// buffer's send() passes itself); lists that buffer while it lives.
class WatchedBuffer : public gloo::transport::UnboundBuffer {
public:
  WatchedBuffer(std::unique_ptr<gloo::transport::UnboundBuffer> in, std::shared_ptr<Registry> r)
      : gloo::transport::UnboundBuffer(in->ptr, in->size), in_(std::move(in)), reg_(std::move(r)) {
    std::lock_guard<std::mutex> lock(reg_->mu);
    reg_->live.insert(in_.get());
  }
  ~WatchedBuffer() override {
    std::lock_guard<std::mutex> lock(reg_->mu); // the watcher never touches a freed buffer
    reg_->live.erase(in_.get());
    in_.reset();
  }
  bool waitRecv(int *rank, std::chrono::milliseconds timeout) override {
    return in_->waitRecv(rank, timeout);
  }
  bool waitSend(int *rank, std::chrono::milliseconds timeout) override {
    return in_->waitSend(rank, timeout);
  }
  void abortWaitRecv() override {
    in_->abortWaitRecv();
  }
  void abortWaitSend() override {
    in_->abortWaitSend();
  }
  void send(int dst, uint64_t slot, size_t offset, size_t nbytes) override {
    in_->send(dst, slot, offset, nbytes);
  }
  void recv(int src, uint64_t slot, size_t offset, size_t nbytes) override {
    in_->recv(src, slot, offset, nbytes);
  }
  void recv(std::vector<int> srcs, uint64_t slot, size_t offset, size_t nbytes) override {
    in_->recv(std::move(srcs), slot, offset, nbytes);
  }

private:
  std::unique_ptr<gloo::transport::UnboundBuffer> in_;
  std::shared_ptr<Registry> reg_;
};

// The transport context the collectives see: the real one, with its unbound buffers wrapped.
class WatchedTransport : public gloo::transport::Context {
public:
  WatchedTransport(std::shared_ptr<gloo::transport::Context> real, std::shared_ptr<Registry> r)
      : gloo::transport::Context(real->rank, real->size), real_(std::move(real)),
        reg_(std::move(r)) {}
  std::unique_ptr<gloo::transport::Pair> &getPair(int rank) override {
    return real_->getPair(rank);
  }
  std::unique_ptr<gloo::transport::Pair> &createPair(int rank) override {
    return real_->createPair(rank);
  }
  std::unique_ptr<gloo::transport::UnboundBuffer> createUnboundBuffer(void *ptr,
                                                                      size_t size) override {
    return std::unique_ptr<gloo::transport::UnboundBuffer>(
        new WatchedBuffer(real_->createUnboundBuffer(ptr, size), reg_));
  }

private:
  std::shared_ptr<gloo::transport::Context> real_;
  std::shared_ptr<Registry> reg_;
};

// The rendezvous context, able to put WatchedTransport in front of its transport context.
class WatchedContext : public gloo::rendezvous::Context {
public:
  using gloo::rendezvous::Context::Context;
  void watch(const std::shared_ptr<Registry> &reg) {
    transportContext_ = std::make_shared<WatchedTransport>(transportContext_, reg);
  }
};

} // namespace

struct gy_gloo {
  std::string prefix;
  int rank = 0, size = 0;
  std::chrono::milliseconds timeout{0};
  // Declared before ctx so that it is destroyed after it: pairs unregister from the device loop.
  std::shared_ptr<gloo::transport::Device> dev;
  std::shared_ptr<WatchedContext> ctx;
  uint32_t tag = 0; // next collective's tag; only the calling thread touches it
  std::atomic<bool> dead{false};
  std::atomic<bool> aborted{false};
  std::mutex mu;   // guards why
  std::string why; // the first error
  // the watcher (see above)
  std::shared_ptr<Registry> reg = std::make_shared<Registry>();
  std::vector<sockaddr_storage> pair_addrs; // each connected pair's local socket address
  std::atomic<int> inflight{0};             // collectives running now
  std::atomic<bool> fired{false};           // the watcher woke a collective's waits
  std::mutex wmu;                           // guards stop, with wcv
  std::condition_variable wcv;
  bool stop = false;
  std::thread watcher;
  ~gy_gloo() {
    {
      std::lock_guard<std::mutex> lock(wmu);
      stop = true;
    }
    wcv.notify_all();
    if (watcher.joinable()) watcher.join();
  }
};

namespace {

void set_err(char *errmsg, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

void set_err(char *errmsg, size_t errlen, const char *fmt, ...) {
  if (!errmsg || !errlen) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errmsg, errlen, fmt, ap);
  va_end(ap);
}

void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, nullptr);
}

// A failure of the rendezvous store, thrown through Gloo's connectFullMesh() and caught below.
struct StoreError : std::runtime_error {
  explicit StoreError(const std::string &m) : std::runtime_error(m) {}
};

// gloo::rendezvous::Store on top of gy_store_t; every wait is bounded by the configured timeout.
class StoreAdapter : public gloo::rendezvous::Store {
public:
  StoreAdapter(gy_store_t *s, const std::string &prefix, std::chrono::milliseconds timeout)
      : s_(s), prefix_(prefix), timeout_(timeout) {}

  void set(const std::string &key, const std::vector<char> &data) override {
    std::string k = prefix_ + "/" + key;
    int rc = s_->ops->set(s_, k.c_str(), data.data(), data.size());
    if (rc != 0) throw StoreError("rendezvous store: set '" + k + "': " + gy_strerror(rc));
  }

  std::vector<char> get(const std::string &key) override {
    std::string k = prefix_ + "/" + key;
    void *v = nullptr;
    size_t n = 0;
    int rc = s_->ops->get(s_, k.c_str(), &v, &n, (int)timeout_.count());
    if (rc != 0) throw StoreError(fail_msg("get", k, rc));
    std::vector<char> out(static_cast<char *>(v), static_cast<char *>(v) + n);
    free(v);
    return out;
  }

  void wait(const std::vector<std::string> &keys) override {
    wait(keys, timeout_);
  }

  void wait(const std::vector<std::string> &keys,
            const std::chrono::milliseconds &timeout) override {
    auto limit = (timeout.count() > 0 && timeout < timeout_) ? timeout : timeout_;
    std::vector<std::string> full;
    std::vector<const char *> ptrs;
    for (const auto &k : keys)
      full.push_back(prefix_ + "/" + k);
    for (const auto &k : full)
      ptrs.push_back(k.c_str());
    auto deadline = std::chrono::steady_clock::now() + limit;
    long pause = 1;
    for (;;) {
      int rc = s_->ops->check(s_, ptrs.data(), (int)ptrs.size());
      if (rc == 1) return;
      if (rc < 0) throw StoreError(fail_msg("wait", full.empty() ? prefix_ : full[0], rc));
      if (std::chrono::steady_clock::now() >= deadline) {
        throw StoreError(fail_msg("wait", full.empty() ? prefix_ : full[0], GY_ETIMEDOUT));
      }
      sleep_ms(pause);
      pause = pause * 2 > 50 ? 50 : pause * 2;
    }
  }

private:
  std::string fail_msg(const char *what, const std::string &key, int rc) {
    if (rc == GY_ETIMEDOUT) {
      return "rendezvous store: " + std::string(what) + " '" + key + "': no answer within " +
             std::to_string(timeout_.count()) + " ms (a rank did not join)";
    }
    return "rendezvous store: " + std::string(what) + " '" + key + "': " + gy_strerror(rc);
  }

  gy_store_t *s_;
  std::string prefix_;
  std::chrono::milliseconds timeout_;
};

// Reduction functions in Gloo's untyped shape: c = a (op) b over n elements.
template <typename T> void red_sum(void *c_, const void *a_, const void *b_, size_t n) {
  T *c = static_cast<T *>(c_);
  const T *a = static_cast<const T *>(a_);
  const T *b = static_cast<const T *>(b_);
  for (size_t i = 0; i < n; i++)
    c[i] = a[i] + b[i];
}

template <typename T> void red_max(void *c_, const void *a_, const void *b_, size_t n) {
  T *c = static_cast<T *>(c_);
  const T *a = static_cast<const T *>(a_);
  const T *b = static_cast<const T *>(b_);
  // x != x is true only for NaN: a NaN wins, so every rank sees it.
  for (size_t i = 0; i < n; i++)
    c[i] = (a[i] != a[i] || a[i] > b[i]) ? a[i] : b[i];
}

// Up to this many bytes an all-reduce is latency-bound and takes BCUBE (log2(n) exchange
// rounds); above it, RING (2(n-1) steps, bandwidth-optimal). Measured with bench/allreduce on
// the 2-core VM: equal at 2 ranks, BCUBE about 4 ms against 4-8 ms at 4 ranks for 4 KiB-512 KiB;
// BCUBE's results were checked for 2 to 8 ranks.
constexpr size_t kBcubeMaxBytes = 256 << 10;

template <typename T> void run_allreduce(gy_gloo *g, void *buf, size_t count, gy_redop_t op) {
  gloo::AllreduceOptions o(g->ctx);
  o.setOutput<T>(static_cast<T *>(buf), count);
  o.setReduceFunction(op == GY_OP_MAX ? &red_max<T> : &red_sum<T>);
  o.setAlgorithm(count * sizeof(T) <= kBcubeMaxBytes ? gloo::AllreduceOptions::Algorithm::BCUBE
                                                     : gloo::AllreduceOptions::Algorithm::RING);
  o.setTag(g->tag++);
  gloo::allreduce(o);
}

// True when a and b are the same IPv4 or IPv6 address and port.
bool same_addr(const sockaddr_storage &a, const sockaddr_storage &b) {
  if (a.ss_family != b.ss_family) return false;
  if (a.ss_family == AF_INET) {
    auto &x = reinterpret_cast<const sockaddr_in &>(a);
    auto &y = reinterpret_cast<const sockaddr_in &>(b);
    return x.sin_port == y.sin_port && x.sin_addr.s_addr == y.sin_addr.s_addr;
  }
  if (a.ss_family == AF_INET6) {
    auto &x = reinterpret_cast<const sockaddr_in6 &>(a);
    auto &y = reinterpret_cast<const sockaddr_in6 &>(b);
    return x.sin6_port == y.sin6_port &&
           memcmp(&x.sin6_addr, &y.sin6_addr, sizeof(x.sin6_addr)) == 0;
  }
  return false;
}

// Gloo fails the operations pending on a context only from inside, when a socket reports an
// error or end of file, or at a timeout; the calls that would do it from outside
// (tcp::Context::signalException) sit in headers this Debian package cannot compile (it lacks
// gloo/common/memory.h). So abort() shuts down the context's connected sockets: the device loop
// reads end of file on each and fails the pair's pending operations, which wakes every thread
// waiting in a collective, exactly as when the peer dies. A connected pair's address() is its
// socket's local address (getsockname), unique on the machine, which finds the socket among the
// process's descriptors. Returns the number of sockets shut down.
// Calls fn(fd) for each of the process's connected sockets whose local address is one of the
// context's pairs'. Returns how many there were.
template <typename F> int each_pair_socket(const gy_gloo *g, F &&fn) {
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  int n = 0;
  while (struct dirent *de = readdir(d)) {
    if (de->d_name[0] < '0' || de->d_name[0] > '9') continue;
    int fd = atoi(de->d_name);
    sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int listening = 0;
    socklen_t ilen = sizeof(listening);
    if (getsockname(fd, reinterpret_cast<sockaddr *>(&ss), &len) != 0) continue;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ilen) != 0 || listening) continue;
    for (const auto &m : g->pair_addrs) {
      if (same_addr(ss, m)) {
        fn(fd);
        n++;
        break;
      }
    }
  }
  closedir(d);
  return n;
}

int shutdown_pairs(gy_gloo *g) {
  int n = 0;
  each_pair_socket(g, [&](int fd) {
    if (shutdown(fd, SHUT_RDWR) == 0) n++;
  });
  return n;
}

// Aborts the waits of every unbound buffer alive now (the watcher's move).
void wake_waits(gy_gloo *g) {
  std::lock_guard<std::mutex> lock(g->reg->mu);
  for (auto *b : g->reg->live) {
    b->abortWaitRecv();
    b->abortWaitSend();
  }
}

// The watcher thread: see "the in-flight watcher" above.
void watch_main(gy_gloo *g) {
  using clock = std::chrono::steady_clock;
  const auto grace = std::chrono::milliseconds(200);
  clock::time_point gone_since{};
  bool gone = false;
  std::unique_lock<std::mutex> lock(g->wmu);
  while (!g->stop) {
    g->wcv.wait_for(lock, std::chrono::milliseconds(100));
    if (g->stop) break;
    if (g->inflight.load() == 0) {
      gone = false;
      continue;
    }
    lock.unlock();
    int alive = each_pair_socket(g, [](int) {});
    bool lost = alive >= 0 && alive < (int)g->pair_addrs.size();
    if (lost && !gone) {
      gone = true;
      gone_since = clock::now();
    } else if (lost && clock::now() - gone_since >= grace && g->inflight.load() > 0) {
      g->fired.store(true);
      wake_waits(g);
    }
    lock.lock();
  }
}

// Records the first error and marks the context dead (any thread).
void mark_dead(gy_gloo *g, const char *what, const char *msg) {
  std::lock_guard<std::mutex> lock(g->mu);
  if (g->why.empty()) g->why = std::string(what) + ": " + msg;
  g->dead.store(true);
}

// Records the first error, kills the context and writes the message for the caller.
void fail(gy_gloo *g, const char *what, const char *msg, char *errmsg, size_t errlen) {
  mark_dead(g, what, msg);
  try {
    if (g->ctx) g->ctx->closeConnections();
  } catch (...) {
    // The context is dead either way; a failed close changes nothing for the caller.
  }
  set_err(errmsg, errlen, "gloo %s (rank %d of %d, group %s): %s", what, g->rank, g->size,
          g->prefix.c_str(), msg);
}

// Runs fn (one collective) and turns any exception into GY_ECOMM.
template <typename F>
int guarded(gy_gloo *g, const char *what, char *errmsg, size_t errlen, F &&fn) {
  if (!g) {
    set_err(errmsg, errlen, "gloo %s: no communicator", what);
    return GY_EINVAL;
  }
  if (g->dead.load()) {
    std::lock_guard<std::mutex> lock(g->mu);
    set_err(errmsg, errlen,
            "gloo %s (rank %d of %d, group %s): communicator is dead after an "
            "earlier error (%s)",
            what, g->rank, g->size, g->prefix.c_str(), g->why.c_str());
    return GY_ECOMM;
  }
  // Counts this call as in flight for the watcher while it runs.
  struct Inflight {
    gy_gloo *g;
    explicit Inflight(gy_gloo *x) : g(x) {
      g->inflight++;
    }
    ~Inflight() {
      g->inflight--;
    }
  };
  try {
    {
      Inflight in(g);
      fn();
    }
    if (!g->fired.load()) return 0;
    // The watcher woke this call's waits: what Gloo returned is not data.
    fail(g, what,
         "a connection to a peer was lost while a transfer was in flight (the peer died or "
         "closed); the collective was woken before its timeout",
         errmsg, errlen);
  } catch (const std::exception &e) {
    // A call woken by abort() fails with the socket's end of file; say what really happened.
    std::string m = g->aborted.load() ? std::string("aborted by the caller (") + e.what() + ")"
                                      : std::string(e.what());
    fail(g, what, m.c_str(), errmsg, errlen);
  } catch (...) {
    fail(g, what, "unknown C++ exception", errmsg, errlen);
  }
  return GY_ECOMM;
}

} // namespace

extern "C" int gy__gloo_create(gy_gloo_t **out, gy_store_t *store, const char *prefix,
                               const char *host, int rank, int size, int timeout_ms, char *errmsg,
                               size_t errlen) {
  if (!out) return GY_EINVAL;
  *out = nullptr;
  if (!store || !prefix || !prefix[0] || !host || size < 2 || rank < 0 || rank >= size ||
      timeout_ms <= 0) {
    set_err(errmsg, errlen, "gloo: bad arguments (rank %d of %d, timeout %d ms)", rank, size,
            timeout_ms);
    return GY_EINVAL;
  }
  gy_gloo *g = new (std::nothrow) gy_gloo;
  if (!g) {
    set_err(errmsg, errlen, "gloo: out of memory");
    return GY_ENOMEM;
  }
  try {
    g->prefix = prefix;
    g->rank = rank;
    g->size = size;
    g->timeout = std::chrono::milliseconds(timeout_ms);
    gloo::transport::tcp::attr attr;
    attr.hostname = host;
    g->dev = gloo::transport::tcp::CreateDevice(attr);
    g->ctx = std::make_shared<WatchedContext>(rank, size);
    g->ctx->setTimeout(g->timeout); // before connecting: it bounds the connection too
    StoreAdapter st(store, g->prefix, g->timeout);
    g->ctx->connectFullMesh(st, g->dev);
    g->ctx->watch(g->reg);
    for (int i = 0; i < size; i++) {
      if (i == rank) continue;
      auto &p = g->ctx->getPair(i);
      if (!p) continue;
      auto *a = dynamic_cast<const gloo::transport::tcp::Address *>(&p->address());
      if (a) g->pair_addrs.push_back(a->getSockaddr());
    }
    g->watcher = std::thread(watch_main, g);
  } catch (const std::exception &e) {
    set_err(errmsg, errlen, "gloo: connecting rank %d of %d (group %s, host %s): %s", rank, size,
            prefix, host, e.what());
    delete g;
    return GY_ECOMM;
  } catch (...) {
    set_err(errmsg, errlen, "gloo: connecting rank %d of %d (group %s): unknown C++ exception",
            rank, size, prefix);
    delete g;
    return GY_ECOMM;
  }
  *out = g;
  return 0;
}

extern "C" int gy__gloo_allreduce(gy_gloo_t *g, void *buf, size_t count, gy_dtype_t dt,
                                  gy_redop_t op, char *errmsg, size_t errlen) {
  return guarded(g, "allreduce", errmsg, errlen, [&] {
    switch (dt) {
    case GY_DT_F32:
      run_allreduce<float>(g, buf, count, op);
      break;
    case GY_DT_F64:
      run_allreduce<double>(g, buf, count, op);
      break;
    case GY_DT_I32:
      run_allreduce<int32_t>(g, buf, count, op);
      break;
    default:
      throw std::invalid_argument("unknown dtype " + std::to_string((int)dt));
    }
  });
}

extern "C" int gy__gloo_allgather(gy_gloo_t *g, const void *in, void *out, size_t count,
                                  gy_dtype_t dt, char *errmsg, size_t errlen) {
  return guarded(g, "allgather", errmsg, errlen, [&] {
    size_t bytes = count * gy_dtype_size(dt);
    uint8_t *o = static_cast<uint8_t *>(out);
    gloo::AllgatherOptions opt(g->ctx);
    // Without an input Gloo works in place on the rank's block of out.
    if (in != o + (size_t)g->rank * bytes) {
      opt.setInput<uint8_t>(static_cast<uint8_t *>(const_cast<void *>(in)), bytes);
    }
    opt.setOutput<uint8_t>(o, bytes * (size_t)g->size);
    opt.setTag(g->tag++);
    gloo::allgather(opt);
  });
}

extern "C" int gy__gloo_broadcast(gy_gloo_t *g, void *buf, size_t count, gy_dtype_t dt, int root,
                                  char *errmsg, size_t errlen) {
  return guarded(g, "broadcast", errmsg, errlen, [&] {
    gloo::BroadcastOptions opt(g->ctx);
    opt.setOutput<uint8_t>(static_cast<uint8_t *>(buf), count * gy_dtype_size(dt));
    opt.setRoot(root);
    opt.setTag(g->tag++);
    gloo::broadcast(opt);
  });
}

extern "C" int gy__gloo_barrier(gy_gloo_t *g, char *errmsg, size_t errlen) {
  return guarded(g, "barrier", errmsg, errlen, [&] {
    gloo::BarrierOptions opt(g->ctx);
    opt.setTag(g->tag++);
    gloo::barrier(opt);
  });
}

extern "C" void gy__gloo_abort(gy_gloo_t *g) {
  if (!g || g->aborted.exchange(true)) return;
  bool was_dead = g->dead.load();
  mark_dead(g, "abort", "aborted by the caller");
  if (was_dead) return; /* its connections are closed already */
  try {
    // Shut the sockets down without closing them: the device loop fails the operations in
    // flight (waking their threads) and closes them; the peers read end of file at once.
    if (g->ctx && shutdown_pairs(g) == 0) g->ctx->closeConnections();
  } catch (...) {
    // Nothing to add: the context is dead and the next call says so.
  }
}

extern "C" void gy__gloo_destroy(gy_gloo_t *g) {
  try {
    delete g;
  } catch (...) {
    // Destructors do not throw in practice; never let anything cross into C.
  }
}
