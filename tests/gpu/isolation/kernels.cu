// Device code for the isolation-mechanism probe (mechanisms.c). Compiled to PTX by
// mechanisms.sh; every kernel has C linkage so the host finds it by its plain name.
//
//   addU32     p[i] += v                      (the checked work of a bystander tenant)
//   wildWrite  stores through the pointer it is given (an invalid one makes it fault)
//   trapKernel executes a trap instruction (CUDA_ERROR_LAUNCH_FAILED, sticky)
//   spinFlag   spins until *flag (mapped pinned host memory) is non-zero: a kernel that
//              does not end by itself
//   peek       copies n words from an address it is given (another tenant's, in the
//              memory check) into out
//   spinFor    every thread spins `ns` nanoseconds on the GPU clock (the competing load
//              of the latency measurement)
//   empty      does nothing (the short kernel whose latency is measured)

extern "C" {

__global__ void addU32(unsigned int *p, unsigned int v, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        p[i] += v;
}

__global__ void wildWrite(unsigned int *p)
{
    *p = 42u;
}

__global__ void trapKernel(unsigned int *p)
{
    if (p != 0)
        *p = 1u;
    __trap();
}

__global__ void spinFlag(volatile unsigned int *flag)
{
    while (*flag == 0u) {
    }
}

__global__ void peek(const unsigned int *src, unsigned int *out, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = src[i];
}

__global__ void spinFor(unsigned long long ns)
{
    unsigned long long start, now;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(start));
    do {
        asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
    } while (now - start < ns);
}

__global__ void empty(void)
{
}

} // extern "C"
