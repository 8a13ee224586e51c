"""An AOTInductor package served by the local engine (through the same batch-concatenating runner as
TorchScript) and validated against the package run locally, over HTTP and gRPC."""

from __future__ import annotations

import pytest

from tsrepo.client import validate as validate_mod
from tsrepo.serve import local
from tsrepo.serve.ports import free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

# The session fixtures of the unit tests build the package once (one compile, a shared cache).
from tests.unit.test_aoti import aoti_cache, tiny_build  # noqa: E402, F401


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_a_served_aoti_package_validates_against_the_local_package(tiny_build, protocol):  # noqa: F811
    _spec, repo, _result = tiny_build
    server = local.start(repo, free_ports(), timeout=240)
    try:
        url = server.http_url if protocol == "http" else server.grpc_url
        (result,) = validate_mod.validate(url, repo, ["tiny"], protocol=protocol, samples=4, timeout=60)
        assert result.status == validate_mod.Status.PASS, result.problems
        assert result.samples == 4 and all(o.max_abs <= 1e-4 for o in result.outputs.values())
    finally:
        server.stop()
