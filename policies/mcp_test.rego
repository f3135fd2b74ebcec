package library_test.mcp

import rego.v1

import data.countersign

rpc(method, extra) := {
	"route": {"name": "mcp"},
	"request": {"method": "POST", "path": "/mcp", "headers": {}, "body": {}},
	"evidence": {},
	"mcp": object.union({"kind": "request", "method": method}, extra),
}

tool_call(tool, args) := rpc("tools/call", {"tool": tool, "arguments": args})

test_plumbing_is_allowed if {
	allowed := {m | some m in ["initialize", "server/discover", "tools/list", "ping"]; d := countersign.decision with input as rpc(m, {}); d.action == "allow"}
	count(allowed) == 4
	n := rpc("notifications/initialized", {"kind": "notification"})
	dn := countersign.decision with input as n
	dn.action == "allow"
	g := object.union(rpc("x", {}), {"mcp": {"kind": "stream", "method": null}})
	dg := countersign.decision with input as g
	dg.action == "allow"
}

test_unknown_methods_are_denied if {
	d := countersign.decision with input as rpc("sampling/createMessage", {})
	d.action == "deny"
	d.rules == ["mcp.method.unknown"]
}

test_a_tool_off_the_allowlist_is_denied if {
	d := countersign.decision with input as tool_call("drop_database", {})
	d.action == "deny"
	d.rules == ["mcp.tool.not_allowed"]
}

test_read_only_tool_is_allowed if {
	d := countersign.decision with input as tool_call("balance", {"account": "A1"})
	d.action == "allow"
}

test_small_transfer_is_allowed if {
	d := countersign.decision with input as tool_call("transfer", {"source": "A1", "target": "B2", "amount": 100})
	d.action == "allow"
}

test_large_transfer_is_held_for_one_approver if {
	d := countersign.decision with input as tool_call("transfer", {"source": "A1", "target": "B2", "amount": 5000})
	d.action == "hold"
	d.approval.min == 1
}

test_transfer_arguments_are_limited if {
	bad := [
		{"source": "A1", "target": "B2", "amount": 90000},
		{"source": "A1", "target": "B2", "amount": -5},
		{"source": "A1", "target": "B2", "amount": "100"},
		{"source": "A1", "target": "A1", "amount": 10},
	]
	denied := {i | some i, args in bad; d := countersign.decision with input as tool_call("transfer", args); d.rules == ["mcp.transfer.arguments"]}
	count(denied) == 4
}

test_irreversible_tool_needs_two_approvers if {
	d := countersign.decision with input as tool_call("close_account", {"account": "A1"})
	d.action == "hold"
	d.approval.min == 2
}
