/*
 * sm_ids: which SMs a client's kernels run on (for tests/gpu/green_ctx.sh).
 *
 * Launches smidSpin REPS times on one stream: 4 blocks per SM of the device,
 * 1024 threads each, every thread spinning SPIN_US microseconds; thread 0 of
 * each block records %smid. Prints the distinct SMs used over all launches,
 * the device's SM count and the mean kernel time (events), as one line:
 *     RESULT used=N total=M kernel_ms=T sms=a,b,c,...
 * Under Baton with an SM share the used count must stay within the share;
 * green_ctx.sh judges that, this program only checks that the calls work.
 *
 * usage: sm_ids KERNELS.cubin [REPS [SPIN_US]]
 */
#define TEST_NAME "sm_ids"
#include "check.h"

#define MAX_SMS 1024

int main(int argc, char **argv)
{
    const char *mod_path = argc > 1 ? argv[1] : "kernels.cubin";
    int reps = argc > 2 ? atoi(argv[2]) : 1;
    unsigned long long spin_ns = (argc > 3 ? strtoull(argv[3], NULL, 10) : 1000) * 1000ull;
    if (reps < 1)
        reps = 1;
    CUdevice dev;
    setup_primary_ctx(&dev);
    int total = 0;
    CHECK(cuDeviceGetAttribute(&total, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    EXPECT(total > 0 && total <= MAX_SMS, "SM count %d", total);

    CUmodule mod;
    CUfunction f;
    void *image = read_file(mod_path, NULL);
    CHECK(cuModuleLoadData(&mod, image));
    CHECK(cuModuleGetFunction(&f, mod, "smidSpin"));

    unsigned blocks = 4u * (unsigned)total;
    size_t bytes = blocks * sizeof(unsigned);
    CUdeviceptr d_sm;
    CHECK(cuMemAlloc(&d_sm, bytes));
    unsigned *h_sm = malloc(bytes);
    EXPECT(h_sm != NULL, "malloc");

    CUstream s;
    CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUevent e0, e1;
    CHECK(cuEventCreate(&e0, CU_EVENT_DEFAULT));
    CHECK(cuEventCreate(&e1, CU_EVENT_DEFAULT));

    static int seen[MAX_SMS];
    double ms_sum = 0;
    for (int r = 0; r < reps; r++) {
        CHECK(cuMemsetD32Async(d_sm, 0xffffffffu, blocks, s));
        void *args[] = {&d_sm, &spin_ns};
        CHECK(cuEventRecord(e0, s));
        CHECK(cuLaunchKernel(f, blocks, 1, 1, 1024, 1, 1, 0, s, args, NULL));
        CHECK(cuEventRecord(e1, s));
        CHECK(cuMemcpyDtoHAsync(h_sm, d_sm, bytes, s));
        CHECK(cuStreamSynchronize(s));
        float ms = 0;
        CHECK(cuEventElapsedTime(&ms, e0, e1));
        ms_sum += ms;
        for (unsigned b = 0; b < blocks; b++) {
            EXPECT(h_sm[b] < MAX_SMS, "block %u recorded no SM (%u)", b, h_sm[b]);
            if (h_sm[b] < MAX_SMS)
                seen[h_sm[b]] = 1;
        }
    }
    int used = 0;
    for (int i = 0; i < MAX_SMS; i++)
        used += seen[i];
    printf("RESULT used=%d total=%d kernel_ms=%.3f sms=", used, total, ms_sum / reps);
    const char *sep = "";
    for (int i = 0; i < MAX_SMS; i++) {
        if (seen[i]) {
            printf("%s%d", sep, i);
            sep = ",";
        }
    }
    printf("\n");

    CHECK(cuEventDestroy(e0));
    CHECK(cuEventDestroy(e1));
    CHECK(cuStreamDestroy(s));
    CHECK(cuMemFree(d_sm));
    CHECK(cuModuleUnload(mod));
    free(h_sm);
    free(image);
    return test_finish();
}
