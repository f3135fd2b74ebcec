# MCP tool calls (routes with `protocol: mcp`, route names `mcp`, `tools`):
# countersign reads the JSON-RPC message into input.mcp.
#
#   plumbing (initialize, server/discover,   allow
#     tools/list, ping, notifications,
#     responses, the GET stream, DELETE)
#   a tool not on the allowlist              deny
#   a read-only tool                         allow
#   transfer above the limit, or to an       deny
#     account not on file
#   transfer up to auto_limit                allow
#   transfer above auto_limit                hold, 1 finance approver
#   an irreversible tool                     hold, 2 finance approvers
#   any other method                         deny
package countersign.mcp

import rego.v1

# The protocol's own traffic: it moves nothing.
plumbing_methods := {
	"initialize", "server/discover", "tools/list", "ping",
	"prompts/list", "resources/list", "resources/templates/list",
}

read_only_tools := {"balance"}

irreversible_tools := {"close_account"}

money_tools := {"transfer"}

allowed_tools := (read_only_tools | irreversible_tools) | money_tools

transfer_limits := {"auto": 1000, "max": 50000}

call := object.get(input, "mcp", {})

method := object.get(call, "method", null)

tool := object.get(call, "tool", null)

args := object.get(call, "arguments", {})

plumbing if call.kind in {"notification", "response", "stream", "close"}

plumbing if method in plumbing_methods

default decision := {
	"action": "deny",
	"risk": "medium",
	"reasons": ["this MCP method is not allowed through countersign"],
	"rules": ["mcp.method.unknown"],
}

decision := {"action": "allow", "risk": "low", "reasons": ["MCP plumbing"], "rules": ["mcp.plumbing"]} if plumbing

decision := {
	"action": "deny",
	"risk": "high",
	"reasons": [sprintf("the tool %s is not on the allowlist", [tool])],
	"rules": ["mcp.tool.not_allowed"],
} if {
	method == "tools/call"
	not tool in allowed_tools
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": [sprintf("%s is read-only", [tool])],
	"rules": ["mcp.tool.read_only"],
} if {
	method == "tools/call"
	tool in read_only_tools
}

amount := args.amount if is_number(args.amount)

bad_transfer contains "the amount is not a positive number" if {
	not amount
}

bad_transfer contains "the amount is not a positive number" if {
	amount <= 0
}

bad_transfer contains sprintf("%v is above the %v limit for one transfer", [amount, transfer_limits.max]) if {
	amount > transfer_limits.max
}

bad_transfer contains "the source and target accounts are the same" if {
	args.source == args.target
}

decision := {
	"action": "deny",
	"risk": "high",
	"reasons": sort([r | some r in bad_transfer]),
	"rules": ["mcp.transfer.arguments"],
} if {
	method == "tools/call"
	tool in money_tools
	count(bad_transfer) > 0
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": [sprintf("a transfer of %v is within the %v auto limit", [amount, transfer_limits.auto])],
	"rules": ["mcp.transfer.auto"],
} if {
	method == "tools/call"
	tool in money_tools
	count(bad_transfer) == 0
	amount <= transfer_limits.auto
}

decision := {
	"action": "hold",
	"risk": "medium",
	"reasons": [sprintf("a transfer of %v is above the %v auto limit", [amount, transfer_limits.auto])],
	"rules": ["mcp.transfer.review"],
	"approval": {"groups": ["finance-approvers"], "min": 1, "expires_in": "4h"},
} if {
	method == "tools/call"
	tool in money_tools
	count(bad_transfer) == 0
	amount > transfer_limits.auto
}

decision := {
	"action": "hold",
	"risk": "high",
	"reasons": [sprintf("%s cannot be undone", [tool])],
	"rules": ["mcp.tool.irreversible"],
	"approval": {"groups": ["finance-approvers"], "min": 2, "expires_in": "4h"},
} if {
	method == "tools/call"
	tool in irreversible_tools
}
