// One tenant of the scale benchmark: small launches with a synchronisation every K of them.
//
//   scale_client IMAGE KERNEL K SECONDS OUT
//
// Loads IMAGE (a PTX or cubin file on a GPU, a simulator image under `batond --executor sim`),
// gets KERNEL (no parameters), and prints "ready". It then waits for one line on stdin (the
// start signal, given to every tenant at once), and for SECONDS issues rounds of K launches of
// a 1x1 grid followed by one cuStreamSynchronize on its own stream. Each round's wall time
// (CLOCK_MONOTONIC, nanoseconds, as uint32) is appended to OUT, and "done ROUNDS K" is printed.
// It then waits for stdin to close before it tears down, so that the daemon's CPU time can be
// read with every tenant still connected and no teardown in it. SECONDS = 0: idle tenant, it
// only connects, loads and waits.
//
// The driver is opened with dlopen("libcuda.so.1"), so the same binary runs natively, under MPS
// and under Baton (whose shim is preloaded and has that soname). No CUDA headers are needed.

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUstream;

static CUresult (*cuInit)(unsigned);
static CUresult (*cuDeviceGet)(CUdevice *, int);
static CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
static CUresult (*cuCtxSetCurrent)(CUcontext);
static CUresult (*cuModuleLoadData)(CUmodule *, const void *);
static CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
static CUresult (*cuStreamCreate)(CUstream *, unsigned);
static CUresult (*cuStreamSynchronize)(CUstream);
static CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                  unsigned, unsigned, CUstream, void **, void **);

#define CHECK(call)                                                                     \
    do {                                                                                \
        CUresult r_ = (call);                                                           \
        if (r_ != 0) {                                                                  \
            fprintf(stderr, "scale_client: %s failed: %d\n", #call, r_);                \
            exit(1);                                                                    \
        }                                                                               \
    } while (0)

static void *sym(void *lib, const char *name) {
    void *p = dlsym(lib, name);
    if (!p) {
        fprintf(stderr, "scale_client: no %s in libcuda.so.1\n", name);
        exit(1);
    }
    return p;
}

static uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        exit(1);
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = calloc(1, (size_t)n + 1);
    if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "scale_client: cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    return buf;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: scale_client IMAGE KERNEL K SECONDS OUT\n");
        return 2;
    }
    const char *image_path = argv[1], *kernel = argv[2], *out_path = argv[5];
    long k = atol(argv[3]);
    double seconds = atof(argv[4]);
    if (k < 1) {
        fprintf(stderr, "scale_client: K must be at least 1\n");
        return 2;
    }
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "scale_client: %s\n", dlerror());
        return 1;
    }
    *(void **)&cuInit = sym(lib, "cuInit");
    *(void **)&cuDeviceGet = sym(lib, "cuDeviceGet");
    *(void **)&cuDevicePrimaryCtxRetain = sym(lib, "cuDevicePrimaryCtxRetain");
    *(void **)&cuCtxSetCurrent = sym(lib, "cuCtxSetCurrent");
    *(void **)&cuModuleLoadData = sym(lib, "cuModuleLoadData");
    *(void **)&cuModuleGetFunction = sym(lib, "cuModuleGetFunction");
    *(void **)&cuStreamCreate = sym(lib, "cuStreamCreate");
    *(void **)&cuStreamSynchronize = sym(lib, "cuStreamSynchronize");
    *(void **)&cuLaunchKernel = sym(lib, "cuLaunchKernel");

    CUdevice dev;
    CUcontext ctx;
    CUmodule mod;
    CUfunction fn;
    CUstream stream;
    CHECK(cuInit(0));
    CHECK(cuDeviceGet(&dev, 0));
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuCtxSetCurrent(ctx));
    char *image = read_file(image_path);
    CHECK(cuModuleLoadData(&mod, image));
    CHECK(cuModuleGetFunction(&fn, mod, kernel));
    CHECK(cuStreamCreate(&stream, 1 /* CU_STREAM_NON_BLOCKING */));
    // One untimed round: first-use costs stay out of the figures.
    for (long i = 0; i < k; i++)
        CHECK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, stream, NULL, NULL));
    CHECK(cuStreamSynchronize(stream));

    printf("ready\n");
    fflush(stdout);
    char line[64];
    if (!fgets(line, sizeof line, stdin))
        return 0;

    size_t cap = 1 << 16, rounds = 0;
    uint32_t *lat = malloc(cap * sizeof *lat);
    if (!lat)
        return 1;
    uint64_t end = now_ns() + (uint64_t)(seconds * 1e9);
    while (seconds > 0 && now_ns() < end) {
        uint64_t t0 = now_ns();
        for (long i = 0; i < k; i++)
            CHECK(cuLaunchKernel(fn, 1, 1, 1, 1, 1, 1, 0, stream, NULL, NULL));
        CHECK(cuStreamSynchronize(stream));
        uint64_t dt = now_ns() - t0;
        if (rounds == cap) {
            cap *= 2;
            lat = realloc(lat, cap * sizeof *lat);
            if (!lat)
                return 1;
        }
        lat[rounds++] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
    }
    FILE *out = fopen(out_path, "wb");
    if (!out || fwrite(lat, sizeof *lat, rounds, out) != rounds || fclose(out) != 0) {
        perror(out_path);
        return 1;
    }
    printf("done %zu %ld\n", rounds, k);
    fflush(stdout);
    while (fgets(line, sizeof line, stdin)) {
    }
    return 0;
}
