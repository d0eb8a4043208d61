/* test_straggler: the compute-time straggler rule (controller/straggler.h): a slow rank among
 * equals is told once per streak, after `steps` steps; the ranks that wait for it (their
 * compute time is theirs) are not; the window's median decides (noise does not); unknown figures
 * are left out; two ranks; bad options. */
#include <math.h>
#include <string.h>

#include "common/err.h"
#include "controller/straggler.h"
#include "tests/test.h"

static void test_slow_rank(void) {
  gy_straggler_t *s;
  REQUIRE(gy_straggler_create(&s, 4, &(gy_straggler_opts_t){.factor = 1.5, .steps = 3}) == 0);
  double v[4] = {100, 102, 98, 180}; /* rank 3: 1.8x the others' median */
  char msg[256];
  CHECK_EQ_INT(gy_straggler_step(s, v, 4, msg, sizeof(msg)), -1);
  CHECK_EQ_INT(gy_straggler_step(s, v, 4, msg, sizeof(msg)), -1);
  CHECK_EQ_INT(gy_straggler_step(s, v, 4, msg, sizeof(msg)), 3); /* its window of 3 is full */
  CHECK(strstr(msg, "rank 3") && strstr(msg, "180.0 ms") && strstr(msg, "last 3"));
  CHECK_EQ_INT(gy_straggler_step(s, v, 4, msg, sizeof(msg)), -1); /* once per streak */
  CHECK_NEAR(gy_straggler_median(s), 101, 1e-9);
  v[3] = 400; /* one outlier in the window does not move the median past itself */
  CHECK_EQ_INT(gy_straggler_step(s, v, 4, msg, sizeof(msg)), -1);
  v[3] = 140; /* back under 1.5x for a window: the streak ends */
  for (int i = 0; i < 3; i++)
    CHECK_EQ_INT(gy_straggler_step(s, v, 4, msg, sizeof(msg)), -1);
  v[3] = 200;
  CHECK_EQ_INT(gy_straggler_step(s, v, 4, msg, sizeof(msg)), -1);
  CHECK_EQ_INT(gy_straggler_step(s, v, 4, msg, sizeof(msg)), 3); /* a new streak is told */
  gy_straggler_destroy(s);
}

/* A noisy slow rank (fast steps now and then) is told on its window's median; a noisy fast one
 * (a slow step now and then) is not. */
static void test_noise(void) {
  gy_straggler_t *s;
  REQUIRE(gy_straggler_create(&s, 2, &(gy_straggler_opts_t){.steps = 5}) == 0);
  int fired = -1;
  for (int i = 0; i < 20 && fired < 0; i++) {
    double v[2] = {i % 4 == 0 ? 40 : 10, i % 3 == 0 ? 10 : 30};
    fired = gy_straggler_step(s, v, 2, NULL, 0);
  }
  CHECK_EQ_INT(fired, 1);
  gy_straggler_destroy(s);
}

/* Equal ranks (as in a synchronous gang, where only the compute time differs) never fire; an
 * unknown figure is left out; two ranks compare with each other. */
static void test_equals_unknown_two(void) {
  gy_straggler_t *s;
  REQUIRE(gy_straggler_create(&s, 3, NULL) == 0); /* defaults: 1.5x, 20 steps */
  double eq[3] = {50, 50, 50}, unk[3] = {NAN, 0, 500};
  for (int i = 0; i < 100; i++)
    CHECK_EQ_INT(gy_straggler_step(s, eq, 3, NULL, 0), -1);
  gy_straggler_destroy(s);
  REQUIRE(gy_straggler_create(&s, 3, NULL) == 0);
  for (int i = 0; i < 100; i++) { /* rank 2 has no known peer to compare with */
    int r = gy_straggler_step(s, unk, 3, NULL, 0);
    CHECK_EQ_INT(r, -1);
  }
  gy_straggler_destroy(s);
  REQUIRE(gy_straggler_create(&s, 2, &(gy_straggler_opts_t){.steps = 1}) == 0);
  double two[2] = {10, 16};
  CHECK_EQ_INT(gy_straggler_step(s, two, 2, NULL, 0), 1);
  gy_straggler_destroy(s);
}

static void test_bad_options(void) {
  gy_straggler_t *s;
  CHECK_EQ_INT(gy_straggler_create(&s, 0, NULL), GY_EINVAL);
  CHECK_EQ_INT(gy_straggler_create(&s, 2, &(gy_straggler_opts_t){.factor = 0.9}), GY_EINVAL);
  CHECK_EQ_INT(gy_straggler_create(&s, 2, &(gy_straggler_opts_t){.steps = -1}), GY_EINVAL);
  CHECK(s == NULL);
}

int main(void) {
  RUN(test_slow_rank);
  RUN(test_noise);
  RUN(test_equals_unknown_two);
  RUN(test_bad_options);
  GY_TEST_END();
}
