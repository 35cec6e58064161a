/*
 * exchange: the data movement of a 2-rank collective over TCP loopback with no library at
 * all, to tell the machine's own speed and its variance between launches from a library's.
 *
 * Two processes joined by TCP over 127.0.0.1 (TCP_NODELAY) move SIZE bytes each way at once
 * (what a 2-rank allgather or alltoall of 2*SIZE bytes exchanges, or each half of a 2-rank
 * allreduce), or one way with --oneway (a 2-rank broadcast of SIZE), from one thread each:
 * non-blocking send() of at most CHUNK bytes and recv() of whatever came, in a poll() loop.
 * Each iteration starts after a one-byte handshake and is timed alone, as the peers suite
 * times a collective call; prints the median and the fastest of the receiving process and,
 * as "2-rank", the suite's own figure: each process's mean, averaged over the two (the
 * sender's and the receiver's with --oneway). One request at a time: a
 * library that keeps several connections busy can be faster; what this shows is how much
 * the same plain loop moves from launch to launch.
 *
 * With -k CONNS the processes open CONNS connections and use them in turn, one per
 * iteration, printing each connection's median: connections of one launch can differ (with
 * the host's BBR congestion control each paces itself at its own first bandwidth estimate).
 * -C ALGO sets TCP_CONGESTION on every connection (reno, cubic, bbr, ...).
 *
 * --spin drops poll(): each process calls send() and recv() in a busy loop, handshake
 * included, as a spinning library's receiver does; the 8-byte floor of a 2-rank call.
 * --pin binds the two processes to the first two CPUs they may use, one each, as Open
 * MPI's mpirun binds 2 ranks to cores.
 *
 *     gcc -O2 -Wall -Wextra -o exchange tools/bare-tcp/exchange.c
 *     ./exchange [-n ITERS] [-c CHUNK] [-b SOCKBUF] [-k CONNS] [-C ALGO] [--oneway] [--spin]
 *                [--pin] SIZE...
 *     (sizes with K, M, G suffixes)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <sched.h>

#define USAGE "usage: exchange [-n ITERS] [-c CHUNK] [-b SOCKBUF] [-k CONNS] [-C ALGO] [--oneway] [--spin] [--pin] SIZE...\n"
#define MAX_CONNS 16

/* --spin: no poll(), send() and recv() retried in a busy loop. */
static int spin;

static void die(const char *what) {
    perror(what);
    exit(2);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static size_t bytes(const char *s) {
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s) {
        fprintf(stderr, "exchange: not a size: %s\n", s);
        exit(2);
    }
    if (*end == 'K' || *end == 'k') v <<= 10;
    else if (*end == 'M' || *end == 'm') v <<= 20;
    else if (*end == 'G' || *end == 'g') v <<= 30;
    return (size_t)v;
}

/* Sends `out` bytes and receives `in` bytes on fd at once; a deadline of 30 s. */
static void move_bytes(int fd, const char *sb, size_t out, char *rb, size_t in, size_t chunk) {
    size_t sent = 0, got = 0;
    double deadline = now() + 30.0;
    while (sent < out || got < in) {
        struct pollfd p = {fd, (short)((sent < out ? POLLOUT : 0) | (got < in ? POLLIN : 0)), 0};
        if (spin) p.revents = p.events;
        else if (poll(&p, 1, 1000) < 0 && errno != EINTR) die("poll");
        if (now() > deadline) {
            fprintf(stderr, "exchange: no progress for 30 s\n");
            exit(2);
        }
        if (p.revents & (POLLERR | POLLHUP)) {
            fprintf(stderr, "exchange: the peer went away\n");
            exit(2);
        }
        if (sent < out && (p.revents & POLLOUT)) {
            size_t l = out - sent < chunk ? out - sent : chunk;
            ssize_t k = send(fd, sb + sent, l, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k > 0) sent += (size_t)k;
            else if (k < 0 && errno != EAGAIN && errno != EINTR) die("send");
        }
        if (got < in && (p.revents & POLLIN)) {
            ssize_t k = recv(fd, rb + got, in - got, MSG_DONTWAIT);
            if (k > 0) got += (size_t)k;
            else if (k == 0) {
                fprintf(stderr, "exchange: the peer closed\n");
                exit(2);
            } else if (errno != EAGAIN && errno != EINTR) die("recv");
        }
    }
}

/* Binds this process to the `which`-th (0 or 1) CPU of its affinity mask. */
static void pin_to_cpu(int which) {
    cpu_set_t allowed, one;
    if (sched_getaffinity(0, sizeof allowed, &allowed)) die("sched_getaffinity");
    for (int cpu = 0, seen = 0; cpu < CPU_SETSIZE; cpu++) {
        if (!CPU_ISSET(cpu, &allowed) || seen++ != which) continue;
        CPU_ZERO(&one);
        CPU_SET(cpu, &one);
        if (sched_setaffinity(0, sizeof one, &one)) die("sched_setaffinity");
        return;
    }
    fprintf(stderr, "exchange: --pin needs two CPUs\n");
    exit(2);
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void sync_peer(int fd) {
    char x = 1;
    if (send(fd, &x, 1, MSG_NOSIGNAL) != 1) die("send (handshake)");
    if (spin) {
        move_bytes(fd, NULL, 0, &x, 1, 1);
        return;
    }
    if (recv(fd, &x, 1, MSG_WAITALL) != 1) die("recv (handshake)");
}

/* One connection from the listener `ls` at `a`: the child connects, the parent accepts. */
static int open_conn(int ls, struct sockaddr_in *a, int connector, size_t sockbuf, const char *algo) {
    int fd;
    if (connector) {
        fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)a, sizeof *a)) die("connect");
    } else {
        fd = accept(ls, NULL, NULL);
        if (fd < 0) die("accept");
    }
    int one = 1, sb = (int)sockbuf;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (sockbuf) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sb, sizeof sb);
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sb, sizeof sb);
    }
    if (algo && setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, algo, (socklen_t)strlen(algo)))
        die("setting TCP_CONGESTION (see /proc/sys/net/ipv4/tcp_allowed_congestion_control)");
    return fd;
}

/* Times `iters` iterations on each of the `nconn` connections in turn; prints medians. */
static void run_size(const int *fds, int nconn, int parent, size_t n, int iters, int oneway, size_t chunk) {
    char *sbuf = malloc(n + 1), *rbuf = malloc(n + 1);
    double *t = malloc(sizeof(double) * (size_t)iters * (size_t)nconn);
    if (!sbuf || !rbuf || !t) die("malloc");
    memset(sbuf, 7, n);
    memset(rbuf, 0, n);
    /* One way: the child sends, the parent receives (and reports the receiver's time). */
    size_t out = oneway && parent ? 0 : n, in = oneway && !parent ? 0 : n;
    for (int c = 0; c < nconn; c++) move_bytes(fds[c], sbuf, out, rbuf, in, chunk); /* warm-up */
    for (int k = 0; k < iters; k++) {
        for (int c = 0; c < nconn; c++) {
            sync_peer(fds[c]);
            double t0 = now();
            move_bytes(fds[c], sbuf, out, rbuf, in, chunk);
            t[c * iters + k] = now() - t0;
        }
    }
    for (int c = 0; c < nconn; c++) sync_peer(fds[c]);
    /* The suite's figure: each rank's mean, averaged over the two; the child sends its means. */
    double *mean = malloc(sizeof(double) * (size_t)nconn);
    if (!mean) die("malloc");
    for (int c = 0; c < nconn; c++) {
        double sum = 0;
        for (int k = 0; k < iters; k++) sum += t[c * iters + k];
        mean[c] = sum / iters;
        double peer = 0;
        move_bytes(fds[c], (const char *)&mean[c], parent ? 0 : sizeof peer, (char *)&peer,
                   parent ? sizeof peer : 0, sizeof peer);
        mean[c] = 0.5 * (mean[c] + peer);
    }
    if (parent) {
        for (int c = 0; c < nconn; c++) {
            double *tc = t + c * iters;
            qsort(tc, (size_t)iters, sizeof(double), cmp);
            double med = tc[iters / 2];
            printf("%12zu %13.1f %13.1f %13.1f %17.2f", n, med * 1e6, tc[0] * 1e6, mean[c] * 1e6,
                   (double)n / med / 1e9);
            if (nconn > 1) printf("   connection %d", c);
            printf("\n");
        }
        fflush(stdout);
    }
    free(mean);
    free(sbuf);
    free(rbuf);
    free(t);
}

int main(int argc, char **argv) {
    int iters = 50, oneway = 0, nsizes = 0, nconn = 1, pin = 0;
    size_t chunk = 256 << 10, sockbuf = 0;
    const char *algo = NULL;
    size_t *sizes = malloc(sizeof(size_t) * (size_t)argc);
    if (!sizes) die("malloc");
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-n") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) chunk = bytes(argv[++i]);
        else if (!strcmp(argv[i], "-b") && i + 1 < argc) sockbuf = bytes(argv[++i]);
        else if (!strcmp(argv[i], "-k") && i + 1 < argc) nconn = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-C") && i + 1 < argc) algo = argv[++i];
        else if (!strcmp(argv[i], "--oneway")) oneway = 1;
        else if (!strcmp(argv[i], "--spin")) spin = 1;
        else if (!strcmp(argv[i], "--pin")) pin = 1;
        else if (argv[i][0] == '-') {
            fprintf(stderr, USAGE);
            return 2;
        } else sizes[nsizes++] = bytes(argv[i]);
    }
    if (!nsizes || iters < 1 || chunk == 0 || nconn < 1 || nconn > MAX_CONNS) {
        fprintf(stderr, USAGE);
        return 2;
    }
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof a;
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) || listen(ls, MAX_CONNS) ||
        getsockname(ls, (struct sockaddr *)&a, &al))
        die("listen on 127.0.0.1");
    pid_t child = fork();
    if (child < 0) die("fork");
    if (pin) pin_to_cpu(child == 0);
    int fds[MAX_CONNS];
    for (int c = 0; c < nconn; c++) fds[c] = open_conn(ls, &a, child == 0, sockbuf, algo);
    close(ls);
    if (child) printf("# exchange over TCP 127.0.0.1: %s, sends of at most %zu bytes, socket buffers of %zu bytes "
                      "(0: the kernel's), congestion control %s, %d iterations on each of %d connection(s)%s%s\n"
                      "#       size    median(us)   fastest(us)    2-rank(us)   GB/s each way (median)\n",
                      oneway ? "one way" : "both ways at once", chunk, sockbuf,
                      algo ? algo : "the system's", iters, nconn, spin ? ", spinning (no poll)" : "",
                      pin ? ", pinned to two CPUs" : "");
    for (int i = 0; i < nsizes; i++) run_size(fds, nconn, child != 0, sizes[i], iters, oneway, chunk);
    free(sizes);
    for (int c = 0; c < nconn; c++) close(fds[c]);
    if (child) {
        int st;
        if (waitpid(child, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st)) {
            fprintf(stderr, "exchange: the child process failed\n");
            return 2;
        }
    }
    return 0;
}
