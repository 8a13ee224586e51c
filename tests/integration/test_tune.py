"""tsrepo tune against the real local engine: small grids, short windows."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import build
from tsrepo import tune as tune_mod
from tsrepo.cli import main
from tsrepo.client import bench, transport
from tsrepo.serve import local, shadow
from tsrepo.serve.ports import free_ports
from tsrepo.spec import load_spec
from tsrepo.tune.engine import Engine
from tsrepo.tune.space import Candidate, current_candidate

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SPEC = textwrap.dedent(
    """\
    # tuned by the tests: this comment must survive --write
    [defaults]
    max_batch_size = 4
    instance_group = [{ kind = "cpu", count = 1 }]  # one instance to start with

    [[model]]
    name = "lin"
    source = "tsrepo_testmodels:linear"
    version = 1
    inputs = [{ name = "x", dtype = "float32", shape = [4] }]
    # the model's own keys end here
    """
)
QUICK = dict(window_s=0.2, warmup_s=0.1, max_windows=3, stability=0.5)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tune")
    spec = folder / "tsrepo.toml"
    spec.write_text(SPEC)
    repo = folder / "repo"
    build.build(load_spec(spec), repo)
    return spec, repo


def _options(repo: Path, **kw) -> tune_mod.Options:
    base = dict(model="lin", repo=repo, max_instances=1, max_batch_size=4, delays_us=(0,), levels=(1, 4), threads=(1,), **QUICK)
    base.update(kw)
    return tune_mod.Options(**base)


def test_a_swapped_config_is_what_the_server_serves(tiny):
    _, repo = tiny
    info_cfg = text_format.Parse((repo / "lin" / "config.pbtxt").read_text(), pb.ModelConfig())
    server = local.start(repo, free_ports(), model_control="explicit", load_models=["lin"], timeout=240)
    try:
        settings = bench.Settings(url=server.http_url, model="lin")
        engine = Engine(server.http_url, "lin", repo, info_cfg, lambda c: shadow.served_config(c, False), settings)
        seconds = engine.swap(Candidate(2, 4, True, 300))
        assert seconds > 0
        with transport.connect(server.http_url, "http", 10) as client:
            served = json_format.ParseDict(client.config("lin"), pb.ModelConfig(), ignore_unknown_fields=True)
            assert served.max_batch_size == 4 and served.instance_group[0].count == 2
            assert served.dynamic_batching.max_queue_delay_microseconds == 300
            import numpy as np

            out = client.infer("lin", 1, {"x": np.ones((3, 4), np.float32)}, ["OUTPUT__0"])
            assert out["OUTPUT__0"].shape == (3, 3)
        # Restoring loads the repository's own config and marks it loaded: a search that starts there
        # measures it without loading it again.
        engine.restore()
        with transport.connect(server.http_url, "http", 10) as client:
            served = json_format.ParseDict(client.config("lin"), pb.ModelConfig(), ignore_unknown_fields=True)
            assert served.instance_group[0].count == 1 and not served.HasField("dynamic_batching")
        assert engine.loaded == current_candidate(info_cfg)
        swaps = len(engine.swaps)
        trial = engine.measure(engine.loaded, [1], "probe")
        assert trial.swap_s == 0 and len(engine.swaps) == swaps and trial.levels[0].throughput > 0
    finally:
        server.stop()


def test_the_winner_respects_the_budget_and_resume_measures_nothing_twice(tiny, tmp_path):
    _, repo = tiny
    report = tmp_path / "run.json"
    first = tune_mod.tune(_options(repo, p99_budget_ms=500.0, json_path=report, search=tune_mod.Search.BRUTE))
    assert first.winner is not None
    best = first.goal.best_level(first.result.winner.levels)
    assert best.p99_ms <= 500.0
    doc = json.loads(report.read_text())
    measured = [(t["key"], t["kind"]) for t in doc["trials"]]
    assert doc["winner"] == first.winner.key() and measured
    # A resumed run re-uses every finished sweep: only the finalists' re-measures are new.
    again = tune_mod.tune(_options(repo, p99_budget_ms=500.0, resume=report, search=tune_mod.Search.BRUTE))
    kinds_before = [t.kind for t in first.run.trials]
    new = again.run.trials[len(first.run.trials) :]
    assert new and all(t.kind == "final" for t in new), [t.kind for t in new]
    assert kinds_before.count("sweep") == [t.kind for t in again.run.trials].count("sweep")


def test_an_impossible_budget_ends_with_exit_1_and_the_closest_configs(tiny, tmp_path):
    _, repo = tiny
    args = ["--p99-budget", "1e-6", "--max-instances", "1", "--delays", "0", "--concurrency", "1", "--window", "0.2", "--threads", "1"]
    report = tmp_path / "run.json"
    result = CliRunner().invoke(main, ["tune", "lin", "--repo", str(repo), *args, "--json", str(report)])
    assert result.exit_code == 1, result.output
    assert "no config meets p99 <= 1e-06 ms" in result.output and "closest" in result.output
    assert "Traceback" not in result.output
    # Every level was over the budget from its first windows: each was given up after two, not measured on.
    trials = json.loads(report.read_text())["trials"]
    assert trials and all("given up at concurrency 1" in t["note"] for t in trials), [t["note"] for t in trials]


def test_write_changes_exactly_the_tuned_keys_and_keeps_comments(tiny, tmp_path):
    spec, repo = tiny
    local_spec = tmp_path / "tsrepo.toml"
    local_spec.write_text(spec.read_text())
    from tsrepo.tune import writeback

    model = load_spec(local_spec).models[0]
    values = writeback.changes(model, Candidate(2, 4, True, 250))
    assert set(values) == {"instance_group", "dynamic_batching"}
    writeback.write(local_spec, "lin", values)
    text = local_spec.read_text()
    assert "# tuned by the tests: this comment must survive --write" in text
    assert "# one instance to start with" in text and "# the model's own keys end here" in text
    assert 'instance_group = [{ kind = "cpu", count = 1 }]' in text  # [defaults] untouched
    after = load_spec(local_spec).models[0]
    assert after.instance_groups[0].count == 2 and after.dynamic_batching.max_queue_delay_microseconds == 250
    assert after.max_batch_size == model.max_batch_size and after.inputs == model.inputs
    # Everything but the two written lines is unchanged.
    before_lines = spec.read_text().splitlines()
    after_lines = text.splitlines()
    assert [line for line in after_lines if line not in before_lines] == [
        'instance_group = [{kind = "cpu", count = 2}]',
        "dynamic_batching = {max_queue_delay_microseconds = 250}",
    ]
    import shutil

    own_repo = tmp_path / "repo"
    shutil.copytree(repo, own_repo)
    rebuilt = tune_mod.rebuild_config(local_spec, "lin", own_repo)
    cfg = text_format.Parse(rebuilt.read_text(), pb.ModelConfig())
    assert cfg.instance_group[0].count == 2 and cfg.dynamic_batching.max_queue_delay_microseconds == 250


def test_a_server_not_in_explicit_mode_is_refused_before_any_load(example_server, example_repo):
    before = transport.connect(example_server.http_url, "http", 10).statistics("din")
    result = CliRunner().invoke(
        main, ["tune", "din", "--repo", str(example_repo), "--url", example_server.http_url, "--threads", "1"]
    )
    assert result.exit_code == 2, result.output
    assert "--model-control-mode=explicit" in result.output and "Traceback" not in result.output
    after = transport.connect(example_server.http_url, "http", 10).statistics("din")
    assert after == before  # not one inference was sent
