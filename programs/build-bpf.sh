#!/bin/sh
# Compiles the eBPF programs in bpf/ (every *.bpf.c) into objects.
# Usage: programs/build-bpf.sh [OUT_DIR]   (default: programs/bpf itself, the committed objects)
# Runs clang from inside bpf/ with that directory mapped to "." so no absolute path reaches the
# DWARF: the same sources give the same bytes on every machine with clang-19. The build script
# (programs/build.rs) and the freshness test (tests/program_object.rs) use it.
set -eu
CLANG=${CLANG:-clang-19}
BPF_DIR=$(cd "$(dirname "$0")/bpf" && pwd)
OUT_DIR=${1:-$BPF_DIR}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
cd "$BPF_DIR"
for src in *.bpf.c; do
	"$CLANG" -target bpf -mcpu=v3 -O2 -g -Wall -Werror -fdebug-prefix-map="$BPF_DIR"=. \
		-c -o "$OUT_DIR/${src%.c}.o" "$src"
done
