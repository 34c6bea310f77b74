// Floor for a cross-process round trip when both sides always park: the waiter sleeps in
// FUTEX_WAIT on a word of a MAP_SHARED mapping, the other side stores then FUTEX_WAKEs.
// Shared (non-private) futex ops, because the two sides are different processes.
//
//   usage: futex-pingpong <iterations>
//   prints {"p50":ns,"p99":ns,"p999":ns,"n":count} over every timed round trip
#define _GNU_SOURCE
#include <linux/futex.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floor.h"

struct shared {
  _Alignas(128) _Atomic uint32_t ping; // parent writes round number, child parks on it
  _Alignas(128) _Atomic uint32_t pong; // child echoes round number, parent parks on it
};

// Park until *word != seen. FUTEX_WAIT returns at once (EAGAIN) if the word already changed,
// so a wake that comes before we sleep is never lost; spurious returns just loop.
static void wait_for(_Atomic uint32_t *word, uint32_t want) {
  uint32_t seen;
  while ((seen = atomic_load_explicit(word, memory_order_acquire)) != want)
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, seen, NULL, NULL, 0);
}

// Publish then wake unconditionally: this benchmark measures the always-parked path.
static void post(_Atomic uint32_t *word, uint32_t value) {
  atomic_store_explicit(word, value, memory_order_release);
  syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, 1, NULL, NULL, 0);
}

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
    perror("futex-pingpong: mmap/malloc");
    return 1;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    perror("futex-pingpong: fork");
    return 1;
  }
  if (pid == 0) {
    // Die with the parent (e.g. killed on a deadline) instead of parking forever.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    for (uint32_t i = 1; i <= total; i++) {
      wait_for(&s->ping, i);
      post(&s->pong, i);
    }
    _exit(0);
  }
  for (uint32_t i = 1; i <= total; i++) {
    uint64_t t0 = now_ns();
    post(&s->ping, i);
    wait_for(&s->pong, i);
    uint64_t t1 = now_ns();
    if (i > warmup) samples[i - warmup - 1] = t1 - t0;
  }
  waitpid(pid, NULL, 0);
  print_percentiles(samples, (size_t)iterations);
  return 0;
}
