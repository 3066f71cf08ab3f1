"""The chart's operations kit (SPEC §9 "Operations in the chart"): the PrometheusRule passes
``promtool check rules`` and fires on the series it is about (``promtool test rules``), the
Grafana dashboard ConfigMap, the shared-cache values — and every metric the rules and the
dashboard name is one a running sealgate's ``/metrics`` exposes."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.redis_server import RedisServer
from tests.test_chart import CHART, NAMESPACE, Rendered, helm, kubernetes_validate, render
from webhook.app import create_app
from webhook.settings import Settings

OPS = {
    "prometheusRule": {"enabled": True, "labels": {"release": "prom"}},
    "grafanaDashboard": {"enabled": True, "annotations": {"grafana_folder": "Security"}},
    "sharedCache": {"url": "redis://valkey.cache.svc:6379/0",
                    "keySecret": {"name": "sealgate-cache-key"}},
}
ALERTS = {
    "SealgateLatencyNearTimeout", "SealgateDenyRateSpike", "SealgatePolicyReloadFailing",
    "SealgateRegistryErrors", "SealgateAuditWriteFailures", "SealgateSharedCacheDown",
    "SealgateSharedCacheIntegrityFailures",
}
METRIC = re.compile(r"\bsealgate_[a-z0-9_]+\b")


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def ops(chart: Any) -> Rendered:
    return render(chart, OPS)


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        message = "needs promtool from Debian's prometheus: apt-get install -y prometheus"
        if os.environ.get("SEALGATE_REQUIRE_REGISTRY") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


def rule_groups(rendered: Rendered) -> dict[str, Any]:
    rule = rendered.one("PrometheusRule")
    return {"groups": rule["spec"]["groups"]}


def dashboard(rendered: Rendered) -> dict[str, Any]:
    config_map = rendered.named("ConfigMap", "sealgate-dashboard")
    loaded: dict[str, Any] = json.loads(config_map["data"]["sealgate.json"])
    return loaded


def expressions(rendered: Rendered) -> list[str]:
    exprs = [rule["expr"] for group in rule_groups(rendered)["groups"]
             for rule in group["rules"]]
    board = dashboard(rendered)
    exprs += [target["expr"] for panel in board["panels"] for target in panel["targets"]]
    exprs += [variable["definition"] for variable in board["templating"]["list"]
              if "definition" in variable]
    return exprs


# --------------------------------------------------------------------------- rendering


def test_off_by_default(chart: Any) -> None:
    plain = render(chart)
    assert "PrometheusRule" not in plain.kinds
    assert [cm["metadata"]["name"] for cm in plain.all("ConfigMap")] == ["sealgate-policies"]
    assert not {"SEALGATE_CACHE_URL", "SEALGATE_CACHE_KEY"} & set(plain.env)


def test_lint_and_schemas(chart: Any, ops: Rendered) -> None:
    chart.validate_schema(copy.deepcopy(OPS))
    report = helm.lint(CHART, copy.deepcopy(OPS), strict=True, namespace=NAMESPACE,
                       kube_version="v1.30.0")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []
    for obj in ops.objects:
        if obj["kind"] != "PrometheusRule":
            kubernetes_validate.validate(obj, "1.30", strict=True)
    rule = ops.one("PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["metadata"]["namespace"] == NAMESPACE


def test_dashboard_configmap_for_the_grafana_sidecar(ops: Rendered) -> None:
    config_map = ops.named("ConfigMap", "sealgate-dashboard")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "Security"}
    board = dashboard(ops)
    titles = {panel["title"] for panel in board["panels"]}
    assert {"Admissions by decision and mode", "Admission latency percentiles",
            "Cache hit ratio per fact (local)", "Registry requests by status",
            "Verifications by outcome", "Policy reloads"} <= titles
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])


def test_shared_cache_values(chart: Any, ops: Rendered) -> None:
    env = ops.env
    assert env["SEALGATE_CACHE_URL"] == "redis://valkey.cache.svc:6379/0"
    assert env["SEALGATE_CACHE_KEY"] == "/etc/sealgate/cache-key/key"
    assert env["SEALGATE_CACHE_TIMEOUT"] == "50ms"
    (volume,) = [v for v in ops.pod["spec"]["volumes"] if v["name"] == "cache-key"]
    assert volume["secret"]["secretName"] == "sealgate-cache-key"
    assert volume["secret"]["items"] == [{"key": "cache.key", "path": "key"}]
    mounts = {m["name"]: m for m in ops.container["volumeMounts"]}
    assert mounts["cache-key"]["mountPath"] == "/etc/sealgate/cache-key"
    assert mounts["cache-key"]["readOnly"] is True

    from_secret = render(chart, {"sharedCache": {
        "urlSecret": {"name": "valkey-auth"}, "keySecret": {"name": "k", "key": "hmac"}}})
    (url,) = [e for e in from_secret.container["env"] if e["name"] == "SEALGATE_CACHE_URL"]
    assert url["valueFrom"] == {"secretKeyRef": {"name": "valkey-auth", "key": "url"}}
    kubernetes_validate.validate(from_secret.one("Deployment"), "1.30", strict=True)

    with pytest.raises(helm.HelmError, match=r"sharedCache\.keySecret\.name is required"):
        render(chart, {"sharedCache": {"url": "redis://valkey:6379"}})
    with pytest.raises(helm.HelmValuesError, match="url"):
        chart.validate_schema({"sharedCache": {"url": "http://valkey:6379"}})


# --------------------------------------------------------------------------- promtool


def test_rules_pass_promtool(ops: Rendered, tmp_path: Path) -> None:
    binary = promtool()
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump(rule_groups(ops)))
    result = subprocess.run([binary, "check", "rules", str(rules)], capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout
    alerts = {rule["alert"] for group in rule_groups(ops)["groups"] for rule in group["rules"]}
    assert alerts == ALERTS


def _series(name: str, labels: str, values: str) -> dict[str, str]:
    return {"series": f'{name}{{namespace="{NAMESPACE}",pod="sealgate-0",{labels}}}'.replace(
        ",}", "}"), "values": values}


def annotations(rendered: Rendered, alert: str, value: str = "") -> dict[str, str]:
    """The alert's annotations as Prometheus fills them in for the series below."""
    (rule,) = [rule for group in rule_groups(rendered)["groups"] for rule in group["rules"]
               if rule["alert"] == alert]
    filled = {}
    for name, text in rule["annotations"].items():
        text = re.sub(r"\{\{ \$value \| humanize\w+ \}\}", value, text)
        text = text.replace("{{ $labels.pod }}", "sealgate-0")
        filled[name] = text.replace("{{ $labels.registry }}", "ghcr.io")
    assert "{{" not in str(filled)
    return filled


def test_alerts_fire_on_what_they_are_about(ops: Rendered, tmp_path: Path) -> None:
    """promtool's rule unit tests: each alert fires on a made-up incident, and not before."""
    binary = promtool()
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule_groups(ops)))
    fired = {"severity": "warning", "namespace": NAMESPACE, "pod": "sealgate-0"}

    def alert(name: str, labels: dict[str, str], value: str = "") -> list[dict[str, Any]]:
        return [{"exp_labels": labels, "exp_annotations": annotations(ops, name, value)}]
    tests = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                _series("sealgate_shared_cache_up", "", "1 1 0x20"),
                _series("sealgate_audit_write_failures_total", "", "0 0 0 1 1 1"),
                _series("sealgate_registry_requests_total", 'registry="ghcr.io",status="200"',
                        "0+10x30"),
                _series("sealgate_registry_requests_total", 'registry="ghcr.io",status="429"',
                        "0+5x30"),
                _series("sealgate_admission_duration_seconds_bucket", 'le="5"', "0+10x30"),
                _series("sealgate_admission_duration_seconds_bucket", 'le="8"', "0+10x30"),
                _series("sealgate_admission_duration_seconds_bucket", 'le="10"', "0+20x30"),
                _series("sealgate_admission_duration_seconds_bucket", 'le="+Inf"', "0+20x30"),
            ],
            "alert_rule_test": [
                {"eval_time": "4m", "alertname": "SealgateSharedCacheDown", "exp_alerts": []},
                {"eval_time": "10m", "alertname": "SealgateSharedCacheDown",
                 "exp_alerts": alert("SealgateSharedCacheDown", fired)},
                {"eval_time": "2m", "alertname": "SealgateAuditWriteFailures", "exp_alerts": []},
                {"eval_time": "4m", "alertname": "SealgateAuditWriteFailures",
                 "exp_alerts": alert("SealgateAuditWriteFailures",
                                     {**fired, "severity": "critical"})},
                {"eval_time": "20m", "alertname": "SealgateRegistryErrors",
                 "exp_alerts": alert("SealgateRegistryErrors",
                                     {"severity": "warning", "registry": "ghcr.io"}, "33.33%")},
                {"eval_time": "20m", "alertname": "SealgateLatencyNearTimeout",
                 "exp_alerts": alert("SealgateLatencyNearTimeout", {"severity": "warning"},
                                     "9.96s")},
                {"eval_time": "20m", "alertname": "SealgatePolicyReloadFailing",
                 "exp_alerts": []},
            ],
        }],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests))
    result = subprocess.run([binary, "test", "rules", "tests.yaml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


# --------------------------------------------------------------------------- metric names


async def exposed_metric_names(tmp_path: Path, redis_url: str) -> set[str]:
    """Sample names a running sealgate (with the shared cache on) exposes on /metrics."""
    policies = tmp_path / "policies"
    policies.mkdir()
    key = tmp_path / "cache.key"
    key.write_text("a key of at least sixteen bytes")
    app = create_app(Settings(policies=policies, audit_log=tmp_path / "audit.log",
                              cache_url=redis_url, cache_key=key, reload_interval=0))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://sealgate"
    ) as client:
        text = (await client.get("/metrics")).text
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "gauge": ("",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("", "_sum", "_count")}
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


async def test_every_metric_named_is_exposed(ops: Rendered, tmp_path: Path,
                                             redis_server: RedisServer) -> None:
    exposed = await exposed_metric_names(tmp_path, redis_server.url)
    named = {name for expr in expressions(ops) for name in METRIC.findall(expr)}
    assert len(named) >= 12
    assert named - exposed == set()
    # and the check can fail: a misspelt name is not exposed
    assert "sealgate_admission_requests" not in exposed
