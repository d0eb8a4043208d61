/* test_store_contract: one contract, two back ends. The same body runs against a SQLite file
 * and a real etcd (Debian's etcd-server, started on loopback in a temp folder): get/put/delete,
 * sorted prefix ranges with limits, transactions (every compare target, then/else, one revision
 * per txn), compare-and-swap conflicts (also two handles racing), leases (expiry deletes keys,
 * revoke, keep-alive, the keeper and its lost callback), watches (puts and deletes in order,
 * replay from a past revision, another handle's writes), monotonic revisions. Then the errors:
 * bad URLs, a missing folder, a file that is not a database, a locked SQLite file, an
 * unreachable etcd (clear error within the deadline). Then etcd-only: SIGKILL and restart of
 * etcd mid-test (calls during the outage fail clearly or succeed after retry; nothing written
 * before is lost; a watch resumes without a gap) and authentication (username/password). */
#include <pthread.h>
#include <sys/stat.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/err.h"
#include "common/rpc.h"
#include "controller/store.h"
#include "proto/etcd.pb-c.h"
#include "tests/lib/etcd_proc.h"
#include "tests/test.h"

static char msg[1024];

static double now_s(void) {
  return gy_etcd_now();
}

static void sleep_s(double s) {
  struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
  nanosleep(&ts, NULL);
}

static int put_s(gy_cstore_t *s, const char *k, const char *v, int64_t lease, int64_t *rev) {
  return gy_cstore_put(s, k, v, strlen(v), lease, rev, 0, msg, sizeof(msg));
}

/* ------------------------------------- watch recorder ------------------------------------- */

typedef struct {
  pthread_mutex_t mu;
  int n;
  int type[1024];
  char key[1024][64];
  char val[1024][32];
  int64_t rev[1024];
  int err;
} rec_t;

static void rec_cb(void *ud, const gy_cstore_event_t *evs, size_t n, int err, const char *why) {
  rec_t *r = ud;
  pthread_mutex_lock(&r->mu);
  if (err) {
    r->err = err;
    fprintf(stderr, "watch ended: %s\n", why);
  }
  for (size_t i = 0; i < n && r->n < 1024; i++) {
    r->type[r->n] = evs[i].type;
    snprintf(r->key[r->n], 64, "%s", evs[i].kv.key);
    snprintf(r->val[r->n], 32, "%s", (const char *)evs[i].kv.value);
    r->rev[r->n] = evs[i].kv.mod_revision;
    r->n++;
  }
  pthread_mutex_unlock(&r->mu);
}

static int rec_count(rec_t *r) {
  pthread_mutex_lock(&r->mu);
  int n = r->n;
  pthread_mutex_unlock(&r->mu);
  return n;
}

static int wait_count(rec_t *r, int n, double timeout_s) {
  double end = now_s() + timeout_s;
  while (rec_count(r) < n && now_s() < end)
    sleep_s(0.01);
  return rec_count(r) >= n;
}

/* ------------------------------------- lease-lost probe ------------------------------------- */

static atomic_int lost_err;
static void lost_cb(void *ud, int64_t id, int err, const char *why) {
  (void)ud;
  (void)id;
  fprintf(stderr, "lease lost (expected): %s\n", why);
  atomic_store(&lost_err, err);
}

/* ------------------------------------ CAS counter race ------------------------------------ */

typedef struct {
  gy_cstore_t *s;
  int conflicts, errors;
} racer_t;

static void *racer(void *arg) {
  racer_t *r = arg;
  char m[512];
  for (int i = 0; i < 15; i++) {
    for (int tries = 0; tries < 200; tries++) {
      gy_cstore_kv_t kv;
      int rc = gy_cstore_get(r->s, "/race/n", &kv, NULL, 0, m, sizeof(m));
      if (rc < 0) {
        r->errors++;
        break;
      }
      char v[32];
      snprintf(v, sizeof(v), "%d", atoi((const char *)kv.value) + 1);
      rc = gy_cstore_cas(r->s, "/race/n", kv.mod_revision, v, strlen(v), 0, NULL, 0, m, sizeof(m));
      gy_cstore_kv_clear(&kv);
      if (rc == 0) break;
      if (rc == GY_EMISMATCH)
        r->conflicts++;
      else {
        r->errors++;
        break;
      }
    }
  }
  return NULL;
}

/* ----------------------------------------- contract ----------------------------------------- */

static void contract(const char *name, gy_cstore_t *s, gy_cstore_t *s2) {
  printf("== contract: %s (%s)\n", name, gy_cstore_backend(s));
  int64_t r0 = 0, r1 = 0, r2 = 0, r = 0, last = 0;
  REQUIRE(gy_cstore_revision(s, &r0, 0, msg, sizeof(msg)) == 0);
  last = r0;

  /* put / get / revisions */
  CHECK_EQ_INT(put_s(s, "/t/a", "1", 0, &r1), 0);
  CHECK(r1 > last);
  last = r1;
  gy_cstore_kv_t kv;
  int64_t rrev = 0;
  CHECK_EQ_INT(gy_cstore_get(s, "/t/a", &kv, &rrev, 0, msg, sizeof(msg)), 0);
  CHECK(!strcmp((char *)kv.value, "1") && kv.value_len == 1);
  CHECK_EQ_INT(kv.create_revision, r1);
  CHECK_EQ_INT(kv.mod_revision, r1);
  CHECK_EQ_INT(kv.version, 1);
  CHECK_EQ_INT(rrev, r1);
  gy_cstore_kv_clear(&kv);
  CHECK_EQ_INT(put_s(s, "/t/a", "2", 0, &r2), 0);
  CHECK_EQ_INT(r2, r1 + 1);
  last = r2;
  CHECK_EQ_INT(gy_cstore_get(s2, "/t/a", &kv, NULL, 0, msg, sizeof(msg)), 0);
  CHECK(!strcmp((char *)kv.value, "2"));
  CHECK_EQ_INT(kv.create_revision, r1);
  CHECK_EQ_INT(kv.mod_revision, r2);
  CHECK_EQ_INT(kv.version, 2);
  gy_cstore_kv_clear(&kv);
  CHECK_EQ_INT(gy_cstore_get(s, "/t/missing", &kv, NULL, 0, msg, sizeof(msg)), GY_ENOENT);
  CHECK(strstr(msg, "/t/missing") != NULL);
  /* binary values with NUL bytes and an empty value */
  const uint8_t bin[5] = {0, 1, 0, 255, 7};
  CHECK_EQ_INT(gy_cstore_put(s, "/t/bin", bin, 5, 0, &r, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(r, last + 1);
  last = r;
  CHECK_EQ_INT(gy_cstore_get(s, "/t/bin", &kv, NULL, 0, msg, sizeof(msg)), 0);
  CHECK(kv.value_len == 5 && !memcmp(kv.value, bin, 5));
  gy_cstore_kv_clear(&kv);
  CHECK_EQ_INT(gy_cstore_put(s, "/t/empty", NULL, 0, 0, &r, 0, msg, sizeof(msg)), 0);
  last = r;
  CHECK_EQ_INT(gy_cstore_get(s, "/t/empty", &kv, NULL, 0, msg, sizeof(msg)), 0);
  CHECK(kv.value_len == 0 && kv.value && kv.value[0] == 0);
  gy_cstore_kv_clear(&kv);
  CHECK_EQ_INT(gy_cstore_put(s, "", "x", 1, 0, NULL, 0, msg, sizeof(msg)), GY_EINVAL);

  /* range: sorted, limit, from, prefix boundaries */
  const char *keys[] = {"/t/d", "/t/b", "/t/c", "/t0", "/s/x", "/t/b/sub"};
  for (int i = 0; i < 6; i++) {
    CHECK_EQ_INT(put_s(s, keys[i], keys[i], 0, &r), 0);
    CHECK_EQ_INT(r, last + 1);
    last = r;
  }
  gy_cstore_range_t rg;
  CHECK_EQ_INT(gy_cstore_range(s, "/t/", NULL, 0, &rg, 0, msg, sizeof(msg)), 0);
  const char *want[] = {"/t/a", "/t/b", "/t/b/sub", "/t/bin", "/t/c", "/t/d", "/t/empty"};
  CHECK_EQ_INT(rg.n, 7);
  for (size_t i = 0; i < rg.n && i < 7; i++)
    CHECK_MSG(!strcmp(rg.kvs[i].key, want[i]), "%s", rg.kvs[i].key);
  CHECK(!rg.more);
  CHECK_EQ_INT(rg.revision, last);
  gy_cstore_range_clear(&rg);
  CHECK_EQ_INT(gy_cstore_range(s, "/t/", NULL, 2, &rg, 0, msg, sizeof(msg)), 0);
  CHECK(rg.n == 2 && rg.more && !strcmp(rg.kvs[1].key, "/t/b"));
  gy_cstore_range_clear(&rg);
  CHECK_EQ_INT(gy_cstore_range(s, "/t/", "/t/c", 0, &rg, 0, msg, sizeof(msg)), 0);
  CHECK(rg.n == 3 && !strcmp(rg.kvs[0].key, "/t/c") && !strcmp(rg.kvs[2].key, "/t/empty"));
  gy_cstore_range_clear(&rg);
  CHECK_EQ_INT(gy_cstore_range(s, "/t/", "/u", 0, &rg, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(rg.n, 0);
  gy_cstore_range_clear(&rg);
  CHECK_EQ_INT(gy_cstore_range(s, "/nothing/", NULL, 0, &rg, 0, msg, sizeof(msg)), 0);
  CHECK(rg.n == 0 && rg.revision == last);
  gy_cstore_range_clear(&rg);

  /* delete: one key, a missing key (no revision), a prefix */
  int64_t del = -1;
  CHECK_EQ_INT(gy_cstore_delete(s, "/t/b", 0, &del, &r, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(del, 1);
  CHECK_EQ_INT(r, last + 1);
  last = r;
  CHECK_EQ_INT(gy_cstore_delete(s, "/t/zzz", 0, &del, &r, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(del, 0);
  CHECK_EQ_INT(r, last);
  CHECK_EQ_INT(gy_cstore_delete(s, "/t/", 1, &del, &r, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(del, 6);
  CHECK_EQ_INT(r, last + 1);
  last = r;
  CHECK_EQ_INT(gy_cstore_range(s, "/t/", NULL, 0, &rg, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(rg.n, 0);
  gy_cstore_range_clear(&rg);
  CHECK_EQ_INT(gy_cstore_get(s, "/t0", &kv, NULL, 0, msg, sizeof(msg)), 0);
  gy_cstore_kv_clear(&kv);

  /* txn: absent -> two puts at one revision; else branch reads */
  gy_cstore_cmp_t c = gy_cstore_cmp_absent("/x/k");
  gy_cstore_op_t puts[2] = {
      {.type = GY_CSTORE_OP_PUT, .key = "/x/k", .value = "v1", .value_len = 2},
      {.type = GY_CSTORE_OP_PUT, .key = "/x/j", .value = "v2", .value_len = 2}};
  gy_cstore_op_t get = {.type = GY_CSTORE_OP_GET, .key = "/x/k"};
  gy_cstore_txn_result_t tr;
  CHECK_EQ_INT(gy_cstore_txn(s, &c, 1, puts, 2, &get, 1, &tr, 0, msg, sizeof(msg)), 0);
  CHECK(tr.succeeded);
  CHECK_EQ_INT(tr.revision, last + 1);
  CHECK_EQ_INT(tr.n, 2);
  int64_t txrev = tr.revision;
  last = tr.revision;
  gy_cstore_txn_clear(&tr);
  CHECK_EQ_INT(gy_cstore_get(s, "/x/j", &kv, NULL, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(kv.mod_revision, txrev);
  gy_cstore_kv_clear(&kv);
  CHECK_EQ_INT(gy_cstore_txn(s, &c, 1, puts, 2, &get, 1, &tr, 0, msg, sizeof(msg)), 0);
  CHECK(!tr.succeeded);
  CHECK_EQ_INT(tr.revision, last); /* nothing written: no new revision */
  CHECK(tr.n == 1 && tr.results[0].type == GY_CSTORE_OP_GET && tr.results[0].range.n == 1 &&
        !strcmp((char *)tr.results[0].range.kvs[0].value, "v1"));
  gy_cstore_txn_clear(&tr);
  /* every compare target */
  gy_cstore_cmp_t cv = {.key = "/x/k",
                        .target = GY_CSTORE_CMP_VALUE,
                        .op = GY_CSTORE_EQ,
                        .value = "v1",
                        .value_len = 2};
  gy_cstore_cmp_t cver = {
      .key = "/x/k", .target = GY_CSTORE_CMP_VERSION, .op = GY_CSTORE_EQ, .rev = 1};
  gy_cstore_cmp_t cmod = gy_cstore_cmp_mod("/x/k", GY_CSTORE_LT, txrev + 1);
  gy_cstore_cmp_t cex = gy_cstore_cmp_exists("/x/k");
  gy_cstore_cmp_t all[4] = {cv, cver, cmod, cex};
  CHECK_EQ_INT(gy_cstore_txn(s, all, 4, NULL, 0, NULL, 0, &tr, 0, msg, sizeof(msg)), 0);
  CHECK(tr.succeeded);
  gy_cstore_txn_clear(&tr);
  gy_cstore_cmp_t cvne = cv;
  cvne.op = GY_CSTORE_NE;
  CHECK_EQ_INT(gy_cstore_txn(s, &cvne, 1, NULL, 0, NULL, 0, &tr, 0, msg, sizeof(msg)), 0);
  CHECK(!tr.succeeded);
  gy_cstore_txn_clear(&tr);
  gy_cstore_cmp_t cvgt = cv;
  cvgt.op = GY_CSTORE_GT;
  cvgt.value = "v0";
  CHECK_EQ_INT(gy_cstore_txn(s, &cvgt, 1, NULL, 0, NULL, 0, &tr, 0, msg, sizeof(msg)), 0);
  CHECK(tr.succeeded);
  gy_cstore_txn_clear(&tr);
  /* a value compare on a missing key is false whatever the operator (etcd's rule) */
  gy_cstore_cmp_t cmiss = {.key = "/x/none",
                           .target = GY_CSTORE_CMP_VALUE,
                           .op = GY_CSTORE_NE,
                           .value = "a",
                           .value_len = 1};
  CHECK_EQ_INT(gy_cstore_txn(s, &cmiss, 1, NULL, 0, NULL, 0, &tr, 0, msg, sizeof(msg)), 0);
  CHECK(!tr.succeeded);
  gy_cstore_txn_clear(&tr);
  gy_cstore_cmp_t cmiss_mod = gy_cstore_cmp_mod("/x/none", GY_CSTORE_EQ, 0);
  CHECK_EQ_INT(gy_cstore_txn(s, &cmiss_mod, 1, NULL, 0, NULL, 0, &tr, 0, msg, sizeof(msg)), 0);
  CHECK(tr.succeeded);
  gy_cstore_txn_clear(&tr);
  /* then-branch delete by prefix + get by prefix with a limit */
  gy_cstore_op_t ops2[2] = {{.type = GY_CSTORE_OP_GET, .key = "/x/", .prefix = 1, .limit = 1},
                            {.type = GY_CSTORE_OP_DELETE, .key = "/x/", .prefix = 1}};
  CHECK_EQ_INT(gy_cstore_txn(s, &cv, 1, ops2, 2, NULL, 0, &tr, 0, msg, sizeof(msg)), 0);
  CHECK(tr.succeeded && tr.n == 2);
  if (tr.n == 2) {
    CHECK(tr.results[0].range.n == 1 && tr.results[0].range.more &&
          !strcmp(tr.results[0].range.kvs[0].key, "/x/j"));
    CHECK_EQ_INT(tr.results[1].deleted, 2);
  }
  CHECK_EQ_INT(tr.revision, last + 1);
  last = tr.revision;
  gy_cstore_txn_clear(&tr);
  /* bad arguments */
  gy_cstore_op_t bad = {.type = GY_CSTORE_OP_PUT, .key = ""};
  CHECK_EQ_INT(gy_cstore_txn(s, NULL, 0, &bad, 1, NULL, 0, NULL, 0, msg, sizeof(msg)), GY_EINVAL);
  CHECK(strstr(msg, "empty key") != NULL);

  /* compare-and-swap */
  int64_t crev = 0, cur = 0;
  CHECK_EQ_INT(gy_cstore_cas(s, "/c", 0, "a", 1, 0, &crev, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(crev, last + 1);
  last = crev;
  CHECK_EQ_INT(gy_cstore_cas(s, "/c", 0, "b", 1, 0, &cur, 0, msg, sizeof(msg)), GY_EMISMATCH);
  CHECK_EQ_INT(cur, crev);
  CHECK(strstr(msg, "/c") && strstr(msg, "expected mod_revision 0"));
  CHECK_EQ_INT(gy_cstore_cas(s2, "/c", crev, "b", 1, 0, &r, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(r, last + 1);
  last = r;
  CHECK_EQ_INT(gy_cstore_cas(s, "/c", crev, "c", 1, 0, &cur, 0, msg, sizeof(msg)), GY_EMISMATCH);
  CHECK_EQ_INT(cur, r);
  /* two handles race a counter through get + cas: no lost update */
  CHECK_EQ_INT(put_s(s, "/race/n", "0", 0, &r), 0);
  racer_t ra = {s, 0, 0}, rb = {s2, 0, 0};
  pthread_t ta, tb;
  pthread_create(&ta, NULL, racer, &ra);
  pthread_create(&tb, NULL, racer, &rb);
  pthread_join(ta, NULL);
  pthread_join(tb, NULL);
  CHECK_EQ_INT(ra.errors + rb.errors, 0);
  CHECK_EQ_INT(gy_cstore_get(s, "/race/n", &kv, NULL, 0, msg, sizeof(msg)), 0);
  CHECK_MSG(atoi((char *)kv.value) == 30, "counter %s", (char *)kv.value);
  printf("   CAS race: 30 increments from two handles, %d conflicts retried\n",
         ra.conflicts + rb.conflicts);
  gy_cstore_kv_clear(&kv);
  CHECK_EQ_INT(gy_cstore_revision(s, &last, 0, msg, sizeof(msg)), 0);

  /* watch: from now, puts and deletes in order with their revisions */
  rec_t w1;
  memset(&w1, 0, sizeof(w1));
  pthread_mutex_init(&w1.mu, NULL);
  gy_cstore_watch_t *w = NULL;
  CHECK_EQ_INT(gy_cstore_watch(s2, "/w/", 0, rec_cb, &w1, &w, msg, sizeof(msg)), 0);
  int64_t wr[5];
  CHECK_EQ_INT(put_s(s, "/w/a", "1", 0, &wr[0]), 0);
  CHECK_EQ_INT(put_s(s, "/w/b", "2", 0, &wr[1]), 0);
  CHECK_EQ_INT(put_s(s, "/wx", "outside", 0, &r), 0);
  CHECK_EQ_INT(gy_cstore_delete(s, "/w/a", 0, NULL, &wr[2], 0, msg, sizeof(msg)), 0);
  gy_cstore_op_t two[2] = {{.type = GY_CSTORE_OP_PUT, .key = "/w/c", .value = "3", .value_len = 1},
                           {.type = GY_CSTORE_OP_PUT, .key = "/w/d", .value = "4", .value_len = 1}};
  CHECK_EQ_INT(gy_cstore_txn(s, NULL, 0, two, 2, NULL, 0, &tr, 0, msg, sizeof(msg)), 0);
  wr[3] = wr[4] = tr.revision;
  gy_cstore_txn_clear(&tr);
  CHECK(wr[0] < wr[1] && wr[1] < wr[2] && wr[2] < wr[3]);
  CHECK(wait_count(&w1, 5, 10.0));
  const char *wk[5] = {"/w/a", "/w/b", "/w/a", "/w/c", "/w/d"};
  const int wt[5] = {GY_CSTORE_EV_PUT, GY_CSTORE_EV_PUT, GY_CSTORE_EV_DELETE, GY_CSTORE_EV_PUT,
                     GY_CSTORE_EV_PUT};
  pthread_mutex_lock(&w1.mu);
  CHECK_EQ_INT(w1.n, 5);
  for (int i = 0; i < 5 && i < w1.n; i++) {
    CHECK_MSG(!strcmp(w1.key[i], wk[i]) && w1.type[i] == wt[i] && w1.rev[i] == wr[i],
              "event %d: %s type %d rev %lld", i, w1.key[i], w1.type[i], (long long)w1.rev[i]);
  }
  CHECK(!strcmp(w1.val[0], "1") && !strcmp(w1.val[4], "4"));
  pthread_mutex_unlock(&w1.mu);
  gy_cstore_watch_cancel(w);
  /* replay from a past revision on the other handle: the same history */
  rec_t w2;
  memset(&w2, 0, sizeof(w2));
  pthread_mutex_init(&w2.mu, NULL);
  CHECK_EQ_INT(gy_cstore_watch(s, "/w/", wr[0], rec_cb, &w2, &w, msg, sizeof(msg)), 0);
  CHECK(wait_count(&w2, 5, 10.0));
  sleep_s(0.2);
  pthread_mutex_lock(&w2.mu);
  CHECK_EQ_INT(w2.n, 5);
  for (int i = 0; i < 5 && i < w2.n; i++)
    CHECK(w2.rev[i] == wr[i] && w2.type[i] == wt[i]);
  pthread_mutex_unlock(&w2.mu);
  gy_cstore_watch_cancel(w);
  CHECK_EQ_INT(gy_cstore_watch(s, NULL, 0, rec_cb, &w2, &w, msg, sizeof(msg)), GY_EINVAL);

  /* leases: attach, expire (keys deleted), keep-alive, revoke, the keeper */
  int64_t lid = 0, ttl = 0;
  CHECK_EQ_INT(gy_cstore_lease_grant(s, 2, &lid, &ttl, 0, msg, sizeof(msg)), 0);
  CHECK(lid != 0 && ttl >= 2);
  CHECK_EQ_INT(put_s(s, "/l/k", "leased", lid, NULL), 0);
  CHECK_EQ_INT(gy_cstore_get(s2, "/l/k", &kv, NULL, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(kv.lease, lid);
  gy_cstore_kv_clear(&kv);
  int64_t left = 0;
  CHECK_EQ_INT(gy_cstore_lease_keepalive_once(s, lid, &left, 0, msg, sizeof(msg)), 0);
  CHECK(left >= 1);
  rec_t w3;
  memset(&w3, 0, sizeof(w3));
  pthread_mutex_init(&w3.mu, NULL);
  CHECK_EQ_INT(gy_cstore_watch(s2, "/l/", 0, rec_cb, &w3, &w, msg, sizeof(msg)), 0);
  double t0 = now_s();
  int gone = 0;
  while (now_s() < t0 + ttl + 6.0) {
    int rc = gy_cstore_get(s, "/l/k", &kv, NULL, 0, msg, sizeof(msg));
    if (rc == GY_ENOENT) {
      gone = 1;
      break;
    }
    gy_cstore_kv_clear(&kv);
    sleep_s(0.05);
  }
  double expiry = now_s() - t0;
  CHECK_MSG(gone, "leased key still there %.1f s after its %lld s TTL", expiry, (long long)ttl);
  printf("   lease of %lld s: key deleted %.2f s after the last keep-alive\n", (long long)ttl,
         expiry);
  CHECK(wait_count(&w3, 1, 5.0));
  pthread_mutex_lock(&w3.mu);
  CHECK(w3.n == 1 && w3.type[0] == GY_CSTORE_EV_DELETE && !strcmp(w3.key[0], "/l/k"));
  pthread_mutex_unlock(&w3.mu);
  gy_cstore_watch_cancel(w);
  CHECK_EQ_INT(gy_cstore_lease_keepalive_once(s, lid, &left, 0, msg, sizeof(msg)), GY_ENOENT);
  CHECK_EQ_INT(put_s(s, "/l/k2", "x", lid, NULL), GY_ENOENT);
  CHECK(strstr(msg, "lease") != NULL);
  CHECK_EQ_INT(gy_cstore_lease_revoke(s, lid, 0, msg, sizeof(msg)), GY_ENOENT);
  /* revoke deletes the keys at once, in one revision */
  CHECK_EQ_INT(gy_cstore_lease_grant(s, 30, &lid, &ttl, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(put_s(s, "/l/a", "x", lid, NULL), 0);
  CHECK_EQ_INT(put_s(s, "/l/b", "x", lid, &r), 0);
  CHECK_EQ_INT(gy_cstore_lease_revoke(s2, lid, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(gy_cstore_range(s, "/l/", NULL, 0, &rg, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(rg.n, 0);
  CHECK_EQ_INT(rg.revision, r + 1);
  gy_cstore_range_clear(&rg);
  /* the keeper keeps a 2 s lease alive for 3 s; a revoke makes it report the loss */
  CHECK_EQ_INT(gy_cstore_lease_grant(s, 2, &lid, &ttl, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(gy_cstore_lease_keep(s, lid, ttl, lost_cb, NULL, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(put_s(s, "/l/kept", "x", lid, NULL), 0);
  sleep_s(ttl * 1.5);
  CHECK_EQ_INT(gy_cstore_get(s2, "/l/kept", &kv, NULL, 0, msg, sizeof(msg)), 0);
  gy_cstore_kv_clear(&kv);
  atomic_store(&lost_err, 0);
  CHECK_EQ_INT(gy_cstore_lease_revoke(s2, lid, 0, msg, sizeof(msg)), 0);
  t0 = now_s();
  while (!atomic_load(&lost_err) && now_s() < t0 + ttl + 3.0)
    sleep_s(0.02);
  CHECK_EQ_INT(atomic_load(&lost_err), GY_ENOENT);
  /* forget: no more keep-alives, the lease expires, no callback */
  CHECK_EQ_INT(gy_cstore_lease_grant(s, 2, &lid, &ttl, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(gy_cstore_lease_keep(s, lid, ttl, lost_cb, NULL, msg, sizeof(msg)), 0);
  atomic_store(&lost_err, 0);
  gy_cstore_lease_forget(s, lid);
  CHECK_EQ_INT(gy_cstore_lease_grant(s, 0, &lid, &ttl, 0, msg, sizeof(msg)), GY_EINVAL);

  /* revisions never went backwards */
  int64_t fin = 0;
  CHECK_EQ_INT(gy_cstore_revision(s2, &fin, 0, msg, sizeof(msg)), 0);
  CHECK(fin > last);
  CHECK_EQ_INT(atomic_load(&lost_err), 0);
}

/* --------------------------------------- bad inputs --------------------------------------- */

static void bad_urls(const char *tmp) {
  printf("== bad URLs and files\n");
  gy_cstore_t *s = NULL;
  struct {
    const char *url;
    int rc;
    const char *needle;
  } cases[] = {
      {"", GY_ECONFIG, "empty URL"},
      {"redis://x:1", GY_ECONFIG, "unknown URL"},
      {"etcd://", GY_ECONFIG, "names no endpoint"},
      {"sqlite:", GY_ECONFIG, "names no file"},
      {"etcd://localhost", GY_ECONFIG, "'localhost' is not host:port"},
      {"etcd://127.0.0.1:0", GY_ECONFIG, "is not host:port"},
      {"etcd://127.0.0.1:2379,:5", GY_ECONFIG, "':5' is not host:port"},
      {"etcd://127.0.0.1:12x", GY_ECONFIG, "is not host:port"},
      {"sqlite:/nonexistent-gyro-dir/x/store.db", GY_EIO, "/nonexistent-gyro-dir/x/store.db"},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    msg[0] = 0;
    int rc = gy_cstore_create(&s, cases[i].url, NULL, msg, sizeof(msg));
    CHECK_MSG(rc == cases[i].rc && s == NULL && strstr(msg, cases[i].needle),
              "url '%s': rc %d msg '%s'", cases[i].url, rc, msg);
    gy_cstore_destroy(s);
    s = NULL;
  }
  gy_cstore_opts_t o = {.cert_file = "/x.pem"};
  CHECK_EQ_INT(gy_cstore_create(&s, "etcd://127.0.0.1:1", &o, msg, sizeof(msg)), GY_ECONFIG);
  CHECK(strstr(msg, "key_file") != NULL);
  gy_cstore_opts_t o2 = {.username = "u"};
  CHECK_EQ_INT(gy_cstore_create(&s, "etcd://127.0.0.1:1", &o2, msg, sizeof(msg)), GY_ECONFIG);
  CHECK(strstr(msg, "password") != NULL);
  gy_cstore_opts_t o3 = {.ca_file = "/nonexistent-gyro-ca.pem"};
  CHECK_EQ_INT(gy_cstore_create(&s, "etcd://127.0.0.1:1", &o3, msg, sizeof(msg)), GY_ECONFIG);
  CHECK(strstr(msg, "/nonexistent-gyro-ca.pem") != NULL);
  /* a file that is not a database */
  char path[300];
  snprintf(path, sizeof(path), "%s/garbage.db", tmp);
  FILE *f = fopen(path, "wb");
  REQUIRE(f);
  for (int i = 0; i < 2048; i++)
    fputc("not a database "[i % 15], f);
  fclose(f);
  char url[320];
  snprintf(url, sizeof(url), "sqlite:%s", path);
  int rc = gy_cstore_create(&s, url, NULL, msg, sizeof(msg));
  CHECK_MSG(rc == GY_ECORRUPT && strstr(msg, path), "rc %d msg %s", rc, msg);
  gy_cstore_destroy(s);
  s = NULL;

  /* a SQLite file locked by another writer: a clear timeout, on time */
  snprintf(path, sizeof(path), "%s/locked.db", tmp);
  snprintf(url, sizeof(url), "sqlite:%s", path);
  REQUIRE(gy_cstore_create(&s, url, NULL, msg, sizeof(msg)) == 0);
  sqlite3 *db = NULL;
  REQUIRE(sqlite3_open(path, &db) == SQLITE_OK);
  REQUIRE(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK);
  double t0 = now_s();
  rc = gy_cstore_put(s, "/k", "v", 1, 0, NULL, 800, msg, sizeof(msg));
  double dt = now_s() - t0;
  CHECK_MSG(rc == GY_ETIMEDOUT && strstr(msg, "locked") && strstr(msg, path), "rc %d msg %s", rc,
            msg);
  CHECK_MSG(dt >= 0.5 && dt < 5.0, "locked put returned after %.2f s", dt);
  printf("   locked SQLite: %s after %.2f s: %s\n", gy_err_name(rc), dt, msg);
  sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  sqlite3_close(db);
  CHECK_EQ_INT(gy_cstore_put(s, "/k", "v", 1, 0, NULL, 0, msg, sizeof(msg)), 0);
  gy_cstore_destroy(s);

  /* an etcd endpoint nobody listens on: a clear timeout within the deadline */
  int port = gy_free_port();
  snprintf(url, sizeof(url), "etcd://127.0.0.1:%d", port);
  REQUIRE(gy_cstore_create(&s, url, NULL, msg, sizeof(msg)) == 0);
  t0 = now_s();
  rc = gy_cstore_put(s, "/k", "v", 1, 0, NULL, 1500, msg, sizeof(msg));
  dt = now_s() - t0;
  char ep[64];
  snprintf(ep, sizeof(ep), "127.0.0.1:%d", port);
  CHECK_MSG(rc == GY_ETIMEDOUT && strstr(msg, ep), "rc %d msg %s", rc, msg);
  CHECK_MSG(dt >= 1.0 && dt < 5.0, "unreachable put returned after %.2f s", dt);
  printf("   unreachable etcd: %s after %.2f s: %s\n", gy_err_name(rc), dt, msg);
  gy_cstore_destroy(s);
}

/* ------------------------------------ etcd restart mid-test ------------------------------------
 */

typedef struct {
  gy_cstore_t *s;
  atomic_int stop;
  int ok, timeouts, other;
  int ok_keys[10000];
  char last_err[700];
} writer_t;

static void *writer(void *arg) {
  writer_t *w = arg;
  char m[512];
  for (int i = 0; i < 10000 && !atomic_load(&w->stop); i++) {
    char k[64];
    snprintf(k, sizeof(k), "/outage/%05d", i);
    int rc = gy_cstore_put(w->s, k, "v", 1, 0, NULL, 3000, m, sizeof(m));
    if (rc == 0) {
      w->ok_keys[w->ok++] = i;
    } else {
      if (rc == GY_ETIMEDOUT)
        w->timeouts++;
      else
        w->other++;
      snprintf(w->last_err, sizeof(w->last_err), "%s: %s", gy_err_name(rc), m);
    }
    usleep(20000);
  }
  return NULL;
}

static void etcd_restart(gy_etcd_proc_t *e, gy_cstore_t *s) {
  printf("== etcd SIGKILL and restart mid-test\n");
  for (int i = 0; i < 50; i++) {
    char k[32], v[32];
    snprintf(k, sizeof(k), "/before/%02d", i);
    snprintf(v, sizeof(v), "value-%d", i);
    REQUIRE(put_s(s, k, v, 0, NULL) == 0);
  }
  rec_t wr;
  memset(&wr, 0, sizeof(wr));
  pthread_mutex_init(&wr.mu, NULL);
  gy_cstore_watch_t *w = NULL;
  CHECK_EQ_INT(gy_cstore_watch(s, "/outage/", 0, rec_cb, &wr, &w, msg, sizeof(msg)), 0);
  writer_t *wt = calloc(1, sizeof(*wt));
  wt->s = s;
  pthread_t th;
  pthread_create(&th, NULL, writer, wt);
  sleep_s(0.5);
  gy_etcd_proc_kill(e);
  double t_kill = now_s();
  /* a short deadline during the outage: a clear error naming the endpoint, on time */
  double t0 = now_s();
  int rc = gy_cstore_put(s, "/during", "x", 1, 0, NULL, 1000, msg, sizeof(msg));
  double dt = now_s() - t0;
  CHECK_MSG(rc == GY_ETIMEDOUT && strstr(msg, e->endpoint), "rc %d msg %s", rc, msg);
  CHECK_MSG(dt < 4.0, "outage put returned after %.2f s", dt);
  printf("   during the outage: %s after %.2f s: %s\n", gy_err_name(rc), dt, msg);
  sleep_s(1.5);
  REQUIRE(gy_etcd_proc_spawn(e) == 0);
  /* a long deadline spanning the restart: succeeds after retries */
  t0 = now_s();
  rc = gy_cstore_put(s, "/after-restart", "x", 1, 0, NULL, 20000, msg, sizeof(msg));
  CHECK_MSG(rc == 0, "put across the restart: %s", msg);
  printf("   put issued during the restart succeeded after %.2f s (outage %.2f s)\n", now_s() - t0,
         now_s() - t_kill);
  sleep_s(1.0);
  atomic_store(&wt->stop, 1);
  pthread_join(th, NULL);
  printf("   writer: %d puts ok, %d timed out, %d other errors (last: %s)\n", wt->ok, wt->timeouts,
         wt->other, wt->last_err);
  CHECK(wt->ok > 10);
  CHECK_EQ_INT(wt->other, 0);
  /* nothing written before is lost */
  gy_cstore_range_t rg;
  CHECK_EQ_INT(gy_cstore_range(s, "/before/", NULL, 0, &rg, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(rg.n, 50);
  for (size_t i = 0; i < rg.n; i++) {
    char v[32];
    snprintf(v, sizeof(v), "value-%zu", i);
    CHECK(!strcmp((char *)rg.kvs[i].value, v));
  }
  gy_cstore_range_clear(&rg);
  /* every acknowledged put is there, and the watch saw each key once, in order, no gap */
  CHECK_EQ_INT(gy_cstore_range(s, "/outage/", NULL, 0, &rg, 0, msg, sizeof(msg)), 0);
  int present = 0;
  for (int i = 0; i < wt->ok; i++) {
    char k[64];
    snprintf(k, sizeof(k), "/outage/%05d", wt->ok_keys[i]);
    for (size_t j = 0; j < rg.n; j++)
      if (!strcmp(rg.kvs[j].key, k)) {
        present++;
        break;
      }
  }
  CHECK_EQ_INT(present, wt->ok);
  CHECK(wait_count(&wr, (int)rg.n, 10.0));
  sleep_s(0.3);
  pthread_mutex_lock(&wr.mu);
  /* A put whose reply was lost in the kill may have been applied twice (retried): its key then
   * shows two consecutive events. Distinct keys must match the store exactly, in order. */
  int distinct = 0;
  for (int i = 0; i < wr.n; i++) {
    CHECK_MSG(i == 0 || wr.rev[i] > wr.rev[i - 1], "watch event %d: revision went back", i);
    if (i > 0 && !strcmp(wr.key[i], wr.key[i - 1])) continue;
    CHECK_MSG(distinct < (int)rg.n && !strcmp(wr.key[i], rg.kvs[distinct].key),
              "watch event %d: %s", i, wr.key[i]);
    distinct++;
  }
  CHECK_EQ_INT(distinct, (int)rg.n);
  printf("   watch across the restart: %d events for %d keys, in order, none missing\n", wr.n,
         distinct);
  pthread_mutex_unlock(&wr.mu);
  gy_cstore_range_clear(&rg);
  gy_cstore_watch_cancel(w);
  free(wt);
}

/* ---------------------------------------- authentication ----------------------------------------
 */

/* Calls an etcd Auth method through the project's own RPC client (setup only). */
static int auth_call(gy_rpc_client_t *c, const char *method, const ProtobufCMessage *req,
                     const char *token) {
  size_t len = protobuf_c_message_get_packed_size(req);
  uint8_t *buf = malloc(len + 1);
  protobuf_c_message_pack(req, buf);
  void *resp = NULL;
  size_t rlen = 0;
  int st = 0;
  char m[256];
  int rc = gy_rpc_unary(c, method, token ? "token" : NULL, token, buf, len, 5000, &resp, &rlen, &st,
                        m, sizeof(m));
  if (rc < 0) fprintf(stderr, "%s: %s\n", method, m);
  free(buf);
  free(resp);
  return rc;
}

static void etcd_auth(gy_etcd_proc_t *e) {
  printf("== etcd authentication\n");
  gy_rpc_client_t *c = NULL;
  REQUIRE(gy_rpc_client_create(&c, e->endpoint, msg, sizeof(msg)) == 0);
  Etcdserverpb__AuthRoleAddRequest role = ETCDSERVERPB__AUTH_ROLE_ADD_REQUEST__INIT;
  role.name = "root";
  Etcdserverpb__AuthUserAddRequest user = ETCDSERVERPB__AUTH_USER_ADD_REQUEST__INIT;
  user.name = "root";
  user.password = "s3cret";
  Etcdserverpb__AuthUserGrantRoleRequest grant = ETCDSERVERPB__AUTH_USER_GRANT_ROLE_REQUEST__INIT;
  grant.user = "root";
  grant.role = "root";
  Etcdserverpb__AuthEnableRequest en = ETCDSERVERPB__AUTH_ENABLE_REQUEST__INIT;
  REQUIRE(auth_call(c, "/etcdserverpb.Auth/RoleAdd", &role.base, NULL) == 0);
  REQUIRE(auth_call(c, "/etcdserverpb.Auth/UserAdd", &user.base, NULL) == 0);
  REQUIRE(auth_call(c, "/etcdserverpb.Auth/UserGrantRole", &grant.base, NULL) == 0);
  REQUIRE(auth_call(c, "/etcdserverpb.Auth/AuthEnable", &en.base, NULL) == 0);
  gy_rpc_client_destroy(c);

  gy_cstore_t *s = NULL;
  /* no credentials: refused with etcd's words */
  REQUIRE(gy_cstore_create(&s, e->url, NULL, msg, sizeof(msg)) == 0);
  int rc = gy_cstore_put(s, "/auth/k", "v", 1, 0, NULL, 3000, msg, sizeof(msg));
  CHECK_MSG(rc == GY_EIO && strstr(msg, e->endpoint), "rc %d msg %s", rc, msg);
  printf("   no credentials: %s: %s\n", gy_err_name(rc), msg);
  gy_cstore_destroy(s);
  /* a wrong password: a configuration error naming the user */
  gy_cstore_opts_t o = {.username = "root", .password = "wrong"};
  REQUIRE(gy_cstore_create(&s, e->url, &o, msg, sizeof(msg)) == 0);
  rc = gy_cstore_put(s, "/auth/k", "v", 1, 0, NULL, 3000, msg, sizeof(msg));
  CHECK_MSG(rc == GY_ECONFIG && strstr(msg, "'root'"), "rc %d msg %s", rc, msg);
  printf("   wrong password: %s: %s\n", gy_err_name(rc), msg);
  gy_cstore_destroy(s);
  /* the right one: puts, gets, watches and leases work */
  o.password = "s3cret";
  REQUIRE(gy_cstore_create(&s, e->url, &o, msg, sizeof(msg)) == 0);
  rec_t wr;
  memset(&wr, 0, sizeof(wr));
  pthread_mutex_init(&wr.mu, NULL);
  gy_cstore_watch_t *w = NULL;
  CHECK_EQ_INT(gy_cstore_watch(s, "/auth/", 0, rec_cb, &wr, &w, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(gy_cstore_put(s, "/auth/k", "v", 1, 0, NULL, 3000, msg, sizeof(msg)), 0);
  gy_cstore_kv_t kv;
  CHECK_EQ_INT(gy_cstore_get(s, "/auth/k", &kv, NULL, 0, msg, sizeof(msg)), 0);
  gy_cstore_kv_clear(&kv);
  int64_t lid, ttl;
  CHECK_EQ_INT(gy_cstore_lease_grant(s, 5, &lid, &ttl, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(gy_cstore_lease_keepalive_once(s, lid, &ttl, 0, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(gy_cstore_lease_revoke(s, lid, 0, msg, sizeof(msg)), 0);
  CHECK(wait_count(&wr, 1, 5.0));
  gy_cstore_watch_cancel(w);
  gy_cstore_destroy(s);
}

/* ------------------------------------------ TLS ------------------------------------------ */

/* A throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl CLI). */
static int make_certs(const char *dir) {
  char cmd[4096];
  snprintf(cmd, sizeof(cmd),
           "(cd '%s' && "
           "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "
           "ca.key -out ca.pem -days 1 "
           "-subj /CN=gyro-test-ca && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout server.key "
           "-out server.csr "
           "-subj /CN=127.0.0.1 && "
           "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' "
           "> server.ext && "
           "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
           "-out server.pem -days 1 -extfile server.ext && "
           "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout client.key "
           "-out client.csr "
           "-subj /CN=gyro-controller && "
           "printf 'extendedKeyUsage=clientAuth\\n' > client.ext && "
           "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial "
           "-out client.pem -days 1 -extfile client.ext)",
           dir);
  snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " > '%s/openssl.log' 2>&1", dir);
  return system(cmd);
}

static void etcd_tls(const char *tmp) {
  printf("== etcd over TLS with client certificates\n");
  char dir[200];
  snprintf(dir, sizeof(dir), "%s/tls", tmp);
  REQUIRE(mkdir(dir, 0700) == 0);
  REQUIRE(make_certs(dir) == 0);
  char ca[240], cert[240], key[240], scert[240], skey[240], ext[240];
  snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
  snprintf(cert, sizeof(cert), "%s/client.pem", dir);
  snprintf(key, sizeof(key), "%s/client.key", dir);
  snprintf(scert, sizeof(scert), "%s/server.pem", dir);
  snprintf(skey, sizeof(skey), "%s/server.key", dir);
  static gy_etcd_proc_t e;
  REQUIRE(gy_etcd_proc_init(&e) == 0);
  e.scheme = "https";
  snprintf(e.tls_args[0], sizeof(e.tls_args[0]), "--cert-file=%s", scert);
  snprintf(e.tls_args[1], sizeof(e.tls_args[1]), "--key-file=%s", skey);
  snprintf(e.tls_args[2], sizeof(e.tls_args[2]), "--trusted-ca-file=%s", ca);
  snprintf(e.tls_args[3], sizeof(e.tls_args[3]), "--client-cert-auth");
  gy_cstore_opts_t o = {.ca_file = ca, .cert_file = cert, .key_file = key};
  REQUIRE(gy_etcd_proc_start(&e, &o) == 0);
  gy_cstore_t *s = NULL;
  REQUIRE(gy_cstore_create(&s, e.url, &o, msg, sizeof(msg)) == 0);
  rec_t wr;
  memset(&wr, 0, sizeof(wr));
  pthread_mutex_init(&wr.mu, NULL);
  gy_cstore_watch_t *w = NULL;
  CHECK_EQ_INT(gy_cstore_watch(s, "/tls/", 0, rec_cb, &wr, &w, msg, sizeof(msg)), 0);
  CHECK_EQ_INT(put_s(s, "/tls/k", "secret", 0, NULL), 0);
  gy_cstore_kv_t kv;
  CHECK_EQ_INT(gy_cstore_get(s, "/tls/k", &kv, NULL, 0, msg, sizeof(msg)), 0);
  CHECK(!strcmp((char *)kv.value, "secret"));
  gy_cstore_kv_clear(&kv);
  CHECK(wait_count(&wr, 1, 5.0));
  gy_cstore_watch_cancel(w);
  gy_cstore_destroy(s);
  /* plaintext to a TLS server, and TLS without the client certificate: clear errors, on time */
  gy_cstore_opts_t none = {0}, noclient = {.ca_file = ca};
  const gy_cstore_opts_t *bad[2] = {&none, &noclient};
  for (int i = 0; i < 2; i++) {
    REQUIRE(gy_cstore_create(&s, e.url, bad[i], msg, sizeof(msg)) == 0);
    double t0 = now_s();
    int rc = gy_cstore_put(s, "/tls/x", "v", 1, 0, NULL, 1000, msg, sizeof(msg));
    double dt = now_s() - t0;
    CHECK_MSG(rc < 0 && strstr(msg, e.endpoint) && dt < 5.0, "rc %d after %.2f s: %s", rc, dt, msg);
    printf("   %s: %s after %.2f s: %s\n", i ? "no client certificate" : "plaintext",
           gy_err_name(rc), dt, msg);
    gy_cstore_destroy(s);
  }
  /* a CA file that holds no certificate */
  snprintf(ext, sizeof(ext), "%s/server.ext", dir);
  gy_cstore_opts_t junk = {.ca_file = ext};
  CHECK_EQ_INT(gy_cstore_create(&s, e.url, &junk, msg, sizeof(msg)), GY_ECONFIG);
  CHECK(strstr(msg, "server.ext") && strstr(msg, "no PEM"));
  gy_etcd_proc_kill(&e);
}

/* The temp folder goes on every exit, a failed REQUIRE (exit 1) included. */
static char tmp_dir[64];
static void remove_tmp(void) {
  if (!tmp_dir[0]) return;
  char cmd[100];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp_dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", tmp_dir);
  tmp_dir[0] = 0;
}

int main(void) {
  char tmp[] = "/tmp/gyro-store.XXXXXX";
  REQUIRE(mkdtemp(tmp) != NULL);
  snprintf(tmp_dir, sizeof(tmp_dir), "%s", tmp);
  atexit(remove_tmp);

  /* SQLite: two handles on one file */
  char url[300];
  snprintf(url, sizeof(url), "sqlite:%s/store.db", tmp);
  gy_cstore_t *a = NULL, *b = NULL;
  REQUIRE(gy_cstore_create(&a, url, NULL, msg, sizeof(msg)) == 0);
  REQUIRE(gy_cstore_create(&b, url, NULL, msg, sizeof(msg)) == 0);
  contract("sqlite", a, b);
  /* a watch left open is cancelled by destroy */
  rec_t left;
  memset(&left, 0, sizeof(left));
  pthread_mutex_init(&left.mu, NULL);
  gy_cstore_watch_t *lw = NULL;
  CHECK_EQ_INT(gy_cstore_watch(a, "/", 0, rec_cb, &left, &lw, msg, sizeof(msg)), 0);
  gy_cstore_destroy(a);
  gy_cstore_destroy(b);
  /* reopening finds everything (durable) */
  REQUIRE(gy_cstore_create(&a, url, NULL, msg, sizeof(msg)) == 0);
  gy_cstore_kv_t kv;
  CHECK_EQ_INT(gy_cstore_get(a, "/race/n", &kv, NULL, 0, msg, sizeof(msg)), 0);
  gy_cstore_kv_clear(&kv);
  gy_cstore_destroy(a);

  /* etcd: a real server */
  static gy_etcd_proc_t e;
  REQUIRE(gy_etcd_proc_init(&e) == 0);
  REQUIRE(gy_etcd_proc_start(&e, NULL) == 0);
  REQUIRE(gy_cstore_create(&a, e.url, NULL, msg, sizeof(msg)) == 0);
  REQUIRE(gy_cstore_create(&b, e.url, NULL, msg, sizeof(msg)) == 0);
  contract("etcd", a, b);
  /* an endpoint list whose first member is down: calls fail over to the live one */
  {
    char list[160];
    snprintf(list, sizeof(list), "etcd://127.0.0.1:%d,%s", gy_free_port(), e.endpoint);
    gy_cstore_t *fo = NULL;
    REQUIRE(gy_cstore_create(&fo, list, NULL, msg, sizeof(msg)) == 0);
    double t0 = now_s();
    CHECK_MSG(gy_cstore_put(fo, "/failover", "x", 1, 0, NULL, 5000, msg, sizeof(msg)) == 0,
              "fail-over put: %s", msg);
    CHECK_EQ_INT(gy_cstore_get(fo, "/failover", &kv, NULL, 0, msg, sizeof(msg)), 0);
    gy_cstore_kv_clear(&kv);
    printf("   endpoint list with a dead first member: put ok after %.2f s\n", now_s() - t0);
    gy_cstore_destroy(fo);
  }
  CHECK_EQ_INT(gy_cstore_watch(b, "/", 0, rec_cb, &left, &lw, msg, sizeof(msg)), 0);
  gy_cstore_destroy(b);
  etcd_restart(&e, a);
  gy_cstore_destroy(a);
  etcd_auth(&e);

  bad_urls(tmp);
  etcd_tls(tmp);

  remove_tmp();
  GY_TEST_END();
}
