#!/usr/bin/env bash
# Key sets (--jwks-route, docs/key-sets.md) on loopback, against the
# multi-tenant upstream of benches/tenant_upstream.py --jwks (a 2-key RSA
# set of about 840 bytes per tenant, at /<tenant>/jwks, named by each
# document's jwks_uri):
#
# 1. Server CPU per request, wrk, the targets interleaved over the rounds:
#    the gateway's key-set route, the same gateway's metadata route, and
#    nginx proxy_cache in front of the same key set. Targets: key set <=
#    1.1x the metadata route's CPU, nginx >= 1.5x the key set's.
# 2. Memory: a template ({tenant}) with max_tenants, TENANTS distinct tenants
#    requested once each, first metadata only (a gateway without key sets),
#    then the key sets (a gateway with jwks_route = "/{tenant}/keys": each
#    key set also caches its tenant's metadata). Peak RSS of each; bytes per
#    key set = the difference / max_tenants (both caches are full). Target:
#    peak RSS with key sets <= 24 MiB.
#
#   PIN=1 bash benches/jwks.sh           # the recorded settings (about 2 min)
#   ROUNDS=1 TENANTS=500 bash benches/jwks.sh   # a quick check
#
# Settings (environment):
#   DURATION=4        seconds per wrk run (plus 1 s warm-up per target)
#   CONNECTIONS=32    wrk connections (and parallel requests of the pass)
#   WRK_THREADS=1     wrk threads
#   ROUNDS=5          rounds; each runs every target once (medians reported)
#   TENANTS=5000      distinct tenants requested in template mode
#   MAX_TENANTS=1000  max_tenants of the template
#   TTL=300s          gateway --ttl and nginx proxy_cache_valid 200
#   WORKERS=1         gateway --workers
#   NGINX_WORKERS=1   nginx worker_processes
#   PIN=              "1": wrk on CPU 0, the servers on CPU 1 (see tenants.sh)
#   GATEWAY_BIN=      use this binary instead of building target/release
#   RESULTS=          also write the report to this file
#   LOGS=             copy the processes' output to this directory
#
# Everything listens on 127.0.0.1 on free high ports, every wait is bounded,
# and every process started here is stopped on exit (trap), by its PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-1}
ROUNDS=${ROUNDS:-5}
TENANTS=${TENANTS:-5000}
MAX_TENANTS=${MAX_TENANTS:-1000}
TTL=${TTL:-300s}
WORKERS=${WORKERS:-1}
NGINX_WORKERS=${NGINX_WORKERS:-1}
PIN=${PIN:-}
PATH_AS=/.well-known/oauth-authorization-server

# shellcheck source=benches/lib.sh
. benches/lib.sh

for v in DURATION CONNECTIONS WRK_THREADS ROUNDS TENANTS MAX_TENANTS WORKERS NGINX_WORKERS; do
    case "${!v}" in *[!0-9]* | "" | 0*) die "$v: \"${!v}\" is not a positive number" ;; esac
done
check_pin

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
install_missing wrk nginx curl python3
build_gateway
init_work gateway-jwks
mkdir -p "$WORK/cache" "$WORK/tmp"

P_UP=$(free_port)
P_GW=$(free_port)
P_PROXY=$(free_port)
P_TPL=$(free_port)
UP="http://127.0.0.1:$P_UP"

start upstream python3 benches/tenant_upstream.py --jwks --delay 0 --max-seconds 3600 --port "$P_UP"
UP_PID=$LAST_PID
wait_ready "$UP/_stats" upstream
pin_servers "$UP_PID"

cat >"$WORK/nginx.conf" <<EOF
$(nginx_head nginx "$NGINX_WORKERS" 2048)
    access_log off;
    proxy_cache_path $WORK/cache levels=1:2 keys_zone=jwks:10m max_size=100m;
    server {
        listen 127.0.0.1:$P_PROXY;
        location /t1/jwks {
            proxy_pass $UP;
            proxy_cache jwks;
            proxy_cache_valid 200 $TTL;
            proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
            proxy_cache_background_update on;
            proxy_cache_lock on;
        }
    }
}
EOF
start nginx "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
export RUST_LOG=${RUST_LOG:-warn}
start gateway "$GATEWAY_BIN" --upstream "$UP/t1" --issuer "$UP/t1" --jwks-route /t1/jwks.json \
    --ttl "$TTL" --workers "$WORKERS" --listen "127.0.0.1:$P_GW" --shutdown-timeout 1s
GW_PID=$LAST_PID
wait_ready "http://127.0.0.1:$P_GW/readyz" gateway
wait_ready "http://127.0.0.1:$P_PROXY/t1/jwks" nginx-proxy-cache
pin_servers "$GW_PID" "$(cat "$WORK/nginx.pid")"

declare -A URL
URL[gateway-jwks]="http://127.0.0.1:$P_GW/t1/jwks.json"
URL[gateway-metadata]="http://127.0.0.1:$P_GW$PATH_AS/t1"
URL[nginx-jwks]="http://127.0.0.1:$P_PROXY/t1/jwks"
TARGETS=(gateway-jwks gateway-metadata nginx-jwks)
curl -s --max-time 5 -o "$WORK/expected" "$UP/t1/jwks"
for t in gateway-jwks nginx-jwks; do
    curl -s --max-time 5 -o "$WORK/got" "${URL[$t]}" || die "$t did not answer"
    cmp -s "$WORK/expected" "$WORK/got" || die "$t does not serve the upstream's key set bytes"
done
log "both serve the upstream's $(wc -c <"$WORK/expected")-byte key set"

measure_rounds
stop_pid "$GW_PID"
stop_pid "$(cat "$WORK/nginx.pid")"

# --- template mode: memory -----------------------------------------------------
# One pass: a gateway with CONFIG, TENANTS requests of PATH_FMT (printf, the
# tenant number), then its peak RSS (KiB) and the statuses.
template_pass() { # name, config text, url format
    local name=$1 config=$2 fmt=$3 pid
    printf '%s\n' "$config" >"$WORK/$name.toml"
    start "$name" "$GATEWAY_BIN" --config "$WORK/$name.toml" --listen "127.0.0.1:$P_TPL" \
        --ttl "$TTL" --workers "$WORKERS" --shutdown-timeout 1s
    pid=$LAST_PID
    wait_ready "http://127.0.0.1:$P_TPL/healthz" "$name"
    awk -v n="$TENANTS" -v f="http://127.0.0.1:$P_TPL$fmt" 'BEGIN {
        for (i = 1; i <= n; i++) { printf "url = \""; printf f, i; printf "\"\noutput = \"/dev/null\"\n" } }' >"$WORK/$name.curl"
    timeout 600 curl -s --parallel --parallel-max "$CONNECTIONS" --max-time 30 \
        -w '%{http_code}\n' --config "$WORK/$name.curl" >"$WORK/$name.codes" 2>/dev/null || true
    CODES=$(sort "$WORK/$name.codes" | uniq -c | awk '{printf "%s%s x %s", sep, $2, $1; sep = ", "}')
    HWM=$(hwm_kib "$pid")
    RSS=$(rss_kib "$pid")
    stop_pid "$pid"
}
template_pass template-metadata "[[authorization_server]]
issuer = \"$UP/{tenant}\"
max_tenants = $MAX_TENANTS" "$PATH_AS/t%d"
META_HWM=$HWM META_RSS=$RSS META_CODES=$CODES
log "metadata only: peak RSS $META_HWM KiB ($META_CODES)"
template_pass template-jwks "[[authorization_server]]
issuer = \"$UP/{tenant}\"
max_tenants = $MAX_TENANTS
jwks_route = \"/{tenant}/keys\"" "/t%d/keys"
JWKS_HWM=$HWM JWKS_RSS=$RSS JWKS_CODES=$CODES
log "with key sets: peak RSS $JWKS_HWM KiB ($JWKS_CODES)"

# --- report --------------------------------------------------------------------
cpu_median() { # target
    awk -v a="$1" "$AWK_MEDIAN"'$1 == a && $7 != "-" { c = c " " $7 } END { printf "%.2f", median(c) }' "$WORK/results"
}
rps_median() { # target
    awk -v a="$1" "$AWK_MEDIAN"'$1 == a { c = c " " $3 } END { printf "%.0f", median(c) }' "$WORK/results"
}
verdict() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN { ok = (op == "<=") ? (a <= b) : (a >= b); print ok ? "PASS" : "FAIL" }'; }
report() {
    local jw md ng r_md r_ng per_set
    jw=$(cpu_median gateway-jwks)
    md=$(cpu_median gateway-metadata)
    ng=$(cpu_median nginx-jwks)
    r_md=$(awk -v a="$jw" -v b="$md" 'BEGIN { printf "%.2f", a / b }')
    r_ng=$(awk -v a="$ng" -v b="$jw" 'BEGIN { printf "%.2f", a / b }')
    per_set=$(awk -v a="$JWKS_HWM" -v b="$META_HWM" -v n="$MAX_TENANTS" 'BEGIN { printf "%.0f", (a - b) * 1024 / n }')
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(machine), load before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ -n "$PIN" ]; then echo "pinned (PIN=1): wrk on CPU 0; gateway, nginx and upstream on CPU 1"; fi
    echo "gateway: $GATEWAY_BIN --workers $WORKERS --ttl $TTL; nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') ($NGINX_WORKERS workers); key set $(wc -c <"$WORK/expected") bytes"
    echo "wrk -t$WRK_THREADS -c$CONNECTIONS, $ROUNDS interleaved rounds x ${DURATION}s, medians"
    echo
    printf '| %-18s | %10s | %14s |\n' target "req/s" "server CPU/req"
    echo "|--------------------|-----------:|---------------:|"
    for t in "${TARGETS[@]}"; do
        printf '| %-18s | %10s | %11s us |\n' "$t" "$(rps_median "$t")" "$(cpu_median "$t")"
    done
    echo
    printf '| %-52s | %12s | %-9s | %-6s |\n' figure value target result
    echo "|------------------------------------------------------|-------------:|-----------|--------|"
    printf '| %-52s | %11sx | %-9s | %-6s |\n' "key-set route / metadata route, server CPU per request" "$r_md" "<= 1.1x" "$(verdict "$r_md" "<=" 1.1)"
    printf '| %-52s | %11sx | %-9s | %-6s |\n' "nginx proxy_cache / key-set route, server CPU per req" "$r_ng" ">= 1.5x" "$(verdict "$r_ng" ">=" 1.5)"
    printf '| %-52s | %8s KiB | %-9s | %-6s |\n' "template, $TENANTS tenants, max $MAX_TENANTS: peak RSS, metadata" "$META_HWM" "" ""
    printf '| %-52s | %8s KiB | %-9s | %-6s |\n' "same with 2-key RSA key sets: peak RSS" "$JWKS_HWM" "<= 24 MiB" "$(verdict "$JWKS_HWM" "<=" 24576)"
    printf '| %-52s | %8s B   | %-9s | %-6s |\n' "bytes per cached key set ((difference) / max_tenants)" "$per_set" "" ""
    echo
    echo "statuses: metadata pass $META_CODES; key-set pass $JWKS_CODES; RSS at the end: $META_RSS / $JWKS_RSS KiB"
}
if [ -n "${RESULTS:-}" ]; then
    report | tee "$RESULTS"
else
    report
fi
