/*
 * core_guard: the core's side of the workers' per-sample guard (DESIGN.md §12, "Two tiers of
 * repair for data") and the quarantine list ("Provenance and quarantine").
 *
 * API, in order: channels, channels_free, keep_guard, guard_step, quarantine (gy_core_quarantine
 * of core.h), guard_policy, quar_recover, quar_publish, assign.
 *
 * Tier 1 runs on the workers: their guard masks a sample that is an outlier for its channel
 * before the update, and quarantines its region (its document, or its tokens and a margin) on
 * every rank. Rank 0's StepReport lists the gang's masked samples with their provenance.
 * keep_guard keeps them until the step is aggregated; then guard_step (called by
 * gy__core_step, so on the fenced STEP action) tells them: the telemetry's counters, one
 * `samples_masked` event, and a quarantine entry for each region (deduplicated by
 * controller/quarantine.c: a region overlapping an entry of its file is that entry), each new or
 * changed entry journaled and told by a `quarantined` event. The entries are journaled best
 * effort and not ahead of anything: the workers have quarantined the regions already; the
 * journal is for a restarted or standby controller, whose assignments carry the list to workers
 * that restart from a checkpoint older than an entry. Tier 2: the step's masked share goes to
 * the run (gy_run_step_t.samples, nmasked, masked), which climbs the ladder when the share is
 * over the policy's guard.max_step_share.
 *
 * The operator's changes (gy_core_quarantine) and a policy whose guard changed
 * (guard_policy) reach the workers at one step through a directive (QUARANTINE, SET_GUARD); a
 * gang that cannot take one now gets both with its next assignment.
 *
 * Invariants:
 * - Only the steps aggregated are told (a report of a step never aggregated is dropped with its
 *   slot), each once: its slot is emptied when told.
 * - Every string kept from a report is clean (quarantine.h's gy_quar_str_ok) or replaced, so
 *   events, JSON and protobuf strings stay UTF-8.
 * - gy_core_quarantine validates everything before it changes anything.
 */
#include "controller/core_internal.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"
#include "common/log.h"

#define LIST_SHOWN 500 /* entries the dashboard's list shows (the newest changes) */

/* ------------------------------------------ channels ------------------------------------------ */

int gy__core_channels(gy_core_t *c, const gy_core_channel_t *ch, int n) {
  if (n <= 0 || !ch) return 0;
  if (n > GY_FLEET_MAX_CH) n = GY_FLEET_MAX_CH;
  if (!(c->chans = calloc((size_t)n, sizeof(*c->chans)))) return GY_ENOMEM;
  c->nchans = n;
  for (int i = 0; i < n; i++) {
    if (!ch[i].name || !ch[i].name[0]) return GY_EINVAL;
    snprintf(c->chans[i].name, sizeof(c->chans[i].name), "%s", ch[i].name);
    if (ch[i].nfiles <= 0 || !ch[i].files) continue;
    if (!(c->chans[i].files = calloc((size_t)ch[i].nfiles, sizeof(char *)))) return GY_ENOMEM;
    c->chans[i].nfiles = ch[i].nfiles;
    for (int k = 0; k < ch[i].nfiles; k++)
      if (!(c->chans[i].files[k] = strdup(ch[i].files[k] ? ch[i].files[k] : ""))) return GY_ENOMEM;
  }
  return 0;
}

void gy__core_channels_free(gy_core_t *c) {
  for (int i = 0; i < c->nchans; i++) {
    for (int k = 0; k < c->chans[i].nfiles; k++)
      free(c->chans[i].files[k]);
    free(c->chans[i].files);
  }
  free(c->chans);
  c->chans = NULL;
  c->nchans = 0;
}

/* 1 when a and b name the same shard: equal, or one is the other's tail at a '/' (an operator
 * may name "en/train_000.bin" for ".../data/en/train_000.bin"). */
static int same_file(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la == lb) return !strcmp(a, b);
  const char *lng = la > lb ? a : b, *sht = la > lb ? b : a;
  size_t ll = la > lb ? la : lb, ls = la > lb ? lb : la;
  return !strcmp(lng + ll - ls, sht) && (sht[0] == '/' || lng[ll - ls - 1] == '/');
}

/* ---------------------------------------- the reports ---------------------------------------- */

static void copy_name(char *dst, size_t n, const char *src, const char *dflt) {
  snprintf(dst, n, "%s", src && gy_quar_str_ok(src, n) ? src : dflt);
}

/* Rank 0's guard figures of an accepted report, kept until its step is aggregated. */
void gy__core_keep_guard(gy_core_t *c, const gy_fleet_report_t *in, const gy_core_guard_t *g) {
  if (in->step < 0) return;
  if (!c->masks) {
    if (!(c->masks = malloc(TOP_RING * sizeof(*c->masks)))) {
      gy_log(GY_LOG_ERROR, "controller", "out of memory: the guard's figures are not kept");
      return;
    }
    for (int i = 0; i < TOP_RING; i++)
      c->masks[i].step = -1;
  }
  mask_slot_t *t = &c->masks[in->step % TOP_RING];
  t->step = in->step;
  t->samples = g && g->samples > 0 ? g->samples : 0;
  t->nmasked = 0;
  t->n = 0;
  t->nch = 0;
  if (!g) return;
  int nch = in->nch < GY_FLEET_MAX_CH ? in->nch : GY_FLEET_MAX_CH;
  for (int k = 0; g->ch_masked && k < nch; k++) {
    copy_name(t->ch[t->nch], sizeof(t->ch[0]), in->ch_name[k], "?");
    t->ch_masked[t->nch] = g->ch_masked[k];
    t->nmasked += g->ch_masked[k];
    t->nch++;
  }
  for (size_t i = 0; i < g->nmasked && t->n < MASK_MAX; i++) {
    const gy_core_masked_t *x = &g->masked[i];
    mask_t *m = &t->m[t->n++];
    m->id = x->id;
    m->loss = x->loss;
    m->median = x->median;
    m->threshold = x->threshold;
    m->rank = x->rank;
    copy_name(m->ch, sizeof(m->ch), x->channel, "?");
    copy_name(m->reason, sizeof(m->reason), x->reason, "?");
    /* interned: a file name is kept once however many samples name it (a bounded table) */
    m->file = x->file && x->region_length ? gy_quar_intern(c->quar, x->file) : NULL;
    m->offset = x->offset;
    m->length = x->length;
    m->document = x->document < 0 ? -1 : x->document;
    m->qoff = x->region_offset;
    m->qlen = x->region_length;
  }
  if (!g->ch_masked) t->nmasked = (uint64_t)t->n;
  if (t->nmasked < (uint64_t)t->n) t->nmasked = (uint64_t)t->n; /* counts below the list */
}

/* Appends fmt to buf (len, *o the used length), keeping room for a closing note. */
static void addf(char *buf, size_t len, size_t *o, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void addf(char *buf, size_t len, size_t *o, const char *fmt, ...) {
  if (*o >= len) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf + *o, len - *o, fmt, ap);
  va_end(ap);
  if (n > 0) *o += (size_t)n;
  if (*o >= len) *o = len;
}

/* Journals entry id (best effort: the workers hold the region already). */
static void journal_entry(gy_core_t *c, uint64_t id) {
  if (!c->o.journal) return;
  const gy_quar_entry_t *e = gy_quar_get(c->quar, id);
  if (!e) return;
  char what[64];
  snprintf(what, sizeof(what), "quarantine entry %llu", (unsigned long long)id);
  gy_jrec_t *r = gy__core_jrec(c, GY_JREC_QUAR, what);
  if (!r) return;
  r->id = id;
  if (!(r->text = gy_quar_to_json(e))) {
    gy_jrec_free(r);
    gy_log(GY_LOG_ERROR, "controller", "journal: out of memory: the %s is not written", what);
    return;
  }
  gy__core_journal_best(c, r);
}

/* One entry in an event's text. */
static void entry_text(char *buf, size_t len, size_t *o, const gy_quar_entry_t *e) {
  addf(buf, len, o, "#%llu %s %s [%llu, %llu)", (unsigned long long)e->id, e->channel, e->file,
       (unsigned long long)e->offset, (unsigned long long)(e->offset + e->length));
  if (e->document >= 0) addf(buf, len, o, " doc %lld", (long long)e->document);
  addf(buf, len, o, " (%s)", e->reason);
}

/* The masked samples of aggregated step `step`: told, their regions quarantined, and their
 * share handed to the run through *in (ids: room for MASK_MAX). */
void gy__core_guard_step(gy_core_t *c, int64_t step, gy_run_step_t *in, uint64_t *ids) {
  mask_slot_t *t = c->masks ? &c->masks[step % TOP_RING] : NULL;
  if (!t || t->step != step) return;
  t->step = -1; /* told once */
  in->samples = t->samples;
  in->nmasked = t->nmasked > (uint64_t)INT32_MAX ? INT32_MAX : (int)t->nmasked;
  for (int i = 0; i < t->n; i++)
    ids[i] = t->m[i].id;
  in->masked = t->n ? ids : NULL;
  in->nmasked_ids = t->n;
  gy_telemetry_guard(c->o.telemetry, step, t->samples, t->nmasked);
  if (!t->nmasked) return;
  /* the counters: by channel and rule for the listed samples, the rest of each channel's count
   * as "unlisted" */
  for (int i = 0; i < t->n; i++)
    gy_telemetry_masked(c->o.telemetry, t->m[i].ch, t->m[i].reason, 1);
  for (int k = 0; k < t->nch; k++) {
    uint64_t listed = 0;
    for (int i = 0; i < t->n; i++)
      listed += !strcmp(t->m[i].ch, t->ch[k]);
    if (t->ch_masked[k] > listed)
      gy_telemetry_masked(c->o.telemetry, t->ch[k], "unlisted", t->ch_masked[k] - listed);
  }
  /* one event for the step: which samples, why, where from */
  char msg[1400];
  size_t o = 0, room = sizeof(msg) - 48; /* for the "and N more" */
  if (t->samples)
    addf(msg, room, &o, "%llu of %d samples masked (%.1f%%)", (unsigned long long)t->nmasked,
         t->samples, 100.0 * (double)t->nmasked / t->samples);
  else
    addf(msg, room, &o, "%llu samples masked", (unsigned long long)t->nmasked);
  int shown = 0;
  for (int i = 0; i < t->n; i++) {
    const mask_t *m = &t->m[i];
    size_t before = o;
    addf(msg, room, &o, "%s id %llu %s %s: loss %.3f (median %.3f, threshold %.3f), rank %d",
         i ? ";" : ":", (unsigned long long)m->id, m->ch, m->reason, (double)m->loss,
         (double)m->median, (double)m->threshold, m->rank);
    if (m->file) addf(msg, room, &o, ", %s:%llu", m->file, (unsigned long long)m->offset);
    if (m->document >= 0) addf(msg, room, &o, " doc %lld", (long long)m->document);
    if (o >= room) { /* cut: drop the partial sample */
      o = before;
      msg[o] = 0;
      break;
    }
    shown++;
  }
  if ((uint64_t)shown < t->nmasked)
    snprintf(msg + o, sizeof(msg) - o, "%s and %llu more", shown ? ";" : ":",
             (unsigned long long)(t->nmasked - (uint64_t)shown));
  gy__core_event(c, GY_EVENT_SAMPLES_MASKED, step, msg);
  /* the quarantine entries (the workers quarantined the regions: this is the record) */
  if (!gy_run_policy(c->run)->guard.quarantine) return;
  uint64_t changed[MASK_MAX];
  int nchanged = 0, full = 0;
  for (int i = 0; i < t->n; i++) {
    const mask_t *m = &t->m[i];
    if (!m->file || !m->qlen) continue;
    gy_quar_add_t a = {.channel = m->ch,
                       .file = m->file,
                       .offset = m->qoff,
                       .length = m->qlen,
                       .document = m->document,
                       .reason = m->reason,
                       .step = step,
                       .sample = m->id,
                       .loss = m->loss,
                       .median = m->median,
                       .threshold = m->threshold};
    uint64_t id = 0;
    char why[256];
    int rc = gy_quar_add(c->quar, &a, &id, why, sizeof(why));
    if (rc == GY_ENOSPC) {
      full++;
    } else if (rc < 0) {
      gy_log(GY_LOG_WARN, "controller", "step %lld: sample %llu not quarantined: %s",
             (long long)step, (unsigned long long)m->id, why);
    } else if (rc != GY_QUAR_HELD) {
      int dup = 0;
      for (int k = 0; k < nchanged && !dup; k++)
        dup = changed[k] == id;
      if (!dup) changed[nchanged++] = id;
    }
  }
  if (!nchanged && !full) return;
  o = 0;
  room = sizeof(msg) - 64;
  addf(msg, room, &o, "%d region%s quarantined by the guard", nchanged, nchanged == 1 ? "" : "s");
  shown = 0;
  for (int k = 0; k < nchanged; k++) {
    journal_entry(c, changed[k]);
    size_t before = o;
    addf(msg, room, &o, "%s ", k ? ";" : ":");
    entry_text(msg, room, &o, gy_quar_get(c->quar, changed[k]));
    if (o >= room) {
      o = before;
      msg[o] = 0;
      break;
    }
    shown++;
  }
  if (shown < nchanged) addf(msg, sizeof(msg), &o, "; and %d more", nchanged - shown);
  if (full)
    addf(msg, sizeof(msg), &o, "; %d not recorded: the list is full (%zu entries)", full,
         gy_quar_count(c->quar));
  gy__core_event(c, GY_EVENT_QUARANTINED, step, msg);
  gy__core_quar_publish(c);
}

/* ------------------------------------------ operator ------------------------------------------ */

/* The channel and file an operator named, checked against the run config (when the core has
 * it): *file gets the config's name of the shard. 0, or GY_EINVAL with why. */
static int check_region(const gy_core_t *c, const gy_core_quar_region_t *r, const char **file,
                        char *why, size_t wlen) {
  *file = r->file;
  if (!r->channel || !gy_quar_str_ok(r->channel, GY_QUAR_NAME)) {
    snprintf(why, wlen, "quarantine: a channel name is required");
    return GY_EINVAL;
  }
  if (!r->file || !gy_quar_str_ok(r->file, GY_QUAR_FILE_MAX)) {
    snprintf(why, wlen, "quarantine: a shard file is required (1..%d bytes)", GY_QUAR_FILE_MAX - 1);
    return GY_EINVAL;
  }
  if (r->length < 1 || r->length > GY_QUAR_TOKENS_MAX) {
    snprintf(why, wlen, "quarantine: %s offset %llu: the length must be 1..2^40 tokens, not %llu",
             r->file, (unsigned long long)r->offset, (unsigned long long)r->length);
    return GY_EINVAL;
  }
  if (r->offset > GY_QUAR_TOKENS_MAX * 1024) {
    snprintf(why, wlen, "quarantine: %s: offset %llu is beyond any shard", r->file,
             (unsigned long long)r->offset);
    return GY_EINVAL;
  }
  if (!c->nchans) return 0;
  const core_ch_t *ch = NULL;
  for (int i = 0; i < c->nchans && !ch; i++)
    if (!strcmp(c->chans[i].name, r->channel)) ch = &c->chans[i];
  if (!ch) {
    size_t o = 0;
    o += (size_t)snprintf(why, wlen, "quarantine: unknown channel '%s' (channels:", r->channel);
    for (int i = 0; i < c->nchans && o < wlen; i++)
      o += (size_t)snprintf(why + o, wlen - o, " %s", c->chans[i].name);
    if (o < wlen) snprintf(why + o, wlen - o, ")");
    return GY_EINVAL;
  }
  if (!ch->nfiles) return 0;
  for (int k = 0; k < ch->nfiles; k++)
    if (same_file(ch->files[k], r->file)) {
      *file = ch->files[k];
      return 0;
    }
  snprintf(why, wlen,
           "quarantine: '%s' is no training shard of channel %s (%d shards, the first "
           "%s)",
           r->file, ch->name, ch->nfiles, ch->files[0]);
  return GY_EINVAL;
}

int gy_core_quarantine(gy_core_t *c, const gy_core_quar_cmd_t *cmd, uint64_t *ids, size_t *nids,
                       uint64_t *seq, int64_t *at, char *why, size_t wlen) {
  *seq = 0;
  *at = 0;
  *nids = 0;
  int add = cmd->op == GY_CORE_QUAR_ADD;
  size_t n = add ? cmd->nadd : cmd->nrelease;
  if ((cmd->op != GY_CORE_QUAR_ADD && cmd->op != GY_CORE_QUAR_RELEASE) || !n ||
      n > GY_CORE_QUAR_CMD_MAX || (add ? !cmd->add : !cmd->release)) {
    snprintf(why, wlen, "quarantine: %s wants 1..%d %s", add ? "add" : "release",
             GY_CORE_QUAR_CMD_MAX, add ? "regions" : "entry ids");
    return GY_EINVAL;
  }
  /* everything is checked before anything changes */
  const char **files = calloc(n, sizeof(*files));
  gy_fleet_qentry_t *qe = calloc(n, sizeof(*qe));
  int rc = 0;
  if (!files || !qe) {
    snprintf(why, wlen, "out of memory");
    rc = GY_ENOMEM;
    goto out;
  }
  for (size_t i = 0; i < n && !rc; i++) {
    if (!add) {
      if (!gy_quar_get(c->quar, cmd->release[i])) {
        snprintf(why, wlen, "quarantine: no entry %llu (gyroctl quarantine list shows them)",
                 (unsigned long long)cmd->release[i]);
        rc = GY_EINVAL;
      }
      continue;
    }
    rc = check_region(c, &cmd->add[i], &files[i], why, wlen);
    if (!rc && cmd->add[i].reason && cmd->add[i].reason[0] &&
        !gy_quar_str_ok(cmd->add[i].reason, GY_QUAR_NAME)) {
      snprintf(why, wlen, "quarantine: a reason is 1..%d bytes of text", GY_QUAR_NAME - 1);
      rc = GY_EINVAL;
    }
  }
  if (!rc && add && gy_quar_count(c->quar) + n > gy_quar_max(c->quar)) {
    snprintf(why, wlen,
             "quarantine: the list holds %zu of at most %zu entries: no room for %zu more",
             gy_quar_count(c->quar), gy_quar_max(c->quar), n);
    rc = GY_ENOSPC;
  }
  if (rc) goto out;
  int64_t step = gy_fleet_last_step(c->fleet) + 1;
  int nq = 0;
  char msg[1400];
  size_t o = 0, room = sizeof(msg) - 48;
  int shown = 0, changed = 0;
  for (size_t i = 0; i < n; i++) {
    uint64_t id = 0;
    int st;
    if (add) {
      const gy_core_quar_region_t *r = &cmd->add[i];
      gy_quar_add_t a = {.channel = r->channel,
                         .file = files[i],
                         .offset = r->offset,
                         .length = r->length,
                         .document = -1,
                         .reason = r->reason && r->reason[0] ? r->reason : "operator",
                         .step = step,
                         .operator_ = 1};
      st = gy_quar_add(c->quar, &a, &id, why, wlen);
      if (st < 0) { /* out of memory (the room was checked): what was added stays */
        rc = st;
        break;
      }
    } else {
      id = cmd->release[i];
      st = gy_quar_release(c->quar, id, step);
    }
    ids[(*nids)++] = id;
    if (st == GY_QUAR_HELD) continue; /* held already / released already: nothing to send */
    const gy_quar_entry_t *e = gy_quar_get(c->quar, id);
    int dup = 0;
    for (int k = 0; k < nq && !dup; k++)
      dup = qe[k].file == e->file && qe[k].offset == e->offset && qe[k].length == e->length &&
            qe[k].released == e->released;
    if (!dup)
      qe[nq++] = (gy_fleet_qentry_t){.channel = e->channel,
                                     .file = e->file,
                                     .offset = e->offset,
                                     .length = e->length,
                                     .released = e->released};
    journal_entry(c, id);
    changed++;
    size_t before = o;
    addf(msg, room, &o, "%s", shown ? "; " : "");
    entry_text(msg, room, &o, e);
    if (o >= room) {
      o = before;
      msg[o] = 0;
    } else {
      shown++;
    }
  }
  if (nq) {
    /* the same regions on every rank at one step; no gang now (or the run ends first): the next
     * assignment carries the list */
    gy_fleet_qdir_t qd = {.entries = qe, .nentries = nq};
    if (gy_fleet_quarantine(c->fleet, gy__core_now(c), GY_DIR_QUARANTINE, &qd, seq, at))
      *seq = 0, *at = 0;
  }
  if (changed) {
    char head[200];
    if (*seq)
      snprintf(head, sizeof(head), "the operator %s %d region%s (directive %llu at step %lld): ",
               add ? "quarantined" : "released", changed, changed == 1 ? "" : "s",
               (unsigned long long)*seq, (long long)*at);
    else
      snprintf(head, sizeof(head), "the operator %s %d region%s (the next assignment carries it): ",
               add ? "quarantined" : "released", changed, changed == 1 ? "" : "s");
    if (shown < changed) snprintf(msg + o, sizeof(msg) - o, "; and %d more", changed - shown);
    gy__core_eventf(c, add ? GY_EVENT_QUARANTINED : GY_EVENT_QUARANTINE_RELEASED, "%s%s", head,
                    msg);
    gy__core_quar_publish(c);
  }
out:
  free(files);
  free(qe);
  return rc;
}

/* The policy was replaced: when its guard changed, the workers get the new settings at one step
 * (a SET_GUARD directive), or with the next assignment when the gang cannot take one now. */
void gy__core_guard_policy(gy_core_t *c, const gy_guard_opts_t *before) {
  const gy_guard_opts_t *now = &gy_run_policy(c->run)->guard;
  if (gy_guard_equal(before, now)) return;
  gy_fleet_qdir_t qd = {.guard = *now};
  uint64_t seq;
  int64_t at;
  if (gy_fleet_quarantine(c->fleet, gy__core_now(c), GY_DIR_SET_GUARD, &qd, &seq, &at))
    gy__core_eventf(c, GY_EVENT_POLICY_SET,
                    "the guard's settings changed: the workers get them with their next "
                    "assignment (%s)",
                    gy_fleet_errmsg(c->fleet));
  else
    gy__core_eventf(c, GY_EVENT_POLICY_SET,
                    "the guard's settings changed: every rank applies them at step %lld "
                    "(directive %llu)",
                    (long long)at, (unsigned long long)seq);
}

/* ------------------------------------------ recovery ------------------------------------------ */

/* The journal's quarantine entries back into the list; returns how many. */
int gy__core_quar_recover(gy_core_t *c, const gy_journal_state_t *st) {
  int n = 0;
  for (size_t i = 0; i < st->nquar; i++) {
    gy_quar_entry_t e;
    int rc = gy_quar_from_json(c->quar, st->quar_texts[i], &e);
    if (!rc) rc = gy_quar_restore(c->quar, &e);
    if (rc)
      gy_log(GY_LOG_WARN, "controller", "journal: quarantine record %zu not restored: %s", i,
             gy_strerror(rc));
    else
      n++;
  }
  if (n) gy__core_quar_publish(c);
  return n;
}

/* ------------------------------------ telemetry, assignment ------------------------------------
 */

/* The list for the dashboard (/api/quarantine): the newest changes first, at most LIST_SHOWN. */
void gy__core_quar_publish(gy_core_t *c) {
  if (!c->o.telemetry) return;
  size_t n = gy_quar_count(c->quar);
  const gy_quar_entry_t **by = n ? malloc(n * sizeof(*by)) : NULL;
  json_t *list = json_array(), *o = NULL;
  if ((n && !by) || !list) goto oom;
  if (n) gy_quar_by_rev(c->quar, by);
  for (size_t k = 0; k < n && k < LIST_SHOWN; k++) {
    const gy_quar_entry_t *e = by[n - 1 - k];
    json_t *x = json_pack("{s:I, s:s, s:s, s:I, s:I, s:I, s:s, s:I, s:I, s:f, s:f, s:f, s:I, "
                          "s:b, s:I}",
                          "id", (json_int_t)e->id, "channel", e->channel, "file", e->file, "offset",
                          (json_int_t)e->offset, "length", (json_int_t)e->length, "document",
                          (json_int_t)e->document, "reason", e->reason, "first_step",
                          (json_int_t)e->first_step, "sample", (json_int_t)e->sample, "loss",
                          (double)e->loss, "median", (double)e->median, "threshold",
                          (double)e->threshold, "hits", (json_int_t)e->hits, "released",
                          e->released, "changed_step", (json_int_t)e->changed_step);
    if (!x || json_array_append_new(list, x)) goto oom;
  }
  size_t active = gy_quar_active(c->quar);
  o = json_pack("{s:o, s:I, s:I, s:I}", "entries", list, "total", (json_int_t)n, "active",
                (json_int_t)active, "shown", (json_int_t)(n < LIST_SHOWN ? n : LIST_SHOWN));
  list = NULL;
  if (!o) goto oom;
  free(by);
  gy_telemetry_quarantine(c->o.telemetry, o, active, n - active);
  return;
oom:
  json_decref(list);
  free(by);
  gy_telemetry_quarantine(c->o.telemetry, NULL, gy_quar_active(c->quar),
                          n - gy_quar_active(c->quar));
}

/* Answers a held join (ASSIGN): the skips in force, the quarantine list in the order to apply
 * it, the policy's guard. */
void gy__core_assign(gy_core_t *c, const gy_fleet_action_t *a) {
  size_t n = gy_quar_count(c->quar);
  const gy_quar_entry_t **by = n ? malloc(n * sizeof(*by)) : NULL;
  if (n && !by) {
    gy_log(GY_LOG_ERROR, "controller",
           "out of memory: the assignment of rank %d carries no quarantine", a->rank);
    n = 0;
  }
  if (n) gy_quar_by_rev(c->quar, by);
  gy_io_assign_t x = {
      .skips = &c->in_force, .quar = by, .nquar = n, .guard = &gy_run_policy(c->run)->guard};
  c->io.assign(c->io.ud, a, &x);
  free(by);
}
