package countersign_test

import rego.v1

import data.countersign

payout(amount, evidence) := {
	"request": {"method": "POST", "path": "/v1/payouts", "body": {"amount": amount, "currency": "EUR"}},
	"evidence": evidence,
}

test_small_payout_with_invoice_is_allowed if {
	d := countersign.decision with input as payout(250, {"invoice": "INV-1"})
	d.action == "allow"
	d.rules == ["payments.payout.small"]
}

test_payout_without_invoice_is_denied if {
	d := countersign.decision with input as payout(250, {})
	d.action == "deny"
	d.rules == ["payments.payout.missing_invoice"]
}

test_medium_payout_needs_one_approver if {
	d := countersign.decision with input as payout(5000, {"invoice": "INV-2"})
	d.action == "hold"
	d.approval.min == 1
}

test_large_payout_needs_two_approvers if {
	d := countersign.decision with input as payout(25000, {"invoice": "INV-3"})
	d.action == "hold"
	d.risk == "high"
	d.approval.min == 2
}

test_reads_are_allowed if {
	d := countersign.decision with input as {"request": {"method": "GET", "path": "/v1/balance"}, "evidence": {}}
	d.action == "allow"
}

test_other_writes_are_denied_by_default if {
	d := countersign.decision with input as {"request": {"method": "DELETE", "path": "/v1/payouts/7"}, "evidence": {}}
	d.rules == ["payments.default_deny"]
}
