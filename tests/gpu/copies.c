/*
 * copies: every copy direction, synchronous and asynchronous, from and to
 * pageable and pinned host memory, at awkward sizes; plus zero-copy access
 * to mapped pinned memory from kernels, cuMemGetInfo and
 * cuMemGetAddressRange.
 *
 * For each size and host-memory kind, four chains move fresh random data
 * host -> d1 -> d2 -> host; d1 is poisoned before the last leg so the data
 * must really have gone through d2, and the destination is poisoned first.
 *
 * usage: copies KERNELS.(cubin|fatbin|ptx)
 */
#define TEST_NAME "copies"
#include "check.h"

enum HostKind { HOST_PAGEABLE, HOST_ALLOC_0, HOST_ALLOC_DEVICEMAP, HOST_ALLOC_HOST, HOST_KINDS };
static const char *host_kind_name[HOST_KINDS] = {"pageable(malloc)", "cuMemHostAlloc(0)",
                                                 "cuMemHostAlloc(DEVICEMAP)", "cuMemAllocHost"};

static void *host_alloc(enum HostKind kind, size_t bytes)
{
    void *p = NULL;
    switch (kind) {
    case HOST_PAGEABLE:
        p = xmalloc(bytes);
        break;
    case HOST_ALLOC_0:
        CHECK(cuMemHostAlloc(&p, bytes, 0));
        break;
    case HOST_ALLOC_DEVICEMAP:
        CHECK(cuMemHostAlloc(&p, bytes, CU_MEMHOSTALLOC_DEVICEMAP));
        break;
    case HOST_ALLOC_HOST:
        CHECK(cuMemAllocHost(&p, bytes));
        break;
    default:
        DIE("bad host kind");
    }
    return p;
}

static void host_free(enum HostKind kind, void *p)
{
    if (kind == HOST_PAGEABLE)
        free(p);
    else
        CHECK(cuMemFreeHost(p));
}

enum Chain { CHAIN_SYNC, CHAIN_ASYNC, CHAIN_UNIFIED, CHAIN_UNIFIED_ASYNC, CHAINS };
static const char *chain_name[CHAINS] = {"HtoD/DtoD/DtoH", "HtoDAsync/DtoDAsync/DtoHAsync",
                                         "cuMemcpy", "cuMemcpyAsync"};

static void run_chain(enum Chain chain, CUstream s, CUdeviceptr d1, CUdeviceptr d2, void *src,
                      void *dst, size_t bytes)
{
    CUdeviceptr hsrc = (CUdeviceptr)(uintptr_t)src, hdst = (CUdeviceptr)(uintptr_t)dst;
    CHECK(cuMemsetD8(d1, POISON_DEV_BYTE, bytes));
    CHECK(cuMemsetD8(d2, POISON_DEV_BYTE, bytes));
    switch (chain) {
    case CHAIN_SYNC:
        CHECK(cuMemcpyHtoD(d1, src, bytes));
        CHECK(cuMemcpyDtoD(d2, d1, bytes));
        CHECK(cuMemsetD8(d1, POISON_DEV_BYTE, bytes));
        CHECK(cuMemcpyDtoH(dst, d2, bytes));
        break;
    case CHAIN_ASYNC:
        CHECK(cuMemcpyHtoDAsync(d1, src, bytes, s));
        CHECK(cuMemcpyDtoDAsync(d2, d1, bytes, s));
        CHECK(cuMemsetD8Async(d1, POISON_DEV_BYTE, bytes, s));
        CHECK(cuMemcpyDtoHAsync(dst, d2, bytes, s));
        CHECK(cuStreamSynchronize(s));
        break;
    case CHAIN_UNIFIED:
        CHECK(cuMemcpy(d1, hsrc, bytes));
        CHECK(cuMemcpy(d2, d1, bytes));
        CHECK(cuMemsetD8(d1, POISON_DEV_BYTE, bytes));
        CHECK(cuMemcpy(hdst, d2, bytes));
        break;
    case CHAIN_UNIFIED_ASYNC:
        CHECK(cuMemcpyAsync(d1, hsrc, bytes, s));
        CHECK(cuMemcpyAsync(d2, d1, bytes, s));
        CHECK(cuMemsetD8Async(d1, POISON_DEV_BYTE, bytes, s));
        CHECK(cuMemcpyAsync(hdst, d2, bytes, s));
        CHECK(cuStreamSynchronize(s));
        break;
    default:
        DIE("bad chain");
    }
}

/* A kernel writes straight into mapped pinned host memory. */
static void devicemap_kernel_write(CUfunction f_fill)
{
    const int n = (1 << 20) + 11;
    size_t bytes = (size_t)n * 4;
    uint32_t *host;
    CUdeviceptr dptr;
    CHECK(cuMemHostAlloc((void **)&host, bytes, CU_MEMHOSTALLOC_DEVICEMAP));
    CHECK(cuMemHostGetDevicePointer(&dptr, host, 0));
    poison_host(host, bytes);
    unsigned int v = 0x3C000001u;
    int count = n;
    void *params[] = {&dptr, &v, &count};
    CHECK(cuLaunchKernel(f_fill, 120, 1, 1, 256, 1, 1, 0, NULL, params, NULL));
    CHECK(cuCtxSynchronize());
    size_t bad = 0;
    for (int i = 0; i < n; ++i)
        if (host[i] != v + (uint32_t)i) {
            if (bad < 5)
                printf("    mapped[%d]: got 0x%08x want 0x%08x\n", i, host[i], v + (uint32_t)i);
            ++bad;
        }
    EXPECT(bad == 0, "fill through cuMemHostGetDevicePointer: %zu of %d words wrong", bad, n);
    if (bad == 0)
        printf("  kernel write into mapped pinned memory: ok\n");
    digest_bytes("devicemap_fill", host, bytes);
    CHECK(cuMemFreeHost(host));
}

/* A kernel reads its inputs from mapped pinned host memory. */
static void devicemap_kernel_read(CUfunction f_add)
{
    int n = 300007;
    size_t bytes = (size_t)n * sizeof(float);
    float *ha, *hb;
    CUdeviceptr da, db, dc;
    CHECK(cuMemHostAlloc((void **)&ha, bytes, CU_MEMHOSTALLOC_DEVICEMAP));
    CHECK(cuMemHostAlloc((void **)&hb, bytes, CU_MEMHOSTALLOC_DEVICEMAP));
    fill_random_f32(ha, (size_t)n, 77);
    fill_random_f32(hb, (size_t)n, 78);
    CHECK(cuMemHostGetDevicePointer(&da, ha, 0));
    CHECK(cuMemHostGetDevicePointer(&db, hb, 0));
    CHECK(cuMemAlloc(&dc, bytes));
    CHECK(cuMemsetD32(dc, POISON_F32_BITS, (size_t)n));
    void *params[] = {&da, &db, &dc, &n};
    CHECK(cuLaunchKernel(f_add, ceil_div((size_t)n, 256), 1, 1, 256, 1, 1, 0, NULL, params, NULL));
    float *got = xmalloc(bytes), *want = xmalloc(bytes);
    for (int i = 0; i < n; ++i)
        want[i] = ha[i] + hb[i];
    poison_host(got, bytes);
    CHECK(cuMemcpyDtoH(got, dc, bytes));
    if (compare_f32_exact("vecAdd reading mapped pinned inputs", got, want, (size_t)n) == 0)
        printf("  kernel read from mapped pinned memory: ok\n");
    CHECK(cuMemFree(dc));
    CHECK(cuMemFreeHost(ha));
    CHECK(cuMemFreeHost(hb));
    free(got);
    free(want);
}

int main(int argc, char **argv)
{
    const char *mod_path = argc > 1 ? argv[1] : "kernels.cubin";
    CUdevice dev;
    setup_primary_ctx(&dev);
    CUmodule mod;
    CUfunction f_fill, f_add;
    void *image = read_file(mod_path, NULL);
    CHECK(cuModuleLoadData(&mod, image));
    CHECK(cuModuleGetFunction(&f_fill, mod, "fill"));
    CHECK(cuModuleGetFunction(&f_add, mod, "vecAdd"));
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));

    /* 1. Chains over all sizes, host kinds and copy styles. */
    const size_t sizes[] = {1, 4096 + 3, 1 << 20, (64u << 20) + 17};
    uint64_t seed = 1000;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
        size_t bytes = sizes[si];
        CUdeviceptr d1, d2;
        CHECK(cuMemAlloc(&d1, bytes));
        CHECK(cuMemAlloc(&d2, bytes));
        for (int k = 0; k < HOST_KINDS; ++k) {
            void *src = host_alloc((enum HostKind)k, bytes);
            void *dst = host_alloc((enum HostKind)k, bytes);
            for (int c = 0; c < CHAINS; ++c) {
                fill_random_bytes(src, bytes, ++seed);
                poison_host(dst, bytes);
                run_chain((enum Chain)c, s, d1, d2, src, dst, bytes);
                char what[160];
                snprintf(what, sizeof what, "%zu B, %s, %s", bytes, host_kind_name[k],
                         chain_name[c]);
                if (compare_bytes(what, dst, src, bytes) == 0)
                    printf("  %s: ok\n", what);
            }
            host_free((enum HostKind)k, src);
            host_free((enum HostKind)k, dst);
        }
        CHECK(cuMemFree(d1));
        CHECK(cuMemFree(d2));
    }

    /* 2. Unaligned offsets on both sides. */
    {
        const size_t len = 4099, cap = 8192;
        unsigned char *src = xmalloc(cap), *dst = xmalloc(cap);
        CUdeviceptr d1, d2;
        CHECK(cuMemAlloc(&d1, cap));
        CHECK(cuMemAlloc(&d2, cap));
        CHECK(cuMemsetD8(d2, POISON_DEV_BYTE, cap));
        fill_random_bytes(src, cap, 4242);
        poison_host(dst, cap);
        CHECK(cuMemcpyHtoD(d1 + 5, src + 1, len));
        CHECK(cuMemcpyDtoD(d2 + 7, d1 + 5, len));
        CHECK(cuMemcpyDtoH(dst + 3, d2 + 7, len));
        if (compare_bytes("odd offsets host+1 -> d1+5 -> d2+7 -> host+3", dst + 3, src + 1, len) ==
            0)
            printf("  odd offsets: ok\n");
        /* bytes around the copied range must be untouched */
        unsigned char guard[3];
        memset(guard, (int)POISON_BYTE, sizeof guard);
        compare_bytes("bytes before the odd-offset destination", dst, guard, 3);
        EXPECT(dst[3 + len] == POISON_BYTE, "byte after the odd-offset destination was written");
        unsigned char around[2];
        CHECK(cuMemcpyDtoH(&around[0], d2 + 6, 1));
        CHECK(cuMemcpyDtoH(&around[1], d2 + 7 + len, 1));
        EXPECT(around[0] == POISON_DEV_BYTE && around[1] == POISON_DEV_BYTE,
               "DtoD wrote outside [d2+7, d2+7+%zu): 0x%02x 0x%02x", len, around[0], around[1]);
        CHECK(cuMemFree(d1));
        CHECK(cuMemFree(d2));
        free(src);
        free(dst);
    }

    /* 3. Zero-copy: kernels writing to and reading from mapped pinned memory. */
    devicemap_kernel_write(f_fill);
    devicemap_kernel_read(f_add);

    /* 4. cuMemGetInfo and cuMemGetAddressRange. */
    {
        size_t free_b = 0, total_b = 0;
        CHECK(cuMemGetInfo(&free_b, &total_b));
        printf("  cuMemGetInfo: free %zu total %zu\n", free_b, total_b);
        EXPECT(total_b > 0, "cuMemGetInfo total is 0");
        EXPECT(free_b > 0 && free_b <= total_b, "cuMemGetInfo free %zu not in (0, total %zu]",
               free_b, total_b);

        const size_t alloc = 1 << 20;
        CUdeviceptr d, base = 0;
        size_t range = 0;
        CHECK(cuMemAlloc(&d, alloc));
        CHECK(cuMemGetAddressRange(&base, &range, d + 12345));
        printf("  cuMemGetAddressRange(d+12345): base %s d, size %zu\n", base == d ? "==" : "!=",
               range);
        EXPECT(base == d, "cuMemGetAddressRange base 0x%llx != allocation 0x%llx",
               (unsigned long long)base, (unsigned long long)d);
        EXPECT(range >= alloc && range < alloc + (2u << 20),
               "cuMemGetAddressRange size %zu for a %zu-byte allocation", range, alloc);
        digest_int("address_range_size", (long long)range);
        CHECK(cuMemFree(d));
    }

    CHECK(cuStreamDestroy(s));
    CHECK(cuModuleUnload(mod));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(image);
    return test_finish();
}
