#!/usr/bin/env python3
"""Offline checks of the deployment files that schema validation cannot make.

Run from the repository root by .ci/validate-manifests.sh, inside the
target/ci-venv virtualenv (needs PyYAML and jsonschema). One subcommand per
group of checks; each prints one line per failed check and exits 1 if any
failed:

  kustomization  every file listed in kustomization.yaml exists, every
                 manifest is listed, no namespace is hard-coded, the common
                 label is set
  servicemonitor the ServiceMonitor (a CRD, unknown to kubernetes-validate)
                 against .ci/schemas/servicemonitor.schema.json
  consistency    cross-resource references (selectors, port names, ConfigMap
                 name, HPA target), security and shutdown-budget invariants,
                 GATEWAY_* keys against the flags declared in src/
  systemd        required hardening directives of the unit, env.example keys
  dockerfile     runtime-stage invariants of the Dockerfile, .dockerignore
  selftest       the ServiceMonitor schema rejects a broken document
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
DOCKERIGNORE = Path(".dockerignore")
SM_SCHEMA = Path(".ci/schemas/servicemonitor.schema.json")
APP_LABEL = ("app.kubernetes.io/name", "oauth-metadata-gateway")
BINARY = "oauth-metadata-gateway"


class Checks:
    """Collects failures so one run reports all of them."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.failures: list[str] = []
        self.count = 0

    def check(self, ok: bool, message: str) -> bool:
        self.count += 1
        if not ok:
            self.failures.append(message)
            print(f"  FAIL [{self.group}] {message}")
        return ok

    def finish(self) -> int:
        passed = self.count - len(self.failures)
        print(f"  [{self.group}] {passed}/{self.count} checks passed")
        return 1 if self.failures else 0


# --- helpers ----------------------------------------------------------------

def load_docs(path: Path) -> list[dict]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def load_kustomization() -> dict:
    return load_docs(K8S_DIR / "kustomization.yaml")[0]


def load_resources() -> list[dict]:
    docs: list[dict] = []
    for name in load_kustomization().get("resources") or []:
        if (K8S_DIR / name).is_file():  # a missing one fails the kustomization step
            docs.extend(load_docs(K8S_DIR / name))
    return docs


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds in a humantime/Go-style duration such as 20s, 1m30s, 500ms."""
    text = str(text).strip()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text)
    if not parts or "".join(n + u for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"not a duration: {text!r}")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


_MEM_UNITS = {"": 1, "k": 1e3, "M": 1e6, "G": 1e9, "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3}


def parse_memory(text: str) -> float:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?", str(text))
    if not m:
        raise ValueError(f"not a memory quantity: {text!r}")
    return float(m.group(1)) * _MEM_UNITS[m.group(2) or ""]


def selector_matches(selector: dict | None, labels: dict | None) -> bool:
    """matchLabels-only selectors, as used here: every pair must be present."""
    match = (selector or {}).get("matchLabels", selector or {})
    labels = labels or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def known_gateway_env() -> set[str] | None:
    """GATEWAY_* names that the binary's clap definitions declare, or None."""
    names: set[str] = set()
    for path in Path("src").rglob("*.rs"):
        names.update(re.findall(r'env\s*=\s*"(GATEWAY_[A-Z0-9_]+)"', path.read_text()))
    return names or None


def walk(node, path=""):
    """Yields (path, key, value) for every mapping entry in a YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, f"{path}[{i}]")


# --- kustomization ------------------------------------------------------------

def cmd_kustomization() -> int:
    c = Checks("kustomization")
    kfile = K8S_DIR / "kustomization.yaml"
    if not c.check(kfile.is_file(), f"{kfile} exists"):
        return c.finish()
    k = load_kustomization()
    c.check(k.get("apiVersion") == "kustomize.config.k8s.io/v1beta1",
            "kustomization apiVersion is kustomize.config.k8s.io/v1beta1")
    c.check(k.get("kind") == "Kustomization", "kustomization kind is Kustomization")
    c.check("namespace" not in k, "kustomization sets no namespace (namespace-neutral)")
    resources = k.get("resources") or []
    c.check(bool(resources), "kustomization lists resources")
    for name in resources:
        c.check(not re.match(r"^[a-z]+://", name) and "?" not in name,
                f"resource {name!r} is a local file, not a remote URL")
        c.check((K8S_DIR / name).is_file(), f"resource {name!r} exists in {K8S_DIR}")
    c.check(len(set(resources)) == len(resources), "no resource is listed twice")
    on_disk = sorted(p.name for p in K8S_DIR.iterdir()
                     if p.suffix in (".yaml", ".yml") and p.name != "kustomization.yaml")
    for name in on_disk:
        c.check(name in resources, f"{name} is listed in kustomization.yaml resources")
    for name in ("deployment.yaml", "configmap.yaml", "service.yaml", "pdb.yaml",
                 "hpa.yaml", "servicemonitor.yaml"):
        c.check(name in resources, f"kustomization.yaml lists {name}")
    common = {}
    for entry in k.get("labels") or []:
        common.update(entry.get("pairs") or {})
    common.update(k.get("commonLabels") or {})
    c.check(common.get(APP_LABEL[0]) == APP_LABEL[1],
            f"kustomization sets common label {APP_LABEL[0]}={APP_LABEL[1]}")
    for name in resources:
        path = K8S_DIR / name
        if not path.is_file():
            continue
        docs = load_docs(path)
        c.check(bool(docs), f"{name} holds at least one document")
        for d in docs:
            what = f"{name}: {d.get('kind')}/{(d.get('metadata') or {}).get('name')}"
            for field in ("apiVersion", "kind", "metadata"):
                c.check(field in d, f"{what} has {field}")
            meta = d.get("metadata") or {}
            c.check("namespace" not in meta, f"{what} hard-codes no namespace")
            c.check((meta.get("labels") or {}).get(APP_LABEL[0]) == APP_LABEL[1],
                    f"{what} carries label {APP_LABEL[0]}={APP_LABEL[1]}")
    return c.finish()


# --- servicemonitor -----------------------------------------------------------

def servicemonitor_errors(doc: dict) -> list[str]:
    schema = json.loads(SM_SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))]


def cmd_servicemonitor() -> int:
    c = Checks("servicemonitor")
    jsonschema.Draft202012Validator.check_schema(json.loads(SM_SCHEMA.read_text()))
    monitors = by_kind(load_resources(), "ServiceMonitor")
    c.check(len(monitors) == 1, "exactly one ServiceMonitor among the kustomization resources")
    for sm in monitors:
        errors = servicemonitor_errors(sm)
        for e in errors:
            c.check(False, f"ServiceMonitor: {e}")
        c.check(not errors, f"ServiceMonitor/{sm['metadata'].get('name')} matches {SM_SCHEMA}")
    return c.finish()


# --- consistency --------------------------------------------------------------

def cmd_consistency() -> int:
    c = Checks("consistency")
    docs = load_resources()
    deps, cms, svcs = by_kind(docs, "Deployment"), by_kind(docs, "ConfigMap"), by_kind(docs, "Service")
    pdbs, hpas, sms = (by_kind(docs, "PodDisruptionBudget"), by_kind(docs, "HorizontalPodAutoscaler"),
                       by_kind(docs, "ServiceMonitor"))
    for kind, found in (("Deployment", deps), ("ConfigMap", cms), ("Service", svcs),
                        ("PodDisruptionBudget", pdbs), ("HorizontalPodAutoscaler", hpas)):
        c.check(len(found) == 1, f"exactly one {kind}")
    if c.failures:
        return c.finish()
    dep, cm, svc, pdb, hpa = deps[0], cms[0], svcs[0], pdbs[0], hpas[0]
    dname = dep["metadata"]["name"]
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    tlabels = spec["template"]["metadata"].get("labels") or {}
    containers = pod.get("containers") or []
    c.check(len(containers) == 1, "the pod has one container")
    ctr = containers[0]
    ports = {p.get("name"): p["containerPort"] for p in ctr.get("ports") or []}
    port_numbers = set(ports.values())
    known_env = known_gateway_env()

    # Deployment itself.
    c.check(spec.get("replicas", 1) >= 2, "Deployment runs at least 2 replicas")
    c.check(selector_matches(spec.get("selector"), tlabels),
            "Deployment selector matches its pod template labels")
    c.check(tlabels.get(APP_LABEL[0]) == APP_LABEL[1], "pod template carries the app label")
    image = ctr.get("image", "")
    c.check(":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"),
            f"container image {image!r} has an explicit tag other than latest")

    # Security context (pod-level with container-level overrides).
    psc, csc = pod.get("securityContext") or {}, ctr.get("securityContext") or {}
    eff = {**psc, **csc}
    c.check(eff.get("runAsNonRoot") is True, "runAsNonRoot is true")
    c.check(eff.get("runAsUser") == 65532, "runAsUser is 65532")
    c.check((eff.get("seccompProfile") or {}).get("type") == "RuntimeDefault",
            "seccompProfile is RuntimeDefault")
    c.check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation is false")
    c.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem is true")
    c.check(csc.get("privileged") in (None, False), "container is not privileged")
    caps = csc.get("capabilities") or {}
    c.check("ALL" in (caps.get("drop") or []), "capabilities drop ALL")
    c.check(not caps.get("add"), "no capabilities are added")
    c.check(pod.get("hostNetwork") in (None, False), "no hostNetwork")
    c.check(pod.get("automountServiceAccountToken") is False,
            "no service-account token is mounted (the gateway does not call the API)")

    # Dockerfile USER agrees with runAsUser.
    if DOCKERFILE.is_file():
        users = re.findall(r"^USER\s+(\S+)", DOCKERFILE.read_text(), re.M)
        c.check(bool(users) and users[-1].split(":")[0] == str(eff.get("runAsUser")),
                "Dockerfile's final USER equals the pod's runAsUser")

    # Resources.
    res = ctr.get("resources") or {}
    req, lim = res.get("requests") or {}, res.get("limits") or {}
    c.check("cpu" in req, "CPU request set (the HPA's utilisation is relative to it)")
    c.check("memory" in req and "memory" in lim, "memory request and limit set")
    if "memory" in req and "memory" in lim:
        c.check(parse_memory(req["memory"]) <= parse_memory(lim["memory"]),
                "memory request <= memory limit")
        c.check(parse_memory(lim["memory"]) >= 2 * 16 * 1024**2,
                "memory limit leaves >= 2x headroom over the measured ~16 MiB peak RSS")

    # Probes: HTTP against a declared port, the right endpoints, nothing that
    # needs a binary inside the (distroless) image.
    def probe_ok(name: str, path: str) -> None:
        probe = ctr.get(name)
        if not c.check(probe is not None, f"{name} is set"):
            return
        get = probe.get("httpGet") or {}
        c.check(get.get("path") == path, f"{name} is httpGet {path}")
        c.check(get.get("port") in ports or get.get("port") in port_numbers,
                f"{name} port {get.get('port')!r} is a declared container port")
    probe_ok("livenessProbe", "/healthz")
    probe_ok("readinessProbe", "/readyz")
    probe_ok("startupProbe", "/healthz")
    for _, key, _ in walk(ctr):
        if key == "exec":
            c.check(False, "no exec probe/hook: the distroless image has no shell or tools")

    # Configuration.
    cm_name = cm["metadata"]["name"]
    refs = [e["configMapRef"]["name"] for e in ctr.get("envFrom") or [] if "configMapRef" in e]
    c.check(cm_name in refs, f"container takes envFrom ConfigMap {cm_name!r}")
    data = cm.get("data") or {}
    env = {e["name"]: e.get("value") for e in ctr.get("env") or []}
    merged = {**data, **env}
    for key in ("GATEWAY_UPSTREAM", "GATEWAY_ISSUER", "GATEWAY_TTL", "GATEWAY_MAX_STALE",
                "GATEWAY_LISTEN", "GATEWAY_LOG_FORMAT"):
        c.check(key in data, f"ConfigMap sets {key}")
    c.check(data.get("GATEWAY_LOG_FORMAT") in ("json", "text"), "GATEWAY_LOG_FORMAT is json or text")
    listen = merged.get("GATEWAY_LISTEN", "")
    m = re.fullmatch(r"(0\.0\.0\.0|\[::\]):(\d+)", listen)
    c.check(m is not None, f"GATEWAY_LISTEN {listen!r} listens on all interfaces")
    if m:
        c.check(int(m.group(2)) in port_numbers,
                f"GATEWAY_LISTEN port {m.group(2)} is the declared containerPort")
    for key in ("GATEWAY_TTL", "GATEWAY_MAX_STALE", "GATEWAY_UPSTREAM_TIMEOUT",
                "GATEWAY_RETRY_BACKOFF_MAX", "GATEWAY_SHUTDOWN_TIMEOUT"):
        if key in merged:
            try:
                parse_duration(merged[key])
                ok = True
            except ValueError:
                ok = False
            c.check(ok, f"{key}={merged[key]!r} is a duration")
    for key in sorted(merged):
        c.check(key.startswith("GATEWAY_"), f"env key {key} has the GATEWAY_ prefix")
        if known_env is not None:
            c.check(key in known_env, f"env key {key} is a flag the binary declares in src/")
    if known_env is None:
        print("  note [consistency] no GATEWAY_* env declarations found under src/: "
              "env keys not cross-checked against the binary")

    # Shutdown budget: preStop sleep + graceful shutdown < grace period.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    pre = ((ctr.get("lifecycle") or {}).get("preStop") or {}).get("sleep", {}).get("seconds")
    c.check(pre is not None and pre > 0, "preStop is a kubelet sleep (endpoints drain first)")
    shutdown = merged.get("GATEWAY_SHUTDOWN_TIMEOUT")
    c.check(shutdown is not None, "GATEWAY_SHUTDOWN_TIMEOUT is set explicitly")
    if pre is not None and shutdown is not None:
        total = pre + parse_duration(shutdown)
        c.check(total < grace,
                f"preStop {pre}s + shutdown {shutdown} = {total:g}s < terminationGracePeriodSeconds {grace}")

    # Spread across nodes.
    tsc = pod.get("topologySpreadConstraints") or []
    anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {})
    anti_terms = (anti.get("requiredDuringSchedulingIgnoredDuringExecution") or []) + [
        t.get("podAffinityTerm", {}) for t in anti.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
    spread = [t for t in tsc if t.get("topologyKey") == "kubernetes.io/hostname"] + \
             [t for t in anti_terms if t.get("topologyKey") == "kubernetes.io/hostname"]
    c.check(bool(spread), "replicas are spread across nodes (kubernetes.io/hostname)")
    for t in tsc + anti_terms:
        c.check(selector_matches(t.get("labelSelector"), tlabels),
                f"spread/anti-affinity selector on {t.get('topologyKey')} matches the pod labels")

    # Prometheus annotations.
    ann = spec["template"]["metadata"].get("annotations") or {}
    c.check(ann.get("prometheus.io/scrape") == "true", "prometheus.io/scrape is \"true\"")
    c.check(ann.get("prometheus.io/path") == "/metrics", "prometheus.io/path is /metrics")
    c.check(str(ann.get("prometheus.io/port")) in {str(p) for p in port_numbers},
            "prometheus.io/port is the container port")

    # Service.
    c.check(svc["spec"].get("type", "ClusterIP") == "ClusterIP", "Service is ClusterIP")
    c.check(selector_matches(svc["spec"].get("selector"), tlabels),
            "Service selector matches the pod labels")
    sports = {p.get("name"): p for p in svc["spec"].get("ports") or []}
    http = sports.get("http")
    if c.check(http is not None, "Service has a port named http"):
        c.check(http.get("port") == 80, "Service port http is 80")
        tp = http.get("targetPort")
        c.check(tp in ports or tp in port_numbers,
                f"Service targetPort {tp!r} is a declared container port")
        c.check(ports.get(tp, tp) == 8080, "Service targetPort resolves to 8080")

    # PDB.
    c.check(selector_matches(pdb["spec"].get("selector"), tlabels), "PDB selector matches the pod labels")
    min_avail = pdb["spec"].get("minAvailable")
    c.check(isinstance(min_avail, int) and 1 <= min_avail < spec.get("replicas", 1),
            "PDB minAvailable is >= 1 and below the replica count (drains can proceed)")

    # HPA.
    ref = hpa["spec"].get("scaleTargetRef") or {}
    c.check(ref.get("kind") == "Deployment" and ref.get("name") == dname
            and ref.get("apiVersion") == "apps/v1", "HPA targets the Deployment")
    lo, hi = hpa["spec"].get("minReplicas", 1), hpa["spec"].get("maxReplicas", 0)
    c.check(2 <= lo <= hi, f"HPA 2 <= minReplicas ({lo}) <= maxReplicas ({hi})")
    c.check(lo <= spec.get("replicas", 1) <= hi, "Deployment replicas lie within the HPA range")
    cpu = [m for m in hpa["spec"].get("metrics") or []
           if m.get("type") == "Resource" and (m.get("resource") or {}).get("name") == "cpu"]
    c.check(bool(cpu), "HPA scales on CPU")

    # ServiceMonitor -> Service.
    for sm in sms:
        c.check(selector_matches(sm["spec"].get("selector"), svc["metadata"].get("labels")),
                "ServiceMonitor selector matches the Service labels")
        for ep in sm["spec"].get("endpoints") or []:
            c.check(ep.get("port") in sports, f"ServiceMonitor endpoint port {ep.get('port')!r} is a Service port name")
            c.check(ep.get("path", "/metrics") == "/metrics", "ServiceMonitor scrapes /metrics")
    return c.finish()


# --- systemd ------------------------------------------------------------------

def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        if current is None:
            raise ValueError(f"{path}: directive outside a section: {raw!r}")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def parse_env_file(path: Path) -> dict[str, str]:
    env = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"{path}: not a KEY=value line: {raw!r}")
        env[key] = value
    return env


def cmd_systemd() -> int:
    c = Checks("systemd")
    unit = parse_unit(SYSTEMD_UNIT)
    svc = unit.get("Service", {})
    c.check("Unit" in unit and "Install" in unit, "unit has [Unit], [Service] and [Install]")

    def last(key: str) -> str | None:
        return svc[key][-1] if key in svc else None

    exec_start = last("ExecStart") or ""
    c.check(exec_start.split()[0].endswith("/" + BINARY) if exec_start else False,
            f"ExecStart runs {BINARY}")
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
    example = parse_env_file(SYSTEMD_ENV)
    # The env file overrides Environment=, so the effective shutdown timeout
    # is the example's when it sets one.
    shutdown = example.get("GATEWAY_SHUTDOWN_TIMEOUT", unit_env.get("GATEWAY_SHUTDOWN_TIMEOUT", "10s"))
    stop = last("TimeoutStopSec")
    if c.check(stop is not None, "TimeoutStopSec is set"):
        c.check(parse_duration(shutdown) < parse_duration(stop),
                f"TimeoutStopSec ({stop}) exceeds the graceful shutdown bound ({shutdown})")
    known_env = known_gateway_env()
    for key in sorted({**unit_env, **example}):
        c.check(key.startswith("GATEWAY_"), f"{key} has the GATEWAY_ prefix")
        if known_env is not None:
            c.check(key in known_env, f"{key} is a flag the binary declares in src/")
    for key in ("GATEWAY_UPSTREAM", "GATEWAY_ISSUER", "GATEWAY_LISTEN", "GATEWAY_TTL"):
        c.check(key in example, f"env.example sets {key}")
    return c.finish()


# --- dockerfile ---------------------------------------------------------------

def cmd_dockerfile() -> int:
    c = Checks("dockerfile")
    text = DOCKERFILE.read_text()
    # Join continuation lines, drop comments.
    joined = re.sub(r"\\\n", " ", "\n".join(l for l in text.splitlines() if not l.lstrip().startswith("#")))
    lines = [l.strip() for l in joined.splitlines() if l.strip()]
    froms = [i for i, l in enumerate(lines) if l.upper().startswith("FROM ")]
    c.check(len(froms) >= 2, "multi-stage build (>= 2 FROM)")
    final = lines[froms[-1]:] if froms else []
    base = final[0].split()[1] if final else ""
    c.check(base.startswith("gcr.io/distroless/") and base.endswith(":nonroot")
            or base.startswith("debian:"), f"runtime base {base!r} is distroless nonroot or debian")
    c.check("cargo build --release --locked" in joined, "builds with cargo build --release --locked")
    c.check(any(l.upper().startswith("USER 65532") for l in final), "final stage runs as USER 65532")
    c.check(any(re.fullmatch(r"USER\s+65532:65532", l) for l in final), "USER is 65532:65532 (numeric uid:gid)")
    c.check(any(re.fullmatch(r"EXPOSE\s+8080(/tcp)?", l) for l in final), "EXPOSE 8080")
    c.check(any(re.fullmatch(r"ENV\s+GATEWAY_LISTEN=0\.0\.0\.0:8080", l) for l in final),
            "ENV GATEWAY_LISTEN=0.0.0.0:8080")
    ep = [l for l in final if l.upper().startswith("ENTRYPOINT")]
    if c.check(len(ep) == 1, "one ENTRYPOINT in the final stage"):
        try:
            argv = json.loads(ep[0].split(None, 1)[1])
            c.check(isinstance(argv, list) and argv[0].endswith("/" + BINARY),
                    f"ENTRYPOINT is the exec form of {BINARY}")
        except (ValueError, IndexError):
            c.check(False, "ENTRYPOINT is JSON (exec form), not shell form")
    c.check(not any(l.upper().startswith("HEALTHCHECK") and "NONE" not in l.upper() for l in final),
            "no HEALTHCHECK (distroless has no shell/curl to run one)")
    copies = [l for l in final if l.upper().startswith("COPY")]
    c.check(bool(copies) and all("--from=" in l for l in copies),
            "the runtime stage copies only build outputs (COPY --from=...)")
    for l in lines:
        if l.upper().startswith("COPY") and "--from=" not in l:
            for src in l.split()[1:-1]:
                if not src.startswith("--"):
                    c.check(Path(src).exists(), f"COPY source {src} exists in the repository")
    ignore = ([l.strip() for l in DOCKERIGNORE.read_text().splitlines() if l.strip() and not l.startswith("#")]
              if DOCKERIGNORE.is_file() else [])
    for entry in ("target", ".git", "node_modules"):
        c.check(any(e.strip("/").removeprefix("**/") == entry for e in ignore), f".dockerignore excludes {entry}")
    return c.finish()


# --- selftest -----------------------------------------------------------------

def cmd_selftest() -> int:
    """Negative controls: the ServiceMonitor schema must reject broken input."""
    c = Checks("selftest")
    sms = by_kind(load_resources(), "ServiceMonitor")
    if not c.check(bool(sms), "a ServiceMonitor to mutate"):
        return c.finish()
    good = sms[0]
    mutations = {
        "misspelt endpoint key": lambda d: d["spec"]["endpoints"][0].update(
            {"prot": d["spec"]["endpoints"][0].pop("port")}),
        "bad interval": lambda d: d["spec"]["endpoints"][0].update({"interval": "30 seconds"}),
        "missing selector": lambda d: d["spec"].pop("selector"),
        "wrong apiVersion": lambda d: d.update({"apiVersion": "monitoring.coreos.com/v2"}),
    }
    for name, mutate in mutations.items():
        bad = copy.deepcopy(good)
        mutate(bad)
        c.check(bool(servicemonitor_errors(bad)), f"schema rejects a ServiceMonitor with {name}")
    return c.finish()


COMMANDS = {
    "kustomization": cmd_kustomization,
    "servicemonitor": cmd_servicemonitor,
    "consistency": cmd_consistency,
    "systemd": cmd_systemd,
    "dockerfile": cmd_dockerfile,
    "selftest": cmd_selftest,
}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: {sys.argv[0]} {{{'|'.join(COMMANDS)}}}")
    sys.exit(COMMANDS[sys.argv[1]]())
