/* ckpt: checkpoint files. One file per rank: a header, a directory of named blobs, the blobs,
 * each with a CRC-32C. A checkpoint is first built in memory (a snapshot: exactly the bytes of
 * the file), then written in the background; the same parser validates a file and a snapshot. */
#ifndef GY_CKPT_H
#define GY_CKPT_H

#include <stddef.h>
#include <stdint.h>

#define GY_CKPT_NAME_MAX 48

typedef struct {
  uint64_t step;        /* steps completed */
  uint64_t config_hash; /* hash of what must not change across a restore (model shape, data) */
  int32_t rank, world;  /* this file's rank of world */
  int32_t dp, tp;       /* parallel layout */
} gy_ckpt_meta_t;

/* A named blob: borrowed pointer into caller memory (build) or into the buffer (parse). */
typedef struct {
  char name[GY_CKPT_NAME_MAX];
  const void *data;
  uint64_t nbytes;
} gy_ckpt_blob_t;

/* A serialized checkpoint, reference counted so the in-memory ring and the background writer
 * can share it. */
typedef struct gy_ckpt_buf gy_ckpt_buf_t;

/* Serializes meta and blobs (copying their bytes) into a new buffer with refcount 1. */
int gy_ckpt_build(gy_ckpt_buf_t **out, const gy_ckpt_meta_t *meta, const gy_ckpt_blob_t *blobs,
                  int nblobs);
void gy_ckpt_buf_ref(gy_ckpt_buf_t *b);
void gy_ckpt_buf_unref(gy_ckpt_buf_t *b); /* NULL is a no-op */
const uint8_t *gy_ckpt_buf_data(const gy_ckpt_buf_t *b);
size_t gy_ckpt_buf_len(const gy_ckpt_buf_t *b);
uint64_t gy_ckpt_buf_step(const gy_ckpt_buf_t *b);
/* Current reference count (for tests and leak checks). */
int gy_ckpt_buf_refs(const gy_ckpt_buf_t *b);

/* A validated view of a serialized checkpoint; blobs point into the bytes parsed. */
typedef struct {
  gy_ckpt_meta_t meta;
  int nblobs;
  gy_ckpt_blob_t *blobs; /* owned by the view */
} gy_ckpt_view_t;

/* Validates everything (magic, version, header and directory checksums, bounds, every blob's
 * CRC-32C). `what` names the source in errors (a path, or "snapshot@step N"); an error names
 * `what` and the blob. Returns GY_ECORRUPT for bad bytes. */
int gy_ckpt_parse(const uint8_t *data, size_t len, const char *what, gy_ckpt_view_t *view,
                  char *errmsg, size_t errlen);
void gy_ckpt_view_free(gy_ckpt_view_t *view);
/* The blob named name, or NULL. */
const gy_ckpt_blob_t *gy_ckpt_find(const gy_ckpt_view_t *view, const char *name);

/* Reads path into a new buffer and parses it into view (the view points into *out). */
int gy_ckpt_load_file(const char *path, gy_ckpt_buf_t **out, gy_ckpt_view_t *view, char *errmsg,
                      size_t errlen);
/* Writes b to path: temporary file in the same folder, fsync, rename, fsync of the folder. */
int gy_ckpt_write_file(const char *path, const gy_ckpt_buf_t *b, char *errmsg, size_t errlen);

/* Background writer: one thread writing submitted buffers in order. */
typedef struct gy_ckpt_writer gy_ckpt_writer_t;
int gy_ckpt_writer_create(gy_ckpt_writer_t **out);
/* Queues b (the writer takes a reference) to be written to path. Never blocks on I/O. */
int gy_ckpt_writer_submit(gy_ckpt_writer_t *w, gy_ckpt_buf_t *b, const char *path);
/* Waits until every queued write is done. Returns 0, or the first error since the last flush
 * with its message. */
int gy_ckpt_writer_flush(gy_ckpt_writer_t *w, char *errmsg, size_t errlen);
/* Number of writes completed so far (for tests and reports). */
uint64_t gy_ckpt_writer_completed(gy_ckpt_writer_t *w);
/* Flushes, stops the thread, frees. NULL is a no-op. */
void gy_ckpt_writer_destroy(gy_ckpt_writer_t *w);

#endif
