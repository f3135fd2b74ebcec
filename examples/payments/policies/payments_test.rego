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

verified_payout(amount, declared_for, proven_for) := object.union(payout(amount, {"invoice": "INV-9"}), {"agent": {
	"id": "ap-agent-7", "on_behalf_of": declared_for,
	"verified": {"method": "jwt", "subject": proven_for, "actor": "ap-agent-7", "agent": "ap-agent-7", "on_behalf_of": proven_for,
		"mismatch": [f | f := "on_behalf_of"; declared_for != proven_for]},
}})

test_a_payout_for_someone_the_token_does_not_prove_is_held_for_two if {
	d := countersign.decision with input as verified_payout(50, "bob", "carol")
	d.action == "hold"
	d.approval.min == 2
	d.rules == ["payments.payout.principal_mismatch"]
}

test_a_payout_the_token_agrees_with_follows_the_amount_rules if {
	d := countersign.decision with input as verified_payout(50, "carol", "carol")
	d.rules == ["payments.payout.small"]
}
