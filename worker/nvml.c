/*
 * nvml: GPU health through NVML loaded at run time.
 *
 * API (nvml.h): gy_nvml_open / gy_nvml_close, gy_nvml_device_count, gy_nvml_read,
 * gy_nvml_throttle_str, gy_nvml_format.
 *
 * NVML is dlopen-ed, never linked, so the same binary runs with or without a driver; the few NVML
 * types used here are declared below with NVML's ABI (handles are opaque pointers, the structs
 * are NVML's own layouts), so no NVML header is needed to build. Required symbols: init, shutdown,
 * device count and handle; every other symbol is optional and its field reads "unavailable" when
 * it is missing or the device refuses it (NOT_SUPPORTED, NO_PERMISSION, ...).
 *
 * Xid critical errors: at open, one event set is created and every device registered for
 * nvmlEventTypeXidCriticalError (where the driver allows it); gy_nvml_read drains pending events
 * with a zero timeout and counts them per device. Not thread-safe: one caller at a time.
 */
#include "worker/nvml.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

/* ---- NVML's ABI (the subset used) ---- */
typedef int nvml_ret_t; /* nvmlReturn_t: 0 success */
typedef void *nvml_dev_t;
typedef void *nvml_evset_t;
typedef struct {
  unsigned long long total, free, used;
} nvml_memory_t;
typedef struct {
  unsigned int gpu, memory;
} nvml_util_t;
typedef struct {
  nvml_dev_t device;
  unsigned long long type, data;
  unsigned int gpu_instance, compute_instance;
} nvml_event_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_TIMEOUT 10
#define NVML_TEMPERATURE_GPU 0
#define NVML_CLOCK_SM 1
#define NVML_MEMORY_ERROR_TYPE_UNCORRECTED 1
#define NVML_VOLATILE_ECC 0
#define NVML_EVENT_XID_CRITICAL 0x8ull
#define MAX_DEVICES 64

struct gy_nvml {
  void *lib;
  nvml_ret_t (*init)(void);
  nvml_ret_t (*shutdown)(void);
  const char *(*errstr)(nvml_ret_t);
  nvml_ret_t (*count)(unsigned int *);
  nvml_ret_t (*handle)(unsigned int, nvml_dev_t *);
  nvml_ret_t (*name)(nvml_dev_t, char *, unsigned int);
  nvml_ret_t (*temp)(nvml_dev_t, int, unsigned int *);
  nvml_ret_t (*mem)(nvml_dev_t, nvml_memory_t *);
  nvml_ret_t (*util)(nvml_dev_t, nvml_util_t *);
  nvml_ret_t (*clock)(nvml_dev_t, int, unsigned int *);
  nvml_ret_t (*throttle)(nvml_dev_t, unsigned long long *);
  nvml_ret_t (*ecc)(nvml_dev_t, int, int, unsigned long long *);
  nvml_ret_t (*evset_create)(nvml_evset_t *);
  nvml_ret_t (*evset_free)(nvml_evset_t);
  nvml_ret_t (*register_events)(nvml_dev_t, unsigned long long, nvml_evset_t);
  nvml_ret_t (*evset_wait)(nvml_evset_t, nvml_event_t *, unsigned int);

  int initialised;
  int ndev;
  nvml_dev_t dev[MAX_DEVICES];
  nvml_evset_t evset;
  int xid_registered[MAX_DEVICES];
  unsigned xid_count[MAX_DEVICES];
  uint64_t last_xid[MAX_DEVICES];
};

/* Looks up the first of names that the library exports; NULL if none. */
static void *sym(void *lib, const char *a, const char *b) {
  void *p = dlsym(lib, a);
  if (!p && b) p = dlsym(lib, b);
  return p;
}

#define LOAD(field, a, b)                                                                          \
  do {                                                                                             \
    void *p_ = sym(n->lib, (a), (b));                                                              \
    memcpy(&n->field, &p_, sizeof(p_));                                                            \
  } while (0)

static const char *ret_str(const gy_nvml_t *n, nvml_ret_t r, char *buf, size_t len) {
  const char *s = n->errstr ? n->errstr(r) : NULL;
  if (s) return s;
  snprintf(buf, len, "NVML error %d", r);
  return buf;
}

int gy_nvml_open(gy_nvml_t **out, const char *lib, char *errmsg, size_t errlen) {
  *out = NULL;
  const char *path = lib ? lib : "libnvidia-ml.so.1";
  gy_nvml_t *n = calloc(1, sizeof(*n));
  if (!n) return GY_ENOMEM;
  char tmp[64];
  int rc = GY_ENOTSUP;
  n->lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (!n->lib) {
    const char *e = dlerror();
    gy_errmsg(errmsg, errlen, "NVML unavailable: %s", e ? e : path);
    goto err;
  }
  LOAD(init, "nvmlInit_v2", "nvmlInit");
  LOAD(shutdown, "nvmlShutdown", NULL);
  LOAD(errstr, "nvmlErrorString", NULL);
  LOAD(count, "nvmlDeviceGetCount_v2", "nvmlDeviceGetCount");
  LOAD(handle, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
  LOAD(name, "nvmlDeviceGetName", NULL);
  LOAD(temp, "nvmlDeviceGetTemperature", NULL);
  LOAD(mem, "nvmlDeviceGetMemoryInfo", NULL);
  LOAD(util, "nvmlDeviceGetUtilizationRates", NULL);
  LOAD(clock, "nvmlDeviceGetClockInfo", NULL);
  LOAD(throttle, "nvmlDeviceGetCurrentClocksEventReasons",
       "nvmlDeviceGetCurrentClocksThrottleReasons");
  LOAD(ecc, "nvmlDeviceGetTotalEccErrors", NULL);
  LOAD(evset_create, "nvmlEventSetCreate", NULL);
  LOAD(evset_free, "nvmlEventSetFree", NULL);
  LOAD(register_events, "nvmlDeviceRegisterEvents", NULL);
  LOAD(evset_wait, "nvmlEventSetWait_v2", "nvmlEventSetWait");
  const char *missing = !n->init       ? "nvmlInit_v2"
                        : !n->shutdown ? "nvmlShutdown"
                        : !n->count    ? "nvmlDeviceGetCount_v2"
                        : !n->handle   ? "nvmlDeviceGetHandleByIndex_v2"
                                       : NULL;
  if (missing) {
    gy_errmsg(errmsg, errlen, "NVML unavailable: %s does not export %s", path, missing);
    goto err;
  }
  nvml_ret_t r = n->init();
  if (r != NVML_SUCCESS) {
    gy_errmsg(errmsg, errlen, "NVML unavailable: nvmlInit: %s", ret_str(n, r, tmp, sizeof(tmp)));
    goto err;
  }
  n->initialised = 1;
  unsigned cnt = 0;
  if ((r = n->count(&cnt)) != NVML_SUCCESS || cnt == 0) {
    gy_errmsg(errmsg, errlen, "NVML unavailable: %s",
              r != NVML_SUCCESS ? ret_str(n, r, tmp, sizeof(tmp)) : "no GPU");
    goto err;
  }
  n->ndev = cnt > MAX_DEVICES ? MAX_DEVICES : (int)cnt;
  for (int i = 0; i < n->ndev; i++) {
    if ((r = n->handle((unsigned)i, &n->dev[i])) != NVML_SUCCESS) {
      gy_errmsg(errmsg, errlen, "NVML unavailable: device %d: %s", i,
                ret_str(n, r, tmp, sizeof(tmp)));
      goto err;
    }
  }
  /* Xid events: optional (needs driver support and, on some systems, privileges) */
  if (n->evset_create && n->register_events && n->evset_wait &&
      n->evset_create(&n->evset) == NVML_SUCCESS) {
    int any = 0;
    for (int i = 0; i < n->ndev; i++) {
      n->xid_registered[i] =
          n->register_events(n->dev[i], NVML_EVENT_XID_CRITICAL, n->evset) == NVML_SUCCESS;
      any |= n->xid_registered[i];
    }
    if (!any) {
      if (n->evset_free) n->evset_free(n->evset);
      n->evset = NULL;
    }
  }
  *out = n;
  return 0;
err:
  gy_nvml_close(n);
  return rc;
}

void gy_nvml_close(gy_nvml_t *n) {
  if (!n) return;
  if (n->evset && n->evset_free) n->evset_free(n->evset);
  if (n->initialised) n->shutdown();
  if (n->lib) dlclose(n->lib);
  free(n);
}

int gy_nvml_device_count(const gy_nvml_t *n) {
  return n ? n->ndev : 0;
}

/* Counts pending Xid events (zero timeout) per device. */
static void drain_xids(gy_nvml_t *n) {
  if (!n->evset) return;
  for (int k = 0; k < 1024; k++) { /* bounded: a storm of events cannot hold the caller */
    nvml_event_t ev;
    memset(&ev, 0, sizeof(ev));
    if (n->evset_wait(n->evset, &ev, 0) != NVML_SUCCESS) return; /* TIMEOUT: none pending */
    if (!(ev.type & NVML_EVENT_XID_CRITICAL)) continue;
    for (int i = 0; i < n->ndev; i++) {
      if (n->dev[i] == ev.device) {
        n->xid_count[i]++;
        n->last_xid[i] = ev.data;
        break;
      }
    }
  }
}

int gy_nvml_read(gy_nvml_t *n, int index, gy_gpu_health_t *h, char *errmsg, size_t errlen) {
  memset(h, 0, sizeof(*h));
  if (!n || index < 0 || index >= n->ndev) {
    gy_errmsg(errmsg, errlen, "nvml: no GPU with index %d (%d visible)", index, n ? n->ndev : 0);
    return GY_EINVAL;
  }
  nvml_dev_t d = n->dev[index];
  h->index = index;
  if (n->name && n->name(d, h->name, sizeof(h->name)) != NVML_SUCCESS) h->name[0] = 0;
  h->name[sizeof(h->name) - 1] = 0;
  unsigned v = 0;
  if (n->temp && n->temp(d, NVML_TEMPERATURE_GPU, &v) == NVML_SUCCESS) {
    h->has_temp = 1;
    h->temp_c = v;
  }
  nvml_memory_t mem;
  if (n->mem && n->mem(d, &mem) == NVML_SUCCESS) {
    h->has_mem = 1;
    h->mem_used = mem.used;
    h->mem_total = mem.total;
  }
  nvml_util_t u;
  if (n->util && n->util(d, &u) == NVML_SUCCESS) {
    h->has_util = 1;
    h->util_gpu = u.gpu;
    h->util_mem = u.memory;
  }
  if (n->clock && n->clock(d, NVML_CLOCK_SM, &v) == NVML_SUCCESS) {
    h->has_sm_clock = 1;
    h->sm_clock_mhz = v;
  }
  unsigned long long bits = 0;
  if (n->throttle && n->throttle(d, &bits) == NVML_SUCCESS) {
    h->has_throttle = 1;
    h->throttle = bits;
  }
  unsigned long long ecc = 0;
  if (n->ecc &&
      n->ecc(d, NVML_MEMORY_ERROR_TYPE_UNCORRECTED, NVML_VOLATILE_ECC, &ecc) == NVML_SUCCESS) {
    h->has_ecc = 1;
    h->ecc_uncorrected = ecc;
  }
  drain_xids(n);
  if (n->evset && n->xid_registered[index]) {
    h->has_xid = 1;
    h->xid_count = n->xid_count[index];
    h->last_xid = n->last_xid[index];
  }
  if (!h->has_temp && !h->has_mem && !h->has_util && !h->has_sm_clock) {
    gy_errmsg(errmsg, errlen,
              "nvml: GPU %d reports none of temperature, memory, utilisation, "
              "clock",
              index);
    return GY_EIO;
  }
  return 0;
}

static const struct {
  uint64_t bit;
  const char *name;
} throttle_names[] = {
    {GY_GPU_THROTTLE_IDLE, "idle"},
    {GY_GPU_THROTTLE_APP_CLOCKS, "app_clocks"},
    {GY_GPU_THROTTLE_SW_POWER_CAP, "sw_power_cap"},
    {GY_GPU_THROTTLE_HW_SLOWDOWN, "hw_slowdown"},
    {GY_GPU_THROTTLE_SYNC_BOOST, "sync_boost"},
    {GY_GPU_THROTTLE_SW_THERMAL, "sw_thermal"},
    {GY_GPU_THROTTLE_HW_THERMAL, "hw_thermal"},
    {GY_GPU_THROTTLE_HW_POWER_BRAKE, "hw_power_brake"},
    {GY_GPU_THROTTLE_DISPLAY_CLOCK, "display_clock"},
};

const char *gy_nvml_throttle_str(uint64_t bits, char *buf, size_t len) {
  if (!len) return buf;
  buf[0] = 0;
  if (!bits) {
    snprintf(buf, len, "none");
    return buf;
  }
  size_t used = 0;
  uint64_t known = 0;
  for (size_t i = 0; i < sizeof(throttle_names) / sizeof(throttle_names[0]); i++) {
    known |= throttle_names[i].bit;
    if (!(bits & throttle_names[i].bit)) continue;
    int w = snprintf(buf + used, len - used, "%s%s", used ? "," : "", throttle_names[i].name);
    if (w < 0 || (size_t)w >= len - used) return buf; /* truncated, still terminated */
    used += (size_t)w;
  }
  if (bits & ~known)
    snprintf(buf + used, len - used, "%sother(0x%llx)", used ? "," : "",
             (unsigned long long)(bits & ~known));
  return buf;
}

void gy_nvml_format(const gy_gpu_health_t *h, char *buf, size_t len) {
  char t[16] = "n/a", m[48] = "n/a", u[16] = "n/a", c[24] = "n/a", th[160] = "n/a";
  char e[24] = "n/a", x[48] = "n/a";
  if (h->has_temp) snprintf(t, sizeof(t), "%uC", h->temp_c);
  if (h->has_mem)
    snprintf(m, sizeof(m), "%.1f/%.1f GiB", (double)h->mem_used / (1 << 30),
             (double)h->mem_total / (1 << 30));
  if (h->has_util) snprintf(u, sizeof(u), "%u%%", h->util_gpu);
  if (h->has_sm_clock) snprintf(c, sizeof(c), "%u MHz", h->sm_clock_mhz);
  if (h->has_throttle) gy_nvml_throttle_str(h->throttle, th, sizeof(th));
  if (h->has_ecc) snprintf(e, sizeof(e), "%llu", (unsigned long long)h->ecc_uncorrected);
  if (h->has_xid)
    snprintf(x, sizeof(x), "%u (last %llu)", h->xid_count, (unsigned long long)h->last_xid);
  snprintf(buf, len, "gpu%d %s: %s, mem %s, util %s, sm %s, throttle %s, ecc %s, xid %s", h->index,
           h->name[0] ? h->name : "?", t, m, u, c, th, e, x);
}
