/*
 * svc_journal: the core's journal and fence (its io: journal, fence), run off the loop thread
 * by the service's writer (controller/jwriter.h), the events' journal records, and the
 * recovery from the journal at create.
 *
 * API, in order: journal_start, io_journal, io_fence, journal_event, recover.
 *
 * Threads: every journal write and the fence check run on the writer's thread, in the order
 * the loop submitted them; a record (controller/io.h) carries copies of what it writes, so the
 * thread never reads the service or the core. Outcomes the core waits for come back on the
 * loop thread (gy_core_journaled, gy_core_fenced). recover() alone is synchronous: it runs in
 * gy_service_create, before the loop serves anything and before the writer's thread starts
 * (what it submits waits for the thread).
 *
 * A record with `must` is retried by the writer through a store outage with back-off for up to
 * 10 minutes, then given up (the core says so in an event); the others are tried once and a
 * failure is logged (events wait in the journal's memory).
 */
#include "controller/service_internal.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

/* A fence check for the writer. */
typedef struct {
  int (*fence)(void *);
  void *fence_ud;
} fence_op_t;

/* The journal the records go to (borrowed: it outlives the service and so the writer). The
 * writer's run function gets one record; the journal is the service's, which never changes. */
typedef struct {
  gy_journal_t *j;
  gy_jrec_t *rec;
} jop_t;

static void jop_free(void *p) {
  jop_t *op = p;
  gy_jrec_free(op->rec);
  free(op);
}

/* Writer thread. */
static int jop_run(void *p, char *err, size_t errlen) {
  jop_t *op = p;
  return gy_jrec_write(op->j, op->rec, err, errlen);
}

static int fence_run(void *p, char *err, size_t errlen) {
  fence_op_t *op = p;
  if (op->fence(op->fence_ud)) return 0;
  snprintf(err, errlen, "this controller no longer leads");
  return GY_EBUSY;
}

/* Starts the writer's thread (gy_service_create, after recover). */
int gy__svc_journal_start(gy_service_t *s) {
  return s->jw ? gy_jwriter_start(s->jw) : 0;
}

/* Loop thread: a record the core wants to hear of was written (or given up). */
static void jop_done(void *ud, void *p, const gy_jwriter_result_t *r) {
  gy_service_t *s = ud;
  jop_t *op = p;
  gy_io_result_t res = {r->rc, r->tries, r->elapsed_ms, r->errmsg};
  gy_core_journaled(s->core, op->rec, &res);
}

/* The core's io->journal: rec goes to the writer's thread (see the design block). */
int gy__svc_io_journal(void *ud, gy_jrec_t *rec) {
  gy_service_t *s = ud;
  jop_t *op = s->o.journal && s->jw ? malloc(sizeof(*op)) : NULL;
  if (!op) {
    if (s->o.journal && s->jw)
      gy_log(GY_LOG_ERROR, "controller", "journal: out of memory: the %s is not written",
             rec->what);
    gy_jrec_free(rec);
    return GY_ENOMEM;
  }
  op->j = s->o.journal;
  op->rec = rec;
  gy_jwriter_req_t req = {.what = rec->what,
                          .must = rec->must,
                          .run = jop_run,
                          .free_op = jop_free,
                          .done = rec->notify ? jop_done : NULL,
                          .ud = s};
  return gy_jwriter_submit(s->jw, &req, op);
}

/* Loop thread: the fence answered. */
static void fence_done(void *ud, void *p, const gy_jwriter_result_t *r) {
  gy_service_t *s = ud;
  (void)p;
  gy_core_fenced(s->core, r->rc);
}

/* The core's io->fence: asked on the writer's thread, behind the writes submitted before. */
int gy__svc_io_fence(void *ud) {
  gy_service_t *s = ud;
  fence_op_t *op = s->jw && s->o.fence ? malloc(sizeof(*op)) : NULL;
  if (!op) return GY_ENOMEM;
  op->fence = s->o.fence;
  op->fence_ud = s->o.fence_ud;
  gy_jwriter_req_t req = {
      .what = "fence check", .run = fence_run, .free_op = free, .done = fence_done, .ud = s};
  return gy_jwriter_submit(s->jw, &req, op);
}

/* An event, best effort (the journal keeps what fails in memory and writes it first later). */
void gy__svc_journal_event(gy_service_t *s, uint64_t id, double t, int64_t step, const char *kind,
                           const char *msg) {
  if (!s->o.journal || !s->jw) return;
  gy_jrec_t *r = gy_jrec_new(GY_JREC_EVENT);
  if (!r || !(r->text = strdup(msg))) {
    gy_jrec_free(r);
    return;
  }
  snprintf(r->what, sizeof(r->what), "event");
  r->id = id;
  r->time = t;
  r->step = step;
  snprintf(r->ekind, sizeof(r->ekind), "%s", kind);
  gy__svc_io_journal(s, r);
}

/* At create, with a journal that holds the run: the events (the audit log goes on with the
 * next id) here, the rest in the core (gy_core_recover); then the intents the core completed
 * are confirmed (applied, or dropped) in the journal. */
int gy__svc_recover(gy_service_t *s, char *errmsg, size_t errlen) {
  /* Synchronous on purpose: this runs in gy_service_create, before the server serves and
   * before the writer's thread starts, so nothing waits for it but the caller. */
  gy_journal_state_t st;
  int rc = gy_journal_load(s->o.journal, &st, EVLOG_MAX, errmsg, errlen);
  if (rc) return rc;
  if (!st.found) {
    gy_journal_state_free(&st);
    return 0;
  }
  for (size_t i = 0; i < st.nevents; i++) {
    const gy_journal_event_t *e = &st.events[i];
    evrec_t *r = &s->evlog[(e->id - 1) % EVLOG_MAX];
    r->id = e->id;
    r->time = e->time;
    r->step = e->step;
    snprintf(r->kind, sizeof(r->kind), "%s", e->kind);
    snprintf(r->msg, sizeof(r->msg), "%s", e->text);
  }
  s->event_id = st.last_event_id;
  if ((rc = gy_core_recover(s->core, &st, gy_journal_prefix(s->o.journal), errmsg, errlen))) {
    gy_journal_state_free(&st);
    return rc;
  }
  const gy_skipset_t *in_force = gy_core_in_force(s->core);
  for (size_t i = 0; i < st.nintents; i++) { /* completed by the core, or dropped */
    const gy_journal_intent_t *in = &st.intents[i];
    char err[256];
    if (in->kind == GY_DIR_ROLLBACK)
      rc = gy_journal_applied(s->o.journal, in->seq, in->to_step, in_force->r, in_force->n, err,
                              sizeof(err));
    else
      rc = gy_journal_dropped(s->o.journal, in->seq, err, sizeof(err));
    if (rc)
      gy_log(GY_LOG_WARN, "controller", "journal: intent %llu: %s", (unsigned long long)in->seq,
             err);
  }
  gy_journal_state_free(&st);
  return 0;
}
