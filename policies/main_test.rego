package library_test.main

import rego.v1

import data.countersign

test_unknown_route_is_denied if {
	d := countersign.decision with input as {"route": {"name": "crm"}, "request": {"method": "GET", "path": "/"}, "evidence": {}}
	d.action == "deny"
	d.rules == ["library.unknown_route"]
}

test_routes_dispatch_to_their_domain if {
	d := countersign.decision with input as {"route": {"name": "finance"}, "request": {"method": "POST", "path": "/v1/payouts", "body": {"amount": 1, "currency": "EUR"}}, "evidence": {}}
	d.rules == ["finance.payout.missing_evidence"]
}
