"""Fact gathering: deadline, errors vs failures, per-authority outcomes."""

from __future__ import annotations

import datetime
import textwrap
import time
from pathlib import Path

import anyio
import httpx
from cryptography.hazmat.primitives.asymmetric import ec

from tests.registry_server import RegistryServer, push_cosign_signature, push_image
from tests.signing import cosign_layer, public_pem
from webhook.decision import decide, plan_checks
from webhook.facts import FactGatherer
from webhook.policy import PolicySet, load_policy_text
from webhook.registry import RegistryClient

KEY = ec.generate_private_key(ec.SECP256R1())


def policies(host: str, *, tlog: str = '"off"', extra_authority: str = "") -> PolicySet:
    text = f"""\
apiVersion: sealgate.dev/v1alpha1
kind: ImagePolicy
metadata: {{name: p}}
spec:
  namespaces: {{match: ["*"]}}
  rules:
    - name: r
      images: ["{host}/**"]
      signatures:
        authorities:
          - name: k
            key:
              tlog: {tlog}
              publicKey: |
{textwrap.indent(public_pem(KEY).decode(), " " * 16)}
{extra_authority}"""
    return PolicySet(tuple(load_policy_text(text, "p.yaml", base_dir=Path("."))), 1)


async def test_hanging_registry_yields_errors_by_the_deadline() -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await anyio.sleep(30)
        return httpx.Response(500)

    async with httpx.AsyncClient(transport=httpx.MockTransport(hang)) as http:
        gatherer = FactGatherer(RegistryClient(http))
        policy_set = policies("slow.example.com")
        image = "slow.example.com/app:1"
        started = time.monotonic()
        facts = await gatherer.gather(plan_checks([image], policy_set.policies), deadline=0.3)
        elapsed = time.monotonic() - started
    assert elapsed < 2
    assert facts[image].digest.status == "error"
    assert "deadline of 0.3s exceeded" in facts[image].digest.reason
    decision = decide(namespace="x", images=[image], policies=policy_set, facts=facts,
                      now=datetime.datetime.now(datetime.UTC))
    assert decision.decision == "deny" and decision.reason == "error"


async def test_outcomes_against_the_real_registry(registry: RegistryServer) -> None:
    digest, _ = push_image(registry.url, "facts/app", "v1")
    push_cosign_signature(registry.url, "facts/app", digest,
                          [cosign_layer(KEY, f"{registry.host}/facts/app", digest)])
    keyless = """\
          - name: gh
            keyless:
              issuer: https://token.actions.githubusercontent.com
              subject: https://github.com/acme/app/.github/workflows/release.yml@refs/heads/main
"""
    image = f"{registry.host}/facts/app:v1"
    async with httpx.AsyncClient() as http:
        gatherer = FactGatherer(RegistryClient(http, insecure=frozenset({registry.host})))
        for tlog, expected in (('"off"', "ok"), ("optional", "ok"), ("required", "fail")):
            policy_set = policies(registry.host, tlog=tlog, extra_authority=keyless)
            plans = plan_checks([image], policy_set.policies)
            facts = await gatherer.gather(plans, deadline=5)
            [key_check, keyless_check] = plans[0].signatures
            assert facts[image].resolved_digest == digest
            assert facts[image].signatures[key_check.key].status == expected, tlog
            outcome = facts[image].signatures[keyless_check.key]
            # the only signature was made with a key: the keyless authority is not satisfied
            assert outcome.status == "fail" and "has no certificate" in outcome.reason




async def test_no_attestation_is_missing_not_an_error(registry: RegistryServer) -> None:
    digest, _ = push_image(registry.url, "facts/scanned", "v1")
    push_cosign_signature(registry.url, "facts/scanned", digest,
                          [cosign_layer(KEY, f"{registry.host}/facts/scanned", digest)])
    scan = "      scan: {onMissing: warn, deny: {CRITICAL: 0}}\n"
    policy_set = policies(registry.host, extra_authority=scan)
    image = f"{registry.host}/facts/scanned:v1"
    async with httpx.AsyncClient() as http:
        gatherer = FactGatherer(RegistryClient(http, insecure=frozenset({registry.host})))
        facts = await gatherer.gather(plan_checks([image], policy_set.policies), deadline=5)
    assert facts[image].scans == () and facts[image].scan_errors == {}
    decision = decide(namespace="x", images=[image], policies=policy_set, facts=facts,
                      now=datetime.datetime.now(datetime.UTC))
    assert decision.decision == "warn"
    assert "no scan result from attestation" in decision.warnings[0]
