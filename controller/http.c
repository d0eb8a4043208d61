/*
 * http: the controller's HTTP server (see http.h) on libmicrohttpd's own threads.
 *
 * API, in order: parse_addr, create, port, destroy.
 *
 * Every request is answered in the first call of the access handler (no request here has a
 * body: one that announces a body is refused before it is read), so no per-connection state
 * exists. Dynamic answers are built from the telemetry record (which copies under its lock and
 * formats outside it) into a malloc'ed buffer handed to libmicrohttpd (MHD_RESPMEM_MUST_FREE);
 * the embedded assets are served from their static arrays (MHD_RESPMEM_PERSISTENT).
 *
 * Invariants: the handler reads only the telemetry record and the static asset table; the
 * daemon's threads stop in destroy before the record may go (the caller destroys the server
 * first). Request size is bounded by the connection memory limit (16 KiB: request line and
 * headers); at most 64 connections, each idle for at most 15 s.
 */
#include "http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"

#define MEMORY_LIMIT (16 * 1024)
#define MAX_CONNECTIONS 64
#define IDLE_TIMEOUT_S 15

struct gy_http {
  struct MHD_Daemon *d;
  gy_telemetry_t *t;
  int port;
};

int gy_http_parse_addr(const char *addr, char *host, size_t hostlen, int *port, char *errmsg,
                       size_t errlen) {
  if (!addr || !*addr) {
    gy_errmsg(errmsg, errlen, "empty address: want HOST:PORT or PORT");
    return GY_EINVAL;
  }
  const char *ps = addr;
  size_t hl = 0;
  const char *h = "127.0.0.1";
  if (addr[0] == '[') { /* [v6]:port */
    const char *close = strchr(addr, ']');
    if (!close || close[1] != ':') {
      gy_errmsg(errmsg, errlen, "'%s' is not [HOST]:PORT", addr);
      return GY_EINVAL;
    }
    h = addr + 1;
    hl = (size_t)(close - addr - 1);
    ps = close + 2;
  } else if (strchr(addr, ':')) {
    const char *colon = strrchr(addr, ':');
    if (strchr(addr, ':') != colon) {
      gy_errmsg(errmsg, errlen, "'%s': write an IPv6 host in brackets: [HOST]:PORT", addr);
      return GY_EINVAL;
    }
    h = addr;
    hl = (size_t)(colon - addr);
    ps = colon + 1;
  } else {
    hl = strlen(h);
  }
  if (!hl || hl >= hostlen) {
    gy_errmsg(errmsg, errlen, "'%s' is not HOST:PORT (empty or too long host)", addr);
    return GY_EINVAL;
  }
  char *end;
  errno = 0;
  long p = strtol(ps, &end, 10);
  if (!*ps || *end || errno || ps[0] == '-' || ps[0] == '+') {
    gy_errmsg(errmsg, errlen, "'%s' is not HOST:PORT (port '%s' is not a number)", addr, ps);
    return GY_EINVAL;
  }
  if (p < 0 || p > 65535) {
    gy_errmsg(errmsg, errlen, "'%s': port %ld is not in [0, 65535]", addr, p);
    return GY_EINVAL;
  }
  memcpy(host, h, hl);
  host[hl] = 0;
  *port = (int)p;
  return 0;
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Queues a response of len bytes from buf (owned: MUST_FREE, or PERSISTENT when persistent). */
static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
                               void *buf, size_t len, int persistent, int nocache) {
  struct MHD_Response *r = MHD_create_response_from_buffer(
      len, buf, persistent ? MHD_RESPMEM_PERSISTENT : MHD_RESPMEM_MUST_FREE);
  if (!r) {
    if (!persistent) free(buf);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  if (nocache) MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (!strncmp(type, "text/html", 9))
    MHD_add_response_header(r, "Content-Security-Policy",
                            "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                            "img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

/* A short text answer. */
static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static enum MHD_Result text(struct MHD_Connection *c, unsigned status, const char *fmt, ...) {
  char *buf = NULL;
  va_list ap;
  va_start(ap, fmt);
  int n = vasprintf(&buf, fmt, ap);
  va_end(ap);
  if (n < 0) return MHD_NO;
  return respond(c, status, "text/plain; charset=utf-8", buf, (size_t)n, 0, 1);
}

static enum MHD_Result json(struct MHD_Connection *c, json_t *o) {
  if (!o) return text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
  char *s = json_dumps(o, JSON_COMPACT);
  json_decref(o);
  if (!s) return text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
  return respond(c, MHD_HTTP_OK, "application/json", s, strlen(s), 0, 1);
}

/* The integer query argument `since` (absent: dflt). 0, or -1 when malformed. */
static int arg_since(struct MHD_Connection *c, long long lo, long long dflt, long long *out) {
  const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "since");
  if (!v) {
    *out = dflt;
    return 0;
  }
  char *end;
  errno = 0;
  long long x = strtoll(v, &end, 10);
  if (!*v || *end || errno || x < lo) return -1;
  *out = x;
  return 0;
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url,
                              const char *method, const char *version, const char *upload_data,
                              size_t *upload_size, void **con_cls) {
  gy_http_t *h = cls;
  (void)version;
  (void)upload_data;
  (void)con_cls;
  if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
    return text(c, MHD_HTTP_METHOD_NOT_ALLOWED, "%s: only GET and HEAD are served\n", method);
  const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
  if ((upload_size && *upload_size) ||
      MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_TRANSFER_ENCODING) ||
      (cl && strcmp(cl, "0")))
    return text(c, MHD_HTTP_BAD_REQUEST, "a request body is not accepted here\n");
  if (!strcmp(url, "/metrics")) {
    char *out;
    size_t len;
    if (gy_telemetry_metrics(h->t, wall_now(), &out, &len))
      return text(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory\n");
    return respond(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", out, len, 0, 1);
  }
  if (!strcmp(url, "/healthz")) return text(c, MHD_HTTP_OK, "ok\n");
  if (!strcmp(url, "/readyz")) {
    char why[256];
    int ready = gy_telemetry_ready(h->t, why, sizeof(why));
    return text(c, ready ? MHD_HTTP_OK : MHD_HTTP_SERVICE_UNAVAILABLE, "%s\n", why);
  }
  if (!strcmp(url, "/api/series")) {
    long long since;
    if (arg_since(c, LLONG_MIN, -1, &since))
      return text(c, MHD_HTTP_BAD_REQUEST, "since: want an integer step\n");
    return json(c, gy_telemetry_series(h->t, (int64_t)since, wall_now()));
  }
  if (!strcmp(url, "/api/events")) {
    long long since;
    if (arg_since(c, 0, 0, &since))
      return text(c, MHD_HTTP_BAD_REQUEST, "since: want an event id >= 0\n");
    return json(c, gy_telemetry_events(h->t, (uint64_t)since, 500));
  }
  if (!strcmp(url, "/api/event_kinds")) return json(c, gy_telemetry_event_kinds());
  if (!strcmp(url, "/api/quarantine")) return json(c, gy_telemetry_quarantine_json(h->t));
  const char *path = !strcmp(url, "/index.html") ? "/" : url;
  for (size_t i = 0; i < gy_dashboard_nassets; i++) {
    const gy_http_asset_t *a = &gy_dashboard_assets[i];
    if (!strcmp(a->path, path))
      return respond(c, MHD_HTTP_OK, a->type, (void *)a->data, a->len, 1, !strcmp(path, "/"));
  }
  return text(c, MHD_HTTP_NOT_FOUND, "not found: %s\n", url);
}

static void mhd_log(void *cls, const char *fmt, va_list ap) {
  (void)cls;
  char msg[512];
  vsnprintf(msg, sizeof(msg), fmt, ap);
  size_t n = strlen(msg);
  while (n && msg[n - 1] == '\n')
    msg[--n] = 0;
  gy_log(GY_LOG_WARN, "http", "%s", msg);
}

int gy_http_create(gy_http_t **out, const gy_http_opts_t *opts, char *errmsg, size_t errlen) {
  *out = NULL;
  char host[256];
  int port, rc;
  if (!opts->telemetry) {
    gy_errmsg(errmsg, errlen, "http: no telemetry record");
    return GY_EINVAL;
  }
  if ((rc = gy_http_parse_addr(opts->addr, host, sizeof(host), &port, errmsg, errlen))) return rc;
  struct addrinfo hints = {0}, *ai = NULL;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  char ps[16];
  snprintf(ps, sizeof(ps), "%d", port);
  int gai = getaddrinfo(host, ps, &hints, &ai);
  if (gai || !ai) {
    gy_errmsg(errmsg, errlen, "'%s': cannot resolve host '%s': %s", opts->addr, host,
              gai_strerror(gai));
    if (ai) freeaddrinfo(ai);
    return GY_EINVAL;
  }
  gy_http_t *h = calloc(1, sizeof(*h));
  if (!h) {
    freeaddrinfo(ai);
    gy_errmsg(errmsg, errlen, "http: out of memory");
    return GY_ENOMEM;
  }
  h->t = opts->telemetry;
  unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
  if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
  unsigned threads = opts->threads > 0 ? (unsigned)opts->threads : 2;
  h->d = MHD_start_daemon(flags, (uint16_t)port, NULL, NULL, handle, h, MHD_OPTION_EXTERNAL_LOGGER,
                          mhd_log, NULL, MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                          MHD_OPTION_THREAD_POOL_SIZE, threads, MHD_OPTION_CONNECTION_LIMIT,
                          (unsigned)MAX_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
                          (unsigned)IDLE_TIMEOUT_S, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
                          (size_t)MEMORY_LIMIT, MHD_OPTION_END);
  freeaddrinfo(ai);
  if (!h->d) {
    gy_errmsg(errmsg, errlen, "cannot listen on %s (address in use or not local?)", opts->addr);
    free(h);
    return GY_EIO;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
  h->port = di ? (int)di->port : port;
  *out = h;
  return 0;
}

int gy_http_port(const gy_http_t *h) {
  return h ? h->port : 0;
}

void gy_http_destroy(gy_http_t *h) {
  if (!h) return;
  if (h->d) MHD_stop_daemon(h->d);
  free(h);
}
