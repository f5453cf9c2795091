#!/usr/bin/env bash
# Instructions per request of the gateway's hot path, under valgrind's
# callgrind: repeatable on a shared machine (instruction counts do not
# depend on what else runs), unlike wall-clock figures. The gateway (one
# worker, one configured issuer, or an issuer template with TENANTS tenants
# requested round-robin when MODE=rr) serves REQUESTS requests at a low fixed
# rate from benches/comparators/open_loop.rs; the counters are zeroed after
# the warm-up and dumped after the run, so start-up is not counted. Kernel
# time (syscalls) is not in the figure: callgrind sees user space only.
#
#   bash benches/callgrind.sh                      # one document
#   MODE=rr bash benches/callgrind.sh              # 1,000 tenants round-robin
#   MODE=bare bash benches/callgrind.sh            # the bare actix-web handler
#                                                  # (benches/comparators) sending
#                                                  # the gateway's response for
#                                                  # the one document, same path
#
# Settings: GATEWAY_BIN (default: build target/release), EXAMPLES_DIR (open_loop;
# default: build it), REQUESTS=5000, RATE=250, TENANTS=1000, OUT=dir for the
# callgrind file (default: a scratch directory, removed), TOP=25 functions shown.
# CACHE_SIM=1 adds valgrind's cache simulation (L1 data D1 and last level LL
# as "size,ways,line"; defaults: this machine's L1d and L2 per core, 32 KiB
# and 1 MiB, 8-way, 64-byte lines) and prints the misses per request and
# the functions with the most last-level misses: memory touched, which is
# what serving many documents in turn costs (callgrind does not model the
# hardware prefetchers, so a sequential copy counts more than it costs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MODE=${MODE:-one}
REQUESTS=${REQUESTS:-5000}
RATE=${RATE:-250}
TENANTS=${TENANTS:-1000}
TOP=${TOP:-25}
PATH_AS=/.well-known/oauth-authorization-server

# shellcheck source=benches/lib.sh
. benches/lib.sh
case "$MODE" in one | rr | bare) ;; *) die "MODE: \"$MODE\" is not one of one, rr, bare" ;; esac
install_missing curl python3 valgrind
build_gateway
if [ -z "${EXAMPLES_DIR:-}" ]; then
    cargo build --release --locked --example open_loop --example bare_actix >&2
    EXAMPLES_DIR=target/release/examples
fi
init_work gateway-callgrind
P_UP=$(free_port)
P_GW=$(free_port)
start upstream python3 benches/tenant_upstream.py --delay 0 --max-seconds 3600 --port "$P_UP"
wait_ready "http://127.0.0.1:$P_UP/_stats" upstream
if [ "$MODE" != rr ]; then
    printf '[[authorization_server]]\nissuer = "http://127.0.0.1:%s/single"\n' "$P_UP" >"$WORK/gw.toml"
else
    printf '[[authorization_server]]\nissuer = "http://127.0.0.1:%s/{tenant}"\nmax_tenants = %s\n' "$P_UP" $((TENANTS * 2)) >"$WORK/gw.toml"
fi
VALGRIND=(valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out")
if [ "${CACHE_SIM:-0}" = 1 ]; then
    VALGRIND+=(--cache-sim=yes "--D1=${D1:-32768,8,64}" "--LL=${LL:-1048576,8,64}")
fi
PROFILED=$GATEWAY_BIN
if [ "$MODE" = bare ]; then
    # The gateway (not profiled) once, for the response the handler sends.
    RUST_LOG=warn start gateway "$GATEWAY_BIN" --config "$WORK/gw.toml" --listen "127.0.0.1:$P_GW" --workers 1 --ttl 300s
    wait_ready "http://127.0.0.1:$P_GW$PATH_AS/single" gateway
    curl -s --include --raw --max-time 5 "http://127.0.0.1:$P_GW$PATH_AS/single" >"$WORK/response"
    stop_pid "$LAST_PID"
    PROFILED=$EXAMPLES_DIR/bare_actix
    start bare "${VALGRIND[@]}" "$PROFILED" --response "$WORK/response" --listen "127.0.0.1:$P_GW"
else
    RUST_LOG=warn start gateway "${VALGRIND[@]}" \
        "$GATEWAY_BIN" --config "$WORK/gw.toml" --listen "127.0.0.1:$P_GW" --workers 1 --ttl 300s --shutdown-timeout 1s
fi
GW_PID=$LAST_PID
# Under valgrind start-up takes a while: up to 60 s.
for _ in $(seq 600); do
    [ "$(http_code "http://127.0.0.1:$P_GW$PATH_AS/single")" = 200 ] && break
    [ "$(http_code "http://127.0.0.1:$P_GW/healthz")" = 200 ] && break
    sleep 0.1
done
if [ "$MODE" != rr ]; then
    URL_PATH=$PATH_AS/single
    wait_ready "http://127.0.0.1:$P_GW$URL_PATH" gateway-document
else
    for i in $(seq "$TENANTS"); do
        curl -s -o /dev/null --max-time 30 "http://127.0.0.1:$P_GW$PATH_AS/t$i"
    done
    URL_PATH="$PATH_AS/t{1..$TENANTS}"
fi
# Warm-up, then zero the counters, run, dump.
run_load() { # requests
    local seconds
    seconds=$(awk -v n="$1" -v r="$RATE" 'BEGIN { printf "%.3f", n / r }')
    "$EXAMPLES_DIR/open_loop" --addr "127.0.0.1:$P_GW" --path "$URL_PATH" --rate "$RATE" --seconds "$seconds" --connections 16
}
run_load 500 >/dev/null
callgrind_control -z "$GW_PID" >/dev/null 2>&1
log "load: $(run_load "$REQUESTS")"
callgrind_control -d "$GW_PID" >/dev/null 2>&1
sleep 1
dump=$(find "$WORK" -maxdepth 1 -name 'callgrind.out.*' | sort | tail -1)
total=$(awk '/^summary:|^totals:/ {print $2; exit}' "$dump")
echo "mode $MODE: $REQUESTS requests, $total instructions in user space: $((total / REQUESTS)) per request ($PROFILED)"
callgrind_annotate --inclusive=no --threshold=100 "$dump" 2>/dev/null | sed -n "1,$((TOP + 25))p" | grep -E '^ *[0-9,]+ ' | grep -vE 'PROGRAM TOTALS|clone.S:clone|start_thread|thread_start|call_once{{vtable' | head -"$TOP"
if [ "${CACHE_SIM:-0}" = 1 ]; then
    # events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw
    awk -v n="$REQUESTS" '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i - 1 }
        /^summary:|^totals:/ { printf "per request: D1 misses %.1f read + %.1f write; last level %.1f read + %.1f write\n",
            $(col["D1mr"] + 1) / n, $(col["D1mw"] + 1) / n, $(col["DLmr"] + 1) / n, $(col["DLmw"] + 1) / n; exit }' "$dump"
    echo "functions by last-level read misses (self):"
    callgrind_annotate --inclusive=no --sort=DLmr --threshold=100 "$dump" 2>/dev/null | grep -E '^ *[0-9,]+ ' |
        grep -vE 'PROGRAM TOTALS' | head -"$TOP"
fi
[ -z "${OUT:-}" ] || { mkdir -p "$OUT"; cp "$dump" "$OUT/"; }
