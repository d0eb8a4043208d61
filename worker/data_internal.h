/* data_internal: the sampler's permutation, shared with its tests (not part of the API). */
#ifndef GY_DATA_INTERNAL_H
#define GY_DATA_INTERNAL_H

#include <stdint.h>

/* perm(seed, channel, epoch, i) over [0, n), i < n: the within-epoch shuffle of the sampler. */
uint64_t gy__data_permute(uint64_t seed, int channel, uint64_t epoch, uint64_t i, uint64_t n);
/* Its inverse: the i with gy__data_permute(seed, channel, epoch, i, n) == k, for k < n. */
uint64_t gy__data_unpermute(uint64_t seed, int channel, uint64_t epoch, uint64_t k, uint64_t n);

#endif
