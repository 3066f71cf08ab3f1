"""Load and loss (issue 11, deliverable 4): the served app over real HTTPS, audit log in a file.

- 10,000 reviews at concurrency 64: audit lines = answers, every line valid
  JSON, one per uid, RSS stable between the first and the second half.
- Clients trickling their body do not delay the others (and are cut off at
  the deadline with 408).
- A rolling restart under load (SIGTERM with requests in flight, a second
  process binding the port as the first lets go) loses no answer and no line.
- Five 5,000-image reviews at once: denied at once, memory bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.admission_helpers import pod_review, policy_text, signed_image
from tests.loadgen import LoadResult, run_load
from tests.registry_server import RegistryServer, push_image
from tests.served import Served, rss_bytes, start_served, wait_ready
from tests.signing import public_pem

CLEAN_EXIT = (0, -15)
MIB = 1024 * 1024


@dataclass
class World:
    tmp_path: Path
    policies: Path
    env: dict[str, str]
    signed: str
    unsigned: str

    def review(self, uid: str) -> dict[str, Any]:
        # 8 in 10 signed (allow), 1 unsigned (deny), 1 in a namespace without policy
        n = int(uid[:2], 16) % 10
        image = self.unsigned if n == 0 else self.signed
        review = pod_review(image, namespace="dev" if n == 1 else "prod")
        review["request"]["uid"] = uid
        return review


@pytest.fixture
def world(tmp_path: Path, registry: RegistryServer) -> World:
    key = ec.generate_private_key(ec.SECP256R1())
    policies = tmp_path / "policies"
    policies.mkdir()
    (policies / "p.yaml").write_text(policy_text(registry.host, public_pem(key)))
    signed_image(registry, key, "team/load")
    push_image(registry.url, "team/load-unsigned", "v1")
    return World(tmp_path, policies, {"SEALGATE_INSECURE_REGISTRIES": registry.host},
                 f"{registry.host}/team/load:v1", f"{registry.host}/team/load-unsigned:v1")


@pytest.fixture
def served(world: World) -> Iterator[Served]:
    server = start_served(world.tmp_path, world.policies, world.env)
    yield server
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait()


def _check_no_loss(result: LoadResult, audit_log: Path, requests: int) -> list[dict[str, Any]]:
    """Every request answered once, every answer audited once, every line whole JSON."""
    assert result.lost == [], f"{len(result.lost)} requests sent and never answered"
    assert result.statuses == {200: requests}
    assert len(result.answers) == requests
    raw = audit_log.read_bytes()
    assert raw.endswith(b"\n")
    lines = [json.loads(line) for line in raw.decode().splitlines()]  # whole JSON, no tearing
    uids = Counter(line["uid"] for line in lines)
    twice = [uid for uid, count in uids.items() if count > 1]
    assert twice == [], f"decided twice (an answer was lost and retried): {twice[:3]}"
    assert set(uids) == set(result.answers)
    for line in lines:
        answer = result.answers[line["uid"]]
        assert answer["uid"] == line["uid"]
        assert answer["allowed"] is (line["decision"] != "deny")
    return lines


async def test_ten_thousand_reviews_at_64_audit_lines_equal_answers(
    served: Served, world: World
) -> None:
    requests = 10_000
    rss: dict[str, int] = {}

    def progress(done: int) -> None:
        if done == requests // 2:
            rss["half"] = rss_bytes(served.process.pid)

    started = time.perf_counter()
    result = await run_load(served.port, served.context(), requests=requests, concurrency=64,
                            make_review=world.review, on_progress=progress)
    elapsed = time.perf_counter() - started
    rss["end"] = rss_bytes(served.process.pid)
    lines = _check_no_loss(result, served.audit_log, requests)
    assert result.retries == 0
    decisions = Counter(line["decision"] for line in lines)
    assert decisions["allow"] > 7_000 and decisions["deny"] > 500
    growth = rss["end"] - rss["half"]
    latencies = sorted(result.latencies)
    print(f"\n10,000 reviews at 64: {elapsed:.1f}s, {requests / elapsed:.0f}/s, "
          f"p50 {latencies[len(latencies) // 2] * 1000:.1f} ms, "
          f"p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms, "
          f"RSS half {rss['half'] / MIB:.1f} MiB end {rss['end'] / MIB:.1f} MiB")
    assert growth < 16 * MIB, f"RSS grew {growth / MIB:.1f} MiB in the second half"


async def _trickle(port: int, context: ssl.SSLContext, stop: asyncio.Event) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context,
                                                   server_hostname="localhost")
    writer.write(b"POST /validate HTTP/1.1\r\nHost: localhost\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n")
    try:
        while not stop.is_set():
            writer.write(b" ")
            await writer.drain()
            try:
                return await asyncio.wait_for(reader.read(65536), 0.25)
            except TimeoutError:
                continue
        return b""
    except (ConnectionError, ssl.SSLError):
        return b""
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1)


async def test_clients_trickling_their_body_do_not_delay_others(
    tmp_path: Path, world: World
) -> None:
    served = start_served(tmp_path, world.policies, {**world.env, "SEALGATE_DEADLINE": "3s"})
    try:
        stop = asyncio.Event()
        context = served.context()
        trickling = [asyncio.create_task(_trickle(served.port, context, stop))
                     for _ in range(32)]
        await asyncio.sleep(0.5)
        result = await run_load(served.port, context, requests=400, concurrency=8,
                                make_review=world.review)
        _check_no_loss(result, served.audit_log, 400)
        latencies = sorted(result.latencies)
        assert latencies[int(len(latencies) * 0.99)] < 1.0, latencies[-5:]
        # a body not received within the deadline is answered 408 and the connection freed
        answers = await asyncio.wait_for(asyncio.gather(*trickling), 10)
        stop.set()
        assert all(answer.startswith(b"HTTP/1.1 408 ") for answer in answers), answers[:2]
    finally:
        served.process.kill()
        served.process.wait()


async def test_rolling_restart_under_load_loses_no_answer_and_no_audit_line(
    served: Served, world: World
) -> None:
    requests = 3_000
    second: list[Served] = []
    restarted = asyncio.Event()

    async def restart() -> None:
        # SIGTERM the first process while requests are in flight; a second one takes
        # the port over as soon as the first has let go of it (sequential bind)
        served.process.send_signal(15)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", served.port)
                writer.close()
                await writer.wait_closed()
                await asyncio.sleep(0.01)
                continue
            except OSError:
                pass
            candidate = start_served(world.tmp_path, world.policies, world.env,
                                     port=served.port, name="second", wait=False)
            try:
                await asyncio.to_thread(wait_ready, candidate)
            except AssertionError:
                candidate.process.wait()  # lost the race for the port: try again
                continue
            second.append(candidate)
            restarted.set()
            return

    tasks: list[asyncio.Task[None]] = []

    def progress(done: int) -> None:
        if done == 1_000:
            tasks.append(asyncio.get_running_loop().create_task(restart()))

    try:
        result = await run_load(served.port, served.context(), requests=requests,
                                concurrency=32, make_review=world.review, on_progress=progress)
        await asyncio.wait_for(restarted.wait(), 20)
        assert served.process.wait(15) in CLEAN_EXIT
        _check_no_loss(result, served.audit_log, requests)
        print(f"\nrolling restart: {requests} answered, {result.retries} connection retries")
        first_pid_lines = sum(1 for _ in served.printed().splitlines() if "draining" in _)
        assert first_pid_lines == 1
    finally:
        for server in second:
            server.process.kill()
            server.process.wait()


async def test_five_floods_of_five_thousand_images_are_denied_with_bounded_memory(
    served: Served, world: World
) -> None:
    # Found: five 5,000-image reviews at once took memory from 76 to 650 MiB (chart limit
    # 512Mi) and answers past the API server's 10 s timeout.
    def flood(uid: str) -> dict[str, Any]:
        review = pod_review(world.signed)
        review["request"]["uid"] = uid
        review["request"]["object"]["spec"]["containers"] = [
            {"name": f"c{i}", "image": f"{world.signed.rsplit(':', 1)[0]}-{i}:v1"}
            for i in range(5_000)
        ]
        return review

    before = rss_bytes(served.process.pid)
    started = time.perf_counter()
    result = await run_load(served.port, served.context(), requests=5, concurrency=5,
                            make_review=flood)
    elapsed = time.perf_counter() - started
    after = rss_bytes(served.process.pid)
    _check_no_loss(result, served.audit_log, 5)
    print(f"\nfive 5,000-image floods: {elapsed:.2f}s, RSS {before / MIB:.0f} -> "
          f"{after / MIB:.0f} MiB")
    for answer in result.answers.values():
        assert answer["allowed"] is False
        assert "over the limit of 200 (SEALGATE_MAX_IMAGES)" in answer["status"]["message"]
    assert elapsed < 5
    assert after - before < 100 * MIB, f"RSS grew {(after - before) / MIB:.0f} MiB"
    assert after < 400 * MIB

