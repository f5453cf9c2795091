#!/usr/bin/env bash
# The state directory as a template's second tier (issue 27), on loopback:
# one issuer template (max_tenants = MAX_TENANTS) in front of
# benches/tenant_upstream.py, TENANTS distinct tenants.
#
#  1. Healthy round-robin: PASSES passes over t1..tTENANTS; upstream
#     requests per pass (target: ~0 after the first while copies are fresh).
#  2. Outage: the upstream is stopped; one more pass; how many of the
#     TENANTS are served (target: all).
#  3. Latency of a tenant read back from disk: LATENCY_SAMPLES tenants only
#     on disk (GET /documents?tier=disk), requested one at a time on one
#     keep-alive connection; percentiles of the answers with
#     Cache-Status detail=disk (target: p99 <= 2 ms). Client-side times
#     (Python http.client), the files in the page cache (just written).
#  4. RSS: the same passes on a gateway without --state-dir; VmRSS and
#     VmHWM of both after the passes (target: unchanged by the disk tier).
#  5. Start-up with FILES tenant files (generated in the state format by
#     benches/tenants_disk_client.py): time from exec to /healthz 200 and
#     VmHWM then (target: <= 2 s and <= 64 MiB); then a few of them are
#     requested to check they are served from disk.
#
#   bash benches/tenants_disk.sh
#   TENANTS=300 MAX_TENANTS=200 FILES=5000 bash benches/tenants_disk.sh   # quick
#
# Settings (environment): TENANTS=1500 MAX_TENANTS=1000 PASSES=3
# LATENCY_SAMPLES=400 FILES=100000 CONNS=8 TTL=1h GATEWAY_BIN= (else the
# release build) RESULTS= (also write the report there) LOGS= (keep logs).
# Everything listens on 127.0.0.1 on free ports; every process started here
# is stopped on exit by its PID; every wait is bounded.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TENANTS=${TENANTS:-1500}
MAX_TENANTS=${MAX_TENANTS:-1000}
PASSES=${PASSES:-3}
LATENCY_SAMPLES=${LATENCY_SAMPLES:-400}
FILES=${FILES:-100000}
CONNS=${CONNS:-8}
TTL=${TTL:-1h}

# shellcheck source=benches/lib.sh
. benches/lib.sh

for v in TENANTS MAX_TENANTS PASSES LATENCY_SAMPLES FILES CONNS; do
    case "${!v}" in *[!0-9]* | "" | 0*) die "$v: \"${!v}\" is not a positive number" ;; esac
done

install_missing curl python3
build_gateway
init_work tenants-disk
CLIENT="python3 benches/tenants_disk_client.py"
REPORT="$WORK/report.txt"
say() { printf '%s\n' "$*" | tee -a "$REPORT"; }

UP_PORT=$(free_port)
start upstream python3 benches/tenant_upstream.py --port "$UP_PORT" --delay 0 --max-seconds 3600
UPSTREAM_PID=$LAST_PID
wait_ready "http://127.0.0.1:$UP_PORT/_stats" upstream
TEMPLATE="http://127.0.0.1:$UP_PORT/{tenant}"
upstream_requests() {
    curl -s --max-time 5 "http://127.0.0.1:$UP_PORT/_stats" |
        python3 -c 'import json,sys; print(sum(p["requests"] for p in json.load(sys.stdin)["ports"].values()))'
}

# A gateway for the template: name, state dir ("" for none). Sets GW, ADMIN, GW_PID.
gateway() {
    local name=$1 dir=$2 port admin
    port=$(free_port)
    admin=$(free_port)
    local args=(--issuer "$TEMPLATE" --upstream "$TEMPLATE" --max-tenants "$MAX_TENANTS"
        --ttl "$TTL" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin")
    [ -n "$dir" ] && args+=(--state-dir "$dir")
    start "$name" "$GATEWAY_BIN" "${args[@]}"
    GW_PID=$LAST_PID
    GW="http://127.0.0.1:$port"
    ADMIN="http://127.0.0.1:$admin"
    wait_ready "$GW/healthz" "$name"
}
files_in() { find "$1" -maxdepth 1 -name 'm-*.json-doc' | wc -l; }

say "# benches/tenants_disk.sh, $(date -u +%Y-%m-%dT%H:%MZ), $(machine), load average $(cut -d' ' -f1-3 /proc/loadavg)"
say "TENANTS=$TENANTS MAX_TENANTS=$MAX_TENANTS PASSES=$PASSES FILES=$FILES binary=$GATEWAY_BIN"

# --- 1. healthy round-robin, with and without the disk tier -----------------
STATE="$WORK/state"
for mode in disk memory; do
    if [ "$mode" = disk ]; then gateway gw-disk "$STATE"; else gateway gw-memory ""; fi
    for p in $(seq "$PASSES"); do
        before=$(upstream_requests)
        out=$($CLIENT pass "$GW" "$TENANTS" "$CONNS")
        after=$(upstream_requests)
        say "[$mode] pass $p: upstream fetches $((after - before)), answers $out"
        # moka applies evictions in batches.
        sleep 1
        if [ "$mode" = disk ]; then
            # The writer thread saves in the background (two fsyncs a
            # file): a tenant whose save is still queued is fetched again.
            # Wait (bounded) until every tenant is on disk.
            w0=$(date +%s%N)
            for _ in $(seq 1800); do
                [ "$(files_in "$STATE")" -ge "$TENANTS" ] && break
                sleep 0.1
            done
            say "[disk] $(files_in "$STATE") tenant files, $((($(date +%s%N) - w0) / 1000000)) ms after the pass"
        fi
    done
    say "[$mode] after $PASSES passes: VmRSS $(rss_kib "$GW_PID") KiB, VmHWM $(hwm_kib "$GW_PID") KiB"
    if [ "$mode" = disk ]; then
        say "[disk] tenant files: $(files_in "$STATE")"
        # --- 3. latency of reads from disk ------------------------------------
        buckets() {
            curl -s --max-time 5 "$GW/metrics" | awk '/^metadata_gateway_http_request_duration_seconds_bucket\{.*\{tenant\}/ {print}'
        }
        buckets >"$WORK/buckets.before"
        out=$($CLIENT latency "$GW" "$ADMIN" "oauth-authorization-server/{tenant}" "$LATENCY_SAMPLES")
        say "[disk] requests answered from disk (client side): $out"
        buckets >"$WORK/buckets.after"
        # Server side: the gateway's own request-duration histogram over the
        # same requests (from the request's arrival to its response).
        say "[disk] server side, same requests: $(paste "$WORK/buckets.before" "$WORK/buckets.after" |
            awk '{ match($1, /le="[^"]*"/); le = substr($1, RSTART + 4, RLENGTH - 5); printf "<=%ss %d  ", le, $4 - $2 }')"
        DISK_PID=$GW_PID
        DISK_GW=$GW
        DISK_ADMIN=$ADMIN
    else
        stop_pid "$GW_PID"
    fi
done

# --- 2. outage -----------------------------------------------------------------
stop_pid "$UPSTREAM_PID"
out=$($CLIENT pass "$DISK_GW" "$TENANTS" "$CONNS")
say "[disk] upstream stopped: answers $out (of $TENANTS)"
NAME=$(curl -s --max-time 5 "$DISK_ADMIN/documents?limit=0" | python3 -c 'import json,sys; print(json.load(sys.stdin)["templates"][0]["name"])')
stop_pid "$DISK_PID"

# --- 5. start-up with FILES files -------------------------------------------
# The same gateway on an empty state dir: the baseline of the start-up RSS.
EMPTY="$WORK/empty"
port=$(free_port)
start gw-empty "$GATEWAY_BIN" --issuer "$TEMPLATE" --upstream "$TEMPLATE" --max-tenants "$MAX_TENANTS" \
    --max-tenants-on-disk "$FILES" --ttl "$TTL" --state-dir "$EMPTY" --listen "127.0.0.1:$port"
EMPTY_PID=$LAST_PID
wait_ready "http://127.0.0.1:$port/healthz" gw-empty
say "[start-up] empty state dir: VmHWM $(hwm_kib "$EMPTY_PID") KiB, VmRSS $(rss_kib "$EMPTY_PID") KiB"
stop_pid "$EMPTY_PID"

BIG="$WORK/big"
log "generating $FILES tenant files"
$CLIENT generate "$BIG" "$NAME" "http://127.0.0.1:$UP_PORT/" "http://127.0.0.1:$UP_PORT/.well-known/oauth-authorization-server/" "$FILES"
port=$(free_port)
admin=$(free_port)
t0=$(date +%s%N)
start gw-big "$GATEWAY_BIN" --issuer "$TEMPLATE" --upstream "$TEMPLATE" --max-tenants "$MAX_TENANTS" \
    --max-tenants-on-disk "$FILES" --ttl "$TTL" --state-dir "$BIG" \
    --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin"
BIG_PID=$LAST_PID
for _ in $(seq 2000); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/healthz" || true)" = 200 ] && break
    sleep 0.005
done
t1=$(date +%s%N)
say "[start-up] $FILES files: /healthz after $(((t1 - t0) / 1000000)) ms, VmHWM $(hwm_kib "$BIG_PID") KiB, VmRSS $(rss_kib "$BIG_PID") KiB"
out=$($CLIENT pass "http://127.0.0.1:$port" 200 4)
say "[start-up] t1..t200 with the upstream stopped: $out"
say "[start-up] VmHWM after serving: $(hwm_kib "$BIG_PID") KiB; index: $(curl -s --max-time 5 "http://127.0.0.1:$admin/documents?limit=0" | python3 -c 'import json,sys; t=json.load(sys.stdin)["templates"][0]; print(t["tenants_on_disk"], "on disk,", t["cached_tenants"], "in memory")')"
grep -h "tenants in the state dir" "$WORK/gw-big.out" | tail -1 | tee -a "$REPORT" >&2 || true

[ -n "${RESULTS:-}" ] && cp "$REPORT" "$RESULTS"
cat "$REPORT"
