/* test_crc32c: gy_crc32c against the standard check value, chaining at every split, and a
 * bitwise reference (written here, test-only) on large and unaligned buffers; a buffer longer
 * than INT_MAX exercises the chunking. */
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "common/crc32c.h"
#include "tests/test.h"

/* Bit-at-a-time CRC-32C (reflected polynomial 0x82F63B78), the textbook definition. */
static uint32_t ref_crc32c(uint32_t crc, const uint8_t *p, size_t n) {
  crc = ~crc;
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
  }
  return ~crc;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

int main(void) {
  const char *check = "123456789";
  CHECK_EQ_INT(gy_crc32c(0, check, 9), 0xE3069283u);
  CHECK_EQ_INT(ref_crc32c(0, (const uint8_t *)check, 9), 0xE3069283u);
  CHECK_EQ_INT(gy_crc32c(0, check, 0), 0);
  CHECK_EQ_INT(gy_crc32c(0, NULL, 0), 0);
  /* Known vector (RFC 3720 B.4): 32 bytes of zeros -> 0x8A9136AA. */
  uint8_t zeros[32] = {0};
  CHECK_EQ_INT(gy_crc32c(0, zeros, 32), 0x8A9136AAu);

  /* Chaining at every split point of a small buffer. */
  uint8_t small[200];
  for (size_t i = 0; i < sizeof small; i++)
    small[i] = (uint8_t)rng();
  uint32_t whole = gy_crc32c(0, small, sizeof small);
  CHECK_EQ_INT(whole, ref_crc32c(0, small, sizeof small));
  int bad = 0;
  for (size_t k = 0; k <= sizeof small; k++)
    bad += gy_crc32c(gy_crc32c(0, small, k), small + k, sizeof small - k) != whole;
  CHECK_EQ_INT(bad, 0);

  /* A large buffer, whole and at unaligned offsets and lengths. */
  size_t n = (size_t)3 << 20;
  uint8_t *big = malloc(n);
  REQUIRE(big);
  for (size_t i = 0; i < n; i++)
    big[i] = (uint8_t)(rng() >> 11);
  CHECK_EQ_INT(gy_crc32c(0, big, n), ref_crc32c(0, big, n));
  bad = 0;
  for (int t = 0; t < 200; t++) {
    size_t off = rng() % 4096, len = rng() % (64 * 1024);
    uint32_t seed = (uint32_t)rng();
    bad += gy_crc32c(seed, big + off, len) != ref_crc32c(seed, big + off, len);
  }
  CHECK_EQ_INT(bad, 0);
  free(big);

  /* Longer than INT_MAX: the chunked call equals a chain of small calls over the same zeros
   * (anonymous zero pages, never written, so this costs little memory). */
  size_t huge = (size_t)INT_MAX + 4096 + 77;
  uint8_t *z = mmap(NULL, huge, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (z != MAP_FAILED) {
    size_t step = (size_t)64 << 20;
    uint32_t chained = 0;
    for (size_t off = 0; off < huge; off += step)
      chained = gy_crc32c(chained, z, huge - off < step ? huge - off : step);
    CHECK_EQ_INT(gy_crc32c(0, z, huge), chained);
    munmap(z, huge);
  } else {
    printf("skipped the > INT_MAX check: mmap failed\n");
  }

  GY_TEST_END();
}
