/* A CUDA driver-API client for the container test (tests/tests/containers.rs). It finds the
 * driver the way CUDA programs do, dlopen("libcuda.so.1"), so it only works where the
 * container's CDI edits preloaded Baton's shim. It adds two vectors on the GPU, prints the
 * result, says "ready" and stays connected until its standard input closes, so the test can
 * look at the daemon's status meanwhile. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef int CUresult;
typedef unsigned long long CUdeviceptr;
#define N 256

static void *lib;
static void *sym(const char *name) {
    void *f = dlsym(lib, name);
    if (!f) {
        fprintf(stderr, "missing %s\n", name);
        exit(2);
    }
    return f;
}
#define CALL(name, type, ...)                                                   \
    do {                                                                        \
        CUresult r = ((type)sym(#name))(__VA_ARGS__);                           \
        if (r != 0) {                                                           \
            fprintf(stderr, "%s failed: %d\n", #name, r);                       \
            exit(3);                                                            \
        }                                                                       \
    } while (0)

int main(void) {
    lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "no libcuda.so.1: %s\n", dlerror());
        return 1;
    }
    int dev;
    void *ctx, *mod, *fn;
    CUdeviceptr a, b, c;
    float ha[N], hb[N], hc[N];
    for (int i = 0; i < N; i++) {
        ha[i] = (float)i;
        hb[i] = 2.0f * (float)i;
    }
    CALL(cuInit, CUresult (*)(unsigned), 0);
    CALL(cuDeviceGet, CUresult (*)(int *, int), &dev, 0);
    CALL(cuDevicePrimaryCtxRetain, CUresult (*)(void **, int), &ctx, dev);
    CALL(cuCtxSetCurrent, CUresult (*)(void *), ctx);
    CALL(cuModuleLoadData, CUresult (*)(void **, const void *), &mod,
         "//baton-sim\nkernel vecAdd 8 8 8 4\n");
    CALL(cuModuleGetFunction, CUresult (*)(void **, void *, const char *), &fn, mod, "vecAdd");
    CALL(cuMemAlloc_v2, CUresult (*)(CUdeviceptr *, size_t), &a, sizeof ha);
    CALL(cuMemAlloc_v2, CUresult (*)(CUdeviceptr *, size_t), &b, sizeof hb);
    CALL(cuMemAlloc_v2, CUresult (*)(CUdeviceptr *, size_t), &c, sizeof hc);
    CALL(cuMemcpyHtoD_v2, CUresult (*)(CUdeviceptr, const void *, size_t), a, ha, sizeof ha);
    CALL(cuMemcpyHtoD_v2, CUresult (*)(CUdeviceptr, const void *, size_t), b, hb, sizeof hb);
    int n = N;
    void *params[] = {&a, &b, &c, &n};
    CALL(cuLaunchKernel,
         CUresult (*)(void *, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
                      unsigned, void *, void **, void **),
         fn, 1, 1, 1, N, 1, 1, 0, NULL, params, NULL);
    CALL(cuCtxSynchronize, CUresult (*)(void));
    CALL(cuMemcpyDtoH_v2, CUresult (*)(void *, CUdeviceptr, size_t), hc, c, sizeof hc);
    for (int i = 0; i < N; i++) {
        if (hc[i] != 3.0f * (float)i) {
            fprintf(stderr, "c[%d] = %f, expected %f\n", i, hc[i], 3.0f * (float)i);
            return 4;
        }
    }
    printf("vecAdd c[%d] = %.1f pid %d\n", N - 1, hc[N - 1], (int)getpid());
    printf("ready\n");
    fflush(stdout);
    char buf[16];
    while (read(0, buf, sizeof buf) > 0) {
    }
    return 0;
}
