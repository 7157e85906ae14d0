#!/usr/bin/env bash
# Cluster mode on Redis, two figures (results in docs/benchmarks.md):
#
# 1. Read throughput of a node on Redis against a node on SQLite, same apps, measured in
#    alternating wrk rounds in one run; the median round's ratio is the figure (goal >= 0.95:
#    reads never touch the store, so the two should be the same).
# 2. Propagation across 3 nodes on one Redis: apps with short lifetimes refresh for a while; for
#    every new value, how long after the writer installed it each other node did (both times
#    from the nodes' own log lines, microsecond stamps on one machine's clock).
#
#   bash bench/redis.sh                     # 1,000 apps, 7 rounds of 5 s; 3 nodes for 60 s
#   APPS=100 ROUNDS=3 PROPAGATION_SECS=20 bash bench/redis.sh
#
# Needs wrk and redis-server (apt-get install -y wrk redis-server). Listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

APPS=${APPS:-1000}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-7}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
PROPAGATION_APPS=${PROPAGATION_APPS:-50}
PROPAGATION_SECS=${PROPAGATION_SECS:-60}
SIM_ADDR=127.0.0.1:18201
SQLITE_ADDR=127.0.0.1:18202
REDIS_HUB_ADDR=127.0.0.1:18203
REDIS_PORT=18204
SIM2_ADDR=127.0.0.1:18205

for tool in wrk redis-server python3; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed" >&2; exit 1; }
done
cargo build --release -q -p wechat-sim -p wxcentral --bins
T=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

appid() { printf 'wxbench%011d' "$1"; }
key="bench-client-key-$(date +%s%N)"
store_key=$(head -c 32 /dev/urandom | base64)
wait_http() { for _ in $(seq 1 400); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "error: $1 did not come up" >&2; exit 1; }

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$work" --save "" --appendonly yes \
  --appendfsync always --logfile "$work/redis.log" & pids+=($!)
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done

# hub_toml ADDR STORE_TABLE NODE_ID SIM_ADDR N TOKEN_API: a node serving N apps.
hub_toml() {
  printf '[server]\nlisten = "%s"\nnode_id = "%s"\n\n[store]\n%s\nencryption_key = "%s"\n\n' "$1" "$3" "$2" "$store_key"
  printf '[upstream]\nbase_url = "http://%s"\nmax_concurrency = 32\nmax_per_second = 2000\n\n' "$4"
  for i in $(seq 0 $(($5 - 1))); do
    printf '[[app]]\nappid = "%s"\nsecret = "bench-secret-%d"\ntoken_api = "%s"\ntickets = ["jsapi"]\n\n' "$(appid "$i")" "$i" "$6"
  done
  printf '[[client]]\nname = "bench"\nkey_sha256 = "%s"\napps = ["*"]\n' "$($T/wxcentral hash-key "$key")"
}

# --- 1. read throughput, Redis node vs SQLite node ---------------------------------------------
for i in $(seq 0 $((APPS - 1))); do
  printf '[[app]]\nappid = "%s"\nsecret = "bench-secret-%d"\n\n' "$(appid "$i")" "$i"
done >"$work/sim.toml"
RUST_LOG=warn $T/wechat-sim --listen "$SIM_ADDR" --config "$work/sim.toml" 2>"$work/sim.log" & pids+=($!)
wait_http "http://$SIM_ADDR/__sim/calls"
hub_toml "$SQLITE_ADDR" "kind = \"sqlite\"
path = \"$work/wxcentral.db\"" sqlite "$SIM_ADDR" "$APPS" stable >"$work/sqlite.toml"
hub_toml "$REDIS_HUB_ADDR" "kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\"
namespace = \"bench\"" redis "$SIM_ADDR" "$APPS" stable >"$work/redis.toml"
$T/wxcentral serve --config "$work/sqlite.toml" 2>"$work/sqlite-hub.log" & pids+=($!)
$T/wxcentral serve --config "$work/redis.toml" 2>"$work/redis-hub.log" & pids+=($!)
wait_http "http://$SQLITE_ADDR/readyz"
wait_http "http://$REDIS_HUB_ADDR/readyz"
for addr in "$SQLITE_ADDR" "$REDIS_HUB_ADDR"; do
  for i in $(seq 0 $((APPS - 1))); do
    curl -sf --retry 10 --retry-delay 1 -o /dev/null -H "Authorization: Bearer $key" \
      "http://$addr/v1/apps/$(appid "$i")/jsapi_ticket" || { echo "error: warm-up read on $addr failed" >&2; exit 1; }
  done
done

run() { wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency -H "Authorization: Bearer $key" "$@"; }
rps() { awk '/Requests\/sec/ {print $2}' <<<"$1"; }
p99() { awk '$1 == "99%" {print $2}' <<<"$1"; }
errors() { awk '/Non-2xx|Socket errors/ {print}' <<<"$1"; }
path="/v1/apps/$(appid 0)/access_token"
ratios=()
errs=""
echo "round  redis req/s  sqlite req/s  ratio  p99 redis/sqlite"
for r in $(seq 1 "$ROUNDS"); do
  red=$(run "http://$REDIS_HUB_ADDR$path")
  sql=$(run "http://$SQLITE_ADDR$path")
  ratio=$(awk -v a="$(rps "$red")" -v b="$(rps "$sql")" 'BEGIN {printf "%.3f", a / b}')
  ratios+=("$ratio")
  errs+=$(errors "$red")$(errors "$sql")
  printf '%5d  %11s  %12s  %5s  %s / %s\n' "$r" "$(rps "$red")" "$(rps "$sql")" "$ratio" "$(p99 "$red")" "$(p99 "$sql")"
done
median=$(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
echo "median ratio redis/sqlite: $median over $ROUNDS rounds"
[ -z "$errs" ] || { echo "error: non-2xx or socket errors: $errs" >&2; exit 1; }

# --- 2. propagation across 3 nodes -------------------------------------------------------------
for i in $(seq 0 $((PROPAGATION_APPS - 1))); do
  printf '[[app]]\nappid = "%s"\nsecret = "bench-secret-%d"\ntoken_ttl_secs = 20\noverlap_secs = 5\n\n' "$(appid "$i")" "$i"
done >"$work/sim2.toml"
RUST_LOG=warn $T/wechat-sim --listen "$SIM2_ADDR" --config "$work/sim2.toml" 2>"$work/sim2.log" & pids+=($!)
wait_http "http://$SIM2_ADDR/__sim/calls"
for n in 0 1 2; do
  hub_toml "127.0.0.1:$((18210 + n))" "kind = \"redis\"
url = \"redis://127.0.0.1:$REDIS_PORT\"
namespace = \"propagation\"" "node-$n" "$SIM2_ADDR" "$PROPAGATION_APPS" classic >"$work/node$n.toml"
  printf '\n[refresh]\ntoken_overlap_secs = 5\n' >>"$work/node$n.toml"
  RUST_LOG=info $T/wxcentral serve --config "$work/node$n.toml" 2>"$work/node$n.log" & pids+=($!)
done
for n in 0 1 2; do wait_http "http://127.0.0.1:$((18210 + n))/readyz"; done
echo "3 nodes, $PROPAGATION_APPS apps (token and ticket, 20 s lifetimes), ${PROPAGATION_SECS} s ..."
sleep "$PROPAGATION_SECS"
python3 - "$work"/node0.log "$work"/node1.log "$work"/node2.log <<'EOF'
import re, sys
stamp = re.compile(r'^(\d{4}-\d\d-\d\dT(\d\d):(\d\d):(\d\d\.\d+)Z)')
field = lambda name, line: (re.search(name + r'="?([^" ]+)', line) or [None, None])[1]
written, adopted = {}, {}
for node, path in enumerate(sys.argv[1:]):
    for line in open(path, errors='replace'):
        m = stamp.match(line)
        if not m or ('credential refreshed' not in line and 'adopted a newer value' not in line):
            continue
        t = int(m[2]) * 3600 + int(m[3]) * 60 + float(m[4])
        key = (field('appid', line), field('kind', line), field('version', line))
        if 'credential refreshed' in line:
            written[key] = t
        else:
            adopted.setdefault(key, {})[node] = t
delays = sorted((t - written[k]) * 1000 for k, nodes in adopted.items() if k in written for t in nodes.values())
if not delays:
    sys.exit('error: no propagated values found in the logs')
pct = lambda p: delays[min(len(delays) - 1, int(p / 100 * len(delays)))]
print(f'{len(written)} values written, {len(delays)} installs on other nodes')
print('propagation ms: p50 %.2f  p90 %.2f  p99 %.2f  max %.2f' % (pct(50), pct(90), pct(99), delays[-1]))
EOF
