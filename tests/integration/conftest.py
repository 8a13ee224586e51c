"""Fixtures that build real repositories and start a real tritonserver on loopback ports."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tsrepo import build
from tsrepo.serve import local
from tsrepo.serve.ports import free_ports
from tsrepo.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def stub_pids(marker: str) -> list[int]:
    """PIDs of tritonserver or backend-stub processes whose command line contains `marker`."""
    out = subprocess.run(["ps", "-ww", "-eo", "pid=,stat=,args="], capture_output=True, text=True, check=False).stdout
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
