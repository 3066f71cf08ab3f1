"""`make bench --quick` end to end, so the benchmark cannot rot (its figures are not judged
here: timing belongs to `make bench`, not to tests). What it must show is checked."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_quick_bench_runs_end_to_end(tmp_path: Path, registry_binary: str) -> None:
    if shutil.which("wrk") is None:
        message = "wrk is missing: sudo apt-get install -y wrk (make test installs it as root)"
        if os.environ.get("SEALGATE_REQUIRE_REGISTRY") == "1":
            pytest.fail(message)
        pytest.skip(message)
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "admission_bench.py"), "--quick", "--json",
         str(out)],
        capture_output=True, text=True, timeout=300, cwd=REPO, check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert "| goal | target | measured | met |" in done.stdout
    for label in ("c=1", "c=16", "c=64"):
        row = results["warm"][label]
        assert row["floor"]["rps"] > 0 and row["sealgate"]["rps"] > 0
        assert row["sealgate"]["non_2xx"] == 0 and row["floor"]["non_2xx"] == 0
        # one valid audit line per answered request, checked after every run
        assert row["audit"]["all_valid"] and row["audit"]["lines"] == row["audit"]["answered"]
        assert row["sealgate"]["cpu_ms_per_request"] > 0
    cold = results["cold"]
    assert cold["requests"] <= 7 and cold["by_kind"]["manifest"] == 1
    # single-flight: 100 reviews of one new image, and a 52-object rollout, cost the
    # registry requests of one image (the first image of a fresh app)
    first = cold["first_image_of_registry"]["requests"]
    assert results["fanin"]["requests"] == first and results["fanin"]["allowed"] == 100
    assert results["rollout"]["requests"] == first and results["rollout"]["allowed"] == 52
    assert results["memory"]["bytes_per_entry"] > 0
    assert set(results["goals"]) >= {"throughput c=16", "p99 c=64", "CPU per request"}
