/* test_fleet: the controller's pure logic driven one event at a time with a fake clock; the
 * state, the horizon and the actions are checked after each event. Formation (with and without
 * ordinals, duplicates, generations), grants following the slowest rank and capped at
 * run.steps, the directive pipeline (freeze, same at_step for every rank, acks, queueing,
 * pause/resume, stop), aggregation, liveness (silence, stream close), validation, checkpoint
 * commits (only once every rank reported one), rollbacks (the pipeline, steps and history reset,
 * the horizon restarting at to_step + window, a second rollback, a queued one whose checkpoint
 * was forgotten, a failed restore, refusals), a re-formed gang starting from the newest
 * committed checkpoint, and every pair of the state transition table. */
#include <string.h>

#include "common/err.h"
#include "controller/fleet.h"
#include "tests/test.h"

static int64_t now_ms = 1000; /* the fake clock */

static gy_fleet_t *mk(int world, int window, int64_t steps, int lost_after) {
  gy_fleet_opts_t o = {.world = world,
                       .tp = 1,
                       .window = window,
                       .steps = steps,
                       .lost_after_ms = lost_after,
                       .seed = 42};
  gy_fleet_t *f = NULL;
  REQUIRE(gy_fleet_create(&f, &o) == 0 && f);
  return f;
}

static size_t count(gy_fleet_t *f, gy_fleet_act_kind_t k) {
  size_t n, c = 0;
  const gy_fleet_action_t *a = gy_fleet_actions(f, &n);
  for (size_t i = 0; i < n; i++)
    c += a[i].kind == k;
  return c;
}

static const gy_fleet_action_t *find(gy_fleet_t *f, gy_fleet_act_kind_t k, int nth) {
  size_t n;
  const gy_fleet_action_t *a = gy_fleet_actions(f, &n);
  for (size_t i = 0; i < n; i++)
    if (a[i].kind == k && nth-- == 0) return &a[i];
  return NULL;
}

static int has_event(gy_fleet_t *f, gy_event_kind_t kind) {
  size_t n;
  const gy_fleet_action_t *a = gy_fleet_actions(f, &n);
  for (size_t i = 0; i < n; i++)
    if (a[i].kind == GY_FLEET_ACT_EVENT && a[i].event_kind == kind) return 1;
  return 0;
}

static int join(gy_fleet_t *f, const char *id, int ordinal, int64_t steps_done, uint64_t h) {
  gy_fleet_join_t j = {.worker_id = id,
                       .ordinal = ordinal,
                       .host = "h",
                       .pid = 100 + (int)h,
                       .steps_done = steps_done,
                       .generation = 0};
  return gy_fleet_join(f, now_ms, &j, h);
}

/* Forms a gang of world workers w0..w{n-1} (no ordinals) and says Hello on every rank. */
static void form(gy_fleet_t *f, int world) {
  for (int i = 0; i < world; i++) {
    char id[16];
    snprintf(id, sizeof(id), "w%d", i);
    REQUIRE(join(f, id, -1, 0, (uint64_t)i + 1) == 0);
  }
  REQUIRE(gy_fleet_state(f) == GY_FLEET_TRAIN);
  for (int r = 0; r < world; r++)
    REQUIRE(gy_fleet_hello(f, now_ms, gy_fleet_member(f, r)->session_id, gy_fleet_generation(f),
                           r) == 0);
  gy_fleet_actions_clear(f);
}

static int report(gy_fleet_t *f, int rank, int64_t step) {
  gy_fleet_actions_clear(f);
  gy_fleet_report_t r = {.generation = gy_fleet_generation(f),
                         .rank = rank,
                         .step = step,
                         .loss = 1.0 + (double)step,
                         .tokens_per_s = 1000,
                         .step_ms = 10};
  return gy_fleet_report(f, now_ms, rank, &r);
}

/* A report of step that says the rank wrote the checkpoint of step ckpt (-1: none). */
static int report_ck(gy_fleet_t *f, int rank, int64_t step, int64_t ckpt, double loss) {
  gy_fleet_actions_clear(f);
  gy_fleet_report_t r = {.generation = gy_fleet_generation(f),
                         .rank = rank,
                         .step = step,
                         .loss = loss,
                         .tokens_per_s = 1000,
                         .step_ms = 10,
                         .has_checkpoint = ckpt >= 0,
                         .checkpoint_step = ckpt};
  return gy_fleet_report(f, now_ms, rank, &r);
}

/* Every rank of a world-w gang reports the steps [from, to); the checkpoint of step ckpt is
 * reported with the report of that step (-1: none). */
static void run_steps(gy_fleet_t *f, int w, int64_t from, int64_t to, int64_t ckpt) {
  for (int64_t s = from; s < to; s++)
    for (int r = 0; r < w; r++)
      REQUIRE(report_ck(f, r, s, s == ckpt ? ckpt : -1, 1.0 + (double)s) == 0);
}

static int nack(gy_fleet_t *f, int rank, uint64_t seq, const char *error) {
  gy_fleet_actions_clear(f);
  return gy_fleet_ack(f, now_ms, rank, gy_fleet_generation(f), seq, rank, 0, error, 0);
}

static int ack(gy_fleet_t *f, int rank, uint64_t seq) {
  gy_fleet_actions_clear(f);
  return gy_fleet_ack(f, now_ms, rank, gy_fleet_generation(f), seq, rank, 1, NULL, 0);
}

static void test_formation_ordinals(void) {
  gy_fleet_t *f = mk(3, 4, 100, 1000);
  CHECK(join(f, "a", 2, 5, 11) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_INIT);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_ASSIGN), 0);
  CHECK_EQ_INT(gy_fleet_forming(f), 1);
  gy_fleet_actions_clear(f);
  CHECK(join(f, "b", -1, 3, 12) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_INIT);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_ASSIGN), 0);
  gy_fleet_actions_clear(f);
  CHECK(join(f, "c", 0, 7, 13) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_ASSIGN), 3);
  CHECK(has_event(f, GY_EVENT_GANG_FORMED));
  CHECK_EQ_INT(gy_fleet_generation(f), 1);
  CHECK_EQ_INT(gy_fleet_start_step(f), 3);
  CHECK_EQ_INT(gy_fleet_horizon(f), 7);
  int rank_of[3] = {-1, -1, -1};
  for (int i = 0; i < 3; i++) {
    const gy_fleet_action_t *a = find(f, GY_FLEET_ACT_ASSIGN, i);
    REQUIRE(a);
    CHECK_EQ_INT(a->generation, 1);
    CHECK_EQ_INT(a->step, 3);
    rank_of[a->join_handle - 11] = a->rank;
    CHECK(!strcmp(a->session_id, gy_fleet_member(f, a->rank)->session_id));
    CHECK(strlen(a->session_id) == 32);
  }
  CHECK_EQ_INT(rank_of[0], 2); /* ordinal 2 */
  CHECK_EQ_INT(rank_of[1], 1); /* lowest free */
  CHECK_EQ_INT(rank_of[2], 0); /* ordinal 0 */
  CHECK(!strcmp(gy_fleet_member(f, 2)->worker_id, "a"));
  CHECK_EQ_INT(gy_fleet_member(f, 1)->steps_done, 3);
  CHECK(strcmp(gy_fleet_member(f, 0)->session_id, gy_fleet_member(f, 1)->session_id));
  gy_fleet_destroy(f);
}

static void test_formation_plain(void) {
  gy_fleet_t *f = mk(3, 4, 100, 1000);
  CHECK(join(f, "x", -1, 0, 1) == 0);
  CHECK(join(f, "y", -1, 0, 2) == 0);
  gy_fleet_actions_clear(f);
  gy_fleet_join_cancel(f, 2); /* y left before the gang formed */
  CHECK_EQ_INT(gy_fleet_forming(f), 1);
  CHECK(has_event(f, GY_EVENT_JOIN_CANCELLED));
  CHECK(join(f, "y2", -1, 0, 3) == 0);
  gy_fleet_join_t j = {
      .worker_id = "z", .ordinal = -1, .host = "h", .steps_done = 0, .generation = 6};
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_join(f, now_ms, &j, 4) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(gy_fleet_generation(f), 7); /* one more than any joiner's previous generation */
  CHECK_EQ_INT(gy_fleet_start_step(f), 0);
  CHECK_EQ_INT(gy_fleet_horizon(f), 4);
  CHECK(!strcmp(gy_fleet_member(f, 0)->worker_id, "x"));
  CHECK(!strcmp(gy_fleet_member(f, 1)->worker_id, "y2"));
  CHECK(!strcmp(gy_fleet_member(f, 2)->worker_id, "z"));
  gy_fleet_destroy(f);
}

static void test_join_refusals(void) {
  gy_fleet_t *f = mk(2, 4, 100, 1000);
  CHECK(join(f, "a", 1, 0, 1) == 0);
  gy_fleet_actions_clear(f);
  /* the same worker joins again while its first join is held (that call's deadline passed,
   * or its process restarted): the newer join takes the place of the held one, which is
   * answered (DISMISS) */
  CHECK_EQ_INT(join(f, "a", 1, 0, 2), 0);
  const gy_fleet_action_t *dm = find(f, GY_FLEET_ACT_DISMISS, 0);
  REQUIRE(dm);
  CHECK_EQ_INT(dm->join_handle, 1);
  CHECK(strstr(dm->msg, "superseded") != NULL);
  CHECK_EQ_INT(gy_fleet_forming(f), 1);
  gy_fleet_actions_clear(f);
  CHECK_EQ_INT(join(f, "b", 1, 0, 3), GY_EBUSY); /* ordinal taken */
  CHECK(has_event(f, GY_EVENT_REFUSED));
  CHECK_EQ_INT(join(f, "b", 2, 0, 3), GY_ERANGE); /* ordinal outside the world */
  CHECK_EQ_INT(join(f, "b", -2, 0, 3), GY_ERANGE);
  CHECK_EQ_INT(join(f, "", -1, 0, 3), GY_EINVAL);
  CHECK_EQ_INT(join(f, "b", -1, -5, 3), GY_EINVAL);
  CHECK_EQ_INT(gy_fleet_forming(f), 1);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_INIT);
  CHECK(join(f, "b", -1, 0, 4) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  /* a member that never opened its session (its process restarted to restore the start
   * step) comes back as itself: the same rank, generation and session id */
  const gy_fleet_member_t *ma = NULL;
  for (int r = 0; r < 2; r++)
    if (!strcmp(gy_fleet_member(f, r)->worker_id, "a")) ma = gy_fleet_member(f, r);
  REQUIRE(ma);
  char sess[GY_FLEET_SESSION_MAX];
  snprintf(sess, sizeof(sess), "%s", ma->session_id);
  gy_fleet_actions_clear(f);
  CHECK_EQ_INT(join(f, "a", -1, 0, 5), 0);
  size_t na;
  const gy_fleet_action_t *acts = gy_fleet_actions(f, &na);
  int assigned = 0;
  for (size_t i = 0; i < na; i++)
    if (acts[i].kind == GY_FLEET_ACT_ASSIGN) {
      assigned++;
      CHECK(acts[i].join_handle == 5 && acts[i].rank == ma->rank &&
            !strcmp(acts[i].session_id, sess));
    }
  CHECK_EQ_INT(assigned, 1);
  CHECK_EQ_INT(ma->pid, 105);
  /* once it said Hello it is in the gang; another worker is refused (the gang is complete),
   * but a new process with its id means the earlier one is gone: that rank is lost at once
   * and the gang re-forms with the newcomer */
  CHECK(gy_fleet_hello(f, now_ms, sess, gy_fleet_generation(f), ma->rank) == 0);
  CHECK_EQ_INT(join(f, "c", -1, 0, 6), GY_ENOTSUP); /* gang complete */
  uint64_t gen = gy_fleet_generation(f);
  int rank_a = ma->rank;
  gy_fleet_actions_clear(f);
  CHECK_EQ_INT(join(f, "a", -1, 0, 7), 0);
  const gy_fleet_action_t *lost = find(f, GY_FLEET_ACT_LOST, 0);
  REQUIRE(lost);
  CHECK_EQ_INT(lost->rank, rank_a);
  CHECK(has_event(f, GY_EVENT_WORKER_LOST));
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_INIT);
  CHECK_EQ_INT(gy_fleet_forming(f), 1);
  CHECK_EQ_INT(join(f, "b", -1, 0, 8), 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK(gy_fleet_generation(f) > gen);
  gy_fleet_destroy(f);
}

static void test_session_validation(void) {
  gy_fleet_t *f = mk(2, 4, 100, 1000);
  CHECK_EQ_INT(gy_fleet_hello(f, now_ms, "x", 1, 0), GY_ENOTSUP); /* no gang yet */
  CHECK(join(f, "a", -1, 0, 1) == 0 && join(f, "b", -1, 0, 2) == 0);
  const char *sid0 = gy_fleet_member(f, 0)->session_id;
  CHECK_EQ_INT(gy_fleet_hello(f, now_ms, sid0, 2, 0), GY_EMISMATCH);
  CHECK_EQ_INT(gy_fleet_hello(f, now_ms, "nope", 1, 0), GY_EMISMATCH);
  CHECK_EQ_INT(gy_fleet_hello(f, now_ms, sid0, 1, 1), GY_EMISMATCH); /* rank 1's session? no */
  CHECK_EQ_INT(gy_fleet_hello(f, now_ms, sid0, 1, 5), GY_ERANGE);
  CHECK_EQ_INT(gy_fleet_member(f, 0)->connected, 0);
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_hello(f, now_ms, sid0, 1, 0) == 0);
  CHECK_EQ_INT(gy_fleet_member(f, 0)->connected, 1);
  const gy_fleet_action_t *g = find(f, GY_FLEET_ACT_GRANT, 0);
  REQUIRE(g);
  CHECK_EQ_INT(g->rank, 0);
  CHECK_EQ_INT(g->step, 4);
  CHECK_EQ_INT(g->generation, 1);
  gy_fleet_report_t r = {.generation = 1, .rank = 1, .step = 0};
  CHECK_EQ_INT(gy_fleet_report(f, now_ms, 0, &r), GY_ERANGE); /* rank 1 on rank 0's stream */
  r.rank = 0;
  r.generation = 9;
  CHECK_EQ_INT(gy_fleet_report(f, now_ms, 0, &r), GY_EMISMATCH);
  r.generation = 1;
  r.step = 1;
  CHECK_EQ_INT(gy_fleet_report(f, now_ms, 0, &r), GY_ERANGE); /* out of order */
  r.step = 0;
  r.nch = GY_FLEET_MAX_CH + 1;
  CHECK_EQ_INT(gy_fleet_report(f, now_ms, 0, &r), GY_EINVAL);
  CHECK_EQ_INT(gy_fleet_heartbeat(f, now_ms, 0, 1, 3), GY_ERANGE);
  CHECK_EQ_INT(gy_fleet_heartbeat(f, now_ms, 0, 0, 0), GY_EMISMATCH);
  CHECK_EQ_INT(gy_fleet_ack(f, now_ms, 1, 1, 77, -1, 1, NULL, 0), GY_ERANGE);
  CHECK_EQ_INT(gy_fleet_member(f, 0)->steps_done, 0);
  gy_fleet_destroy(f);
}

static void test_grants(void) {
  gy_fleet_t *f = mk(2, 4, 100, 1000);
  form(f, 2);
  CHECK_EQ_INT(gy_fleet_horizon(f), 4);
  for (int s = 0; s < 4; s++) {
    CHECK(report(f, 0, s) == 0);
    CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0); /* rank 1 is still at 0 */
  }
  CHECK_EQ_INT(report(f, 0, 4), GY_ERANGE); /* beyond the horizon */
  CHECK(has_event(f, GY_EVENT_REFUSED));
  CHECK(report(f, 1, 0) == 0);
  const gy_fleet_action_t *g = find(f, GY_FLEET_ACT_GRANT, 0);
  REQUIRE(g);
  CHECK_EQ_INT(g->rank, -1);
  CHECK_EQ_INT(g->step, 5);
  CHECK_EQ_INT(gy_fleet_horizon(f), 5);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_STEP), 1);
  CHECK(report(f, 1, 1) == 0);
  CHECK_EQ_INT(gy_fleet_horizon(f), 6);
  CHECK(report(f, 1, 1) == 0); /* a repeat is ignored */
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  CHECK_EQ_INT(gy_fleet_member(f, 1)->steps_done, 2);
  gy_fleet_destroy(f);
}

static void test_cap_and_done(void) {
  gy_fleet_t *f = mk(2, 4, 6, 1000);
  form(f, 2);
  for (int s = 0; s < 6; s++) {
    CHECK(report(f, 0, s) == 0);
    CHECK(report(f, 1, s) == 0);
    if (s < 5) {
      CHECK_EQ_INT(gy_fleet_horizon(f), s + 5 < 6 ? s + 5 : 6); /* capped at run.steps */
      CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
      CHECK_EQ_INT(count(f, GY_FLEET_ACT_DONE), 0);
    }
  }
  CHECK_EQ_INT(gy_fleet_horizon(f), 6);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DONE);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DONE), 1);
  CHECK(has_event(f, GY_EVENT_DONE));
  CHECK_EQ_INT(gy_fleet_last_step(f), 5);
  uint64_t seq;
  int64_t at;
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_CHECKPOINT, NULL, &seq, &at), GY_ENOTSUP);
  gy_fleet_destroy(f);
}

static void test_command_at_end_refused(void) {
  gy_fleet_t *f = mk(1, 4, 3, 1000);
  form(f, 1);
  CHECK_EQ_INT(gy_fleet_horizon(f), 3);
  uint64_t seq;
  int64_t at;
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_CHECKPOINT, NULL, &seq, &at), GY_ENOTSUP);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_STOP, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(at, 3);
  gy_fleet_destroy(f);
}

static void test_directive(void) {
  gy_fleet_t *f = mk(2, 4, 100, 1000);
  form(f, 2);
  for (int s = 0; s < 4; s++)
    CHECK(report(f, 0, s) == 0);
  CHECK(report(f, 1, 0) == 0); /* H = 5 */
  CHECK(report(f, 0, 4) == 0);
  CHECK(report(f, 1, 1) == 0); /* H = 6 */
  CHECK_EQ_INT(gy_fleet_horizon(f), 6);
  gy_fleet_actions_clear(f);
  uint64_t seq = 0;
  int64_t at = 0;
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_CHECKPOINT, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(seq, 1);
  CHECK_EQ_INT(at, 6);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 0);
  int sent = -1;
  CHECK_EQ_INT(gy_fleet_inflight(f, &sent), 1);
  CHECK_EQ_INT(sent, 0);
  CHECK(report(f, 0, 5) == 0); /* rank 0 reaches 6 */
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 0);
  CHECK_EQ_INT(report(f, 0, 6), GY_ERANGE); /* frozen: no grant past 6 */
  for (int s = 2; s < 5; s++) {
    CHECK(report(f, 1, s) == 0);
    CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
    CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 0);
    CHECK_EQ_INT(gy_fleet_horizon(f), 6);
  }
  CHECK(report(f, 1, 5) == 0); /* every rank at H: the directive goes out */
  const gy_fleet_action_t *d = find(f, GY_FLEET_ACT_DIRECTIVE, 0);
  REQUIRE(d);
  CHECK_EQ_INT(d->rank, -1);
  CHECK_EQ_INT(d->seq, 1);
  CHECK_EQ_INT(d->step, 6);
  CHECK_EQ_INT(d->dir_kind, GY_DIR_CHECKPOINT);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  CHECK_EQ_INT(gy_fleet_inflight(f, &sent), 1);
  CHECK_EQ_INT(sent, 1);
  /* a rank that reconnects gets the directive again */
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_hello(f, now_ms, gy_fleet_member(f, 1)->session_id, 1, 1) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_GRANT, 0)->step, 6);
  CHECK(ack(f, 0, 1) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  CHECK(ack(f, 0, 1) == 0);  /* twice is harmless */
  CHECK(ack(f, 1, 99) == 0); /* a stale seq is ignored */
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  CHECK(ack(f, 1, 1) == 0);
  CHECK(has_event(f, GY_EVENT_DIRECTIVE_APPLIED));
  /* every rank acked the CHECKPOINT ok: its checkpoint (of step 6) is on disk everywhere */
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_COMMITTED, 0)->step, 6);
  CHECK(has_event(f, GY_EVENT_CHECKPOINT_COMMITTED));
  const gy_fleet_action_t *g = find(f, GY_FLEET_ACT_GRANT, 0);
  REQUIRE(g);
  CHECK_EQ_INT(g->step, 10);
  CHECK_EQ_INT(gy_fleet_inflight(f, NULL), 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  gy_fleet_destroy(f);
}

static void test_pause_resume(void) {
  gy_fleet_t *f = mk(2, 2, 100, 1000);
  form(f, 2);
  uint64_t seq;
  int64_t at;
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_RESUME, NULL, &seq, &at), GY_ENOTSUP);
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_PAUSE, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(at, 2);
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_PAUSE, NULL, &seq, &at), GY_ENOTSUP);
  for (int s = 0; s < 2; s++)
    CHECK(report(f, 0, s) == 0 && report(f, 1, s) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_DIRECTIVE, 0)->dir_kind, GY_DIR_PAUSE);
  CHECK(ack(f, 0, 1) == 0 && ack(f, 1, 1) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_PAUSED);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  /* parked workers heartbeat; time passes; nobody is lost */
  for (int i = 0; i < 5; i++) {
    now_ms += 500;
    gy_fleet_actions_clear(f);
    CHECK(gy_fleet_heartbeat(f, now_ms, 0, 1, 0) == 0);
    CHECK(gy_fleet_heartbeat(f, now_ms, 1, 1, 1) == 0);
    gy_fleet_tick(f, now_ms);
    CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_PAUSED);
    CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  }
  /* a checkpoint while paused goes out at once, at the same step */
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_CHECKPOINT, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(at, 2);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 1);
  CHECK(ack(f, 0, 2) == 0 && ack(f, 1, 2) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_PAUSED);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_RESUME, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(seq, 3);
  CHECK_EQ_INT(at, 2);
  const gy_fleet_action_t *d = find(f, GY_FLEET_ACT_DIRECTIVE, 0);
  REQUIRE(d);
  CHECK_EQ_INT(d->dir_kind, GY_DIR_RESUME);
  CHECK_EQ_INT(d->step, 2);
  CHECK(ack(f, 0, 3) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_PAUSED);
  CHECK(ack(f, 1, 3) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_GRANT, 0)->step, 4);
  gy_fleet_destroy(f);
}

/* Two ranks formed, an operator command of KIND queued at H = 4 and both ranks at step 4, so
 * the directive is out and waits for their acks; *seq is its sequence number. */
static gy_fleet_t *sent_at_4(gy_dir_kind_t kind, uint64_t *seq) {
  gy_fleet_t *f = mk(2, 3, 100, 1000);
  int64_t at;
  form(f, 2);
  CHECK(report(f, 0, 0) == 0 && report(f, 1, 0) == 0);
  CHECK(gy_fleet_command(f, now_ms, kind, NULL, seq, &at) == 0);
  CHECK_EQ_INT(at, 4);
  for (int s = 1; s < 4; s++)
    CHECK(report(f, 0, s) == 0 && report(f, 1, s) == 0);
  return f;
}

static void test_stop(void) {
  gy_fleet_t *f = mk(2, 3, 100, 1000);
  form(f, 2);
  uint64_t seq;
  int64_t at;
  CHECK(report(f, 0, 0) == 0 && report(f, 1, 0) == 0); /* H = 4 */
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_STOP, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(at, 4);
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_CHECKPOINT, NULL, &seq, &at), GY_ENOTSUP);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  for (int s = 1; s < 4; s++)
    CHECK(report(f, 0, s) == 0 && report(f, 1, s) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 1);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_STOPPING);
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_PAUSE, NULL, &seq, &at), GY_ENOTSUP);
  CHECK(ack(f, 0, 1) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_STOPPING);
  gy_fleet_actions_clear(f);
  gy_fleet_session_closed(f, now_ms, 1); /* rank 1 exited without acking: that is fine too */
  CHECK(has_event(f, GY_EVENT_WORKER_EXITED));
  CHECK(!has_event(f, GY_EVENT_WORKER_LOST));
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DONE);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DONE), 1);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 0); /* rank 1 never said its checkpoint is in */
  gy_fleet_destroy(f);

  /* both ranks ack the STOP: its checkpoint is committed, then the run is done */
  f = sent_at_4(GY_DIR_STOP, &seq);
  CHECK(ack(f, 0, seq) == 0);
  CHECK(ack(f, 1, seq) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_COMMITTED, 0)->step, 4);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_COMMITTED, 0)->bytes, 0); /* no rank said its file's size */
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DONE);
  gy_fleet_destroy(f);

  /* the acks of a CHECKPOINT carry each rank's file size: the committed size is their sum, and
   * unknown (0) when a rank did not say */
  for (int known = 0; known < 2; known++) {
    f = sent_at_4(GY_DIR_CHECKPOINT, &seq);
    CHECK(gy_fleet_ack(f, now_ms, 0, gy_fleet_generation(f), seq, 0, 1, NULL, 1000) == 0);
    gy_fleet_actions_clear(f);
    CHECK(gy_fleet_ack(f, now_ms, 1, gy_fleet_generation(f), seq, 1, 1, NULL, known ? 1500 : 0) ==
          0);
    CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 1);
    CHECK_EQ_INT(find(f, GY_FLEET_ACT_COMMITTED, 0)->step, 4);
    CHECK_EQ_INT(find(f, GY_FLEET_ACT_COMMITTED, 0)->bytes, known ? 2500 : 0);
    gy_fleet_destroy(f);
  }

  /* a CHECKPOINT that one rank failed (its disk): nothing is committed */
  f = sent_at_4(GY_DIR_CHECKPOINT, &seq);
  CHECK(ack(f, 0, seq) == 0);
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_ack(f, now_ms, 1, gy_fleet_generation(f), seq, 1, 0, "disk full", 0) == 0);
  CHECK(has_event(f, GY_EVENT_DIRECTIVE_FAILED));
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 0);
  gy_fleet_destroy(f);
}

static void test_queued(void) {
  gy_fleet_t *f = mk(2, 2, 100, 1000);
  form(f, 2);
  CHECK(report(f, 0, 0) == 0);
  uint64_t s1, s2, s3;
  int64_t a1, a2, a3;
  gy_fleet_hparams_t hp = {.lr_scale = 0.5f, .present = 1u << 0};
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_CHECKPOINT, NULL, &s1, &a1) == 0);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_SET_HPARAMS, &hp, &s2, &a2) == 0);
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_SET_HPARAMS, NULL, &s3, &a3), GY_EINVAL);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_PAUSE, NULL, &s3, &a3) == 0);
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, 9, NULL, &s3, &a3), GY_EINVAL);
  CHECK_EQ_INT(s1, 1);
  CHECK_EQ_INT(s2, 2);
  CHECK_EQ_INT(s3, 3);
  CHECK(a1 == 2 && a2 == 2 && a3 == 2);
  CHECK_EQ_INT(gy_fleet_queued(f), 2);
  CHECK(report(f, 0, 1) == 0 && report(f, 1, 0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 0);
  CHECK(report(f, 1, 1) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_DIRECTIVE, 0)->seq, 1);
  CHECK(ack(f, 0, 1) == 0 && ack(f, 1, 1) == 0);
  const gy_fleet_action_t *d = find(f, GY_FLEET_ACT_DIRECTIVE, 0);
  REQUIRE(d);
  CHECK_EQ_INT(d->seq, 2);
  CHECK_EQ_INT(d->dir_kind, GY_DIR_SET_HPARAMS);
  CHECK_EQ_INT(d->step, 2);
  CHECK(d->hparams.lr_scale == 0.5f && d->hparams.present == 1);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  CHECK(ack(f, 0, 2) == 0 && ack(f, 1, 2) == 0);
  d = find(f, GY_FLEET_ACT_DIRECTIVE, 0);
  REQUIRE(d);
  CHECK_EQ_INT(d->seq, 3);
  CHECK_EQ_INT(d->dir_kind, GY_DIR_PAUSE);
  CHECK(ack(f, 0, 3) == 0 && ack(f, 1, 3) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_PAUSED);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  CHECK_EQ_INT(gy_fleet_horizon(f), 2);
  gy_fleet_destroy(f);
}

static void test_aggregation(void) {
  gy_fleet_t *f = mk(2, 4, 5000, 1000000);
  form(f, 2);
  const char *names[2] = {"web", "code"};
  for (int64_t s = 0; s < 5000; s++) {
    for (int r = 1; r >= 0; r--) { /* rank 1 first: the step completes on rank 0's report */
      double sums[2] = {0.1 * (double)s + 0.25, 3.0 + (double)r};
      uint64_t toks[2] = {100 + (uint64_t)s, 7};
      gy_fleet_report_t rep = {.generation = 1,
                               .rank = r,
                               .step = s,
                               .loss = 2.0 + 1e-3 * (double)s + (double)r,
                               .nch = 2,
                               .ch_name = names,
                               .ch_loss_sum = sums,
                               .ch_tokens = toks,
                               .grad_norm = 0.5 + (double)r,
                               .grad_norm_shallow = 0.1,
                               .grad_norm_deep = 0.2,
                               .update_ratio = 1e-3,
                               .lr = 6e-4,
                               .nonfinite = s == 7,
                               .step_ms = 10.0 + (double)r,
                               .tokens_per_s = 5000.0 + (double)s};
      gy_fleet_actions_clear(f);
      REQUIRE(gy_fleet_report(f, now_ms, r, &rep) == 0);
      if (r == 1) {
        CHECK_EQ_INT(count(f, GY_FLEET_ACT_STEP), 0);
        CHECK(gy_fleet_history(f, s) == NULL);
      }
    }
    CHECK_EQ_INT(count(f, GY_FLEET_ACT_STEP), 1);
    CHECK_EQ_INT(find(f, GY_FLEET_ACT_STEP, 0)->step, s);
    if (s == 7) CHECK(has_event(f, GY_EVENT_NONFINITE));
    const gy_fleet_step_t *st = gy_fleet_history(f, s);
    REQUIRE(st);
    if (s < 10 || s % 997 == 0) {
      CHECK(st->loss == 2.0 + 1e-3 * (double)s); /* rank 0's, bit for bit */
      CHECK_EQ_INT(st->nch, 2);
      CHECK(!strcmp(st->ch[1].name, "code"));
      CHECK(st->ch[0].loss_sum == 0.1 * (double)s + 0.25);
      CHECK(st->ch[0].tokens == 100 + (uint64_t)s);
      CHECK(st->ch[1].loss_sum == 3.0);
      CHECK(st->grad_norm == 0.5 && st->grad_norm_deep == 0.2);
      CHECK(st->tokens_per_s == 5000.0 + (double)s);
      CHECK(st->step_ms == 11.0);
      CHECK_EQ_INT(st->nreports, 2);
      CHECK_EQ_INT(st->nonfinite, s == 7);
    }
  }
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DONE);
  CHECK_EQ_INT(gy_fleet_last_step(f), 4999);
  CHECK(gy_fleet_history(f, 4999) != NULL);
  CHECK(gy_fleet_history(f, 4999 - GY_FLEET_HISTORY + 1) != NULL);
  CHECK(gy_fleet_history(f, 4999 - GY_FLEET_HISTORY) == NULL); /* bounded */
  CHECK(gy_fleet_history(f, 5000) == NULL);
  gy_fleet_destroy(f);
}

static void test_lost_by_silence(void) {
  gy_fleet_t *f = mk(2, 4, 100, 3000);
  form(f, 2);
  int64_t t0 = now_ms;
  gy_fleet_actions_clear(f);
  now_ms = t0 + 2000;
  CHECK(gy_fleet_heartbeat(f, now_ms, 0, 1, 0) == 0);
  now_ms = t0 + 3000;
  gy_fleet_tick(f, now_ms);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN); /* exactly lost_after: not yet */
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 0);
  now_ms = t0 + 3001;
  gy_fleet_tick(f, now_ms);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_LOST, 0)->rank, 1);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_CLOSE), 1); /* its stream, if still open, is finished */
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_CLOSE, 0)->rank, 1);
  CHECK(has_event(f, GY_EVENT_WORKER_LOST));
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DEGRADED);
  CHECK_EQ_INT(gy_fleet_member(f, 1)->alive, 0);
  CHECK_EQ_INT(gy_fleet_member(f, 0)->alive, 1);
  /* no grants in DEGRADED; reports refused */
  CHECK_EQ_INT(report(f, 0, 0), GY_ENOTSUP);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  uint64_t seq;
  int64_t at;
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_CHECKPOINT, NULL, &seq, &at), GY_ENOTSUP);
  /* a join re-forms the gang: the survivors' sessions are closed, the generation goes up */
  gy_fleet_actions_clear(f);
  CHECK(join(f, "w1", -1, 0, 9) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_INIT);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_CLOSE), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_CLOSE, 0)->rank, 0);
  CHECK(join(f, "w0", -1, 0, 10) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(gy_fleet_generation(f), 2);
  gy_fleet_destroy(f);
}

/* Liveness is progress: a rank inside a step whose own work outlasts the hang rule is hung
 * (an event with the evidence, lost, its session ends "declared hung"); a rank waiting in a
 * collective for it is not; a parked rank is not; the threshold follows its recent step time. */
static void test_hung(void) {
  gy_fleet_opts_t o = {.world = 2,
                       .tp = 1,
                       .window = 4,
                       .steps = 100,
                       .lost_after_ms = 100000,
                       .hang_floor_ms = 5000,
                       .hang_factor = 20,
                       .seed = 42};
  gy_fleet_t *f = NULL;
  REQUIRE(gy_fleet_create(&f, &o) == 0);
  form(f, 2);
  run_steps(f, 2, 0, 2, -1); /* step_ms 10: the floor (5000 ms) rules */
  CHECK(gy_fleet_member(f, 0)->recent_step_ms == 10);
  int64_t t0 = now_ms;
  /* rank 1 in its own work in step 2, rank 0 waiting for it in the all-reduce */
  gy_fleet_progress_t busy = {.stepping = 1, .own_ms = 100, .in_collective_ms = 0};
  gy_fleet_progress_t waiting = {.stepping = 1, .own_ms = 10, .in_collective_ms = 4000};
  CHECK(gy_fleet_heartbeat(f, now_ms, 1, 1, 1) == 0);
  gy_fleet_progress(f, now_ms, 1, &busy);
  CHECK(gy_fleet_heartbeat(f, now_ms, 0, 1, 0) == 0);
  gy_fleet_progress(f, now_ms, 0, &waiting);
  gy_fleet_actions_clear(f);
  now_ms = t0 + 4900; /* own work 5000 ms: exactly the threshold, not more */
  gy_fleet_tick(f, now_ms);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 0);
  now_ms = t0 + 4901;
  gy_fleet_tick(f, now_ms);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_LOST, 0)->rank, 1);
  CHECK(has_event(f, GY_EVENT_WORKER_HUNG));
  const gy_fleet_action_t *cl = find(f, GY_FLEET_ACT_CLOSE, 0);
  REQUIRE(cl);
  CHECK_EQ_INT(cl->rank, 1);
  CHECK(!strncmp(cl->msg, "declared hung: ", 15) && strstr(cl->msg, "step 2"));
  CHECK(gy_fleet_member(f, 1)->hung && !gy_fleet_member(f, 0)->hung);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DEGRADED);
  gy_fleet_destroy(f);

  /* the threshold follows the recent step time: 20 x 1000 ms */
  REQUIRE(gy_fleet_create(&f, &o) == 0);
  form(f, 2);
  for (int64_t s = 0; s < 3; s++)
    for (int r = 0; r < 2; r++) {
      gy_fleet_report_t rep = {.generation = gy_fleet_generation(f),
                               .rank = r,
                               .step = s,
                               .loss = 1,
                               .tokens_per_s = 10,
                               .step_ms = 1000};
      REQUIRE(gy_fleet_report(f, now_ms, r, &rep) == 0);
    }
  t0 = now_ms;
  CHECK(gy_fleet_heartbeat(f, now_ms, 0, 1, 0) == 0);
  gy_fleet_progress(f, now_ms, 0, &busy);
  gy_fleet_actions_clear(f);
  now_ms = t0 + 15000; /* more than the floor, less than 20 x 1000 */
  gy_fleet_tick(f, now_ms);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 0);
  now_ms = t0 + 20000; /* 100 + 20000 ms of own work */
  gy_fleet_tick(f, now_ms);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 1);
  /* a report is progress: a parked rank is never hung */
  gy_fleet_destroy(f);
  REQUIRE(gy_fleet_create(&f, &o) == 0);
  form(f, 2);
  gy_fleet_progress_t parked = {0};
  CHECK(gy_fleet_heartbeat(f, now_ms, 0, 1, 0) == 0);
  gy_fleet_progress(f, now_ms, 0, &busy);
  REQUIRE(report(f, 0, 0) == 0); /* the step ended */
  gy_fleet_progress(f, now_ms, 1, &parked);
  gy_fleet_actions_clear(f);
  now_ms += 60000;
  CHECK(gy_fleet_heartbeat(f, now_ms, 0, 1, 0) == 0 && gy_fleet_heartbeat(f, now_ms, 1, 1, 1) == 0);
  gy_fleet_tick(f, now_ms);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 0);
  gy_fleet_destroy(f);
  /* a negative hang option is refused */
  o.hang_factor = -1;
  CHECK_EQ_INT(gy_fleet_create(&f, &o), GY_EINVAL);
}

/* Re-forming is bounded: a gang that lost a worker and is not back within reform_alert_ms is
 * told once per outage (a reform_stalled event), and the watch starts over once it re-forms. */
static void test_reform_stalled(void) {
  gy_fleet_opts_t o = {.world = 2,
                       .tp = 1,
                       .window = 4,
                       .steps = 100,
                       .lost_after_ms = 1000,
                       .reform_alert_ms = 5000,
                       .seed = 42};
  gy_fleet_t *f = NULL;
  REQUIRE(gy_fleet_create(&f, &o) == 0);
  gy_fleet_tick(f, now_ms); /* no gang yet: forming for the first time is not an outage */
  now_ms += 60000;
  gy_fleet_tick(f, now_ms);
  CHECK(!has_event(f, GY_EVENT_REFORM_STALLED));
  form(f, 2);
  int64_t t0 = now_ms;
  CHECK(gy_fleet_heartbeat(f, now_ms, 0, 1, 0) == 0);
  now_ms = t0 + 1001;
  gy_fleet_tick(f, now_ms); /* both silent: lost, DEGRADED */
  REQUIRE(gy_fleet_state(f) == GY_FLEET_DEGRADED);
  gy_fleet_actions_clear(f);
  int64_t t1 = now_ms;
  gy_fleet_tick(f, t1 + 5000);
  CHECK(!has_event(f, GY_EVENT_REFORM_STALLED));
  gy_fleet_tick(f, t1 + 5001);
  CHECK(has_event(f, GY_EVENT_REFORM_STALLED));
  gy_fleet_actions_clear(f);
  gy_fleet_tick(f, t1 + 60000); /* once per outage */
  CHECK(!has_event(f, GY_EVENT_REFORM_STALLED));
  /* the gang re-forms: the next outage is watched afresh */
  now_ms = t1 + 60000;
  REQUIRE(join(f, "w0", -1, 0, 20) == 0 && join(f, "w1", -1, 0, 21) == 0);
  REQUIRE(gy_fleet_state(f) == GY_FLEET_TRAIN);
  gy_fleet_tick(f, now_ms);
  gy_fleet_actions_clear(f);
  gy_fleet_session_closed(f, now_ms, 1);
  gy_fleet_tick(f, now_ms);
  gy_fleet_tick(f, now_ms + 5001);
  CHECK(has_event(f, GY_EVENT_REFORM_STALLED));
  gy_fleet_destroy(f);
  o.reform_alert_ms = -1;
  CHECK_EQ_INT(gy_fleet_create(&f, &o), GY_EINVAL);
}

static void test_lost_by_close(void) {
  gy_fleet_t *f = mk(3, 4, 100, 100000);
  form(f, 3);
  CHECK(report(f, 0, 0) == 0);
  uint64_t seq;
  int64_t at;
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_CHECKPOINT, NULL, &seq, &at) == 0);
  gy_fleet_actions_clear(f);
  gy_fleet_session_closed(f, now_ms, 2);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 1);
  CHECK(has_event(f, GY_EVENT_WORKER_LOST));
  CHECK(has_event(f, GY_EVENT_DIRECTIVE_DROPPED));
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DEGRADED);
  CHECK_EQ_INT(gy_fleet_inflight(f, NULL), 0);
  gy_fleet_actions_clear(f);
  gy_fleet_tick(f, now_ms + 1000000); /* already degraded: nothing more */
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 0);
  CHECK_EQ_INT(gy_fleet_hello(f, now_ms, gy_fleet_member(f, 2)->session_id, 1, 2), GY_EMISMATCH);
  gy_fleet_destroy(f);
}

static void test_checkpoint_commit(void) {
  gy_fleet_t *f = mk(3, 4, 100, 1000000);
  form(f, 3);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 0);
  CHECK_EQ_INT(gy_fleet_committed(f, 0), -1);
  run_steps(f, 3, 0, 2, -1);
  /* the checkpoint of step 2 (written before step 2 ran), reported with step 2 */
  CHECK(report_ck(f, 0, 2, 2, 3.0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 0);
  CHECK(report_ck(f, 1, 2, 2, 3.0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 0);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 0);
  CHECK(report_ck(f, 2, 2, 2, 3.0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_COMMITTED, 0)->step, 2);
  CHECK(has_event(f, GY_EVENT_CHECKPOINT_COMMITTED));
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 1);
  CHECK_EQ_INT(gy_fleet_committed(f, 0), 2);
  CHECK_EQ_INT(gy_fleet_committed(f, 1), -1);
  /* a rank that says the same checkpoint twice counts once */
  CHECK(report_ck(f, 0, 3, 4, 4.0) == 0); /* written after step 3: the checkpoint of step 4 */
  CHECK(report_ck(f, 0, 4, 4, 5.0) == 0);
  CHECK(report_ck(f, 1, 3, 4, 4.0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 0);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 1);
  /* rank 0 runs ahead and reports a newer one before rank 2 reported step 4's */
  CHECK(report_ck(f, 0, 5, 6, 6.0) == 0);
  CHECK(report_ck(f, 1, 4, -1, 5.0) == 0);
  CHECK(report_ck(f, 2, 3, 4, 4.0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_COMMITTED, 0)->step, 4);
  CHECK(report_ck(f, 1, 5, 6, 6.0) == 0);
  CHECK(report_ck(f, 2, 4, -1, 5.0) == 0);
  CHECK(report_ck(f, 2, 5, 6, 6.0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_COMMITTED), 1);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 3);
  CHECK_EQ_INT(gy_fleet_committed(f, 0), 6); /* newest first */
  CHECK_EQ_INT(gy_fleet_committed(f, 1), 4);
  CHECK_EQ_INT(gy_fleet_committed(f, 2), 2);
  /* a checkpoint later than the steps the rank ran is refused */
  CHECK_EQ_INT(report_ck(f, 0, 6, 8, 7.0), GY_EINVAL);
  CHECK(has_event(f, GY_EVENT_REFUSED));
  CHECK_EQ_INT(gy_fleet_member(f, 0)->steps_done, 6);
  /* a world of one commits at once */
  gy_fleet_t *g = mk(1, 4, 100, 1000000);
  form(g, 1);
  CHECK(report_ck(g, 0, 0, 0, 1.0) == 0);
  CHECK_EQ_INT(count(g, GY_FLEET_ACT_COMMITTED), 1);
  CHECK_EQ_INT(gy_fleet_committed(g, 0), 0);
  gy_fleet_destroy(g);
  gy_fleet_destroy(f);
}

static void test_rollback_refusals(void) {
  gy_fleet_t *f = mk(2, 4, 100, 1000000);
  form(f, 2);
  uint64_t seq = 0;
  int64_t at = 0;
  gy_fleet_skip_t sk[2] = {{10, 20}, {30, 30}};
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, 0, NULL, 0, NULL, "x", &seq, &at), GY_ENOENT);
  CHECK(strstr(gy_fleet_errmsg(f), "no checkpoint committed yet"));
  CHECK(has_event(f, GY_EVENT_REFUSED));
  run_steps(f, 2, 0, 4, 2); /* checkpoint of step 2 committed */
  CHECK_EQ_INT(gy_fleet_committed(f, 0), 2);
  gy_fleet_actions_clear(f);
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, 3, NULL, 0, NULL, "x", &seq, &at), GY_ENOENT);
  CHECK(strstr(gy_fleet_errmsg(f), "newest committed: 2"));
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, 1, NULL, 0, NULL, "x", &seq, &at), GY_ENOENT);
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, 7, NULL, 0, NULL, "x", &seq, &at), GY_ENOENT);
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, -1, NULL, 0, NULL, "x", &seq, &at), GY_EINVAL);
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, 2, sk, 2, NULL, "x", &seq, &at), GY_EINVAL);
  CHECK(strstr(gy_fleet_errmsg(f), "[30, 30) is empty"));
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, 2, NULL, 1, NULL, "x", &seq, &at), GY_EINVAL);
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, 2, sk, GY_FLEET_MAX_SKIPS + 1, NULL, "x", &seq, &at),
               GY_EINVAL);
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_ROLLBACK, NULL, &seq, &at), GY_EINVAL);
  CHECK_EQ_INT(gy_fleet_queued(f), 0);
  CHECK_EQ_INT(gy_fleet_inflight(f, NULL), 0);
  CHECK_EQ_INT(gy_fleet_nrollbacks(f), 0);
  CHECK(gy_fleet_rollback_record(f, 0) == NULL);
  CHECK(!strcmp(gy_dir_kind_name(GY_DIR_ROLLBACK), "ROLLBACK"));
  /* not while degraded */
  gy_fleet_session_closed(f, now_ms, 1);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DEGRADED);
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, 2, NULL, 0, NULL, "x", &seq, &at), GY_ENOTSUP);
  gy_fleet_destroy(f);
}

static void test_rollback(void) {
  gy_fleet_t *f = mk(2, 4, 100, 1000000);
  form(f, 2);
  run_steps(f, 2, 0, 3, 2);
  run_steps(f, 2, 3, 6, 4);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 2);
  CHECK_EQ_INT(gy_fleet_last_step(f), 5);
  CHECK_EQ_INT(gy_fleet_horizon(f), 10);
  gy_fleet_skip_t sk[2] = {{100, 104}, {7, 8}};
  gy_fleet_hparams_t hp = {.lr_scale = 0.5f, .present = 1u << 0};
  uint64_t seq = 0;
  int64_t at = 0;
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_rollback(f, now_ms, 2, sk, 2, &hp, "spike at step 5", &seq, &at) == 0);
  sk[0].first = 0; /* the fleet copied the ranges */
  CHECK_EQ_INT(seq, 1);
  CHECK_EQ_INT(at, 10);
  CHECK(has_event(f, GY_EVENT_COMMAND));
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 0);
  CHECK_EQ_INT(gy_fleet_nrollbacks(f), 1);
  const gy_fleet_rollback_t *rec = gy_fleet_rollback_record(f, 0);
  REQUIRE(rec);
  CHECK_EQ_INT(rec->status, GY_FLEET_RB_QUEUED);
  CHECK_EQ_INT(rec->seq, 1);
  CHECK_EQ_INT(rec->to_step, 2);
  CHECK_EQ_INT(rec->from_step, 6);
  CHECK_EQ_INT(rec->nskip, 2);
  CHECK(rec->skip[0].first == 100 && rec->skip[0].last == 104);
  CHECK(!strcmp(rec->reason, "spike at step 5"));
  /* the horizon is frozen at 10; a checkpoint of step 8 commits on the way */
  run_steps(f, 2, 6, 9, 8);
  CHECK_EQ_INT(gy_fleet_committed(f, 0), 8);
  CHECK(report_ck(f, 0, 9, -1, 10.0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 0);
  CHECK(report_ck(f, 1, 9, -1, 10.0) == 0); /* every rank at 10: the rollback goes out */
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  const gy_fleet_action_t *d = find(f, GY_FLEET_ACT_DIRECTIVE, 0);
  REQUIRE(d);
  CHECK_EQ_INT(d->rank, -1);
  CHECK_EQ_INT(d->seq, 1);
  CHECK_EQ_INT(d->step, 10);
  CHECK_EQ_INT(d->dir_kind, GY_DIR_ROLLBACK);
  CHECK_EQ_INT(d->to_step, 2);
  CHECK_EQ_INT(d->nskip, 2);
  REQUIRE(d->skip);
  CHECK(d->skip[0].first == 100 && d->skip[0].last == 104);
  CHECK(d->skip[1].first == 7 && d->skip[1].last == 8);
  CHECK(strstr(d->msg, "spike at step 5"));
  CHECK(d->hparams.lr_scale == 0.5f && d->hparams.present == 1);
  CHECK_EQ_INT(gy_fleet_rollback_record(f, 0)->status, GY_FLEET_RB_SENT);
  CHECK_EQ_INT(gy_fleet_rollback_record(f, 0)->at_step, 10);
  /* rank 1 reconnects: the same directive again */
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_hello(f, now_ms, gy_fleet_member(f, 1)->session_id, 1, 1) == 0);
  d = find(f, GY_FLEET_ACT_DIRECTIVE, 0);
  REQUIRE(d);
  CHECK_EQ_INT(d->rank, 1);
  CHECK(d->step == 10 && d->to_step == 2 && d->nskip == 2);
  /* rank 0 acks; it stands at step 2 and must wait for its grant */
  CHECK(ack(f, 0, 1) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_ROLLED_BACK), 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  CHECK_EQ_INT(report_ck(f, 0, 2, -1, 42.0), GY_ERANGE);
  CHECK(strstr(gy_fleet_errmsg(f), "after acking the rollback"));
  /* rank 0 reconnects after its ack: granted up to to_step only, no directive again */
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_hello(f, now_ms, gy_fleet_member(f, 0)->session_id, 1, 0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 0);
  REQUIRE(find(f, GY_FLEET_ACT_GRANT, 0));
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_GRANT, 0)->step, 2);
  CHECK(ack(f, 1, 1) == 0);
  const gy_fleet_action_t *rb = find(f, GY_FLEET_ACT_ROLLED_BACK, 0);
  REQUIRE(rb);
  CHECK_EQ_INT(rb->step, 2);
  CHECK_EQ_INT(rb->seq, 1);
  CHECK_EQ_INT(rb->ok, 1);
  CHECK(has_event(f, GY_EVENT_ROLLBACK));
  CHECK(has_event(f, GY_EVENT_CHECKPOINT_FORGOTTEN));
  const gy_fleet_action_t *g = find(f, GY_FLEET_ACT_GRANT, 0);
  REQUIRE(g);
  CHECK_EQ_INT(g->rank, -1);
  CHECK_EQ_INT(g->step, 6); /* to_step + window */
  CHECK_EQ_INT(gy_fleet_horizon(f), 6);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(gy_fleet_last_step(f), 1);
  CHECK_EQ_INT(gy_fleet_member(f, 0)->steps_done, 2);
  CHECK_EQ_INT(gy_fleet_member(f, 1)->steps_done, 2);
  CHECK(gy_fleet_history(f, 1) != NULL);
  CHECK(gy_fleet_history(f, 2) == NULL);
  CHECK(gy_fleet_history(f, 9) == NULL);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 1); /* 4 and 8 belong to the abandoned timeline */
  CHECK_EQ_INT(gy_fleet_committed(f, 0), 2);
  CHECK_EQ_INT(gy_fleet_rollback_record(f, 0)->status, GY_FLEET_RB_APPLIED);
  CHECK_EQ_INT(gy_fleet_rollback_failed(f), 0);
  CHECK_EQ_INT(gy_fleet_inflight(f, NULL), 0);
  /* reports for steps >= 2 are accepted again, with the new figures */
  CHECK(report_ck(f, 1, 2, -1, 42.0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_STEP), 0);
  CHECK(report_ck(f, 0, 2, -1, 42.0) == 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_STEP), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_GRANT, 0)->step, 7);
  REQUIRE(gy_fleet_history(f, 2));
  CHECK(gy_fleet_history(f, 2)->loss == 42.0);
  CHECK_EQ_INT(gy_fleet_history(f, 2)->nreports, 2);
  CHECK_EQ_INT(report_ck(f, 0, 5, -1, 1.0), GY_ERANGE); /* still in order */
  /* a second rollback, to a checkpoint of the new timeline */
  run_steps(f, 2, 3, 5, 4);
  CHECK_EQ_INT(gy_fleet_committed(f, 0), 4);
  CHECK_EQ_INT(gy_fleet_horizon(f), 9);
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_rollback(f, now_ms, 4, NULL, 0, NULL, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(seq, 2);
  CHECK_EQ_INT(at, 9);
  run_steps(f, 2, 5, 9, -1);
  d = find(f, GY_FLEET_ACT_DIRECTIVE, 0);
  REQUIRE(d);
  CHECK(d->seq == 2 && d->step == 9 && d->to_step == 4 && d->nskip == 0);
  CHECK_EQ_INT(d->hparams.present, 0);
  CHECK(ack(f, 1, 2) == 0 && ack(f, 0, 2) == 0);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_ROLLED_BACK, 0)->step, 4);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_GRANT, 0)->step, 8);
  CHECK_EQ_INT(gy_fleet_last_step(f), 3);
  CHECK(gy_fleet_history(f, 3) != NULL && gy_fleet_history(f, 4) == NULL);
  CHECK_EQ_INT(gy_fleet_nrollbacks(f), 2);
  CHECK_EQ_INT(gy_fleet_rollback_record(f, 0)->seq, 2);
  CHECK_EQ_INT(gy_fleet_rollback_record(f, 1)->seq, 1);
  CHECK(gy_fleet_rollback_record(f, 2) == NULL);
  run_steps(f, 2, 4, 8, -1);
  CHECK_EQ_INT(gy_fleet_horizon(f), 12);
  gy_fleet_destroy(f);
}

static void test_rollback_queued_dropped(void) {
  gy_fleet_t *f = mk(2, 2, 100, 1000000);
  form(f, 2);
  run_steps(f, 2, 0, 2, 1);
  run_steps(f, 2, 2, 4, 3); /* committed: 3, 1; horizon 6 */
  uint64_t s1, s2;
  int64_t a1, a2;
  CHECK(gy_fleet_rollback(f, now_ms, 1, NULL, 0, NULL, "first", &s1, &a1) == 0);
  CHECK(gy_fleet_rollback(f, now_ms, 3, NULL, 0, NULL, "second", &s2, &a2) == 0);
  CHECK(a1 == 6 && a2 == 6);
  CHECK_EQ_INT(gy_fleet_queued(f), 1);
  run_steps(f, 2, 4, 6, -1);
  CHECK(ack(f, 0, s1) == 0 && ack(f, 1, s1) == 0);
  /* the first forgot the checkpoint of step 3: the second is dropped, grants resume */
  CHECK(has_event(f, GY_EVENT_DIRECTIVE_DROPPED));
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 0);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_GRANT, 0)->step, 3);
  CHECK_EQ_INT(gy_fleet_rollback_record(f, 0)->status, GY_FLEET_RB_DROPPED);
  CHECK_EQ_INT(gy_fleet_rollback_record(f, 1)->status, GY_FLEET_RB_APPLIED);
  CHECK_EQ_INT(gy_fleet_inflight(f, NULL), 0);
  CHECK_EQ_INT(gy_fleet_queued(f), 0);
  gy_fleet_destroy(f);
}

static void test_rollback_refused_and_paused(void) {
  gy_fleet_t *f = mk(2, 2, 100, 1000000);
  form(f, 2);
  run_steps(f, 2, 0, 2, 1);
  run_steps(f, 2, 2, 4, 3); /* committed: 3, 1; horizon 6 */
  uint64_t seq;
  int64_t at;
  CHECK(gy_fleet_rollback(f, now_ms, 3, NULL, 0, NULL, "spike", &seq, &at) == 0);
  run_steps(f, 2, 4, 6, -1);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_DIRECTIVE), 1);
  /* every rank refuses (its state unchanged): the gang stays at 6, grants held */
  CHECK(nack(f, 0, seq, "shard 0: checksum mismatch") == 0);
  CHECK(has_event(f, GY_EVENT_DIRECTIVE_FAILED));
  CHECK(nack(f, 1, seq, "shard 1: checksum mismatch") == 0);
  const gy_fleet_action_t *rb = find(f, GY_FLEET_ACT_ROLLED_BACK, 0);
  REQUIRE(rb);
  CHECK_EQ_INT(rb->ok, 0);
  CHECK_EQ_INT(rb->step, 3);
  CHECK(has_event(f, GY_EVENT_ROLLBACK_FAILED));
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(gy_fleet_rollback_failed(f), 1);
  CHECK_EQ_INT(gy_fleet_horizon(f), 6);
  CHECK_EQ_INT(gy_fleet_last_step(f), 5);
  CHECK_EQ_INT(gy_fleet_member(f, 0)->steps_done, 6);
  CHECK(gy_fleet_history(f, 5) != NULL);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 1); /* 3 could not be restored: forgotten */
  CHECK_EQ_INT(gy_fleet_committed(f, 0), 1);
  CHECK_EQ_INT(gy_fleet_rollback_record(f, 0)->status, GY_FLEET_RB_FAILED);
  /* pause, then roll back to the previous one: it goes out at once, at step 6 */
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_PAUSE, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(at, 6);
  CHECK(ack(f, 0, seq) == 0 && ack(f, 1, seq) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_PAUSED);
  gy_fleet_actions_clear(f);
  CHECK(gy_fleet_rollback(f, now_ms, 1, NULL, 0, NULL, "previous clean", &seq, &at) == 0);
  CHECK_EQ_INT(at, 6);
  const gy_fleet_action_t *d = find(f, GY_FLEET_ACT_DIRECTIVE, 0);
  REQUIRE(d);
  CHECK(d->step == 6 && d->to_step == 1);
  CHECK(ack(f, 0, seq) == 0 && ack(f, 1, seq) == 0);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_ROLLED_BACK, 0)->ok, 1);
  CHECK_EQ_INT(gy_fleet_rollback_failed(f), 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_PAUSED);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0); /* paused: still no grant */
  CHECK_EQ_INT(gy_fleet_horizon(f), 1);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_RESUME, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(at, 1);
  CHECK(ack(f, 0, seq) == 0 && ack(f, 1, seq) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_GRANT, 0)->step, 3);
  gy_fleet_destroy(f);

  /* every rank refuses; the operator resumes (not paused): training goes on from where it was */
  f = mk(2, 2, 100, 1000000);
  form(f, 2);
  run_steps(f, 2, 0, 2, 1); /* committed: 1; horizon 4 */
  CHECK_EQ_INT(gy_fleet_command(f, now_ms, GY_DIR_RESUME, NULL, &seq, &at), GY_ENOTSUP);
  CHECK(gy_fleet_rollback(f, now_ms, 1, NULL, 0, NULL, "spike", &seq, &at) == 0);
  run_steps(f, 2, 2, 4, -1);
  CHECK(nack(f, 0, seq, "no") == 0 && nack(f, 1, seq, "no") == 0);
  CHECK_EQ_INT(gy_fleet_rollback_failed(f), 1);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 0);
  CHECK_EQ_INT(gy_fleet_rollback(f, now_ms, 1, NULL, 0, NULL, "again", &seq, &at), GY_ENOENT);
  CHECK(gy_fleet_command(f, now_ms, GY_DIR_RESUME, NULL, &seq, &at) == 0);
  CHECK_EQ_INT(at, 4);
  CHECK(ack(f, 0, seq) == 0 && ack(f, 1, seq) == 0);
  CHECK(has_event(f, GY_EVENT_RESUMED));
  CHECK_EQ_INT(gy_fleet_rollback_failed(f), 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  REQUIRE(find(f, GY_FLEET_ACT_GRANT, 0));
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_GRANT, 0)->step, 6);
  gy_fleet_destroy(f);
}

static void test_rollback_split(void) {
  gy_fleet_t *f = mk(3, 2, 100, 1000000);
  form(f, 3);
  run_steps(f, 3, 0, 2, 1);
  run_steps(f, 3, 2, 4, 3); /* committed: 3, 1; horizon 6 */
  uint64_t seq;
  int64_t at;
  CHECK(gy_fleet_rollback(f, now_ms, 3, NULL, 0, NULL, "spike", &seq, &at) == 0);
  run_steps(f, 3, 4, 6, -1);
  CHECK(ack(f, 0, seq) == 0);
  CHECK(nack(f, 1, seq, "shard 1: checksum mismatch") == 0);
  CHECK(nack(f, 1, seq, "again") == 0); /* a second ack changes nothing */
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_ROLLED_BACK), 0);
  CHECK(ack(f, 2, seq) == 0);
  /* rank 1 kept step 6, ranks 0 and 2 restored 3: split, rank 1 is lost */
  const gy_fleet_action_t *rb = find(f, GY_FLEET_ACT_ROLLED_BACK, 0);
  REQUIRE(rb);
  CHECK_EQ_INT(rb->ok, 0);
  CHECK(has_event(f, GY_EVENT_ROLLBACK_FAILED));
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_LOST), 1);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_LOST, 0)->rank, 1);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DEGRADED);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_GRANT), 0);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 1);
  CHECK_EQ_INT(gy_fleet_committed(f, 0), 1);
  CHECK(join(f, "w1", -1, 6, 40) == 0 && join(f, "w0", -1, 3, 41) == 0 &&
        join(f, "w2", -1, 3, 42) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(gy_fleet_start_step(f), 1); /* the newest committed before the split */
  gy_fleet_destroy(f);
}

static void test_reform_from_committed(void) {
  gy_fleet_t *f = mk(2, 4, 100, 1000000);
  form(f, 2);
  run_steps(f, 2, 0, 6, 4);
  CHECK(report_ck(f, 0, 6, -1, 7.0) == 0);
  CHECK_EQ_INT(gy_fleet_committed(f, 0), 4);
  gy_fleet_session_closed(f, now_ms, 1);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DEGRADED);
  CHECK(join(f, "w9", -1, 0, 20) == 0); /* a fresh replacement */
  gy_fleet_actions_clear(f);
  CHECK(join(f, "w0", -1, 7, 21) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(gy_fleet_generation(f), 2);
  CHECK_EQ_INT(count(f, GY_FLEET_ACT_ASSIGN), 2);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_ASSIGN, 0)->step, 4);
  CHECK_EQ_INT(find(f, GY_FLEET_ACT_ASSIGN, 1)->step, 4);
  CHECK_EQ_INT(gy_fleet_start_step(f), 4);
  CHECK_EQ_INT(gy_fleet_last_step(f), 3);
  CHECK_EQ_INT(gy_fleet_horizon(f), 8);
  CHECK_EQ_INT(gy_fleet_member(f, 1)->steps_done, 4);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 1); /* the run's, not the gang's */
  size_t n;
  const gy_fleet_action_t *a = gy_fleet_actions(f, &n);
  int said = 0;
  for (size_t i = 0; i < n; i++)
    if (a[i].kind == GY_FLEET_ACT_EVENT && a[i].event_kind == GY_EVENT_GANG_FORMED)
      said = strstr(a[i].msg, "newest committed checkpoint") != NULL;
  CHECK(said);
  for (int r = 0; r < 2; r++)
    REQUIRE(gy_fleet_hello(f, now_ms, gy_fleet_member(f, r)->session_id, 2, r) == 0);
  run_steps(f, 2, 4, 5, -1);
  CHECK_EQ_INT(gy_fleet_horizon(f), 9);
  gy_fleet_destroy(f);
  /* a worker lost during a rollback: the re-formed gang starts from its target */
  f = mk(2, 4, 100, 1000000);
  form(f, 2);
  run_steps(f, 2, 0, 3, 2);
  run_steps(f, 2, 3, 6, 4); /* committed: 4, 2 */
  uint64_t seq;
  int64_t at;
  CHECK(gy_fleet_rollback(f, now_ms, 2, NULL, 0, NULL, "spike", &seq, &at) == 0);
  run_steps(f, 2, 6, 10, -1);
  CHECK(ack(f, 0, seq) == 0);
  gy_fleet_session_closed(f, now_ms, 1);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_DEGRADED);
  CHECK(has_event(f, GY_EVENT_DIRECTIVE_DROPPED));
  CHECK(has_event(f, GY_EVENT_CHECKPOINT_FORGOTTEN));
  CHECK_EQ_INT(gy_fleet_rollback_record(f, 0)->status, GY_FLEET_RB_DROPPED);
  CHECK_EQ_INT(gy_fleet_ncommitted(f), 1);
  CHECK(join(f, "w0", -1, 2, 30) == 0 && join(f, "w1", -1, 10, 31) == 0);
  CHECK_EQ_INT(gy_fleet_state(f), GY_FLEET_TRAIN);
  CHECK_EQ_INT(gy_fleet_start_step(f), 2);
  CHECK_EQ_INT(gy_fleet_horizon(f), 6);
  gy_fleet_destroy(f);
}

static void test_transitions(void) {
  gy_fleet_t *f = mk(1, 4, 100, 1000);
  /* the documented table, written out independently of fleet.c */
  static const int ok[GY_FLEET_NSTATES][GY_FLEET_NSTATES] = {
      [GY_FLEET_INIT] = {[GY_FLEET_TRAIN] = 1},
      [GY_FLEET_TRAIN] = {[GY_FLEET_PAUSED] = 1,
                          [GY_FLEET_STOPPING] = 1,
                          [GY_FLEET_DONE] = 1,
                          [GY_FLEET_DEGRADED] = 1},
      [GY_FLEET_PAUSED] = {[GY_FLEET_TRAIN] = 1, [GY_FLEET_STOPPING] = 1, [GY_FLEET_DEGRADED] = 1},
      [GY_FLEET_STOPPING] = {[GY_FLEET_DONE] = 1},
      [GY_FLEET_DEGRADED] = {[GY_FLEET_INIT] = 1},
  };
  int refused = 0;
  for (int a = 0; a < GY_FLEET_NSTATES; a++)
    for (int b = 0; b < GY_FLEET_NSTATES; b++) {
      gy__fleet_force_state(f, (gy_fleet_state_t)a);
      gy_fleet_actions_clear(f);
      int rc = gy__fleet_transition(f, (gy_fleet_state_t)b, "test");
      CHECK_MSG(rc == (ok[a][b] ? 0 : GY_EINVAL), "%s -> %s: rc %d",
                gy_fleet_state_name((gy_fleet_state_t)a), gy_fleet_state_name((gy_fleet_state_t)b),
                rc);
      CHECK_EQ_INT((int)gy_fleet_state(f), ok[a][b] ? b : a);
      if (!ok[a][b]) {
        refused++;
        CHECK(strstr(gy_fleet_errmsg(f), "illegal state transition"));
        CHECK_EQ_INT(count(f, GY_FLEET_ACT_EVENT), 0);
      } else {
        CHECK(has_event(f, GY_EVENT_STATE));
      }
    }
  CHECK_EQ_INT(refused, 36 - 10);
  CHECK(!strcmp(gy_fleet_state_name(GY_FLEET_DEGRADED), "DEGRADED"));
  CHECK(!strcmp(gy_fleet_state_name((gy_fleet_state_t)99), "?"));
  CHECK(!strcmp(gy_dir_kind_name(GY_DIR_SET_HPARAMS), "SET_HPARAMS"));
  gy_fleet_destroy(f);
}

static void test_create_refusals(void) {
  gy_fleet_t *f = (gy_fleet_t *)1;
  gy_fleet_opts_t o = {.world = 0, .window = 4, .steps = 10, .lost_after_ms = 10};
  CHECK_EQ_INT(gy_fleet_create(&f, &o), GY_EINVAL);
  CHECK(f == NULL);
  o.world = 1;
  o.window = 0;
  CHECK_EQ_INT(gy_fleet_create(&f, &o), GY_EINVAL);
  gy_fleet_destroy(NULL);
}

int main(void) {
  RUN(test_formation_ordinals);
  RUN(test_formation_plain);
  RUN(test_join_refusals);
  RUN(test_session_validation);
  RUN(test_grants);
  RUN(test_cap_and_done);
  RUN(test_command_at_end_refused);
  RUN(test_directive);
  RUN(test_pause_resume);
  RUN(test_stop);
  RUN(test_queued);
  RUN(test_aggregation);
  RUN(test_lost_by_silence);
  RUN(test_hung);
  RUN(test_reform_stalled);
  RUN(test_lost_by_close);
  RUN(test_checkpoint_commit);
  RUN(test_rollback_refusals);
  RUN(test_rollback);
  RUN(test_rollback_queued_dropped);
  RUN(test_rollback_refused_and_paused);
  RUN(test_rollback_split);
  RUN(test_reform_from_committed);
  RUN(test_transitions);
  RUN(test_create_refusals);
  GY_TEST_END();
}
