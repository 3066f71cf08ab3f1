"""What the tests need of the machine: Debian tools they run for real, and free ports.

``find_or_install`` is how every real-server fixture (docker-registry, redis-server,
etcd) finds its binary: on PATH or in /usr/bin, else Debian's package is installed
first when running as root (quiet and time-limited: a machine without network just
ends up with None, and the fixture skips, or fails where CI requires the server).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def find_tool(command: str) -> str | None:
    """Path of ``command`` on PATH, else in /usr/bin (Debian's place), else None."""
    found = shutil.which(command)
    if found:
        return found
    default = f"/usr/bin/{command}"
    return default if os.access(default, os.X_OK) else None


def find_or_install(command: str, package: str) -> str | None:
    """``command``, installing Debian's ``package`` first when missing and running as root."""
    found = find_tool(command)
    if found or not hasattr(os, "geteuid") or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for install, timeout in (
        (["apt-get", "update", "-qq"], 180),
        (["apt-get", "install", "-y", "-qq", "--no-install-recommends", package], 300),
    ):
        try:
            subprocess.run(install, env=env, timeout=timeout, check=False,
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            return None
    return find_tool(command)
