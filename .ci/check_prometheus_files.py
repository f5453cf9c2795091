#!/usr/bin/env python3
"""What no tool checks in the Prometheus and Grafana files of oauth-metadata-gateway.

Run by .ci/check-prometheus-files.sh, next to promtool check config / check
rules / test rules, and `promtool check rules` on the dashboard queries this
script writes with --out-dir. tests/observability.rs checks every metric name
against a live scrape and runs the queries and rules in a real Prometheus.
Checked here: the dashboard uses Prometheus only through ${datasource}, defines
the variables its queries use, keeps its uid and unique panel ids; every
result/outcome/operation value selected is one the gateway exports; every
job="..." is the scrape job, which loads alerts.yml and scrapes at the
datasource's timeInterval; every alert has severity, summary, description and
runbook, and a unit test where it fires and one where it stays quiet.
"""
import argparse
import json
import os
import re
import sys

import yaml

JOB = "oauth-metadata-gateway"
DEFAULT_TARGET = "127.0.0.1:8080"
FETCH_OUTCOMES = {"ok", "not_modified", "timeout", "connect_error", "http_status",
                  "invalid_document", "too_large", "proxy_error"}
KINDS = {"metadata", "jwks"}
# Label values of the gateway's enum-labelled metrics (docs/metrics.md).
LABEL_VALUES = {
    "metadata_gateway_lookups_total": {"kind": KINDS,
                                       "result": {"hit", "stale", "miss", "error", "not_found",
                                                  "revalidated", "revalidation_failed"}},
    "metadata_gateway_upstream_fetches_total": {"kind": KINDS, "outcome": FETCH_OUTCOMES},
    "metadata_gateway_config_reloads_total": {"outcome": {"ok", "refused"}},
    "metadata_gateway_state_writes_total": {"operation": {"save", "remove"}, "outcome": {"ok", "error"}},
    "metadata_gateway_tls_certificate_reloads_total": {"outcome": {"ok", "refused"}},
}
# Grafana's built-in variables -> values that keep a query valid PromQL;
# the dashboard's own variables are "All" (.*).
GRAFANA_BUILTINS = {"__rate_interval": "5m", "__interval": "1m", "__range": "1h"}
VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
SELECTOR = re.compile(r"\b(metadata_gateway_\w+)\s*\{([^}]*)\}")
MATCHER = re.compile(r'(\w+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def label_value_errors(where, expr):
    errors = []
    for name, body in SELECTOR.findall(expr):
        for label, op, value in MATCHER.findall(body):
            allowed = LABEL_VALUES.get(name, {}).get(label)
            values = value.split("|") if op in ("=~", "!~") else [value]
            for v in values if allowed else []:
                if v not in allowed:
                    errors.append(f"{where}: {name}{{{label}={v!r}}}: {label} is one of {sorted(allowed)}")
    return errors


def datasource_errors(node, path=""):
    """Every datasource reference must be ${datasource} (or Grafana's built-in one)."""
    errors = []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for k, v in items:
        here = f"{path}.{k}" if path else str(k)
        if k == "datasource" and isinstance(v, (str, dict)):
            ds = {"uid": v} if isinstance(v, str) else v
            if ds.get("type") != "grafana" and ds.get("uid") != "${datasource}":
                errors.append(f"dashboard: datasource uid {ds.get('uid')!r} at {here} is not ${{datasource}}")
        else:
            errors += datasource_errors(v, here)
    return errors


def dashboard_queries(dash, errors):
    """(where, expr) of every panel target and query variable; checks the structure around them."""
    if dash.get("uid") != JOB:
        errors.append(f"dashboard: uid is {dash.get('uid')!r}, want {JOB!r}")
    variables = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    if (variables.get("datasource") or {}).get("query") != "prometheus":
        errors.append("dashboard: needs a datasource variable 'datasource' of type prometheus")
    errors += datasource_errors({k: v for k, v in dash.items() if k != "templating"})
    queries = []
    for name, v in variables.items():
        if v.get("type") == "query":
            errors += datasource_errors({"datasource": v.get("datasource")}, f"templating.{name}")
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q or ""
            # The PromQL inside label_values(<selector>, label) / query_result(<expr>).
            m = re.fullmatch(r"\s*(?:label_values\((.*),\s*\w+\s*\)|query_result\((.*)\))\s*", q, re.S)
            if not m:
                errors.append(f"dashboard: variable {name}: unsupported query {q!r}")
            queries.append((f"dashboard:variable {name}", m and (m.group(1) or m.group(2)) or q))
    ids, stack = set(), list(dash.get("panels", []))
    while stack:
        p = stack.pop(0)
        stack += p.get("panels", [])
        if p.get("id") in ids:
            errors.append(f"dashboard: panel id {p.get('id')} is used twice")
        ids.add(p.get("id"))
        queries += [(f"dashboard:panel {p.get('id')} {t.get('refId')}", t["expr"])
                    for t in p.get("targets") or [] if t.get("expr")]
    for where, expr in queries:
        for m in VARIABLE.finditer(expr):
            name = m.group(1) or m.group(2)
            if name not in variables and name not in GRAFANA_BUILTINS:
                errors.append(f"{where}: ${name} is neither a dashboard variable nor a Grafana built-in")
    return queries


def check_alerts(rules_doc, tests_doc, path, tests_path, errors):
    """Alert metadata and test coverage; returns (where, expr) of every rule and test query."""
    queries, alerts = [], []
    for group in (rules_doc or {}).get("groups", []):
        for rule in group.get("rules", []):
            where = f"{path}:{rule.get('alert') or rule.get('record')}"
            queries.append((where, str(rule.get("expr", ""))))
            if "alert" not in rule:
                continue
            alerts.append(rule["alert"])
            if (rule.get("labels") or {}).get("severity") not in ("critical", "warning", "info"):
                errors.append(f"{where}: severity label must be critical, warning or info")
            ann = rule.get("annotations") or {}
            for key in ("summary", "description", "runbook_url"):
                if not ann.get(key) and not (key == "runbook_url" and ann.get("runbook")):
                    errors.append(f"{where}: no {key} annotation" + (" (or runbook)" if key == "runbook_url" else ""))
    firing, quiet = set(), set()
    for i, test in enumerate((tests_doc or {}).get("tests", [])):
        where = f"{tests_path}:tests[{i}]"
        queries += [(f"{where} input_series", s.get("series", "")) for s in test.get("input_series", [])]
        queries += [(where, e.get("expr", "")) for e in test.get("promql_expr_test", [])]
        for a in test.get("alert_rule_test", []):
            (firing if a.get("exp_alerts") else quiet).add(a.get("alertname"))
            if any(not e.get("exp_annotations") for e in a.get("exp_alerts") or []):
                errors.append(f"{where} {a.get('alertname')}: firing case without exp_annotations")
    for name in alerts:
        for cases, state in ((firing, "fires"), (quiet, "stays quiet")):
            if name not in cases:
                errors.append(f"{tests_path}: alert {name} has no test where it {state}")
    if not alerts:
        errors.append(f"{path}: no alerts")
    return queries


def check_prometheus_config(doc, path, rules_path, datasource, errors):
    jobs = {j.get("job_name"): j for j in (doc or {}).get("scrape_configs", [])}
    job = jobs.get(JOB)
    if job is None:
        errors.append(f"{path}: no scrape job {JOB!r} (jobs: {sorted(jobs)})")
        return
    if DEFAULT_TARGET not in [t for sc in job.get("static_configs", []) for t in sc.get("targets", [])]:
        errors.append(f"{path}: job {JOB} does not scrape the gateway's default {DEFAULT_TARGET}")
    interval = job.get("scrape_interval") or doc.get("global", {}).get("scrape_interval")
    assumed = (datasource.get("jsonData") or {}).get("timeInterval")
    if interval != assumed:
        errors.append(f"{path}: scrape_interval {interval!r} is not the datasource's timeInterval {assumed!r}")
    want = os.path.relpath(rules_path, os.path.dirname(path))
    if want not in (doc.get("rule_files") or []):
        errors.append(f"{path}: rule_files {doc.get('rule_files')} does not load {want}")


def check_provisioning(ds_doc, ds_path, provider_doc, provider_path, errors):
    """Returns the Prometheus datasource ({} if missing)."""
    if (ds_doc or {}).get("apiVersion") != 1 or (provider_doc or {}).get("apiVersion") != 1:
        errors.append(f"{ds_path}, {provider_path}: provisioning files need apiVersion: 1")
    prom = [d for d in (ds_doc or {}).get("datasources", []) if d.get("type") == "prometheus"]
    if len(prom) != 1 or not prom[0].get("isDefault"):
        errors.append(f"{ds_path}: needs exactly one prometheus datasource, the default one")
    providers = (provider_doc or {}).get("providers", [])
    if not any(p.get("type") == "file" and (p.get("options") or {}).get("path") for p in providers):
        errors.append(f"{provider_path}: no file provider with options.path")
    return prom[0] if prom else {}


def load(path, errors, loader=yaml.safe_load):
    try:
        with open(path) as f:
            return loader(f)
    except (OSError, ValueError, yaml.YAMLError) as e:
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
    ap.add_argument("--out-dir", help="write the dashboard's queries to dashboard_rules.yml here")
    args = ap.parse_args()

    errors = []
    dash = load(args.dashboard, errors, json.load)
    dash_queries = dashboard_queries(dash or {}, errors)
    queries = dash_queries + check_alerts(load(args.rules, errors), load(args.rules_test, errors),
                                          args.rules, args.rules_test, errors)
    datasource = check_provisioning(load(args.datasource, errors), args.datasource,
                                    load(args.dashboard_provider, errors), args.dashboard_provider, errors)
    check_prometheus_config(load(args.prometheus_config, errors) or {}, args.prometheus_config, args.rules,
                            datasource, errors)
    for where, expr in queries:
        errors += label_value_errors(where, expr)
        if "input_series" not in where:  # test data may hold other jobs' series
            errors += [f"{where}: job={job!r}, but the scrape job is {JOB!r}"
                       for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', expr) if job != JOB]
    print(f"{len(dash_queries)} dashboard queries, {len(queries) - len(dash_queries)} alert rule and test queries")

    if args.out_dir and not errors:
        def placeholder(m):
            return GRAFANA_BUILTINS.get(m.group(1) or m.group(2), ".*")
        rules = [{"record": f"dashboard_check:{i}", "expr": VARIABLE.sub(placeholder, expr)}
                 for i, (_, expr) in enumerate(dash_queries)]
        os.makedirs(args.out_dir, exist_ok=True)
        with open(os.path.join(args.out_dir, "dashboard_rules.yml"), "w") as f:
            yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, f, sort_keys=False)
        print(f"wrote {len(rules)} dashboard queries to {args.out_dir}/dashboard_rules.yml")
    for e in errors:
        print(f"FAIL {e}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
