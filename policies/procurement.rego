# Procurement: purchase orders against budgets.
#
#   POST /v1/purchase-orders  {"amount": 12000, "currency": "EUR", "cost_center": "CC-42"}
#   evidence: budget-remaining (what is left on the cost center, a number),
#   budget-owner (a configured reviewer), quote (the supplier's quote).
#
#   missing budget evidence or quote           deny
#   within the remaining budget                allow
#   over budget                                hold for the budget owner
package countersign.procurement

import rego.v1

order if {
	input.request.method == "POST"
	input.request.path == "/v1/purchase-orders"
}

amount := input.request.body.amount

remaining := to_number(input.evidence["budget-remaining"])

missing contains "budget-remaining" if not input.evidence["budget-remaining"]

missing contains "budget-owner" if not input.evidence["budget-owner"]

missing contains "quote" if not input.evidence.quote

default decision := {
	"action": "deny",
	"risk": "medium",
	"reasons": ["no procurement rule allows this call"],
	"rules": ["procurement.default_deny"],
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": ["reads commit no spend"],
	"rules": ["procurement.read"],
} if input.request.method in {"GET", "HEAD"}

decision := {
	"action": "deny",
	"risk": "high",
	"reasons": [sprintf("a purchase order must carry %s as evidence", [concat(", ", sort(missing))])],
	"rules": ["procurement.order.missing_evidence"],
} if {
	order
	count(missing) > 0
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": [sprintf("order of %v is within the %v left on the budget", [amount, remaining])],
	"rules": ["procurement.order.within_budget"],
} if {
	order
	count(missing) == 0
	amount <= remaining
}

decision := {
	"action": "hold",
	"risk": "high",
	"reasons": [sprintf("order of %v exceeds the %v left on the budget; the budget owner must approve", [amount, remaining])],
	"rules": ["procurement.order.over_budget"],
	"approval": {"reviewers": [input.evidence["budget-owner"]], "min": 1, "expires_in": "72h"},
} if {
	order
	count(missing) == 0
	amount > remaining
}
