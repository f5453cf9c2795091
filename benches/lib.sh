# shellcheck shell=bash
# Shell functions shared by the wrk benchmarks (benches/load.sh,
# benches/tenants.sh); sourced, not run. Expects `set -euo pipefail` and the
# repository root as the working directory.
#
# Processes: `init_work NAME` makes the scratch directory $WORK and installs
# the traps; `start NAME CMD...` runs CMD in the background (output in
# $WORK/NAME.out, PID in LAST_PID), and every process started so is stopped
# on exit, by its PID (`stop_pid` stops one earlier); with LOGS=DIR their
# output and logs are copied to DIR first.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
# Installs the missing ones of the commands named (wrk, nginx, curl,
# python3) from Debian packages, with apt-get (root or sudo); sets NGINX.
install_missing() {
    local need=() tool sudo=""
    for tool in "$@"; do
        case "$tool" in
        nginx) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx-light) ;;
        *) command -v "$tool" >/dev/null 2>&1 || need+=("$tool") ;;
        esac
    done
    if [ ${#need[@]} -gt 0 ]; then
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null 2>&1 || die "missing ${need[*]}; install them with apt-get"
            sudo=sudo
        fi
        log "installing Debian packages: ${need[*]}"
        export DEBIAN_FRONTEND=noninteractive
        $sudo apt-get update -qq
        $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
        # The package may start a system nginx; the benchmarks run their own.
        if command -v systemctl >/dev/null 2>&1; then
            $sudo systemctl stop nginx >/dev/null 2>&1 || true
        fi
    fi
    # shellcheck disable=SC2034 # used by the scripts that source this file
    NGINX=$(command -v nginx || echo /usr/sbin/nginx)
}

# Sets GATEWAY_BIN: as given, or the release build (built here).
build_gateway() {
    if [ -z "${GATEWAY_BIN:-}" ]; then
        log "building the gateway (release profile)"
        cargo build --release --locked --bin oauth-metadata-gateway >&2
        GATEWAY_BIN=target/release/oauth-metadata-gateway
    fi
    [ -x "$GATEWAY_BIN" ] || die "no gateway binary at $GATEWAY_BIN"
}

# "2 cores, MODEL, 23.5 GiB": the machine, for reports.
machine() {
    printf '%s cores, %s, %s' "$(nproc)" "$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)" \
        "$(awk '/^MemTotal:/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)"
}

# --- processes and cleanup ---------------------------------------------------
PIDS=()
# Stops one process: TERM, a bounded wait, then KILL.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    # LOGS=DIR keeps the processes' output and logs.
    if [ -n "${LOGS:-}" ]; then
        mkdir -p "$LOGS"
        cp "$WORK"/*.out "$WORK"/*.log "$LOGS"/ 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
init_work() { # name
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    chmod 755 "$WORK"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
}

# Starts a process in the background, logging to $WORK/NAME.out; its PID is
# kept for cleanup and left in LAST_PID.
start() { # name, command...
    local name=$1
    shift
    "$@" >"$WORK/$name.out" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

# A free TCP port on 127.0.0.1 (nothing listening, not handed out before),
# below the kernel's ephemeral range (ip_local_port_range, 32768 and up by
# default): a port there can be taken by any outgoing connection on the
# machine between this check and the bind.
USED_PORTS=" "
free_port() {
    local port low
    low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
    [ "$low" -gt 21000 ] || low=32768
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % (low - 20000)))
        case "$USED_PORTS" in *" $port "*) continue ;; esac
        if [ -z "$(ss -Htln "sport = :$port")" ]; then
            USED_PORTS="$USED_PORTS$port "
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

# The HTTP status URL answers with (000: no answer within a second).
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1" || true; }

# Waits (bounded: 10 s) until URL answers 200.
wait_ready() { # url, name
    local url=$1 name=$2
    for _ in $(seq 100); do
        [ "$(http_code "$url")" = 200 ] && return 0
        sleep 0.1
    done
    die "$name did not become ready at $url (logs in $WORK)"
}

hwm_kib() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# Peak RSS of an nginx master and its workers, summed, in KiB.
nginx_hwm_kib() { # pid file
    local master total=0 p
    master=$(cat "$1")
    for p in $master $(pgrep -P "$master" || true); do
        total=$((total + $(hwm_kib "$p")))
    done
    echo "$total"
}

# The sum of a Prometheus metric's samples at URL.
metric_sum() { # url, metric name
    curl -s --max-time 30 "$1" | awk -v m="$2" 'index($0, m "{") == 1 {n += $NF} END {printf "%d", n}'
}

# The start of an nginx configuration, up to and including the first lines
# of its http block: pid file $WORK/NAME.pid, error log
# $WORK/NAME-error.log, temp paths in $WORK/tmp (which must exist).
nginx_head() { # name, worker processes, worker connections
    if [ "$(id -u)" -eq 0 ]; then echo "user root;"; fi
    cat <<EOF
worker_processes $2;
pid $WORK/$1.pid;
error_log $WORK/$1-error.log warn;
events { worker_connections $3; }
http {
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 65;
    client_body_temp_path $WORK/tmp/body;
    proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fastcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi;
    scgi_temp_path $WORK/tmp/scgi;
EOF
}

# --- wrk -----------------------------------------------------------------------
# Converts a wrk latency (e.g. 512.00us, 1.25ms, 1.02s) to microseconds.
to_us() {
    awk -v v="$1" 'BEGIN {
        n = v + 0
        if (v ~ /us$/) m = 1; else if (v ~ /ms$/) m = 1000; else if (v ~ /s$/) m = 1000000; else m = 1
        printf "%.0f", n * m }'
}

# CPU time (user + system) of the given processes, in clock ticks.
cpu_ticks() { # pid...
    local p total=0
    for p in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "$total"
}

# One wrk run (-t WRK_THREADS); appends "target conns rps p50_us p99_us
# errors server_us_per_request wrk_cores" to $WORK/results: errors counts
# non-2xx answers and socket errors; server_us_per_request is the CPU time
# the given server processes used during the run per request served;
# wrk_cores is wrk's own CPU time over the run's length (1.00 = one core
# busy all along: then the load generator, not the server, is the limit).
measure() { # target, url, conns, seconds[, server pids (space-separated)]
    local target=$1 url=$2 conns=$3 seconds=$4 pids=${5:-} out
    local ticks0 ticks1 wrk_cpu
    # shellcheck disable=SC2086 # pids is a list
    ticks0=$(cpu_ticks $pids)
    out=$( { TIMEFORMAT='%U %S'; time timeout $((seconds + 30)) ${WRK_CPUS:+taskset -c "$WRK_CPUS"} wrk -t "$WRK_THREADS" -c "$conns" -d "${seconds}s" --latency "$url"; } 2>"$WORK/wrk.time") ||
        die "wrk failed against $target"
    # shellcheck disable=SC2086
    ticks1=$(cpu_ticks $pids)
    wrk_cpu=$(awk -v s="$seconds" 'NF == 2 {printf "%.2f", ($1 + $2) / s}' "$WORK/wrk.time")
    local rps p50 p99 errors requests server_us
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(to_us "$(awk '$1 == "50%" {print $2}' <<<"$out")")
    p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
    errors=$(awk '/Non-2xx or 3xx responses:/ {n += $NF} /Socket errors:/ {
        for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+,?$/) n += $i } END {print n + 0}' <<<"$out")
    # Server CPU per request, in microseconds ("-" when no pid was given).
    server_us=$(awk -v d=$((ticks1 - ticks0)) -v hz="$(getconf CLK_TCK)" -v n="$requests" -v p="$pids" \
        'BEGIN { if (p == "" || n + 0 == 0) print "-"; else printf "%.2f", d / hz * 1e6 / n }')
    echo "$target $conns $rps $p50 $p99 $errors $server_us ${wrk_cpu:--}" >>"$WORK/results"
    log "$(printf '%-18s c=%-3s %10s req/s  p50 %6s us  p99 %6s us  errors %s  server %s us/req  wrk %s cores' \
        "$target" "$conns" "$rps" "$p50" "$p99" "$errors" "$server_us" "${wrk_cpu:--}")"
}

# PIN ("" or "1", the scripts' setting): with 1 the load generator runs on
# CPU 0 (WRK_CPUS) and pin_servers moves the servers to CPU 1; it needs 2
# CPUs.
check_pin() {
    case "$PIN" in "" | 1) ;; *) die "PIN: \"$PIN\" is neither empty nor 1" ;; esac
    if [ -n "$PIN" ]; then
        [ "$(nproc)" -ge 2 ] || die "PIN=1 needs 2 CPUs, this machine has $(nproc)"
        WRK_CPUS=0
    fi
}

# Moves every thread of each PID (and of its children: nginx's workers) to
# CPU 1 when PIN is set.
pin_servers() { # pid...
    [ -n "${PIN:-}" ] || return 0
    local pid
    for pid in "$@" $(for p in "$@"; do pgrep -P "$p" || true; done); do
        taskset -a -p -c 1 "$pid" >/dev/null || die "taskset of $pid failed"
    done
}

# Warms each of TARGETS (keys of the URL map) for 1 s, then runs ROUNDS
# rounds of `measure` over them in turn (CONNECTIONS, DURATION), into a fresh
# $WORK/results. A target named gateway-* is the process GW_PID; nginx-* is
# nginx's master ($WORK/nginx.pid) and its workers.
measure_rounds() {
    local t round pids
    for t in "${TARGETS[@]}"; do
        timeout 31 ${WRK_CPUS:+taskset -c "$WRK_CPUS"} wrk -t "$WRK_THREADS" -c "$CONNECTIONS" -d 1s "${URL[$t]}" >/dev/null || die "warm-up of $t failed"
    done
    : >"$WORK/results"
    for round in $(seq "$ROUNDS"); do
        log "round $round of $ROUNDS"
        for t in "${TARGETS[@]}"; do
            case $t in
            gateway-*) pids=$GW_PID ;;
            nginx-*) pids="$(cat "$WORK/nginx.pid") $(pgrep -P "$(cat "$WORK/nginx.pid")" | tr '\n' ' ')" ;;
            *) die "measure_rounds: no process for target $t" ;;
            esac
            measure "$t" "${URL[$t]}" "$CONNECTIONS" "$DURATION" "$pids"
        done
    done
}

# awk: the median of a space-separated list of numbers (the rounds' figures).
# shellcheck disable=SC2034 # used by the scripts that source this file
AWK_MEDIAN='
    function median(list,    a, n, i, j, t) {
        n = split(list, a, " ")
        for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > t + 0; j--) a[j + 1] = a[j]; a[j + 1] = t }
        return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
    }'
