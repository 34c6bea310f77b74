// Floor for a cross-process round trip over eventfds: one eventfd per direction, created
// before fork so both processes share them; blocking read() parks, write() wakes.
//
//   usage: eventfd-pingpong <iterations>
//   prints {"p50":ns,"p99":ns,"p999":ns,"n":count} over every timed round trip
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "floor.h"

static void signal_fd(int fd) {
  uint64_t one = 1;
  if (write(fd, &one, sizeof one) != sizeof one) {
    perror("eventfd-pingpong: write");
    _exit(1);
  }
}

static void wait_fd(int fd) {
  uint64_t count;
  if (read(fd, &count, sizeof count) != sizeof count) {
    perror("eventfd-pingpong: read");
    _exit(1);
  }
}

int main(int argc, char **argv) {
  long iterations = argc > 1 ? atol(argv[1]) : 0;
  if (iterations <= 0) {
    fprintf(stderr, "usage: %s <iterations>\n", argv[0]);
    return 2;
  }
  long warmup = iterations / 10, total = warmup + iterations;
  int to_child = eventfd(0, 0), to_parent = eventfd(0, 0); // blocking, counter mode
  uint64_t *samples = malloc(sizeof(uint64_t) * (size_t)iterations);
  if (to_child < 0 || to_parent < 0 || samples == NULL) {
    perror("eventfd-pingpong: eventfd/malloc");
    return 1;
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    perror("eventfd-pingpong: fork");
    return 1;
  }
  if (pid == 0) {
    // Die with the parent (e.g. killed on a deadline) instead of blocking forever.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(1);
    for (long i = 0; i < total; i++) {
      wait_fd(to_child);
      signal_fd(to_parent);
    }
    _exit(0);
  }
  for (long i = 0; i < total; i++) {
    uint64_t t0 = now_ns();
    signal_fd(to_child);
    wait_fd(to_parent);
    uint64_t t1 = now_ns();
    if (i >= warmup) samples[i - warmup] = t1 - t0;
  }
  waitpid(pid, NULL, 0);
  print_percentiles(samples, (size_t)iterations);
  return 0;
}
