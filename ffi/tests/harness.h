/*
 * Shared helpers of the C tests: checks and counters, element encoding for every
 * oxcclDataType_t (fp8 included), and deterministic test values whose reductions are exact
 * in every type, with a serial reference for every reduction (bitwise ones included).
 *
 * One rank per process: the launcher (rankrun, or ffi/tests/launch.py) sets OXCCL_RANK etc.
 */
#ifndef OXCCL_TEST_HARNESS_H
#define OXCCL_TEST_HARNESS_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "oxccl.h"

static int g_rank = -1;
static int g_size = 0;
static long g_checks = 0;
static long g_failures = 0;

#define FAIL(...)                                                                  \
    do {                                                                           \
        fprintf(stderr, "[rank %d] FAIL %s:%d: ", g_rank, __FILE__, __LINE__);     \
        fprintf(stderr, __VA_ARGS__);                                              \
        fputc('\n', stderr);                                                       \
        g_failures++;                                                              \
    } while (0)

#define CHECK(cond, ...)                                                           \
    do {                                                                           \
        g_checks++;                                                                \
        if (!(cond)) {                                                             \
            FAIL(__VA_ARGS__);                                                     \
        }                                                                          \
    } while (0)

/* A call that must succeed; a failed collective would leave the ranks out of step, so
 * the process stops (the launcher then stops the others). */
#define OK(call)                                                                   \
    do {                                                                           \
        oxcclResult_t r_ = (call);                                                 \
        g_checks++;                                                                \
        if (r_ != oxcclSuccess) {                                                  \
            fprintf(stderr, "[rank %d] FATAL %s:%d: %s returned %d (%s): %s\n",    \
                    g_rank, __FILE__, __LINE__, #call, (int)r_,                    \
                    oxcclGetErrorString(r_), oxcclGetLastError(NULL));             \
            exit(2);                                                               \
        }                                                                          \
    } while (0)

/* Ends a test program: one summary line per rank, status 1 on any failure. */
static inline int finish(const char *name) {
    printf("[rank %d/%d] %s: %ld checks, %ld failed\n", g_rank, g_size, name, g_checks,
           g_failures);
    fflush(stdout);
    return g_failures ? 1 : 0;
}

static inline double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int g_completions = 0;

/* This process's rank and the size of `comm` (which may differ from the world's). */
static inline void who(oxcclComm_t comm, int *rank, int *size) {
    OK(oxcclCommUserRank(comm, rank));
    OK(oxcclCommCount(comm, size));
}

/* Finishes a request, alternately with oxcclWait and by polling oxcclTest. */
static inline void complete(oxcclRequest_t req) {
    if (g_completions++ % 2 == 0) {
        OK(oxcclWait(req));
        return;
    }
    int done = 0;
    double t0 = now_s();
    while (!done) {
        oxcclResult_t r = oxcclTest(req, &done);
        if (r != oxcclSuccess) {
            OK(r);
        }
        if (!done && now_s() - t0 > 120) {
            FAIL("request not done after 120 s");
            exit(2);
        }
    }
    /* The call that saw completion released the request. */
    CHECK(oxcclTest(req, &done) == oxcclInvalidUsage, "a released request is still live");
}

/* Every data type (oxcclNumTypes of them). */
static const oxcclDataType_t ALL_TYPES[] = {
    oxcclInt8,    oxcclUint8,   oxcclInt32,    oxcclUint32,     oxcclInt64,      oxcclUint64,
    oxcclFloat16, oxcclFloat32, oxcclFloat64, oxcclBfloat16, oxcclFloat8e4m3, oxcclFloat8e5m2,
};
#define NTYPES ((int)(sizeof(ALL_TYPES) / sizeof(ALL_TYPES[0])))

/* Every reduction (oxcclNumOps of them); the bitwise ones apply to integer types only
 * (op_applies). */
static const oxcclRedOp_t ALL_OPS[] = {oxcclSum, oxcclProd, oxcclMax, oxcclMin,
                                       oxcclAvg, oxcclBand, oxcclBor,  oxcclBxor};
#define NOPS ((int)(sizeof(ALL_OPS) / sizeof(ALL_OPS[0])))

static inline size_t dt_size(oxcclDataType_t t) {
    switch (t) {
    case oxcclInt8:
    case oxcclUint8:
    case oxcclFloat8e4m3:
    case oxcclFloat8e5m2:
        return 1;
    case oxcclFloat16:
    case oxcclBfloat16:
        return 2;
    case oxcclInt32:
    case oxcclUint32:
    case oxcclFloat32:
        return 4;
    default:
        return 8;
    }
}

static inline const char *dt_name(oxcclDataType_t t) {
    static const char *names[] = {"int8",  "uint8",  "int32",    "uint32",  "int64",   "uint64",
                                  "half",  "float",  "double",   "bfloat16", "fp8e4m3", "fp8e5m2"};
    return (int)t >= 0 && (int)t < oxcclNumTypes ? names[t] : "?";
}

static inline const char *op_name(oxcclRedOp_t o) {
    static const char *names[] = {"sum", "prod", "max", "min", "avg", "band", "bor", "bxor"};
    return (int)o >= 0 && (int)o < oxcclNumOps ? names[o] : "?";
}

static inline int dt_is_fp8(oxcclDataType_t t) {
    return t == oxcclFloat8e4m3 || t == oxcclFloat8e5m2;
}

static inline int dt_is_float(oxcclDataType_t t) {
    return t == oxcclFloat16 || t == oxcclFloat32 || t == oxcclFloat64 || t == oxcclBfloat16 ||
           dt_is_fp8(t);
}

static inline int op_is_bitwise(oxcclRedOp_t o) {
    return o == oxcclBand || o == oxcclBor || o == oxcclBxor;
}

/* Whether `op` is defined for `t`: the bitwise operations take integer types only. */
static inline int op_applies(oxcclDataType_t t, oxcclRedOp_t o) {
    return !(op_is_bitwise(o) && dt_is_float(t));
}

/* 2^e, exactly (no libm: the ASan build links liboxccl.so alone). */
static inline double pow2(int e) {
    double p = 1;
    for (; e > 0; e--) {
        p *= 2;
    }
    for (; e < 0; e++) {
        p /= 2;
    }
    return p;
}

/* x >= 0 rounded to an integer, nearest with ties to even (x < 2^53). */
static inline uint64_t round_even(double x) {
    uint64_t q = (uint64_t)x;
    double frac = x - (double)q;
    if (frac > 0.5 || (frac == 0.5 && (q & 1))) {
        q++;
    }
    return q;
}

/* f -> OCP fp8 bits (mbits mantissa bits, exponent bias `bias`, largest finite pattern
 * `maxbits`): nearest, ties to even, subnormals included, saturating at the largest finite
 * value (as oxccl and CUDA's __NV_SATFINITE narrow). Not for NaN. */
static inline uint8_t to_fp8(double f, int mbits, int bias, unsigned maxbits) {
    uint8_t sign = f < 0 || (f == 0 && 1 / f < 0) ? 0x80 : 0;
    double a = f < 0 ? -f : f;
    double min_normal = pow2(1 - bias);
    unsigned bits;
    if (a < min_normal) {
        /* Subnormal (or zero): units of 2^(1 - bias - mbits); rounding up to 1 << mbits
         * gives the smallest normal's encoding. */
        bits = (unsigned)round_even(a / pow2(1 - bias - mbits));
    } else {
        int e = 0;
        while (a >= pow2(e + 1)) {
            e++;
        }
        while (a < pow2(e)) {
            e--;
        }
        uint64_t q = round_even((a / pow2(e) - 1) * (double)(1u << mbits));
        if (q == (1u << mbits)) {
            q = 0;
            e++;
        }
        long eb = (long)e + bias;
        bits = eb > (long)(maxbits >> mbits) ? maxbits : (unsigned)(eb << mbits) | (unsigned)q;
        if (bits > maxbits) {
            bits = maxbits;
        }
    }
    return (uint8_t)(sign | bits);
}

static inline uint8_t to_e4m3(double f) { return to_fp8(f, 3, 7, 0x7e); }
static inline uint8_t to_e5m2(double f) { return to_fp8(f, 2, 15, 0x7b); }

/* Whether fp8 bits are a finite value (E4M3: S.1111.111 is NaN; E5M2: exponent 11111 is
 * infinity or NaN). */
static inline int fp8_finite(oxcclDataType_t t, uint8_t b) {
    return t == oxcclFloat8e4m3 ? (b & 0x7f) != 0x7f : (b & 0x7c) != 0x7c;
}

/* f32 -> f16 bits, for values exactly representable as normal halves (or zero). */
static inline uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu;
    if (exp == 0) {
        return (uint16_t)sign;
    }
    return (uint16_t)(sign | ((exp - 127u + 15u) << 10) | ((x & 0x7fffffu) >> 13));
}

/* f32 -> bf16 bits, for values exactly representable in bfloat16. */
static inline uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    return (uint16_t)(x >> 16);
}

/* Writes element i of buf: `u` (wrapped to the type's width) for integer types, `d` for
 * floating-point ones. */
static inline void put(oxcclDataType_t t, void *buf, size_t i, uint64_t u, double d) {
    unsigned char *b = (unsigned char *)buf + i * dt_size(t);
    switch (t) {
    case oxcclInt8:
    case oxcclUint8: {
        uint8_t v = (uint8_t)u;
        memcpy(b, &v, 1);
        break;
    }
    case oxcclInt32:
    case oxcclUint32: {
        uint32_t v = (uint32_t)u;
        memcpy(b, &v, 4);
        break;
    }
    case oxcclInt64:
    case oxcclUint64:
        memcpy(b, &u, 8);
        break;
    case oxcclFloat16: {
        uint16_t v = f32_to_f16((float)d);
        memcpy(b, &v, 2);
        break;
    }
    case oxcclBfloat16: {
        uint16_t v = f32_to_bf16((float)d);
        memcpy(b, &v, 2);
        break;
    }
    case oxcclFloat32: {
        float v = (float)d;
        memcpy(b, &v, 4);
        break;
    }
    case oxcclFloat64:
        memcpy(b, &d, 8);
        break;
    case oxcclFloat8e4m3:
        *b = to_e4m3(d);
        break;
    case oxcclFloat8e5m2:
        *b = to_e5m2(d);
        break;
    }
}

/* A 64-bit mix of (a, b, c) (splitmix64's finaliser), for bit patterns. */
static inline uint64_t mix64(uint64_t a, uint64_t b, uint64_t c) {
    uint64_t z = a * 0x9e3779b97f4a7c15ull + b * 0xbf58476d1ce4e5b9ull + c * 0x94d049bb133111ebull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Test values, small non-negative integers (or halves for avg) so that every reduction of
 * up to 8 ranks is exact in every type, and products wrap the same way in C and oxccl. The
 * bitwise operations get full-width bit patterns: dense ones for band, sparse ones for bor
 * (so that the result over 8 ranks is neither all zeros nor all ones), uniform for bxor. */
static inline uint64_t gen(oxcclRedOp_t op, int rank, size_t i) {
    uint64_t h = mix64((uint64_t)rank + 1, i, (uint64_t)op);
    switch (op) {
    case oxcclProd:
        return 1 + (i + (size_t)rank) % 2;
    case oxcclAvg:
        return i % 5 + (size_t)rank;
    case oxcclBand:
        return h | mix64(h, 1, 2);
    case oxcclBor:
        return h & mix64(h, 3, 4) & mix64(h, 5, 6);
    case oxcclBxor:
        return h;
    default:
        return (i * 7 + (size_t)rank * 5) % 11;
    }
}

/* fp8 test values, exact with every partial result of up to 8 ranks: sums of magnitudes up
 * to 2 (E4M3, integers exact to 16) or 1 (E5M2, integers exact to 8), powers of two for
 * products, and integers -5..5 for max and min. Avg divides the exact sum once (rounded). */
static inline double gen_fp8(oxcclDataType_t t, oxcclRedOp_t op, int rank, size_t i) {
    switch (op) {
    case oxcclProd: {
        static const double p[] = {0.5, 1, 2};
        return p[(i + (size_t)rank) % 3];
    }
    case oxcclMax:
    case oxcclMin:
        return (double)((i * 7 + (size_t)rank * 5) % 11) - 5;
    default:
        return t == oxcclFloat8e4m3 ? (double)((i + 2 * (size_t)rank) % 5) - 2
                                    : (double)((i + 2 * (size_t)rank) % 3) - 1;
    }
}

/* A value for data movement (broadcast, gather, send): distinct per rank and index, < 128. */
static inline uint64_t gen_move(int rank, size_t i, int salt) {
    return (i * 3 + (size_t)rank * 13 + (size_t)salt) % 100;
}

/* Expected element i of the reduction over `n` ranks of gen(op, r, i) (gen_fp8 for fp8
 * types), computed serially. */
static inline void put_expected(oxcclDataType_t t, void *buf, size_t i, oxcclRedOp_t op, int n,
                                size_t gen_index) {
    if (dt_is_fp8(t)) {
        double d = gen_fp8(t, op, 0, gen_index);
        for (int r = 1; r < n; r++) {
            double v = gen_fp8(t, op, r, gen_index);
            switch (op) {
            case oxcclProd:
                d *= v;
                break;
            case oxcclMax:
                d = v > d ? v : d;
                break;
            case oxcclMin:
                d = v < d ? v : d;
                break;
            default:
                d += v;
                break;
            }
        }
        if (op == oxcclAvg) {
            /* Widened to float, divided once, rounded to the type (as oxccl's finaliser). */
            d = (double)((float)d / (float)n);
        }
        put(t, buf, i, 0, d);
        return;
    }
    uint64_t u = op == oxcclProd ? 1 : op == oxcclBand ? ~(uint64_t)0 : 0;
    double d = op == oxcclProd ? 1 : 0;
    for (int r = 0; r < n; r++) {
        uint64_t v = gen(op, r, gen_index);
        switch (op) {
        case oxcclSum:
        case oxcclAvg:
            u += v;
            d += (double)v;
            break;
        case oxcclProd:
            u *= v;
            d *= (double)v;
            break;
        case oxcclMax:
            if (r == 0 || v > u) {
                u = v;
                d = (double)v;
            }
            break;
        case oxcclMin:
            if (r == 0 || v < u) {
                u = v;
                d = (double)v;
            }
            break;
        case oxcclBand:
            u &= v;
            break;
        case oxcclBor:
            u |= v;
            break;
        case oxcclBxor:
            u ^= v;
            break;
        }
    }
    if (op == oxcclAvg) {
        u /= (uint64_t)n;
        d /= n;
    }
    put(t, buf, i, u, d);
}

/* Fills `count` elements of buf with gen(op, rank, first + i) (gen_fp8 for fp8 types). */
static inline void fill(oxcclDataType_t t, void *buf, size_t count, oxcclRedOp_t op, int rank,
                        size_t first) {
    for (size_t i = 0; i < count; i++) {
        if (dt_is_fp8(t)) {
            put(t, buf, i, 0, gen_fp8(t, op, rank, first + i));
        } else {
            uint64_t v = gen(op, rank, first + i);
            put(t, buf, i, v, (double)v);
        }
    }
}

/* Fills `count` elements of buf with gen_move(rank, first + i, salt); fp8 elements get it
 * as their bit pattern (below 100: finite in both formats, and distinct). */
static inline void fill_move(oxcclDataType_t t, void *buf, size_t count, int rank, size_t first,
                             int salt) {
    for (size_t i = 0; i < count; i++) {
        uint64_t v = gen_move(rank, first + i, salt);
        if (dt_is_fp8(t)) {
            ((unsigned char *)buf)[i] = (unsigned char)v;
        } else {
            put(t, buf, i, v, (double)v);
        }
    }
}

/* Index of the first byte where a and b differ, or -1. */
static inline long first_diff(const void *a, const void *b, size_t bytes) {
    const unsigned char *x = (const unsigned char *)a, *y = (const unsigned char *)b;
    for (size_t i = 0; i < bytes; i++) {
        if (x[i] != y[i]) {
            return (long)i;
        }
    }
    return -1;
}

/* malloc that never returns NULL for a size of 0 (so in-place offsets stay valid). */
static inline void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "out of memory (%zu bytes)\n", bytes);
        exit(3);
    }
    return p;
}

/* The rank and size from a communicator made from the environment. */
static inline oxcclComm_t init_from_env(void) {
    oxcclComm_t comm = NULL;
    OK(oxcclCommInitFromEnv(&comm));
    OK(oxcclCommUserRank(comm, &g_rank));
    OK(oxcclCommCount(comm, &g_size));
    return comm;
}

#endif
