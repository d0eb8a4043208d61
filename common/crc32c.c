/*
 * crc32c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) over ISA-L's accelerated
 * crc32_iscsi().
 *
 * API: gy_crc32c(crc, buf, len).
 *
 * Convention: ISA-L's crc32_iscsi() neither inverts its initial value nor its result, so the
 * standard CRC-32C (init 0xFFFFFFFF, final xor 0xFFFFFFFF) of a buffer is
 * ~crc32_iscsi(buf, len, ~0). Taking the caller's running CRC through the same ~ on the way in
 * makes gy_crc32c(gy_crc32c(0, a, n), b, m) the CRC of a||b, and gy_crc32c(0, ...) the
 * standard one ("123456789" -> 0xE3069283).
 *
 * Invariants: pure function, no state; any length (ISA-L takes an int, so longer buffers are
 * fed in chunks, which chaining makes exact).
 */
#include "crc32c.h"

#include <isa-l.h>
#include <limits.h>

/* Largest chunk handed to ISA-L: well under INT_MAX and a multiple of 64 bytes. */
#define CHUNK ((size_t)1 << 30)

uint32_t gy_crc32c(uint32_t crc, const void *buf, size_t len) {
  /* ISA-L's prototype takes a non-const pointer but only reads the buffer. */
  unsigned char *p = (unsigned char *)(uintptr_t)buf;
  unsigned int c = ~crc;
  while (len > 0) {
    size_t n = len < CHUNK ? len : CHUNK;
    c = crc32_iscsi(p, (int)n, c);
    p += n;
    len -= n;
  }
  return ~c;
}
