#!/usr/bin/env bash
# Soak run: the release gateway with a short TTL in front of an upstream
# that flaps between good, down, slow and garbage (benches/flapping_upstream.py),
# loaded with wrk for a bounded time. Reports requests served, non-200
# answers (must be 0: the load starts once the gateway is warm, and a
# failing upstream is covered by the stale document), upstream fetches (from
# /metrics), and the gateway's RSS at start and end. Exits non-zero if any
# client request failed, RSS grew beyond noise, or the gateway did not stop
# cleanly on SIGTERM.
#
# Usage: benches/soak.sh [DURATION_SECONDS]        (default 180)
# Environment knobs (all optional):
#   SOAK_CONNECTIONS=16  wrk connections      SOAK_THREADS=2  wrk threads
#   SOAK_TTL=2s          gateway --ttl        SOAK_PHASE_SECONDS=10  upstream phase length
#   SOAK_WORKERS=2       gateway --workers    SOAK_RSS_SLACK_KIB=4096  allowed RSS growth
# Everything listens on 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${1:-${SOAK_DURATION:-180}}
CONNECTIONS=${SOAK_CONNECTIONS:-16}
THREADS=${SOAK_THREADS:-2}
TTL=${SOAK_TTL:-2s}
PHASE=${SOAK_PHASE_SECONDS:-10}
WORKERS=${SOAK_WORKERS:-2}
RSS_SLACK_KIB=${SOAK_RSS_SLACK_KIB:-4096}
[[ $DURATION =~ ^[0-9]+$ && $DURATION -ge 10 && $DURATION -le 86400 ]] || {
    echo "duration must be 10..86400 seconds, not '$DURATION'" >&2
    exit 2
}

if ! command -v wrk >/dev/null 2>&1; then
    echo "==> installing wrk (Debian package)"
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

echo "==> cargo build --release"
cargo build --release --locked --bin oauth-metadata-gateway 2>&1 | tail -n 1
BIN=target/release/oauth-metadata-gateway

TMP=$(mktemp -d)
pids=()
# shellcheck disable=SC2329 # invoked by the EXIT trap
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
    rm -rf "$TMP"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
rss_kib() {
    awk '/^VmRSS:/ {print $2}' "/proc/$1/status"
}
metric_sum() { # metric_sum NAME [LABEL_FILTER]: sums the samples of a metric
    awk -v name="$1" -v filter="${2:-}" '
        index($0, name) == 1 && (filter == "" || index($0, filter)) { s += $NF }
        END { printf "%d\n", s }' "$TMP/metrics.txt"
}

UP_PORT=$(free_port)
GW_PORT=$(free_port)
UPSTREAM=http://127.0.0.1:$UP_PORT
GATEWAY=http://127.0.0.1:$GW_PORT
DOC=/.well-known/oauth-authorization-server

echo "==> load average before: $(cat /proc/loadavg)"
python3 benches/flapping_upstream.py --port "$UP_PORT" --phase-seconds "$PHASE" \
    --slow-seconds 3 --max-seconds $((DURATION + 120)) --stats "$TMP/upstream.json" \
    >"$TMP/upstream.log" 2>&1 &
UP_PID=$!
pids+=("$UP_PID")

# Short TTL so the refresher fetches often; max-stale covers every bad phase;
# the upstream timeout is shorter than the slow phase's delay.
"$BIN" --listen "127.0.0.1:$GW_PORT" --upstream "$UPSTREAM" --ttl "$TTL" \
    --max-stale 1h --upstream-timeout 1s --retry-backoff-min 200ms \
    --retry-backoff-max 2s --workers "$WORKERS" --shutdown-timeout 10s \
    --log-format json >"$TMP/gateway.log" 2>&1 &
GW_PID=$!
pids+=("$GW_PID")

# Warm: /readyz 200 (bounded). The upstream starts in its good phase.
for _ in $(seq 1 150); do
    if curl -fsS -o /dev/null "$GATEWAY/readyz" 2>/dev/null; then
        break
    fi
    kill -0 "$GW_PID" 2>/dev/null || { cat "$TMP/gateway.log"; exit 1; }
    sleep 0.2
done
curl -fsS -o /dev/null "$GATEWAY/readyz" || { echo "gateway never became ready"; cat "$TMP/gateway.log"; exit 1; }
# A few requests so the start figure includes the server's warm buffers.
for _ in 1 2 3 4 5; do curl -fsS -o /dev/null "$GATEWAY$DOC"; done
RSS_START=$(rss_kib "$GW_PID")

# RSS every 5s while loaded.
(
    while kill -0 "$GW_PID" 2>/dev/null; do
        echo "$(date +%s) $(rss_kib "$GW_PID" 2>/dev/null || echo 0)"
        sleep 5
    done
) >"$TMP/rss.txt" &
pids+=("$!")

echo "==> wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s $GATEWAY$DOC (upstream flaps every ${PHASE}s, ttl $TTL)"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 5s --latency "$GATEWAY$DOC" >"$TMP/wrk.txt" 2>&1
cat "$TMP/wrk.txt"

RSS_END=$(rss_kib "$GW_PID")
RSS_MAX=$(awk 'BEGIN {m = 0} $2 > m {m = $2} END {print m}' "$TMP/rss.txt")
curl -fsS "$GATEWAY/metrics" >"$TMP/metrics.txt"
echo "==> load average after: $(cat /proc/loadavg)"

# Stop: the gateway must exit 0 on SIGTERM.
kill -TERM "$GW_PID"
gw_status=0
wait "$GW_PID" || gw_status=$?
kill -TERM "$UP_PID" 2>/dev/null || true
wait "$UP_PID" 2>/dev/null || true

REQUESTS=$(awk '/requests in/ {print $1}' "$TMP/wrk.txt")
NON2XX=$(awk -F: '/Non-2xx or 3xx responses/ {gsub(/ /, "", $2); print $2}' "$TMP/wrk.txt")
NON2XX=${NON2XX:-0}
SOCKET_ERRORS=$(awk '/Socket errors/ {s = 0; for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) s += $i; print s}' "$TMP/wrk.txt")
SOCKET_ERRORS=${SOCKET_ERRORS:-0}
FETCHES=$(metric_sum metadata_gateway_upstream_fetches_total)
FETCH_OK=$(metric_sum metadata_gateway_upstream_fetches_total 'outcome="ok"')
echo
echo "==> soak summary (${DURATION}s, ttl $TTL, $CONNECTIONS connections, $WORKERS workers)"
echo "requests served:        $REQUESTS"
echo "non-2xx responses:      $NON2XX"
echo "socket errors/timeouts: $SOCKET_ERRORS"
echo "upstream fetches:       $FETCHES ($FETCH_OK ok)"
grep '^metadata_gateway_upstream_fetches_total' "$TMP/metrics.txt" | sed 's/^/  /'
grep '^metadata_gateway_lookups_total' "$TMP/metrics.txt" | sed 's/^/  /'
echo "upstream requests by phase: $(cat "$TMP/upstream.json" 2>/dev/null || echo '?')"
echo "RSS start / end / max:  ${RSS_START} / ${RSS_END} / ${RSS_MAX} KiB"
echo "gateway exit on SIGTERM: $gw_status"

fail=0
if [[ $NON2XX -ne 0 || $SOCKET_ERRORS -ne 0 ]]; then
    echo "FAIL: $NON2XX non-2xx responses and $SOCKET_ERRORS socket errors after warm-up"
    fail=1
fi
if [[ $((RSS_END - RSS_START)) -gt $RSS_SLACK_KIB ]]; then
    echo "FAIL: RSS grew by $((RSS_END - RSS_START)) KiB (allowed $RSS_SLACK_KIB KiB)"
    fail=1
fi
if [[ $gw_status -ne 0 ]]; then
    echo "FAIL: the gateway exited with $gw_status on SIGTERM"
    tail -n 20 "$TMP/gateway.log"
    fail=1
fi
[[ $fail -eq 0 ]] && echo "PASS"
exit $fail
