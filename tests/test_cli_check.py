"""`sealgate check` through its real entry point: online against the real registry, offline,
stdin, JSON, exit codes."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import policy_text
from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.signing import PrivateKey, cosign_layer, public_pem
from webhook.__main__ import main

OFFLINE_HOST = "registry.test:5000"


def write_policy(directory: Path, host: str, key: PrivateKey, *, extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "p.yaml").write_text(policy_text(host, public_pem(key), extra=extra,
                                                  extra_rules="""\
    - name: base
      images: ["docker.io/library/*"]
      signatures: none
"""))
    return directory


def manifest(*images: str, kind: str = "Pod", name: str = "web", namespace: str | None = "prod"
             ) -> str:
    meta = f"{{name: {name}" + (f", namespace: {namespace}}}" if namespace else "}")
    containers = "".join(f"\n    - {{name: c{i}, image: \"{image}\"}}"
                         for i, image in enumerate(images))
    if kind == "Pod":
        return f"apiVersion: v1\nkind: Pod\nmetadata: {meta}\nspec:\n  containers:{containers}\n"
    body = textwrap.indent(f"containers:{containers}", "      ")
    return (f"apiVersion: apps/v1\nkind: {kind}\nmetadata: {meta}\nspec:\n  template:\n"
            f"    spec:\n{body}\n")


@pytest.fixture
def key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SEALGATE_POLICIES", "SEALGATE_MODE_OVERRIDE", "SEALGATE_INSECURE_REGISTRIES",
                 "SEALGATE_REGISTRY_AUTH", "SEALGATE_DEADLINE"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- online


def test_online_check_decides_like_validate(
    tmp_path: Path, registry: RegistryServer, key: PrivateKey, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    host = registry.host
    signed, _ = push_image(registry.url, "team/api", "v1")
    push_cosign_signature(registry.url, "team/api", signed,
                          [cosign_layer(key, f"{host}/team/api", signed)])
    unsigned, _ = push_image(registry.url, "team/worker", "v1")
    policies = write_policy(tmp_path / "policies", host, key)
    monkeypatch.setenv("SEALGATE_INSECURE_REGISTRIES", host)
    (tmp_path / "ok.yaml").write_text(manifest(f"{host}/team/api:v1", kind="Deployment"))
    assert main(["check", "-f", str(tmp_path / "ok.yaml"), "--policies", str(policies)]) == 0
    out = capsys.readouterr().out
    assert "Deployment/web" in out and "allow" in out and "ok (policy production, rule ours)" in out
    assert "1 pod-bearing object checked: 1 allow, 0 warn, 0 deny" in out

    (tmp_path / "mixed.yaml").write_text(
        manifest(f"{host}/team/api:v1") + "---\n"
        + manifest(f"{host}/team/worker:v1", name="worker", kind="StatefulSet")
    )
    code = main(["check", "-f", str(tmp_path / "mixed.yaml"), "--policies", str(policies),
                 "--output", "json"])
    assert code == 1
    results = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["decision"]) for r in results] == [("Pod", "allow"),
                                                            ("StatefulSet", "deny")]
    denied = results[1]
    # the webhook's own deny message: full normalised name, digest, rule
    assert denied["message"] == (
        f"{host}/team/worker@{unsigned}: no valid signature from authority \"release-key\": "
        "no signatures found (policy production, rule ours)"
    )
    assert denied["source"] == f"{tmp_path / 'mixed.yaml'}:8"
    assert denied["images"][0]["policies"][0]["signatures"] == {"release-key": "fail"}
    assert results[0]["images"][0]["policies"][0]["digest"] == signed
    assert denied["offline"] is False

    # SEALGATE_MODE_OVERRIDE caps enforcement as in the webhook: the deny becomes a warning
    monkeypatch.setenv("SEALGATE_MODE_OVERRIDE", "warn")
    assert main(["check", "-f", str(tmp_path / "mixed.yaml"), "--policies", str(policies)]) == 0
    out = capsys.readouterr().out
    assert "StatefulSet/worker" in out and "1 allow, 1 warn, 0 deny" in out


def test_registry_down_follows_on_error(
    tmp_path: Path, key: PrivateKey, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed = "127.0.0.1:9"  # discard port: nothing listens
    policies = write_policy(tmp_path / "policies", closed, key)
    monkeypatch.setenv("SEALGATE_INSECURE_REGISTRIES", closed)
    monkeypatch.setenv("SEALGATE_DEADLINE", "3s")
    (tmp_path / "m.yaml").write_text(manifest(f"{closed}/team/api:v1"))
    assert main(["check", "-f", str(tmp_path / "m.yaml"), "--policies", str(policies)]) == 1
    assert "could not resolve digest" in capsys.readouterr().out


# --------------------------------------------------------------------------- offline


def test_offline_says_what_it_could_not_check(
    tmp_path: Path, key: PrivateKey, capsys: pytest.CaptureFixture[str],
) -> None:
    policies = write_policy(tmp_path / "policies", OFFLINE_HOST, key)
    digest = "sha256:" + "ab" * 32
    (tmp_path / "m.yaml").write_text(
        manifest(f"{OFFLINE_HOST}/team/api:v1", "nginx:1.27")
        + "---\n" + manifest(f"{OFFLINE_HOST}/team/api@{digest}", name="pinned")
        + "---\n" + manifest("quay.io/x/y:1", name="stranger")
        + "---\napiVersion: v1\nkind: Service\nmetadata: {name: svc}\n"
    )
    code = main(["check", "-f", str(tmp_path / "m.yaml"), "--policies", str(policies),
                 "--offline"])
    out = capsys.readouterr().out
    assert code == 1  # onError: deny -> deny, even offline
    rows = {line.split()[0] + " " + line.split()[2]: line for line in out.splitlines()
            if line.startswith("Pod/")}
    tag_row = rows[f"Pod/web {OFFLINE_HOST}/team/api:v1"]
    assert "deny (unverified offline)" in tag_row
    assert 'not checked: digest (tag not resolved), signature "release-key"' in tag_row
    # signatures: none needs no registry, so it is decided for real
    assert " allow " in rows["Pod/web nginx:1.27"]
    assert "ok (policy production, rule base)" in rows["Pod/web nginx:1.27"]
    pinned = rows[f"Pod/pinned {OFFLINE_HOST}/team/api@{digest}"]
    assert "deny (unverified offline)" in pinned
    assert "signature check could not complete" in pinned
    assert "digest" not in pinned.split("not checked:")[1]  # pinned: the digest is known
    # a definitive violation stays a plain deny
    stranger = rows["Pod/stranger quay.io/x/y:1"]
    assert " deny " in stranger and "unverified" not in stranger
    assert "image matches no rule" in stranger
    assert "3 pod-bearing objects checked: 0 allow, 0 warn, 3 deny; 1 other object skipped" in out
    assert "An offline check cannot prove a signature" in out


def test_offline_with_on_error_allow_is_allowed_but_unverified(
    tmp_path: Path, key: PrivateKey, capsys: pytest.CaptureFixture[str],
) -> None:
    policies = write_policy(tmp_path / "policies", OFFLINE_HOST, key, extra="  onError: allow\n")
    (tmp_path / "m.yaml").write_text(manifest(f"{OFFLINE_HOST}/team/api:v1"))
    code = main(["check", "-f", str(tmp_path / "m.yaml"), "--policies", str(policies),
                 "--offline", "-o", "json"])
    assert code == 0
    [result] = json.loads(capsys.readouterr().out)
    assert result["decision"] == "allow" and result["offline"] is True
    [image] = result["images"]
    assert image["unverified"] is True
    assert image["not_checked"] == ["digest (tag not resolved)", 'signature "release-key"']


def test_stdin_namespace_flag_and_default_namespace(
    tmp_path: Path, key: PrivateKey, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policies = write_policy(tmp_path / "policies", OFFLINE_HOST, key)
    text = manifest("quay.io/x/y:1", namespace=None)
    # no metadata.namespace and no -n: "default", which no policy governs
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["check", "-f", "-", "--policies", str(policies), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "default" in out and "no policy for namespace" in out
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    assert main(["check", "-f", "-", "-n", "prod", "--policies", str(policies), "--offline"]) == 1
    assert "image matches no rule" in capsys.readouterr().out


def test_policies_from_environment_and_directory_input(
    tmp_path: Path, key: PrivateKey, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    policies = write_policy(tmp_path / "policies", OFFLINE_HOST, key)
    monkeypatch.setenv("SEALGATE_POLICIES", str(policies))
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "a.yaml").write_text(manifest("nginx", name="a"))
    (manifests / "b.yml").write_text(manifest("busybox", name="b"))
    (manifests / "notes.txt").write_text("not a manifest")
    assert main(["check", "-f", str(manifests), "--offline"]) == 0
    out = capsys.readouterr().out
    assert "Pod/a" in out and "Pod/b" in out and "2 allow" in out


@pytest.mark.parametrize(("setup", "message"), [
    ("bad-yaml", "m.yaml:3: invalid YAML: found character '\\t'"),
    ("missing-file", "cannot read manifest"),
    ("missing-policies", "policy directory does not exist"),
    ("bad-policy", "p.yaml:6: unknown field spec.bogus"),
    ("bad-object", "m.yaml:1: Pod/web: containers must be a list"),
])
def test_usage_and_load_errors_exit_2(
    tmp_path: Path, key: PrivateKey, capsys: pytest.CaptureFixture[str], setup: str,
    message: str,
) -> None:
    policies = write_policy(tmp_path / "policies", OFFLINE_HOST, key)
    target = tmp_path / "m.yaml"
    target.write_text(manifest("nginx"))
    if setup == "bad-yaml":
        target.write_text("apiVersion: v1\nkind: Pod\n\tmetadata: {}\n")
    elif setup == "missing-file":
        target = tmp_path / "nope.yaml"
    elif setup == "missing-policies":
        policies = tmp_path / "none"
    elif setup == "bad-policy":
        text = (policies / "p.yaml").read_text()
        (policies / "p.yaml").write_text(text.replace("  rules:", "  bogus: 1\n  rules:"))
    elif setup == "bad-object":
        target.write_text("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\n"
                          "spec: {containers: 3}\n")
    code = main(["check", "-f", str(target), "--policies", str(policies), "--offline"])
    assert code == 2
    captured = capsys.readouterr()
    assert message in captured.err
    assert captured.out == ""


def test_usage_error_from_argparse_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["check", "--output", "yaml", "-f", "x"])
    assert info.value.code == 2


def test_console_script_reads_stdin(tmp_path: Path, key: PrivateKey) -> None:
    # `helm template … | sealgate check -f -` in a CI pipeline
    policies = write_policy(tmp_path / "policies", OFFLINE_HOST, key)
    stream = manifest("quay.io/x/y:1") + "---\n" + manifest("nginx", name="ok")
    done = subprocess.run(
        [sys.executable, "-m", "webhook", "check", "-f", "-", "--policies", str(policies),
         "--offline"],
        input=stream, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1, done.stderr
    assert "Pod/web" in done.stdout and "Pod/ok" in done.stdout
    assert "1 allow, 0 warn, 1 deny" in done.stdout
