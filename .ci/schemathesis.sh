#!/usr/bin/env bash
# Requests generated from the sandbox's own /openapi.json, every schemathesis check on: the
# document must say exactly what the handlers enforce (a schema-valid request refused is a
# failure, and so is any 5xx). Installs its pinned schemathesis into a venv under target/.
set -euo pipefail
cd "$(dirname "$0")/.."

ST_VERSION=4.32.5
venv=target/ci-venv
if [ ! -x "$venv/bin/st" ] || ! "$venv/bin/st" --version | grep -q "$ST_VERSION"; then
  python3 -m venv "$venv" 2>/dev/null || { apt-get install -y python3-venv >/dev/null && python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q "schemathesis==$ST_VERSION"
fi

source .ci/sandbox.sh

"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" --checks all -H "Authorization: Bearer $key" \
  --seed "${ST_SEED:-20261202}" --no-color
