# Shared by the bench scripts (sourced, not run): the benchmark lock, the tool check and the
# wait for a Redis-protocol port, so two benchmarks never share the machine and every script
# fails the same way when something is missing.

# Takes /tmp/ringkv-bench.lock (fd 9) for the rest of the script, waiting if another holds it.
bench_lock() {
    exec 9>/tmp/ringkv-bench.lock
    if ! flock -n 9; then
        echo "bench: another benchmark holds /tmp/ringkv-bench.lock; waiting" >&2
        flock 9
    fi
}

# Exits with status 2 unless every named tool is on PATH.
require_tools() {  # tool...
    for tool in "$@"; do
        command -v "$tool" >/dev/null || { echo "bench: $tool is required" >&2; exit 2; }
    done
}

# Waits (10 s at most) until something answers PING on the port.
wait_port() {  # port
    for _ in $(seq 1 200); do
        redis-cli -p "$1" PING >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    echo "bench: nothing answers on port $1" >&2
    exit 1
}
