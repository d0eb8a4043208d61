/* test_skipset: the controller's skip set (controller/skipset.h): merging ranges, counting the
 * ids of a range it does not hold yet (a rollback's skips sent again to a re-formed gang count
 * once in gyro_skipped_samples_total), and the ids a run of unskipped numbers stands for, which
 * must be the ones the workers' skip list (worker/data.h) maps them to — all against brute force
 * on thousands of random sets. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "controller/skipset.h"
#include "tests/test.h"
#include "worker/data.h"

#define SPAN 200 /* ids of the random sets: [0, SPAN) */

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint64_t rnd(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static int well_formed(const gy_skipset_t *k) {
  for (size_t i = 0; i < k->n; i++) {
    if (k->r[i].first >= k->r[i].last) return 0;
    if (i && k->r[i - 1].last >= k->r[i].first) return 0; /* overlapping or adjacent */
  }
  return 1;
}

static int holds(const gy_skipset_t *k, uint64_t id) {
  for (size_t i = 0; i < k->n; i++)
    if (id >= k->r[i].first && id < k->r[i].last) return 1;
  return 0;
}

static void merging(void) {
  gy_skipset_t k = {0};
  CHECK_EQ_INT(gy_skipset_add(&k, 10, 20), 0);
  CHECK_EQ_INT(gy_skipset_add(&k, 30, 40), 0);
  CHECK_EQ_INT(gy_skipset_add(&k, 5, 5), 0); /* empty: nothing */
  CHECK_EQ_INT((int)k.n, 2);
  CHECK_EQ_INT(gy_skipset_add(&k, 20, 30), 0); /* adjacent on both sides: one range */
  CHECK_EQ_INT((int)k.n, 1);
  CHECK(k.r[0].first == 10 && k.r[0].last == 40);
  CHECK_EQ_INT((int)gy_skipset_uncovered(&k, 0, 50), 20);
  CHECK_EQ_INT((int)gy_skipset_uncovered(&k, 10, 40), 0); /* sent again: nothing new */
  CHECK_EQ_INT((int)gy_skipset_uncovered(&k, 35, 45), 5);
  CHECK_EQ_INT((int)gy_skipset_uncovered(&k, 7, 7), 0);
  gy_skipset_free(&k);
  CHECK(k.r == NULL && k.n == 0);
}

static void random_sets(void) {
  for (int trial = 0; trial < 3000; trial++) {
    gy_skipset_t k = {0};
    gy_skiplist_t w;
    gy_skiplist_init(&w);
    unsigned char in[SPAN] = {0};
    int nr = (int)(rnd() % 8);
    for (int i = 0; i < nr; i++) {
      uint64_t a = rnd() % SPAN, len = rnd() % 12, b = a + len > SPAN ? SPAN : a + len;
      REQUIRE(gy_skipset_add(&k, a, b) == 0);
      if (a < b) REQUIRE(gy_skiplist_add(&w, a, b) == 0); /* (the worker's refuses empty ones) */
      for (uint64_t x = a; x < b; x++)
        in[x] = 1;
    }
    CHECK_MSG(well_formed(&k), "trial %d: ranges not merged", trial);
    for (uint64_t x = 0; x < SPAN; x++)
      if (holds(&k, x) != in[x]) {
        CHECK_MSG(0, "trial %d: id %llu", trial, (unsigned long long)x);
        break;
      }
    /* uncovered against counting */
    uint64_t a = rnd() % SPAN, b = a + rnd() % 40;
    if (b > SPAN) b = SPAN;
    uint64_t want = 0;
    for (uint64_t x = a; x < b; x++)
      want += !in[x];
    CHECK_MSG(gy_skipset_uncovered(&k, a, b) == want, "trial %d: uncovered [%llu, %llu)", trial,
              (unsigned long long)a, (unsigned long long)b);
    /* add_mapped: the ids of the unskipped numbers [n0, n0 + count), as the workers map them */
    uint64_t n0 = rnd() % 100, count = rnd() % 30;
    gy_skipset_t out = {0};
    REQUIRE(gy_skipset_add_mapped(&out, &k, n0, count) == 0);
    unsigned char mapped[4 * SPAN] = {0};
    for (uint64_t n = n0; n < n0 + count; n++) {
      uint64_t id = gy_skiplist_map(&w, n);
      REQUIRE(id < 4 * SPAN);
      mapped[id] = 1;
    }
    for (uint64_t x = 0; x < 4 * SPAN; x++)
      if (holds(&out, x) != mapped[x]) {
        CHECK_MSG(0, "trial %d: mapped id %llu (n0 %llu, count %llu)", trial, (unsigned long long)x,
                  (unsigned long long)n0, (unsigned long long)count);
        break;
      }
    gy_skipset_free(&out);
    gy_skipset_free(&k);
    gy_skiplist_free(&w);
  }
}

int main(void) {
  merging();
  random_sets();
  GY_TEST_END();
}
