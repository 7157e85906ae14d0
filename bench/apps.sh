#!/usr/bin/env bash
# Apps at runtime at scale: N apps added through the admin API and removed again, CYCLES times,
# against a release wxcentral on SQLite (secrets sealed) and a release wechat-sim that registers
# unknown apps on their first token request. Prints time per phase and the hub's RSS.
#
#   bash bench/apps.sh                 # 10,000 apps, 200 a PUT, 4 PUTs in flight, 3 cycles
#   BATCH=1 CONC=64 bash bench/apps.sh # one app a PUT, 64 in flight
#   N=1000 CYCLES=1 bash bench/apps.sh
#
# Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
BATCH=${BATCH:-200}
CONC=${CONC:-4}
CYCLES=${CYCLES:-3}
SIM_ADDR=127.0.0.1:18111
HUB_ADDR=127.0.0.1:18112

cargo build --release -q -p wechat-sim -p wxcentral --bins
cargo build --release -q -p wxcentral --example bench_apps
T=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

key="bench-admin-key-$(date +%s%N)"
printf 'auto_register = true\n\n[[app]]\nappid = "wxfixed00000000001"\nsecret = "fixed-secret"\n' >"$work/sim.toml"
cat >"$work/wxcentral.toml" <<TOML
[server]
listen = "$HUB_ADDR"
body_limit_bytes = 1048576

[store]
kind = "sqlite"
path = "$work/wxcentral.db"
encryption_key = "$(head -c 32 /dev/urandom | base64)"

[upstream]
base_url = "http://$SIM_ADDR"
max_concurrency = 32
max_per_second = 2000

[[app]]
appid = "wxfixed00000000001"
secret = "fixed-secret"

[[client]]
name = "bench"
key_sha256 = "$($T/wxcentral hash-key "$key")"
apps = ["*"]
admin = true
TOML

wait_http() { for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "error: $1 did not come up" >&2; exit 1; }
RUST_LOG=warn $T/wechat-sim --listen "$SIM_ADDR" --config "$work/sim.toml" 2>"$work/sim.log" & pids+=($!)
wait_http "http://$SIM_ADDR/__sim/calls"
RUST_LOG=warn $T/wxcentral serve --config "$work/wxcentral.toml" 2>"$work/hub.log" & hub=$!; pids+=($hub)
wait_http "http://$HUB_ADDR/readyz"

$T/examples/bench_apps "http://$HUB_ADDR" "$key" "$hub" "$N" "$CONC" "$CYCLES" "$BATCH"
calls=$(curl -sf "http://$SIM_ADDR/__sim/calls" | python3 -c 'import json,sys; print(sum(c["count"] for c in json.load(sys.stdin)["calls"]))')
sleep 3
after=$(curl -sf "http://$SIM_ADDR/__sim/calls" | python3 -c 'import json,sys; print(sum(c["count"] for c in json.load(sys.stdin)["calls"]))')
series=$(curl -sf "http://$HUB_ADDR/metrics" | grep -c wxmass || true)
echo "upstream calls in the 3 s after the last removal: $((after - calls)); metric series naming removed apps: $series"
