"""tsrepo tune refuses bad input with exit 2 before any server is started or any load is sent."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from tsrepo.cli import main

CONFIG = """name: "lin"
platform: "pytorch_libtorch"
max_batch_size: 4
input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]
output [ { name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] } ]
"""


@pytest.fixture
def repo(tmp_path):
    (tmp_path / "repo" / "lin" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "lin" / "config.pbtxt").write_text(CONFIG)
    return tmp_path / "repo"


@pytest.fixture
def no_server(monkeypatch):
    """Any attempt to start the local engine fails the test: the refusal must come first."""
    from tsrepo.serve import local

    def boom(*_a, **_k):
        raise AssertionError("a server was started for bad input")

    monkeypatch.setattr(local, "start", boom)


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["nope"], "nope"),
        (["../lin"], "MODEL"),
        (["lin", "--p99-budget", "0"], "--p99-budget"),
        (["lin", "--p99-budget", "-3"], "--p99-budget"),
        (["lin", "--p99-budget", "nan"], "--p99-budget"),
        (["lin", "--delays", ","], "--delays"),
        (["lin", "--delays", "-5"], "--delays"),
        (["lin", "--concurrency", "0"], "--concurrency"),
        (["lin", "--max-instances", "0"], "--max-instances"),
        (["lin", "--max-batch-size", "0"], "--max-batch-size"),
        (["lin", "--objective", "latency"], "--min-throughput"),
        (["lin", "--time-budget", "inf"], "--time-budget"),
        (["lin", "--plot", "out.jpg"], ".png"),
        (["lin", "--json", "/nonexistent/dir/run.json"], "--json"),
        (["lin", "--url", "abc"], "--url"),
        (["lin", "--url", "127.0.0.1:1", "--engine", "local"], "not both"),
        (["lin", "--write", "--spec", "/nonexistent/tsrepo.toml"], "--write"),
        (["lin", "--batch-size", "8"], "--batch-size"),
    ],
)
def test_bad_input_exits_2_before_any_load(repo, no_server, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["tune", *args[:1], "--repo", str(repo), *args[1:]])
    assert result.exit_code == 2, result.output
    assert fragment in result.output, result.output
    assert "Traceback" not in result.output


def test_resume_of_another_models_run_is_refused(repo, no_server, tmp_path):
    other = tmp_path / "other.json"
    other.write_text('{"tsrepo_tune": 1, "model": "din", "settings": {}, "trials": []}')
    result = CliRunner().invoke(main, ["tune", "lin", "--repo", str(repo), "--resume", str(other)])
    assert result.exit_code == 2 and "tuned model 'din'" in result.output


@pytest.mark.parametrize("value", ["two", "", "x2", "99999999999"])
def test_a_hand_edited_thread_count_the_backend_would_fail_on_is_refused_naming_the_file(repo, no_server, value):
    cfg = repo / "lin" / "config.pbtxt"
    cfg.write_text(CONFIG + f'parameters {{ key: "INTRA_OP_THREAD_COUNT" value {{ string_value: "{value}" }} }}\n')
    result = CliRunner().invoke(main, ["tune", "lin", "--repo", str(repo)])
    assert result.exit_code == 2, result.output
    assert str(cfg) in result.output and "INTRA_OP_THREAD_COUNT" in result.output, result.output
    assert "Traceback" not in result.output


def test_another_backends_own_thread_parameter_is_not_read_as_libtorchs():
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    from tsrepo.tune.space import current_candidate

    text = CONFIG.replace('platform: "pytorch_libtorch"', 'backend: "python"')
    text += 'parameters { key: "INTRA_OP_THREAD_COUNT" value { string_value: "auto" } }\n'
    assert current_candidate(text_format.Parse(text, pb.ModelConfig())).threads is None
