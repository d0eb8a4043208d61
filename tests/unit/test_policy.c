/* test_policy: the policy file and the pure decision. The shipped examples/policies/default.yaml
 * equals the built-in default field for field; a formatted policy loads back equal; bad files
 * are refused with FILE:LINE and the key, and leave the caller's policy untouched; the decision
 * walks the default ladder rung by rung (samples, window, clip/eps/shallow, lr/WSD/z-loss,
 * HALT), respects region_steps, max_rollbacks and max_restarts, sends drops straight to a
 * sample skip and lost workers to a rollback with no skip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/err.h"
#include "config/policy_file.h"
#include "policies/policy.h"
#include "tests/test.h"

static char dir[64];

static const char *write_file(const char *name, const char *text) {
  static char path[128];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  FILE *f = fopen(path, "w");
  REQUIRE(f);
  fputs(text, f);
  fclose(f);
  return path;
}

static void test_default_file(void) {
  const char *src = getenv("GY_SOURCE_DIR");
  char path[1024];
  snprintf(path, sizeof(path), "%s/examples/policies/default.yaml", src ? src : "..");
  gy_policy_t a, b;
  char err[512] = "";
  gy_policy_default(&a);
  memset(&b, 0xab, sizeof(b));
  int rc = gy_policy_load(&b, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s", err);
  CHECK(gy_policy_equal(&a, &b));
  /* Spot checks, so that equal() itself is not the only witness. */
  CHECK_EQ_INT(b.nrungs, 4);
  CHECK_EQ_INT(b.observe_steps, 3);
  CHECK(b.rung[0].skip_samples && !b.rung[0].skip_window);
  CHECK(b.rung[1].skip_window && b.rung[1].before == 2 && b.rung[1].after == 2);
  CHECK_EQ_INT(b.rung[2].knobs.set, GY_KNOB_GRAD_CLIP | GY_KNOB_EPS | GY_KNOB_SHALLOW);
  CHECK_NEAR(b.rung[2].knobs.eps_factor, 0.1, 0);
  CHECK_EQ_INT(b.rung[2].knobs.shallow_layers, 1);
  CHECK_EQ_INT(b.rung[3].knobs.set, GY_KNOB_LR_SCALE | GY_KNOB_WSD_DECAY | GY_KNOB_Z_LOSS);
  CHECK_NEAR(b.rung[3].knobs.z_loss, 1e-4, 0);
  CHECK(b.detect[GY_SERIES_THROUGHPUT].alert_only && !b.detect[GY_SERIES_THROUGHPUT].jump);
  CHECK(b.drop_skip_samples);
  /* The guard section equals gy_guard_default too. */
  gy_guard_opts_t g;
  gy_guard_default(&g);
  CHECK(gy_guard_equal(&g, &b.guard));
  CHECK_EQ_INT(b.guard.window, 256);
  CHECK_NEAR(b.guard.max_step_share, 0.25, 0);
  CHECK_NEAR(b.guard.rule[GY_GSTAT_NONTEXT].floor, 0.1, 0);
  CHECK(b.guard.rule[GY_GSTAT_REPEAT].high && !b.guard.rule[GY_GSTAT_REPEAT].low);
  CHECK(b.guard.quarantine && b.guard.quarantine_max_tokens == 65536);
  CHECK(gy_policy_check(&a, err, sizeof(err)) == 0);
}

static void test_roundtrip(void) {
  gy_policy_t p, q;
  gy_policy_default(&p);
  p.detect[GY_SERIES_PPL].z = 4.25;
  p.detect[GY_SERIES_LOSS].min_delta = 0.1 + 1e-12; /* needs %.17g */
  p.observe_steps = 0;
  p.drop_skip_samples = 0;
  p.nrungs = 2;
  p.rung[1].knobs.set = GY_KNOB_Z_LOSS;
  p.rung[1].knobs.z_loss = 3e-5;
  char buf[4096];
  size_t n = gy_policy_format(&p, buf, sizeof(buf));
  REQUIRE(n < sizeof(buf));
  CHECK(gy_policy_format(&p, NULL, 0) == n);
  const char *path = write_file("rt.yaml", buf);
  char err[512] = "";
  int rc = gy_policy_load(&q, path, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s\n%s", err, buf);
  CHECK(gy_policy_equal(&p, &q));
  /* The formatted text parsed from memory reads back to the same policy. */
  gy_policy_default(&q);
  rc = gy_policy_parse(&q, "shown", buf, n, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s\n%s", err, buf);
  CHECK(gy_policy_equal(&p, &q));
  q.rung[1].knobs.z_loss = 4e-5;
  CHECK(!gy_policy_equal(&p, &q));
  /* A file with one key keeps every other default. */
  path = write_file("one.yaml", "observe_steps: 7\n");
  CHECK(gy_policy_load(&q, path, err, sizeof(err)) == 0);
  gy_policy_default(&p);
  CHECK_EQ_INT(q.observe_steps, 7);
  q.observe_steps = p.observe_steps;
  CHECK(gy_policy_equal(&p, &q));
  /* Every guard field changed reads back equal. */
  gy_policy_default(&p);
  p.guard.enabled = 0;
  p.guard.window = 64;
  p.guard.warmup = 9;
  p.guard.max_step_share = 0.125 + 1e-13; /* needs %.17g */
  p.guard.budget = 0;
  p.guard.quarantine = 0;
  p.guard.quarantine_max_tokens = 1ull << 40;
  p.guard.quarantine_margin = 0;
  p.guard.rule[GY_GSTAT_ENTROPY] = (gy_guard_rule_t){.z = 0, .floor = 0.75, .high = 0, .low = 1};
  p.guard.rule[GY_GSTAT_HIGHBYTE].z = 3.5;
  n = gy_policy_format(&p, buf, sizeof(buf));
  REQUIRE(n < sizeof(buf));
  rc = gy_policy_parse(&q, "shown", buf, n, err, sizeof(err));
  CHECK_MSG(rc == 0, "%s\n%s", err, buf);
  CHECK(gy_policy_equal(&p, &q));
  CHECK(gy_guard_equal(&p.guard, &q.guard));
  /* A partial guard section keeps every other default. */
  path = write_file("guard.yaml", "guard:\n  window: 128\n  rules:\n    loss: {z: 8}\n"
                                  "  quarantine: {margin: 16}\n");
  CHECK(gy_policy_load(&q, path, err, sizeof(err)) == 0);
  gy_policy_default(&p);
  CHECK_EQ_INT(q.guard.window, 128);
  CHECK_NEAR(q.guard.rule[GY_GSTAT_LOSS].z, 8, 0);
  CHECK_NEAR(q.guard.rule[GY_GSTAT_LOSS].floor, p.guard.rule[GY_GSTAT_LOSS].floor, 0);
  CHECK(q.guard.quarantine_margin == 16 && q.guard.quarantine_max_tokens == 65536);
  q.guard.window = p.guard.window;
  q.guard.rule[GY_GSTAT_LOSS].z = p.guard.rule[GY_GSTAT_LOSS].z;
  q.guard.quarantine_margin = p.guard.quarantine_margin;
  CHECK(gy_policy_equal(&p, &q));
  /* A partial detector keeps its other fields; a ladder replaces the default one. */
  path = write_file("two.yaml", "detect:\n  loss: {z: 9}\nladder:\n  - knobs: {z_loss: 0.001}\n");
  CHECK(gy_policy_load(&q, path, err, sizeof(err)) == 0);
  CHECK_NEAR(q.detect[GY_SERIES_LOSS].z, 9, 0);
  CHECK_EQ_INT(q.detect[GY_SERIES_LOSS].window, p.detect[GY_SERIES_LOSS].window);
  CHECK_EQ_INT(q.nrungs, 1);
  CHECK_EQ_INT(q.rung[0].knobs.set, GY_KNOB_Z_LOSS);
  CHECK(!q.rung[0].skip_samples && !q.rung[0].skip_window);
}

/* A bad file: GY_ECONFIG, a message with FILE:LINE and the key, and *p untouched. */
static void bad(const char *text, const char *line, const char *key) {
  const char *path = write_file("bad.yaml", text);
  gy_policy_t p, keep;
  gy_policy_default(&p);
  p.observe_steps = 42;
  keep = p;
  char err[512] = "";
  int rc = gy_policy_load(&p, path, err, sizeof(err));
  CHECK_MSG(rc == GY_ECONFIG, "rc %d for:\n%s", rc, text);
  char want[256];
  snprintf(want, sizeof(want), "%s:%s:", path, line);
  CHECK_MSG(strstr(err, want) != NULL, "'%s' lacks '%s'", err, want);
  CHECK_MSG(strstr(err, key) != NULL, "'%s' lacks '%s'", err, key);
  CHECK(gy_policy_equal(&p, &keep) && p.observe_steps == 42);
  /* The same text from memory (a `policy set`): the same message, under the name given. */
  char err2[512] = "", want2[600];
  rc = gy_policy_parse(&p, "ops.yaml", text, strlen(text), err2, sizeof(err2));
  CHECK_MSG(rc == GY_ECONFIG, "rc %d from memory for:\n%s", rc, text);
  snprintf(want2, sizeof(want2), "ops.yaml%s", err + strlen(path));
  CHECK_MSG(!strcmp(err2, want2), "'%s' is not '%s'", err2, want2);
  CHECK(gy_policy_equal(&p, &keep) && p.observe_steps == 42);
}

static void test_errors(void) {
  bad("observe_step: 3\n", "1", "'observe_step'");
  bad("# c\nobserve_steps: -1\n", "2", "'observe_steps'");
  bad("observe_steps: many\n", "1", "'observe_steps'");
  bad("recover_tolerance: 1.5\n", "1", "'recover_tolerance'");
  bad("max_rollbacks: 0\n", "1", "'max_rollbacks'");
  bad("on_drop: panic\n", "1", "'on_drop'");
  bad("detect:\n  loss:\n    window: 8\n    warmup: 9\n", "3", "'detect.loss'");
  bad("detect:\n  loss: {jump: false, drop: false}\n", "2", "'detect.loss'");
  bad("detect:\n  losss: {z: 3}\n", "2", "'detect.losss'");
  bad("detect:\n  ppl: {z: 0}\n", "2", "'detect.ppl.z'");
  bad("detect:\n  ppl: {on_fire: explode}\n", "2", "'detect.ppl.on_fire'");
  bad("detect:\n  throughput: {jump: maybe}\n", "2", "'detect.throughput.jump'");
  bad("ladder: []\n", "1", "'ladder'");
  bad("ladder:\n  - skip: {samples: false}\n", "2", "'ladder[0]'");
  bad("ladder:\n  - skip: {samples: true}\n  - knobs: {shallow_scale: 0.5}\n", "3",
      "'ladder[1].knobs.shallow_layers'");
  bad("ladder:\n  - skip: {window: {before: 2, afterr: 2}}\n", "2",
      "'ladder[0].skip.window.afterr'");
  bad("ladder:\n  - knobs: {eps_factor: 0}\n", "2", "'ladder[0].knobs.eps_factor'");
  bad("ladder:\n  - knobs: {z_loss: 2}\n", "2", "'ladder[0].knobs.z_loss'");
  bad("ladder:\n  - knobs: {lr: 2}\n", "2", "'ladder[0].knobs.lr'");
  bad("- 1\n- 2\n", "1", "mapping");
  bad("guard: 3\n", "1", "'guard'");
  bad("guard:\n  windoww: 64\n", "2", "'guard.windoww'");
  bad("guard:\n  window: 4\n", "2", "'guard.window'");
  bad("guard:\n  window: 16\n  warmup: 17\n", "3", "'guard.warmup'");
  bad("guard:\n  max_step_share: 0\n", "2", "'guard.max_step_share'");
  bad("guard:\n  budget: 1.5\n", "2", "'guard.budget'");
  bad("guard:\n  enabled: sometimes\n", "2", "'guard.enabled'");
  bad("guard:\n  quarantine: {max_tokens: 0}\n", "2", "'guard.quarantine.max_tokens'");
  bad("guard:\n  quarantine: {margin: -1}\n", "2", "'guard.quarantine.margin'");
  bad("guard:\n  quarantine: {size: 3}\n", "2", "'guard.quarantine.size'");
  bad("guard:\n  rules:\n    perplexity: {z: 3}\n", "3", "'guard.rules.perplexity'");
  bad("guard:\n  rules:\n    loss: {floor: 0}\n", "3", "'guard.rules.loss.floor'");
  bad("guard:\n  rules:\n    repeat: {z: -1}\n", "3", "'guard.rules.repeat.z'");
  bad("guard:\n  rules:\n    nontext: {high: 2}\n", "3", "'guard.rules.nontext.high'");
  /* A missing file names the file. */
  gy_policy_t p;
  char err[512] = "";
  CHECK(gy_policy_load(&p, "/nonexistent/policy.yaml", err, sizeof(err)) == GY_ENOENT);
  CHECK(strstr(err, "/nonexistent/policy.yaml") != NULL);
  CHECK(gy_policy_load(NULL, "x", err, sizeof(err)) == GY_EINVAL);
  /* check() on a policy built in memory. */
  gy_policy_default(&p);
  p.nrungs = 0;
  CHECK(gy_policy_check(&p, err, sizeof(err)) == GY_ECONFIG && strstr(err, "rungs"));
}

/* ---- decisions ---- */

static gy_policy_decision_t decide(const gy_policy_t *p, gy_trigger_t t, int64_t first,
                                   int64_t last, const uint64_t *ids, int n,
                                   const gy_policy_repair_t *h, int nh) {
  gy_policy_input_t in = {t, first, last, ids, n};
  gy_policy_decision_t d;
  int rc = gy_policy_decide(p, &in, h, nh, &d);
  CHECK_EQ_INT(rc, 0);
  return d;
}

static void test_ladder(void) {
  gy_policy_t p;
  gy_policy_default(&p);
  uint64_t ids[] = {907, 12, 907, 55, 12};
  gy_policy_repair_t h[8];
  int nh = 0;
  char text[256];

  /* A fresh jump: watch first. */
  gy_policy_decision_t d = decide(&p, GY_TRIG_SPIKE, 500, 500, ids, 5, h, nh);
  CHECK_EQ_INT(d.action, GY_ACTION_RECOVER_WATCH);
  CHECK_EQ_INT(d.observe_steps, 3);
  CHECK_EQ_INT(d.rung, 0);

  /* Rung 1: the attributed samples, sorted and distinct; nothing else. */
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 500, 501, ids, 5, h, nh);
  CHECK_EQ_INT(d.action, GY_ACTION_ROLLBACK);
  CHECK_EQ_INT(d.rung, 1);
  CHECK_EQ_INT(d.nsamples, 3);
  CHECK(d.samples[0] == 12 && d.samples[1] == 55 && d.samples[2] == 907);
  CHECK(!d.skip_steps);
  CHECK_EQ_INT(d.knobs.set, 0);
  h[nh++] = (gy_policy_repair_t){500, d.rung, GY_TRIG_SPIKE_PERSISTS};

  /* Rung 2: a repeat within region_steps: the window [first - 2, last + 2]. */
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 510, 512, ids, 5, h, nh);
  CHECK_EQ_INT(d.rung, 2);
  CHECK(d.skip_steps && d.step_first == 508 && d.step_last == 515);
  CHECK_EQ_INT(d.nsamples, 0);
  CHECK_EQ_INT(d.knobs.set, 0);
  gy_policy_decision_format(&d, text, sizeof(text));
  CHECK_MSG(strstr(text, "ROLLBACK rung 2") && strstr(text, "[508, 515)"), "%s", text);
  h[nh++] = (gy_policy_repair_t){510, d.rung, GY_TRIG_SPIKE_PERSISTS};

  /* Rung 3: + clip, eps, shallow. Distance is measured from the last repair (510). */
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 700, 700, ids, 5, h, nh);
  CHECK_EQ_INT(d.rung, 3);
  CHECK(d.skip_steps && d.step_first == 698 && d.step_last == 703);
  CHECK_EQ_INT(d.knobs.set, GY_KNOB_GRAD_CLIP | GY_KNOB_EPS | GY_KNOB_SHALLOW);
  CHECK_NEAR(d.knobs.grad_clip_factor, 0.5, 0);
  CHECK_NEAR(d.knobs.eps_factor, 0.1, 0);
  CHECK_NEAR(d.knobs.shallow_scale, 0.5, 0);
  CHECK_EQ_INT(d.knobs.shallow_layers, 1);
  h[nh++] = (gy_policy_repair_t){700, d.rung, GY_TRIG_SPIKE_PERSISTS};

  /* Rung 4: + lr, WSD decay, z-loss, and rung 3's knobs still in force. */
  d = decide(&p, GY_TRIG_NONFINITE, 705, 705, NULL, 0, h, nh);
  CHECK_EQ_INT(d.rung, 4);
  CHECK_EQ_INT(d.knobs.set, GY_KNOB_GRAD_CLIP | GY_KNOB_EPS | GY_KNOB_SHALLOW | GY_KNOB_LR_SCALE |
                                GY_KNOB_WSD_DECAY | GY_KNOB_Z_LOSS);
  CHECK_NEAR(d.knobs.grad_clip_factor, 0.5, 0);
  CHECK_NEAR(d.knobs.lr_scale_factor, 0.5, 0);
  CHECK_NEAR(d.knobs.z_loss, 1e-4, 0);
  gy_policy_decision_format(&d, text, sizeof(text));
  CHECK_MSG(strstr(text, "WSD decay") && strstr(text, "lr_scale x0.5"), "%s", text);
  h[nh++] = (gy_policy_repair_t){705, d.rung, GY_TRIG_NONFINITE};

  /* Exhausted: HALT. */
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 706, 706, ids, 5, h, nh);
  CHECK_EQ_INT(d.action, GY_ACTION_HALT);
  CHECK_MSG(strstr(d.reason, "exhausted") != NULL, "%s", d.reason);

  /* Far from the last repair: back to rung 1. */
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 706 + p.region_steps + 1, 1000, ids, 5, h, nh);
  CHECK_EQ_INT(d.action, GY_ACTION_ROLLBACK);
  CHECK_EQ_INT(d.rung, 1);
  /* Exactly region_steps away still counts as a repeat. */
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 705 + p.region_steps, 1000, ids, 5, h, nh);
  CHECK_EQ_INT(d.action, GY_ACTION_HALT);

  /* Lost workers do not climb the ladder and do not reset it. */
  h[nh++] = (gy_policy_repair_t){706, 0, GY_TRIG_WORKER_LOST};
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 707, 707, ids, 5, h, nh);
  CHECK_EQ_INT(d.action, GY_ACTION_HALT);
}

static void test_special_triggers(void) {
  gy_policy_t p;
  gy_policy_default(&p);
  uint64_t ids[] = {3, 1, 2};
  gy_policy_repair_t h[4] = {{100, 1, GY_TRIG_SPIKE_PERSISTS}};

  /* A drop skips the samples at once, even on a rung that skips a window only. */
  gy_policy_decision_t d = decide(&p, GY_TRIG_DROP, 110, 110, ids, 3, h, 1);
  CHECK_EQ_INT(d.action, GY_ACTION_ROLLBACK);
  CHECK_EQ_INT(d.rung, 2);
  CHECK_EQ_INT(d.nsamples, 3);
  CHECK(d.skip_steps);
  p.drop_skip_samples = 0;
  d = decide(&p, GY_TRIG_DROP, 110, 110, ids, 3, h, 1);
  CHECK_EQ_INT(d.nsamples, 0);
  p.drop_skip_samples = 1;

  /* A lost worker: rollback, no skip, no knobs, rung 0 — even deep in the ladder. */
  gy_policy_repair_t deep[4] = {{100, 1, GY_TRIG_SPIKE_PERSISTS},
                                {101, 2, GY_TRIG_SPIKE_PERSISTS},
                                {102, 3, GY_TRIG_SPIKE_PERSISTS}};
  d = decide(&p, GY_TRIG_WORKER_LOST, 103, 103, ids, 3, deep, 3);
  CHECK_EQ_INT(d.action, GY_ACTION_ROLLBACK);
  CHECK_EQ_INT(d.rung, 0);
  CHECK(d.nsamples == 0 && !d.skip_steps && d.knobs.set == 0);
  gy_policy_decision_t op = decide(&p, GY_TRIG_OPERATOR, 103, 103, ids, 3, deep, 3);
  CHECK(op.action == GY_ACTION_ROLLBACK && op.rung == 0 && op.nsamples == 0);

  /* max_restarts. */
  p.max_restarts = 1;
  gy_policy_repair_t lost[1] = {{50, 0, GY_TRIG_WORKER_LOST}};
  d = decide(&p, GY_TRIG_WORKER_LOST, 60, 60, NULL, 0, lost, 1);
  CHECK_EQ_INT(d.action, GY_ACTION_HALT);
  p.max_restarts = 0;
  d = decide(&p, GY_TRIG_WORKER_LOST, 60, 60, NULL, 0, NULL, 0);
  CHECK_EQ_INT(d.action, GY_ACTION_HALT);

  /* max_rollbacks counts repairs in different regions too. */
  gy_policy_default(&p);
  p.max_rollbacks = 2;
  gy_policy_repair_t far[2] = {{1000, 1, GY_TRIG_SPIKE_PERSISTS}, {5000, 1, GY_TRIG_DROP}};
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 9000, 9000, ids, 3, far, 1);
  CHECK_EQ_INT(d.action, GY_ACTION_ROLLBACK);
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 9000, 9000, ids, 3, far, 2);
  CHECK_EQ_INT(d.action, GY_ACTION_HALT);
  CHECK_MSG(strstr(d.reason, "max_rollbacks") != NULL, "%s", d.reason);

  /* observe_steps 0: a jump rolls back at once. */
  gy_policy_default(&p);
  p.observe_steps = 0;
  d = decide(&p, GY_TRIG_SPIKE, 10, 10, ids, 3, NULL, 0);
  CHECK(d.action == GY_ACTION_ROLLBACK && d.rung == 1 && d.nsamples == 3);

  /* The window never starts before step 0. */
  gy_policy_repair_t one[1] = {{1, 1, GY_TRIG_SPIKE_PERSISTS}};
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 1, 1, NULL, 0, one, 1);
  CHECK(d.skip_steps && d.step_first == 0 && d.step_last == 4);

  /* Sample cap. */
  uint64_t *many = malloc(600 * sizeof(uint64_t));
  REQUIRE(many);
  for (int i = 0; i < 600; i++)
    many[i] = (uint64_t)(600 - i);
  d = decide(&p, GY_TRIG_SPIKE_PERSISTS, 5000, 5000, many, 600, NULL, 0);
  CHECK_EQ_INT(d.nsamples, GY_POLICY_MAX_SAMPLES);
  CHECK_EQ_INT(d.samples_dropped, 600 - GY_POLICY_MAX_SAMPLES);
  CHECK(d.samples[0] == 1 && d.samples[GY_POLICY_MAX_SAMPLES - 1] == GY_POLICY_MAX_SAMPLES);
  free(many);

  /* Bad input. */
  gy_policy_input_t in = {GY_TRIG_SPIKE, 10, 9, NULL, 0};
  CHECK_EQ_INT(gy_policy_decide(&p, &in, NULL, 0, &d), GY_EINVAL);
  in.last_step = 10;
  in.trigger = GY_TRIG_COUNT;
  CHECK_EQ_INT(gy_policy_decide(&p, &in, NULL, 0, &d), GY_EINVAL);
  in.trigger = GY_TRIG_SPIKE;
  CHECK_EQ_INT(gy_policy_decide(&p, &in, NULL, 2, &d), GY_EINVAL);
  CHECK(!strcmp(gy_trigger_name(GY_TRIG_WORKER_LOST), "worker_lost"));
  CHECK(!strcmp(gy_action_name(GY_ACTION_HALT), "HALT"));
  CHECK(!strcmp(gy_series_kind_name(GY_SERIES_GRAD_NORM_SHALLOW), "grad_norm_shallow"));
}

int main(void) {
  snprintf(dir, sizeof(dir), "/tmp/gy_policy_XXXXXX");
  REQUIRE(mkdtemp(dir));
  RUN(test_default_file);
  RUN(test_roundtrip);
  RUN(test_errors);
  RUN(test_ladder);
  RUN(test_special_triggers);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  GY_TEST_END();
}
