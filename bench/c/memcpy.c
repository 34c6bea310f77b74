// Copy-bandwidth floor: memcpy of <size> bytes between two 64-byte-aligned buffers,
// <iterations> times per repetition, best of 5 repetitions (the buffers stay in cache when
// they fit, as a ring's hot frames would).
//
//   usage: memcpy <size-bytes> <iterations>
//   prints {"gbps":x} with GB/s = 1e9 bytes of payload per second
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "floor.h"

int main(int argc, char **argv) {
  long size = argc > 2 ? atol(argv[1]) : 0, iterations = argc > 2 ? atol(argv[2]) : 0;
  if (size <= 0 || iterations <= 0) {
    fprintf(stderr, "usage: %s <size-bytes> <iterations>\n", argv[0]);
    return 2;
  }
  size_t alloc = ((size_t)size + 63) & ~(size_t)63; // aligned_alloc wants a multiple of the alignment
  char *src = aligned_alloc(64, alloc), *dst = aligned_alloc(64, alloc);
  if (src == NULL || dst == NULL) {
    perror("memcpy: aligned_alloc");
    return 1;
  }
  // Touch both buffers so page faults and first-touch zeroing are not timed.
  memset(src, 0x5a, alloc);
  memset(dst, 0, alloc);
  uint64_t best = UINT64_MAX;
  for (int rep = 0; rep < 5; rep++) {
    uint64_t t0 = now_ns();
    for (long i = 0; i < iterations; i++) {
      memcpy(dst, src, (size_t)size);
      // Compiler barrier: dst "escapes" and memory is clobbered, so every copy must happen.
      __asm__ volatile("" : : "r"(dst), "r"(src) : "memory");
    }
    uint64_t elapsed = now_ns() - t0;
    if (elapsed < best) best = elapsed;
  }
  if (dst[size - 1] != 0x5a) return 1; // the copy really landed
  printf("{\"gbps\":%.3f}\n", (double)size * (double)iterations / (double)(best ? best : 1));
  return 0;
}
