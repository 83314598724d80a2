#!/usr/bin/env bash
# On the GPU machine: builds the tracer against the real driver, builds
# cuFFT's two samples from .carry/samples, and runs each natively under the
# tracer. Logs go to $OUT (cufft-*.log), a summary to stdout.
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
for name in simpleCUFFT simpleCUFFT_callback; do
    src=$S/Samples/4_CUDA_Libraries/$name
    libs=-lcufft
    [[ $name == simpleCUFFT_callback ]] && libs="-lcufft_static -lculibos"
    "$NVCC" -std=c++17 -I "$S/Common" -arch=sm_90 -o "$WORK/$name" "$src/$name.cu" $libs \
        >"$OUT/build-$name.log" 2>&1 || { echo "$name: build failed"; continue; }
    log=$OUT/cufft-$name.log
    rm -f "$log"
    (cd "$WORK" && LD_PRELOAD=$WORK/libcuda.so.1 TRACE_REAL_LIBCUDA=$REAL TRACE_TABLES=$TABLES \
        TRACE_API=${TRACE_API:-1} TRACE_OUT=$log timeout 120 "./$name" >"$OUT/run-$name.txt" 2>&1)
    echo "$name: exit $? ($(tail -1 "$OUT/run-$name.txt")), $(grep -c '^ *> ' "$log") calls traced"
    grep -o '^ *> [0-9a-f]\{8\}\[[0-9]*\]' "$log" | sed 's/^ *> //' | sort | uniq -c
done
