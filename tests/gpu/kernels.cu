// Device code for the Baton GPU tests (tests/gpu/*.c).
//
// run.sh compiles this file three ways (PTX, cubin, fatbin) and the host
// programs load the result through the driver API. Every kernel has C
// linkage so that the host looks it up by its plain name.
//
// Kernels:
//   vecAdd          c[i] = a[i] + b[i]
//   matmulTiled     C(MxN) = A(MxK) * B(KxN), row-major, 16x16 shared tiles
//   empty           does nothing (launch-overhead probe)
//   argEcho         writes every argument it received into an EchoOut
//   fill            p[i] = v + i
//   addU32          p[i] += v
//   delayFill       waits `ns` nanoseconds on the GPU clock, then p[i] = v + i
//   dynSmemReverse  reverses each chunk of `chunk` words via dynamic shared memory
//   wildWrite       stores through the pointer it is given (context_fault passes an
//                   invalid one, to make the kernel fault)
//   smidSpin        every thread spins `ns` nanoseconds on the GPU clock; thread 0 of
//                   each block writes the SM it ran on (%smid) to sm[blockIdx.x]

#include "kernel_args.h"

#define TILE 16

extern "C" {

__global__ void vecAdd(const float *a, const float *b, float *c, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        c[i] = a[i] + b[i];
}

// Launch with blockDim = (16, 16) and gridDim = (ceil(N/16), ceil(M/16)).
__global__ void matmulTiled(const float *A, const float *B, float *C, int M, int N, int K)
{
    __shared__ float tileA[TILE][TILE];
    __shared__ float tileB[TILE][TILE];

    const int tx = threadIdx.x;
    const int ty = threadIdx.y;
    const int row = blockIdx.y * TILE + ty;
    const int col = blockIdx.x * TILE + tx;
    float acc = 0.0f;

    for (int k0 = 0; k0 < K; k0 += TILE) {
        // Each thread stages one element of each tile; out-of-range
        // elements are zero so the inner loop needs no bounds checks.
        const int ka = k0 + tx;
        const int kb = k0 + ty;
        tileA[ty][tx] = (row < M && ka < K) ? A[(size_t)row * K + ka] : 0.0f;
        tileB[ty][tx] = (kb < K && col < N) ? B[(size_t)kb * N + col] : 0.0f;
        __syncthreads();
        for (int k = 0; k < TILE; ++k)
            acc += tileA[ty][k] * tileB[k][tx];
        __syncthreads();
    }
    if (row < M && col < N)
        C[(size_t)row * N + col] = acc;
}

__global__ void empty(void)
{
}

// Launch with one thread. Mixed sizes and alignments on purpose:
// 1-byte, 296-byte struct (align 8), 2-byte, 8-byte double, pointer,
// 1-byte, pointer.
__global__ void argEcho(signed char c, BigArg big, short s, double d, const int *p,
                        signed char c2, EchoOut *out)
{
    if (blockIdx.x != 0 || threadIdx.x != 0)
        return;
    out->big = big;
    out->d = d;
    out->ptr = (unsigned long long)p;
    out->pointee = *p;
    int sum = 0;
    for (int i = 0; i < BIG_ARG_INTS; ++i)
        sum += big.ints[i];
    out->int_sum = sum;
    out->s = s;
    out->c = c;
    out->c2 = c2;
}

__global__ void fill(unsigned int *p, unsigned int v, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        p[i] = v + (unsigned int)i;
}

__global__ void wildWrite(unsigned int *p)
{
    *p = 42u;
}

__global__ void addU32(unsigned int *p, unsigned int v, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        p[i] += v;
}

static __device__ unsigned long long gpuNanoseconds(void)
{
    unsigned long long t;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    return t;
}

__global__ void delayFill(unsigned int *p, unsigned int v, int n, unsigned long long ns)
{
    if (threadIdx.x == 0) {
        const unsigned long long start = gpuNanoseconds();
        while (gpuNanoseconds() - start < ns) {
        }
    }
    __syncthreads();
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        p[i] = v + (unsigned int)i;
}

// Block b handles words [b*chunk, min((b+1)*chunk, n)). Needs
// chunk * 4 bytes of dynamic shared memory; launch ceil(n/chunk) blocks.
__global__ void dynSmemReverse(const unsigned int *in, unsigned int *out, int chunk, int n)
{
    extern __shared__ unsigned int staged[];
    const int base = blockIdx.x * chunk;
    if (base >= n)
        return;
    const int len = (n - base < chunk) ? (n - base) : chunk;
    for (int k = threadIdx.x; k < len; k += blockDim.x)
        staged[k] = in[base + k];
    __syncthreads();
    for (int k = threadIdx.x; k < len; k += blockDim.x)
        out[base + k] = staged[len - 1 - k];
}

__global__ void smidSpin(unsigned *sm, unsigned long long ns)
{
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < ns);
    if (threadIdx.x == 0) {
        unsigned id;
        asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
        sm[blockIdx.x] = id;
    }
}

} // extern "C"
