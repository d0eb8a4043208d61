/* test_nvml: GPU health through NVML (worker/nvml.h) on any machine.
 *
 * The absent paths run everywhere: a library that does not exist, a real library that is not
 * NVML (libm: its symbols are missing), the default library on a machine without driver or GPU —
 * each must give GY_ENOTSUP with a clear "NVML unavailable: ..." reason and no crash. Where NVML
 * and a GPU are present, device 0 is read and its figures checked for sanity. The formatting
 * helpers are pure and checked exactly. */
#include <stdio.h>
#include <string.h>

#include "common/err.h"
#include "tests/test.h"
#include "worker/nvml.h"

static void absent_paths(void) {
  gy_nvml_t *n = (gy_nvml_t *)1;
  char err[512] = "";
  CHECK_EQ_INT(gy_nvml_open(&n, "/nonexistent/libnvidia-ml.so.1", err, sizeof(err)), GY_ENOTSUP);
  CHECK(n == NULL);
  CHECK_MSG(strstr(err, "NVML unavailable") && strstr(err, "/nonexistent/libnvidia-ml.so.1"), "%s",
            err);
  printf("missing library: %s\n", err);

  err[0] = 0;
  CHECK_EQ_INT(gy_nvml_open(&n, "libm.so.6", err, sizeof(err)), GY_ENOTSUP);
  CHECK(n == NULL);
  CHECK_MSG(strstr(err, "does not export nvmlInit_v2") != NULL, "%s", err);
  printf("not NVML: %s\n", err);

  /* NULL handles and out-of-range reads are refused, not dereferenced */
  gy_gpu_health_t h;
  CHECK_EQ_INT(gy_nvml_device_count(NULL), 0);
  CHECK_EQ_INT(gy_nvml_read(NULL, 0, &h, err, sizeof(err)), GY_EINVAL);
  CHECK(strstr(err, "no GPU with index 0") != NULL);
  gy_nvml_close(NULL);
}

static void formatting(void) {
  char b[256];
  CHECK(strcmp(gy_nvml_throttle_str(0, b, sizeof(b)), "none") == 0);
  CHECK(strcmp(gy_nvml_throttle_str(GY_GPU_THROTTLE_SW_POWER_CAP | GY_GPU_THROTTLE_HW_THERMAL, b,
                                    sizeof(b)),
               "sw_power_cap,hw_thermal") == 0);
  CHECK(strcmp(gy_nvml_throttle_str(GY_GPU_THROTTLE_IDLE | 0x10000ull, b, sizeof(b)),
               "idle,other(0x10000)") == 0);
  char small[8];
  gy_nvml_throttle_str(GY_GPU_THROTTLE_SW_THERMAL | GY_GPU_THROTTLE_HW_SLOWDOWN, small,
                       sizeof(small));
  CHECK(strlen(small) < sizeof(small)); /* truncated, terminated */

  gy_gpu_health_t h;
  memset(&h, 0, sizeof(h));
  h.index = 1;
  snprintf(h.name, sizeof(h.name), "Test GPU");
  h.has_temp = 1;
  h.temp_c = 61;
  h.has_mem = 1;
  h.mem_used = 3ull << 30;
  h.mem_total = 80ull << 30;
  h.has_throttle = 1;
  h.throttle = GY_GPU_THROTTLE_HW_SLOWDOWN;
  gy_nvml_format(&h, b, sizeof(b));
  CHECK_MSG(strcmp(b, "gpu1 Test GPU: 61C, mem 3.0/80.0 GiB, util n/a, sm n/a, throttle "
                      "hw_slowdown, ecc n/a, xid n/a") == 0,
            "%s", b);
}

static void real_nvml(void) {
  gy_nvml_t *n = NULL;
  char err[512] = "";
  int rc = gy_nvml_open(&n, NULL, err, sizeof(err));
  if (rc) {
    /* a CPU machine: the default library or the GPU is absent, and that is reported clearly */
    CHECK_EQ_INT(rc, GY_ENOTSUP);
    CHECK(n == NULL);
    CHECK_MSG(strncmp(err, "NVML unavailable: ", 18) == 0, "%s", err);
    printf("this machine: %s\n", err);
    return;
  }
  int cnt = gy_nvml_device_count(n);
  CHECK(cnt >= 1);
  gy_gpu_health_t h;
  CHECK_EQ_INT(gy_nvml_read(n, 0, &h, err, sizeof(err)), 0);
  char line[512];
  gy_nvml_format(&h, line, sizeof(line));
  printf("%s\n", line);
  if (h.has_temp) CHECK(h.temp_c > 0 && h.temp_c < 130);
  if (h.has_mem) CHECK(h.mem_total > 0 && h.mem_used <= h.mem_total);
  if (h.has_util) CHECK(h.util_gpu <= 100 && h.util_mem <= 100);
  if (h.has_sm_clock) CHECK(h.sm_clock_mhz < 10000);
  CHECK_EQ_INT(gy_nvml_read(n, cnt, &h, err, sizeof(err)), GY_EINVAL);
  gy_nvml_close(n);
}

int main(void) {
  absent_paths();
  formatting();
  real_nvml();
  GY_TEST_END();
}
