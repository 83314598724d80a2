/*
 * memset: cuMemsetD8/D16/D32 and their Async forms at odd offsets and
 * lengths. The buffer first holds random bytes; after the memset the whole
 * buffer is read back, and the target range must hold the pattern while
 * every byte outside it must still hold the random data.
 *
 * usage: memset
 */
#define TEST_NAME "memset"
#include "check.h"

#define BUF_BYTES ((8u << 20) + 64)

typedef struct Case {
    int width;        /* 1, 2 or 4 bytes per element */
    size_t offset;    /* in bytes; a multiple of width */
    size_t count;     /* elements */
    uint32_t value;   /* only the low `width` bytes are used */
    int async;
} Case;

static void run_case(const Case *c, CUdeviceptr buf, CUstream s, unsigned char *orig,
                     unsigned char *got, unsigned char *want, uint64_t seed)
{
    fill_random_bytes(orig, BUF_BYTES, seed);
    CHECK(cuMemcpyHtoD(buf, orig, BUF_BYTES));
    CUdeviceptr dst = buf + c->offset;
    switch (c->width * 2 + c->async) {
    case 2: CHECK(cuMemsetD8(dst, (unsigned char)c->value, c->count)); break;
    case 3: CHECK(cuMemsetD8Async(dst, (unsigned char)c->value, c->count, s)); break;
    case 4: CHECK(cuMemsetD16(dst, (unsigned short)c->value, c->count)); break;
    case 5: CHECK(cuMemsetD16Async(dst, (unsigned short)c->value, c->count, s)); break;
    case 8: CHECK(cuMemsetD32(dst, c->value, c->count)); break;
    case 9: CHECK(cuMemsetD32Async(dst, c->value, c->count, s)); break;
    default: DIE("bad case");
    }
    if (c->async)
        CHECK(cuStreamSynchronize(s));

    memcpy(want, orig, BUF_BYTES);
    for (size_t i = 0; i < c->count; ++i)
        memcpy(want + c->offset + i * (size_t)c->width, &c->value, (size_t)c->width); /* little-endian */
    poison_host(got, BUF_BYTES);
    CHECK(cuMemcpyDtoH(got, buf, BUF_BYTES));

    char what[128];
    snprintf(what, sizeof what, "cuMemsetD%d%s offset %zu count %zu value 0x%x", c->width * 8,
             c->async ? "Async" : "", c->offset, c->count, c->value);
    if (compare_bytes(what, got, want, BUF_BYTES) == 0)
        printf("  %s: ok\n", what);
}

int main(void)
{
    CUdevice dev;
    setup_primary_ctx(&dev);
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUdeviceptr buf;
    CHECK(cuMemAlloc(&buf, BUF_BYTES));
    unsigned char *orig = xmalloc(BUF_BYTES), *got = xmalloc(BUF_BYTES),
                  *want = xmalloc(BUF_BYTES);

    const Case cases[] = {
        {1, 3, 1001, 0xC3, 0},
        {1, 1, 1, 0x7E, 0},
        {1, 4097, (5u << 20) + 3, 0x11, 0},
        {1, 7, 999, 0x3D, 1},
        {1, 2, (3u << 20) + 1, 0xE9, 1},
        {2, 10, 777, 0xBEEF, 0},
        {2, 2, (2u << 20) + 5, 0x1234, 0},
        {2, 6, 4099, 0xA55A, 1},
        {4, 12, 12345, 0xDEADBEEF, 0},
        {4, 4, (1u << 20) + 7, 0x01020304, 0},
        {4, 20, 3, 0xCAFEF00D, 1},
        {4, 8, (1u << 20) + 1, 0x89ABCDEF, 1},
    };
    uint64_t seed = 500;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        const Case *c = &cases[i];
        if (c->offset + c->count * (size_t)c->width > BUF_BYTES)
            DIE("case %zu does not fit the buffer", i);
        run_case(c, buf, s, orig, got, want, ++seed);
    }

    /* The final buffer contents are deterministic: digest them. */
    digest_bytes("last_buffer", got, BUF_BYTES);

    CHECK(cuMemFree(buf));
    CHECK(cuStreamDestroy(s));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(orig);
    free(got);
    free(want);
    return test_finish();
}
