"""INTRA_OP_THREAD_COUNT and INTER_OP_THREAD_COUNT read as the libtorch backend reads them (std::stoi in its
ParseIntValue; a count below 1 leaves torch's default), by tsrepo's checks and by the local engine's runner
alike: what the real backend loads, the local engine serves, and what it fails on, tsrepo names first."""

from __future__ import annotations

import sys
import types

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo.config import thread_count
from tsrepo.errors import ConfigError
from tsrepo.serve import shadow

READ = [("1", 1), ("4", 4), (" 3", 3), ("\t2 ", 2), ("+2", 2), ("2x", 2), ("1.5", 1), ("0", None), ("-1", None)]
REFUSED = ["", " ", "two", "x2", ".5", "99999999999", "-99999999999"]


def _cfg(value: str) -> pb.ModelConfig:
    text = 'platform: "pytorch_libtorch"\n'
    text += f'parameters {{ key: "INTRA_OP_THREAD_COUNT" value {{ string_value: "{value}" }} }}'
    return text_format.Parse(text.replace("\t", "\\t"), pb.ModelConfig())


@pytest.fixture(scope="module")
def runner_count():
    """The rendered runner's own _count, run with a stand-in for triton_python_backend_utils (only the
    exception class is used by _count)."""

    class TritonModelException(Exception):
        pass

    stub = types.ModuleType("triton_python_backend_utils")
    stub.TritonModelException = TritonModelException
    saved = sys.modules.get("triton_python_backend_utils")
    sys.modules["triton_python_backend_utils"] = stub
    try:
        namespace: dict = {"__name__": "runner_under_test"}
        exec(compile(shadow.render_runner(shadow.runner_template(), "m"), "model.py", "exec"), namespace)
    finally:
        if saved is None:
            del sys.modules["triton_python_backend_utils"]
        else:
            sys.modules["triton_python_backend_utils"] = saved
    return namespace["_count"], TritonModelException


@pytest.mark.parametrize("value, threads", READ)
def test_a_count_the_backend_loads_is_read_as_it_reads_it(value, threads, runner_count):
    count, _ = runner_count
    assert thread_count(_cfg(value), "INTRA_OP_THREAD_COUNT", "cfg") == threads
    assert count({"INTRA_OP_THREAD_COUNT": {"string_value": value}}, "INTRA_OP_THREAD_COUNT") == threads


@pytest.mark.parametrize("value", REFUSED)
def test_a_count_the_backend_fails_on_is_refused_by_both(value, runner_count):
    count, refused = runner_count
    with pytest.raises(ConfigError, match="cfg: `parameters` INTRA_OP_THREAD_COUNT"):
        thread_count(_cfg(value), "INTRA_OP_THREAD_COUNT", "cfg")
    with pytest.raises(refused, match="INTRA_OP_THREAD_COUNT"):
        count({"INTRA_OP_THREAD_COUNT": {"string_value": value}}, "INTRA_OP_THREAD_COUNT")


def test_an_absent_count_is_torchs_default(runner_count):
    count, _ = runner_count
    assert thread_count(pb.ModelConfig(), "INTER_OP_THREAD_COUNT", "cfg") is None
    assert count({}, "INTER_OP_THREAD_COUNT") is None
