#!/usr/bin/env bash
# On the GPU machine: builds the tracer against the real driver, builds
# cuFFT's two samples from .carry/samples, and runs each natively under the
# tracer (and our tests/gpu/cufft_rt.cu, shared and static), then probes
# slot 7 of 6e163fbe on a module of known kernels. Logs go to $OUT
# (trace-*.log, run-*.txt, probe_module_iter.txt), a summary to stdout.
#
#     OUT=/dir bash tools/export-trace/run.sh [TABLES]
set -u
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=${OUT:-/tmp/export-trace}
TABLES=${1:-6e163fbeb958444d835ce182aff1991e}
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
WORK=$(mktemp -d)/export-trace
mkdir -p "$WORK" "$OUT"
REAL=$(readlink -f "$(ldconfig -p | awk '$1 == "libcuda.so.1" {print $NF; exit}')")
echo "real driver: $REAL"
bash "$HERE/gen.sh" "$REAL" >"$WORK/forward.c"
gcc -O1 -shared -fPIC -o "$WORK/libcuda.so.1" -Wl,-soname,libcuda.so.1 \
    "$HERE/trace.c" "$WORK/forward.c" -ldl -lpthread || exit 1
S=$REPO/.carry/samples
build() { # name, then nvcc arguments
    local name=$1
    shift
    "$NVCC" -std=c++17 -arch=sm_90 -o "$WORK/$name" "$@" >"$OUT/build-$name.log" 2>&1 ||
        echo "$name: build failed"
}
build simpleCUFFT -I "$S/Common" "$S/Samples/4_CUDA_Libraries/simpleCUFFT/simpleCUFFT.cu" -lcufft
build simpleCUFFT_callback -I "$S/Common" \
    "$S/Samples/4_CUDA_Libraries/simpleCUFFT_callback/simpleCUFFT_callback.cu" -lcufft_static -lculibos
build cufft_rt_shared "$REPO/tests/gpu/cufft_rt.cu" -lcufft
build cufft_rt_static "$REPO/tests/gpu/cufft_rt.cu" -lcufft_static -lculibos
for name in simpleCUFFT simpleCUFFT_callback cufft_rt_shared cufft_rt_static; do
    [[ -x $WORK/$name ]] || continue
    log=$OUT/trace-$name.log
    rm -f "$log"
    (cd "$WORK" && LD_PRELOAD=$WORK/libcuda.so.1 TRACE_REAL_LIBCUDA=$REAL TRACE_TABLES=$TABLES \
        TRACE_API=${TRACE_API:-1} TRACE_OUT=$log timeout 120 "./$name" >"$OUT/run-$name.txt" 2>&1)
    echo "$name: exit $? ($(tail -1 "$OUT/run-$name.txt")), $(grep -c '^ *> ' "$log") calls traced"
    grep -o '^ *> [0-9a-f]\{8\}\[[0-9]*\]' "$log" | sed 's/^ *> //' | sort | uniq -c
done
# The contract of 6e163fbe slot 7, on a module of known kernels.
"$NVCC" -cubin -arch=sm_90 -o "$WORK/kernels.cubin" "$REPO/tests/gpu/kernels.cu" >"$OUT/build-cubin.log" 2>&1 &&
    gcc -O1 -o "$WORK/probe_module_iter" "$HERE/probe_module_iter.c" -ldl &&
    "$WORK/probe_module_iter" "$WORK/kernels.cubin" >"$OUT/probe_module_iter.txt" 2>&1
echo "probe: exit $?"
cat "$OUT/probe_module_iter.txt"
