#!/usr/bin/env bash
# Many tenants on loopback: the gateway with N configured issuers (a
# generated --config file) in front of a multi-tenant upstream
# (benches/tenant_upstream.py, each document answered after DELAY), side by
# side with nginx proxy_cache (one prefix location) in front of the same
# upstream. Measured with wrk, alternating the targets over the rounds:
# the first tenant, the last tenant and an unknown path on the gateway, the
# first and last tenant on nginx. Then, with a new gateway configured with
# one issuer template ({tenant}, max_tenants), TENANTS distinct tenants are
# requested once each and a single hot template tenant is measured.
#
# Prints a table: requests/s (median of the rounds), the gateway's peak RSS,
# the size of its /metrics, the peak number of upstream requests in flight
# and start-up time, each target of the multi-tenant work with PASS/FAIL
# next to it (a report: the exit status does not depend on them).
#
#   bash benches/tenants.sh                 # defaults below: 75 s with the
#                                           # binary before the multi-tenant
#                                           # work, 3.5 min with it (start-up
#                                           # fetches at bounded concurrency:
#                                           # 86 s, and the template pass 32 s)
#   N=200 ROUNDS=1 bash benches/tenants.sh  # a quick check (about 20 s)
#
# Settings (environment):
#   N=10000           configured issuers, tenant1..tenantN
#   DELAY=0.05        seconds the upstream takes to answer each document
#   DURATION=4        seconds per wrk run (plus 1 s warm-up per target)
#   CONNECTIONS=32    wrk connections (and parallel requests of the
#                     template pass)
#   WRK_THREADS=1     wrk threads (one wrk thread drives about 90k req/s
#                     here, so at the defaults the gateway's lead over nginx
#                     is capped; WRK_THREADS=2 CONNECTIONS=64 is load.sh's load)
#   ROUNDS=3          rounds; each runs every target once
#   TENANTS=5000      distinct tenants requested in template mode (t1..tTENANTS)
#   MAX_TENANTS=1000  max_tenants of the template
#   TTL=300s          gateway --ttl and nginx proxy_cache_valid 200
#   WORKERS=          gateway --workers (default: the gateway's, one per core)
#   NGINX_WORKERS=2   nginx worker_processes
#   PIN=              "1": wrk on CPU 0, every server (the gateway, nginx,
#                     the upstream) on CPU 1, so the load generator and the
#                     server under test never take each other's core; the
#                     ratio then compares the servers alone (empty: no pinning)
#   UPSTREAM_BOUND=8  the bound on upstream requests in flight the report
#                     checks against (the gateway's default per upstream host)
#   READY_TIMEOUT=600 seconds to wait for /readyz with N issuers
#   TEMPLATE_TIMEOUT=300  seconds the template pass may take at most
#   GATEWAY_BIN=      use this binary instead of building target/release
#   RESULTS=          also write the report to this file
#   LOGS=             copy the processes' output (gateway logs) to this directory
#
# Everything listens on 127.0.0.1 on free high ports, every wait is bounded,
# and every process started here is stopped on exit (trap), by its PID.
# Needs wrk, nginx, curl and python3 (installed with apt-get when missing:
# root or sudo) and cargo unless GATEWAY_BIN is given.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

N=${N:-10000}
DELAY=${DELAY:-0.05}
DURATION=${DURATION:-4}
CONNECTIONS=${CONNECTIONS:-32}
WRK_THREADS=${WRK_THREADS:-1}
ROUNDS=${ROUNDS:-3}
TENANTS=${TENANTS:-5000}
MAX_TENANTS=${MAX_TENANTS:-1000}
TTL=${TTL:-300s}
WORKERS=${WORKERS:-}
NGINX_WORKERS=${NGINX_WORKERS:-2}
UPSTREAM_BOUND=${UPSTREAM_BOUND:-8}
PIN=${PIN:-}
READY_TIMEOUT=${READY_TIMEOUT:-600}
TEMPLATE_TIMEOUT=${TEMPLATE_TIMEOUT:-300}
PATH_AS=/.well-known/oauth-authorization-server

# shellcheck source=benches/lib.sh
. benches/lib.sh

for v in N NGINX_WORKERS DURATION CONNECTIONS WRK_THREADS ROUNDS TENANTS MAX_TENANTS UPSTREAM_BOUND READY_TIMEOUT TEMPLATE_TIMEOUT; do
    case "${!v}" in *[!0-9]* | "" | 0*) die "$v: \"${!v}\" is not a positive number" ;; esac
done
case "$WORKERS" in *[!0-9]* | 0*) die "WORKERS: \"$WORKERS\" is not a positive number" ;; esac

check_pin

RUN_STARTED=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
install_missing wrk nginx curl python3
build_gateway
init_work gateway-tenants
mkdir -p "$WORK/cache" "$WORK/tmp"

P_UP_GW=$(free_port)   # upstream, as seen by the gateway with N issuers
P_UP_NGX=$(free_port)  # upstream, as seen by nginx proxy_cache
P_UP_TPL=$(free_port)  # upstream, as seen by the template gateway
P_GW=$(free_port)
P_PROXY=$(free_port)

# --- the upstream, nginx and the gateway with N issuers ----------------------
start upstream python3 benches/tenant_upstream.py --delay "$DELAY" --max-seconds 7200 \
    --port "$P_UP_GW" --port "$P_UP_NGX" --port "$P_UP_TPL"
UP_PID=$LAST_PID
wait_ready "http://127.0.0.1:$P_UP_GW/_stats" upstream
pin_servers "$UP_PID"

# One figure of the upstream's /_stats for a port: requests, not_found,
# in_flight, peak_in_flight, distinct_tenants.
upstream_stat() { # port, field
    curl -s --max-time 5 "http://127.0.0.1:$P_UP_GW/_stats" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["ports"][sys.argv[1]][sys.argv[2]])' "$1" "$2"
}

# A gateway's log $WORK/NAME.out in one line: its lines by level (without
# the colours it writes even to a file) and the first warning or error.
log_summary() { # name
    sed 's/\x1b\[[0-9;]*m//g' "$WORK/$1.out" >"$WORK/$1.log"
    awk '{ for (i = 1; i <= 3 && i <= NF; i++) if ($i ~ /^(ERROR|WARN|INFO|DEBUG|TRACE)$/) { n[$i]++; break } }
        END { printf "%d lines", NR; for (l in n) { printf "%s %s %d", sep ? "," : ":", l, n[l]; sep = 1 } }' "$WORK/$1.log"
    grep -m1 -E ' (ERROR|WARN) ' "$WORK/$1.log" | cut -c1-400 | sed 's/^/; first warning or error: /' || true
}

cat >"$WORK/nginx.conf" <<EOF
$(nginx_head nginx "$NGINX_WORKERS" 2048)
    access_log off;
    proxy_cache_path $WORK/cache levels=1:2 keys_zone=metadata:10m max_size=100m;
    server {
        listen 127.0.0.1:$P_PROXY;
        location $PATH_AS/ {
            proxy_pass http://127.0.0.1:$P_UP_NGX;
            proxy_cache metadata;
            proxy_cache_valid 200 $TTL;
            proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
            proxy_cache_background_update on;
            proxy_cache_lock on;
        }
    }
}
EOF
start nginx "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'

awk -v n="$N" -v p="$P_UP_GW" 'BEGIN {
    for (i = 1; i <= n; i++) printf "[[authorization_server]]\nissuer = \"http://127.0.0.1:%d/tenant%d\"\n\n", p, i }' \
    >"$WORK/issuers.toml"
gateway_args=(--ttl "$TTL" --shutdown-timeout 1s)
[ -n "$WORKERS" ] && gateway_args+=(--workers "$WORKERS")
export RUST_LOG=${RUST_LOG:-warn}

log "starting the upstream (delay ${DELAY}s), nginx and the gateway with $N issuers in $WORK"
GW_T0=$(date +%s.%N)
start gateway "$GATEWAY_BIN" --config "$WORK/issuers.toml" --listen "127.0.0.1:$P_GW" "${gateway_args[@]}"
GW_PID=$LAST_PID
# Bounded wait for /readyz (every document fetched), with progress.
ready=""
for i in $(seq $((READY_TIMEOUT * 2))); do
    kill -0 "$GW_PID" 2>/dev/null || die "the gateway exited: $(head -c 2000 "$WORK/gateway.out")"
    if [ "$(http_code "http://127.0.0.1:$P_GW/readyz")" = 200 ]; then
        ready=1
        break
    fi
    [ $((i % 20)) -eq 0 ] && log "waiting for /readyz: $((i / 2)) s, upstream answered $(upstream_stat "$P_UP_GW" requests) of $N documents"
    sleep 0.5
done
[ -n "$ready" ] || die "the gateway was not ready after ${READY_TIMEOUT}s (logs in $WORK)"
STARTUP_S=$(awk -v a="$GW_T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
log "ready after ${STARTUP_S}s"
wait_ready "http://127.0.0.1:$P_PROXY$PATH_AS/tenant1" nginx-proxy-cache
pin_servers "$GW_PID" "$(cat "$WORK/nginx.pid")"

declare -A URL
URL[gateway-first]="http://127.0.0.1:$P_GW$PATH_AS/tenant1"
URL[gateway-last]="http://127.0.0.1:$P_GW$PATH_AS/tenant$N"
URL[gateway-unknown]="http://127.0.0.1:$P_GW$PATH_AS/nope"
URL[nginx-first]="http://127.0.0.1:$P_PROXY$PATH_AS/tenant1"
URL[nginx-last]="http://127.0.0.1:$P_PROXY$PATH_AS/tenant$N"
TARGETS=(gateway-first gateway-last gateway-unknown nginx-first nginx-last)

# The gateway must serve the upstream's bytes for the first and last tenant
# and 404 for the unknown path; nginx the bytes it got from its port.
for t in first last; do
    tenant=tenant1
    [ "$t" = last ] && tenant=tenant$N
    for side in gateway:$P_UP_GW nginx:$P_UP_NGX; do
        curl -s --max-time 5 -o "$WORK/expected" "http://127.0.0.1:${side#*:}$PATH_AS/$tenant"
        curl -s --max-time 5 -o "$WORK/got" "${URL[${side%%:*}-$t]}" || die "${side%%:*}-$t did not answer"
        cmp -s "$WORK/expected" "$WORK/got" || die "${side%%:*}-$t does not serve the upstream's bytes"
    done
done
code=$(http_code "${URL[gateway-unknown]}")
[ "$code" = 404 ] || die "the gateway answered $code for the unknown path, not 404"
log "the first and last tenant serve the upstream's $(wc -c <"$WORK/got") bytes; the unknown path is a 404"

measure_rounds

GW_HWM=$(hwm_kib "$GW_PID")
METRICS_T0=$(date +%s.%N)
METRICS_BYTES=$(curl -s --max-time 60 -o /dev/null -w '%{size_download}' "http://127.0.0.1:$P_GW/metrics")
METRICS_S=$(awk -v a="$METRICS_T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.2f", b - a}')
GW_HWM_AFTER_METRICS=$(hwm_kib "$GW_PID")
# Less the script's own request for the first and last tenant's bytes.
GW_UP_REQUESTS=$(($(upstream_stat "$P_UP_GW" requests) - 2))
GW_UP_PEAK=$(upstream_stat "$P_UP_GW" peak_in_flight)
NGX_HWM=$(nginx_hwm_kib "$WORK/nginx.pid")
NGX_UP_REQUESTS=$(($(upstream_stat "$P_UP_NGX" requests) - 2))
GW_LOG=$(log_summary gateway)
stop_pid "$GW_PID"
stop_pid "$(cat "$WORK/nginx.pid")"

# --- template mode -------------------------------------------------------------
TPL_STATUS=""
cat >"$WORK/template.toml" <<EOF
[[authorization_server]]
issuer = "http://127.0.0.1:$P_UP_TPL/{tenant}"
max_tenants = $MAX_TENANTS
EOF
log "template mode: one {tenant} issuer, max_tenants = $MAX_TENANTS, $TENANTS tenants"
# Picked now, not with the others: minutes of runs lie between, and a port
# checked free then was once taken by the time the gateway bound it.
P_TPL=$(free_port)
start template-gateway "$GATEWAY_BIN" --config "$WORK/template.toml" --listen "127.0.0.1:$P_TPL" "${gateway_args[@]}"
TPL_PID=$LAST_PID
for _ in $(seq 100); do
    if ! kill -0 "$TPL_PID" 2>/dev/null; then
        TPL_STATUS="not supported by this binary (it refused the configuration: $(grep -m1 -v '^\s*$' "$WORK/template-gateway.out" | cut -c1-400))"
        break
    fi
    [ "$(http_code "http://127.0.0.1:$P_TPL/healthz")" = 200 ] && break
    sleep 0.1
done
if [ -z "$TPL_STATUS" ]; then
    code=$(curl -s --max-time 30 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_TPL$PATH_AS/t1" || true)
    [ "$code" = 200 ] || TPL_STATUS="not supported by this binary (it started, but $PATH_AS/t1 answered $code)"
fi
if [ -z "$TPL_STATUS" ]; then
    # One request per tenant t1..tTENANTS, CONNECTIONS at a time (one curl).
    awk -v n="$TENANTS" -v u="http://127.0.0.1:$P_TPL$PATH_AS/t" 'BEGIN {
        for (i = 1; i <= n; i++) printf "url = \"%s%d\"\noutput = \"/dev/null\"\n", u, i }' >"$WORK/tenants.curl"
    TPL_T0=$(date +%s.%N)
    timeout "$TEMPLATE_TIMEOUT" curl -s --parallel --parallel-max "$CONNECTIONS" --max-time 30 \
        -w '%{http_code}\n' --config "$WORK/tenants.curl" >"$WORK/tenant-codes" 2>/dev/null || true
    TPL_PASS_S=$(awk -v a="$TPL_T0" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}')
    TPL_CODES=$(sort "$WORK/tenant-codes" | uniq -c | awk '{printf "%s%s x %s", sep, $2, $1; sep = ", "}')
    TPL_ANSWERED=$(wc -l <"$WORK/tenant-codes")
    log "template pass: $TPL_ANSWERED of $TENANTS answered in ${TPL_PASS_S}s ($TPL_CODES)"
    TPL_UP_AFTER_PASS=$(upstream_stat "$P_UP_TPL" requests)
    pin_servers "$TPL_PID"
    URL[template-hot]="http://127.0.0.1:$P_TPL$PATH_AS/t1"
    curl -s --max-time 30 -o /dev/null "${URL[template-hot]}" || true
    timeout 31 ${WRK_CPUS:+taskset -c "$WRK_CPUS"} wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d 1s "${URL[template-hot]}" >/dev/null || die "warm-up of template-hot failed"
    for round in $(seq "$ROUNDS"); do
        measure template-hot "${URL[template-hot]}" "$CONNECTIONS" "$DURATION" "$TPL_PID"
    done
    TPL_HWM=$(hwm_kib "$TPL_PID")
    TPL_METRICS_BYTES=$(curl -s --max-time 60 -o /dev/null -w '%{size_download}' "http://127.0.0.1:$P_TPL/metrics")
    TPL_UP_REQUESTS=$(upstream_stat "$P_UP_TPL" requests)
    TPL_UP_PEAK=$(upstream_stat "$P_UP_TPL" peak_in_flight)
    TPL_UP_DISTINCT=$(upstream_stat "$P_UP_TPL" distinct_tenants)
    TPL_LOG=$(log_summary template-gateway)
    TARGETS+=(template-hot)
    stop_pid "$TPL_PID"
else
    log "template mode: $TPL_STATUS"
fi

# --- report ------------------------------------------------------------------
declare -A RPS
while read -r t rps; do RPS[$t]=$rps; done < <(awk "$AWK_MEDIAN"'
    { rps[$1] = rps[$1] " " $3 } END { for (t in rps) printf "%s %.0f\n", t, median(rps[t]) }' "$WORK/results")
RUN_S=$(($(date +%s) - RUN_STARTED))

# PASS or FAIL: figure OP limit, OP one of <= >=.
verdict() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN { ok = (op == "<=") ? (a <= b) : (a >= b); print ok ? "PASS" : "FAIL" }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
kib_of_bytes() { awk -v b="$1" 'BEGIN { printf "%.1f KiB", b / 1024 }'; }
# The ratio of two targets' median server CPU per request.
cpu_ratio() { # numerator target, denominator target
    awk -v a="$1" -v b="$2" "$AWK_MEDIAN"'
        $7 != "-" && $7 != "" { cpu[$1] = cpu[$1] " " $7 }
        END { x = median(cpu[a]); y = median(cpu[b]); printf "%.2f", (y > 0) ? x / y : 0 }' "$WORK/results"
}
row() { printf '| %-44s | %22s | %-18s | %-6s |\n' "$@"; }

report() {
    local first=${RPS[gateway-first]} last=${RPS[gateway-last]} unknown=${RPS[gateway-unknown]}
    local r_last r_unknown r_nginx
    r_last=$(ratio "$last" "$first")
    r_unknown=$(ratio "$unknown" "$first")
    r_nginx=$(ratio "$last" "${RPS[nginx-last]}")
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(machine), load before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    if [ -n "$PIN" ]; then echo "pinned (PIN=1): wrk on CPU 0; gateway, nginx and upstream on CPU 1"; fi
    echo "gateway: $GATEWAY_BIN --ttl $TTL${WORKERS:+ --workers $WORKERS}; nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') ($NGINX_WORKERS workers, one prefix location); upstream delay ${DELAY}s"
    echo "wrk -t$WRK_THREADS -c$CONNECTIONS, ${ROUNDS} rounds x ${DURATION}s, medians; $N configured issuers; run took ${RUN_S}s"
    echo
    printf '| %-18s | %10s | %8s | %8s | %7s | %14s | %9s |\n' target "req/s" "p50 us" "p99 us" "non-2xx" "server CPU/req" "wrk CPU"
    echo "|--------------------|-----------:|---------:|---------:|--------:|---------------:|----------:|"
    awk -v targets="${TARGETS[*]}" "$AWK_MEDIAN"'
        { k = $1; rps[k] = rps[k] " " $3; p50[k] = p50[k] " " $4; p99[k] = p99[k] " " $5; err[k] += $6
          if ($7 != "-" && $7 != "") cpu[k] = cpu[k] " " $7
          if ($8 != "-" && $8 != "") wrk[k] = wrk[k] " " $8 }
        END {
            nt = split(targets, T, " ")
            for (t = 1; t <= nt; t++) {
                k = T[t]
                c = (k in cpu) ? sprintf("%.2f us", median(cpu[k])) : "-"
                w = (k in wrk) ? sprintf("%.2f", median(wrk[k])) : "-"
                printf "| %-18s | %10.0f | %8.0f | %8.0f | %7d | %14s | %9s |\n", k, median(rps[k]), median(p50[k]), median(p99[k]), err[k], c, w
            }
        }' "$WORK/results"
    echo "(the unknown path's answers are 404s by design: its non-2xx count is every request;"
    echo " server CPU/req: user + system time of the server's processes per request served;"
    echo " wrk CPU: cores wrk kept busy, 1.00 = its one thread's core saturated)"
    echo
    row "$N configured issuers" figure target result
    echo "|----------------------------------------------|-----------------------:|--------------------|--------|"
    row "last tenant / first tenant req/s" "${r_last}x" ">= 0.9x" "$(verdict "$r_last" ">=" 0.9)"
    row "unknown path / first tenant req/s" "${r_unknown}x" ">= 0.9x" "$(verdict "$r_unknown" ">=" 0.9)"
    row "last tenant / nginx proxy_cache last tenant" "${r_nginx}x" ">= 1.5x" "$(verdict "$r_nginx" ">=" 1.5)"
    row "nginx / gateway server CPU per request" "$(cpu_ratio nginx-last gateway-last)x" "" ""
    row "gateway peak RSS (VmHWM, /metrics included)" "$(mib "$GW_HWM_AFTER_METRICS")" "<= 40 MiB" "$(verdict "$GW_HWM_AFTER_METRICS" "<=" 40960)"
    row "GET /metrics size" "$(kib_of_bytes "$METRICS_BYTES")" "<= 128 KiB" "$(verdict "$METRICS_BYTES" "<=" 131072)"
    row "peak upstream requests in flight" "$GW_UP_PEAK" "<= $UPSTREAM_BOUND" "$(verdict "$GW_UP_PEAK" "<=" "$UPSTREAM_BOUND")"
    row "start-up until /readyz is 200" "${STARTUP_S} s" "" ""
    row "upstream requests (gateway; nginx)" "$GW_UP_REQUESTS; $NGX_UP_REQUESTS" "" ""
    row "gateway peak RSS before GET /metrics" "$(mib "$GW_HWM")" "" ""
    row "GET /metrics time" "${METRICS_S} s" "" ""
    row "nginx peak RSS (master + $NGINX_WORKERS workers, summed)" "$(mib "$NGX_HWM")" "" ""
    echo
    echo "gateway log (RUST_LOG=$RUST_LOG): $GW_LOG"
    echo
    if [ -n "$TPL_STATUS" ]; then
        echo "template mode: $TPL_STATUS"
        return 0
    fi
    row "template, $TENANTS tenants, max_tenants $MAX_TENANTS" figure target result
    echo "|----------------------------------------------|-----------------------:|--------------------|--------|"
    row "gateway peak RSS (VmHWM)" "$(mib "$TPL_HWM")" "<= 40 MiB" "$(verdict "$TPL_HWM" "<=" 40960)"
    row "GET /metrics size" "$(kib_of_bytes "$TPL_METRICS_BYTES")" "<= 32 KiB" "$(verdict "$TPL_METRICS_BYTES" "<=" 32768)"
    row "peak upstream requests in flight" "$TPL_UP_PEAK" "<= $UPSTREAM_BOUND" "$(verdict "$TPL_UP_PEAK" "<=" "$UPSTREAM_BOUND")"
    row "pass over the tenants: time" "${TPL_PASS_S} s" "" ""
    row "pass over the tenants: answers" "$TPL_ANSWERED" "" ""
    row "pass over the tenants: statuses" "$TPL_CODES" "" ""
    row "upstream requests after the pass; in all" "$TPL_UP_AFTER_PASS; $TPL_UP_REQUESTS" "" ""
    row "distinct tenants the upstream saw" "$TPL_UP_DISTINCT" "" ""
    row "hot template tenant req/s" "${RPS[template-hot]}" "" ""
    echo
    echo "template gateway log: $TPL_LOG"
}
if [ -n "${RESULTS:-}" ]; then
    report | tee "$RESULTS"
else
    report
fi
