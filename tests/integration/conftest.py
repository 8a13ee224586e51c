"""Fixtures that build real repositories and start a real tritonserver on loopback ports."""

from __future__ import annotations

import random
import socket
import subprocess
from pathlib import Path

import pytest

from tsrepo import build
from tsrepo.serve import local
from tsrepo.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def free_port() -> int:
    """A free TCP port in 18000-18999 on 127.0.0.1."""
    ports = list(range(18000, 19000))
    random.shuffle(ports)
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 18000-18999")


def free_ports() -> local.Ports:
    chosen: set[int] = set()
    while len(chosen) < 3:
        chosen.add(free_port())
    http, grpc, metrics = sorted(chosen)
    return local.Ports(http, grpc, metrics)


def stub_pids(marker: str) -> list[int]:
    """PIDs of tritonserver or backend-stub processes whose command line contains `marker`."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True).stdout
    pids = []
    for line in out.splitlines():
        pid, stat, args = line.strip().split(None, 2)
        if marker in args and ("tritonserver" in args or "triton_python_backend_stub" in args) and "Z" not in stat:
            pids.append(int(pid))
    return pids


@pytest.fixture(scope="session")
def example_repo(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("examples") / "model_repository"
    build.build(load_spec(ROOT / "tsrepo.toml"), out)
    return out


@pytest.fixture(scope="session")
def example_server(example_repo):
    server = local.start(example_repo, free_ports(), timeout=240)
    yield server
    server.stop()
