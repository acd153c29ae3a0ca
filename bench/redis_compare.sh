#!/usr/bin/env bash
# ringkv against redis-server, side by side in one run, on loopback.
#
# Redis runs with appendonly yes + appendfsync everysec (its durable-ish default for production);
# ringkv runs with periodic durability (fsync every 10 ms). Both get the same redis-benchmark load,
# once without pipelining and once with -P 16; the script prints ops/s, p50 and p99 for each and
# the ratio ringkv/redis. Then ringkv in sync mode (fsync before every ack, group commit) takes a
# SET load and the script prints acknowledged writes/s beside the disk's single-fsync rate.
#
# Usage: bench/redis_compare.sh            (env: REQUESTS=200000 CLIENTS=50 KEYSPACE=100000)
# Needs: redis-server, redis-benchmark (Debian redis-server, redis-tools), python3, cargo.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
SIZE=${SIZE:-100}
REDIS_PORT=${REDIS_PORT:-16379}
RINGKV_RESP=${RINGKV_RESP:-17379}
RINGKV_HTTP=${RINGKV_HTTP:-17380}

require_tools redis-server redis-benchmark python3

cargo build --release --quiet
BIN=target/release/ringkv
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/ringkv-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# bench PORT PIPELINE TESTS -> CSV lines "test,rps,avg,min,p50,p95,p99,max" (quotes stripped)
bench() {
    redis-benchmark -h 127.0.0.1 -p "$1" -c "$CLIENTS" -n "$REQUESTS" -d "$SIZE" -r "$KEYSPACE" \
        -P "$2" -t "$3" --csv 2>/dev/null | tr -d '"' | grep -v '^test,'
}

start_redis() {
    mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
        --appendonly yes --appendfsync everysec --daemonize no --logfile "$WORK/redis.log" &
    PIDS+=($!)
    REDIS_PID=$!
    wait_port "$REDIS_PORT"
}

start_ringkv() {  # durability
    rm -rf "$WORK/ringkv"
    RINGKV_LOG=warn "$BIN" server --data-dir "$WORK/ringkv" --durability "$1" \
        --resp-addr "127.0.0.1:$RINGKV_RESP" --http-addr "127.0.0.1:$RINGKV_HTTP" \
        --peer-addr "127.0.0.1:0" 2>"$WORK/ringkv.log" &
    PIDS+=($!)
    RINGKV_PID=$!
    wait_port "$RINGKV_RESP"
}

stop() {  # pid
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

declare -A RESULT
run_all() {  # name port
    for p in 1 16; do
        while IFS=, read -r test rps _avg _min p50 _p95 p99 _max; do
            RESULT["$1,$test,$p"]="$rps $p50 $p99"
        done < <(bench "$2" "$p" set,get)
    done
}

echo "== redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') (appendonly yes, appendfsync everysec)"
start_redis
run_all redis "$REDIS_PORT"
stop "$REDIS_PID"

echo "== ringkv $("$BIN" --version | cut -d' ' -f2) (durability periodic)"
start_ringkv periodic
run_all ringkv "$RINGKV_RESP"
stop "$RINGKV_PID"

echo
echo "redis-benchmark -c $CLIENTS -n $REQUESTS -d $SIZE -r $KEYSPACE -t set,get [-P 16]"
printf '%-4s %-3s | %12s %8s %8s | %12s %8s %8s | %6s\n' test P "redis ops/s" "p50 ms" "p99 ms" "ringkv ops/s" "p50 ms" "p99 ms" ratio
for test in SET GET; do
    for p in 1 16; do
        read -r r_rps r_p50 r_p99 <<<"${RESULT[redis,$test,$p]}"
        read -r k_rps k_p50 k_p99 <<<"${RESULT[ringkv,$test,$p]}"
        ratio=$(python3 -c "print(f'{$k_rps/$r_rps:.2f}')")
        printf '%-4s %-3s | %12s %8s %8s | %12s %8s %8s | %6s\n' "$test" "$p" "$r_rps" "$r_p50" "$r_p99" "$k_rps" "$k_p50" "$k_p99" "$ratio"
    done
done

echo
echo "== ringkv durability sync (fsync before every ack, group commit)"
start_ringkv sync
while IFS=, read -r test rps _avg _min p50 _p95 p99 _max; do
    SYNC_RPS=$rps; SYNC_P50=$p50; SYNC_P99=$p99
done < <(bench "$RINGKV_RESP" 1 set)
stop "$RINGKV_PID"

# The disk's own rate of single 4 KiB write+fdatasync, in the same directory ringkv used.
FSYNC_RPS=$(python3 - "$WORK" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync-probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
buf = b"x" * 4096
n, start = 0, time.monotonic()
while n < 2000 and time.monotonic() - start < 3.0:
    os.pwrite(fd, buf, (n % 256) * 4096)
    os.fdatasync(fd)
    n += 1
print(f"{n / (time.monotonic() - start):.0f}")
os.close(fd)
PY
)
printf 'sync SET: %s acknowledged writes/s (p50 %s ms, p99 %s ms); disk single-fsync rate: %s/s; ratio %s\n' \
    "$SYNC_RPS" "$SYNC_P50" "$SYNC_P99" "$FSYNC_RPS" "$(python3 -c "print(f'{$SYNC_RPS/$FSYNC_RPS:.1f}x')")"
