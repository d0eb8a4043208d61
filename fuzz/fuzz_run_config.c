/* fuzz_run_config: the run config parser (config/run_config.c over common/yamlcfg.c) on arbitrary
 * bytes. The input is written to a temporary file (the parser reads a path) and loaded with a
 * fixed base folder. Properties: no crash, leak or undefined behaviour; an error comes with a
 * message that names the file and is valid UTF-8 (it is printed and logged as JSON); an accepted
 * config has counts and ranges within the documented schema, and hashing it works. */
#include <stdint.h>
#include <string.h>

#include "fuzz/fuzz_util.h"
#include "config/run_config.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  setenv("GY_DATA_DIR", "/tmp/gyro-fuzz-data", 1);
  atexit(fuzz_temp_cleanup);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 64 * 1024) return -1; /* a run config is a few hundred bytes */
  const char *path = fuzz_write_temp(data, size, ".yaml");
  gy_run_config_t cfg;
  char errmsg[1024] = "";
  int rc = gy_run_config_load_dir(&cfg, path, "/tmp/gyro-fuzz-base", errmsg, sizeof(errmsg));
  if (rc) {
    if (!errmsg[0]) fuzz_fail("error %d without a message", rc);
    if (!strstr(errmsg, path)) fuzz_fail("the error does not name the file: %s", errmsg);
    if (!fuzz_utf8_ok(errmsg, strlen(errmsg))) fuzz_fail("the error is not UTF-8: %s", errmsg);
    return 0;
  }
  if (cfg.data.nchannels < 1 || cfg.data.nchannels > GY_MAX_CHANNELS)
    fuzz_fail("accepted %d channels", cfg.data.nchannels);
  if (cfg.batch < 1 || cfg.seq_len < 2 || cfg.seq_len > cfg.model.max_seq_len)
    fuzz_fail("accepted batch %d seq_len %d", cfg.batch, cfg.seq_len);
  if (cfg.ctl_world < 1 || cfg.ctl_tp < 1 || cfg.ctl_world % cfg.ctl_tp)
    fuzz_fail("accepted world %d tp %d", cfg.ctl_world, cfg.ctl_tp);
  if (cfg.ctl_tls_client_auth && !cfg.ctl_tls_ca) fuzz_fail("client_auth without a CA");
  for (int i = 0; i < cfg.data.nchannels; i++)
    if (cfg.data.channels[i].nfiles < 1) fuzz_fail("channel %d without files", i);
  (void)gy_run_config_hash(&cfg);
  gy_run_config_free(&cfg);
  return 0;
}
