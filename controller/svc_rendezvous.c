/*
 * svc_rendezvous: the workers' rendezvous store (/gyro.Worker/StoreSet, /gyro.Worker/StoreGet),
 * in memory. A get of a key not set yet is held until the key is set, its timeout (at most
 * STORE_MAX_TIMEOUT_MS) passes, or the service shuts down.
 *
 * API, in order: get_release (the shutdown releases the held gets), on_store_set, on_store_get.
 *
 * Invariants:
 * - s->kv is sorted by key, each key once.
 * - Every held get is in s->gets until get_release answers it (exactly once), unlinks it and
 *   closes its timer (counted in pending_closes until closed).
 */
#include "controller/service_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The store: a sorted array of keys (binary search); a set wakes the gets held on its key. */
static size_t kv_find(const gy_service_t *s, const char *key, int *found) {
  size_t lo = 0, hi = s->nkv;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    int c = strcmp(s->kv[mid].key, key);
    if (!c) {
      *found = 1;
      return mid;
    }
    if (c < 0)
      lo = mid + 1;
    else
      hi = mid;
  }
  *found = 0;
  return lo;
}

static void reply_value(gy_rpc_call_t *call, const kv_t *e) {
  uint8_t *buf;
  size_t n;
  int rc = gy_wire_store_value_encode(e->val, e->len, &buf, &n);
  gy__svc_reply_encoded(call, rc, buf, n);
}

static void get_closed(uv_handle_t *h) {
  held_get_t *g = h->data;
  g->s->pending_closes--;
  free(g->key);
  free(g);
}

/* Answers (when still held) and releases a held get. */
void gy__svc_get_release(held_get_t *g, int status, const char *msg, const kv_t *e) {
  gy_service_t *s = g->s;
  if (e)
    reply_value(g->rpc, e);
  else
    gy_rpc_reply(g->rpc, status, msg, NULL, 0);
  if (g->prev)
    g->prev->next = g->next;
  else
    s->gets = g->next;
  if (g->next) g->next->prev = g->prev;
  uv_timer_stop(&g->timer);
  s->pending_closes++;
  uv_close((uv_handle_t *)&g->timer, get_closed);
}

static void get_timeout(uv_timer_t *t) {
  held_get_t *g = t->data;
  char msg[300];
  snprintf(msg, sizeof(msg), "store key %.250s: not set in time", g->key);
  gy__svc_get_release(g, GY_RPC_DEADLINE_EXCEEDED, msg, NULL);
}

/* Decodes a StoreSet or StoreGet request; 0, or -1 after refusing it (malformed, empty key). */
static int store_request(gy_service_t *s, gy_rpc_call_t *call, gy_wire_req_kind_t kind,
                         const uint8_t *req, size_t len, gy_wire_request_t *r) {
  const char *verb = kind == GY_WIRE_REQ_STORE_SET ? "StoreSet" : "StoreGet";
  char msg[80];
  if (gy_wire_request_decode(kind, req, len, r)) {
    snprintf(msg, sizeof(msg), "malformed %s", gy_wire_request_name(kind));
  } else if (!r->key[0]) {
    gy_wire_request_free(r);
    snprintf(msg, sizeof(msg), "%s: empty key", verb);
  } else {
    return 0;
  }
  gy__svc_refuse_unary(s, call, GY_RPC_INVALID_ARGUMENT, GY_EVENT_MALFORMED, msg);
  return -1;
}

void gy__svc_on_store_set(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  gy_wire_request_t r;
  if (store_request(s, call, GY_WIRE_REQ_STORE_SET, req, len, &r)) return;
  int found;
  size_t i = kv_find(s, r.key, &found);
  uint8_t *val = malloc(r.value_len ? r.value_len : 1);
  char *key = found ? NULL : strdup(r.key);
  if (!val || (!found && !key)) goto oom;
  if (r.value_len) memcpy(val, r.value, r.value_len);
  if (found) {
    free(s->kv[i].val);
  } else {
    if (s->nkv == s->capkv) {
      size_t cap = s->capkv ? 2 * s->capkv : 64;
      kv_t *kv = realloc(s->kv, cap * sizeof(*kv));
      if (!kv) goto oom;
      s->kv = kv;
      s->capkv = cap;
    }
    memmove(&s->kv[i + 1], &s->kv[i], (s->nkv - i) * sizeof(kv_t));
    s->nkv++;
    s->kv[i].key = key;
  }
  s->kv[i].val = val;
  s->kv[i].len = r.value_len;
  gy_wire_request_free(&r);
  uint8_t *buf;
  size_t n;
  int rc = gy_wire_empty_encode(&buf, &n);
  gy__svc_reply_encoded(call, rc, buf, n);
  for (held_get_t *g = s->gets, *next; g; g = next) {
    next = g->next;
    if (!strcmp(g->key, s->kv[i].key)) gy__svc_get_release(g, GY_RPC_OK, NULL, &s->kv[i]);
  }
  return;
oom:
  free(val);
  free(key);
  gy_wire_request_free(&r);
  gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
}

void gy__svc_on_store_get(void *ud, gy_rpc_call_t *call, const uint8_t *req, size_t len) {
  gy_service_t *s = ud;
  gy_wire_request_t r;
  if (store_request(s, call, GY_WIRE_REQ_STORE_GET, req, len, &r)) return;
  int found;
  size_t i = kv_find(s, r.key, &found);
  if (found) {
    reply_value(call, &s->kv[i]);
  } else if (r.timeout_ms <= 0 || s->shutting_down) {
    char msg[300];
    snprintf(msg, sizeof(msg), "store key %.250s: not set", r.key);
    gy_rpc_reply(call, GY_RPC_DEADLINE_EXCEEDED, msg, NULL, 0);
  } else {
    held_get_t *g = calloc(1, sizeof(*g));
    char *key = strdup(r.key);
    if (!g || !key) {
      free(g);
      free(key);
      gy_rpc_reply(call, GY_RPC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
    } else {
      g->s = s;
      g->rpc = call;
      g->key = key;
      uv_timer_init(s->loop, &g->timer);
      g->timer.data = g;
      int ms = r.timeout_ms < STORE_MAX_TIMEOUT_MS ? r.timeout_ms : STORE_MAX_TIMEOUT_MS;
      uv_timer_start(&g->timer, get_timeout, (uint64_t)ms, 0);
      g->next = s->gets;
      if (s->gets) s->gets->prev = g;
      s->gets = g;
    }
  }
  gy_wire_request_free(&r);
}
