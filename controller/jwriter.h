/* jwriter: one worker thread that runs the controller's store operations (journal writes, the
 * fence check) in FIFO order, off the loop thread. The loop submits an operation whose
 * arguments it has copied; the thread runs it (a must-write is retried with back-off until it
 * is written or give_up_ms passed; any other operation is tried once) and, when the operation
 * has a done callback, the loop hears the outcome: done runs on the loop thread (uv_async_send
 * and a mutex-protected queue), in submit order.
 *
 * Threads: create, start, submit, close and destroy are called on the loop thread; run and
 * free_op on the writer thread (free_op also on the loop thread at destroy); done on the loop
 * thread. */
#ifndef GY_CONTROLLER_JWRITER_H
#define GY_CONTROLLER_JWRITER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct gy_jwriter gy_jwriter_t;

/* The outcome of one operation, as done sees it (borrowed for the call). */
typedef struct {
  int rc;             /* 0: done; else the last try's negative gy_err_t */
  int tries;          /* tries made (> 1: the store failed before it answered, or gave up) */
  int64_t elapsed_ms; /* from the first try to the outcome */
  const char *errmsg; /* the last failure's message ("" when rc is 0 and tries is 1) */
} gy_jwriter_result_t;

/* What one operation does on the writer thread: 0, or a negative gy_err_t with errmsg set. */
typedef int (*gy_jwriter_run_fn)(void *op, char *errmsg, size_t errlen);
/* The outcome, on the loop thread (op still valid: it is freed after the call). */
typedef void (*gy_jwriter_done_fn)(void *ud, void *op, const gy_jwriter_result_t *r);

typedef struct {
  const char *what;        /* names the operation in the logs (copied) */
  int must;                /* 1: retried with back-off until written or give_up_ms */
  gy_jwriter_run_fn run;   /* required */
  void (*free_op)(void *); /* frees op; NULL: nothing to free */
  gy_jwriter_done_fn done; /* NULL: nobody waits (a failure is only logged) */
  void *ud;
} gy_jwriter_req_t;

typedef struct {
  int64_t give_up_ms;                 /* a must-write's retries end after this (0: 10 minutes) */
  int backoff_min_ms, backoff_max_ms; /* 0: 100 and 2000 */
} gy_jwriter_opts_t;

/* Creates the writer and its async handle on loop (the thread starts with gy_jwriter_start;
 * operations submitted before wait for it). opts may be NULL (the defaults). GY_ENOMEM, GY_EIO. */
int gy_jwriter_create(gy_jwriter_t **out, uv_loop_t *loop, const gy_jwriter_opts_t *opts);
/* Starts the thread. GY_EIO when it cannot. */
int gy_jwriter_start(gy_jwriter_t *w);
/* Queues op behind every operation submitted before. The writer owns op from now on, also on
 * failure (GY_ENOMEM: op is freed, done never runs). After close the operation is still
 * written (at the latest by destroy), but its done never runs. */
int gy_jwriter_submit(gy_jwriter_t *w, const gy_jwriter_req_t *req, void *op);
/* Stops delivering outcomes (no done runs after this call) and closes the async handle; cb(ud)
 * runs on the loop once it is closed. The thread goes on with its queue until destroy. */
void gy_jwriter_close(gy_jwriter_t *w, void (*cb)(void *ud), void *ud);
/* After close's cb (or when the loop never ran after create): the thread writes what is still
 * queued, each operation tried once (after the first failure the rest is abandoned, logged),
 * and ends; then everything is freed. A retry in progress is cut short. NULL is a no-op. */
void gy_jwriter_destroy(gy_jwriter_t *w);
/* Operations submitted and not yet ended (any thread). */
size_t gy_jwriter_pending(gy_jwriter_t *w);

#endif
