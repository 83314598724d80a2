/*
 * green_overlap: does a short kernel start while a long one holds most SMs, when the two are
 * in different contexts of one process (the primary context and a green context)? That is
 * what srpt's fast-lane SM reserve relies on (docs/scheduling.md). Native only: it makes its
 * own green contexts with the driver API.
 *
 * The long kernel (delayFill, 16 blocks of 256 threads per SM of its stream's SMs, every block spinning
 * LONG_MS) is launched, then after 2 ms a 1-block kernel spinning 10 us; the time from the short
 * launch to the end of its stream's synchronisation is measured (median of 5). Cases:
 *   same-ctx     long on a primary-context stream, short on a high-priority primary stream
 *   green+primary long on a green context of all SMs but RESERVE, short on a primary stream
 *   green+green  long as above, short on a green context of the other RESERVE SMs
 * Prints "RESULT case=<c> short_ms=<median> long_ms=<long kernel wall time>" per case.
 *
 * usage: green_overlap KERNELS.cubin [RESERVE_SMS [LONG_MS]]
 */
#define TEST_NAME "green_overlap"
#include "check.h"

static double now_ms(void)
{
    return now_seconds() * 1e3;
}

static CUfunction fill;
static CUdeviceptr buf;

static void launch(CUstream s, unsigned blocks, unsigned long long ns)
{
    unsigned v = 1;
    int n = 1;
    void *args[] = {&buf, &v, &n, &ns};
    CHECK(cuLaunchKernel(fill, blocks, 1, 1, 256, 1, 1, 0, s, args, NULL));
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median over 5 rounds of the short kernel's latency beside the long one. */
static void measure(const char *name, CUstream lng, unsigned long_blocks, CUstream shrt,
                    double long_ms)
{
    double t[5], lt[5];
    for (int r = 0; r < 5; r++) {
        double t0 = now_ms();
        launch(lng, long_blocks, (unsigned long long)(long_ms * 1e6));
        while (now_ms() - t0 < 2.0) {
        }
        double t1 = now_ms();
        launch(shrt, 1, 10000);
        CHECK(cuStreamSynchronize(shrt));
        t[r] = now_ms() - t1;
        CHECK(cuStreamSynchronize(lng));
        lt[r] = now_ms() - t0;
    }
    qsort(t, 5, sizeof t[0], cmp);
    qsort(lt, 5, sizeof lt[0], cmp);
    printf("RESULT case=%s short_ms=%.3f long_ms=%.3f\n", name, t[2], lt[2]);
}

int main(int argc, char **argv)
{
    const char *mod_path = argc > 1 ? argv[1] : "kernels.cubin";
    unsigned reserve = argc > 2 ? (unsigned)atoi(argv[2]) : 16;
    double long_ms = argc > 3 ? atof(argv[3]) : 20.0;
    CUdevice dev;
    setup_primary_ctx(&dev);
    int sms = 0, least = 0, greatest = 0;
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    CHECK(cuCtxGetStreamPriorityRange(&least, &greatest));
    CUmodule mod;
    CHECK(cuModuleLoad(&mod, mod_path));
    CHECK(cuModuleGetFunction(&fill, mod, "delayFill"));
    CHECK(cuMemAlloc(&buf, 4096));

    CUstream lo, hi;
    CHECK(cuStreamCreateWithPriority(&lo, CU_STREAM_NON_BLOCKING, least));
    CHECK(cuStreamCreateWithPriority(&hi, CU_STREAM_NON_BLOCKING, greatest));
    measure("same-ctx", lo, 16 * sms, hi, long_ms);

    /* A green context of all SMs but `reserve`, and one of the rest. */
    CUdevResource all, parts[1], rest;
    unsigned n = 1;
    CHECK(cuDeviceGetDevResource(dev, &all, CU_DEV_RESOURCE_TYPE_SM));
    CHECK(cuDevSmResourceSplitByCount(parts, &n, &all, &rest, 0, sms - reserve));
    CUdevResourceDesc dbig, dsmall;
    CHECK(cuDevResourceGenerateDesc(&dbig, parts, 1));
    CHECK(cuDevResourceGenerateDesc(&dsmall, &rest, 1));
    CUgreenCtx big, small;
    CHECK(cuGreenCtxCreate(&big, dbig, dev, CU_GREEN_CTX_DEFAULT_STREAM));
    CHECK(cuGreenCtxCreate(&small, dsmall, dev, CU_GREEN_CTX_DEFAULT_STREAM));
    printf("green contexts: %u and %u SMs of %d\n", parts[0].sm.smCount, rest.sm.smCount, sms);
    CUstream gbig, gsmall;
    CHECK(cuGreenCtxStreamCreate(&gbig, big, CU_STREAM_NON_BLOCKING, 0));
    CHECK(cuGreenCtxStreamCreate(&gsmall, small, CU_STREAM_NON_BLOCKING, greatest));
    unsigned big_blocks = 16 * parts[0].sm.smCount;
    measure("green+primary", gbig, big_blocks, hi, long_ms);
    measure("green+green", gbig, big_blocks, gsmall, long_ms);
    measure("green+primary-again", gbig, big_blocks, hi, long_ms);
    return test_finish();
}
