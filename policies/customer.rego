# Customer escalations: refunds, credits and account changes.
#
#   POST /v1/refunds           {"amount": 120, "currency": "EUR", "customer_id": "C-9"}
#   POST /v1/credits           {"amount": 50, ...}
#   POST /v1/accounts/bulk     {"accounts": [...], "change": {...}}
#   PATCH /v1/accounts/<id>    one account
#   evidence: ticket (the support ticket; required for money movements)
#
#   refund or credit without a ticket          deny
#   refund or credit up to the limit           allow
#   above the limit                            hold for a support lead
#   bulk account changes                       deny (agents change one account at a time)
#   one account change                         allow
package countersign.customer

import rego.v1

limits := {"refund": 500, "credit": 200}

kind := "refund" if input.request.path == "/v1/refunds"

kind := "credit" if input.request.path == "/v1/credits"

money if {
	input.request.method == "POST"
	kind
}

amount := input.request.body.amount

bulk if {
	input.request.method in {"POST", "PATCH", "PUT"}
	startswith(input.request.path, "/v1/accounts/bulk")
}

bulk if {
	input.request.method in {"POST", "PATCH", "PUT"}
	startswith(input.request.path, "/v1/accounts")
	count(object.get(object.get(input.request, "body", {}), "accounts", [])) > 1
}

default decision := {
	"action": "deny",
	"risk": "medium",
	"reasons": ["no customer-support rule allows this call"],
	"rules": ["customer.default_deny"],
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": ["reads change nothing for the customer"],
	"rules": ["customer.read"],
} if input.request.method in {"GET", "HEAD"}

decision := {
	"action": "deny",
	"risk": "high",
	"reasons": [sprintf("a %s must carry the support ticket it resolves (x-evidence-ticket)", [kind])],
	"rules": [sprintf("customer.%s.missing_ticket", [kind])],
} if {
	money
	not input.evidence.ticket
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": [sprintf("%s of %v is within the %v limit", [kind, amount, limits[kind]])],
	"rules": [sprintf("customer.%s.within_limit", [kind])],
} if {
	money
	input.evidence.ticket
	amount <= limits[kind]
}

decision := {
	"action": "hold",
	"risk": "medium",
	"reasons": [sprintf("%s of %v exceeds the %v limit; a support lead must approve", [kind, amount, limits[kind]])],
	"rules": [sprintf("customer.%s.over_limit", [kind])],
	"approval": {"groups": ["support-leads"], "min": 1, "expires_in": "24h"},
} if {
	money
	input.evidence.ticket
	amount > limits[kind]
}

decision := {
	"action": "deny",
	"risk": "critical",
	"reasons": ["bulk account changes are not made by agents; change one account at a time"],
	"rules": ["customer.accounts.bulk"],
} if bulk

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": ["a single account change"],
	"rules": ["customer.accounts.single"],
} if {
	input.request.method in {"PATCH", "PUT"}
	startswith(input.request.path, "/v1/accounts/")
	not bulk
}
