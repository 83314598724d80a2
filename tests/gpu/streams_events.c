/*
 * streams_events: two streams of different priority with a cross-stream
 * event dependency.
 *
 * The producer stream runs delayFill, which waits DELAY_NS on the GPU clock
 * before it writes p[i] = BASE + i. The consumer stream waits on an event
 * recorded after delayFill and then adds ADD to every word. Only if the
 * wait is honoured does every word end as BASE + i + ADD; without it the
 * add lands on the poison (or is overwritten by the late fill).
 *
 * usage: streams_events KERNELS.(cubin|fatbin|ptx)
 */
#define TEST_NAME "streams_events"
#include "check.h"

#define N_WORDS ((1 << 20) + 5)
#define BASE 0x10000000u
#define ADD 0x00001234u
#define DELAY_NS 30000000ull /* 30 ms */

static int query_ok(CUresult r)
{
    return r == CUDA_SUCCESS || r == CUDA_ERROR_NOT_READY;
}

int main(int argc, char **argv)
{
    const char *mod_path = argc > 1 ? argv[1] : "kernels.cubin";
    CUdevice dev;
    setup_primary_ctx(&dev);

    CUmodule mod;
    CUfunction f_delay, f_add;
    void *image = read_file(mod_path, NULL);
    CHECK(cuModuleLoadData(&mod, image));
    CHECK(cuModuleGetFunction(&f_delay, mod, "delayFill"));
    CHECK(cuModuleGetFunction(&f_add, mod, "addU32"));

    /* Priorities: numerically lower is higher priority. */
    int least = 0, greatest = 0;
    CHECK(cuCtxGetStreamPriorityRange(&least, &greatest));
    printf("  stream priority range: least %d greatest %d\n", least, greatest);
    EXPECT(greatest <= least, "priority range inverted: least %d greatest %d", least, greatest);
    digest_int("priority_least", least);
    digest_int("priority_greatest", greatest);

    CUstream producer, consumer;
    CHECK(cuStreamCreateWithPriority(&producer, CU_STREAM_NON_BLOCKING, greatest));
    CHECK(cuStreamCreateWithPriority(&consumer, CU_STREAM_NON_BLOCKING, least));
    int prio = 99;
    CHECK(cuStreamGetPriority(producer, &prio));
    EXPECT(prio == greatest, "producer priority %d, asked for %d", prio, greatest);
    CHECK(cuStreamGetPriority(consumer, &prio));
    EXPECT(prio == least, "consumer priority %d, asked for %d", prio, least);

    CUevent ev_start, ev_produced, ev_end;
    CHECK(cuEventCreate(&ev_start, CU_EVENT_DEFAULT));
    CHECK(cuEventCreate(&ev_produced, CU_EVENT_DEFAULT));
    CHECK(cuEventCreate(&ev_end, CU_EVENT_DEFAULT));

    size_t bytes = (size_t)N_WORDS * 4;
    CUdeviceptr buf;
    CHECK(cuMemAlloc(&buf, bytes));
    CHECK(cuMemsetD32(buf, 0xDEADBEEFu, N_WORDS)); /* poison */
    CHECK(cuCtxSynchronize());

    uint32_t *host;
    CHECK(cuMemAllocHost((void **)&host, bytes));
    poison_host(host, bytes);

    int n = N_WORDS;
    unsigned int base = BASE, add = ADD;
    unsigned long long delay = DELAY_NS;
    void *fill_params[] = {&buf, &base, &n, &delay};
    void *add_params[] = {&buf, &add, &n};

    /* producer: start event, slow fill, produced event */
    CHECK(cuEventRecord(ev_start, producer));
    CHECK(cuLaunchKernel(f_delay, 64, 1, 1, 256, 1, 1, 0, producer, fill_params, NULL));
    CHECK(cuEventRecord(ev_produced, producer));

    /* consumer: wait for the producer, add, copy back, end event */
    CHECK(cuStreamWaitEvent(consumer, ev_produced, 0));
    CHECK(cuLaunchKernel(f_add, 256, 1, 1, 256, 1, 1, 0, consumer, add_params, NULL));
    CHECK(cuMemcpyDtoHAsync(host, buf, bytes, consumer));
    CHECK(cuEventRecord(ev_end, consumer));

    /* While the 30 ms fill runs, queries may say NOT_READY but nothing else. */
    CUresult q1 = cuStreamQuery(consumer);
    CUresult q2 = cuEventQuery(ev_produced);
    printf("  queries while busy: cuStreamQuery(consumer)=%s cuEventQuery(produced)=%s\n",
           cu_err_name(q1), cu_err_name(q2));
    EXPECT(query_ok(q1), "cuStreamQuery while busy returned %s", cu_err_name(q1));
    EXPECT(query_ok(q2), "cuEventQuery while busy returned %s", cu_err_name(q2));

    CHECK(cuEventSynchronize(ev_end));
    CUresult q3 = cuEventQuery(ev_end);
    EXPECT(q3 == CUDA_SUCCESS, "cuEventQuery after cuEventSynchronize returned %s",
           cu_err_name(q3));
    CUresult q4 = cuEventQuery(ev_produced);
    EXPECT(q4 == CUDA_SUCCESS, "producer event not complete after consumer end: %s",
           cu_err_name(q4));

    /* Check the data first: every word must have seen the fill, then the add. */
    size_t bad = 0, early = 0;
    for (uint32_t i = 0; i < (uint32_t)N_WORDS; ++i) {
        uint32_t want = BASE + i + ADD;
        if (host[i] != want) {
            /* the add ran on the poison, or ran first and was overwritten */
            if (host[i] == 0xDEADBEEFu + ADD || host[i] == BASE + i)
                ++early;
            if (bad < 5)
                printf("    word %u: got 0x%08x want 0x%08x\n", i, host[i], want);
            ++bad;
        }
    }
    EXPECT(bad == 0, "%zu of %d words wrong (%zu show the consumer ran before the producer)",
           bad, N_WORDS, early);
    if (bad == 0)
        printf("  consumer saw the producer's data: ok\n");
    digest_bytes("result", host, bytes);

    /* Timing between the events. If the wait was not honoured, the producer
     * may still be running here and cuEventElapsedTime says NOT_READY:
     * that is reported as a failed check, not a crash. */
    float ms_total = -1.0f, ms_fill = -1.0f;
    CHECK(cuEventElapsedTime(&ms_total, ev_start, ev_end));
    CUresult rf = cuEventElapsedTime(&ms_fill, ev_start, ev_produced);
    EXPECT(rf == CUDA_SUCCESS, "cuEventElapsedTime(start, produced) after the consumer's end: %s",
           cu_err_name(rf));
    printf("  elapsed: start->produced %.3f ms, start->end %.3f ms\n", (double)ms_fill,
           (double)ms_total);
    EXPECT(ms_total > 0.0f, "cuEventElapsedTime(start,end) = %f, must be > 0", (double)ms_total);
    if (rf == CUDA_SUCCESS) {
        /* The fill spins 30 ms of GPU time; allow slack for timer granularity. */
        EXPECT(ms_fill >= 25.0f, "start->produced %.3f ms, fill spins 30 ms", (double)ms_fill);
        EXPECT(ms_total >= ms_fill, "end (%.3f ms) before produced (%.3f ms)", (double)ms_total,
               (double)ms_fill);
    }
    CHECK(cuStreamSynchronize(producer));

    /* Second round without cross-stream work: plain stream ordering. */
    CHECK(cuLaunchKernel(f_add, 128, 1, 1, 256, 1, 1, 0, producer, add_params, NULL));
    CHECK(cuLaunchKernel(f_add, 128, 1, 1, 256, 1, 1, 0, producer, add_params, NULL));
    CHECK(cuStreamSynchronize(producer));
    CUresult q5 = cuStreamQuery(producer);
    EXPECT(q5 == CUDA_SUCCESS, "cuStreamQuery after cuStreamSynchronize returned %s",
           cu_err_name(q5));
    CHECK(cuCtxSynchronize());
    poison_host(host, bytes);
    CHECK(cuMemcpyDtoH(host, buf, bytes));
    bad = 0;
    for (uint32_t i = 0; i < (uint32_t)N_WORDS; ++i)
        if (host[i] != BASE + i + 3 * ADD)
            ++bad;
    EXPECT(bad == 0, "after two more adds: %zu words wrong", bad);

    CHECK(cuStreamDestroy(producer));
    CHECK(cuStreamDestroy(consumer));
    CHECK(cuEventDestroy(ev_start));
    CHECK(cuEventDestroy(ev_produced));
    CHECK(cuEventDestroy(ev_end));
    CHECK(cuMemFree(buf));
    CHECK(cuMemFreeHost(host));
    CHECK(cuModuleUnload(mod));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(image);
    return test_finish();
}
