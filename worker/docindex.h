/* docindex: the document index gyro-prep writes beside each training shard (X.bin -> X.docs),
 * so that a sample can be traced to the document it was cut from.
 *
 * File format (little-endian, 40-byte header, then the entries):
 *
 *   offset  size  field
 *        0     8  magic "GYDOCS1\0"
 *        8     8  uint64 ntokens    tokens of the shard it describes
 *       16     4  uint32 crc        CRC-32C of the shard's token bytes (2 * ntokens bytes, as
 *                                   stored in the shard after its 1024-byte header)
 *       20     4  uint32 reserved   0
 *       24     8  uint64 first_doc  ordinal of the document entry 0 belongs to
 *       32     8  uint64 count      number of entries
 *       40  8*count uint64 offsets  token offsets within the shard where entry i starts
 *
 * Entry i is document first_doc + i and covers the tokens from offsets[i] to the next entry's
 * offset (or the end of the shard). Offsets are strictly increasing and < ntokens, and a shard
 * with tokens always has an entry at offset 0: a document that continues from the previous shard
 * is entry 0 with its own (earlier) ordinal, so that first_doc of the next shard equals the last
 * ordinal of this one exactly when a document crosses the boundary. Ordinals count the documents
 * of the training text in the order gyro-prep wrote them (0, 1, 2, ... over the channel's
 * shards); the "\n\n" that joins two documents belongs to the one before it. An empty shard has
 * no entries. */
#ifndef GY_DOCINDEX_H
#define GY_DOCINDEX_H

#include <stddef.h>
#include <stdint.h>

#define GY_DOCINDEX_MAGIC "GYDOCS1" /* 8 bytes with its NUL */
#define GY_DOCINDEX_HEADER_BYTES 40

typedef struct {
  uint64_t ntokens;   /* tokens of the shard */
  uint32_t crc;       /* CRC-32C of the shard's token bytes */
  uint64_t first_doc; /* ordinal of entry 0 */
  uint64_t count;     /* entries */
  uint64_t *offsets;  /* count offsets, owned (release with gy_docindex_free) */
} gy_docindex_t;

/* The index path of shard path: "X.bin" -> "X.docs", any other name + ".docs". The caller frees
 * the result; NULL when out of memory. */
char *gy_docindex_path(const char *shard_path);
/* CRC-32C of ntokens tokens as a shard stores them (the crc field). */
uint32_t gy_docindex_crc(const uint16_t *tokens, size_t ntokens);
/* Fills ix for the shard holding the tokens [off, off + n) of a text whose documents start at the
 * stream positions starts[0 .. nstarts) (strictly increasing, starts[0] == 0; document k starts
 * at starts[k]). ix->crc is left 0 for the caller to set. GY_EINVAL when n > 0 and there is no
 * document, GY_ENOMEM; on error ix holds nothing to free. */
int gy_docindex_build(gy_docindex_t *ix, const uint64_t *starts, size_t nstarts, uint64_t off,
                      uint64_t n);
/* Writes ix to path atomically (temporary file, fsync, rename). The caller keeps ix. GY_EIO or
 * GY_ENOMEM with the path in errmsg. */
int gy_docindex_write(const char *path, const gy_docindex_t *ix, char *errmsg, size_t errlen);
/* Reads and validates path: the magic, the reserved field, the file size against count, offsets
 * strictly increasing and < ntokens, an entry at 0 when ntokens > 0. GY_ENOENT when the file does
 * not exist, GY_ECORRUPT when it is malformed, GY_EIO, GY_ENOMEM; errmsg names the file and the
 * problem. On success ix owns its offsets; on error it holds nothing to free. */
int gy_docindex_read(gy_docindex_t *ix, const char *path, char *errmsg, size_t errlen);
/* Whether ix describes these tokens: GY_EMISMATCH (errmsg: the token counts or the CRCs) when the
 * shard was changed after the index was written. */
int gy_docindex_check(const gy_docindex_t *ix, const uint16_t *tokens, size_t ntokens, char *errmsg,
                      size_t errlen);
/* Releases ix's offsets; ix is empty afterwards. NULL is a no-op. */
void gy_docindex_free(gy_docindex_t *ix);

#endif
