/* test_run: the run state machine driven one event at a time with a fake clock; the state, the
 * events and the actions are checked after each event. Every pair of the transition table
 * (legal and illegal); a recovered spike; spike -> rollback -> skip -> resume -> train; repeated
 * spikes climbing the ladder rung by rung to HALTED; a drop going straight to a sample skip;
 * NaN rolling back at once; a lost worker rolling back with no skip (also during a repair and
 * while paused); target checkpoint selection (unclean and too-new ones skipped, restore
 * failures); bounded rollbacks; operator verbs; alert-only series; held-out evaluations. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "controller/run.h"
#include "tests/test.h"

static int64_t now_ms = 1000000; /* the fake clock */

/* ---- helpers ---- */

static gy_run_t *mk(const gy_policy_t *p) {
  gy_run_t *r = NULL;
  REQUIRE(gy_run_create(&r, p) == 0 && r);
  return r;
}

static size_t nacts(gy_run_t *r) {
  size_t n;
  gy_run_actions(r, &n);
  return n;
}

static size_t nevs(gy_run_t *r) {
  size_t n;
  gy_run_events(r, &n);
  return n;
}

static const gy_run_action_t *act(gy_run_t *r, gy_run_act_kind_t k) {
  size_t n;
  const gy_run_action_t *a = gy_run_actions(r, &n);
  for (size_t i = 0; i < n; i++)
    if (a[i].kind == k) return &a[i];
  return NULL;
}

static int count_act(gy_run_t *r, gy_run_act_kind_t k) {
  size_t n;
  int c = 0;
  const gy_run_action_t *a = gy_run_actions(r, &n);
  for (size_t i = 0; i < n; i++)
    c += a[i].kind == k;
  return c;
}

static const gy_run_event_t *ev(gy_run_t *r, gy_event_kind_t kind) {
  size_t n;
  const gy_run_event_t *e = gy_run_events(r, &n);
  for (size_t i = 0; i < n; i++)
    if (e[i].kind == kind) return &e[i];
  return NULL;
}

/* Deterministic small noise. */
static double noise(int64_t step, double k) {
  return 0.02 * sin((double)step * k + 0.3);
}

typedef struct {
  double loss, code, zh, grad; /* offsets added to the clean figures; NAN to poison */
  int nonfinite;
  double tps2;          /* rank 2's throughput factor (1 = normal) */
  int samples, nmasked; /* the guard: the step's samples, and how many it masked */
} twist_t;

static const twist_t CLEAN = {0, 0, 0, 0, 0, 1, 0, 0};

/* Feeds step `step` with figures around loss 3, code 2.5, zh 3.5, grad 1; top samples are
 * step*10 + {0 code, 1 zh, 2 code, 3 zh}, bottom samples step*10 + {5 zh, 6 code}. */
static int feed(gy_run_t *r, int64_t step, twist_t t) {
  static char names[6][32] = {"loss",      "loss/code",      "loss/zh",
                              "grad_norm", "tokens_per_s/1", "tokens_per_s/2"};
  gy_run_value_t v[6] = {
      {names[0], GY_SERIES_LOSS, 3.0 + noise(step, 1.1) + t.loss, -1},
      {names[1], GY_SERIES_CHANNEL_LOSS, 2.5 + noise(step, 1.7) + t.code, -1},
      {names[2], GY_SERIES_CHANNEL_LOSS, 3.5 + noise(step, 2.3) + t.zh, -1},
      {names[3], GY_SERIES_GRAD_NORM, 1.0 + 5 * noise(step, 0.7) + t.grad, -1},
      {names[4], GY_SERIES_THROUGHPUT, 1000.0 * (1 + noise(step, 0.9)), 1},
      {names[5], GY_SERIES_THROUGHPUT, 1000.0 * (1 + noise(step, 1.3)) * t.tps2, 2},
  };
  uint64_t b = (uint64_t)step * 10;
  gy_run_sample_t top[4] = {
      {b + 0, "code", 9}, {b + 1, "zh", 8}, {b + 2, "code", 7}, {b + 3, "zh", 6}};
  gy_run_sample_t bottom[2] = {{b + 5, "zh", 0.01}, {b + 6, "code", 0.5}};
  /* the masked samples' ids: step*10 + 7, 8, 9 (at most three listed) */
  uint64_t masked[3] = {b + 7, b + 8, b + 9};
  gy_run_step_t s = {.step = step,
                     .nonfinite = t.nonfinite,
                     .values = v,
                     .nvalues = 6,
                     .top = top,
                     .ntop = 4,
                     .bottom = bottom,
                     .nbottom = 2,
                     .samples = t.samples,
                     .nmasked = t.nmasked,
                     .masked = masked,
                     .nmasked_ids = t.nmasked < 3 ? t.nmasked : 3};
  now_ms += 100;
  return gy_run_step(r, now_ms, &s);
}

/* Feeds clean steps [from, to) and checks that nothing happens. */
static void feed_clean(gy_run_t *r, int64_t from, int64_t to) {
  for (int64_t s = from; s < to; s++) {
    gy_run_clear(r);
    CHECK_EQ_INT(feed(r, s, CLEAN), 0);
    CHECK_MSG(gy_run_state(r) == GY_RUN_TRAIN, "step %lld: state %s", (long long)s,
              gy_run_state_name(gy_run_state(r)));
    CHECK_EQ_INT(nacts(r), 0);
  }
}

static void ckpt(gy_run_t *r, int64_t step, int clean, int want_clean) {
  int c = -1;
  now_ms += 10;
  CHECK_EQ_INT(gy_run_checkpoint(r, now_ms, step, clean, &c), 0);
  CHECK_MSG(c == want_clean, "checkpoint %lld: clean %d, want %d", (long long)step, c, want_clean);
}

static gy_run_t *started(const gy_policy_t *p) {
  gy_run_t *r = mk(p);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_INIT);
  CHECK_EQ_INT(gy_run_started(r, now_ms, 0), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  gy_run_clear(r);
  return r;
}

/* Carries a repair in ROLLBACK through to TRAIN, checking each state and action. */
static void finish_repair(gy_run_t *r, int expect_skip) {
  REQUIRE(gy_run_state(r) == GY_RUN_ROLLBACK);
  int64_t target = gy_run_target(r);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_rollback_done(r, ++now_ms, target), 0);
  if (expect_skip) {
    CHECK_EQ_INT(gy_run_state(r), GY_RUN_SKIP_WINDOW);
    CHECK(act(r, GY_RUN_ACT_APPLY) != NULL);
    gy_run_clear(r);
    CHECK_EQ_INT(gy_run_skips_applied(r, ++now_ms), 0);
  }
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_RESUME);
  const gy_run_action_t *a = act(r, GY_RUN_ACT_RESUME);
  CHECK(a && a->step == target);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_resumed(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  CHECK_EQ_INT(gy_run_last_step(r), target - 1);
  CHECK_EQ_INT(gy_run_target(r), -1);
  gy_run_clear(r);
}

/* ---- the table ---- */

static void test_table(void) {
  /* The documented table (run.h), written out independently of run.c. */
  enum { I, T, S, R, K, U, P, H, D };
  static const int want[9][9] = {
      /*        I  T  S  R  K  U  P  H  D */
      [I] = {0, 1, 0, 0, 0, 0, 0, 1, 0}, [T] = {0, 0, 1, 1, 0, 0, 1, 1, 1},
      [S] = {0, 1, 0, 1, 0, 0, 1, 1, 1}, [R] = {0, 0, 0, 1, 1, 1, 0, 1, 0},
      [K] = {0, 0, 0, 1, 0, 1, 0, 1, 0}, [U] = {0, 1, 0, 1, 0, 0, 1, 1, 0},
      [P] = {0, 1, 0, 1, 0, 0, 0, 1, 1}, [H] = {0, 1, 0, 1, 0, 0, 0, 0, 1},
      [D] = {0, 0, 0, 0, 0, 0, 0, 0, 0},
  };
  REQUIRE(GY_RUN_NSTATES == 9);
  int legal = 0, illegal = 0;
  gy_run_t *r = mk(NULL);
  for (int from = 0; from < GY_RUN_NSTATES; from++)
    for (int to = 0; to < GY_RUN_NSTATES; to++) {
      gy__run_force_state(r, from);
      gy_run_clear(r);
      now_ms += 7;
      int rc = gy__run_transition(r, now_ms, to, GY_EVENT_FORCED, "table");
      CHECK_EQ_INT(gy__run_transition_allowed(from, to), want[from][to]);
      if (want[from][to]) {
        legal++;
        CHECK_MSG(rc == 0, "%s -> %s refused", gy_run_state_name(from), gy_run_state_name(to));
        CHECK_EQ_INT((int)gy_run_state(r), to);
        const gy_run_event_t *e = ev(r, GY_EVENT_FORCED);
        CHECK(e && e->from == (gy_run_state_t)from && e->to == (gy_run_state_t)to &&
              e->time_ms == now_ms && !strcmp(e->reason, "table"));
      } else {
        illegal++;
        CHECK_MSG(rc == GY_EINVAL, "%s -> %s allowed", gy_run_state_name(from),
                  gy_run_state_name(to));
        CHECK_EQ_INT((int)gy_run_state(r), from);
        CHECK_EQ_INT(nevs(r), 0);
        CHECK_EQ_INT(nacts(r), 0);
        CHECK(strstr(gy_run_errmsg(r), "illegal state transition") != NULL);
      }
    }
  CHECK_EQ_INT(legal, 30);
  CHECK_EQ_INT(illegal, 81 - 30);
  CHECK_EQ_INT(gy__run_transition_allowed(-1, 0), 0);
  CHECK_EQ_INT(gy__run_transition_allowed(0, GY_RUN_NSTATES), 0);
  CHECK(!strcmp(gy_run_state_name(GY_RUN_SPIKE_SUSPECTED), "SPIKE_SUSPECTED"));
  CHECK(!strcmp(gy_run_state_name(GY_RUN_NSTATES), "?"));
  gy_run_destroy(r);
  gy_run_destroy(NULL);
}

/* ---- scenarios ---- */

static void test_recovered_spike(void) {
  gy_run_t *r = started(NULL);
  feed_clean(r, 0, 30);
  ckpt(r, 20, 1, 1);
  gy_run_clear(r);
  twist_t t = CLEAN;
  t.code = 1.5;
  CHECK_EQ_INT(feed(r, 30, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_SPIKE_SUSPECTED);
  CHECK_EQ_INT(gy_run_suspect_step(r), 30);
  const gy_run_event_t *e = ev(r, GY_EVENT_SPIKE_SUSPECTED);
  REQUIRE(e);
  CHECK(e->from == GY_RUN_TRAIN && e->to == GY_RUN_SPIKE_SUSPECTED && e->step == 30);
  CHECK_EQ_INT(e->time_ms, now_ms);
  CHECK_MSG(strstr(e->evidence, "loss/code=") != NULL, "%s", e->evidence);
  CHECK(e->nverdicts >= 1 && !strcmp(e->verdict[0].series, "loss/code") &&
        e->verdict[0].dir == GY_DETECT_JUMP);
  CHECK_EQ_INT(nacts(r), 0); /* watching does nothing yet */
  /* A checkpoint taken now is suspect even if the worker calls it clean. */
  ckpt(r, 31, 1, 0);
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 31, CLEAN), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  e = ev(r, GY_EVENT_RECOVERED_SPIKE);
  REQUIRE(e);
  CHECK(e->from == GY_RUN_SPIKE_SUSPECTED && e->to == GY_RUN_TRAIN && e->step == 31);
  CHECK(strstr(e->evidence, "loss/code") != NULL);
  CHECK_EQ_INT(nacts(r), 0);
  CHECK_EQ_INT(gy_run_rollbacks(r), 0);
  /* A checkpoint of the watch committed late is still suspect; later ones are clean. */
  ckpt(r, 32, 1, 0);
  ckpt(r, 33, 1, 1);
  ckpt(r, 30, 1, 1); /* taken before the spike step's update */
  feed_clean(r, 32, 40);
  gy_run_destroy(r);

  /* Half-way back (no longer firing, not yet within tolerance) is not recovered. */
  gy_policy_t p;
  gy_policy_default(&p);
  p.recover_tolerance = 0.25;
  r = started(&p);
  feed_clean(r, 0, 30);
  ckpt(r, 20, 1, 1);
  t = CLEAN;
  t.code = 1.5;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 30, t), 0);
  e = ev(r, GY_EVENT_SPIKE_SUSPECTED);
  REQUIRE(e && e->nverdicts >= 1);
  double med = e->verdict[0].median, thr = e->verdict[0].threshold;
  CHECK(thr >= 0.1);
  t.code = med - 2.5 + 0.6 * thr; /* feed() adds 2.5 and noise within 0.02 */
  for (int64_t s = 31; s <= 33; s++) {
    gy_run_clear(r);
    CHECK_EQ_INT(feed(r, s, t), 0);
    CHECK_MSG(gy_run_state(r) == (s < 33 ? GY_RUN_SPIKE_SUSPECTED : GY_RUN_ROLLBACK),
              "step %lld: %s", (long long)s, gy_run_state_name(gy_run_state(r)));
  }
  gy_run_destroy(r);
}

static void test_full_repair(void) {
  gy_run_t *r = started(NULL);
  feed_clean(r, 0, 40);
  ckpt(r, 10, 1, 1);
  ckpt(r, 20, 1, 1);
  ckpt(r, 25, 0, 0); /* a rank called it unclean */
  ckpt(r, 40, 1, 1); /* after the spike: never a target for it */
  twist_t t = CLEAN;
  t.code = 2.0;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 40, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_SPIKE_SUSPECTED);
  for (int64_t s = 41; s < 43; s++) {
    gy_run_clear(r);
    CHECK_EQ_INT(feed(r, s, t), 0);
    CHECK_EQ_INT(gy_run_state(r), GY_RUN_SPIKE_SUSPECTED);
    CHECK_EQ_INT(nacts(r), 0);
  }
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 43, t), 0); /* observe_steps (3) ran out */
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  CHECK_EQ_INT(gy_run_target(r), 20);
  const gy_run_action_t *a = act(r, GY_RUN_ACT_ROLLBACK);
  REQUIRE(a);
  CHECK_EQ_INT(a->step, 20);
  CHECK_EQ_INT(a->repair_id, 1);
  CHECK_EQ_INT(a->decision.action, GY_ACTION_ROLLBACK);
  CHECK_EQ_INT(a->decision.trigger, GY_TRIG_SPIKE_PERSISTS);
  CHECK_EQ_INT(a->decision.rung, 1);
  /* The code samples of the four spike steps, and no zh sample. */
  CHECK_EQ_INT(a->decision.nsamples, 8);
  for (int i = 0; i < a->decision.nsamples; i++) {
    uint64_t id = a->decision.samples[i];
    CHECK_MSG(id / 10 >= 40 && id / 10 <= 43 && (id % 10 == 0 || id % 10 == 2), "id %llu",
              (unsigned long long)id);
  }
  CHECK(!a->decision.skip_steps);
  const gy_run_event_t *e = ev(r, GY_EVENT_ROLLBACK);
  REQUIRE(e);
  CHECK(e->from == GY_RUN_SPIKE_SUSPECTED && e->to == GY_RUN_ROLLBACK && e->step == 20);
  CHECK(strstr(e->decision, "ROLLBACK rung 1") != NULL);
  CHECK(strstr(e->evidence, "loss/code") != NULL);
  CHECK(strstr(e->reason, "checkpoint 20") != NULL);
  /* The checkpoints above the target belong to the abandoned timeline. */
  int nc;
  const gy_run_ckpt_t *c = gy_run_checkpoints(r, &nc);
  CHECK(nc == 2 && c[0].step == 10 && c[1].step == 20);
  /* Late news from the old timeline is refused; steps are ignored. */
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_checkpoint(r, ++now_ms, 44, 1, NULL), GY_ERANGE);
  CHECK_EQ_INT(feed(r, 44, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  CHECK_EQ_INT(nevs(r) + nacts(r), 0);
  /* Wrong or early acknowledgements are refused. */
  CHECK_EQ_INT(gy_run_rollback_done(r, ++now_ms, 10), GY_EINVAL);
  CHECK_EQ_INT(gy_run_skips_applied(r, ++now_ms), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_resumed(r, ++now_ms), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  /* rollback done -> SKIP_WINDOW with the decision -> RESUME -> TRAIN. */
  CHECK_EQ_INT(gy_run_rollback_done(r, ++now_ms, 20), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_SKIP_WINDOW);
  a = act(r, GY_RUN_ACT_APPLY);
  CHECK(a && a->repair_id == 1 && a->decision.nsamples == 8);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_skips_applied(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_RESUME);
  a = act(r, GY_RUN_ACT_RESUME);
  CHECK(a && a->step == 20 && a->repair_id == 1);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_resumed(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  e = ev(r, GY_EVENT_RESUMED);
  CHECK(e && e->from == GY_RUN_RESUME && e->to == GY_RUN_TRAIN && e->time_ms == now_ms);
  CHECK_EQ_INT(gy_run_last_step(r), 19);
  CHECK(gy_run_decision(r) == NULL);
  /* Training goes on from the target: steps 20.. are accepted again, 19 is not. */
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 19, CLEAN), GY_ERANGE);
  feed_clean(r, 20, 60);
  CHECK_EQ_INT(gy_run_rollbacks(r), 1);
  int nh;
  const gy_policy_repair_t *h = gy_run_history(r, &nh);
  CHECK(nh == 1 && h[0].step == 40 && h[0].rung == 1);
  gy_run_destroy(r);
}

/* Spikes recur at the same place after every repair: rung 1, 2, 3, 4, then HALTED. */
static void test_escalation(void) {
  gy_run_t *r = started(NULL);
  feed_clean(r, 0, 30);
  ckpt(r, 20, 1, 1);
  twist_t t = CLEAN;
  t.loss = 1.0;
  t.grad = 10;
  int64_t from = 30;
  for (int rung = 1; rung <= 5; rung++) {
    feed_clean(r, from, 35);
    if (rung == 1 || rung >= 4) {
      /* the first spike is watched for observe_steps (3) more steps, and so is one after a
       * repair that changed knobs (rung 3 on) */
      for (int64_t s = 35; s <= 38; s++) {
        gy_run_clear(r);
        CHECK_EQ_INT(feed(r, s, t), 0);
        if (s < 38) CHECK_EQ_INT(gy_run_state(r), GY_RUN_SPIKE_SUSPECTED);
      }
    } else {
      /* again in the steps replayed after a repair that only skipped data (up to 38): no
       * watching, the next rung at once */
      gy_run_clear(r);
      CHECK_EQ_INT(feed(r, 35, t), 0);
      CHECK(ev(r, GY_EVENT_SPIKE_SUSPECTED) == NULL);
    }
    if (rung == 5) break;
    CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
    const gy_run_action_t *a = act(r, GY_RUN_ACT_ROLLBACK);
    REQUIRE(a);
    CHECK_EQ_INT(a->decision.rung, rung);
    CHECK_EQ_INT(a->step, 20);
    CHECK_EQ_INT(a->repair_id, (uint64_t)rung);
    CHECK_EQ_INT(a->decision.skip_steps, rung >= 2);
    if (rung >= 2)
      CHECK_MSG(a->decision.step_first == 33 && a->decision.step_last == (rung == 4 ? 41 : 38),
                "rung %d skips steps [%lld, %lld]", rung, (long long)a->decision.step_first,
                (long long)a->decision.step_last);
    CHECK_EQ_INT(a->decision.knobs.set != 0, rung >= 3);
    if (rung == 4) CHECK(a->decision.knobs.set & GY_KNOB_WSD_DECAY);
    /* Repeated spikes alert a human from rung 2 on. */
    CHECK_EQ_INT(count_act(r, GY_RUN_ACT_ALERT), rung >= 2);
    if (rung >= 2) CHECK(act(r, GY_RUN_ACT_ALERT)->alert_class == GY_ALERT_REPEATED_SPIKES);
    finish_repair(r, 1);
    from = 20;
  }
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_HALTED);
  CHECK(act(r, GY_RUN_ACT_HALT) != NULL);
  const gy_run_action_t *al = act(r, GY_RUN_ACT_ALERT);
  CHECK(al && strstr(al->msg, "halted") != NULL);
  CHECK(al && al->alert_class == GY_ALERT_HALTED);
  const gy_run_event_t *e = ev(r, GY_EVENT_HALTED);
  CHECK(e && e->from == GY_RUN_SPIKE_SUSPECTED && strstr(e->reason, "exhausted") != NULL);
  CHECK_EQ_INT(gy_run_rollbacks(r), 4);
  /* HALTED: steps are ignored; a repair cannot start; a human resumes, and the ladder starts
   * over. */
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 39, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_HALTED);
  CHECK_EQ_INT(gy_run_halt(r, ++now_ms, "again"), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_resume(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  CHECK(act(r, GY_RUN_ACT_RESUME) != NULL);
  for (int64_t s = 39; s <= 42; s++) { /* past the replayed steps: watched again */
    gy_run_clear(r);
    CHECK_EQ_INT(feed(r, s, t), 0);
    if (s < 42) CHECK_EQ_INT(gy_run_state(r), GY_RUN_SPIKE_SUSPECTED);
  }
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  CHECK_EQ_INT(gy_run_decision(r)->rung, 1);
  /* the replayed range survives a successor controller (gy_run_save / gy_run_load) */
  char *snap = gy_run_save(r);
  REQUIRE(snap);
  CHECK(strstr(snap, "\"replay_until\":42") != NULL);
  gy_run_t *r2 = started(NULL);
  char err[128];
  CHECK_EQ_INT(gy_run_load(r2, snap, GY_RUN_LOAD_BASELINES | GY_RUN_LOAD_REPAIRS, err, sizeof(err)),
               0);
  ckpt(r2, 20, 1, 1);
  gy_run_clear(r2);
  CHECK_EQ_INT(feed(r2, 40, t), 0);
  CHECK_EQ_INT(gy_run_state(r2), GY_RUN_ROLLBACK); /* 40 <= 42: at once, the next rung */
  CHECK_EQ_INT(gy_run_decision(r2)->rung, 2);
  free(snap);
  gy_run_destroy(r2);
  gy_run_destroy(r);
}

static void test_drop(void) {
  gy_run_t *r = started(NULL);
  feed_clean(r, 0, 30);
  ckpt(r, 25, 1, 1);
  twist_t t = CLEAN;
  t.zh = -3.0; /* repeated tokens: zh loss collapses */
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 30, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK); /* no watch for a drop */
  const gy_run_action_t *a = act(r, GY_RUN_ACT_ROLLBACK);
  REQUIRE(a);
  CHECK_EQ_INT(a->step, 25);
  CHECK_EQ_INT(a->decision.trigger, GY_TRIG_DROP);
  /* The lowest-loss zh sample of the step, not the worst ones. */
  CHECK_EQ_INT(a->decision.nsamples, 1);
  CHECK_EQ_INT(a->decision.samples[0], 305);
  const gy_run_event_t *e = ev(r, GY_EVENT_ROLLBACK);
  CHECK(e && e->from == GY_RUN_TRAIN && strstr(e->evidence, "loss/zh") &&
        strstr(e->evidence, "drop"));
  finish_repair(r, 1);
  gy_run_destroy(r);
}

static void test_nonfinite(void) {
  gy_run_t *r = started(NULL);
  feed_clean(r, 0, 30);
  ckpt(r, 28, 1, 1);
  twist_t t = CLEAN;
  t.loss = NAN;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 30, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  const gy_run_action_t *a = act(r, GY_RUN_ACT_ROLLBACK);
  CHECK(a && a->step == 28 && a->decision.trigger == GY_TRIG_NONFINITE && a->decision.rung == 1);
  CHECK(a && a->decision.nsamples == 4); /* every top sample of the step */
  finish_repair(r, 1);
  /* The flag alone (finite figures) does the same, even during a watch. */
  feed_clean(r, 28, 50);
  t = CLEAN;
  t.code = 2;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 50, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_SPIKE_SUSPECTED);
  t = CLEAN;
  t.nonfinite = 1;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 51, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  a = act(r, GY_RUN_ACT_ROLLBACK);
  CHECK(a && a->step == 28 && a->decision.trigger == GY_TRIG_NONFINITE);
  const gy_run_event_t *e = ev(r, GY_EVENT_ROLLBACK);
  CHECK(e && strstr(e->evidence, "non-finite") != NULL);
  gy_run_destroy(r);
}

/* The guard's masked share: at most guard.max_step_share of a step's samples masked is the
 * guard's business (nothing here); more is a spike the samples do not explain: a rollback at
 * once on the ladder (trigger MASKED, the masked samples attributed), also during a watch; a
 * second one nearby climbs a rung; with the guard off, nothing. */
static void test_masked(void) {
  gy_run_t *r = started(NULL);
  feed_clean(r, 0, 30);
  ckpt(r, 25, 1, 1);
  twist_t t = CLEAN;
  t.samples = 64;
  t.nmasked = 16; /* exactly the default share, 0.25: not over */
  for (int64_t s = 30; s < 33; s++) {
    gy_run_clear(r);
    CHECK_EQ_INT(feed(r, s, t), 0);
    CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
    CHECK_EQ_INT(nacts(r), 0);
  }
  t.nmasked = 17;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 33, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK); /* no watch */
  const gy_run_action_t *a = act(r, GY_RUN_ACT_ROLLBACK);
  REQUIRE(a);
  CHECK_EQ_INT(a->step, 25);
  CHECK_EQ_INT(a->decision.trigger, GY_TRIG_MASKED);
  CHECK_EQ_INT(a->decision.rung, 1);
  CHECK_EQ_INT(a->decision.nsamples, 3); /* the masked ones */
  CHECK(a->decision.samples[0] == 337 && a->decision.samples[2] == 339);
  const gy_run_event_t *e = ev(r, GY_EVENT_ROLLBACK);
  CHECK(e && strstr(e->evidence, "masked share 0.266 > guard.max_step_share 0.25") &&
        strstr(e->reason, "masked at step 33"));
  CHECK(!strcmp(gy_trigger_name(GY_TRIG_MASKED), "masked"));
  finish_repair(r, 1);
  /* during a watch: the masked share repairs at once, from the first suspected step, and the
   * repeat climbs to rung 2 (a window of steps) */
  feed_clean(r, 25, 40);
  ckpt(r, 38, 1, 1);
  t = CLEAN;
  t.code = 2;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 40, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_SPIKE_SUSPECTED);
  t = CLEAN;
  t.samples = 8;
  t.nmasked = 4;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 41, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  a = act(r, GY_RUN_ACT_ROLLBACK);
  REQUIRE(a);
  CHECK(a->step == 38 && a->decision.trigger == GY_TRIG_MASKED && a->decision.rung == 2);
  CHECK(a->decision.skip_steps && a->decision.step_first == 38 && a->decision.step_last == 44);
  finish_repair(r, 1);
  gy_run_destroy(r);
  /* the guard off: no repair for any share */
  gy_policy_t p;
  gy_policy_default(&p);
  p.guard.enabled = 0;
  r = started(&p);
  feed_clean(r, 0, 30);
  t = CLEAN;
  t.samples = 8;
  t.nmasked = 8;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 30, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  gy_run_destroy(r);
}

static void test_worker_lost(void) {
  gy_run_t *r = mk(NULL);
  /* Before the gang formed: an event only. */
  CHECK_EQ_INT(gy_run_worker_lost(r, ++now_ms, 1, "gone"), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_INIT);
  CHECK(ev(r, GY_EVENT_WORKER_LOST) != NULL && nacts(r) == 0);
  CHECK_EQ_INT(gy_run_started(r, ++now_ms, 0), 0);
  feed_clean(r, 0, 30);
  ckpt(r, 20, 1, 1);
  ckpt(r, 30, 1, 1);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_worker_lost(r, ++now_ms, 3, "session closed"), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  const gy_run_action_t *a = act(r, GY_RUN_ACT_ROLLBACK);
  REQUIRE(a);
  CHECK_EQ_INT(a->step, 30); /* the newest clean one: no spike to stay before */
  CHECK(a->decision.trigger == GY_TRIG_WORKER_LOST && a->decision.rung == 0 &&
        a->decision.nsamples == 0 && !a->decision.skip_steps && a->decision.knobs.set == 0);
  CHECK(strstr(ev(r, GY_EVENT_ROLLBACK)->reason, "rank 3 lost") != NULL);
  finish_repair(r, 0); /* straight to RESUME: nothing to skip */
  CHECK_EQ_INT(gy_run_restarts(r), 1);
  CHECK_EQ_INT(gy_run_rollbacks(r), 0);

  /* Lost during a spike repair: the repair keeps its skips. */
  feed_clean(r, 30, 40);
  twist_t t = CLEAN;
  t.loss = NAN;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 40, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  CHECK_EQ_INT(gy_run_rollback_done(r, ++now_ms, 30), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_SKIP_WINDOW);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_worker_lost(r, ++now_ms, 0, NULL), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  a = act(r, GY_RUN_ACT_ROLLBACK);
  CHECK(a && a->step == 30 && a->decision.trigger == GY_TRIG_NONFINITE &&
        a->decision.nsamples == 4);
  finish_repair(r, 1);
  CHECK_EQ_INT(gy_run_restarts(r), 2);

  /* Lost while paused: roll back, then pause again. */
  feed_clean(r, 30, 35);
  CHECK_EQ_INT(gy_run_pause(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_PAUSED);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_worker_lost(r, ++now_ms, 1, NULL), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  CHECK_EQ_INT(gy_run_rollback_done(r, ++now_ms, 30), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_RESUME);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_resumed(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_PAUSED);
  CHECK(act(r, GY_RUN_ACT_PAUSE) != NULL);
  CHECK_EQ_INT(gy_run_resume(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);

  /* max_restarts bounds crash loops. */
  gy_policy_t p;
  gy_policy_default(&p);
  p.max_restarts = 1;
  CHECK_EQ_INT(gy_run_set_policy(r, &p), 0);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_worker_lost(r, ++now_ms, 1, NULL), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_HALTED);
  CHECK(act(r, GY_RUN_ACT_ALERT) != NULL);
  /* HALTED: another loss is an event only. */
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_worker_lost(r, ++now_ms, 1, NULL), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_HALTED);
  CHECK_EQ_INT(nacts(r), 0);
  gy_run_destroy(r);
}

static void test_target_selection(void) {
  /* No clean checkpoint before the spike: HALTED, not a rollback to nowhere. */
  gy_run_t *r = started(NULL);
  feed_clean(r, 0, 30);
  ckpt(r, 30, 1, 1); /* at the spike step: not strictly before it */
  ckpt(r, 10, 0, 0); /* before, but unclean */
  twist_t t = CLEAN;
  t.loss = NAN;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 30, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_HALTED);
  const gy_run_event_t *e = ev(r, GY_EVENT_HALTED);
  CHECK(e && strstr(e->reason, "no clean committed checkpoint") != NULL);
  CHECK_EQ_INT(gy_run_rollbacks(r), 0);
  gy_run_destroy(r);

  /* Strictly before the first suspected step, skipping unclean ones; a restore failure goes to
   * the previous clean one, and then to HALTED. */
  r = started(NULL);
  feed_clean(r, 0, 30);
  ckpt(r, 5, 1, 1);
  ckpt(r, 15, 1, 1);
  ckpt(r, 20, 0, 0);
  ckpt(r, 29, 1, 1);
  ckpt(r, 30, 1, 1);
  t = CLEAN;
  t.loss = NAN;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 30, t), 0);
  CHECK_EQ_INT(gy_run_target(r), 29);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_restore_failed(r, ++now_ms, 20, "crc"), GY_EINVAL);
  CHECK_EQ_INT(gy_run_restore_failed(r, ++now_ms, 29, "shard 1: CRC-32C mismatch"), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  CHECK_EQ_INT(gy_run_target(r), 15);
  const gy_run_action_t *a = act(r, GY_RUN_ACT_ROLLBACK);
  CHECK(a && a->step == 15 && a->decision.trigger == GY_TRIG_NONFINITE);
  e = ev(r, GY_EVENT_ROLLBACK);
  CHECK(e && e->from == GY_RUN_ROLLBACK && e->to == GY_RUN_ROLLBACK &&
        strstr(e->reason, "CRC-32C") != NULL);
  CHECK_EQ_INT(gy_run_restore_failed(r, ++now_ms, 15, "gone"), 0);
  CHECK_EQ_INT(gy_run_target(r), 5);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_restore_failed(r, ++now_ms, 5, "gone"), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_HALTED);
  CHECK(act(r, GY_RUN_ACT_HALT) != NULL);
  CHECK_EQ_INT(gy_run_restore_failed(r, ++now_ms, 5, "x"), GY_ENOTSUP);
  gy_run_destroy(r);
}

/* Spikes far apart never climb the ladder, but max_rollbacks still ends them. */
static void test_bounded(void) {
  gy_policy_t p;
  gy_policy_default(&p);
  p.max_rollbacks = 3;
  p.region_steps = 0;
  p.observe_steps = 0;
  gy_run_t *r = started(&p);
  feed_clean(r, 0, 20);
  ckpt(r, 10, 1, 1);
  twist_t t = CLEAN;
  t.code = 3;
  int rollbacks = 0;
  int64_t spike = 20;
  for (int i = 0; i < 50 && gy_run_state(r) != GY_RUN_HALTED; i++) {
    gy_run_clear(r);
    CHECK_EQ_INT(feed(r, spike, t), 0);
    rollbacks += count_act(r, GY_RUN_ACT_ROLLBACK);
    if (gy_run_state(r) != GY_RUN_ROLLBACK) break;
    CHECK_EQ_INT(act(r, GY_RUN_ACT_ROLLBACK)->decision.rung, 1);
    finish_repair(r, 1);
    feed_clean(r, 10, ++spike);
  }
  CHECK_EQ_INT(rollbacks, 3);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_HALTED);
  CHECK(strstr(ev(r, GY_EVENT_HALTED)->reason, "max_rollbacks") != NULL);
  gy_run_destroy(r);
}

static void test_operator(void) {
  gy_run_t *r = mk(NULL);
  CHECK_EQ_INT(gy_run_pause(r, ++now_ms), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_finished(r, ++now_ms), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_started(r, ++now_ms, 0), 0);
  CHECK_EQ_INT(gy_run_started(r, ++now_ms, 0), GY_ENOTSUP);
  feed_clean(r, 0, 20);
  ckpt(r, 10, 0, 0);
  ckpt(r, 5, 1, 1);
  /* pause / resume */
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_resume(r, ++now_ms), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_pause(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_PAUSED);
  CHECK(act(r, GY_RUN_ACT_PAUSE) != NULL);
  CHECK_EQ_INT(gy_run_pause(r, ++now_ms), GY_ENOTSUP);
  /* Figures in flight while paused keep the detectors learning; a spike is an event only. */
  twist_t t = CLEAN;
  t.code = 2;
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 20, t), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_PAUSED);
  CHECK(ev(r, GY_EVENT_ANOMALY) != NULL && nacts(r) == 0);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_resume(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  CHECK(act(r, GY_RUN_ACT_RESUME) != NULL);
  /* rollback --to 12: the newest committed checkpoint <= 12, clean or not (a human chose). */
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_rollback_to(r, ++now_ms, 4), GY_ENOENT);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  CHECK_EQ_INT(gy_run_rollback_to(r, ++now_ms, 12), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  const gy_run_action_t *a = act(r, GY_RUN_ACT_ROLLBACK);
  CHECK(a && a->step == 10 && a->decision.trigger == GY_TRIG_OPERATOR && a->decision.nsamples == 0);
  /* A pause during a repair is deferred to its end. */
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_pause(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  CHECK(ev(r, GY_EVENT_DEFERRED) != NULL);
  CHECK_EQ_INT(gy_run_rollback_to(r, ++now_ms, 12), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_rollback_done(r, ++now_ms, 10), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_RESUME);
  CHECK_EQ_INT(gy_run_resumed(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_PAUSED);
  CHECK_EQ_INT(gy_run_resume(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_rollbacks(r), 0); /* operator rollbacks are not repairs */
  /* halt, then finish */
  feed_clean(r, 10, 15);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_halt(r, ++now_ms, "looks odd"), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_HALTED);
  a = act(r, GY_RUN_ACT_HALT);
  CHECK(a && strstr(a->msg, "looks odd") != NULL);
  gy_run_clear(r);
  CHECK_EQ_INT(gy_run_finished(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_DONE);
  CHECK(act(r, GY_RUN_ACT_DONE) != NULL);
  /* DONE is final. */
  CHECK_EQ_INT(gy_run_pause(r, ++now_ms), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_resume(r, ++now_ms), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_halt(r, ++now_ms, NULL), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_finished(r, ++now_ms), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_rollback_to(r, ++now_ms, 10), GY_ENOTSUP);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_DONE);
  /* Malformed input. */
  gy_run_value_t bad = {"", GY_SERIES_LOSS, 1, -1};
  gy_run_step_t s = {.step = 100, .values = &bad, .nvalues = 1};
  CHECK_EQ_INT(gy_run_step(r, ++now_ms, &s), GY_EINVAL);
  CHECK_EQ_INT(gy_run_step(r, ++now_ms, NULL), GY_EINVAL);
  bad.series = "loss";
  bad.kind = GY_SERIES_NKINDS;
  CHECK_EQ_INT(gy_run_step(r, ++now_ms, &s), GY_EINVAL);
  gy_policy_t p;
  gy_policy_default(&p);
  p.nrungs = 0;
  CHECK_EQ_INT(gy_run_set_policy(r, &p), GY_EINVAL);
  gy_run_t *r2 = NULL;
  CHECK_EQ_INT(gy_run_create(&r2, &p), GY_EINVAL);
  gy_run_destroy(r);
}

/* An alert-only series (a slow rank) alerts once per streak, when the streak has lasted
 * `sustain` steps (5 in the default policy: one slow step is no anomaly), and never repairs. */
static void test_alert_only(void) {
  gy_run_t *r = started(NULL);
  feed_clean(r, 0, 30);
  twist_t t = CLEAN;
  t.tps2 = 0.4;
  gy_run_clear(r);
  for (int s = 30; s < 34; s++) /* four slow steps: not sustained yet */
    CHECK_EQ_INT(feed(r, s, t), 0);
  CHECK_EQ_INT(nacts(r), 0);
  CHECK(!ev(r, GY_EVENT_ANOMALY));
  CHECK_EQ_INT(feed(r, 34, t), 0); /* the fifth */
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  CHECK_EQ_INT(count_act(r, GY_RUN_ACT_ALERT), 1);
  const gy_run_action_t *a = act(r, GY_RUN_ACT_ALERT);
  CHECK(a && strstr(a->msg, "rank 2") && strstr(a->msg, "tokens_per_s/2"));
  CHECK(a && a->alert_class == GY_ALERT_ANOMALY);
  const gy_run_event_t *e = ev(r, GY_EVENT_ANOMALY);
  CHECK(e && e->nverdicts == 1 && e->verdict[0].dir == GY_DETECT_DROP);
  gy_run_clear(r);
  CHECK_EQ_INT(feed(r, 35, t), 0); /* same streak: quiet */
  CHECK_EQ_INT(nacts(r), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  feed_clean(r, 36, 37);
  gy_run_clear(r);
  for (int s = 37; s < 42; s++) /* a new streak of five */
    CHECK_EQ_INT(feed(r, s, t), 0);
  CHECK_EQ_INT(count_act(r, GY_RUN_ACT_ALERT), 1);
  gy_run_destroy(r);
}

/* Feeds a held-out evaluation at `step`: ppl/zh and ppl/en around 12 and 9, en times en_factor
 * (NAN: poisoned). */
static int feed_eval(gy_run_t *r, int64_t step, double en_factor) {
  gy_run_value_t v[2] = {
      {"ppl/zh", GY_SERIES_PPL, 12.0 + 0.1 * sin((double)step * 0.7), -1},
      {"ppl/en", GY_SERIES_PPL, (9.0 + 0.1 * sin((double)step * 1.3)) * en_factor, -1}};
  now_ms += 10;
  return gy_run_eval(r, now_ms, step, v, 2);
}

/* Held-out evaluations: periodic figures that never repair by themselves; a regression is an
 * event and an alert and makes the evaluated checkpoint suspect (so a repair skips it); NaN rolls
 * back at once; evaluations come in increasing steps, again after a rollback's target. */
static void test_eval(void) {
  gy_run_t *r = started(NULL);
  feed_clean(r, 0, 80);
  for (int64_t s = 10; s <= 60; s += 10) {
    gy_run_clear(r);
    CHECK_EQ_INT(feed_eval(r, s, 1.0), 0);
    CHECK_EQ_INT(nacts(r), 0);
    CHECK(!ev(r, GY_EVENT_EVAL_REGRESSION));
    ckpt(r, s, 1, 1);
  }
  /* en's held-out perplexity jumps by half: an event with the evidence, an alert, no repair */
  gy_run_clear(r);
  CHECK_EQ_INT(feed_eval(r, 70, 1.5), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  const gy_run_event_t *e = ev(r, GY_EVENT_EVAL_REGRESSION);
  CHECK(e && e->step == 70 && e->nverdicts == 1 && strstr(e->evidence, "ppl/en"));
  CHECK_EQ_INT(count_act(r, GY_RUN_ACT_ALERT), 1);
  CHECK(act(r, GY_RUN_ACT_ALERT)->alert_class == GY_ALERT_OTHER);
  CHECK(!act(r, GY_RUN_ACT_ROLLBACK));
  ckpt(r, 70, 1, 0); /* the parameters it evaluated: suspect */
  /* out of order, or bad input: refused, nothing changes */
  CHECK_EQ_INT(feed_eval(r, 70, 1.0), GY_ERANGE);
  CHECK_EQ_INT(gy_run_eval(r, now_ms, 75, NULL, 1), GY_EINVAL);
  gy_run_value_t bad = {"", GY_SERIES_PPL, 1, -1};
  CHECK_EQ_INT(gy_run_eval(r, now_ms, 75, &bad, 1), GY_EINVAL);
  bad = (gy_run_value_t){"ppl/x", GY_SERIES_NKINDS, 1, -1};
  CHECK_EQ_INT(gy_run_eval(r, now_ms, 75, &bad, 1), GY_EINVAL);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  /* NaN: roll back at once, past the suspect checkpoint 70, to 60 */
  gy_run_clear(r);
  CHECK_EQ_INT(feed_eval(r, 75, NAN), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_ROLLBACK);
  const gy_run_action_t *a = act(r, GY_RUN_ACT_ROLLBACK);
  CHECK(a && a->step == 60 && a->decision.trigger == GY_TRIG_NONFINITE);
  /* during the repair evaluations are ignored */
  gy_run_clear(r);
  CHECK_EQ_INT(feed_eval(r, 80, 1.0), 0);
  CHECK_EQ_INT(nevs(r) + nacts(r), 0);
  CHECK_EQ_INT(gy_run_rollback_done(r, ++now_ms, 60), 0);
  if (gy_run_state(r) == GY_RUN_SKIP_WINDOW) CHECK_EQ_INT(gy_run_skips_applied(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_resumed(r, ++now_ms), 0);
  CHECK_EQ_INT(gy_run_state(r), GY_RUN_TRAIN);
  /* the new timeline evaluates step 70 again */
  gy_run_clear(r);
  CHECK_EQ_INT(feed_eval(r, 70, 1.0), 0);
  CHECK(!ev(r, GY_EVENT_EVAL_REGRESSION));
  gy_run_destroy(r);
}

int main(void) {
  RUN(test_table);
  RUN(test_recovered_spike);
  RUN(test_full_repair);
  RUN(test_escalation);
  RUN(test_drop);
  RUN(test_nonfinite);
  RUN(test_masked);
  RUN(test_worker_lost);
  RUN(test_target_selection);
  RUN(test_bounded);
  RUN(test_operator);
  RUN(test_alert_only);
  RUN(test_eval);
  GY_TEST_END();
}
