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

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

// Nearest rank with q in per mille: the ceil(q*n)-th smallest sample (exact integer ceil).
static uint64_t rank(const uint64_t *sorted, size_t n, size_t per_mille) {
  size_t i = (n * per_mille + 999) / 1000;
  return sorted[i == 0 ? 0 : i - 1];
}

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
  qsort(samples, (size_t)iterations, sizeof *samples, cmp_u64);
  size_t n = (size_t)iterations;
  printf("{\"p50\":%llu,\"p99\":%llu,\"p999\":%llu,\"n\":%zu}\n", (unsigned long long)rank(samples, n, 500),
         (unsigned long long)rank(samples, n, 990), (unsigned long long)rank(samples, n, 999), n);
  return 0;
}
