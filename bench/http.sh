#!/usr/bin/env bash
# HTTP benchmark of the credential read path, quoted as a ratio to a bare hyper server measured
# in the same run (machines here are noisy; ratios are what carries over). The two targets are
# measured in alternating rounds and the median round's ratio is the figure: back-to-back runs of
# the same target on these VMs differ by up to 20 %, so one pair of runs proves little.
#
#   bash bench/http.sh            # 1,000 apps, 64 connections, 7 rounds of 5 s per target
#   APPS=100 ROUNDS=3 DURATION=3s bash bench/http.sh
#
# The server runs with its default log level (info), as in production.
# Needs wrk (apt-get install -y wrk). Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."

APPS=${APPS:-1000}
DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-7}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
SIM_ADDR=127.0.0.1:18101
HUB_ADDR=127.0.0.1:18102
BARE_ADDR=127.0.0.1:18103

command -v wrk >/dev/null || { echo "error: wrk is not installed (apt-get install -y wrk)" >&2; exit 1; }
cargo build --release -q -p wechat-sim -p wxcentral --bins
cargo build --release -q -p wxcentral --example bare_hyper
T=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

appid() { printf 'wxbench%011d' "$1"; }
key="bench-client-key-$(date +%s%N)"

for i in $(seq 0 $((APPS - 1))); do
  printf '[[app]]\nappid = "%s"\nsecret = "bench-secret-%d"\n\n' "$(appid "$i")" "$i"
done >"$work/sim.toml"
{
  printf '[server]\nlisten = "%s"\n\n[store]\nkind = "sqlite"\npath = "%s/wxcentral.db"\n\n' "$HUB_ADDR" "$work"
  printf '[upstream]\nbase_url = "http://%s"\nmax_concurrency = 32\nmax_per_second = 2000\n\n' "$SIM_ADDR"
  for i in $(seq 0 $((APPS - 1))); do
    printf '[[app]]\nappid = "%s"\nsecret = "bench-secret-%d"\ntickets = ["jsapi"]\n\n' "$(appid "$i")" "$i"
  done
  printf '[[client]]\nname = "bench"\nkey_sha256 = "%s"\napps = ["*"]\n' "$($T/wxcentral hash-key "$key")"
} >"$work/wxcentral.toml"

wait_http() { for _ in $(seq 1 200); do curl -sf -o /dev/null "$1" && return 0; sleep 0.05; done; echo "error: $1 did not come up" >&2; exit 1; }

RUST_LOG=warn $T/wechat-sim --listen "$SIM_ADDR" --config "$work/sim.toml" 2>"$work/sim.log" & pids+=($!)
wait_http "http://$SIM_ADDR/__sim/calls"
$T/wxcentral serve --config "$work/wxcentral.toml" 2>"$work/hub.log" & hub=$!; pids+=($hub)
wait_http "http://$HUB_ADDR/readyz"

# Every app's token and ticket fetched once, so memory and reads see the steady state. A cold
# start fetches 2,000 credentials at once, so a first read may see 503 with Retry-After: retry.
for i in $(seq 0 $((APPS - 1))); do
  curl -sf --retry 10 --retry-delay 1 -o /dev/null -H "Authorization: Bearer $key" \
    "http://$HUB_ADDR/v1/apps/$(appid "$i")/jsapi_ticket" || { echo "error: warm-up read of app $i failed" >&2; exit 1; }
done
rss_kib=$(awk '/VmRSS/ {print $2}' /proc/$hub/status)

url="http://$HUB_ADDR/v1/apps/$(appid 0)/access_token"
# The baseline answers exactly the JSON wxcentral answers.
curl -sf -H "Authorization: Bearer $key" "$url" >"$work/body.json"
$T/examples/bare_hyper "$BARE_ADDR" "$work/body.json" 2>/dev/null & pids+=($!)
wait_http "http://$BARE_ADDR/"

run() { wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@"; }
rps() { awk '/Requests\/sec/ {print $2}' <<<"$1"; }
p99() { awk '$1 == "99%" {print $2}' <<<"$1"; }
p50() { awk '$1 == "50%" {print $2}' <<<"$1"; }
errors() { awk '/Non-2xx|Socket errors/ {print}' <<<"$1"; }

rounds=()
errs=""
for r in $(seq 1 "$ROUNDS"); do
  hub_out=$(run -H "Authorization: Bearer $key" "$url")
  bare_out=$(run "http://$BARE_ADDR/v1/apps/$(appid 0)/access_token")
  ratio=$(awk -v a="$(rps "$hub_out")" -v b="$(rps "$bare_out")" 'BEGIN {printf "%.3f", a / b}')
  rounds+=("$ratio $(rps "$hub_out") $(p50 "$hub_out") $(p99 "$hub_out") $(rps "$bare_out") $(p50 "$bare_out") $(p99 "$bare_out")")
  e=$(errors "$hub_out"); [ -z "$e" ] || errs="$errs round $r: $e;"
done
# No /metrics scrape has happened: memory after the load shows that nothing piles up per request.
rss_after_kib=$(awk '/VmRSS/ {print $2}' /proc/$hub/status)
hwm_kib=$(awk '/VmHWM/ {print $2}' /proc/$hub/status)
served=$(curl -sf "http://$HUB_ADDR/metrics" | awk '/^wxcentral_http_requests_total\{.*route="\/v1\/apps\/\{appid\}\/\{kind\}".*status="200"/ {s += $2} END {printf "%d", s}')

echo "| round | ratio | wxcentral req/s | p50 | p99 | bare hyper req/s | p50 | p99 |"
echo "|---|---|---|---|---|---|---|---|"
i=0
for row in "${rounds[@]}"; do
  i=$((i + 1))
  read -r ra hr h50 h99 br b50 b99 <<<"$row"
  echo "| $i | $ra | $hr | $h50 | $h99 | $br | $b50 | $b99 |"
done
median=$(printf '%s\n' "${rounds[@]}" | awk '{print $1}' | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
echo
echo "median throughput ratio wxcentral / bare hyper: **$median** over $ROUNDS alternating rounds (wrk -t$THREADS -c$CONNS -d$DURATION each, $(nproc) cores shared by wrk and the servers)"
echo "memory with $APPS apps configured, each with access_token and jsapi_ticket held: RSS $((rss_kib / 1024)) MiB before the load, $((rss_after_kib / 1024)) MiB after $served reads without a scrape (peak $((hwm_kib / 1024)) MiB)"
[ -z "$errs" ] || echo "wxcentral errors:$errs"
