/*
 * Bad input to every entry point: NULL pointers, enum values outside their lists, counts
 * that overflow, ranks and roots out of range, bad unique ids, a missing environment, and
 * handles used after destroy, abort or release; for the exchange collectives NULL count
 * arrays, overlapping blocks, displacements that overflow, buffers overlapping outside the
 * in-place layouts and counts that disagree (within a rank, and between the ranks of an
 * alltoallv pair); bitwise reductions on floating-point types. Each must return the
 * documented code and leave a message in oxcclGetLastError that explains it; none may
 * crash, and none may disturb the communicator (a collective afterwards still works), except
 * the alltoallv disagreement, which fails its own communicator as every failed call does.
 * Last, one thread reads the communicator's last error while another keeps failing calls on
 * it (under AddressSanitizer: the string read must never be one the other thread freed).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "harness.h"

/* Expects `call` to return `code` with the thread's last error containing `needle` (and
 * the communicator's too when `c` is given). */
#define EXPECT(call, code, needle, c)                                                       \
    do {                                                                                    \
        oxcclResult_t r_ = (call);                                                          \
        const char *m_ = oxcclGetLastError(NULL);                                           \
        CHECK(r_ == (code), "%s returned %d (%s), want %d; message: %s", #call, (int)r_,   \
              oxcclGetErrorString(r_), (int)(code), m_);                                    \
        CHECK(strstr(m_, (needle)) != NULL, "%s: message lacks '%s': %s", #call, (needle), \
              m_);                                                                          \
        if ((c) != NULL) {                                                                  \
            const char *cm_ = oxcclGetLastError(c);                                         \
            CHECK(strcmp(cm_, m_) == 0, "%s: comm message '%s' != thread message '%s'",    \
                  #call, cm_, m_);                                                          \
        }                                                                                   \
    } while (0)

#define NOCOMM ((oxcclComm_t)NULL)

static void null_pointers(oxcclComm_t comm) {
    const int A = oxcclInvalidArgument;
    float x[8] = {0};
    oxcclRequest_t req;
    EXPECT(oxcclGetVersion(NULL), A, "oxcclGetVersion: invalid argument: the out-parameter `version` is NULL", NOCOMM);
    EXPECT(oxcclGetUniqueId(NULL), A, "`uniqueId` is NULL", NOCOMM);
    oxcclUniqueId id;
    memset(&id, 0, sizeof id);
    EXPECT(oxcclCommInitRank(NULL, 1, id, 0), A, "`comm` is NULL", NOCOMM);
    EXPECT(oxcclCommInitFromEnv(NULL), A, "`comm` is NULL", NOCOMM);
    EXPECT(oxcclCommSplit(comm, 0, 0, NULL, NULL), A, "oxcclCommSplit: invalid argument: the out-parameter `newcomm` is NULL", comm);
    EXPECT(oxcclCommSplit(NULL, 0, 0, NULL, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclCommCount(comm, NULL), A, "`count` is NULL", comm);
    EXPECT(oxcclCommCount(NULL, NULL), A, "oxcclCommCount: invalid argument: comm is NULL", NOCOMM);
    EXPECT(oxcclCommUserRank(comm, NULL), A, "`rank` is NULL", comm);
    EXPECT(oxcclCommUserRank(NULL, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclCommGetAsyncError(comm, NULL), A, "`asyncError` is NULL", comm);
    EXPECT(oxcclCommGetAsyncError(NULL, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclTest(NULL, NULL), A, "request is NULL", NOCOMM);
    EXPECT(oxcclWait(NULL), A, "oxcclWait: invalid argument: request is NULL", NOCOMM);

    /* Buffers: NULL with a non-zero count. */
    EXPECT(oxcclAllReduce(NULL, x, 8, oxcclFloat32, oxcclSum, comm), A,
           "oxcclAllReduce: invalid argument: rank", comm);
    EXPECT(oxcclAllReduce(NULL, x, 8, oxcclFloat32, oxcclSum, comm), A,
           "allreduce: send buffer is NULL but 32 bytes are read from it", comm);
    EXPECT(oxcclAllReduce(x, NULL, 8, oxcclFloat32, oxcclSum, comm), A,
           "receive buffer is NULL but 32 bytes are written to it", comm);
    EXPECT(oxcclAllGather(x, NULL, 2, oxcclFloat32, comm), A, "receive buffer is NULL", comm);
    EXPECT(oxcclReduceScatter(NULL, x, 1, oxcclFloat32, oxcclSum, comm), A,
           "send buffer is NULL", comm);
    EXPECT(oxcclBroadcast(x, NULL, 8, oxcclFloat32, 0, comm), A, "receive buffer is NULL", comm);
    if (g_rank == 0) {
        EXPECT(oxcclBroadcast(NULL, x, 8, oxcclFloat32, 0, comm), A, "send buffer is NULL", comm);
        EXPECT(oxcclReduce(x, NULL, 8, oxcclFloat32, oxcclSum, 0, comm), A,
               "receive buffer is NULL", comm);
    }
    EXPECT(oxcclReduce(NULL, x, 8, oxcclFloat32, oxcclSum, 0, comm), A, "send buffer is NULL", comm);
    if (g_size > 1) {
        int peer = (g_rank + 1) % g_size;
        EXPECT(oxcclSend(NULL, 8, oxcclFloat32, peer, comm), A, "send: send buffer is NULL", comm);
        EXPECT(oxcclRecv(NULL, 8, oxcclFloat32, peer, comm), A, "recv: receive buffer is NULL", comm);
        EXPECT(oxcclSendAsync(x, 8, oxcclFloat32, peer, comm, NULL), A, "`request` is NULL", comm);
        EXPECT(oxcclRecvAsync(x, 8, oxcclFloat32, peer, comm, NULL), A, "`request` is NULL", comm);
    }
    /* Async variants: NULL request out-parameter. */
    EXPECT(oxcclAllReduceAsync(x, x, 8, oxcclFloat32, oxcclSum, comm, NULL), A,
           "oxcclAllReduceAsync: invalid argument: the out-parameter `request` is NULL", comm);
    EXPECT(oxcclBroadcastAsync(x, x, 8, oxcclFloat32, 0, comm, NULL), A, "`request` is NULL", comm);
    EXPECT(oxcclReduceAsync(x, x, 8, oxcclFloat32, oxcclSum, 0, comm, NULL), A, "`request` is NULL", comm);
    EXPECT(oxcclAllGatherAsync(x, x, 1, oxcclFloat32, comm, NULL), A, "`request` is NULL", comm);
    EXPECT(oxcclReduceScatterAsync(x, x, 1, oxcclFloat32, oxcclSum, comm, NULL), A,
           "`request` is NULL", comm);
    EXPECT(oxcclBarrierAsync(comm, NULL), A, "`request` is NULL", comm);
    /* comm NULL, everywhere. */
    EXPECT(oxcclAllReduce(x, x, 8, oxcclFloat32, oxcclSum, NULL), A, "oxcclAllReduce: invalid argument: comm is NULL", NOCOMM);
    EXPECT(oxcclBroadcast(x, x, 8, oxcclFloat32, 0, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclReduce(x, x, 8, oxcclFloat32, oxcclSum, 0, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclAllGather(x, x, 1, oxcclFloat32, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclReduceScatter(x, x, 1, oxcclFloat32, oxcclSum, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclSend(x, 8, oxcclFloat32, 0, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclRecv(x, 8, oxcclFloat32, 0, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclBarrier(NULL), A, "oxcclBarrier: invalid argument: comm is NULL", NOCOMM);
    EXPECT(oxcclAllReduceAsync(x, x, 8, oxcclFloat32, oxcclSum, NULL, &req), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclBroadcastAsync(x, x, 8, oxcclFloat32, 0, NULL, &req), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclReduceAsync(x, x, 8, oxcclFloat32, oxcclSum, 0, NULL, &req), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclAllGatherAsync(x, x, 1, oxcclFloat32, NULL, &req), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclReduceScatterAsync(x, x, 1, oxcclFloat32, oxcclSum, NULL, &req), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclSendAsync(x, 8, oxcclFloat32, 0, NULL, &req), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclRecvAsync(x, 8, oxcclFloat32, 0, NULL, &req), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclBarrierAsync(NULL, &req), A, "comm is NULL", NOCOMM);
    /* NULL handles are no-ops for destroy and abort, as free(NULL). */
    CHECK(oxcclCommDestroy(NULL) == oxcclSuccess, "destroy(NULL)");
    CHECK(oxcclCommAbort(NULL) == oxcclSuccess, "abort(NULL)");
    /* Count 0 needs no buffers at all (a real collective: every rank makes it). */
    OK(oxcclAllReduce(NULL, NULL, 0, oxcclFloat32, oxcclSum, comm));
    OK(oxcclAllGather(NULL, NULL, 0, oxcclInt8, comm));
    OK(oxcclReduceScatter(NULL, NULL, 0, oxcclFloat64, oxcclMax, comm));
}

static void invalid_enums(oxcclComm_t comm) {
    const int A = oxcclInvalidArgument;
    float x[8] = {0};
    oxcclRequest_t req = (oxcclRequest_t)&req;
    oxcclRequest_t before = req;
    int bad_types[] = {-1, 12, 13, 255, 1 << 30, INT32_MIN};
    for (size_t i = 0; i < sizeof bad_types / sizeof bad_types[0]; i++) {
        oxcclDataType_t t = (oxcclDataType_t)bad_types[i];
        EXPECT(oxcclAllReduce(x, x, 8, t, oxcclSum, comm), A, "is not an oxcclDataType_t (valid: 0..=11", comm);
        EXPECT(oxcclBroadcast(x, x, 8, t, 0, comm), A, "is not an oxcclDataType_t", comm);
        EXPECT(oxcclReduce(x, x, 8, t, oxcclSum, 0, comm), A, "is not an oxcclDataType_t", comm);
        EXPECT(oxcclAllGather(x, x, 1, t, comm), A, "is not an oxcclDataType_t", comm);
        EXPECT(oxcclReduceScatter(x, x, 1, t, oxcclSum, comm), A, "is not an oxcclDataType_t", comm);
        EXPECT(oxcclSend(x, 8, t, 0, comm), A, "is not an oxcclDataType_t", comm);
        EXPECT(oxcclRecv(x, 8, t, 0, comm), A, "is not an oxcclDataType_t", comm);
        EXPECT(oxcclAllReduceAsync(x, x, 8, t, oxcclSum, comm, &req), A, "oxcclDataType_t", comm);
        CHECK(req == before, "request written on failure");
    }
    char msg[64];
    snprintf(msg, sizeof msg, "datatype %d is not", 12);
    EXPECT(oxcclAllReduce(x, x, 8, (oxcclDataType_t)12, oxcclSum, comm), A, msg, comm);
    int bad_ops[] = {-1, 8, 9, 1000, INT32_MAX};
    for (size_t i = 0; i < sizeof bad_ops / sizeof bad_ops[0]; i++) {
        oxcclRedOp_t o = (oxcclRedOp_t)bad_ops[i];
        EXPECT(oxcclAllReduce(x, x, 8, oxcclFloat32, o, comm), A, "is not an oxcclRedOp_t (valid: 0..=7", comm);
        EXPECT(oxcclReduce(x, x, 8, oxcclFloat32, o, 0, comm), A, "is not an oxcclRedOp_t", comm);
        EXPECT(oxcclReduceScatter(x, x, 1, oxcclFloat32, o, comm), A, "is not an oxcclRedOp_t", comm);
        EXPECT(oxcclReduceScatterAsync(x, x, 1, oxcclFloat32, o, comm, &req), A, "oxcclRedOp_t", comm);
        CHECK(req == before, "request written on failure");
    }
    /* Error strings: every code has one; anything else is unknown. */
    CHECK(strcmp(oxcclGetErrorString(oxcclSuccess), "no error") == 0, "success string");
    CHECK(strstr(oxcclGetErrorString(oxcclInvalidArgument), "invalid argument") != NULL, "arg string");
    CHECK(strstr(oxcclGetErrorString(oxcclRemoteError), "remote") != NULL, "remote string");
    CHECK(strstr(oxcclGetErrorString(oxcclTimeout), "timeout") != NULL, "timeout string");
    CHECK(strcmp(oxcclGetErrorString((oxcclResult_t)1), "unknown result code") == 0, "code 1");
    CHECK(strcmp(oxcclGetErrorString((oxcclResult_t)99), "unknown result code") == 0, "code 99");
    CHECK(strcmp(oxcclGetErrorString((oxcclResult_t)-1), "unknown result code") == 0, "code -1");
}

static void overflow_and_ranges(oxcclComm_t comm) {
    const int A = oxcclInvalidArgument;
    float x[8] = {0};
    EXPECT(oxcclAllReduce(x, x, SIZE_MAX, oxcclFloat32, oxcclSum, comm), A,
           "count 18446744073709551615 of float (4 bytes each) overflows the address space", comm);
    EXPECT(oxcclAllReduce(x, x, SIZE_MAX / 2, oxcclFloat64, oxcclSum, comm), A, "overflows", comm);
    EXPECT(oxcclAllReduce(x, x, SIZE_MAX / 2 + 1, oxcclInt8, oxcclSum, comm), A, "overflows", comm);
    if (g_size > 1) {
        EXPECT(oxcclAllGather(x, x, SIZE_MAX / 2 / (size_t)g_size + 1, oxcclInt8, comm), A,
               "ranks) overflows", comm);
    }
    EXPECT(oxcclReduceScatter(x, x, SIZE_MAX / 4 + 1, oxcclFloat32, oxcclSum, comm), A, "overflows", comm);
    EXPECT(oxcclBroadcast(x, x, SIZE_MAX, oxcclUint8, 0, comm), A, "overflows", comm);
    EXPECT(oxcclSend(x, SIZE_MAX / 3, oxcclUint64, 0, comm), A, "overflows", comm);
    /* Counts no buffer can have, refused before anything is built for them. */
    float y[8] = {0};
    EXPECT(oxcclAllReduce(x, y, PTRDIFF_MAX / 64, oxcclFloat32, oxcclSum, comm), A,
           "cannot exist", comm);
    EXPECT(oxcclAllReduce(x, y, (size_t)1 << 36, oxcclFloat32, oxcclSum, comm), A,
           "cannot exist (its last byte is not mapped): is the count right?", comm);
    EXPECT(oxcclBroadcast(y, y, (size_t)1 << 40, oxcclUint8, 0, comm), A, "cannot exist", comm);
    /* Buffers overlapping outside the in-place layout (same address is in place). */
    float z[16] = {0};
    EXPECT(oxcclAllReduce(z, z + 1, 8, oxcclFloat32, oxcclSum, comm), A,
           "the send and receive buffers overlap, and not in the in-place layout", comm);
    EXPECT(oxcclAllGather(z + 1, z, 8, oxcclFloat32, comm), A, "overlap", comm); /* never in place */
    if (g_size == 1) { /* elsewhere only the root's buffers overlap */
        EXPECT(oxcclBroadcast(z, z + 2, 8, oxcclFloat32, 0, comm), A, "overlap", comm);
    }
    /* A buffer that would wrap around the end of the address space. */
    EXPECT(oxcclAllReduce((void *)(UINTPTR_MAX - 15), (void *)(UINTPTR_MAX - 15), 8, oxcclFloat32,
                          oxcclSum, comm), A, "overflows the address space", comm);

    char msg[96];
    int n = g_size;
    snprintf(msg, sizeof msg, "root %d is out of range for %d ranks", n, n);
    EXPECT(oxcclBroadcast(x, x, 8, oxcclFloat32, n, comm), A, msg, comm);
    EXPECT(oxcclReduce(x, x, 8, oxcclFloat32, oxcclSum, n, comm), A, msg, comm);
    snprintf(msg, sizeof msg, "root -1 is out of range for %d ranks", n);
    EXPECT(oxcclBroadcast(x, x, 8, oxcclFloat32, -1, comm), A, msg, comm);
    EXPECT(oxcclReduceAsync(x, x, 8, oxcclFloat32, oxcclSum, -1, comm, &(oxcclRequest_t){0}), A, msg, comm);
    snprintf(msg, sizeof msg, "peer %d is out of range for %d ranks", n + 5, n);
    EXPECT(oxcclSend(x, 8, oxcclFloat32, n + 5, comm), A, msg, comm);
    EXPECT(oxcclRecv(x, 8, oxcclFloat32, n + 5, comm), A, msg, comm);
    EXPECT(oxcclSend(x, 8, oxcclFloat32, -3, comm), A, "peer -3 is out of range", comm);
    snprintf(msg, sizeof msg, "rank %d: send: peer is this rank itself", g_rank);
    EXPECT(oxcclSend(x, 8, oxcclFloat32, g_rank, comm), A, msg, comm);
    EXPECT(oxcclRecvAsync(x, 8, oxcclFloat32, g_rank, comm, &(oxcclRequest_t){0}), A,
           "recv: peer is this rank itself", comm);
    snprintf(msg, sizeof msg, "color -2 must be >= 0, or OXCCL_SPLIT_NOCOLOR");
    oxcclComm_t out = (oxcclComm_t)&out, before = out;
    EXPECT(oxcclCommSplit(comm, -2, 0, &out, NULL), A, msg, comm);
    CHECK(out == before, "split wrote its out-parameter on failure");

    /* Init: ranks, counts and ids. */
    oxcclUniqueId id;
    memset(&id, 0, sizeof id);
    oxcclComm_t c = (oxcclComm_t)&c, cb = c;
    EXPECT(oxcclCommInitRank(&c, 4, id, 4), A, "oxcclCommInitRank: invalid argument: rank 4 is out of range for 4 ranks (0..=3)", NOCOMM);
    EXPECT(oxcclCommInitRank(&c, 4, id, -1), A, "rank -1 is out of range for 4 ranks", NOCOMM);
    EXPECT(oxcclCommInitRank(&c, 0, id, 0), A, "nranks 0 must be at least 1", NOCOMM);
    EXPECT(oxcclCommInitRank(&c, -5, id, 0), A, "nranks -5 must be at least 1", NOCOMM);
    EXPECT(oxcclCommInitRank(&c, 2, id, 1), A, "commId: not an oxccl unique id: wrong magic", NOCOMM);
    memset(&id, 0xff, sizeof id);
    EXPECT(oxcclCommInitRank(&c, 2, id, 1), A, "not an oxccl unique id", NOCOMM);
    CHECK(c == cb, "InitRank wrote its out-parameter on failure");

    /* The environment: a missing variable is named. */
    char *saved = getenv("OXCCL_RANK");
    char keep[32];
    snprintf(keep, sizeof keep, "%s", saved ? saved : "");
    unsetenv("OXCCL_RANK");
    EXPECT(oxcclCommInitFromEnv(&c), A, "OXCCL_RANK is not set", NOCOMM);
    setenv("OXCCL_RANK", "x", 1);
    EXPECT(oxcclCommInitFromEnv(&c), A, "OXCCL_RANK='x' is not a non-negative integer", NOCOMM);
    setenv("OXCCL_RANK", "99", 1);
    EXPECT(oxcclCommInitFromEnv(&c), A, "rank 99 is not below the world size", NOCOMM);
    setenv("OXCCL_RANK", keep, 1);
    CHECK(c == cb, "InitFromEnv wrote its out-parameter on failure");
}

/* The exchange collectives' arguments. Every call here is refused on every rank before it
 * communicates (each rank's arguments are wrong the same way), so that no rank is left
 * waiting in a collective; layouts that only matter at a root use a one-rank communicator. */
static void exchange_args(oxcclComm_t comm) {
    const int A = oxcclInvalidArgument;
    const oxcclDataType_t F = oxcclFloat32;
    int n = g_size, me = g_rank;
    size_t N = (size_t)n;
    float *x = calloc(8 * N + 8, sizeof *x), *y = calloc(8 * N + 8, sizeof *y);
    size_t *c1 = calloc(N, sizeof(size_t)), *d1 = calloc(N, sizeof(size_t));
    size_t *c2 = calloc(N, sizeof(size_t)), *d2 = calloc(N, sizeof(size_t));
    size_t *bad = calloc(N, sizeof(size_t)), *zero = calloc(N, sizeof(size_t));
    for (size_t j = 0; j < N; j++) {
        c1[j] = 1;
        d1[j] = j;
        c2[j] = 2;
        d2[j] = 2 * j;
    }
    char msg[200];
    oxcclRequest_t req = (oxcclRequest_t)&req, before = req;

    /* NULL count and displacement arrays, each named. */
    EXPECT(oxcclAlltoAllv(x, NULL, d1, y, c1, d1, F, comm), A,
           "oxcclAlltoAllv: invalid argument: rank", comm);
    EXPECT(oxcclAlltoAllv(x, NULL, d1, y, c1, d1, F, comm), A, "alltoallv: sendcounts is NULL", comm);
    EXPECT(oxcclAlltoAllv(x, c1, NULL, y, c1, d1, F, comm), A, "alltoallv: sdispls is NULL", comm);
    EXPECT(oxcclAlltoAllv(x, c1, d1, y, NULL, d1, F, comm), A, "alltoallv: recvcounts is NULL", comm);
    EXPECT(oxcclAlltoAllv(x, c1, d1, y, c1, NULL, F, comm), A, "alltoallv: rdispls is NULL", comm);
    EXPECT(oxcclAlltoAllvAsync(x, c1, d1, y, c1, NULL, F, comm, &req), A,
           "oxcclAlltoAllvAsync: invalid argument: rank", comm);
    EXPECT(oxcclAlltoAllvAsync(x, c1, d1, y, c1, NULL, F, comm, &req), A, "rdispls is NULL", comm);
    EXPECT(oxcclAllGatherv(x, 1, y, NULL, d1, F, comm), A, "allgatherv: recvcounts is NULL", comm);
    EXPECT(oxcclAllGatherv(x, 1, y, c1, NULL, F, comm), A, "allgatherv: displs is NULL", comm);
    EXPECT(oxcclAllGathervAsync(x, 1, y, c1, NULL, F, comm, &req), A, "displs is NULL", comm);
    EXPECT(oxcclReduceScatterv(x, y, NULL, F, oxcclSum, comm), A,
           "reduce_scatterv: recvcounts is NULL", comm);
    EXPECT(oxcclReduceScattervAsync(x, y, NULL, F, oxcclSum, comm, &req), A,
           "recvcounts is NULL", comm);
    CHECK(req == before, "request written on failure");

    /* A rank's own counts must agree. */
    snprintf(msg, sizeof msg, "rank %d: allgatherv: sendcount 2 differs from recvcounts[%d] = 1",
             me, me);
    EXPECT(oxcclAllGatherv(x, 2, y, c1, d1, F, comm), A, msg, comm);
    EXPECT(oxcclAllGathervAsync(x, 0, y, c1, d1, F, comm, &req), A, "sendcount 0 differs", comm);
    memcpy(bad, c1, N * sizeof *bad);
    bad[me] = 2;
    snprintf(msg, sizeof msg, "rank %d: alltoallv: sendcounts[%d] = 2 but recvcounts[%d] = 1", me,
             me, me);
    EXPECT(oxcclAlltoAllv(x, bad, d2, y, c1, d1, F, comm), A, msg, comm);
    snprintf(msg, sizeof msg, "sendcounts[%d] = 1 but recvcounts[%d] = 2", me, me);
    EXPECT(oxcclAlltoAllvAsync(x, c1, d1, y, bad, d2, F, comm, &req), A, msg, comm);
    CHECK(req == before, "request written on failure");

    /* Displacement + count overflowing, and sizes past the address space. */
    memcpy(bad, d1, N * sizeof *bad);
    bad[N - 1] = SIZE_MAX;
    snprintf(msg, sizeof msg, "send block[%d]: displacement 18446744073709551615 + count 1 overflows",
             n - 1);
    EXPECT(oxcclAlltoAllv(x, c1, bad, y, c1, d1, F, comm), A, msg, comm);
    snprintf(msg, sizeof msg, "receive block[%d]: displacement 18446744073709551615 + count 1 overflows",
             n - 1);
    EXPECT(oxcclAlltoAllv(x, c1, d1, y, c1, bad, F, comm), A, msg, comm);
    EXPECT(oxcclAllGatherv(x, 1, y, c1, bad, F, comm), A, msg, comm);
    memcpy(bad, c1, N * sizeof *bad);
    bad[N - 1] = SIZE_MAX;
    if (n > 1) {
        snprintf(msg, sizeof msg, "rank %d: reduce_scatterv: send block[%d]: displacement %d + "
                 "count 18446744073709551615 overflows", me, n - 1, n - 1);
    } else {
        snprintf(msg, sizeof msg, "rank 0: reduce_scatterv: send buffer of 18446744073709551615 "
                 "elements overflows the address space");
    }
    EXPECT(oxcclReduceScatterv(x, y, bad, F, oxcclSum, comm), A, msg, comm);
    bad[N - 1] = SIZE_MAX / 4;
    snprintf(msg, sizeof msg, "alltoallv: receive buffer of %zu elements overflows the address space",
             SIZE_MAX / 4 + N - 1);
    EXPECT(oxcclAlltoAllv(x, c1, d1, y, bad, d1, F, comm), A, msg, comm);
    if (n > 1) {
        snprintf(msg, sizeof msg, "(4 bytes each, times %d ranks) overflows the address space", n);
    } else {
        snprintf(msg, sizeof msg, "of float (4 bytes each) overflows the address space");
    }
    EXPECT(oxcclAlltoAll(x, y, SIZE_MAX / 4 / N + 1, F, comm), A, msg, comm);
    EXPECT(oxcclGather(x, y, SIZE_MAX / 4 / N + 1, F, 0, comm), A, "overflows", comm);
    EXPECT(oxcclScatterAsync(x, y, SIZE_MAX, F, 0, comm, &req), A, "overflows", comm);

    /* Receive blocks that overlap (two blocks need two ranks). */
    if (n > 1) {
        snprintf(msg, sizeof msg, "receive blocks 0 (displacement 0, count 2) and 1 "
                                  "(displacement 1, count 2) overlap");
        EXPECT(oxcclAlltoAllv(x, c2, d2, y, c2, d1, F, comm), A, msg, comm);
        EXPECT(oxcclAllGatherv(x, 2, y, c2, d1, F, comm), A, msg, comm);
        EXPECT(oxcclAllGathervAsync(x, 2, y, c2, d1, F, comm, &req), A, "overlap", comm);
    }
    /* Blocks of zero elements may share a displacement (a real call: every rank makes it). */
    OK(oxcclAllGatherv(NULL, 0, NULL, zero, zero, F, comm));
    OK(oxcclAlltoAllv(NULL, zero, zero, NULL, zero, zero, F, comm));
    OK(oxcclReduceScatterv(NULL, NULL, zero, F, oxcclMax, comm));

    /* Send and receive buffers overlapping outside the in-place layouts. */
    const char *ov = "the send and receive buffers overlap, and not in the in-place layout";
    EXPECT(oxcclAllGatherv(y + d2[me] + 1, 2, y, c2, d2, F, comm), A, ov, comm);
    EXPECT(oxcclReduceScatterv(x, x + 2 * me + 1, c2, F, oxcclSum, comm), A, ov, comm);
    EXPECT(oxcclReduceScattervAsync(x + 1, x + 2 * me, c2, F, oxcclSum, comm, &req), A, ov, comm);
    /* Alltoall(v) has no in-place layout: any overlap is refused. */
    EXPECT(oxcclAlltoAll(x, x, 2, F, comm), A, "overlap", comm);
    EXPECT(oxcclAlltoAll(x + 1, x, 2, F, comm), A, "overlap", comm);
    EXPECT(oxcclAlltoAllv(x, c2, d2, x + 1, c2, d2, F, comm), A, "overlap", comm);
    CHECK(req == before, "request written on failure");
    oxcclComm_t solo = NULL;
    OK(oxcclCommSplit(comm, me, 0, &solo, NULL));
    EXPECT(oxcclGather(y + 1, y, 2, F, 0, solo), A, ov, solo);
    EXPECT(oxcclGatherAsync(y, y + 1, 2, F, 0, solo, &req), A, ov, solo);
    EXPECT(oxcclScatter(y, y + 1, 2, F, 0, solo), A, ov, solo);
    EXPECT(oxcclScatterAsync(y + 1, y, 2, F, 0, solo, &req), A, ov, solo);
    CHECK(req == before, "request written on failure");
    /* At the root of a gather the receive buffer is written, of a scatter the send one read. */
    EXPECT(oxcclGather(y, NULL, 2, F, 0, solo), A, "gather: receive buffer is NULL", solo);
    EXPECT(oxcclScatter(NULL, y, 2, F, 0, solo), A, "scatter: send buffer is NULL", solo);
    /* The documented layouts are accepted. */
    OK(oxcclGather(y, y, 2, F, 0, solo));
    OK(oxcclScatter(y, y, 2, F, 0, solo));
    OK(oxcclCommDestroy(solo));

    /* NULL buffers where bytes move. */
    EXPECT(oxcclAlltoAll(NULL, y, 1, F, comm), A, "alltoall: send buffer is NULL", comm);
    EXPECT(oxcclAlltoAll(x, NULL, 1, F, comm), A, "alltoall: receive buffer is NULL", comm);
    EXPECT(oxcclAlltoAllv(x, c1, d1, NULL, c1, d1, F, comm), A, "receive buffer is NULL", comm);
    EXPECT(oxcclScatter(x, NULL, 1, F, 0, comm), A, "scatter: receive buffer is NULL", comm);
    EXPECT(oxcclGather(NULL, y, 1, F, 0, comm), A, "gather: send buffer is NULL", comm);
    EXPECT(oxcclAllGatherv(x, 1, NULL, c1, d1, F, comm), A, "allgatherv: receive buffer is NULL", comm);
    EXPECT(oxcclReduceScatterv(NULL, y, c1, F, oxcclSum, comm), A, "send buffer is NULL", comm);
    OK(oxcclAlltoAll(NULL, NULL, 0, F, comm));
    OK(oxcclGather(NULL, NULL, 0, F, 0, comm));
    OK(oxcclScatter(NULL, NULL, 0, F, n - 1, comm));

    /* Roots, data types, ops, handles and request out-parameters. */
    snprintf(msg, sizeof msg, "root %d is out of range for %d ranks", n, n);
    EXPECT(oxcclGather(x, y, 1, F, n, comm), A, msg, comm);
    EXPECT(oxcclScatter(x, y, 1, F, n, comm), A, msg, comm);
    EXPECT(oxcclGatherAsync(x, y, 1, F, -1, comm, &req), A, "root -1 is out of range", comm);
    EXPECT(oxcclScatterAsync(x, y, 1, F, -1, comm, &req), A, "root -1 is out of range", comm);
    const oxcclDataType_t T = (oxcclDataType_t)12;
    const char *nt = "datatype 12 is not an oxcclDataType_t (valid: 0..=11";
    EXPECT(oxcclAlltoAll(x, y, 1, T, comm), A, nt, comm);
    EXPECT(oxcclAlltoAllv(x, c1, d1, y, c1, d1, T, comm), A, nt, comm);
    EXPECT(oxcclGather(x, y, 1, T, 0, comm), A, nt, comm);
    EXPECT(oxcclScatter(x, y, 1, T, 0, comm), A, nt, comm);
    EXPECT(oxcclAllGatherv(x, 1, y, c1, d1, T, comm), A, nt, comm);
    EXPECT(oxcclReduceScatterv(x, y, c1, T, oxcclSum, comm), A, nt, comm);
    EXPECT(oxcclReduceScatterv(x, y, c1, F, (oxcclRedOp_t)8, comm), A,
           "op 8 is not an oxcclRedOp_t (valid: 0..=7", comm);
    EXPECT(oxcclAlltoAllAsync(x, y, 1, F, comm, NULL), A, "`request` is NULL", comm);
    EXPECT(oxcclAlltoAllvAsync(x, c1, d1, y, c1, d1, F, comm, NULL), A, "`request` is NULL", comm);
    EXPECT(oxcclGatherAsync(x, y, 1, F, 0, comm, NULL), A, "`request` is NULL", comm);
    EXPECT(oxcclScatterAsync(x, y, 1, F, 0, comm, NULL), A, "`request` is NULL", comm);
    EXPECT(oxcclAllGathervAsync(x, 1, y, c1, d1, F, comm, NULL), A, "`request` is NULL", comm);
    EXPECT(oxcclReduceScattervAsync(x, y, c1, F, oxcclSum, comm, NULL), A, "`request` is NULL",
           comm);
    EXPECT(oxcclAlltoAll(x, y, 1, F, NULL), A, "oxcclAlltoAll: invalid argument: comm is NULL", NOCOMM);
    EXPECT(oxcclAlltoAllv(x, c1, d1, y, c1, d1, F, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclGather(x, y, 1, F, 0, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclScatter(x, y, 1, F, 0, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclAllGatherv(x, 1, y, c1, d1, F, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclReduceScatterv(x, y, c1, F, oxcclSum, NULL), A, "comm is NULL", NOCOMM);
    EXPECT(oxcclReduceScattervAsync(x, y, c1, F, oxcclSum, NULL, &req), A, "comm is NULL", NOCOMM);
    CHECK(req == before, "request written on failure");
    free(x);
    free(y);
    free(c1);
    free(d1);
    free(c2);
    free(d2);
    free(bad);
    free(zero);
}

/* The bitwise reductions on floating-point types: refused, naming the op and the type. */
static void bitwise_on_floats(oxcclComm_t comm) {
    const int A = oxcclInvalidArgument;
    static const oxcclDataType_t floats[] = {oxcclFloat16,  oxcclFloat32,    oxcclFloat64,
                                             oxcclBfloat16, oxcclFloat8e4m3, oxcclFloat8e5m2};
    static const char *names[] = {"half", "float", "double", "bfloat16", "float8_e4m3",
                                  "float8_e5m2"};
    static const oxcclRedOp_t ops[] = {oxcclBand, oxcclBor, oxcclBxor};
    double x[8 * 9] = {0};
    size_t *counts = calloc((size_t)g_size, sizeof(size_t));
    for (int j = 0; j < g_size; j++) {
        counts[j] = 1;
    }
    oxcclRequest_t req = (oxcclRequest_t)&req, before = req;
    char msg[160];
    for (size_t ti = 0; ti < sizeof floats / sizeof floats[0]; ti++) {
        for (size_t oi = 0; oi < 3; oi++) {
            oxcclDataType_t t = floats[ti];
            oxcclRedOp_t o = ops[oi];
            snprintf(msg, sizeof msg, "reduction op %s is defined for integer types only, not %s",
                     op_name(o), names[ti]);
            EXPECT(oxcclAllReduce(x, x, 8, t, o, comm), A, msg, comm);
            EXPECT(oxcclReduce(x, x, 8, t, o, 0, comm), A, msg, comm);
            EXPECT(oxcclReduceScatter(x, x + 8, 1, t, o, comm), A, msg, comm);
            EXPECT(oxcclReduceScatterv(x, x + 8, counts, t, o, comm), A, msg, comm);
            EXPECT(oxcclAllReduceAsync(x, x, 8, t, o, comm, &req), A, msg, comm);
            EXPECT(oxcclReduceScattervAsync(x, x + 8, counts, t, o, comm, &req), A, msg, comm);
            CHECK(req == before, "request written on failure");
        }
    }
    snprintf(msg, sizeof msg, "rank %d: allreduce: reduction op bxor", g_rank);
    EXPECT(oxcclAllReduce(x, x, 8, oxcclFloat32, oxcclBxor, comm), A, msg, comm);
    /* On integers they run (a real call: every rank makes it). */
    uint32_t bit = 1u << g_rank, all = 0;
    OK(oxcclAllReduce(&bit, &all, 1, oxcclUint32, oxcclBor, comm));
    CHECK(all == (1u << g_size) - 1, "bor of the ranks' bits: %#x", (unsigned)all);
    free(counts);
}

/* Alltoallv counts that disagree within a pair: both ranks of it fail with
 * oxcclInvalidUsage (promptly), the failure sticks, blocking and Async. On a communicator of
 * ranks 0 and 1, as tests/collectives/exchange.rs does it. */
static void alltoallv_disagreement(oxcclComm_t world) {
    if (g_size < 2) {
        return;
    }
    for (int async = 0; async < 2; async++) {
        oxcclComm_t pair = NULL;
        OK(oxcclCommSplit(world, g_rank < 2 ? 0 : OXCCL_SPLIT_NOCOLOR, g_rank, &pair, NULL));
        if (pair == NULL) {
            continue;
        }
        /* Rank 0 sends 3 elements to rank 1, which expects 4. */
        int me = g_rank;
        size_t to[2] = {2, me == 0 ? 3 : 2}, from[2] = {me == 0 ? 2 : 4, 2};
        size_t sd[2] = {0, to[0]}, rd[2] = {0, from[0]};
        float send[8] = {1, 2, 3, 4, 5, 6, 7, 8}, recv[8] = {0};
        double t0 = now_s();
        oxcclResult_t r;
        if (async) {
            oxcclRequest_t req = NULL;
            OK(oxcclAlltoAllvAsync(send, to, sd, recv, from, rd, oxcclFloat32, pair, &req));
            r = oxcclWait(req);
        } else {
            r = oxcclAlltoAllv(send, to, sd, recv, from, rd, oxcclFloat32, pair);
        }
        const char *m = oxcclGetLastError(NULL);
        CHECK(r == oxcclInvalidUsage, "alltoallv with disagreeing counts (%s) returned %d: %s",
              async ? "async" : "blocking", (int)r, m);
        CHECK(strstr(m, "mismatched counts in alltoallv") != NULL, "disagreement message: %s", m);
        CHECK(strstr(oxcclGetLastError(pair), "alltoallv") != NULL, "comm's message: %s",
              oxcclGetLastError(pair));
        CHECK(now_s() - t0 < 30, "the disagreement took %.1f s to show", now_s() - t0);
        oxcclResult_t ae = oxcclSuccess;
        OK(oxcclCommGetAsyncError(pair, &ae));
        CHECK(ae == oxcclInvalidUsage, "async error after the disagreement: %d", (int)ae);
        CHECK(oxcclBarrier(pair) == oxcclInvalidUsage, "the failure did not stick");
        OK(oxcclCommDestroy(pair));
    }
}

static void use_after_destroy(oxcclComm_t world) {
    const int U = oxcclInvalidUsage;
    float x[8] = {0};
    int v = -7;
    oxcclRequest_t req = NULL;
    oxcclComm_t c = NULL;
    OK(oxcclCommSplit(world, 0, 0, &c, NULL));
    OK(oxcclCommDestroy(c));
    EXPECT(oxcclCommDestroy(c), U, "oxcclCommDestroy: invalid usage: communicator", NOCOMM);
    EXPECT(oxcclCommDestroy(c), U, "is not live: it was destroyed", NOCOMM);
    EXPECT(oxcclCommAbort(c), U, "is not live", NOCOMM);
    EXPECT(oxcclCommCount(c, &v), U, "oxcclCommCount: invalid usage: communicator", NOCOMM);
    CHECK(v == -7, "count written on failure");
    EXPECT(oxcclCommUserRank(c, &v), U, "is not live", NOCOMM);
    oxcclResult_t ae = oxcclSuccess;
    EXPECT(oxcclCommGetAsyncError(c, &ae), U, "is not live", NOCOMM);
    EXPECT(oxcclCommSplit(c, 0, 0, &c, NULL), U, "is not live", NOCOMM);
    EXPECT(oxcclAllReduce(x, x, 8, oxcclFloat32, oxcclSum, c), U, "oxcclAllReduce: invalid usage", NOCOMM);
    EXPECT(oxcclBroadcast(x, x, 8, oxcclFloat32, 0, c), U, "is not live", NOCOMM);
    EXPECT(oxcclReduce(x, x, 8, oxcclFloat32, oxcclSum, 0, c), U, "is not live", NOCOMM);
    EXPECT(oxcclAllGather(x, x, 1, oxcclFloat32, c), U, "is not live", NOCOMM);
    EXPECT(oxcclReduceScatter(x, x, 1, oxcclFloat32, oxcclSum, c), U, "is not live", NOCOMM);
    EXPECT(oxcclSend(x, 8, oxcclFloat32, 0, c), U, "is not live", NOCOMM);
    EXPECT(oxcclRecv(x, 8, oxcclFloat32, 0, c), U, "is not live", NOCOMM);
    EXPECT(oxcclBarrier(c), U, "is not live", NOCOMM);
    EXPECT(oxcclAllReduceAsync(x, x, 8, oxcclFloat32, oxcclSum, c, &req), U, "is not live", NOCOMM);
    EXPECT(oxcclBarrierAsync(c, &req), U, "is not live", NOCOMM);
    size_t one[1] = {1};
    EXPECT(oxcclAlltoAll(x, x + 4, 1, oxcclFloat32, c), U, "oxcclAlltoAll: invalid usage", NOCOMM);
    EXPECT(oxcclAlltoAllv(x, one, one, x + 4, one, one, oxcclFloat32, c), U, "is not live", NOCOMM);
    EXPECT(oxcclGather(x, x + 4, 1, oxcclFloat32, 0, c), U, "is not live", NOCOMM);
    EXPECT(oxcclScatter(x, x + 4, 1, oxcclFloat32, 0, c), U, "is not live", NOCOMM);
    EXPECT(oxcclAllGatherv(x, 1, x + 4, one, one, oxcclFloat32, c), U, "is not live", NOCOMM);
    EXPECT(oxcclReduceScatterv(x, x + 4, one, oxcclFloat32, oxcclSum, c), U, "is not live", NOCOMM);
    EXPECT(oxcclAlltoAllAsync(x, x + 4, 1, oxcclFloat32, c, &req), U, "is not live", NOCOMM);
    EXPECT(oxcclReduceScattervAsync(x, x + 4, one, oxcclFloat32, oxcclSum, c, &req), U,
           "is not live", NOCOMM);
    CHECK(req == NULL, "request written on failure");
    CHECK(strstr(oxcclGetLastError(c), "not live") != NULL, "GetLastError of a destroyed comm: %s",
          oxcclGetLastError(c));
    /* A handle oxccl never made is refused the same way. */
    EXPECT(oxcclBarrier((oxcclComm_t)x), U, "is not live", NOCOMM);
    EXPECT(oxcclWait((oxcclRequest_t)x), U, "oxcclWait: invalid usage: request", NOCOMM);

    /* Aborted handles are dead too. */
    OK(oxcclCommSplit(world, 0, 0, &c, NULL));
    OK(oxcclCommAbort(c));
    EXPECT(oxcclBarrier(c), U, "is not live", NOCOMM);
    EXPECT(oxcclCommAbort(c), U, "is not live", NOCOMM);

    /* Requests: released by the call that saw completion. */
    int done = 0;
    OK(oxcclAllReduceAsync(x, x, 8, oxcclFloat32, oxcclSum, world, &req));
    OK(oxcclWait(req));
    EXPECT(oxcclWait(req), U, "oxcclWait: invalid usage: request", NOCOMM);
    EXPECT(oxcclTest(req, &done), U, "was destroyed, aborted or released already", NOCOMM);
    OK(oxcclBarrierAsync(world, &req));
    EXPECT(oxcclTest(req, NULL), oxcclInvalidArgument, "`done` is NULL", NOCOMM);
    double t0 = now_s();
    oxcclResult_t r = oxcclSuccess;
    while (r == oxcclSuccess && !done && now_s() - t0 < 60) {
        r = oxcclTest(req, &done);
    }
    CHECK(r == oxcclSuccess && done, "barrier request: result %d, done %d", (int)r, done);
    EXPECT(oxcclTest(req, &done), U, "is not live", NOCOMM);
    EXPECT(oxcclWait(req), U, "is not live", NOCOMM);
}

struct failer {
    oxcclComm_t comm;
    int calls;
    atomic_int done;
};

/* Fails calls on the communicator with messages of changing lengths (the count is in them). */
static void *fail_calls(void *arg) {
    struct failer *f = arg;
    float x[1];
    for (int i = 0; i < f->calls; i++) {
        size_t count = (size_t)1 << (i % 40);
        (void)oxcclAllReduce(NULL, x, count, oxcclFloat32, oxcclSum, f->comm);
    }
    atomic_store(&f->done, 1);
    return NULL;
}

static void last_error_from_two_threads(oxcclComm_t comm) {
    struct failer f = {comm, 20000, 0};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, fail_calls, &f) == 0, "pthread_create");
    size_t reads = 0, seen = 0;
    /* Read while the other thread fails calls (and at least 20000 times). */
    while (!atomic_load(&f.done) || reads < 20000) {
        const char *m = oxcclGetLastError(comm);
        size_t n = strlen(m);
        reads++;
        if (n > 0) {
            CHECK(strstr(m, "oxcclAllReduce: invalid argument") == m,
                  "last error read while another thread fails calls: '%s'", m);
            seen++;
        }
    }
    CHECK(pthread_join(t, NULL) == 0, "pthread_join");
    /* The other thread may have run all its calls between two reads (ranks outnumber
     * cores): after it ended, its last message must be there. */
    const char *last = oxcclGetLastError(comm);
    CHECK(strstr(last, "oxcclAllReduce: invalid argument") == last,
          "after the other thread's failures (%zu of %zu reads saw one): '%s'", seen, reads, last);
}

struct receiver {
    oxcclComm_t comm;
    int peer;
    atomic_int started;
    oxcclResult_t result;
};

/* A receive no rank answers: it waits inside the communicator until something ends it. */
static void *receive_unanswered(void *arg) {
    struct receiver *x = arg;
    float b[4];
    atomic_store(&x->started, 1);
    x->result = oxcclRecv(b, 4, oxcclFloat32, x->peer, x->comm);
    return NULL;
}

/* A call from a second thread while the first thread's call runs is refused, and the job
 * fails with that cause: the running call ends too (on its own communicator, split off). */
static void two_threads_on_one_communicator(oxcclComm_t world) {
    if (g_size < 2) {
        return;
    }
    oxcclComm_t c;
    OK(oxcclCommSplit(world, 0, g_rank, &c, NULL));
    struct receiver x = {c, (g_rank + 1) % g_size, 0, oxcclSuccess};
    pthread_t t;
    CHECK(pthread_create(&t, NULL, receive_unanswered, &x) == 0, "pthread_create");
    while (!atomic_load(&x.started)) {
        usleep(1000);
    }
    usleep(200000);
    float v[1000];
    for (int i = 0; i < 1000; i++) {
        v[i] = 1.0f;
    }
    oxcclResult_t r = oxcclAllReduce(v, v, 1000, oxcclFloat32, oxcclSum, c);
    const char *m = oxcclGetLastError(c);
    CHECK(r == oxcclInvalidUsage && strstr(m, "allreduce called while another thread's recv") != NULL,
          "allreduce beside another thread's recv: result %d, '%s'", (int)r, m);
    CHECK(pthread_join(t, NULL) == 0, "pthread_join");
    CHECK(x.result == oxcclInvalidUsage, "the running recv ended with %d", (int)x.result);
    oxcclResult_t ae = oxcclSuccess;
    OK(oxcclCommGetAsyncError(c, &ae));
    CHECK(ae == oxcclInvalidUsage, "async error after concurrent calls: %d", (int)ae);
    OK(oxcclCommDestroy(c));
}

int main(void) {
    oxcclComm_t comm = init_from_env();
    last_error_from_two_threads(comm);
    two_threads_on_one_communicator(comm);
    null_pointers(comm);
    invalid_enums(comm);
    overflow_and_ranges(comm);
    use_after_destroy(comm);
    exchange_args(comm);
    bitwise_on_floats(comm);
    alltoallv_disagreement(comm);

    /* None of that disturbed the communicator. */
    int32_t one = 1, sum = 0;
    OK(oxcclAllReduce(&one, &sum, 1, oxcclInt32, oxcclSum, comm));
    CHECK(sum == g_size, "allreduce after bad input: %d", sum);
    oxcclResult_t ae = oxcclInternalError;
    OK(oxcclCommGetAsyncError(comm, &ae));
    CHECK(ae == oxcclSuccess, "bad input left an async error %d", (int)ae);
    OK(oxcclCommDestroy(comm));
    return finish("test_bad_input");
}
