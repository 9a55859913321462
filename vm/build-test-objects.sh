#!/bin/sh
# Rebuilds the committed BPF test objects in tests/data from their C sources: every *.c there
# (the parser fixtures and the run_*.c objects tests/run_object.rs executes).
# Usage: vm/build-test-objects.sh [OUT_DIR]   (default: the data directory itself)
# Compiles from inside tests/data with the working directory mapped to "." so no absolute
# path leaks into the DWARF; tests/object.rs runs this into a scratch directory and checks the
# result is byte-identical to the committed objects.
set -eu
CLANG=${CLANG:-clang-19}
DATA_DIR=$(cd "$(dirname "$0")/tests/data" && pwd)
OUT_DIR=${1:-$DATA_DIR}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$DATA_DIR"
for src in *.c; do
	"$CLANG" -target bpf -mcpu=v3 -O2 -g -fdebug-prefix-map="$DATA_DIR"=. \
		-c -o "$OUT_DIR/${src%.c}.o" "$src"
done
