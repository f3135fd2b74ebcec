# countersign's shipped policy library: the entrypoint dispatches each call
# to the domain policy for its route. Route names (config `routes[].name`):
#
#   payments, finance        -> countersign.finance      (payouts)
#   access                   -> countersign.access       (IT role grants)
#   procurement              -> countersign.procurement  (purchase orders)
#   support, customer        -> countersign.customer     (refunds, credits, account changes)
#
# A call on any other route is denied: a new route needs a policy first.
package countersign

import rego.v1

import data.countersign.access
import data.countersign.customer
import data.countersign.finance
import data.countersign.procurement

default decision := {
	"action": "deny",
	"risk": "medium",
	"reasons": ["no policy covers this route; add one before agents may use it"],
	"rules": ["library.unknown_route"],
}

decision := finance.decision if input.route.name in {"payments", "finance"}

decision := access.decision if input.route.name == "access"

decision := procurement.decision if input.route.name == "procurement"

decision := customer.decision if input.route.name in {"support", "customer"}
