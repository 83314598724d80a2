/*
 * bench_foundation: basic costs of the CUDA driver path, measured the same
 * way natively, under Baton and under MPS (bench/run_foundation.sh runs all
 * three). Driver API only; prints one JSON object per measure and line:
 *     {"measure": "launch_async", "value": 2.1, "unit": "us"}
 * Diagnostics go to stderr.
 *
 * Measures (every value is a median):
 *   launch_async         host time per cuLaunchKernel of an empty kernel,
 *                        20 batches of 5000 launches with no sync inside a
 *                        batch (the sync between batches is not timed)
 *   launch_sync          one launch + cuStreamSynchronize, 10000 rounds
 *   {h2d,d2h}_{pageable,pinned}_{4KiB,1MiB,256MiB}
 *                        synchronous cuMemcpyHtoD / cuMemcpyDtoH from/to
 *                        malloc'd (pageable) or cuMemAllocHost (pinned)
 *                        memory, in GB/s (1e9 bytes per second)
 *
 * usage: bench_foundation BENCH_KERNELS.(cubin|ptx|fatbin)
 */
#include <cuda.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CHECK(call)                                                                          \
    do {                                                                                     \
        CUresult r_ = (call);                                                                \
        if (r_ != CUDA_SUCCESS) {                                                            \
            const char *n_ = NULL;                                                           \
            cuGetErrorName(r_, &n_);                                                         \
            fprintf(stderr, "bench_foundation: %s failed: %s (%d) at line %d\n", #call,      \
                    n_ ? n_ : "?", (int)r_, __LINE__);                                       \
            exit(1);                                                                         \
        }                                                                                    \
    } while (0)

#define ASYNC_BATCHES 20
#define ASYNC_BATCH 5000
#define SYNC_ROUNDS 10000

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Sorts v in place and returns its median. */
static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof v[0], cmp_double);
    return (n % 2) ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void emit(const char *measure, double value, const char *unit)
{
    printf("{\"measure\": \"%s\", \"value\": %.6g, \"unit\": \"%s\"}\n", measure, value, unit);
    fflush(stdout);
}

static void *read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "bench_foundation: cannot open %s\n", path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)len + 1);
    if (!buf || len <= 0 || fread(buf, 1, (size_t)len, f) != (size_t)len) {
        fprintf(stderr, "bench_foundation: cannot read %s\n", path);
        exit(1);
    }
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static void bench_launch_async(CUfunction f, CUstream s)
{
    double per_launch_us[ASYNC_BATCHES];
    for (int i = 0; i < 2000; ++i) /* warm-up */
        CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, NULL, NULL));
    CHECK(cuStreamSynchronize(s));
    for (int b = 0; b < ASYNC_BATCHES; ++b) {
        double t0 = now_s();
        for (int i = 0; i < ASYNC_BATCH; ++i)
            CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, NULL, NULL));
        double t1 = now_s();
        CHECK(cuStreamSynchronize(s)); /* not timed */
        per_launch_us[b] = (t1 - t0) * 1e6 / ASYNC_BATCH;
    }
    emit("launch_async", median(per_launch_us, ASYNC_BATCHES), "us");
    fprintf(stderr, "launch_async: min %.3f max %.3f us\n", per_launch_us[0],
            per_launch_us[ASYNC_BATCHES - 1]);
}

static void bench_launch_sync(CUfunction f, CUstream s)
{
    static double us[SYNC_ROUNDS];
    for (int i = 0; i < 1000; ++i) { /* warm-up */
        CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, NULL, NULL));
        CHECK(cuStreamSynchronize(s));
    }
    for (int i = 0; i < SYNC_ROUNDS; ++i) {
        double t0 = now_s();
        CHECK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, s, NULL, NULL));
        CHECK(cuStreamSynchronize(s));
        us[i] = (now_s() - t0) * 1e6;
    }
    emit("launch_sync", median(us, SYNC_ROUNDS), "us");
    fprintf(stderr, "launch_sync: p10 %.3f p90 %.3f us\n", us[SYNC_ROUNDS / 10],
            us[SYNC_ROUNDS * 9 / 10]);
}

static void bench_copies(void)
{
    static const struct {
        size_t bytes;
        const char *label;
        int warm, reps;
    } sizes[] = {
        {4096, "4KiB", 100, 2000},
        {1u << 20, "1MiB", 20, 500},
        {256u << 20, "256MiB", 5, 20},
    };
    const size_t max_bytes = 256u << 20;
    void *pageable = malloc(max_bytes), *pinned = NULL;
    if (!pageable) {
        fprintf(stderr, "bench_foundation: malloc failed\n");
        exit(1);
    }
    memset(pageable, 0x5A, max_bytes); /* fault the pages in before timing */
    CHECK(cuMemAllocHost(&pinned, max_bytes));
    memset(pinned, 0x5A, max_bytes);
    CUdeviceptr dev;
    CHECK(cuMemAlloc(&dev, max_bytes));
    CHECK(cuMemsetD8(dev, 0x3C, max_bytes));
    CHECK(cuCtxSynchronize());

    static double t[2000];
    for (int dir = 0; dir < 2; ++dir) {
        for (int kind = 0; kind < 2; ++kind) {
            void *host = kind ? pinned : pageable;
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; ++si) {
                size_t n = sizes[si].bytes;
                int reps = sizes[si].reps;
                for (int i = 0; i < sizes[si].warm + reps; ++i) {
                    double t0 = now_s();
                    if (dir == 0)
                        CHECK(cuMemcpyHtoD(dev, host, n));
                    else
                        CHECK(cuMemcpyDtoH(host, dev, n));
                    double dt = now_s() - t0;
                    if (i >= sizes[si].warm)
                        t[i - sizes[si].warm] = dt;
                }
                double med = median(t, reps);
                char name[64];
                snprintf(name, sizeof name, "%s_%s_%s", dir == 0 ? "h2d" : "d2h",
                         kind ? "pinned" : "pageable", sizes[si].label);
                emit(name, (double)n / med / 1e9, "GB/s");
            }
        }
    }
    CHECK(cuMemFree(dev));
    CHECK(cuMemFreeHost(pinned));
    free(pageable);
}

int main(int argc, char **argv)
{
    const char *mod_path = argc > 1 ? argv[1] : "bench_kernels.cubin";
    CUdevice dev;
    CUcontext ctx;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    char name[256] = {0};
    int drv = 0;
    CHECK(cuDeviceGetName(name, (int)sizeof name - 1, dev));
    CHECK(cuDriverGetVersion(&drv));
    fprintf(stderr, "bench_foundation on %s, driver API %d\n", name, drv);

    void *image = read_file(mod_path);
    CUmodule mod;
    CUfunction f;
    CHECK(cuModuleLoadData(&mod, image));
    CHECK(cuModuleGetFunction(&f, mod, "empty"));
    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));

    double t0 = now_s();
    bench_launch_async(f, s);
    bench_launch_sync(f, s);
    bench_copies();
    fprintf(stderr, "bench_foundation: done in %.1f s\n", now_s() - t0);

    CHECK(cuStreamDestroy(s));
    CHECK(cuModuleUnload(mod));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(image);
    return 0;
}
