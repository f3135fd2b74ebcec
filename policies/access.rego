# IT access: role grants and revocations.
#
#   POST   /v1/grants       {"user": "dan", "role": "prod-db-admin", "system": "billing"}
#   DELETE /v1/grants/<id>  revoke
#   evidence: ticket (required for grants); manager: the user's manager, a
#   configured reviewer.
#
#   revoking                                   allow (removing access is always safe to do)
#   granting to the person the agent acts for  deny (no self-grants; declared or verified)
#   grant without a ticket                     deny
#   admin or production role                   hold for the manager and security (2 approvals)
#   any other role                             allow
package countersign.access

import rego.v1

grant if {
	input.request.method == "POST"
	input.request.path == "/v1/grants"
}

revoke if {
	input.request.method == "DELETE"
	startswith(input.request.path, "/v1/grants/")
}

role := object.get(object.get(input.request, "body", {}), "role", "")

grantee := object.get(object.get(input.request, "body", {}), "user", "")

privileged if endswith(role, "admin")

privileged if startswith(role, "prod")

privileged if role in {"root", "owner", "superuser"}

self_grant if grantee in {input.agent.on_behalf_of, input.agent.id}

# Also the person and agent countersign verified (a token's sub and act.sub),
# whatever the headers declare.
self_grant if grantee in {input.agent.verified.on_behalf_of, input.agent.verified.agent}

default decision := {
	"action": "deny",
	"risk": "medium",
	"reasons": ["no access rule allows this call"],
	"rules": ["access.default_deny"],
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": ["reads change no access"],
	"rules": ["access.read"],
} if input.request.method in {"GET", "HEAD"}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": ["revoking access reduces risk"],
	"rules": ["access.revoke"],
} if revoke

decision := {
	"action": "deny",
	"risk": "critical",
	"reasons": [sprintf("%s would be granted %q by an agent acting for themselves; self-grants are not allowed", [grantee, role])],
	"rules": ["access.grant.self"],
} if {
	grant
	self_grant
}

decision := {
	"action": "deny",
	"risk": "high",
	"reasons": ["a grant must carry its access ticket (x-evidence-ticket)"],
	"rules": ["access.grant.missing_ticket"],
} if {
	grant
	not self_grant
	not input.evidence.ticket
}

decision := {
	"action": "hold",
	"risk": "high",
	"reasons": [sprintf("%q is an admin or production role; %s's manager and security must both approve", [role, grantee])],
	"rules": ["access.grant.privileged"],
	"approval": {"reviewers": managers, "groups": ["security"], "min": 2, "expires_in": "8h"},
} if {
	grant
	not self_grant
	input.evidence.ticket
	privileged
}

# The manager named in the evidence, when there is one.
managers := [m | m := input.evidence.manager]

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": [sprintf("%q is not a privileged role", [role])],
	"rules": ["access.grant.ordinary"],
} if {
	grant
	not self_grant
	input.evidence.ticket
	not privileged
}
