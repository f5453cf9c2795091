#!/usr/bin/env bash
# Installs the system tools the test suite drives, when they are missing:
#   promtool + prometheus (Debian package `prometheus`): alert-rule tests,
#     `promtool check metrics` and the end-to-end Prometheus test.
#   tinyproxy (Debian package `tinyproxy`): the real forward proxy that
#     tests/proxy.rs starts on 127.0.0.1 (CONNECT tunnels, BasicAuth).
#   python3 venv support: .ci/validate-manifests.sh builds a virtualenv.
#   node + npm (Debian packages `nodejs`, `npm`) and, with `npm ci`:
#     in tests/interop, the official MCP TypeScript SDK that tests/interop.rs
#     drives and jose, the JWT library tests/jwks.rs verifies tokens with
#     (pinned by tests/interop/package-lock.json; needs node >= 18);
#     in .ci/links, remark-cli + remark-validate-links for
#     .ci/check-links.sh (pinned by .ci/links/package-lock.json).
# Needs root (or sudo) only when something is missing. Safe to run again:
# npm ci runs in a folder only when its node_modules does not match its lock.
set -euo pipefail

need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v tinyproxy >/dev/null 2>&1 || need+=(tinyproxy)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
python3 -c 'import yaml' >/dev/null 2>&1 || need+=(python3-yaml)
command -v node >/dev/null 2>&1 || need+=(nodejs)
command -v npm >/dev/null 2>&1 || need+=(npm)

# npm_ci DIR PACKAGE WHY: `npm ci` in DIR (repository-relative) unless
# DIR/node_modules already holds PACKAGE installed from the current lock.
npm_ci() {
    local dir lock stamp want
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/$1"
    lock="$dir/package-lock.json"
    stamp="$dir/node_modules/.package-lock.sha256"
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "error: node and npm are needed for $3" >&2
        exit 1
    fi
    if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)'; then
        echo "error: node $(node --version) is too old for $3; need >= 18" >&2
        exit 1
    fi
    want="$(sha256sum "$lock" | cut -d' ' -f1)"
    if [ -f "$dir/node_modules/$2/package.json" ] \
        && [ "$(cat "$stamp" 2>/dev/null || true)" = "$want" ]; then
        return 0
    fi
    echo "==> npm ci in $1, for $3"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" >"$stamp"
}

install_node_packages() {
    npm_ci tests/interop @modelcontextprotocol/sdk "the MCP SDK interop test (tests/interop.rs) and jose (tests/jwks.rs)"
    npm_ci .ci/links remark-validate-links "the Markdown link check (.ci/check-links.sh)"
}

if [ ${#need[@]} -eq 0 ]; then
    install_node_packages
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
for tool in promtool prometheus tinyproxy; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is still not on PATH after installing ${pkgs[*]}" >&2
        exit 1
    fi
done
# Debian's packages may start prometheus and tinyproxy services; the tests
# start their own on ephemeral ports, so those are only stopped to save
# resources.
if command -v systemctl >/dev/null 2>&1; then
    $sudo systemctl stop prometheus >/dev/null 2>&1 || true
    $sudo systemctl stop tinyproxy >/dev/null 2>&1 || true
fi
install_node_packages
