/*
 * Bad input to every entry point: NULL pointers, enum values outside their lists, counts
 * that overflow, ranks and roots out of range, bad unique ids, a missing environment, and
 * handles used after destroy, abort or release. Each must return the documented code and
 * leave a message in oxcclGetLastError that explains it; none may crash, and none may
 * disturb the communicator (a collective afterwards still works).
 */
#include <stdint.h>

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
    EXPECT(oxcclCommSplit(comm, 0, 0, NULL), A, "oxcclCommSplit: invalid argument: the out-parameter `newcomm` is NULL", comm);
    EXPECT(oxcclCommSplit(NULL, 0, 0, NULL), A, "comm is NULL", NOCOMM);
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
    EXPECT(oxcclCommSplit(comm, -2, 0, &out), A, msg, comm);
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

static void use_after_destroy(oxcclComm_t world) {
    const int U = oxcclInvalidUsage;
    float x[8] = {0};
    int v = -7;
    oxcclRequest_t req = NULL;
    oxcclComm_t c = NULL;
    OK(oxcclCommSplit(world, 0, 0, &c));
    OK(oxcclCommDestroy(c));
    EXPECT(oxcclCommDestroy(c), U, "oxcclCommDestroy: invalid usage: communicator", NOCOMM);
    EXPECT(oxcclCommDestroy(c), U, "is not live: it was destroyed", NOCOMM);
    EXPECT(oxcclCommAbort(c), U, "is not live", NOCOMM);
    EXPECT(oxcclCommCount(c, &v), U, "oxcclCommCount: invalid usage: communicator", NOCOMM);
    CHECK(v == -7, "count written on failure");
    EXPECT(oxcclCommUserRank(c, &v), U, "is not live", NOCOMM);
    oxcclResult_t ae = oxcclSuccess;
    EXPECT(oxcclCommGetAsyncError(c, &ae), U, "is not live", NOCOMM);
    EXPECT(oxcclCommSplit(c, 0, 0, &c), U, "is not live", NOCOMM);
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
    CHECK(req == NULL, "request written on failure");
    CHECK(strstr(oxcclGetLastError(c), "not live") != NULL, "GetLastError of a destroyed comm: %s",
          oxcclGetLastError(c));
    /* A handle oxccl never made is refused the same way. */
    EXPECT(oxcclBarrier((oxcclComm_t)x), U, "is not live", NOCOMM);
    EXPECT(oxcclWait((oxcclRequest_t)x), U, "oxcclWait: invalid usage: request", NOCOMM);

    /* Aborted handles are dead too. */
    OK(oxcclCommSplit(world, 0, 0, &c));
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

int main(void) {
    oxcclComm_t comm = init_from_env();
    null_pointers(comm);
    invalid_enums(comm);
    overflow_and_ranges(comm);
    use_after_destroy(comm);

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
