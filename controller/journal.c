/*
 * journal: the run's durable record (decisions, events, checkpoint manifests, skips) in the
 * state store. See journal.h for the keys.
 *
 * API: gy_journal_open/close, gy_journal_load/state_free, gy_journal_event,
 * gy_journal_checkpoint, gy_journal_intent, gy_journal_applied, gy_journal_dropped,
 * gy_journal_state, gy_journal_quarantine, gy_journal_pending.
 *
 * Invariants:
 * - Keys embed numbers zero-padded to 16 digits, so the store's sorted range is numeric order.
 * - An intent is written before its directive is sent and deleted in the same transaction that
 *   records what the directive changed (skips in force, abandoned checkpoints), so after any
 *   crash the record holds either the intent (the action may or may not have happened: redo it
 *   idempotently) or its effect, never neither.
 * - Events are best effort in order: one that cannot be written waits in a bounded queue
 *   (PENDING_MAX, oldest dropped first) and is written before any later write.
 * - Values are JSON written and read with jansson; a value that does not parse is skipped with
 *   a warning, never trusted.
 */
#include "journal.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/alloc.h"
#include "common/err.h"
#include "common/log.h"

#define PENDING_MAX 1024
#define BASELINES_KEPT 8
#define KEY_MAX 256
#define TIMEOUT_MS 5000

struct gy_journal {
  gy_cstore_t *store; /* borrowed */
  char prefix[128];   /* "/gyro/<run>/" */
  gy_journal_event_t *pending;
  size_t npending, head; /* ring of PENDING_MAX */
  int64_t retry_at_ms;   /* with events pending, the next event write tries no sooner */
};

#define EVENT_TIMEOUT_MS 1000 /* an event write holds the writer thread no longer */
#define EVENT_RETRY_MS 1000

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int name_ok(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n < 1 || n > 100) return 0;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      return 0;
  }
  return strcmp(s, ".") && strcmp(s, "..");
}

int gy_journal_open(gy_journal_t **out, gy_cstore_t *store, const char *run, char *errmsg,
                    size_t errlen) {
  *out = NULL;
  if (!store || !name_ok(run)) {
    gy_errmsg(errmsg, errlen, "journal: run name '%.100s' must be 1-100 of [A-Za-z0-9._-]",
              run ? run : "");
    return GY_EINVAL;
  }
  gy_journal_t *j = gy_calloc(1, sizeof(*j));
  if (!j || !(j->pending = gy_calloc(PENDING_MAX, sizeof(*j->pending)))) {
    gy_free(j);
    return GY_ENOMEM;
  }
  j->store = store;
  snprintf(j->prefix, sizeof(j->prefix), "/gyro/%s/", run);
  *out = j;
  return 0;
}

void gy_journal_close(gy_journal_t *j) {
  if (!j) return;
  if (j->npending)
    gy_log(GY_LOG_WARN, "journal", "%zu events never reached the store", j->npending);
  gy_free(j->pending);
  gy_free(j);
}

const char *gy_journal_prefix(const gy_journal_t *j) {
  return j->prefix;
}

size_t gy_journal_pending(const gy_journal_t *j) {
  return j ? j->npending : 0;
}

static void key_of(const gy_journal_t *j, char *buf, const char *kind, uint64_t n) {
  snprintf(buf, KEY_MAX, "%s%s/%016" PRIu64, j->prefix, kind, n);
}

/* The compact text of o (which it releases): jansson's memory, released with free(), not
 * gy_free; NULL when out of memory. */
static char *dump(json_t *o) {
  char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
  json_decref(o);
  return s;
}

static json_t *skips_json(const gy_fleet_skip_t *sk, size_t n) {
  json_t *a = json_array();
  for (size_t i = 0; a && i < n; i++)
    json_array_append_new(a, json_pack("[I, I]", (json_int_t)sk[i].first, (json_int_t)sk[i].last));
  return a;
}

/* Ranges from a JSON array of [first, last] pairs (first < last) into *out (from gy_calloc,
 * the caller's to gy_free; never NULL on success, even for no range): 0, GY_EINVAL for a bad
 * array (nothing allocated) or GY_ENOMEM. The two failures differ: a bad value is skipped, but
 * out of memory must fail the load, else the skips in force would be silently forgotten. */
static int skips_parse(json_t *a, gy_fleet_skip_t **out, size_t *n) {
  *out = NULL;
  *n = 0;
  if (!json_is_array(a)) return GY_EINVAL;
  size_t m = json_array_size(a);
  for (size_t i = 0; i < m; i++) {
    json_int_t f, l;
    if (json_unpack(json_array_get(a, i), "[I, I]", &f, &l) || f < 0 || l <= f) return GY_EINVAL;
  }
  gy_fleet_skip_t *r = gy_calloc(m ? m : 1, sizeof(*r));
  if (!r) return GY_ENOMEM;
  for (size_t i = 0; i < m; i++) {
    json_int_t f, l;
    json_unpack(json_array_get(a, i), "[I, I]", &f, &l);
    r[i].first = (uint64_t)f;
    r[i].last = (uint64_t)l;
  }
  *out = r;
  *n = m;
  return 0;
}

static int put_event(gy_journal_t *j, const gy_journal_event_t *e) {
  char key[KEY_MAX], err[256];
  key_of(j, key, "events", e->id);
  char *v = dump(json_pack("{s:I, s:f, s:I, s:s, s:s}", "id", (json_int_t)e->id, "time", e->time,
                           "step", (json_int_t)e->step, "kind", e->kind, "text", e->text));
  if (!v) return GY_ENOMEM;
  int rc = gy_cstore_put(j->store, key, v, strlen(v), 0, NULL, EVENT_TIMEOUT_MS, err, sizeof(err));
  free(v);
  return rc;
}

/* Writes the queued events, oldest first; stops at the first failure. */
static int flush(gy_journal_t *j) {
  while (j->npending) {
    int rc = put_event(j, &j->pending[j->head]);
    if (rc) return rc;
    j->head = (j->head + 1) % PENDING_MAX;
    j->npending--;
  }
  return 0;
}

int gy_journal_event(gy_journal_t *j, uint64_t id, double time, int64_t step, const char *kind,
                     const char *text) {
  if (!j) return 0;
  gy_journal_event_t e = {.id = id, .time = time, .step = step};
  snprintf(e.kind, sizeof(e.kind), "%s", kind ? kind : "");
  snprintf(e.text, sizeof(e.text), "%s", text ? text : "");
  /* while the store is down, an event joins the queue without holding the loop each time */
  if ((!j->npending || mono_ms() >= j->retry_at_ms) && !flush(j) && !put_event(j, &e)) return 0;
  j->retry_at_ms = mono_ms() + EVENT_RETRY_MS;
  if (j->npending == PENDING_MAX) { /* drop the oldest */
    j->head = (j->head + 1) % PENDING_MAX;
    j->npending--;
  }
  j->pending[(j->head + j->npending) % PENDING_MAX] = e;
  if (j->npending++ == 0)
    gy_log(GY_LOG_WARN, "journal", "the store is unreachable: events wait in memory");
  return 0;
}

int gy_journal_checkpoint(gy_journal_t *j, int64_t step, int clean, char *errmsg, size_t errlen) {
  if (!j) return 0;
  flush(j);
  char key[KEY_MAX];
  key_of(j, key, "checkpoints", (uint64_t)step);
  char *v = dump(json_pack("{s:I, s:b}", "step", (json_int_t)step, "clean", clean));
  if (!v) return GY_ENOMEM;
  int rc = gy_cstore_put(j->store, key, v, strlen(v), 0, NULL, TIMEOUT_MS, errmsg, errlen);
  free(v);
  return rc;
}

int gy_journal_checkpoint_eval(gy_journal_t *j, int64_t step, const char *eval_json, char *errmsg,
                               size_t errlen) {
  if (!j) return 0;
  json_t *ev = eval_json ? json_loads(eval_json, 0, NULL) : NULL;
  if (!json_is_object(ev)) {
    json_decref(ev);
    snprintf(errmsg, errlen, "checkpoint %lld: the evaluation is not a JSON object",
             (long long)step);
    return GY_EINVAL;
  }
  flush(j);
  char key[KEY_MAX];
  key_of(j, key, "checkpoints", (uint64_t)step);
  gy_cstore_kv_t kv = {0};
  int rc = gy_cstore_get(j->store, key, &kv, NULL, TIMEOUT_MS, errmsg, errlen);
  if (rc) {
    if (rc == GY_ENOENT)
      snprintf(errmsg, errlen, "checkpoint %lld has no manifest", (long long)step);
    json_decref(ev);
    return rc;
  }
  json_t *o = json_loadb((const char *)kv.value, kv.value_len, 0, NULL);
  gy_cstore_kv_clear(&kv);
  if (!json_is_object(o)) { /* a broken manifest: written again from what is known */
    json_decref(o);
    o = json_pack("{s:I, s:b}", "step", (json_int_t)step, "clean", 0);
  }
  json_object_set_new(o, "eval", ev);
  char *v = dump(o);
  if (!v) return GY_ENOMEM;
  rc = gy_cstore_put(j->store, key, v, strlen(v), 0, NULL, TIMEOUT_MS, errmsg, errlen);
  free(v);
  return rc;
}

int gy_journal_baselines(gy_journal_t *j, int64_t step, const char *run_snapshot, char *errmsg,
                         size_t errlen) {
  if (!j || !run_snapshot) return 0;
  flush(j);
  char key[KEY_MAX], pre[KEY_MAX];
  key_of(j, key, "baselines", (uint64_t)step);
  int rc = gy_cstore_put(j->store, key, run_snapshot, strlen(run_snapshot), 0, NULL, TIMEOUT_MS,
                         errmsg, errlen);
  if (rc) return rc;
  snprintf(pre, sizeof(pre), "%sbaselines/", j->prefix);
  gy_cstore_range_t r = {0};
  if ((rc = gy_cstore_range(j->store, pre, NULL, 0, &r, TIMEOUT_MS, errmsg, errlen))) return rc;
  for (size_t i = 0; i + BASELINES_KEPT < r.n && !rc; i++) /* sorted: the oldest first */
    rc = gy_cstore_delete(j->store, r.kvs[i].key, 0, NULL, NULL, TIMEOUT_MS, errmsg, errlen);
  gy_cstore_range_clear(&r);
  return rc;
}

int gy_journal_intent(gy_journal_t *j, const gy_journal_intent_t *in, const char *run_snapshot,
                      char *errmsg, size_t errlen) {
  if (!j) return 0;
  flush(j);
  char key[KEY_MAX], rkey[KEY_MAX];
  key_of(j, key, "intent", in->seq);
  snprintf(rkey, sizeof(rkey), "%srun", j->prefix);
  char *v = dump(
      json_pack("{s:I, s:i, s:I, s:I, s:o, s:s}", "seq", (json_int_t)in->seq, "kind", in->kind,
                "at_step", (json_int_t)in->at_step, "to_step", (json_int_t)in->to_step, "skip",
                skips_json(in->skip, in->nskip > 0 ? (size_t)in->nskip : 0), "reason", in->reason));
  if (!v) return GY_ENOMEM;
  gy_cstore_op_t ops[2] = {
      {.type = GY_CSTORE_OP_PUT, .key = key, .value = v, .value_len = strlen(v)},
      {.type = GY_CSTORE_OP_PUT,
       .key = rkey,
       .value = run_snapshot,
       .value_len = run_snapshot ? strlen(run_snapshot) : 0}};
  int rc = gy_cstore_txn(j->store, NULL, 0, ops, run_snapshot ? 2 : 1, NULL, 0, NULL, TIMEOUT_MS,
                         errmsg, errlen);
  free(v);
  return rc;
}

int gy_journal_applied(gy_journal_t *j, uint64_t seq, int64_t to_step, const gy_fleet_skip_t *skips,
                       size_t nskips, char *errmsg, size_t errlen) {
  if (!j) return 0;
  flush(j);
  char ikey[KEY_MAX], skey[KEY_MAX];
  key_of(j, ikey, "intent", seq);
  snprintf(skey, sizeof(skey), "%sskips", j->prefix);
  gy_cstore_op_t ops[2];
  size_t n = 0;
  ops[n++] = (gy_cstore_op_t){.type = GY_CSTORE_OP_DELETE, .key = ikey};
  char *v = NULL;
  if (to_step >= 0) {
    v = dump(json_pack("{s:o}", "ranges", skips_json(skips, nskips)));
    if (!v) return GY_ENOMEM;
    ops[n++] =
        (gy_cstore_op_t){.type = GY_CSTORE_OP_PUT, .key = skey, .value = v, .value_len = strlen(v)};
  }
  int rc = gy_cstore_txn(j->store, NULL, 0, ops, n, NULL, 0, NULL, TIMEOUT_MS, errmsg, errlen);
  free(v);
  if (rc || to_step < 0) return rc;
  /* The checkpoints of the abandoned timeline: read the manifests, delete those after to_step
   * (a second call; a crash in between leaves manifests a restart forgets the same way). */
  for (int pass = 0; pass < 2 && !rc; pass++) {
    char pre[KEY_MAX];
    snprintf(pre, sizeof(pre), "%s%s/", j->prefix, pass ? "baselines" : "checkpoints");
    gy_cstore_range_t r = {0};
    if ((rc = gy_cstore_range(j->store, pre, NULL, 0, &r, TIMEOUT_MS, errmsg, errlen))) return rc;
    for (size_t i = 0; i < r.n && !rc; i++) {
      const char *num = r.kvs[i].key + strlen(pre);
      if (strtoll(num, NULL, 10) > to_step)
        rc = gy_cstore_delete(j->store, r.kvs[i].key, 0, NULL, NULL, TIMEOUT_MS, errmsg, errlen);
    }
    gy_cstore_range_clear(&r);
  }
  return rc;
}

int gy_journal_dropped(gy_journal_t *j, uint64_t seq, char *errmsg, size_t errlen) {
  if (!j) return 0;
  flush(j);
  char key[KEY_MAX];
  key_of(j, key, "intent", seq);
  return gy_cstore_delete(j->store, key, 0, NULL, NULL, TIMEOUT_MS, errmsg, errlen);
}

int gy_journal_state(gy_journal_t *j, uint64_t generation, uint64_t last_seq, int64_t rollbacks,
                     char *errmsg, size_t errlen) {
  if (!j) return 0;
  flush(j);
  char key[KEY_MAX];
  snprintf(key, sizeof(key), "%sstate", j->prefix);
  char *v = dump(json_pack("{s:I, s:I, s:I}", "generation", (json_int_t)generation, "seq",
                           (json_int_t)last_seq, "rollbacks", (json_int_t)rollbacks));
  if (!v) return GY_ENOMEM;
  int rc = gy_cstore_put(j->store, key, v, strlen(v), 0, NULL, TIMEOUT_MS, errmsg, errlen);
  free(v);
  return rc;
}

int gy_journal_hold(gy_journal_t *j, int hold, const char *why, char *errmsg, size_t errlen) {
  if (!j) return 0;
  flush(j);
  char key[KEY_MAX];
  snprintf(key, sizeof(key), "%shold", j->prefix);
  if (!hold) return gy_cstore_delete(j->store, key, 0, NULL, NULL, TIMEOUT_MS, errmsg, errlen);
  char *v = dump(
      json_pack("{s:s, s:s}", "state", hold == 2 ? "HALTED" : "PAUSED", "why", why ? why : ""));
  if (!v) return GY_ENOMEM;
  int rc = gy_cstore_put(j->store, key, v, strlen(v), 0, NULL, TIMEOUT_MS, errmsg, errlen);
  free(v);
  return rc;
}

int gy_journal_done(gy_journal_t *j, int64_t steps, char *errmsg, size_t errlen) {
  if (!j) return 0;
  flush(j);
  char key[KEY_MAX];
  snprintf(key, sizeof(key), "%sdone", j->prefix);
  char *v = dump(json_pack("{s:I}", "steps", (json_int_t)steps));
  if (!v) return GY_ENOMEM;
  int rc = gy_cstore_put(j->store, key, v, strlen(v), 0, NULL, TIMEOUT_MS, errmsg, errlen);
  free(v);
  return rc;
}

int gy_journal_quarantine(gy_journal_t *j, uint64_t id, const char *text, char *errmsg,
                          size_t errlen) {
  if (!j) return 0;
  if (!id || !text) {
    snprintf(errmsg, errlen, "quarantine entry %llu: no record", (unsigned long long)id);
    return GY_EINVAL;
  }
  flush(j);
  char key[KEY_MAX];
  key_of(j, key, "quarantine", id);
  return gy_cstore_put(j->store, key, text, strlen(text), 0, NULL, TIMEOUT_MS, errmsg, errlen);
}

/* ------------------------------------------ load ------------------------------------------ */

static json_t *parse(const gy_cstore_kv_t *kv) {
  json_t *o = json_loadb((const char *)kv->value, kv->value_len, 0, NULL);
  if (!o) gy_log(GY_LOG_WARN, "journal", "%s: not JSON: ignored", kv->key);
  return o;
}

void gy_journal_state_free(gy_journal_state_t *st) {
  if (!st) return;
  gy_free(st->events);
  for (size_t i = 0; st->ckpts && i < st->nckpts; i++)
    gy_free(st->ckpts[i].eval);
  gy_free(st->ckpts);
  gy_free(st->skips);
  for (size_t i = 0; i < st->nintents; i++)
    gy_free(st->intents[i].skip);
  gy_free(st->intents);
  gy_free(st->run_snapshot);
  for (size_t i = 0; i < st->nbase; i++)
    gy_free(st->base_texts[i]);
  gy_free(st->base_steps);
  gy_free(st->base_texts);
  for (size_t i = 0; i < st->nquar; i++)
    gy_free(st->quar_texts[i]);
  gy_free(st->quar_texts);
  memset(st, 0, sizeof(*st));
}

int gy_journal_load(gy_journal_t *j, gy_journal_state_t *st, size_t max_events, char *errmsg,
                    size_t errlen) {
  memset(st, 0, sizeof(*st));
  gy_cstore_range_t r = {0};
  int rc = gy_cstore_range(j->store, j->prefix, NULL, 0, &r, TIMEOUT_MS, errmsg, errlen);
  if (rc) return rc;
  size_t plen = strlen(j->prefix), nev = 0;
  for (size_t i = 0; i < r.n; i++)
    if (!strncmp(r.kvs[i].key + plen, "events/", 7)) nev++;
  st->events = gy_calloc(nev ? nev : 1, sizeof(*st->events));
  st->ckpts = gy_calloc(r.n ? r.n : 1, sizeof(*st->ckpts));
  st->intents = gy_calloc(r.n ? r.n : 1, sizeof(*st->intents));
  st->base_steps = gy_calloc(r.n ? r.n : 1, sizeof(*st->base_steps));
  st->base_texts = gy_calloc(r.n ? r.n : 1, sizeof(*st->base_texts));
  st->quar_texts = gy_calloc(r.n ? r.n : 1, sizeof(*st->quar_texts));
  if (!st->events || !st->ckpts || !st->intents || !st->base_steps || !st->base_texts ||
      !st->quar_texts) {
    rc = GY_ENOMEM;
    goto out;
  }
  size_t skip_events = nev > max_events ? nev - max_events : 0;
  for (size_t i = 0; i < r.n; i++) {
    const gy_cstore_kv_t *kv = &r.kvs[i];
    const char *k = kv->key + plen;
    if (strcmp(k, "leader")) st->found = 1;
    json_t *o = NULL;
    if (!strncmp(k, "events/", 7)) {
      json_int_t id, step;
      double t;
      const char *kind, *text;
      if (!(o = parse(kv))) continue;
      if (json_unpack(o, "{s:I, s:F, s:I, s:s, s:s}", "id", &id, "time", &t, "step", &step, "kind",
                      &kind, "text", &text) == 0) {
        if ((uint64_t)id > st->last_event_id) st->last_event_id = (uint64_t)id;
        if (skip_events) {
          skip_events--;
        } else {
          gy_journal_event_t *e = &st->events[st->nevents++];
          e->id = (uint64_t)id;
          e->time = t;
          e->step = step;
          snprintf(e->kind, sizeof(e->kind), "%s", kind);
          snprintf(e->text, sizeof(e->text), "%s", text);
        }
      }
    } else if (!strncmp(k, "checkpoints/", 12)) {
      json_int_t step;
      int clean;
      if (!(o = parse(kv))) continue;
      if (json_unpack(o, "{s:I, s:b}", "step", &step, "clean", &clean) == 0 && step >= 0) {
        json_t *ev = json_object_get(o, "eval");
        char *text = NULL;
        if (json_is_object(ev)) { /* jansson's text, copied into memory of ours */
          char *js = json_dumps(ev, JSON_COMPACT);
          text = gy_strdup(js);
          free(js);
          if (!text) {
            json_decref(o);
            rc = GY_ENOMEM;
            goto out;
          }
        }
        st->ckpts[st->nckpts++] = (gy_journal_ckpt_t){step, clean, text};
      }
    } else if (!strcmp(k, "skips")) {
      if (!(o = parse(kv))) continue;
      gy_free(st->skips);
      int prc = skips_parse(json_object_get(o, "ranges"), &st->skips, &st->nskips);
      if (prc == GY_ENOMEM) {
        json_decref(o);
        rc = prc;
        goto out;
      }
      if (prc) gy_log(GY_LOG_WARN, "journal", "%s: bad ranges: ignored", kv->key);
    } else if (!strncmp(k, "intent/", 7)) {
      json_int_t seq, at, to;
      int kind;
      const char *reason;
      json_t *sk;
      if (!(o = parse(kv))) continue;
      if (json_unpack(o, "{s:I, s:i, s:I, s:I, s:o, s:s}", "seq", &seq, "kind", &kind, "at_step",
                      &at, "to_step", &to, "skip", &sk, "reason", &reason) == 0) {
        gy_journal_intent_t *in = &st->intents[st->nintents];
        size_t n;
        int prc = skips_parse(sk, &in->skip, &n);
        if (prc == GY_ENOMEM) { /* a lost intent would never be redone */
          json_decref(o);
          rc = prc;
          goto out;
        }
        if (!prc) {
          in->seq = (uint64_t)seq;
          in->kind = kind;
          in->at_step = at;
          in->to_step = to;
          in->nskip = (int)n;
          snprintf(in->reason, sizeof(in->reason), "%s", reason);
          st->nintents++;
        }
      }
    } else if (!strcmp(k, "done")) {
      st->done = 1;
    } else if (!strcmp(k, "hold")) {
      const char *state, *why;
      if (!(o = parse(kv))) continue;
      if (json_unpack(o, "{s:s, s:s}", "state", &state, "why", &why) == 0) {
        st->hold = !strcmp(state, "HALTED") ? 2 : !strcmp(state, "PAUSED") ? 1 : 0;
        snprintf(st->hold_why, sizeof(st->hold_why), "%s", why);
      }
    } else if (!strncmp(k, "quarantine/", 11)) {
      char *t = gy_malloc(kv->value_len + 1);
      if (!t) {
        rc = GY_ENOMEM;
        goto out;
      }
      memcpy(t, kv->value, kv->value_len);
      t[kv->value_len] = 0;
      st->quar_texts[st->nquar++] = t;
    } else if (!strcmp(k, "run") || !strncmp(k, "baselines/", 10)) {
      char *t = gy_malloc(kv->value_len + 1);
      if (!t) {
        rc = GY_ENOMEM;
        goto out;
      }
      memcpy(t, kv->value, kv->value_len);
      t[kv->value_len] = 0;
      if (k[0] == 'r') {
        gy_free(st->run_snapshot);
        st->run_snapshot = t;
      } else {
        st->base_steps[st->nbase] = strtoll(k + 10, NULL, 10);
        st->base_texts[st->nbase++] = t;
      }
    } else if (!strcmp(k, "state")) {
      json_int_t gen = 0, seq = 0, rb = 0;
      if (!(o = parse(kv))) continue;
      if (json_unpack(o, "{s:I, s:I, s:I}", "generation", &gen, "seq", &seq, "rollbacks", &rb) ==
          0) {
        st->generation = (uint64_t)gen;
        st->last_seq = (uint64_t)seq;
        st->rollbacks = rb;
      }
    }
    json_decref(o);
  }
out:
  gy_cstore_range_clear(&r);
  if (rc) gy_journal_state_free(st);
  return rc;
}
