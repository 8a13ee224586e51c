"""Models as libraries write them, from spec to served and validated with no wrapper written by the user: a
transformers encoder returning its output object (attention mask, dynamic sequence length), a model with an
optional argument, and a model calling a custom C++ operator that the local engine's runner loads."""

from __future__ import annotations

import json

import pytest

from tsrepo import build
from tsrepo.client import validate as validate_mod
from tsrepo.serve import local
from tsrepo.serve.ports import free_ports
from tsrepo.spec import load_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

from tests.unit.test_library_models import op_library  # noqa: E402, F401

SPEC = """
[defaults]
max_batch_size = 4
dynamic_batching = { max_queue_delay_microseconds = 100 }

[[model]]
name = "bert"
source = "tsrepo_testmodels:tiny_bert"
rtol = 1e-3
atol = 1e-4
inputs = [
  { name = "input_ids", dtype = "int64", shape = ["4..16"], range = [0, 100] },
  { name = "attention_mask", dtype = "int64", shape = ["4..16"], range = [1, 2] },
]

[[model]]
name = "masked"
source = "tsrepo_testmodels:optional_mask"
inputs = [{ name = "x", dtype = "float32", shape = [4] }]

[[model]]
name = "muladd"
source = "tsrepo_testmodels:custom_op"
export = "script"
inputs = [{ dtype = "float32", shape = [4] }]
"""


@pytest.fixture(scope="module")
def library_repo(tmp_path_factory, op_library):  # noqa: F811
    pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("library")
    (folder / "tsrepo.toml").write_text(SPEC)
    result = build.build(load_spec(folder / "tsrepo.toml"), folder / "repo")
    return folder / "repo", result


def test_library_models_serve_and_validate_without_a_user_wrapper(library_repo, op_library):  # noqa: F811
    repo, result = library_repo
    bert = next(pm for pm in result.models if pm.spec.name == "bert")
    assert [o.name for o in bert.signature.outputs] == ["last_hidden_state__0", "pooler_output__1"]
    assert bert.signature.outputs[0].dims == (-1, 32)
    record = json.loads((repo / "muladd" / "tsrepo.json").read_text())
    assert record["op_libraries"][0]["library"] == str(op_library.resolve())
    server = local.start(repo, free_ports(), timeout=300)
    try:
        results = validate_mod.validate(
            server.http_url, repo, ["bert", "masked", "muladd"], protocol="http", samples=3, timeout=120
        )
        for r in results:
            assert r.status == validate_mod.Status.PASS, (r.model, r.problems)
    finally:
        server.stop()
