#!/usr/bin/env bash
# Builds the JavaScript task into a component with componentize-js (pinned in
# sdk/js/package-lock.json), with no WASI features: the task imports only Warden interfaces.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$here/../.."
out="${1:-$root/target/guests/lang/user_report_js.wasm}"
mkdir -p "$(dirname "$out")"
# The helper sits next to the task, as `warden new --lang js` lays it out.
cp "$root/sdk/js/warden.js" "$here/warden.js"
"${COMPONENTIZE_JS:-$root/sdk/js/node_modules/.bin/componentize-js}" \
  --wit "$root/sdk/wit" --world-name task -d stdio random clocks http fetch-event \
  -o "$out" "$here/app.js"
