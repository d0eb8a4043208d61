/* test_repair: the repair coordinator (controller/repair.h) driven input by input with a fake
 * clock: every legal transition is taken (and the test checks at the end that each was seen),
 * every illegal one is refused and changes nothing, and the actions come in the order the
 * controller carries them out. */
#include <string.h>

#include "common/err.h"
#include "controller/repair.h"
#include "tests/test.h"

#define I GY_REPAIR_IDLE
#define W GY_REPAIR_WAITING
#define A GY_REPAIR_ASKING
#define F GY_REPAIR_IN_FLIGHT

/* Every move any test made, to check that each legal transition was exercised. */
static int seen[GY_REPAIR_NSTATES][GY_REPAIR_NSTATES];
static int64_t clock_ms = 1000;

/* Takes the actions and moves of the last input (checking every move is legal and stamped
 * with the fake clock), then clears them. Returns the number of actions copied to out. */
static size_t take(gy_repair_t *r, gy_repair_action_t *out, size_t cap) {
  size_t nm, na;
  const gy_repair_move_t *m = gy_repair_moves(r, &nm);
  for (size_t i = 0; i < nm; i++) {
    CHECK(gy__repair_transition_allowed(m[i].from, m[i].to));
    CHECK_EQ_INT(m[i].time_ms, clock_ms);
    seen[m[i].from][m[i].to]++;
  }
  const gy_repair_action_t *a = gy_repair_actions(r, &na);
  REQUIRE(na <= cap);
  memcpy(out, a, na * sizeof(*a));
  gy_repair_clear(r);
  return na;
}

static gy_policy_decision_t decision(int nsamples) {
  gy_policy_decision_t d;
  memset(&d, 0, sizeof(d));
  d.nsamples = nsamples;
  for (int i = 0; i < nsamples; i++)
    d.samples[i] = 100 + (uint64_t)i;
  return d;
}

static gy_repair_t *fresh_machine(void) {
  gy_repair_t *r;
  REQUIRE(gy_repair_create(&r) == 0);
  CHECK_EQ_INT(gy_repair_state(r), I);
  CHECK_EQ_INT(gy_repair_target(r), -1);
  return r;
}

/* The documented table (repair.h), pair by pair. */
static void test_table(void) {
  static const int want[GY_REPAIR_NSTATES][GY_REPAIR_NSTATES] = {
      [I] = {[W] = 1, [F] = 1},
      [W] = {[I] = 1, [W] = 1, [A] = 1, [F] = 1},
      [A] = {[I] = 1, [F] = 1},
      [F] = {[I] = 1, [W] = 1, [F] = 1},
  };
  for (int a = 0; a < GY_REPAIR_NSTATES; a++)
    for (int b = 0; b < GY_REPAIR_NSTATES; b++)
      CHECK_MSG(gy__repair_transition_allowed(a, b) == want[a][b], "%s -> %s",
                gy_repair_state_name(a), gy_repair_state_name(b));
  CHECK(!gy__repair_transition_allowed(-1, I) && !gy__repair_transition_allowed(I, 9));
  CHECK(!strcmp(gy_repair_state_name(F), "IN_FLIGHT"));
  CHECK(!strcmp(gy_repair_state_name(GY_REPAIR_NSTATES), "?"));
}

/* The common path: decided with a gang, asked, sent, applied. */
static void test_happy_path(void) {
  gy_repair_t *r = fresh_machine();
  gy_repair_action_t a[16];
  gy_policy_decision_t d = decision(3);
  CHECK_EQ_INT(gy_repair_gang_formed(r, clock_ms, 1, 0, GY_RUN_INIT, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_RUN_STARTED && a[0].step == 0);
  CHECK(gy_repair_fresh_gang(r) && !gy_repair_resend(r) && gy_repair_generation(r) == 1);
  gy_repair_step(r);
  CHECK(!gy_repair_fresh_gang(r));

  clock_ms += 10;
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 50, &d, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), A);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_ASK && a[0].step == 50 && !a[0].resend);
  CHECK_EQ_INT(gy_repair_decision(r)->nsamples, 3);
  CHECK_EQ_INT(gy_repair_decision(r)->samples[2], 102);
  /* a second decision or a halt while asking is refused and changes nothing */
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 40, &d, GY_REPAIR_FLEET_GANG), GY_ENOTSUP);
  CHECK_EQ_INT(gy_repair_run_halt(r, clock_ms), GY_ENOTSUP);
  CHECK_EQ_INT(gy_repair_gang_formed(r, clock_ms, 2, 0, GY_RUN_TRAIN, GY_REPAIR_FLEET_GANG),
               GY_ENOTSUP);
  CHECK(strstr(gy_repair_errmsg(r), "being asked") != NULL);
  CHECK_EQ_INT(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_SENT, 0, NULL), GY_EINVAL);
  CHECK_EQ_INT(gy_repair_state(r), A);
  CHECK_EQ_INT(gy_repair_target(r), 50);
  CHECK_EQ_INT(take(r, a, 16), 0);

  clock_ms += 10;
  CHECK_EQ_INT(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_SENT, 7, NULL), 0);
  CHECK_EQ_INT(gy_repair_state(r), F);
  CHECK_EQ_INT(gy_repair_seq(r), 7);
  CHECK_EQ_INT(take(r, a, 16), 0);
  /* asked again outside ASKING: refused */
  CHECK_EQ_INT(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_SENT, 8, NULL), GY_ENOTSUP);
  /* another rollback's end (an operator's, say) is not the run's */
  CHECK_EQ_INT(gy_repair_rolled_back(r, clock_ms, 6, 50, 1), 0);
  CHECK_EQ_INT(gy_repair_state(r), F);
  CHECK_EQ_INT(take(r, a, 16), 0);
  clock_ms += 10;
  CHECK_EQ_INT(gy_repair_rolled_back(r, clock_ms, 7, 50, 1), 0);
  CHECK_EQ_INT(gy_repair_state(r), I);
  CHECK_EQ_INT(gy_repair_seq(r), 0);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_RUN_DONE && a[0].step == 50);
  CHECK_EQ_INT(gy_repair_target(r), 50); /* kept: the last decided */
  /* bad arguments */
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, -1, &d, GY_REPAIR_FLEET_GANG), GY_EINVAL);
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 5, NULL, GY_REPAIR_FLEET_GANG), GY_EINVAL);
  CHECK_EQ_INT(gy_repair_state(r), I);
  gy_repair_destroy(r);
}

/* The other answers of the fleet, and a failed restore. */
static void test_ask_outcomes(void) {
  gy_repair_action_t a[16];
  gy_policy_decision_t d = decision(0);
  struct {
    gy_repair_ask_t outcome;
    gy_repair_act_kind_t want;
    const char *why;
  } cases[] = {
      {GY_REPAIR_ASK_NOTHING, GY_REPAIR_ACT_RUN_DONE, NULL},
      {GY_REPAIR_ASK_NO_CHECKPOINT, GY_REPAIR_ACT_RUN_FAILED, "checkpoint 30 is gone"},
      {GY_REPAIR_ASK_REFUSED, GY_REPAIR_ACT_RUN_HALT, "the fleet cannot roll back: stopping"},
  };
  for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
    gy_repair_t *r = fresh_machine();
    clock_ms += 5;
    REQUIRE(gy_repair_run_rollback(r, clock_ms, 30, &d, GY_REPAIR_FLEET_GANG) == 0);
    take(r, a, 16);
    clock_ms += 5;
    CHECK_EQ_INT(gy_repair_asked(r, clock_ms, cases[k].outcome, 0, cases[k].why), 0);
    CHECK_EQ_INT(gy_repair_state(r), I);
    CHECK_EQ_INT(take(r, a, 16), 1);
    CHECK_EQ_INT(a[0].kind, cases[k].want);
    CHECK_EQ_INT(a[0].step, 30);
    if (cases[k].why) CHECK(!strcmp(a[0].msg, cases[k].why));
    gy_repair_destroy(r);
  }
  /* a rollback that a rank could not restore */
  gy_repair_t *r = fresh_machine();
  REQUIRE(gy_repair_run_rollback(r, clock_ms, 30, &d, GY_REPAIR_FLEET_GANG) == 0);
  REQUIRE(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_SENT, 3, NULL) == 0);
  take(r, a, 16);
  clock_ms += 5;
  CHECK_EQ_INT(gy_repair_rolled_back(r, clock_ms, 3, 30, 0), 0);
  CHECK_EQ_INT(gy_repair_state(r), I);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_RUN_FAILED && a[0].step == 30);
  CHECK(strstr(a[0].msg, "could not restore") != NULL);
  gy_repair_destroy(r);
}

/* No gang: the repair waits for the next one, which is asked with the earlier skips; a run
 * that ends meanwhile drops it. */
static void test_waiting(void) {
  gy_repair_action_t a[16];
  gy_policy_decision_t d = decision(1);
  gy_repair_t *r = fresh_machine();
  REQUIRE(gy_repair_gang_formed(r, clock_ms, 1, 0, GY_RUN_INIT, GY_REPAIR_FLEET_GANG) == 0);
  take(r, a, 16);
  clock_ms += 5;
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 20, &d, GY_REPAIR_FLEET_NO_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), W);
  CHECK_EQ_INT(take(r, a, 16), 0);
  /* decided again (a worker lost while waiting): still waiting, the newer target */
  clock_ms += 5;
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 10, &d, GY_REPAIR_FLEET_NO_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), W);
  CHECK_EQ_INT(gy_repair_target(r), 10);
  take(r, a, 16);
  /* the second gang forms while the run rolls back: asked, with the earlier repairs' skips */
  clock_ms += 5;
  CHECK_EQ_INT(gy_repair_gang_formed(r, clock_ms, 2, 10, GY_RUN_ROLLBACK, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), A);
  CHECK(gy_repair_resend(r) && gy_repair_fresh_gang(r));
  CHECK_EQ_INT(gy_repair_formed_start(r), 10);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_ASK && a[0].step == 10 && a[0].resend);
  REQUIRE(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_SENT, 4, NULL) == 0);
  /* applied: told as soon as known (before its journal write), it clears both flags and
   * leaves the state to the end of the rollback */
  gy_repair_applied(r);
  CHECK(!gy_repair_resend(r) && !gy_repair_fresh_gang(r));
  CHECK_EQ_INT(gy_repair_state(r), F);
  REQUIRE(gy_repair_rolled_back(r, clock_ms, 4, 10, 1) == 0);
  CHECK(!gy_repair_resend(r) && !gy_repair_fresh_gang(r)); /* an applied rollback clears both */
  take(r, a, 16);

  /* the run ends before a gang could be asked: dropped, with an event */
  clock_ms += 5;
  REQUIRE(gy_repair_run_rollback(r, clock_ms, 40, &d, GY_REPAIR_FLEET_NO_GANG) == 0);
  take(r, a, 16);
  CHECK_EQ_INT(gy_repair_gang_formed(r, clock_ms, 3, 40, GY_RUN_ROLLBACK, GY_REPAIR_FLEET_ENDED),
               0);
  CHECK_EQ_INT(gy_repair_state(r), I);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_EVENT && a[0].event == GY_REPAIR_EV_DROPPED && a[0].step == 40);
  /* ... and straight from the decision */
  REQUIRE(gy_repair_run_rollback(r, clock_ms, 40, &d, GY_REPAIR_FLEET_ENDED) == 0);
  CHECK_EQ_INT(gy_repair_state(r), I);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_EVENT && a[0].event == GY_REPAIR_EV_DROPPED);
  gy_repair_destroy(r);
}

/* A gang that re-forms drops the rollback in flight; a run that still rolls back asks again. */
static void test_reformed_gang(void) {
  gy_repair_action_t a[16];
  gy_policy_decision_t d = decision(2);
  gy_repair_t *r = fresh_machine();
  REQUIRE(gy_repair_gang_formed(r, clock_ms, 1, 0, GY_RUN_INIT, GY_REPAIR_FLEET_GANG) == 0);
  REQUIRE(gy_repair_run_rollback(r, clock_ms, 60, &d, GY_REPAIR_FLEET_GANG) == 0);
  REQUIRE(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_SENT, 9, NULL) == 0);
  take(r, a, 16);
  /* the run training again (its rollback was refused elsewhere): nothing asked */
  clock_ms += 5;
  CHECK_EQ_INT(gy_repair_gang_formed(r, clock_ms, 2, 60, GY_RUN_TRAIN, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), I);
  CHECK_EQ_INT(gy_repair_seq(r), 0);
  CHECK_EQ_INT(take(r, a, 16), 0);
  /* the old gang's rollback ending now is not the run's */
  CHECK_EQ_INT(gy_repair_rolled_back(r, clock_ms, 9, 60, 1), 0);
  CHECK_EQ_INT(take(r, a, 16), 0);
  /* in flight again, and the gang re-forms while the run rolls back: asked again */
  REQUIRE(gy_repair_run_rollback(r, clock_ms, 60, &d, GY_REPAIR_FLEET_GANG) == 0);
  REQUIRE(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_SENT, 10, NULL) == 0);
  take(r, a, 16);
  clock_ms += 5;
  CHECK_EQ_INT(gy_repair_gang_formed(r, clock_ms, 3, 60, GY_RUN_ROLLBACK, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), A);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_ASK && a[0].step == 60 && a[0].resend);
  /* the fresh gang formed from the target, nothing to send: repaired */
  CHECK(gy_repair_fresh_gang(r) && gy_repair_formed_start(r) == 60);
  REQUIRE(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_NOTHING, 0, NULL) == 0);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_RUN_DONE && a[0].step == 60);
  /* the run decides again while one is in flight (its restore failed): the old one is not
   * the run's any more */
  REQUIRE(gy_repair_run_rollback(r, clock_ms, 60, &d, GY_REPAIR_FLEET_GANG) == 0);
  REQUIRE(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_SENT, 11, NULL) == 0);
  take(r, a, 16);
  clock_ms += 5;
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 50, &d, GY_REPAIR_FLEET_NO_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), W);
  CHECK_EQ_INT(gy_repair_seq(r), 0);
  take(r, a, 16);
  CHECK_EQ_INT(gy_repair_rolled_back(r, clock_ms, 11, 60, 1), 0);
  CHECK_EQ_INT(gy_repair_state(r), W);
  CHECK_EQ_INT(take(r, a, 16), 0);
  gy_repair_destroy(r);
}

/* An operator's command: its rollback is adopted, its pause is not sent twice. */
static void test_operator(void) {
  gy_repair_action_t a[16];
  gy_policy_decision_t d = decision(0);
  gy_repair_t *r = fresh_machine();
  gy_repair_operator(r, 1, 0); /* a PAUSE */
  CHECK_EQ_INT(gy_repair_run_pause(r, clock_ms), 0);
  CHECK_EQ_INT(take(r, a, 16), 0);
  gy_repair_operator(r, 0, 0);
  CHECK_EQ_INT(gy_repair_run_pause(r, clock_ms), 0); /* a deferred pause: the gang is held */
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK_EQ_INT(a[0].kind, GY_REPAIR_ACT_HOLD);

  clock_ms += 5;
  gy_repair_operator(r, 1, 21); /* a ROLLBACK the operator queued as directive 21 */
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 70, &d, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), F);
  CHECK_EQ_INT(gy_repair_seq(r), 21);
  CHECK_EQ_INT(take(r, a, 16), 0); /* nothing asked */
  /* adopted once only: the run deciding again in the same command asks the fleet */
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 70, &d, GY_REPAIR_FLEET_NO_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), W);
  gy_repair_operator(r, 0, 0);
  take(r, a, 16);
  /* waiting, then an operator rollback is adopted */
  gy_repair_operator(r, 1, 22);
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 65, &d, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), F);
  /* in flight, and another operator rollback is adopted in its place */
  gy_repair_operator(r, 1, 23);
  CHECK_EQ_INT(gy_repair_run_rollback(r, clock_ms, 60, &d, GY_REPAIR_FLEET_GANG), 0);
  CHECK_EQ_INT(gy_repair_state(r), F);
  CHECK_EQ_INT(gy_repair_seq(r), 23);
  gy_repair_operator(r, 0, 0);
  take(r, a, 16);
  CHECK_EQ_INT(gy_repair_rolled_back(r, clock_ms, 23, 60, 1), 0);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK(a[0].kind == GY_REPAIR_ACT_RUN_DONE && a[0].step == 60);
  gy_repair_destroy(r);
}

/* A halt forgets a rollback not yet asked and holds the gang; one in flight ends as the fleet
 * says. */
static void test_halt(void) {
  gy_repair_action_t a[16];
  gy_policy_decision_t d = decision(0);
  gy_repair_t *r = fresh_machine();
  REQUIRE(gy_repair_run_rollback(r, clock_ms, 10, &d, GY_REPAIR_FLEET_NO_GANG) == 0);
  take(r, a, 16);
  clock_ms += 5;
  CHECK_EQ_INT(gy_repair_run_halt(r, clock_ms), 0);
  CHECK_EQ_INT(gy_repair_state(r), I);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK_EQ_INT(a[0].kind, GY_REPAIR_ACT_HOLD);
  REQUIRE(gy_repair_run_rollback(r, clock_ms, 10, &d, GY_REPAIR_FLEET_GANG) == 0);
  REQUIRE(gy_repair_asked(r, clock_ms, GY_REPAIR_ASK_SENT, 5, NULL) == 0);
  take(r, a, 16);
  CHECK_EQ_INT(gy_repair_run_halt(r, clock_ms), 0);
  CHECK_EQ_INT(gy_repair_state(r), F);
  CHECK_EQ_INT(take(r, a, 16), 1);
  CHECK_EQ_INT(gy_repair_rolled_back(r, clock_ms, 5, 10, 1), 0);
  CHECK_EQ_INT(gy_repair_state(r), I);
  CHECK_EQ_INT(take(r, a, 16), 1); /* RUN_DONE: the halted run refuses it, as it should */
  /* a gang formed while the run is halted or paused is held */
  for (int k = 0; k < 2; k++) {
    CHECK_EQ_INT(gy_repair_gang_formed(r, clock_ms, 2 + (uint64_t)k, 10,
                                       k ? GY_RUN_PAUSED : GY_RUN_HALTED, GY_REPAIR_FLEET_GANG),
                 0);
    CHECK_EQ_INT(take(r, a, 16), 1);
    CHECK_EQ_INT(a[0].kind, GY_REPAIR_ACT_HOLD);
  }
  gy_repair_destroy(r);
}

/* A hold found in the journal is applied to the first gang only, in order. */
static void test_recovered_hold(void) {
  gy_repair_action_t a[16];
  for (int hold = 1; hold <= 2; hold++) {
    gy_repair_t *r = fresh_machine();
    gy_repair_recovered(r, hold, "operator pause");
    CHECK_EQ_INT(gy_repair_recovered_hold(r), hold);
    CHECK_EQ_INT(gy_repair_gang_formed(r, clock_ms, 4, 30, GY_RUN_INIT, GY_REPAIR_FLEET_GANG), 0);
    size_t n = take(r, a, 16);
    CHECK_EQ_INT(gy_repair_recovered_hold(r), 0);
    CHECK_EQ_INT(a[0].kind, GY_REPAIR_ACT_RUN_STARTED);
    CHECK_EQ_INT(a[0].step, 30);
    if (hold == 1) {
      CHECK_EQ_INT(n, 4);
      CHECK_EQ_INT(a[1].kind, GY_REPAIR_ACT_RUN_PAUSE);
      CHECK_EQ_INT(a[2].kind, GY_REPAIR_ACT_HOLD);
    } else {
      CHECK_EQ_INT(n, 3);
      CHECK_EQ_INT(a[1].kind, GY_REPAIR_ACT_RUN_HALT);
      CHECK(strstr(a[1].msg, "HALTED before the controller restarted") != NULL);
    }
    CHECK(a[n - 1].kind == GY_REPAIR_ACT_EVENT && a[n - 1].event == GY_REPAIR_EV_RECOVERED);
    CHECK(strstr(a[n - 1].msg, hold == 1 ? "stays PAUSED" : "stays HALTED") != NULL);
    CHECK(strstr(a[n - 1].msg, "(operator pause)") != NULL);
    /* the next gang of a run started again is not held */
    CHECK_EQ_INT(gy_repair_gang_formed(r, clock_ms, 5, 30, GY_RUN_INIT, GY_REPAIR_FLEET_GANG), 0);
    CHECK_EQ_INT(take(r, a, 16), 1);
    gy_repair_destroy(r);
  }
  gy_repair_t *r = fresh_machine();
  gy_repair_recovered(r, 7, NULL); /* not a hold */
  CHECK_EQ_INT(gy_repair_recovered_hold(r), 0);
  gy_repair_destroy(r);
}

/* Every legal transition was taken by some scenario, no illegal one ever was. Run alone (its own
 * ctest entry), it runs the scenarios first. */
static void test_transitions_covered(void) {
  int any = 0;
  for (int a = 0; a < GY_REPAIR_NSTATES; a++)
    for (int b = 0; b < GY_REPAIR_NSTATES; b++)
      any |= seen[a][b];
  if (!any) {
    test_happy_path();
    test_ask_outcomes();
    test_waiting();
    test_reformed_gang();
    test_operator();
    test_halt();
    test_recovered_hold();
  }
  for (int a = 0; a < GY_REPAIR_NSTATES; a++)
    for (int b = 0; b < GY_REPAIR_NSTATES; b++)
      if (gy__repair_transition_allowed(a, b))
        CHECK_MSG(seen[a][b] > 0, "%s -> %s never taken", gy_repair_state_name(a),
                  gy_repair_state_name(b));
      else
        CHECK_MSG(seen[a][b] == 0, "illegal %s -> %s taken", gy_repair_state_name(a),
                  gy_repair_state_name(b));
}

int main(void) {
  RUN(test_table);
  RUN(test_happy_path);
  RUN(test_ask_outcomes);
  RUN(test_waiting);
  RUN(test_reformed_gang);
  RUN(test_operator);
  RUN(test_halt);
  RUN(test_recovered_hold);
  RUN(test_transitions_covered);
  GY_TEST_END();
}
