#!/usr/bin/env bash
# Every program in crates/wxcentral-client/examples, run against a fresh `wxcentral sandbox`
# (issue 12: the SDK's examples must work against the sandbox a newcomer starts). Each example
# exits non-zero on its first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p wxcentral --bin wxcentral
cargo build -q -p wxcentral-client --examples
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
target/debug/wxcentral sandbox --listen "127.0.0.1:$port" --data "$work/data" >"$work/out" 2>"$work/err" &
pid=$!
trap 'kill "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do grep -q "client key" "$work/out" 2>/dev/null && break; sleep 0.05; done
key=$(awk '/client key/ {print $3}' "$work/out")
[ -n "$key" ] || { echo "error: the sandbox did not start" >&2; cat "$work/err" >&2; exit 1; }

for src in crates/wxcentral-client/examples/*.rs; do
  name=$(basename "$src" .rs)
  echo "example $name"
  WXCENTRAL_URL="http://127.0.0.1:$port" WXCENTRAL_KEY="$key" "target/debug/examples/$name" >"$work/$name.out" 2>&1 || {
    echo "error: example $name failed against the sandbox:" >&2; cat "$work/$name.out" >&2; exit 1;
  }
done
