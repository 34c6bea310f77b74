// Shared by the floor programs: a monotonic clock and the percentile report.
#ifndef SHMBUS_BENCH_FLOOR_H
#define SHMBUS_BENCH_FLOOR_H
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static inline uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

// Nearest rank with q in per mille: the ceil(q*n)-th smallest sample (exact integer ceil).
static inline uint64_t rank(const uint64_t *sorted, size_t n, size_t per_mille) {
  size_t i = (n * per_mille + 999) / 1000;
  return sorted[i == 0 ? 0 : i - 1];
}

// Sorts every sample (none dropped) and prints {"p50":ns,"p99":ns,"p999":ns,"n":count}.
static inline void print_percentiles(uint64_t *samples, size_t n) {
  qsort(samples, n, sizeof *samples, cmp_u64);
  printf("{\"p50\":%llu,\"p99\":%llu,\"p999\":%llu,\"n\":%zu}\n", (unsigned long long)rank(samples, n, 500),
         (unsigned long long)rank(samples, n, 990), (unsigned long long)rank(samples, n, 999), n);
}
#endif
