// Hardware floor for a cross-process round trip: two processes busy-spin on two flag words
// of an anonymous MAP_SHARED mapping. No syscalls on the path, so this is the cost of moving
// two cache lines between cores and back.
//
//   usage: spin-pingpong <iterations>
//   prints {"p50":ns,"p99":ns,"p999":ns,"n":count} over every timed round trip
#define _GNU_SOURCE
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floor.h"

// Each flag on its own 128-byte block: the two writers never share a line (nor the
// adjacent-line prefetch pair), so only the intended transfers happen.
struct shared {
  _Alignas(128) _Atomic uint32_t ping; // parent writes round number, child waits
  _Alignas(128) _Atomic uint32_t pong; // child echoes round number, parent waits
};

int main(int argc, char **argv) {
  long iterations = argc > 1 ? atol(argv[1]) : 0;
  if (iterations <= 0) {
    fprintf(stderr, "usage: %s <iterations>\n", argv[0]);
    return 2;
  }
  uint32_t warmup = (uint32_t)(iterations / 10), total = warmup + (uint32_t)iterations;
  struct shared *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  uint64_t *samples = malloc(sizeof(uint64_t) * (size_t)iterations);
  if (s == MAP_FAILED || samples == NULL) {
    perror("spin-pingpong: mmap/malloc");
    return 1;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    perror("spin-pingpong: fork");
    return 1;
  }
  if (pid == 0) {
    // Die with the parent (e.g. killed on a deadline) instead of spinning forever.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    for (uint32_t i = 1; i <= total; i++) {
      while (atomic_load_explicit(&s->ping, memory_order_acquire) != i) {
      }
      atomic_store_explicit(&s->pong, i, memory_order_release);
    }
    _exit(0);
  }
  for (uint32_t i = 1; i <= total; i++) {
    uint64_t t0 = now_ns();
    atomic_store_explicit(&s->ping, i, memory_order_release);
    while (atomic_load_explicit(&s->pong, memory_order_acquire) != i) {
    }
    uint64_t t1 = now_ns();
    if (i > warmup) samples[i - warmup - 1] = t1 - t0;
  }
  waitpid(pid, NULL, 0);
  print_percentiles(samples, (size_t)iterations);
  return 0;
}
