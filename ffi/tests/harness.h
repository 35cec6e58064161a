/*
 * Shared helpers of the C tests: checks and counters, element encoding for every
 * oxcclDataType_t, and deterministic test values whose reductions are exact in every type.
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

static const oxcclDataType_t ALL_TYPES[] = {
    oxcclInt8,    oxcclUint8,   oxcclInt32,   oxcclUint32,  oxcclInt64,
    oxcclUint64,  oxcclFloat16, oxcclFloat32, oxcclFloat64, oxcclBfloat16,
};
#define NTYPES ((int)(sizeof(ALL_TYPES) / sizeof(ALL_TYPES[0])))

static const oxcclRedOp_t ALL_OPS[] = {oxcclSum, oxcclProd, oxcclMax, oxcclMin, oxcclAvg};
#define NOPS ((int)(sizeof(ALL_OPS) / sizeof(ALL_OPS[0])))

static inline size_t dt_size(oxcclDataType_t t) {
    switch (t) {
    case oxcclInt8:
    case oxcclUint8:
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
    static const char *names[] = {"int8",    "uint8", "int32", "uint32", "int64",
                                  "uint64",  "half",  "float", "double", "bfloat16"};
    return (int)t >= 0 && (int)t < 10 ? names[t] : "?";
}

static inline const char *op_name(oxcclRedOp_t o) {
    static const char *names[] = {"sum", "prod", "max", "min", "avg"};
    return (int)o >= 0 && (int)o < 5 ? names[o] : "?";
}

static inline int dt_is_float(oxcclDataType_t t) {
    return t == oxcclFloat16 || t == oxcclFloat32 || t == oxcclFloat64 || t == oxcclBfloat16;
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
    }
}

/* Test values, small non-negative integers (or halves for avg) so that every reduction of
 * up to 8 ranks is exact in every type, and products wrap the same way in C and oxccl. */
static inline uint64_t gen(oxcclRedOp_t op, int rank, size_t i) {
    switch (op) {
    case oxcclProd:
        return 1 + (i + (size_t)rank) % 2;
    case oxcclAvg:
        return i % 5 + (size_t)rank;
    default:
        return (i * 7 + (size_t)rank * 5) % 11;
    }
}

/* A value for data movement (broadcast, gather, send): distinct per rank and index, < 128. */
static inline uint64_t gen_move(int rank, size_t i, int salt) {
    return (i * 3 + (size_t)rank * 13 + (size_t)salt) % 100;
}

/* Expected element i of the reduction over `n` ranks of gen(op, r, i). */
static inline void put_expected(oxcclDataType_t t, void *buf, size_t i, oxcclRedOp_t op, int n,
                                size_t gen_index) {
    uint64_t u = op == oxcclProd ? 1 : 0;
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
        }
    }
    if (op == oxcclAvg) {
        u /= (uint64_t)n;
        d /= n;
    }
    put(t, buf, i, u, d);
}

/* Fills `count` elements of buf with gen(op, rank, first + i). */
static inline void fill(oxcclDataType_t t, void *buf, size_t count, oxcclRedOp_t op, int rank,
                        size_t first) {
    for (size_t i = 0; i < count; i++) {
        uint64_t v = gen(op, rank, first + i);
        put(t, buf, i, v, (double)v);
    }
}

/* Fills `count` elements of buf with gen_move(rank, first + i, salt). */
static inline void fill_move(oxcclDataType_t t, void *buf, size_t count, int rank, size_t first,
                             int salt) {
    for (size_t i = 0; i < count; i++) {
        uint64_t v = gen_move(rank, first + i, salt);
        put(t, buf, i, v, (double)v);
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
