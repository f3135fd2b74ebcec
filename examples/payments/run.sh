#!/usr/bin/env bash
# The payments story, end to end on the embedded default (SQLite):
# an AP agent pays invoices through countersign, and an auditor who was not
# there reads back what happened, why, and on what evidence.
#
#   examples/payments/run.sh
#
# Starts the example payments API on 127.0.0.1:8081 and countersign on
# 127.0.0.1:8080 (admin 127.0.0.1:9901); stops both on exit. Other ports:
#
#   PROXY_PORT=18080 ADMIN_PORT=19901 API_PORT=18081 examples/payments/run.sh
#
# The script refuses to start when a port is taken, checks that the answers
# come from the processes it started, and prints their logs on any failure.
# COUNTERSIGN_BIN and PAYMENTS_API_BIN skip the build; PAYMENTS_DATA moves the
# scratch directory (default examples/payments/data).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
PROXY_PORT=${PROXY_PORT:-8080}
ADMIN_PORT=${ADMIN_PORT:-9901}
API_PORT=${API_PORT:-8081}
DATA=${PAYMENTS_DATA:-examples/payments/data}
PROXY=http://127.0.0.1:$PROXY_PORT
ADMIN=http://127.0.0.1:$ADMIN_PORT

PIDS=()
LOGS=()
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "${#LOGS[@]}" -gt 0 ]; then
    echo "run.sh: failed (exit $rc); the logs:" >&2
    for l in "${LOGS[@]}"; do
      echo "---- $l" >&2
      cat "$l" >&2 2>/dev/null || true
    done
  fi
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
fail() { echo "run.sh: $*" >&2; exit 1; }

# Something already listening would silently take our traffic (or answer our
# readiness probe): refuse instead, and say how to pick other ports.
for spec in "PROXY_PORT=$PROXY_PORT" "ADMIN_PORT=$ADMIN_PORT" "API_PORT=$API_PORT"; do
  port=${spec#*=}
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port (${spec%%=*}) on 127.0.0.1 is already in use by another process; stop it or choose another port, e.g. ${spec%%=*}=$((port + 10000)) $0"
  fi
done

if [ -n "${COUNTERSIGN_BIN:-}" ] && [ -n "${PAYMENTS_API_BIN:-}" ]; then
  CS=$COUNTERSIGN_BIN
  API=$PAYMENTS_API_BIN
else
  echo "==> building (first time: a few minutes)"
  cargo build --release --quiet --bin countersign --example payments-api
  CS=target/release/countersign
  API=target/release/examples/payments-api
fi
export COUNTERSIGN_ADMIN_TOKEN=${COUNTERSIGN_ADMIN_TOKEN:-payments-demo-admin-token}

rm -rf "$DATA" && mkdir -p "$DATA"
DATA=$(cd "$DATA" && pwd)
# The shipped config with this run's ports and scratch directory.
CONFIG=$DATA/countersign.yaml
sed -e "s#127.0.0.1:8080#127.0.0.1:$PROXY_PORT#" \
    -e "s#127.0.0.1:9901#127.0.0.1:$ADMIN_PORT#" \
    -e "s#127.0.0.1:8081#127.0.0.1:$API_PORT#" \
    -e "s#dir: policies#dir: $ROOT/examples/payments/policies#" \
    -e "s#sqlite://data/audit.db#sqlite://$DATA/audit.db#" \
    examples/payments/countersign.yaml >"$CONFIG"

# Fresh reviewer keys for the demo: countersign reads them from the
# environment, each reviewer's `countersign review` from a file. alice shares
# a secret with countersign; bob has an Ed25519 pair, of which countersign
# holds only the public half.
key="whsec_$(head -c 24 /dev/urandom | base64)"
printf '%s\n' "$key" > "$DATA/alice.key"
export REVIEWER_ALICE_KEY="$key"
"$CS" keygen --reviewer --out "$DATA/bob" >/dev/null
REVIEWER_BOB_KEY="$(cat "$DATA/bob.pub")"
export REVIEWER_BOB_KEY

"$API" "127.0.0.1:$API_PORT" >"$DATA/payments-api.log" 2>&1 &
API_PID=$!
PIDS+=("$API_PID")
LOGS+=("$DATA/payments-api.log")
# The API prints its address once it holds the port: proof it is ours.
for _ in $(seq 100); do
  grep -q "listening on 127.0.0.1:$API_PORT" "$DATA/payments-api.log" && break
  kill -0 "$API_PID" 2>/dev/null || fail "the payments API exited before listening on 127.0.0.1:$API_PORT"
  sleep 0.1
done
grep -q "listening on 127.0.0.1:$API_PORT" "$DATA/payments-api.log" \
  || fail "the payments API did not start listening on 127.0.0.1:$API_PORT"

"$CS" check --config "$CONFIG"
"$CS" serve --config "$CONFIG" 2>"$DATA/countersign.log" &
CS_PID=$!
PIDS+=("$CS_PID")
LOGS+=("$DATA/countersign.log")
# Ready means /readyz answers 200 *and* names our process id: another
# process answering on the admin port must not pass for ours.
ready=""
for _ in $(seq 100); do
  kill -0 "$CS_PID" 2>/dev/null || fail "countersign serve exited before it was ready"
  answer=$(curl -fs "$ADMIN/readyz" 2>/dev/null || true)
  case "$answer" in
    *"\"pid\":$CS_PID,"* | *"\"pid\":$CS_PID}"*) ready=yes; break ;;
    "") ;;
    *) fail "$ADMIN/readyz is answered by another process, not the countersign this script started (pid $CS_PID)" ;;
  esac
  sleep 0.1
done
[ -n "$ready" ] || fail "countersign serve (pid $CS_PID) did not become ready on $ADMIN/readyz"

# The agent's call, with who it is, whom it acts for, why, and its evidence.
pay() { # amount [invoice]
  local evidence=()
  [ -n "${2:-}" ] && evidence=(-H "x-evidence-invoice: $2" -H "x-evidence-po: PO-77")
  curl -s -D "$DATA/headers" -o "$DATA/body" -X POST "$PROXY/v1"/payouts \
    -H 'content-type: application/json' \
    -H 'x-agent-id: ap-agent-7' -H 'x-agent-on-behalf-of: carol' \
    -H "x-agent-intent: pay invoice ${2:-(none)}" \
    -H 'authorization: Bearer agent-session-token' \
    "${evidence[@]}" \
    -d "{\"amount\": $1, \"currency\": \"EUR\", \"to\": \"ACME GmbH\"}"
  echo "    $(head -1 "$DATA/headers" | tr -d '\r')  $(cat "$DATA/body")"
  ACTION=$(awk 'tolower($1)=="x-countersign-action-id:" {print $2}' "$DATA/headers" | tr -d '\r')
}

echo; echo "==> 1. a 250 EUR payout with its invoice: the policy allows it, the API pays"
pay 250 INV-118; ALLOWED=$ACTION
echo; echo "==> 2. a payout without an invoice: denied, the API never sees it"
pay 250
echo; echo "==> 3. a 25,000 EUR payout: held for two finance approvers; after hold.wait the agent gets 202"
pay 25000 INV-204; HELD=$ACTION
review() { # who verdict id [comment]
  "$CS" review "$3" --admin "$ADMIN" --reviewer "$1" --key-file "$DATA/$1.key" "--$2" --yes --comment "$4" | tail -1
}
echo; echo "==> alice reviews it with countersign review (this is what she sees):"
"$CS" review "$HELD" --admin "$ADMIN" --reviewer alice --key-file "$DATA/alice.key" --approve --yes --comment "matches PO-77" | sed 's/^/    /'
echo; echo "==> bob approves too: two approvals, so countersign forwards exactly the held request"
review bob approve "$HELD" "invoice and PO checked" | sed 's/^/    /'
for _ in $(seq 50); do
  STATUS=$(curl -s "$PROXY/.countersign/actions/$HELD")
  case "$STATUS" in *'"state":"completed"'*) break;; esac
  sleep 0.1
done
echo "    the agent polls its status URL: $STATUS"

echo; echo "==> 4. a 5,000 EUR payout: held for one approver; bob rejects it"
pay 5000 INV-311; REJECTED=$ACTION
review bob reject "$REJECTED" "vendor bank details changed last week; call them first" | sed 's/^/    /'

sleep 0.2
echo; echo "==> what the payments API received: the allowed call and the approved one, nothing else"
sed 's/^/    /' "$DATA/payments-api.log"
echo; echo "==> the record: every action, newest first"
"$CS" audit list --config "$CONFIG"
echo; echo "==> the chain of records is intact"
"$CS" audit verify --config "$CONFIG"
echo; echo "==> the two-approver payout, reconstructed from the record alone"
"$CS" audit show --config "$CONFIG" "$HELD"
