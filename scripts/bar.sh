#!/usr/bin/env bash
# Measures issue #6's bar on this host: the three compaction modes side by side on the real
# kernel, fillrandom with 4 MiB memtables and files and a 16 MiB L1, in four configurations —
# page cache and O_DIRECT compaction reads, each with RocksDB's default L0 slowdown/stop
# triggers (20/36) and with small ones (8/12, compaction-bound: a slow compaction stalls
# writes). Each configuration is one `resystance bench --repeat` invocation (rounds with the
# first mode rotating; medians and per-round ratios), its text and JSON report kept in OUT.
# Needs root (BPF and io_uring); `resystance doctor` says what else is missing.
#
# Usage: scripts/bar.sh [--repeat=N] [--num=N] [--out=DIR] [--db=DIR] [--bin=PATH]
#   --repeat=N  rounds per configuration (default 6: each mode runs first twice; env REPEAT)
#   --num=N     keys to write (default 1000000; env NUM)
#   --out=DIR   where reports go (default: a new temporary directory; env OUT)
#   --db=DIR    the database directory, destroyed before each mode (default
#               $TMPDIR/resystance-bar; env DB)
#   --bin=PATH  the resystance binary (default: target/release/resystance, built if missing)
set -euo pipefail

die() {
    echo "bar: $*" >&2
    exit 2
}

REPEAT=${REPEAT:-6}
NUM=${NUM:-1000000}
OUT=${OUT:-}
DB=${DB:-${TMPDIR:-/tmp}/resystance-bar}
BIN=${BIN:-}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --repeat=*) REPEAT=${1#*=} ;;
        --num=*) NUM=${1#*=} ;;
        --out=*) OUT=${1#*=} ;;
        --db=*) DB=${1#*=} ;;
        --bin=*) BIN=${1#*=} ;;
        -h | --help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "--repeat must be a positive number, not '$REPEAT'"
[[ "$NUM" =~ ^[1-9][0-9]*$ ]] || die "--num must be a positive number, not '$NUM'"

cd "$(dirname "$0")/.."
if [[ -z "$BIN" ]]; then
    BIN=target/release/resystance
    [[ -x "$BIN" ]] || cargo build --release --quiet
fi
[[ -x "$BIN" ]] || die "no executable at $BIN"
"$BIN" doctor >/dev/null || die "this host cannot run the real-kernel modes ($BIN doctor says why)"
if [[ -z "$OUT" ]]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/resystance-bar.XXXXXX")
fi
mkdir -p "$OUT"

common=(bench --backend=real "--db=$DB" --benchmarks=fillrandom "--num=$NUM"
    --write_buffer_size=4194304 --target_file_size_base=4194304
    --max_bytes_for_level_base=16777216 "--repeat=$REPEAT")
small=(--level0_slowdown_writes_trigger=8 --level0_stop_writes_trigger=12)

run() {
    local name=$1
    shift
    echo "== $name: $BIN ${common[*]} $*"
    "$BIN" "${common[@]}" "$@" "--json=$OUT/$name.json" >"$OUT/$name.txt"
    sed -n '/^Comparison/,$p' "$OUT/$name.txt"
}

run page-cache-default
run page-cache-small "${small[@]}"
run direct-default --direct
run direct-small --direct "${small[@]}"
echo "reports: $OUT"
