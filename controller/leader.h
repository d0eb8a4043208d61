/* leader: leader election among controllers over the state store (DESIGN.md §9).
 *
 * Each candidate holds a lease (TTL ttl_s, kept alive every ttl_s/3) and campaigns with one
 * transaction: "if /gyro/<run>/leader is absent, put it = my id with my lease". The winner
 * leads; the others watch the key and campaign again the moment it is deleted (the leader
 * resigned, or its lease expired or was revoked).
 *
 * Fencing: the token is the leader key's create_revision. Every leadership has a larger token
 * than the one before it (revisions only grow), so a directive stamped with the token lets a
 * worker refuse an older leader that does not yet know it was replaced.
 *
 * Losing the lease: when no keep-alive succeeds for a whole TTL (counted from the last
 * successful keep-alive's send time, so before the server can expire it) or the server says the
 * lease is gone, or the key is deleted under it, the leader calls on_deposed and must stop
 * acting at once; it then campaigns again as a standby with a new lease.
 *
 * Takeover time: a leader that dies silently is replaced once its lease expires: at most
 * ttl_s after its death (its last keep-alive was at most ttl_s/3 before it, so at least
 * 2/3 ttl_s), plus the back end's expiry sweep (etcd 3.4 checks every 500 ms; SQLite 200 ms)
 * and the watch delivery (etcd: a stream push; SQLite: a 50 ms poll) and one transaction:
 *   takeover <= ttl_s + 0.6 s (etcd), <= ttl_s + 0.3 s (SQLite),
 * plus whatever a starved scheduler or a stalled fsync adds (measured: bench/RESULTS.md).
 * A leader that resigns (gy_leader_stop) revokes its lease: the standby leads within the watch
 * delivery plus a transaction (milliseconds). etcd grants at least 2 s whatever ttl_s asks.
 */
#ifndef GY_CONTROLLER_LEADER_H
#define GY_CONTROLLER_LEADER_H

#include <stddef.h>
#include <stdint.h>

#include "controller/store.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct gy_leader gy_leader_t;

typedef struct {
  gy_cstore_t *store; /* borrowed: must outlive the elector */
  const char *run;    /* the run name: the key is /gyro/<run>/leader */
  const char *id;     /* this candidate's identity (host:pid), stored as the key's value */
  int ttl_s;          /* lease TTL in seconds (default 5) */
  /* Both run on the elector's thread, in order (elected, deposed, elected, ...). A callback
   * must not call gy_leader_stop. */
  void (*on_elected)(void *ud, int64_t token);
  void (*on_deposed)(void *ud, int64_t token, const char *why);
  void *ud;
} gy_leader_opts_t;

/* Starts campaigning on a thread of its own. The callee copies opts (not the store). */
int gy_leader_start(gy_leader_t **out, const gy_leader_opts_t *opts, char *errmsg, size_t errlen);
/* Whether this candidate leads now; *token (may be NULL) receives the fencing token. */
int gy_leader_is_leader(gy_leader_t *l, int64_t *token);
/* The current lease id (0 while it has none). */
int64_t gy_leader_lease(gy_leader_t *l);
/* The leader key ("/gyro/<run>/leader"). */
const char *gy_leader_key(const gy_leader_t *l);
/* Resigns (revokes the lease, so a standby takes over at once; on_deposed runs when it led),
 * stops the thread and frees. NULL is a no-op. */
void gy_leader_stop(gy_leader_t *l);

#ifdef __cplusplus
}
#endif

#endif
