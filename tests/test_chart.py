"""charts/sealgate: rendered, linted and validated offline (issue 6, SPEC §7 and §8 "Deployment").

The chart is rendered by Helm's own Go engine through ``helm-python-sdk`` (no helm binary),
linted with ``helm lint --strict``, and every rendered object is validated strictly against
the Kubernetes OpenAPI schemas ``kubernetes-validate`` ships (1.30 and the newest it has).
Objects without a schema there (cert-manager Issuer/Certificate, ServiceMonitor) are checked
by their own assertions. ``lookup`` is exercised against a fake API server on loopback.
"""

from __future__ import annotations

import base64
import copy
import importlib
import json
import os
import shlex
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from webhook.certs import generate_certificates, kubectl_hints
from webhook.policy import load_policy_dir


def _require(module: str) -> ModuleType:
    """The chart extra; missing is a skip for a developer, a failure in CI."""
    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{module} is not installed: pip install -e '.[chart]'",
                    allow_module_level=True)


helm = _require("helm_python")
kubernetes_validate = _require("kubernetes_validate")
kv_utils = _require("kubernetes_validate.utils")

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "charts" / "sealgate"
RELEASE = "sealgate"
NAMESPACE = "sealgate-system"
SERVICE_DNS = f"{RELEASE}.{NAMESPACE}.svc"
KUBE_VERSIONS = ["1.30", kv_utils.latest_version()]
# Kinds kubernetes-validate has no schema for; each is asserted on below.
NO_SCHEMA = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "Certificate"),
             ("monitoring.coreos.com/v1", "ServiceMonitor"),
             ("sealgate.dev/v1alpha1", "ImagePolicy")}

POD_KINDS = [
    ("", "pods"), ("", "pods/ephemeralcontainers"), ("", "replicationcontrollers"),
    ("apps", "deployments"), ("apps", "replicasets"), ("apps", "statefulsets"),
    ("apps", "daemonsets"), ("batch", "jobs"), ("batch", "cronjobs"),
]

CA_PEM_PLACEHOLDER = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

VALUE_SETS: dict[str, dict[str, Any]] = {
    "helm": {},
    "certManager": {"tls": {"mode": "certManager"}},
    "existingSecret": {
        "tls": {"mode": "existingSecret", "secretName": "my-tls",
                "caBundle": base64.b64encode(CA_PEM_PLACEHOLDER.encode()).decode()},
    },
    "everything": {
        "fullnameOverride": "gate",
        "image": {"repository": "registry.example.com/platform/sealgate", "tag": "1.2.3",
                  "digest": "sha256:" + "ab" * 32, "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "pull"}],
        "serviceAccount": {"create": True, "name": "gate-sa", "annotations": {"a": "b"}},
        "podAnnotations": {"example.com/team": "platform"},
        "podLabels": {"team": "platform"},
        "podAntiAffinity": "hard",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "topologySpreadConstraints": [{
            "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "sealgate"}},
        }],
        "priorityClassName": "system-cluster-critical",
        "replicaCount": 3,
        "podDisruptionBudget": {"minAvailable": 2},
        "webhook": {"failurePolicy": "Ignore", "timeoutSeconds": 5,
                    "excludeNamespaces": ["monitoring", "kube-system"]},
        "mutate": {"enabled": True},
        "config": {"logLevel": "debug", "modeOverride": "audit",
                   "insecureRegistries": ["registry.local:5000", "10.0.0.1:5000"],
                   "extraEnv": [{"name": "SEALGATE_CACHE_TTL", "value": "5m"}]},
        "policies": {"a.yaml": "# nothing\n"},
        "registryAuth": {"existingSecret": "regcred"},
        "trustedRoots": {"files": {"trusted_root.json": "{}"}},
        "tls": {"mode": "certManager",
                "certManager": {"issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer"},
                                "duration": "2160h", "renewBefore": "360h"}},
        "serviceMonitor": {"enabled": True, "interval": "1m", "labels": {"release": "prom"}},
    },
    "single-replica-existing-roots": {
        "replicaCount": 1,
        "podAntiAffinity": "none",
        "serviceAccount": {"create": False},
        "trustedRoots": {"existingConfigMap": "sigstore-roots"},
        "serviceMonitor": {"enabled": True},
        "webhook": {"timeoutSeconds": 3},
    },
    "custom-affinity-existing-secret-monitor": {
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "node-role", "operator": "In", "values": ["infra"]}]}]}}},
        "tls": {"mode": "existingSecret", "caBundle": CA_PEM_PLACEHOLDER},
        "serviceMonitor": {"enabled": True},
        "config": {"deadline": "7500ms"},
    },
}


# --------------------------------------------------------------------------- rendering


class Rendered:
    """The objects of one render, by kind, plus NOTES.txt."""

    def __init__(self, manifests: dict[str, str]) -> None:
        self.notes = ""
        self.objects: list[dict[str, Any]] = []
        for path, text in sorted(manifests.items()):
            if path.endswith("NOTES.txt"):
                self.notes = text
                continue
            self.objects.extend(doc for doc in yaml.safe_load_all(text) if doc)

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str) -> dict[str, Any]:
        (found,) = self.all(kind)
        return found

    def named(self, kind: str, name: str) -> dict[str, Any]:
        (found,) = [o for o in self.all(kind) if o["metadata"]["name"] == name]
        return found

    @property
    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}

    @property
    def pod(self) -> dict[str, Any]:
        spec: dict[str, Any] = self.one("Deployment")["spec"]["template"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        (container,) = self.pod["spec"]["containers"]
        return dict(container)

    @property
    def env(self) -> dict[str, str]:
        return {e["name"]: e.get("value", "") for e in self.container["env"]}

    @property
    def checksum(self) -> str:
        return str(self.pod["metadata"]["annotations"]["checksum/tls"])


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


def render(chart: Any, values: dict[str, Any] | None = None, *, name: str = RELEASE,
           namespace: str = NAMESPACE, cluster: Any = None) -> Rendered:
    options = {"name": name, "namespace": namespace, "is_install": True}
    if cluster is None:
        return Rendered(chart.render(copy.deepcopy(values or {}), **options))
    return Rendered(cluster.render(chart, copy.deepcopy(values or {}), **options))


@pytest.fixture(scope="module")
def rendered(chart: Any) -> dict[str, Rendered]:
    return {name: render(chart, values) for name, values in VALUE_SETS.items()}


# --------------------------------------------------------------------------- lint + schemas


def test_chart_metadata(chart: Any) -> None:
    meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "sealgate"
    assert meta["kubeVersion"] == ">=1.30.0-0"
    assert chart.schema is not None


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_lint_strict(value_set: str) -> None:
    report = helm.lint(CHART, copy.deepcopy(VALUE_SETS[value_set]), strict=True,
                       namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert problems == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_objects_valid_against_kubernetes_schemas(
    rendered: dict[str, Rendered], value_set: str, kube_version: str
) -> None:
    without_schema = set()
    for obj in rendered[value_set].objects:
        try:
            kubernetes_validate.validate(obj, kube_version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            without_schema.add((obj["apiVersion"], obj["kind"]))
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} "
                        f"at {list(exc.absolute_path)}")
    assert without_schema <= NO_SCHEMA


def test_strict_validation_catches_an_unknown_field(rendered: dict[str, Rendered]) -> None:
    deployment = copy.deepcopy(rendered["helm"].one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]["runAsRoot"] = 1
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, "1.30", strict=True)


def test_expected_objects(rendered: dict[str, Rendered]) -> None:
    base = {"ServiceAccount", "Service", "Deployment", "PodDisruptionBudget", "ConfigMap",
            "ValidatingWebhookConfiguration", "ClusterRole", "ClusterRoleBinding"}
    assert rendered["helm"].kinds == base | {"Secret"}
    assert rendered["certManager"].kinds == base | {"Issuer", "Certificate"}
    assert rendered["existingSecret"].kinds == base
    assert rendered["everything"].kinds == (
        base | {"Certificate", "MutatingWebhookConfiguration", "ServiceMonitor"})
    assert len(rendered["everything"].all("ConfigMap")) == 2  # policies, trusted roots
    single = rendered["single-replica-existing-roots"]
    assert single.kinds == {"Service", "Deployment", "ConfigMap", "Secret",
                            "ValidatingWebhookConfiguration", "ServiceMonitor",
                            "ClusterRole", "ClusterRoleBinding"}
    for result in rendered.values():
        for obj in result.objects:
            if obj["kind"] not in ("ValidatingWebhookConfiguration",
                                   "MutatingWebhookConfiguration", "ClusterRole",
                                   "ClusterRoleBinding"):
                assert obj["metadata"]["namespace"] == NAMESPACE, obj["kind"]


# --------------------------------------------------------------------------- webhooks (SPEC §7)


def _webhook(result: Rendered, kind: str = "ValidatingWebhookConfiguration") -> dict[str, Any]:
    config = result.one(kind)
    assert config["apiVersion"] == "admissionregistration.k8s.io/v1"
    # policies.sealgate.dev (ImagePolicy objects, policySource crd) is tested in test_kube_chart
    (hook,) = [h for h in config["webhooks"] if h["name"] != "policies.sealgate.dev"]
    return dict(hook)


def _rule_kinds(hook: dict[str, Any]) -> list[tuple[str, str]]:
    kinds = []
    for rule in hook["rules"]:
        assert rule["operations"] == ["CREATE", "UPDATE"]
        assert rule["apiVersions"] == ["v1"]
        assert rule["scope"] == "Namespaced"
        (group,) = rule["apiGroups"]
        kinds.extend((group, resource) for resource in rule["resources"])
    return kinds


def test_validating_webhook_as_spec(rendered: dict[str, Rendered]) -> None:
    hook = _webhook(rendered["helm"])
    assert hook["name"] == "validate.sealgate.dev"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert hook["sideEffects"] == "None"  # so `kubectl --dry-run=server` reaches it
    assert hook["failurePolicy"] == "Fail"
    assert hook["timeoutSeconds"] == 10
    assert hook["clientConfig"]["service"] == {
        "name": RELEASE, "namespace": NAMESPACE, "path": "/validate", "port": 443,
    }
    assert hook["namespaceSelector"] == {"matchExpressions": [{
        "key": "kubernetes.io/metadata.name", "operator": "NotIn",
        "values": ["kube-system", NAMESPACE],
    }]}
    assert sorted(_rule_kinds(hook)) == sorted(POD_KINDS)
    assert "objectSelector" not in hook
    assert "reinvocationPolicy" not in hook


def test_webhook_settings_are_configurable(rendered: dict[str, Rendered]) -> None:
    result = rendered["everything"]
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        hook = _webhook(result, kind)
        assert hook["failurePolicy"] == "Ignore"
        assert hook["timeoutSeconds"] == 5
        assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == [
            "kube-system", NAMESPACE, "monitoring",
        ]
        assert hook["clientConfig"]["service"]["name"] == "gate"
    # The webhook's own deadline stays below the API server's timeout (SPEC §4).
    assert result.env["SEALGATE_DEADLINE"] == "3s"
    assert rendered["helm"].env["SEALGATE_DEADLINE"] == "8s"
    assert rendered["single-replica-existing-roots"].env["SEALGATE_DEADLINE"] == "2400ms"
    assert rendered["custom-affinity-existing-secret-monitor"].env["SEALGATE_DEADLINE"] == "7500ms"


def test_release_namespace_is_excluded(chart: Any) -> None:
    result = render(chart, name="gatekeeper", namespace="security")
    hook = _webhook(result)
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == [
        "kube-system", "security",
    ]
    assert hook["clientConfig"]["service"] == {
        "name": "gatekeeper-sealgate", "namespace": "security", "path": "/validate", "port": 443,
    }


def test_mutating_webhook_off_by_default(rendered: dict[str, Rendered]) -> None:
    for name in ("helm", "certManager", "existingSecret"):
        assert "MutatingWebhookConfiguration" not in rendered[name].kinds
        assert rendered[name].env["SEALGATE_MUTATE"] == "false"


@pytest.mark.parametrize("mode", ["helm", "certManager", "existingSecret"])
def test_mutating_webhook_when_enabled(chart: Any, mode: str) -> None:
    values = copy.deepcopy(VALUE_SETS[mode])
    values["mutate"] = {"enabled": True}
    result = render(chart, values)
    hook = _webhook(result, "MutatingWebhookConfiguration")
    validating = _webhook(result)
    assert hook["name"] == "mutate.sealgate.dev"
    assert hook["reinvocationPolicy"] == "IfNeeded"
    assert hook["clientConfig"]["service"]["path"] == "/mutate"
    assert hook["sideEffects"] == "None"
    assert hook["admissionReviewVersions"] == ["v1"]
    assert sorted(_rule_kinds(hook)) == sorted(POD_KINDS)
    assert hook["namespaceSelector"] == validating["namespaceSelector"]
    assert hook["clientConfig"].get("caBundle") == validating["clientConfig"].get("caBundle")
    assert (result.one("MutatingWebhookConfiguration")["metadata"].get("annotations")
            == result.one("ValidatingWebhookConfiguration")["metadata"].get("annotations"))
    assert result.env["SEALGATE_MUTATE"] == "true"


# --------------------------------------------------------------------------- Deployment


def test_deployment_hardening(rendered: dict[str, Rendered]) -> None:
    result = rendered["helm"]
    deployment = result.one("Deployment")
    assert deployment["spec"]["replicas"] == 2
    pod = result.pod["spec"]
    # policySource crd (the default) watches ImagePolicy objects: the one token it needs
    assert pod["automountServiceAccountToken"] is True
    assert pod["serviceAccountName"] == RELEASE
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    term = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert term[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (term[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
            == deployment["spec"]["selector"]["matchLabels"])

    container = result.container
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["runAsNonRoot"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(container["resources"]) == {"requests", "limits"}

    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert volumes[mounts["/etc/sealgate/tls"]["name"]]["secret"]["secretName"] == "sealgate-tls"
    policy_mount = mounts["/etc/sealgate/policies"]
    assert "subPath" not in policy_mount  # a subPath mount never sees ConfigMap updates
    assert volumes[policy_mount["name"]]["configMap"] == {"name": "sealgate-policies"}
    assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[probe]["httpGet"] == {"path": path, "port": "https", "scheme": "HTTPS"}
    assert container["ports"] == [{"name": "https", "containerPort": 8443, "protocol": "TCP"}]
    assert container["command"] == ["sealgate"]
    assert container["args"] == [
        "serve", "--cert=/etc/sealgate/tls/tls.crt", "--key=/etc/sealgate/tls/tls.key",
        "--policies=/etc/sealgate/policies", "--log-level=info",
    ]
    assert result.env == {"SEALGATE_HOST": "0.0.0.0", "SEALGATE_PORT": "8443",
                          "SEALGATE_DEADLINE": "8s", "SEALGATE_MUTATE": "false",
                          "SEALGATE_POLICY_SOURCE": "crd", "SEALGATE_WORKERS": "1"}
    assert container["image"] == "sealgate:0.1.0"


def test_deployment_options(rendered: dict[str, Rendered]) -> None:
    result = rendered["everything"]
    pod = result.pod
    spec = pod["spec"]
    assert result.one("Deployment")["spec"]["replicas"] == 3
    assert result.container["image"] == (
        "registry.example.com/platform/sealgate:1.2.3@sha256:" + "ab" * 32)
    assert result.container["imagePullPolicy"] == "Always"
    assert spec["imagePullSecrets"] == [{"name": "pull"}]
    assert spec["serviceAccountName"] == "gate-sa"
    assert result.one("ServiceAccount")["metadata"]["name"] == "gate-sa"
    assert spec["priorityClassName"] == "system-cluster-critical"
    assert spec["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert spec["tolerations"][0]["key"] == "dedicated"
    assert spec["topologySpreadConstraints"][0]["maxSkew"] == 1
    hard = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert hard[0]["topologyKey"] == "kubernetes.io/hostname"
    assert pod["metadata"]["labels"]["team"] == "platform"
    assert pod["metadata"]["annotations"]["example.com/team"] == "platform"
    assert result.one("PodDisruptionBudget")["spec"]["minAvailable"] == 2
    assert "--log-level=debug" in result.container["args"]
    env = result.env
    assert env["SEALGATE_MODE_OVERRIDE"] == "audit"
    assert env["SEALGATE_INSECURE_REGISTRIES"] == "registry.local:5000,10.0.0.1:5000"
    assert env["SEALGATE_REGISTRY_AUTH"] == "/etc/sealgate/registry-auth/config.json"
    assert env["SEALGATE_CACHE_TTL"] == "5m"
    assert env["SEALGATE_MUTATE"] == "true"

    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in result.container["volumeMounts"]}
    assert mounts["registry-auth"] == "/etc/sealgate/registry-auth"
    assert volumes["registry-auth"]["secret"]["secretName"] == "regcred"
    assert volumes["registry-auth"]["secret"]["items"] == [
        {"key": ".dockerconfigjson", "path": "config.json"}]
    assert mounts["trusted-roots"] == "/etc/sealgate/trusted-roots"
    roots = result.named("ConfigMap", volumes["trusted-roots"]["configMap"]["name"])
    assert roots["data"] == {"trusted_root.json": "{}"}


def test_single_replica_and_existing_trusted_roots(rendered: dict[str, Rendered]) -> None:
    result = rendered["single-replica-existing-roots"]
    assert "PodDisruptionBudget" not in result.kinds  # minAvailable 1 of 1 would block drains
    spec = result.pod["spec"]
    assert "affinity" not in spec
    assert spec["serviceAccountName"] == "default"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["trusted-roots"]["configMap"] == {"name": "sigstore-roots"}
    assert [c["metadata"]["name"] for c in result.all("ConfigMap")] == ["sealgate-policies"]


def test_custom_affinity_replaces_anti_affinity(rendered: dict[str, Rendered]) -> None:
    affinity = rendered["custom-affinity-existing-secret-monitor"].pod["spec"]["affinity"]
    assert set(affinity) == {"nodeAffinity"}


def test_service_and_pdb(rendered: dict[str, Rendered]) -> None:
    result = rendered["helm"]
    service = result.one("Service")
    selector = result.one("Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    pdb = result.one("PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"] == {"minAvailable": 1, "selector": {"matchLabels": selector}}
    assert result.one("ServiceAccount")["automountServiceAccountToken"] is False


# --------------------------------------------------------------------------- TLS modes


def _pem_cert(b64: str) -> x509.Certificate:
    return x509.load_pem_x509_certificate(base64.b64decode(b64))


def test_helm_mode_generates_a_ca_and_serving_certificate(rendered: dict[str, Rendered]) -> None:
    result = rendered["helm"]
    secret = result.one("Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == "sealgate-tls"
    data = secret["data"]
    ca, cert = _pem_cert(data["ca.crt"]), _pem_cert(data["tls.crt"])
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert SERVICE_DNS in san.get_values_for_type(x509.DNSName)
    assert f"{SERVICE_DNS}.cluster.local" in san.get_values_for_type(x509.DNSName)
    key = serialization.load_pem_private_key(base64.b64decode(data["tls.key"]), password=None)
    assert key.public_key() == cert.public_key()
    # One certificate per render: the webhook trusts the CA that signed what the pods serve.
    assert _webhook(result)["clientConfig"]["caBundle"] == data["ca.crt"]
    assert "annotations" not in result.one("ValidatingWebhookConfiguration")["metadata"]


def test_cert_manager_mode(rendered: dict[str, Rendered]) -> None:
    result = rendered["certManager"]
    hook = _webhook(result)
    assert "caBundle" not in hook["clientConfig"]
    serving = result.named("Certificate", "sealgate-serving")
    annotations = result.one("ValidatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/sealgate-serving"}
    spec = serving["spec"]
    assert spec["secretName"] == "sealgate-tls"
    volumes = {v["name"]: v for v in result.pod["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == spec["secretName"]
    assert SERVICE_DNS in spec["dnsNames"]
    assert spec["usages"] == ["digital signature", "server auth"]
    assert (spec["duration"], spec["renewBefore"]) == ("8760h", "720h")
    # The chart's own CA: self-signed issuer -> CA certificate -> CA issuer -> serving cert,
    # so the injected caBundle survives serving-certificate renewals.
    assert spec["issuerRef"] == {"name": "sealgate-ca", "kind": "Issuer",
                                 "group": "cert-manager.io"}
    ca_issuer = result.named("Issuer", "sealgate-ca")
    ca_cert = result.named("Certificate", "sealgate-ca")
    assert ca_issuer["spec"] == {"ca": {"secretName": ca_cert["spec"]["secretName"]}}
    assert ca_cert["spec"]["isCA"] is True
    assert ca_cert["spec"]["issuerRef"]["name"] == "sealgate-selfsigned"
    assert result.named("Issuer", "sealgate-selfsigned")["spec"] == {"selfSigned": {}}
    for obj in result.all("Issuer") + result.all("Certificate"):
        assert obj["apiVersion"] == "cert-manager.io/v1"
        assert obj["metadata"]["namespace"] == NAMESPACE


def test_cert_manager_with_an_existing_issuer(rendered: dict[str, Rendered]) -> None:
    result = rendered["everything"]
    assert result.all("Issuer") == []
    (serving,) = result.all("Certificate")
    assert serving["spec"]["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer",
                                            "group": "cert-manager.io"}
    assert "gate.sealgate-system.svc" in serving["spec"]["dnsNames"]
    assert (serving["spec"]["duration"], serving["spec"]["renewBefore"]) == ("2160h", "360h")
    annotations = result.one("MutatingWebhookConfiguration")["metadata"]["annotations"]
    assert annotations == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/gate-serving"}


def test_existing_secret_mode(rendered: dict[str, Rendered]) -> None:
    result = rendered["existingSecret"]
    assert "Secret" not in result.kinds
    assert _webhook(result)["clientConfig"]["caBundle"] == (
        VALUE_SETS["existingSecret"]["tls"]["caBundle"])
    volumes = {v["name"]: v for v in result.pod["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "my-tls"
    # A PEM caBundle (--set-file tls.caBundle=ca.crt) is encoded by the chart.
    pem = rendered["custom-affinity-existing-secret-monitor"]
    assert _webhook(pem)["clientConfig"]["caBundle"] == (
        VALUE_SETS["existingSecret"]["tls"]["caBundle"])


def test_existing_secret_mode_needs_a_ca_bundle(chart: Any) -> None:
    with pytest.raises(helm.HelmError, match=r"tls\.caBundle is required"):
        render(chart, {"tls": {"mode": "existingSecret"}})


def test_sealgate_certs_hints_drive_the_chart(chart: Any, tmp_path: Path) -> None:
    """`sealgate certs` output, pasted into `helm install`, configures existingSecret mode."""
    paths = generate_certificates(tmp_path, service=RELEASE, namespace=NAMESPACE)
    secret_line, helm_line = kubectl_hints(paths, service=RELEASE, namespace=NAMESPACE).splitlines()
    values: dict[str, Any] = {}
    words = shlex.split(helm_line)
    for flag, expression in zip(words[::2], words[1::2], strict=True):
        assert flag == "--set"
        tls = helm.parse_set_string(expression)["tls"]
        values.setdefault("tls", {}).update(tls)
    result = render(chart, values)
    assert _webhook(result)["clientConfig"]["caBundle"] == (
        base64.b64encode(paths.ca_cert.read_bytes()).decode())
    secret_name = shlex.split(secret_line)[4]
    volumes = {v["name"]: v for v in result.pod["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == secret_name == "sealgate-tls"
    assert volumes["tls"]["secret"]["items"] == [
        {"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]
    served = x509.load_pem_x509_certificate(paths.cert.read_bytes())
    san = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert _webhook(result)["clientConfig"]["service"]["name"] + f".{NAMESPACE}.svc" in (
        san.get_values_for_type(x509.DNSName))


def test_service_monitor(rendered: dict[str, Rendered]) -> None:
    monitor = rendered["everything"].one("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"] == (
        rendered["everything"].one("Deployment")["spec"]["selector"]["matchLabels"])
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == rendered["everything"].one("Service")["spec"]["ports"][0]["name"]
    assert (endpoint["scheme"], endpoint["path"], endpoint["interval"]) == (
        "https", "/metrics", "1m")
    assert endpoint["tlsConfig"] == {
        "serverName": "gate.sealgate-system.svc",
        "ca": {"secret": {"name": "gate-tls", "key": "ca.crt"}},
    }
    existing = rendered["custom-affinity-existing-secret-monitor"].one("ServiceMonitor")
    assert existing["spec"]["endpoints"][0]["tlsConfig"] == {"insecureSkipVerify": True}
    assert existing["apiVersion"] == "monitoring.coreos.com/v1"
    assert "ServiceMonitor" not in rendered["helm"].kinds  # gated by serviceMonitor.enabled


# --------------------------------------------------------------------------- policies


def _write_like_kubelet(directory: Path, data: dict[str, str]) -> None:
    """A ConfigMap volume as the kubelet writes it: ..<timestamp>/, ..data, file symlinks."""
    directory.mkdir(parents=True)
    payload = directory / "..2026_01_01_00_00_00.000000001"
    payload.mkdir()
    for name, text in data.items():
        (payload / name).write_text(text, encoding="utf-8")
    (directory / "..data").symlink_to(payload.name)
    for name in data:
        (directory / name).symlink_to(f"..data/{name}")


def _demo_public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def test_policy_configmap_round_trips_the_example_policies(chart: Any, tmp_path: Path) -> None:
    originals = {p.name: p.read_text(encoding="utf-8")
                 for p in sorted((REPO / "policies").glob("*.yaml"))}
    assert {"production.yaml", "demo.yaml"} <= set(originals)
    result = render(chart, {"policies": originals})
    configmap = result.named("ConfigMap", "sealgate-policies")
    assert configmap["data"] == originals  # byte for byte: comments, block scalars, quoting

    mounted = tmp_path / "mounted" / "policies"
    _write_like_kubelet(mounted, configmap["data"])
    plain = tmp_path / "plain" / "policies"
    plain.mkdir(parents=True)
    for name, text in originals.items():
        (plain / name).write_text(text, encoding="utf-8")
    # What the example files reference outside themselves, present beside both copies:
    # production.yaml's keys/ (a ConfigMap is flat: in the chart, name keys as sibling
    # entries, see the next test) and demo.yaml's ../certs/demo-cosign.pub from `make run`.
    demo_key = _demo_public_key()
    for root in (mounted, plain):
        (root / "keys").mkdir()
        for key in (REPO / "policies" / "keys").iterdir():
            (root / "keys" / key.name).write_bytes(key.read_bytes())
        (root.parent / "certs").mkdir()
        (root.parent / "certs" / "demo-cosign.pub").write_text(demo_key)

    from_configmap = load_policy_dir(mounted)
    from_files = load_policy_dir(plain)
    assert sorted(p.name for p in from_configmap.policies) == ["demo", "production"]
    assert from_configmap.policies == from_files.policies


def test_policy_keys_as_sibling_configmap_entries(chart: Any, tmp_path: Path) -> None:
    production = (REPO / "policies" / "production.yaml").read_text(encoding="utf-8")
    assert "file: keys/release.pub" in production
    policies = {
        "production.yaml": production.replace("keys/", ""),
        "release.pub": (REPO / "policies" / "keys" / "release.pub").read_text(),
        "scanner.pub": (REPO / "policies" / "keys" / "scanner.pub").read_text(),
        "production.test.yaml": "cases: []\n",  # policy tests are skipped by the loader
    }
    data = render(chart, {"policies": policies}).named("ConfigMap", "sealgate-policies")["data"]
    assert data == policies
    _write_like_kubelet(tmp_path / "policies", data)
    (policy,) = load_policy_dir(tmp_path / "policies").policies
    assert policy.name == "production"


def test_policy_text_survives_awkward_content(chart: Any) -> None:
    awkward = {
        "a.yaml": "# unicode: é ✓ \U0001f512\nkey: 'quoted' \"double\"\n\ttab: 1  \n",
        "no-newline.yml": "x: 1",
        "true": "yes\n",  # a key YAML would read as a boolean
        "empty.yaml": "",
    }
    data = render(chart, {"policies": awkward}).named("ConfigMap", "sealgate-policies")["data"]
    assert data == awkward


def test_empty_policies_render_an_empty_configmap(rendered: dict[str, Rendered]) -> None:
    configmap = rendered["helm"].named("ConfigMap", "sealgate-policies")
    assert configmap.get("data") in (None, {})
    assert "No policies are configured" in rendered["helm"].notes


# --------------------------------------------------------------------------- values schema


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        pytest.param({"replicaCont": 3}, "replicaCont", id="typo-top-level"),
        pytest.param({"webhook": {"failurPolicy": "Fail"}}, "failurPolicy", id="typo-nested"),
        pytest.param({"tls": {"certManager": {"issuerRef": {"nme": "x"}}}}, "nme",
                     id="typo-deep"),
        pytest.param({"replicaCount": "2"}, "replicaCount", id="wrong-type"),
        pytest.param({"mutate": {"enabled": "yes"}}, "enabled", id="bool-as-string"),
        pytest.param({"webhook": {"failurePolicy": "fail"}}, "failurePolicy", id="enum-case"),
        pytest.param({"webhook": {"timeoutSeconds": 31}}, "timeoutSeconds", id="timeout-range"),
        pytest.param({"tls": {"mode": "certmanager"}}, "mode", id="tls-mode"),
        pytest.param({"policies": {"keys/release.pub": "x"}}, "keys/release.pub",
                     id="policy-name-with-slash"),
        pytest.param({"policies": {"a.yaml": {"apiVersion": "v1"}}}, "a.yaml",
                     id="policy-not-text"),
        pytest.param({"config": {"modeOverride": "enforce"}}, "modeOverride", id="override"),
        pytest.param({"config": {"deadline": "8 seconds"}}, "deadline", id="duration"),
        pytest.param({"image": {"digest": "sha256:abc"}}, "digest", id="digest"),
        pytest.param({"podAntiAffinity": "strict"}, "podAntiAffinity", id="anti-affinity"),
    ],
)
def test_bad_values_are_rejected(chart: Any, values: dict[str, Any], fragment: str) -> None:
    with pytest.raises(helm.HelmValuesError) as info:
        chart.validate_schema(values)
    assert fragment in str(info.value)
    with pytest.raises(helm.HelmError):
        render(chart, values)
    report = helm.lint(CHART, values, namespace=NAMESPACE)
    assert report["errors"]


@pytest.mark.parametrize("value_set", sorted(VALUE_SETS))
def test_value_sets_pass_the_schema(chart: Any, value_set: str) -> None:
    chart.validate_schema(copy.deepcopy(VALUE_SETS[value_set]))


def test_defaults_match_the_schema(chart: Any) -> None:
    """Every default key is declared in the schema, and every declared key has a default."""
    schema = chart.schema

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        properties = node.get("properties")
        if properties is None:
            return
        assert node.get("additionalProperties") is False, path
        if values:  # an empty default ({}, e.g. tls.certManager.issuerRef) means "unset"
            assert set(values) == set(properties), path
        for key, value in values.items():
            if isinstance(value, dict):
                walk(value, properties[key], f"{path}.{key}")

    walk(chart.values, schema, "")


# --------------------------------------------------------------------------- checksum


def _existing(**tls: Any) -> dict[str, Any]:
    values = copy.deepcopy(VALUE_SETS["existingSecret"])
    values["tls"].update(tls)
    return values


def test_checksum_ignores_policies_and_follows_certificates(chart: Any) -> None:
    base = render(chart, _existing()).checksum
    assert len(base) == 64
    with_policies = _existing()
    with_policies["policies"] = {"p.yaml": "# edited\n"}
    assert render(chart, with_policies).checksum == base
    with_policies["policies"] = {"p.yaml": "# edited again\n", "q.yaml": "# new\n"}
    assert render(chart, with_policies).checksum == base
    other_ca = base64.b64encode(b"another CA").decode()
    assert render(chart, _existing(caBundle=other_ca)).checksum != base
    assert render(chart, _existing(secretName="rotated-tls")).checksum != base

    manager = {"tls": {"mode": "certManager"}}
    manager_sum = render(chart, manager).checksum
    assert render(chart, {**manager, "policies": {"p.yaml": "x: 1\n"}}).checksum == manager_sum
    longer = {"tls": {"mode": "certManager", "certManager": {"duration": "2160h"}}}
    assert render(chart, longer).checksum != manager_sum
    # helm mode without a cluster to look the Secret up in: a new certificate, a new checksum.
    assert render(chart).checksum != render(chart).checksum


# --------------------------------------------------------------------------- lookup (upgrades)


class FakeAPIServer:
    """Just enough of the Kubernetes API on loopback for Helm's `lookup` of Secrets."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                path = self.path.split("?", 1)[0].rstrip("/")
                parts = path.split("/")
                body: dict[str, Any] | None = None
                if path == "/api/v1":
                    body = {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
                        {"name": "secrets", "singularName": "secret", "namespaced": True,
                         "kind": "Secret", "verbs": ["get", "list"]}]}
                elif len(parts) == 7 and parts[1:4] == ["api", "v1", "namespaces"] \
                        and parts[5] == "secrets":
                    body = server.secrets.get((parts[4], parts[6]))
                if body is None:
                    self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                     "reason": "NotFound", "code": 404})
                else:
                    self._send(200, body)

            def _send(self, code: int, body: dict[str, Any]) -> None:
                payload = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> FakeAPIServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def store(self, secret: dict[str, Any]) -> None:
        meta = secret["metadata"]
        self.secrets[(meta["namespace"], meta["name"])] = secret


@pytest.fixture
def cluster() -> Iterator[tuple[FakeAPIServer, Any]]:
    empty_kubeconfig = "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n"
    with FakeAPIServer() as api, helm.Config(
        kubeconfig_content=empty_kubeconfig, kube_apiserver=api.url, namespace=NAMESPACE
    ) as config:
        yield api, config


def test_helm_mode_reuses_the_installed_certificate_on_upgrade(
    chart: Any, cluster: tuple[FakeAPIServer, Any]
) -> None:
    api, config = cluster
    install = render(chart, cluster=config)  # nothing installed yet: generated
    assert any("/secrets/sealgate-tls" in r for r in api.requests)
    secret = install.one("Secret")
    api.store(secret)

    upgrade = render(chart, {"policies": {"p.yaml": "# new policy\n"}}, cluster=config)
    assert upgrade.one("Secret")["data"] == secret["data"]
    assert _webhook(upgrade)["clientConfig"]["caBundle"] == secret["data"]["ca.crt"]
    assert upgrade.checksum == install.checksum  # a policy edit does not roll the pods

    # A certificate for other Service names is not reused; deleting the Secret rotates.
    renamed = render(chart, {"fullnameOverride": "gate", "tls": {"secretName": "sealgate-tls"}},
                     cluster=config)
    assert renamed.one("Secret")["data"]["ca.crt"] != secret["data"]["ca.crt"]
    api.secrets.clear()
    rotated = render(chart, cluster=config)
    assert rotated.one("Secret")["data"]["tls.crt"] != secret["data"]["tls.crt"]
    assert rotated.checksum != install.checksum


def test_incomplete_secret_is_not_reused(chart: Any, cluster: tuple[FakeAPIServer, Any]) -> None:
    api, config = cluster
    secret = render(chart).one("Secret")
    del secret["data"]["ca.crt"]
    api.store(secret)
    regenerated = render(chart, cluster=config).one("Secret")["data"]
    assert regenerated["tls.crt"] != secret["data"]["tls.crt"]
    _pem_cert(regenerated["tls.crt"]).verify_directly_issued_by(
        _pem_cert(regenerated["ca.crt"]))


@pytest.mark.parametrize("mode", ["certManager", "existingSecret"])
def test_checksum_follows_the_installed_secret(
    chart: Any, cluster: tuple[FakeAPIServer, Any], mode: str
) -> None:
    """cert-manager renewals and `kubectl create secret` rotations roll pods on the next upgrade."""
    api, config = cluster
    values = copy.deepcopy(VALUE_SETS[mode])
    name = values["tls"].get("secretName", "sealgate-tls")
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
              "metadata": {"name": name, "namespace": NAMESPACE},
              "data": {"tls.crt": base64.b64encode(b"first").decode(), "tls.key": "a2V5"}}
    api.store(secret)
    first = render(chart, values, cluster=config).checksum
    values["policies"] = {"p.yaml": "# edit\n"}
    assert render(chart, values, cluster=config).checksum == first
    secret["data"]["tls.crt"] = base64.b64encode(b"renewed").decode()
    assert render(chart, values, cluster=config).checksum != first


# --------------------------------------------------------------------------- NOTES.txt


def test_notes_explain_the_dry_run_check(rendered: dict[str, Rendered]) -> None:
    notes = rendered["helm"].notes
    assert "kubectl apply --dry-run=server" in notes
    assert "kind: Pod" in notes
    assert "kubectl delete validatingwebhookconfiguration sealgate" in notes
    assert notes.index("delete validatingwebhookconfiguration") < notes.index("helm uninstall")
    everything = rendered["everything"].notes
    assert "kubectl delete mutatingwebhookconfiguration gate" in everything
    assert "a.yaml" in everything


# --------------------------------------------------------------------------- documentation


def _value_keys(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        path = f"{prefix}{key}"
        # Kubernetes objects passed through whole are documented as one key.
        if isinstance(value, dict) and value and key not in (
                "podSecurityContext", "securityContext", "resources"):
            yield from _value_keys(value, f"{path}.")
        else:
            yield path


def test_every_value_is_documented(chart: Any) -> None:
    """The install guide's values table (docs/install.md, or README.md once merged there)."""
    guide = REPO / "docs" / "install.md"
    text = (guide if guide.exists() else REPO / "README.md").read_text(encoding="utf-8")
    missing = [key for key in _value_keys(chart.values) if f"| `{key}` |" not in text]
    assert missing == []


@pytest.mark.parametrize(
    ("values", "workers"),
    [
        ({}, "1"),  # the default limit is one CPU
        ({"resources": {"limits": {"cpu": "2"}}}, "2"),
        ({"resources": {"limits": {"cpu": "2500m"}}}, "2"),
        ({"resources": {"limits": {"cpu": "500m"}}}, "1"),
        ({"resources": {"limits": {"cpu": 4}}}, "4"),
        ({"resources": {"requests": {"cpu": "100m"}}}, "1"),  # no limit: one
        ({"resources": {"limits": {"cpu": "4"}}, "config": {"workers": 3}}, "3"),
    ],
)
def test_workers_follow_the_cpu_limit(chart: Any, values: dict[str, Any], workers: str) -> None:
    """One worker per whole CPU of the limit (SPEC §9), unless config.workers says."""
    assert render(chart, values).env["SEALGATE_WORKERS"] == workers
