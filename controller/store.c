/*
 * store: the front of the controller's state store. It parses the URL, applies defaults,
 * turns every public call into one of the back end's few primitives (range, txn, lease
 * grant/revoke/keep-alive, watch) and owns the lease keeper.
 *
 * API in order: create/destroy, get/put/delete/range/revision (get is a range of one key; put
 * and delete are one-op transactions, so both back ends share one write path), txn, cas,
 * leases (grant, revoke, keepalive_once, keep, forget), watches.
 *
 * The lease keeper is one thread per store, started by the first gy_cstore_lease_keep. It
 * refreshes each kept lease every ttl/3 and retries every 250 ms after a failure. A lease is
 * declared lost when the server says it is gone or when a whole TTL has passed since the last
 * successful keep-alive was sent: the server counts its TTL from when it received that
 * keep-alive, which is later, so the holder always learns of the loss first (the leader relies
 * on this to stop acting before a standby can be elected).
 *
 * Invariants: the keeper never holds k_mu while calling the back end or a callback; `busy` is
 * the id whose keep-alive or callback is in flight, and gy_cstore_lease_forget waits for it, so
 * after forget returns no callback runs for that lease.
 */
#include "controller/store.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "controller/store_impl.h"

typedef struct kept {
  struct kept *next;
  int64_t id, ttl_ms;
  int64_t last_ok_ms; /* when the last successful keep-alive was sent */
  int64_t due_ms;
  gy_cstore_lease_lost_cb cb;
  void *ud;
} kept_t;

struct gy_cstore {
  const gy__cstore_vt_t *vt;
  void *be;
  int timeout_ms;
  char *url;
  /* lease keeper */
  pthread_mutex_t k_mu;
  pthread_cond_t k_cv;
  pthread_t k_thread;
  int k_started, k_stop;
  kept_t *kept;
  int64_t busy; /* lease id being refreshed or reported, 0 = none */
  /* watches not yet cancelled (destroy cancels them); under k_mu */
  struct gy_cstore_watch *watches;
};

struct gy_cstore_watch {
  gy_cstore_t *s;
  void *handle;
  struct gy_cstore_watch *next;
};

int64_t gy__cstore_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

char *gy__cstore_prefix_end(const char *prefix) {
  size_t n = strlen(prefix);
  char *end = malloc(n + 1);
  if (!end) return NULL;
  memcpy(end, prefix, n + 1);
  while (n > 0) {
    unsigned char c = (unsigned char)end[n - 1];
    if (c < 0xff) {
      end[n - 1] = (char)(c + 1);
      end[n] = 0;
      return end;
    }
    n--;
  }
  end[0] = 0;
  return end;
}

int gy__cstore_kv_set(gy_cstore_kv_t *kv, const void *key, size_t key_len, const void *value,
                      size_t value_len) {
  kv->key = malloc(key_len + 1);
  kv->value = malloc(value_len + 1);
  if (!kv->key || !kv->value) {
    free(kv->key);
    free(kv->value);
    kv->key = NULL;
    kv->value = NULL;
    return GY_ENOMEM;
  }
  if (key_len) memcpy(kv->key, key, key_len);
  kv->key[key_len] = 0;
  if (value_len) memcpy(kv->value, value, value_len);
  kv->value[value_len] = 0;
  kv->value_len = value_len;
  return 0;
}

void gy_cstore_kv_clear(gy_cstore_kv_t *kv) {
  if (!kv) return;
  free(kv->key);
  free(kv->value);
  memset(kv, 0, sizeof(*kv));
}

void gy_cstore_range_clear(gy_cstore_range_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++)
    gy_cstore_kv_clear(&r->kvs[i]);
  free(r->kvs);
  memset(r, 0, sizeof(*r));
}

void gy_cstore_txn_clear(gy_cstore_txn_result_t *r) {
  if (!r) return;
  for (size_t i = 0; i < r->n; i++)
    gy_cstore_range_clear(&r->results[i].range);
  free(r->results);
  memset(r, 0, sizeof(*r));
}

/* ------------------------------------ create / destroy ------------------------------------ */

int gy_cstore_create(gy_cstore_t **out, const char *url, const gy_cstore_opts_t *opts, char *errmsg,
                     size_t errlen) {
  *out = NULL;
  gy_cstore_opts_t o = {0};
  if (opts) o = *opts;
  if (o.dial_timeout_ms <= 0) o.dial_timeout_ms = 3000;
  if (o.timeout_ms <= 0) o.timeout_ms = 5000;
  if (!url || !*url) {
    gy_errmsg(errmsg, errlen, "store: empty URL (want sqlite:PATH or etcd://host:port[,...])");
    return GY_ECONFIG;
  }
  if ((o.cert_file && !o.key_file) || (!o.cert_file && o.key_file)) {
    gy_errmsg(errmsg, errlen, "store %s: a client certificate needs both cert_file and key_file",
              url);
    return GY_ECONFIG;
  }
  if ((o.username && !o.password) || (!o.username && o.password)) {
    gy_errmsg(errmsg, errlen, "store %s: authentication needs both username and password", url);
    return GY_ECONFIG;
  }
  const gy__cstore_vt_t *vt = NULL;
  const char *spec = NULL;
  if (!strncmp(url, "sqlite:", 7)) {
    vt = &gy__cstore_sqlite_vt;
    spec = url + 7;
  } else if (!strncmp(url, "etcd://", 7)) {
    vt = &gy__cstore_etcd_vt;
    spec = url + 7;
  } else {
    gy_errmsg(errmsg, errlen,
              "store: unknown URL '%s' (want sqlite:PATH or etcd://host:port[,host:port...])", url);
    return GY_ECONFIG;
  }
  if (!*spec) {
    gy_errmsg(errmsg, errlen, "store: URL '%s' names no %s", url,
              vt == &gy__cstore_sqlite_vt ? "file" : "endpoint");
    return GY_ECONFIG;
  }
  gy_cstore_t *s = calloc(1, sizeof(*s));
  if (!s || !(s->url = strdup(url))) {
    free(s);
    gy_errmsg(errmsg, errlen, "store %s: out of memory", url);
    return GY_ENOMEM;
  }
  s->vt = vt;
  s->timeout_ms = o.timeout_ms;
  pthread_mutex_init(&s->k_mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&s->k_cv, &ca);
  pthread_condattr_destroy(&ca);
  int rc = vt == &gy__cstore_sqlite_vt ? gy__cstore_sqlite_open(&s->be, spec, &o, errmsg, errlen)
                                       : gy__cstore_etcd_open(&s->be, spec, &o, errmsg, errlen);
  if (rc < 0) goto err;
  *out = s;
  return 0;
err:
  pthread_cond_destroy(&s->k_cv);
  pthread_mutex_destroy(&s->k_mu);
  free(s->url);
  free(s);
  return rc;
}

void gy_cstore_destroy(gy_cstore_t *s) {
  if (!s) return;
  pthread_mutex_lock(&s->k_mu);
  s->k_stop = 1;
  pthread_cond_broadcast(&s->k_cv);
  pthread_mutex_unlock(&s->k_mu);
  if (s->k_started) pthread_join(s->k_thread, NULL);
  while (s->watches) gy_cstore_watch_cancel(s->watches);
  while (s->kept) {
    kept_t *k = s->kept;
    s->kept = k->next;
    free(k);
  }
  s->vt->destroy(s->be);
  pthread_cond_destroy(&s->k_cv);
  pthread_mutex_destroy(&s->k_mu);
  free(s->url);
  free(s);
}

const char *gy_cstore_backend(const gy_cstore_t *s) {
  return s ? s->vt->name : "none";
}

static int64_t deadline_of(const gy_cstore_t *s, int timeout_ms) {
  return gy__cstore_now_ms() + (timeout_ms > 0 ? timeout_ms : s->timeout_ms);
}

static int check_key(const char *what, const char *key, char *errmsg, size_t errlen) {
  if (!key || !*key) {
    gy_errmsg(errmsg, errlen, "store %s: empty key", what);
    return GY_EINVAL;
  }
  return 0;
}

/* --------------------------------------- key-value --------------------------------------- */

int gy_cstore_get(gy_cstore_t *s, const char *key, gy_cstore_kv_t *out, int64_t *rev,
                  int timeout_ms, char *errmsg, size_t errlen) {
  memset(out, 0, sizeof(*out));
  int rc = check_key("get", key, errmsg, errlen);
  if (rc < 0) return rc;
  gy_cstore_range_t r;
  rc = s->vt->range(s->be, key, NULL, 1, &r, deadline_of(s, timeout_ms), errmsg, errlen);
  if (rc < 0) return rc;
  if (rev) *rev = r.revision;
  if (r.n == 0) {
    gy_cstore_range_clear(&r);
    gy_errmsg(errmsg, errlen, "store %s: no key %s", s->url, key);
    return GY_ENOENT;
  }
  *out = r.kvs[0];
  memset(&r.kvs[0], 0, sizeof(r.kvs[0]));
  gy_cstore_range_clear(&r);
  return 0;
}

int gy_cstore_put(gy_cstore_t *s, const char *key, const void *value, size_t len, int64_t lease,
                  int64_t *rev, int timeout_ms, char *errmsg, size_t errlen) {
  int rc = check_key("put", key, errmsg, errlen);
  if (rc < 0) return rc;
  gy_cstore_op_t op = {
      .type = GY_CSTORE_OP_PUT, .key = key, .value = value, .value_len = len, .lease = lease};
  gy_cstore_txn_result_t r;
  rc = s->vt->txn(s->be, NULL, 0, &op, 1, NULL, 0, &r, deadline_of(s, timeout_ms), errmsg, errlen);
  if (rc < 0) return rc;
  if (rev) *rev = r.revision;
  gy_cstore_txn_clear(&r);
  return 0;
}

int gy_cstore_delete(gy_cstore_t *s, const char *key, int prefix, int64_t *deleted, int64_t *rev,
                     int timeout_ms, char *errmsg, size_t errlen) {
  if (!key || (!prefix && !*key)) return check_key("delete", key, errmsg, errlen);
  gy_cstore_op_t op = {.type = GY_CSTORE_OP_DELETE, .key = key, .prefix = prefix};
  gy_cstore_txn_result_t r;
  int rc =
      s->vt->txn(s->be, NULL, 0, &op, 1, NULL, 0, &r, deadline_of(s, timeout_ms), errmsg, errlen);
  if (rc < 0) return rc;
  if (rev) *rev = r.revision;
  if (deleted) *deleted = r.n ? r.results[0].deleted : 0;
  gy_cstore_txn_clear(&r);
  return 0;
}

int gy_cstore_range(gy_cstore_t *s, const char *prefix, const char *from, int64_t limit,
                    gy_cstore_range_t *out, int timeout_ms, char *errmsg, size_t errlen) {
  memset(out, 0, sizeof(*out));
  if (!prefix || limit < 0) {
    gy_errmsg(errmsg, errlen, "store range: missing prefix or negative limit");
    return GY_EINVAL;
  }
  char *end = gy__cstore_prefix_end(prefix);
  if (!end) return GY_ENOMEM;
  const char *start = prefix;
  if (from && strcmp(from, prefix) > 0) start = from;
  int rc = 0;
  if (*end && strcmp(start, end) >= 0) { /* from lies past the prefix: nothing to read */
    int64_t rev = 0;
    rc = gy_cstore_revision(s, &rev, timeout_ms, errmsg, errlen);
    out->revision = rev;
  } else {
    rc = s->vt->range(s->be, start, end, limit, out, deadline_of(s, timeout_ms), errmsg, errlen);
  }
  free(end);
  return rc;
}

int gy_cstore_revision(gy_cstore_t *s, int64_t *rev, int timeout_ms, char *errmsg, size_t errlen) {
  /* A read of one key that no gyro key sorts as ("\x01"): only the header matters. */
  gy_cstore_range_t r;
  int rc = s->vt->range(s->be, "\x01", NULL, 1, &r, deadline_of(s, timeout_ms), errmsg, errlen);
  if (rc < 0) return rc;
  *rev = r.revision;
  gy_cstore_range_clear(&r);
  return 0;
}

/* ------------------------------------- transactions ------------------------------------- */

gy_cstore_cmp_t gy_cstore_cmp_absent(const char *key) {
  return (gy_cstore_cmp_t){.key = key, .target = GY_CSTORE_CMP_CREATE, .op = GY_CSTORE_EQ};
}

gy_cstore_cmp_t gy_cstore_cmp_exists(const char *key) {
  return (gy_cstore_cmp_t){.key = key, .target = GY_CSTORE_CMP_CREATE, .op = GY_CSTORE_GT};
}

gy_cstore_cmp_t gy_cstore_cmp_mod(const char *key, gy_cstore_cmp_op_t op, int64_t rev) {
  return (gy_cstore_cmp_t){.key = key, .target = GY_CSTORE_CMP_MOD, .op = op, .rev = rev};
}

static int check_ops(const char *what, const gy_cstore_op_t *ops, size_t n, char *errmsg,
                     size_t errlen) {
  for (size_t i = 0; i < n; i++) {
    const gy_cstore_op_t *o = &ops[i];
    if (o->type > GY_CSTORE_OP_GET) {
      gy_errmsg(errmsg, errlen, "store txn: %s op %zu has unknown type %d", what, i, (int)o->type);
      return GY_EINVAL;
    }
    if (!o->key || (!*o->key && !(o->prefix && o->type != GY_CSTORE_OP_PUT))) {
      gy_errmsg(errmsg, errlen, "store txn: %s op %zu has an empty key", what, i);
      return GY_EINVAL;
    }
    if (o->type == GY_CSTORE_OP_PUT && o->value_len && !o->value) {
      gy_errmsg(errmsg, errlen, "store txn: %s op %zu (put %s) has no value", what, i, o->key);
      return GY_EINVAL;
    }
  }
  return 0;
}

int gy_cstore_txn(gy_cstore_t *s, const gy_cstore_cmp_t *cmps, size_t ncmp,
                  const gy_cstore_op_t *then_ops, size_t nthen, const gy_cstore_op_t *else_ops,
                  size_t nelse, gy_cstore_txn_result_t *out, int timeout_ms, char *errmsg,
                  size_t errlen) {
  gy_cstore_txn_result_t tmp;
  if (!out) out = &tmp;
  memset(out, 0, sizeof(*out));
  for (size_t i = 0; i < ncmp; i++) {
    if (!cmps[i].key || !*cmps[i].key || cmps[i].target > GY_CSTORE_CMP_VERSION ||
        cmps[i].op > GY_CSTORE_GT) {
      gy_errmsg(errmsg, errlen, "store txn: compare %zu has an empty key or unknown target/op", i);
      return GY_EINVAL;
    }
  }
  int rc = check_ops("then", then_ops, nthen, errmsg, errlen);
  if (rc == 0) rc = check_ops("else", else_ops, nelse, errmsg, errlen);
  if (rc < 0) return rc;
  rc = s->vt->txn(s->be, cmps, ncmp, then_ops, nthen, else_ops, nelse, out,
                  deadline_of(s, timeout_ms), errmsg, errlen);
  if (out == &tmp) gy_cstore_txn_clear(&tmp);
  return rc;
}

int gy_cstore_cas(gy_cstore_t *s, const char *key, int64_t expect_mod, const void *value,
                  size_t len, int64_t lease, int64_t *rev, int timeout_ms, char *errmsg,
                  size_t errlen) {
  int rc = check_key("cas", key, errmsg, errlen);
  if (rc < 0) return rc;
  gy_cstore_cmp_t c = gy_cstore_cmp_mod(key, GY_CSTORE_EQ, expect_mod);
  gy_cstore_op_t put = {
      .type = GY_CSTORE_OP_PUT, .key = key, .value = value, .value_len = len, .lease = lease};
  gy_cstore_op_t get = {.type = GY_CSTORE_OP_GET, .key = key};
  gy_cstore_txn_result_t r;
  rc = s->vt->txn(s->be, &c, 1, &put, 1, &get, 1, &r, deadline_of(s, timeout_ms), errmsg, errlen);
  if (rc < 0) return rc;
  if (r.succeeded) {
    if (rev) *rev = r.revision;
  } else {
    int64_t cur = r.n && r.results[0].range.n ? r.results[0].range.kvs[0].mod_revision : 0;
    if (rev) *rev = cur;
    gy_errmsg(errmsg, errlen,
              "store %s: compare-and-swap of %s: expected mod_revision %lld, found %lld", s->url,
              key, (long long)expect_mod, (long long)cur);
    rc = GY_EMISMATCH;
  }
  gy_cstore_txn_clear(&r);
  return rc;
}

/* ---------------------------------------- leases ---------------------------------------- */

int gy_cstore_lease_grant(gy_cstore_t *s, int64_t ttl_s, int64_t *id, int64_t *granted_ttl_s,
                          int timeout_ms, char *errmsg, size_t errlen) {
  if (ttl_s <= 0) {
    gy_errmsg(errmsg, errlen, "store lease grant: TTL %lld s is not positive", (long long)ttl_s);
    return GY_EINVAL;
  }
  int64_t g = 0;
  int rc = s->vt->lease_grant(s->be, ttl_s, id, &g, deadline_of(s, timeout_ms), errmsg, errlen);
  if (rc == 0 && granted_ttl_s) *granted_ttl_s = g;
  return rc;
}

/* Removes id from the kept list, waiting out a keep-alive or callback in flight for it. */
static void unkeep(gy_cstore_t *s, int64_t id) {
  pthread_mutex_lock(&s->k_mu);
  while (s->busy == id)
    pthread_cond_wait(&s->k_cv, &s->k_mu);
  for (kept_t **p = &s->kept; *p; p = &(*p)->next) {
    if ((*p)->id == id) {
      kept_t *k = *p;
      *p = k->next;
      free(k);
      break;
    }
  }
  pthread_mutex_unlock(&s->k_mu);
}

int gy_cstore_lease_revoke(gy_cstore_t *s, int64_t id, int timeout_ms, char *errmsg,
                           size_t errlen) {
  unkeep(s, id);
  return s->vt->lease_revoke(s->be, id, deadline_of(s, timeout_ms), errmsg, errlen);
}

int gy_cstore_lease_keepalive_once(gy_cstore_t *s, int64_t id, int64_t *ttl_s, int timeout_ms,
                                   char *errmsg, size_t errlen) {
  int64_t t = 0;
  int rc = s->vt->lease_keepalive(s->be, id, &t, deadline_of(s, timeout_ms), errmsg, errlen);
  if (rc == 0 && ttl_s) *ttl_s = t;
  return rc;
}

static void *keeper_main(void *arg) {
  gy_cstore_t *s = arg;
  char msg[512];
  pthread_mutex_lock(&s->k_mu);
  while (!s->k_stop) {
    int64_t now = gy__cstore_now_ms();
    kept_t *due = NULL;
    int64_t next = now + 1000;
    for (kept_t *k = s->kept; k; k = k->next) {
      if (k->due_ms <= now) {
        due = k;
        break;
      }
      if (k->due_ms < next) next = k->due_ms;
    }
    if (!due) {
      struct timespec ts = {(time_t)(next / 1000), (long)(next % 1000) * 1000000};
      pthread_cond_timedwait(&s->k_cv, &s->k_mu, &ts);
      continue;
    }
    int64_t id = due->id, ttl_ms = due->ttl_ms, lost_at = due->last_ok_ms + due->ttl_ms;
    gy_cstore_lease_lost_cb cb = due->cb;
    void *ud = due->ud;
    s->busy = id;
    pthread_mutex_unlock(&s->k_mu);

    int64_t sent = gy__cstore_now_ms(), ttl = 0;
    /* Bound the call so a hung server cannot hold it past the moment the lease may be gone. */
    int64_t dl = sent + ttl_ms / 3;
    if (dl > lost_at) dl = lost_at;
    if (dl < sent + 100) dl = sent + 100;
    msg[0] = 0;
    int rc = s->vt->lease_keepalive(s->be, id, &ttl, dl, msg, sizeof(msg));
    int64_t done = gy__cstore_now_ms();
    int lost = 0;
    pthread_mutex_lock(&s->k_mu);
    kept_t *k = s->kept;
    while (k && k->id != id)
      k = k->next;
    if (k) {
      if (rc == 0) {
        k->last_ok_ms = sent;
        k->due_ms = sent + k->ttl_ms / 3;
      } else if (rc == GY_ENOENT || done >= lost_at) {
        lost = rc == GY_ENOENT ? GY_ENOENT : GY_ETIMEDOUT;
      } else {
        k->due_ms = done + 250;
      }
      if (lost) {
        for (kept_t **p = &s->kept; *p; p = &(*p)->next) {
          if (*p == k) {
            *p = k->next;
            break;
          }
        }
        free(k);
      }
    }
    pthread_mutex_unlock(&s->k_mu);
    if (lost && cb) {
      char why[700];
      if (lost == GY_ENOENT)
        snprintf(why, sizeof(why), "lease %lld expired at the server: %s", (long long)id, msg);
      else
        snprintf(why, sizeof(why), "lease %lld: no keep-alive succeeded for its %lld ms TTL: %s",
                 (long long)id, (long long)ttl_ms, msg);
      cb(ud, id, lost, why);
    }
    pthread_mutex_lock(&s->k_mu);
    s->busy = 0;
    pthread_cond_broadcast(&s->k_cv);
  }
  pthread_mutex_unlock(&s->k_mu);
  return NULL;
}

int gy_cstore_lease_keep(gy_cstore_t *s, int64_t id, int64_t ttl_s, gy_cstore_lease_lost_cb cb,
                         void *ud, char *errmsg, size_t errlen) {
  if (ttl_s <= 0) {
    gy_errmsg(errmsg, errlen, "store lease keep: TTL %lld s is not positive", (long long)ttl_s);
    return GY_EINVAL;
  }
  kept_t *k = calloc(1, sizeof(*k));
  if (!k) return GY_ENOMEM;
  int64_t now = gy__cstore_now_ms();
  k->id = id;
  k->ttl_ms = ttl_s * 1000;
  /* The caller granted (or refreshed) the lease just before: the TTL counts from now, a few
   * milliseconds late at most, and the first refresh goes out at once. */
  k->last_ok_ms = now;
  k->due_ms = now;
  k->cb = cb;
  k->ud = ud;
  pthread_mutex_lock(&s->k_mu);
  if (!s->k_started) {
    if (pthread_create(&s->k_thread, NULL, keeper_main, s) != 0) {
      pthread_mutex_unlock(&s->k_mu);
      free(k);
      gy_errmsg(errmsg, errlen, "store %s: cannot start the lease keeper thread", s->url);
      return GY_ENOMEM;
    }
    s->k_started = 1;
  }
  k->next = s->kept;
  s->kept = k;
  pthread_cond_broadcast(&s->k_cv);
  pthread_mutex_unlock(&s->k_mu);
  return 0;
}

void gy_cstore_lease_forget(gy_cstore_t *s, int64_t id) {
  unkeep(s, id);
}

/* ---------------------------------------- watches ---------------------------------------- */

int gy_cstore_watch(gy_cstore_t *s, const char *prefix, int64_t start_rev, gy_cstore_watch_cb cb,
                    void *ud, gy_cstore_watch_t **out, char *errmsg, size_t errlen) {
  *out = NULL;
  if (!prefix || !cb || start_rev < 0) {
    gy_errmsg(errmsg, errlen, "store watch: missing prefix or callback, or negative revision");
    return GY_EINVAL;
  }
  int rc = 0;
  if (start_rev == 0) {
    /* "From now" is pinned to a revision here, so a reconnecting watch resumes exactly. */
    int64_t rev = 0;
    rc = gy_cstore_revision(s, &rev, 0, errmsg, errlen);
    if (rc < 0) return rc;
    start_rev = rev + 1;
  }
  gy_cstore_watch_t *w = calloc(1, sizeof(*w));
  char *end = gy__cstore_prefix_end(prefix);
  if (!w || !end) {
    free(w);
    free(end);
    return GY_ENOMEM;
  }
  w->s = s;
  /* An empty prefix watches everything: key "" up to the end of the key space. */
  rc = s->vt->watch_start(s->be, prefix, end, start_rev, cb, ud, &w->handle, errmsg, errlen);
  free(end);
  if (rc < 0) {
    free(w);
    return rc;
  }
  pthread_mutex_lock(&s->k_mu);
  w->next = s->watches;
  s->watches = w;
  pthread_mutex_unlock(&s->k_mu);
  *out = w;
  return 0;
}

void gy_cstore_watch_cancel(gy_cstore_watch_t *w) {
  if (!w) return;
  gy_cstore_t *s = w->s;
  pthread_mutex_lock(&s->k_mu);
  for (gy_cstore_watch_t **p = &s->watches; *p; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      break;
    }
  }
  pthread_mutex_unlock(&s->k_mu);
  s->vt->watch_stop(w->handle);
  free(w);
}
