/* fuzz_ckpt: the checkpoint reader (worker/ckpt.c) on arbitrary bytes, from a buffer of the
 * input's exact length (so ASan sees any read past it) and, for small inputs whose first byte
 * is odd, from a temporary file through gy_ckpt_load_file. Properties: no crash, leak or
 * undefined behaviour; a refusal names its source; an accepted checkpoint's blobs lie inside
 * the bytes parsed, have NUL-terminated names and can be looked up by name. */
#include <stdint.h>
#include <string.h>

#include "fuzz/fuzz_util.h"
#include "worker/ckpt.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  atexit(fuzz_temp_cleanup);
  return 0;
}

static void check_view(const gy_ckpt_view_t *v, const uint8_t *base, size_t len) {
  for (int i = 0; i < v->nblobs; i++) {
    const gy_ckpt_blob_t *b = &v->blobs[i];
    if (!memchr(b->name, '\0', sizeof(b->name))) fuzz_fail("blob %d: name not terminated", i);
    const uint8_t *d = b->data;
    if (base && (d < base || b->nbytes > len || (size_t)(d - base) > len - b->nbytes))
      fuzz_fail("blob %s lies outside the buffer", b->name);
    if (gy_ckpt_find(v, b->name) == NULL) fuzz_fail("blob %s cannot be found", b->name);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > (1u << 20)) return -1;
  uint8_t *copy = malloc(size ? size : 1);
  if (!copy) return 0;
  memcpy(copy, data, size);
  gy_ckpt_view_t v;
  char errmsg[512] = "";
  int rc = gy_ckpt_parse(copy, size, "fuzz-input", &v, errmsg, sizeof(errmsg));
  if (rc) {
    if (!strstr(errmsg, "fuzz-input")) fuzz_fail("the error does not name its source: %s", errmsg);
  } else {
    check_view(&v, copy, size);
    gy_ckpt_view_free(&v);
  }
  free(copy);
  if (size && size < 4096 && (data[0] & 1)) {
    const char *path = fuzz_write_temp(data, size, ".gyck");
    gy_ckpt_buf_t *b = NULL;
    rc = gy_ckpt_load_file(path, &b, &v, errmsg, sizeof(errmsg));
    if (rc) {
      if (!strstr(errmsg, path)) fuzz_fail("the error does not name the file: %s", errmsg);
    } else {
      check_view(&v, gy_ckpt_buf_data(b), gy_ckpt_buf_len(b));
      gy_ckpt_view_free(&v);
    }
    gy_ckpt_buf_unref(b);
  }
  return 0;
}
