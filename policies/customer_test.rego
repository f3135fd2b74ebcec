package library_test.customer

import rego.v1

import data.countersign

call(method, path, body, evidence) := {
	"route": {"name": "support"},
	"request": {"method": method, "path": path, "body": body},
	"evidence": evidence,
}

test_small_refund_is_allowed if {
	d := countersign.decision with input as call("POST", "/v1/refunds", {"amount": 120}, {"ticket": "T-1"})
	d.action == "allow"
	d.rules == ["customer.refund.within_limit"]
}

test_large_refund_is_held_for_a_support_lead if {
	d := countersign.decision with input as call("POST", "/v1/refunds", {"amount": 900}, {"ticket": "T-2"})
	d.action == "hold"
	d.approval.groups == ["support-leads"]
	d.rules == ["customer.refund.over_limit"]
}

test_large_credit_is_held if {
	d := countersign.decision with input as call("POST", "/v1/credits", {"amount": 250}, {"ticket": "T-3"})
	d.action == "hold"
	d.rules == ["customer.credit.over_limit"]
}

test_refund_without_ticket_is_denied if {
	d := countersign.decision with input as call("POST", "/v1/refunds", {"amount": 10}, {})
	d.rules == ["customer.refund.missing_ticket"]
}

test_bulk_account_change_is_denied if {
	d := countersign.decision with input as call("POST", "/v1/accounts/bulk", {"accounts": ["C-1", "C-2"]}, {"ticket": "T-4"})
	d.action == "deny"
	d.rules == ["customer.accounts.bulk"]
}

test_single_account_change_is_allowed if {
	d := countersign.decision with input as call("PATCH", "/v1/accounts/C-1", {"email": "new@example.com"}, {"ticket": "T-5"})
	d.action == "allow"
}
