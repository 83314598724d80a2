/* Asks the real driver's cuGetProcAddress_v2 which exported symbol it returns for each
 * (name, cudaVersion, flags) in the input list, and prints one line per question:
 *     name <TAB> cudaVersion <TAB> flags <TAB> CUresult <TAB> symbolStatus <TAB> symbol
 * where symbol is the exported name dladdr() finds for the returned pointer ("-" if none).
 * Build: cc -O2 -o probe probe.c -ldl ; run: ./probe input.txt > proc-address.tsv
 * Must run WITHOUT Baton's shim preloaded: it probes the real libcuda.so.1. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int (*get_proc_v2_t)(const char *, void **, int, uint64_t, int *);
typedef int (*init_t)(unsigned);

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s input.txt (lines: name cudaVersion)\n", argv[0]);
        return 2;
    }
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "dlopen libcuda.so.1: %s\n", dlerror());
        return 1;
    }
    if (dlsym(lib, "baton_shim_marker")) {
        fprintf(stderr, "this is Baton's shim, not the real driver\n");
        return 1;
    }
    init_t init = (init_t)dlsym(lib, "cuInit");
    get_proc_v2_t gpa = (get_proc_v2_t)dlsym(lib, "cuGetProcAddress_v2");
    if (!init || !gpa) {
        fprintf(stderr, "driver lacks cuInit or cuGetProcAddress_v2\n");
        return 1;
    }
    int r = init(0);
    if (r != 0) {
        fprintf(stderr, "cuInit failed: %d\n", r);
        return 1;
    }
    FILE *in = fopen(argv[1], "r");
    if (!in) {
        perror(argv[1]);
        return 1;
    }
    char name[256];
    int version;
    long n = 0;
    while (fscanf(in, "%255s %d", name, &version) == 2) {
        for (uint64_t flags = 0; flags <= 2; flags++) {
            void *fn = NULL;
            int status = -1;
            int res = gpa(name, &fn, version, flags, &status);
            const char *sym = "-";
            Dl_info info;
            if (res == 0 && fn && dladdr(fn, &info) && info.dli_sname)
                sym = info.dli_sname;
            else if (res == 0 && fn)
                sym = "?";
            printf("%s\t%d\t%llu\t%d\t%d\t%s\n", name, version, (unsigned long long)flags, res, status, sym);
            n++;
        }
    }
    fprintf(stderr, "probe: %ld questions asked\n", n);
    return 0;
}
