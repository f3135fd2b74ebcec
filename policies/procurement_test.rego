package library_test.procurement

import rego.v1

import data.countersign

order(amount, evidence) := {
	"route": {"name": "procurement"},
	"request": {"method": "POST", "path": "/v1/purchase-orders", "body": {"amount": amount, "currency": "EUR"}},
	"evidence": evidence,
}

budget := {"budget-remaining": "10000", "budget-owner": "olga", "quote": "Q-55"}

test_within_budget_is_allowed if {
	d := countersign.decision with input as order(9000, budget)
	d.action == "allow"
	d.rules == ["procurement.order.within_budget"]
}

test_over_budget_is_held_for_the_budget_owner if {
	d := countersign.decision with input as order(12000, budget)
	d.action == "hold"
	d.approval.reviewers == ["olga"]
	d.approval.min == 1
	d.rules == ["procurement.order.over_budget"]
}

test_missing_budget_evidence_is_denied if {
	d := countersign.decision with input as order(10, {"quote": "Q-1"})
	d.action == "deny"
	contains(d.reasons[0], "budget-owner, budget-remaining")
}
