/* nvml: GPU health read through NVML, loaded at run time (dlopen of libnvidia-ml.so.1), so the
 * worker builds and runs on machines without a GPU driver. Temperature, memory used/total,
 * utilisation, SM clock, clock throttle reasons, volatile uncorrected ECC errors, and Xid critical
 * errors seen since open (when the driver lets us register for them). Every field has a has_*
 * flag: a value the device does not report is "unavailable", never a made-up number. */
#ifndef GY_NVML_H
#define GY_NVML_H

#include <stddef.h>
#include <stdint.h>

/* Throttle-reason bits (NVML's nvmlClocksThrottleReason* / nvmlClocksEventReason* values). */
#define GY_GPU_THROTTLE_IDLE 0x1ull
#define GY_GPU_THROTTLE_APP_CLOCKS 0x2ull
#define GY_GPU_THROTTLE_SW_POWER_CAP 0x4ull
#define GY_GPU_THROTTLE_HW_SLOWDOWN 0x8ull
#define GY_GPU_THROTTLE_SYNC_BOOST 0x10ull
#define GY_GPU_THROTTLE_SW_THERMAL 0x20ull
#define GY_GPU_THROTTLE_HW_THERMAL 0x40ull
#define GY_GPU_THROTTLE_HW_POWER_BRAKE 0x80ull
#define GY_GPU_THROTTLE_DISPLAY_CLOCK 0x100ull

typedef struct {
  int index;
  char name[96];
  int has_temp;
  unsigned temp_c; /* GPU core temperature, Celsius */
  int has_mem;
  uint64_t mem_used, mem_total; /* bytes */
  int has_util;
  unsigned util_gpu, util_mem; /* percent over the driver's last sample period */
  int has_sm_clock;
  unsigned sm_clock_mhz;
  int has_throttle;
  uint64_t throttle; /* GY_GPU_THROTTLE_* bits */
  int has_ecc;
  uint64_t ecc_uncorrected; /* volatile (since the driver loaded) uncorrected ECC errors */
  int has_xid;
  unsigned xid_count; /* Xid critical errors seen since gy_nvml_open */
  uint64_t last_xid;  /* the last one's Xid number (0 if none) */
} gy_gpu_health_t;

typedef struct gy_nvml gy_nvml_t;

/* Loads NVML (lib NULL: "libnvidia-ml.so.1"; a path for tests) and initialises it. Returns 0, or
 * GY_ENOTSUP with "NVML unavailable: <reason>" in errmsg when the library, one of its symbols,
 * the driver or a GPU is missing — a normal case on CPU machines, not a crash. */
int gy_nvml_open(gy_nvml_t **out, const char *lib, char *errmsg, size_t errlen);
/* Shuts NVML down and unloads it; NULL is a no-op. */
void gy_nvml_close(gy_nvml_t *n);
int gy_nvml_device_count(const gy_nvml_t *n);

/* Reads device `index` into *h (fields NVML refuses stay has_* = 0). Pending Xid events are
 * drained without waiting. GY_EINVAL for an index out of range, GY_EIO (reason in errmsg) when
 * the device cannot be read at all. */
int gy_nvml_read(gy_nvml_t *n, int index, gy_gpu_health_t *h, char *errmsg, size_t errlen);

/* Comma-separated names of the throttle bits ("sw_power_cap,hw_thermal"; "none" for 0) into buf;
 * returns buf. */
const char *gy_nvml_throttle_str(uint64_t bits, char *buf, size_t len);

/* One line for logs: "gpu0 NVIDIA H100 ...: 54C, mem 10.2/79.6 GiB, util 97%, sm 1980 MHz,
 * throttle none, ecc 0, xid 0", with "n/a" for unavailable fields. */
void gy_nvml_format(const gy_gpu_health_t *h, char *buf, size_t len);

#endif
