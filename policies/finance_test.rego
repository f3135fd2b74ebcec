package library_test.finance

import rego.v1

import data.countersign

call(amount, currency, evidence) := {
	"route": {"name": "payments"},
	"request": {"method": "POST", "path": "/v1/payouts", "body": {"amount": amount, "currency": currency}},
	"evidence": evidence,
}

full := {"invoice": "INV-1", "po": "PO-1"}

test_small_payout_is_allowed if {
	d := countersign.decision with input as call(250, "EUR", full)
	d.action == "allow"
	d.rules == ["finance.payout.within_auto_limit"]
}

test_medium_payout_needs_one_approver if {
	d := countersign.decision with input as call(5000, "EUR", full)
	d.action == "hold"
	d.approval.min == 1
	d.approval.groups == ["finance-approvers"]
}

test_large_payout_needs_two_approvers if {
	d := countersign.decision with input as call(25000, "EUR", full)
	d.action == "hold"
	d.risk == "high"
	d.approval.min == 2
}

test_limits_depend_on_currency if {
	d := countersign.decision with input as call(900, "GBP", full)
	d.action == "hold"
	e := countersign.decision with input as call(900, "EUR", full)
	e.action == "allow"
}

test_changed_bank_account_always_holds_for_two_controllers if {
	d := countersign.decision with input as call(10, "EUR", object.union(full, {"bank-account-changed": "true"}))
	d.action == "hold"
	d.risk == "critical"
	d.rules == ["finance.payout.bank_account_changed"]
	d.approval.groups == ["finance-controllers"]
	d.approval.min == 2
}

test_missing_invoice_is_denied if {
	d := countersign.decision with input as call(10, "EUR", {"po": "PO-1"})
	d.action == "deny"
	d.rules == ["finance.payout.missing_evidence"]
	contains(d.reasons[0], "invoice")
}

test_missing_po_is_denied if {
	d := countersign.decision with input as call(10, "EUR", {"invoice": "INV-1"})
	d.action == "deny"
	contains(d.reasons[0], "po")
}

test_unsupported_currency_is_denied if {
	d := countersign.decision with input as call(10, "JPY", full)
	d.rules == ["finance.payout.unsupported_currency"]
}

test_reads_are_allowed if {
	d := countersign.decision with input as {"route": {"name": "payments"}, "request": {"method": "GET", "path": "/v1/payouts/7"}, "evidence": {}}
	d.action == "allow"
}
