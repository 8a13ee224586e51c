from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from tsrepo.cli import main


@pytest.fixture
def runner():
    return CliRunner()


def _invoke(runner, args):
    return runner.invoke(main, args, catch_exceptions=False)


def test_build_from_flags_writes_a_repository(runner, tmp_path):
    out = tmp_path / "repo"
    result = _invoke(
        runner,
        [
            "build",
            "--source",
            "tsrepo_testmodels:two_inputs",
            "--name",
            "two",
            "--input",
            "a:float32:3",
            "--input",
            "b:float32:3",
            "--max-batch-size",
            "4",
            "--instance-group",
            "cpu:2",
            "--dynamic-batching",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    text = (out / "two" / "config.pbtxt").read_text()
    assert 'name: "a"' in text and "KIND_CPU" in text and "count: 2" in text and "dynamic_batching" in text
    assert (out / "two" / "1" / "model.pt").is_file()


def test_bad_spec_exits_2_with_one_message_and_no_traceback(runner, write_spec, tmp_path):
    spec = write_spec('[[model]]\nname = "a/b"\nsource = "x:y"\ninputs = [{ dtype = "float32", shape = [1] }]')
    out = tmp_path / "repo"
    result = _invoke(runner, ["build", str(spec), "--out", str(out)])
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert str(spec) in result.output and "`name`" in result.output
    assert not out.exists()


def test_missing_default_spec_says_how_to_fix(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = _invoke(runner, ["build"])
    assert result.exit_code == 2
    assert "tsrepo.toml: spec file not found" in result.output and "--source" in result.output


def test_source_without_name_is_a_usage_error(runner):
    result = _invoke(runner, ["build", "--source", "tsrepo_testmodels:linear", "--input", "x:float32:4"])
    assert result.exit_code == 2 and "--name" in result.output


def test_dry_run_prints_a_tree_and_writes_nothing(runner, tmp_path):
    out = tmp_path / "repo"
    result = _invoke(
        runner,
        [
            "build",
            "--source",
            "tsrepo_testmodels:linear",
            "--name",
            "lin",
            "--input",
            "x:float32:4",
            "--out",
            str(out),
            "--dry-run",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "lin/" in result.output and "config.pbtxt" in result.output and "dry run" in result.output
    assert not out.exists()


def test_existing_version_exit_2_and_force_overwrites(runner, tmp_path):
    args = [
        "build",
        "--source",
        "tsrepo_testmodels:linear",
        "--name",
        "lin",
        "--input",
        "x:float32:4",
        "--version",
        "1",
        "--out",
        str(tmp_path / "repo"),
    ]
    assert _invoke(runner, args).exit_code == 0
    again = _invoke(runner, args)
    assert again.exit_code == 2 and "--force" in again.output
    assert _invoke(runner, args + ["--force"]).exit_code == 0


def test_help_is_fast_and_does_not_import_torch():
    code = "import sys; from tsrepo.cli import main; assert 'torch' not in sys.modules; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_input_data_files_load_from_npz_and_json(tmp_path):
    import json

    import numpy as np

    from tsrepo.client.modelinfo import load_input_data

    np.savez(tmp_path / "in.npz", x=np.arange(3, dtype=np.float32))
    (tmp_path / "in.json").write_text(json.dumps({"x": {"data": [1, 2], "dtype": "int64"}, "y": [[1.5]]}))
    assert load_input_data(tmp_path / "in.npz")["x"].tolist() == [0.0, 1.0, 2.0]
    loaded = load_input_data(tmp_path / "in.json")
    assert loaded["x"].dtype == np.int64 and loaded["y"].shape == (1, 1)


def test_serve_says_which_port_is_taken(runner, tmp_path):
    import socket

    from tsrepo.serve.ports import free_port

    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        result = runner.invoke(main, ["serve", "--repo", str(tmp_path), "--grpc-port", str(port)])
    assert result.exit_code == 2
    assert f"port {port} on 127.0.0.1 is already in use; choose another with --grpc-port" in result.output


@pytest.mark.parametrize("command", [["serve"], ["validate"], ["bench", "din"], ["tune", "din"]])
@pytest.mark.parametrize("uri", ["gs://bucket/models", "as://account/container", "https://example.com/repo"])
def test_a_repository_in_storage_tsrepo_does_not_read_is_refused_naming_the_scheme(runner, command, uri):
    result = _invoke(runner, [*command, "--repo", uri])
    assert result.exit_code == 2, result.output
    scheme = uri.split("://")[0]
    assert f"{scheme}:// is not a storage tsrepo reads" in result.output and "s3://bucket/prefix" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["1e300", "inf", "nan", "0", "-5"])
def test_serve_timeout_is_a_finite_positive_number_of_seconds_up_to_a_day(runner, value, tmp_path):
    result = _invoke(runner, ["serve", "--repo", str(tmp_path), "--timeout", value])
    assert result.exit_code == 2, result.output
    assert "--timeout" in result.output
