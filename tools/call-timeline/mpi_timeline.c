/*
 * mpi_timeline: where each of 2 ranks starts and ends every call, on the host's one clock,
 * for an MPI library (examples/call_timeline.rs prints the same for oxccl).
 *
 * Times 2000 calls of an 8-byte MPI_Allreduce (SUM) or MPI_Bcast (root 0), each followed by
 * an MPI_Barrier as the peers suite times a call, and prints the medians of: when rank 1
 * started after rank 0, each rank's call, and when rank 1 ended after rank 0.
 *
 *     mpicc -O2 -o mpi_timeline tools/call-timeline/mpi_timeline.c
 *     mpirun -np 2 --mca btl tcp,self ./mpi_timeline allreduce|broadcast
 */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ITERS 2000
#define WARMUP 200

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec * 1e-3;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v) {
    qsort(v, ITERS, sizeof(double), cmp);
    return v[ITERS / 2];
}

static void call(int allreduce, const float *src, float *buf) {
    if (allreduce) MPI_Allreduce(src, buf, 2, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    else MPI_Bcast(buf, 2, MPI_FLOAT, 0, MPI_COMM_WORLD);
}

int main(int argc, char **argv) {
    int rank, size;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int allreduce = argc > 1 && !strcmp(argv[1], "allreduce");
    if (argc < 2 || (!allreduce && strcmp(argv[1], "broadcast")) || size != 2) {
        if (rank == 0) fprintf(stderr, "usage: mpirun -np 2 mpi_timeline allreduce|broadcast\n");
        MPI_Finalize();
        return 2;
    }
    float src[2] = {1, 1}, buf[2] = {0, 0};
    static double mine[2 * ITERS], all[4 * ITERS], d[4][ITERS];
    for (int i = 0; i < WARMUP; i++) {
        call(allreduce, src, buf);
        MPI_Barrier(MPI_COMM_WORLD);
    }
    for (int i = 0; i < ITERS; i++) {
        mine[i] = now_us();
        call(allreduce, src, buf);
        mine[ITERS + i] = now_us();
        MPI_Barrier(MPI_COMM_WORLD);
    }
    MPI_Gather(mine, 2 * ITERS, MPI_DOUBLE, all, 2 * ITERS, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    if (rank == 0) {
        const double *r0 = all, *r1 = all + 2 * ITERS;
        for (int i = 0; i < ITERS; i++) {
            d[0][i] = r1[i] - r0[i];
            d[1][i] = r0[ITERS + i] - r0[i];
            d[2][i] = r1[ITERS + i] - r1[i];
            d[3][i] = r1[ITERS + i] - r0[ITERS + i];
        }
        printf("%s: medians of %d calls, us: rank 1 starts %.2f after rank 0, rank 0's call %.2f, "
               "rank 1's call %.2f, rank 1 ends %.2f after rank 0\n",
               allreduce ? "allreduce" : "broadcast", ITERS, median(d[0]), median(d[1]),
               median(d[2]), median(d[3]));
    }
    MPI_Finalize();
    return 0;
}
