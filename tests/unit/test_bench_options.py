"""bench's new options and pure parts: --shape/--range parsing, metrics parsing, worker shares, and
records from several processes merged exactly."""

from __future__ import annotations

import time

import numpy as np
import pytest
from click.testing import CliRunner

from tsrepo import dtypes
from tsrepo.cli import main
from tsrepo.client import loadgen, metrics, modelinfo, workers
from tsrepo.errors import UsageError
from tsrepo.serve.ports import free_port


def _run(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.mark.parametrize(
    "args, why",
    [
        (["--shape", "x"], "NAME:D1,D2"),
        (["--shape", "x:a,b"], "whole numbers"),
        (["--shape", "x:-2"], ">= 0"),
        (["--range", "x:1"], "NAME:LOW:HIGH"),
        (["--range", "x:5:1"], "LOW must be <= HIGH"),
        (["--range", "x:a:b"], "whole numbers"),
        (["--workers", "0"], "--workers"),
    ],
)
def test_bad_shapes_ranges_and_workers_are_exit_2_naming_the_option(args, why):
    result = _run(["bench", "m", "--url", f"127.0.0.1:{free_port()}", "--concurrency", "1", *args])
    assert result.exit_code == 2, result.output
    assert args[0] in result.output and why in result.output


def test_repo_and_from_server_together_are_refused(tmp_path):
    result = _run(["bench", "m", "--repo", str(tmp_path), "--from-server", "--concurrency", "1"])
    assert result.exit_code == 2 and "--from-server" in result.output


def _info(dims):
    t = modelinfo.TensorInfo("ids", dtypes.SUPPORTED["int64"], dims)
    f = modelinfo.TensorInfo("w", dtypes.SUPPORTED["float32"], (4,))
    return modelinfo.ModelInfo("m", None, None, None, [t, f], ["y"])


def test_shapes_fill_dynamic_dims_and_a_missing_one_names_the_input():
    info = modelinfo.with_overrides(_info((-1, 3)), {"ids": (7, 3)}, {"ids": (0, 9)})
    assert info.inputs[0].dims == (7, 3) and info.inputs[0].range == (0, 9)
    modelinfo.require_shapes(info)
    with pytest.raises(UsageError, match="`--shape`: input 'ids'.*--shape ids:8,3"):
        modelinfo.require_shapes(_info((-1, 3)))
    with pytest.raises(UsageError, match="does not fit input 'ids'"):
        modelinfo.with_overrides(_info((-1, 3)), {"ids": (7, 4)}, {})
    with pytest.raises(UsageError, match="has no input 'nope'"):
        modelinfo.with_overrides(_info((-1, 3)), {"nope": (1,)}, {})
    with pytest.raises(UsageError, match="ranges are for integer inputs"):
        modelinfo.with_overrides(_info((2, 3)), {}, {"w": (0, 1)})


def test_metrics_are_parsed_from_prometheus_text_and_merged_per_level():
    text = (
        "# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)\n"
        'nv_gpu_utilization{gpu_uuid="a"} 0.5\n'
        'nv_gpu_utilization{gpu_uuid="b"} 0.7\n'
        'nv_gpu_memory_used_bytes{gpu_uuid="a"} 100\n'
        'nv_gpu_memory_used_bytes{gpu_uuid="b"} 200\n'
        "nv_cpu_utilization 0.25\n"
        'nv_inference_count{model="m",version="1"} 12\n'
    )
    got = metrics.parse(text)
    assert got == {
        "gpu_utilization": pytest.approx(0.6),
        "gpu_memory_used_bytes": 300,
        "cpu_utilization": 0.25,
    }
    merged = metrics.merge(
        [{"gpu_utilization": 0.2, "gpu_memory_used_bytes": 5}, {"gpu_utilization": 0.4, "gpu_memory_used_bytes": 9}]
    )
    assert merged == {"gpu_utilization": pytest.approx(0.3), "gpu_memory_used_bytes": 9}
    assert metrics.default_url("10.0.0.1:8001") == "10.0.0.1:8002"


def test_levels_split_over_workers():
    assert workers.shares(16, 3, closed=True) == [6, 5, 5]
    assert workers.shares(1, 2, closed=True) == [1, 0]
    assert workers.shares(300.0, 2, closed=False) == [150.0, 150.0]


def test_records_from_several_processes_merge_exactly():
    a, b = loadgen.Records(), loadgen.Records()
    for k in range(10):
        a.add(1.0 + k, 0.001 * (k + 1))
        b.add(1.5 + k, 0.010 * (k + 1))
    b.add(20.0, 0.5, loadgen.failures.TIMEOUT)
    parent = loadgen.Records()
    parent.extend(*b.chunk(0), dict(b.errors), b.last_connection_error)
    merged = loadgen.RecordSet([a, parent])
    count, ok, lat = merged.window(3.0, 8.0)
    assert count == 10 and ok.all()
    assert sorted(lat) == pytest.approx([0.003, 0.004, 0.005, 0.006, 0.007, 0.03, 0.04, 0.05, 0.06, 0.07])
    assert merged.successes == 20 and merged.errors == {"timeout": 1} and merged.last_success == 10.5
    assert np.isclose(merged.window(0, 30)[2].max(), 0.1)


def test_busy_counts_a_thread_that_runs():
    t0, b0 = time.perf_counter(), workers.busy()
    while time.perf_counter() - t0 < 0.2:
        pass
    assert workers.busy() - b0 >= 0.1


def test_a_request_rate_too_slow_to_measure_is_refused():
    from tsrepo.client.bench import Mode, parse_levels
    from tsrepo.errors import UsageError

    with pytest.raises(UsageError, match="--request-rate.*>= 0.1"):
        parse_levels("1e-300", Mode.REQUEST_RATE)
    assert parse_levels("0.1,5", Mode.REQUEST_RATE) == [0.1, 5.0]
