#!/usr/bin/env bash
# What a probe and a scrape cost next to a document (issue #23): the
# gateway with N configured issuers (default 3,000) in front of the
# loopback multi-tenant upstream (benches/tenant_upstream.py), then wrk
# against one document, /readyz and /metrics, ROUNDS rounds of DURATION
# seconds each, with the gateway's CPU time per request. Prints one line
# per run and the medians, with each route's rate as a share of the
# document's (the targets: /readyz >= 0.5x, /metrics >= 0.1x).
#
#   bash benches/probes.sh                 # N=3000 DURATION=5 ROUNDS=3 CONNECTIONS=4
#   PIN=1 bash benches/probes.sh           # wrk on CPU 0, gateway and upstream on CPU 1
#
# Settings (environment): N, DURATION, ROUNDS, CONNECTIONS, WRK_THREADS
# (default 1), WORKERS (gateway --workers, default 1), PIN, GATEWAY_BIN
# (default: build target/release). Everything listens on 127.0.0.1 on free
# ports; every process is stopped on exit. Needs wrk, curl and python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-3000}
DURATION=${DURATION:-5}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-4}
WRK_THREADS=${WRK_THREADS:-1}
WORKERS=${WORKERS:-1}
PIN=${PIN:-}
# shellcheck source=benches/lib.sh
. benches/lib.sh
for v in N DURATION ROUNDS CONNECTIONS WRK_THREADS WORKERS; do
    case "${!v}" in *[!0-9]* | "" | 0*) die "$v: \"${!v}\" is not a positive number" ;; esac
done
check_pin
install_missing wrk curl python3
build_gateway
init_work gateway-probes

P_UP=$(free_port)
P_GW=$(free_port)
start upstream python3 benches/tenant_upstream.py --delay 0.001 --max-seconds 3600 --port "$P_UP"
UP_PID=$LAST_PID
wait_ready "http://127.0.0.1:$P_UP/_stats" upstream
awk -v n="$N" -v p="$P_UP" 'BEGIN {
    for (i = 1; i <= n; i++) printf "[[authorization_server]]\nissuer = \"http://127.0.0.1:%d/tenant%d\"\n\n", p, i }' \
    >"$WORK/issuers.toml"
RUST_LOG=${RUST_LOG:-warn} start gateway "$GATEWAY_BIN" --config "$WORK/issuers.toml" \
    --listen "127.0.0.1:$P_GW" --workers "$WORKERS"
GW_PID=$LAST_PID
pin_servers "$GW_PID" "$UP_PID"
log "waiting for the $N documents (/readyz 200)"
for _ in $(seq 600); do
    [ "$(http_code "http://127.0.0.1:$P_GW/readyz")" = 200 ] && break
    sleep 0.5
done
[ "$(http_code "http://127.0.0.1:$P_GW/readyz")" = 200 ] || die "not ready after 300 s"

declare -A URL=(
    [document]="http://127.0.0.1:$P_GW/.well-known/oauth-authorization-server/tenant1"
    [readyz]="http://127.0.0.1:$P_GW/readyz"
    [metrics]="http://127.0.0.1:$P_GW/metrics"
)
for t in document readyz metrics; do
    timeout 31 ${WRK_CPUS:+taskset -c "$WRK_CPUS"} wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d 1s "${URL[$t]}" >/dev/null
done
: >"$WORK/results"
for _ in $(seq "$ROUNDS"); do
    for t in document readyz metrics; do
        measure "$t" "${URL[$t]}" "$CONNECTIONS" "$DURATION" "$GW_PID"
    done
done
echo
echo "$(machine); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$PIN" ]; then echo "pinned (PIN=1): wrk on CPU 0; gateway and upstream on CPU 1"; fi
echo "wrk -t$WRK_THREADS -c$CONNECTIONS, ${ROUNDS} rounds x ${DURATION}s, medians; $N configured issuers; gateway --workers $WORKERS"
awk "$AWK_MEDIAN"'
    { rps[$1] = rps[$1] " " $3; cpu[$1] = cpu[$1] " " $7; p99[$1] = p99[$1] " " $5; err[$1] += $6 }
    END {
        d = median(rps["document"])
        printf "%-10s %12s %9s %12s %14s %7s\n", "route", "req/s", "x doc", "p99 us", "server us/req", "errors"
        split("document readyz metrics", order, " ")
        for (i = 1; i <= 3; i++) {
            t = order[i]
            printf "%-10s %12.0f %9.2f %12.0f %14.2f %7d\n", t, median(rps[t]), median(rps[t]) / d, median(p99[t]), median(cpu[t]), err[t]
        }
    }' "$WORK/results"
