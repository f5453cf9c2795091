#!/usr/bin/env bash
# Checks the Prometheus and Grafana files of oauth-metadata-gateway, offline:
#   - promtool check config / check rules / test rules on deploy/prometheus/
#   - the dashboard JSON parses, and every dashboard query is valid PromQL
#     (promtool check rules on a file of them written by the checker)
#   - .ci/check_prometheus_files.py: what ties the files together and what no
#     tool checks (datasource through ${datasource}, label values the gateway
#     exports, the scrape job name, alert annotations and test coverage)
#   - the checks themselves reject a few deliberately broken copies
# Metric names against a live scrape, and the dashboard's queries and alert
# rules in a real Prometheus, are checked by tests/observability.rs.
#
# Usage (from anywhere; it works from the repository root):
#   bash .ci/check-prometheus-files.sh
# Needs: promtool (Debian package `prometheus`) and python3 with PyYAML
# (Debian package `python3-yaml`). Exits non-zero if any check fails.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

PROMTOOL="${PROMTOOL:-promtool}"
checker="$root/.ci/check_prometheus_files.py"
dashboard=grafana/dashboards/oauth-metadata-gateway.json

# ---------------------------------------------------------------- prerequisites
if ! command -v "$PROMTOOL" >/dev/null 2>&1; then
    echo "promtool not found; install it with: apt-get install -y --no-install-recommends prometheus" >&2
    exit 1
fi
PYTHON=""
for candidate in "${PYTHON_BIN:-}" python3 /usr/bin/python3; do
    if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
        && "$candidate" -c 'import yaml' >/dev/null 2>&1; then
        PYTHON="$candidate"
        break
    fi
done
if [ -z "$PYTHON" ]; then
    echo "no python3 with PyYAML found; install it with: apt-get install -y python3-yaml" >&2
    exit 1
fi
echo "promtool: $("$PROMTOOL" --version 2>&1 | head -n1)"
echo "python:   $("$PYTHON" --version 2>&1) ($(command -v "$PYTHON"))"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
failures=()

# step NAME CMD...: run CMD, count it as passed when it exits 0.
step() {
    local name="$1"
    shift
    echo
    echo "=== $name"
    if "$@"; then
        passed=$((passed + 1))
        echo "--- ok: $name"
    else
        failed=$((failed + 1))
        failures+=("$name")
        echo "--- FAILED: $name"
    fi
}

# reject NAME PATTERN CMD...: CMD must fail and print PATTERN (grep -E).
reject() {
    local name="$1" pattern="$2"
    shift 2
    echo
    echo "=== must be rejected: $name"
    if "$@" >"$tmp/reject.out" 2>&1; then
        cat "$tmp/reject.out"
        failed=$((failed + 1))
        failures+=("must be rejected: $name")
        echo "--- FAILED: accepted a broken file ($name)"
    elif grep -Eq -- "$pattern" "$tmp/reject.out"; then
        grep -E -- "$pattern" "$tmp/reject.out" | head -n 3 | sed 's/^/    /'
        passed=$((passed + 1))
        echo "--- ok: rejected ($name)"
    else
        cat "$tmp/reject.out"
        failed=$((failed + 1))
        failures+=("must be rejected: $name")
        echo "--- FAILED: rejected, but not with /$pattern/ ($name)"
    fi
}

# mutant NAME: a copy of deploy/ and grafana/ in $tmp/NAME to break on purpose.
mutant() {
    mkdir -p "$tmp/$1"
    cp -r deploy grafana "$tmp/$1/"
    echo "$tmp/$1"
}

# ------------------------------------------------------------------- the files
step "promtool check config" "$PROMTOOL" check config deploy/prometheus/prometheus.yml
step "promtool check rules" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
step "promtool test rules" "$PROMTOOL" test rules deploy/prometheus/alerts_test.yml
step "dashboard JSON parses" sh -c "'$PYTHON' -m json.tool '$dashboard' >/dev/null"
step "datasource, label values, job, alert annotations and tests, provisioning" \
    "$PYTHON" "$checker" --out-dir "$tmp/generated"
if [ -f "$tmp/generated/dashboard_rules.yml" ]; then
    step "dashboard queries are valid PromQL (promtool check rules)" \
        "$PROMTOOL" check rules "$tmp/generated/dashboard_rules.yml"
else
    step "dashboard queries were generated" false
fi

# ------------------------------------------- the checks catch broken files
# (a misspelt metric name or a bare histogram name fails tests/observability.rs)
m="$(mutant bad-label-value)"
sed -i 's/result="error"/result="errors"/' "$m/deploy/prometheus/alerts.yml"
reject "alert with an undocumented result value" "result='errors'" \
    sh -c "cd '$m' && '$PYTHON' '$checker'"

m="$(mutant renamed-job)"
sed -i 's/job_name: oauth-metadata-gateway/job_name: gateway/' "$m/deploy/prometheus/prometheus.yml"
reject "scrape job renamed under the alerts and the dashboard" "no scrape job 'oauth-metadata-gateway'" \
    sh -c "cd '$m' && '$PYTHON' '$checker'"

m="$(mutant hardcoded-datasource)"
"$PYTHON" - "$m/grafana/dashboards/oauth-metadata-gateway.json" <<'PY'
import json, sys
path = sys.argv[1]
with open(path) as f:
    dash = json.load(f)
panel = next(p for p in dash["panels"] if p.get("targets"))
panel["targets"][0]["datasource"] = {"type": "prometheus", "uid": "my-prometheus"}
with open(path, "w") as f:
    json.dump(dash, f)
PY
reject "dashboard panel with a hard-coded datasource" "uid 'my-prometheus' at panels.*is not" \
    sh -c "cd '$m' && '$PYTHON' '$checker'"

m="$(mutant promql-syntax)"
sed -i '0,/histogram_quantile(0.99, /s//histogram_quantile(0.99 /' "$m/grafana/dashboards/oauth-metadata-gateway.json"
reject "dashboard query with a PromQL syntax error" "parse error|FAILED" \
    sh -c "cd '$m' && '$PYTHON' '$checker' --out-dir gen >/dev/null && '$PROMTOOL' check rules gen/dashboard_rules.yml"

m="$(mutant slower-alert)"
sed -i 's/for: 10m/for: 30m/' "$m/deploy/prometheus/alerts.yml"
reject "alert whose 'for' changed under its unit test" "GatewayServingStale" \
    "$PROMTOOL" test rules "$m/deploy/prometheus/alerts_test.yml"

# --------------------------------------------------------------------- summary
echo
if [ "$failed" -ne 0 ]; then
    printf 'failed: %s\n' "${failures[@]}"
fi
echo "check-prometheus-files: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
