/*
 * context_fault: one role of the kernel-fault test (run.sh's context_fault).
 *
 *   context_fault faulter KERNELS.ptx
 *       launches wildWrite through an invalid address: cuCtxSynchronize must
 *       fail with CUDA_ERROR_ILLEGAL_ADDRESS, and a later call must fail too
 *       (the error is sticky).
 *   context_fault worker KERNELS.ptx STOPFILE expect-error|expect-ok
 *       prints READY, then launches addU32 and synchronises in a loop until a
 *       call fails or STOPFILE exists (at most 60 s). With expect-error (under
 *       Baton, where every tenant shares one context) a call must fail with a
 *       context-ending error and later calls with the same one; with expect-ok
 *       (natively, a context of its own) no call may fail, and the counts it
 *       added must be right.
 *   context_fault after KERNELS.ptx
 *       a fresh client started after the fault: fill + addU32 + read back.
 */
#define TEST_NAME "context_fault"
#include "check.h"

#include <unistd.h>

static CUfunction get(CUmodule m, const char *name)
{
    CUfunction f;
    CHECK(cuModuleGetFunction(&f, m, name));
    return f;
}

static int is_context_ending(CUresult r)
{
    switch ((int)r) {
    case 700: case 702: case 710: case 714: case 715:
    case 716: case 717: case 718: case 719:
        return 1;
    default:
        return 0;
    }
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static void faulter(CUmodule m)
{
    CUfunction wild = get(m, "wildWrite");
    /* Far outside anything mapped in the GPU's address space. */
    CUdeviceptr bad = (CUdeviceptr)0x10;
    void *params[] = {&bad};
    CHECK(cuLaunchKernel(wild, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
    CUresult r = cuCtxSynchronize();
    printf("  faulting kernel: cuCtxSynchronize -> %s (%d)\n", cu_err_name(r), (int)r);
    EXPECT(r == CUDA_ERROR_ILLEGAL_ADDRESS, "expected CUDA_ERROR_ILLEGAL_ADDRESS, got %s (%d)",
           cu_err_name(r), (int)r);
    CUdeviceptr p;
    CUresult again = cuMemAlloc(&p, 64);
    printf("  later cuMemAlloc -> %s (%d)\n", cu_err_name(again), (int)again);
    EXPECT(again == r, "the error is not sticky: cuMemAlloc returned %s (%d)", cu_err_name(again),
           (int)again);
}

static void worker(CUmodule m, const char *stop, int expect_error)
{
    CUfunction add = get(m, "addU32");
    const int n = 1 << 16;
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, (size_t)n * 4));
    CHECK(cuMemsetD32(d, 0, (size_t)n));
    printf("READY\n");
    fflush(stdout);
    unsigned int v = 1;
    void *params[] = {&d, &v, (void *)&n};
    long rounds = 0;
    CUresult r = CUDA_SUCCESS;
    double deadline = now_s() + 60.0;
    while (now_s() < deadline && access(stop, F_OK) != 0) {
        r = cuLaunchKernel(add, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, params, NULL);
        if (r == CUDA_SUCCESS)
            r = cuCtxSynchronize();
        if (r != CUDA_SUCCESS)
            break;
        ++rounds;
        usleep(2000);
    }
    printf("  worker: %ld rounds, last result %s (%d)\n", rounds, cu_err_name(r), (int)r);
    if (expect_error) {
        EXPECT(is_context_ending(r), "expected a context-ending error, got %s (%d)",
               cu_err_name(r), (int)r);
        CUdeviceptr p;
        CUresult again = cuMemAlloc(&p, 64);
        printf("  worker: later cuMemAlloc -> %s (%d)\n", cu_err_name(again), (int)again);
        EXPECT(again == r, "the error is not sticky: cuMemAlloc returned %s (%d)",
               cu_err_name(again), (int)again);
        return;
    }
    EXPECT(r == CUDA_SUCCESS, "a call failed: %s (%d)", cu_err_name(r), (int)r);
    EXPECT(rounds > 0, "no round completed");
    unsigned int first = 0;
    CHECK(cuMemcpyDtoH(&first, d, 4));
    EXPECT(first == (unsigned int)rounds, "element 0 is %u after %ld rounds", first, rounds);
}

static void after(CUmodule m)
{
    CUfunction fill = get(m, "fill"), add = get(m, "addU32");
    const int n = 4096;
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, (size_t)n * 4));
    unsigned int v = 100, inc = 5;
    void *fp[] = {&d, &v, (void *)&n};
    void *ap[] = {&d, &inc, (void *)&n};
    CHECK(cuLaunchKernel(fill, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, fp, NULL));
    CHECK(cuLaunchKernel(add, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, ap, NULL));
    unsigned int *h = xmalloc((size_t)n * 4);
    CHECK(cuMemcpyDtoH(h, d, (size_t)n * 4));
    size_t bad = 0;
    for (int i = 0; i < n; ++i)
        bad += h[i] != 105u + (unsigned int)i;
    EXPECT(bad == 0, "%zu of %d elements wrong", bad, n);
    printf("  after: %d elements checked\n", n);
    CHECK(cuMemFree(d));
    free(h);
}

int main(int argc, char **argv)
{
    if (argc < 3)
        DIE("usage: context_fault faulter|worker|after KERNELS.ptx [STOPFILE expect-error|expect-ok]");
    const char *role = argv[1];
    setup_primary_ctx(NULL);
    size_t size;
    void *ptx = read_file(argv[2], &size);
    CUmodule m;
    CHECK(cuModuleLoadData(&m, ptx));
    free(ptx);
    if (strcmp(role, "faulter") == 0) {
        faulter(m);
    } else if (strcmp(role, "worker") == 0) {
        if (argc < 5)
            DIE("worker needs STOPFILE and expect-error|expect-ok");
        worker(m, argv[3], strcmp(argv[4], "expect-error") == 0);
    } else if (strcmp(role, "after") == 0) {
        after(m);
    } else {
        DIE("unknown role %s", role);
    }
    return test_finish();
}
