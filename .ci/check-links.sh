#!/usr/bin/env bash
# Checks, offline, that every relative link and #anchor in the repository's
# Markdown resolves: the linked file exists and the linked heading is in it
# (remark-validate-links through remark-cli, pinned in .ci/links and
# installed there by .ci/install-deps.sh). Exits non-zero on any broken link.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

remark=.ci/links/node_modules/.bin/remark
if [ ! -x "$remark" ]; then
    echo "error: $remark is missing; run .ci/install-deps.sh (npm ci in .ci/links)" >&2
    exit 1
fi
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.md')
if [ ${#files[@]} -eq 0 ]; then
    echo "error: no Markdown files found (run from a git checkout)" >&2
    exit 1
fi
echo "==> checking links in ${#files[@]} Markdown files"
# --frail: warnings (every broken link is one) fail the run.
"$remark" --rc-path .ci/links/remarkrc.mjs --no-stdout --frail --quiet --color=false "${files[@]}"
echo "all links resolve"
