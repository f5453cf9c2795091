#!/usr/bin/env bash
# One hung upstream host next to a healthy one (issue #23): HUNG issuers on
# a loopback upstream whose every answer takes HUNG_DELAY seconds (past the
# gateway's --upstream-timeout, 5 s by default), OK issuers on a second
# upstream (another port: the per-host limiter counts scheme, host and
# port) answering at once, --ttl TTL. Every SAMPLE seconds for
# SECONDS_TOTAL, each healthy document is fetched through the gateway and
# its Age and Cache-Status noted. Prints the samples and a summary: how
# many healthy answers were stale (Age >= TTL), the largest Age seen, and
# the longest time the healthy upstream went without a request.
#
#   bash benches/hung_host.sh     # HUNG=300 OK=5 TTL=12 HUNG_DELAY=8 SECONDS_TOTAL=60
#
# Settings (environment): the above, SAMPLE (default 5), GATEWAY_BIN
# (default: build target/release). Everything listens on 127.0.0.1 on free
# ports; every process is stopped on exit. Needs curl and python3.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HUNG=${HUNG:-300}
OK=${OK:-5}
TTL=${TTL:-12}
HUNG_DELAY=${HUNG_DELAY:-8}
SECONDS_TOTAL=${SECONDS_TOTAL:-60}
SAMPLE=${SAMPLE:-5}
# shellcheck source=benches/lib.sh
. benches/lib.sh
for v in HUNG OK TTL HUNG_DELAY SECONDS_TOTAL SAMPLE; do
    case "${!v}" in *[!0-9]* | "" | 0*) die "$v: \"${!v}\" is not a positive number" ;; esac
done
install_missing curl python3
build_gateway
init_work gateway-hung-host

P_HUNG=$(free_port)
P_OK=$(free_port)
P_GW=$(free_port)
start hung python3 benches/tenant_upstream.py --delay "$HUNG_DELAY" --max-seconds $((SECONDS_TOTAL + 60)) --port "$P_HUNG"
start ok python3 benches/tenant_upstream.py --delay 0.005 --max-seconds $((SECONDS_TOTAL + 60)) --port "$P_OK"
wait_ready "http://127.0.0.1:$P_HUNG/_stats" hung-upstream
wait_ready "http://127.0.0.1:$P_OK/_stats" ok-upstream
awk -v h="$HUNG" -v o="$OK" -v ph="$P_HUNG" -v po="$P_OK" 'BEGIN {
    for (i = 1; i <= o; i++) printf "[[authorization_server]]\nissuer = \"http://127.0.0.1:%d/ok%d\"\n\n", po, i
    for (i = 1; i <= h; i++) printf "[[authorization_server]]\nissuer = \"http://127.0.0.1:%d/hung%d\"\n\n", ph, i }' \
    >"$WORK/issuers.toml"
RUST_LOG=${RUST_LOG:-error} start gateway "$GATEWAY_BIN" --config "$WORK/issuers.toml" \
    --listen "127.0.0.1:$P_GW" --ttl "${TTL}s" --ready-min-percent 1
wait_ready "http://127.0.0.1:$P_GW/healthz" gateway

ok_requests() {
    curl -s --max-time 2 "http://127.0.0.1:$P_OK/_stats" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["ports"][sys.argv[1]]["requests"])' "$P_OK"
}
log "$HUNG hung issuers (${HUNG_DELAY}s answers), $OK healthy, --ttl ${TTL}s: sampling every ${SAMPLE}s for ${SECONDS_TOTAL}s"
: >"$WORK/samples"
: >"$WORK/gaps"
last_count=$(ok_requests)
last_change=0
start_s=$(date +%s)
elapsed=0
while [ "$elapsed" -lt "$SECONDS_TOTAL" ]; do
    # The healthy upstream's request count, each second (gaps without refresh).
    for _ in $(seq "$SAMPLE"); do
        sleep 1
        elapsed=$(($(date +%s) - start_s))
        c=$(ok_requests)
        if [ "$c" != "$last_count" ]; then
            echo $((elapsed - last_change)) >>"$WORK/gaps"
            last_count=$c
            last_change=$elapsed
        fi
    done
    for i in $(seq "$OK"); do
        curl -s -o /dev/null -D - --max-time 5 \
            "http://127.0.0.1:$P_GW/.well-known/oauth-authorization-server/ok$i" |
            awk -v t="$elapsed" -v d="ok$i" 'BEGIN {age = "-"; cs = "-"} tolower($1) == "age:" {age = $2 + 0}
                tolower($1) == "cache-status:" {sub(/\r$/, ""); $1 = ""; cs = $0}
                END {print t, d, age, cs}' >>"$WORK/samples"
    done
done
echo $((elapsed - last_change)) >>"$WORK/gaps"
cat "$WORK/samples"
awk -v ttl="$TTL" '{n++; if ($3 == "-" || $3 + 0 >= ttl) stale++; if ($3 + 0 > max) max = $3 + 0}
    END {printf "\nhealthy answers: %d, stale (Age >= %d): %d, largest Age: %d s\n", n, ttl, stale, max}' "$WORK/samples"
awk '{if ($1 > m) m = $1} END {printf "longest time the healthy upstream got no request: %d s\n", m}' "$WORK/gaps"
