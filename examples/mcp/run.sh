#!/usr/bin/env bash
# The MCP story, end to end: an agent uses a bank's MCP server through
# countersign. The server and the agent are both the official MCP Python
# SDK (`python3 -m pip install mcp`): tests/mcp/server.py and
# tests/mcp/client.py. countersign decides every JSON-RPC call with the
# shipped policy library (policies/mcp.rego), holds the irreversible one
# for two reviewers, and records each call as a tool call.
#
#   examples/mcp/run.sh
#
# Starts the MCP server on 127.0.0.1:8091 and countersign on 127.0.0.1:8090
# (admin 127.0.0.1:9911); stops both on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
CONFIG=examples/mcp/countersign.yaml
DATA=examples/mcp/data
python3 -c 'import mcp' 2>/dev/null || { echo "needs the MCP Python SDK: python3 -m pip install mcp" >&2; exit 1; }

echo "==> building countersign"
cargo build --quiet --bin countersign
CS=target/debug/countersign
export COUNTERSIGN_ADMIN_TOKEN=${COUNTERSIGN_ADMIN_TOKEN:-mcp-demo-admin-token}

rm -rf "$DATA" && mkdir -p "$DATA"
key="whsec_$(head -c 24 /dev/urandom | base64)"
printf '%s\n' "$key" > "$DATA/alice.key"
export REVIEWER_ALICE_KEY="$key"
"$CS" keygen --reviewer --out "$DATA/bob" >/dev/null
REVIEWER_BOB_KEY="$(cat "$DATA/bob.pub")"
export REVIEWER_BOB_KEY
PIDS=()
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true' EXIT

python3 tests/mcp/server.py "$DATA/ledger.jsonl" --port 8091 >"$DATA/server.log" 2>&1 &
PIDS+=($!)
"$CS" check --config "$CONFIG"
"$CS" serve --config "$CONFIG" 2>"$DATA/countersign.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -fs -o /dev/null http://127.0.0.1:9911/readyz && break; sleep 0.1; done
curl -fs -o /dev/null http://127.0.0.1:9911/readyz || { cat "$DATA/countersign.log"; exit 1; }

agent() { # calls... (JSON); what the model is told, one line per call
  python3 tests/mcp/client.py http://127.0.0.1:8090/mcp --header x-agent-id=treasury-agent "$@" | sed 's/^/    /'
}

echo; echo "==> 1. a read-only tool: allowed, answered, recorded with its arguments and result"
agent '{"tool": "balance", "args": {"account": "DE-001"}}'
echo; echo "==> 2. a transfer over the 50,000 limit: denied; the model reads why as a tool error; the server never sees it"
agent '{"tool": "transfer", "args": {"source": "DE-001", "target": "FR-77", "amount": 90000}}'
echo; echo "==> 3. closing an account cannot be undone: held for two finance approvers while the agent waits (with progress)"
agent '{"tool": "close_account", "args": {"account": "DE-001"}, "progress": true}' > "$DATA/held.out" &
AGENT=$!
HELD=""
for _ in $(seq 100); do
  HELD=$(curl -s -H "authorization: Bearer $COUNTERSIGN_ADMIN_TOKEN" 'http://127.0.0.1:9911/v1/actions?state=pending' \
    | python3 -c 'import json,sys; a=json.load(sys.stdin)["actions"]; print(a[0]["action_id"] if a else "")')
  [ -n "$HELD" ] && break; sleep 0.1
done
echo "    held as action $HELD"
"$CS" review "$HELD" --admin http://127.0.0.1:9911 --reviewer alice --key-file "$DATA/alice.key" --approve --comment "customer asked in writing" | tail -1 | sed 's/^/    /'
"$CS" review "$HELD" --admin http://127.0.0.1:9911 --reviewer bob --key-file "$DATA/bob.key" --approve --comment "balance is zero" | tail -1 | sed 's/^/    /'
wait "$AGENT"
echo "    the waiting agent gets the real result:"; cat "$DATA/held.out"

echo; echo "==> 4. headers that disagree with the body (Mcp-Name says balance, the body closes an account): refused before the policy"
curl -s -X POST http://127.0.0.1:8090/mcp -H 'content-type: application/json' -H 'accept: application/json, text/event-stream' \
  -H 'mcp-protocol-version: 2026-07-28' -H 'mcp-method: tools/call' -H 'mcp-name: balance' \
  -d '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"close_account","arguments":{"account":"FR-77"}}}' | sed 's/^/    /'
echo

sleep 0.3
echo; echo "==> what the MCP server ran: the balance and the approved close, once; nothing else"
sed 's/^/    /' "$DATA/ledger.jsonl"
echo; echo "==> the record: every action, newest first"
"$CS" audit list --config "$CONFIG"
echo; echo "==> the chain of records is intact"
"$CS" audit verify --config "$CONFIG"
echo; echo "==> the held call, as a tool call, from the record alone"
"$CS" audit show --config "$CONFIG" "$HELD"
