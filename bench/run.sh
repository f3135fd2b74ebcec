#!/usr/bin/env bash
# Loads one bare upstream through every peer in one run and prints the
# figures side by side:
#
#   direct            the upstream itself (the example payments API, hyper)
#   bare-proxy        a bare hyper reverse proxy (bench/bare_proxy.rs): no policy, no record
#   nginx             proxy_pass with upstream keepalive
#   countersign       the allow path: the payments policy decides every call, the
#                     `decided` record is durable (SQLite WAL, synchronous=FULL, real
#                     disk) before forwarding, the result recorded after
#   cs-before         the same with audit.result_durability: before_response
#   cs-vm             the same with policy.engine: vm (regorus's bytecode VM: what the
#                     policy's evaluation would cost on it; not safe to serve, see
#                     docs/reference.md "Engine")
#   cs-lag0           the same with audit.index_lag: 0 (the action index written
#                     with every commit, as before it was kept back)
#   cs-baseline       with BASELINE=/path/to/an/older/countersign: that build, same
#                     config (a before/after in one run; its memory is measured too)
#   cs-pg             countersign on PostgreSQL (local socket, synchronous_commit on)
#   cs-pg-x3          three countersign processes on that one PostgreSQL record,
#                     the load split evenly between them
#
# For every row: requests/s, p50, p99, non-2xx, and the proxy's CPU µs per
# call from /proc (countersign split per thread: tokio workers, policy
# threads, record writer, the rest). Then: the disk's fsync time, the CPU of
# one policy evaluation alone on each engine (tools/policy-bench), records and
# commits per call, and memory: 10,000 held calls waiting, 1,000 idle
# keep-alive connections.
#
#   bench/run.sh [DURATION] [CONNECTIONS...]      e.g. bench/run.sh 10s 4 32
#   BASELINE=/tmp/countersign-old bench/run.sh 5s 4 32
#
# Needs nginx, wrk and python3 (apt-get install nginx wrk), and PostgreSQL 15
# server binaries for the PostgreSQL rows (skipped with a note when absent).
# Loopback only; every process it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10s}
shift || true
CONNECTIONS=("${@:-4}")
[ ${#CONNECTIONS[@]} -eq 0 ] && CONNECTIONS=(4)

for tool in nginx wrk python3 curl; do
  command -v "$tool" >/dev/null || { echo "bench: $tool is missing; install it with: apt-get install nginx wrk python3 curl" >&2; exit 1; }
done

cargo build --release --quiet --bin countersign --example payments-api --example bare-proxy --example policy-bench
# The record lives on the real disk (not a tmpfs), beside the checkout.
mkdir -p target/bench
WORK=$(mktemp -d -p "$PWD/target/bench")
chmod 755 "$WORK" # the PostgreSQL server runs as its own user
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${PGBIN:-}" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

export BENCH_KEY_ALICE="whsec_$(head -c 24 /dev/urandom | base64)" BENCH_KEY_BOB="whsec_$(head -c 24 /dev/urandom | base64)"
P=${BENCH_PORT:-27000} # ports P+1 .. P+40 and P+1000 .. P+1040 on 127.0.0.1
port() { echo "127.0.0.1:$((P + $1))"; }
UP=$(port 1); NGINX=$(port 2); BARE=$(port 5)

PAYMENTS_QUIET=1 target/release/examples/payments-api "$UP" >/dev/null &
PIDS+=($!); UP_PID=$!
target/release/examples/bare-proxy "$BARE" "$UP" &
PIDS+=($!); BARE_PID=$!

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
PIDS+=($!); NGINX_PID=$!

# PostgreSQL: a throwaway cluster on a local socket, fsync and synchronous
# commit on (the defaults), as the fleet store would use it.
PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
PGDSN=""
if [ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ]; then
  mkdir -p "$WORK/pg" && chown postgres "$WORK/pg" && chmod 700 "$WORK/pg"
  runuser -u postgres -- "$PGBIN/initdb" -A trust -U postgres -D "$WORK/pg/data" >/dev/null
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/log" -w \
    -o "-p $((P + 40)) -k $WORK/pg -c listen_addresses='' -c max_connections=200" start >/dev/null
  runuser -u postgres -- psql -h "$WORK/pg" -p $((P + 40)) -U postgres -qc "CREATE DATABASE bench" >/dev/null
  PGDSN="postgres://postgres@%2F${WORK//\//%2F}%2Fpg:$((P + 40))/bench?sslmode=disable"
fi

# countersign: NAME LISTEN ADMIN [AUDIT-YAML] [POLICY-DIR] [BINARY] [POLICY-YAML-FIELDS]
start_countersign() {
  local dir="$WORK/$1" audit=${4:-} bin=${6:-target/release/countersign}
  [ -z "$audit" ] && audit='{ store: "sqlite://audit.db" }'
  mkdir -p "$dir"
  cp -r "${5:-examples/payments/policies}" "$dir/policies"
  cat > "$dir/countersign.yaml" <<YAML
listen: $2
admin: { listen: $3 }
routes:
  - { name: payments, match: { path_prefix: /v1 }, upstream: "http://$UP" }
policy: { dir: policies${7:-} }
reviewers:
  alice: { key_env: BENCH_KEY_ALICE, groups: [finance-approvers] }
  bob: { key_env: BENCH_KEY_BOB, groups: [finance-approvers] }
audit: $audit
hold: { wait: 1h }
limits: { max_connections: 20000 }
log: { level: error }
YAML
  "$bin" serve --config "$dir/countersign.yaml" 2>"$dir/log" &
  PIDS+=($!)
  eval "PID_$(tr - _ <<<"$1")=$!"
  for _ in $(seq 100); do curl -fs -o /dev/null "http://$3/healthz" && return 0; sleep 0.1; done
  echo "bench: countersign ($1) did not start:" >&2; cat "$dir/log" >&2; exit 1
}
start_countersign cs "$(port 3)" "$(port 1003)"
start_countersign cs-before "$(port 6)" "$(port 1006)" '{ store: "sqlite://audit.db", result_durability: before_response }'
start_countersign cs-lag0 "$(port 9)" "$(port 1009)" '{ store: "sqlite://audit.db", index_lag: 0 }'
start_countersign cs-vm "$(port 15)" "$(port 1015)" "" "" "" ", engine: vm"
if [ -n "${BASELINE:-}" ]; then
  start_countersign cs-baseline "$(port 4)" "$(port 1004)" "" "" "$BASELINE"
fi
if [ -n "$PGDSN" ]; then
  start_countersign cs-pg "$(port 7)" "$(port 1007)" "{ store: \"$PGDSN\" }"
  for i in 1 2 3; do
    start_countersign "cs-pg-x3-$i" "$(port $((10 + i)))" "$(port $((1010 + i)))" "{ store: \"$PGDSN\" }"
  done
fi
for _ in $(seq 100); do curl -fs -o /dev/null "http://$NGINX/v1/balance" && curl -fs -o /dev/null "http://$BARE/v1/balance" && break; sleep 0.1; done

# The agent's call: a small payout with its invoice, allowed by the policy.
cat > "$WORK/payout.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"amount": 250, "currency": "EUR", "to": "ACME GmbH"}'
wrk.headers["content-type"] = "application/json"
wrk.headers["x-agent-id"] = "bench-agent"
wrk.headers["x-agent-on-behalf-of"] = "carol"
wrk.headers["x-evidence-invoice"] = "INV-118"
LUA

HZ=$(getconf CLK_TCK)
us_per_call() { awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN { if (n > 0) printf "%.0f", t * 1e6 / hz / n; else print "-" }'; }

# CPU ticks of the proxy processes, as "total workers policy writer"
# (countersign's threads by name; the kernel cuts names at 15 bytes).
cpu_of() { # "pids"
  local total=0 workers=0 policy=0 writer=0 p t comm n
  for p in $1; do
    for t in /proc/"$p"/task/*; do
      comm=$(cat "$t/comm" 2>/dev/null) || continue
      n=$(awk '{print $14 + $15}' "$t/stat" 2>/dev/null) || continue
      total=$((total + n))
      case "$comm" in
        tokio-r*) workers=$((workers + n)) ;; # tokio-runtime-w / tokio-rt-worker
        countersign-pol*) policy=$((policy + n)) ;;
        countersign-rec*) writer=$((writer + n)) ;;
      esac
    done
  done
  echo "$total $workers $policy $writer"
}

# wrk against ADDRS (space-separated; the connections are split between
# them, one wrk each) and prints one row; PIDS are the proxy's processes.
run() { # name "addrs" connections "pids" [split]
  local name=$1 addrs=($2) conns=$3 pids=$4 split=${5:-}
  local n=${#addrs[@]} per=$(( conns / ${#addrs[@]} )) outs=() i
  [ "$per" -lt 1 ] && per=1
  local before after
  before=($(cpu_of "$pids"))
  for i in $(seq 0 $((n - 1))); do
    wrk -t$(( n > 1 ? 1 : 2 )) -c"$per" -d"$DURATION" --latency -s "$WORK/payout.lua" "http://${addrs[$i]}/v1/payouts" > "$WORK/wrk.$i" &
    outs+=($!)
  done
  wait "${outs[@]}"
  after=($(cpu_of "$pids"))
  local reqs=0 rps=0 non2xx=0 p50 p99
  for i in $(seq 0 $((n - 1))); do
    reqs=$((reqs + $(awk '/requests in/ {print $1}' "$WORK/wrk.$i")))
    rps=$(awk -v a="$rps" -v b="$(awk '/Requests\/sec/ {print $2}' "$WORK/wrk.$i")" 'BEGIN {printf "%.0f", a + b}')
    non2xx=$((non2xx + $(awk '/Non-2xx/ {print $NF}' "$WORK/wrk.$i" || true) + 0))
  done
  p50=$(awk '$1=="50%" {print $2}' "$WORK/wrk.0"); p99=$(awk '$1=="99%" {print $2}' "$WORK/wrk.0")
  local d=() k
  for k in 0 1 2 3; do d+=($((after[k] - before[k]))); done
  local detail=""
  if [ -n "$split" ]; then
    detail="workers $(us_per_call "${d[1]}" "$reqs"), policy $(us_per_call "${d[2]}" "$reqs"), writer $(us_per_call "${d[3]}" "$reqs"), other $(us_per_call $((d[0] - d[1] - d[2] - d[3])) "$reqs")"
  fi
  printf "%-12s %5s %10s %9s %9s %7s %8s  %s\n" "$name" "$conns" "$rps" "$p50" "$p99" "$non2xx" "$(us_per_call "${d[0]}" "$reqs")" "$detail"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr); $DURATION per row; record on $(df --output=source "$WORK" | tail -1)"
engine() { curl -fs "http://$1/readyz" | sed -E 's/.*"engine":"([a-z]+)".*/\1/'; }
echo "countersign policy engine: $(engine "$(port 1003)")"
printf "%-12s %5s %10s %9s %9s %7s %8s  %s\n" target conns "req/s" p50 p99 non-2xx "cpu µs" "countersign cpu µs per call by thread"
for c in "${CONNECTIONS[@]}"; do
  run direct "$UP" "$c" "$UP_PID"
  run bare-proxy "$BARE" "$c" "$BARE_PID"
  run nginx "$NGINX" "$c" "$(pgrep -d' ' -f "nginx: worker" || echo "$NGINX_PID")"
  run countersign "$(port 3)" "$c" "$PID_cs" split
  run cs-before "$(port 6)" "$c" "$PID_cs_before" split
  run cs-lag0 "$(port 9)" "$c" "$PID_cs_lag0" split
  run cs-vm "$(port 15)" "$c" "$PID_cs_vm" split
  [ -n "${BASELINE:-}" ] && run cs-baseline "$(port 4)" "$c" "$PID_cs_baseline" split
  if [ -n "$PGDSN" ]; then
    run cs-pg "$(port 7)" "$c" "$PID_cs_pg" split
    run cs-pg-x3 "$(port 11) $(port 12) $(port 13)" "$c" "$PID_cs_pg_x3_1 $PID_cs_pg_x3_2 $PID_cs_pg_x3_3" split
  fi
done
[ -z "$PGDSN" ] && echo "(no PostgreSQL server binaries under /usr/lib/postgresql: PostgreSQL rows skipped)"

# The disk under the record: what one durable commit cannot go below.
python3 - "$WORK" <<'PY'
import os, sys, time
path = os.path.join(sys.argv[1], "fsync.probe")
fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
n, block = 200, b"x" * 4096
start = time.perf_counter()
for _ in range(n):
    os.write(fd, block)
    os.fsync(fd)
took = (time.perf_counter() - start) / n
os.close(fd)
print(f"disk: write+fsync of 4 KiB: {took * 1e6:.0f} µs mean over {n}")
PY

# The policy alone, in one thread with nothing else running: the CPU per
# call no change to the proxy or the record can take below.
target/release/examples/policy-bench | sed -n '2,$s/^/policy alone: /p'

metric() { curl -fs "http://$1/metrics" | awk -v m="$2" '$1==m {print $2}'; }
mean_us() { curl -fs "http://$1/metrics" | awk -v m="$2" '$1==m"_sum" {s=$2} $1==m"_count" {n=$2} END {if (n) printf "%.0f", s/n*1e6; else print "-"}'; }
for pair in "countersign $(port 1003)" "cs-before $(port 1006)" "cs-lag0 $(port 1009)" "cs-vm $(port 1015)" ${BASELINE:+"cs-baseline $(port 1004)"} ${PGDSN:+"cs-pg $(port 1007)"}; do
  set -- $pair
  calls=$(curl -fs "http://$2/metrics" | awk '/^countersign_decisions_total/ {s+=$2} END {print s+0}')
  commits=$(metric "$2" countersign_record_commit_seconds_count)
  echo "$1: $calls calls, $commits commits ($(awk -v c="$commits" -v n="$calls" 'BEGIN {printf "%.2f", c/n}') per call); mean µs: policy $(mean_us "$2" countersign_policy_eval_seconds), commit $(mean_us "$2" countersign_record_commit_seconds), upstream $(mean_us "$2" countersign_upstream_seconds)"
done
if [ -f "$WORK/cs/audit.db" ]; then
  python3 - "$WORK/cs/audit.db" <<'PY'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
records, size = db.execute("SELECT count(*), sum(length(payload)) FROM records").fetchone()
actions = db.execute("SELECT count(*) FROM actions").fetchone()[0]
print(f"countersign record: {records / max(actions, 1):.2f} records per call, {size / max(records, 1):.0f} bytes of payload per record")
PY
fi

# Memory: 10,000 agents waiting on held calls, then 1,000 idle keep-alive
# connections, against a fresh process whose policy holds everything.
mkdir -p "$WORK/hold-policy"
cat > "$WORK/hold-policy/hold.rego" <<'REGO'
package countersign
import rego.v1
decision := {"action": "hold", "risk": "high", "reasons": ["bench"], "rules": ["bench.hold"],
  "approval": {"reviewers": ["alice"], "min": 1, "expires_in": "1h"}}
REGO
cat > "$WORK/memory.py" <<'PY'
import asyncio, resource, sys
pid, port, label = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

def rss_mb():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

async def hold_one(body):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"POST /v1/payouts HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    await w.drain()
    return r, w

async def idle_one():
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /.countersign/actions/00000000000000000000000000000000 HTTP/1.1\r\nhost: bench\r\n\r\n")
    await w.drain()
    head = await r.readuntil(b"\r\n\r\n")
    length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
    await r.readexactly(length)
    return r, w

async def main():
    # Idle keep-alive connections first, on the fresh process.
    idle0 = rss_mb()
    idle = await asyncio.gather(*(idle_one() for _ in range(1000)))
    await asyncio.sleep(1)
    kept = rss_mb()
    for _, w in idle:
        w.close()
    want = min(10_000, hard // 2 - 100)
    conns = []
    for i in range(0, want, 500):
        conns += await asyncio.gather(*(hold_one(b'{"amount": %d}' % j) for j in range(i, min(i + 500, want))))
    await asyncio.sleep(3)
    held = rss_mb()
    print(f"memory ({label}): idle {idle0:.0f} MB; 1,000 idle keep-alive connections: +{kept - idle0:.1f} MB; "
          f"{want} held calls waiting: {held:.0f} MB")
    for _, w in conns:
        w.close()

asyncio.run(main())
PY
start_countersign cs-mem "$(port 8)" "$(port 1008)" "" "$WORK/hold-policy"
python3 "$WORK/memory.py" "$PID_cs_mem" "$((P + 8))" countersign
if [ -n "${BASELINE:-}" ]; then
  kill "$PID_cs_mem"
  start_countersign cs-mem-baseline "$(port 14)" "$(port 1014)" "" "$WORK/hold-policy" "$BASELINE"
  python3 "$WORK/memory.py" "$PID_cs_mem_baseline" "$((P + 14))" cs-baseline
fi
