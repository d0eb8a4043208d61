/*
 * jrec: the journal records the core hands to its io (controller/io.h): their allocation and
 * the write each one stands for (controller/journal.h). The write runs where the io runs it:
 * on the service's writer thread, never on the loop's.
 *
 * API, in order: new, free, write.
 */
#include "controller/io.h"

#include <stdio.h>
#include <stdlib.h>

#include "common/err.h"

gy_jrec_t *gy_jrec_new(gy_jrec_kind_t kind) {
  gy_jrec_t *r = calloc(1, sizeof(*r));
  if (r) r->kind = kind;
  return r;
}

void gy_jrec_free(gy_jrec_t *r) {
  if (!r) return;
  free(r->text);
  free(r->in.skip);
  free(r->skips);
  free(r);
}

int gy_jrec_write(gy_journal_t *j, const gy_jrec_t *r, char *err, size_t errlen) {
  switch (r->kind) {
  case GY_JREC_EVENT:
    return gy_journal_event(j, r->id, r->time, r->step, r->ekind, r->text);
  case GY_JREC_CKPT:
    return gy_journal_checkpoint(j, r->step, r->flag, err, errlen);
  case GY_JREC_CKPT_EVAL:
    return gy_journal_checkpoint_eval(j, r->step, r->text, err, errlen);
  case GY_JREC_INTENT:
    return gy_journal_intent(j, &r->in, r->text, err, errlen);
  case GY_JREC_BASELINES:
    return gy_journal_baselines(j, r->step, r->text, err, errlen);
  case GY_JREC_APPLIED: {
    int rc = gy_journal_applied(j, r->seq, r->step, r->skips, r->nskips, err, errlen);
    return rc ? rc : gy_journal_state(j, r->gen, r->id, r->nrb, err, errlen);
  }
  case GY_JREC_DROPPED:
    return gy_journal_dropped(j, r->seq, err, errlen);
  case GY_JREC_STATE:
    return gy_journal_state(j, r->gen, r->seq, r->nrb, err, errlen);
  case GY_JREC_HOLD:
    return gy_journal_hold(j, r->flag, r->text, err, errlen);
  case GY_JREC_DONE:
    return gy_journal_done(j, r->step, err, errlen);
  case GY_JREC_QUAR:
    return gy_journal_quarantine(j, r->id, r->text, err, errlen);
  }
  snprintf(err, errlen, "unknown journal record %d", (int)r->kind);
  return GY_EINVAL;
}
