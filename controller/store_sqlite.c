/*
 * store_sqlite: the state store in one SQLite file, with etcd's semantics (store.h).
 *
 * Schema (version 1):
 *   meta(k, v)        'revision' (the store revision), 'compacted' (the newest revision whose
 *                     change log was dropped), 'schema' (1)
 *   kv(key, value, create_rev, mod_rev, version, lease)      the live keys (BLOB keys compare
 *                     with memcmp, the order etcd sorts in)
 *   lease(id, ttl, expires_ms)                               expires_ms is wall-clock time
 *   log(rev, seq, type, key, value, create_rev, version, lease)   every change, for watches
 *
 * Every write runs in one BEGIN IMMEDIATE transaction that first expires the leases whose time
 * has passed (each expired lease that held keys deletes them in a revision of its own, as in
 * etcd), then evaluates the compares and runs the chosen branch; a branch that writes
 * increases the revision by exactly one, whatever it writes. Reads run in a read transaction
 * and never block writers (WAL mode; synchronous=FULL, so a returned write survives a power
 * cut like an fsynced etcd write). Several processes may share the file: the write lock is
 * SQLite's, waited for up to the call's deadline (then GY_ETIMEDOUT).
 *
 * Leases use the wall clock, so they work between processes; each handle runs a sweeper
 * thread that expires due leases every 200 ms even when nobody writes. Watches are polling
 * threads (own connection) that read the change log every 50 ms; the log keeps the last
 * LOG_KEEP revisions (older start revisions get GY_ERANGE, as a compacted etcd would answer).
 *
 * Invariants: q->db is used only under q->mu; a transaction is either committed or rolled
 * back before mu is released; log rows of one revision are numbered seq 0, 1, ... in the order
 * the changes happened.
 */
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/err.h"
#include "controller/store_impl.h"

#define LOG_KEEP 100000
#define WATCH_POLL_MS 50
#define SWEEP_MS 200

typedef struct {
  char *path;
  sqlite3 *db;
  pthread_mutex_t mu;
  pthread_cond_t cv; /* sweeper's sleep; signalled on destroy */
  pthread_t sweeper;
  int sweeper_started, stop;
} sq_t;

typedef struct {
  sq_t *q;
  sqlite3 *db;
  char *key, *end;
  int64_t next;
  gy_cstore_watch_cb cb;
  void *ud;
  pthread_t th;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;
} sqw_t;

static int64_t wall_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int ms) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  ts.tv_sec += ms / 1000;
  ts.tv_nsec += (long)(ms % 1000) * 1000000;
  if (ts.tv_nsec >= 1000000000) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000;
  }
  pthread_cond_timedwait(cv, mu, &ts);
}

static void init_cond(pthread_cond_t *cv) {
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  pthread_cond_init(cv, &ca);
  pthread_condattr_destroy(&ca);
}

/* Maps an SQLite failure to a gyro error with a message naming the file and the step. */
static int sq_fail(sqlite3 *db, const char *path, const char *what, int src, char *errmsg,
                   size_t errlen) {
  int prim = src & 0xff;
  if (prim == SQLITE_BUSY || prim == SQLITE_LOCKED) {
    gy_errmsg(errmsg, errlen,
              "sqlite:%s: %s: the database stayed locked by another writer past the deadline", path,
              what);
    return GY_ETIMEDOUT;
  }
  gy_errmsg(errmsg, errlen, "sqlite:%s: %s: %s", path, what,
            db ? sqlite3_errmsg(db) : sqlite3_errstr(src));
  if (prim == SQLITE_NOTADB || prim == SQLITE_CORRUPT) return GY_ECORRUPT;
  if (prim == SQLITE_NOMEM) return GY_ENOMEM;
  return GY_EIO;
}

static int exec(sqlite3 *db, const char *sql) {
  return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

static void set_busy(sqlite3 *db, int64_t deadline_ms) {
  int64_t left = deadline_ms - gy__cstore_now_ms();
  sqlite3_busy_timeout(db, left > 1 ? (int)left : 1);
}

/* Prepares sql; on failure returns NULL and *rc holds the SQLite code. */
static sqlite3_stmt *prep(sqlite3 *db, const char *sql, int *rc) {
  sqlite3_stmt *st = NULL;
  *rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  return *rc == SQLITE_OK ? st : NULL;
}

static int64_t meta_get(sqlite3 *db, const char *k, int *rc) {
  sqlite3_stmt *st = prep(db, "SELECT v FROM meta WHERE k = ?", rc);
  if (!st) return 0;
  sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
  int64_t v = 0;
  int r = sqlite3_step(st);
  if (r == SQLITE_ROW)
    v = sqlite3_column_int64(st, 0);
  else if (r != SQLITE_DONE)
    *rc = r;
  sqlite3_finalize(st);
  return v;
}

static int meta_set(sqlite3 *db, const char *k, int64_t v) {
  int rc;
  sqlite3_stmt *st = prep(db, "UPDATE meta SET v = ? WHERE k = ?", &rc);
  if (!st) return rc;
  sqlite3_bind_int64(st, 1, v);
  sqlite3_bind_text(st, 2, k, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Binds the key range to parameters first.. of st: "= ?" for one key, ">= ? AND < ?", or
 * ">= ?" (end ""). The SQL must have been built with range_sql for the same case. */
static const char *range_where(const char *end) {
  if (!end) return "key = ?1";
  if (!*end) return "key >= ?1";
  return "key >= ?1 AND key < ?2";
}

static void bind_range(sqlite3_stmt *st, const char *key, const char *end) {
  sqlite3_bind_blob(st, 1, key, (int)strlen(key), SQLITE_STATIC);
  if (end && *end) sqlite3_bind_blob(st, 2, end, (int)strlen(end), SQLITE_STATIC);
}

/* Appends one change to the log. */
static int log_change(sqlite3 *db, int64_t rev, int seq, int type, const void *key, size_t key_len,
                      const void *value, size_t value_len, int64_t create_rev, int64_t version,
                      int64_t lease) {
  int rc;
  sqlite3_stmt *st = prep(db,
                          "INSERT INTO log(rev, seq, type, key, value, create_rev, version, lease)"
                          " VALUES(?, ?, ?, ?, ?, ?, ?, ?)",
                          &rc);
  if (!st) return rc;
  sqlite3_bind_int64(st, 1, rev);
  sqlite3_bind_int(st, 2, seq);
  sqlite3_bind_int(st, 3, type);
  sqlite3_bind_blob(st, 4, key, (int)key_len, SQLITE_STATIC);
  if (type == GY_CSTORE_EV_PUT)
    sqlite3_bind_blob(st, 5, value_len ? value : "", (int)value_len, SQLITE_STATIC);
  sqlite3_bind_int64(st, 6, create_rev);
  sqlite3_bind_int64(st, 7, version);
  sqlite3_bind_int64(st, 8, lease);
  rc = sqlite3_step(st);
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Deletes the keys selected by `sel` (one blob column: key; parameters already bound) at
 * revision rev, logging each; *n receives how many. `del` is the matching DELETE. */
static int delete_selected(sqlite3 *db, sqlite3_stmt *sel, sqlite3_stmt *del, int64_t rev, int *seq,
                           int64_t *n) {
  int rc;
  *n = 0;
  while ((rc = sqlite3_step(sel)) == SQLITE_ROW) {
    const void *k = sqlite3_column_blob(sel, 0);
    int kl = sqlite3_column_bytes(sel, 0);
    rc = log_change(db, rev, (*seq)++, GY_CSTORE_EV_DELETE, k ? k : "", (size_t)kl, NULL, 0, 0, 0,
                    0);
    if (rc != SQLITE_OK) return rc;
    (*n)++;
  }
  if (rc != SQLITE_DONE) return rc;
  if (*n == 0) return SQLITE_OK;
  rc = sqlite3_step(del);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* Deletes lease id's keys at revision rev (logged); *n = how many keys. Removes the lease. */
static int drop_lease(sqlite3 *db, int64_t id, int64_t rev, int64_t *n) {
  int rc, seq = 0;
  sqlite3_stmt *sel = prep(db, "SELECT key FROM kv WHERE lease = ? ORDER BY key", &rc);
  sqlite3_stmt *del = sel ? prep(db, "DELETE FROM kv WHERE lease = ?", &rc) : NULL;
  sqlite3_stmt *dl = del ? prep(db, "DELETE FROM lease WHERE id = ?", &rc) : NULL;
  if (dl) {
    sqlite3_bind_int64(sel, 1, id);
    sqlite3_bind_int64(del, 1, id);
    sqlite3_bind_int64(dl, 1, id);
    rc = delete_selected(db, sel, del, rev, &seq, n);
    if (rc == SQLITE_OK) rc = sqlite3_step(dl) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(db);
  }
  sqlite3_finalize(sel);
  sqlite3_finalize(del);
  sqlite3_finalize(dl);
  return rc;
}

/* Inside a write transaction: expires every lease past its time; *rev advances by one per
 * lease that held keys. */
static int expire_leases(sqlite3 *db, int64_t *rev) {
  int rc;
  sqlite3_stmt *st = prep(db, "SELECT id FROM lease WHERE expires_ms <= ? ORDER BY id", &rc);
  if (!st) return rc;
  sqlite3_bind_int64(st, 1, wall_ms());
  int64_t ids[64];
  int n = 0;
  while (n < 64 && (rc = sqlite3_step(st)) == SQLITE_ROW)
    ids[n++] = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) return rc;
  for (int i = 0; i < n; i++) {
    int64_t gone = 0;
    rc = drop_lease(db, ids[i], *rev + 1, &gone);
    if (rc != SQLITE_OK) return rc;
    if (gone) (*rev)++;
  }
  return SQLITE_OK;
}

/* Starts a write transaction: lock, BEGIN IMMEDIATE, expire leases. *rev = the revision. */
static int wbegin(sq_t *q, int64_t deadline_ms, int64_t *rev, int64_t *rev0, char *errmsg,
                  size_t errlen) {
  pthread_mutex_lock(&q->mu);
  set_busy(q->db, deadline_ms);
  int rc = exec(q->db, "BEGIN IMMEDIATE");
  if (rc != SQLITE_OK) {
    int e = sq_fail(q->db, q->path, "begin a write", rc, errmsg, errlen);
    pthread_mutex_unlock(&q->mu);
    return e;
  }
  rc = SQLITE_OK;
  *rev0 = *rev = meta_get(q->db, "revision", &rc);
  if (rc == SQLITE_OK) rc = expire_leases(q->db, rev);
  if (rc != SQLITE_OK) {
    int e = sq_fail(q->db, q->path, "expire leases", rc, errmsg, errlen);
    exec(q->db, "ROLLBACK");
    pthread_mutex_unlock(&q->mu);
    return e;
  }
  return 0;
}

/* Ends a write transaction begun by wbegin: records rev (when it moved), prunes the log now
 * and then, commits (or rolls back when failed < 0). Returns failed or the commit's error. */
static int wend(sq_t *q, int failed, int64_t rev0, int64_t rev, char *errmsg, size_t errlen) {
  int rc = SQLITE_OK;
  if (failed == 0 && rev != rev0) {
    rc = meta_set(q->db, "revision", rev);
    if (rc == SQLITE_OK && rev / 1024 != rev0 / 1024 && rev > LOG_KEEP) {
      sqlite3_stmt *st = prep(q->db, "DELETE FROM log WHERE rev <= ?", &rc);
      if (st) {
        sqlite3_bind_int64(st, 1, rev - LOG_KEEP);
        rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(q->db);
        sqlite3_finalize(st);
      }
      if (rc == SQLITE_OK) rc = meta_set(q->db, "compacted", rev - LOG_KEEP);
    }
    if (rc != SQLITE_OK)
      failed = sq_fail(q->db, q->path, "record the revision", rc, errmsg, errlen);
  }
  if (failed == 0) {
    rc = exec(q->db, "COMMIT");
    if (rc != SQLITE_OK) failed = sq_fail(q->db, q->path, "commit", rc, errmsg, errlen);
  }
  if (failed < 0) exec(q->db, "ROLLBACK");
  pthread_mutex_unlock(&q->mu);
  return failed;
}

/* Reads [key, end) into out (limit 0 = all). */
static int read_range(sqlite3 *db, const char *key, const char *end, int64_t limit,
                      gy_cstore_range_t *out) {
  char sql[256];
  snprintf(sql, sizeof(sql),
           "SELECT key, value, create_rev, mod_rev, version, lease FROM kv WHERE %s ORDER BY key"
           " LIMIT %lld",
           range_where(end), (long long)(limit > 0 ? limit + 1 : -1));
  int rc;
  sqlite3_stmt *st = prep(db, sql, &rc);
  if (!st) return rc;
  bind_range(st, key, end);
  size_t cap = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    if (limit > 0 && (int64_t)out->n == limit) {
      out->more = 1;
      continue;
    }
    if (out->n == cap) {
      cap = cap ? 2 * cap : 8;
      gy_cstore_kv_t *nk = realloc(out->kvs, cap * sizeof(*nk));
      if (!nk) {
        rc = SQLITE_NOMEM;
        break;
      }
      out->kvs = nk;
    }
    gy_cstore_kv_t *kv = &out->kvs[out->n];
    memset(kv, 0, sizeof(*kv));
    const void *k = sqlite3_column_blob(st, 0);
    const void *v = sqlite3_column_blob(st, 1);
    if (gy__cstore_kv_set(kv, k ? k : "", (size_t)sqlite3_column_bytes(st, 0), v ? v : "",
                          (size_t)sqlite3_column_bytes(st, 1)) < 0) {
      rc = SQLITE_NOMEM;
      break;
    }
    kv->create_revision = sqlite3_column_int64(st, 2);
    kv->mod_revision = sqlite3_column_int64(st, 3);
    kv->version = sqlite3_column_int64(st, 4);
    kv->lease = sqlite3_column_int64(st, 5);
    out->n++;
  }
  sqlite3_finalize(st);
  return rc == SQLITE_DONE ? SQLITE_OK : rc;
}

/* --------------------------------------- vtable --------------------------------------- */

static int sq_range(void *be, const char *key, const char *end, int64_t limit,
                    gy_cstore_range_t *out, int64_t deadline_ms, char *errmsg, size_t errlen) {
  sq_t *q = be;
  memset(out, 0, sizeof(*out));
  pthread_mutex_lock(&q->mu);
  set_busy(q->db, deadline_ms);
  int rc = exec(q->db, "BEGIN");
  if (rc == SQLITE_OK) {
    out->revision = meta_get(q->db, "revision", &rc);
    if (rc == SQLITE_OK) rc = read_range(q->db, key, end, limit, out);
    int c = exec(q->db, rc == SQLITE_OK ? "COMMIT" : "ROLLBACK");
    if (rc == SQLITE_OK) rc = c;
  }
  int e = rc == SQLITE_OK ? 0 : sq_fail(q->db, q->path, "read", rc, errmsg, errlen);
  pthread_mutex_unlock(&q->mu);
  if (e < 0) gy_cstore_range_clear(out);
  return e;
}

/* Evaluates one compare against the current state; *ok = whether it holds. */
static int eval_cmp(sqlite3 *db, const gy_cstore_cmp_t *c, int *ok) {
  int rc;
  sqlite3_stmt *st =
      prep(db, "SELECT value, create_rev, mod_rev, version FROM kv WHERE key = ?", &rc);
  if (!st) return rc;
  sqlite3_bind_blob(st, 1, c->key, (int)strlen(c->key), SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
    sqlite3_finalize(st);
    return rc;
  }
  int found = rc == SQLITE_ROW;
  int cmp = 0;
  if (c->target == GY_CSTORE_CMP_VALUE) {
    if (!found) {
      *ok = 0; /* etcd: a value compare on a missing key is false */
      sqlite3_finalize(st);
      return SQLITE_OK;
    }
    const void *v = sqlite3_column_blob(st, 0);
    size_t vl = (size_t)sqlite3_column_bytes(st, 0);
    size_t n = vl < c->value_len ? vl : c->value_len;
    cmp = n ? memcmp(v, c->value, n) : 0;
    if (cmp == 0) cmp = vl < c->value_len ? -1 : vl > c->value_len;
  } else {
    int col = c->target == GY_CSTORE_CMP_CREATE ? 1 : c->target == GY_CSTORE_CMP_MOD ? 2 : 3;
    int64_t have = found ? sqlite3_column_int64(st, col) : 0;
    cmp = have < c->rev ? -1 : have > c->rev;
  }
  sqlite3_finalize(st);
  switch (c->op) {
  case GY_CSTORE_EQ:
    *ok = cmp == 0;
    break;
  case GY_CSTORE_NE:
    *ok = cmp != 0;
    break;
  case GY_CSTORE_LT:
    *ok = cmp < 0;
    break;
  case GY_CSTORE_GT:
    *ok = cmp > 0;
    break;
  }
  return SQLITE_OK;
}

/* Runs one op at revision rev; *wrote is set when it changed something. A put naming a lease
 * that does not exist fails the whole transaction with GY_ENOENT (as etcd does). */
static int run_op(sq_t *q, const gy_cstore_op_t *o, int64_t rev, int *seq, int *wrote,
                  gy_cstore_op_result_t *res, char *errmsg, size_t errlen) {
  sqlite3 *db = q->db;
  int rc = SQLITE_OK;
  res->type = o->type;
  char *end = NULL;
  if (o->prefix && o->type != GY_CSTORE_OP_PUT) {
    end = gy__cstore_prefix_end(o->key);
    if (!end) return GY_ENOMEM;
  }
  if (o->type == GY_CSTORE_OP_GET) {
    rc = read_range(db, o->key, end, o->prefix ? o->limit : 1, &res->range);
  } else if (o->type == GY_CSTORE_OP_DELETE) {
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT key FROM kv WHERE %s ORDER BY key", range_where(end));
    sqlite3_stmt *sel = prep(db, sql, &rc);
    snprintf(sql, sizeof(sql), "DELETE FROM kv WHERE %s", range_where(end));
    sqlite3_stmt *del = sel ? prep(db, sql, &rc) : NULL;
    if (del) {
      bind_range(sel, o->key, end);
      bind_range(del, o->key, end);
      rc = delete_selected(db, sel, del, rev, seq, &res->deleted);
      if (res->deleted) *wrote = 1;
    }
    sqlite3_finalize(sel);
    sqlite3_finalize(del);
  } else {
    if (o->lease) {
      sqlite3_stmt *st = prep(db, "SELECT 1 FROM lease WHERE id = ?", &rc);
      if (!st) goto out;
      sqlite3_bind_int64(st, 1, o->lease);
      rc = sqlite3_step(st);
      sqlite3_finalize(st);
      if (rc == SQLITE_DONE) {
        free(end);
        gy_errmsg(errmsg, errlen, "sqlite:%s: put %s: lease %lld not found (expired or revoked)",
                  q->path, o->key, (long long)o->lease);
        return GY_ENOENT;
      }
      if (rc != SQLITE_ROW) goto out;
    }
    size_t kl = strlen(o->key);
    sqlite3_stmt *st = prep(db, "SELECT create_rev, version FROM kv WHERE key = ?", &rc);
    if (!st) goto out;
    sqlite3_bind_blob(st, 1, o->key, (int)kl, SQLITE_STATIC);
    int64_t create = rev, version = 1;
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      create = sqlite3_column_int64(st, 0);
      version = sqlite3_column_int64(st, 1) + 1;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) goto out;
    st = prep(db,
              "INSERT OR REPLACE INTO kv(key, value, create_rev, mod_rev, version, lease)"
              " VALUES(?, ?, ?, ?, ?, ?)",
              &rc);
    if (!st) goto out;
    sqlite3_bind_blob(st, 1, o->key, (int)kl, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, o->value_len ? o->value : "", (int)o->value_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, create);
    sqlite3_bind_int64(st, 4, rev);
    sqlite3_bind_int64(st, 5, version);
    sqlite3_bind_int64(st, 6, o->lease);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc != SQLITE_DONE) goto out;
    rc = log_change(db, rev, (*seq)++, GY_CSTORE_EV_PUT, o->key, kl, o->value, o->value_len, create,
                    version, o->lease);
    *wrote = 1;
  }
out:
  free(end);
  if (rc == SQLITE_OK || rc == SQLITE_DONE) return 0;
  return sq_fail(db, q->path, "transaction", rc, errmsg, errlen);
}

static int sq_txn(void *be, const gy_cstore_cmp_t *cmps, size_t ncmp,
                  const gy_cstore_op_t *then_ops, size_t nthen, const gy_cstore_op_t *else_ops,
                  size_t nelse, gy_cstore_txn_result_t *out, int64_t deadline_ms, char *errmsg,
                  size_t errlen) {
  sq_t *q = be;
  memset(out, 0, sizeof(*out));
  int64_t rev, rev0;
  int e = wbegin(q, deadline_ms, &rev, &rev0, errmsg, errlen);
  if (e < 0) return e;
  int ok = 1;
  for (size_t i = 0; i < ncmp && ok && e == 0; i++) {
    int rc = eval_cmp(q->db, &cmps[i], &ok);
    if (rc != SQLITE_OK) e = sq_fail(q->db, q->path, "compare", rc, errmsg, errlen);
  }
  const gy_cstore_op_t *ops = ok ? then_ops : else_ops;
  size_t n = ok ? nthen : nelse;
  if (e == 0 && n) {
    out->results = calloc(n, sizeof(*out->results));
    if (!out->results) e = GY_ENOMEM;
  }
  int wrote = 0, seq = 0;
  for (size_t i = 0; i < n && e == 0; i++) {
    e = run_op(q, &ops[i], rev + 1, &seq, &wrote, &out->results[i], errmsg, errlen);
    out->n = i + 1;
  }
  if (wrote) rev++;
  out->succeeded = ok;
  out->revision = rev;
  e = wend(q, e, rev0, rev, errmsg, errlen);
  if (e < 0) gy_cstore_txn_clear(out);
  return e;
}

static int sq_lease_grant(void *be, int64_t ttl_s, int64_t *id, int64_t *granted,
                          int64_t deadline_ms, char *errmsg, size_t errlen) {
  sq_t *q = be;
  int64_t rev, rev0;
  int e = wbegin(q, deadline_ms, &rev, &rev0, errmsg, errlen);
  if (e < 0) return e;
  int rc;
  sqlite3_stmt *st = prep(q->db, "INSERT INTO lease(ttl, expires_ms) VALUES(?, ?)", &rc);
  if (st) {
    sqlite3_bind_int64(st, 1, ttl_s);
    sqlite3_bind_int64(st, 2, wall_ms() + ttl_s * 1000);
    rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(q->db);
    sqlite3_finalize(st);
  }
  if (rc != SQLITE_OK) e = sq_fail(q->db, q->path, "grant a lease", rc, errmsg, errlen);
  *id = sqlite3_last_insert_rowid(q->db);
  *granted = ttl_s;
  return wend(q, e, rev0, rev, errmsg, errlen);
}

static int sq_lease_revoke(void *be, int64_t id, int64_t deadline_ms, char *errmsg, size_t errlen) {
  sq_t *q = be;
  int64_t rev, rev0;
  int e = wbegin(q, deadline_ms, &rev, &rev0, errmsg, errlen);
  if (e < 0) return e;
  int rc;
  sqlite3_stmt *st = prep(q->db, "SELECT 1 FROM lease WHERE id = ?", &rc);
  if (st) {
    sqlite3_bind_int64(st, 1, id);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    if (rc == SQLITE_DONE) {
      gy_errmsg(errmsg, errlen, "sqlite:%s: revoke lease %lld: not found (expired or revoked)",
                q->path, (long long)id);
      e = GY_ENOENT;
    } else if (rc == SQLITE_ROW) {
      int64_t gone = 0;
      rc = drop_lease(q->db, id, rev + 1, &gone);
      if (gone) rev++;
    }
  }
  if (e == 0 && rc != SQLITE_OK && rc != SQLITE_ROW)
    e = sq_fail(q->db, q->path, "revoke a lease", rc, errmsg, errlen);
  /* A missing lease changes nothing, but commit what the expiry pass did. */
  if (e == GY_ENOENT) return wend(q, 0, rev0, rev, errmsg, errlen) < 0 ? GY_EIO : GY_ENOENT;
  return wend(q, e, rev0, rev, errmsg, errlen);
}

static int sq_lease_keepalive(void *be, int64_t id, int64_t *ttl, int64_t deadline_ms, char *errmsg,
                              size_t errlen) {
  sq_t *q = be;
  int64_t rev, rev0;
  int e = wbegin(q, deadline_ms, &rev, &rev0, errmsg, errlen);
  if (e < 0) return e;
  int rc;
  sqlite3_stmt *st =
      prep(q->db, "UPDATE lease SET expires_ms = ? + ttl * 1000 WHERE id = ? RETURNING ttl", &rc);
  if (st) {
    sqlite3_bind_int64(st, 1, wall_ms());
    sqlite3_bind_int64(st, 2, id);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *ttl = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  int missing = rc == SQLITE_DONE;
  if (rc != SQLITE_ROW && !missing) e = sq_fail(q->db, q->path, "keep a lease", rc, errmsg, errlen);
  e = wend(q, e, rev0, rev, errmsg, errlen);
  if (e == 0 && missing) {
    gy_errmsg(errmsg, errlen,
              "sqlite:%s: keep-alive of lease %lld: not found (expired or "
              "revoked)",
              q->path, (long long)id);
    return GY_ENOENT;
  }
  return e;
}

/* ---------------------------------------- sweeper ---------------------------------------- */

static void *sweeper_main(void *arg) {
  sq_t *q = arg;
  pthread_mutex_lock(&q->mu);
  while (!q->stop) {
    timed_wait(&q->cv, &q->mu, SWEEP_MS);
    if (q->stop) break;
    int rc;
    sqlite3_stmt *st = prep(q->db, "SELECT 1 FROM lease WHERE expires_ms <= ? LIMIT 1", &rc);
    if (!st) continue;
    sqlite3_bind_int64(st, 1, wall_ms());
    int due = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (!due) continue;
    pthread_mutex_unlock(&q->mu);
    int64_t rev, rev0;
    char msg[256];
    if (wbegin(q, gy__cstore_now_ms() + 1000, &rev, &rev0, msg, sizeof(msg)) == 0)
      wend(q, 0, rev0, rev, msg, sizeof(msg));
    pthread_mutex_lock(&q->mu);
  }
  pthread_mutex_unlock(&q->mu);
  return NULL;
}

/* ---------------------------------------- watches ---------------------------------------- */

/* One poll: delivers the changes in [w->next, min(revision, next + 1023)]. Returns 1 when more
 * are waiting, 0 when caught up, < 0 when the watch ended (callback already called). */
static int watch_poll(sqw_t *w) {
  sqlite3 *db = w->db;
  int rc = exec(db, "BEGIN");
  if (rc != SQLITE_OK) return 0; /* locked by a checkpoint: try again at the next tick */
  int64_t rev = meta_get(db, "revision", &rc);
  int64_t compacted = rc == SQLITE_OK ? meta_get(db, "compacted", &rc) : 0;
  if (rc != SQLITE_OK) {
    exec(db, "ROLLBACK");
    return 0;
  }
  if (w->next <= compacted) {
    exec(db, "ROLLBACK");
    char why[256];
    snprintf(why, sizeof(why),
             "sqlite:%s: watch from revision %lld: compacted (history starts "
             "at %lld)",
             w->q->path, (long long)w->next, (long long)compacted + 1);
    w->cb(w->ud, NULL, 0, GY_ERANGE, why);
    return -1;
  }
  if (rev < w->next) {
    exec(db, "COMMIT");
    return 0;
  }
  int64_t upto = rev < w->next + 1023 ? rev : w->next + 1023;
  char sql[256];
  snprintf(sql, sizeof(sql),
           "SELECT rev, type, key, value, create_rev, version, lease FROM log WHERE %s AND "
           "rev >= ?3 AND rev <= ?4 ORDER BY rev, seq",
           !*w->end ? "key >= ?1" : "key >= ?1 AND key < ?2");
  sqlite3_stmt *st = prep(db, sql, &rc);
  gy_cstore_event_t *evs = NULL;
  size_t n = 0, cap = 0;
  if (st) {
    bind_range(st, w->key, w->end);
    sqlite3_bind_int64(st, 3, w->next);
    sqlite3_bind_int64(st, 4, upto);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
      if (n == cap) {
        cap = cap ? 2 * cap : 16;
        gy_cstore_event_t *ne = realloc(evs, cap * sizeof(*ne));
        if (!ne) break;
        evs = ne;
      }
      gy_cstore_event_t *ev = &evs[n];
      memset(ev, 0, sizeof(*ev));
      ev->type = sqlite3_column_int(st, 1) ? GY_CSTORE_EV_DELETE : GY_CSTORE_EV_PUT;
      const void *k = sqlite3_column_blob(st, 2);
      const void *v = sqlite3_column_blob(st, 3);
      if (gy__cstore_kv_set(&ev->kv, k ? k : "", (size_t)sqlite3_column_bytes(st, 2), v ? v : "",
                            (size_t)sqlite3_column_bytes(st, 3)) < 0)
        break;
      ev->kv.mod_revision = sqlite3_column_int64(st, 0);
      ev->kv.create_revision = sqlite3_column_int64(st, 4);
      ev->kv.version = sqlite3_column_int64(st, 5);
      ev->kv.lease = sqlite3_column_int64(st, 6);
      n++;
    }
    sqlite3_finalize(st);
  }
  exec(db, "COMMIT");
  int complete = rc == SQLITE_DONE;
  if (complete) {
    if (n) w->cb(w->ud, evs, n, 0, NULL);
    w->next = upto + 1;
  }
  for (size_t i = 0; i < n; i++)
    gy_cstore_kv_clear(&evs[i].kv);
  free(evs);
  return complete && upto < rev;
}

static void *watch_main(void *arg) {
  sqw_t *w = arg;
  pthread_mutex_lock(&w->mu);
  while (!w->stop) {
    pthread_mutex_unlock(&w->mu);
    int more = watch_poll(w);
    pthread_mutex_lock(&w->mu);
    if (more < 0) break;
    if (!more && !w->stop) timed_wait(&w->cv, &w->mu, WATCH_POLL_MS);
  }
  pthread_mutex_unlock(&w->mu);
  return NULL;
}

static int open_db(const char *path, sqlite3 **db, char *errmsg, size_t errlen) {
  int rc = sqlite3_open_v2(
      path, db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
  if (rc != SQLITE_OK) {
    int e = sq_fail(*db, path, "open", rc, errmsg, errlen);
    sqlite3_close(*db);
    *db = NULL;
    return e;
  }
  sqlite3_busy_timeout(*db, 5000);
  return 0;
}

static void sqw_free(sqw_t *w) {
  if (w->db) sqlite3_close(w->db);
  pthread_cond_destroy(&w->cv);
  pthread_mutex_destroy(&w->mu);
  free(w->key);
  free(w->end);
  free(w);
}

static int sq_watch_start(void *be, const char *key, const char *end, int64_t start_rev,
                          gy_cstore_watch_cb cb, void *ud, void **handle, char *errmsg,
                          size_t errlen) {
  sq_t *q = be;
  sqw_t *w = calloc(1, sizeof(*w));
  if (!w) return GY_ENOMEM;
  pthread_mutex_init(&w->mu, NULL);
  init_cond(&w->cv);
  w->q = q;
  w->next = start_rev;
  w->cb = cb;
  w->ud = ud;
  w->key = strdup(key);
  w->end = strdup(end);
  int e = !w->key || !w->end ? GY_ENOMEM : open_db(q->path, &w->db, errmsg, errlen);
  if (e == 0 && pthread_create(&w->th, NULL, watch_main, w) != 0) {
    gy_errmsg(errmsg, errlen, "sqlite:%s: cannot start a watch thread", q->path);
    e = GY_ENOMEM;
  }
  if (e < 0) {
    sqw_free(w);
    return e;
  }
  *handle = w;
  return 0;
}

static void sq_watch_stop(void *handle) {
  sqw_t *w = handle;
  pthread_mutex_lock(&w->mu);
  w->stop = 1;
  pthread_cond_broadcast(&w->cv);
  pthread_mutex_unlock(&w->mu);
  pthread_join(w->th, NULL);
  sqw_free(w);
}

/* -------------------------------------- open / close -------------------------------------- */

static void sq_destroy(void *be) {
  sq_t *q = be;
  if (!q) return;
  if (q->sweeper_started) {
    pthread_mutex_lock(&q->mu);
    q->stop = 1;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    pthread_join(q->sweeper, NULL);
  }
  if (q->db) sqlite3_close(q->db);
  pthread_cond_destroy(&q->cv);
  pthread_mutex_destroy(&q->mu);
  free(q->path);
  free(q);
}

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO meta VALUES('schema', 1), ('revision', 0), ('compacted', 0);"
    "CREATE TABLE IF NOT EXISTS kv(key BLOB PRIMARY KEY, value BLOB NOT NULL,"
    " create_rev INTEGER NOT NULL, mod_rev INTEGER NOT NULL, version INTEGER NOT NULL,"
    " lease INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS kv_lease ON kv(lease) WHERE lease != 0;"
    "CREATE TABLE IF NOT EXISTS lease(id INTEGER PRIMARY KEY AUTOINCREMENT,"
    " ttl INTEGER NOT NULL, expires_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS log(rev INTEGER NOT NULL, seq INTEGER NOT NULL,"
    " type INTEGER NOT NULL, key BLOB NOT NULL, value BLOB, create_rev INTEGER,"
    " version INTEGER, lease INTEGER, PRIMARY KEY(rev, seq)) WITHOUT ROWID;";

int gy__cstore_sqlite_open(void **be, const char *path, const gy_cstore_opts_t *opts, char *errmsg,
                           size_t errlen) {
  (void)opts;
  *be = NULL;
  sq_t *q = calloc(1, sizeof(*q));
  if (!q || !(q->path = strdup(path))) {
    free(q);
    return GY_ENOMEM;
  }
  pthread_mutex_init(&q->mu, NULL);
  init_cond(&q->cv);
  int e = open_db(path, &q->db, errmsg, errlen);
  if (e < 0) goto err;
  /* WAL: readers (watch threads, other processes) never block the writer. */
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(q->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      const char *mode = (const char *)sqlite3_column_text(st, 0);
      rc = mode && !strcmp(mode, "wal") ? SQLITE_OK : SQLITE_CANTOPEN;
    }
    sqlite3_finalize(st);
  }
  if (rc == SQLITE_OK) rc = exec(q->db, "PRAGMA synchronous=FULL");
  if (rc == SQLITE_OK) rc = exec(q->db, "BEGIN IMMEDIATE");
  if (rc == SQLITE_OK) {
    rc = exec(q->db, SCHEMA);
    int64_t ver = rc == SQLITE_OK ? meta_get(q->db, "schema", &rc) : 0;
    exec(q->db, rc == SQLITE_OK ? "COMMIT" : "ROLLBACK");
    if (rc == SQLITE_OK && ver != 1) {
      gy_errmsg(errmsg, errlen, "sqlite:%s: schema version %lld, this build reads version 1", path,
                (long long)ver);
      e = GY_EMISMATCH;
      goto err;
    }
  }
  if (rc != SQLITE_OK) {
    e = sq_fail(q->db, path, "set up the schema (is it a gyro store?)", rc, errmsg, errlen);
    goto err;
  }
  if (pthread_create(&q->sweeper, NULL, sweeper_main, q) != 0) {
    gy_errmsg(errmsg, errlen, "sqlite:%s: cannot start the lease sweeper thread", path);
    e = GY_ENOMEM;
    goto err;
  }
  q->sweeper_started = 1;
  *be = q;
  return 0;
err:
  sq_destroy(q);
  return e;
}

const gy__cstore_vt_t gy__cstore_sqlite_vt = {
    .name = "sqlite",
    .destroy = sq_destroy,
    .range = sq_range,
    .txn = sq_txn,
    .lease_grant = sq_lease_grant,
    .lease_revoke = sq_lease_revoke,
    .lease_keepalive = sq_lease_keepalive,
    .watch_start = sq_watch_start,
    .watch_stop = sq_watch_stop,
};
