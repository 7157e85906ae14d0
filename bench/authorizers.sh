#!/usr/bin/env bash
# 10,000 authorizers of one component: imported from the simulator's authorizer list into an
# empty SQLite store, then refreshed over several short lifetimes. Release builds of wechat-sim
# and wxcentral; prints time to all valid, RSS, refresh spread, peak WeChat calls in flight
# against the limiter, sampled tokens WeChat rejected, and reads of an authorizer's token as a
# ratio to a plain app's, measured in the same run.
#
#   bash bench/authorizers.sh                  # 10,000 authorizers, 120 s tokens, 360 s soak,
#                                              # 16 calls in flight at most, 50 ms per call
#   N=2000 TTL=60 SOAK=120 CONC=8 DELAY_MS=20 bash bench/authorizers.sh
#
# Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

N=${N:-10000}
TTL=${TTL:-120}
SOAK=${SOAK:-360}
CONC=${CONC:-16}
# Every api_authorizer_token call takes this long at the simulator, as WeChat's do, so calls
# overlap and the limiter's bound is actually reached (a 1 ms local answer never fills it).
DELAY_MS=${DELAY_MS:-50}
PER_SEC=${PER_SEC:-1000}
SIM_ADDR=127.0.0.1:18121
HUB_ADDR=127.0.0.1:18122
COMP=wxc0mp0nentbench1
APP=wxbenchapp00000001
AES=abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG

cargo build --release -q -p wechat-sim -p wxcentral --bins
cargo build --release -q -p wxcentral --example bench_authorizers
T=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

key="bench-admin-key-$(date +%s%N)"
cat >"$work/sim.toml" <<TOML
[[app]]
appid = "$APP"
secret = "bench-app-secret"

[[component]]
appid = "$COMP"
secret = "bench-component-secret"
token = "bench-msg-token"
encoding_aes_key = "$AES"
push_url = "http://$HUB_ADDR/callback/component/$COMP"
push_interval_secs = 600
authorizer_token_ttl_secs = $TTL
overlap_secs = $((TTL / 4))
daily_quota = 1000000
TOML
cat >"$work/wxcentral.toml" <<TOML
[server]
listen = "$HUB_ADDR"

[store]
kind = "sqlite"
path = "$work/wxcentral.db"
encryption_key = "$(head -c 32 /dev/urandom | base64)"

[upstream]
base_url = "http://$SIM_ADDR"
max_concurrency = $CONC
max_per_second = $PER_SEC

[refresh]
token_overlap_secs = $((TTL / 4))

[[app]]
appid = "$APP"
secret = "bench-app-secret"

[[component]]
appid = "$COMP"
secret = "bench-component-secret"
token = "bench-msg-token"
encoding_aes_key = "$AES"

[[client]]
name = "bench"
key_sha256 = "$($T/wxcentral hash-key "$key")"
apps = ["*"]
admin = true
TOML

wait_http() { for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "error: $1 did not come up" >&2; exit 1; }
RUST_LOG=warn $T/wechat-sim --listen "$SIM_ADDR" --config "$work/sim.toml" 2>"$work/sim.log" & pids+=($!)
wait_http "http://$SIM_ADDR/__sim/calls"
curl -sf -o /dev/null -X POST "http://$SIM_ADDR/__sim/authorizers" -H 'content-type: application/json' \
  -d "{\"component_appid\":\"$COMP\",\"count\":$N}"
curl -sf -o /dev/null -X POST "http://$SIM_ADDR/__sim/faults" -H 'content-type: application/json' \
  -d "{\"endpoint\":\"/cgi-bin/component/api_authorizer_token\",\"kind\":\"delay\",\"delay_ms\":$DELAY_MS}"
RUST_LOG=warn $T/wxcentral serve --config "$work/wxcentral.toml" 2>"$work/hub.log" & hub=$!; pids+=($hub)
wait_http "http://$HUB_ADDR/healthz"

$T/examples/bench_authorizers "http://$HUB_ADDR" "http://$SIM_ADDR" "$key" "$hub" "$COMP" "$APP" "$N" "$SOAK" "$CONC" "$DELAY_MS"
echo
echo "hub warnings/errors in the log: $(grep -cE 'WARN|ERROR' "$work/hub.log" || true)"
grep -E 'WARN|ERROR' "$work/hub.log" | sed -E 's/^[^ ]+ //' | cut -c1-160 | sort | uniq -c | sort -rn | head -5 || true
