/*
 * Small helpers shared by the Baton GPU test programs (driver API only).
 *
 * Every program defines TEST_NAME before including this header and ends
 * with `return test_finish();`, which prints the final line
 *     PASS <name>            (exit 0)   or
 *     FAIL <name>: <reason>  (exit 1).
 *
 * CHECK(call)   any CUresult other than CUDA_SUCCESS prints the call, the
 *               error name and the location, then exits 1 at once.
 * EXPECT(c,...) a failed check: recorded and printed, the program goes on
 *               so that one run reports every broken piece.
 * DIGEST lines  "DIGEST <key> <value>" lines carry results that must be
 *               identical natively and under Baton; run.sh compares them.
 *               Only deterministic values (no timings, no addresses).
 */
#ifndef BATON_GPU_CHECK_H
#define BATON_GPU_CHECK_H

#include <cuda.h>

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef TEST_NAME
#error "define TEST_NAME before including check.h"
#endif

/* ---------------------------------------------------------------- errors */

static inline const char *cu_err_name(CUresult r)
{
    const char *name = NULL;
    if (cuGetErrorName(r, &name) != CUDA_SUCCESS || name == NULL)
        return "unknown CUresult";
    return name;
}

#define CHECK(call)                                                                   \
    do {                                                                              \
        CUresult check_r_ = (call);                                                   \
        if (check_r_ != CUDA_SUCCESS) {                                               \
            printf("  %s:%d: %s returned %s (%d)\n", __FILE__, __LINE__, #call,       \
                   cu_err_name(check_r_), (int)check_r_);                             \
            printf("FAIL %s: %s returned %s (%d)\n", TEST_NAME, #call,                \
                   cu_err_name(check_r_), (int)check_r_);                             \
            fflush(stdout);                                                           \
            exit(1);                                                                  \
        }                                                                             \
    } while (0)

/* Non-CUDA failures that make going on pointless (e.g. malloc, fopen). */
#define DIE(...)                                                                      \
    do {                                                                              \
        printf("FAIL %s: ", TEST_NAME);                                               \
        printf(__VA_ARGS__);                                                          \
        printf("\n");                                                                 \
        fflush(stdout);                                                               \
        exit(1);                                                                      \
    } while (0)

static int g_fail_count;
static char g_first_fail[512];

static inline void test_fail(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("  check failed: %s\n", msg);
    fflush(stdout);
    /* The first failure becomes the reason on the final line. */
    if (__atomic_fetch_add(&g_fail_count, 1, __ATOMIC_SEQ_CST) == 0)
        memcpy(g_first_fail, msg, sizeof msg);
}

#define EXPECT(cond, ...)                                                             \
    do {                                                                              \
        if (!(cond))                                                                  \
            test_fail(__VA_ARGS__);                                                   \
    } while (0)

/* Call expected to fail: passes when it returns anything but success. */
#define EXPECT_ERROR(call, what)                                                      \
    do {                                                                              \
        CUresult expect_r_ = (call);                                                  \
        printf("  %s -> %s (%d)\n", what, cu_err_name(expect_r_), (int)expect_r_);   \
        EXPECT(expect_r_ != CUDA_SUCCESS, "%s: %s succeeded but must fail", what,     \
               #call);                                                                \
    } while (0)

static inline int test_finish(void)
{
    int n = __atomic_load_n(&g_fail_count, __ATOMIC_SEQ_CST);
    if (n == 0) {
        printf("PASS %s\n", TEST_NAME);
        fflush(stdout);
        return 0;
    }
    printf("FAIL %s: %s%s\n", TEST_NAME, g_first_fail,
           n > 1 ? " (and more, see above)" : "");
    fflush(stdout);
    return 1;
}

/* ---------------------------------------------------------------- context */

/* cuInit, device 0, its primary context made current. */
static inline CUcontext setup_primary_ctx(CUdevice *dev_out)
{
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    if (dev_out)
        *dev_out = dev;
    return ctx;
}

/* ---------------------------------------------------------------- random */

/* xorshift64*: deterministic, seeded, no libc state. */
typedef struct Rng {
    uint64_t s;
} Rng;

static inline Rng rng_new(uint64_t seed)
{
    Rng r;
    r.s = seed ? seed : 0x9E3779B97F4A7C15ull;
    return r;
}

static inline uint64_t rng_next(Rng *r)
{
    r->s ^= r->s >> 12;
    r->s ^= r->s << 25;
    r->s ^= r->s >> 27;
    return r->s * 0x2545F4914F6CDD1Dull;
}

/* Non-zero 32-bit value. */
static inline uint32_t rng_u32(Rng *r)
{
    uint32_t v;
    do {
        v = (uint32_t)(rng_next(r) >> 32);
    } while (v == 0);
    return v;
}

/* Float in +-[0.25, 1.25): never zero, never denormal. */
static inline float rng_f32(Rng *r)
{
    uint64_t x = rng_next(r);
    float mag = 0.25f + (float)((x >> 40) & 0xFFFFFF) / 16777216.0f;
    return (x & 1) ? -mag : mag;
}

static inline void fill_random_f32(float *p, size_t n, uint64_t seed)
{
    Rng r = rng_new(seed);
    for (size_t i = 0; i < n; ++i)
        p[i] = rng_f32(&r);
}

static inline void fill_random_u32(uint32_t *p, size_t n, uint64_t seed)
{
    Rng r = rng_new(seed);
    for (size_t i = 0; i < n; ++i)
        p[i] = rng_u32(&r);
}

/* Bytes in 1..255 (never zero, so zeroed memory is never mistaken for data). */
static inline void fill_random_bytes(void *dst, size_t n, uint64_t seed)
{
    unsigned char *p = (unsigned char *)dst;
    Rng r = rng_new(seed);
    size_t i = 0;
    while (i < n) {
        uint64_t x = rng_next(&r);
        for (int k = 0; k < 8 && i < n; ++k, ++i) {
            unsigned char b = (unsigned char)(x >> (8 * k));
            p[i] = b ? b : 0x5D;
        }
    }
}

/* ---------------------------------------------------------------- poison */

#define POISON_BYTE 0xA5u     /* host-side poison */
#define POISON_DEV_BYTE 0xC7u /* device-side poison (cuMemsetD8) */
#define POISON_F32_BITS 0x7FC0DEADu /* a NaN: never equal to anything */

static inline void poison_host(void *p, size_t bytes)
{
    memset(p, (int)POISON_BYTE, bytes);
}

/* ---------------------------------------------------------------- compare */

/* Bitwise equality of float arrays (NaN poison never matches a number). */
static inline size_t compare_f32_exact(const char *what, const float *got, const float *want, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0) {
            if (bad < 5)
                printf("    %s[%zu]: got %.9g want %.9g\n", what, i, (double)got[i],
                       (double)want[i]);
            ++bad;
        }
    }
    EXPECT(bad == 0, "%s: %zu of %zu floats differ", what, bad, n);
    return bad;
}

/* |got - want| <= rel * scale[i] (scale: e.g. sum of |a_ik * b_kj|). */
static inline size_t compare_f32_rel(const char *what, const float *got, const double *want,
                              const double *scale, size_t n, double rel)
{
    size_t bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
        double tol = rel * (scale[i] > 1e-30 ? scale[i] : 1e-30);
        double err = fabs((double)got[i] - want[i]);
        if (!(err <= tol)) { /* also catches NaN */
            if (bad < 5)
                printf("    %s[%zu]: got %.9g want %.9g (tol %.3g)\n", what, i,
                       (double)got[i], want[i], tol);
            ++bad;
        }
        if (scale[i] > 0 && err / scale[i] > worst)
            worst = err / scale[i];
    }
    printf("  %s: worst relative error %.3g over %zu values\n", what, worst, n);
    EXPECT(bad == 0, "%s: %zu of %zu values outside tolerance %.1g", what, bad, n, rel);
    return bad;
}

static inline size_t compare_u32(const char *what, const uint32_t *got, const uint32_t *want, size_t n)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        if (got[i] != want[i]) {
            if (bad < 5)
                printf("    %s[%zu]: got 0x%08x want 0x%08x\n", what, i, got[i], want[i]);
            ++bad;
        }
    }
    EXPECT(bad == 0, "%s: %zu of %zu words differ", what, bad, n);
    return bad;
}

static inline size_t compare_bytes(const char *what, const void *got_, const void *want_, size_t n)
{
    const unsigned char *got = (const unsigned char *)got_;
    const unsigned char *want = (const unsigned char *)want_;
    if (memcmp(got, want, n) == 0)
        return 0;
    size_t bad = 0;
    for (size_t i = 0; i < n; ++i) {
        if (got[i] != want[i]) {
            if (bad < 5)
                printf("    %s[%zu]: got 0x%02x want 0x%02x\n", what, i, got[i], want[i]);
            ++bad;
        }
    }
    EXPECT(bad == 0, "%s: %zu of %zu bytes differ", what, bad, n);
    return bad;
}

/* ---------------------------------------------------------------- digest */

static inline uint64_t fnv1a64(const void *data, size_t n, uint64_t h)
{
    const unsigned char *p = (const unsigned char *)data;
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 0x100000001B3ull;
    }
    return h;
}
#define FNV_INIT 0xCBF29CE484222325ull

static inline void digest_bytes(const char *key, const void *data, size_t n)
{
    printf("DIGEST %s %016llx\n", key, (unsigned long long)fnv1a64(data, n, FNV_INIT));
}

static inline void digest_int(const char *key, long long v)
{
    printf("DIGEST %s %lld\n", key, v);
}

static inline void digest_str(const char *key, const char *v)
{
    printf("DIGEST %s %s\n", key, v);
}

/* ---------------------------------------------------------------- misc */

static inline double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        DIE("malloc(%zu) failed", n);
    return p;
}

/* Whole file into memory, NUL-terminated (PTX must be a C string). */
static inline void *read_file(const char *path, size_t *size_out)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        DIE("cannot open %s", path);
    if (fseek(f, 0, SEEK_END) != 0)
        DIE("cannot seek %s", path);
    long len = ftell(f);
    if (len <= 0)
        DIE("%s is empty or unreadable", path);
    rewind(f);
    char *buf = (char *)xmalloc((size_t)len + 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len)
        DIE("short read on %s", path);
    fclose(f);
    buf[len] = '\0';
    if (size_out)
        *size_out = (size_t)len;
    return buf;
}

static inline unsigned int ceil_div(size_t a, size_t b)
{
    return (unsigned int)((a + b - 1) / b);
}

#endif /* BATON_GPU_CHECK_H */
