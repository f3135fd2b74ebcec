#!/usr/bin/env python3
"""Renders and checks the Helm chart offline, as CI does.

For each scenario (default values, sidecar mode, gateway with everything on):
lint with the real Helm library (helm-python-sdk) and require no errors,
render, validate every manifest against the Kubernetes schemas
(kubernetes-validate, strict), and run `countersign check` on the
countersign.yaml the chart generated, with the policies it ships.

    python3 helm/check.py [path/to/countersign-binary]
"""
import os
import subprocess
import sys
import tempfile

import yaml
from helm_python.chart import Chart, lint
import kubernetes_validate

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "countersign")
KUBE_VERSION = "1.31.0"

SCENARIOS = {
    "default": {},
    "sidecar": {"mode": "sidecar", "persistence": {"type": "emptyDir"}},
    "gateway-full": {
        "config": {
            "reviewers": {"alice": {"groups": ["finance-approvers"]}, "bob": {}},
            "notify": [{"url": "https://hooks.example.com/countersign"}],
            "routes": [
                {
                    "name": "payments",
                    "match": {"path_prefix": "/v1/payouts"},
                    "upstream": "https://payments.internal:8443",
                    "upstream_auth": {"header": "authorization", "value_env": "PAYMENTS_TOKEN"},
                }
            ],
        },
        "admin": {"publicUrl": "https://countersign-admin.example.com"},
        "secrets": {
            "create": {
                "adminToken": "change-me",
                "reviewers": {"alice": "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYWxpY2U=", "bob": "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYm9i"},
                "notify": ["whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktaG9vaw=="],
            },
            "extraEnvFromSecret": {"PAYMENTS_TOKEN": "payments-token"},
        },
        "networkPolicy": {"enabled": True},
    },
}

# Env values `countersign check` needs for the scenarios' secrets.
CHECK_ENV = {
    "COUNTERSIGN_ADMIN_TOKEN": "change-me",
    "COUNTERSIGN_REVIEWER_ALICE": "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYWxpY2U=",
    "COUNTERSIGN_REVIEWER_BOB": "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYm9i",
    "COUNTERSIGN_NOTIFY_0": "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktaG9vaw==",
    "PAYMENTS_TOKEN": "Bearer x",
}


def fail(msg):
    print(f"helm check: {msg}", file=sys.stderr)
    sys.exit(1)


def check_scenario(name, values, binary):
    report = lint(CHART, values, kube_version=f"v{KUBE_VERSION}")
    errors = report.get("errors") or []
    errors += [m["error"] for m in report.get("messages", []) if m.get("severity") == 3]
    if errors:
        fail(f"{name}: lint errors: {errors}")
    warnings = [m["error"] for m in report.get("messages", []) if m.get("severity") == 2]
    chart = Chart.load(CHART)
    try:
        rendered = chart.render(values, name="cs", namespace="agents", is_install=True)
    finally:
        chart.close()
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            if "countersign is installed" not in text:
                fail(f"{name}: NOTES.txt did not render")
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for _, d in docs)
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{name}: {path}: {doc['kind']} is not valid: {e.message} at {list(e.path)}")
    configmaps = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "ConfigMap"}
    config = configmaps["cs-countersign-config"]["data"]["countersign.yaml"]
    policies = configmaps["cs-countersign-policies"]["data"]
    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "policies"))
        for file, src in policies.items():
            with open(os.path.join(tmp, "policies", file), "w") as f:
                f.write(src)
        config = config.replace("/etc/countersign/policies", os.path.join(tmp, "policies"))
        config = config.replace("sqlite:///var/lib/countersign/audit.db", f"sqlite://{tmp}/audit.db")
        with open(os.path.join(tmp, "countersign.yaml"), "w") as f:
            f.write(config)
        out = subprocess.run(
            [binary, "check", "--config", os.path.join(tmp, "countersign.yaml")],
            env={**os.environ, **CHECK_ENV},
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            fail(f"{name}: countersign check refused the generated config: {out.stderr.strip()}\n{config}")
    print(f"ok  {name}: lint clean ({len(warnings)} warnings), {len(docs)} manifests valid: {', '.join(kinds)}")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "target", "debug", "countersign")
    for name, values in SCENARIOS.items():
        check_scenario(name, values, binary)
    print(f"{len(SCENARIOS)} passed, 0 failed")


if __name__ == "__main__":
    main()
