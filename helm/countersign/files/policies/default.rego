# The chart's starter policy: reads are allowed, everything else is denied
# until you ship your own policies (values: policies.files or
# policies.existingConfigMap). See policies/README.md in the repository.
package countersign

import rego.v1

default decision := {
	"action": "deny",
	"risk": "medium",
	"reasons": ["no policy allows this call yet; add policies for this route"],
	"rules": ["starter.default_deny"],
}

decision := {
	"action": "allow",
	"risk": "low",
	"reasons": ["reads do not change anything"],
	"rules": ["starter.read"],
} if {
	input.request.method in {"GET", "HEAD"}
}
