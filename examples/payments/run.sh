#!/usr/bin/env bash
# The payments story, end to end on the embedded default (SQLite):
# an AP agent pays invoices through countersign, and an auditor who was not
# there reads back what happened, why, and on what evidence.
#
#   examples/payments/run.sh
#
# Starts the example payments API on 127.0.0.1:8081 and countersign on
# 127.0.0.1:8080 (admin 127.0.0.1:9901); stops both on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=examples/payments/countersign.yaml
DATA=examples/payments/data

echo "==> building (first time: a few minutes)"
cargo build --release --quiet --bin countersign --example payments-api
CS=target/release/countersign
export COUNTERSIGN_ADMIN_TOKEN=${COUNTERSIGN_ADMIN_TOKEN:-payments-demo-admin-token}

rm -rf "$DATA" && mkdir -p "$DATA"
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

target/release/examples/payments-api 127.0.0.1:8081 >"$DATA/payments-api.log" 2>&1 &
PIDS+=($!)
"$CS" check --config "$CONFIG"
"$CS" serve --config "$CONFIG" 2>"$DATA/countersign.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:9901/readyz && break; sleep 0.1; done
curl -fs -o /dev/null http://127.0.0.1:9901/readyz || { cat "$DATA/countersign.log"; exit 1; }

# The agent's call, with who it is, whom it acts for, why, and its evidence.
pay() { # amount [invoice]
  local evidence=()
  [ -n "${2:-}" ] && evidence=(-H "x-evidence-invoice: $2" -H "x-evidence-po: PO-77")
  curl -s -D "$DATA/headers" -o "$DATA/body" -X POST http://127.0.0.1:8080/v1/payouts \
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
echo; echo "==> 3. a 25,000 EUR payout: the policy holds it for two finance approvers"
echo "    (approvals are the next milestone; until then a hold is refused and recorded)"
pay 25000 INV-204

sleep 0.2
echo; echo "==> what the payments API received (only the allowed call)"
sed 's/^/    /' "$DATA/payments-api.log"
echo; echo "==> the record: every action, newest first"
"$CS" audit list --config "$CONFIG"
echo; echo "==> the chain of records is intact"
"$CS" audit verify --config "$CONFIG"
echo; echo "==> the allowed payout, reconstructed from the record alone"
"$CS" audit show --config "$CONFIG" "$ALLOWED"
