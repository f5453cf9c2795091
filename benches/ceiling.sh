#!/usr/bin/env bash
# How close the gateway's hot path is to the floor: server CPU per request
# of the gateway next to two comparators that send the same response bytes,
# and next to nginx proxy_cache, plus many-tenant and open-loop runs.
#
# Servers (all on 127.0.0.1, each pinned to CPU 1; the load generator on
# CPU 0):
#   gateway    the gateway, one worker, one configured issuer ("single")
#   bare       benches/comparators/bare_actix.rs: one actix-web worker whose
#              only handler sends the gateway's response for "single" (status,
#              headers, body read from a file once, at start-up)
#   bare-tenants  the same with --responses: the template gateway's
#              response for each of the TENANTS tenants, picked by the
#              path's last segment (one HashMap lookup): the framework's
#              floor for serving many documents in turn
#   fixed      benches/comparators/fixed_responder.rs: a one-thread epoll
#              loop (mio) writing the same bytes per request, no framework:
#              the machine's ceiling
#   template   the gateway, one worker, one issuer template, TENANTS tenants
#              fetched before the runs
#   nginx      nginx proxy_cache with the frozen configuration of
#              benches/tenants.sh (NGINX_WORKERS workers)
#   baseline   (only with BASELINE_BIN=path) another gateway binary, e.g. an
#              older build, configured like "gateway" and "template"
# behind benches/tenant_upstream.py (DELAY 0: only the warm-up fetches).
#
# Targets, each measured ROUNDS times, interleaved (round 1 runs every
# target once, then round 2, ...; even rounds in reverse order), with
# wrk -t1 -c CONNECTIONS for DURATION seconds after a 1 s warm-up:
#   gateway-one bare-one fixed-one nginx-one        the one document
#   template-one template-rr template-zipf          tenant t1 (through the
#                                                   same wrk script as rr);
#                                                   t1..tTENANTS round-robin;
#                                                   Zipf (s=1)
#   bare-tenant-one bare-tenant-rr                  bare_actix --responses:
#                                                   the template's responses
#                                                   for t1..tTENANTS, as
#                                                   template-one and -rr
#   nginx-zipf                                      the same Zipf on nginx
#   (baseline-one baseline-rr baseline-zipf with BASELINE_BIN)
# CPU per request = (utime + stime of the server's processes after the run
# - before, from /proc/PID/stat) / requests answered. Then the open-loop
# runs: benches/comparators/open_loop.rs sends RATE requests/s on
# CONNECTIONS connections for OPEN_SECONDS to gateway-one and nginx-one,
# ROUNDS times interleaved; latency counts from each request's scheduled
# send time (no coordinated omission).
#
# Prints the per-target medians (and min-max) and the four targets of
# issue 24 with PASS/FAIL (a report: the exit status does not depend on
# them). One command, nothing to set up:
#
#   bash benches/ceiling.sh                      # about 6 minutes
#   ROUNDS=1 DURATION=2 OPEN_SECONDS=3 bash benches/ceiling.sh   # a quick check
#
# Settings (environment):
#   ROUNDS=5 DURATION=5 CONNECTIONS=64 TENANTS=1000 NGINX_WORKERS=2
#   RATE=50000 OPEN_SECONDS=10   open-loop rate (requests/s) and length
#   GATEWAY_BIN=     use this gateway binary (default: build target/release)
#   BASELINE_BIN=    also measure this gateway binary (e.g. main's build)
#   EXAMPLES_DIR=    where the comparators are (default: build them into
#                    target/release/examples)
#   RESULTS=         also write the report to this file
#   LOGS=            copy the processes' output and every run's figures
#                    (closed.log, open.log) to this directory
#
# Needs 2 CPUs, wrk, nginx, curl and python3 (installed with apt-get when
# missing) and cargo unless GATEWAY_BIN and EXAMPLES_DIR are given. Every
# process started here is stopped on exit (trap), by its PID.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5}
CONNECTIONS=${CONNECTIONS:-64}
TENANTS=${TENANTS:-1000}
NGINX_WORKERS=${NGINX_WORKERS:-2}
RATE=${RATE:-50000}
OPEN_SECONDS=${OPEN_SECONDS:-10}
WRK_THREADS=1
PATH_AS=/.well-known/oauth-authorization-server

# shellcheck source=benches/lib.sh
. benches/lib.sh

for v in ROUNDS DURATION CONNECTIONS TENANTS NGINX_WORKERS RATE OPEN_SECONDS; do
    case "${!v}" in *[!0-9]* | "" | 0*) die "$v: \"${!v}\" is not a positive number" ;; esac
done
# Always pinned: the load generator on CPU 0, the servers on CPU 1.
PIN=1
check_pin

RUN_STARTED=$(date +%s)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
install_missing wrk nginx curl python3
build_gateway
if [ -z "${EXAMPLES_DIR:-}" ]; then
    log "building the comparators and the open-loop generator (release profile)"
    cargo build --release --locked --example bare_actix --example fixed_responder --example open_loop >&2
    EXAMPLES_DIR=target/release/examples
fi
for e in bare_actix fixed_responder open_loop; do
    [ -x "$EXAMPLES_DIR/$e" ] || die "no $e in $EXAMPLES_DIR"
done
[ -z "${BASELINE_BIN:-}" ] || [ -x "$BASELINE_BIN" ] || die "BASELINE_BIN: no binary at $BASELINE_BIN"
init_work gateway-ceiling
mkdir -p "$WORK/cache" "$WORK/tmp"

# Moves every thread of each PID and of its children to CPU 1.

P_UP_GW=$(free_port)
P_UP_TPL=$(free_port)
P_UP_NGX=$(free_port)
P_UP_BASE=$(free_port)
P_UP_BASE_TPL=$(free_port)
P_GW=$(free_port)
P_TPL=$(free_port)
P_BARE=$(free_port)
P_FIXED=$(free_port)
P_BARE_TPL=$(free_port)
P_NGX=$(free_port)
P_BASE=$(free_port)
P_BASE_TPL=$(free_port)

start upstream python3 benches/tenant_upstream.py --delay 0 --max-seconds 7200 \
    --port "$P_UP_GW" --port "$P_UP_TPL" --port "$P_UP_NGX" --port "$P_UP_BASE" --port "$P_UP_BASE_TPL"
UP_PID=$LAST_PID
wait_ready "http://127.0.0.1:$P_UP_GW/_stats" upstream

cat >"$WORK/nginx.conf" <<EOF
$(nginx_head nginx "$NGINX_WORKERS" 2048)
    access_log off;
    proxy_cache_path $WORK/cache levels=1:2 keys_zone=metadata:10m max_size=100m;
    server {
        listen 127.0.0.1:$P_NGX;
        location $PATH_AS/ {
            proxy_pass http://127.0.0.1:$P_UP_NGX;
            proxy_cache metadata;
            proxy_cache_valid 200 300s;
            proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
            proxy_cache_background_update on;
            proxy_cache_lock on;
        }
    }
}
EOF
start nginx "$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;'

export RUST_LOG=${RUST_LOG:-warn}
# A gateway with one configured issuer and one with an issuer template.
start_gateways() { # name, binary, gateway port, its upstream port, template port, its upstream port
    printf '[[authorization_server]]\nissuer = "http://127.0.0.1:%s/single"\n' "$4" >"$WORK/$1.toml"
    printf '[[authorization_server]]\nissuer = "http://127.0.0.1:%s/{tenant}"\nmax_tenants = %s\n' \
        "$6" $((TENANTS * 2)) >"$WORK/$1-template.toml"
    start "$1" "$2" --config "$WORK/$1.toml" --listen "127.0.0.1:$3" --workers 1 --ttl 300s --shutdown-timeout 1s
    eval "PID_$1=$LAST_PID"
    start "$1-template" "$2" --config "$WORK/$1-template.toml" --listen "127.0.0.1:$5" --workers 1 --ttl 300s --shutdown-timeout 1s
    eval "PID_$1_template=$LAST_PID"
}
start_gateways gateway "$GATEWAY_BIN" "$P_GW" "$P_UP_GW" "$P_TPL" "$P_UP_TPL"
[ -z "${BASELINE_BIN:-}" ] || start_gateways baseline "$BASELINE_BIN" "$P_BASE" "$P_UP_BASE" "$P_BASE_TPL" "$P_UP_BASE_TPL"
wait_ready "http://127.0.0.1:$P_GW/readyz" gateway
wait_ready "http://127.0.0.1:$P_TPL/healthz" template-gateway
wait_ready "http://127.0.0.1:$P_NGX$PATH_AS/single" nginx
[ -z "${BASELINE_BIN:-}" ] || wait_ready "http://127.0.0.1:$P_BASE/readyz" baseline
[ -z "${BASELINE_BIN:-}" ] || wait_ready "http://127.0.0.1:$P_BASE_TPL/healthz" baseline-template

# The response the comparators send: the gateway's own, as received.
curl -s --include --raw --max-time 5 "http://127.0.0.1:$P_GW$PATH_AS/single" >"$WORK/response"
head -1 "$WORK/response" | grep -q ' 200 ' || die "the gateway did not answer 200 for $PATH_AS/single"
start bare "$EXAMPLES_DIR/bare_actix" --response "$WORK/response" --listen "127.0.0.1:$P_BARE"
PID_bare=$LAST_PID
start fixed "$EXAMPLES_DIR/fixed_responder" --response "$WORK/response" --listen "127.0.0.1:$P_FIXED"
PID_fixed=$LAST_PID
wait_ready "http://127.0.0.1:$P_BARE$PATH_AS/single" bare_actix
wait_ready "http://127.0.0.1:$P_FIXED$PATH_AS/single" fixed_responder
# Same body from all three; the bare handler also the same header fields.
for p in "$P_BARE" "$P_FIXED"; do
    curl -s --max-time 5 "http://127.0.0.1:$p$PATH_AS/single" | cmp -s - <(sed '1,/^\r$/d' "$WORK/response") ||
        die "the comparator on port $p does not send the gateway's body"
done
fields() { tr -d '\r' | sed -n '2,/^$/p' | grep -viE '^(date|age|cache-status):' | tr '[:upper:]' '[:lower:]' | sort; }
diff <(fields <"$WORK/response") <(curl -s --include --max-time 5 "http://127.0.0.1:$P_BARE$PATH_AS/single" | fields) >&2 ||
    die "bare_actix does not send the gateway's header fields"
log "comparators send the gateway's $(sed '1,/^\r$/d' "$WORK/response" | wc -c)-byte response"

# Every tenant fetched once by the template gateways and by nginx.
warm_tenants() { # base url
    awk -v n="$TENANTS" -v u="$1$PATH_AS/t" 'BEGIN {
        for (i = 1; i <= n; i++) printf "url = \"%s%d\"\noutput = \"/dev/null\"\n", u, i }' >"$WORK/warm.curl"
    curl -s --no-progress-meter --parallel --parallel-max 16 --max-time 30 -w '%{http_code}\n' --config "$WORK/warm.curl" >"$WORK/warm.codes" || true
    [ "$(grep -c '^200$' "$WORK/warm.codes")" = "$TENANTS" ] ||
        die "warming $TENANTS tenants at $1 got $(sort "$WORK/warm.codes" | uniq -c | tr '\n' ' ')"
}
warm_tenants "http://127.0.0.1:$P_TPL"
warm_tenants "http://127.0.0.1:$P_NGX"
# The bare handler's floor for many tenants: the template gateway's
# response for each tenant, saved as tenants/tN, one lookup away.
mkdir -p "$WORK/tenants"
awk -v n="$TENANTS" -v u="http://127.0.0.1:$P_TPL$PATH_AS/t" -v d="$WORK/tenants/t" 'BEGIN {
    for (i = 1; i <= n; i++) printf "url = \"%s%d\"\noutput = \"%s%d\"\n", u, i, d, i }' >"$WORK/save.curl"
curl -s --no-progress-meter --include --raw --parallel --parallel-max 16 --max-time 30 --config "$WORK/save.curl" ||
    die "saving the $TENANTS tenants' responses failed"
start bare-tenants "$EXAMPLES_DIR/bare_actix" --responses "$WORK/tenants" --listen "127.0.0.1:$P_BARE_TPL"
PID_bare_tenants=$LAST_PID
wait_ready "http://127.0.0.1:$P_BARE_TPL$PATH_AS/t$TENANTS" bare_actix-tenants
[ -z "${BASELINE_BIN:-}" ] || warm_tenants "http://127.0.0.1:$P_BASE_TPL"
log "$TENANTS tenants fetched by the template gateway(s) and nginx"

# wrk scripts: round-robin over t1 alone ("one") and over t1..tTENANTS,
# and Zipf (s = 1) over t1..tTENANTS; the Zipf draws come from a table
# built before the run (the draw costs wrk's core, not the server's).
# template-one goes through the same Lua request function as template-rr
# (with n = 1): a wrk that builds each request in Lua sends fewer requests
# per read than one that repeats a fixed request, and the server's
# per-request share of its reads and wake-ups grows with that (about 4 %
# here, benches/README.md), which is not what many tenants cost.
rotation_script() { # name, tenants
    cat >"$WORK/$1.lua" <<EOF
local n, i = $2, 0
request = function()
    i = i % n + 1
    return wrk.format(nil, "$PATH_AS/t" .. i)
end
EOF
}
rotation_script one 1
rotation_script rr "$TENANTS"
cat >"$WORK/zipf.lua" <<EOF
local n, cdf, total = $TENANTS, {}, 0
for k = 1, n do total = total + 1 / k; cdf[k] = total end
for k = 1, n do cdf[k] = cdf[k] / total end
local draws, m, j = {}, 65536, 0
math.randomseed(24)
for d = 1, m do
    local u, lo, hi = math.random(), 1, n
    while lo < hi do local mid = math.floor((lo + hi) / 2); if cdf[mid] < u then lo = mid + 1 else hi = mid end end
    draws[d] = "$PATH_AS/t" .. lo
end
request = function()
    j = j % m + 1
    return wrk.format(nil, draws[j])
end
EOF

nginx_pids() { echo "$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')"; }
# shellcheck disable=SC2154 # PID_<name> are set by eval in start_gateways
pin_servers "$UP_PID" "$PID_gateway" "$PID_gateway_template" "$PID_bare" "$PID_bare_tenants" "$PID_fixed" "$(cat "$WORK/nginx.pid")"
# shellcheck disable=SC2154 # likewise
[ -z "${BASELINE_BIN:-}" ] || pin_servers "$PID_baseline" "$PID_baseline_template"

declare -A URL PIDS_OF SCRIPT
add_target() { # name, url, pids, wrk script or ""
    TARGETS+=("$1")
    URL[$1]=$2
    PIDS_OF[$1]=$3
    SCRIPT[$1]=$4
}
TARGETS=()
add_target gateway-one "http://127.0.0.1:$P_GW$PATH_AS/single" "$PID_gateway" ""
add_target bare-one "http://127.0.0.1:$P_BARE$PATH_AS/single" "$PID_bare" ""
add_target fixed-one "http://127.0.0.1:$P_FIXED$PATH_AS/single" "$PID_fixed" ""
add_target nginx-one "http://127.0.0.1:$P_NGX$PATH_AS/single" "$(nginx_pids)" ""
add_target template-one "http://127.0.0.1:$P_TPL" "$PID_gateway_template" one
add_target template-rr "http://127.0.0.1:$P_TPL" "$PID_gateway_template" rr
add_target template-zipf "http://127.0.0.1:$P_TPL" "$PID_gateway_template" zipf
add_target bare-tenant-one "http://127.0.0.1:$P_BARE_TPL" "$PID_bare_tenants" one
add_target bare-tenant-rr "http://127.0.0.1:$P_BARE_TPL" "$PID_bare_tenants" rr
add_target nginx-zipf "http://127.0.0.1:$P_NGX" "$(nginx_pids)" zipf
if [ -n "${BASELINE_BIN:-}" ]; then
    add_target baseline-one "http://127.0.0.1:$P_BASE$PATH_AS/single" "$PID_baseline" ""
    add_target baseline-rr "http://127.0.0.1:$P_BASE_TPL" "$PID_baseline_template" rr
    add_target baseline-zipf "http://127.0.0.1:$P_BASE_TPL" "$PID_baseline_template" zipf
fi

# One closed-loop run: appends "target rps p99_us cpu_us_per_request".
closed_run() { # target, seconds, record (1) or warm-up (0)
    local t=$1 ticks0 ticks1 out requests
    local args=(-t "$WRK_THREADS" -c "$CONNECTIONS" -d "${2}s" --latency)
    [ -z "${SCRIPT[$t]}" ] || args+=(-s "$WORK/${SCRIPT[$t]}.lua")
    # shellcheck disable=SC2086 # a list of pids
    ticks0=$(cpu_ticks ${PIDS_OF[$t]})
    out=$(timeout $(($2 + 30)) taskset -c "$WRK_CPUS" wrk "${args[@]}" "${URL[$t]}") || die "wrk failed against $t"
    # shellcheck disable=SC2086
    ticks1=$(cpu_ticks ${PIDS_OF[$t]})
    [ "$3" = 1 ] || return 0
    if grep -q 'Non-2xx\|Socket errors' <<<"$out"; then die "$t: errors in the run: $(grep 'Non-2xx\|Socket errors' <<<"$out")"; fi
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v t="$t" -v d=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        -v rps="$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")" -v p99="$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")" \
        'BEGIN { printf "%s %.0f %s %.3f\n", t, rps, p99, d / hz * 1e6 / n }' >>"$WORK/closed.log"
    log "$(tail -1 "$WORK/closed.log" | awk '{printf "%-14s %9s req/s  p99 %6s us  %s us CPU/request", $1, $2, $3, $4}')"
}
# One open-loop run: appends "target p50 p99 p999 requests errors late".
open_run() { # target
    local t=$1 addr path out
    addr=${URL[$t]#http://}
    path=/${addr#*/}
    addr=${addr%%/*}
    out=$(timeout $((OPEN_SECONDS + 30)) taskset -c "$WRK_CPUS" "$EXAMPLES_DIR/open_loop" --addr "$addr" --path "$path" \
        --rate "$RATE" --seconds "$OPEN_SECONDS" --connections "$CONNECTIONS") || die "open_loop failed against $t"
    awk -v t="$t" '{ for (i = 1; i < NF; i += 2) v[$i] = $(i + 1)
        printf "%s %s %s %s %s %s %s %s\n", t, v["p50_us"], v["p99_us"], v["p999_us"], v["requests"], v["errors"], v["late"], v["rate"] }' <<<"$out" >>"$WORK/open.log"
    log "$(tail -1 "$WORK/open.log" | awk '{printf "open loop %-12s p50 %s us  p99 %s us  p99.9 %s us  answered %s  errors %s  late %s  rate %s/s", $1, $2, $3, $4, $5, $6, $7, $8}')"
}

for t in "${TARGETS[@]}"; do closed_run "$t" 1 0; done
: >"$WORK/closed.log"
: >"$WORK/open.log"
for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    # Odd rounds in the listed order, even rounds in reverse: what drifts
    # during a round weighs on each pair's two runs alike.
    order=("${TARGETS[@]}")
    if ((round % 2 == 0)); then
        order=()
        for ((i = ${#TARGETS[@]} - 1; i >= 0; i--)); do order+=("${TARGETS[i]}"); done
    fi
    for t in "${order[@]}"; do closed_run "$t" "$DURATION" 1; done
done
OPEN_TARGETS=(gateway-one nginx-one)
for round in $(seq "$ROUNDS"); do
    log "open loop at $RATE requests/s, round $round of $ROUNDS"
    for t in "${OPEN_TARGETS[@]}"; do open_run "$t"; done
done

# --- report ------------------------------------------------------------------
RUN_S=$(($(date +%s) - RUN_STARTED))
stat_of() { # file, target, column: "median min max"
    awk -v t="$2" -v c="$3" "$AWK_MEDIAN"'
        $1 == t { l = l " " $c; if (min == "" || $c + 0 < min + 0) min = $c; if ($c + 0 > max + 0) max = $c }
        END { printf "%s %s %s", median(l), min, max }' "$1"
}
med() { stat_of "$@" | cut -d' ' -f1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", (b > 0) ? a / b : 0 }'; }
# The median of each round's a / b (the two runs of a round are seconds
# apart, so what slows the whole machine for a while cancels out).
paired() { # target a, target b
    awk -v a="$1" -v b="$2" "$AWK_MEDIAN"'
        $1 == a { x[++na] = $4 } $1 == b { y[++nb] = $4 }
        END { for (i = 1; i <= na && i <= nb; i++) if (y[i] > 0) l = l " " x[i] / y[i]; printf "%.3f", median(l) }' "$WORK/closed.log"
}
verdict() { awk -v a="$1" -v op="$2" -v b="$3" 'BEGIN { ok = (op == "<=") ? (a <= b) : (a >= b); print ok ? "PASS" : "FAIL" }'; }

report() {
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); commit: $(git rev-parse --short HEAD 2>/dev/null || echo -)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (+ uncommitted changes in src/)')"
    echo "machine: $(machine); load before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "pinned: load generator on CPU 0; every server on CPU 1. gateway: $GATEWAY_BIN --workers 1${BASELINE_BIN:+; baseline: $BASELINE_BIN}"
    echo "nginx $("$NGINX" -v 2>&1 | sed 's/.*\///') ($NGINX_WORKERS workers, benches/tenants.sh's proxy_cache config); wrk -t1 -c$CONNECTIONS, ${DURATION}s runs"
    echo "$ROUNDS rounds, interleaved; medians (min-max); $TENANTS tenants; open loop: $RATE req/s, ${OPEN_SECONDS}s, $CONNECTIONS connections; run took ${RUN_S}s"
    echo
    echo "| target | CPU per request, us | req/s | p99, us |"
    echo "|---|---:|---:|---:|"
    local t cpu
    for t in "${TARGETS[@]}"; do
        read -r -a cpu <<<"$(stat_of "$WORK/closed.log" "$t" 4)"
        printf '| %s | **%.2f** (%.2f-%.2f) | %.0f | %.0f |\n' "$t" "${cpu[0]}" "${cpu[1]}" "${cpu[2]}" \
            "$(med "$WORK/closed.log" "$t" 2)" "$(med "$WORK/closed.log" "$t" 3)"
    done
    echo
    echo "| open loop at $RATE req/s | p50, us | p99, us | p99.9, us | answered (median) | errors + late (all runs) |"
    echo "|---|---:|---:|---:|---:|---:|"
    for t in "${OPEN_TARGETS[@]}"; do
        local p99
        read -r -a p99 <<<"$(stat_of "$WORK/open.log" "$t" 3)"
        printf '| %s | %s | **%s** (%s-%s) | %s | %s | %s |\n' "$t" "$(med "$WORK/open.log" "$t" 2)" "${p99[0]}" "${p99[1]}" "${p99[2]}" \
            "$(med "$WORK/open.log" "$t" 4)" "$(med "$WORK/open.log" "$t" 5)" \
            "$(awk -v t="$t" '$1 == t { n += $6 + $7 } END { print n + 0 }' "$WORK/open.log")"
    done
    echo
    local gw bare rr one zg zn r1 r2 r3
    gw=$(med "$WORK/closed.log" gateway-one 4)
    bare=$(med "$WORK/closed.log" bare-one 4)
    one=$(med "$WORK/closed.log" template-one 4)
    rr=$(med "$WORK/closed.log" template-rr 4)
    zg=$(med "$WORK/closed.log" template-zipf 4)
    zn=$(med "$WORK/closed.log" nginx-zipf 4)
    r1=$(ratio "$gw" "$bare")
    r2=$(ratio "$rr" "$one")
    r3=$(ratio "$zn" "$zg")
    echo "| target (issue 24) | figure | limit | result |"
    echo "|---|---:|---|---|"
    echo "| gateway / bare actix-web, CPU per request | ${r1}x | <= 1.15x | $(verdict "$r1" "<=" 1.15) |"
    echo "| $TENANTS tenants round-robin / one tenant, CPU per request | ${r2}x | <= 1.05x | $(verdict "$r2" "<=" 1.05) |"
    echo "| nginx / gateway, Zipf over $TENANTS tenants, CPU per request | ${r3}x | >= 1.6x | $(verdict "$r3" ">=" 1.6) |"
    local pg pn missed open_verdict
    pg=$(med "$WORK/open.log" gateway-one 3)
    pn=$(med "$WORK/open.log" nginx-one 3)
    # A p99 means nothing for a server that did not keep up with the rate
    # (requests still unanswered at the end, or errors): no verdict then.
    missed=$(awk '$6 + $7 > 0 { print $1 }' "$WORK/open.log" | sort -u | tr '\n' ' ')
    open_verdict=$(verdict "$pn" ">=" "$pg")
    [ -z "$missed" ] || open_verdict="NO VERDICT: the rate was not sustained by ${missed% }"
    echo "| open loop at $RATE req/s: gateway p99 / nginx p99 | ${pg} / ${pn} us | gateway <= nginx | $open_verdict |"
    echo "| (for scale) round-robin / one tenant, median of the rounds' own ratios | $(paired template-rr template-one)x | | |"
    local floor_rr
    floor_rr=$(paired bare-tenant-rr bare-tenant-one)
    echo "| (for scale) bare actix-web, $TENANTS tenants round-robin / one tenant, CPU per request | $(ratio "$(med "$WORK/closed.log" bare-tenant-rr 4)" "$(med "$WORK/closed.log" bare-tenant-one 4)")x (rounds' own: ${floor_rr}x) | | |"
    echo "| (for scale) the gateway's round-robin / one tenant over bare actix-web's (rounds' own ratios) | $(ratio "$(paired template-rr template-one)" "$floor_rr")x | | |"
    echo "| (for scale) fixed responder / bare actix-web, CPU per request | $(ratio "$(med "$WORK/closed.log" fixed-one 4)" "$bare")x | | |"
    echo "| (for scale) nginx / gateway, one document, CPU per request | $(ratio "$(med "$WORK/closed.log" nginx-one 4)" "$gw")x | | |"
}
if [ -n "${RESULTS:-}" ]; then
    report | tee "$RESULTS"
else
    report
fi
