"""bench against a server whose repository is not here, with metrics, workers and a starved client;
bench and validate beside a model that failed to load."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tsrepo import build
from tsrepo.cli import main
from tsrepo.client import transport, validate
from tsrepo.serve import local
from tsrepo.serve.ports import free_ports
from tsrepo.spec import load_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

SHORT = ["--duration", "1.5", "--warmup", "0.3"]


def _cli(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _successes(url: str, model: str) -> int:
    with transport.connect(url) as client:
        stats = client.statistics(model)["model_stats"][0]
    return int(stats["inference_stats"]["success"]["count"])


def test_bench_from_server_with_static_dims_fills_the_metrics_columns(example_server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./model_repository: the model is read from the server
    out = tmp_path / "r"
    metrics = f"127.0.0.1:{example_server.ports.metrics}"
    args = ["bench", "resnet_small", "--url", example_server.http_url, "--concurrency", "2", *SHORT]
    result = _cli([*args, "--metrics-url", metrics, "--json", f"{out}.json", "--csv", f"{out}.csv"])
    assert result.exit_code == 0, result.output
    (level,) = json.loads(Path(f"{out}.json").read_text())["levels"]
    assert level["errors"] == {} and level["throughput_infer_per_s"] > 0
    assert level["client"]["busy_percent"] > 0 and level["client"]["workers"] == 1
    # no GPU here: Triton's CPU gauges stand in
    assert level["metrics"]["cpu_memory_used_bytes"] > 0 and "cpu_utilization" in level["metrics"]
    with open(f"{out}.csv") as fh:
        (row,) = list(csv.DictReader(fh))
    assert float(row["Max CPU Memory Usage"]) > 0 and row["Avg CPU Utilization"] != ""
    assert row["Avg GPU Utilization"] == "" and float(row["Client CPU %"]) > 0
    assert "cpu MiB" in result.output


def test_bench_from_server_with_dynamic_dims_needs_a_shape(example_server, tmp_path):
    base = ["bench", "text_encoder", "--url", example_server.http_url, "--from-server", "--concurrency", "2"]
    missing = _cli([*base, *SHORT])
    assert missing.exit_code == 2, missing.output
    assert "--shape" in missing.output and "input_ids" in missing.output and "Traceback" not in missing.output
    out = tmp_path / "r.json"
    ok = _cli([*base, *SHORT, "--shape", "input_ids:16", "--range", "input_ids:0:999", "--json", str(out)])
    assert ok.exit_code == 0, ok.output
    (level,) = json.loads(out.read_text())["levels"]
    assert level["errors"] == {} and level["requests"] > 0


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_two_workers_send_exactly_what_the_server_counts(example_server, example_repo, tmp_path, protocol):
    url = example_server.http_url if protocol == "http" else example_server.grpc_url
    before = _successes(example_server.http_url, "din")
    out = tmp_path / "w.json"
    result = _cli(
        ["bench", "din", "--url", url, "--protocol", protocol, "--repo", str(example_repo), "--workers", "2"]
        + ["--concurrency", "1,3", *SHORT, "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    counted = _successes(example_server.http_url, "din") - before
    levels = json.loads(out.read_text())["levels"]
    assert all(lv["client"]["workers"] == 2 and lv["errors"] == {} for lv in levels)
    assert sum(lv["requests_total"] for lv in levels) == counted
    assert all(lv["requests"] > 0 and lv["latency_ms"]["p50"] > 0 for lv in levels)


def test_a_starved_client_is_warned_about(example_server, example_repo):
    stop = threading.Event()

    def burn():
        # Pure Python: it holds the GIL the load loop needs, as a client doing too much work would.
        n = 0
        while not stop.is_set():
            n += 1

    threads = [threading.Thread(target=burn, daemon=True)]
    for t in threads:
        t.start()
    try:
        result = _cli(
            ["bench", "din", "--url", example_server.http_url, "--repo", str(example_repo), "--concurrency", "2"]
            + SHORT
        )
    finally:
        stop.set()
        for t in threads:
            t.join()
    out = " ".join(result.output.split())
    assert result.exit_code == 0, result.output
    assert "the client, not the server, may be the bottleneck" in out and "--workers" in out


@pytest.fixture(scope="module")
def one_failed_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("onefailed")
    (root / "tsrepo.toml").write_text(
        "[defaults]\nmax_batch_size = 4\n\n"
        '[[model]]\nname = "lin"\nsource = "tsrepo_testmodels:linear"\nversion = 1\n'
        'inputs = [{ name = "x", dtype = "float32", shape = [4] }]\n\n'
        '[[model]]\nname = "broken"\nsource = "tsrepo_testmodels:linear"\nversion = 1\n'
        'inputs = [{ name = "x", dtype = "float32", shape = [4] }]\n'
    )
    repo = root / "repo"
    build.build(load_spec(root / "tsrepo.toml"), repo)
    (repo / "broken" / "1" / "model.pt").write_bytes(b"this is not a TorchScript archive")
    with local.start(repo, free_ports(), exit_on_error=False, timeout=240) as server:
        yield repo, server


def test_one_failed_model_does_not_block_bench_or_validate(one_failed_server):
    repo, server = one_failed_server
    base = ["--url", server.http_url, "--repo", str(repo)]
    t0 = time.monotonic()
    ok = _cli(["bench", "lin", *base, "--concurrency", "1", *SHORT])
    assert ok.exit_code == 0, ok.output
    assert time.monotonic() - t0 < 30
    failed = _cli(["bench", "broken", *base, "--concurrency", "1", *SHORT])
    assert failed.exit_code == 1 and "'broken' is not ready" in failed.output and "UNAVAILABLE" in failed.output
    t0 = time.monotonic()
    (lin,) = validate.validate(server.http_url, repo, ["lin"], samples=2, timeout=60)
    assert lin.status == "pass" and time.monotonic() - t0 < 30
    (broken,) = validate.validate(server.http_url, repo, ["broken"], samples=2, timeout=60)
    assert broken.status == "not ready" and "UNAVAILABLE" in broken.problems[0]
    assert time.monotonic() - t0 < 40


def test_requests_that_all_fail_end_the_level_instead_of_waiting_forever(example_server, example_repo, tmp_path):
    # An embedding index out of range: the server answers every request with an error.
    data = tmp_path / "bad.json"
    data.write_text(json.dumps({
        "user_id": [-5], "item_id": [1], "category_id": [1], "hist_item_ids": [1, 2], "hist_category_ids": [1, 2],
    }))  # fmt: skip
    started = time.monotonic()
    args = ["--concurrency", "2", "--requests", "5", "--warmup", "0", "--input-data", str(data)]
    result = CliRunner().invoke(
        main, ["bench", "din", "--repo", str(example_repo), "--url", example_server.http_url, *args]
    )
    assert result.exit_code == 1, result.output
    assert "requests failed" in result.output and "Traceback" not in result.output
    assert time.monotonic() - started < 60
    # Merged failing requests once crashed tritonserver (an error object shared by their responses).
    assert example_server.alive() and "connection refused" not in result.output
