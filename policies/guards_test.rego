package library_test.guards

import rego.v1

import data.countersign

payout(request) := object.union(
	{"method": "POST", "path": "/v1/payouts", "query": {}, "headers": {"content-type": "application/json"}, "body": {"amount": 1, "currency": "EUR"}},
	request,
)

call(request) := {
	"route": {"name": "payments"},
	"agent": {"id": "ap-agent-7", "on_behalf_of": "carol"},
	"request": payout(request),
	"evidence": {"invoice": "INV-1", "po": "PO-1"},
}

test_a_method_override_header_is_denied if {
	some header in ["x-http-method-override", "x-http-method", "x-method-override"]
	d := countersign.decision with input as call({"headers": {header: "DELETE"}})
	d.action == "deny"
	d.rules == ["library.method_override"]
	contains(d.reasons[0], header)
}

test_a_method_field_in_the_query_is_denied if {
	d := countersign.decision with input as call({"query": {"_method": ["DELETE"]}})
	d.rules == ["library.method_override"]
}

test_a_method_field_in_a_form_body_is_denied if {
	d := countersign.decision with input as call({"body": {"_method": ["PUT"], "amount": ["1"]}, "body_format": "form"})
	d.rules == ["library.method_override"]
}

test_a_method_field_in_a_json_body_is_denied if {
	d := countersign.decision with input as call({"body": {"_method": "DELETE", "amount": 1, "currency": "EUR"}})
	d.rules == ["library.method_override"]
}

test_a_path_override_header_is_denied if {
	some header in ["x-original-url", "x-rewrite-url"]
	d := countersign.decision with input as call({"headers": {header: "/v1/admin"}})
	d.action == "deny"
	d.rules == ["library.path_override"]
	contains(d.reasons[0], header)
}

test_an_ordinary_call_reaches_its_domain_policy if {
	d := countersign.decision with input as call({})
	not "library.method_override" in d.rules
	startswith(d.rules[0], "finance.")
}

verified(mismatch) := {
	"id": "ap-agent-7", "on_behalf_of": "carol",
	"verified": {"method": "jwt", "subject": "dave", "actor": "ap-agent-9", "agent": "ap-agent-9", "on_behalf_of": "dave", "mismatch": mismatch},
}

test_an_agent_claiming_another_agents_id_is_denied if {
	d := countersign.decision with input as object.union(call({}), {"agent": verified(["id", "on_behalf_of"])})
	d.action == "deny"
	d.rules == ["library.identity.impostor"]
	contains(d.reasons[0], "ap-agent-9")
}

test_a_declared_principal_the_token_contradicts_is_held_for_security if {
	d := countersign.decision with input as object.union(call({}), {"agent": verified(["on_behalf_of"])})
	d.action == "hold"
	d.rules == ["library.identity.principal_mismatch"]
	d.approval.groups == ["security"]
	contains(d.reasons[0], "dave")
}

test_a_verified_identity_that_agrees_reaches_the_domain_policy if {
	d := countersign.decision with input as object.union(call({}), {"agent": verified([])})
	startswith(d.rules[0], "finance.")
}
