/*
 * mechanisms: measures, natively, what each candidate isolation mechanism gives
 * (docs/architecture.md, "Isolation domains"; run by mechanisms.sh, which says what
 * each role is for). Driver API only; every CUresult is checked or reported.
 *
 * One process, several contexts:
 *   mechanisms K.ptx contexts wild|trap|hang
 *       a bystander thread runs checked work in context B while context A faults (or
 *       runs a kernel that never ends); then a fresh context C is tried.
 *   mechanisms K.ptx peek-contexts
 *       context B launches a kernel that reads an address of context A's memory.
 *   mechanisms K.ptx latency-streams|latency-contexts SECONDS
 *       short-kernel latency beside a long-kernel load: on two streams of one
 *       context, or in two contexts of this process.
 * One role of a multi-process case (each in its own primary context):
 *   mechanisms K.ptx worker SECONDS READYFILE STOPFILE
 *   mechanisms K.ptx faulter wild|trap|hang HOLDSECONDS
 *   mechanisms K.ptx secret ADDRFILE STOPFILE
 *   mechanisms K.ptx peek ADDRFILE
 *   mechanisms K.ptx latency SECONDS
 *   mechanisms K.ptx load SECONDS
 *
 * Findings are printed as "RESULT <key> <value>" lines, which mechanisms.sh collects.
 */
#define TEST_NAME "isolation_mechanisms"
#include "../check.h"

#include <pthread.h>
#include <sys/mman.h>
#include <unistd.h>

#define SECRET 0x5ec2e7u
#define WORDS (1 << 16)

static const char *g_ptx;

static void sleep_s(double s)
{
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    nanosleep(&t, NULL);
}

static CUmodule load_module(void)
{
    static char *image;
    if (!image)
        image = read_file(g_ptx, NULL);
    CUmodule m;
    CHECK(cuModuleLoadData(&m, image));
    return m;
}

static CUfunction get(CUmodule m, const char *name)
{
    CUfunction f;
    CHECK(cuModuleGetFunction(&f, m, name));
    return f;
}

static CUcontext new_context(void)
{
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    CUcontext c;
    CHECK(cuCtxCreate(&c, NULL, 0, dev));
    return c;
}

static void result_s(const char *key, const char *value)
{
    printf("RESULT %s %s\n", key, value);
    fflush(stdout);
}

static void result_err(const char *key, CUresult r)
{
    printf("RESULT %s %s\n", key, r == CUDA_SUCCESS ? "CUDA_SUCCESS" : cu_err_name(r));
    fflush(stdout);
}

static void result_f(const char *key, double v)
{
    printf("RESULT %s %.3f\n", key, v);
    fflush(stdout);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------- the bystander's checked work */

struct bystander {
    CUcontext ctx; /* NULL: the caller's current context */
    double seconds;
    const char *ready_file, *stop_file;
    volatile int stop;
    volatile long rounds;
    CUresult error;
    double max_gap_s;
    int values_ok;
    volatile int ready;
};

/* Adds 1 to every word each round and reads one word back, so a round that silently
 * did nothing is seen; at the end every word must equal the number of rounds. */
static void *bystander_run(void *arg)
{
    struct bystander *b = arg;
    if (b->ctx)
        CHECK(cuCtxSetCurrent(b->ctx));
    CUmodule m = load_module();
    CUfunction add = get(m, "addU32");
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, (size_t)WORDS * 4));
    CHECK(cuMemsetD32(d, 0, WORDS));
    CHECK(cuCtxSynchronize());
    unsigned int one = 1;
    int n = WORDS;
    void *params[] = {&d, &one, &n};
    double start = now_seconds(), last = start;
    b->ready = 1;
    if (b->ready_file) {
        FILE *f = fopen(b->ready_file, "w");
        if (f)
            fclose(f);
    }
    long rounds = 0;
    CUresult r = CUDA_SUCCESS;
    while (!b->stop && now_seconds() - start < b->seconds &&
           !(b->stop_file && access(b->stop_file, F_OK) == 0)) {
        r = cuLaunchKernel(add, 64, 1, 1, 256, 1, 1, 0, NULL, params, NULL);
        if (r == CUDA_SUCCESS)
            r = cuCtxSynchronize();
        unsigned int w = 0;
        size_t at = (size_t)(rounds * 7919 % WORDS) * 4;
        if (r == CUDA_SUCCESS)
            r = cuMemcpyDtoH(&w, d + at, 4);
        if (r != CUDA_SUCCESS)
            break;
        rounds++;
        if (w != (unsigned int)rounds) {
            printf("  bystander: word %zu is %u after %ld rounds\n", at / 4, w, rounds);
            b->values_ok = 0;
            break;
        }
        double t = now_seconds();
        if (t - last > b->max_gap_s)
            b->max_gap_s = t - last;
        last = t;
        b->rounds = rounds;
    }
    b->error = r;
    if (r == CUDA_SUCCESS && b->values_ok) {
        unsigned int *host = xmalloc((size_t)WORDS * 4);
        CUresult c = cuMemcpyDtoH(host, d, (size_t)WORDS * 4);
        if (c != CUDA_SUCCESS) {
            b->error = c;
        } else {
            for (int i = 0; i < WORDS; i++) {
                if (host[i] != (unsigned int)rounds) {
                    b->values_ok = 0;
                    break;
                }
            }
        }
        free(host);
    }
    return NULL;
}

static void bystander_report(const struct bystander *b)
{
    result_err("bystander_error", b->error);
    printf("RESULT bystander_rounds %ld\n", b->rounds);
    result_f("bystander_max_gap_ms", b->max_gap_s * 1e3);
    result_s("bystander_values_ok", b->values_ok ? "1" : "0");
}

/* ------------------------------------------------------------------- faults */

/* A page of our own, registered with the driver: it stays ours to write after the
 * context that registered it is gone, unlike memory the driver allocated. */
static volatile unsigned int *g_flag;
static CUdeviceptr g_flag_dev;

static void map_flag(void)
{
    void *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (page == MAP_FAILED)
        DIE("mmap failed");
    memset(page, 0, 4096);
    CHECK(cuMemHostRegister(page, 4096, CU_MEMHOSTREGISTER_DEVICEMAP));
    CHECK(cuMemHostGetDevicePointer(&g_flag_dev, page, 0));
    g_flag = page;
}

/* Launches the fault of the given kind in the current context. For wild and trap it
 * returns the error the synchronisation gave; for hang it returns after the launch. */
static CUresult launch_fault(CUmodule m, const char *kind)
{
    if (strcmp(kind, "wild") == 0) {
        CUdeviceptr bad = (CUdeviceptr)0x10;
        void *params[] = {&bad};
        CHECK(cuLaunchKernel(get(m, "wildWrite"), 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        return cuCtxSynchronize();
    }
    if (strcmp(kind, "trap") == 0) {
        CUdeviceptr none = 0;
        void *params[] = {&none};
        CHECK(cuLaunchKernel(get(m, "trapKernel"), 1, 1, 1, 32, 1, 1, 0, NULL, params, NULL));
        return cuCtxSynchronize();
    }
    if (strcmp(kind, "hang") == 0) {
        map_flag();
        void *params[] = {&g_flag_dev};
        CHECK(cuLaunchKernel(get(m, "spinFlag"), 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL));
        return CUDA_SUCCESS;
    }
    DIE("unknown fault kind %s (wild, trap or hang)", kind);
    return CUDA_ERROR_INVALID_VALUE;
}

struct destroyer {
    CUcontext ctx;
    volatile int done;
    CUresult result;
};

static void *destroy_run(void *arg)
{
    struct destroyer *d = arg;
    d->result = cuCtxDestroy(d->ctx);
    d->done = 1;
    return NULL;
}

/* Checked work in a fresh context of this process: can it still be used? */
static CUresult try_fresh_context(void)
{
    CUdevice dev;
    CUresult r = cuDeviceGet(&dev, 0);
    CUcontext c = NULL;
    if (r == CUDA_SUCCESS)
        r = cuCtxCreate(&c, NULL, 0, dev);
    if (r != CUDA_SUCCESS)
        return r;
    struct bystander b = {.ctx = c, .seconds = 0.2, .values_ok = 1};
    bystander_run(&b);
    if (b.error == CUDA_SUCCESS && !b.values_ok)
        b.error = CUDA_ERROR_UNKNOWN;
    if (b.error == CUDA_SUCCESS && b.rounds == 0)
        b.error = CUDA_ERROR_UNKNOWN;
    CUresult d = cuCtxDestroy(c);
    return b.error != CUDA_SUCCESS ? b.error : d;
}

static int run_contexts(const char *kind)
{
    CUcontext a = new_context();
    CUmodule ma = load_module();
    CUcontext b_ctx = new_context();
    struct bystander b = {.ctx = b_ctx, .seconds = 30, .values_ok = 1};
    pthread_t t;
    if (pthread_create(&t, NULL, bystander_run, &b) != 0)
        DIE("pthread_create failed");
    while (!b.ready)
        sleep_s(0.01);
    sleep_s(0.5);
    CHECK(cuCtxSetCurrent(a));
    long before = b.rounds;
    double t0 = now_seconds();
    CUresult fault = launch_fault(ma, kind);
    result_err("fault_error", fault);
    if (strcmp(kind, "hang") == 0) {
        sleep_s(2.0);
        printf("RESULT bystander_rounds_while_hanging %ld\n", b.rounds - before);
        /* Can the hanging context be ended from inside the process? */
        struct destroyer d = {.ctx = a};
        pthread_t dt;
        double d0 = now_seconds();
        if (pthread_create(&dt, NULL, destroy_run, &d) != 0)
            DIE("pthread_create failed");
        while (!d.done && now_seconds() - d0 < 5.0)
            sleep_s(0.01);
        result_s("destroy_returned_within_5s", d.done ? "1" : "0");
        if (d.done) {
            result_err("destroy_hanging", d.result);
            result_f("destroy_ms", (now_seconds() - d0) * 1e3);
        }
        *g_flag = 1; /* release the kernel if the context still runs it */
        pthread_join(dt, NULL);
        if (!d.done)
            result_err("destroy_hanging_after_release", d.result);
    } else {
        long at_fault = b.rounds;
        sleep_s(1.0);
        printf("RESULT bystander_rounds_after_fault %ld\n", b.rounds - at_fault);
        result_err("destroy_faulted", cuCtxDestroy(a));
    }
    result_f("fault_phase_s", now_seconds() - t0);
    result_err("fresh_context", try_fresh_context());
    b.stop = 1;
    pthread_join(t, NULL);
    bystander_report(&b);
    return 0;
}

/* ------------------------------------------------------------------ memory */

/* Launches peek on src and reports the error and how many words equalled the secret. */
static void peek_at(CUmodule m, CUdeviceptr src)
{
    CUdeviceptr out;
    CHECK(cuMemAlloc(&out, (size_t)WORDS * 4));
    CHECK(cuMemsetD32(out, 0, WORDS));
    int n = WORDS;
    void *params[] = {&src, &out, &n};
    CUresult r = cuLaunchKernel(get(m, "peek"), 64, 1, 1, 256, 1, 1, 0, NULL, params, NULL);
    if (r == CUDA_SUCCESS)
        r = cuCtxSynchronize();
    result_err("peek_error", r);
    long seen = 0;
    if (r == CUDA_SUCCESS) {
        unsigned int *host = xmalloc((size_t)WORDS * 4);
        CUresult c = cuMemcpyDtoH(host, out, (size_t)WORDS * 4);
        result_err("peek_readback", c);
        for (int i = 0; c == CUDA_SUCCESS && i < WORDS; i++)
            seen += host[i] == SECRET;
        free(host);
    }
    printf("RESULT peek_saw_secret_words %ld\n", seen);
}

static CUdeviceptr write_secret(void)
{
    CUdeviceptr d;
    CHECK(cuMemAlloc(&d, (size_t)WORDS * 4));
    CHECK(cuMemsetD32(d, SECRET, WORDS));
    CHECK(cuCtxSynchronize());
    return d;
}

static void check_secret(CUdeviceptr d)
{
    unsigned int *host = xmalloc((size_t)WORDS * 4);
    CUresult r = cuMemcpyDtoH(host, d, (size_t)WORDS * 4);
    result_err("secret_readback", r);
    int intact = r == CUDA_SUCCESS;
    for (int i = 0; intact && i < WORDS; i++)
        intact = host[i] == SECRET;
    result_s("secret_intact", intact ? "1" : "0");
    free(host);
}

static int run_peek_contexts(void)
{
    CUcontext a = new_context();
    CUdeviceptr secret = write_secret();
    CUcontext b = new_context();
    CUmodule mb = load_module();
    (void)b;
    peek_at(mb, secret);
    CHECK(cuCtxSetCurrent(a));
    check_secret(secret);
    return 0;
}

/* ----------------------------------------------------------------- latency */

struct load {
    CUcontext ctx;
    CUstream stream;
    double seconds;
    volatile int stop;
    long kernels;
    CUresult error;
};

/* Back-to-back 1 ms kernels over every SM (4 blocks of 256 threads per SM), at most two
 * in flight, until stopped. */
static void *load_run(void *arg)
{
    struct load *l = arg;
    if (l->ctx)
        CHECK(cuCtxSetCurrent(l->ctx));
    CUmodule m = load_module();
    CUfunction spin = get(m, "spinFor");
    CUdevice dev;
    CHECK(cuCtxGetDevice(&dev));
    int sms = 0;
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    unsigned long long ns = 1000000ull;
    void *params[] = {&ns};
    CUevent ev[2];
    CHECK(cuEventCreate(&ev[0], CU_EVENT_DISABLE_TIMING));
    CHECK(cuEventCreate(&ev[1], CU_EVENT_DISABLE_TIMING));
    double start = now_seconds();
    long k = 0;
    CUresult r = CUDA_SUCCESS;
    while (!l->stop && now_seconds() - start < l->seconds) {
        if (k >= 2 && (r = cuEventSynchronize(ev[k % 2])) != CUDA_SUCCESS)
            break;
        r = cuLaunchKernel(spin, (unsigned)(4 * sms), 1, 1, 256, 1, 1, 0, l->stream, params,
                           NULL);
        if (r == CUDA_SUCCESS)
            r = cuEventRecord(ev[k % 2], l->stream);
        if (r != CUDA_SUCCESS)
            break;
        k++;
    }
    if (r == CUDA_SUCCESS)
        r = cuStreamSynchronize(l->stream);
    l->kernels = k;
    l->error = r;
    return NULL;
}

/* Launch + synchronise an empty kernel in a loop for `seconds` after a warm-up, and
 * report the round trip's p50, p99 and max. */
static void measure_latency(CUstream stream, double seconds)
{
    CUmodule m = load_module();
    CUfunction empty = get(m, "empty");
    for (int i = 0; i < 50; i++) {
        CHECK(cuLaunchKernel(empty, 1, 1, 1, 32, 1, 1, 0, stream, NULL, NULL));
        CHECK(cuStreamSynchronize(stream));
    }
    size_t cap = 1 << 20, n = 0;
    double *lat = xmalloc(cap * sizeof *lat);
    double start = now_seconds();
    while (n < cap && now_seconds() - start < seconds) {
        double t = now_seconds();
        CHECK(cuLaunchKernel(empty, 1, 1, 1, 32, 1, 1, 0, stream, NULL, NULL));
        CHECK(cuStreamSynchronize(stream));
        lat[n++] = (now_seconds() - t) * 1e6;
        sleep_s(0.0005); /* an arrival every ~0.5 ms, not a closed loop hogging the queue */
    }
    qsort(lat, n, sizeof *lat, cmp_double);
    printf("RESULT latency_samples %zu\n", n);
    if (n > 0) {
        result_f("latency_p50_us", lat[n / 2]);
        result_f("latency_p99_us", lat[(size_t)((double)(n - 1) * 0.99)]);
        result_f("latency_max_us", lat[n - 1]);
    }
    free(lat);
}

static int run_latency_pair(int separate_contexts, double seconds)
{
    CUcontext a = new_context();
    CUcontext b = separate_contexts ? new_context() : a;
    CHECK(cuCtxSetCurrent(a));
    struct load l = {.ctx = a, .seconds = seconds + 5};
    int lo = 0, hi = 0;
    CHECK(cuCtxGetStreamPriorityRange(&lo, &hi));
    CHECK(cuStreamCreateWithPriority(&l.stream, CU_STREAM_NON_BLOCKING, lo));
    pthread_t t;
    if (pthread_create(&t, NULL, load_run, &l) != 0)
        DIE("pthread_create failed");
    CHECK(cuCtxSetCurrent(b));
    CUstream s;
    /* The highest priority, as Baton's priority policy gives a latency tenant. */
    CHECK(cuStreamCreateWithPriority(&s, CU_STREAM_NON_BLOCKING, hi));
    sleep_s(0.3);
    measure_latency(s, seconds);
    l.stop = 1;
    pthread_join(t, NULL);
    result_err("load_error", l.error);
    printf("RESULT load_kernels %ld\n", l.kernels);
    return 0;
}

/* ------------------------------------------------------------------- roles */

int main(int argc, char **argv)
{
    if (argc < 3)
        DIE("usage: mechanisms KERNELS.ptx ROLE ARGS (see the header)");
    g_ptx = argv[1];
    const char *role = argv[2];
    CHECK(cuInit(0));
    if (strcmp(role, "contexts") == 0 && argc == 4)
        return run_contexts(argv[3]);
    if (strcmp(role, "peek-contexts") == 0)
        return run_peek_contexts();
    if (strcmp(role, "latency-streams") == 0 && argc == 4)
        return run_latency_pair(0, atof(argv[3]));
    if (strcmp(role, "latency-contexts") == 0 && argc == 4)
        return run_latency_pair(1, atof(argv[3]));

    setup_primary_ctx(NULL);
    if (strcmp(role, "worker") == 0 && argc == 6) {
        struct bystander b = {.seconds = atof(argv[3]),
                              .ready_file = argv[4],
                              .stop_file = argv[5],
                              .values_ok = 1};
        bystander_run(&b);
        bystander_report(&b);
        return 0;
    }
    if (strcmp(role, "faulter") == 0 && argc == 5) {
        CUmodule m = load_module();
        CUresult r = launch_fault(m, argv[3]);
        result_err("fault_error", r);
        if (strcmp(argv[3], "hang") == 0) {
            result_s("hang_started", "1");
            /* Blocks until the kernel ends, which it does not: the script kills us. */
            result_err("hang_sync", cuCtxSynchronize());
        } else {
            CUdeviceptr p;
            result_err("later_call", cuMemAlloc(&p, 64));
        }
        sleep_s(atof(argv[4])); /* keep the faulted context alive a while, as a careless
                                   program would */
        return 0;
    }
    if (strcmp(role, "secret") == 0 && argc == 5) {
        CUdeviceptr d = write_secret();
        FILE *f = fopen(argv[3], "w");
        if (!f)
            DIE("cannot write %s", argv[3]);
        fprintf(f, "0x%llx\n", (unsigned long long)d);
        fclose(f);
        double start = now_seconds();
        while (access(argv[4], F_OK) != 0 && now_seconds() - start < 60)
            sleep_s(0.05);
        check_secret(d);
        return 0;
    }
    if (strcmp(role, "peek") == 0 && argc == 4) {
        char *text = read_file(argv[3], NULL);
        CUdeviceptr src = (CUdeviceptr)strtoull(text, NULL, 16);
        free(text);
        peek_at(load_module(), src);
        return 0;
    }
    if (strcmp(role, "latency") == 0 && argc == 4) {
        int lo = 0, hi = 0;
        CHECK(cuCtxGetStreamPriorityRange(&lo, &hi));
        CUstream s;
        CHECK(cuStreamCreateWithPriority(&s, CU_STREAM_NON_BLOCKING, hi));
        measure_latency(s, atof(argv[3]));
        return 0;
    }
    if (strcmp(role, "load") == 0 && argc == 4) {
        struct load l = {.seconds = atof(argv[3])};
        CHECK(cuStreamCreate(&l.stream, CU_STREAM_NON_BLOCKING));
        load_run(&l);
        result_err("load_error", l.error);
        printf("RESULT load_kernels %ld\n", l.kernels);
        return 0;
    }
    DIE("unknown role or wrong arguments: %s (see the header)", role);
    return 1;
}
