# Sourced by the CI scripts that need a running sandbox: builds `wxcentral`, starts
# `wxcentral sandbox` on a free port with its data in a temporary directory, and sets `port`,
# `key` (the sandbox's client key) and `work` (removed, and the sandbox stopped, on exit).
cargo build -q -p wxcentral --bin wxcentral
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
work=$(mktemp -d)
target/debug/wxcentral sandbox --listen "127.0.0.1:$port" --data "$work/data" >"$work/out" 2>"$work/err" &
sandbox_pid=$!
trap 'kill "$sandbox_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 200); do grep -q "client key" "$work/out" 2>/dev/null && break; sleep 0.05; done
key=$(awk '/client key/ {print $3}' "$work/out")
[ -n "$key" ] || { echo "error: the sandbox did not start" >&2; cat "$work/err" >&2; exit 1; }
