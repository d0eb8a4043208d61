/*
 * docindex: the per-shard document index (X.docs beside the training shard X.bin).
 *
 * API, in order: gy_docindex_path() names the index of a shard, gy_docindex_crc() fingerprints
 * the shard's tokens, gy_docindex_build() cuts a text's document starts down to one shard,
 * gy_docindex_write() and gy_docindex_read() move an index to and from disk,
 * gy_docindex_check() tells whether an index still describes a shard, gy_docindex_free().
 *
 * The format is in docindex.h. The index carries the shard's token count and CRC-32C because a
 * shard may be changed after gyro-prep wrote it (junk spliced in, a file replaced by hand); an
 * index that no longer matches would name the wrong documents, so the loader drops it instead.
 *
 * Invariants: a written index appears complete or not at all (gy_write_file_atomic); a read
 * index has passed every structural check, so its users may binary-search its offsets and take
 * offsets[0] == 0 for granted when the shard has tokens.
 */
#include "worker/docindex.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "common/crc32c.h"
#include "common/err.h"
#include "common/fsutil.h"
#include "common/le.h"

char *gy_docindex_path(const char *shard_path) {
  size_t n = strlen(shard_path);
  if (n >= 4 && strcmp(shard_path + n - 4, ".bin") == 0) n -= 4;
  char *p = malloc(n + sizeof(".docs"));
  if (!p) return NULL;
  memcpy(p, shard_path, n);
  memcpy(p + n, ".docs", sizeof(".docs"));
  return p;
}

uint32_t gy_docindex_crc(const uint16_t *tokens, size_t ntokens) {
  /* The bytes as the shard holds them: the mapping and gy_shard_write() both use the host's
   * layout of uint16, which is little-endian wherever llm.c shards are read. */
  return gy_crc32c(0, tokens, ntokens * sizeof(uint16_t));
}

/* Number of starts <= x (starts sorted). */
static size_t upper_bound(const uint64_t *starts, size_t n, uint64_t x) {
  size_t lo = 0, hi = n;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (starts[mid] <= x)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

int gy_docindex_build(gy_docindex_t *ix, const uint64_t *starts, size_t nstarts, uint64_t off,
                      uint64_t n) {
  memset(ix, 0, sizeof(*ix));
  ix->ntokens = n;
  /* The document holding the shard's first token is the last one starting at or before it. */
  size_t a = upper_bound(starts, nstarts, off);
  if (n == 0) {
    ix->first_doc = a;
    return GY_OK;
  }
  if (a == 0) return GY_EINVAL;
  size_t b = upper_bound(starts, nstarts, off + n - 1); /* starts in (off, off + n) are a .. b-1 */
  ix->first_doc = a - 1;
  ix->count = 1 + (b - a);
  ix->offsets = malloc(ix->count * sizeof(uint64_t));
  if (!ix->offsets) {
    memset(ix, 0, sizeof(*ix));
    return GY_ENOMEM;
  }
  ix->offsets[0] = 0;
  for (size_t k = a; k < b; k++)
    ix->offsets[1 + k - a] = starts[k] - off;
  return GY_OK;
}

int gy_docindex_write(const char *path, const gy_docindex_t *ix, char *errmsg, size_t errlen) {
  uint8_t hdr[GY_DOCINDEX_HEADER_BYTES];
  uint8_t *body = NULL;
  memset(hdr, 0, sizeof(hdr));
  memcpy(hdr, GY_DOCINDEX_MAGIC, sizeof(GY_DOCINDEX_MAGIC));
  gy_le_put64(hdr + 8, ix->ntokens);
  gy_le_put32(hdr + 16, ix->crc);
  gy_le_put32(hdr + 20, 0);
  gy_le_put64(hdr + 24, ix->first_doc);
  gy_le_put64(hdr + 32, ix->count);
  if (ix->count > 0) {
    if (ix->count > SIZE_MAX / 8 || !(body = malloc((size_t)ix->count * 8))) {
      gy_errmsg(errmsg, errlen, "document index %s: out of memory", path);
      return GY_ENOMEM;
    }
    for (uint64_t i = 0; i < ix->count; i++)
      gy_le_put64(body + 8 * i, ix->offsets[i]);
  }
  struct iovec iov[2] = {{hdr, sizeof(hdr)}, {body, (size_t)ix->count * 8}};
  int rc = gy_write_file_atomic(path, iov, ix->count > 0 ? 2 : 1, errmsg, errlen);
  free(body);
  return rc;
}

int gy_docindex_read(gy_docindex_t *ix, const char *path, char *errmsg, size_t errlen) {
  uint8_t hdr[GY_DOCINDEX_HEADER_BYTES];
  uint8_t *body = NULL;
  struct stat st;
  int rc;

  memset(ix, 0, sizeof(*ix));
  FILE *f = fopen(path, "rb");
  if (!f) {
    int e = errno;
    gy_errmsg(errmsg, errlen, "document index %s: %s", path, e == ENOENT ? "absent" : strerror(e));
    return e == ENOENT || e == ENOTDIR ? GY_ENOENT : GY_EIO;
  }
  if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
    gy_errmsg(errmsg, errlen, "document index %s: not a regular file", path);
    rc = GY_EIO;
    goto err;
  }
  uint64_t size = (uint64_t)st.st_size;
  if (size < sizeof(hdr) || fread(hdr, sizeof(hdr), 1, f) != 1) {
    gy_errmsg(errmsg, errlen, "document index %s: truncated header (%llu bytes, need %zu)", path,
              (unsigned long long)size, sizeof(hdr));
    rc = GY_ECORRUPT;
    goto err;
  }
  if (memcmp(hdr, GY_DOCINDEX_MAGIC, sizeof(GY_DOCINDEX_MAGIC)) != 0) {
    gy_errmsg(errmsg, errlen, "document index %s: bad magic (not a GYDOCS1 file)", path);
    rc = GY_ECORRUPT;
    goto err;
  }
  ix->ntokens = gy_le_get64(hdr + 8);
  ix->crc = gy_le_get32(hdr + 16);
  uint32_t reserved = gy_le_get32(hdr + 20);
  ix->first_doc = gy_le_get64(hdr + 24);
  ix->count = gy_le_get64(hdr + 32);
  if (reserved != 0) {
    gy_errmsg(errmsg, errlen, "document index %s: reserved field is %u, not 0", path, reserved);
    rc = GY_ECORRUPT;
    goto err;
  }
  /* Entries are strictly increasing offsets below ntokens, so there are at most ntokens; the
   * size check then bounds the allocation by the file's own size. */
  if (ix->count > ix->ntokens || ix->count > (size - sizeof(hdr)) / 8 ||
      size != sizeof(hdr) + 8 * ix->count) {
    gy_errmsg(errmsg, errlen,
              "document index %s: %llu entries for %llu tokens in a file of %llu "
              "bytes (want %d + 8 per entry)",
              path, (unsigned long long)ix->count, (unsigned long long)ix->ntokens,
              (unsigned long long)size, GY_DOCINDEX_HEADER_BYTES);
    rc = GY_ECORRUPT;
    goto err;
  }
  if (ix->ntokens > 0 && ix->count == 0) {
    gy_errmsg(errmsg, errlen, "document index %s: no entry for %llu tokens", path,
              (unsigned long long)ix->ntokens);
    rc = GY_ECORRUPT;
    goto err;
  }
  if (ix->count > 0) {
    body = malloc((size_t)ix->count * 8);
    ix->offsets = malloc((size_t)ix->count * sizeof(uint64_t));
    if (!body || !ix->offsets) {
      gy_errmsg(errmsg, errlen, "document index %s: out of memory", path);
      rc = GY_ENOMEM;
      goto err;
    }
    if (fread(body, 8, (size_t)ix->count, f) != (size_t)ix->count) {
      gy_errmsg(errmsg, errlen, "document index %s: read error", path);
      rc = GY_EIO;
      goto err;
    }
    for (uint64_t i = 0; i < ix->count; i++) {
      uint64_t o = gy_le_get64(body + 8 * i);
      if ((i == 0 && o != 0) || (i > 0 && o <= ix->offsets[i - 1]) || o >= ix->ntokens) {
        gy_errmsg(errmsg, errlen,
                  "document index %s: entry %llu at offset %llu (entries start at 0, increase "
                  "strictly and stay below %llu tokens)",
                  path, (unsigned long long)i, (unsigned long long)o,
                  (unsigned long long)ix->ntokens);
        rc = GY_ECORRUPT;
        goto err;
      }
      ix->offsets[i] = o;
    }
  }
  free(body);
  fclose(f);
  return GY_OK;

err:
  free(body);
  gy_docindex_free(ix);
  fclose(f);
  return rc;
}

int gy_docindex_check(const gy_docindex_t *ix, const uint16_t *tokens, size_t ntokens, char *errmsg,
                      size_t errlen) {
  if (ix->ntokens != (uint64_t)ntokens) {
    gy_errmsg(errmsg, errlen,
              "stale: it describes %llu tokens, the shard has %zu (changed after gyro-prep)",
              (unsigned long long)ix->ntokens, ntokens);
    return GY_EMISMATCH;
  }
  uint32_t crc = gy_docindex_crc(tokens, ntokens);
  if (crc != ix->crc) {
    gy_errmsg(errmsg, errlen,
              "stale: the shard's CRC-32C is %08x, the index was written for %08x (changed "
              "after gyro-prep)",
              crc, ix->crc);
    return GY_EMISMATCH;
  }
  return GY_OK;
}

void gy_docindex_free(gy_docindex_t *ix) {
  if (!ix) return;
  free(ix->offsets);
  memset(ix, 0, sizeof(*ix));
}
