/*
 * alert: webhook alerts on a background thread (see alert.h).
 *
 * API, in order: create, destroy, post, stragglers, counts.
 *
 * The loop thread only appends to `q` (a ring of queue_max items, under mu) and signals `cv`;
 * the sender thread takes the oldest item, POSTs it with libcurl (one easy handle, reused), and
 * on a retryable failure waits its back-off on `cv` (so destroy wakes it) before trying again.
 * Rate limiting happens at post time, per kind: `kinds` keeps the last time a kind was queued
 * and how many were suppressed since (said in the next text of that kind).
 *
 * Invariants: q holds at most queue_max items; an item is counted once as sent, failed or
 * dropped; the sender owns the item it works on (copied out of the ring); `stopping` is set
 * once, by destroy, and the thread then flushes with one attempt per item until its 3 s
 * deadline. Straggler streaks (`streak`, per rank) are touched by the loop thread only.
 */
#include "alert.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "common/log.h"

#define TEXT_MAX 2048
#define KIND_MAX 32
#define MAX_KINDS 16
#define FLUSH_MS 3000
#define BACKOFF_CAP_MS 60000

typedef struct {
  char kind[KIND_MAX];
  char text[TEXT_MAX];
} item_t;

typedef struct {
  char kind[KIND_MAX];
  int64_t last_ms; /* monotonic time it was last queued */
  int used;
  uint64_t suppressed; /* since the last one queued */
} kind_t;

struct gy_alert {
  gy_alert_opts_t o;
  char *url, *run_name;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t thread;
  int started;
  int stopping;
  item_t *q;
  int qhead, qn;
  kind_t kinds[MAX_KINDS];
  uint64_t sent, suppressed, failed, dropped;
  /* straggler streaks (loop thread only) */
  int *streak;
  int nstreak;
};

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init(void) {
  curl_global_init(CURL_GLOBAL_DEFAULT);
}

static size_t discard(char *p, size_t size, size_t n, void *ud) {
  (void)p;
  (void)ud;
  return size * n;
}

/* One POST. 0: delivered (2xx); 1: retryable (transport error, 429, 5xx); -1: refused for good.
 * why gets the reason when not delivered. */
static int post_once(gy_alert_t *a, CURL *c, const char *body, long timeout_ms, char *why,
                     size_t len) {
  struct curl_slist *hdr = curl_slist_append(NULL, "Content-Type: application/json");
  curl_easy_reset(c);
  curl_easy_setopt(c, CURLOPT_URL, a->url);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdr);
  curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L);
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, timeout_ms > 0 ? timeout_ms : 1L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
  curl_easy_setopt(c, CURLOPT_USERAGENT, "gyro-controller");
  CURLcode rc = curl_easy_perform(c);
  curl_slist_free_all(hdr);
  if (rc != CURLE_OK) {
    snprintf(why, len, "%s", curl_easy_strerror(rc));
    return 1;
  }
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  if (status >= 200 && status < 300) return 0;
  snprintf(why, len, "HTTP status %ld", status);
  return status == 429 || status >= 500 ? 1 : -1;
}

static void count(gy_alert_t *a, const char *kind, const char *outcome, uint64_t *ctr) {
  (*ctr)++;
  gy_telemetry_alert(a->o.telemetry, kind, outcome);
}

static void *sender(void *ud) {
  gy_alert_t *a = ud;
  CURL *c = curl_easy_init();
  int64_t deadline = 0;
  pthread_mutex_lock(&a->mu);
  for (;;) {
    while (!a->qn && !a->stopping)
      pthread_cond_wait(&a->cv, &a->mu);
    if (!a->qn) break; /* stopping, nothing left */
    if (a->stopping && !deadline) deadline = mono_ms() + FLUSH_MS;
    item_t it = a->q[a->qhead];
    a->qhead = (a->qhead + 1) % a->o.queue_max;
    a->qn--;
    if (!c || (deadline && mono_ms() >= deadline)) {
      count(a, it.kind, "dropped", &a->dropped);
      continue;
    }
    char *body = NULL;
    json_t *j = json_pack("{s:s}", "text", it.text);
    if (j) body = json_dumps(j, JSON_COMPACT);
    json_decref(j);
    if (!body) {
      count(a, it.kind, "failed", &a->failed);
      continue;
    }
    int delay = a->o.backoff_ms, attempt = 0, r = 1;
    char why[256] = "";
    while (r == 1) {
      attempt++;
      long tmo = a->o.timeout_ms;
      if (deadline) {
        int64_t left = deadline - mono_ms();
        if (left <= 0) break;
        if (left < tmo) tmo = (long)left;
      }
      pthread_mutex_unlock(&a->mu);
      r = post_once(a, c, body, tmo, why, sizeof(why));
      pthread_mutex_lock(&a->mu);
      if (r != 1 || attempt >= a->o.max_attempts || a->stopping) break;
      gy_log(GY_LOG_WARN, "alert", "webhook attempt %d for %s failed (%s): retrying in %d ms",
             attempt, it.kind, why, delay);
      struct timespec ts;
      clock_gettime(CLOCK_REALTIME, &ts);
      int64_t ns = ts.tv_nsec + (int64_t)delay * 1000000;
      ts.tv_sec += (time_t)(ns / 1000000000);
      ts.tv_nsec = (long)(ns % 1000000000);
      while (!a->stopping && pthread_cond_timedwait(&a->cv, &a->mu, &ts) != ETIMEDOUT) {
      }
      if (a->stopping) break; /* shutting down: no more waiting attempts on this one */
      delay = delay * 2 > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : delay * 2;
    }
    free(body);
    if (r == 0) {
      count(a, it.kind, "sent", &a->sent);
    } else {
      count(a, it.kind, "failed", &a->failed);
      gy_log(GY_LOG_WARN, "alert", "webhook alert %s not delivered after %d attempt(s): %s",
             it.kind, attempt, why[0] ? why : "shutting down");
    }
  }
  pthread_mutex_unlock(&a->mu);
  if (c) curl_easy_cleanup(c);
  return NULL;
}

int gy_alert_create(gy_alert_t **out, const gy_alert_opts_t *opts, char *errmsg, size_t errlen) {
  *out = NULL;
  gy_alert_opts_t o = *opts;
  if (!o.url || (strncmp(o.url, "http://", 7) && strncmp(o.url, "https://", 8)) ||
      !o.url[o.url[4] == 's' ? 8 : 7] || strpbrk(o.url, " \t\r\n")) {
    gy_errmsg(errmsg, errlen, "webhook URL '%s' is not http://HOST... or https://HOST...",
              o.url ? o.url : "");
    return GY_EINVAL;
  }
  if (o.max_attempts < 0 || o.backoff_ms < 0 || o.timeout_ms < 0 || o.queue_max < 0 ||
      o.straggler_steps < 0 || o.straggler_frac < 0 || o.straggler_frac >= 1) {
    gy_errmsg(errmsg, errlen,
              "alert options: counts and delays must be >= 0, "
              "straggler_frac in [0, 1)");
    return GY_EINVAL;
  }
  if (!o.min_interval_ms) o.min_interval_ms = 300000;
  if (!o.max_attempts) o.max_attempts = 5;
  if (!o.backoff_ms) o.backoff_ms = 1000;
  if (!o.timeout_ms) o.timeout_ms = 5000;
  if (!o.queue_max) o.queue_max = 64;
  if (o.straggler_frac == 0) o.straggler_frac = 0.5;
  if (!o.straggler_steps) o.straggler_steps = 20;
  pthread_once(&curl_once, curl_init);
  gy_alert_t *a = calloc(1, sizeof(*a));
  if (!a) goto oom;
  a->o = o;
  a->url = strdup(o.url);
  a->run_name = strdup(opts->run_name ? opts->run_name : "");
  a->q = calloc((size_t)o.queue_max, sizeof(item_t));
  a->o.url = a->o.run_name = NULL;
  if (!a->url || !a->run_name || !a->q) goto oom_free;
  pthread_mutex_init(&a->mu, NULL);
  pthread_cond_init(&a->cv, NULL);
  if (pthread_create(&a->thread, NULL, sender, a)) {
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
    goto oom_free;
  }
  a->started = 1;
  *out = a;
  return 0;
oom_free:
  free(a->url);
  free(a->run_name);
  free(a->q);
  free(a);
oom:
  gy_errmsg(errmsg, errlen, "alert: out of memory (or no thread)");
  return GY_ENOMEM;
}

void gy_alert_destroy(gy_alert_t *a) {
  if (!a) return;
  if (a->started) {
    pthread_mutex_lock(&a->mu);
    a->stopping = 1;
    pthread_cond_broadcast(&a->cv);
    pthread_mutex_unlock(&a->mu);
    pthread_join(a->thread, NULL);
    pthread_cond_destroy(&a->cv);
    pthread_mutex_destroy(&a->mu);
  }
  free(a->streak);
  free(a->url);
  free(a->run_name);
  free(a->q);
  free(a);
}

static const char *label(const char *kind) {
  if (!strcmp(kind, "halted")) return "HALTED";
  if (!strcmp(kind, "repeated_spikes")) return "repeated spikes";
  if (!strcmp(kind, "straggler")) return "straggler";
  if (!strcmp(kind, "anomaly")) return "anomaly";
  if (!strcmp(kind, "hardware")) return "hardware anomaly";
  return kind;
}

int gy_alert_post(gy_alert_t *a, const char *kind, int64_t step, const char *text) {
  if (!a) return 0;
  if (!kind || !*kind) kind = "alert";
  int64_t now = mono_ms();
  pthread_mutex_lock(&a->mu);
  kind_t *k = NULL, *free_slot = NULL;
  for (int i = 0; i < MAX_KINDS && !k; i++) {
    if (a->kinds[i].used && !strncmp(a->kinds[i].kind, kind, KIND_MAX - 1)) k = &a->kinds[i];
    if (!a->kinds[i].used && !free_slot) free_slot = &a->kinds[i];
  }
  if (!k && free_slot) {
    k = free_slot;
    k->used = 1;
    snprintf(k->kind, sizeof(k->kind), "%s", kind);
    k->last_ms = INT64_MIN / 2;
  }
  if (k && a->o.min_interval_ms > 0 && now - k->last_ms < a->o.min_interval_ms) {
    k->suppressed++;
    a->suppressed++;
    pthread_mutex_unlock(&a->mu);
    gy_telemetry_alert(a->o.telemetry, kind, "suppressed");
    gy_log(GY_LOG_INFO, "alert", "%s alert at step %lld suppressed (rate limit)", kind,
           (long long)step);
    return 0;
  }
  uint64_t supp = k ? k->suppressed : 0;
  if (k) {
    k->last_ms = now;
    k->suppressed = 0;
  }
  if (a->qn == a->o.queue_max) { /* full: the oldest waiting alert goes */
    item_t *old = &a->q[a->qhead];
    a->qhead = (a->qhead + 1) % a->o.queue_max;
    a->qn--;
    a->dropped++;
    gy_telemetry_alert(a->o.telemetry, old->kind, "dropped");
  }
  item_t *it = &a->q[(a->qhead + a->qn++) % a->o.queue_max];
  snprintf(it->kind, sizeof(it->kind), "%s", kind);
  char more[128] = "";
  if (supp)
    snprintf(more, sizeof(more), " (%llu more %s alert%s suppressed since the last one)",
             (unsigned long long)supp, label(kind), supp > 1 ? "s" : "");
  snprintf(it->text, sizeof(it->text), "[gyro] run %s: %s at step %lld: %.1900s%s",
           a->run_name[0] ? a->run_name : "?", label(kind), (long long)step, text ? text : "",
           more);
  pthread_cond_signal(&a->cv);
  pthread_mutex_unlock(&a->mu);
  return 1;
}

int gy_alert_stragglers(gy_alert_t *a, int64_t step, int nranks,
                        double (*rank_rate)(const void *ud, int rank), const void *ud, char *msg,
                        size_t msglen) {
  if (!a || nranks < 2 || !rank_rate) return 0;
  if (nranks > a->nstreak) {
    int *s = realloc(a->streak, (size_t)nranks * sizeof(int));
    if (!s) return 0;
    memset(s + a->nstreak, 0, (size_t)(nranks - a->nstreak) * sizeof(int));
    a->streak = s;
    a->nstreak = nranks;
  }
  double sum = 0;
  int known = 0;
  for (int r = 0; r < nranks; r++) {
    double v = rank_rate(ud, r);
    if (v > 0 && isfinite(v)) {
      sum += v;
      known++;
    }
  }
  int fired = 0;
  for (int r = 0; r < nranks; r++) {
    double v = rank_rate(ud, r);
    if (!(v > 0 && isfinite(v)) || known < 2) {
      a->streak[r] = 0;
      continue;
    }
    double others = (sum - v) / (known - 1);
    if (v >= a->o.straggler_frac * others) {
      a->streak[r] = 0;
      continue;
    }
    if (++a->streak[r] != a->o.straggler_steps) continue;
    char text[256];
    snprintf(text, sizeof(text),
             "rank %d runs at %.0f tokens/s, %.0f%% of the other ranks' mean %.0f, for %d steps", r,
             v, 100.0 * v / others, others, a->o.straggler_steps);
    gy_alert_post(a, "straggler", step, text);
    if (!fired && msg && msglen) snprintf(msg, msglen, "%s", text);
    fired = 1;
  }
  return fired;
}

void gy_alert_counts(gy_alert_t *a, uint64_t *sent, uint64_t *suppressed, uint64_t *failed,
                     uint64_t *dropped) {
  uint64_t z = 0;
  if (!a) {
    *sent = *suppressed = *failed = *dropped = z;
    return;
  }
  pthread_mutex_lock(&a->mu);
  *sent = a->sent;
  *suppressed = a->suppressed;
  *failed = a->failed;
  *dropped = a->dropped;
  pthread_mutex_unlock(&a->mu);
}
