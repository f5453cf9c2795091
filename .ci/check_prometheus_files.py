#!/usr/bin/env python3
"""Static checks for the Prometheus and Grafana files of oauth-metadata-gateway.

Called by .ci/check-prometheus-files.sh (which also runs promtool). This script:

* checks the Grafana dashboard's structure (uid, schema version, datasource
  only through the ${datasource} variable, instance/document variables, panel
  ids and grid, units);
* extracts every metric name used in the dashboard's PromQL (panel targets and
  variable queries), in alerts.yml and in alerts_test.yml (promql tests and
  input series), prints them, and fails on any name that the gateway does not
  export (see METRICS below), on a bare histogram name, on a label the metric
  does not have, or on a result/outcome value outside the documented set;
* checks that the job name in prometheus.yml is the one the rules and the
  dashboard use, and that the Grafana provisioning files have what they need;
* with --out-dir, writes the dashboard's queries (Grafana variables replaced)
  as a rules file plus a promtool unit test of the dashboard's hit-rate
  queries, for the shell script to run through promtool.

Exit status 0 when every check passed, 1 otherwise.
"""
import argparse
import json
import os
import re
import sys

import yaml

JOB = "oauth-metadata-gateway"
TARGET_LABELS = {"job", "instance"}

# The metrics the gateway exports: name -> (type, labels, {label: allowed values}).
# This is the public interface; keep it in sync with the gateway's /metrics.
METRICS = {
    "metadata_gateway_lookups_total": ("counter", {"document", "kind", "result"},
                                       {"kind": {"metadata", "jwks"},
                                        "result": {"hit", "stale", "miss", "error", "not_found",
                                                   "revalidated", "revalidation_failed"}}),
    "metadata_gateway_upstream_fetches_total": ("counter", {"document", "kind", "outcome"},
                                                {"outcome": {"ok", "not_modified", "timeout", "connect_error", "http_status",
                                                             "invalid_document", "too_large", "proxy_error"}}),
    "metadata_gateway_upstream_fetch_duration_seconds": ("histogram", set(), {}),
    "metadata_gateway_document_age_seconds": ("gauge", {"document", "kind"}, {}),
    "metadata_gateway_document_stale": ("gauge", {"document", "kind"}, {}),
    "metadata_gateway_document_cached": ("gauge", {"document", "kind"}, {}),
    "metadata_gateway_http_requests_total": ("counter", {"route", "status"}, {}),
    "metadata_gateway_http_request_duration_seconds": ("histogram", {"route"}, {}),
    "metadata_gateway_build_info": ("gauge", {"version"}, {}),
    "metadata_gateway_config_reloads_total": ("counter", {"outcome"}, {"outcome": {"ok", "refused"}}),
    "metadata_gateway_config_last_reload_successful": ("gauge", set(), {}),
    "metadata_gateway_state_writes_total": ("counter", {"operation", "outcome"},
                                            {"operation": {"save", "remove"}, "outcome": {"ok", "error"}}),
    # Process collector of the Rust `prometheus` crate (Linux).
    "process_cpu_seconds_total": ("counter", set(), {}),
    "process_open_fds": ("gauge", set(), {}),
    "process_max_fds": ("gauge", set(), {}),
    "process_virtual_memory_bytes": ("gauge", set(), {}),
    "process_resident_memory_bytes": ("gauge", set(), {}),
    "process_start_time_seconds": ("gauge", set(), {}),
    "process_threads": ("gauge", set(), {}),
    # Synthesised by Prometheus for every scrape target.
    "up": ("gauge", set(), {}),
}

AGGREGATORS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
               "count_values", "bottomk", "topk", "quantile"}
FUNCTIONS = {
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
    "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
    "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
    "delta", "deriv", "exp", "floor", "histogram_count", "histogram_fraction",
    "histogram_quantile", "histogram_sum", "holt_winters", "hour", "idelta", "increase",
    "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
    "max_over_time", "min_over_time", "minute", "month", "pi", "predict_linear",
    "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar",
    "sgn", "sin", "sinh", "sort", "sort_desc", "sqrt", "stddev_over_time", "stdvar_over_time",
    "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
BINARY_KEYWORDS = {"and", "or", "unless", "atan2", "bool"}

# Grafana variables -> values that keep the query valid PromQL.
GRAFANA_VARS = {
    "__rate_interval": "5m", "__interval": "1m", "__range": "1h",
    "__range_s": "3600", "__range_ms": "3600000", "__interval_ms": "60000",
    "instance": ".*", "document": ".*",
}

TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<duration>(?:\d+(?:ms|[smhdwy]))+)(?![\w.])
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=,(){}\[\]@:])
""", re.VERBOSE)


class PromQLError(Exception):
    pass


def substitute_grafana_vars(expr):
    """Replace $var, ${var} and ${var:fmt} by placeholder values; fail on unknown ones."""
    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in GRAFANA_VARS:
            raise PromQLError(f"unknown Grafana variable ${name}")
        return GRAFANA_VARS[name]
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def tokenize(expr):
    pos, out = 0, []
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m:
            raise PromQLError(f"cannot tokenize at {expr[pos:pos + 20]!r}")
        pos = m.end()
        kind = m.lastgroup
        if kind in ("ws", "comment"):
            continue
        out.append((kind, m.group()))
    return out


def unquote(s):
    body = s[1:-1]
    if s[0] == "`":
        return body
    return re.sub(r"\\(.)", r"\1", body)


def analyse(expr):
    """Return (selectors, grouping_labels) of a PromQL expression.

    selectors: list of (metric_name or None, [(label, op, value), ...])
    grouping_labels: labels named in by/without/on/ignoring/group_* clauses.
    """
    toks = tokenize(expr)
    selectors, grouping = [], []
    i, n = 0, len(toks)

    def parse_matchers(j):
        # toks[j] is "{"; returns (matchers, index after "}")
        matchers = []
        j += 1
        while j < n and toks[j][1] != "}":
            if toks[j][0] != "ident":
                raise PromQLError(f"expected a label name in selector, got {toks[j][1]!r}")
            if j + 2 >= n or toks[j + 1][1] not in ("=", "!=", "=~", "!~") or toks[j + 2][0] != "string":
                raise PromQLError(f"malformed label matcher after {toks[j][1]!r}")
            matchers.append((toks[j][1], toks[j + 1][1], unquote(toks[j + 2][1])))
            j += 3
            if j < n and toks[j][1] == ",":
                j += 1
        if j >= n:
            raise PromQLError("unterminated label selector")
        return matchers, j + 1

    def parse_label_list(j):
        # toks[j] is "("; returns index after ")"
        j += 1
        while j < n and toks[j][1] != ")":
            if toks[j][0] == "ident":
                grouping.append(toks[j][1])
            elif toks[j][1] != ",":
                raise PromQLError(f"unexpected {toks[j][1]!r} in label list")
            j += 1
        if j >= n:
            raise PromQLError("unterminated label list")
        return j + 1

    while i < n:
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < n else None
        if text == "[":
            # range or subquery: skip to the matching "]"
            while i < n and toks[i][1] != "]":
                i += 1
            i += 1
            continue
        if text == "{":
            matchers, i = parse_matchers(i)
            selectors.append((None, matchers))
            continue
        if kind != "ident":
            i += 1
            continue
        low = text.lower()
        if text in GROUPING:
            i = parse_label_list(i + 1) if nxt == "(" else i + 1
            continue
        if text in BINARY_KEYWORDS or low in ("inf", "nan"):
            i += 1
            continue
        if text == "offset":
            i += 2
            continue
        if text in ("start", "end") and i > 0 and toks[i - 1][1] == "@":
            i += 1
            continue
        if nxt == "(" or (text in AGGREGATORS and nxt in ("by", "without")):
            if text not in FUNCTIONS and text not in AGGREGATORS:
                raise PromQLError(f"unknown function {text}()")
            i += 1
            continue
        # a metric name
        if nxt == "{":
            matchers, i = parse_matchers(i + 1)
        else:
            matchers, i = [], i + 1
        selectors.append((text, matchers))
    return selectors, grouping


def resolve_metric(name):
    """Map a series name to (base metric, is_bucket) or raise."""
    if name in METRICS:
        if METRICS[name][0] == "histogram":
            raise PromQLError(f"{name} is a histogram: query {name}_bucket, _sum or _count")
        return name, False
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if base in METRICS and METRICS[base][0] == "histogram":
                return base, suffix == "_bucket"
    raise PromQLError(f"unknown metric {name}")


def check_expr(expr, where, used, job_names, input_series=False):
    """Check one PromQL expression; record metric names in `used`. Returns a list of errors."""
    errors = []
    try:
        selectors, grouping = analyse(substitute_grafana_vars(expr))
    except PromQLError as e:
        return [f"{where}: {e}: {expr}"]
    labels_in_expr = set(TARGET_LABELS) | {"le"}
    for name, matchers in selectors:
        if name is None:
            names = [v for (l, op, v) in matchers if l == "__name__" and op == "="]
            if not names:
                errors.append(f"{where}: selector without a metric name: {expr}")
                continue
            name = names[0]
        try:
            base, is_bucket = resolve_metric(name)
        except PromQLError as e:
            errors.append(f"{where}: {e}")
            continue
        used.setdefault(name, set()).add(where.split(":")[0])
        mtype, labels, enums = METRICS[base]
        allowed = labels | TARGET_LABELS | {"__name__"} | ({"le"} if is_bucket else set())
        labels_in_expr |= labels
        for label, op, value in matchers:
            if label not in allowed:
                errors.append(f"{where}: {name} has no label {label!r} (has {sorted(allowed - {'__name__'})})")
                continue
            if label == "job" and op == "=" and not input_series:
                job_names.add(value)
            if label in enums:
                if op in ("=", "!="):
                    values = [value]
                elif re.fullmatch(r"[a-z_]+(\|[a-z_]+)*", value):
                    values = value.split("|")
                else:
                    values = []
                for v in values:
                    if v not in enums[label]:
                        errors.append(f"{where}: {name}{{{label}={v!r}}}: {label} is one of {sorted(enums[label])}")
            if label == "status" and op in ("=", "!=") and not re.fullmatch(r"[1-5]\d\d", value):
                errors.append(f"{where}: status {value!r} is not a numeric HTTP status")
    for label in grouping:
        if label not in labels_in_expr:
            errors.append(f"{where}: grouping label {label!r} is not a label of the metrics in: {expr}")
    return errors


def variable_promql(query):
    """PromQL inside a Grafana Prometheus variable query, or None for metadata-only queries."""
    if isinstance(query, dict):
        query = query.get("query", "")
    query = query.strip()
    m = re.fullmatch(r"label_values\((.*),\s*([a-zA-Z_]\w*)\s*\)", query, re.S)
    if m:
        return m.group(1)
    m = re.fullmatch(r"query_result\((.*)\)", query, re.S)
    if m:
        return m.group(1)
    m = re.fullmatch(r"metrics\((.*)\)|label_names\(\)|label_values\(\s*[a-zA-Z_]\w*\s*\)", query, re.S)
    if m:
        return None
    raise PromQLError(f"unsupported variable query {query!r}")


def iter_panels(panels):
    for p in panels:
        yield p
        yield from iter_panels(p.get("panels", []))


def check_datasource_refs(node, path, errors):
    """Every datasource reference must go through ${datasource} (or Grafana's built-in one)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "datasource" and path != "templating":
                if isinstance(v, str):
                    errors.append(f"dashboard: hard-coded datasource name {v!r} at {path}")
                elif isinstance(v, dict):
                    uid = v.get("uid")
                    if v.get("type") == "grafana":
                        pass
                    elif uid != "${datasource}":
                        errors.append(f"dashboard: datasource uid {uid!r} at {path} is not ${{datasource}}")
            else:
                check_datasource_refs(v, f"{path}.{k}" if path else k, errors)
    elif isinstance(node, list):
        for idx, v in enumerate(node):
            check_datasource_refs(v, f"{path}[{idx}]", errors)


def check_dashboard(dash, used, job_names):
    errors, queries = [], []
    if dash.get("uid") != "oauth-metadata-gateway":
        errors.append(f"dashboard: uid is {dash.get('uid')!r}, want 'oauth-metadata-gateway'")
    if not isinstance(dash.get("schemaVersion"), int) or dash["schemaVersion"] < 36:
        errors.append(f"dashboard: schemaVersion {dash.get('schemaVersion')!r} is older than 36")
    if not dash.get("title"):
        errors.append("dashboard: no title")
    if "__inputs" in dash:
        errors.append("dashboard: has __inputs (an export for sharing); use the ${datasource} variable instead")

    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append("dashboard: needs a variable 'datasource' of type datasource with query 'prometheus'")
    for name in ("instance", "document"):
        v = variables.get(name)
        if not v or v.get("type") != "query":
            errors.append(f"dashboard: needs a query variable {name!r}")
    for name, v in variables.items():
        if v.get("type") != "query":
            continue
        where = f"dashboard:variable {name}"
        if (v.get("datasource") or {}).get("uid") != "${datasource}":
            errors.append(f"{where}: datasource is not ${{datasource}}")
        try:
            promql = variable_promql(v.get("query", ""))
        except PromQLError as e:
            errors.append(f"{where}: {e}")
            continue
        if promql is not None:
            errors += check_expr(promql, where, used, job_names)

    check_datasource_refs({k: v for k, v in dash.items() if k != "templating"}, "", errors)
    for v in variables.values():
        if v.get("type") == "query":
            check_datasource_refs({"variable": {"datasource": v.get("datasource")}}, f"templating.{v['name']}", errors)

    ids, cells = set(), {}
    panels = list(iter_panels(dash.get("panels", [])))
    if not panels:
        errors.append("dashboard: no panels")
    for p in panels:
        pid, title = p.get("id"), p.get("title", "")
        label = f"dashboard:panel {pid} {title!r}"
        if pid in ids or not isinstance(pid, int):
            errors.append(f"{label}: missing or duplicate id")
        ids.add(pid)
        g = p.get("gridPos") or {}
        if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24 or g["w"] <= 0 or g["h"] <= 0:
            errors.append(f"{label}: bad gridPos {g}")
        else:
            for yy in range(g["y"], g["y"] + g["h"]):
                for xx in range(g["x"], g["x"] + g["w"]):
                    if (xx, yy) in cells:
                        errors.append(f"{label}: overlaps panel {cells[(xx, yy)]}")
                        break
                    cells[(xx, yy)] = pid
                else:
                    continue
                break
        if p.get("type") == "row":
            continue
        if not (p.get("fieldConfig", {}).get("defaults", {}).get("unit")):
            errors.append(f"{label}: no unit set")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{label}: no queries")
        refs = set()
        for t in targets:
            ref = t.get("refId")
            if not ref or ref in refs:
                errors.append(f"{label}: missing or duplicate refId {ref!r}")
            refs.add(ref)
            expr = t.get("expr")
            if not expr:
                errors.append(f"{label}: target {ref} has no expr")
                continue
            errors += check_expr(expr, f"dashboard:panel {pid} {ref}", used, job_names)
            queries.append((p, t))

    units = {p.get("fieldConfig", {}).get("defaults", {}).get("unit") for p in panels}
    for unit in ("percentunit", "s", "bytes", "reqps"):
        if unit not in units:
            errors.append(f"dashboard: no panel uses unit {unit}")
    kinds = {(p.get("type"), p.get("title")) for p in panels}
    for kind in (("stat", "Hit rate"), ("timeseries", "Hit rate")):
        if kind not in kinds:
            errors.append(f"dashboard: no {kind[0]} panel titled {kind[1]!r}")
    if not any("histogram_quantile" in t.get("expr", "") for _, t in queries):
        errors.append("dashboard: no histogram_quantile query")
    return errors, queries


def rule_exprs(rules_doc, path):
    out = []
    for group in (rules_doc or {}).get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert") or rule.get("record")
            out.append((f"{path}:{name}", rule.get("expr", ""), rule))
    return out


def check_alerts(rules_doc, path, used, job_names):
    errors = []
    alerts = rule_exprs(rules_doc, path)
    if not alerts:
        errors.append(f"{path}: no rules")
    for where, expr, rule in alerts:
        errors += check_expr(str(expr), where, used, job_names)
        if "alert" in rule:
            if rule.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
                errors.append(f"{where}: severity label must be critical, warning or info")
            ann = rule.get("annotations", {})
            for key in ("summary", "description"):
                if not ann.get(key):
                    errors.append(f"{where}: no {key} annotation")
            if not (ann.get("runbook") or ann.get("runbook_url")):
                errors.append(f"{where}: no runbook or runbook_url annotation")
    return errors, [r["alert"] for _, _, r in alerts if "alert" in r]


def check_alert_tests(test_doc, path, alert_names, used, job_names):
    errors, firing, quiet = [], set(), set()
    for idx, test in enumerate((test_doc or {}).get("tests", [])):
        for s in test.get("input_series", []):
            errors += check_expr(s["series"], f"{path}:tests[{idx}] input_series", used, job_names,
                                 input_series=True)
        for e in test.get("promql_expr_test", []):
            errors += check_expr(e["expr"], f"{path}:tests[{idx}] promql_expr_test", used, job_names)
        for a in test.get("alert_rule_test", []):
            (firing if a.get("exp_alerts") else quiet).add(a.get("alertname"))
            for exp in a.get("exp_alerts") or []:
                if not exp.get("exp_annotations"):
                    errors.append(f"{path}:tests[{idx}] {a.get('alertname')}: firing case without exp_annotations")
    for name in alert_names:
        if name not in firing:
            errors.append(f"{path}: alert {name} has no test where it fires")
        if name not in quiet:
            errors.append(f"{path}: alert {name} has no test where it stays quiet")
    return errors


def check_prometheus_config(doc, path, rules_path):
    errors = []
    jobs = [j.get("job_name") for j in (doc or {}).get("scrape_configs", [])]
    if JOB not in jobs:
        errors.append(f"{path}: no scrape job {JOB!r} (jobs: {jobs})")
    for j in (doc or {}).get("scrape_configs", []):
        if j.get("job_name") == JOB:
            targets = [t for sc in j.get("static_configs", []) for t in sc.get("targets", [])]
            if "127.0.0.1:8080" not in targets:
                errors.append(f"{path}: job {JOB} does not target 127.0.0.1:8080")
            interval = j.get("scrape_interval") or doc.get("global", {}).get("scrape_interval")
            if interval != "15s":
                errors.append(f"{path}: scrape_interval is {interval!r}, want 15s")
    rule_files = (doc or {}).get("rule_files", [])
    want = os.path.relpath(rules_path, os.path.dirname(path))
    if want not in rule_files:
        errors.append(f"{path}: rule_files {rule_files} does not load {want}")
    return errors


def check_provisioning(ds_doc, ds_path, dash_doc, dash_path):
    errors = []
    sources = (ds_doc or {}).get("datasources", [])
    prom = [d for d in sources if d.get("uid") == "prometheus"]
    if not prom:
        errors.append(f"{ds_path}: no datasource with uid 'prometheus'")
    else:
        d = prom[0]
        for key, want in (("type", "prometheus"), ("url", "http://localhost:9090"), ("isDefault", True)):
            if d.get(key) != want:
                errors.append(f"{ds_path}: {key} is {d.get(key)!r}, want {want!r}")
    if (ds_doc or {}).get("apiVersion") != 1 or (dash_doc or {}).get("apiVersion") != 1:
        errors.append("provisioning files need apiVersion: 1")
    providers = (dash_doc or {}).get("providers", [])
    if not any(p.get("type") == "file" and (p.get("options") or {}).get("path") for p in providers):
        errors.append(f"{dash_path}: no file provider with options.path")
    return errors


def write_promtool_checks(queries, out_dir):
    """Dashboard queries as recording rules, and a unit test of the hit-rate panels."""
    os.makedirs(out_dir, exist_ok=True)
    rules, hit_tests = [], []
    for p, t in queries:
        expr = substitute_grafana_vars(t["expr"])
        rules.append({"record": f"dashboard_check:panel_{p['id']}_{t['refId']}", "expr": expr})
        if p.get("title") == "Hit rate":
            if "by (document)" in expr:
                labels = '{document="oauth-authorization-server"}'
            else:
                labels = "{}"
            hit_tests.append({"expr": expr, "eval_time": "10m",
                              "exp_samples": [{"labels": labels, "value": 0.75}]})
    with open(os.path.join(out_dir, "dashboard_rules.yml"), "w") as f:
        yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
    base = ('metadata_gateway_lookups_total{job="oauth-metadata-gateway", instance="127.0.0.1:8080", '
            'document="oauth-authorization-server", result="%s"}')
    test = {
        "rule_files": ["dashboard_rules.yml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": base % "hit", "values": "0+6x30"},
                {"series": base % "stale", "values": "0+1x30"},
                {"series": base % "miss", "values": "0+1x30"},
                {"series": base % "error", "values": "0x30"},
            ],
            "promql_expr_test": hit_tests,
        }],
    }
    with open(os.path.join(out_dir, "dashboard_test.yml"), "w") as f:
        yaml.safe_dump(test, f, sort_keys=False)
    return len(rules), len(hit_tests)


def load_yaml(path, errors):
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except (OSError, yaml.YAMLError) as e:
        errors.append(f"{path}: {e}")
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dashboard", default="grafana/dashboards/oauth-metadata-gateway.json")
    ap.add_argument("--prometheus-config", default="deploy/prometheus/prometheus.yml")
    ap.add_argument("--rules", default="deploy/prometheus/alerts.yml")
    ap.add_argument("--rules-test", default="deploy/prometheus/alerts_test.yml")
    ap.add_argument("--datasource", default="grafana/provisioning/datasources/prometheus.yml")
    ap.add_argument("--dashboard-provider", default="grafana/provisioning/dashboards/oauth-metadata-gateway.yml")
    ap.add_argument("--out-dir", help="write dashboard_rules.yml and dashboard_test.yml here")
    args = ap.parse_args()

    errors, used, job_names = [], {}, set()
    try:
        with open(args.dashboard) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        print(f"FAIL {args.dashboard}: {e}")
        return 1
    dash_errors, queries = check_dashboard(dash, used, job_names)
    errors += dash_errors

    rules_doc = load_yaml(args.rules, errors)
    alert_errors, alert_names = check_alerts(rules_doc, args.rules, used, job_names)
    errors += alert_errors
    errors += check_alert_tests(load_yaml(args.rules_test, errors), args.rules_test, alert_names, used, job_names)
    errors += check_prometheus_config(load_yaml(args.prometheus_config, errors), args.prometheus_config, args.rules)
    errors += check_provisioning(load_yaml(args.datasource, errors), args.datasource,
                                 load_yaml(args.dashboard_provider, errors), args.dashboard_provider)
    for job in sorted(job_names - {JOB}):
        errors.append(f"job={job!r} used in a query, but the scrape job is {JOB!r}")

    print(f"Metric names referenced ({len(used)}):")
    for name in sorted(used):
        print(f"  {name:<58} {', '.join(sorted(used[name]))}")
    unused = sorted(set(METRICS) - {resolve_base(n) for n in used})
    if unused:
        print(f"Exported but not referenced: {', '.join(unused)}")
    print(f"Alerts: {', '.join(alert_names)}")
    print(f"Dashboard queries: {len(queries)}")

    if args.out_dir and not errors:
        n_rules, n_hit = write_promtool_checks(queries, args.out_dir)
        if n_hit < 2:
            errors.append("dashboard: expected hit-rate queries in both the stat and the timeseries panel")
        print(f"Wrote {n_rules} dashboard queries and {n_hit} hit-rate tests to {args.out_dir}")

    for e in errors:
        print(f"FAIL {e}")
    return 1 if errors else 0


def resolve_base(name):
    try:
        return resolve_metric(name)[0]
    except PromQLError:
        return name


if __name__ == "__main__":
    sys.exit(main())
