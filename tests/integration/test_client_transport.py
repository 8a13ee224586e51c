"""The one client transport against a real tritonserver: failure kinds, repository API, NaN models."""

from __future__ import annotations

import socket
import subprocess

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from tsrepo import build
from tsrepo.cli import main
from tsrepo.client import transport, validate
from tsrepo.errors import ServerRefused, ServerTimeout, ServerUnreachable
from tsrepo.serve import local
from tsrepo.serve.ports import free_port, free_ports
from tsrepo.spec import load_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_unreachable_timeout_and_refused_are_kept_apart_over_both_protocols(example_server, protocol):
    url = example_server.http_url if protocol == "http" else example_server.grpc_url
    with transport.connect(f"{protocol}://{url}", protocol, timeout=5) as client:  # a scheme prefix is fine
        assert client.live() and client.server_ready() and client.model_ready("din")
        assert not client.model_ready("din", 99)
        with pytest.raises(ServerRefused, match="nope"):
            client.metadata("nope")
        stats = client.statistics("din")["model_stats"][0]
        assert stats["name"] == "din"
    with pytest.raises(ServerUnreachable, match="server not reachable"):
        transport.connect(f"127.0.0.1:{free_port()}", protocol, timeout=2).metadata("din")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()  # accepts and never answers
        with pytest.raises((ServerTimeout, ServerUnreachable)) as e:
            transport.connect(f"127.0.0.1:{silent.getsockname()[1]}", protocol, timeout=0.5).metadata("din")
        if protocol == "http":
            assert isinstance(e.value, ServerTimeout)


def test_grpc_with_an_http_prefix_answers_instead_of_waiting_out_the_timeout(example_server, example_repo):
    result = CliRunner().invoke(
        main,
        ["validate", "--repo", str(example_repo), "--url", f"http://{example_server.grpc_url}", "--protocol", "grpc",
         "--model", "din", "--samples", "1", "--timeout", "20"],
    )
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output


def _nan_repo(tmp_path):
    class AllNan(torch.nn.Module):
        def forward(self, x):
            return x * float("nan")

    pt = tmp_path / "nan.pt"
    torch.jit.save(torch.jit.script(AllNan()), str(pt))
    spec = tmp_path / "tsrepo.toml"
    spec.write_text(
        f'[[model]]\nname = "nan"\nsource = "{pt}"\nversion = 1\nmax_batch_size = 4\n'
        'inputs = [{ name = "x", dtype = "float32", shape = [3] }]\n'
    )
    repo = tmp_path / "repo"
    build.build(load_spec(spec), repo)
    return repo


@pytest.fixture
def explicit_server(tmp_path, monkeypatch):
    """A server on a NaN model, in explicit model-control mode (the repository API needs it)."""
    repo = _nan_repo(tmp_path)
    popen = subprocess.Popen

    def with_explicit_control(cmd, *args, **kwargs):
        return popen([*cmd, "--model-control-mode=explicit", "--load-model=*"], *args, **kwargs)

    monkeypatch.setattr(local.subprocess, "Popen", with_explicit_control)
    server = local.start(repo, free_ports(), timeout=240)
    monkeypatch.undo()
    yield server, repo
    server.stop()


def test_a_model_whose_outputs_are_all_nan_passes_validate_with_a_note(explicit_server):
    server, repo = explicit_server
    for url, protocol in ((server.http_url, "http"), (server.grpc_url, "grpc")):
        (result,) = validate.validate(url, repo, protocol=protocol, samples=2)
        assert result.status == validate.Status.PASS, result.problems
        assert result.outputs["OUTPUT__0"].nonfinite > 0
        assert any("NaN or inf" in n for n in result.notes)
    cli = CliRunner().invoke(main, ["validate", "--repo", str(repo), "--url", server.http_url, "--samples", "1"])
    assert cli.exit_code == 0 and "NaN or inf" in cli.output, cli.output


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_load_with_a_config_override_and_unload_through_the_repository_api(explicit_server, protocol):
    server, _ = explicit_server
    url = server.http_url if protocol == "http" else server.grpc_url
    with transport.connect(url, protocol, timeout=60) as client:
        config = client.config("nan")
        assert int(config["max_batch_size"]) == 4
        client.load("nan", {**config, "max_batch_size": 2})
        assert int(client.config("nan")["max_batch_size"]) == 2
        out = client.infer("nan", None, {"x": np.ones((2, 3), np.float32)}, ["OUTPUT__0"])["OUTPUT__0"]
        assert out.shape == (2, 3) and np.isnan(out).all()
        with pytest.raises(ServerRefused):
            client.infer("nan", None, {"x": np.ones((3, 3), np.float32)}, ["OUTPUT__0"])  # above the new max
        client.unload("nan")
        assert not client.model_ready("nan")
        assert {m["name"]: m.get("state") for m in client.repository_index()}["nan"] in ("UNLOADING", "UNAVAILABLE")
        client.load("nan")  # back to its config.pbtxt
        assert client.model_ready("nan") and int(client.config("nan")["max_batch_size"]) == 4
        with pytest.raises(ServerRefused):
            client.load("not_in_the_repository")
