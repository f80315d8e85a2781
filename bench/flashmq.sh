#!/bin/sh
# bench/flashmq.sh -- build FlashMQ (https://github.com/halfgaar/FlashMQ)
# from a checkout of its sources, with its own release build, OUTSIDE this
# tree, for bench/compare.sh's flashmq-w1/flashmq-w2 brokers.
#
#   bench/flashmq.sh SRC_DIR [BUILD_DIR]      (BUILD_DIR default SRC_DIR/build)
#   FLASHMQ=BUILD_DIR/flashmq bench/compare.sh --brokers flashmq-w2,antenna-w2 qos1
#
# Nothing of FlashMQ enters this repository: get its sources yourself (git
# clone, or a release tarball), keep them and the build elsewhere.  Needs
# cmake and g++ (Debian: cmake g++ libssl-dev).
set -eu
SRC=${1:?usage: bench/flashmq.sh SRC_DIR [BUILD_DIR]}
SRC=$(cd "$SRC" && pwd)
OUT=${2:-$SRC/build}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ -f "$SRC/CMakeLists.txt" ] && [ -f "$SRC/mainapp.cpp" ] ||
    { echo "flashmq.sh: $SRC does not look like FlashMQ's sources" >&2; exit 2; }
case "$OUT/" in "$ROOT"/*) echo "flashmq.sh: build outside this tree, not in $OUT" >&2; exit 2 ;; esac
mkdir -p "$OUT"
cmake -S "$SRC" -B "$OUT" -DCMAKE_BUILD_TYPE=Release > "$OUT/cmake.log" 2>&1 ||
    { tail -20 "$OUT/cmake.log" >&2; exit 1; }
cmake --build "$OUT" -j"$(nproc)" > "$OUT/build.log" 2>&1 ||
    { tail -20 "$OUT/build.log" >&2; exit 1; }
"$OUT/flashmq" --version | head -1
echo "FLASHMQ=$OUT/flashmq"
