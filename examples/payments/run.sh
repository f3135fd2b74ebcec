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
echo; echo "==> 3. a 25,000 EUR payout: held for two finance approvers; after hold.wait the agent gets 202"
pay 25000 INV-204; HELD=$ACTION
review() { # who verdict id [comment]
  "$CS" review "$3" --admin http://127.0.0.1:9901 --reviewer "$1" --key-file "$DATA/$1.key" "--$2" --comment "$4" | tail -1
}
echo; echo "==> alice reviews it with countersign review (this is what she sees):"
"$CS" review "$HELD" --admin http://127.0.0.1:9901 --reviewer alice --key-file "$DATA/alice.key" --approve --comment "matches PO-77" | sed 's/^/    /'
echo; echo "==> bob approves too: two approvals, so countersign forwards exactly the held request"
review bob approve "$HELD" "invoice and PO checked" | sed 's/^/    /'
for _ in $(seq 50); do
  STATUS=$(curl -s "http://127.0.0.1:8080/.countersign/actions/$HELD")
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
