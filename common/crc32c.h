/* crc32c: CRC-32C (Castagnoli), through ISA-L's hardware-accelerated implementation. */
#ifndef GY_CRC32C_H
#define GY_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Standard CRC-32C of buf (check value: "123456789" -> 0xE3069283). Extend a running CRC by
 * passing the previous result as crc (start with 0). */
uint32_t gy_crc32c(uint32_t crc, const void *buf, size_t len);

#endif
