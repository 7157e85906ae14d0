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

cargo build -q -p wxcentral --bin wxcentral
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
target/debug/wxcentral sandbox --listen "127.0.0.1:$port" --data "$work/data" >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do grep -q "client key" "$work/out" 2>/dev/null && break; sleep 0.05; done
key=$(awk '/client key/ {print $3}' "$work/out")
[ -n "$key" ] || { echo "error: the sandbox did not start" >&2; cat "$work/err" >&2; exit 1; }

"$venv/bin/st" run "http://127.0.0.1:$port/openapi.json" --checks all -H "Authorization: Bearer $key" \
  --seed "${ST_SEED:-20261202}" --no-color
