#!/usr/bin/env bash
# Builds the Python task into a component: componentize-py (pinned in .ci/run) against the
# WIT contract, with the helper package from sdk/python on the module path.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
out="${1:-$root/target/guests/lang/user_report_py.wasm}"
mkdir -p "$(dirname "$out")"
"${COMPONENTIZE_PY:-componentize-py}" -d "$root/sdk/wit" -w task componentize \
  -p "$root/sdk/python" -p "$here" app -o "$out"
