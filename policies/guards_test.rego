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
