"""The runner answers every dtype it serves exactly as the TorchScript module does, one request at a
time and with requests merged by the dynamic batcher (its DLPack paths in and out, its concatenation
and its per-request slicing)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from tsrepo import build, dtypes
from tsrepo.client import modelinfo, transport, validate
from tsrepo.serve import local
from tsrepo.serve.ports import free_ports
from tsrepo.spec import load_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

NAMES = list(dtypes.SUPPORTED)  # bool, uint8, int8, int16, int32, int64, float16, float32, float64

MODELS_PY = """
import torch
from torch import nn


class AllTypes(nn.Module):
    def forward(self, bool_in, uint8_in, int8_in, int16_in, int32_in, int64_in, float16_in, float32_in, float64_in):
        return (
            torch.logical_not(bool_in), uint8_in + 1, int8_in - 1, int16_in * 2, int32_in + 7, int64_in * 3,
            float16_in * 2, float32_in + 0.5, float64_in * 1.5,
        )


def all_types():
    return AllTypes()
"""


@pytest.fixture(scope="module")
def dtype_repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("dtypes")
    (root / "dtype_models.py").write_text(MODELS_PY)
    inputs = ", ".join(
        f'{{ name = "{n}_in", dtype = "{n}", shape = [3]' + (", range = [0, 100] }" if n != "bool" else " }")
        for n in NAMES
    )
    (root / "tsrepo.toml").write_text(
        '[[model]]\nname = "all_types"\nsource = "dtype_models:all_types"\nversion = 1\nmax_batch_size = 8\n'
        # a long queue delay, so concurrent requests are merged into one execute
        'dynamic_batching = { max_queue_delay_microseconds = 50000 }\nexport = "script"\n'
        f"inputs = [{inputs}]\n"
    )
    repo = root / "repo"
    build.build(load_spec(root / "tsrepo.toml"), repo)
    return repo


def test_runner_answers_every_dtype_alone_and_batched(dtype_repo):
    info = modelinfo.load(dtype_repo, "all_types")
    module = torch.jit.load(str(dtype_repo / "all_types" / "1" / "model.pt"))
    rng = np.random.default_rng(1)
    requests = [info.sample(rng, 1 + k % 3, "mid") for k in range(12)]
    with local.start(dtype_repo, free_ports(), timeout=240) as server:
        results = validate.validate(server.http_url, dtype_repo, samples=4)
        assert results[0].status == "pass", results[0].problems

        def send(arrays):
            with transport.connect(server.http_url, timeout=30) as client:
                return client.infer("all_types", None, arrays, info.outputs)

        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(send, requests))
        with transport.connect(server.http_url) as client:
            stats = client.statistics("all_types")["model_stats"][0]
    for arrays, served in zip(requests, answers, strict=True):
        expected = module(*[torch.from_numpy(arrays[f"{n}_in"]) for n in NAMES])
        for name, want in zip(info.outputs, expected, strict=True):
            got = served[name]
            assert got.dtype == want.numpy().dtype and got.shape == tuple(want.shape), name
            np.testing.assert_array_equal(got, want.numpy(), err_msg=name)
    # the merged path ran: fewer executions than requests
    assert int(stats["execution_count"]) < int(stats["inference_stats"]["success"]["count"])
