#!/usr/bin/env python3
"""Renders and checks the Helm chart offline, as CI does.

Each scenario in SCENARIOS is a set of values and what the chart must make of
them. For a scenario the chart accepts: lint with the real Helm library
(helm-python-sdk) and require no errors, render, validate every manifest
against the Kubernetes schemas (kubernetes-validate, strict), run the
scenario's assertions on the manifests, and check the countersign.yaml the
chart generated:

- SQLite scenarios run `countersign check` on it, with the policies the chart
  ships and the record moved to a temporary directory.
- The Dockerfile is parsed and the chart's paths checked against it: the
  config path, the record's directory, the ports and the user the image
  runs as must be the ones the chart mounts, probes and sets.
- PostgreSQL scenarios do not run `countersign check`: it has no way to skip
  the database, and CI has none to offer. Their config is parsed and its
  `audit` section asserted key by key (store, password_file, ca_file)
  instead; everything else in it is the same template the SQLite scenarios
  put through `countersign check`.

For a scenario the chart must refuse (`refuse`), rendering must fail with a
message containing the given words. (`helm lint` does not stop on a
template's `fail`, so lint is not run for those.)

    python3 helm/check.py [path/to/countersign-binary]
"""
import os
import subprocess
import sys
import tempfile

import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmRenderError
import kubernetes_validate

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "countersign")
KUBE_VERSION = "1.31.0"

PG_DSN = "postgres://countersign@db.example:5432/countersign?sslmode=verify-full"


class Rendered:
    """The manifests one scenario rendered, with lookups for assertions."""

    def __init__(self, docs):
        self.docs = docs

    def kinds(self):
        return sorted(f"{d['kind']}/{d['metadata']['name']}" for d in self.docs)

    def all(self, kind):
        return [d for d in self.docs if d["kind"] == kind]

    def one(self, kind, name=None):
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        if len(found) != 1:
            raise AssertionError(f"expected one {kind} {name or ''}, found {len(found)}: {self.kinds()}")
        return found[0]

    def config(self):
        return self.one("ConfigMap", "cs-countersign-config")["data"]["countersign.yaml"]

    def pod_spec(self):
        """The pod template that runs countersign (gateway or sidecar)."""
        return self.one("Deployment")["spec"]["template"]["spec"]

    def countersign_container(self):
        spec = self.pod_spec()
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            if c["name"] == "countersign":
                return c
        raise AssertionError("no countersign container")

    def volume(self, name):
        for v in self.pod_spec()["volumes"]:
            if v["name"] == name:
                return v
        raise AssertionError(f"no volume {name}")


def expect(cond, what):
    if not cond:
        raise AssertionError(what)


def assert_sqlite_gateway(r):
    d = r.one("Deployment", "cs-countersign")
    expect(d["spec"]["replicas"] == 1, "one replica")
    expect(d["spec"]["strategy"] == {"type": "Recreate"}, f"Recreate strategy, got {d['spec']['strategy']}")
    expect(not r.all("PodDisruptionBudget"), "no PodDisruptionBudget with one SQLite writer")
    expect("persistentVolumeClaim" in r.volume("countersign-data"), "the record on a PVC")
    pvc = r.one("PersistentVolumeClaim", "cs-countersign-data")
    expect(pvc["metadata"]["annotations"].get("helm.sh/resource-policy") == "keep", "the record's PVC outlives the release")
    expect(yaml.safe_load(r.config())["audit"] == {"store": "sqlite:///var/lib/countersign/audit.db"}, "sqlite audit section")


def assert_sidecar_sqlite(r):
    # Never one PVC shared by several agent pods: each pod gets its own emptyDir.
    d = r.one("Deployment", "cs-countersign-agent")
    expect(d["spec"]["replicas"] == 2, "two agent pods")
    expect(not r.all("PersistentVolumeClaim"), f"no PVC in sidecar mode: {r.kinds()}")
    expect(r.volume("countersign-data") == {"name": "countersign-data", "emptyDir": {}}, "a per-pod emptyDir")
    expect(yaml.safe_load(r.config())["audit"] == {"store": "sqlite:///var/lib/countersign/audit.db"}, "sqlite audit section")


def assert_postgres_audit(r, secret, key, ca):
    """The rendered config and pod read the password (and CA) from files."""
    config_text = r.config()
    audit = yaml.safe_load(config_text)["audit"]
    want = {"store": PG_DSN, "password_file": "/etc/countersign/pg/password"}
    if ca:
        want["ca_file"] = "/etc/countersign/pg/ca.pem"
    expect(audit == want, f"postgres audit section {want}, got {audit}")
    expect("s3cret" not in config_text, "no password in the config")
    vol = r.volume("countersign-postgres")["projected"]
    sources = vol["sources"]
    expect(sources[0] == {"secret": {"name": secret, "items": [{"key": key, "path": "password"}]}}, f"password from Secret {secret}/{key}, got {sources[0]}")
    if ca:
        expect(sources[1] == ca, f"CA source {ca}, got {sources[1]}")
    expect(len(sources) == (2 if ca else 1), f"sources {sources}")
    expect(vol["defaultMode"] == 0o440, "the password file readable by the pod's group only")
    c = r.countersign_container()
    mount = [m for m in c["volumeMounts"] if m["name"] == "countersign-postgres"]
    # A subPath mount would never see a rotated password.
    expect(mount == [{"name": "countersign-postgres", "mountPath": "/etc/countersign/pg", "readOnly": True}], f"password mounted as a file, got {mount}")
    refs = [e for e in c.get("env", []) if e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") == secret]
    expect(not refs, f"no env var from the password Secret: {refs}")
    expect(r.volume("countersign-data") == {"name": "countersign-data", "emptyDir": {}}, "nothing durable in the pod")
    expect(not r.all("PersistentVolumeClaim"), "no PVC with postgres")


def assert_gateway_postgres(r):
    d = r.one("Deployment", "cs-countersign")
    expect(d["spec"]["replicas"] == 3, "three replicas")
    strategy = d["spec"]["strategy"]
    expect(strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}, f"RollingUpdate, got {strategy}")
    pdb = r.one("PodDisruptionBudget", "cs-countersign")
    expect(pdb["spec"]["maxUnavailable"] == 1, "one pod at a time")
    expect(pdb["spec"]["selector"]["matchLabels"] == d["spec"]["template"]["metadata"]["labels"], "the PDB selects the gateway pods")
    expect(not r.all("Secret"), "existingSecret: the chart creates no Secret")
    ca = {"secret": {"name": "pg-ca", "items": [{"key": "ca.crt", "path": "ca.pem"}]}}
    assert_postgres_audit(r, "pg-credentials", "pg-password", ca)
    for name in ("cs-countersign", "cs-countersign-admin"):
        svc = r.one("Service", name)
        expect(svc["spec"]["selector"] == pdb["spec"]["selector"]["matchLabels"], f"{name} reaches every replica")


def assert_gateway_postgres_one_replica(r):
    d = r.one("Deployment", "cs-countersign")
    expect(d["spec"]["replicas"] == 1, "one replica")
    expect(d["spec"]["strategy"]["type"] == "RollingUpdate", "a shared record lets even one replica roll")
    # A budget for one pod could only block node drains.
    expect(not r.all("PodDisruptionBudget"), "no PodDisruptionBudget for one replica")
    assert_postgres_audit(r, "pg-credentials", "password", None)


def assert_sidecar_postgres(r):
    d = r.one("Deployment", "cs-countersign-agent")
    expect(d["spec"]["replicas"] == 3, "three agent pods")
    expect(d["spec"]["strategy"] == {"type": "RollingUpdate"}, "agent pods may overlap")
    expect(not r.all("PodDisruptionBudget"), "the agent's PDB is the agent's business")
    secret = r.one("Secret", "cs-countersign-postgres")
    expect(secret["stringData"] == {"password": "s3cret"}, "the chart-created password Secret")
    ca = {"configMap": {"name": "pg-ca", "items": [{"key": "ca.pem", "path": "ca.pem"}]}}
    assert_postgres_audit(r, "cs-countersign-postgres", "password", ca)
    expect(r.countersign_container().get("restartPolicy") == "Always", "countersign as a native sidecar")
    expect(not [x for x in r.all("Service") if x["metadata"]["name"] == "cs-countersign"], "no proxy Service in sidecar mode")
    svc = r.one("Service", "cs-countersign-admin")
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    expect(all(pod_labels.get(k) == v for k, v in svc["spec"]["selector"].items()), "the admin Service reaches every agent pod")
    expect([p["name"] for p in svc["spec"]["ports"]] == ["admin"], "the admin port")


PG_GATEWAY = {
    "replicaCount": 3,
    "store": {
        "type": "postgres",
        "postgres": {
            "dsn": PG_DSN,
            "existingSecret": "pg-credentials",
            "passwordKey": "pg-password",
            "ca": {"existingSecret": "pg-ca", "key": "ca.crt"},
        },
    },
}
PG_SIDECAR = {
    "mode": "sidecar",
    "sidecar": {"exampleAgent": {"replicaCount": 3}},
    "store": {
        "type": "postgres",
        "postgres": {"dsn": PG_DSN, "password": "s3cret", "ca": {"existingConfigMap": "pg-ca"}},
    },
}

# A public JWKS (RFC 7515 appendix A.3's P-256 key), for the identity scenarios.
PUBLIC_JWKS = (
    '{"keys": [{"kty": "EC", "crv": "P-256", "kid": "cluster-1", "alg": "ES256", "use": "sig",'
    ' "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}'
)

SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


def env_of(container, name):
    for e in container.get("env", []):
        if e["name"] == name:
            return e
    raise AssertionError(f"no env {name} in {container['name']}")


def assert_sidecar_identity(r):
    config = yaml.safe_load(r.config())
    expect(config["listen"].startswith("127.0.0.1:"), f"a pod-identity sidecar listens on loopback only, got {config['listen']}")
    expect(config["identity"]["pod"] == {"subject_env": "POD_IDENTITY"}, f"identity.pod, got {config['identity']}")
    jwt = config["identity"]["jwt"]
    expect(jwt["jwks_file"] == "/etc/countersign/jwks/jwks.json" and jwt["issuer"] == SA_ISSUER and jwt["audience"] == "countersign", f"identity.jwt, got {jwt}")
    c = r.countersign_container()
    expect(env_of(c, "POD_NAMESPACE")["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace", "namespace from the downward API")
    expect(env_of(c, "POD_SERVICE_ACCOUNT")["valueFrom"]["fieldRef"]["fieldPath"] == "spec.serviceAccountName", "service account from the downward API")
    expect(env_of(c, "POD_IDENTITY")["value"] == "$(POD_NAMESPACE)/$(POD_SERVICE_ACCOUNT)/$(POD_NAME)", "POD_IDENTITY composed from them")
    mounts = [m for m in c["volumeMounts"] if m["name"] == "countersign-jwks"]
    expect(mounts == [{"name": "countersign-jwks", "mountPath": "/etc/countersign/jwks", "readOnly": True}], f"the JWKS mounted as a directory, got {mounts}")
    expect(r.volume("countersign-jwks")["configMap"]["name"] == "cs-countersign-jwks", "the chart's JWKS ConfigMap")
    expect("cluster-1" in r.one("ConfigMap", "cs-countersign-jwks")["data"]["jwks.json"], "the JWKS in it")
    spec = r.pod_spec()
    agent = [c for c in spec["containers"] if c["name"] == "agent"][0]
    expect({"name": "countersign-token", "mountPath": "/var/run/secrets/countersign", "readOnly": True} in agent["volumeMounts"], "the agent gets its token")
    token = r.volume("countersign-token")["projected"]["sources"][0]["serviceAccountToken"]
    expect(token["audience"] == "countersign" and token["path"] == "token", f"a projected token for countersign's audience, got {token}")


def assert_gateway_jwks_url(r):
    jwt = yaml.safe_load(r.config())["identity"]["jwt"]
    expect(jwt["jwks_url"] == "https://issuer.example.com/keys" and "jwks_file" not in jwt, f"a JWKS URL, got {jwt}")
    expect(all(v["name"] != "countersign-jwks" for v in r.pod_spec()["volumes"]), "no JWKS volume with a URL")


def assert_secrets_are_files(r):
    """Reviewer keys, notify secrets and the admin token: files, not env."""
    c = r.countersign_container()
    names = [e["name"] for e in c.get("env", [])]
    expect(not [n for n in names if n.startswith(("COUNTERSIGN_REVIEWER", "COUNTERSIGN_NOTIFY", "COUNTERSIGN_ADMIN"))], f"no secret env vars, got {names}")
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    expect(mounts["countersign-secrets"]["mountPath"] == "/etc/countersign/secrets" and "subPath" not in mounts["countersign-secrets"], "the Secret mounted as a directory")
    expect(r.volume("countersign-secrets")["secret"]["secretName"] == "cs-countersign", "from the chart's Secret")
    config = yaml.safe_load(r.config())
    expect(config["reviewers"]["alice"]["key_file"] == "/etc/countersign/secrets/reviewer-alice", f"alice's key file: {config['reviewers']}")
    expect(config["admin"]["token_file"] == "/etc/countersign/secrets/admin-token", "the admin token file")
    expect(config["notify"][0]["secret_file"] == "/etc/countersign/secrets/notify-0", "the notify secret file")
    # The admin port on its own Service; the proxy Service has only the proxy port.
    proxy = r.one("Service", "cs-countersign")
    admin = r.one("Service", "cs-countersign-admin")
    expect([p["name"] for p in proxy["spec"]["ports"]] == ["proxy"], "proxy Service: proxy port only")
    expect([p["name"] for p in admin["spec"]["ports"]] == ["admin"], "admin Service: admin port only")


def assert_gateway_extras(r):
    spec = r.pod_spec()
    meta = r.one("Deployment", "cs-countersign")["spec"]["template"]["metadata"]
    expect(spec["serviceAccountName"] == "countersign-sa", f"service account, got {spec.get('serviceAccountName')}")
    expect(r.one("ServiceAccount", "countersign-sa")["automountServiceAccountToken"] is False, "the token is not mounted")
    expect(spec["priorityClassName"] == "critical-agents", "priorityClassName")
    expect(meta["labels"]["team"] == "payments", "podLabels")
    expect(meta["annotations"]["example.com/owner"] == "payments", "podAnnotations")
    c = r.countersign_container()
    expect({"name": "RUST_BACKTRACE", "value": "1"} in c["env"], f"extraEnv: {c.get('env')}")
    expect(any(m["name"] == "corp-ca" and m["mountPath"] == "/etc/corp-ca" for m in c["volumeMounts"]), "extraVolumeMounts")
    expect(any(v["name"] == "corp-ca" for v in spec["volumes"]), "extraVolumes")
    np = r.one("NetworkPolicy", "cs-countersign-admin-ingress")
    ingress = np["spec"]["ingress"]
    expect(ingress[0] == {"ports": [{"port": 8080, "protocol": "TCP"}]}, f"the proxy port stays open: {ingress}")
    expect(ingress[1]["ports"] == [{"port": 9901, "protocol": "TCP"}] and ingress[1]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}, f"the admin port from the named peers only: {ingress}")


def existing_config_checksum(values):
    manifests = render(values)
    for path, text in manifests.items():
        for doc in yaml.safe_load_all(text) if path.endswith(".yaml") else []:
            if doc and doc["kind"] == "Deployment":
                return doc["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    raise AssertionError("no Deployment")


def assert_existing_config_map(r):
    expect(not [d for d in r.all("ConfigMap") if d["metadata"]["name"] == "cs-countersign-config"], "no generated config")
    expect(r.volume("countersign-config")["configMap"]["name"] == "my-countersign-config", "the user's ConfigMap is mounted")
    # The checksum follows the ConfigMap named (so switching it rolls the pods).
    a = existing_config_checksum({"config": {"existingConfigMap": "my-countersign-config"}})
    b = existing_config_checksum({"config": {"existingConfigMap": "other-config"}})
    generated = existing_config_checksum({})
    expect(a != b and a != generated, "the checksum covers existingConfigMap")


SCENARIOS = {
    "default": {"values": {}, "check": "sqlite", "assert": assert_sqlite_gateway},
    "sidecar": {"values": {"mode": "sidecar", "persistence": {"type": "emptyDir"}}, "check": "sqlite"},
    "sidecar-sqlite-default-volume": {
        "values": {"mode": "sidecar", "sidecar": {"exampleAgent": {"replicaCount": 2}}},
        "check": "sqlite",
        "assert": assert_sidecar_sqlite,
    },
    "gateway-full": {
        "values": {
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
        "check": "sqlite",
        "assert": assert_secrets_are_files,
    },
    "gateway-extras": {
        "values": {
            "serviceAccount": {"create": True, "name": "countersign-sa"},
            "priorityClassName": "critical-agents",
            "podLabels": {"team": "payments"},
            "podAnnotations": {"example.com/owner": "payments"},
            "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
            "extraVolumes": [{"name": "corp-ca", "configMap": {"name": "corp-ca"}}],
            "extraVolumeMounts": [{"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}],
            "adminNetworkPolicy": {"enabled": True, "from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]},
        },
        "check": "sqlite",
        "assert": assert_gateway_extras,
    },
    "gateway-existing-config-map": {
        "values": {"config": {"existingConfigMap": "my-countersign-config"}},
        "check": "none",
        "assert": assert_existing_config_map,
    },
    "gateway-postgres": {"values": PG_GATEWAY, "check": "postgres", "assert": assert_gateway_postgres},
    "gateway-postgres-one-replica": {
        "values": {"store": {"type": "postgres", "postgres": {"dsn": PG_DSN, "existingSecret": "pg-credentials"}}},
        "check": "postgres",
        "assert": assert_gateway_postgres_one_replica,
    },
    "sidecar-postgres": {"values": PG_SIDECAR, "check": "postgres", "assert": assert_sidecar_postgres},
    "sidecar-identity": {
        "values": {
            "mode": "sidecar",
            "identity": {"jwt": {"enabled": True, "issuer": SA_ISSUER, "jwks": PUBLIC_JWKS}, "pod": {"enabled": True}},
            "config": {"routes": [{"name": "payments", "match": {"path_prefix": "/v1/payouts"}, "upstream": "http://payments:8080", "identity": {"required": True}}]},
        },
        "check": "sqlite",
        "assert": assert_sidecar_identity,
    },
    "gateway-jwks-url": {
        "values": {"identity": {"jwt": {"enabled": True, "issuer": "https://issuer.example.com", "jwksUrl": "https://issuer.example.com/keys"}}},
        "check": "sqlite",
        "assert": assert_gateway_jwks_url,
    },
    # Values the chart must refuse, with the words its message must contain.
    "pod-identity-in-gateway-mode": {
        "values": {"identity": {"pod": {"enabled": True}}},
        "refuse": "identity.pod.enabled needs mode: sidecar",
    },
    "jwt-without-keys": {
        "values": {"identity": {"jwt": {"enabled": True, "issuer": SA_ISSUER}}},
        "refuse": "exactly one of identity.jwt.jwksUrl",
    },
    "gateway-sqlite-replicas": {
        "values": {"replicaCount": 2},
        "refuse": "several writers on one SQLite file",
    },
    "sidecar-sqlite-shared-pvc": {
        "values": {"mode": "sidecar", "persistence": {"type": "pvc"}},
        "refuse": "every agent pod would write to one SQLite file",
    },
    "postgres-password-in-dsn": {
        "values": {"store": {"type": "postgres", "postgres": {"dsn": "postgres://countersign:s3cret@db:5432/cs", "existingSecret": "pg"}}},
        "refuse": "store.postgres.dsn contains a password",
    },
    "postgres-no-password": {
        "values": {"store": {"type": "postgres", "postgres": {"dsn": PG_DSN}}},
        "refuse": "there is no password",
    },
    "postgres-dsn-without-store-type": {
        "values": {"store": {"postgres": {"dsn": PG_DSN, "existingSecret": "pg"}}},
        "refuse": "store.type is sqlite",
    },
}

# Env values `countersign check` needs for the scenarios' secrets.
CHECK_ENV = {
    "COUNTERSIGN_ADMIN_TOKEN": "change-me",
    "COUNTERSIGN_REVIEWER_ALICE": "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYWxpY2U=",
    "COUNTERSIGN_REVIEWER_BOB": "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktYm9i",
    "COUNTERSIGN_NOTIFY_0": "whsec_Y291bnRlcnNpZ24tdGVzdC1rZXktaG9vaw==",
    "PAYMENTS_TOKEN": "Bearer x",
    "POD_IDENTITY": "agents/agent/agent-7d9f",
}


def fail(msg):
    print(f"helm check: {msg}", file=sys.stderr)
    sys.exit(1)


def render(values):
    chart = Chart.load(CHART)
    try:
        return chart.render(values, name="cs", namespace="agents", is_install=True)
    finally:
        chart.close()


def check_refusal(name, scenario):
    try:
        render(scenario["values"])
    except HelmRenderError as e:
        if scenario["refuse"] not in str(e):
            fail(f"{name}: refused, but the message does not say {scenario['refuse']!r}: {e}")
        print(f"ok  {name}: refused: {str(e).split(': ', 1)[-1]}")
        return
    fail(f"{name}: the chart rendered values it must refuse ({scenario['refuse']})")


def countersign_check(name, config, policies, binary, jwks=None, secrets=None):
    with tempfile.TemporaryDirectory() as tmp:
        # The Secret's keys as the files the pod mounts.
        os.mkdir(os.path.join(tmp, "secrets"))
        for key, value in (secrets or {}).items():
            with open(os.path.join(tmp, "secrets", key), "w") as f:
                f.write(value)
        config = config.replace("/etc/countersign/secrets/", os.path.join(tmp, "secrets") + "/")
        if jwks is not None:
            with open(os.path.join(tmp, "jwks.json"), "w") as f:
                f.write(jwks)
            config = config.replace("/etc/countersign/jwks/jwks.json", os.path.join(tmp, "jwks.json"))
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


def check_scenario(name, scenario, binary):
    values = scenario["values"]
    report = lint(CHART, values, kube_version=f"v{KUBE_VERSION}")
    errors = report.get("errors") or []
    errors += [m["error"] for m in report.get("messages", []) if m.get("severity") == 3]
    if errors:
        fail(f"{name}: lint errors: {errors}")
    warnings = [m["error"] for m in report.get("messages", []) if m.get("severity") == 2]
    try:
        manifests = render(values)
    except HelmRenderError as e:
        fail(f"{name}: the chart refused the values: {e}")
    docs = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            if "countersign is installed" not in text:
                fail(f"{name}: NOTES.txt did not render")
            # Real names only: what NOTES tells the user to run must work as printed.
            if "<" in text.replace("<release>", ""):
                fail(f"{name}: NOTES.txt has a placeholder: {text}")
            if "svc/cs-countersign-admin" not in text or "-n agents" not in text:
                fail(f"{name}: NOTES.txt does not name the admin Service and namespace: {text}")
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    for path, doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{name}: {path}: {doc['kind']} is not valid: {e.message} at {list(e.path)}")
    rendered = Rendered([d for _, d in docs])
    if "assert" in scenario:
        try:
            scenario["assert"](rendered)
        except AssertionError as e:
            fail(f"{name}: {e}")
    if scenario["check"] == "sqlite":
        policies = rendered.one("ConfigMap", "cs-countersign-policies")["data"]
        jwks = [d["data"]["jwks.json"] for d in rendered.all("ConfigMap") if d["metadata"]["name"] == "cs-countersign-jwks"]
        secrets = [d.get("stringData", {}) for d in rendered.all("Secret") if d["metadata"]["name"] == "cs-countersign"]
        countersign_check(name, rendered.config(), policies, binary, jwks[0] if jwks else None, secrets[0] if secrets else None)
        checked = "countersign check passed"
    elif scenario["check"] == "none":
        checked = "no generated config to check"
    else:
        # See the module doc: no database here, so the audit keys are asserted.
        audit = yaml.safe_load(rendered.config())["audit"]
        if not str(audit.get("store", "")).startswith("postgres://") or "password_file" not in audit:
            fail(f"{name}: the config's audit section is not a postgres store with a password file: {audit}")
        checked = "postgres audit keys present"
    print(f"ok  {name}: lint clean ({len(warnings)} warnings), {len(docs)} manifests valid, {checked}: {', '.join(rendered.kinds())}")


def dockerfile_image():
    """What the image built from the Dockerfile provides: the final stage's
    USER, WORKDIR, VOLUME, EXPOSE, ENTRYPOINT and CMD (JSON forms)."""
    import json

    path = os.path.join(HERE, "..", "Dockerfile")
    with open(path) as f:
        lines = []
        for raw in f.read().replace("\\\n", " ").splitlines():
            line = raw.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    stage = {}
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            stage = {"expose": []}  # only the last stage is the image
        elif word == "EXPOSE":
            stage["expose"] += [int(p.split("/")[0]) for p in rest.split()]
        elif word in ("ENTRYPOINT", "CMD", "VOLUME"):
            stage[word.lower()] = json.loads(rest)
        elif word in ("USER", "WORKDIR"):
            stage[word.lower()] = rest.strip()
    return stage


def check_dockerfile():
    image = dockerfile_image()
    values = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
    r = Rendered([d for p, t in sorted(render({}).items()) if p.endswith(".yaml") for d in yaml.safe_load_all(t) if d])
    c = r.countersign_container()
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    config_path = c["args"][c["args"].index("--config") + 1]
    problems = []
    if image.get("cmd") != c["args"]:
        problems.append(f"the image's CMD {image.get('cmd')} is not the chart's args {c['args']}")
    if os.path.dirname(config_path) not in mounts:
        problems.append(f"the chart's config {config_path} is not under a mounted directory")
    if image.get("entrypoint", [""])[0] != "/usr/local/bin/countersign":
        problems.append(f"the image's ENTRYPOINT is {image.get('entrypoint')}")
    for v in image.get("volume", []):
        if v not in mounts:
            problems.append(f"the image's VOLUME {v} is not mounted by the chart ({sorted(mounts)})")
    if image.get("workdir") not in mounts:
        problems.append(f"the image's WORKDIR {image.get('workdir')} is not a mounted, writable directory")
    if "sqlite:///var/lib/countersign/" not in r.config() or "/var/lib/countersign" not in image.get("volume", []):
        problems.append("the record's directory differs between the image and the chart")
    for port in (values["proxy"]["port"], values["admin"]["port"]):
        if port not in image["expose"]:
            problems.append(f"the chart's port {port} is not EXPOSEd by the image ({image['expose']})")
    uid = str(values["podSecurityContext"]["runAsUser"])
    if image.get("user", "").split(":")[0] != uid:
        problems.append(f"the image runs as {image.get('user')}, the chart as {uid}")
    if problems:
        fail("Dockerfile and chart disagree: " + "; ".join(problems))
    print(f"ok  Dockerfile: config {config_path}, record /var/lib/countersign, ports {image['expose']}, user {image['user']} match the chart")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "target", "debug", "countersign")
    check_dockerfile()
    for name, scenario in SCENARIOS.items():
        if "refuse" in scenario:
            check_refusal(name, scenario)
        else:
            check_scenario(name, scenario, binary)
    print(f"{len(SCENARIOS)} passed, 0 failed")


if __name__ == "__main__":
    main()
