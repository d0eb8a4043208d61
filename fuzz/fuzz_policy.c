/* fuzz_policy: the repair policy parser (config/policy_file.c) on arbitrary bytes, as
 * `gyroctl policy set FILE` hands them to the controller. Properties: no crash, leak or
 * undefined behaviour; a refused file leaves the policy unchanged and the error names the file
 * in valid UTF-8; an accepted policy passes gy_policy_check, and its formatted text (`policy
 * show`) is read back to an equal policy. */
#include <stdint.h>
#include <string.h>

#include "fuzz/fuzz_util.h"
#include "config/policy_file.h"
#include "policies/policy.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  atexit(fuzz_temp_cleanup);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 64 * 1024) return -1;
  const char *path = fuzz_write_temp(data, size, ".yaml");
  gy_policy_t p, before;
  gy_policy_default(&p);
  before = p;
  char errmsg[1024] = "";
  int rc = gy_policy_load(&p, path, errmsg, sizeof(errmsg));
  if (rc) {
    if (!gy_policy_equal(&p, &before)) fuzz_fail("a refused file changed the policy");
    if (!errmsg[0]) fuzz_fail("error %d without a message", rc);
    if (!strstr(errmsg, path)) fuzz_fail("the error does not name the file: %s", errmsg);
    if (!fuzz_utf8_ok(errmsg, strlen(errmsg))) fuzz_fail("the error is not UTF-8: %s", errmsg);
    return 0;
  }
  if (gy_policy_check(&p, errmsg, sizeof(errmsg))) fuzz_fail("accepted, then: %s", errmsg);
  static char text[1 << 16];
  size_t n = gy_policy_format(&p, text, sizeof(text));
  if (n >= sizeof(text)) fuzz_fail("formatted policy of %zu bytes", n);
  fuzz_write_temp((const uint8_t *)text, n, ".yaml");
  gy_policy_t back;
  gy_policy_default(&back);
  if (gy_policy_load(&back, path, errmsg, sizeof(errmsg)))
    fuzz_fail("the formatted policy is refused: %s\n%s", errmsg, text);
  if (!gy_policy_equal(&p, &back))
    fuzz_fail("the formatted policy reads back different:\n%s", text);
  return 0;
}
