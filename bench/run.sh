#!/usr/bin/env bash
# Loads one bare upstream three ways in one run and prints the figures side
# by side: directly, through nginx (proxy_pass with upstream keepalive), and
# through countersign (allow path: the shipped payments policy decides every
# call and two durable records are written per call).
#
#   bench/run.sh [DURATION] [CONNECTIONS...]      e.g. bench/run.sh 10s 4 32
#
# Needs nginx and wrk (apt-get install nginx wrk). Loopback only; every
# process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
shift || true
CONNECTIONS=("${@:-4}")
[ ${#CONNECTIONS[@]} -eq 0 ] && CONNECTIONS=(4)

for tool in nginx wrk; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing; install it with: apt-get install nginx wrk" >&2; exit 1; }
done

cargo build --release --quiet --bin countersign --example payments-api
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

export BENCH_REVIEWER_KEY="whsec_$(head -c 24 /dev/urandom | base64)"
UP=127.0.0.1:18081; NGINX=127.0.0.1:18082; CS=127.0.0.1:18083; CS_ADMIN=127.0.0.1:19903
CS_VM=127.0.0.1:18084; CS_VM_ADMIN=127.0.0.1:19904

PAYMENTS_QUIET=1 target/release/examples/payments-api "$UP" >/dev/null &
PIDS+=($!)

mkdir -p "$WORK/nginx/logs"
cat > "$WORK/nginx/nginx.conf" <<NGINX
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  upstream payments { server $UP; keepalive 64; }
  server {
    listen $NGINX;
    location / {
      proxy_pass http://payments;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
PIDS+=($!)

# countersign twice: the default engine choice (auto), and the regorus VM
# forced on, to show what the fail-closed default costs.
start_countersign() { # name listen admin engine
  mkdir -p "$WORK/$1"
  cp -r examples/payments/policies "$WORK/$1/policies"
  cat > "$WORK/$1/countersign.yaml" <<YAML
listen: $2
admin: { listen: $3 }
routes:
  - { name: payments, match: { path_prefix: /v1 }, upstream: "http://$UP" }
policy: { dir: policies, engine: $4 }
reviewers:
  alice: { key_env: BENCH_REVIEWER_KEY, groups: [finance-approvers] }
  bob: { key_env: BENCH_REVIEWER_KEY, groups: [finance-approvers] }
audit: { store: "sqlite://audit.db" }
log: { level: error }
YAML
  target/release/countersign serve --config "$WORK/$1/countersign.yaml" 2>"$WORK/$1/log" &
  PIDS+=($!)
  for _ in $(seq 100); do curl -fs -o /dev/null "http://$3/healthz" && return 0; sleep 0.1; done
  echo "bench: countersign ($1) did not start:" >&2; cat "$WORK/$1/log" >&2; exit 1
}
start_countersign cs "$CS" "$CS_ADMIN" auto
start_countersign cs-vm "$CS_VM" "$CS_VM_ADMIN" vm
for _ in $(seq 100); do curl -fs -o /dev/null "http://$NGINX/v1/balance" && curl -fs -o /dev/null "http://$UP/v1/balance" && break; sleep 0.1; done

# The agent's call: a small payout with its invoice, allowed by the policy.
cat > "$WORK/payout.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"amount": 250, "currency": "EUR", "to": "ACME GmbH"}'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-agent-id"] = "bench-agent"
wrk.headers["x-agent-on-behalf-of"] = "carol"
wrk.headers["x-evidence-invoice"] = "INV-118"
LUA

run() { # name addr connections
  local out
  out=$(wrk -t2 -c"$3" -d"$DURATION" --latency -s "$WORK/payout.lua" "http://$2/v1/payouts")
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf "%-14s %5s %12s %10s %10s %8s\n" "$1" "$3" "$rps" "$p50" "$p99" "${non2xx:-0}"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); duration $DURATION per row"
engine() { curl -fs "http://$1/readyz" | sed -E 's/.*"engine":"([a-z]+)".*/\1/'; }
echo "countersign: policy engine $(engine "$CS_ADMIN"); countersign-vm: policy engine $(engine "$CS_VM_ADMIN")"
printf "%-14s %5s %12s %10s %10s %8s\n" target conns "requests/s" p50 p99 non-2xx
for c in "${CONNECTIONS[@]}"; do
  run direct "$UP" "$c"
  run nginx "$NGINX" "$c"
  run countersign "$CS" "$c"
  run countersign-vm "$CS_VM" "$c"
done
mean() { curl -fs "http://$1/metrics" | awk -v m="$2" '$1==m"_sum" {s=$2} $1==m"_count" {n=$2} END {if (n) printf "%.0f", s/n*1e6; else print "-"}'; }
count() { curl -fs "http://$1/metrics" | awk -v m="$2" '$1==m {print $2}'; }
for pair in "countersign $CS_ADMIN" "countersign-vm $CS_VM_ADMIN"; do
  set -- $pair
  echo "$1: $(count "$2" countersign_record_commit_seconds_count) record commits for $(curl -fs "http://$2/metrics" | awk '/^countersign_decisions_total/ {s+=$2} END {print s}') calls;" \
    "mean µs: policy $(mean "$2" countersign_policy_eval_seconds), commit $(mean "$2" countersign_record_commit_seconds), upstream $(mean "$2" countersign_upstream_seconds)"
done
