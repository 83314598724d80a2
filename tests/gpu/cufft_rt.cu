// cuFFT on the CUDA runtime, checked against a direct DFT computed on the CPU
// in double precision. Used by tests/gpu/samples.sh, built twice: with the
// shared libcufft and with the static one (-lcufft_static -lculibos).
//
// Covers: 1D complex-to-complex forward and inverse with a batch (power of
// two), a 2D real-to-complex transform, a double-precision transform of a
// size with factors 2 and 5, a single-precision transform of a prime size
// (cuFFT's Bluestein path), cufftPlanMany with strides, and a plan bound to a
// stream with cufftSetStream. Each of these makes cuFFT load its kernels and
// look them up through the driver.
// Prints "PASS <name>" and exits 0 only when every call succeeded and every
// result matches within float (2e-5 of the largest value) or double (1e-12)
// tolerance; otherwise "FAIL <name>: <reason>" and exits 1.
#include <cuda_runtime.h>
#include <cufft.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <vector>

#ifndef PROG_NAME
#define PROG_NAME "cufft_rt"
#endif

#define CUDA(call)                                                                          \
    do {                                                                                    \
        cudaError_t e_ = (call);                                                            \
        if (e_ != cudaSuccess) {                                                            \
            printf("FAIL %s: %s returned %s at line %d\n", PROG_NAME, #call,                \
                   cudaGetErrorName(e_), __LINE__);                                         \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)
#define FFT(call)                                                                           \
    do {                                                                                    \
        cufftResult e_ = (call);                                                            \
        if (e_ != CUFFT_SUCCESS) {                                                          \
            printf("FAIL %s: %s returned cufftResult %d at line %d\n", PROG_NAME, #call,    \
                   (int)e_, __LINE__);                                                      \
            exit(1);                                                                        \
        }                                                                                   \
    } while (0)

static unsigned rng = 2024u;
static double rnd() {
    rng = rng * 1664525u + 1013904223u;
    return (double)(rng >> 8) / (double)(1u << 24) - 0.5;
}

// out[k] = sum_j in[j] e^{sign 2 pi i j k / n}, for `batch` signals `dist` apart (stride 1).
static void dft(const std::vector<double> &re, const std::vector<double> &im, int n, int batch,
                int sign, std::vector<double> &ore, std::vector<double> &oim) {
    ore.assign((size_t)n * batch, 0);
    oim.assign((size_t)n * batch, 0);
    for (int b = 0; b < batch; b++)
        for (int k = 0; k < n; k++) {
            double sr = 0, si = 0;
            for (int j = 0; j < n; j++) {
                double a = sign * 2.0 * M_PI * (double)((long long)j * k % n) / n;
                double xr = re[(size_t)b * n + j], xi = im[(size_t)b * n + j];
                sr += xr * cos(a) - xi * sin(a);
                si += xr * sin(a) + xi * cos(a);
            }
            ore[(size_t)b * n + k] = sr;
            oim[(size_t)b * n + k] = si;
        }
}

static int failures = 0;
// Compares got (interleaved re/im, `count` values) with want; tolerance relative to the
// largest magnitude of want.
template <typename T>
static void compare(const char *what, const T *got, const std::vector<double> &wre,
                    const std::vector<double> &wim, size_t count, double tol) {
    double peak = 0, err = 0;
    for (size_t i = 0; i < count; i++) {
        peak = fmax(peak, fmax(fabs(wre[i]), fabs(wim[i])));
        err = fmax(err, fmax(fabs(got[2 * i] - wre[i]), fabs(got[2 * i + 1] - wim[i])));
    }
    bool ok = err <= tol * fmax(peak, 1.0);
    printf("%-44s max error %.3g of peak %.3g: %s\n", what, err, peak, ok ? "ok" : "WRONG");
    if (!ok) failures++;
}

static void c2c_batched(cudaStream_t stream) {
    const int n = 1024, batch = 4;
    std::vector<double> re(n * batch), im(n * batch), fre, fim;
    std::vector<float> h(2 * n * batch);
    for (int i = 0; i < n * batch; i++) {
        re[i] = rnd();
        im[i] = rnd();
        h[2 * i] = (float)re[i];
        h[2 * i + 1] = (float)im[i];
    }
    cufftComplex *d;
    CUDA(cudaMalloc(&d, sizeof(cufftComplex) * n * batch));
    CUDA(cudaMemcpy(d, h.data(), sizeof(cufftComplex) * n * batch, cudaMemcpyHostToDevice));
    cufftHandle plan;
    FFT(cufftPlan1d(&plan, n, CUFFT_C2C, batch));
    FFT(cufftSetStream(plan, stream));
    FFT(cufftExecC2C(plan, d, d, CUFFT_FORWARD));
    std::vector<float> out(2 * n * batch);
    CUDA(cudaMemcpyAsync(out.data(), d, sizeof(cufftComplex) * n * batch, cudaMemcpyDeviceToHost,
                         stream));
    CUDA(cudaStreamSynchronize(stream));
    dft(re, im, n, batch, -1, fre, fim);
    compare("C2C 1024 x4 forward (stream)", out.data(), fre, fim, (size_t)n * batch, 2e-5);
    FFT(cufftExecC2C(plan, d, d, CUFFT_INVERSE));
    CUDA(cudaMemcpyAsync(out.data(), d, sizeof(cufftComplex) * n * batch, cudaMemcpyDeviceToHost,
                         stream));
    CUDA(cudaStreamSynchronize(stream));
    std::vector<double> sre(n * batch), sim(n * batch);
    for (int i = 0; i < n * batch; i++) {
        sre[i] = re[i] * n;
        sim[i] = im[i] * n;
    }
    compare("C2C 1024 x4 inverse (round trip, scaled)", out.data(), sre, sim, (size_t)n * batch,
            2e-5);
    FFT(cufftDestroy(plan));
    CUDA(cudaFree(d));
}

static void r2c_2d() {
    const int nx = 64, ny = 48, nyc = ny / 2 + 1;
    std::vector<float> h(nx * ny);
    std::vector<double> x(nx * ny);
    for (int i = 0; i < nx * ny; i++) x[i] = h[i] = (float)rnd();
    float *din;
    cufftComplex *dout;
    CUDA(cudaMalloc(&din, sizeof(float) * nx * ny));
    CUDA(cudaMalloc(&dout, sizeof(cufftComplex) * nx * nyc));
    CUDA(cudaMemcpy(din, h.data(), sizeof(float) * nx * ny, cudaMemcpyHostToDevice));
    cufftHandle plan;
    FFT(cufftPlan2d(&plan, nx, ny, CUFFT_R2C));
    FFT(cufftExecR2C(plan, din, dout));
    std::vector<float> out(2 * nx * nyc);
    CUDA(cudaMemcpy(out.data(), dout, sizeof(cufftComplex) * nx * nyc, cudaMemcpyDeviceToHost));
    std::vector<double> wre(nx * nyc), wim(nx * nyc);
    for (int kx = 0; kx < nx; kx++)
        for (int ky = 0; ky < nyc; ky++) {
            double sr = 0, si = 0;
            for (int a = 0; a < nx; a++)
                for (int b = 0; b < ny; b++) {
                    double ang = -2.0 * M_PI * ((double)(a * kx % nx) / nx + (double)(b * ky % ny) / ny);
                    sr += x[a * ny + b] * cos(ang);
                    si += x[a * ny + b] * sin(ang);
                }
            wre[kx * nyc + ky] = sr;
            wim[kx * nyc + ky] = si;
        }
    compare("R2C 64x48", out.data(), wre, wim, (size_t)nx * nyc, 2e-5);
    FFT(cufftDestroy(plan));
    CUDA(cudaFree(din));
    CUDA(cudaFree(dout));
}

static void z2z_1000() {
    const int n = 1000;
    std::vector<double> re(n), im(n), fre, fim, h(2 * n);
    for (int i = 0; i < n; i++) {
        h[2 * i] = re[i] = rnd();
        h[2 * i + 1] = im[i] = rnd();
    }
    cufftDoubleComplex *d;
    CUDA(cudaMalloc(&d, sizeof(cufftDoubleComplex) * n));
    CUDA(cudaMemcpy(d, h.data(), sizeof(cufftDoubleComplex) * n, cudaMemcpyHostToDevice));
    cufftHandle plan;
    FFT(cufftPlan1d(&plan, n, CUFFT_Z2Z, 1));
    FFT(cufftExecZ2Z(plan, d, d, CUFFT_FORWARD));
    CUDA(cudaMemcpy(h.data(), d, sizeof(cufftDoubleComplex) * n, cudaMemcpyDeviceToHost));
    dft(re, im, n, 1, -1, fre, fim);
    compare("Z2Z 1000 (double)", h.data(), fre, fim, n, 1e-12);
    FFT(cufftDestroy(plan));
    CUDA(cudaFree(d));
}

static void c2c_prime_many() {
    // 997 is prime: cuFFT takes its Bluestein path. Two signals, interleaved (stride 2).
    const int n = 997, batch = 2;
    std::vector<double> re(n * batch), im(n * batch), fre, fim;
    std::vector<float> h(2 * n * batch);
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < n; j++) {
            double r = rnd(), i = rnd();
            re[b * n + j] = r;
            im[b * n + j] = i;
            h[2 * (j * batch + b)] = (float)r;
            h[2 * (j * batch + b) + 1] = (float)i;
        }
    cufftComplex *d;
    CUDA(cudaMalloc(&d, sizeof(cufftComplex) * n * batch));
    CUDA(cudaMemcpy(d, h.data(), sizeof(cufftComplex) * n * batch, cudaMemcpyHostToDevice));
    cufftHandle plan;
    int dims[1] = {n};
    FFT(cufftPlanMany(&plan, 1, dims, dims, batch, 1, dims, batch, 1, CUFFT_C2C, batch));
    FFT(cufftExecC2C(plan, d, d, CUFFT_FORWARD));
    std::vector<float> raw(2 * n * batch), out(2 * n * batch);
    CUDA(cudaMemcpy(raw.data(), d, sizeof(cufftComplex) * n * batch, cudaMemcpyDeviceToHost));
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < n; j++) {
            out[2 * (b * n + j)] = raw[2 * (j * batch + b)];
            out[2 * (b * n + j) + 1] = raw[2 * (j * batch + b) + 1];
        }
    dft(re, im, n, batch, -1, fre, fim);
    compare("C2C 997 x2 interleaved (PlanMany, Bluestein)", out.data(), fre, fim,
            (size_t)n * batch, 1e-4);
    FFT(cufftDestroy(plan));
    CUDA(cudaFree(d));
}

int main() {
    int version = 0;
    FFT(cufftGetVersion(&version));
    printf("cuFFT %d\n", version);
    cudaStream_t stream;
    CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    c2c_batched(stream);
    r2c_2d();
    z2z_1000();
    c2c_prime_many();
    CUDA(cudaStreamDestroy(stream));
    CUDA(cudaDeviceSynchronize());
    if (failures) {
        printf("FAIL %s: %d results differ from the CPU's DFT\n", PROG_NAME, failures);
        return 1;
    }
    printf("PASS %s\n", PROG_NAME);
    return 0;
}
