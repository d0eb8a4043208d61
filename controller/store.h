/* store: the controller's durable state store (DESIGN.md §9). One interface, two back ends:
 *
 *   "etcd://host:port[,host:port...]"  etcd's v3 API over gRPC (clusters; leader election)
 *   "sqlite:PATH"                      one SQLite file (one machine; `gyroctl launch`)
 *
 * The model is etcd's: a flat, sorted key space of byte values; one store-wide revision that
 * every write (a put, a delete that deletes something, a transaction that writes) increases by
 * exactly one; every key carries create_revision (the revision that created it),
 * mod_revision (the revision of its last write), version (writes since creation) and its lease.
 * Leases have a TTL; a lease that is not kept alive expires and deletes its keys (one revision).
 * Watches deliver every change under a prefix, in revision order, from a start revision.
 * The SQLite back end reproduces these semantics (revisions, txn, leases, watches) exactly
 * enough that the same contract test passes against both (tests/integration/
 * test_store_contract.c); its leases use the wall clock, so two processes on one machine can
 * elect a leader through one file.
 *
 * Calls are synchronous and thread-safe; each takes a deadline in milliseconds (<= 0: the
 * store's default, opts.timeout_ms) and, on failure, returns a negative gy_err_t and writes a
 * message naming the endpoint (or file) and what failed into errmsg (errmsg may be NULL):
 *   GY_ENOENT     the key (or lease) does not exist
 *   GY_EMISMATCH  a compare-and-swap found another revision (a conflict)
 *   GY_ETIMEDOUT  the deadline passed (etcd unreachable, SQLite locked by another process)
 *   GY_EIO        the back end failed (etcd answered an error, SQLite I/O error)
 *   GY_EINVAL / GY_ECONFIG   bad arguments / bad URL, options, TLS files or credentials
 *   GY_ECORRUPT   the SQLite file is not a database; GY_EPROTO: a malformed etcd reply
 *   GY_ERANGE     a watch start revision that was compacted away
 * Keys are NUL-terminated strings (etcd allows any bytes; gyro's keys are paths); values are
 * byte strings of any length. Callbacks run on store-owned threads, never on the caller's;
 * the caller bridges them to its loop (uv_async_send).
 */
#ifndef GY_CONTROLLER_STORE_H
#define GY_CONTROLLER_STORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gy_cstore gy_cstore_t;

typedef struct {
  /* TLS (etcd): PEM files. ca_file alone = verify the server; cert_file + key_file = client
   * certificate (mTLS). No ca_file = plaintext. */
  const char *ca_file, *cert_file, *key_file;
  /* etcd authentication: both set = Authenticate once per connection, token in metadata. */
  const char *username, *password;
  int dial_timeout_ms; /* connecting to one endpoint (default 3000) */
  int timeout_ms;      /* default deadline of a call given timeout_ms <= 0 (default 5000) */
} gy_cstore_opts_t;

/* One key-value pair; owned by whoever received it (free with gy_cstore_kv_clear). value is
 * also NUL-terminated (value[value_len] == 0) so text values read as C strings. */
typedef struct {
  char *key;
  uint8_t *value;
  size_t value_len;
  int64_t create_revision, mod_revision, version, lease;
} gy_cstore_kv_t;

/* Result of a range: kvs sorted by key; more = keys were left out by the limit; revision =
 * the store's revision when it was read. Free with gy_cstore_range_clear. */
typedef struct {
  gy_cstore_kv_t *kvs;
  size_t n;
  int more;
  int64_t revision;
} gy_cstore_range_t;

/* Creates a store from url (see the top of this file). The callee copies opts (NULL = all
 * defaults). etcd: no connection is made here (the first call connects); SQLite: the file is
 * created or opened and its schema checked. */
int gy_cstore_create(gy_cstore_t **out, const char *url, const gy_cstore_opts_t *opts, char *errmsg,
                     size_t errlen);
/* Stops the lease keeper and cancels the watches not yet cancelled (their handles become
 * invalid; every callback has returned when this returns), closes the connections. Kept leases
 * are NOT revoked (use gy_cstore_lease_revoke first for a clean exit): a process that dies and
 * one that is destroyed look the same to the others. NULL is a no-op. */
void gy_cstore_destroy(gy_cstore_t *s);
/* "etcd" or "sqlite". */
const char *gy_cstore_backend(const gy_cstore_t *s);

void gy_cstore_kv_clear(gy_cstore_kv_t *kv);
void gy_cstore_range_clear(gy_cstore_range_t *r);

/* Reads key into *out (caller clears it). GY_ENOENT when absent. rev (may be NULL): the store
 * revision of the read. */
int gy_cstore_get(gy_cstore_t *s, const char *key, gy_cstore_kv_t *out, int64_t *rev,
                  int timeout_ms, char *errmsg, size_t errlen);
/* Writes key = value[0..len) attached to lease (0 = none). *rev (may be NULL): the new
 * revision, which is the key's mod_revision. */
int gy_cstore_put(gy_cstore_t *s, const char *key, const void *value, size_t len, int64_t lease,
                  int64_t *rev, int timeout_ms, char *errmsg, size_t errlen);
/* Deletes key, or every key starting with key when prefix != 0. *deleted (may be NULL): how
 * many keys went; *rev (may be NULL): the store revision after the call. Deleting nothing is
 * not an error and does not change the revision. */
int gy_cstore_delete(gy_cstore_t *s, const char *key, int prefix, int64_t *deleted, int64_t *rev,
                     int timeout_ms, char *errmsg, size_t errlen);
/* Reads the keys starting with prefix, sorted, at most limit (0 = all). from (may be NULL):
 * start at this key instead of the prefix (to page on: pass the last key + "\x01" or the
 * last key with more set and skip it). The caller clears *out. */
int gy_cstore_range(gy_cstore_t *s, const char *prefix, const char *from, int64_t limit,
                    gy_cstore_range_t *out, int timeout_ms, char *errmsg, size_t errlen);
/* The store's current revision. */
int gy_cstore_revision(gy_cstore_t *s, int64_t *rev, int timeout_ms, char *errmsg, size_t errlen);

/* ------------------------------------ transactions ------------------------------------ */

typedef enum {
  GY_CSTORE_CMP_VALUE = 0, /* value bytes (a missing key never matches) */
  GY_CSTORE_CMP_CREATE,    /* create_revision (0 for a missing key) */
  GY_CSTORE_CMP_MOD,       /* mod_revision (0 for a missing key) */
  GY_CSTORE_CMP_VERSION,   /* version (0 for a missing key) */
} gy_cstore_cmp_target_t;

typedef enum { GY_CSTORE_EQ = 0, GY_CSTORE_NE, GY_CSTORE_LT, GY_CSTORE_GT } gy_cstore_cmp_op_t;

/* One compare: key's target OP operand. "key absent" is CREATE EQ 0, "key present" CREATE GT 0
 * (gy_cstore_cmp_absent / _exists build them). Pointers are borrowed for the call. */
typedef struct {
  const char *key;
  gy_cstore_cmp_target_t target;
  gy_cstore_cmp_op_t op;
  int64_t rev;       /* CREATE, MOD, VERSION */
  const void *value; /* VALUE */
  size_t value_len;
} gy_cstore_cmp_t;

typedef enum { GY_CSTORE_OP_PUT = 0, GY_CSTORE_OP_DELETE, GY_CSTORE_OP_GET } gy_cstore_op_type_t;

/* One operation of a transaction's branch. A key may be written at most once per branch (as in
 * etcd). Pointers are borrowed for the call. */
typedef struct {
  gy_cstore_op_type_t type;
  const char *key;
  int prefix; /* DELETE, GET: every key starting with key */
  const void *value;
  size_t value_len;
  int64_t lease; /* PUT */
  int64_t limit; /* GET with prefix (0 = all) */
} gy_cstore_op_t;

typedef struct {
  gy_cstore_op_type_t type;
  gy_cstore_range_t range; /* GET: the keys read (range.revision unset) */
  int64_t deleted;         /* DELETE: how many keys went */
} gy_cstore_op_result_t;

/* Result of a transaction: succeeded = every compare held (then ran) or not (else ran);
 * revision = the store revision after it (the mod_revision of every key it wrote);
 * results[i] answers the i-th op of the branch that ran. Free with gy_cstore_txn_clear. */
typedef struct {
  int succeeded;
  int64_t revision;
  gy_cstore_op_result_t *results;
  size_t n;
} gy_cstore_txn_result_t;

gy_cstore_cmp_t gy_cstore_cmp_absent(const char *key);
gy_cstore_cmp_t gy_cstore_cmp_exists(const char *key);
gy_cstore_cmp_t gy_cstore_cmp_mod(const char *key, gy_cstore_cmp_op_t op, int64_t rev);

/* Atomically: if every cmps[i] holds, runs then_ops in order, else else_ops. out may be NULL.
 * A failed compare is not an error (out->succeeded == 0). */
int gy_cstore_txn(gy_cstore_t *s, const gy_cstore_cmp_t *cmps, size_t ncmp,
                  const gy_cstore_op_t *then_ops, size_t nthen, const gy_cstore_op_t *else_ops,
                  size_t nelse, gy_cstore_txn_result_t *out, int timeout_ms, char *errmsg,
                  size_t errlen);
void gy_cstore_txn_clear(gy_cstore_txn_result_t *r);

/* Compare-and-swap: writes key = value if its mod_revision is expect_mod (0 = the key must not
 * exist). *rev (may be NULL): the new revision. GY_EMISMATCH when another revision was found;
 * then *rev is the key's current mod_revision (0 if absent). */
int gy_cstore_cas(gy_cstore_t *s, const char *key, int64_t expect_mod, const void *value,
                  size_t len, int64_t lease, int64_t *rev, int timeout_ms, char *errmsg,
                  size_t errlen);

/* --------------------------------------- leases --------------------------------------- */

/* Grants a lease of ttl_s seconds (etcd may raise a small TTL: it grants at least
 * 1.5 x its election timeout, 2 s with default flags; *granted_ttl_s, may be NULL, says).
 * SQLite: the lease expires ttl_s after the last keep-alive by the wall clock. */
int gy_cstore_lease_grant(gy_cstore_t *s, int64_t ttl_s, int64_t *id, int64_t *granted_ttl_s,
                          int timeout_ms, char *errmsg, size_t errlen);
/* Revokes the lease now (its keys go in one revision) and stops keeping it alive. GY_ENOENT
 * if it had already expired. */
int gy_cstore_lease_revoke(gy_cstore_t *s, int64_t id, int timeout_ms, char *errmsg, size_t errlen);
/* Refreshes the lease once; *ttl_s (may be NULL): the TTL it now has. GY_ENOENT if expired. */
int gy_cstore_lease_keepalive_once(gy_cstore_t *s, int64_t id, int64_t *ttl_s, int timeout_ms,
                                   char *errmsg, size_t errlen);

/* Called once, on the store's keeper thread, when a kept lease is lost: it expired at the
 * server (err GY_ENOENT), or no keep-alive succeeded for a whole TTL (err GY_ETIMEDOUT), so
 * the server may have expired it. The local clock runs the TTL from the moment the last
 * successful keep-alive was *sent*, so the holder hears "lost" no later than the server
 * expires the lease (up to clock-rate drift). No keep-alive follows. */
typedef void (*gy_cstore_lease_lost_cb)(void *ud, int64_t id, int err, const char *why);

/* Keeps the lease alive from a store-owned thread: a keep-alive every ttl/3, retried every
 * 250 ms after a failure. ttl_s is the lease's granted TTL. Stops on revoke, on loss (cb) or
 * with gy_cstore_lease_forget. */
int gy_cstore_lease_keep(gy_cstore_t *s, int64_t id, int64_t ttl_s, gy_cstore_lease_lost_cb cb,
                         void *ud, char *errmsg, size_t errlen);
/* Stops keeping the lease alive without revoking it (it expires after its TTL); the lost
 * callback is not called. When this returns, no callback for it runs. */
void gy_cstore_lease_forget(gy_cstore_t *s, int64_t id);

/* --------------------------------------- watches --------------------------------------- */

typedef enum { GY_CSTORE_EV_PUT = 0, GY_CSTORE_EV_DELETE = 1 } gy_cstore_ev_type_t;

/* One change. PUT: kv is the key after the write. DELETE: kv.key and kv.mod_revision (the
 * revision of the deletion); no value. */
typedef struct {
  gy_cstore_ev_type_t type;
  gy_cstore_kv_t kv;
} gy_cstore_event_t;

/* Called on a store-owned thread with the events of one or more revisions in revision order
 * (evs and everything they point to are valid during the call only). A watch never skips or
 * repeats a revision: after a broken connection it resumes from the revision after the last
 * one delivered. err != 0: the watch has ended (GY_ERANGE: the start revision was compacted
 * away; GY_EIO: refused by the server) with why; no callback follows. */
typedef void (*gy_cstore_watch_cb)(void *ud, const gy_cstore_event_t *evs, size_t n, int err,
                                   const char *why);

typedef struct gy_cstore_watch gy_cstore_watch_t;

/* Watches every key starting with prefix from revision start_rev (0 = changes after now).
 * etcd: a Watch stream; SQLite: a thread that polls the change log every 50 ms (so events
 * arrive up to 50 ms late; the change log keeps the last 100,000 revisions). */
int gy_cstore_watch(gy_cstore_t *s, const char *prefix, int64_t start_rev, gy_cstore_watch_cb cb,
                    void *ud, gy_cstore_watch_t **out, char *errmsg, size_t errlen);
/* Stops the watch; when it returns no callback runs. From any thread but the watch's own
 * callback. NULL is a no-op. */
void gy_cstore_watch_cancel(gy_cstore_watch_t *w);

#ifdef __cplusplus
}
#endif

#endif
