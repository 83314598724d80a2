/*
 * vecadd_ptx: PTX text through cuModuleLoadData and cuModuleLoadDataEx
 * (with JIT log buffers), then vecAdd from each module checked bit-exactly
 * against the CPU.
 *
 * usage: vecadd_ptx KERNELS.ptx
 */
#define TEST_NAME "vecadd_ptx"
#include "check.h"

#include <unistd.h>

#define LOG_BYTES 16384

/* Runs c = a + b for n elements with function f and checks it bit-exactly. */
static void run_vecadd(CUfunction f, int n, uint64_t seed, const char *label)
{
    size_t bytes = (size_t)n * sizeof(float);
    float *ha = xmalloc(bytes), *hb = xmalloc(bytes), *hc = xmalloc(bytes),
          *want = xmalloc(bytes);
    fill_random_f32(ha, (size_t)n, seed);
    fill_random_f32(hb, (size_t)n, seed * 31 + 7);
    for (int i = 0; i < n; ++i)
        want[i] = ha[i] + hb[i];

    CUdeviceptr da, db, dc;
    CHECK(cuMemAlloc(&da, bytes));
    CHECK(cuMemAlloc(&db, bytes));
    CHECK(cuMemAlloc(&dc, bytes));
    CHECK(cuMemcpyHtoD(da, ha, bytes));
    CHECK(cuMemcpyHtoD(db, hb, bytes));
    CHECK(cuMemsetD32(dc, POISON_F32_BITS, (size_t)n)); /* poison the output */

    void *params[] = {&da, &db, &dc, &n};
    unsigned int block = 256;
    unsigned int grid = ceil_div((size_t)n, block);
    CHECK(cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, NULL, params, NULL));
    poison_host(hc, bytes);
    CHECK(cuMemcpyDtoH(hc, dc, bytes));

    char what[96];
    snprintf(what, sizeof what, "%s vecAdd n=%d", label, n);
    if (compare_f32_exact(what, hc, want, (size_t)n) == 0)
        printf("  %s: ok\n", what);
    snprintf(what, sizeof what, "%s_n%d", label, n);
    digest_bytes(what, hc, bytes);

    CHECK(cuMemFree(da));
    CHECK(cuMemFree(db));
    CHECK(cuMemFree(dc));
    free(ha);
    free(hb);
    free(hc);
    free(want);
}

int main(int argc, char **argv)
{
    const char *ptx_path = argc > 1 ? argv[1] : "kernels.ptx";
    CUdevice dev;
    setup_primary_ctx(&dev);

    size_t ptx_len = 0;
    char *ptx = read_file(ptx_path, &ptx_len);
    EXPECT(strstr(ptx, ".entry vecAdd") != NULL, "%s does not look like PTX with vecAdd", ptx_path);

    /* 1. Plain cuModuleLoadData on the PTX text (JIT by the driver). */
    CUmodule plain;
    CUfunction f_plain;
    CHECK(cuModuleLoadData(&plain, ptx));
    CHECK(cuModuleGetFunction(&f_plain, plain, "vecAdd"));
    CUfunction missing = NULL;
    EXPECT_ERROR(cuModuleGetFunction(&missing, plain, "noSuchKernel"),
                 "cuModuleGetFunction(noSuchKernel)");

    /* 2. cuModuleLoadDataEx with info/error log buffers and verbose JIT.
     * The driver caches JIT results (in memory and on disk), and a cache hit
     * writes no info log. So the log is checked on a small probe kernel
     * whose entry name is unique to this process, which must really be
     * compiled; it is also run, to show the module works. */
    static char info_log[LOG_BYTES], error_log[LOG_BYTES];
    char probe_name[64], probe_ptx[1024];
    snprintf(probe_name, sizeof probe_name, "jitProbe_%ld_%llx", (long)getpid(),
             (unsigned long long)(now_seconds() * 1e9));
    snprintf(probe_ptx, sizeof probe_ptx,
             ".version 8.0\n.target sm_90\n.address_size 64\n"
             ".visible .entry %s(.param .u64 out)\n{\n"
             "\t.reg .b64 %%rd<3>;\n\t.reg .b32 %%r<2>;\n"
             "\tld.param.u64 %%rd1, [out];\n\tcvta.to.global.u64 %%rd2, %%rd1;\n"
             "\tmov.u32 %%r1, 424242;\n\tst.global.u32 [%%rd2], %%r1;\n\tret;\n}\n",
             probe_name);
    poison_host(info_log, sizeof info_log);
    info_log[0] = '\0';
    poison_host(error_log, sizeof error_log);
    error_log[0] = '\0';
    CUjit_option opts[] = {CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES,
                           CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
                           CU_JIT_LOG_VERBOSE};
    void *vals[] = {info_log, (void *)(uintptr_t)LOG_BYTES, error_log,
                    (void *)(uintptr_t)LOG_BYTES, (void *)(uintptr_t)1};
    CUmodule probe_mod;
    CUfunction f_probe;
    CHECK(cuModuleLoadDataEx(&probe_mod, probe_ptx, 5, opts, vals));
    size_t info_used = (size_t)(uintptr_t)vals[1];
    printf("  JIT info log for %s (%zu bytes reported):\n%s\n", probe_name, info_used, info_log);
    EXPECT(memchr(info_log, '\0', LOG_BYTES) != NULL, "JIT info log is not NUL-terminated");
    EXPECT(strlen(info_log) > 0, "verbose JIT info log is empty");
    EXPECT(strstr(info_log, probe_name) != NULL, "verbose JIT info log does not name %s",
           probe_name);
    EXPECT(info_used > 0 && info_used <= LOG_BYTES,
           "CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES not updated to the used size (%zu)", info_used);
    CHECK(cuModuleGetFunction(&f_probe, probe_mod, probe_name));
    {
        CUdeviceptr dout;
        unsigned int got = 0;
        CHECK(cuMemAlloc(&dout, sizeof got));
        CHECK(cuMemsetD32(dout, 0, 1));
        void *pp[] = {&dout};
        CHECK(cuLaunchKernel(f_probe, 1, 1, 1, 1, 1, 1, 0, NULL, pp, NULL));
        CHECK(cuMemcpyDtoH(&got, dout, sizeof got));
        EXPECT(got == 424242, "JIT probe kernel wrote %u, expected 424242", got);
        CHECK(cuMemFree(dout));
    }
    CHECK(cuModuleUnload(probe_mod));

    /* The kernels' PTX through cuModuleLoadDataEx with the same options
     * (its info log may be empty: the text was compiled above already). */
    poison_host(info_log, sizeof info_log);
    info_log[0] = '\0';
    vals[1] = (void *)(uintptr_t)LOG_BYTES;
    vals[3] = (void *)(uintptr_t)LOG_BYTES;
    CUmodule ex;
    CUfunction f_ex;
    CHECK(cuModuleLoadDataEx(&ex, ptx, 5, opts, vals));
    info_used = (size_t)(uintptr_t)vals[1];
    EXPECT(memchr(info_log, '\0', LOG_BYTES) != NULL && info_used <= LOG_BYTES,
           "kernels.ptx info log: not NUL-terminated or size %zu out of range", info_used);
    CHECK(cuModuleGetFunction(&f_ex, ex, "vecAdd"));

    /* 3. Broken PTX must fail, and the error log must say something. */
    const char *broken =
        ".version 8.0\n.target sm_90\n.address_size 64\n"
        ".visible .entry broken()\n{\n\tthis_is_not_an_instruction;\n\tret;\n}\n";
    char bad_log[LOG_BYTES];
    bad_log[0] = '\0';
    CUjit_option bopts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *bvals[] = {bad_log, (void *)(uintptr_t)LOG_BYTES};
    CUmodule bad_mod = NULL;
    EXPECT_ERROR(cuModuleLoadDataEx(&bad_mod, broken, 2, bopts, bvals),
                 "cuModuleLoadDataEx(broken PTX)");
    printf("  JIT error log for broken PTX: %s\n", bad_log);
    EXPECT(strlen(bad_log) > 0, "error log for broken PTX is empty");

    /* 4. Run vecAdd from both modules at odd sizes. */
    run_vecadd(f_plain, 1, 11, "loaddata");
    run_vecadd(f_plain, (1 << 20) + 3, 12, "loaddata");
    run_vecadd(f_ex, 1000003, 13, "loaddataex");

    CHECK(cuModuleUnload(plain));
    CHECK(cuModuleUnload(ex));
    CHECK(cuCtxSynchronize());
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(ptx);
    return test_finish();
}
