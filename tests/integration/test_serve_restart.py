"""A server restarted on the ports a stopped one just used starts at once (they are only in TIME_WAIT)."""

from __future__ import annotations

import errno
import http.client
import socket
from pathlib import Path

import pytest

from tsrepo import build
from tsrepo.serve import local
from tsrepo.serve.ports import free_ports
from tsrepo.spec import load_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("restart")
    spec = root / "tsrepo.toml"
    spec.write_text(
        '[[model]]\nname = "lin"\nsource = "tsrepo_testmodels:linear"\nversion = 1\nmax_batch_size = 4\n'
        'inputs = [{ name = "x", dtype = "float32", shape = [4] }]\n'
    )
    build.build(load_spec(spec), root / "repo")
    return root / "repo"


def _plain_bind_refused(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError as e:
            return e.errno == errno.EADDRINUSE
    return False


def test_serve_restarts_at_once_on_the_ports_a_stopped_server_just_used(tiny_repo):
    ports = free_ports()
    with local.start(tiny_repo, ports, timeout=240) as server:
        assert {m.name: m.state for m in server.models()} == {"lin": "READY"}
        # A client with a keep-alive connection, as validate and bench keep them: stopping the
        # server closes it from the server's side, which leaves the server's port in TIME_WAIT.
        client = http.client.HTTPConnection("127.0.0.1", ports.http, timeout=10)
        client.request("GET", "/v2/health/live")
        assert client.getresponse().read() == b""
    client.close()
    # A plain bind is now refused for about a minute; tritonserver binds with SO_REUSEADDR.
    assert _plain_bind_refused(ports.http)
    with local.start(tiny_repo, ports, timeout=240) as again:
        assert {m.name: m.state for m in again.models()} == {"lin": "READY"}
