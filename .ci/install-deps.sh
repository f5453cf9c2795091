#!/usr/bin/env bash
# Installs the system tools the test suite drives, when they are missing:
#   promtool + prometheus (Debian package `prometheus`): alert-rule tests,
#     `promtool check metrics` and the end-to-end Prometheus test.
#   python3 venv support: .ci/validate-manifests.sh builds a virtualenv.
# Needs root (or sudo) only when something is missing. Safe to run again.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
mapfile -t pkgs < <(printf '%s\n' "${need[@]}" | sort -u)
echo "==> installing Debian packages: ${pkgs[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "error: missing ${pkgs[*]} and not root; install them with apt-get" >&2
        exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
for tool in promtool prometheus; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is still not on PATH after installing ${pkgs[*]}" >&2
        exit 1
    fi
done
# Debian's package may start a prometheus service; the tests start their own
# on an ephemeral port, so it is only stopped to save resources.
if command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl stop prometheus >/dev/null 2>&1 || true
fi
