"""export = "aoti": torch.export + AOTInductor packages, their proof, naming, metadata and compile cache.

One AOTInductor compile serves the whole file (a session fixture with its own cache folder): a cold compile
costs 10-25 s on 2 cores, and every later build of the same model is a cache hit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import build, export_aoti, meta
from tsrepo.cli import main
from tsrepo.errors import SpecError
from tsrepo.spec import load_spec

TINY = """
[defaults]
max_batch_size = 4
dynamic_batching = { max_queue_delay_microseconds = 100 }

[[model]]
name = "tiny"
source = "tsrepo_testmodels:aoti_tiny"
export = "aoti"
version = 1
inputs = [
    { name = "x", dtype = "float32", shape = ["1..16", 4] },
    { name = "mask", dtype = "float32", shape = ["1..16"] },
]
"""


@pytest.fixture(scope="session")
def aoti_cache(tmp_path_factory):
    # A fixed folder of this pytest session: test_migrate imports these fixtures, and both must share one cache.
    folder = tmp_path_factory.getbasetemp() / "aoti-cache"
    folder.mkdir(exist_ok=True)
    old = os.environ.get("TSREPO_CACHE_DIR")
    os.environ["TSREPO_CACHE_DIR"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("TSREPO_CACHE_DIR", None)
    else:
        os.environ["TSREPO_CACHE_DIR"] = old


@pytest.fixture(scope="session")
def tiny_build(aoti_cache, tmp_path_factory):
    root = tmp_path_factory.mktemp("aoti-build")
    spec_path = root / "tsrepo.toml"
    spec_path.write_text(TINY)
    out = root / "repo"
    result = build.build(load_spec(spec_path), out)
    return spec_path, out, result


def test_aoti_build_writes_a_pt2_package_with_a_torch_aoti_config(tiny_build):
    _spec, out, result = tiny_build
    pm = result.models[0]
    assert (out / "tiny" / "1" / "model.pt2").is_file() and not (out / "tiny" / "1" / "model.pt").exists()
    parsed = text_format.Parse((out / "tiny" / "config.pbtxt").read_text(), pb.ModelConfig())
    assert parsed.platform == "torch_aoti" and parsed.backend == "pytorch" and parsed.max_batch_size == 4
    assert [(i.name, list(i.dims)) for i in parsed.input] == [("INPUT__0", [-1, 4]), ("INPUT__1", [-1])]
    assert [(o.name, list(o.dims)) for o in parsed.output] == [("OUTPUT__0", [3]), ("OUTPUT__1", [-1, 3])]
    assert [g.kind for g in parsed.instance_group] == [pb.ModelInstanceGroup.KIND_CPU]
    assert not parsed.parameters
    # eager == exported program == reloaded package at 3 sizes x 2 batch sizes, and batch safety was proven
    assert pm.checks["runs"] == 6 and "batch_safe_max_abs_diff" in pm.checks
    assert any("26.06" in w for w in pm.warnings)


def test_aoti_tsrepo_json_records_format_torch_and_compile_options(tiny_build):
    _spec, out, _result = tiny_build
    doc = json.loads((out / "tiny" / "tsrepo.json").read_text())
    entry = doc["versions"]["1"]
    import hashlib

    assert entry["format"] == "aoti_package" and entry["file"] == "model.pt2" and entry["export"] == "aoti"
    assert entry["torch"] == torch.__version__ and entry["device"] == "cpu"
    assert entry["compile_options"] == export_aoti.COMPILE_OPTIONS
    assert entry["sha256"] == hashlib.sha256((out / "tiny" / "1" / "model.pt2").read_bytes()).hexdigest()
    loaded = meta.load_model(out / "tiny")
    assert loaded.versions[1].format == "aoti_package" and loaded.versions[1].file == "model.pt2"


def test_the_written_package_answers_like_the_eager_model(tiny_build):
    _spec, out, _result = tiny_build
    package = torch._inductor.aoti_load_package(str(out / "tiny" / "1" / "model.pt2"))
    from tsrepo_testmodels import aoti_tiny

    torch.manual_seed(0)
    eager = aoti_tiny().eval()
    x, mask = torch.randn(3, 5, 4), torch.ones(3, 5)
    got, want = package(x, mask), eager(x, mask)
    for key in ("pooled", "tokens"):
        torch.testing.assert_close(got[key], want[key])


def test_an_unchanged_rebuild_takes_the_package_from_the_compile_cache(tiny_build, tmp_path):
    spec_path, out, _first = tiny_build
    result = build.build(load_spec(spec_path), tmp_path / "again")
    pm = result.models[0]
    assert pm.package.cache_hit and pm.package.compile_seconds == 0.0
    assert pm.model_bytes == (out / "tiny" / "1" / "model.pt2").read_bytes()
    assert not [p for p in export_aoti.cache_dir().iterdir() if p.name.endswith(".tmp")]


def test_rebuilding_a_version_as_torchscript_removes_the_package(tiny_build, tmp_path):
    spec_path, out, _result = tiny_build
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(out, repo)
    text = spec_path.read_text().replace('export = "aoti"', 'export = "script"')
    (tmp_path / "ts.toml").write_text(text)
    build.build(load_spec(tmp_path / "ts.toml"), repo, force=True)
    assert (repo / "tiny" / "1" / "model.pt").is_file() and not (repo / "tiny" / "1" / "model.pt2").exists()
    parsed = text_format.Parse((repo / "tiny" / "config.pbtxt").read_text(), pb.ModelConfig())
    assert parsed.platform == "pytorch_libtorch" and not parsed.backend
    assert "format" not in json.loads((repo / "tiny" / "tsrepo.json").read_text())["versions"]["1"]


def test_cache_key_changes_with_program_device_and_options():
    base = export_aoti.cache_key(b"program", "cpu", {})
    assert base == export_aoti.cache_key(b"program", "cpu", {})
    assert base != export_aoti.cache_key(b"program2", "cpu", {})
    assert base != export_aoti.cache_key(b"program", "cuda", {})
    assert base != export_aoti.cache_key(b"program", "cpu", {"max_autotune": True})


def test_cache_folder_follows_tsrepo_cache_dir_then_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("TSREPO_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert export_aoti.cache_dir() == tmp_path / "xdg" / "tsrepo" / "aoti"
    monkeypatch.setenv("TSREPO_CACHE_DIR", str(tmp_path / "own"))
    assert export_aoti.cache_dir() == tmp_path / "own"


def test_cache_eviction_drops_the_least_recently_used_beyond_the_bounds(tmp_path):
    for i in range(5):
        p = tmp_path / f"{i:064x}.pt2"
        p.write_bytes(b"x" * 100)
        os.utime(p, (1000 + i, 1000 + i))
    stale = tmp_path / ".abc.123-dead.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (0, 0))
    removed = export_aoti.evict(tmp_path, max_bytes=250, max_entries=10)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == [f"{4:064x}.pt2", f"{3:064x}.pt2"][::-1] and stale in removed
    export_aoti.evict(tmp_path, max_bytes=10_000, max_entries=1)
    assert [p.name for p in tmp_path.iterdir()] == [f"{4:064x}.pt2"]


@pytest.mark.parametrize(
    "extra, field",
    [
        ('output_names = ["a"]', "output_names"),
        ('parameters = { INFERENCE_MODE = "true" }', "parameters"),
        ('instance_group = [{ kind = "gpu" }, { kind = "cpu" }]', "instance_group"),
        ('tensor_names = "auto"', "tensor_names"),
    ],
)
def test_spec_refuses_what_torch_aoti_cannot_take(write_spec, extra, field):
    path = write_spec(
        f'[[model]]\nname = "m"\nsource = "tsrepo_testmodels:linear"\nexport = "aoti"\n{extra}\n'
        'inputs = [{ name = "x", dtype = "float32", shape = [4] }]\n'
    )
    with pytest.raises(SpecError, match=f"`{field}`"):
        load_spec(path)


def test_spec_refuses_aoti_for_a_torchscript_file(write_spec):
    path = write_spec(
        '[[model]]\nname = "m"\nsource = "m.pt"\nexport = "aoti"\ninputs = [{ dtype = "float32", shape = [4] }]\n'
    )
    with pytest.raises(SpecError, match="TorchScript file"):
        load_spec(path)


def _build_cli(*args):
    return CliRunner().invoke(main, ["build", *args], catch_exceptions=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_kind_gpu_with_aoti_and_no_gpu_exits_2_with_both_ways_out(tmp_path):
    r = _build_cli(
        "--source", "tsrepo_testmodels:linear", "--name", "lin", "--input", "x:float32:4", "--export", "aoti",
        "--instance-group", "gpu:1", "--out", str(tmp_path / "repo"),
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "KIND_GPU" in r.output and "build on the machine with the GPU" in r.output and 'kind = "cpu"' in r.output
    assert not (tmp_path / "repo" / "lin").exists()


def test_aoti_on_a_model_that_cannot_export_exits_2_with_the_doctor_finding(tmp_path):
    r = _build_cli(
        "--source", "tsrepo_testmodels:not_exportable", "--name", "m", "--input", "x:float32:4",
        "--export", "aoti", "--max-batch-size", "4", "--out", str(tmp_path / "repo"),
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "EX01 data-dependent control flow" in r.output and "torch.cond" in r.output
    assert "tsrepo_testmodels.py:" in r.output and "Traceback" not in r.output


def test_aoti_with_a_dim_range_the_model_violates_exits_2_with_the_range_to_write(tmp_path):
    r = _build_cli(
        "--source", "tsrepo_testmodels:slices_six", "--name", "m", "--input", "x:float32:1..16",
        "--export", "aoti", "--max-batch-size", "4", "--out", str(tmp_path / "repo"),
    )  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "EX03" in r.output and '`inputs[0].shape[0]`: write "8..16" instead of "1..16"' in r.output


def test_old_tsrepo_json_without_format_loads_as_torchscript(tmp_path):
    doc = {"model": "m", "versions": {"1": {"sha256": "ab", "torch": "2.5.0", "export": "script"}}}
    (tmp_path / "tsrepo.json").write_text(json.dumps(doc))
    entry = meta.load(Path(tmp_path / "tsrepo.json")).versions[1]
    assert entry.format == "torchscript" and entry.file == "model.pt" and entry.compile_options is None
    assert entry.to_json() == {"sha256": "ab", "torch": "2.5.0", "export": "script", "file_format_version": None}
