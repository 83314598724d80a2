// A tracing stand-in for libcuda.so.1 that forwards everything to the real
// driver and logs what a program does with chosen private export tables:
// every slot call with its arguments, the 32 bytes behind each argument
// that points at readable memory (before and after the call), the result,
// and calls of callbacks the program hands to a slot. With
// TRACE_API=1 it logs every driver entry point obtained through
// cuGetProcAddress as well.
//
// Research tool for the GPU machine (see README.md); not part of Baton.
//
//   TRACE_REAL_LIBCUDA  absolute path of the real driver (required)
//   TRACE_TABLES        comma-separated UUID hex of tables to trace
//                       (default 6e163fbeb958444d835ce182aff1991e)
//   TRACE_API=1         also trace the cuGetProcAddress entry points
//   TRACE_OUT           log file (default stderr)
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

typedef int CUresult;
typedef struct { unsigned char b[16]; } Uuid;

extern const int forward_count;
extern __attribute__((visibility("hidden"))) void *forward_ptr[];
extern const char *const forward_name[];
extern void *const wrapper[1024];

enum kind { K_SLOT, K_API, K_CALLBACK };
struct entry {
    enum kind kind;
    char name[96];
    void *real;
};
static struct entry entries[1024];
static int next_id;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static void *real_lib;
static int log_fd = 2;
static __thread int depth;

static CUresult (*real_get_export_table)(const void **, const Uuid *);
static CUresult (*real_gpa)(const char *, void **, int, uint64_t);
static CUresult (*real_gpa_v2)(const char *, void **, int, uint64_t, int *);

static void logf_(const char *fmt, ...) {
    char buf[4096];
    int n = snprintf(buf, sizeof buf, "%*s", depth * 2, "");
    va_list ap;
    va_start(ap, fmt);
    n += vsnprintf(buf + n, sizeof buf - n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    buf[n++] = '\n';
    if (write(log_fd, buf, n) < 0) { /* nothing to do */ }
}

static void die(const char *what) {
    fprintf(stderr, "export-trace: %s\n", what);
    abort();
}

__attribute__((constructor)) static void init(void) {
    const char *out = getenv("TRACE_OUT");
    if (out) {
        int fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) log_fd = fd;
    }
    const char *path = getenv("TRACE_REAL_LIBCUDA");
    if (!path) die("TRACE_REAL_LIBCUDA is not set");
    real_lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!real_lib) die(dlerror());
    for (int i = 0; i < forward_count; i++) {
        forward_ptr[i] = dlsym(real_lib, forward_name[i]);
        if (!forward_ptr[i]) die(forward_name[i]);
    }
    real_get_export_table = dlsym(real_lib, "cuGetExportTable");
    real_gpa = dlsym(real_lib, "cuGetProcAddress");
    real_gpa_v2 = dlsym(real_lib, "cuGetProcAddress_v2");
    if (!real_get_export_table || !real_gpa || !real_gpa_v2) die("driver lacks an entry point");
    logf_("export-trace: forwarding %d entry points to %s", forward_count, path);
}

static int readable(uint64_t p, uint64_t out[4]) {
    if (p < 4096) return 0;
    struct iovec local = {out, 32}, remote = {(void *)p, 32};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == 32;
}

// Describes an address: object+offset (nearest symbol) when it is inside a
// loaded object, then the 32 bytes behind it when readable.
static void describe(uint64_t v, char *out, size_t cap) {
    out[0] = 0;
    size_t n = 0;
    Dl_info info;
    if (v >= 4096 && dladdr((void *)v, &info) && info.dli_fname) {
        const char *base = strrchr(info.dli_fname, '/');
        base = base ? base + 1 : info.dli_fname;
        n += snprintf(out + n, cap - n, " [%s+%#lx%s%s]", base, (unsigned long)(v - (uint64_t)info.dli_fbase),
                      info.dli_sname ? " " : "", info.dli_sname ? info.dli_sname : "");
    }
    uint64_t w[4];
    if (n >= cap || !readable(v, w)) return;
    const unsigned char *c = (const unsigned char *)w;
    int len = 0;
    while (len < 32 && c[len] >= 0x20 && c[len] < 0x7f) len++;
    if (len >= 3 && (len == 32 || c[len] == 0))
        snprintf(out + n, cap - n, " \"%.*s\"", len, (const char *)c);
    else
        snprintf(out + n, cap - n, " {%#lx %#lx %#lx %#lx}", (unsigned long)w[0], (unsigned long)w[1],
                 (unsigned long)w[2], (unsigned long)w[3]);
}

struct seg_query { uint64_t addr; int exec; const char *name; };
static int seg_cb(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct seg_query *q = data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        uint64_t lo = info->dlpi_addr + ph->p_vaddr, hi = lo + ph->p_memsz;
        if (q->addr >= lo && q->addr < hi) {
            q->exec = (ph->p_flags & PF_X) != 0;
            q->name = info->dlpi_name;
            return 1;
        }
    }
    return 0;
}

// Code of the program or of a library other than the driver and this tracer.
static int is_foreign_code(uint64_t v) {
    struct seg_query q = {v, 0, 0};
    if (v < 4096 || !dl_iterate_phdr(seg_cb, &q) || !q.exec || !q.name) return 0;
    if (strstr(q.name, "libcuda.so") || strstr(q.name, "export-trace")) return 0;
    return 1;
}

static int new_entry(enum kind kind, const char *name, void *real) {
    pthread_mutex_lock(&lock);
    int id = -1;
    if (next_id < 1024) {
        id = next_id++;
        entries[id].kind = kind;
        entries[id].real = real;
        snprintf(entries[id].name, sizeof entries[id].name, "%s", name);
    }
    pthread_mutex_unlock(&lock);
    return id;
}

static int callback_id(uint64_t fn) {
    pthread_mutex_lock(&lock);
    for (int i = 0; i < next_id; i++)
        if (entries[i].kind == K_CALLBACK && (uint64_t)entries[i].real == fn) {
            pthread_mutex_unlock(&lock);
            return i;
        }
    pthread_mutex_unlock(&lock);
    char name[96], d[80];
    describe(fn, d, sizeof d);
    snprintf(name, sizeof name, "callback%s", d);
    char *brace = strchr(name, '{');
    if (brace) *brace = 0;
    return new_entry(K_CALLBACK, name, (void *)fn);
}

uint64_t traced_call(int id, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5,
                     uint64_t a6, uint64_t a7, uint64_t a8, uint64_t a9, uint64_t a10, uint64_t a11,
                     uint64_t a12, uint64_t a13) {
    struct entry *e = &entries[id];
    uint64_t a[6] = {a0, a1, a2, a3, a4, a5};
    char d[6][256];
    for (int i = 0; i < 6; i++) describe(a[i], d[i], sizeof d[i]);
    logf_("> %s (%#lx%s, %#lx%s, %#lx%s, %#lx%s, %#lx%s, %#lx%s)", e->name, a[0], d[0], a[1], d[1], a[2], d[2],
          a[3], d[3], a[4], d[4], a[5], d[5]);
    if (e->kind == K_SLOT)
        for (int i = 0; i < 6; i++)
            if (is_foreign_code(a[i])) {
                int cb = callback_id(a[i]);
                if (cb >= 0) {
                    logf_("  (argument %d is code: traced as %s)", i, entries[cb].name);
                    a[i] = (uint64_t)wrapper[cb];
                }
            }
    depth++;
    uint64_t (*fn)(uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t, uint64_t,
                   uint64_t, uint64_t, uint64_t, uint64_t, uint64_t) = e->real;
    uint64_t r = fn(a[0], a[1], a[2], a[3], a[4], a[5], a6, a7, a8, a9, a10, a11, a12, a13);
    depth--;
    for (int i = 0; i < 6; i++) describe(a[i], d[i], sizeof d[i]);
    logf_("< %s = %#lx (int %d) after: (%#lx%s, %#lx%s, %#lx%s, %#lx%s, %#lx%s, %#lx%s)", e->name, r, (int)r,
          a0, d[0], a1, d[1], a2, d[2], a3, d[3], a4, d[4], a5, d[5]);
    return r;
}

static void hex(const Uuid *u, char out[33]) {
    for (int i = 0; i < 16; i++) sprintf(out + 2 * i, "%02x", u->b[i]);
}

static int traced_table(const char *h) {
    const char *list = getenv("TRACE_TABLES");
    if (!list) list = "6e163fbeb958444d835ce182aff1991e";
    return strstr(list, h) != NULL;
}

static int in_driver(const void *p) {
    Dl_info info;
    return dladdr(p, &info) && info.dli_fname && strstr(info.dli_fname, "libcuda.so");
}

CUresult cuGetExportTable(const void **table, const Uuid *uuid) {
    CUresult r = real_get_export_table(table, uuid);
    char h[33];
    hex(uuid, h);
    uint64_t w0 = (r == 0 && *table) ? *(const uint64_t *)*table : 0;
    logf_("EXPORT %s = %d table=%p word0=%#lx", h, r, r == 0 ? *table : 0, (unsigned long)w0);
    if (r != 0 || !*table || !traced_table(h)) return r;

    static struct { char h[33]; void **copy; } made[16];
    static int nmade;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < nmade; i++)
        if (!strcmp(made[i].h, h)) {
            *table = made[i].copy;
            pthread_mutex_unlock(&lock);
            return r;
        }
    pthread_mutex_unlock(&lock);

    void *const *src = *table;
    int sized = w0 < 0x10000 && w0 % 8 == 0;
    int n = sized ? (int)(w0 / 8) : 0;
    if (!sized)
        while (n < 64 && src[n]) n++;
    void **copy = calloc(n + 1, sizeof(void *));
    for (int i = 0; i < n; i++) {
        copy[i] = src[i];
        if ((sized && i == 0) || !in_driver(src[i])) continue;
        char name[96];
        snprintf(name, sizeof name, "%.8s[%d]", h, i);
        int id = new_entry(K_SLOT, name, src[i]);
        if (id >= 0) copy[i] = wrapper[id];
    }
    logf_("TRACING %s: %d words%s", h, n, sized ? " (word 0 is the size)" : " (no size word)");
    pthread_mutex_lock(&lock);
    if (nmade < 16) {
        snprintf(made[nmade].h, 33, "%s", h);
        made[nmade++].copy = copy;
    }
    pthread_mutex_unlock(&lock);
    *table = copy;
    return r;
}

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags, int *status);
CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, uint64_t flags);

static void *answer(const char *symbol, void *p, int version) {
    if (!p) return p;
    if (!strcmp(symbol, "cuGetProcAddress"))
        return version >= 12000 ? (void *)cuGetProcAddress_v2 : (void *)cuGetProcAddress;
    if (!strcmp(symbol, "cuGetExportTable")) return (void *)cuGetExportTable;
    if (p == (void *)real_gpa_v2) return (void *)cuGetProcAddress_v2;
    if (p == (void *)real_gpa) return (void *)cuGetProcAddress;
    if (p == (void *)real_get_export_table) return (void *)cuGetExportTable;
    const char *api = getenv("TRACE_API");
    if (!api || strcmp(api, "1")) return p;
    static const char *hot[] = {"cuCtxGetDevice", "cuDevicePrimaryCtxGetState", "cuCtxGetCurrent", 0};
    for (int i = 0; hot[i]; i++)
        if (!strcmp(symbol, hot[i])) return p;
    pthread_mutex_lock(&lock);
    for (int i = 0; i < next_id; i++)
        if (entries[i].kind == K_API && entries[i].real == p) {
            pthread_mutex_unlock(&lock);
            return wrapper[i];
        }
    pthread_mutex_unlock(&lock);
    int id = new_entry(K_API, symbol, p);
    return id >= 0 ? wrapper[id] : p;
}

CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags, int *status) {
    CUresult r = real_gpa_v2(symbol, pfn, version, flags, status);
    if (r == 0 && pfn) *pfn = answer(symbol, *pfn, version);
    return r;
}

CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, uint64_t flags) {
    CUresult r = real_gpa(symbol, pfn, version, flags);
    if (r == 0 && pfn) *pfn = answer(symbol, *pfn, version);
    return r;
}
