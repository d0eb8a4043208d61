/* tp_fixture.h: tensor parallelism in one process for the model tests: a group of P shards, one
 * thread each, whose partial sums meet in shared slots. Header-only so each test stays one
 * executable. */
#ifndef GY_TEST_TP_FIXTURE_H
#define GY_TEST_TP_FIXTURE_H

#include <pthread.h>
#include <stddef.h>
#include <string.h>

#define TP_MAXP 4
#define TP_NMAX (1 << 16)

typedef struct {
  int P;
  pthread_barrier_t bar;
  float slots[TP_MAXP][TP_NMAX];
} group_t;

/* Rank's part of a sum over the group: every rank copies in, waits, sums the slots in rank order
 * (the same bits everywhere) and waits again. -1 when n does not fit. */
static inline int tp_group_sum(group_t *g, int rank, float *buf, size_t n) {
  if (n > TP_NMAX) return -1;
  memcpy(g->slots[rank], buf, n * sizeof(float));
  pthread_barrier_wait(&g->bar);
  for (size_t i = 0; i < n; i++) {
    float acc = 0;
    for (int r = 0; r < g->P; r++)
      acc += g->slots[r][i];
    buf[i] = acc;
  }
  pthread_barrier_wait(&g->bar);
  return 0;
}

#endif
