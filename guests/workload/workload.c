/*
 * vmsight test workload: one static binary, several behaviours, each easy to recognise from
 * outside the guest (by comm, thread names, scheduler state or a known address).
 *
 *   workload name <comm>      set comm (the kernel truncates to 15 bytes), then sleep forever
 *   workload threads <n>      n sleeping threads named wl-thread-<k>, main thread wl-threads
 *   workload piperead         block forever in read() on a pipe whose write end stays open
 *   workload forkloop <n|0>   fork children that exit at once, n times (0: forever), print count
 *   workload memwrite         print &counter, then increment it once a second (watchpoint target)
 *   workload net              open files of every kind (see net() below), fork a child that
 *                             shares some, print "child <pid>", then both sleep forever
 *   workload hold <f> <s>     hold f open files and s sockets (bench/forensics.ts), print
 *                             "held <f> <s>", then sleep forever
 *
 * Build: gcc -static -O2 -pthread -o workload workload.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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

/* The loopback interface is down in a fresh initramfs; 127.0.0.1 and ::1 exist once it is up. */
static void loopback_up(void) {
  struct ifreq ifr;
  int s = socket(AF_INET, SOCK_DGRAM, 0);
  memset(&ifr, 0, sizeof ifr);
  strcpy(ifr.ifr_name, "lo");
  if (s >= 0 && ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
    ifr.ifr_flags |= IFF_UP;
    ioctl(s, SIOCSIFFLAGS, &ifr);
  }
  if (s >= 0) close(s);
}

static int inet_socket(int type, unsigned short port, int do_listen) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  int one = 1, s = socket(AF_INET, type, 0);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0) return -1;
  if (do_listen && listen(s, 4) != 0) return -1;
  return s;
}

static int tcp_connect(unsigned short port) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  int s = socket(AF_INET, SOCK_STREAM, 0);
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  return s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0 ? s : -1;
}

/* An IPv6 socket on [::1]:port, listening if TCP; -1 when the kernel has no IPv6 (not fatal). */
static int inet6_socket(int type, unsigned short port) {
  struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int s = socket(AF_INET6, type, 0);
  if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0) return -1;
  return type == SOCK_STREAM && listen(s, 4) != 0 ? -1 : s;
}

/*
 * The families /proc/net/{netlink,packet} show: a route netlink socket in two multicast groups
 * (a groups word of 00000011), and a packet socket on lo for the local experimental ethertype
 * 0x88b5, whose two bytes differ so a swapped byte order shows, and on which nothing arrives.
 */
static int link_sockets(void) {
  struct sockaddr_nl nl = {.nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR};
  struct sockaddr_ll ll = {.sll_family = AF_PACKET, .sll_protocol = htons(0x88b5)};
  int n = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE), p = socket(AF_PACKET, SOCK_RAW, htons(0x88b5));
  ll.sll_ifindex = (int)if_nametoindex("lo");
  if (n < 0 || bind(n, (struct sockaddr *)&nl, sizeof nl) != 0) return -1;
  return p < 0 || bind(p, (struct sockaddr *)&ll, sizeof ll) != 0 ? -1 : 0;
}

/* Files lsof names by their inode rather than a path: a directory, an eventfd and an epoll on it. */
static int odd_files(void) {
  struct epoll_event ev = {.events = EPOLLIN};
  int dir = open("/run/vmsight", O_RDONLY | O_DIRECTORY), efd = eventfd(0, EFD_NONBLOCK);
  int ep = epoll_create1(EPOLL_CLOEXEC);
  return dir < 0 || efd < 0 || ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) != 0 ? -1 : 0;
}

/*
 * Every kind of open file the forensic commands (lsof, sockets) must name: a regular file with a
 * position, a pipe, a TCP listener and a connected TCP pair on 127.0.0.1:7070, a UDP socket on
 * 127.0.0.1:7071, a TCP6 listener on [::1]:7072, a UDP6 socket on [::1]:7073, and a unix
 * listener with a connected pair at /run/vmsight/wl.sock. The parent (wl-net) keeps the read end
 * of the pipe, the listeners, the accepted ends and the UDP socket; the child (wl-net-child) the
 * write end, the connecting ends and the same file opened read-only, so two processes share a
 * pipe and a socket pair. After the fork the parent alone adds link_sockets() and odd_files().
 */
static int net(void) {
  static const char path[] = "/run/vmsight/wl.sock";
  struct sockaddr_un ua = {.sun_family = AF_UNIX};
  int p[2], file, lis, cli, srv, udp, ul, uc, us;
  pid_t child;
  set_comm("wl-net");
  loopback_up();
  file = open("/tmp/wl-net.txt", O_RDWR | O_CREAT | O_APPEND, 0644);
  if (file < 0 || write(file, "hello, world\n", 13) != 13 || pipe(p) != 0) return 1;
  if ((lis = inet_socket(SOCK_STREAM, 7070, 1)) < 0 || (cli = tcp_connect(7070)) < 0) return 1;
  if ((srv = accept(lis, NULL, NULL)) < 0 || (udp = inet_socket(SOCK_DGRAM, 7071, 0)) < 0) return 1;
  inet6_socket(SOCK_STREAM, 7072);
  inet6_socket(SOCK_DGRAM, 7073);
  strcpy(ua.sun_path, path);
  unlink(path);
  ul = socket(AF_UNIX, SOCK_STREAM, 0);
  if (ul < 0 || bind(ul, (struct sockaddr *)&ua, sizeof ua) != 0 || listen(ul, 4) != 0) return 1;
  uc = socket(AF_UNIX, SOCK_STREAM, 0);
  if (uc < 0 || connect(uc, (struct sockaddr *)&ua, sizeof ua) != 0 || (us = accept(ul, NULL, NULL)) < 0)
    return 1;
  child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    char buf[5];
    int ro = open("/tmp/wl-net.txt", O_RDONLY);
    set_comm("wl-net-child");
    close(p[0]);
    close(srv);
    close(us);
    if (ro < 0 || read(ro, buf, sizeof buf) != sizeof buf) _exit(1);
    sleep_forever();
  }
  close(p[1]);
  close(cli);
  close(uc);
  if (link_sockets() != 0 || odd_files() != 0) return 1;
  printf("child %d\n", (int)child);
  fflush(stdout);
  sleep_forever();
}

/*
 * Many fds for the forensic bench: f opens of one regular file, and s sockets of three kinds in
 * turn: a UDP socket on 127.0.0.1 (port from the kernel), a unix socket pair, and a TCP pair
 * through one listener on 127.0.0.1 (counted among the s). Needs lo up (init's net workload).
 */
static int hold(long files, long sockets) {
  struct rlimit lim;
  struct sockaddr_in a;
  socklen_t alen = sizeof a;
  long f = 0, s = 0;
  int lis, sv[2];
  set_comm("wl-hold");
  /* The soft limit (1024) is below what the bench asks for; the hard one is not. */
  if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
    lim.rlim_cur = lim.rlim_max;
    setrlimit(RLIMIT_NOFILE, &lim);
  }
  for (; f < files; f++)
    if (open("/tmp/wl-hold.txt", O_RDWR | O_CREAT, 0644) < 0) return 1;
  if (sockets > 0) {
    if ((lis = inet_socket(SOCK_STREAM, 0, 1)) < 0 || getsockname(lis, (struct sockaddr *)&a, &alen) != 0) return 1;
    s++;
  }
  for (int kind = 0; s < sockets; kind = (kind + 1) % 3) {
    if (kind == 0) {
      if (inet_socket(SOCK_DGRAM, 0, 0) < 0) return 1;
      s++;
    } else if (sockets - s >= 2 && kind == 1) {
      if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 1;
      s += 2;
    } else if (sockets - s >= 2) {
      if (tcp_connect(ntohs(a.sin_port)) < 0 || accept(lis, NULL, NULL) < 0) return 1;
      s += 2;
    }
  }
  printf("held %ld %ld\n", f, s);
  fflush(stdout);
  sleep_forever();
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
  if (strcmp(mode, "net") == 0) return net();
  if (strcmp(mode, "hold") == 0 && argc == 4) return hold(strtol(argv[2], NULL, 10), strtol(argv[3], NULL, 10));
  fprintf(stderr, "usage: workload name <comm> | threads <n> | piperead | forkloop <n|0> | memwrite | net | hold <f> <s>\n");
  return 2;
}
