/* shard: llm.c token shard files (256 x int32 header, magic 20240520, version 1, token count;
 * then uint16 tokens). */
#ifndef GY_SHARD_H
#define GY_SHARD_H

#include <stddef.h>
#include <stdint.h>

#define GY_SHARD_MAGIC 20240520
#define GY_SHARD_VERSION 1
#define GY_SHARD_HEADER_INTS 256

typedef struct {
  const uint16_t *tokens; /* mapped read-only */
  size_t ntokens;
  void *map_base; /* private */
  size_t map_len; /* private */
} gy_shard_t;

/* Maps path and validates its header and size; a bad file gets GY_ECORRUPT (or GY_ENOENT /
 * GY_EIO) with the file and the problem in errmsg. */
int gy_shard_open(gy_shard_t *s, const char *path, char *errmsg, size_t errlen);
void gy_shard_close(gy_shard_t *s);
/* Writes ntokens tokens as a shard (temporary file, fsync, rename). */
int gy_shard_write(const char *path, const uint16_t *tokens, size_t ntokens, char *errmsg,
                   size_t errlen);

#endif
