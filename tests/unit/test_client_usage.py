"""validate and bench refuse bad input with exit 2 and a message naming the option, file or field,
before any server is contacted (no server runs in these tests)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tsrepo.cli import main
from tsrepo.client import bench, inputdata, modelinfo, validate
from tsrepo.client.address import Address, parse_address
from tsrepo.errors import TsrepoError, UsageError
from tsrepo.serve.ports import free_port


def _run(args):
    result = CliRunner().invoke(main, args)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _small_repo(tmp_path, dims=("3",), dynamic=None, max_batch_size=4):
    """A repository with one model `m` (config and tsrepo.json only: nothing here runs it)."""
    folder = tmp_path / "repo" / "m"
    (folder / "1").mkdir(parents=True)
    dims_text = ", ".join(dims)
    (folder / "config.pbtxt").write_text(
        f'name: "m"\nplatform: "pytorch_libtorch"\nmax_batch_size: {max_batch_size}\n'
        f'input [{{ name: "x" data_type: TYPE_FP32 dims: [ {dims_text} ] }}]\n'
        'output [{ name: "OUTPUT__0" data_type: TYPE_FP32 dims: [ 3 ] }]\n'
    )
    shape = [list(dynamic) if d == "-1" else int(d) for d in dims]
    (folder / "tsrepo.json").write_text(
        json.dumps({"tsrepo": 1, "model": "m", "max_batch_size": max_batch_size,
                    "inputs": [{"name": "x", "argument": 0, "dtype": "float32", "shape": shape}]})
    )
    return tmp_path / "repo"


@pytest.mark.parametrize(
    "url, why",
    [
        ("abc", "the port is missing"),
        ("localhost", "the port is missing"),
        (":8000", "the host is empty"),
        ("127.0.0.1:0", "from 1 to 65535"),
        ("127.0.0.1:65536", "from 1 to 65535"),
        ("127.0.0.1:http", "from 1 to 65535"),
        ("127.0.0.1 :8000", "contains a space"),
        ("127.0.0.1:8000/v2", "cannot hold a path"),
        ("::1:8000", "IPv6 address in brackets"),
        ("[::zz]:8000", "not an IPv6 address"),
        ("ftp://h:1", "unknown scheme"),
        ("https://127.0.0.1:8000", "TLS (https://) is not supported"),
        ("grpcs://127.0.0.1:8001", "TLS (grpcs://) is not supported"),
    ],
)
def test_a_malformed_url_is_a_usage_error_naming_the_option(url, why):
    with pytest.raises(UsageError, match="`--url`") as e:
        parse_address(url)
    assert why in str(e.value)
    for args in (["validate", "--url", url], ["bench", "m", "--url", url, "--concurrency", "1"]):
        result = _run(args)
        assert result.exit_code == 2 and "--url" in result.output and why in result.output


def test_urls_with_a_scheme_and_ipv6_urls_are_accepted_for_both_protocols():
    assert parse_address("http://127.0.0.1:8001") == Address("127.0.0.1", 8001)
    assert parse_address("grpc://localhost:8001/") == Address("localhost", 8001)
    assert parse_address("[::1]:8000") == Address("::1", 8000)
    assert str(parse_address("[::1]:8000")) == "[::1]:8000"


def test_an_ipv6_url_reaches_a_server_on_ipv6_loopback():
    import socket

    from tsrepo.client import transport
    from tsrepo.errors import ServerUnreachable

    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    with pytest.raises(ServerUnreachable, match=r"server not reachable at \[::1\]:\d+: connection refused"):
        transport.connect(f"[::1]:{free_port()}", "http", 1).live()


def test_validate_help_says_an_unreachable_server_exits_1():
    out = " ".join(_run(["validate", "--help"]).output.split())
    assert "1 when any model differs or is not ready, or the server is unreachable" in out
    assert "2 for usage errors" in out
    assert "2 for usage errors and an unreachable server" not in out


@pytest.mark.parametrize(
    "args, option",
    [
        (["validate", "--timeout", "nan"], "--timeout"),
        (["validate", "--timeout", "inf"], "--timeout"),
        (["validate", "--timeout", "0"], "--timeout"),
        (["validate", "--rtol", "-1"], "--rtol"),
        (["validate", "--atol", "nan"], "--atol"),
        (["validate", "--samples", "0"], "--samples"),
        (["bench", "m", "--concurrency", "inf"], "--concurrency"),
        (["bench", "m", "--concurrency", "1.5"], "--concurrency"),
        (["bench", "m", "--concurrency", "0"], "--concurrency"),
        (["bench", "m", "--concurrency", "5000"], "--concurrency"),
        (["bench", "m", "--concurrency", ",".join(["1"] * 65)], "--concurrency"),
        (["bench", "m", "--concurrency", "a,b"], "--concurrency"),
        (["bench", "m", "--request-rate", "nan"], "--request-rate"),
        (["bench", "m", "--request-rate", "2e6"], "--request-rate"),
        (["bench", "m", "--concurrency", "1", "--duration", "inf"], "--duration"),
        (["bench", "m", "--concurrency", "1", "--warmup", "nan"], "--warmup"),
        (["bench", "m", "--concurrency", "1", "--window", "inf"], "--window"),
        (["bench", "m", "--concurrency", "1", "--stability", "nan"], "--stability"),
        (["bench", "m", "--concurrency", "1", "--batch-size", "10000000"], "--batch-size"),
        (["bench", "m", "--concurrency", "1", "--requests", "0"], "--requests"),
        (["bench", "m"], "--concurrency"),
        (["bench", "m", "--concurrency", "1", "--request-rate", "5"], "--request-rate"),
        (["bench", "m", "--concurrency", "1", "--poisson"], "--poisson"),
        (["bench", "m", "--concurrency", "1", "--duration", "2", "--requests", "5"], "--requests"),
        (["bench", "../m", "--concurrency", "1"], "MODEL"),
        (["bench", "a/b", "--concurrency", "1"], "MODEL"),
        (["validate", "--model", ".."], "--model"),
        (["validate", "--model", "x/../../etc"], "--model"),
    ],
)
def test_every_bad_option_is_exit_2_naming_the_option(args, option):
    result = _run(args)
    assert result.exit_code == 2, result.output
    assert option in result.output


@pytest.mark.parametrize("option", ["--json", "--csv", "--plot"])
def test_output_paths_are_checked_before_any_load_is_sent(tmp_path, option):
    base = ["bench", "m", "--url", f"127.0.0.1:{free_port()}", "--concurrency", "1"]
    missing = _run([*base, option, str(tmp_path / "no" / "such" / "r.png")])
    assert missing.exit_code == 2 and option in missing.output and "does not exist" in missing.output
    folder = _run([*base, option, str(tmp_path)])
    assert folder.exit_code == 2 and option in folder.output and "is a folder" in folder.output


def test_a_plot_must_be_a_png(tmp_path):
    result = _run(["bench", "m", "--concurrency", "1", "--plot", str(tmp_path / "r.jpg")])
    assert result.exit_code == 2 and "--plot" in result.output and ".png" in result.output


def test_the_repository_must_be_a_folder_with_models(tmp_path):
    url = f"127.0.0.1:{free_port()}"
    missing = _run(["validate", "--url", url, "--repo", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "--repo" in missing.output and "no such folder" in missing.output
    (tmp_path / "file").write_text("x")
    a_file = _run(["validate", "--url", url, "--repo", str(tmp_path / "file")])
    assert a_file.exit_code == 2 and "is a file" in a_file.output
    (tmp_path / "empty").mkdir()
    empty = _run(["validate", "--url", url, "--repo", str(tmp_path / "empty")])
    assert empty.exit_code == 2 and "holds no models" in empty.output
    bench_missing = _run(["bench", "m", "--url", url, "--repo", str(tmp_path / "empty"), "--concurrency", "1"])
    assert bench_missing.exit_code == 2 and "not found" in bench_missing.output


@pytest.mark.parametrize(
    "text, why",
    [
        ("{", "not valid JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('"x"', "must hold a JSON object"),
        ("[]", "must hold a JSON object"),
    ],
)
def test_a_corrupt_tsrepo_json_is_exit_2_naming_the_file(tmp_path, text, why):
    repo = _small_repo(tmp_path)
    (repo / "m" / "tsrepo.json").write_text(text)
    with pytest.raises(TsrepoError) as e:
        modelinfo.load(repo, "m")
    assert e.value.exit_code == 2 and "tsrepo.json" in str(e.value)
    result = _run(["validate", "--url", f"127.0.0.1:{free_port()}", "--repo", str(repo)])
    assert result.exit_code == 2 and "tsrepo.json" in result.output


def test_a_garbage_config_pbtxt_is_exit_2_naming_the_file(tmp_path):
    repo = _small_repo(tmp_path)
    (repo / "m" / "config.pbtxt").write_bytes(b"input [ garbage \xff")
    result = _run(["validate", "--url", f"127.0.0.1:{free_port()}", "--repo", str(repo)])
    assert result.exit_code == 2 and "config.pbtxt" in result.output
    bench_result = _run(["bench", "m", "--repo", str(repo), "--url", f"127.0.0.1:{free_port()}", "--concurrency", "1"])
    assert bench_result.exit_code == 2 and "config.pbtxt" in bench_result.output


def _write(tmp_path, name, content):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize(
    "name, content, why",
    [
        ("d.npz", b"not a zip", "not a .npz archive"),
        ("d.npz", b"", "not a .npz archive"),
        ("d.npz", b"PK\x03\x04 truncated", "not a .npz archive"),
        ("d.json", "{", "not valid JSON"),
        ("d.json", "[1, 2]", "must hold a JSON object"),
        ("d.json", "{}", "holds no arrays"),
        ("d.json", '{"x": [[1, 2], [3]]}', "not a rectangular array"),
        ("d.json", '{"x": {"dtype": "float32"}}', "needs a `data` field"),
        ("d.json", '{"x": {"data": [1], "dtype": "nonsense"}}', "not a rectangular array"),
        ("d.json", '{"x": ["a", "b"]}', "not numbers"),
        ("d.json", b"\xff\xfe\x00", "not valid JSON"),
    ],
)
def test_a_corrupt_input_data_file_is_exit_2_naming_the_file(tmp_path, name, content, why):
    path = _write(tmp_path, name, content)
    with pytest.raises(UsageError) as e:
        inputdata.load(path)
    assert str(path) in str(e.value) and why in str(e.value) and "--input-data" in str(e.value)


def test_a_pickled_npz_is_refused_never_unpickled(tmp_path):
    path = tmp_path / "p.npz"
    np.savez(path, x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(UsageError, match="pickled"):
        inputdata.load(path)


def _fit(repo, data, batch=1):
    info = modelinfo.load(repo, "m")
    return inputdata.fit(data, info, batch, repo / "d.npz")


@pytest.mark.parametrize(
    "data, batch, why",
    [
        ({"x": np.zeros((1, 4), np.float32)}, 1, "shape [1, 4] given, [1, 2..6, 3] expected"),
        ({"x": np.zeros((1, 4, 4), np.float32)}, 1, "shape [1, 4, 4] given, [1, 2..6, 3] expected"),
        ({"x": np.zeros((3,), np.float32)}, 1, "rank differs"),
        ({"x": np.zeros((1, 7, 3), np.float32)}, 1, "shape [1, 7, 3] given, [1, 2..6, 3] expected"),
        ({"x": np.zeros((3, 2, 3), np.float32)}, 2, "holds 3 rows, --batch-size is 2"),
        ({"x": np.zeros((1, 2, 3), np.complex64)}, 1, "cannot be cast"),
        ({"x": np.zeros((1, 2, 3), np.float32), "y": np.zeros(1)}, 1, "unknown input(s) ['y']"),
        ({"z": np.zeros(1)}, 1, "no data for input(s) ['x']"),
    ],
)
def test_input_data_that_does_not_fit_the_model_names_input_and_shapes(tmp_path, data, batch, why):
    repo = _small_repo(tmp_path, dims=("-1", "3"), dynamic=(2, 6))
    with pytest.raises(UsageError) as e:
        _fit(repo, data, batch)
    assert why in str(e.value) and "d.npz" in str(e.value)


def test_input_data_without_a_batch_dim_is_repeated_to_the_batch_size(tmp_path):
    repo = _small_repo(tmp_path, dims=("-1", "3"), dynamic=(2, 6))
    out = _fit(repo, {"x": np.ones((4, 3), np.float64)}, batch=2)
    assert out["x"].shape == (2, 4, 3) and out["x"].dtype == np.float32


def test_bench_refuses_misfit_input_data_before_contacting_the_server(tmp_path):
    repo = _small_repo(tmp_path)
    np.savez(tmp_path / "d.npz", x=np.zeros((1, 5), np.float32))
    url = f"127.0.0.1:{free_port()}"  # nothing listens: reaching it would be exit 1, not 2
    args = ["bench", "m", "--url", url, "--repo", str(repo), "--concurrency", "1", "--input-data"]
    result = _run([*args, str(tmp_path / "d.npz")])
    assert result.exit_code == 2, result.output
    assert "d.npz" in result.output and "'x'" in result.output and "[1, 5]" in result.output
    assert "[1, 3]" in result.output
    too_big = _run(["bench", "m", "--url", url, "--repo", str(repo), "--concurrency", "1", "--batch-size", "8"])
    assert too_big.exit_code == 2 and "--batch-size" in too_big.output and "max_batch_size 4" in too_big.output


def test_tables_print_whole_numbers_in_logs(monkeypatch):
    level = bench.LevelResult(bench.Mode.CONCURRENCY, 4, 1, stable=True, throughput=31512.3)
    level.latency_ms = {"p50": 1234.56, "p90": 2345.67, "p95": 3456.78, "p99": 4567.89, "max": 98765.43}
    level.server = {"queue_us": 123456, "compute_infer_us": 654321, "avg_batch_size": 7.25}
    monkeypatch.setattr(bench, "run", lambda *a, **k: [level])
    result = _run(["bench", "a_model_with_a_rather_long_name_for_a_table", "--concurrency", "4"])
    assert result.exit_code == 0, result.output
    for text in ("31512.3", "1234.56", "98765.43", "123456", "654321", "7.25"):
        assert text in result.output, result.output

    r = validate.ModelResult("another_model_with_a_long_name_too", version=12345)
    r.outputs["an_output_with_a_long_name"] = validate.OutputResult("an_output_with_a_long_name", 0.000123456, 1.5e-7)
    monkeypatch.setattr(validate, "validate", lambda *a, **k: [r])
    result = _run(["validate"])
    assert result.exit_code == 0, result.output
    for text in ("another_model_with_a_long_name_too", "12345", "an_output_with_a_long_name", "0.000123", "1.5e-07"):
        assert text in result.output, result.output
