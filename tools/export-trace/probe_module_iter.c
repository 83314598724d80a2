// Calls slot 7 of the driver's private table 6e163fbe... (what cuFFT uses to
// find the kernels of a module it loaded) on a module of known kernels, to
// learn its contract: callback arguments, order, what the callback's return
// value does, what the slot returns, and how it treats bad arguments.
//
//     probe_module_iter MODULE.cubin
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef int CUresult;
typedef struct { unsigned char b[16]; } Uuid;
typedef uint64_t (*Callback)(void *, void *, const char *, uint64_t, uint64_t, uint64_t);
typedef CUresult (*Iterate)(void *ctx, void *module, Callback cb, void *user, uint64_t, uint64_t);

static CUresult (*get_function)(void **, void *, const char *);
static void *module;
static int calls;
static uint64_t cb_ret;

static uint64_t record(void *user, void *f, const char *name, uint64_t a3, uint64_t a4, uint64_t a5) {
    void *g = 0;
    CUresult r = get_function(&g, module, name);
    printf("    callback #%d user=%p f=%p name=%s a3=%#lx a4=%#lx a5=%#lx; cuModuleGetFunction r=%d f=%p%s\n",
           calls, user, f, name, (unsigned long)a3, (unsigned long)a4, (unsigned long)a5, r, g,
           g == f ? " (same)" : " (DIFFERENT)");
    calls++;
    return cb_ret;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    setvbuf(stdout, NULL, _IONBF, 0); // the riskier calls come last and may crash
    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    CUresult (*init)(unsigned) = dlsym(h, "cuInit");
    CUresult (*retain)(void **, int) = dlsym(h, "cuDevicePrimaryCtxRetain");
    CUresult (*setcur)(void *) = dlsym(h, "cuCtxSetCurrent");
    CUresult (*load)(void **, const char *) = dlsym(h, "cuModuleLoad");
    CUresult (*count)(unsigned *, void *) = dlsym(h, "cuModuleGetFunctionCount");
    CUresult (*libload)(void **, const char *, void *, void *, unsigned, void *, void *, unsigned) =
        dlsym(h, "cuLibraryLoadFromFile");
    CUresult (*getexp)(const void **, const Uuid *) = dlsym(h, "cuGetExportTable");
    get_function = dlsym(h, "cuModuleGetFunction");
    printf("cuInit=%d\n", init(0));
    Uuid u;
    const char *hex = "6e163fbeb958444d835ce182aff1991e";
    for (int i = 0; i < 16; i++) sscanf(hex + 2 * i, "%2hhx", &u.b[i]);
    const void **t = 0;
    CUresult r = getexp((const void **)&t, &u);
    printf("table r=%d size=%lu\n", r, t ? (unsigned long)(uintptr_t)t[0] : 0UL);
    if (r) return 1;
    Iterate it = (Iterate)t[7];
    void *ctx = 0;
    retain(&ctx, 0);
    unsigned n = 0;
    int user = 0;
    setcur(ctx);
    printf("load=%d module=%p\n", load(&module, argv[1]), module);
    printf("count=%d n=%u\n", count(&n, module), n);
    uint64_t rets[] = {0, 1, 2, 0x100};
    for (int i = 0; i < 4; i++) {
        calls = 0;
        cb_ret = rets[i];
        printf("callback returns %#lx:\n", (unsigned long)cb_ret);
        r = it(ctx, module, record, &user, 0, 0);
        printf("  slot 7 r=%d (%#x) calls=%d\n", r, (unsigned)r, calls);
    }
    cb_ret = 0;
    calls = 0;
    r = it(0, module, record, &user, 0, 0);
    printf("null ctx: r=%d calls=%d\n", r, calls);
    calls = 0;
    r = it(ctx, module, record, 0, 0, 0);
    printf("null user: r=%d calls=%d\n", r, calls);
    void *lib = 0;
    r = libload(&lib, argv[1], 0, 0, 0, 0, 0, 0);
    printf("library load r=%d lib=%p\n", r, lib);
    calls = 0;
    r = it(ctx, lib, record, &user, 0, 0);
    printf("library handle as module: r=%d calls=%d\n", r, calls);
    puts("now the calls that may crash:");
    calls = 0;
    r = it(ctx, module, 0, &user, 0, 0);
    printf("null callback: r=%d\n", r);
    calls = 0;
    r = it(ctx, 0, record, &user, 0, 0);
    printf("null module: r=%d calls=%d\n", r, calls);
    return 0;
}
