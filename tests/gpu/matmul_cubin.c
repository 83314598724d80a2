/*
 * matmul_cubin: the tiled matmul kernel loaded four ways and checked
 * against a double-precision CPU reference at sizes that are not
 * multiples of the 16x16 tile:
 *   a) cubin image   -> cuModuleLoadData
 *   b) cubin image   -> cuLibraryLoadData + cuLibraryGetKernel + cuKernelGetFunction
 *   c) fatbin image  -> cuModuleLoadFatBinary
 *   d) cubin path    -> cuModuleLoad (the driver reads the file)
 *
 * usage: matmul_cubin KERNELS.cubin KERNELS.fatbin
 */
#define TEST_NAME "matmul_cubin"
#include "check.h"

#define TILE 16
#define REL_TOL 1e-3

static void matmul_check(CUfunction f, int M, int N, int K, uint64_t seed, const char *label,
                         int emit_digest)
{
    size_t a_n = (size_t)M * K, b_n = (size_t)K * N, c_n = (size_t)M * N;
    float *ha = xmalloc(a_n * sizeof(float));
    float *hb = xmalloc(b_n * sizeof(float));
    float *hc = xmalloc(c_n * sizeof(float));
    double *want = xmalloc(c_n * sizeof(double));
    double *scale = xmalloc(c_n * sizeof(double));
    fill_random_f32(ha, a_n, seed);
    fill_random_f32(hb, b_n, seed ^ 0xABCDEFull);

    for (int i = 0; i < M; ++i) {
        for (int j = 0; j < N; ++j) {
            double acc = 0.0, mag = 0.0;
            for (int k = 0; k < K; ++k) {
                double p = (double)ha[(size_t)i * K + k] * (double)hb[(size_t)k * N + j];
                acc += p;
                mag += fabs(p);
            }
            want[(size_t)i * N + j] = acc;
            scale[(size_t)i * N + j] = mag;
        }
    }

    CUdeviceptr da, db, dc;
    CHECK(cuMemAlloc(&da, a_n * sizeof(float)));
    CHECK(cuMemAlloc(&db, b_n * sizeof(float)));
    CHECK(cuMemAlloc(&dc, c_n * sizeof(float)));
    CHECK(cuMemcpyHtoD(da, ha, a_n * sizeof(float)));
    CHECK(cuMemcpyHtoD(db, hb, b_n * sizeof(float)));
    CHECK(cuMemsetD32(dc, POISON_F32_BITS, c_n));

    void *params[] = {&da, &db, &dc, &M, &N, &K};
    CHECK(cuLaunchKernel(f, ceil_div((size_t)N, TILE), ceil_div((size_t)M, TILE), 1, TILE, TILE,
                         1, 0, NULL, params, NULL));
    poison_host(hc, c_n * sizeof(float));
    CHECK(cuMemcpyDtoH(hc, dc, c_n * sizeof(float)));

    char what[128];
    snprintf(what, sizeof what, "%s %dx%d * %dx%d", label, M, K, K, N);
    compare_f32_rel(what, hc, want, scale, c_n, REL_TOL);
    if (emit_digest) {
        snprintf(what, sizeof what, "%s_%dx%dx%d", label, M, N, K);
        digest_bytes(what, hc, c_n * sizeof(float));
    }

    CHECK(cuMemFree(da));
    CHECK(cuMemFree(db));
    CHECK(cuMemFree(dc));
    free(ha);
    free(hb);
    free(hc);
    free(want);
    free(scale);
}

int main(int argc, char **argv)
{
    const char *cubin_path = argc > 1 ? argv[1] : "kernels.cubin";
    const char *fatbin_path = argc > 2 ? argv[2] : "kernels.fatbin";
    CUdevice dev;
    setup_primary_ctx(&dev);

    size_t cubin_len = 0, fatbin_len = 0;
    void *cubin = read_file(cubin_path, &cubin_len);
    void *fatbin = read_file(fatbin_path, &fatbin_len);
    EXPECT(cubin_len > 4 && memcmp(cubin, "\177ELF", 4) == 0, "%s is not an ELF cubin",
           cubin_path);

    /* a) cubin through cuModuleLoadData */
    CUmodule mod;
    CUfunction f_mod;
    CHECK(cuModuleLoadData(&mod, cubin));
    CHECK(cuModuleGetFunction(&f_mod, mod, "matmulTiled"));
    matmul_check(f_mod, 257, 199, 131, 101, "module", 1);
    matmul_check(f_mod, 1, 1, 1, 102, "module", 1);
    matmul_check(f_mod, 33, 64, 17, 103, "module", 1);
    matmul_check(f_mod, 64, 48, 32, 104, "module", 1); /* tile multiples too */

    /* b) cubin through the library API */
    CUlibrary lib;
    CUkernel kern;
    CUfunction f_lib;
    CHECK(cuLibraryLoadData(&lib, cubin, NULL, NULL, 0, NULL, NULL, 0));
    CHECK(cuLibraryGetKernel(&kern, lib, "matmulTiled"));
    CHECK(cuKernelGetFunction(&f_lib, kern));
    CUkernel no_kern = NULL;
    EXPECT_ERROR(cuLibraryGetKernel(&no_kern, lib, "noSuchKernel"),
                 "cuLibraryGetKernel(noSuchKernel)");
    matmul_check(f_lib, 257, 199, 131, 201, "library", 1);

    /* c) fatbin (sm_90 SASS + compute_90 PTX) through cuModuleLoadFatBinary */
    CUmodule fmod;
    CUfunction f_fat;
    CHECK(cuModuleLoadFatBinary(&fmod, fatbin));
    CHECK(cuModuleGetFunction(&f_fat, fmod, "matmulTiled"));
    matmul_check(f_fat, 131, 257, 199, 301, "fatbin", 1);

    /* d) cubin by path through cuModuleLoad */
    CUmodule pmod;
    CUfunction f_path;
    CHECK(cuModuleLoad(&pmod, cubin_path));
    CHECK(cuModuleGetFunction(&f_path, pmod, "matmulTiled"));
    matmul_check(f_path, 100, 3, 300, 401, "path", 1);

    CHECK(cuModuleUnload(mod));
    CHECK(cuLibraryUnload(lib));
    CHECK(cuModuleUnload(fmod));
    CHECK(cuModuleUnload(pmod));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(cubin);
    free(fatbin);
    return test_finish();
}
