/*
 * threads8: one process, 8 threads, each with its own stream and buffers,
 * each enqueueing ITERS rounds of
 *     HtoDAsync(b <- round's input), vecAdd(a, b, c[round]), DtoHAsync(c[round])
 * without synchronising in between. The b buffer is reused every round, so
 * any reordering inside a stream corrupts results. After one
 * cuStreamSynchronize per thread, all 8 * ITERS results are checked
 * bit-exactly.
 *
 * usage: threads8 KERNELS.(cubin|fatbin|ptx) [iterations]
 */
#define TEST_NAME "threads8"
#include "check.h"

#include <pthread.h>

#define THREADS 8
#define DEFAULT_ITERS 2000

typedef struct Worker {
    int id;
    int n;
    int iters;
    CUcontext ctx;
    CUfunction f_add;
    uint64_t digest;
    size_t bad;
    double seconds;
} Worker;

static void *worker_main(void *arg)
{
    Worker *w = (Worker *)arg;
    const int n = w->n, iters = w->iters;
    const size_t vec = (size_t)n * sizeof(float);
    const size_t all = vec * (size_t)iters;

    /* A new thread has no current context: bind the primary one. */
    CHECK(cuCtxSetCurrent(w->ctx));
    CUcontext cur = NULL;
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == w->ctx, "thread %d: cuCtxGetCurrent returned another context", w->id);

    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    float *ha, *hb_all, *hc_all;
    CHECK(cuMemAllocHost((void **)&ha, vec));
    CHECK(cuMemAllocHost((void **)&hb_all, all));
    CHECK(cuMemAllocHost((void **)&hc_all, all));
    fill_random_f32(ha, (size_t)n, 7000 + (uint64_t)w->id);
    fill_random_f32(hb_all, (size_t)n * iters, 8000 + (uint64_t)w->id);
    poison_host(hc_all, all);

    CUdeviceptr da, db, dc_all;
    CHECK(cuMemAlloc(&da, vec));
    CHECK(cuMemAlloc(&db, vec));
    CHECK(cuMemAlloc(&dc_all, all));
    CHECK(cuMemsetD32Async(dc_all, POISON_F32_BITS, (size_t)n * iters, s));
    CHECK(cuMemcpyHtoDAsync(da, ha, vec, s));

    double t0 = now_seconds();
    int nn = n;
    for (int it = 0; it < iters; ++it) {
        CUdeviceptr dc = dc_all + (CUdeviceptr)it * vec;
        void *params[] = {&da, &db, &dc, &nn};
        CHECK(cuMemcpyHtoDAsync(db, hb_all + (size_t)it * n, vec, s));
        CHECK(cuLaunchKernel(w->f_add, ceil_div((size_t)n, 128), 1, 1, 128, 1, 1, 0, s, params,
                             NULL));
        CHECK(cuMemcpyDtoHAsync(hc_all + (size_t)it * n, dc, vec, s));
    }
    CHECK(cuStreamSynchronize(s));
    w->seconds = now_seconds() - t0;

    size_t bad = 0;
    for (int it = 0; it < iters; ++it) {
        const float *b = hb_all + (size_t)it * n, *c = hc_all + (size_t)it * n;
        for (int i = 0; i < n; ++i) {
            float want = ha[i] + b[i];
            if (memcmp(&c[i], &want, sizeof want) != 0) {
                if (bad < 3)
                    printf("    thread %d round %d [%d]: got %.9g want %.9g\n", w->id, it, i,
                           (double)c[i], (double)want);
                ++bad;
            }
        }
    }
    w->bad = bad;
    w->digest = fnv1a64(hc_all, all, FNV_INIT);
    EXPECT(bad == 0, "thread %d: %zu of %zu results wrong", w->id, bad, (size_t)n * iters);

    CHECK(cuMemFree(da));
    CHECK(cuMemFree(db));
    CHECK(cuMemFree(dc_all));
    CHECK(cuMemFreeHost(ha));
    CHECK(cuMemFreeHost(hb_all));
    CHECK(cuMemFreeHost(hc_all));
    CHECK(cuStreamDestroy(s));
    return NULL;
}

int main(int argc, char **argv)
{
    const char *mod_path = argc > 1 ? argv[1] : "kernels.cubin";
    int iters = argc > 2 ? atoi(argv[2]) : DEFAULT_ITERS;
    if (iters <= 0)
        DIE("bad iteration count");
    CUdevice dev;
    CUcontext ctx = setup_primary_ctx(&dev);
    CUmodule mod;
    CUfunction f_add;
    void *image = read_file(mod_path, NULL);
    CHECK(cuModuleLoadData(&mod, image));
    CHECK(cuModuleGetFunction(&f_add, mod, "vecAdd"));

    Worker w[THREADS];
    pthread_t tid[THREADS];
    double t0 = now_seconds();
    for (int i = 0; i < THREADS; ++i) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].id = i;
        w[i].n = 1000 + 37 * i; /* different, mostly odd sizes per thread */
        w[i].iters = iters;
        w[i].ctx = ctx;
        w[i].f_add = f_add;
        if (pthread_create(&tid[i], NULL, worker_main, &w[i]) != 0)
            DIE("pthread_create failed");
    }
    for (int i = 0; i < THREADS; ++i)
        if (pthread_join(tid[i], NULL) != 0)
            DIE("pthread_join failed");
    double total = now_seconds() - t0;

    for (int i = 0; i < THREADS; ++i) {
        printf("  thread %d: n=%d, %d rounds in %.3f s, %zu wrong\n", i, w[i].n, iters,
               w[i].seconds, w[i].bad);
        char key[32];
        snprintf(key, sizeof key, "thread%d", i);
        printf("DIGEST %s %016llx\n", key, (unsigned long long)w[i].digest);
    }
    printf("  all threads: %.3f s (%d launches + %d copies)\n", total, THREADS * iters,
           2 * THREADS * iters);

    CHECK(cuModuleUnload(mod));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(image);
    return test_finish();
}
