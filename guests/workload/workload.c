/*
 * vmsight test workload: one static binary, several behaviours, each easy to recognise from
 * outside the guest (by comm, thread names, scheduler state or a known address).
 *
 *   workload name <comm>      set comm (the kernel truncates to 15 bytes), then sleep forever
 *   workload threads <n>      n sleeping threads named wl-thread-<k>, main thread wl-threads
 *   workload piperead         block forever in read() on a pipe whose write end stays open
 *   workload forkloop <n|0>   fork children that exit at once, n times (0: forever), print count
 *   workload memwrite         print &counter, then increment it once a second (watchpoint target)
 *
 * Build: gcc -static -O2 -pthread -o workload workload.c
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

/* volatile and global: it must live in .data/.bss at a fixed address and be stored every tick. */
volatile unsigned long counter;

static void set_comm(const char *comm) { prctl(PR_SET_NAME, (unsigned long)comm, 0, 0, 0); }

static _Noreturn void sleep_forever(void) {
  for (;;) pause();
}

static pthread_barrier_t named;

static void *thread_main(void *arg) {
  char name[16];
  snprintf(name, sizeof name, "wl-thread-%ld", (long)arg);
  pthread_setname_np(pthread_self(), name);
  pthread_barrier_wait(&named);
  sleep_forever();
  return NULL;
}

static int threads(long n) {
  if (n < 1 || n > 64) return 2;
  set_comm("wl-threads");
  pthread_barrier_init(&named, NULL, (unsigned)n + 1);
  for (long k = 0; k < n; k++) {
    pthread_t t;
    if (pthread_create(&t, NULL, thread_main, (void *)k) != 0) return 1;
  }
  /* Only report once every thread carries its name, so a snapshot never sees a half-built group. */
  pthread_barrier_wait(&named);
  printf("threads %ld ready\n", n);
  fflush(stdout);
  sleep_forever();
  return 0;
}

static int piperead(void) {
  int fds[2];
  char c;
  set_comm("wl-piperead");
  if (pipe(fds) != 0) return 1;
  /* fds[1] stays open in this very process, so read() can never see EOF: it sleeps forever. */
  return read(fds[0], &c, 1) < 0;
}

static int forkloop(long n) {
  long count = 0;
  set_comm("wl-forkloop");
  while (n == 0 || count < n) {
    pid_t pid = fork();
    if (pid < 0) return 1;
    if (pid == 0) _exit(0);
    waitpid(pid, NULL, 0);
    count++;
  }
  printf("forkloop %ld\n", count);
  return 0;
}

static _Noreturn void memwrite(void) {
  set_comm("wl-memwrite");
  printf("counter %p\n", (void *)&counter);
  fflush(stdout);
  for (;;) {
    counter++;
    sleep(1);
  }
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "";
  if (strcmp(mode, "name") == 0 && argc == 3) {
    set_comm(argv[2]);
    sleep_forever();
  }
  if (strcmp(mode, "threads") == 0 && argc == 3) return threads(strtol(argv[2], NULL, 10));
  if (strcmp(mode, "piperead") == 0) return piperead();
  if (strcmp(mode, "forkloop") == 0 && argc == 3) return forkloop(strtol(argv[2], NULL, 10));
  if (strcmp(mode, "memwrite") == 0) memwrite();
  fprintf(stderr, "usage: workload name <comm> | threads <n> | piperead | forkloop <n|0> | memwrite\n");
  return 2;
}
