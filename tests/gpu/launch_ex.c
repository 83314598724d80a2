/*
 * launch_ex: kernel launch forms and argument packing.
 *   - cuLaunchKernelEx with a CUlaunchConfig (grid, block, dynamic shared
 *     memory, stream, CU_LAUNCH_ATTRIBUTE_PRIORITY) running vecAdd and
 *     dynSmemReverse;
 *   - argEcho (char, 296-byte struct, short, double, pointer, char,
 *     pointer) launched four ways: cuLaunchKernel and cuLaunchKernelEx, each
 *     with kernelParams and with the `extra` packed buffer
 *     (CU_LAUNCH_PARAM_BUFFER_POINTER/SIZE/END). The kernel writes back what
 *     it received, which must match what was passed, field by field.
 *
 * usage: launch_ex KERNELS.(fatbin|cubin|ptx)
 */
#define TEST_NAME "launch_ex"
#include "check.h"
#include "kernel_args.h"

#include <stddef.h>

/* ------------------------------------------------------------ argEcho */

typedef struct EchoArgs {
    signed char c;
    BigArg big;
    short s;
    double d;
    CUdeviceptr p; /* points at one int holding `pointee` */
    signed char c2;
    CUdeviceptr out;
    int pointee;
} EchoArgs;

static void make_args(EchoArgs *a, uint64_t seed)
{
    Rng r = rng_new(seed);
    memset(&a->big, 0, sizeof a->big);
    a->c = (signed char)(0x40 | (rng_u32(&r) & 0x3F)) * ((seed & 1) ? -1 : 1);
    a->big.tag = (signed char)(rng_u32(&r) & 0x7F) | 1;
    a->big.scale = (double)rng_f32(&r) * 1e100;
    for (int i = 0; i < BIG_ARG_INTS; ++i)
        a->big.ints[i] = (int)(rng_u32(&r) & 0x00FFFFFF) - 0x00800000;
    for (int i = 0; i < BIG_ARG_FLOATS; ++i)
        a->big.floats[i] = rng_f32(&r);
    a->big.small = (short)(rng_u32(&r) & 0x7FFF) | 1;
    a->big.cookie = ((unsigned long long)rng_u32(&r) << 32) | rng_u32(&r);
    for (int i = 0; i < 5; ++i)
        a->big.tail[i] = (char)('a' + (rng_u32(&r) % 26));
    a->s = (short)-(short)((rng_u32(&r) & 0x3FFF) | 1);
    a->d = (double)rng_f32(&r) * 3.0e-200;
    a->c2 = (signed char)((rng_u32(&r) & 0x7F) | 1);
    a->pointee = (int)rng_u32(&r);
}

typedef struct Param {
    const void *ptr;
    size_t size, align;
} Param;

/* Packs params into buf, each at the next multiple of its alignment. */
static size_t pack_params(unsigned char *buf, size_t cap, const Param *p, int n, size_t *offsets)
{
    size_t off = 0;
    for (int i = 0; i < n; ++i) {
        off = (off + p[i].align - 1) & ~(p[i].align - 1);
        if (off + p[i].size > cap)
            DIE("parameter buffer too small");
        memcpy(buf + off, p[i].ptr, p[i].size);
        offsets[i] = off;
        off += p[i].size;
    }
    return off;
}

static int big_equal(const BigArg *x, const BigArg *y)
{
    return x->tag == y->tag && memcmp(&x->scale, &y->scale, sizeof x->scale) == 0 &&
           memcmp(x->ints, y->ints, sizeof x->ints) == 0 &&
           memcmp(x->floats, y->floats, sizeof x->floats) == 0 && x->small == y->small &&
           x->cookie == y->cookie && memcmp(x->tail, y->tail, sizeof x->tail) == 0;
}

static void check_echo(const char *how, const EchoArgs *a, const EchoOut *o)
{
    int sum = 0;
    for (int i = 0; i < BIG_ARG_INTS; ++i)
        sum += a->big.ints[i];
    int ok = 1;
#define ECHO_FIELD(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            test_fail(__VA_ARGS__);                                                                \
            ok = 0;                                                                                \
        }                                                                                          \
    } while (0)
    ECHO_FIELD(o->c == a->c, "%s: char arg got %d want %d", how, o->c, a->c);
    ECHO_FIELD(big_equal(&o->big, &a->big),
               "%s: struct arg differs (tag %d/%d, cookie %llx/%llx, small %d/%d)", how,
               o->big.tag, a->big.tag, o->big.cookie, a->big.cookie, o->big.small, a->big.small);
    ECHO_FIELD(o->int_sum == sum, "%s: device sum of struct ints %d want %d", how, o->int_sum, sum);
    ECHO_FIELD(o->s == a->s, "%s: short arg got %d want %d", how, o->s, a->s);
    ECHO_FIELD(memcmp(&o->d, &a->d, sizeof a->d) == 0, "%s: double arg got %.17g want %.17g", how,
               o->d, a->d);
    ECHO_FIELD(o->ptr == (unsigned long long)a->p, "%s: pointer arg got 0x%llx want 0x%llx", how,
               o->ptr, (unsigned long long)a->p);
    ECHO_FIELD(o->pointee == a->pointee, "%s: *pointer got %d want %d", how, o->pointee,
               a->pointee);
    ECHO_FIELD(o->c2 == a->c2, "%s: last char arg got %d want %d", how, o->c2, a->c2);
#undef ECHO_FIELD
    if (ok)
        printf("  argEcho via %s: ok\n", how);
}

enum LaunchHow { VIA_PARAMS, VIA_EXTRA, VIA_EX_PARAMS, VIA_EX_EXTRA, HOW_COUNT };
static const char *how_name[HOW_COUNT] = {
    "cuLaunchKernel(kernelParams)", "cuLaunchKernel(extra)", "cuLaunchKernelEx(kernelParams)",
    "cuLaunchKernelEx(extra)"};

static void echo_case(CUfunction f, enum LaunchHow how, CUstream s, CUlaunchAttribute *attr,
                      uint64_t seed)
{
    EchoArgs a;
    make_args(&a, seed);
    CHECK(cuMemAlloc(&a.p, sizeof(int)));
    CHECK(cuMemAlloc(&a.out, sizeof(EchoOut)));
    CHECK(cuMemcpyHtoD(a.p, &a.pointee, sizeof(int)));
    CHECK(cuMemsetD8(a.out, 0xEE, sizeof(EchoOut)));

    void *params[] = {&a.c, &a.big, &a.s, &a.d, &a.p, &a.c2, &a.out};
    const Param layout[] = {
        {&a.c, sizeof a.c, _Alignof(signed char)}, {&a.big, sizeof a.big, _Alignof(BigArg)},
        {&a.s, sizeof a.s, _Alignof(short)},       {&a.d, sizeof a.d, _Alignof(double)},
        {&a.p, sizeof a.p, _Alignof(CUdeviceptr)}, {&a.c2, sizeof a.c2, _Alignof(signed char)},
        {&a.out, sizeof a.out, _Alignof(CUdeviceptr)},
    };
    _Alignas(16) unsigned char argbuf[512];
    memset(argbuf, 0, sizeof argbuf);
    size_t offsets[7];
    size_t argbuf_size = pack_params(argbuf, sizeof argbuf, layout, 7, offsets);
    void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, argbuf, CU_LAUNCH_PARAM_BUFFER_SIZE,
                     &argbuf_size, CU_LAUNCH_PARAM_END};

    CUlaunchConfig cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.gridDimX = cfg.gridDimY = cfg.gridDimZ = 1;
    cfg.blockDimX = cfg.blockDimY = cfg.blockDimZ = 1;
    cfg.sharedMemBytes = 0;
    cfg.hStream = s;
    cfg.attrs = attr;
    cfg.numAttrs = 1;

    switch (how) {
    case VIA_PARAMS: CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, params, NULL)); break;
    case VIA_EXTRA: CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, NULL, extra)); break;
    case VIA_EX_PARAMS: CHECK(cuLaunchKernelEx(&cfg, f, params, NULL)); break;
    case VIA_EX_EXTRA: CHECK(cuLaunchKernelEx(&cfg, f, NULL, extra)); break;
    default: DIE("bad launch form");
    }
    CHECK(cuStreamSynchronize(s));

    EchoOut got;
    memset(&got, 0xA5, sizeof got);
    CHECK(cuMemcpyDtoH(&got, a.out, sizeof got));
    check_echo(how_name[how], &a, &got);

    /* Deterministic part of the echo for the native/Baton comparison. */
    char key[64];
    snprintf(key, sizeof key, "argEcho_%d", (int)how);
    uint64_t h = fnv1a64(&got.big.ints, sizeof got.big.ints, FNV_INIT);
    h = fnv1a64(&got.big.floats, sizeof got.big.floats, h);
    h = fnv1a64(&got.d, sizeof got.d, h);
    h = fnv1a64(&got.int_sum, sizeof got.int_sum, h);
    printf("DIGEST %s %016llx\n", key, (unsigned long long)h);

    CHECK(cuMemFree(a.p));
    CHECK(cuMemFree(a.out));
}

/* Offsets we expect for argEcho's parameters (see kernel_args.h). */
static void check_layout(CUfunction f)
{
    EchoArgs a;
    memset(&a, 0, sizeof a);
    const Param layout[] = {
        {&a.c, 1, 1}, {&a.big, sizeof(BigArg), _Alignof(BigArg)}, {&a.s, 2, 2}, {&a.d, 8, 8},
        {&a.p, 8, 8}, {&a.c2, 1, 1},                               {&a.out, 8, 8},
    };
    unsigned char buf[512];
    size_t off[7];
    size_t total = pack_params(buf, sizeof buf, layout, 7, off);
    const size_t expect[7] = {0, 8, 304, 312, 320, 328, 336};
    EXPECT(sizeof(BigArg) == 296 && _Alignof(BigArg) == 8, "BigArg is %zu bytes align %zu",
           sizeof(BigArg), (size_t)_Alignof(BigArg));
    for (int i = 0; i < 7; ++i)
        EXPECT(off[i] == expect[i], "param %d packed at %zu, expected %zu", i, off[i], expect[i]);
    EXPECT(total == 344, "packed size %zu, expected 344", total);

    /* The driver can tell the real layout (CUDA 12.4+). Informational when
     * unsupported, but a wrong answer is a failure. */
    size_t o = 0, sz = 0;
    CUresult r = cuFuncGetParamInfo(f, 0, &o, &sz);
    if (r != CUDA_SUCCESS) {
        printf("  cuFuncGetParamInfo: %s (layout not cross-checked)\n", cu_err_name(r));
        return;
    }
    for (int i = 0; i < 7; ++i) {
        CHECK(cuFuncGetParamInfo(f, (size_t)i, &o, &sz));
        EXPECT(o == expect[i] && sz == layout[i].size,
               "cuFuncGetParamInfo(%d): offset %zu size %zu, expected %zu/%zu", i, o, sz,
               expect[i], layout[i].size);
    }
    printf("  argEcho parameter layout matches cuFuncGetParamInfo\n");
}

/* ------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    const char *mod_path = argc > 1 ? argv[1] : "kernels.fatbin";
    CUdevice dev;
    setup_primary_ctx(&dev);
    CUmodule mod;
    CUfunction f_add, f_echo, f_rev;
    void *image = read_file(mod_path, NULL);
    CHECK(cuModuleLoadData(&mod, image));
    CHECK(cuModuleGetFunction(&f_add, mod, "vecAdd"));
    CHECK(cuModuleGetFunction(&f_echo, mod, "argEcho"));
    CHECK(cuModuleGetFunction(&f_rev, mod, "dynSmemReverse"));

    int least = 0, greatest = 0;
    CHECK(cuCtxGetStreamPriorityRange(&least, &greatest));
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUlaunchAttribute prio;
    memset(&prio, 0, sizeof prio);
    prio.id = CU_LAUNCH_ATTRIBUTE_PRIORITY;
    prio.value.priority = greatest;

    /* 1. vecAdd through cuLaunchKernelEx with a priority attribute. */
    {
        int n = 500001;
        size_t bytes = (size_t)n * sizeof(float);
        float *ha = xmalloc(bytes), *hb = xmalloc(bytes), *hc = xmalloc(bytes),
              *want = xmalloc(bytes);
        fill_random_f32(ha, (size_t)n, 61);
        fill_random_f32(hb, (size_t)n, 62);
        for (int i = 0; i < n; ++i)
            want[i] = ha[i] + hb[i];
        CUdeviceptr da, db, dc;
        CHECK(cuMemAlloc(&da, bytes));
        CHECK(cuMemAlloc(&db, bytes));
        CHECK(cuMemAlloc(&dc, bytes));
        CHECK(cuMemcpyHtoD(da, ha, bytes));
        CHECK(cuMemcpyHtoD(db, hb, bytes));
        CHECK(cuMemsetD32(dc, POISON_F32_BITS, (size_t)n));
        CUlaunchConfig cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDimX = ceil_div((size_t)n, 128);
        cfg.gridDimY = cfg.gridDimZ = 1;
        cfg.blockDimX = 128;
        cfg.blockDimY = cfg.blockDimZ = 1;
        cfg.sharedMemBytes = 0;
        cfg.hStream = s;
        cfg.attrs = &prio;
        cfg.numAttrs = 1;
        void *params[] = {&da, &db, &dc, &n};
        CHECK(cuLaunchKernelEx(&cfg, f_add, params, NULL));
        CHECK(cuStreamSynchronize(s));
        poison_host(hc, bytes);
        CHECK(cuMemcpyDtoH(hc, dc, bytes));
        if (compare_f32_exact("cuLaunchKernelEx vecAdd", hc, want, (size_t)n) == 0)
            printf("  cuLaunchKernelEx vecAdd (priority %d): ok\n", greatest);
        digest_bytes("ex_vecadd", hc, bytes);
        CHECK(cuMemFree(da));
        CHECK(cuMemFree(db));
        CHECK(cuMemFree(dc));
        free(ha);
        free(hb);
        free(hc);
        free(want);
    }

    /* 2. dynSmemReverse through cuLaunchKernelEx with dynamic shared memory. */
    {
        int n = 100003, chunk = 3001;
        size_t bytes = (size_t)n * 4;
        uint32_t *in = xmalloc(bytes), *out = xmalloc(bytes), *want = xmalloc(bytes);
        fill_random_u32(in, (size_t)n, 63);
        for (int b = 0; b * chunk < n; ++b) {
            int base = b * chunk, len = (n - base < chunk) ? n - base : chunk;
            for (int k = 0; k < len; ++k)
                want[base + k] = in[base + len - 1 - k];
        }
        CUdeviceptr din, dout;
        CHECK(cuMemAlloc(&din, bytes));
        CHECK(cuMemAlloc(&dout, bytes));
        CHECK(cuMemcpyHtoD(din, in, bytes));
        CHECK(cuMemsetD32(dout, 0xDEADBEEFu, (size_t)n));
        CUlaunchConfig cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDimX = ceil_div((size_t)n, (size_t)chunk);
        cfg.gridDimY = cfg.gridDimZ = 1;
        cfg.blockDimX = 256;
        cfg.blockDimY = cfg.blockDimZ = 1;
        cfg.sharedMemBytes = (unsigned int)chunk * 4;
        cfg.hStream = s;
        cfg.attrs = NULL;
        cfg.numAttrs = 0;
        void *params[] = {&din, &dout, &chunk, &n};
        CHECK(cuLaunchKernelEx(&cfg, f_rev, params, NULL));
        CHECK(cuStreamSynchronize(s));
        poison_host(out, bytes);
        CHECK(cuMemcpyDtoH(out, dout, bytes));
        if (compare_u32("cuLaunchKernelEx dynSmemReverse", out, want, (size_t)n) == 0)
            printf("  cuLaunchKernelEx dynSmemReverse (%u B dynamic smem): ok\n",
                   cfg.sharedMemBytes);
        CHECK(cuMemFree(din));
        CHECK(cuMemFree(dout));
        free(in);
        free(out);
        free(want);
    }

    /* 3. Argument packing through all four launch forms. */
    check_layout(f_echo);
    for (int how = 0; how < HOW_COUNT; ++how)
        echo_case(f_echo, (enum LaunchHow)how, s, &prio, 900 + (uint64_t)how);

    CHECK(cuStreamDestroy(s));
    CHECK(cuModuleUnload(mod));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(image);
    return test_finish();
}
