#!/usr/bin/env python3
"""What the tools cannot check in the deployment files.

Run from the repository root by .ci/validate-manifests.sh (in target/ci-venv),
which lets the tools do the rest: yamllint, kubernetes-validate --strict
(fields and types of the built-in kinds), kubectl kustomize, hadolint,
systemd-analyze verify and security, shellcheck. Subcommands: kustomization
(files listed/present, no namespace, app label); servicemonitor (the CRD
against .ci/schemas/, and the schema rejects broken copies); consistency (what
ties the resources together, the security policy no schema expresses, the
shutdown budget, GATEWAY_* keys the binary declares); systemd (each hardening
directive, TimeoutStopSec); dockerfile (runtime-stage invariants hadolint has
no rule for). Each prints one line per failed check and exits 1 if any failed.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import jsonschema
import yaml

K8S_DIR = Path("deploy/kubernetes")
SYSTEMD_UNIT = Path("deploy/systemd/oauth-metadata-gateway.service")
SYSTEMD_ENV = Path("deploy/systemd/env.example")
DOCKERFILE = Path("Dockerfile")
SM_SCHEMA = Path(".ci/schemas/servicemonitor.schema.json")
APP_LABEL = ("app.kubernetes.io/name", "oauth-metadata-gateway")
BINARY = "oauth-metadata-gateway"
UID = 65532  # the distroless "nonroot" user


class Checks:
    """Collects failures so one run reports all of them."""

    def __init__(self, group: str) -> None:
        self.group, self.count, self.failed = group, 0, 0

    def check(self, ok: bool, message: str) -> bool:
        self.count += 1
        if not ok:
            self.failed += 1
            print(f"  FAIL [{self.group}] {message}")
        return ok

    def finish(self) -> int:
        print(f"  [{self.group}] {self.count - self.failed}/{self.count} checks passed")
        return 1 if self.failed else 0


def load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def resource_names() -> list[str]:
    return load_docs(K8S_DIR / "kustomization.yaml")[0].get("resources") or []


def load_resources() -> dict[str, list[dict]]:
    """Kind -> documents, over the files the kustomization lists."""
    kinds: dict[str, list[dict]] = {}
    for name in resource_names():
        if (K8S_DIR / name).is_file():  # a missing one fails the kustomization step
            for d in load_docs(K8S_DIR / name):
                kinds.setdefault(d.get("kind"), []).append(d)
    return kinds


def parse_duration(text: str) -> float:
    """Seconds in a humantime-style duration such as 20s, 1m30s, 500ms."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", str(text).replace(" ", ""))
    if not parts or "".join(n + u for n, u in parts) != str(text).replace(" ", ""):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def parse_memory(text: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?", str(text)).groups()
    return float(number) * {None: 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}[unit]


def selects(selector: dict | None, labels: dict | None) -> bool:
    """A matchLabels (or plain map) selector selects `labels`; an empty one selects nothing here."""
    match = (selector or {}).get("matchLabels", selector or {})
    return bool(match) and all((labels or {}).get(k) == v for k, v in match.items())


def check_env_keys(c: Checks, names, where: str) -> None:
    """Every key is a GATEWAY_* variable that the binary's clap definitions declare."""
    known = set()
    for path in Path("src").rglob("*.rs"):
        known.update(re.findall(r'env\s*=\s*"(GATEWAY_[A-Z0-9_]+)"', path.read_text()))
    if not c.check(bool(known), "GATEWAY_* env declarations found under src/"):
        return
    for key in sorted(names):
        c.check(key in known, f"{where}: {key} is a variable the binary declares in src/")


def cmd_kustomization() -> int:
    c = Checks("kustomization")
    resources = resource_names()
    on_disk = {p.name for p in K8S_DIR.glob("*.y*ml")} - {"kustomization.yaml"}
    for name in sorted(on_disk | set(resources)):
        c.check(name in resources, f"{name} is listed in kustomization.yaml resources")
        if not c.check(name in on_disk, f"resource {name} exists in {K8S_DIR}"):
            continue
        for d in load_docs(K8S_DIR / name):
            what, meta = f"{name}: {d.get('kind')}", d.get("metadata") or {}
            c.check("namespace" not in meta, f"{what} hard-codes no namespace")
            c.check((meta.get("labels") or {}).get(APP_LABEL[0]) == APP_LABEL[1],
                    f"{what} carries label {APP_LABEL[0]}={APP_LABEL[1]}")
    return c.finish()


def servicemonitor_errors(doc: dict) -> list[str]:
    validator = jsonschema.Draft202012Validator(json.loads(SM_SCHEMA.read_text()))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def cmd_servicemonitor() -> int:
    c = Checks("servicemonitor")
    jsonschema.Draft202012Validator.check_schema(json.loads(SM_SCHEMA.read_text()))
    monitors = load_resources().get("ServiceMonitor", [])
    if not c.check(len(monitors) == 1, "exactly one ServiceMonitor among the kustomization resources"):
        return c.finish()
    for sm in monitors:
        errors = servicemonitor_errors(sm)
        c.check(not errors, f"ServiceMonitor matches {SM_SCHEMA}: " + "; ".join(errors))
    # Negative controls: the schema must reject broken copies.
    mutations = {
        "misspelt endpoint key": lambda d: d["spec"]["endpoints"][0].update(
            {"prot": d["spec"]["endpoints"][0].pop("port")}),
        "bad interval": lambda d: d["spec"]["endpoints"][0].update({"interval": "30 seconds"}),
        "missing selector": lambda d: d["spec"].pop("selector"),
        "wrong apiVersion": lambda d: d.update({"apiVersion": "monitoring.coreos.com/v2"}),
    }
    for name, mutate in mutations.items():
        bad = copy.deepcopy(monitors[0])
        mutate(bad)
        c.check(bool(servicemonitor_errors(bad)), f"schema rejects a ServiceMonitor with {name}")
    return c.finish()


def cmd_consistency() -> int:
    c = Checks("consistency")
    kinds = load_resources()
    wanted = ("Deployment", "ConfigMap", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler")
    if not all([c.check(len(kinds.get(k, [])) == 1, f"exactly one {k}") for k in wanted]):
        return c.finish()
    dep, cm, svc, pdb, hpa = (kinds[k][0] for k in wanted)
    spec, pod = dep["spec"], dep["spec"]["template"]["spec"]
    tlabels = spec["template"]["metadata"].get("labels") or {}
    replicas = spec.get("replicas", 1)
    if not c.check(len(pod.get("containers") or []) == 1, "the pod has one container"):
        return c.finish()
    ctr = pod["containers"][0]
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports") or []}

    def is_port(p) -> bool:
        return p in ports or p in ports.values() or str(p) in map(str, ports.values())

    # The Deployment and what points at its pods.
    c.check(replicas >= 2, "Deployment runs at least 2 replicas")
    for what, selector in (("Deployment", spec.get("selector")), ("Service", svc["spec"].get("selector")),
                           ("PDB", pdb["spec"].get("selector"))):
        c.check(selects(selector, tlabels), f"{what} selector matches the pod template labels")
    image = ctr.get("image", "")
    c.check(":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"),
            f"container image {image!r} has an explicit tag other than latest")

    # Security policy (pod-level with container-level overrides).
    csc = ctr.get("securityContext") or {}
    eff = {**(pod.get("securityContext") or {}), **csc}
    caps = csc.get("capabilities") or {}
    for ok, what in ((eff.get("runAsNonRoot") is True, "runAsNonRoot is true"),
                     (eff.get("runAsUser") == UID, f"runAsUser is {UID}"),
                     ((eff.get("seccompProfile") or {}).get("type") == "RuntimeDefault", "seccompProfile RuntimeDefault"),
                     (csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is false"),
                     (csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is true"),
                     (not csc.get("privileged"), "container is not privileged"),
                     ("ALL" in (caps.get("drop") or []) and not caps.get("add"), "capabilities: drop ALL, add none"),
                     (not pod.get("hostNetwork"), "no hostNetwork"),
                     (pod.get("automountServiceAccountToken") is False, "no service-account token mounted")):
        c.check(ok, what)
    users = re.findall(r"^USER\s+(\d+)", DOCKERFILE.read_text(), re.M)
    c.check(users[-1:] == [str(eff.get("runAsUser"))], "Dockerfile's final USER equals the pod's runAsUser")

    # Resources: the HPA's utilisation is relative to the CPU request.
    res = ctr.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    c.check("cpu" in req, "CPU request set")
    if c.check("memory" in req and "memory" in lim, "memory request and limit set"):
        c.check(parse_memory(req["memory"]) <= parse_memory(lim["memory"]) and
                parse_memory(lim["memory"]) >= 2 * 16 * 1024**2,
                "memory request <= limit, and the limit is >= 2x the measured ~16 MiB peak RSS")

    # Probes: HTTP on a declared port; the distroless image has no shell for exec.
    for name, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = (ctr.get(name) or {}).get("httpGet") or {}
        c.check(get.get("path") == path and is_port(get.get("port")), f"{name} is httpGet {path} on a container port")
    c.check(not re.search(r"^[\s-]*exec:", yaml.safe_dump(ctr), re.M),
            "no exec probe or hook: the distroless image has no shell or tools")

    # Configuration: the ConfigMap feeds the container, listens on the container port.
    refs = [e["configMapRef"]["name"] for e in ctr.get("envFrom") or [] if "configMapRef" in e]
    c.check(cm["metadata"]["name"] in refs, f"container takes envFrom ConfigMap {cm['metadata']['name']!r}")
    data = cm.get("data") or {}
    merged = {**data, **{e["name"]: e.get("value") for e in ctr.get("env") or []}}
    for key in ("GATEWAY_UPSTREAM", "GATEWAY_ISSUER", "GATEWAY_TTL", "GATEWAY_LISTEN", "GATEWAY_SHUTDOWN_TIMEOUT"):
        c.check(key in merged, f"{key} is set")
    m = re.fullmatch(r"(?:0\.0\.0\.0|\[::\]):(\d+)", merged.get("GATEWAY_LISTEN", ""))
    c.check(bool(m) and int(m.group(1)) in ports.values(),
            f"GATEWAY_LISTEN {merged.get('GATEWAY_LISTEN')!r} is all interfaces on the container port")
    check_env_keys(c, merged, "Deployment/ConfigMap")

    # Shutdown budget: preStop sleep + graceful shutdown < grace period.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre = ((ctr.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    if c.check(bool(pre), "preStop is a kubelet sleep (endpoints drain first)") and "GATEWAY_SHUTDOWN_TIMEOUT" in merged:
        total = pre + parse_duration(merged["GATEWAY_SHUTDOWN_TIMEOUT"])
        c.check(total < grace, f"preStop {pre}s + shutdown = {total:g}s < terminationGracePeriodSeconds {grace}")

    # Spread across nodes, selecting these pods.
    tsc = pod.get("topologySpreadConstraints") or []
    anti = (pod.get("affinity") or {}).get("podAntiAffinity") or {}
    terms = tsc + (anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []) + [
        t.get("podAffinityTerm", {}) for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
    c.check(any(t.get("topologyKey") == "kubernetes.io/hostname" for t in terms),
            "replicas are spread across nodes (kubernetes.io/hostname)")
    for t in terms:
        c.check(selects(t.get("labelSelector"), tlabels), f"spread selector on {t.get('topologyKey')} matches the pods")

    # Prometheus annotations, Service, PDB, HPA, ServiceMonitor.
    ann = spec["template"]["metadata"].get("annotations") or {}
    c.check(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/path") == "/metrics"
            and is_port(ann.get("prometheus.io/port")), "prometheus.io annotations scrape /metrics on the container port")
    sports = {p.get("name"): p for p in svc["spec"].get("ports") or []}
    http = sports.get("http") or {}
    c.check(http.get("port") == 80 and ports.get(http.get("targetPort"), http.get("targetPort")) == 8080,
            "Service port http is 80 -> container port 8080")
    min_avail = pdb["spec"].get("minAvailable")
    c.check(isinstance(min_avail, int) and 1 <= min_avail < replicas,
            "PDB minAvailable is >= 1 and below the replica count (drains can proceed)")
    ref, lo, hi = hpa["spec"].get("scaleTargetRef") or {}, hpa["spec"].get("minReplicas", 1), hpa["spec"]["maxReplicas"]
    c.check((ref.get("apiVersion"), ref.get("kind"), ref.get("name")) == ("apps/v1", "Deployment", dep["metadata"]["name"]),
            "HPA targets the Deployment")
    c.check(2 <= lo <= replicas <= hi, f"2 <= HPA minReplicas ({lo}) <= replicas ({replicas}) <= maxReplicas ({hi})")
    c.check(any((m.get("resource") or {}).get("name") == "cpu" for m in hpa["spec"].get("metrics") or []),
            "HPA scales on CPU")
    for sm in kinds.get("ServiceMonitor", []):
        c.check(selects(sm["spec"].get("selector"), svc["metadata"].get("labels")),
                "ServiceMonitor selector matches the Service labels")
        for ep in sm["spec"].get("endpoints") or []:
            c.check(ep.get("port") in sports and ep.get("path", "/metrics") == "/metrics",
                    f"ServiceMonitor endpoint scrapes /metrics on a Service port ({ep.get('port')!r})")
    return c.finish()


def parse_lines(path: Path, sections: bool) -> dict:
    """A systemd unit ({section: {key: [values]}}) or an env file ({key: value})."""
    out: dict = {}
    current = out
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if sections and line.startswith("["):
            current = out.setdefault(line.strip("[]"), {})
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()):
            raise ValueError(f"{path}: not a KEY=value line: {raw!r}")
        if sections:
            current.setdefault(key.strip(), []).append(value.strip())
        else:
            out[key] = value
    return out


def cmd_systemd() -> int:
    c = Checks("systemd")
    unit = parse_lines(SYSTEMD_UNIT, sections=True)
    svc = unit.get("Service", {})

    def last(key: str) -> str | None:
        return svc[key][-1] if key in svc else None

    c.check((last("ExecStart") or "").split(" ")[0].endswith("/" + BINARY), f"ExecStart runs {BINARY}")
    # systemd-analyze security only bounds the sum: each of these is required.
    required = {
        "DynamicUser": "yes", "NoNewPrivileges": "yes", "ProtectSystem": "strict",
        "ProtectHome": "yes", "PrivateTmp": "yes", "PrivateDevices": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "MemoryDenyWriteExecute": "yes", "CapabilityBoundingSet": "",
        "LockPersonality": "yes", "RestrictNamespaces": "yes",
        "Restart": "on-failure", "KillSignal": "SIGTERM",
    }
    for key, value in required.items():
        c.check(last(key) == value, f"{key}={value} (found {last(key)!r})")
    c.check("@system-service" in (svc.get("SystemCallFilter") or []), "SystemCallFilter=@system-service")
    c.check("-/etc/oauth-metadata-gateway/env" in (svc.get("EnvironmentFile") or []),
            "EnvironmentFile=-/etc/oauth-metadata-gateway/env (optional)")
    unit_env = dict(v.split("=", 1) for v in svc.get("Environment") or [] if "=" in v)
    example = parse_lines(SYSTEMD_ENV, sections=False)
    # The env file overrides Environment=: the effective timeout is the example's when it sets one.
    shutdown = example.get("GATEWAY_SHUTDOWN_TIMEOUT", unit_env.get("GATEWAY_SHUTDOWN_TIMEOUT", "10s"))
    stop = last("TimeoutStopSec")
    c.check(stop is not None and parse_duration(shutdown) < parse_duration(stop),
            f"TimeoutStopSec ({stop}) exceeds the graceful shutdown bound ({shutdown})")
    check_env_keys(c, {**unit_env, **example}, "systemd unit/env.example")
    for key in ("GATEWAY_UPSTREAM", "GATEWAY_ISSUER", "GATEWAY_LISTEN", "GATEWAY_TTL"):
        c.check(key in example, f"env.example sets {key}")
    return c.finish()


def cmd_dockerfile() -> int:
    c = Checks("dockerfile")
    text = DOCKERFILE.read_text()
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    lines = [l.strip() for l in joined.splitlines() if l.strip()]
    froms = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    final = lines[froms[-1]:] if froms else []
    base = final[0].split()[1] if final else ""
    c.check(base.startswith("gcr.io/distroless/") and base.endswith(":nonroot"), f"runtime base {base!r} is distroless nonroot")
    c.check("cargo build --release --locked" in joined, "builds with cargo build --release --locked")
    # Numeric, so that the pod's runAsNonRoot can verify it without /etc/passwd.
    c.check(f"USER {UID}:{UID}" in final, f"final stage runs as USER {UID}:{UID}")
    c.check(any(re.fullmatch(r"EXPOSE\s+8080(/tcp)?", l) for l in final), "EXPOSE 8080")
    c.check("ENV GATEWAY_LISTEN=0.0.0.0:8080" in final, "ENV GATEWAY_LISTEN=0.0.0.0:8080 (all interfaces)")
    c.check(any(re.fullmatch(rf'ENTRYPOINT\s+\["[^"]*/{BINARY}".*', l) for l in final), f"ENTRYPOINT runs {BINARY}")
    c.check(not any(re.match(r"HEALTHCHECK\s+(?!NONE)", l, re.I) for l in final),
            "no HEALTHCHECK (distroless has no shell or curl to run one)")
    copies = [l for l in final if l.upper().startswith("COPY")]
    c.check(bool(copies) and all("--from=" in l for l in copies), "the runtime stage copies only build outputs")
    for l in lines:
        if l.upper().startswith("COPY") and "--from=" not in l:
            for src in (s for s in l.split()[1:-1] if not s.startswith("--")):
                c.check(Path(src).exists(), f"COPY source {src} exists in the repository")
    ignore = {l.strip().strip("/").removeprefix("**/") for l in Path(".dockerignore").read_text().splitlines()}
    for entry in ("target", ".git", "node_modules"):
        c.check(entry in ignore, f".dockerignore excludes {entry}")
    return c.finish()


COMMANDS = {"kustomization": cmd_kustomization, "servicemonitor": cmd_servicemonitor,
            "consistency": cmd_consistency, "systemd": cmd_systemd, "dockerfile": cmd_dockerfile}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(COMMANDS)}}}")
    sys.exit(COMMANDS[sys.argv[1]]())
