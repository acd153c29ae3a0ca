#!/usr/bin/env bash
# Elasticity: how long a local ringkv cluster holding a known amount of data takes to grow by one
# node and shrink back, how much data moves against the optimum, and what a client's p99 latency
# does meanwhile; with redis-server on the same machine as the latency reference.
#
# 1. redis-server (appendonly yes, appendfsync everysec, no RDB) gets the data set (KEYS keys
#    `key:%012d`, VALUE_SIZE bytes of random hex each, through `redis-cli --pipe`), then the at-rest
#    load: two redis-benchmark processes at once, `-t set` and `-t get`, each with CLIENTS/2
#    clients and REQUESTS requests over the same keys (-r KEYS -d VALUE_SIZE). Then it is stopped.
# 2. `ringkv cluster up --nodes 3 --n 3` (durability periodic: fsync every 10 ms) gets the same
#    data set through n1, one unreported pass of the load to warm its caches, then the same
#    at-rest load against n1.
# 3. (a) join: `ringkv cluster add --nodes 1` (start n4 -> n4 `up` in its own view and another
#    member's, i.e. every partition it now replicates streamed in), with the same load against
#    n1 started at the same instant (d).
# 4. the at-rest load again with 4 nodes, then (b) decommission: `ringkv cluster remove` (n4 leaves
#    -> `left` in every view, then SIGTERM), again with the load against n1.
# (c) data moved: the deltas of ringkv_stream_{partitions_pulled,keys_received,bytes_received}_total
#    summed over the nodes, against the optimum: with N replicas of K keys on n nodes each node
#    holds N*K/n key copies, so a join n -> n+1 must move the new node's N*K/(n+1) copies (and
#    N*Q/(n+1) partition replicas, Q partitions) and a leave n+1 -> n the leaver's N*K/(n+1); for
#    3 -> 4 -> 3 with N=3: 3/4 of the keys each way. ringkv pulls every moved partition from
#    n - w + 1 = 2 replicas (so that a write acknowledged by any W of them is on the new owner),
#    so keys and bytes received are ~2x the optimum by design; partitions pulled are 1x.
# The latency figures of a move are only about the move while the load runs inside it: the script
# prints which share of the load's wall time fell inside the move ("coverage").
#
# Usage: bench/elasticity.sh   (env: RINGKV_BIN=path/to/release/ringkv [default: cargo build
#        --release, honouring CARGO_TARGET_DIR], KEYS=100000 VALUE_SIZE=1024 CLIENTS=50
#        REQUESTS=20000 REDIS_PORT=16379)
# Needs: redis-server, redis-cli, redis-benchmark (Debian redis-server, redis-tools), python3,
# curl, flock, cargo (unless RINGKV_BIN is set). Takes the benchmark lock /tmp/ringkv-bench.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh

bench_lock

KEYS=${KEYS:-100000}
VALUE_SIZE=${VALUE_SIZE:-1024}
CLIENTS=${CLIENTS:-50}
REQUESTS=${REQUESTS:-20000}
REDIS_PORT=${REDIS_PORT:-16379}
N=3

require_tools redis-server redis-cli redis-benchmark python3 curl flock

echo "load before: $(uptime)"
if [ -n "${RINGKV_BIN:-}" ]; then
    BIN=$RINGKV_BIN
else
    cargo build --release --quiet
    BIN=${CARGO_TARGET_DIR:-target}/release/ringkv
fi
[ -x "$BIN" ] || { echo "bench: no ringkv binary at $BIN" >&2; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/ringkv-elasticity.XXXXXX")
CDIR=$WORK/cluster
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -f "$CDIR/cluster.json" ]; then "$BIN" cluster down --dir "$CDIR" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# The nodes `cluster up` starts inherit these (and `cluster add` copies them from a running node).
export RINGKV_DURABILITY=periodic RINGKV_LOG=warn RUST_LIB_BACKTRACE=0

now() { date +%s.%N; }

port_free() {  # port
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
        echo "bench: port $1 is already in use; set REDIS_PORT" >&2
        exit 1
    fi
}

# The data set as RESP SETs on stdout: KEYS keys in redis-benchmark's key format (so its -r KEYS
# load hits exactly these keys), VALUE_SIZE bytes of random hex each (incompressible).
gen_data() {
    python3 - "$KEYS" "$VALUE_SIZE" <<'PY'
import os, sys
keys, size = int(sys.argv[1]), int(sys.argv[2])
out, buf = sys.stdout.buffer, []
for i in range(keys):
    k = b"key:%012d" % i
    v = os.urandom((size + 1) // 2).hex().encode()[:size]
    buf.append(b"*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n" % (len(k), k, len(v), v))
    if len(buf) == 1000:
        out.write(b"".join(buf))
        buf = []
out.write(b"".join(buf))
PY
}

load_data() {  # port label
    local t0 t1 out
    t0=$(now)
    out=$(gen_data | timeout 600 redis-cli -p "$1" --pipe 2>&1) || {
        echo "bench: loading $2 failed: $out" >&2
        exit 1
    }
    t1=$(now)
    if ! grep -q "errors: 0, replies: $KEYS" <<<"$out"; then
        echo "bench: loading $2: $out" >&2
        exit 1
    fi
    python3 -c "print(f'loaded {$KEYS} keys x {$VALUE_SIZE} B into $2 in {$t1 - $t0:.1f} s')"
}

# The load: SET and GET redis-benchmark processes at once against one port, CLIENTS/2 clients and
# REQUESTS requests each. Writes "$WORK/load-LABEL-{set,get}.csv" and "$WORK/load-LABEL.time"
# (start end, epoch seconds). Runs in the foreground; bounded by its request count and `timeout`.
run_load() {  # port label
    local t0 t1 c=$((CLIENTS / 2)) s g
    t0=$(now)
    timeout 600 redis-benchmark -h 127.0.0.1 -p "$1" -c "$c" -n "$REQUESTS" -d "$VALUE_SIZE" \
        -r "$KEYS" -t set --csv >"$WORK/load-$2-set.csv" 2>"$WORK/load-$2-set.err" &
    s=$!
    PIDS+=("$s")
    timeout 600 redis-benchmark -h 127.0.0.1 -p "$1" -c "$c" -n "$REQUESTS" -d "$VALUE_SIZE" \
        -r "$KEYS" -t get --csv >"$WORK/load-$2-get.csv" 2>"$WORK/load-$2-get.err" &
    g=$!
    PIDS+=("$g")
    wait "$s" || { echo "bench: redis-benchmark SET ($2) failed" >&2; cat "$WORK/load-$2-set.err" >&2; exit 1; }
    wait "$g" || { echo "bench: redis-benchmark GET ($2) failed" >&2; cat "$WORK/load-$2-get.err" >&2; exit 1; }
    t1=$(now)
    echo "$t0 $t1" >"$WORK/load-$2.time"
}

# Sums of the stream counters over the running nodes, per node id, as JSON.
stream_counters() {
    python3 - "$CDIR/cluster.json" <<'PY'
import json, sys, urllib.request
out = {}
for n in json.load(open(sys.argv[1]))["nodes"]:
    try:
        text = urllib.request.urlopen(f"http://{n['http_addr']}/metrics", timeout=5).read().decode()
    except OSError:
        continue
    vals = {}
    for line in text.splitlines():
        for name in ("stream_partitions_pulled", "stream_keys_received", "stream_bytes_received",
                     "storage_disk_bytes"):
            for full in (f"ringkv_{name}_total ", f"ringkv_{name} "):
                if line.startswith(full):
                    vals[name] = float(line.split()[1])
    out[n["id"]] = vals
print(json.dumps(out))
PY
}

# Waits (at most 120 s) until the cluster's node processes together use under 10% of a core
# over a second: a bulk load leaves flushes and compactions behind, and a move leaves its
# tail, which would otherwise land in the next phase's latency.
settle() {
    python3 - "$CDIR/cluster.json" <<'PY'
import json, os, sys, time
pids = [n["pid"] for n in json.load(open(sys.argv[1]))["nodes"]]
tick = os.sysconf("SC_CLK_TCK")
def cpu():
    total = 0
    for p in pids:
        try:
            f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
            total += int(f[11]) + int(f[12])
        except OSError:
            pass
    return total / tick
t0 = time.time()
while True:
    a = cpu(); time.sleep(1); used = cpu() - a
    if used < 0.10 or time.time() - t0 > 120:
        print(f"settled: the nodes use {used * 100:.0f}% of a core ({time.time() - t0:.0f} s)")
        break
PY
}

node_field() {  # id field
    python3 -c "import json,sys; print(next(n['$2'] for n in json.load(open('$CDIR/cluster.json'))['nodes'] if n['id'] == '$1'))"
}

# ---- redis-server: the latency reference -----------------------------------------------------
echo "== redis-server $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/') (appendonly yes, appendfsync everysec)"
port_free "$REDIS_PORT"
mkdir -p "$WORK/redis"
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
    --appendonly yes --appendfsync everysec --daemonize no --logfile "$WORK/redis.log" &
REDIS_PID=$!
PIDS+=("$REDIS_PID")
wait_port "$REDIS_PORT"
load_data "$REDIS_PORT" redis-server
run_load "$REDIS_PORT" redis
kill "$REDIS_PID"
wait "$REDIS_PID" 2>/dev/null || true

# ---- ringkv: 3 nodes, N=3 --------------------------------------------------------------------
echo "== ringkv $("$BIN" --version | cut -d' ' -f2): cluster up --nodes 3 --n $N (durability periodic)"
"$BIN" cluster up --nodes 3 --n "$N" --dir "$CDIR" >"$WORK/up.log"
N1_RESP=$(node_field n1 resp_addr)
N1_RESP=${N1_RESP##*:}
N1_HTTP=$(node_field n1 http_addr)
for t in $(seq 1 300); do
    up=$(curl -sf "http://$N1_HTTP/v1/cluster" | python3 -c '
import json, sys
print(sum(m["status"] == "up" and not m["down"] and not m["suspected"] for m in json.load(sys.stdin)["members"]))
' 2>/dev/null || echo 0)
    [ "$up" = 3 ] && break
    [ "$t" = 300 ] && { echo "bench: n1 sees $up of 3 members up after 30 s" >&2; exit 1; }
    sleep 0.1
done
load_data "$N1_RESP" "ringkv (through n1, W=2)"
settle
# A first pass of the load warms the nodes' caches after the bulk load (without it the first
# measurement at rest is the slowest phase of all); it is not reported.
run_load "$N1_RESP" warmup
settle
run_load "$N1_RESP" rest3

# (a) + (d): the join of n4 under the load against n1, both started at the same instant.
settle
BEFORE_JOIN=$(stream_counters)
JOIN_T0=$(now)
"$BIN" cluster add --nodes 1 --dir "$CDIR" --timeout 600 >"$WORK/add.log" 2>&1 &
ADD_PID=$!
PIDS+=("$ADD_PID")
run_load "$N1_RESP" join
wait "$ADD_PID" || { echo "bench: cluster add failed:" >&2; cat "$WORK/add.log" >&2; exit 1; }
JOIN_T1=$(now)
echo "$JOIN_T0 $JOIN_T1" >"$WORK/move-join.time"
AFTER_JOIN=$(stream_counters)
echo "-- ringkv cluster add --nodes 1 (under the load):"
sed 's/^/   /' "$WORK/add.log"

settle
run_load "$N1_RESP" rest4

# (b) + (d): the decommission of n4 under the same load.
settle
BEFORE_LEAVE=$(stream_counters)
LEAVE_T0=$(now)
"$BIN" cluster remove --dir "$CDIR" --timeout 600 >"$WORK/remove.log" 2>&1 &
RM_PID=$!
PIDS+=("$RM_PID")
run_load "$N1_RESP" leave
wait "$RM_PID" || { echo "bench: cluster remove failed:" >&2; cat "$WORK/remove.log" >&2; exit 1; }
LEAVE_T1=$(now)
echo "$LEAVE_T0 $LEAVE_T1" >"$WORK/move-leave.time"
AFTER_LEAVE=$(stream_counters)
echo "-- ringkv cluster remove (n4, under the load):"
sed 's/^/   /' "$WORK/remove.log"

"$BIN" cluster down --dir "$CDIR" >/dev/null

# ---- the report -------------------------------------------------------------------------------
python3 - "$WORK" "$KEYS" "$VALUE_SIZE" "$N" "$CLIENTS" "$REQUESTS" \
    "$BEFORE_JOIN" "$AFTER_JOIN" "$BEFORE_LEAVE" "$AFTER_LEAVE" <<'PY'
import json, re, sys
work, keys, size, n, clients, requests = sys.argv[1], *map(int, sys.argv[2:7])
before_join, after_join, before_leave, after_leave = map(json.loads, sys.argv[7:11])
Q = 1024

def csv(label, test):
    for line in open(f"{work}/load-{label}-{test}.csv"):
        f = line.replace('"', "").strip().split(",")
        if f[0] == test.upper():
            return {"rps": float(f[1]), "p50": float(f[4]), "p99": float(f[6]), "max": float(f[7])}
    sys.exit(f"bench: no {test} result for {label}")

def span(path):
    a, b = map(float, open(path).read().split())
    return a, b

print()
print(f"data: {keys} keys x {size} B values = {keys * size / 2**20:.1f} MiB of values "
      f"({n} copies: {n * keys * size / 2**20:.1f} MiB); load per phase: redis-benchmark -t set and "
      f"-t get at once, -c {clients // 2} -n {requests} -d {size} -r {keys} each")

def moved(before, after):
    tot = {}
    for node, vals in after.items():
        for k, v in vals.items():
            tot[k] = tot.get(k, 0) + v - before.get(node, {}).get(k, 0)
    return tot

# (a), (b)
join_log = open(f"{work}/add.log").read()
leave_log = open(f"{work}/remove.log").read()
j0, j1 = span(f"{work}/move-join.time")
l0, l1 = span(f"{work}/move-leave.time")
up_after = re.search(r"up after ([0-9.]+)s", join_log)
left_after = re.search(r"left after ([0-9.]+)s", leave_log)
print()
print(f"(a) join of a 4th node: {j1 - j0:.1f} s from `cluster add` to the node up with streaming "
      f"done (the node itself: up {up_after.group(1) if up_after else '?'} s after its ports opened)")
print(f"(b) decommission: leave -> left {left_after.group(1) if left_after else '?'} s; "
      f"`cluster remove` with the stop: {l1 - l0:.1f} s")

# (c)
print()
print("(c) data moved (stream counters summed over the nodes) against the optimum:")
print(f"    {'move':<12} {'partitions':>10} {'optimal':>8} {'ratio':>6} | {'keys recv':>10} "
      f"{'optimal':>8} {'ratio':>6} | {'MiB recv':>9} {'optimal':>8}")
for name, (b, a), nodes_after in (("join 3->4", (before_join, after_join), 4),
                                   ("leave 4->3", (before_leave, after_leave), 3)):
    m = moved(b, a)
    parts, ks, by = (m.get("stream_partitions_pulled", 0), m.get("stream_keys_received", 0),
                     m.get("stream_bytes_received", 0))
    opt_parts = n * Q / 4
    opt_keys = n * keys / 4
    per_key = by / ks if ks else 0
    print(f"    {name:<12} {parts:>10.0f} {opt_parts:>8.0f} {parts / opt_parts:>6.2f} | "
          f"{ks:>10.0f} {opt_keys:>8.0f} {ks / opt_keys:>6.2f} | {by / 2**20:>9.1f} "
          f"{opt_keys * per_key / 2**20:>8.1f}")
print("    optimum: N*Q/4 partition replicas and N*KEYS/4 key copies each way (the 4th node's "
      "share); keys are pulled from n-w+1 = 2 replicas each, so ~2x by design")

# (d)
rows = [("redis-server, at rest", "redis"), ("ringkv 3 nodes, at rest", "rest3"),
        ("ringkv during the join", "join"), ("ringkv 4 nodes, at rest", "rest4"),
        ("ringkv during the leave", "leave")]
res = {label: {t: csv(label, t) for t in ("set", "get")} for _, label in rows}
cover = {}
for label, move in (("join", "move-join"), ("leave", "move-leave")):
    b0, b1 = span(f"{work}/load-{label}.time")
    m0, m1 = span(f"{work}/{move}.time")
    inside = max(0.0, min(b1, m1) - max(b0, m0))
    cover[label] = (inside / (b1 - b0), b1 - b0, m1 - m0)
print()
print("(d) client latency on n1 (a node that stays), ms:")
print(f"    {'phase':<26} | {'SET ops/s':>9} {'p50':>7} {'p99':>7} | {'GET ops/s':>9} {'p50':>7} "
      f"{'p99':>7} | SET p99/rest GET p99/rest")
for title, label in rows:
    s, g = res[label]["set"], res[label]["get"]
    base = res["rest4" if label == "leave" else "rest3"]
    rel = ("-", "-") if label in ("redis", "rest3", "rest4") else (
        f"{s['p99'] / base['set']['p99']:.2f}", f"{g['p99'] / base['get']['p99']:.2f}")
    print(f"    {title:<26} | {s['rps']:>9.0f} {s['p50']:>7.3f} {s['p99']:>7.3f} | {g['rps']:>9.0f} "
          f"{g['p50']:>7.3f} {g['p99']:>7.3f} | {rel[0]:>12} {rel[1]:>11}")
for label in ("join", "leave"):
    c, b, m = cover[label]
    print(f"    {label}: the load ran {b:.1f} s, the move {m:.1f} s; {c * 100:.0f}% of the load ran "
          f"during the move")
r3 = res["rest3"]
print(f"    ringkv at rest / redis-server p99: SET {r3['set']['p99'] / res['redis']['set']['p99']:.2f}x, "
      f"GET {r3['get']['p99'] / res['redis']['get']['p99']:.2f}x")
for label in ("join", "leave"):
    for t in ("set", "get"):
        err = open(f"{work}/load-{label}-{t}.err").read().strip()
        if err:
            print(f"    redis-benchmark {t.upper()} during the {label} said: {err[:300]}")
PY
echo
echo "load after: $(uptime)"
