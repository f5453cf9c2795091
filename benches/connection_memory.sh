#!/usr/bin/env bash
# What abusive connections cost in memory, for sizing --max-connections and
# container memory limits. Runs the release gateway (2 workers, default
# limits, --demo as its upstream) and measures its RSS while
# benches/connection_memory.py holds, for a couple of seconds each:
#   1. N idle connections,
#   2. N connections each with an unfinished 120 KiB request head (just below
#      actix-http's 128 KiB head limit: the worst an HTTP/1.1 client can make
#      the gateway buffer),
#   3. with --tls-cert/--tls-key (a throwaway openssl certificate), M HTTP/2
#      connections each sending an unfinished 4 MiB header block (h2 accepts
#      header blocks up to 16 MiB).
# Usage: benches/connection_memory.sh [N] [M]   (defaults 512 and 16)
# Loopback only; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${1:-512}
M=${2:-16}
cargo build --release --locked --bin oauth-metadata-gateway 2>&1 | tail -n 1
BIN=target/release/oauth-metadata-gateway
TMP=$(mktemp -d)
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

start_gateway() { # start_gateway PORT [extra flags...]; sets GW_PID
    local port=$1 demo
    shift
    demo=$(free_port)
    "$BIN" --listen "127.0.0.1:$port" --demo --demo-listen "127.0.0.1:$demo" \
        --upstream "http://127.0.0.1:$demo" --workers 2 "$@" >"$TMP/gw-$port.log" 2>&1 &
    GW_PID=$!
    pids+=("$GW_PID")
    for _ in $(seq 1 100); do
        if curl -kfsS -o /dev/null "$SCHEME://127.0.0.1:$port/readyz" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    cat "$TMP/gw-$port.log"
    return 1
}

echo "load average: $(cat /proc/loadavg)"
SCHEME=http
PORT=$(free_port)
start_gateway "$PORT"
echo "plain HTTP/1.1 gateway (2 workers, --max-connections 512), baseline RSS $(rss_kib "$GW_PID") KiB"
python3 benches/connection_memory.py --port "$PORT" --pid "$GW_PID" --mode idle --count "$N" --hold 2
sleep 6 # the idle connections are closed after --client-request-timeout (5s)
python3 benches/connection_memory.py --port "$PORT" --pid "$GW_PID" --mode head --count "$N" --bytes $((120 * 1024)) --hold 2
sleep 6
echo "after the connections closed: RSS $(rss_kib "$GW_PID") KiB"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=localhost -keyout "$TMP/key.pem" -out "$TMP/cert.pem" 2>/dev/null
SCHEME=https
PORT=$(free_port)
start_gateway "$PORT" --tls-cert "$TMP/cert.pem" --tls-key "$TMP/key.pem"
echo "TLS gateway, baseline RSS $(rss_kib "$GW_PID") KiB"
python3 benches/connection_memory.py --port "$PORT" --pid "$GW_PID" --mode idle --count "$M" --hold 1
python3 benches/connection_memory.py --port "$PORT" --pid "$GW_PID" --mode h2 --count "$M" --bytes $((4 * 1024 * 1024)) --hold 2
sleep 2
echo "after the connections closed: RSS $(rss_kib "$GW_PID") KiB"
