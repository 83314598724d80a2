// Kernel for bench_foundation.c: an empty kernel, so that the launch
// measures time the launch path alone (host, driver or Baton, and the GPU's
// fixed per-kernel cost).
extern "C" __global__ void empty(void)
{
}
