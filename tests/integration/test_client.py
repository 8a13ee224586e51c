from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tsrepo.cli import main
from tsrepo.client import bench, validate
from tsrepo.serve import local
from tsrepo.serve.ports import free_port, free_ports

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _cli(args):
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_validate_passes_on_the_examples(example_server, example_repo, protocol):
    url = example_server.http_url if protocol == "http" else example_server.grpc_url
    results = validate.validate(url, example_repo, protocol=protocol, samples=4)
    assert {r.name: r.status for r in results} == {"din": "pass", "resnet_small": "pass", "text_encoder": "pass"}
    for r in results:
        assert r.samples == 4 and r.outputs and all(o.ok for o in r.outputs.values())
    result = _cli(["validate", "--repo", str(example_repo), "--url", url, "--protocol", protocol, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output[: result.output.rindex("]") + 1])
    assert [d["status"] for d in doc] == ["pass", "pass", "pass"]


def test_validate_fails_naming_model_and_output_when_weights_differ(example_repo, tmp_path):
    served = tmp_path / "served"
    shutil.copytree(example_repo, served)
    other = torch.jit.load(str(example_repo / "resnet_small" / "1" / "model.pt"))
    with torch.no_grad():
        other.fc.weight.add_(0.05)
    torch.jit.save(other, str(served / "resnet_small" / "1" / "model.pt"))
    with local.start(served, free_ports(), timeout=240) as server:
        result = _cli(["validate", "--repo", str(example_repo), "--url", server.http_url, "--samples", "2"])
    assert result.exit_code == 1, result.output
    assert "resnet_small: output OUTPUT__0 differs" in result.output.replace("\n", " ")
    assert "din" in result.output and "text_encoder" in result.output  # the others still pass


def test_validate_keeps_unreachable_and_refused_apart(example_server, example_repo):
    gone = _cli(["validate", "--repo", str(example_repo), "--url", f"127.0.0.1:{free_port()}", "--timeout", "1"])
    assert gone.exit_code == 1 and "server not reachable" in gone.output and "Traceback" not in gone.output
    results = validate.validate(example_server.http_url, example_repo, ["resnet_small"], samples=1)
    assert results[0].status == "pass"
    missing = tmp_repo_with_unknown_model(example_repo)
    res = validate.validate(example_server.http_url, missing, ["nonexistent"], samples=1)
    assert res[0].status == "not ready" and "not served" in res[0].problems[0]


def tmp_repo_with_unknown_model(example_repo: Path) -> Path:
    repo = example_repo.parent / "with_unknown"
    if not repo.exists():
        shutil.copytree(example_repo / "din", repo / "nonexistent")
    return repo


def test_bench_writes_consistent_json_csv_and_png(example_server, example_repo, tmp_path):
    out = tmp_path / "r"
    result = _cli(
        [
            "bench",
            "din",
            "--url",
            example_server.http_url,
            "--repo",
            str(example_repo),
            "--concurrency",
            "1,4",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--json",
            f"{out}.json",
            "--csv",
            f"{out}.csv",
            "--plot",
            f"{out}.png",
        ]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(Path(f"{out}.json").read_text())
    levels = doc["levels"]
    assert [lv["concurrency"] for lv in levels] == [1, 4]
    with open(f"{out}.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["Concurrency"] for r in rows] == ["1", "4"]
    for lv, row in zip(levels, rows, strict=False):
        assert lv["throughput_infer_per_s"] > 0 and lv["errors"] == {}
        assert float(row["Inferences/Second"]) == pytest.approx(lv["throughput_infer_per_s"], abs=0.01)
        assert float(row["p50 latency"]) == pytest.approx(lv["latency_ms"]["p50"] * 1000, abs=1)
        lat = lv["latency_ms"]
        assert lat["p50"] <= lat["p90"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        # the server counted what the client measured, and batched at most max_batch_size
        assert lv["server"]["inference_count"] >= lv["requests"] * 0.9
        assert 1.0 <= lv["server"]["avg_batch_size"] <= 8.0
    assert levels[1]["server"]["avg_batch_size"] > levels[0]["server"]["avg_batch_size"]
    png = Path(f"{out}.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_request_rate_above_capacity_shows_latency_growing(example_server, example_repo):
    # Latency is counted from each request's scheduled send time, so the queueing shows wherever it
    # happens: in Triton's queue, or in a client too starved (2 shared cores) to keep its schedule.
    # Judged against the unloaded latency measured by the same client, not against a throughput ratio.
    s = bench.Settings(url=example_server.http_url, model="resnet_small", duration=2, warmup=0.5)
    unloaded = bench.run(s, "concurrency", [1], example_repo)[0]
    capacity = bench.run(s, "concurrency", [4], example_repo)[0].throughput
    (above,) = bench.run(
        bench.Settings(url=example_server.http_url, model="resnet_small", duration=3, warmup=0),
        "request_rate",
        [capacity * 3.0],
        example_repo,
    )
    assert above.latency_ms["p50"] > 5 * unloaded.latency_ms["p50"], (above.latency_ms, unloaded.latency_ms)
    p95s = [w.p95_ms for w in above.windows]
    assert p95s[-1] > p95s[0]  # and it keeps growing while the overload lasts


def test_a_level_over_the_give_up_limit_in_two_windows_stops_there(example_server, example_repo):
    # tune's give-up rule: two windows whose p95 is over the limit end the level (the p99 over those two is
    # over it too) unless it is recovering; without the limit the same level runs to max_windows.
    base = dict(url=example_server.http_url, model="resnet_small", window=0.2, warmup=0.1, max_windows=6)
    unloaded = bench.run(bench.Settings(**base, stability=0.0), "concurrency", [2], example_repo)[0]
    assert not unloaded.gave_up and len(unloaded.windows) == 6  # tolerance 0: never stable, every window
    limit = min(w.p95_ms for w in unloaded.windows) / 4  # every window is over it
    (level,) = bench.run(bench.Settings(**base, stability=0.0, give_up_p95_ms=limit), "concurrency", [2], example_repo)
    # two windows over it, then at the latest when too few windows are left to settle without them (a
    # falling p95 with room to recover is measured on): between 2 and 4 of the 6 windows
    assert level.gave_up and not level.stable and 2 <= len(level.windows) <= 4 and level.used_windows == 2
    assert level.latency_ms["p99"] > limit and level.throughput > 0
    assert all(w.p95_ms > limit for w in level.windows)
    # A limit no window reaches changes nothing.
    (free,) = bench.run(bench.Settings(**base, stability=0.0, give_up_p95_ms=1e6), "concurrency", [2], example_repo)
    assert not free.gave_up and len(free.windows) == 6


def test_killing_the_server_mid_bench_ends_quickly_with_partial_results(example_repo, tmp_path):
    ports = free_ports()
    server = local.start(example_repo, ports, timeout=240)
    out = tmp_path / "partial.json"
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tsrepo",
                "bench",
                "din",
                "--url",
                server.http_url,
                "--repo",
                str(example_repo),
                "--concurrency",
                "4,8",
                "--duration",
                "60",
                "--window",
                "1",
                "--warmup",
                "0.5",
                "--json",
                str(out),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(4)
        assert proc.poll() is None
        import os

        os.killpg(server.process.pid, signal.SIGKILL)
        killed = time.monotonic()
        output, _ = proc.communicate(timeout=30)
        took = time.monotonic() - killed
    finally:
        server.stop()
    assert proc.returncode == 1, output
    assert took < 10, took
    doc = json.loads(out.read_text())
    level = doc["levels"][0]
    assert level["aborted"] and "not reachable" in level["aborted"]
    assert level["windows_measured"] >= 2 and level["throughput_infer_per_s"] > 0
    assert len(doc["levels"]) == 1  # it stopped instead of trying the next level
    assert "Traceback" not in output


def test_bench_over_grpc_with_a_request_count(example_server, example_repo):
    s = bench.Settings(
        url=example_server.grpc_url, model="text_encoder", protocol="grpc", requests=200, warmup=0.2, batch_size=2
    )
    (level,) = bench.run(s, "concurrency", [2], example_repo)
    assert level.errors == {} and level.aborted is None
    assert level.requests >= 200
    assert level.throughput > 0 and level.latency_ms["p50"] > 0
    assert level.server["inference_count"] >= 2 * 200  # two rows per request, counted by Triton
