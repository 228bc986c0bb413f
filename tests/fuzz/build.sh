#!/bin/sh
# tests/fuzz/build.sh [BUILD_DIR] - build every libFuzzer target (clang,
# -fsanitize=fuzzer,address,undefined) against the project's libraries,
# in a separate CMake build (default /tmp/mw-fuzz-build).  The top-level
# build is not touched.  Prints the directory holding fuzz_* at the end.
# Environment: CC (default clang), JOBS (default nproc), NICE (e.g. "nice -n 19").
set -eu
here=$(cd "$(dirname "$0")" && pwd)
build=${1:-/tmp/mw-fuzz-build}
cc=${CC:-clang}
jobs=${JOBS:-$(nproc 2>/dev/null || echo 2)}
nice_cmd=${NICE:-}

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "build.sh: $cc not found" >&2
    exit 77
fi
# libFuzzer present?  (clang without the compiler-rt fuzzer runtime fails here)
probe=$(mktemp -d)
trap 'rm -rf "$probe"' EXIT
printf '#include <stdint.h>\n#include <stddef.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n){(void)d;(void)n;return 0;}\n' >"$probe/p.c"
if ! "$cc" -fsanitize=fuzzer,address,undefined "$probe/p.c" -o "$probe/p" >/dev/null 2>&1; then
    echo "build.sh: $cc cannot link -fsanitize=fuzzer (libFuzzer missing)" >&2
    exit 77
fi

# shellcheck disable=SC2086
$nice_cmd cmake -S "$here" -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build.cmake.log" 2>&1 ||
    { cat "$build.cmake.log" >&2; exit 1; }
# shellcheck disable=SC2086
$nice_cmd cmake --build "$build" --target fuzz_all -j"$jobs" >"$build.build.log" 2>&1 ||
    { tail -60 "$build.build.log" >&2; exit 1; }
echo "$build"
