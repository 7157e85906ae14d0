#!/usr/bin/env bash
# Every program in crates/wxcentral-client/examples, run against a fresh `wxcentral sandbox`
# (issue 12: the SDK's examples must work against the sandbox a newcomer starts). Each example
# exits non-zero on its first failure.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p wxcentral-client --examples
source .ci/sandbox.sh

for src in crates/wxcentral-client/examples/*.rs; do
  name=$(basename "$src" .rs)
  echo "example $name"
  WXCENTRAL_URL="http://127.0.0.1:$port" WXCENTRAL_KEY="$key" "target/debug/examples/$name" >"$work/$name.out" 2>&1 || {
    echo "error: example $name failed against the sandbox:" >&2; cat "$work/$name.out" >&2; exit 1;
  }
done
