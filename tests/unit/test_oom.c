/* test_oom: out-of-memory loops (CONVENTIONS.md §6, after libuv test/test-loop-oom.c) for the
 * fleet, the run state machine, the repair coordinator and the journal. Each drives a
 * realistic scenario with the k-th allocation through common/alloc.h failing, for k = 1, 2, ...
 * until the scenario runs to its end without reaching the k-th allocation. At each k:
 * - the call that met the failure has the module's documented outcome: GY_ENOMEM having changed
 *   nothing (the test gives the same input again and it must succeed), or success with exactly
 *   one output dropped and counted (gy_fleet_dropped, gy_run_dropped);
 * - the object stays usable: the scenario goes on to its end and reaches the same final state
 *   as without a failure (the state, not the outputs, which may miss the dropped one);
 * - nothing leaks: allocations minus frees through the hook return to zero after destroy.
 * No timing: the clocks are fake. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/alloc.h"
#include "common/err.h"
#include "controller/fleet.h"
#include "controller/journal.h"
#include "controller/repair.h"
#include "controller/run.h"
#include "controller/store.h"
#include "tests/test.h"

/* ---------------------------------- the failing allocator ---------------------------------- */

static long oom_at;   /* the allocation that fails (0: none) */
static long oom_n;    /* allocations asked for since oom_arm */
static long oom_hits; /* failures injected since oom_arm (0 or 1) */
static long oom_live; /* blocks allocated and not yet freed */

static int oom_fail(void) {
  if (++oom_n != oom_at) return 0;
  oom_hits++;
  return 1;
}
static void *t_malloc(size_t n) {
  void *p = oom_fail() ? NULL : malloc(n);
  oom_live += p != NULL;
  return p;
}
static void *t_calloc(size_t a, size_t b) {
  void *p = oom_fail() ? NULL : calloc(a, b);
  oom_live += p != NULL;
  return p;
}
static void *t_realloc(void *p, size_t n) {
  void *q = oom_fail() ? NULL : realloc(p, n);
  oom_live += q && !p;
  return q;
}
static void t_free(void *p) {
  oom_live -= p != NULL;
  free(p);
}

static void oom_arm(long k) {
  oom_at = k;
  oom_n = oom_hits = 0;
}

/* Ends the loop at k: checks that nothing leaked; 1 when the scenario ran to its end without
 * reaching the k-th allocation (the loop is over). */
static int oom_done(const char *what, long k) {
  CHECK_MSG(oom_live == 0, "%s, k=%ld: %ld blocks leaked", what, k, oom_live);
  oom_live = 0;
  REQUIRE(k < 100000);
  return k > 0 && !oom_hits;
}

/* The documented outcome of a call that met the failure; gives it again after GY_ENOMEM.
 * `dropped` reads the module's count of dropped outputs. */
#define OOM_CALL(dropped, call)                                                                    \
  do {                                                                                             \
    long h0_ = oom_hits;                                                                           \
    uint64_t d0_ = (dropped);                                                                      \
    int rc_ = (call);                                                                              \
    if (oom_hits != h0_) {                                                                         \
      CHECK_MSG(rc_ == GY_ENOMEM ? (dropped) == d0_ : rc_ == 0 && (dropped) == d0_ + 1,            \
                "k=%ld %s: rc %d, %llu dropped", oom_at, #call, rc_,                               \
                (unsigned long long)((dropped)-d0_));                                              \
      if (rc_ == GY_ENOMEM) rc_ = (call);                                                          \
    }                                                                                              \
    CHECK_MSG(rc_ == 0, "k=%ld %s: rc %d", oom_at, #call, rc_);                                    \
  } while (0)

/* ------------------------------------------ fleet ------------------------------------------ */

static int64_t fnow = 1000;

typedef struct {
  int state, ncommitted, nrb, rb_status;
  uint64_t generation;
  int64_t last_step, horizon, committed0;
} fleet_print_t;

static int f_join(gy_fleet_t *f, const char *id) {
  gy_fleet_join_t j = {.worker_id = id, .ordinal = -1, .host = "h", .pid = 1};
  return gy_fleet_join(f, fnow, &j, (uint64_t)id[1]);
}

static int f_report(gy_fleet_t *f, int rank, int64_t step, int64_t ckpt) {
  gy_fleet_actions_clear(f);
  gy_fleet_report_t r = {.generation = gy_fleet_generation(f),
                         .rank = rank,
                         .step = step,
                         .loss = 2.0,
                         .tokens_per_s = 1000,
                         .step_ms = 10,
                         .has_checkpoint = ckpt >= 0,
                         .checkpoint_step = ckpt,
                         .checkpoint_bytes = 100};
  return gy_fleet_report(f, fnow, rank, &r);
}

/* Every rank runs the steps before `to` that the horizon allows (the views, not the GRANT
 * actions, tell how far: a dropped GRANT changes nothing here); ckpt: the checkpoint reported. */
static void f_run(gy_fleet_t *f, int world, int64_t to, int64_t ckpt) {
  for (int64_t s = gy_fleet_last_step(f) + 1; s < to && s < gy_fleet_horizon(f); s++)
    for (int r = 0; r < world && gy_fleet_state(f) == GY_FLEET_TRAIN; r++)
      OOM_CALL(gy_fleet_dropped(f), f_report(f, r, s, s == ckpt ? ckpt : -1));
}

static void f_ack_all(gy_fleet_t *f, int world) {
  int sent = 0;
  uint64_t seq = gy_fleet_inflight(f, &sent);
  REQUIRE(seq && sent);
  for (int r = 0; r < world; r++)
    OOM_CALL(gy_fleet_dropped(f),
             gy_fleet_ack(f, fnow, r, gy_fleet_generation(f), seq, r, 1, NULL, 100));
}

static void f_form(gy_fleet_t *f, int world) {
  OOM_CALL(gy_fleet_dropped(f), f_join(f, "w0"));
  OOM_CALL(gy_fleet_dropped(f), f_join(f, "w1"));
  REQUIRE(gy_fleet_state(f) == GY_FLEET_TRAIN);
  for (int r = 0; r < world; r++)
    OOM_CALL(gy_fleet_dropped(f),
             gy_fleet_hello(f, fnow, gy_fleet_member(f, r)->session_id, gy_fleet_generation(f), r));
}

/* Formation, steps, a checkpoint committed, a rollback with skips, a pause and a resume, a
 * worker lost and the gang re-formed, a stop. 1 with the final state in *p; 0 when create ran
 * out of memory. */
static int fleet_scenario(fleet_print_t *p) {
  const int w = 2;
  gy_fleet_opts_t o = {
      .world = w, .tp = 1, .window = 4, .steps = 40, .lost_after_ms = 5000, .seed = 7};
  gy_fleet_t *f = NULL;
  int rc = gy_fleet_create(&f, &o);
  if (rc) {
    CHECK_MSG(rc == GY_ENOMEM && !f && oom_hits, "k=%ld: create: rc %d", oom_at, rc);
    return 0;
  }
  uint64_t seq;
  int64_t at;
  f_form(f, w);
  f_run(f, w, 6, 3);
  REQUIRE(gy_fleet_ncommitted(f) == 1);
  gy_fleet_skip_t sk[2] = {{100, 120}, {300, 301}};
  OOM_CALL(gy_fleet_dropped(f), gy_fleet_rollback(f, fnow, 3, sk, 2, NULL, "a spike", &seq, &at));
  f_run(f, w, 100, -1); /* to the frozen horizon: the rollback goes out */
  f_ack_all(f, w);
  REQUIRE(gy_fleet_last_step(f) == 2 && gy_fleet_nrollbacks(f) == 1);
  f_run(f, w, 6, 5);
  REQUIRE(gy_fleet_ncommitted(f) == 2);
  OOM_CALL(gy_fleet_dropped(f), gy_fleet_command(f, fnow, GY_DIR_PAUSE, NULL, &seq, &at));
  f_run(f, w, 100, -1);
  f_ack_all(f, w);
  REQUIRE(gy_fleet_state(f) == GY_FLEET_PAUSED);
  OOM_CALL(gy_fleet_dropped(f), gy_fleet_command(f, fnow, GY_DIR_RESUME, NULL, &seq, &at));
  f_ack_all(f, w);
  REQUIRE(gy_fleet_state(f) == GY_FLEET_TRAIN);
  f_run(f, w, 12, -1);
  fnow += 10000; /* rank 1 falls silent: lost, and the gang re-forms */
  OOM_CALL(gy_fleet_dropped(f), gy_fleet_heartbeat(f, fnow, 0, gy_fleet_generation(f), 0));
  gy_fleet_tick(f, fnow);
  REQUIRE(gy_fleet_state(f) == GY_FLEET_DEGRADED);
  f_form(f, w);
  REQUIRE(gy_fleet_start_step(f) == 5);
  f_run(f, w, 9, -1);
  OOM_CALL(gy_fleet_dropped(f), gy_fleet_command(f, fnow, GY_DIR_STOP, NULL, &seq, &at));
  f_run(f, w, 100, -1);
  f_ack_all(f, w);
  const gy_fleet_rollback_t *rb = gy_fleet_rollback_record(f, 0);
  *p = (fleet_print_t){gy_fleet_state(f),         gy_fleet_ncommitted(f),  gy_fleet_nrollbacks(f),
                       rb ? (int)rb->status : -1, gy_fleet_generation(f),  gy_fleet_last_step(f),
                       gy_fleet_horizon(f),       gy_fleet_committed(f, 0)};
  gy_fleet_destroy(f);
  return 1;
}

static void test_oom_fleet(void) {
  fleet_print_t want, got;
  memset(&want, 0, sizeof(want));
  oom_arm(0);
  REQUIRE(fleet_scenario(&want));
  REQUIRE(!oom_done("fleet", 0) && want.state == GY_FLEET_DONE);
  CHECK_EQ_INT(want.generation, 2);
  long k = 1;
  for (;; k++) {
    memset(&got, 0, sizeof(got));
    oom_arm(k);
    int ended = fleet_scenario(&got);
    oom_at = 0;
    if (ended) CHECK_MSG(!memcmp(&got, &want, sizeof(got)), "fleet k=%ld: another end state", k);
    if (oom_done("fleet", k)) break;
  }
  printf("fleet: %ld allocations, each failed once\n", k - 1);
}

/* ------------------------------------------- run ------------------------------------------- */

static int64_t rnow = 1000000;

/* Step `step`'s figures around loss 3, code 2.5, zh 3.5, grad 1 (code + code_off); the top
 * samples are step*10 + {0 code, 1 zh}. */
static int r_feed(gy_run_t *r, int64_t step, double code_off) {
  double n = 0.02 * sin((double)step * 1.1 + 0.3);
  gy_run_value_t v[5] = {
      {"loss", GY_SERIES_LOSS, 3.0 + n, -1},
      {"loss/code", GY_SERIES_CHANNEL_LOSS, 2.5 - n + code_off, -1},
      {"loss/zh", GY_SERIES_CHANNEL_LOSS, 3.5 + 0.5 * n, -1},
      {"grad_norm", GY_SERIES_GRAD_NORM, 1.0 + 2 * n, -1},
      {"tokens_per_s/1", GY_SERIES_THROUGHPUT, 1000.0 * (1 + n), 1},
  };
  uint64_t b = (uint64_t)step * 10;
  gy_run_sample_t top[2] = {{b + 0, "code", 9}, {b + 1, "zh", 8}};
  gy_run_step_t s = {.step = step, .values = v, .nvalues = 5, .top = top, .ntop = 2};
  gy_run_clear(r);
  return gy_run_step(r, ++rnow, &s);
}

static int r_eval(gy_run_t *r, int64_t step, double en_factor) {
  gy_run_value_t v[2] = {{"ppl/zh", GY_SERIES_PPL, 12.0 + 0.1 * sin((double)step * 0.7), -1},
                         {"ppl/en", GY_SERIES_PPL, 9.0 * en_factor, -1}};
  gy_run_clear(r);
  return gy_run_eval(r, ++rnow, step, v, 2);
}

/* Steps [from, to), each followed by what the controller does when the run repairs (it reads
 * the state, not the actions: a dropped action changes nothing here). */
static void r_steps(gy_run_t *r, int64_t from, int64_t to, double code_off) {
  for (int64_t s = from; s < to; s++)
    OOM_CALL(gy_run_dropped(r), r_feed(r, s, code_off));
}

static void r_repair(gy_run_t *r) {
  REQUIRE(gy_run_state(r) == GY_RUN_ROLLBACK);
  OOM_CALL(gy_run_dropped(r), gy_run_rollback_done(r, ++rnow, gy_run_target(r)));
  if (gy_run_state(r) == GY_RUN_SKIP_WINDOW)
    OOM_CALL(gy_run_dropped(r), gy_run_skips_applied(r, ++rnow));
  OOM_CALL(gy_run_dropped(r), gy_run_resumed(r, ++rnow));
}

/* The run's end state and what it learnt (its saved text), for comparison. */
typedef struct {
  int state, nckpts, clean, rollbacks, restarts;
  int64_t last_step;
  char text[8192];
} run_print_t;

static void r_print(gy_run_t *r, run_print_t *p) {
  const gy_run_ckpt_t *c = gy_run_checkpoints(r, &p->nckpts);
  p->clean = 0;
  for (int i = 0; i < p->nckpts; i++)
    p->clean |= c[i].clean << i;
  p->state = gy_run_state(r);
  p->rollbacks = gy_run_rollbacks(r);
  p->restarts = gy_run_restarts(r);
  p->last_step = gy_run_last_step(r);
  char *t = gy_run_save(r);
  REQUIRE(t);
  snprintf(p->text, sizeof(p->text), "%s", t);
  free(t); /* jansson's memory */
}

/* Clean steps and checkpoints, evaluations, a spike that persists and its repair (rollback,
 * skips, resume), a held-out regression, a pause and a resume, a worker lost and its restart,
 * the record saved and loaded by a successor, the end. 1 with the end state in *p (and the
 * successor's in *q); 0 when create ran out of memory. */
static int run_scenario(run_print_t *p, run_print_t *q) {
  gy_run_t *r = NULL, *r2 = NULL;
  int rc = gy_run_create(&r, NULL);
  if (rc) {
    CHECK_MSG(rc == GY_ENOMEM && oom_hits, "k=%ld: run create: rc %d", oom_at, rc);
    return 0;
  }
  OOM_CALL(gy_run_dropped(r), gy_run_started(r, ++rnow, 0));
  r_steps(r, 0, 40, 0);
  for (int64_t s = 10; s <= 40; s += 10) {
    OOM_CALL(gy_run_dropped(r), r_eval(r, s, 1.0));
    OOM_CALL(gy_run_dropped(r), gy_run_checkpoint(r, ++rnow, s, 1, NULL));
  }
  OOM_CALL(gy_run_dropped(r), gy_run_set_policy(r, gy_run_policy(r)));
  r_steps(r, 40, 44, 2.0); /* the code loss jumps and stays up: observe_steps run out */
  REQUIRE(gy_run_state(r) == GY_RUN_ROLLBACK && gy_run_target(r) == 30);
  r_repair(r);
  REQUIRE(gy_run_state(r) == GY_RUN_TRAIN && gy_run_last_step(r) == 29);
  r_steps(r, 30, 50, 0);
  OOM_CALL(gy_run_dropped(r), gy_run_checkpoint(r, ++rnow, 45, 1, NULL));
  OOM_CALL(gy_run_dropped(r), r_eval(r, 45, 1.5)); /* a held-out regression: 45 is suspect */
  r_steps(r, 50, 52, 0);
  OOM_CALL(gy_run_dropped(r), gy_run_pause(r, ++rnow));
  OOM_CALL(gy_run_dropped(r), gy_run_resume(r, ++rnow));
  r_steps(r, 52, 55, 0);
  OOM_CALL(gy_run_dropped(r), gy_run_worker_lost(r, ++rnow, 1, "silent"));
  REQUIRE(gy_run_target(r) == 30); /* 40 was abandoned, 45 is suspect */
  r_repair(r);
  r_steps(r, 30, 60, 0);
  /* a successor loads what this one saved */
  char *t = gy_run_save(r);
  if (!t) {
    CHECK_MSG(oom_hits, "k=%ld: save failed without an injected failure", oom_at);
    t = gy_run_save(r);
  }
  REQUIRE(t);
  rc = gy_run_create(&r2, NULL);
  if (rc) {
    CHECK_MSG(rc == GY_ENOMEM && oom_hits, "k=%ld: run create: rc %d", oom_at, rc);
    REQUIRE(gy_run_create(&r2, NULL) == 0);
  }
  OOM_CALL(0, gy_run_load(r2, t, GY_RUN_LOAD_BASELINES | GY_RUN_LOAD_REPAIRS, NULL, 0));
  free(t); /* jansson's memory */
  OOM_CALL(gy_run_dropped(r), gy_run_finished(r, ++rnow));
  oom_at = 0; /* the prints allocate: not part of the scenario */
  r_print(r, p);
  r_print(r2, q);
  gy_run_destroy(r);
  gy_run_destroy(r2);
  return 1;
}

static void test_oom_run(void) {
  static run_print_t want, want2, got, got2;
  oom_arm(0);
  REQUIRE(run_scenario(&want, &want2));
  REQUIRE(!oom_done("run", 0) && want.state == GY_RUN_DONE);
  CHECK_EQ_INT(want.rollbacks, 1);
  CHECK_EQ_INT(want.restarts, 1);
  CHECK(!strcmp(want.text, want2.text)); /* the successor learnt the same */
  long k = 1;
  for (;; k++) {
    memset(&got, 0, sizeof(got));
    memset(&got2, 0, sizeof(got2));
    oom_arm(k);
    if (run_scenario(&got, &got2)) {
      CHECK_MSG(!memcmp(&got, &want, sizeof(got)), "run k=%ld: another end state", k);
      CHECK_MSG(!strcmp(got2.text, want2.text), "run k=%ld: the successor learnt %s", k, got2.text);
    }
    if (oom_done("run", k)) break;
  }
  printf("run: %ld allocations, each failed once\n", k - 1);
}

/* ---------------------------------- repair (the coordinator) ---------------------------------- */

/* The coordinator allocates only when created ("nothing here allocates after create"): the loop
 * checks that a whole repair (decided, asked, sent, applied; a re-formed gang asked again) needs
 * exactly that one allocation. */
static int repair_scenario(gy_repair_state_t *end) {
  gy_repair_t *r = NULL;
  int rc = gy_repair_create(&r);
  if (rc) {
    CHECK_MSG(rc == GY_ENOMEM && oom_hits, "k=%ld: repair create: rc %d", oom_at, rc);
    return 0;
  }
  gy_policy_decision_t d;
  memset(&d, 0, sizeof(d));
  d.nsamples = 2;
  d.samples[0] = 100;
  d.samples[1] = 101;
  int64_t t = 1000;
  CHECK_EQ_INT(gy_repair_gang_formed(r, t, 1, 0, GY_RUN_INIT, GY_REPAIR_FLEET_GANG), 0);
  gy_repair_step(r);
  CHECK_EQ_INT(gy_repair_run_rollback(r, ++t, 50, &d, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(gy_repair_asked(r, ++t, GY_REPAIR_ASK_SENT, 7, NULL), 0);
  gy_repair_clear(r);
  /* the gang re-forms with the rollback in flight: asked again of the new gang */
  CHECK_EQ_INT(gy_repair_gang_formed(r, ++t, 2, 40, GY_RUN_ROLLBACK, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), GY_REPAIR_ASKING);
  CHECK_EQ_INT(gy_repair_asked(r, ++t, GY_REPAIR_ASK_SENT, 9, NULL), 0);
  CHECK_EQ_INT(gy_repair_rolled_back(r, ++t, 9, 50, 1), 0);
  size_t n;
  const gy_repair_action_t *a = gy_repair_actions(r, &n);
  CHECK(n >= 1 && a[n - 1].kind == GY_REPAIR_ACT_RUN_DONE);
  CHECK_EQ_INT(gy_repair_run_halt(r, ++t), 0);
  *end = gy_repair_state(r);
  gy_repair_destroy(r);
  return 1;
}

static void test_oom_repair(void) {
  gy_repair_state_t end = GY_REPAIR_NSTATES;
  long k = 1;
  for (;; k++) {
    oom_arm(k);
    if (repair_scenario(&end)) CHECK_EQ_INT(end, GY_REPAIR_IDLE);
    oom_at = 0;
    if (oom_done("repair", k)) break;
  }
  CHECK_EQ_INT(k - 1, 1);
}

/* ----------------------------------------- journal ----------------------------------------- */

/* A run's record in a SQLite store in a temporary folder: events, checkpoints with their
 * held-out figures, baselines, an intent with skips, one applied, one pending, a hold. The
 * writes allocate nothing of ours (jansson and the store have their own allocators); opening
 * and loading the record do. */
static void journal_write(gy_cstore_t *st) {
  gy_journal_t *j = NULL;
  REQUIRE(gy_journal_open(&j, st, "oomrun", NULL, 0) == 0);
  for (int i = 1; i <= 5; i++)
    REQUIRE(gy_journal_event(j, (uint64_t)i, 1000.0 + i, i * 10, "state", "TRAIN -> TRAIN") == 0);
  for (int64_t s = 10; s <= 30; s += 10) {
    REQUIRE(gy_journal_checkpoint(j, s, 1, NULL, 0) == 0);
    REQUIRE(gy_journal_checkpoint_eval(j, s, "{\"ppl/en\": 9.1}", NULL, 0) == 0);
    REQUIRE(gy_journal_baselines(j, s, "{\"series\": [], \"repairs\": []}", NULL, 0) == 0);
  }
  gy_fleet_skip_t sk[2] = {{100, 120}, {300, 301}};
  gy_journal_intent_t in = {
      .seq = 3, .kind = GY_DIR_ROLLBACK, .at_step = 35, .to_step = 20, .skip = sk, .nskip = 2};
  snprintf(in.reason, sizeof(in.reason), "a spike");
  REQUIRE(gy_journal_intent(j, &in, "{\"series\": [], \"repairs\": [[40, 1, 1]]}", NULL, 0) == 0);
  REQUIRE(gy_journal_applied(j, 3, 20, sk, 2, NULL, 0) == 0);
  in.seq = 4;
  in.nskip = 1;
  REQUIRE(gy_journal_intent(j, &in, NULL, NULL, 0) == 0);
  REQUIRE(gy_journal_state(j, 2, 4, 1, NULL, 0) == 0);
  REQUIRE(gy_journal_hold(j, 1, "operator pause", NULL, 0) == 0);
  gy_journal_close(j);
}

/* What a load found, flattened for comparison. */
static void journal_print(const gy_journal_state_t *s, char *buf, size_t len) {
  int o = snprintf(buf, len, "ev %zu last %llu ck %zu sk %zu in %zu base %zu hold %d gen %llu |",
                   s->nevents, (unsigned long long)s->last_event_id, s->nckpts, s->nskips,
                   s->nintents, s->nbase, s->hold, (unsigned long long)s->generation);
  for (size_t i = 0; i < s->nckpts && o < (int)len; i++)
    o += snprintf(buf + o, len - (size_t)o, " c%lld %s", (long long)s->ckpts[i].step,
                  s->ckpts[i].eval ? s->ckpts[i].eval : "-");
  for (size_t i = 0; i < s->nskips && o < (int)len; i++)
    o += snprintf(buf + o, len - (size_t)o, " s%llu", (unsigned long long)s->skips[i].first);
  for (size_t i = 0; i < s->nintents && o < (int)len; i++)
    o += snprintf(buf + o, len - (size_t)o, " i%llu/%d", (unsigned long long)s->intents[i].seq,
                  s->intents[i].nskip);
  if (o < (int)len) snprintf(buf + o, len - (size_t)o, " run %s", s->run_snapshot ? "y" : "n");
}

/* Opens the journal and loads the record; 1 with what it found in buf; 0 when open ran out of
 * memory. A load that runs out of memory returns GY_ENOMEM with nothing to free, and loads
 * everything when given again. */
static int journal_scenario(gy_cstore_t *st, char *buf, size_t len) {
  gy_journal_t *j = NULL;
  int rc = gy_journal_open(&j, st, "oomrun", NULL, 0);
  if (rc) {
    CHECK_MSG(rc == GY_ENOMEM && !j && oom_hits, "k=%ld: journal open: rc %d", oom_at, rc);
    return 0;
  }
  gy_journal_state_t s;
  long h0 = oom_hits;
  rc = gy_journal_load(j, &s, 3, NULL, 0);
  if (oom_hits != h0) {
    CHECK_MSG(rc == GY_ENOMEM, "k=%ld: load: rc %d", oom_at, rc);
    if (rc) {
      CHECK(!s.events && !s.ckpts && !s.skips && !s.intents && !s.run_snapshot && !s.nbase);
      rc = gy_journal_load(j, &s, 3, NULL, 0);
    }
  }
  REQUIRE(rc == 0);
  REQUIRE(gy_journal_event(j, 5, 1005.0, 50, "state", "TRAIN -> TRAIN") == 0); /* the same */
  journal_print(&s, buf, len);
  gy_journal_state_free(&s);
  gy_journal_close(j);
  return 1;
}

static void test_oom_journal(void) {
  char dir[] = "/tmp/gy-oom-XXXXXX", url[160], path[128], want[2048], got[2048];
  REQUIRE(mkdtemp(dir) != NULL);
  snprintf(path, sizeof(path), "%s/store.db", dir);
  snprintf(url, sizeof(url), "sqlite:%s", path);
  gy_cstore_t *st = NULL;
  char err[256] = "";
  REQUIRE(gy_cstore_create(&st, url, NULL, err, sizeof(err)) == 0);
  journal_write(st);
  oom_arm(0);
  REQUIRE(journal_scenario(st, want, sizeof(want)));
  REQUIRE(!oom_done("journal", 0));
  CHECK(strstr(want, "ev 3 last 5 ck 2 sk 2 in 1 base 2 hold 1 gen 2") == want);
  CHECK(strstr(want, "c10 {\"ppl/en\":9.09") && strstr(want, "i4/1") && strstr(want, "run y"));
  long k = 1;
  for (;; k++) {
    got[0] = 0;
    oom_arm(k);
    if (journal_scenario(st, got, sizeof(got)))
      CHECK_MSG(!strcmp(got, want), "journal k=%ld: loaded %s", k, got);
    oom_at = 0;
    if (oom_done("journal", k)) break;
  }
  printf("journal: %ld allocations, each failed once\n", k - 1);
  gy_cstore_destroy(st);
  unlink(path);
  char side[160];
  snprintf(side, sizeof(side), "%s-wal", path);
  unlink(side);
  snprintf(side, sizeof(side), "%s-shm", path);
  unlink(side);
  rmdir(dir);
}

int main(void) {
  static const gy_alloc_hooks_t hooks = {t_malloc, t_calloc, t_realloc, t_free};
  gy_alloc_set_hooks(&hooks); /* before anything runs (common/alloc.h) */
  RUN(test_oom_fleet);
  RUN(test_oom_run);
  RUN(test_oom_repair);
  RUN(test_oom_journal);
  gy_alloc_set_hooks(NULL);
  GY_TEST_END();
}
