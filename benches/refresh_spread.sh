#!/usr/bin/env bash
# Upstream load over time from background refreshes: the gateway with N
# configured issuers (--ttl TTL) in front of the loopback multi-tenant
# upstream (benches/tenant_upstream.py), and the upstream's request count
# sampled every second for SECONDS. Prints one line per second and a
# summary: after the first TTL, requests per second should stay near
# N / TTL (refresh-ahead jitter), not a burst every TTL with silence between.
#
#   bash benches/refresh_spread.sh              # N=600 TTL=20 SECONDS=80 (80 s)
#
# Settings (environment): N, TTL (seconds), SECONDS_TOTAL, DELAY (upstream
# answer delay, default 0.05), GATEWAY_BIN (default: build target/release).
# Everything listens on 127.0.0.1 on free ports; every process is stopped on
# exit. Needs curl and python3 (and cargo unless GATEWAY_BIN is given).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-600}
TTL=${TTL:-20}
SECONDS_TOTAL=${SECONDS_TOTAL:-80}
DELAY=${DELAY:-0.05}
# shellcheck source=benches/lib.sh
. benches/lib.sh
for v in N TTL SECONDS_TOTAL; do
    case "${!v}" in *[!0-9]* | "" | 0*) die "$v: \"${!v}\" is not a positive number" ;; esac
done
install_missing curl python3
build_gateway
init_work gateway-refresh-spread

P_UP=$(free_port)
P_GW=$(free_port)
start upstream python3 benches/tenant_upstream.py --delay "$DELAY" --max-seconds $((SECONDS_TOTAL + 60)) --port "$P_UP"
wait_ready "http://127.0.0.1:$P_UP/_stats" upstream
awk -v n="$N" -v p="$P_UP" 'BEGIN {
    for (i = 1; i <= n; i++) printf "[[authorization_server]]\nissuer = \"http://127.0.0.1:%d/tenant%d\"\n\n", p, i }' \
    >"$WORK/issuers.toml"
RUST_LOG=${RUST_LOG:-warn} start gateway "$GATEWAY_BIN" --config "$WORK/issuers.toml" \
    --listen "127.0.0.1:$P_GW" --ttl "${TTL}s"

requests() {
    curl -s --max-time 2 "http://127.0.0.1:$P_UP/_stats" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["ports"][sys.argv[1]]["requests"])' "$P_UP"
}
log "$N issuers, --ttl ${TTL}s: upstream requests per second for ${SECONDS_TOTAL}s"
prev=0
: >"$WORK/rate"
for i in $(seq "$SECONDS_TOTAL"); do
    sleep 1
    now=$(requests)
    echo "$i $((now - prev))" >>"$WORK/rate"
    prev=$now
done
awk -v ttl="$TTL" -v n="$N" '
    { printf "%s:%s ", $1, $2 }
    $1 > ttl { s += $2; c++; if ($2 == 0) zero++; if ($2 > max) max = $2; if (min == "" || $2 < min) min = $2 }
    END {
        printf "\n\nafter the first TTL (%d s): mean %.1f req/s (N/TTL = %.1f), min %d, max %d, seconds with none %d\n",
            c, s / c, n / ttl, min, max, zero
    }' "$WORK/rate"
