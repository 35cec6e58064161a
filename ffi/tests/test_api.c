/*
 * The C ABI's functional suite, one rank per process: every collective of NCCL's set
 * (blocking and Async), every data type (fp8 included) and reduction (the bitwise ones on
 * integer types), in place and out of place, counts 0, 1, odd and large; init from the
 * environment and from a unique id, split, barrier, requests tested and waited, async
 * errors, and abort (from another thread, and by a peer). The exchange collectives are in
 * test_exchange.c.
 */
#include <pthread.h>
#include <unistd.h>

#include "harness.h"

static const size_t COUNTS[] = {0, 1, 7, 1023, 40001};
#define NCOUNTS ((int)(sizeof(COUNTS) / sizeof(COUNTS[0])))


/* "allreduce float/sum count 7 in-place async", for messages. */
static const char *desc(const char *what, oxcclDataType_t t, oxcclRedOp_t op, size_t count,
                        int inplace, int async) {
    static char buf[160];
    snprintf(buf, sizeof buf, "%s %s/%s count %zu %s %s", what, dt_name(t), op_name(op), count,
             inplace ? "in-place" : "out-of-place", async ? "async" : "blocking");
    return buf;
}

#define DESC desc(what, t, op, count, inplace, async)

static void verify(const char *what, oxcclDataType_t t, oxcclRedOp_t op, size_t count,
                   int inplace, int async, const void *got, const void *want, size_t bytes) {
    long d = first_diff(got, want, bytes);
    CHECK(d < 0, "%s: wrong byte %ld (element %ld)", DESC, d, d / (long)dt_size(t));
}

static void t_allreduce(oxcclComm_t comm, oxcclDataType_t t, oxcclRedOp_t op, size_t count,
                        int inplace, int async) {
    int me, n;
    who(comm, &me, &n);
    const char *what = "allreduce";
    size_t bytes = count * dt_size(t);
    void *send = count ? xmalloc(bytes) : NULL;
    void *recv = inplace ? send : (count ? xmalloc(bytes) : NULL);
    void *want = xmalloc(bytes), *orig = xmalloc(bytes);
    fill(t, send, count, op, me, 0);
    if (bytes) {
        memcpy(orig, send, bytes);
        if (!inplace) {
            memset(recv, 0xa5, bytes);
        }
    }
    for (size_t i = 0; i < count; i++) {
        put_expected(t, want, i, op, n, i);
    }
    if (async) {
        oxcclRequest_t req = NULL;
        OK(oxcclAllReduceAsync(send, recv, count, t, op, comm, &req));
        complete(req);
    } else {
        OK(oxcclAllReduce(send, recv, count, t, op, comm));
    }
    verify(what, t, op, count, inplace, async, recv, want, bytes);
    if (!inplace) {
        CHECK(first_diff(send, orig, bytes) < 0, "%s: send buffer modified", DESC);
        free(recv);
    }
    free(send);
    free(want);
    free(orig);
}

static void t_reduce(oxcclComm_t comm, oxcclDataType_t t, oxcclRedOp_t op, size_t count,
                     int inplace, int async, int root) {
    int me, n;
    who(comm, &me, &n);
    const char *what = root == 0 ? "reduce(root 0)" : "reduce(root last)";
    size_t bytes = count * dt_size(t);
    void *send = count ? xmalloc(bytes) : NULL;
    void *recv = inplace ? send : (count ? xmalloc(bytes) : NULL);
    void *want = xmalloc(bytes), *orig = xmalloc(bytes), *sentinel = xmalloc(bytes);
    fill(t, send, count, op, me, 0);
    if (bytes) {
        memcpy(orig, send, bytes);
        memset(sentinel, 0x5a, bytes);
        if (!inplace) {
            memcpy(recv, sentinel, bytes);
        }
    }
    for (size_t i = 0; i < count; i++) {
        put_expected(t, want, i, op, n, i);
    }
    if (async) {
        oxcclRequest_t req = NULL;
        OK(oxcclReduceAsync(send, recv, count, t, op, root, comm, &req));
        complete(req);
    } else {
        OK(oxcclReduce(send, recv, count, t, op, root, comm));
    }
    if (me == root) {
        verify(what, t, op, count, inplace, async, recv, want, bytes);
    } else {
        /* Away from the root nothing is written. */
        verify(what, t, op, count, inplace, async, recv, inplace ? orig : sentinel, bytes);
    }
    if (!inplace) {
        CHECK(first_diff(send, orig, bytes) < 0, "%s: send buffer modified", DESC);
        free(recv);
    }
    free(send);
    free(want);
    free(orig);
    free(sentinel);
}

static void t_broadcast(oxcclComm_t comm, oxcclDataType_t t, size_t count, int inplace,
                        int async, int root) {
    int me, n;
    who(comm, &me, &n);
    const char *what = root == 0 ? "broadcast(root 0)" : "broadcast(root last)";
    oxcclRedOp_t op = oxcclSum;
    size_t bytes = count * dt_size(t);
    void *recv = count ? xmalloc(bytes) : NULL;
    void *send = NULL;
    void *want = xmalloc(bytes);
    fill_move(t, want, count, root, 0, 1);
    if (bytes) {
        memset(recv, 0xa5, bytes);
    }
    if (inplace) {
        send = recv;
        if (me == root && bytes) {
            memcpy(recv, want, bytes);
        }
    } else if (me == root && count) {
        /* Away from the root the send buffer is not read: pass NULL there. */
        send = xmalloc(bytes);
        memcpy(send, want, bytes);
    }
    if (async) {
        oxcclRequest_t req = NULL;
        OK(oxcclBroadcastAsync(send, recv, count, t, root, comm, &req));
        complete(req);
    } else {
        OK(oxcclBroadcast(send, recv, count, t, root, comm));
    }
    verify(what, t, op, count, inplace, async, recv, want, bytes);
    if (!inplace) {
        free(send);
    }
    free(recv);
    free(want);
}

static void t_allgather(oxcclComm_t comm, oxcclDataType_t t, size_t count, int inplace,
                        int async) {
    int me, n;
    who(comm, &me, &n);
    const char *what = "allgather";
    oxcclRedOp_t op = oxcclSum;
    size_t sz = dt_size(t), block = count * sz, bytes = block * (size_t)n;
    void *recv = count ? xmalloc(bytes) : NULL;
    void *want = xmalloc(bytes);
    for (int r = 0; r < n; r++) {
        fill_move(t, (char *)want + (size_t)r * block, count, r, 0, 2);
    }
    if (bytes) {
        memset(recv, 0xa5, bytes);
    }
    void *send;
    if (inplace) {
        /* NCCL's in-place allgather: the input sits at the rank's slot of the output. */
        send = count ? (char *)recv + (size_t)me * block : NULL;
        fill_move(t, send, count, me, 0, 2);
    } else {
        send = count ? xmalloc(block) : NULL;
        fill_move(t, send, count, me, 0, 2);
    }
    if (async) {
        oxcclRequest_t req = NULL;
        OK(oxcclAllGatherAsync(send, recv, count, t, comm, &req));
        complete(req);
    } else {
        OK(oxcclAllGather(send, recv, count, t, comm));
    }
    verify(what, t, op, count, inplace, async, recv, want, bytes);
    if (!inplace) {
        free(send);
    }
    free(recv);
    free(want);
}

static void t_reduce_scatter(oxcclComm_t comm, oxcclDataType_t t, oxcclRedOp_t op,
                             size_t count, int inplace, int async) {
    int me, n;
    who(comm, &me, &n);
    const char *what = "reduce_scatter";
    size_t sz = dt_size(t), block = count * sz, total = count * (size_t)n;
    void *send = count ? xmalloc(total * sz) : NULL;
    void *want = xmalloc(block);
    fill(t, send, total, op, me, 0);
    for (size_t i = 0; i < count; i++) {
        put_expected(t, want, i, op, n, (size_t)me * count + i);
    }
    void *recv;
    if (inplace) {
        /* NCCL's in-place reduce-scatter: the output is the rank's slot of the input. */
        recv = count ? (char *)send + (size_t)me * block : NULL;
    } else {
        recv = count ? xmalloc(block) : NULL;
        if (block) {
            memset(recv, 0xa5, block);
        }
    }
    if (async) {
        oxcclRequest_t req = NULL;
        OK(oxcclReduceScatterAsync(send, recv, count, t, op, comm, &req));
        complete(req);
    } else {
        OK(oxcclReduceScatter(send, recv, count, t, op, comm));
    }
    verify(what, t, op, count, inplace, async, recv, want, block);
    if (!inplace) {
        free(recv);
    }
    free(send);
    free(want);
}

/* Send/recv around the ring (async, grouped), then between pairs (blocking). */
static void t_send_recv(oxcclComm_t comm, oxcclDataType_t t, size_t count) {
    int me, n;
    who(comm, &me, &n);
    const char *what = "send/recv";
    oxcclRedOp_t op = oxcclSum;
    int inplace = 0, async = 1;
    if (n < 2) {
        return;
    }
    size_t bytes = count * dt_size(t);
    int next = (me + 1) % n, prev = (me + n - 1) % n;
    void *send = count ? xmalloc(bytes) : NULL;
    void *recv = count ? xmalloc(bytes) : NULL;
    void *want = xmalloc(bytes);
    fill_move(t, send, count, me, 0, 3);
    fill_move(t, want, count, prev, 0, 3);
    if (bytes) {
        memset(recv, 0xa5, bytes);
    }
    oxcclRequest_t rs = NULL, rr = NULL;
    OK(oxcclSendAsync(send, count, t, next, comm, &rs));
    OK(oxcclRecvAsync(recv, count, t, prev, comm, &rr));
    complete(rr);
    complete(rs);
    verify(what, t, op, count, inplace, async, recv, want, bytes);

    /* Blocking: even ranks send first, odd ranks receive first. */
    async = 0;
    int partner = me ^ 1;
    if (partner < n) {
        fill_move(t, want, count, partner, 0, 4);
        fill_move(t, send, count, me, 0, 4);
        if (bytes) {
            memset(recv, 0xa5, bytes);
        }
        if (me % 2 == 0) {
            OK(oxcclSend(send, count, t, partner, comm));
            OK(oxcclRecv(recv, count, t, partner, comm));
        } else {
            OK(oxcclRecv(recv, count, t, partner, comm));
            OK(oxcclSend(send, count, t, partner, comm));
        }
        verify(what, t, op, count, inplace, async, recv, want, bytes);
    }
    free(send);
    free(recv);
    free(want);
}

static void matrix(oxcclComm_t comm) {
    int last = g_size - 1;
    for (int c = 0; c < NCOUNTS; c++) {
        size_t count = COUNTS[c];
        for (int ti = 0; ti < NTYPES; ti++) {
            oxcclDataType_t t = ALL_TYPES[ti];
            for (int async = 0; async < 2; async++) {
                for (int inplace = 0; inplace < 2; inplace++) {
                    for (int oi = 0; oi < NOPS; oi++) {
                        if (!op_applies(t, ALL_OPS[oi])) {
                            continue;
                        }
                        t_allreduce(comm, t, ALL_OPS[oi], count, inplace, async);
                        t_reduce_scatter(comm, t, ALL_OPS[oi], count, inplace, async);
                        t_reduce(comm, t, ALL_OPS[oi], count, inplace, async,
                                 oi % 2 ? last : 0);
                    }
                    t_broadcast(comm, t, count, inplace, async, 0);
                    t_broadcast(comm, t, count, inplace, async, last);
                    t_allgather(comm, t, count, inplace, async);
                }
            }
            t_send_recv(comm, t, count);
        }
    }
}

/* Several calls in flight at once, finished in reverse order. */
static void many_in_flight(oxcclComm_t comm) {
    int me, n;
    who(comm, &me, &n);
    enum { N = 4096 };
    static float a[N], b[N], g[N * 8], want[N];
    oxcclRequest_t r1, r2, r3, r4;
    fill(oxcclFloat32, a, N, oxcclSum, me, 0);
    for (size_t i = 0; i < N; i++) {
        put_expected(oxcclFloat32, want, i, oxcclSum, n, i);
    }
    OK(oxcclAllReduceAsync(a, b, N, oxcclFloat32, oxcclSum, comm, &r1));
    OK(oxcclAllGatherAsync(a, g, N, oxcclFloat32, comm, &r2));
    OK(oxcclBarrierAsync(comm, &r3));
    OK(oxcclAllReduceAsync(a, a, N, oxcclFloat32, oxcclSum, comm, &r4));
    complete(r4);
    complete(r3);
    complete(r2);
    complete(r1);
    CHECK(first_diff(b, want, sizeof b) < 0, "in flight: allreduce wrong");
    CHECK(first_diff(a, want, sizeof a) < 0, "in flight: in-place allreduce wrong");
    for (int r = 0; r < n; r++) {
        float blk[N];
        fill(oxcclFloat32, blk, N, oxcclSum, r, 0);
        CHECK(first_diff(g + (size_t)r * N, blk, sizeof blk) < 0, "in flight: allgather block %d", r);
    }
    OK(oxcclBarrier(comm));
}

/* A second communicator from a unique id made on rank 0 and shipped over the first one,
 * with ranks numbered backwards. */
static oxcclComm_t init_rank_path(oxcclComm_t world) {
    oxcclUniqueId id;
    memset(&id, 0, sizeof id);
    if (g_rank == 0) {
        OK(oxcclGetUniqueId(&id));
    }
    OK(oxcclBroadcast(&id, &id, sizeof id, oxcclUint8, 0, world));
    oxcclComm_t c = NULL;
    int mine = g_size - 1 - g_rank;
    OK(oxcclCommInitRank(&c, g_size, id, mine));
    int r = -1, n = -1;
    OK(oxcclCommUserRank(c, &r));
    OK(oxcclCommCount(c, &n));
    CHECK(r == mine && n == g_size, "InitRank: rank %d count %d, want %d %d", r, n, mine, g_size);
    int32_t v = g_rank, sum = -1;
    OK(oxcclAllReduce(&v, &sum, 1, oxcclInt32, oxcclSum, c));
    CHECK(sum == g_size * (g_size - 1) / 2, "InitRank comm: sum %d", sum);
    return c;
}

static void split_tests(oxcclComm_t comm) {
    /* By parity, keys reversing the order. */
    oxcclComm_t half = NULL;
    OK(oxcclCommSplit(comm, g_rank % 2, g_size - g_rank, &half, NULL));
    CHECK(half != NULL, "split by parity gave NULL");
    int members = (g_size + 1 - g_rank % 2) / 2;
    int above = 0; /* members of my colour with a higher old rank come first */
    for (int r = g_rank + 2; r < g_size; r += 2) {
        above++;
    }
    int hr = -1, hn = -1;
    OK(oxcclCommUserRank(half, &hr));
    OK(oxcclCommCount(half, &hn));
    CHECK(hn == members && hr == above, "split: rank %d of %d, want %d of %d", hr, hn, above,
          members);
    int64_t v = g_rank, sum = -1, want = 0;
    for (int r = g_rank % 2; r < g_size; r += 2) {
        want += r;
    }
    OK(oxcclAllReduce(&v, &sum, 1, oxcclInt64, oxcclSum, half));
    CHECK(sum == want, "split: sum of old ranks %lld, want %lld", (long long)sum, (long long)want);
    t_allreduce(half, oxcclFloat32, oxcclAvg, 1023, 0, 1);
    OK(oxcclCommDestroy(half));

    /* Rank 0 joins nothing; the others keep their order. */
    oxcclComm_t rest = (oxcclComm_t)&rest; /* must be overwritten, with NULL on rank 0 */
    OK(oxcclCommSplit(comm, g_rank == 0 ? OXCCL_SPLIT_NOCOLOR : 7, 0, &rest, NULL));
    if (g_rank == 0) {
        CHECK(rest == NULL, "split with no colour must give NULL");
    } else {
        int rr = -1, rn = -1;
        OK(oxcclCommUserRank(rest, &rr));
        OK(oxcclCommCount(rest, &rn));
        CHECK(rr == g_rank - 1 && rn == g_size - 1, "split rest: %d of %d", rr, rn);
        OK(oxcclBarrier(rest));
        OK(oxcclCommDestroy(rest));
    }
}

/* Destroy with a request outstanding: the request keeps the communicator alive, and
 * finishes normally. */
static void destroy_with_request(oxcclComm_t world) {
    oxcclComm_t c = NULL;
    OK(oxcclCommSplit(world, 0, 0, &c, NULL));
    int64_t v = g_rank + 1, sum = 0;
    oxcclRequest_t req = NULL;
    OK(oxcclAllReduceAsync(&v, &sum, 1, oxcclInt64, oxcclSum, c, &req));
    OK(oxcclCommDestroy(c));
    CHECK(oxcclBarrier(c) == oxcclInvalidUsage, "destroyed handle still usable");
    OK(oxcclWait(req));
    CHECK(sum == (int64_t)g_size * (g_size + 1) / 2, "allreduce after destroy: %lld",
          (long long)sum);
}

struct abort_arg {
    oxcclComm_t comm;
    double delay;
    oxcclResult_t result;
};

static void *abort_later(void *p) {
    struct abort_arg *a = (struct abort_arg *)p;
    usleep((useconds_t)(a->delay * 1e6));
    a->result = oxcclCommAbort(a->comm);
    return NULL;
}

/* Abort from another thread while this rank is blocked in a call its peers never make. */
static void abort_while_blocked(oxcclComm_t world) {
    oxcclComm_t c = NULL;
    OK(oxcclCommSplit(world, 0, 0, &c, NULL));
    if (g_rank == 0) {
        struct abort_arg a = {c, 0.3, oxcclInternalError};
        pthread_t th;
        CHECK(pthread_create(&th, NULL, abort_later, &a) == 0, "pthread_create");
        float x[64] = {0};
        double t0 = now_s();
        oxcclResult_t r = oxcclAllReduce(x, x, 64, oxcclFloat32, oxcclSum, c);
        double took = now_s() - t0;
        pthread_join(th, NULL);
        CHECK(a.result == oxcclSuccess, "abort from a thread returned %d", (int)a.result);
        CHECK(r != oxcclSuccess, "allreduce on an aborted communicator succeeded");
        CHECK(took < 10, "abort took %.1f s to unblock the call", took);
        const char *msg = oxcclGetLastError(NULL);
        CHECK(strstr(msg, "oxcclAllReduce") && strstr(msg, "abort"),
              "message of the aborted call: %s", msg);
        /* The handle is gone with the abort. */
        CHECK(oxcclCommDestroy(c) == oxcclInvalidUsage, "destroy after abort");
    }
    OK(oxcclBarrier(world));
    if (g_rank != 0) {
        OK(oxcclCommDestroy(c));
    }
}

/* A peer aborts mid-job: the others' next call fails promptly, names the peer, and sticks.
 * (One call first, so that the connections exist: a peer that leaves before it ever
 * connected is only noticed at OXCCL_TIMEOUT.) */
static void peer_aborts(oxcclComm_t world) {
    oxcclComm_t c = NULL;
    OK(oxcclCommSplit(world, 0, 0, &c, NULL));
    t_allreduce(c, oxcclFloat32, oxcclSum, 1024, 0, 0);
    int victim = g_size - 1;
    if (g_rank == victim) {
        OK(oxcclCommAbort(c));
    } else {
        float x[1024];
        fill(oxcclFloat32, x, 1024, oxcclSum, g_rank, 0);
        oxcclResult_t r = oxcclAllReduce(x, x, 1024, oxcclFloat32, oxcclSum, c);
        CHECK(r == oxcclRemoteError, "allreduce with an aborted peer returned %d: %s", (int)r,
              oxcclGetLastError(NULL));
        const char *msg = oxcclGetLastError(c);
        CHECK(strstr(msg, "oxcclAllReduce") != NULL, "comm last error: %s", msg);
        oxcclResult_t async = oxcclSuccess;
        OK(oxcclCommGetAsyncError(c, &async));
        CHECK(async == r, "async error %d, call returned %d", (int)async, (int)r);
        oxcclResult_t again = oxcclBarrier(c);
        CHECK(again == r, "a failed communicator must keep failing (%d, then %d)", (int)r,
              (int)again);
        OK(oxcclCommDestroy(c));
    }
    OK(oxcclBarrier(world));
}

int main(void) {
    double t0 = now_s();
    oxcclComm_t world = init_from_env();
    int version = 0;
    OK(oxcclGetVersion(&version));
    CHECK(version == OXCCL_VERSION_CODE && version == OXCCL_VERSION(OXCCL_MAJOR, OXCCL_MINOR, OXCCL_PATCH),
          "version %d", version);
    oxcclResult_t async = oxcclInternalError;
    OK(oxcclCommGetAsyncError(world, &async));
    CHECK(async == oxcclSuccess, "fresh communicator has async error %d", (int)async);

    oxcclComm_t byid = init_rank_path(world);
    matrix(world);
    many_in_flight(byid);
    t_allreduce(byid, oxcclBfloat16, oxcclMax, 40001, 1, 1);
    OK(oxcclBarrier(world));
    split_tests(world);
    destroy_with_request(world);
    if (g_size >= 2) {
        abort_while_blocked(world);
        peer_aborts(world);
    } else {
        oxcclComm_t c = NULL;
        OK(oxcclCommSplit(world, 0, 0, &c, NULL));
        OK(oxcclCommAbort(c));
        CHECK(oxcclBarrier(c) == oxcclInvalidUsage, "use after abort");
    }
    OK(oxcclCommGetAsyncError(world, &async));
    CHECK(async == oxcclSuccess, "world has async error %d", (int)async);
    OK(oxcclCommDestroy(byid));
    OK(oxcclCommDestroy(world));
    if (g_rank == 0) {
        printf("test_api: %d ranks in %.1f s\n", g_size, now_s() - t0);
    }
    return finish("test_api");
}
