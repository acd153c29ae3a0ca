#!/usr/bin/env bash
# A 3-node ringkv cluster (N=3, W=2, R=2) against a 3-master Redis Cluster, with single-node
# redis-server as the reference, side by side in one run, on loopback.
#
# Persistence is the same everywhere: Redis runs with appendonly yes + appendfsync everysec and
# no RDB snapshots; ringkv with periodic durability (fsync every 10 ms). Load is redis-benchmark,
# once without pipelining and once with -P 16:
#   - redis-server: one redis-benchmark process;
#   - Redis Cluster: one `redis-benchmark --cluster` process (it spreads its clients over the
#     masters and sends each key to the master that owns its slot);
#   - ringkv: three redis-benchmark processes at once, one per node, each with a third of the
#     clients and requests; ops/s is their sum, p50/p99 the worst of the three. Any ringkv node
#     takes any key: every SET is coordinated with W=2 of 3 replicas, every GET reads R=2 of 3.
# The script prints ops/s, p50 and p99 for each, the ratios ringkv/redis-single and
# ringkv/redis-cluster, and whether issue 3's targets hold (unpipelined: ringkv >= 0.5x
# single-node Redis, p99 < 2 ms). Benchmarks take a lock (/tmp/ringkv-bench.lock) so two never
# overlap. With PROFILE=1 it then profiles one ringkv node under a SET load (perf, 10 s).
#
# Usage: bench/cluster_compare.sh   (env: REQUESTS=200000 CLIENTS=50 KEYSPACE=100000 SIZE=100
#                                     PIPELINES="1 16" PROFILE=0)
# Needs: redis-server, redis-cli, redis-benchmark (Debian redis-server, redis-tools), python3,
# curl, flock, cargo; perf for PROFILE=1.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

bench_lock

REQUESTS=${REQUESTS:-200000}
CLIENTS=${CLIENTS:-50}
KEYSPACE=${KEYSPACE:-100000}
SIZE=${SIZE:-100}
PIPELINES=${PIPELINES:-1 16}
PROFILE=${PROFILE:-0}
REDIS_PORT=${REDIS_PORT:-16379}
RCLUSTER_PORT=${RCLUSTER_PORT:-16381}   # three masters: P, P+1, P+2 (bus ports +10000)
RINGKV_PORT=${RINGKV_PORT:-17400}       # node i: RESP P+3i, HTTP P+3i+1, peer P+3i+2

require_tools redis-server redis-cli redis-benchmark python3 curl flock
if [ "$PROFILE" = 1 ]; then
    command -v perf >/dev/null || { echo "bench: PROFILE=1 needs perf" >&2; exit 2; }
fi

echo "load before: $(uptime)"
cargo build --release --quiet
BIN=target/release/ringkv
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/ringkv-cluster-bench.XXXXXX")
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

port_free() {  # port: fail if something already listens there (it would be measured instead)
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "bench: port $1 is already in use; set the *_PORT variables" >&2
        exit 1
    fi
}

stop() {  # pid...
    kill "$@" 2>/dev/null || true
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
}

# bench PORT PIPELINE TESTS CLIENTS REQUESTS [--cluster] -> lines "test,rps,avg,min,p50,p95,p99,max"
bench() {
    redis-benchmark -h 127.0.0.1 -p "$1" -c "$4" -n "$5" -d "$SIZE" -r "$KEYSPACE" \
        -P "$2" -t "$3" ${6:-} --csv 2>/dev/null | tr -d '"' | grep -E '^(SET|GET),' || true
}

declare -A RESULT  # "system,TEST,P" -> "rps p50 p99"
run_one() {  # system port [--cluster]
    for p in $PIPELINES; do
        while IFS=, read -r test rps _avg _min p50 _p95 p99 _max; do
            RESULT["$1,$test,$p"]="$rps $p50 $p99"
        done < <(bench "$2" "$p" set,get "$CLIENTS" "$REQUESTS" "${3:-}")
    done
}

# The same load spread over several ports at once: a share of clients and requests each; one
# test at a time, so no process runs GETs while another still runs SETs.
run_spread() {  # system port...
    local system=$1; shift
    local ports=("$@") k=$# i p test
    for p in $PIPELINES; do
        for test in set get; do
            local pids=() files=()
            for ((i = 0; i < k; i++)); do
                local c=$((CLIENTS / k + (i < CLIENTS % k ? 1 : 0)))
                local n=$((REQUESTS / k + (i < REQUESTS % k ? 1 : 0)))
                redis-benchmark -h 127.0.0.1 -p "${ports[$i]}" -c "$c" -n "$n" -d "$SIZE" \
                    -r "$KEYSPACE" -P "$p" -t "$test" --csv >"$WORK/spread-$i.csv" 2>/dev/null &
                pids+=($!)
                PIDS+=($!)
                files+=("$WORK/spread-$i.csv")
            done
            for i in "${pids[@]}"; do
                wait "$i" || { echo "bench: redis-benchmark against $system failed" >&2; exit 1; }
            done
            RESULT["$system,${test^^},$p"]=$(python3 - "${files[@]}" <<'PY'
import sys
rows = []
for f in sys.argv[1:]:
    lines = [l.replace('"', "").split(",") for l in open(f) if l.startswith(('"SET"', '"GET"'))]
    if len(lines) != 1:
        sys.exit(f"bench: no result in {f}")
    rows.append(lines[0])
rps = sum(float(r[1]) for r in rows)
print(f"{rps:.2f} {max(float(r[4]) for r in rows):.3f} {max(float(r[6]) for r in rows):.3f}")
PY
)
        done
    done
}

# ---- (a) single-node redis-server -------------------------------------------------------------
echo "== redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') single node (appendonly yes, appendfsync everysec)"
port_free "$REDIS_PORT"
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync everysec --daemonize no --logfile "$WORK/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT"
run_one redis-single "$REDIS_PORT"
stop "$REDIS_PID"

# ---- (b) Redis Cluster, 3 masters -------------------------------------------------------------
echo "== Redis Cluster, 3 masters, no replicas (same persistence)"
RC_PIDS=()
RC_ADDRS=()
for i in 0 1 2; do
    port=$((RCLUSTER_PORT + i))
    port_free "$port"
    port_free $((port + 10000))
    mkdir -p "$WORK/rc-$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$WORK/rc-$port" --save "" \
        --appendonly yes --appendfsync everysec --daemonize no \
        --cluster-enabled yes --cluster-config-file "$WORK/rc-$port/nodes.conf" \
        --logfile "$WORK/rc-$port/redis.log" &
    RC_PIDS+=($!)
    PIDS+=($!)
    RC_ADDRS+=("127.0.0.1:$port")
done
for i in 0 1 2; do wait_port $((RCLUSTER_PORT + i)); done
redis-cli --cluster create "${RC_ADDRS[@]}" --cluster-replicas 0 --cluster-yes >"$WORK/rc-create.log" 2>&1 || {
    cat "$WORK/rc-create.log" >&2
    exit 1
}
for i in 0 1 2; do
    for t in $(seq 1 200); do
        [[ $(redis-cli -p $((RCLUSTER_PORT + i)) CLUSTER INFO 2>/dev/null) == *cluster_state:ok* ]] && break
        [ "$t" = 200 ] && { echo "bench: Redis Cluster never reached cluster_state:ok" >&2; exit 1; }
        sleep 0.05
    done
done
run_one redis-cluster "$RCLUSTER_PORT" --cluster
stop "${RC_PIDS[@]}"

# ---- (c) ringkv, 3 nodes, N=3 W=2 R=2 ---------------------------------------------------------
# `ringkv cluster up` has no durability flag, so the nodes are started here, the way it does.
echo "== ringkv $("$BIN" --version | cut -d' ' -f2), 3 nodes, N=3 W=2 R=2 (durability periodic)"
SECRET=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
RK_PIDS=()
RK_RESP=()
RK_HTTP=()
SEED="127.0.0.1:$((RINGKV_PORT + 2))"
for i in 0 1 2; do
    base=$((RINGKV_PORT + 3 * i))
    for p in "$base" $((base + 1)) $((base + 2)); do port_free "$p"; done
    seeds=()
    [ "$i" -gt 0 ] && seeds=(--seeds "$SEED")
    RINGKV_LOG=warn RINGKV_CLUSTER_SECRET="$SECRET" "$BIN" server \
        --data-dir "$WORK/ringkv-$((i + 1))" --node-id "n$((i + 1))" --durability periodic \
        --n 3 --w 2 --r 2 --resp-addr "127.0.0.1:$base" --http-addr "127.0.0.1:$((base + 1))" \
        --peer-addr "127.0.0.1:$((base + 2))" "${seeds[@]}" 2>"$WORK/ringkv-$((i + 1)).log" &
    RK_PIDS+=($!)
    PIDS+=($!)
    RK_RESP+=("$base")
    RK_HTTP+=($((base + 1)))
done
for i in 0 1 2; do wait_port "${RK_RESP[$i]}"; done
# Every node must see all three members up (gossip, 1 s period) before any load.
for i in 0 1 2; do
    for t in $(seq 1 300); do
        up=$(curl -sf "http://127.0.0.1:${RK_HTTP[$i]}/v1/cluster" | python3 -c '
import json, sys
b = json.load(sys.stdin)
assert b["durability"] == "periodic" and (b["n"], b["w"], b["r"]) == (3, 2, 2), b
print(sum(m["status"] == "up" and not m["down"] and not m["suspected"] for m in b["members"]))
' 2>/dev/null || echo 0)
        [ "$up" = 3 ] && break
        [ "$t" = 300 ] && { echo "bench: ringkv node $((i + 1)) sees $up of 3 members up after 30 s" >&2; exit 1; }
        sleep 0.1
    done
done
run_spread ringkv "${RK_RESP[@]}"

if [ "$PROFILE" = 1 ]; then
    # One node's profile under the spread SET load (unpipelined), 10 s; the load runs long enough.
    echo "== perf: node n1 (pid ${RK_PIDS[0]}) under the spread SET load, 10 s"
    LOAD_PIDS=()
    for i in 0 1 2; do
        redis-benchmark -h 127.0.0.1 -p "${RK_RESP[$i]}" -c $((CLIENTS / 3)) -n $((REQUESTS * 10)) \
            -d "$SIZE" -r "$KEYSPACE" -t set -q >/dev/null 2>&1 &
        LOAD_PIDS+=($!)
        PIDS+=($!)
    done
    sleep 1
    perf record -q -g -o "$WORK/perf.data" -p "${RK_PIDS[0]}" -- sleep 10 >/dev/null 2>&1
    stop "${LOAD_PIDS[@]}"
    perf report -i "$WORK/perf.data" --no-children -g none --sort dso,symbol --stdio >"$WORK/perf.txt" 2>/dev/null
    PERF_TOP=$(grep -E '^ +[0-9.]+%' "$WORK/perf.txt" | sed -E 's/[[:space:]-]+$//' | sed -n 1,15p)
fi
stop "${RK_PIDS[@]}"

# ---- the table --------------------------------------------------------------------------------
ratio() { python3 -c "print(f'{$1/$2:.2f}')"; }
echo
echo "redis-benchmark -c $CLIENTS -n $REQUESTS -d $SIZE -r $KEYSPACE -t set,get; $(nproc) cores shared by servers and clients"
echo "ringkv: 3 redis-benchmark processes at once, one per node, each 1/3 of -c and -n (ops/s summed, worst p50/p99)"
for p in $PIPELINES; do
    echo
    echo "-P $p"
    printf '%-14s %-4s | %12s %8s %8s | %9s %10s\n' system test "ops/s" "p50 ms" "p99 ms" "/ single" "/ cluster"
    for test in SET GET; do
        read -r s_rps _ _ <<<"${RESULT[redis-single,$test,$p]}"
        read -r c_rps _ _ <<<"${RESULT[redis-cluster,$test,$p]}"
        for system in redis-single redis-cluster ringkv; do
            read -r rps p50 p99 <<<"${RESULT[$system,$test,$p]}"
            case $system in
                redis-single) vs_s=-; vs_c=- ;;
                redis-cluster) vs_s=$(ratio "$rps" "$s_rps"); vs_c=- ;;
                ringkv) vs_s=$(ratio "$rps" "$s_rps"); vs_c=$(ratio "$rps" "$c_rps") ;;
            esac
            printf '%-14s %-4s | %12s %8s %8s | %9s %10s\n' "$system" "$test" "$rps" "$p50" "$p99" "$vs_s" "$vs_c"
        done
    done
done

echo
echo "targets (issue 3, unpipelined): ringkv ops/s >= 0.5x single-node Redis, ringkv p99 < 2 ms"
for test in SET GET; do
    read -r s_rps _ _ <<<"${RESULT[redis-single,$test,1]:-0 0 0}"
    read -r k_rps _ k_p99 <<<"${RESULT[ringkv,$test,1]:-0 0 0}"
    python3 - "$test" "$k_rps" "$s_rps" "$k_p99" <<'PY'
import sys
test, k, s, p99 = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
if s == 0:
    sys.exit(f"{test}: no unpipelined result (PIPELINES must include 1)")
r = k / s
print(f"{test}: throughput {r:.2f}x single-node Redis -> {'MET' if r >= 0.5 else 'NOT MET'}; "
      f"p99 {p99:.3f} ms -> {'MET' if p99 < 2 else 'NOT MET'}")
PY
done

if [ -n "${PERF_TOP:-}" ]; then
    echo
    echo "perf, ringkv node n1 under the spread unpipelined SET load (self time, top symbols):"
    echo "$PERF_TOP"
fi
echo
echo "load after: $(uptime)"
