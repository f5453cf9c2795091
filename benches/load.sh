#!/usr/bin/env bash
# HTTP load comparison on loopback: the gateway (cached), the gateway with
# --no-cache (one upstream fetch per request), nginx as a proxy_cache in front
# of the same upstream, and nginx serving the same bytes as a static file
# (the ceiling). Measured with wrk at 64 and 256 connections, alternating the
# targets for several rounds; prints requests/s, p50/p99 latency (median of
# the rounds), the ratios gateway/nginx-proxy-cache and gateway/nginx-static,
# the gateway's peak RSS and its upstream fetches during the run.
#
#   bash benches/load.sh                # defaults below
#   ROUNDS=5 DURATION=15 bash benches/load.sh
#
# Settings (environment):
#   ROUNDS=3          rounds; each runs every target at every connection count
#   DURATION=10       seconds per wrk run (plus WARMUP seconds once per target)
#   WARMUP=3          seconds of warm-up load per target before the rounds
#   CONNECTIONS="64 256"
#   WRK_THREADS=2     wrk threads
#   WORKERS="auto 1"  the cached gateway is measured once per worker count
#                     listed: "auto" is the gateway's default (one worker per
#                     core, target "gateway"), N is --workers N (target
#                     "gateway-Nw"); the --no-cache gateway uses the default
#   TTL=300s          gateway --ttl (nginx uses proxy_cache_valid 200 300s)
#   RATES=            e.g. "20000 40000": in every round, also measure latency
#                     at these fixed request rates (open loop, oha with
#                     --latency-correction, RATE_CONNECTIONS connections),
#                     below saturation, as traffic arrives in production.
#                     oha is installed with cargo into target/bench-tools
#                     when it is not on PATH (about 4 minutes, once).
#   RATE_CONNECTIONS=64
#   GATEWAY_BIN=      use this binary instead of building target/release
#   RESULTS=          also write the report to this file
#
# Everything listens on 127.0.0.1 on free high ports, every wait is bounded,
# and every process started here is stopped on exit (trap), by its PID.
# Needs wrk, nginx and curl (installed with apt-get when missing: root or
# sudo) and cargo unless GATEWAY_BIN is given.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-3}
CONNECTIONS=${CONNECTIONS:-"64 256"}
WRK_THREADS=${WRK_THREADS:-2}
WORKERS=${WORKERS:-"auto 1"}
RATES=${RATES:-}
RATE_CONNECTIONS=${RATE_CONNECTIONS:-64}
OHA_VERSION=1.16.0
TTL=${TTL:-300s}
PATH_AS=/.well-known/oauth-authorization-server
ISSUER=http://localhost:7788
# The reference authorization server's document, byte for byte (642 B).
DOCUMENT='{"issuer":"http://localhost:7788","authorization_endpoint":"http://localhost:7788/oauth/authorize","token_endpoint":"http://localhost:7788/oauth/token","registration_endpoint":"http://localhost:7788/oauth/register","scopes_supported":["user:read","entries:read","entries:write","tags:read","tags:write"],"response_types_supported":["code"],"response_modes_supported":["query"],"grant_types_supported":["authorization_code","refresh_token"],"token_endpoint_auth_methods_supported":["client_secret_basic","client_secret_post","none"],"revocation_endpoint":"http://localhost:7788/oauth/token","code_challenge_methods_supported":["plain","S256"]}'

# shellcheck source=benches/lib.sh
. benches/lib.sh

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
tools=(wrk nginx curl)
[ -n "$RATES" ] && tools+=(python3)
install_missing "${tools[@]}"
build_gateway

OHA=""
if [ -n "$RATES" ]; then
    for r in $RATES; do
        case "$r" in *[!0-9]* | "" | 0*) die "RATES: \"$r\" is not a positive number of requests per second" ;; esac
    done
    OHA=$(command -v oha || true)
    if [ -z "$OHA" ]; then
        OHA=target/bench-tools/bin/oha
        if [ ! -x "$OHA" ]; then
            log "installing oha $OHA_VERSION with cargo into target/bench-tools"
            cargo install oha --locked --version "$OHA_VERSION" --root target/bench-tools >&2
        fi
    fi
    [ -x "$OHA" ] || die "no oha at $OHA"
fi

# --- processes ----------------------------------------------------------------
init_work gateway-load

P_UP_GW=$(free_port)    # upstream, as seen by the gateways
P_UP_NGX=$(free_port)   # upstream, as seen by nginx proxy_cache
# The cached gateways, one per entry of WORKERS: target name -> port, args.
GATEWAYS=()
declare -A GW_PORT GW_WORKERS GW_PID
for w in $WORKERS; do
    case "$w" in
    auto) name=gateway ;;
    *[!0-9]* | "" | 0) die "WORKERS: \"$w\" is neither auto nor a positive number" ;;
    *) name=gateway-${w}w ;;
    esac
    [ -n "${GW_PORT[$name]:-}" ] && die "WORKERS lists $w twice"
    GATEWAYS+=("$name")
    GW_PORT[$name]=$(free_port)
    GW_WORKERS[$name]=$w
done
[ ${#GATEWAYS[@]} -gt 0 ] || die "WORKERS is empty"
P_GW_NC=$(free_port)
P_PROXY=$(free_port)
P_STATIC=$(free_port)

mkdir -p "$WORK/www/.well-known" "$WORK/cache" "$WORK/tmp"
printf '%s' "$DOCUMENT" >"$WORK/www/.well-known/oauth-authorization-server"
chmod -R a+rX "$WORK/www"
# The upstream authorization server: nginx, one worker, logging every
# request so fetches can be counted per client (one port each).
cat >"$WORK/upstream.conf" <<EOF
$(nginx_head upstream 1 1024)
    log_format short '\$server_port \$status';
    server {
        listen 127.0.0.1:$P_UP_GW;
        listen 127.0.0.1:$P_UP_NGX;
        access_log $WORK/upstream-access.log short;
        root $WORK/www;
        location = $PATH_AS { default_type application/json; }
    }
}
EOF

# The comparison: nginx with 2 worker processes, proxy_cache with the
# issue's directives, and the same bytes as a static file.
cat >"$WORK/nginx.conf" <<EOF
$(nginx_head nginx 2 2048)
    access_log off;
    proxy_cache_path $WORK/cache levels=1:2 keys_zone=metadata:1m max_size=10m;
    server {
        listen 127.0.0.1:$P_PROXY;
        location / {
            proxy_pass http://127.0.0.1:$P_UP_NGX;
            proxy_cache metadata;
            proxy_cache_valid 200 300s;
            proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
            proxy_cache_background_update on;
            proxy_cache_lock on;
        }
    }
    server {
        listen 127.0.0.1:$P_STATIC;
        root $WORK/www;
        location = $PATH_AS { default_type application/json; }
    }
}
EOF

log "starting the upstream, nginx and $((${#GATEWAYS[@]} + 1)) gateways in $WORK"
start upstream "$NGINX" -p "$WORK" -c "$WORK/upstream.conf" -g 'daemon off;'
start nginx "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'
wait_ready "http://127.0.0.1:$P_UP_GW$PATH_AS" upstream
wait_ready "http://127.0.0.1:$P_STATIC$PATH_AS" nginx-static

gateway_args=(--upstream "http://127.0.0.1:$P_UP_GW" --issuer "$ISSUER" --ttl "$TTL" --shutdown-timeout 1s)
# Per-fetch log lines would cost the --no-cache gateway a write per request;
# all run at warn so none logs per request (nginx has access_log off).
GW_STARTED=$(date +%s.%N)
export RUST_LOG=warn
declare -A URL
for g in "${GATEWAYS[@]}"; do
    extra=()
    [ "${GW_WORKERS[$g]}" != auto ] && extra=(--workers "${GW_WORKERS[$g]}")
    start "$g" "$GATEWAY_BIN" --listen "127.0.0.1:${GW_PORT[$g]}" "${gateway_args[@]}" "${extra[@]}"
    GW_PID[$g]=$LAST_PID
    URL[$g]="http://127.0.0.1:${GW_PORT[$g]}$PATH_AS"
done
start gateway-no-cache "$GATEWAY_BIN" --listen "127.0.0.1:$P_GW_NC" --no-cache "${gateway_args[@]}"
GW_NC_PID=$LAST_PID
for g in "${GATEWAYS[@]}"; do
    wait_ready "http://127.0.0.1:${GW_PORT[$g]}/readyz" "$g"
done
wait_ready "http://127.0.0.1:$P_GW_NC/healthz" gateway-no-cache

URL[gateway-no-cache]="http://127.0.0.1:$P_GW_NC$PATH_AS"
URL[nginx-proxy-cache]="http://127.0.0.1:$P_PROXY$PATH_AS"
URL[nginx-static]="http://127.0.0.1:$P_STATIC$PATH_AS"
TARGETS=("${GATEWAYS[@]}" gateway-no-cache nginx-proxy-cache nginx-static)

# Every target must serve exactly the document's bytes.
printf '%s' "$DOCUMENT" >"$WORK/expected"
for t in "${TARGETS[@]}"; do
    curl -s --max-time 5 -o "$WORK/got-$t" "${URL[$t]}" || die "$t did not answer"
    cmp -s "$WORK/expected" "$WORK/got-$t" || die "$t does not serve the document's bytes"
done
log "every target serves the same $(wc -c <"$WORK/expected") bytes"

# One oha run at a fixed rate; appends "target rate rps p50_us p99_us
# p999_us errors" to rate-results. Latencies are corrected for coordinated
# omission: each is measured from when the request was due to be sent.
measure_rate() {
    local target=$1 rate=$2 seconds=$3 line
    timeout $((seconds + 30)) "$OHA" --no-tui --output-format json -q "$rate" -c "$RATE_CONNECTIONS" \
        -z "${seconds}s" --latency-correction "${URL[$target]}" >"$WORK/oha.json" ||
        die "oha failed against $target"
    line=$(python3 - "$WORK/oha.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d["latencyPercentiles"]
ok = d.get("statusCodeDistribution", {}).get("200", 0)
bad = sum(n for code, n in d.get("statusCodeDistribution", {}).items() if code != "200")
# Requests still in flight when the run's deadline passes are cut off by
# oha ("aborted due to deadline"); they are not failures.
bad += sum(n for err, n in d.get("errorDistribution", {}).items() if "deadline" not in err)
us = lambda v: 1e6 * (v or 0)
print("%.0f %.0f %.0f %.0f %d" % (d["summary"]["requestsPerSec"], us(p["p50"]), us(p["p99"]), us(p["p99.9"]), bad))
PY
) || die "could not read oha's output for $target"
    echo "$target $rate $line" >>"$WORK/rate-results"
    local rps p50 p99 p999 errors
    read -r rps p50 p99 p999 errors <<<"$line"
    log "$(printf '%-18s rate=%-6s %8s req/s  p50 %6s us  p99 %6s us  p99.9 %6s us  errors %s' "$target" "$rate" "$rps" "$p50" "$p99" "$p999" "$errors")"
}

log "warm-up: ${WARMUP}s per target"
for t in "${TARGETS[@]}"; do
    timeout $((WARMUP + 30)) wrk -t "$WRK_THREADS" -c 64 -d "${WARMUP}s" "${URL[$t]}" >/dev/null || die "warm-up of $t failed"
done
: >"$WORK/results"
: >"$WORK/rate-results"

for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    for conns in $CONNECTIONS; do
        for t in "${TARGETS[@]}"; do
            measure "$t" "${URL[$t]}" "$conns" "$DURATION"
        done
    done
    for rate in $RATES; do
        for t in "${TARGETS[@]}"; do
            measure_rate "$t" "$rate" "$DURATION"
        done
    done
done

# --- report ------------------------------------------------------------------
GW_ENDED=$(date +%s.%N)
declare -A FETCHES HWM RSS
for g in "${GATEWAYS[@]}"; do
    FETCHES[$g]=$(metric_sum "http://127.0.0.1:${GW_PORT[$g]}/metrics" metadata_gateway_upstream_fetches_total)
done
fetches_nc=$(metric_sum "http://127.0.0.1:$P_GW_NC/metrics" metadata_gateway_upstream_fetches_total)
ngx_fetches=$(awk -v p="$P_UP_NGX" '$1 == p {n++} END {print n + 0}' "$WORK/upstream-access.log")
for g in "${GATEWAYS[@]}"; do
    HWM[$g]=$(hwm_kib "${GW_PID[$g]}")
    RSS[$g]=$(rss_kib "${GW_PID[$g]}")
done
gw_nc_hwm=$(hwm_kib "$GW_NC_PID")
ngx_rss=$(nginx_hwm_kib "$WORK/nginx.pid")
run_seconds=$(awk -v a="$GW_STARTED" -v b="$GW_ENDED" 'BEGIN {printf "%.0f", b - a}')
ttl_seconds=$(awk -v t="$TTL" 'BEGIN {
    n = t + 0; if (t ~ /ms$/) n /= 1000; else if (t ~ /m$/) n *= 60; else if (t ~ /h$/) n *= 3600; print n }')
bound=$(awk -v r="$run_seconds" -v t="$ttl_seconds" 'BEGIN {printf "%.2f", 1 + r / t}')

report() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "machine: $(machine), load before: $LOAD_BEFORE"
    echo "gateway: $GATEWAY_BIN --ttl $TTL, workers: $WORKERS (auto = one per core); nginx $("$NGINX" -v 2>&1 | sed 's/.*\///'), wrk -t$WRK_THREADS, ${ROUNDS} rounds x ${DURATION}s, medians"
    [ -n "$RATES" ] && echo "fixed rates: $RATES req/s with oha $("$OHA" --version 2>/dev/null | awk '{print $2}'), $RATE_CONNECTIONS connections"
    echo
    awk -v targets="${TARGETS[*]}" -v gateways="${GATEWAYS[*]}" -v conns_list="$CONNECTIONS" "$AWK_MEDIAN"'
        { k = $1 SUBSEP $2; rps[k] = rps[k] " " $3; p50[k] = p50[k] " " $4; p99[k] = p99[k] " " $5; err[k] += $6 }
        END {
            nt = split(targets, T, " "); ng = split(gateways, G, " "); nc = split(conns_list, C, " ")
            printf "| %-18s | %5s | %10s | %8s | %8s | %6s |\n", "target", "conns", "req/s", "p50 us", "p99 us", "errors"
            printf "|%s|%s|%s|%s|%s|%s|\n", "--------------------", "------:", "-----------:", "---------:", "---------:", "-------:"
            for (c = 1; c <= nc; c++) for (t = 1; t <= nt; t++) {
                k = T[t] SUBSEP C[c]
                R[k] = median(rps[k]); L50[k] = median(p50[k]); L99[k] = median(p99[k])
                printf "| %-18s | %5s | %10.0f | %8.0f | %8.0f | %6d |\n", T[t], C[c], R[k], L50[k], L99[k], err[k]
            }
            print ""
            printf "| %-12s | %5s | %13s | %13s | %12s | %15s |\n", "gateway", "conns", "/ proxy_cache", "/ nginx static", "/ --no-cache", "p99 / proxy_cache"
            printf "|%s|%s|%s|%s|%s|%s|\n", "--------------", "------:", "--------------:", "--------------:", "-------------:", "------------------:"
            for (g = 1; g <= ng; g++) for (c = 1; c <= nc; c++) {
                k = G[g] SUBSEP C[c]
                printf "| %-12s | %5s | %12.2fx | %13.2fx | %11.2fx | %16.2fx |\n", G[g], C[c],
                    R[k] / R["nginx-proxy-cache" SUBSEP C[c]], R[k] / R["nginx-static" SUBSEP C[c]],
                    R[k] / R["gateway-no-cache" SUBSEP C[c]], L99[k] / L99["nginx-proxy-cache" SUBSEP C[c]]
            }
        }' "$WORK/results"
    if [ -n "$RATES" ]; then
        echo
        echo "fixed request rates (oha -c $RATE_CONNECTIONS --latency-correction, open loop), medians:"
        echo
        awk -v targets="${TARGETS[*]}" -v rates="$RATES" "$AWK_MEDIAN"'
            { k = $1 SUBSEP $2; rps[k] = rps[k] " " $3; p50[k] = p50[k] " " $4; p99[k] = p99[k] " " $5; p999[k] = p999[k] " " $6; err[k] += $7 }
            END {
                nt = split(targets, T, " "); nr = split(rates, Q, " ")
                printf "| %-18s | %6s | %10s | %8s | %8s | %9s | %6s | %17s |\n", "target", "rate", "req/s", "p50 us", "p99 us", "p99.9 us", "errors", "p99 / proxy_cache"
                printf "|%s|%s|%s|%s|%s|%s|%s|%s|\n", "--------------------", "-------:", "-----------:", "---------:", "---------:", "----------:", "-------:", "------------------:"
                for (q = 1; q <= nr; q++) {
                    base = median(p99["nginx-proxy-cache" SUBSEP Q[q]])
                    for (t = 1; t <= nt; t++) {
                        k = T[t] SUBSEP Q[q]
                        v = median(p99[k])
                        ratio = (base > 0) ? v / base : 0
                        printf "| %-18s | %6s | %10.0f | %8.0f | %8.0f | %9.0f | %6d | %16.2fx |\n", T[t], Q[q],
                            median(rps[k]), median(p50[k]), v, median(p999[k]), err[k], ratio
                    }
                }
            }' "$WORK/rate-results"
    fi
    echo
    for g in "${GATEWAYS[@]}"; do
        echo "$g peak RSS (VmHWM): $((HWM[$g] / 1024)).$(((HWM[$g] % 1024) * 10 / 1024)) MiB (${HWM[$g]} KiB; VmRSS now ${RSS[$g]} KiB); upstream fetches: ${FETCHES[$g]} in a ${run_seconds}s run (bound 1 + run/TTL = $bound)"
    done
    echo "gateway --no-cache peak RSS: ${gw_nc_hwm} KiB; upstream fetches: $fetches_nc"
    echo "nginx (master + 2 workers) peak RSS, summed: ${ngx_rss} KiB; nginx proxy_cache upstream fetches: $ngx_fetches"
}
if [ -n "${RESULTS:-}" ]; then
    report | tee "$RESULTS"
else
    report
fi
