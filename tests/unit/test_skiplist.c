/* test_skiplist: skip lists of sample ids: adding and merging ranges, and map() (the n-th
 * unskipped id) against a brute-force reference on thousands of random skip lists. */
#include <stdint.h>
#include <string.h>

#include "common/err.h"
#include "tests/test.h"
#include "worker/data.h"

static int same(const gy_skiplist_t *s, const uint64_t *pairs, size_t n) {
  if (s->n != n) return 0;
  for (size_t i = 0; i < n; i++)
    if (s->r[i].first != pairs[2 * i] || s->r[i].last != pairs[2 * i + 1]) return 0;
  return 1;
}

/* Sorted, disjoint, not adjacent, non-empty. */
static int well_formed(const gy_skiplist_t *s) {
  for (size_t i = 0; i < s->n; i++) {
    if (s->r[i].first >= s->r[i].last) return 0;
    if (i && s->r[i - 1].last >= s->r[i].first) return 0;
  }
  return 1;
}

static uint64_t rng_state = 0x243f6a8885a308d3ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void test_add_cases(void) {
  gy_skiplist_t s;
  gy_skiplist_init(&s);
  CHECK_EQ_INT(gy_skiplist_count(&s), 0);
  CHECK_EQ_INT(gy_skiplist_map(&s, 7), 7);
  CHECK_EQ_INT(gy_skiplist_add(&s, 5, 5), GY_EINVAL);
  CHECK_EQ_INT(gy_skiplist_add(&s, 6, 5), GY_EINVAL);
  CHECK_EQ_INT(s.n, 0);

  /* Disjoint, added out of order. */
  CHECK_EQ_INT(gy_skiplist_add(&s, 20, 30), GY_OK);
  CHECK_EQ_INT(gy_skiplist_add(&s, 0, 5), GY_OK);
  CHECK_EQ_INT(gy_skiplist_add(&s, 50, 60), GY_OK);
  CHECK_EQ_INT(gy_skiplist_add(&s, 10, 12), GY_OK);
  CHECK(same(&s, (uint64_t[]){0, 5, 10, 12, 20, 30, 50, 60}, 4));
  CHECK_EQ_INT(gy_skiplist_count(&s), 5 + 2 + 10 + 10);
  /* Adjacent on the right and on the left merge. */
  CHECK_EQ_INT(gy_skiplist_add(&s, 5, 7), GY_OK);
  CHECK(same(&s, (uint64_t[]){0, 7, 10, 12, 20, 30, 50, 60}, 4));
  CHECK_EQ_INT(gy_skiplist_add(&s, 8, 10), GY_OK);
  CHECK(same(&s, (uint64_t[]){0, 7, 8, 12, 20, 30, 50, 60}, 4));
  /* Filling the one-id gap joins two ranges. */
  CHECK_EQ_INT(gy_skiplist_add(&s, 7, 8), GY_OK);
  CHECK(same(&s, (uint64_t[]){0, 12, 20, 30, 50, 60}, 3));
  /* Overlap on one side; a range inside another changes nothing. */
  CHECK_EQ_INT(gy_skiplist_add(&s, 25, 35), GY_OK);
  CHECK(same(&s, (uint64_t[]){0, 12, 20, 35, 50, 60}, 3));
  CHECK_EQ_INT(gy_skiplist_add(&s, 21, 22), GY_OK);
  CHECK(same(&s, (uint64_t[]){0, 12, 20, 35, 50, 60}, 3));
  CHECK_EQ_INT(gy_skiplist_add(&s, 18, 20), GY_OK);
  CHECK(same(&s, (uint64_t[]){0, 12, 18, 35, 50, 60}, 3));
  /* One range swallowing several. */
  CHECK_EQ_INT(gy_skiplist_add(&s, 11, 55), GY_OK);
  CHECK(same(&s, (uint64_t[]){0, 60}, 1));
  CHECK_EQ_INT(gy_skiplist_add(&s, 100, 200), GY_OK);
  CHECK_EQ_INT(gy_skiplist_add(&s, 70, 80), GY_OK);
  CHECK(same(&s, (uint64_t[]){0, 60, 70, 80, 100, 200}, 3));

  CHECK(gy_skiplist_contains(&s, 0));
  CHECK(gy_skiplist_contains(&s, 59));
  CHECK(!gy_skiplist_contains(&s, 60));
  CHECK(!gy_skiplist_contains(&s, 69));
  CHECK(gy_skiplist_contains(&s, 70));
  CHECK(gy_skiplist_contains(&s, 199));
  CHECK(!gy_skiplist_contains(&s, 200));
  CHECK(!gy_skiplist_contains(&s, UINT64_MAX));

  /* map: ids 0..59 skipped, so the 0th unskipped id is 60; 60..69 are the first ten. */
  CHECK_EQ_INT(gy_skiplist_map(&s, 0), 60);
  CHECK_EQ_INT(gy_skiplist_map(&s, 9), 69);
  CHECK_EQ_INT(gy_skiplist_map(&s, 10), 80);
  CHECK_EQ_INT(gy_skiplist_map(&s, 29), 99);
  CHECK_EQ_INT(gy_skiplist_map(&s, 30), 200);
  CHECK_EQ_INT(gy_skiplist_count(&s), 60 + 10 + 100);

  /* Ranges at the top of the id space. */
  CHECK_EQ_INT(gy_skiplist_add(&s, UINT64_MAX - 10, UINT64_MAX), GY_OK);
  CHECK(gy_skiplist_contains(&s, UINT64_MAX - 1));
  CHECK(well_formed(&s));
  gy_skiplist_free(&s);
  CHECK(s.n == 0 && s.r == NULL);
  gy_skiplist_free(&s); /* twice is fine */
  CHECK_EQ_INT(gy_skiplist_map(NULL, 42), 42);
}

#define SPACE 256

static void test_random(void) {
  int cases = 4000;
  for (int c = 0; c < cases; c++) {
    gy_skiplist_t s;
    gy_skiplist_init(&s);
    unsigned char skipped[SPACE * 2];
    memset(skipped, 0, sizeof(skipped));
    int nadd = 1 + (int)(rnd() % 12);
    int maxlen = 1 + (int)(rnd() % 40);
    for (int k = 0; k < nadd; k++) {
      uint64_t a = rnd() % SPACE, len = 1 + rnd() % (uint64_t)maxlen;
      REQUIRE(gy_skiplist_add(&s, a, a + len) == GY_OK);
      for (uint64_t x = a; x < a + len; x++)
        skipped[x] = 1;
    }
    CHECK(well_formed(&s));
    uint64_t count = 0;
    for (int x = 0; x < SPACE * 2; x++)
      count += skipped[x];
    CHECK_EQ_INT(gy_skiplist_count(&s), count);
    int bad_contains = 0, bad_map = 0;
    for (int x = 0; x < SPACE * 2; x++)
      if (gy_skiplist_contains(&s, (uint64_t)x) != skipped[x]) bad_contains++;
    /* Brute force: walk the ids and number the unskipped ones. */
    uint64_t n = 0;
    for (int x = 0; x < SPACE * 2; x++) {
      if (skipped[x]) continue;
      if (gy_skiplist_map(&s, n) != (uint64_t)x) bad_map++;
      n++;
    }
    CHECK_MSG(bad_contains == 0, "case %d: %d contains() errors", c, bad_contains);
    CHECK_MSG(bad_map == 0, "case %d: %d map() errors", c, bad_map);
    gy_skiplist_free(&s);
  }
}

int main(void) {
  RUN(test_add_cases);
  RUN(test_random);
  GY_TEST_END();
}
