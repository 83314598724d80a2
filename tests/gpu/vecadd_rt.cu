// Runtime-API vector add: the smallest program that boots the CUDA runtime
// (libcudart) on the driver, used by tests/gpu/samples.sh twice: built with
// nvcc's default static runtime and with `-cudart shared`.
//
// Covers: device count and properties, cudaMalloc/cudaFree, cudaMemcpy both
// ways, a <<<>>> launch and cudaGetLastError, a stream with cudaMallocHost
// pinned buffers, cudaMemcpyAsync and a second launch on it, events and
// elapsed time, cudaMemset, cudaDeviceSynchronize.
// Prints "PASS <name>" and exits 0 only when every call succeeded and the
// results equal the CPU's; otherwise "FAIL <name>: <reason>" and exits 1.
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef PROG_NAME
#define PROG_NAME "vecadd_rt"
#endif

#define CHECK(call)                                                                    \
    do {                                                                               \
        cudaError_t e_ = (call);                                                       \
        if (e_ != cudaSuccess) {                                                       \
            printf("FAIL %s: %s returned %s (%s) at line %d\n", PROG_NAME, #call,      \
                   cudaGetErrorName(e_), cudaGetErrorString(e_), __LINE__);            \
            return 1;                                                                  \
        }                                                                              \
    } while (0)

__global__ void vec_add(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

__global__ void scale(float *c, float k, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] *= k;
}

static unsigned rng = 12345u;
static float next_float(void) {
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) % 1000 + 1) / 7.0f;
}

int main(void) {
    const int n = (1 << 20) + 3;
    const size_t bytes = (size_t)n * sizeof(float);
    int count = 0;
    CHECK(cudaGetDeviceCount(&count));
    if (count < 1) {
        printf("FAIL %s: no device\n", PROG_NAME);
        return 1;
    }
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    int rt = 0, drv = 0;
    CHECK(cudaRuntimeGetVersion(&rt));
    CHECK(cudaDriverGetVersion(&drv));
    printf("%s: %s, sm_%d%d, runtime %d, driver %d\n", PROG_NAME, prop.name, prop.major, prop.minor,
           rt, drv);

    float *ha = (float *)malloc(bytes), *hb = (float *)malloc(bytes), *hc = (float *)malloc(bytes);
    for (int i = 0; i < n; i++) {
        ha[i] = next_float();
        hb[i] = next_float();
    }
    memset(hc, 0xff, bytes);

    float *da, *db, *dc;
    CHECK(cudaMalloc(&da, bytes));
    CHECK(cudaMalloc(&db, bytes));
    CHECK(cudaMalloc(&dc, bytes));
    CHECK(cudaMemset(dc, 0xff, bytes));
    CHECK(cudaMemcpy(da, ha, bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, hb, bytes, cudaMemcpyHostToDevice));
    int threads = 256, blocks = (n + threads - 1) / threads;
    vec_add<<<blocks, threads>>>(da, db, dc, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaMemcpy(hc, dc, bytes, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) {
        if (hc[i] != ha[i] + hb[i]) {
            printf("FAIL %s: c[%d] = %g, expected %g\n", PROG_NAME, i, hc[i], ha[i] + hb[i]);
            return 1;
        }
    }

    // Stream, pinned memory, async copies, events.
    cudaStream_t s;
    cudaEvent_t e0, e1;
    float *pc;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CHECK(cudaEventCreate(&e0));
    CHECK(cudaEventCreate(&e1));
    CHECK(cudaMallocHost(&pc, bytes));
    memset(pc, 0, bytes);
    CHECK(cudaEventRecord(e0, s));
    scale<<<blocks, threads, 0, s>>>(dc, 2.0f, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpyAsync(pc, dc, bytes, cudaMemcpyDeviceToHost, s));
    CHECK(cudaEventRecord(e1, s));
    CHECK(cudaStreamSynchronize(s));
    float ms = -1.0f;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    for (int i = 0; i < n; i++) {
        if (pc[i] != 2.0f * (ha[i] + hb[i])) {
            printf("FAIL %s: async c[%d] = %g, expected %g\n", PROG_NAME, i, pc[i],
                   2.0f * (ha[i] + hb[i]));
            return 1;
        }
    }
    printf("%s: %d elements, scale+copy took %.3f ms on the stream\n", PROG_NAME, n, ms);

    CHECK(cudaFreeHost(pc));
    CHECK(cudaEventDestroy(e0));
    CHECK(cudaEventDestroy(e1));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dc));
    free(ha);
    free(hb);
    free(hc);
    printf("PASS %s\n", PROG_NAME);
    return 0;
}
