"""The pure core imports no I/O and no verification code (CONVENTIONS)."""

import subprocess
import sys

import pytest

FORBIDDEN = ("httpx", "starlette", "webhook.registry", "webhook.signatures", "sigstore")


@pytest.mark.parametrize("module", ["webhook.policy", "webhook.decision", "webhook.references",
                                    "webhook.patterns", "webhook.keys"])
def test_pure_module_imports_no_io_or_verifier(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r} "
        f"or any(m == f or m.startswith(f + '.') for f in {FORBIDDEN!r}))\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"{module} pulls in {out.stdout.strip()}"
