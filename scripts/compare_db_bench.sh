#!/usr/bin/env bash
# Runs `resystance bench` and RocksDB's db_bench back to back on the same workload (the issue's
# measurement: fillrandom, 100-byte values, 4 MiB memtables and files, 16 MiB L1), prints both
# outputs and a side-by-side summary of throughput, P99 write latency and compaction cost.
#
# Usage: scripts/compare_db_bench.sh [--num=N] [--strace] [--out=DIR] [--db_root=DIR] [-- FLAG...]
#   --num=N        keys to write (default 1000000; env NUM)
#   --strace       also count db_bench's pread64 calls in a separate run under `strace -f -c`
#                  (separate so strace's overhead does not distort the timed run; env STRACE=1)
#   --out=DIR      where outputs are kept (default: a new temporary directory; env OUT)
#   --db_root=DIR  parent of the two database directories (default $TMPDIR/resystance-compare;
#                  env DB_ROOT); both tools destroy their database before running
#   -- FLAG...     further db_bench-style flags passed to both tools
set -euo pipefail

die() {
    echo "compare_db_bench: $*" >&2
    exit 2
}

NUM=${NUM:-1000000}
STRACE=${STRACE:-0}
OUT=${OUT:-}
DB_ROOT=${DB_ROOT:-${TMPDIR:-/tmp}/resystance-compare}
EXTRA=()

while [[ $# -gt 0 ]]; do
    case "$1" in
        --num=*) NUM=${1#*=} ;;
        --num) [[ $# -ge 2 ]] || die "--num needs a value"; NUM=$2; shift ;;
        --strace) STRACE=1 ;;
        --out=*) OUT=${1#*=} ;;
        --db_root=*) DB_ROOT=${1#*=} ;;
        -h | --help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
        --) shift; EXTRA=("$@"); break ;;
        *) die "unknown argument '$1' (see --help)" ;;
    esac
    shift
done

[[ $NUM =~ ^[1-9][0-9]*$ ]] || die "--num must be a positive integer, got '$NUM'"
command -v db_bench >/dev/null || die "db_bench not found (apt-get install rocksdb-tools)"
command -v jq >/dev/null || die "jq not found; it reads resystance's JSON report (apt-get install jq)"
command -v cargo >/dev/null || die "cargo not found"
if [[ $STRACE == 1 ]]; then
    command -v strace >/dev/null || die "--strace needs strace (apt-get install strace)"
fi

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [[ -z $OUT ]]; then
    OUT=$(mktemp -d "${TMPDIR:-/tmp}/compare_db_bench.XXXXXX")
fi
mkdir -p "$OUT" "$DB_ROOT"

# The same workload for both tools, in the flag spelling both accept.
COMMON=(
    --num="$NUM"
    --value_size=100
    --key_size=16
    --write_buffer_size=4194304
    --target_file_size_base=4194304
    --max_bytes_for_level_base=16777216
    --seed=1
    ${EXTRA[@]+"${EXTRA[@]}"}
)
# db_bench only: no compression (our SSTs are uncompressed), counters (--statistics),
# percentiles (--histogram), and the `stats` pseudo-benchmark for "Cumulative compaction".
ROCKS_ONLY=(--compression_type=none --statistics --histogram=1)

echo "== building resystance (release)"
(cd "$REPO" && cargo build --release --quiet)

echo "== resystance bench (output: $OUT/resystance.txt)"
(cd "$REPO" && cargo run --release --quiet -- bench --benchmarks=fillrandom "${COMMON[@]}" \
    --db="$DB_ROOT/resystance" --json="$OUT/resystance.json") | tee "$OUT/resystance.txt"

echo
echo "== db_bench (output: $OUT/db_bench.txt; progress on $OUT/db_bench.stderr)"
db_bench --benchmarks=fillrandom,stats "${COMMON[@]}" "${ROCKS_ONLY[@]}" \
    --db="$DB_ROOT/db_bench" >"$OUT/db_bench.txt" 2>"$OUT/db_bench.stderr"
# The statistics dump is hundreds of counter lines; the summary below picks the ones it needs
# and the full dump stays in the file.
grep -v '^rocksdb\.' "$OUT/db_bench.txt" || true

R_PREADS_CELL="(needs --strace)"
if [[ $STRACE == 1 ]]; then
    echo
    echo "== db_bench under strace -f -c -e trace=pread64 (output: $OUT/strace.txt)"
    strace -f -c -e trace=pread64 -o "$OUT/strace.txt" \
        db_bench --benchmarks=fillrandom "${COMMON[@]}" --compression_type=none \
        --db="$DB_ROOT/db_bench_strace" >"$OUT/db_bench_strace.txt" 2>&1
    cat "$OUT/strace.txt"
    # strace -c columns: % time, seconds, usecs/call, calls, [errors,] syscall.
    R_PREADS=$(awk '$NF == "pread64" { print $4; exit }' "$OUT/strace.txt")
    R_PREADS_CELL="${R_PREADS:-0} (process)"
fi

# ---- extracting numbers -------------------------------------------------------------------

# The token before KEY on the first line matching PATTERN.
token_before() { # file pattern key
    awk -v pat="$2" -v key="$3" '$0 ~ pat { for (i = 2; i <= NF; i++) if ($i == key) { print $(i - 1); exit } }' "$1"
}
# P99 of the first "Percentiles:" line after the fillrandom result line.
p99_after_fillrandom() { # file
    awk '/^fillrandom +:/ { seen = 1 }
         seen && /^Percentiles:/ { for (i = 1; i < NF; i++) if ($i == "P99:") { print $(i + 1); exit } }' "$1"
}
# A db_bench statistics ticker: "rocksdb.name COUNT : value".
ticker() { # name
    awk -v k="$1" '$1 == k && $2 == "COUNT" { print $4; found = 1; exit } END { if (!found) print 0 }' "$OUT/db_bench.txt"
}
# COUNT or SUM of a db_bench statistics histogram line.
histogram_field() { # name field
    awk -v k="$1" -v f="$2" '$1 == k { for (i = 2; i < NF; i++) if ($i == f) { print $(i + 2); found = 1; exit } }
                             END { if (!found) print 0 }' "$OUT/db_bench.txt"
}
ours() { # jq path under the fillrandom result
    jq -r ".runs[0].benchmarks[0] | $1" "$OUT/resystance.json"
}
mb() { awk -v b="$1" 'BEGIN { printf "%.1f", b / 1048576 }'; }
secs() { awk -v n="$1" -v div="$2" 'BEGIN { printf "%.3f", n / div }'; }

R_OPS=$(token_before "$OUT/db_bench.txt" '^fillrandom +:' 'ops/sec')
R_P99=$(p99_after_fillrandom "$OUT/db_bench.txt")
R_CREAD=$(ticker rocksdb.compact.read.bytes)
R_CWRITE=$(ticker rocksdb.compact.write.bytes)
R_FWRITE=$(ticker rocksdb.flush.write.bytes)
R_STALL_US=$(ticker rocksdb.stall.micros)
R_CJOBS=$(histogram_field rocksdb.compaction.times.micros COUNT)
R_CTIME_US=$(histogram_field rocksdb.compaction.times.micros SUM)
R_BLOCKS=$(histogram_field rocksdb.read.block.compaction.micros COUNT)
R_FTIME_US=$(histogram_field rocksdb.db.flush.micros SUM)
R_WAMP=$(awk -v f="$R_FWRITE" -v c="$R_CWRITE" -v n="$NUM" 'BEGIN { printf "%.2f", (f + c) / (n * 116) }')
R_CUMULATIVE=$(grep -m1 '^Cumulative compaction:' "$OUT/db_bench.txt" | sed 's/^Cumulative compaction: //' || true)

O_OPS=$(ours '.ops_per_sec | floor')
O_P99=$(ours '.latency.p99_us')
O_CREAD=$(ours '.db_stats.compaction.bytes_read')
O_CWRITE=$(ours '.db_stats.compaction.bytes_written')
O_FWRITE=$(ours '.db_stats.flush.bytes_written')
O_STALL_NS=$(ours '.db_stats.stall.stop_ns + .db_stats.stall.delay_ns')
O_CJOBS=$(ours '.db_stats.compaction.jobs - .db_stats.compaction.trivial_moves')
O_CTIME_NS=$(ours '.db_stats.compaction.time_ns')
O_FTIME_NS=$(ours '.db_stats.flush.time_ns')
O_BLOCKS=$(ours '.db_stats.compaction.data_blocks_read')
O_PREADS=$(ours '.db_stats.compaction.syscalls.pread // 0')
O_WAMP=$(awk -v w="$(ours '.write_amplification')" 'BEGIN { printf "%.2f", w }')
O_CUMULATIVE=$(grep -m1 '^Cumulative compaction:' "$OUT/resystance.txt" | sed 's/^Cumulative compaction: //' || true)

row() { printf '%-34s %18s %18s\n' "$1" "$2" "$3"; }

echo
echo "== side by side: fillrandom, --num=$NUM (MB = 2^20 bytes; stats as of the end of the run)"
row "" "resystance" "db_bench"
row "ops/sec" "$O_OPS" "$R_OPS"
row "P99 write latency (us)" "$O_P99" "$R_P99"
row "compaction jobs (not trivial)" "$O_CJOBS" "$R_CJOBS"
row "compaction read (MB)" "$(mb "$O_CREAD")" "$(mb "$R_CREAD")"
row "compaction written (MB)" "$(mb "$O_CWRITE")" "$(mb "$R_CWRITE")"
row "compaction time (s)" "$(secs "$O_CTIME_NS" 1e9)" "$(secs "$R_CTIME_US" 1e6)"
row "compaction data blocks read" "$O_BLOCKS" "$R_BLOCKS"
row "pread64 calls" "$O_PREADS (compaction)" "$R_PREADS_CELL"
row "flush written (MB)" "$(mb "$O_FWRITE")" "$(mb "$R_FWRITE")"
row "flush time (s)" "$(secs "$O_FTIME_NS" 1e9)" "$(secs "$R_FTIME_US" 1e6)"
row "stall time (s)" "$(secs "$O_STALL_NS" 1e9)" "$(secs "$R_STALL_US" 1e6)"
row "write amplification" "$O_WAMP" "$R_WAMP"
echo "Cumulative compaction (flush included, RocksDB's definition):"
echo "  resystance: ${O_CUMULATIVE:-n/a}"
echo "  db_bench:   ${R_CUMULATIVE:-n/a}"
echo "outputs kept in $OUT"
