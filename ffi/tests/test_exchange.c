/*
 * The exchange collectives of the C ABI, one rank per process: alltoall, alltoallv, gather,
 * scatter, allgatherv and reduce-scatterv, blocking and Async, every data type, counts 0, 1,
 * 7 and 1023. The uneven calls get count vectors with zeros and displacements with gaps
 * (blocks out of rank order; the gaps must stay untouched); gather, scatter, allgatherv and
 * reduce-scatterv also run in their in-place layouts. Reduce-scatterv runs every reduction
 * that applies to the type (the bitwise ones on integer types, fp8 on exact values) against
 * a serial reference. Float allreduce of arbitrary values must come out bitwise identical on
 * every rank (fp8 sums saturating to finite values); several exchanges in flight at once;
 * the same calls on a split communicator whose ranks are numbered backwards.
 */
#include "harness.h"

static const size_t COUNTS[] = {0, 1, 7, 1023};
#define NCOUNTS ((int)(sizeof(COUNTS) / sizeof(COUNTS[0])))

#define SENTINEL 0xa5


/* Runs oxcclXxx(args...) blocking, or oxcclXxxAsync(args..., &req) finished by complete(). */
#define RUN(async, fn, ...)                                                                 \
    do {                                                                                    \
        if (async) {                                                                        \
            oxcclRequest_t req_ = NULL;                                                     \
            OK(fn##Async(__VA_ARGS__, &req_));                                              \
            complete(req_);                                                                 \
        } else {                                                                            \
            OK(fn(__VA_ARGS__));                                                            \
        }                                                                                   \
    } while (0)

static char g_what[200];

/* "alltoallv int8 count 7 in-place async" (with the op where there is one), for messages. */
static const char *describe(const char *what, oxcclDataType_t t, int op, size_t count,
                            int inplace, int async, int root) {
    char rootbuf[24] = "";
    if (root >= 0) {
        snprintf(rootbuf, sizeof rootbuf, " root %d", root);
    }
    snprintf(g_what, sizeof g_what, "%s %s%s%s count %zu%s %s %s", what, dt_name(t),
             op >= 0 ? "/" : "", op >= 0 ? op_name((oxcclRedOp_t)op) : "", count, rootbuf,
             inplace ? "in-place" : "out-of-place", async ? "async" : "blocking");
    return g_what;
}

/* Checks `bytes` of got against want, naming the first wrong element. */
static void same(const void *got, const void *want, size_t bytes, oxcclDataType_t t,
                 const char *part) {
    long d = first_diff(got, want, bytes);
    CHECK(d < 0, "%s: %s: wrong byte %ld (element %ld)", g_what, part, d, d / (long)dt_size(t));
}

/* A buffer of `bytes` filled with the sentinel; NULL when `bytes` is 0 and `null_if_empty`. */
static void *sentinel(size_t bytes, int null_if_empty) {
    if (!bytes && null_if_empty) {
        return NULL;
    }
    void *p = xmalloc(bytes);
    memset(p, SENTINEL, bytes ? bytes : 1);
    return p;
}

static void *copy_of(const void *p, size_t bytes) {
    void *q = xmalloc(bytes);
    if (bytes) {
        memcpy(q, p, bytes);
    }
    return q;
}

/* The value that rank `src` sends to rank `dst` at element k: < 100 and exact in every
 * type (fp8: its bit pattern), and unlike its neighbours, so a misplaced block shows. */
static uint64_t pair_val(int src, int dst, size_t k) {
    return mix64((uint64_t)src + 1, (uint64_t)dst + 1, k) % 100;
}

static void put_move(oxcclDataType_t t, void *buf, size_t i, uint64_t v) {
    if (dt_is_fp8(t)) {
        ((unsigned char *)buf)[i] = (unsigned char)v;
    } else {
        put(t, buf, i, v, (double)v);
    }
}

/* `count` elements of pair_val(src, dst, .) at buf. */
static void fill_pair(oxcclDataType_t t, void *buf, size_t count, int src, int dst) {
    for (size_t k = 0; k < count; k++) {
        put_move(t, buf, k, pair_val(src, dst, k));
    }
}

static char *at(void *base, size_t elems, oxcclDataType_t t) {
    return (char *)base + elems * dt_size(t);
}

static void t_alltoall(oxcclComm_t comm, oxcclDataType_t t, size_t count, int async) {
    int me, n;
    who(comm, &me, &n);
    describe("alltoall", t, -1, count, 0, async, -1);
    size_t total = count * (size_t)n, bytes = total * dt_size(t);
    void *send = count ? xmalloc(bytes) : NULL;
    void *recv = sentinel(bytes, 1);
    void *want = xmalloc(bytes);
    for (int j = 0; j < n; j++) {
        fill_pair(t, at(send, (size_t)j * count, t), count, me, j);
        fill_pair(t, at(want, (size_t)j * count, t), count, j, me);
    }
    void *orig = send ? copy_of(send, bytes) : NULL;
    RUN(async, oxcclAlltoAll, send, recv, count, t, comm);
    same(recv, want, bytes, t, "receive buffer");
    if (send) {
        same(send, orig, bytes, t, "send buffer modified");
    }
    free(send);
    free(recv);
    free(want);
    free(orig);
}

/* Elements rank i sends rank j in an alltoallv of base count c: zeros for some pairs,
 * uneven for the others, all zero for c = 0. */
static size_t a2av_count(size_t c, int i, int j) {
    if (c == 0 || (i + 2 * j) % 4 == 1) {
        return 0;
    }
    return c + (size_t)((i * 3 + j) % 5);
}

static void t_alltoallv(oxcclComm_t comm, oxcclDataType_t t, size_t c, int async) {
    int me, n;
    who(comm, &me, &n);
    describe("alltoallv", t, -1, c, 0, async, -1);
    size_t *sc = calloc((size_t)n, sizeof *sc), *sd = calloc((size_t)n, sizeof *sd);
    size_t *rc = calloc((size_t)n, sizeof *rc), *rd = calloc((size_t)n, sizeof *rd);
    /* Send blocks in reverse rank order, each after a gap of 1..3 elements; receive blocks
     * even ranks first, then odd ones, each after a gap of 2..3. */
    size_t s_end = 0, r_end = 0;
    for (int j = n - 1; j >= 0; j--) {
        sc[j] = a2av_count(c, me, j);
        s_end += 1 + (size_t)(j % 3);
        sd[j] = s_end;
        s_end += sc[j];
    }
    for (int pass = 0; pass < 2; pass++) {
        for (int i = pass; i < n; i += 2) {
            rc[i] = a2av_count(c, i, me);
            r_end += 2 + (size_t)(i % 2);
            rd[i] = r_end;
            r_end += rc[i];
        }
    }
    r_end += 3; /* a tail that must stay untouched too */
    size_t sz = dt_size(t);
    void *send = sentinel(s_end * sz, 0);
    void *recv = sentinel(r_end * sz, 0);
    void *want = sentinel(r_end * sz, 0);
    for (int j = 0; j < n; j++) {
        fill_pair(t, at(send, sd[j], t), sc[j], me, j);
        fill_pair(t, at(want, rd[j], t), rc[j], j, me);
    }
    void *orig = copy_of(send, s_end * sz);
    RUN(async, oxcclAlltoAllv, send, sc, sd, recv, rc, rd, t, comm);
    same(recv, want, r_end * sz, t, "receive buffer (blocks and gaps)");
    same(send, orig, s_end * sz, t, "send buffer modified");
    free(send);
    free(recv);
    free(want);
    free(orig);
    free(sc);
    free(sd);
    free(rc);
    free(rd);
}

static void t_gather(oxcclComm_t comm, oxcclDataType_t t, size_t count, int inplace, int async,
                     int root) {
    int me, n;
    who(comm, &me, &n);
    describe("gather", t, -1, count, inplace, async, root);
    size_t block = count * dt_size(t), bytes = block * (size_t)n;
    void *want = xmalloc(bytes);
    for (int r = 0; r < n; r++) {
        fill_move(t, at(want, (size_t)r * count, t), count, r, 0, 6);
    }
    void *send, *recv, *own = NULL;
    if (me == root) {
        recv = sentinel(bytes, 1);
        if (inplace) {
            send = count ? at(recv, (size_t)root * count, t) : NULL;
        } else {
            send = own = count ? xmalloc(block) : NULL;
        }
        fill_move(t, send, count, me, 0, 6);
    } else {
        /* Away from the root the receive buffer is not used: NULL, or one left untouched. */
        recv = inplace ? NULL : sentinel(bytes, 1);
        send = own = count ? xmalloc(block) : NULL;
        fill_move(t, send, count, me, 0, 6);
    }
    void *orig = own ? copy_of(own, block) : NULL;
    RUN(async, oxcclGather, send, recv, count, t, root, comm);
    if (me == root) {
        same(recv, want, bytes, t, "root's receive buffer");
    } else if (recv) {
        void *untouched = sentinel(bytes, 0);
        same(recv, untouched, bytes, t, "receive buffer written away from the root");
        free(untouched);
    }
    if (own) {
        same(own, orig, block, t, "send buffer modified");
    }
    free(own);
    free(orig);
    free(recv);
    free(want);
}

static void t_scatter(oxcclComm_t comm, oxcclDataType_t t, size_t count, int inplace,
                      int async, int root) {
    int me, n;
    who(comm, &me, &n);
    describe("scatter", t, -1, count, inplace, async, root);
    size_t block = count * dt_size(t), bytes = block * (size_t)n;
    void *all = xmalloc(bytes);
    for (int r = 0; r < n; r++) {
        fill_move(t, at(all, (size_t)r * count, t), count, r, 0, 7);
    }
    void *send = NULL, *recv, *mine = NULL;
    if (me == root) {
        send = count ? copy_of(all, bytes) : NULL;
        recv = inplace ? (count ? at(send, (size_t)root * count, t) : NULL)
                       : (mine = sentinel(block, 1));
    } else {
        /* Away from the root the send buffer is not read: NULL, or a buffer of noise. */
        if (!inplace && count) {
            send = sentinel(bytes, 1);
        }
        recv = mine = sentinel(block, 1);
    }
    RUN(async, oxcclScatter, send, recv, count, t, root, comm);
    same(recv, at(all, (size_t)me * count, t), block, t, "receive buffer");
    if (me == root && send) {
        same(send, all, bytes, t, "root's send buffer modified");
    }
    free(send);
    free(mine);
    free(all);
}

/* recvcounts of an allgatherv of base count c: zeros at ranks 1, 4, 7, uneven elsewhere. */
static size_t agv_count(size_t c, int j) {
    return c == 0 || j % 3 == 1 ? 0 : c + 2 * (size_t)j;
}

static void t_allgatherv(oxcclComm_t comm, oxcclDataType_t t, size_t c, int inplace, int async) {
    int me, n;
    who(comm, &me, &n);
    describe("allgatherv", t, -1, c, inplace, async, -1);
    size_t *counts = calloc((size_t)n, sizeof *counts), *displs = calloc((size_t)n, sizeof *displs);
    /* Blocks in reverse rank order, each after a gap of 1 or 2 elements, and a tail. */
    size_t end = 0;
    for (int j = n - 1; j >= 0; j--) {
        counts[j] = agv_count(c, j);
        end += 1 + (size_t)(j % 2);
        displs[j] = end;
        end += counts[j];
    }
    end += 2;
    size_t sz = dt_size(t), mine = counts[me];
    void *recv = sentinel(end * sz, 0);
    void *want = sentinel(end * sz, 0);
    for (int j = 0; j < n; j++) {
        fill_move(t, at(want, displs[j], t), counts[j], j, 0, 8);
    }
    void *send, *own = NULL;
    if (inplace) {
        send = at(recv, displs[me], t);
    } else {
        send = own = mine ? xmalloc(mine * sz) : NULL;
    }
    fill_move(t, send, mine, me, 0, 8);
    void *orig = own ? copy_of(own, mine * sz) : NULL;
    RUN(async, oxcclAllGatherv, send, mine, recv, counts, displs, t, comm);
    same(recv, want, end * sz, t, "receive buffer (blocks and gaps)");
    if (own) {
        same(own, orig, mine * sz, t, "send buffer modified");
    }
    free(own);
    free(orig);
    free(recv);
    free(want);
    free(counts);
    free(displs);
}

/* recvcounts of a reduce-scatterv of base count c: zeros at ranks 2 and 5, uneven elsewhere. */
static size_t rsv_count(size_t c, int j) {
    return c == 0 || j % 3 == 2 ? 0 : c + (size_t)j;
}

static void t_reduce_scatterv(oxcclComm_t comm, oxcclDataType_t t, oxcclRedOp_t op, size_t c,
                              int inplace, int async) {
    int me, n;
    who(comm, &me, &n);
    describe("reduce_scatterv", t, (int)op, c, inplace, async, -1);
    size_t *counts = calloc((size_t)n, sizeof *counts);
    size_t total = 0, first = 0;
    for (int j = 0; j < n; j++) {
        counts[j] = rsv_count(c, j);
        if (j < me) {
            first += counts[j];
        }
        total += counts[j];
    }
    size_t sz = dt_size(t), mine = counts[me];
    void *send = total ? xmalloc(total * sz) : NULL;
    fill(t, send, total, op, me, 0);
    void *want = xmalloc(mine * sz);
    for (size_t k = 0; k < mine; k++) {
        put_expected(t, want, k, op, n, first + k);
    }
    void *orig = send ? copy_of(send, total * sz) : NULL;
    void *recv = inplace ? (send ? at(send, first, t) : NULL) : sentinel(mine * sz, 1);
    RUN(async, oxcclReduceScatterv, send, recv, counts, t, op, comm);
    same(recv, want, mine * sz, t, "receive block");
    if (!inplace) {
        if (send) {
            same(send, orig, total * sz, t, "send buffer modified");
        }
        free(recv);
    }
    free(send);
    free(orig);
    free(want);
    free(counts);
}

static void matrix(oxcclComm_t comm) {
    int me, n;
    who(comm, &me, &n);
    int last = n - 1;
    for (int ci = 0; ci < NCOUNTS; ci++) {
        size_t count = COUNTS[ci];
        for (int ti = 0; ti < NTYPES; ti++) {
            oxcclDataType_t t = ALL_TYPES[ti];
            for (int async = 0; async < 2; async++) {
                t_alltoall(comm, t, count, async);
                t_alltoallv(comm, t, count, async);
                for (int inplace = 0; inplace < 2; inplace++) {
                    /* Both roots, each in place and out of place, over the two loops. */
                    int root = inplace ^ async ? last : 0;
                    t_gather(comm, t, count, inplace, async, root);
                    t_scatter(comm, t, count, inplace, async, last - root);
                    t_allgatherv(comm, t, count, inplace, async);
                    for (int oi = 0; oi < NOPS; oi++) {
                        if (op_applies(t, ALL_OPS[oi])) {
                            t_reduce_scatterv(comm, t, ALL_OPS[oi], count, inplace, async);
                        }
                    }
                }
            }
        }
    }
}

/* Arbitrary finite values of every float type (fp8: every finite pattern, large ones
 * included, so sums round and saturate), summed and averaged by allreduce: the result must
 * be bitwise identical on every rank (checked by gathering it), and fp8 results finite. */
static void identical_across_ranks(oxcclComm_t comm) {
    int me, n;
    who(comm, &me, &n);
    static const oxcclDataType_t floats[] = {oxcclFloat16, oxcclFloat32,    oxcclFloat64,
                                             oxcclBfloat16, oxcclFloat8e4m3, oxcclFloat8e5m2};
    const size_t count = 4099;
    for (size_t ti = 0; ti < sizeof floats / sizeof floats[0]; ti++) {
        oxcclDataType_t t = floats[ti];
        size_t sz = dt_size(t), bytes = count * sz;
        for (int oi = 0; oi < 2; oi++) {
            oxcclRedOp_t op = oi ? oxcclAvg : oxcclSum;
            int async = oi;
            describe("allreduce of arbitrary values", t, (int)op, count, 0, async, -1);
            unsigned char *send = xmalloc(bytes);
            for (size_t i = 0; i < count; i++) {
                uint64_t h = mix64((uint64_t)me + 100, i, ti);
                unsigned char *e = send + i * sz;
                if (t == oxcclFloat32 || t == oxcclFloat64) {
                    put(t, send, i, 0, (double)(int64_t)(h % 2000001) / 997.0 - 1000.0);
                } else if (sz == 2) {
                    uint16_t b = (uint16_t)(h & ~(uint64_t)0x4000); /* |x| < 2 */
                    memcpy(e, &b, 2);
                } else {
                    uint8_t b = (uint8_t)h;
                    while (!fp8_finite(t, b)) {
                        b = (uint8_t)(b - 5);
                    }
                    *e = b;
                }
            }
            unsigned char *recv = sentinel(bytes, 0);
            unsigned char *all = xmalloc(bytes * (size_t)n);
            RUN(async, oxcclAllReduce, send, recv, count, t, op, comm);
            OK(oxcclAllGather(recv, all, bytes, oxcclUint8, comm));
            for (int r = 0; r < n; r++) {
                long d = first_diff(all + (size_t)r * bytes, recv, bytes);
                CHECK(d < 0, "%s: rank %d's result differs from this rank's at element %ld",
                      g_what, r, d < 0 ? d : d / (long)sz);
            }
            if (dt_is_fp8(t)) {
                size_t bad = 0;
                for (size_t i = 0; i < count; i++) {
                    bad += !fp8_finite(t, recv[i]);
                }
                CHECK(bad == 0, "%s: %zu results are not finite", g_what, bad);
            }
            free(send);
            free(recv);
            free(all);
        }
    }
}

/* One of each exchange in flight at once, finished in reverse order. */
static void all_in_flight(oxcclComm_t comm) {
    int me, n;
    who(comm, &me, &n);
    enum { C = 257 };
    size_t N = (size_t)n, all = C * N * 4;
    describe("in flight", oxcclFloat32, -1, C, 0, 1, -1);
    float *a2a_s = xmalloc(all), *a2a_r = sentinel(all, 0), *v_r = sentinel(all, 0);
    float *g_s = xmalloc(C * 4), *g_r = sentinel(all, 0);
    float *sc_s = xmalloc(all), *sc_r = sentinel(C * 4, 0);
    float *agv_r = sentinel(all, 0);
    int32_t *rsv_s = xmalloc(all), *rsv_r = sentinel(C * 4, 0);
    size_t *counts = calloc(N, sizeof *counts), *displs = calloc(N, sizeof *displs);
    for (int j = 0; j < n; j++) {
        counts[j] = C;
        displs[j] = (N - 1 - (size_t)j) * C; /* blocks in reverse rank order */
        fill_pair(oxcclFloat32, a2a_s + (size_t)j * C, C, me, j);
        fill_move(oxcclFloat32, sc_s + (size_t)j * C, C, j, 0, 9);
    }
    fill_move(oxcclFloat32, g_s, C, me, 0, 10);
    fill(oxcclInt32, rsv_s, C * N, oxcclBxor, me, 0);
    int root = n / 2;
    oxcclRequest_t r[6];
    OK(oxcclAlltoAllAsync(a2a_s, a2a_r, C, oxcclFloat32, comm, &r[0]));
    OK(oxcclGatherAsync(g_s, g_r, C, oxcclFloat32, root, comm, &r[1]));
    OK(oxcclScatterAsync(sc_s, sc_r, C, oxcclFloat32, root, comm, &r[2]));
    OK(oxcclAllGathervAsync(g_s, C, agv_r, counts, displs, oxcclFloat32, comm, &r[3]));
    OK(oxcclAlltoAllvAsync(a2a_s, counts, displs, v_r, counts, displs, oxcclFloat32, comm,
                           &r[4]));
    OK(oxcclReduceScattervAsync(rsv_s, rsv_r, counts, oxcclInt32, oxcclBxor, comm, &r[5]));
    /* The count arrays are read before the calls return: scribbling on them now is fine. */
    memset(counts, 0xff, N * sizeof *counts);
    memset(displs, 0xff, N * sizeof *displs);
    for (int i = 5; i >= 0; i--) {
        complete(r[i]);
    }
    float *want = xmalloc(all);
    for (int i = 0; i < n; i++) {
        fill_pair(oxcclFloat32, want + (size_t)i * C, C, i, me);
    }
    same(a2a_r, want, all, oxcclFloat32, "alltoall");
    /* Rank i sent this rank its block at displacement (N-1-me)*C, alltoall input block
     * N-1-me, and it landed at (N-1-i)*C. */
    for (int i = 0; i < n; i++) {
        fill_pair(oxcclFloat32, want + (N - 1 - (size_t)i) * C, C, i, n - 1 - me);
    }
    same(v_r, want, all, oxcclFloat32, "alltoallv");
    if (me == root) {
        for (int j = 0; j < n; j++) {
            fill_move(oxcclFloat32, want + (size_t)j * C, C, j, 0, 10);
        }
        same(g_r, want, all, oxcclFloat32, "gather");
    }
    fill_move(oxcclFloat32, want, C, me, 0, 9);
    same(sc_r, want, C * 4, oxcclFloat32, "scatter");
    for (int j = 0; j < n; j++) {
        fill_move(oxcclFloat32, want + (N - 1 - (size_t)j) * C, C, j, 0, 10);
    }
    same(agv_r, want, all, oxcclFloat32, "allgatherv");
    int32_t *wi = (int32_t *)(void *)want;
    for (size_t k = 0; k < C; k++) {
        put_expected(oxcclInt32, wi, k, oxcclBxor, n, (size_t)me * C + k);
    }
    same(rsv_r, wi, C * 4, oxcclInt32, "reduce_scatterv");
    free(want);
    free(a2a_s);
    free(a2a_r);
    free(v_r);
    free(g_s);
    free(g_r);
    free(sc_s);
    free(sc_r);
    free(agv_r);
    free(rsv_s);
    free(rsv_r);
    free(counts);
    free(displs);
}

/* The exchanges on a communicator split by parity, ranks numbered backwards: blocks follow
 * the new ranks. */
static void on_split(oxcclComm_t world) {
    oxcclComm_t half = NULL;
    OK(oxcclCommSplit(world, g_rank % 2, g_size - g_rank, &half, NULL));
    int hr, hn;
    who(half, &hr, &hn);
    for (int async = 0; async < 2; async++) {
        t_alltoall(half, oxcclInt64, 5, async);
        t_alltoallv(half, oxcclUint8, 7, async);
        t_gather(half, oxcclFloat16, 3, async, async, hn - 1);
        t_scatter(half, oxcclBfloat16, 3, !async, async, hn - 1);
        t_allgatherv(half, oxcclFloat8e5m2, 7, async, async);
        t_reduce_scatterv(half, oxcclUint32, oxcclBor, 7, async, async);
        t_reduce_scatterv(half, oxcclFloat8e4m3, oxcclSum, 7, !async, async);
    }
    OK(oxcclCommDestroy(half));
}

int main(void) {
    double t0 = now_s();
    oxcclComm_t world = init_from_env();
    matrix(world);
    identical_across_ranks(world);
    all_in_flight(world);
    on_split(world);
    oxcclResult_t async = oxcclInternalError;
    OK(oxcclCommGetAsyncError(world, &async));
    CHECK(async == oxcclSuccess, "world has async error %d", (int)async);
    OK(oxcclCommDestroy(world));
    if (g_rank == 0) {
        printf("test_exchange: %d ranks in %.1f s\n", g_size, now_s() - t0);
    }
    return finish("test_exchange");
}
