/*
 * svc_gpu: a rank's GPU health (the GpuHealth of a StepReport, as controller/wire.h decodes it):
 * into the telemetry, and a new hardware fault (an Xid, an uncorrected ECC error, a protective
 * throttle) is told once, as an event and an alert.
 *
 * API: gpu_report.
 *
 * Invariants: hw[r] holds rank r's counters as last reported, so a fault is told when its
 * counter grows, never twice for one report.
 */
#include "controller/service_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

/* GPU throttle reasons that mean the hardware protects itself (NVML's bits: HW slowdown, SW
 * and HW thermal, HW power brake), as opposed to idling or power capping by configuration. */
#define HW_THROTTLE_FAULT (0x8ull | 0x20ull | 0x40ull | 0x80ull)

/* A rank's GPU health: into the telemetry, and a "hardware" event (and alert) when an Xid
 * error or an uncorrected ECC error is new, or a protective throttle starts. */
void gy__svc_gpu_report(gy_service_t *s, int rank, int64_t step, const gy_wire_gpu_t *g) {
  gy_telemetry_gpu(s->o.telemetry, rank, g->has_temp ? (double)g->temp_c : NAN,
                   g->has_mem ? (double)g->mem_used_bytes : NAN,
                   g->has_mem ? (double)g->mem_total_bytes : NAN,
                   g->has_util ? g->util_gpu_pct / 100.0 : NAN);
  if (rank < 0 || rank >= s->o.world) return;
  if (!s->hw && !(s->hw = calloc((size_t)s->o.world, sizeof(*s->hw)))) return;
  hw_slot_t *h = &s->hw[rank];
  char what[256] = "";
  size_t n = 0;
  if (g->has_xid && h->seen && g->xid_count > h->xid_count)
    n += (size_t)snprintf(what + n, sizeof(what) - n, "%u new Xid error(s), last Xid %llu; ",
                          g->xid_count - h->xid_count, (unsigned long long)g->last_xid);
  if (g->has_ecc && h->seen && g->ecc_uncorrected > h->ecc_uncorrected && n < sizeof(what))
    n += (size_t)snprintf(what + n, sizeof(what) - n, "%llu new uncorrected ECC error(s); ",
                          (unsigned long long)(g->ecc_uncorrected - h->ecc_uncorrected));
  uint64_t fault = g->has_throttle ? g->throttle_reasons & HW_THROTTLE_FAULT : 0;
  if (fault & ~h->throttle && n < sizeof(what))
    n += (size_t)snprintf(what + n, sizeof(what) - n, "throttling (reasons 0x%llx); ",
                          (unsigned long long)fault);
  h->seen = 1;
  if (g->has_xid) h->xid_count = g->xid_count;
  if (g->has_ecc) h->ecc_uncorrected = g->ecc_uncorrected;
  h->throttle = fault;
  if (!what[0]) return;
  if (n >= 2 && n < sizeof(what)) what[n - 2] = 0; /* the last "; " */
  char msg[512];
  snprintf(msg, sizeof(msg), "rank %d GPU %d (%.64s) at step %lld: %s", rank, g->index, g->name,
           (long long)step, what);
  gy__svc_eventf(s, GY_EVENT_HARDWARE, "%s", msg);
  gy_alert_post(s->o.alert, "hardware", step, msg);
}
