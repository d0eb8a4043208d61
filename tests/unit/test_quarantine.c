/* test_quarantine: the controller's quarantine list (controller/quarantine.h), alone: a region
 * overlapping (or touching) an entry of its channel and file is that entry (it grows; a
 * released one is active again; one inside counts a hit), other files, channels and distant
 * regions are new entries; ids and revisions; releases; the bound; bad input refused with
 * nothing changed; the journal's record read back (and restored into a fresh list, in any
 * order); revision order rebuilds the set a worker holds. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "controller/quarantine.h"
#include "tests/test.h"

static gy_quar_add_t region(const char *ch, const char *file, uint64_t off, uint64_t len) {
  return (gy_quar_add_t){.channel = ch,
                         .file = file,
                         .offset = off,
                         .length = len,
                         .document = -1,
                         .reason = "loss_high",
                         .step = 7,
                         .sample = 99,
                         .loss = 9.5f};
}

static int add(gy_quar_t *q, gy_quar_add_t a, uint64_t *id) {
  char why[256];
  return gy_quar_add(q, &a, id, why, sizeof(why));
}

static void test_dedupe(void) {
  gy_quar_t *q;
  REQUIRE(gy_quar_create(&q, 0) == 0);
  CHECK_EQ_INT(gy_quar_max(q), GY_QUAR_MAX_DEFAULT);
  uint64_t a, b, c, d;
  CHECK_EQ_INT(add(q, region("en", "/d/en/train_000.bin", 1000, 100), &a), GY_QUAR_NEW);
  CHECK_EQ_INT(a, 1);
  const gy_quar_entry_t *e = gy_quar_get(q, a);
  REQUIRE(e);
  CHECK(e->first_step == 7 && e->sample == 99 && e->hits == 1 && !e->released && e->rev == 1);
  CHECK(!strcmp(e->reason, "loss_high") && e->document == -1);
  /* inside: a hit, nothing else */
  CHECK_EQ_INT(add(q, region("en", "/d/en/train_000.bin", 1010, 20), &b), GY_QUAR_HELD);
  CHECK(b == a && e->hits == 2 && e->rev == 1 && e->offset == 1000 && e->length == 100);
  /* overlapping: the entry grows to cover both */
  gy_quar_add_t g = region("en", "/d/en/train_000.bin", 1050, 100);
  g.step = 9;
  CHECK_EQ_INT(add(q, g, &b), GY_QUAR_GREW);
  CHECK(b == a && e->offset == 1000 && e->length == 150 && e->rev == 2 && e->changed_step == 9);
  CHECK(e->first_step == 7); /* the first sample's */
  /* touching: the same entry too */
  CHECK_EQ_INT(add(q, region("en", "/d/en/train_000.bin", 900, 100), &b), GY_QUAR_GREW);
  CHECK(b == a && e->offset == 900 && e->length == 250);
  /* another file, channel, or a distant region: new entries; the file name is interned once */
  CHECK_EQ_INT(add(q, region("en", "/d/en/train_001.bin", 1000, 100), &b), GY_QUAR_NEW);
  CHECK_EQ_INT(add(q, region("zh", "/d/en/train_000.bin", 1000, 100), &c), GY_QUAR_NEW);
  CHECK_EQ_INT(add(q, region("en", "/d/en/train_000.bin", 5000, 10), &d), GY_QUAR_NEW);
  CHECK(b == 2 && c == 3 && d == 4);
  CHECK(gy_quar_get(q, c)->file == gy_quar_get(q, a)->file);
  CHECK(gy_quar_intern(q, "/d/en/train_000.bin") == gy_quar_get(q, a)->file);
  CHECK_EQ_INT(gy_quar_count(q), 4);
  CHECK_EQ_INT(gy_quar_active(q), 4);
  /* release, and the guard finding it bad again: active again */
  CHECK_EQ_INT(gy_quar_release(q, a, 12), 1);
  CHECK_EQ_INT(gy_quar_release(q, a, 13), 0);
  CHECK_EQ_INT(gy_quar_release(q, 77, 13), GY_ENOENT);
  e = gy_quar_get(q, a);
  CHECK(e->released && e->changed_step == 12 && gy_quar_active(q) == 3);
  CHECK_EQ_INT(add(q, region("en", "/d/en/train_000.bin", 950, 10), &b), GY_QUAR_GREW);
  CHECK(b == a && !e->released && gy_quar_active(q) == 4);
  /* an operator's region: no first step, no hit */
  gy_quar_add_t op = region("code", "code/train_000.bin", 0, 64);
  op.operator_ = 1;
  op.reason = "operator";
  CHECK_EQ_INT(add(q, op, &b), GY_QUAR_NEW);
  CHECK(gy_quar_get(q, b)->first_step == -1 && gy_quar_get(q, b)->hits == 0);
  /* in id order, and in revision order */
  for (size_t i = 1; i < gy_quar_count(q); i++)
    CHECK(gy_quar_at(q, i - 1)->id < gy_quar_at(q, i)->id);
  const gy_quar_entry_t *by[8];
  gy_quar_by_rev(q, by);
  for (size_t i = 1; i < gy_quar_count(q); i++)
    CHECK(by[i - 1]->rev < by[i]->rev);
  CHECK(by[gy_quar_count(q) - 1]->id == b && by[gy_quar_count(q) - 2]->id == a);
  gy_quar_destroy(q);
}

static void test_refusals(void) {
  gy_quar_t *q;
  REQUIRE(gy_quar_create(&q, 2) == 0);
  char why[256] = "";
  gy_quar_add_t a = region("en", "f.bin", 0, 0);
  CHECK_EQ_INT(gy_quar_add(q, &a, NULL, why, sizeof(why)), GY_EINVAL);
  CHECK(strstr(why, "length") != NULL);
  a = region("", "f.bin", 0, 10);
  CHECK_EQ_INT(gy_quar_add(q, &a, NULL, why, sizeof(why)), GY_EINVAL);
  CHECK(strstr(why, "channel") != NULL);
  a = region("en", "bad\x01name", 0, 10);
  CHECK_EQ_INT(gy_quar_add(q, &a, NULL, why, sizeof(why)), GY_EINVAL);
  CHECK(strstr(why, "file") != NULL);
  a = region("en", "f\xff.bin", 0, 10); /* not UTF-8 */
  CHECK_EQ_INT(gy_quar_add(q, &a, NULL, why, sizeof(why)), GY_EINVAL);
  a = region("en", "f.bin", 0, (1ull << 40) + 1);
  CHECK_EQ_INT(gy_quar_add(q, &a, NULL, why, sizeof(why)), GY_EINVAL);
  CHECK_EQ_INT(gy_quar_count(q), 0);
  /* a reason that is not text is kept as "?" */
  a = region("en", "f.bin", 0, 10);
  a.reason = "x\ny";
  uint64_t id;
  CHECK_EQ_INT(gy_quar_add(q, &a, &id, why, sizeof(why)), GY_QUAR_NEW);
  CHECK(!strcmp(gy_quar_get(q, id)->reason, "?"));
  a = region("en", "f.bin", 100, 10);
  CHECK_EQ_INT(gy_quar_add(q, &a, &id, why, sizeof(why)), GY_QUAR_NEW);
  /* full: a new region is refused (the oldest are kept); one of an entry still counts */
  a = region("en", "f.bin", 500, 10);
  CHECK_EQ_INT(gy_quar_add(q, &a, &id, why, sizeof(why)), GY_ENOSPC);
  CHECK(strstr(why, "full") != NULL);
  a = region("en", "f.bin", 105, 10);
  CHECK_EQ_INT(gy_quar_add(q, &a, &id, why, sizeof(why)), GY_QUAR_GREW);
  CHECK_EQ_INT(gy_quar_count(q), 2);
  CHECK(!gy_quar_str_ok(NULL, 8) && !gy_quar_str_ok("12345678", 8) && gy_quar_str_ok("1234567", 8));
  CHECK(gy_quar_str_ok("\xe4\xb8\xad", 8)); /* UTF-8 text */
  gy_quar_destroy(q);
}

static void test_records(void) {
  gy_quar_t *q, *r;
  REQUIRE(gy_quar_create(&q, 0) == 0);
  REQUIRE(gy_quar_create(&r, 0) == 0);
  uint64_t a, b, c;
  gy_quar_add_t x = region("en", "/d/en/train_000.bin", 1000, 100);
  x.document = 17;
  x.median = 3.25f;
  x.threshold = 1.5f;
  CHECK_EQ_INT(add(q, x, &a), GY_QUAR_NEW);
  CHECK_EQ_INT(add(q, region("zh", "/d/zh/train_000.bin", 0, 50), &b), GY_QUAR_NEW);
  CHECK_EQ_INT(add(q, region("en", "/d/en/train_000.bin", 9000, 5), &c), GY_QUAR_NEW);
  CHECK_EQ_INT(gy_quar_release(q, b, 30), 1);
  /* every record, restored into a fresh list in reverse order, gives the same list */
  for (uint64_t id = c; id >= a; id--) {
    char *t = gy_quar_to_json(gy_quar_get(q, id));
    REQUIRE(t);
    gy_quar_entry_t e;
    CHECK_EQ_INT(gy_quar_from_json(r, t, &e), 0);
    CHECK_EQ_INT(gy_quar_restore(r, &e), 0);
    free(t);
  }
  CHECK_EQ_INT(gy_quar_count(r), 3);
  CHECK_EQ_INT(gy_quar_active(r), 2);
  for (uint64_t id = a; id <= c; id++) {
    const gy_quar_entry_t *e = gy_quar_get(q, id), *f = gy_quar_get(r, id);
    REQUIRE(e && f);
    CHECK(e->offset == f->offset && e->length == f->length && e->document == f->document &&
          e->first_step == f->first_step && e->released == f->released && e->rev == f->rev &&
          e->hits == f->hits && e->median == f->median && !strcmp(e->channel, f->channel) &&
          !strcmp(e->file, f->file) && !strcmp(e->reason, f->reason));
  }
  /* a newer record of the same entry replaces it; new ids follow the restored ones */
  gy_quar_entry_t e = *gy_quar_get(r, a);
  e.length = 500;
  e.rev = 10;
  CHECK_EQ_INT(gy_quar_restore(r, &e), 0);
  CHECK(gy_quar_get(r, a)->length == 500 && gy_quar_count(r) == 3);
  uint64_t d;
  CHECK_EQ_INT(add(r, region("en", "/d/en/train_000.bin", 1200, 10), &d), GY_QUAR_HELD);
  CHECK(d == a); /* found through the restored entry's file */
  CHECK_EQ_INT(add(r, region("code", "x.bin", 0, 10), &d), GY_QUAR_NEW);
  CHECK(d == c + 1 && gy_quar_get(r, d)->rev == 11);
  /* records that are not one */
  CHECK_EQ_INT(gy_quar_from_json(r, "{}", &e), GY_EINVAL);
  CHECK_EQ_INT(gy_quar_from_json(r, "not json", &e), GY_EINVAL);
  CHECK_EQ_INT(gy_quar_from_json(r, NULL, &e), GY_EINVAL);
  e.length = 0;
  CHECK_EQ_INT(gy_quar_restore(r, &e), GY_EINVAL);
  gy_quar_destroy(q);
  gy_quar_destroy(r);
}

int main(void) {
  RUN(test_dedupe);
  RUN(test_refusals);
  RUN(test_records);
  GY_TEST_END();
}
