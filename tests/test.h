/* test.h: the few macros gyro's C tests use. A failed check prints file:line and the
 * expression, and the test exits 1 at the end (GY_TEST_END). */
#ifndef GY_TEST_H
#define GY_TEST_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int gy_test_failures __attribute__((unused)) = 0;
static int gy_test_checks __attribute__((unused)) = 0;
static int gy_test_cases_run __attribute__((unused)) = 0;

/* One test case: main() runs its cases with RUN(test_x). tests/CMakeLists.txt makes every RUN
 * line of a unit test its own ctest entry ("unit/test_file/test_x"), which runs the binary with
 * GY_TEST_CASE=test_x: only that case runs, so a failure names it. Without GY_TEST_CASE every
 * case runs, in order. */
#define RUN(fn)                                                                                    \
  do {                                                                                             \
    const char *gy_only_ = getenv("GY_TEST_CASE");                                                 \
    if (!gy_only_ || !*gy_only_ || !strcmp(gy_only_, #fn)) {                                       \
      gy_test_cases_run++;                                                                         \
      fn();                                                                                        \
    }                                                                                              \
  } while (0)

#define CHECK(cond)                                                                                \
  do {                                                                                             \
    gy_test_checks++;                                                                              \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);                     \
      gy_test_failures++;                                                                          \
    }                                                                                              \
  } while (0)

#define CHECK_MSG(cond, ...)                                                                       \
  do {                                                                                             \
    gy_test_checks++;                                                                              \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);                     \
      fprintf(stderr, __VA_ARGS__);                                                                \
      fputc('\n', stderr);                                                                         \
      gy_test_failures++;                                                                          \
    }                                                                                              \
  } while (0)

/* Fatal: stop the test now (setup that later checks depend on). */
#define REQUIRE(cond)                                                                              \
  do {                                                                                             \
    gy_test_checks++;                                                                              \
    if (!(cond)) {                                                                                 \
      fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);                   \
      exit(1);                                                                                     \
    }                                                                                              \
  } while (0)

#define CHECK_EQ_INT(a, b) CHECK_MSG((a) == (b), "%lld != %lld", (long long)(a), (long long)(b))
#define CHECK_NEAR(a, b, tol)                                                                      \
  CHECK_MSG(fabs((double)(a) - (double)(b)) <= (tol), "%.9g vs %.9g (tol %.3g)", (double)(a),      \
            (double)(b), (double)(tol))

#define GY_TEST_END()                                                                              \
  do {                                                                                             \
    const char *gy_only_end_ = getenv("GY_TEST_CASE");                                             \
    if (gy_only_end_ && *gy_only_end_ && !gy_test_cases_run) {                                     \
      fprintf(stderr, "no test case named %s here\n", gy_only_end_);                               \
      gy_test_failures++;                                                                          \
    }                                                                                              \
    printf("%d checks, %d failed\n", gy_test_checks, gy_test_failures);                            \
    return gy_test_failures ? 1 : 0;                                                               \
  } while (0)

#endif
