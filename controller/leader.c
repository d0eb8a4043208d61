/*
 * leader: lease-based leader election over controller/store (see leader.h for the protocol,
 * the fencing token and the takeover time).
 *
 * One thread per candidate runs the loop: get a lease and have the store keep it alive;
 * campaign (one txn); as leader wait for the lease to be lost, the key to go or a stop; as
 * standby wait for the key to go (a watch from the revision the campaign read at) or a stop;
 * repeat. Store callbacks (lease lost, watch events) only set flags under l->mu and signal
 * l->cv; the thread does all the work, so on_elected/on_deposed run on it, in order.
 *
 * Invariants: `leading` is set only after a campaign txn proved the key holds our lease, and
 * cleared (with on_deposed) before the thread does anything else once the lease is lost or
 * the key is gone; a lost lease is never reused (a new one is granted).
 */
#include "controller/leader.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"

struct gy_leader {
  gy_cstore_t *store;
  char *key, *id;
  int ttl_s;
  void (*on_elected)(void *ud, int64_t token);
  void (*on_deposed)(void *ud, int64_t token, const char *why);
  void *ud;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* under mu */
  int stop, leading;
  int64_t lease, token;
  int lease_lost, key_gone, watch_ended;
  char why[512];
};

static void timed_wait(gy_leader_t *l, int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_cond_timedwait(&l->cv, &l->mu, &ts);
}

static void on_lease_lost(void *ud, int64_t id, int err, const char *why) {
  gy_leader_t *l = ud;
  (void)err;
  pthread_mutex_lock(&l->mu);
  if (id == l->lease) {
    l->lease_lost = 1;
    snprintf(l->why, sizeof(l->why), "%s", why);
    pthread_cond_broadcast(&l->cv);
  }
  pthread_mutex_unlock(&l->mu);
}

static void on_watch(void *ud, const gy_cstore_event_t *evs, size_t n, int err, const char *why) {
  gy_leader_t *l = ud;
  pthread_mutex_lock(&l->mu);
  if (err) {
    l->watch_ended = 1;
    snprintf(l->why, sizeof(l->why), "watch of %s ended: %s", l->key, why ? why : "");
  }
  for (size_t i = 0; i < n; i++) {
    if (evs[i].type == GY_CSTORE_EV_DELETE && !strcmp(evs[i].kv.key, l->key)) {
      l->key_gone = 1;
      snprintf(l->why, sizeof(l->why), "leader key %s deleted at revision %lld", l->key,
               (long long)evs[i].kv.mod_revision);
    }
  }
  pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
}

/* Grants and keeps a fresh lease; 0 or an error (the loop retries). */
static int get_lease(gy_leader_t *l, char *msg, size_t len) {
  int64_t id = 0, ttl = 0;
  int rc = gy_cstore_lease_grant(l->store, l->ttl_s, &id, &ttl, 0, msg, len);
  if (rc < 0) return rc;
  pthread_mutex_lock(&l->mu);
  l->lease = id;
  l->lease_lost = 0;
  pthread_mutex_unlock(&l->mu);
  rc = gy_cstore_lease_keep(l->store, id, ttl, on_lease_lost, l, msg, len);
  if (rc < 0) {
    gy_cstore_lease_revoke(l->store, id, 0, NULL, 0);
    pthread_mutex_lock(&l->mu);
    l->lease = 0;
    pthread_mutex_unlock(&l->mu);
  }
  return rc;
}

/* Drops the current lease (forget + best-effort revoke, so our key goes now). */
static void drop_lease(gy_leader_t *l) {
  pthread_mutex_lock(&l->mu);
  int64_t id = l->lease;
  l->lease = 0;
  pthread_mutex_unlock(&l->mu);
  if (!id) return;
  gy_cstore_lease_forget(l->store, id);
  gy_cstore_lease_revoke(l->store, id, 2000, NULL, 0);
}

/* One campaign. Returns 1 = elected (*token), 0 = someone else leads (*watch_from = the
 * revision to watch from), < 0 = store error. */
static int campaign(gy_leader_t *l, int64_t lease, int64_t *token, int64_t *watch_from, char *msg,
                    size_t len) {
  gy_cstore_cmp_t c = gy_cstore_cmp_absent(l->key);
  gy_cstore_op_t put = {.type = GY_CSTORE_OP_PUT,
                        .key = l->key,
                        .value = l->id,
                        .value_len = strlen(l->id),
                        .lease = lease};
  gy_cstore_op_t get = {.type = GY_CSTORE_OP_GET, .key = l->key};
  gy_cstore_txn_result_t r;
  int rc = gy_cstore_txn(l->store, &c, 1, &put, 1, &get, 1, &r, 0, msg, len);
  if (rc < 0) return rc;
  if (r.succeeded) {
    *token = r.revision;
    rc = 1;
  } else if (r.n && r.results[0].range.n) {
    const gy_cstore_kv_t *kv = &r.results[0].range.kvs[0];
    if (kv->lease == lease) { /* an earlier attempt of ours went through before a retry */
      *token = kv->create_revision;
      rc = 1;
    } else {
      *watch_from = r.revision + 1;
      rc = 0;
    }
  } else {
    *watch_from = r.revision + 1; /* deleted between compare and read: campaign again */
    rc = 0;
  }
  gy_cstore_txn_clear(&r);
  return rc;
}

static void *elector_main(void *arg) {
  gy_leader_t *l = arg;
  char msg[512];
  int backoff = 100;
  pthread_mutex_lock(&l->mu);
  while (!l->stop) {
    /* 1. a live lease */
    if (!l->lease || l->lease_lost) {
      pthread_mutex_unlock(&l->mu);
      if (gy_leader_lease(l)) drop_lease(l);
      int rc = get_lease(l, msg, sizeof(msg));
      pthread_mutex_lock(&l->mu);
      if (rc < 0) {
        timed_wait(l, backoff);
        backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
        continue;
      }
    }
    int64_t lease = l->lease, token = 0, from = 0;
    pthread_mutex_unlock(&l->mu);

    /* 2. campaign */
    int won = campaign(l, lease, &token, &from, msg, sizeof(msg));
    pthread_mutex_lock(&l->mu);
    if (won < 0) {
      timed_wait(l, backoff);
      backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
      continue;
    }
    backoff = 100;
    if (won) from = token + 1;

    /* 3. watch the key from the revision the campaign saw */
    l->key_gone = l->watch_ended = 0;
    pthread_mutex_unlock(&l->mu);
    gy_cstore_watch_t *w = NULL;
    int wrc = gy_cstore_watch(l->store, l->key, from, on_watch, l, &w, msg, sizeof(msg));
    pthread_mutex_lock(&l->mu);
    if (wrc < 0) {
      if (won) { /* cannot tell when the key goes: do not lead blind */
        pthread_mutex_unlock(&l->mu);
        drop_lease(l);
        pthread_mutex_lock(&l->mu);
      }
      timed_wait(l, 500);
      continue;
    }
    if (won && !l->lease_lost && !l->stop) {
      l->leading = 1;
      l->token = token;
      pthread_mutex_unlock(&l->mu);
      if (l->on_elected) l->on_elected(l->ud, token);
      pthread_mutex_lock(&l->mu);
    }
    while (!l->stop && !l->lease_lost && !l->key_gone && !l->watch_ended)
      timed_wait(l, 1000);
    int was_leading = l->leading, stop = l->stop;
    char why[512];
    snprintf(why, sizeof(why), "%s", stop ? "resigned" : l->why);
    l->leading = 0;
    pthread_mutex_unlock(&l->mu);
    gy_cstore_watch_cancel(w);
    if (was_leading && l->on_deposed) l->on_deposed(l->ud, token, why);
    /* A deposed leader whose key was deleted under a live lease starts over with a new one. */
    if (was_leading && !stop) drop_lease(l);
    pthread_mutex_lock(&l->mu);
  }
  pthread_mutex_unlock(&l->mu);
  drop_lease(l);
  return NULL;
}

int gy_leader_start(gy_leader_t **out, const gy_leader_opts_t *opts, char *errmsg, size_t errlen) {
  *out = NULL;
  if (!opts || !opts->store || !opts->run || !*opts->run || !opts->id || !*opts->id) {
    gy_errmsg(errmsg, errlen, "leader: missing store, run name or candidate id");
    return GY_EINVAL;
  }
  if (strchr(opts->run, '/')) {
    gy_errmsg(errmsg, errlen, "leader: run name '%s' contains '/'", opts->run);
    return GY_EINVAL;
  }
  gy_leader_t *l = calloc(1, sizeof(*l));
  if (!l) return GY_ENOMEM;
  size_t kl = strlen(opts->run) + 16;
  l->key = malloc(kl);
  l->id = strdup(opts->id);
  if (!l->key || !l->id) {
    free(l->key);
    free(l->id);
    free(l);
    return GY_ENOMEM;
  }
  snprintf(l->key, kl, "/gyro/%s/leader", opts->run);
  l->store = opts->store;
  l->ttl_s = opts->ttl_s > 0 ? opts->ttl_s : 5;
  l->on_elected = opts->on_elected;
  l->on_deposed = opts->on_deposed;
  l->ud = opts->ud;
  pthread_mutex_init(&l->mu, NULL);
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(&l->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&l->th, NULL, elector_main, l) != 0) {
    gy_errmsg(errmsg, errlen, "leader: cannot start the elector thread");
    pthread_cond_destroy(&l->cv);
    pthread_mutex_destroy(&l->mu);
    free(l->key);
    free(l->id);
    free(l);
    return GY_ENOMEM;
  }
  *out = l;
  return 0;
}

int gy_leader_is_leader(gy_leader_t *l, int64_t *token) {
  pthread_mutex_lock(&l->mu);
  int lead = l->leading;
  if (token) *token = lead ? l->token : 0;
  pthread_mutex_unlock(&l->mu);
  return lead;
}

int64_t gy_leader_lease(gy_leader_t *l) {
  pthread_mutex_lock(&l->mu);
  int64_t id = l->lease;
  pthread_mutex_unlock(&l->mu);
  return id;
}

const char *gy_leader_key(const gy_leader_t *l) {
  return l->key;
}

void gy_leader_stop(gy_leader_t *l) {
  if (!l) return;
  pthread_mutex_lock(&l->mu);
  l->stop = 1;
  pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
  pthread_join(l->th, NULL);
  pthread_cond_destroy(&l->cv);
  pthread_mutex_destroy(&l->mu);
  free(l->key);
  free(l->id);
  free(l);
}
