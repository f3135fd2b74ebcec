# Guards every route shares, checked before the domain policies
# (main.rego applies them first).
#
#   a method override                      deny
#     (an X-HTTP-Method-Override, X-HTTP-Method or X-Method-Override header,
#     or a `_method` field in the query or the body)
#   a path override                        deny
#     (an X-Original-URL or X-Rewrite-URL header)
#   a declared agent id that is not the    deny
#     verified one (an agent claiming to be another)
#   a declared on_behalf_of that is not    hold for security
#     the verified one (the token says the agent acts for someone else)
#
# The identity guards apply only when countersign verified the caller
# (identity.jwt, identity.mtls or identity.pod in the config): then
# input.agent.verified.mismatch lists the declared fields that disagree
# with what was proven, compared as separation of duties compares names.
#
# countersign judges the method and target on the request line and forwards
# them as they are; many frameworks (Rails, Laravel, Symfony, Express's
# method-override, ASP.NET, IIS, Google APIs) let one of these turn a POST
# into a DELETE, or one path into another. The policy would have judged a
# call the upstream never ran.
package countersign.guards

import rego.v1

override_headers := {"x-http-method-override", "x-http-method", "x-method-override"}

method_override contains sprintf("the %s header", [name]) if {
	some name, _ in object.get(input.request, "headers", {})
	name in override_headers
}

method_override contains "a _method query parameter" if {
	object.get(input.request, ["query", "_method"], null) != null
}

method_override contains "a _method body field" if {
	is_object(input.request.body)
	object.get(input.request.body, "_method", null) != null
}

path_override_headers := {"x-original-url", "x-rewrite-url"}

path_override contains sprintf("the %s header", [name]) if {
	some name, _ in object.get(input.request, "headers", {})
	name in path_override_headers
}

# The declared fields (id, on_behalf_of) that name someone else than the
# verified identity does; empty when nothing was verified.
default mismatch := []

mismatch := input.agent.verified.mismatch if is_array(input.agent.verified.mismatch)

impostor if "id" in mismatch

principal_mismatch if "on_behalf_of" in mismatch

tripped if count(method_override) > 0

tripped if count(path_override) > 0

tripped if impostor

tripped if principal_mismatch

decision := {
	"action": "deny",
	"risk": "high",
	"reasons": [sprintf(
		"the call asks the upstream to run another method than %s (%s); send the method itself instead",
		[input.request.method, concat(", ", sort(method_override))],
	)],
	"rules": ["library.method_override"],
} if count(method_override) > 0

else := {
	"action": "deny",
	"risk": "high",
	"reasons": [sprintf(
		"the call asks the upstream to run another path than %s (%s); send the path itself instead",
		[input.request.path, concat(", ", sort(path_override))],
	)],
	"rules": ["library.path_override"],
} if count(path_override) > 0

else := {
	"action": "deny",
	"risk": "critical",
	"reasons": [sprintf(
		"the call says it comes from agent %q, but it proved (%s) to be %q",
		[input.agent.id, input.agent.verified.method, input.agent.verified.agent],
	)],
	"rules": ["library.identity.impostor"],
} if impostor

else := {
	"action": "hold",
	"risk": "high",
	"reasons": [sprintf(
		"the call says it acts for %q, but its credential (%s) says it acts for %q; security must confirm who asked",
		[input.agent.on_behalf_of, input.agent.verified.method, input.agent.verified.on_behalf_of],
	)],
	"rules": ["library.identity.principal_mismatch"],
	"approval": {"groups": ["security"], "min": 1, "expires_in": "1h"},
} if principal_mismatch
