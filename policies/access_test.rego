package library_test.access

import rego.v1

import data.countersign

grant(user, role, evidence) := {
	"route": {"name": "access"},
	"agent": {"id": "it-agent", "on_behalf_of": "erin"},
	"request": {"method": "POST", "path": "/v1/grants", "body": {"user": user, "role": role}},
	"evidence": evidence,
}

test_production_role_is_held_for_manager_and_security if {
	d := countersign.decision with input as grant("dan", "prod-db-admin", {"ticket": "IT-7", "manager": "mia"})
	d.action == "hold"
	d.approval.reviewers == ["mia"]
	d.approval.groups == ["security"]
	d.approval.min == 2
	d.rules == ["access.grant.privileged"]
}

test_admin_role_is_held if {
	d := countersign.decision with input as grant("dan", "billing-admin", {"ticket": "IT-7"})
	d.action == "hold"
}

test_ordinary_role_is_allowed if {
	d := countersign.decision with input as grant("dan", "viewer", {"ticket": "IT-8"})
	d.action == "allow"
}

test_self_grant_is_denied if {
	d := countersign.decision with input as grant("erin", "viewer", {"ticket": "IT-9"})
	d.action == "deny"
	d.rules == ["access.grant.self"]
}

test_a_grant_to_the_verified_principal_is_a_self_grant_whatever_is_declared if {
	call := object.union(grant("frank", "viewer", {"ticket": "IT-9"}), {"agent": {
		"id": "it-agent", "on_behalf_of": "erin",
		"verified": {"method": "jwt", "subject": "frank", "actor": "it-agent", "agent": "it-agent", "on_behalf_of": "frank", "mismatch": ["on_behalf_of"]},
	}})
	d := data.countersign.access.decision with input as call
	d.rules == ["access.grant.self"]
}

test_grant_without_ticket_is_denied if {
	d := countersign.decision with input as grant("dan", "viewer", {})
	d.rules == ["access.grant.missing_ticket"]
}

test_revoking_is_allowed if {
	d := countersign.decision with input as {"route": {"name": "access"}, "agent": {}, "request": {"method": "DELETE", "path": "/v1/grants/g-17"}, "evidence": {}}
	d.action == "allow"
	d.rules == ["access.revoke"]
}
