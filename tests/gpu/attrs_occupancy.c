/*
 * attrs_occupancy: device queries, function attributes, the opt-in to more
 * than 48 KiB of dynamic shared memory (checked by running a kernel that
 * uses it), occupancy queries, error-name/string queries and version
 * queries. Expected values are those of an sm_90 (H100/H200) device.
 * Every queried value is also printed as a DIGEST line so run.sh can
 * require Baton to report exactly what the driver reports natively.
 *
 * usage: attrs_occupancy KERNELS.(cubin|fatbin|ptx)
 */
#define TEST_NAME "attrs_occupancy"
#include "check.h"

#define BIG_SMEM (100 * 1024) /* > 48 KiB: needs the opt-in attribute */

typedef struct AttrCheck {
    CUdevice_attribute attr;
    const char *name;
    int op;    /* 0: any value; 1: == v; 2: >= v; 3: > v */
    long long v;
} AttrCheck;

static const AttrCheck attr_checks[] = {
    {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, "COMPUTE_CAPABILITY_MAJOR", 1, 9},
    {CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, "COMPUTE_CAPABILITY_MINOR", 2, 0},
    {CU_DEVICE_ATTRIBUTE_WARP_SIZE, "WARP_SIZE", 1, 32},
    {CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, "MULTIPROCESSOR_COUNT", 3, 0},
    {CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, "MAX_THREADS_PER_BLOCK", 1, 1024},
    {CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X, "MAX_BLOCK_DIM_X", 1, 1024},
    {CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y, "MAX_BLOCK_DIM_Y", 1, 1024},
    {CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z, "MAX_BLOCK_DIM_Z", 1, 64},
    {CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X, "MAX_GRID_DIM_X", 1, 2147483647},
    {CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y, "MAX_GRID_DIM_Y", 1, 65535},
    {CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z, "MAX_GRID_DIM_Z", 1, 65535},
    {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, "MAX_SHARED_MEMORY_PER_BLOCK", 1, 49152},
    {CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, "MAX_SHARED_MEMORY_PER_BLOCK_OPTIN", 2,
     BIG_SMEM},
    {CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY, "TOTAL_CONSTANT_MEMORY", 1, 65536},
    {CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK, "MAX_REGISTERS_PER_BLOCK", 1, 65536},
    {CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, "MAX_THREADS_PER_MULTIPROCESSOR", 1, 2048},
    {CU_DEVICE_ATTRIBUTE_CLOCK_RATE, "CLOCK_RATE", 3, 0},
    {CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE, "MEMORY_CLOCK_RATE", 3, 0},
    {CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH, "GLOBAL_MEMORY_BUS_WIDTH", 3, 0},
    {CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE, "L2_CACHE_SIZE", 3, 0},
    {CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT, "ASYNC_ENGINE_COUNT", 3, 0},
    {CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS, "CONCURRENT_KERNELS", 1, 1},
    {CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, "UNIFIED_ADDRESSING", 1, 1},
    {CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY, "CAN_MAP_HOST_MEMORY", 1, 1},
    {CU_DEVICE_ATTRIBUTE_INTEGRATED, "INTEGRATED", 1, 0},
    {CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, "MANAGED_MEMORY", 1, 1},
    {CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH, "COOPERATIVE_LAUNCH", 1, 1},
    {CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, "PCI_BUS_ID", 2, 0},
    {CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, "PCI_DEVICE_ID", 2, 0},
    {CU_DEVICE_ATTRIBUTE_ECC_ENABLED, "ECC_ENABLED", 0, 0},
    {CU_DEVICE_ATTRIBUTE_COMPUTE_MODE, "COMPUTE_MODE", 0, 0},
};

static void check_attrs(CUdevice dev)
{
    for (size_t i = 0; i < sizeof attr_checks / sizeof attr_checks[0]; ++i) {
        const AttrCheck *a = &attr_checks[i];
        int v = -12345;
        CHECK(cuDeviceGetAttribute(&v, a->attr, dev));
        printf("  %-36s %d\n", a->name, v);
        char key[64];
        snprintf(key, sizeof key, "attr_%s", a->name);
        digest_int(key, v);
        switch (a->op) {
        case 1: EXPECT(v == a->v, "%s = %d, expected %lld", a->name, v, a->v); break;
        case 2: EXPECT(v >= a->v, "%s = %d, expected >= %lld", a->name, v, a->v); break;
        case 3: EXPECT(v > a->v, "%s = %d, expected > %lld", a->name, v, a->v); break;
        default: break;
        }
    }
}

static void check_func_attrs(CUfunction f_mm, CUfunction f_rev)
{
    int max_threads = 0, regs = 0, smem = -1, dyn = -1;
    CHECK(cuFuncGetAttribute(&max_threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, f_mm));
    CHECK(cuFuncGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, f_mm));
    CHECK(cuFuncGetAttribute(&smem, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, f_mm));
    printf("  matmulTiled: max threads %d, %d registers, %d B static shared\n", max_threads, regs,
           smem);
    EXPECT(max_threads >= 256 && max_threads <= 1024,
           "matmulTiled MAX_THREADS_PER_BLOCK %d not in [256,1024]", max_threads);
    EXPECT(regs > 0 && regs <= 255, "matmulTiled NUM_REGS %d not in (0,255]", regs);
    EXPECT(smem == 2 * 16 * 16 * 4, "matmulTiled SHARED_SIZE_BYTES %d, its tiles take 2048", smem);
    digest_int("func_matmul_max_threads", max_threads);
    digest_int("func_matmul_regs", regs);
    digest_int("func_matmul_smem", smem);

    CHECK(cuFuncGetAttribute(&smem, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, f_rev));
    CHECK(cuFuncGetAttribute(&dyn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, f_rev));
    printf("  dynSmemReverse: %d B static shared, max dynamic %d B before opt-in\n", smem, dyn);
    EXPECT(smem == 0, "dynSmemReverse SHARED_SIZE_BYTES %d, expected 0", smem);
    EXPECT(dyn > 0 && dyn <= 49152, "dynSmemReverse MAX_DYNAMIC_SHARED_SIZE_BYTES %d before opt-in",
           dyn);
    digest_int("func_rev_max_dyn_before", dyn);
}

/* Runs dynSmemReverse with `smem_bytes` of dynamic shared memory. */
static CUresult launch_reverse(CUfunction f, CUdeviceptr din, CUdeviceptr dout, int n,
                               unsigned int smem_bytes)
{
    int chunk = (int)(smem_bytes / 4);
    void *params[] = {&din, &dout, &chunk, &n};
    return cuLaunchKernel(f, ceil_div((size_t)n, (size_t)chunk), 1, 1, 512, 1, 1, smem_bytes, NULL,
                          params, NULL);
}

static void check_big_smem(CUfunction f)
{
    const int n = 1000003;
    const int chunk = BIG_SMEM / 4;
    size_t bytes = (size_t)n * 4;
    uint32_t *in = xmalloc(bytes), *out = xmalloc(bytes), *want = xmalloc(bytes);
    fill_random_u32(in, (size_t)n, 4711);
    for (int b = 0; b * chunk < n; ++b) {
        int base = b * chunk, len = (n - base < chunk) ? n - base : chunk;
        for (int k = 0; k < len; ++k)
            want[base + k] = in[base + len - 1 - k];
    }
    CUdeviceptr din, dout;
    CHECK(cuMemAlloc(&din, bytes));
    CHECK(cuMemAlloc(&dout, bytes));
    CHECK(cuMemcpyHtoD(din, in, bytes));
    CHECK(cuMemsetD32(dout, 0xDEADBEEFu, (size_t)n));

    /* Without the opt-in, asking for 100 KiB must be refused. */
    EXPECT_ERROR(launch_reverse(f, din, dout, n, BIG_SMEM), "launch with 100 KiB before opt-in");
    CHECK(cuCtxSynchronize()); /* the refused launch must not poison the context */

    CHECK(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, BIG_SMEM));
    int dyn = 0;
    CHECK(cuFuncGetAttribute(&dyn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, f));
    EXPECT(dyn == BIG_SMEM, "MAX_DYNAMIC_SHARED_SIZE_BYTES reads %d after setting %d", dyn,
           BIG_SMEM);
    CHECK(launch_reverse(f, din, dout, n, BIG_SMEM));
    CHECK(cuCtxSynchronize());
    poison_host(out, bytes);
    CHECK(cuMemcpyDtoH(out, dout, bytes));
    if (compare_u32("dynSmemReverse with 100 KiB dynamic shared", out, want, (size_t)n) == 0)
        printf("  dynSmemReverse with %d B dynamic shared memory: ok\n", BIG_SMEM);
    digest_bytes("big_smem_result", out, bytes);
    CHECK(cuMemFree(din));
    CHECK(cuMemFree(dout));
    free(in);
    free(out);
    free(want);
}

static void check_occupancy(CUfunction f_add, CUfunction f_mm)
{
    int blocks = -1;
    CHECK(cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, f_add, 256, 0));
    printf("  occupancy vecAdd @256 threads: %d blocks/SM\n", blocks);
    EXPECT(blocks >= 1 && blocks <= 8, "vecAdd blocks/SM at 256 threads = %d, expected 1..8",
           blocks);
    digest_int("occ_vecadd_256", blocks);

    CHECK(cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, f_mm, 256, 0));
    EXPECT(blocks >= 1 && blocks <= 8, "matmulTiled blocks/SM at 256 threads = %d", blocks);
    digest_int("occ_matmul_256", blocks);

    int min_grid = -1, block = -1;
    CHECK(cuOccupancyMaxPotentialBlockSize(&min_grid, &block, f_add, NULL, 0, 0));
    printf("  max potential block size vecAdd: block %d, min grid %d\n", block, min_grid);
    EXPECT(block >= 32 && block <= 1024 && block % 32 == 0, "potential block size %d", block);
    EXPECT(min_grid > 0, "potential min grid size %d", min_grid);
    digest_int("potential_block", block);
    digest_int("potential_min_grid", min_grid);

    CHECK(cuOccupancyMaxPotentialBlockSize(&min_grid, &block, f_mm, NULL, 4096, 256));
    EXPECT(block >= 32 && block <= 256, "potential block size with limit 256: %d", block);
    digest_int("potential_block_limited", block);
}

static void check_error_strings(void)
{
    const struct {
        CUresult r;
        const char *name;
    } known[] = {
        {CUDA_SUCCESS, "CUDA_SUCCESS"},
        {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE"},
        {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY"},
        {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND"},
        {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED"},
    };
    for (size_t i = 0; i < sizeof known / sizeof known[0]; ++i) {
        const char *name = NULL, *str = NULL;
        CHECK(cuGetErrorName(known[i].r, &name));
        CHECK(cuGetErrorString(known[i].r, &str));
        EXPECT(name && strcmp(name, known[i].name) == 0, "cuGetErrorName(%d) = %s, want %s",
               (int)known[i].r, name ? name : "(null)", known[i].name);
        EXPECT(str && strlen(str) > 0, "cuGetErrorString(%d) empty", (int)known[i].r);
        char key[64];
        snprintf(key, sizeof key, "errstr_%d", (int)known[i].r);
        printf("  %s: \"%s\"\n", name ? name : "(null)", str ? str : "(null)");
        if (str)
            digest_bytes(key, str, strlen(str));
    }
    const char *s = "untouched";
    CUresult r = cuGetErrorName((CUresult)987654, &s);
    EXPECT(r == CUDA_ERROR_INVALID_VALUE, "cuGetErrorName(987654) returned %d, want INVALID_VALUE",
           (int)r);
    EXPECT(s == NULL, "cuGetErrorName(987654) did not set the string to NULL");
}

int main(int argc, char **argv)
{
    const char *mod_path = argc > 1 ? argv[1] : "kernels.cubin";

    int drv = 0;
    CHECK(cuDriverGetVersion(&drv)); /* allowed before cuInit */
    printf("  cuDriverGetVersion: %d\n", drv);
    EXPECT(drv >= 13000, "driver version %d < 13000", drv);
    digest_int("driver_version", drv);

    CUdevice dev;
    CUcontext ctx = setup_primary_ctx(&dev);

    int count = 0;
    CHECK(cuDeviceGetCount(&count));
    printf("  cuDeviceGetCount: %d\n", count);
    EXPECT(count >= 1, "cuDeviceGetCount = %d", count);
    digest_int("device_count", count);

    char name[256];
    memset(name, 0, sizeof name);
    CHECK(cuDeviceGetName(name, (int)sizeof name - 1, dev));
    printf("  cuDeviceGetName: %s\n", name);
    EXPECT(strlen(name) > 0, "empty device name");
    digest_str("device_name", name);

    size_t total = 0;
    CHECK(cuDeviceTotalMem(&total, dev));
    printf("  cuDeviceTotalMem: %zu\n", total);
    EXPECT(total >= (16ull << 30), "cuDeviceTotalMem %zu < 16 GiB", total);
    digest_int("total_mem", (long long)total);

    CUuuid uuid;
    memset(&uuid, 0, sizeof uuid);
    CHECK(cuDeviceGetUuid(&uuid, dev));
    char hex[40];
    int nonzero = 0;
    for (int i = 0; i < 16; ++i) {
        snprintf(hex + 2 * i, 3, "%02x", (unsigned char)uuid.bytes[i]);
        nonzero |= uuid.bytes[i] != 0;
    }
    printf("  cuDeviceGetUuid: %s\n", hex);
    EXPECT(nonzero, "device UUID is all zeros");
    digest_str("uuid", hex);

    check_attrs(dev);

    CUdevice cdev = -1;
    CHECK(cuCtxGetDevice(&cdev));
    EXPECT(cdev == dev, "cuCtxGetDevice = %d, expected %d", (int)cdev, (int)dev);
    unsigned int api = 0;
    CHECK(cuCtxGetApiVersion(ctx, &api));
    printf("  cuCtxGetApiVersion: %u\n", api);
    EXPECT(api >= 3020, "cuCtxGetApiVersion = %u", api);
    digest_int("ctx_api_version", api);

    CUmodule mod;
    CUfunction f_add, f_mm, f_rev;
    void *image = read_file(mod_path, NULL);
    CHECK(cuModuleLoadData(&mod, image));
    CHECK(cuModuleGetFunction(&f_add, mod, "vecAdd"));
    CHECK(cuModuleGetFunction(&f_mm, mod, "matmulTiled"));
    CHECK(cuModuleGetFunction(&f_rev, mod, "dynSmemReverse"));

    check_func_attrs(f_mm, f_rev);
    check_big_smem(f_rev);
    check_occupancy(f_add, f_mm);
    check_error_strings();

    CHECK(cuModuleUnload(mod));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    free(image);
    return test_finish();
}
