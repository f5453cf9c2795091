#!/usr/bin/env bash
# Offline validation of the deployment files: deploy/kubernetes (schemas of
# Kubernetes itself, a hand-written subset schema for the ServiceMonitor CRD,
# cross-resource consistency), the Dockerfile (hadolint + invariants) and the
# systemd unit (systemd-analyze verify/security + required directives).
#
# Usage, from the repository root (CI: `bash .ci/validate-manifests.sh`):
#   .ci/validate-manifests.sh
# Environment:
#   K8S_VERSIONS             Kubernetes versions to validate against, among
#                            those kubernetes-validate ships (1.25.0..1.37.0);
#                            default "1.30.0 1.37.0": 1.30 is the oldest the
#                            Deployment supports (preStop sleep action).
#   PYTHON                   interpreter for the virtualenv (default python3)
#   REQUIRE_SYSTEMD_ANALYZE  1 = fail instead of skipping when systemd-analyze
#                            is missing (default 0)
#
# Installs nothing outside target/ci-venv (a virtualenv, reused while
# .ci/requirements-validate.txt is unchanged). Needs network only to create
# that virtualenv (PyPI), never afterwards. Exits non-zero if any step fails.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD

K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}
PYTHON=${PYTHON:-python3}
REQUIRE_SYSTEMD_ANALYZE=${REQUIRE_SYSTEMD_ANALYZE:-0}
VENV=target/ci-venv
REQUIREMENTS=.ci/requirements-validate.txt
K8S_DIR=deploy/kubernetes
UNIT=deploy/systemd/oauth-metadata-gateway.service
# API groups of CRDs: kubernetes-validate has no schema for them, they are
# checked by check_manifests.py against .ci/schemas/ instead.
CRD_API_GROUPS="monitoring.coreos.com"

# --- virtualenv ----------------------------------------------------------------
# Keyed by the requirements and the venv's own path: its scripts' #! lines
# name that path, so a target/ copied from another checkout needs a new one.
want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $ROOT/$VENV"
if [[ ! -x $VENV/bin/python || "$(cat "$VENV/.requirements.sha256" 2>/dev/null || true)" != "$want" ]]; then
    echo "==> installing validation tools into $VENV (from $REQUIREMENTS)"
    "$PYTHON" -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQUIREMENTS"
    echo "$want" >"$VENV/.requirements.sha256"
fi
export PATH="$PWD/$VENV/bin:$PATH"
PY="$VENV/bin/python"
CHECK=(".ci/check_manifests.py")

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- step runner -------------------------------------------------------------------
passed=0
failed=0
failed_steps=()
skipped=()
step() {
    local name=$1
    shift
    echo
    echo "==> $name"
    if "$@"; then
        passed=$((passed + 1))
        echo "ok: $name"
    else
        failed=$((failed + 1))
        failed_steps+=("$name")
        echo "FAILED: $name"
    fi
}

# Resource files from kustomization.yaml, split into built-in kinds and CRDs.
resource_files() { # $1 = builtin | crd
    "$PY" - "$1" "$CRD_API_GROUPS" <<'EOF'
import sys, yaml
from pathlib import Path
want, groups = sys.argv[1], set(sys.argv[2].split())
k = yaml.safe_load(Path("deploy/kubernetes/kustomization.yaml").read_text())
for name in k.get("resources") or []:
    path = Path("deploy/kubernetes") / name
    if not path.is_file():
        continue  # reported by the kustomization step
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    is_crd = any(str(d.get("apiVersion", "")).split("/")[0] in groups for d in docs)
    if (want == "crd") == is_crd:
        print(path)
EOF
}

# Runs kubernetes-validate --strict; fails on a non-zero exit and on any
# warning (e.g. "Couldn't find schema", which it does not count as an error).
kube_validate() { # $1 = version, rest = files
    local version=$1 out rc=0
    shift
    out=$(kubernetes-validate --strict -k "$version" "$@" 2>&1) || rc=$?
    printf '%s\n' "$out"
    if [[ $rc -ne 0 ]]; then
        return 1
    fi
    if grep -qE '^(WARN|ERROR)' <<<"$out"; then
        echo "kubernetes-validate printed warnings: treated as failure"
        return 1
    fi
    # Every document must have been validated against a real schema.
    if ! grep -q 'passed for resource' <<<"$out"; then
        echo "kubernetes-validate validated nothing"
        return 1
    fi
}

# --- steps ---------------------------------------------------------------------------
yaml_lint() {
    yamllint --strict -d '{extends: default, rules: {document-start: disable, line-length: {max: 120}, truthy: {check-keys: false}}}' \
        "$K8S_DIR" .ci/schemas
}

k8s_schemas() {
    local files v ok=0
    mapfile -t files < <(resource_files builtin)
    if [[ ${#files[@]} -eq 0 ]]; then
        echo "no built-in resources found"
        return 1
    fi
    for v in $K8S_VERSIONS; do
        kube_validate "$v" "${files[@]}" || ok=1
    done
    return $ok
}

crd_listing() {
    local files
    mapfile -t files < <(resource_files crd)
    echo "CRD manifests (no Kubernetes schema; checked against .ci/schemas/ in the next step): ${files[*]:-none}"
    [[ "${files[*]}" == "$K8S_DIR/servicemonitor.yaml" ]] || {
        echo "expected exactly $K8S_DIR/servicemonitor.yaml; add a schema and a check for any new CRD"
        return 1
    }
}

kustomize_render() {
    if ! command -v kubectl >/dev/null 2>&1; then
        echo "SKIP: kubectl not installed; the kustomize-free checks above still ran"
        skipped+=("kubectl kustomize render")
        return 0
    fi
    timeout 120 kubectl kustomize "$K8S_DIR" >"$TMP/rendered.yaml" || return 1
    # Validate the rendered built-in objects (labels/images applied by kustomize).
    "$PY" - "$TMP/rendered.yaml" "$TMP/rendered-builtin.yaml" "$CRD_API_GROUPS" <<'EOF' || return 1
import sys, yaml
src, dst, groups = sys.argv[1], sys.argv[2], set(sys.argv[3].split())
docs = [d for d in yaml.safe_load_all(open(src)) if d]
kinds = sorted(d["kind"] for d in docs)
print("rendered:", ", ".join(kinds))
builtin = [d for d in docs if d["apiVersion"].split("/")[0] not in groups]
yaml.safe_dump_all(builtin, open(dst, "w"))
for d in docs:
    labels = d["metadata"].get("labels") or {}
    assert labels.get("app.kubernetes.io/name") == "oauth-metadata-gateway", d["kind"]
    assert "namespace" not in d["metadata"], d["kind"]
dep = next(d for d in docs if d["kind"] == "Deployment")
assert dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"] == "oauth-metadata-gateway"
print("rendered objects carry the common label and no namespace")
EOF
    local v ok=0
    for v in $K8S_VERSIONS; do
        kube_validate "$v" "$TMP/rendered-builtin.yaml" || ok=1
    done
    return $ok
}

negative_controls() {
    local ok=0 out
    # kubernetes-validate --strict must reject an unknown field and a bad type.
    sed 's/readOnlyRootFilesystem: true/readOnlyRootFilesysten: true/' "$K8S_DIR/deployment.yaml" >"$TMP/bad-field.yaml"
    sed 's/^  replicas: 2/  replicas: two/' "$K8S_DIR/deployment.yaml" >"$TMP/bad-type.yaml"
    for f in "$TMP/bad-field.yaml" "$TMP/bad-type.yaml"; do
        if cmp -s "$f" "$K8S_DIR/deployment.yaml"; then
            echo "negative control $(basename "$f") did not mutate the Deployment: update the sed pattern"
            ok=1
        elif kubernetes-validate --strict -k "${K8S_VERSIONS%% *}" --quiet "$f" >/dev/null 2>&1; then
            echo "kubernetes-validate accepted a broken Deployment ($(basename "$f"))"
            ok=1
        else
            echo "kubernetes-validate rejects a broken Deployment ($(basename "$f")): good"
        fi
    done
    # systemd-analyze verify only warns on an unknown directive: we rely on
    # treating any output as a failure, so make sure it does print one.
    if command -v systemd-analyze >/dev/null 2>&1; then
        mkdir -p "$TMP/unit-bad"
        sed -e 's|^ExecStart=.*|ExecStart=/bin/true|' -e 's/^LockPersonality=yes/LockPersonalty=yes/' \
            "$UNIT" >"$TMP/unit-bad/oauth-metadata-gateway.service"
        out=$(systemd-analyze verify --man=no "$TMP/unit-bad/oauth-metadata-gateway.service" 2>&1 || true)
        if [[ -n $out ]]; then
            echo "systemd-analyze verify reports a misspelt directive: good"
        else
            echo "systemd-analyze verify said nothing about a misspelt directive"
            ok=1
        fi
    fi
    return $ok
}

dockerfile_checks() {
    local ok=0
    hadolint --failure-threshold info Dockerfile || ok=1
    "$PY" "${CHECK[@]}" dockerfile || ok=1
    # The dependency-caching stub generator must run under POSIX sh against
    # the real manifest (the image builds with dash + mawk, as Debian does).
    mkdir -p "$TMP/stub"
    cp Cargo.toml "$TMP/stub/"
    if (cd "$TMP/stub" && sh "$ROOT/deploy/docker/stub-targets.sh" Cargo.toml) \
        && [[ -f $TMP/stub/src/main.rs && -f $TMP/stub/src/lib.rs ]]; then
        echo "deploy/docker/stub-targets.sh stubs the targets of Cargo.toml"
    else
        echo "deploy/docker/stub-targets.sh failed on Cargo.toml"
        ok=1
    fi
    return $ok
}

systemd_checks() {
    local ok=0 out exe=/bin/true
    "$PY" "${CHECK[@]}" systemd || ok=1
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        echo "SKIP: systemd-analyze not installed (Debian package systemd); only the static directive checks ran"
        skipped+=("systemd-analyze verify")
        [[ $REQUIRE_SYSTEMD_ANALYZE == 1 ]] && ok=1
        return $ok
    fi
    # verify insists that ExecStart's program exists: point it at the built
    # binary when there is one, else at /bin/true (the unit's syntax and
    # directives are what is checked here, not the binary).
    if [[ -x target/release/oauth-metadata-gateway ]]; then
        exe="$PWD/target/release/oauth-metadata-gateway"
    fi
    mkdir -p "$TMP/unit"
    sed "s|^ExecStart=/usr/local/bin/oauth-metadata-gateway|ExecStart=$exe|" "$UNIT" \
        >"$TMP/unit/oauth-metadata-gateway.service"
    echo "systemd-analyze verify (ExecStart -> $exe)"
    out=$(systemd-analyze verify --man=no "$TMP/unit/oauth-metadata-gateway.service" 2>&1) || ok=1
    if [[ -n $out ]]; then
        printf '%s\n' "$out"
        echo "systemd-analyze verify printed diagnostics: treated as failure"
        ok=1
    fi
    # Exposure score 0.0 (locked down) .. 10.0; --threshold is in tenths.
    if systemd-analyze security --offline=true --threshold=20 "$TMP/unit/oauth-metadata-gateway.service" \
        >"$TMP/security.txt" 2>&1; then
        grep 'Overall exposure level' "$TMP/security.txt" || true
    else
        cat "$TMP/security.txt"
        echo "systemd-analyze security: exposure above 2.0"
        ok=1
    fi
    return $ok
}

shell_lint() {
    # Every shell script in the repository: CI never runs the benchmark
    # scripts, so this is what keeps them from rotting.
    shellcheck .ci/run .ci/test .ci/*.sh benches/*.sh && shellcheck -s sh deploy/docker/stub-targets.sh
}

step "yamllint deploy/kubernetes" yaml_lint
step "kustomization: listed files exist, labels, no namespace" "$PY" "${CHECK[@]}" kustomization
step "kubernetes-validate --strict (Kubernetes $K8S_VERSIONS)" k8s_schemas
step "CRD manifests identified" crd_listing
step "ServiceMonitor against .ci/schemas/servicemonitor.schema.json (+ broken copies rejected)" "$PY" "${CHECK[@]}" servicemonitor
step "cross-resource consistency and policy" "$PY" "${CHECK[@]}" consistency
step "kubectl kustomize render + validate" kustomize_render
step "negative controls (validators reject broken input)" negative_controls
step "Dockerfile (hadolint + invariants)" dockerfile_checks
step "systemd unit (directives, verify, security)" systemd_checks
step "shellcheck (.ci, benches, deploy scripts)" shell_lint

echo
if [[ ${#skipped[@]} -gt 0 ]]; then
    echo "skipped: ${skipped[*]}"
fi
if [[ $failed -gt 0 ]]; then
    echo "failed steps: ${failed_steps[*]}"
fi
echo "validate-manifests: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
