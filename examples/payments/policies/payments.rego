# The payments story's policy: who may send money, on what evidence.
#
#   reads (GET)                                allow, low risk
#   a payout with no `invoice` evidence        deny
#   a payout up to 1,000                       allow
#   a payout over 1,000 up to 10,000           hold for one finance approver
#   a payout over 10,000                       hold for two finance approvers
#
# With verified identity (identity.jwt in the config, a token whose `sub` is
# the person and `act.sub` the agent):
#   a payout whose declared on_behalf_of is    hold for two finance approvers,
#   not the person the token proves               whatever the amount
package countersign

import rego.v1

single_approval_limit := 10000

auto_approve_limit := 1000

payout if {
	input.request.method == "POST"
	input.request.path == "/v1/payouts"
}

amount := input.request.body.amount

currency := object.get(input.request.body, "currency", "?")

# The declared principal contradicts the verified one: the header may be a
# mistake or a lie, and money moves on whose behalf the token says.
principal_mismatch if "on_behalf_of" in input.agent.verified.mismatch

decision := {
	"action": "hold",
	"risk": "high",
	"reasons": [sprintf(
		"the payout says it is for %v, but the agent's token proves it acts for %v",
		[input.agent.on_behalf_of, input.agent.verified.on_behalf_of],
	)],
	"rules": ["payments.payout.principal_mismatch"],
	"approval": {"groups": ["finance-approvers"], "min": 2, "expires_in": "30m"},
} if {
	payout
	principal_mismatch
}

decision := by_amount if not principal_mismatch

decision := by_amount if {
	principal_mismatch
	not payout
}

default by_amount := {
	"action": "deny",
	"risk": "medium",
	"reasons": ["no rule of the payments policy allows this call"],
	"rules": ["payments.default_deny"],
}

by_amount := {
	"action": "allow",
	"risk": "low",
	"reasons": ["reads do not move money"],
	"rules": ["payments.read"],
} if {
	input.request.method == "GET"
}

by_amount := {
	"action": "deny",
	"risk": "high",
	"reasons": ["a payout must carry the invoice it pays (x-evidence-invoice)"],
	"rules": ["payments.payout.missing_invoice"],
} if {
	payout
	not input.evidence.invoice
}

by_amount := {
	"action": "allow",
	"risk": "low",
	"reasons": [sprintf("payout of %v %v is within the %v auto-approval limit", [amount, currency, auto_approve_limit])],
	"rules": ["payments.payout.small"],
} if {
	payout
	input.evidence.invoice
	amount <= auto_approve_limit
}

by_amount := {
	"action": "hold",
	"risk": "medium",
	"reasons": [sprintf("payout of %v %v exceeds the %v auto-approval limit", [amount, currency, auto_approve_limit])],
	"rules": ["payments.payout.over_auto_limit"],
	"approval": {"groups": ["finance-approvers"], "min": 1, "expires_in": "30m"},
} if {
	payout
	input.evidence.invoice
	amount > auto_approve_limit
	amount <= single_approval_limit
}

by_amount := {
	"action": "hold",
	"risk": "high",
	"reasons": [sprintf("payout of %v %v exceeds the %v single-approval limit", [amount, currency, single_approval_limit])],
	"rules": ["payments.payout.over_single_approval_limit"],
	"approval": {"groups": ["finance-approvers"], "min": 2, "expires_in": "30m"},
} if {
	payout
	input.evidence.invoice
	amount > single_approval_limit
}
