#!/usr/bin/env bash
# The token-injecting proxy against nginx `proxy_pass` (Debian's nginx) to the same simulator
# endpoint, as a throughput ratio measured in alternating rounds of one run (these machines are
# noisy; ratios are what carries over; the order within a round flips every round), and the latency each adds to calling the simulator
# directly; a bare hyper proxy (examples/bare_proxy.rs) runs beside them to show what of the cost is
# the Rust HTTP stack's. First, 50 MiB uploaded and downloaded through the hub, with its memory before and
# after (peak included): the bodies stream, so the peak must not grow by anything like 50 MiB.
#
#   bash bench/proxy.sh                         # 7 rounds of 5 s per target, 64 connections
#   ROUNDS=3 DURATION=3s bash bench/proxy.sh
#   BARE_RUNTIME=per-core bash bench/proxy.sh   # the bare proxy on the hub's per-core workers
#
# Needs wrk, nginx, curl and python3 (apt-get install -y wrk nginx curl). Everything listens on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5s}
ROUNDS=${ROUNDS:-7}
CONNS=${CONNS:-64}
THREADS=${THREADS:-2}
# The bare proxy's runtime: tokio's multi-threaded one, or `per-core` (the hub's connection workers).
BARE_RUNTIME=${BARE_RUNTIME:-multi-thread}
SIM_ADDR=127.0.0.1:18111
HUB_ADDR=127.0.0.1:18112
NGINX_ADDR=127.0.0.1:18113
BARE_ADDR=127.0.0.1:18114
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

command -v wrk >/dev/null || { echo "error: wrk is not installed (apt-get install -y wrk)" >&2; exit 1; }
[ -x "$NGINX" ] || { echo "error: nginx is not installed (apt-get install -y nginx)" >&2; exit 1; }
cargo build --release -q -p wechat-sim -p wxcentral --bins
cargo build --release -q -p wxcentral --example bare_proxy
T=target/release
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

appid=wxproxybench000001
key="bench-client-key-$(date +%s%N)"
printf '[[app]]\nappid = "%s"\nsecret = "bench-secret"\n' "$appid" >"$work/sim.toml"
{
  printf '[server]\nlisten = "%s"\n\n[store]\nkind = "sqlite"\npath = "%s/wxcentral.db"\n\n' "$HUB_ADDR" "$work"
  printf '[upstream]\nbase_url = "http://%s"\n\n' "$SIM_ADDR"
  printf '[[app]]\nappid = "%s"\nsecret = "bench-secret"\ntoken_api = "classic"\n\n' "$appid"
  printf '[[client]]\nname = "bench"\nkey_sha256 = "%s"\napps = ["*"]\n' "$($T/wxcentral hash-key "$key")"
} >"$work/wxcentral.toml"
mkdir -p "$work/nginx/logs"
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes auto;
error_log $work/nginx/logs/error.log warn;
pid $work/nginx/nginx.pid;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  upstream sim { server $SIM_ADDR; keepalive 64; }
  server {
    listen $NGINX_ADDR;
    location / {
      proxy_pass http://sim;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
CONF

wait_http() { for _ in $(seq 1 200); do curl -s -o /dev/null "$1" && return 0; sleep 0.05; done; echo "error: $1 did not come up" >&2; exit 1; }

RUST_LOG=warn $T/wechat-sim --listen "$SIM_ADDR" --config "$work/sim.toml" 2>"$work/sim.log" & pids+=($!)
wait_http "http://$SIM_ADDR/__sim/calls"
$T/wxcentral serve --config "$work/wxcentral.toml" 2>"$work/hub.log" & hub=$!; pids+=($hub)
wait_http "http://$HUB_ADDR/readyz"
"$NGINX" -p "$work/nginx" -c "$work/nginx/nginx.conf" -g 'daemon off;' & pids+=($!)
wait_http "http://$NGINX_ADDR/"
$T/examples/bare_proxy "$BARE_ADDR" "http://$SIM_ADDR" "$BARE_RUNTIME" 2>/dev/null & pids+=($!)
wait_http "http://$BARE_ADDR/"

token=$(curl -sf --retry 10 --retry-delay 1 "http://$HUB_ADDR/cgi-bin/token?grant_type=client_credential&appid=$appid&secret=$key" | sed 's/.*"access_token":"\([^"]*\)".*/\1/')
[ -n "$token" ] || { echo "error: no token from the hub" >&2; exit 1; }
path="/cgi-bin/get_api_domain_ip?access_token=$token"
for base in "http://$SIM_ADDR" "http://$HUB_ADDR" "http://$NGINX_ADDR"; do
  curl -sf "$base$path" | grep -q ip_list || { echo "error: $base$path does not answer ip_list" >&2; exit 1; }
done

# 50 MiB each way through the hub.
len=$((50 << 20))
head -c "$len" /dev/urandom >"$work/upload.bin"
rss_before=$(awk '/VmRSS/ {print $2}' /proc/$hub/status)
up=$(curl -sf -X POST -T "$work/upload.bin" -H 'Content-Type: application/octet-stream' \
  "http://$HUB_ADDR/cgi-bin/media/upload?access_token=$token&type=video")
want="m${len}_$(sha256sum "$work/upload.bin" | cut -d' ' -f1)"
grep -q "\"media_id\":\"$want\"" <<<"$up" || { echo "error: upload answered $up, wanted $want" >&2; exit 1; }
got=$(curl -sf "http://$HUB_ADDR/cgi-bin/media/get?access_token=$token&media_id=$want" | wc -c)
[ "$got" = "$len" ] || { echo "error: downloaded $got bytes of $len" >&2; exit 1; }
rss_after=$(awk '/VmRSS/ {print $2}' /proc/$hub/status)
hwm=$(awk '/VmHWM/ {print $2}' /proc/$hub/status)

run() { wrk -t"$THREADS" -c"$CONNS" -d"$DURATION" --latency "$@"; }
rps() { awk '/Requests\/sec/ {print $2}' <<<"$1"; }
lat() { awk -v q="$2" '$1 == q {v = $2; if (v ~ /us$/) {sub(/us$/, "", v); v /= 1000} else if (v ~ /ms$/) {sub(/ms$/, "", v)} else if (v ~ /s$/) {sub(/s$/, "", v); v *= 1000}; printf "%.3f", v}' <<<"$1"; }
errors() { awk '/Non-2xx|Socket errors/ {print}' <<<"$1"; }

rounds=()
errs=""
for r in $(seq 1 "$ROUNDS"); do
  # Odd rounds run hub, nginx, direct, bare; even rounds the reverse, so whatever drifts during
  # a round (other tenants, clocks, the simulator's state) favours no target.
  if [ $((r % 2)) -eq 1 ]; then
    hub_out=$(run "http://$HUB_ADDR$path")
    nginx_out=$(run "http://$NGINX_ADDR$path")
    direct_out=$(run "http://$SIM_ADDR$path")
    bare_out=$(run "http://$BARE_ADDR$path")
  else
    bare_out=$(run "http://$BARE_ADDR$path")
    direct_out=$(run "http://$SIM_ADDR$path")
    nginx_out=$(run "http://$NGINX_ADDR$path")
    hub_out=$(run "http://$HUB_ADDR$path")
  fi
  ratio=$(awk -v a="$(rps "$hub_out")" -v b="$(rps "$nginx_out")" 'BEGIN {printf "%.3f", a / b}')
  bratio=$(awk -v a="$(rps "$bare_out")" -v b="$(rps "$nginx_out")" 'BEGIN {printf "%.3f", a / b}')
  rounds+=("$ratio $(rps "$hub_out") $(lat "$hub_out" 50%) $(lat "$hub_out" 99%) $(rps "$nginx_out") $(lat "$nginx_out" 50%) $(lat "$nginx_out" 99%) $(rps "$direct_out") $(lat "$direct_out" 50%) $(lat "$direct_out" 99%) $bratio $(rps "$bare_out")")
  for t in hub nginx direct bare; do
    o="${t}_out"; e=$(errors "${!o}"); [ -z "$e" ] || errs="$errs round $r $t: $e;"
  done
done
token_calls=$(curl -sf "http://$SIM_ADDR/__sim/calls" | python3 -c 'import json, sys; print(sum(c["count"] for c in json.load(sys.stdin)["calls"] if c["endpoint"] == "/cgi-bin/token"))')

echo "| round | ratio hub/nginx | hub req/s | p50 ms | p99 ms | nginx req/s | p50 ms | p99 ms | direct req/s | p50 ms | p99 ms | ratio bare/nginx | bare proxy req/s |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
i=0
for row in "${rounds[@]}"; do
  i=$((i + 1))
  echo "| $i | $(tr ' ' '|' <<<"$row" | sed 's/|/ | /g') |"
done
median() { printf '%s\n' "${rounds[@]}" | awk -v c="$1" '{print $c}' | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
echo
echo "median throughput ratio hub / nginx proxy_pass: **$(median 1)** over $ROUNDS alternating rounds (wrk -t$THREADS -c$CONNS -d$DURATION each, $(nproc) cores shared by wrk, the proxy and the simulator)"
total() { printf '%s\n' "${rounds[@]}" | awk -v a="$1" -v b="$2" '{x += $a; y += $b} END {printf "%.3f", x / y}'; }
echo "all rounds together (total hub requests / total nginx requests): $(total 2 5)"
echo "for scale, a bare hyper proxy (examples/bare_proxy.rs, $BARE_RUNTIME runtime: no checks, no token, no metrics) / nginx: **$(median 11)**"
echo "latency added to a direct call (medians of the rounds' p50 / p99, ms): hub +$(awk -v a="$(median 3)" -v b="$(median 9)" 'BEGIN {printf "%.3f", a - b}') / +$(awk -v a="$(median 4)" -v b="$(median 10)" 'BEGIN {printf "%.3f", a - b}'), nginx +$(awk -v a="$(median 6)" -v b="$(median 9)" 'BEGIN {printf "%.3f", a - b}') / +$(awk -v a="$(median 7)" -v b="$(median 10)" 'BEGIN {printf "%.3f", a - b}')"
echo "50 MiB uploaded and 50 MiB downloaded through the hub: RSS $((rss_before / 1024)) MiB before, $((rss_after / 1024)) MiB after, peak $((hwm / 1024)) MiB"
echo "upstream token calls during the whole run: $token_calls"
[ -z "$errs" ] || echo "errors:$errs"
