# Finance: payouts.
#
#   POST /v1/payouts  {"amount": 2500, "currency": "EUR", "vendor_id": "V-1", ...}
#   evidence: invoice, po (both required); bank-account-changed: "true" when the
#   vendor's bank details changed recently.
#
#   reads                                      allow
#   missing invoice or purchase order          deny
#   unsupported currency                       deny
#   vendor bank account changed                hold, 2 finance controllers (always)
#   amount <= auto limit                       allow
#   amount <= single-approval limit            hold, 1 finance approver
#   above                                      hold, 2 finance approvers
package countersign.finance

import rego.v1

# Per-currency limits: auto-approved up to `auto`, one approver up to `single`.
limits := {
	"EUR": {"auto": 1000, "single": 10000},
	"USD": {"auto": 1000, "single": 10000},
	"GBP": {"auto": 800, "single": 8000},
	"CHF": {"auto": 1000, "single": 10000},
}

payout if {
	input.request.method == "POST"
	input.request.path == "/v1/payouts"
}

body := object.get(input.request, "body", {})

amount := body.amount

currency := object.get(body, "currency", "")

missing_evidence contains "invoice" if not input.evidence.invoice

missing_evidence contains "po" if not input.evidence.po

bank_account_changed if input.evidence["bank-account-changed"] == "true"

default decision := {
	"action": "deny",
	"risk": "medium",
	"reasons": ["no finance rule allows this call"],
	"rules": ["finance.default_deny"],
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": ["reads do not move money"],
	"rules": ["finance.read"],
} if input.request.method in {"GET", "HEAD"}

decision := {
	"action": "deny",
	"risk": "high",
	"reasons": [sprintf("a payout must carry its %s as evidence (x-evidence-<name> headers)", [concat(" and ", sort(missing_evidence))])],
	"rules": ["finance.payout.missing_evidence"],
} if {
	payout
	count(missing_evidence) > 0
}

decision := {
	"action": "deny",
	"risk": "high",
	"reasons": [sprintf("payouts in %q are not supported; supported: %s", [currency, concat(", ", sort(object.keys(limits)))])],
	"rules": ["finance.payout.unsupported_currency"],
} if {
	payout
	count(missing_evidence) == 0
	not limits[currency]
}

decision := {
	"action": "hold",
	"risk": "critical",
	"reasons": [sprintf("the vendor's bank account changed recently; a payout of %v %s to it always needs two controllers", [amount, currency])],
	"rules": ["finance.payout.bank_account_changed"],
	"approval": {"groups": ["finance-controllers"], "min": 2, "expires_in": "4h"},
} if {
	payout
	count(missing_evidence) == 0
	limits[currency]
	bank_account_changed
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": [sprintf("payout of %v %s is within the %v auto-approval limit", [amount, currency, limits[currency].auto])],
	"rules": ["finance.payout.within_auto_limit"],
} if {
	ordinary_payout
	amount <= limits[currency].auto
}

decision := {
	"action": "hold",
	"risk": "medium",
	"reasons": [sprintf("payout of %v %s exceeds the %v auto-approval limit", [amount, currency, limits[currency].auto])],
	"rules": ["finance.payout.single_approval"],
	"approval": {"groups": ["finance-approvers"], "min": 1, "expires_in": "24h"},
} if {
	ordinary_payout
	amount > limits[currency].auto
	amount <= limits[currency].single
}

decision := {
	"action": "hold",
	"risk": "high",
	"reasons": [sprintf("payout of %v %s exceeds the %v single-approval limit", [amount, currency, limits[currency].single])],
	"rules": ["finance.payout.two_approvals"],
	"approval": {"groups": ["finance-approvers"], "min": 2, "expires_in": "24h"},
} if {
	ordinary_payout
	amount > limits[currency].single
}

ordinary_payout if {
	payout
	count(missing_evidence) == 0
	limits[currency]
	not bank_account_changed
	is_number(amount)
}
