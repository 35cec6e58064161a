/*
 * Groups, pre-multiplied sums, per-communicator configs and the async error through the C
 * ABI, one rank per process:
 *   - oxcclGroupStart/End around 64 small allreduces (fused), a mix of collectives and a
 *     ring of send/recv, nested groups, a group spanning two communicators, an Async call
 *     refused inside a group, GroupEnd without GroupStart;
 *   - oxcclRedOpCreatePreMulSum for float, int32 and half (bitwise identical on all ranks),
 *     used in allreduce, reduce-scatter and reduce, and its errors (wrong type, another
 *     communicator's op, destroyed op, device residence);
 *   - oxcclCommInitRankConfig and oxcclCommSplit with a config (timeout, channels, algorithm,
 *     name), a bad config;
 *   - oxcclCommGetAsyncError answering while another thread's call is blocked.
 */
#include <pthread.h>
#include <unistd.h>

#include "harness.h"

static void expect_err(oxcclResult_t got, oxcclResult_t want, const char *needle,
                       oxcclComm_t comm, const char *what) {
    CHECK(got == want, "%s: returned %d (%s), want %d", what, (int)got, oxcclGetErrorString(got),
          (int)want);
    const char *msg = oxcclGetLastError(comm);
    CHECK(strstr(msg, needle) != NULL, "%s: last error '%s' lacks '%s'", what, msg, needle);
}

static void groups(oxcclComm_t comm) {
    /* 64 allreduces of 256 floats, alternating sum and max, and 8 int32 sums. */
    enum { K = 64, N = 256 };
    static float f[K][N];
    static int32_t ints[8][17];
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < N; i++) {
            f[k][i] = (float)((k + i + g_rank) % 5);
        }
    }
    for (int k = 0; k < 8; k++) {
        for (int i = 0; i < 17; i++) {
            ints[k][i] = g_rank * 3 + k;
        }
    }
    uint8_t mine[5], all[5 * 16];
    memset(mine, g_rank, sizeof mine);
    float out[33], in[33];
    for (int i = 0; i < 33; i++) {
        out[i] = (float)g_rank;
        in[i] = -1;
    }
    OK(oxcclGroupStart());
    for (int k = 0; k < K; k++) {
        OK(oxcclAllReduce(f[k], f[k], N, oxcclFloat32, k % 2 ? oxcclMax : oxcclSum, comm));
    }
    OK(oxcclGroupStart()); /* nested: runs with the outer group */
    for (int k = 0; k < 8; k++) {
        OK(oxcclAllReduce(ints[k], ints[k], 17, oxcclInt32, oxcclSum, comm));
    }
    OK(oxcclGroupEnd());
    OK(oxcclAllGather(mine, all, 5, oxcclUint8, comm));
    if (g_size > 1) {
        OK(oxcclSend(out, 33, oxcclFloat32, (g_rank + 1) % g_size, comm));
        OK(oxcclRecv(in, 33, oxcclFloat32, (g_rank + g_size - 1) % g_size, comm));
    }
    /* Nothing has run yet: the buffers are as they were. */
    CHECK(f[0][0] == (float)(g_rank % 5), "a grouped call ran before oxcclGroupEnd");
    OK(oxcclGroupEnd());
    for (int k = 0; k < K; k++) {
        for (int i = 0; i < N; i++) {
            float want = 0;
            for (int r = 0; r < g_size; r++) {
                float v = (float)((k + i + r) % 5);
                want = k % 2 ? (v > want ? v : want) : want + v;
            }
            CHECK(f[k][i] == want, "grouped allreduce %d [%d]: %g, want %g", k, i, f[k][i], want);
        }
    }
    for (int k = 0; k < 8; k++) {
        int32_t want = 0;
        for (int r = 0; r < g_size; r++) {
            want += r * 3 + k;
        }
        CHECK(ints[k][16] == want, "grouped int allreduce %d: %d, want %d", k, ints[k][16], want);
    }
    for (int r = 0; r < g_size; r++) {
        CHECK(all[r * 5 + 4] == r, "grouped allgather block %d: %d", r, all[r * 5 + 4]);
    }
    if (g_size > 1) {
        CHECK(in[32] == (float)((g_rank + g_size - 1) % g_size), "grouped recv: %g", in[32]);
    }

    /* An Async call inside a group is refused; the group still runs what it holds. */
    int32_t v = 1;
    oxcclRequest_t req = NULL;
    OK(oxcclGroupStart());
    expect_err(oxcclAllReduceAsync(&v, &v, 1, oxcclInt32, oxcclSum, comm, &req), oxcclInvalidUsage,
               "inside a group", comm, "Async in a group");
    OK(oxcclAllReduce(&v, &v, 1, oxcclInt32, oxcclSum, comm));
    OK(oxcclGroupEnd());
    CHECK(v == g_size, "group after a refused Async: %d", v);
    expect_err(oxcclGroupEnd(), oxcclInvalidUsage, "without a matching", NULL,
               "GroupEnd without GroupStart");

    /* A group over two communicators (the world and its reversed copy). */
    oxcclComm_t rev = NULL;
    OK(oxcclCommSplit(comm, 0, g_size - g_rank, &rev, NULL));
    int32_t a = g_rank, b = 10 * g_rank;
    OK(oxcclGroupStart());
    OK(oxcclAllReduce(&a, &a, 1, oxcclInt32, oxcclSum, comm));
    OK(oxcclAllReduce(&b, &b, 1, oxcclInt32, oxcclSum, rev));
    OK(oxcclGroupEnd());
    CHECK(a == g_size * (g_size - 1) / 2 && b == 10 * a, "two-communicator group: %d %d", a, b);
    OK(oxcclCommDestroy(rev));
}

static void premul(oxcclComm_t comm) {
    float scale = 0.37f;
    oxcclRedOp_t op;
    OK(oxcclRedOpCreatePreMulSum(&op, &scale, oxcclFloat32, oxcclScalarHostImmediate, comm));
    CHECK((int)op >= oxcclNumOps, "PreMulSum op %d collides with a built-in op", (int)op);
    enum { N = 1001 };
    static float x[N], y[N], z[N];
    for (int i = 0; i < N; i++) {
        x[i] = (float)((i * 31 + g_rank * 17) % 97) / 7.3f;
    }
    OK(oxcclAllReduce(x, y, N, oxcclFloat32, op, comm));
    /* Bitwise equal on every rank: rank 0's result broadcast and compared. */
    memcpy(z, y, sizeof y);
    OK(oxcclBroadcast(z, z, N, oxcclFloat32, 0, comm));
    CHECK(memcmp(y, z, sizeof y) == 0, "PreMulSum float results differ from rank 0's");

    int32_t s = -3, xi[10], yi[10];
    oxcclRedOp_t opi;
    OK(oxcclRedOpCreatePreMulSum(&opi, &s, oxcclInt32, oxcclScalarHostImmediate, comm));
    s = 1000; /* read at creation: changing it now changes nothing */
    for (int i = 0; i < 10; i++) {
        xi[i] = i + g_rank;
    }
    OK(oxcclAllReduce(xi, yi, 10, oxcclInt32, opi, comm));
    for (int i = 0; i < 10; i++) {
        int32_t want = 0;
        for (int r = 0; r < g_size; r++) {
            want += -3 * (i + r);
        }
        CHECK(yi[i] == want, "PreMulSum int32 [%d]: %d, want %d", i, yi[i], want);
    }
    /* reduce-scatter and reduce with the same op */
    int32_t *big = malloc(sizeof(int32_t) * 3 * (size_t)g_size), part[3], red[10];
    for (int i = 0; i < 3 * g_size; i++) {
        big[i] = i;
    }
    OK(oxcclReduceScatter(big, part, 3, oxcclInt32, opi, comm));
    for (int e = 0; e < 3; e++) {
        CHECK(part[e] == -3 * g_size * (g_rank * 3 + e), "PreMulSum reduce_scatter [%d]: %d", e,
              part[e]);
    }
    free(big);
    OK(oxcclReduce(xi, red, 10, oxcclInt32, opi, 0, comm));
    if (g_rank == 0) {
        CHECK(red[0] == yi[0] && red[9] == yi[9], "PreMulSum reduce: %d %d", red[0], red[9]);
    }
    uint16_t half_scale = 0x3800; /* 0.5 */
    oxcclRedOp_t oph;
    OK(oxcclRedOpCreatePreMulSum(&oph, &half_scale, oxcclFloat16, oxcclScalarHostImmediate, comm));
    uint16_t hx = 0x4000 /* 2.0 */, hy = 0;
    OK(oxcclAllReduce(&hx, &hy, 1, oxcclFloat16, oph, comm));
    /* sum of 1.0 over the ranks: exact in half for these sizes */
    float hf = 0;
    {
        int e = (hy >> 10) & 0x1f;
        int m = hy & 0x3ff;
        hf = e ? (1.0f + (float)m / 1024.0f) * (float)(1 << e) / 32768.0f : 0;
    }
    CHECK(hf == (float)g_size, "PreMulSum half: %g, want %d", hf, g_size);

    /* errors */
    expect_err(oxcclAllReduce(xi, yi, 10, oxcclInt32, op, comm), oxcclInvalidArgument,
               "pre-multiplied sum of float, used with int32", comm, "PreMulSum wrong type");
    oxcclComm_t other = NULL;
    OK(oxcclCommSplit(comm, 0, 0, &other, NULL));
    expect_err(oxcclAllReduce(x, y, N, oxcclFloat32, op, other), oxcclInvalidArgument,
               "of another communicator", other, "PreMulSum on another communicator");
    OK(oxcclCommDestroy(other));
    expect_err(oxcclRedOpCreatePreMulSum(&op, &scale, oxcclFloat32, oxcclScalarDevice, comm),
               oxcclInvalidArgument, "oxcclScalarDevice", comm, "device residence");
    expect_err(oxcclRedOpCreatePreMulSum(&op, NULL, oxcclFloat32, oxcclScalarHostImmediate, comm),
               oxcclInvalidArgument, "scalar is NULL", comm, "NULL scalar");
    OK(oxcclRedOpDestroy(op, comm));
    expect_err(oxcclAllReduce(x, y, N, oxcclFloat32, op, comm), oxcclInvalidArgument,
               "not yet destroyed", comm, "destroyed PreMulSum op");
    expect_err(oxcclRedOpDestroy(op, comm), oxcclInvalidArgument, "is not a pre-multiplied sum",
               comm, "double destroy");
    OK(oxcclRedOpDestroy(opi, comm));
    OK(oxcclRedOpDestroy(oph, comm));
}

static void configs(oxcclComm_t world) {
    oxcclUniqueId id;
    memset(&id, 0, sizeof id);
    if (g_rank == 0) {
        OK(oxcclGetUniqueId(&id));
    }
    OK(oxcclBroadcast(&id, &id, sizeof id, oxcclUint8, 0, world));
    oxcclConfig_t cfg = OXCCL_CONFIG_INITIALIZER;
    CHECK(cfg.size == sizeof(oxcclConfig_t) && cfg.magic == OXCCL_CONFIG_MAGIC &&
              cfg.timeoutMs == OXCCL_CONFIG_UNDEF_INT && cfg.transport == NULL,
          "OXCCL_CONFIG_INITIALIZER");
    cfg.timeoutMs = 20000;
    cfg.nChannels = 3;
    cfg.algo = "ring";
    cfg.commName = "configured";
    oxcclComm_t c = NULL;
    OK(oxcclCommInitRankConfig(&c, g_size, id, g_rank, &cfg));
    float v[1000];
    for (int i = 0; i < 1000; i++) {
        v[i] = 1;
    }
    OK(oxcclAllReduce(v, v, 1000, oxcclFloat32, oxcclSum, c));
    CHECK(v[999] == (float)g_size, "configured communicator: %g", v[999]);
    /* A split with a config of its own, and one inheriting. */
    oxcclConfig_t sc = OXCCL_CONFIG_INITIALIZER;
    sc.algo = "tree";
    oxcclComm_t s1 = NULL, s2 = NULL;
    OK(oxcclCommSplit(c, 0, 0, &s1, &sc));
    OK(oxcclCommSplit(c, 0, 0, &s2, NULL));
    OK(oxcclAllReduce(v, v, 1000, oxcclFloat32, oxcclSum, s1));
    OK(oxcclAllReduce(v, v, 1000, oxcclFloat32, oxcclSum, s2));
    CHECK(v[0] == (float)(g_size * g_size * g_size), "split communicators: %g", v[0]);
    /* Bad configs: named errors, nothing created. */
    oxcclConfig_t bad = OXCCL_CONFIG_INITIALIZER;
    bad.nChannels = 0;
    oxcclComm_t none = NULL;
    expect_err(oxcclCommSplit(c, 0, 0, &none, &bad), oxcclInvalidArgument, "config.nChannels 0",
               c, "nChannels 0");
    bad = (oxcclConfig_t)OXCCL_CONFIG_INITIALIZER;
    bad.magic = 0;
    expect_err(oxcclCommSplit(c, 0, 0, &none, &bad), oxcclInvalidArgument,
               "OXCCL_CONFIG_INITIALIZER", c, "no magic");
    bad = (oxcclConfig_t)OXCCL_CONFIG_INITIALIZER;
    bad.timeoutMs = -5;
    expect_err(oxcclCommSplit(c, 0, 0, &none, &bad), oxcclInvalidArgument, "timeoutMs -5", c,
               "negative timeout");
    CHECK(none == NULL, "a refused split wrote newcomm");
    OK(oxcclCommDestroy(s1));
    OK(oxcclCommDestroy(s2));
    OK(oxcclCommDestroy(c));
}

struct blocked {
    oxcclComm_t comm;
    oxcclResult_t result;
};

static void *blocked_call(void *p) {
    struct blocked *b = p;
    int32_t v = 1;
    b->result = oxcclAllReduce(&v, &v, 1, oxcclInt32, oxcclSum, b->comm);
    return NULL;
}

/* Rank 0's allreduce waits for rank 1, which stays away: the async error answers at once
 * (oxcclSuccess, nothing failed) while the call holds the communicator, and an abort from
 * this thread releases the call. */
static void async_error(oxcclComm_t world) {
    oxcclComm_t c = NULL;
    OK(oxcclCommSplit(world, g_rank < 2 ? 0 : OXCCL_SPLIT_NOCOLOR, 0, &c, NULL));
    if (g_rank == 1) {
        usleep(1500 * 1000);
    } else if (g_rank == 0) {
        struct blocked b = {c, oxcclSuccess};
        pthread_t t;
        pthread_create(&t, NULL, blocked_call, &b);
        usleep(300 * 1000);
        oxcclResult_t e = oxcclInternalError;
        OK(oxcclCommGetAsyncError(c, &e));
        CHECK(e == oxcclSuccess, "async error %d while nothing failed", (int)e);
        OK(oxcclCommAbort(c));
        pthread_join(t, NULL);
        CHECK(b.result != oxcclSuccess, "the blocked call succeeded after abort");
        c = NULL;
    }
    if (c != NULL) {
        oxcclCommDestroy(c);
    }
    OK(oxcclBarrier(world));
}

int main(void) {
    oxcclComm_t world = init_from_env();
    groups(world);
    premul(world);
    configs(world);
    if (g_size >= 2) {
        async_error(world);
    }
    OK(oxcclCommDestroy(world));
    return finish("test_group");
}
