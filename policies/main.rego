# countersign's shipped policy library: the entrypoint dispatches each call
# to the domain policy for its route. Route names (config `routes[].name`):
#
#   payments, finance        -> countersign.finance      (payouts)
#   access                   -> countersign.access       (IT role grants)
#   procurement              -> countersign.procurement  (purchase orders)
#   support, customer        -> countersign.customer     (refunds, credits, account changes)
#   mcp, tools               -> countersign.mcp          (MCP tool calls)
#
# A call on any other route is denied: a new route needs a policy first.
# The guards every route shares (guards.rego) are checked before any of them.
package countersign

import rego.v1

import data.countersign.access
import data.countersign.customer
import data.countersign.finance
import data.countersign.guards
import data.countersign.mcp
import data.countersign.procurement

decision := guards.decision if guards.tripped

decision := routed if not guards.tripped

default routed := {
	"action": "deny",
	"risk": "medium",
	"reasons": ["no policy covers this route; add one before agents may use it"],
	"rules": ["library.unknown_route"],
}

routed := finance.decision if input.route.name in {"payments", "finance"}

routed := access.decision if input.route.name == "access"

routed := procurement.decision if input.route.name == "procurement"

routed := customer.decision if input.route.name in {"support", "customer"}

routed := mcp.decision if input.route.name in {"mcp", "tools"}
