from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from tsrepo import build, repository
from tsrepo.errors import ExportError, RepositoryError, ServingError, SpecError, VerifyError
from tsrepo.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"


def _spec(write_spec, body: str, defaults: str = "max_batch_size = 4"):
    return load_spec(write_spec(f"[defaults]\n{defaults}\n\n[[model]]\n{body}"))


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


LINEAR = 'name = "lin"\nsource = "tsrepo_testmodels:linear"\nversion = 1\ninputs = [{ name = "x", dtype = "float32", shape = [4] }]\n'


def test_build_writes_config_model_and_metadata(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        LINEAR + 'instance_group = [{ kind = "gpu", count = 2, gpus = [0, 1] }]\n'
        "dynamic_batching = { max_queue_delay_microseconds = 50 }",
    )
    out = tmp_path / "repo"
    result = build.build(spec, out)
    assert result.written
    parsed = text_format.Parse((out / "lin" / "config.pbtxt").read_text(), pb.ModelConfig())
    assert parsed.platform == "pytorch_libtorch" and parsed.max_batch_size == 4
    assert [i.name for i in parsed.input] == ["x"] and list(parsed.input[0].dims) == [4]
    assert [o.name for o in parsed.output] == ["OUTPUT__0"] and list(parsed.output[0].dims) == [3]
    assert parsed.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU and parsed.instance_group[0].count == 2
    assert list(parsed.instance_group[0].gpus) == [0, 1]
    assert parsed.dynamic_batching.max_queue_delay_microseconds == 50
    meta = json.loads((out / "lin" / "tsrepo.json").read_text())
    model_pt = out / "lin" / "1" / "model.pt"
    import hashlib

    assert meta["versions"]["1"]["sha256"] == hashlib.sha256(model_pt.read_bytes()).hexdigest()
    assert meta["versions"]["1"]["torch"] == torch.__version__
    loaded = torch.jit.load(str(model_pt))
    x = torch.randn(2, 4)
    torch.manual_seed(0)
    from tsrepo_testmodels import linear

    assert torch.allclose(loaded(x), linear()(x))


def test_dynamic_dims_become_minus_one_and_int_ranges_are_respected(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "te"\nsource = "examples.text:build_text_encoder"\nversion = 1\n'
        'inputs = [{ name = "input_ids", dtype = "int64", shape = ["1..16"], range = [0, 1000] }]\n',
        defaults="max_batch_size = 2\n",
    )
    result = build.build(spec, tmp_path / "repo")
    sig = result.models[0].signature
    assert [o.name for o in sig.outputs] == ["logits__0", "pooled__1"]
    assert sig.outputs[0].dims == (-1, 5) and sig.outputs[1].dims == (64,)
    assert sig.inputs[0].dims == (-1,)
    # 3 sizes (1, 8, 16) x 2 batch sizes, each compared with eager
    assert result.models[0].checks["runs"] == 6


def test_dict_output_is_wrapped_with_readable_names(write_spec, tmp_path):
    spec = _spec(
        write_spec, 'name = "d"\nsource = "tsrepo_testmodels:dict_out"\ninputs = [{ dtype = "float32", shape = [4] }]'
    )
    result = build.build(spec, tmp_path / "repo")
    pm = result.models[0]
    assert [o.name for o in pm.signature.outputs] == ["last_hidden_state__0", "logits__1"]
    assert any("wrapped" in w for w in pm.warnings)
    loaded = torch.jit.load(str(tmp_path / "repo" / "d" / "1" / "model.pt"))
    out = loaded(torch.ones(2, 4))
    assert isinstance(out, tuple) and out[0].shape == (2, 4) and out[1].shape == (2, 2)


def test_dict_output_refused_when_wrapping_is_off(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "d"\nsource = "tsrepo_testmodels:dict_out"\nwrap_outputs = false\n'
        'inputs = [{ dtype = "float32", shape = [4] }]',
    )
    with pytest.raises(ServingError, match="wrap_outputs"):
        build.build(spec, tmp_path / "repo")


def test_list_of_tensors_is_wrapped(write_spec, tmp_path):
    spec = _spec(
        write_spec, 'name = "l"\nsource = "tsrepo_testmodels:list_out"\ninputs = [{ dtype = "float32", shape = [3] }]'
    )
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert [o.name for o in pm.signature.outputs] == ["OUTPUT__0", "OUTPUT__1"]
    assert pm.signature.outputs[1].dims == (1,)


def test_batch_unsafe_model_is_refused_naming_the_output(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "bn"\nsource = "tsrepo_testmodels:batch_normalising"\n'
        'inputs = [{ dtype = "float32", shape = [3] }]\ndynamic_batching = { max_queue_delay_microseconds = 1 }',
    )
    with pytest.raises(VerifyError, match=r"not batch-safe: output OUTPUT__0 \(.*(NaN|differ)") as info:
        build.build(spec, tmp_path / "repo")
    assert "batch_safe = false" in str(info.value)
    assert not (tmp_path / "repo").exists()


def test_batch_safe_false_leaves_dynamic_batching_out_with_a_warning(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "bn"\nsource = "tsrepo_testmodels:batch_normalising"\nbatch_safe = false\n'
        'inputs = [{ dtype = "float32", shape = [3] }]\ndynamic_batching = { max_queue_delay_microseconds = 1 }',
    )
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert pm.config.dynamic_batching is None
    assert "dynamic_batching" not in (tmp_path / "repo" / "bn" / "config.pbtxt").read_text()
    assert any("batch_safe = false" in w for w in pm.warnings)


def test_bfloat16_output_is_refused_with_the_cast(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "b"\nsource = "tsrepo_testmodels:bfloat16_out"\ninputs = [{ dtype = "float32", shape = [3] }]',
    )
    with pytest.raises(ServingError, match=r"bfloat16.*\.float\(\)"):
        build.build(spec, tmp_path / "repo")


def test_output_without_batch_dim_first_is_refused(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "t"\nsource = "tsrepo_testmodels:not_batch_first"\ninputs = [{ dtype = "float32", shape = [3] }]',
    )
    with pytest.raises(ServingError, match="batch dimension first"):
        build.build(spec, tmp_path / "repo")


def test_non_tensor_forward_argument_is_refused(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "i"\nsource = "tsrepo_testmodels:int_arg"\nexport = "script"\n'
        'inputs = [{ dtype = "float32", shape = [3] }, { dtype = "int64", shape = [1] }]',
    )
    with pytest.raises(ServingError, match="k: int"):
        build.build(spec, tmp_path / "repo")


def test_input_count_must_match_forward(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "two"\nsource = "tsrepo_testmodels:two_inputs"\ninputs = [{ dtype = "float32", shape = [3] }]',
    )
    with pytest.raises(ServingError, match="forward takes 2"):
        build.build(spec, tmp_path / "repo")


def test_input_named_unlike_forward_argument_is_refused_with_the_fix(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "lin"\nsource = "tsrepo_testmodels:linear"\ninputs = [{ name = "image", dtype = "float32", shape = [4] }]',
    )
    with pytest.raises(SpecError, match="tensor_names"):
        build.build(spec, tmp_path / "repo")


def test_inputs_bind_by_name_in_any_order_and_by_index_when_asked(write_spec, tmp_path):
    body = (
        'name = "two"\nsource = "tsrepo_testmodels:two_inputs"\n'
        'inputs = [{ name = "b", dtype = "float32", shape = [3] }, { name = "a", dtype = "float32", shape = [3] }]'
    )
    pm = build.build(_spec(write_spec, body), tmp_path / "r1").models[0]
    assert [(i.name, i.arg_index) for i in pm.signature.inputs] == [("b", 1), ("a", 0)]
    pm = build.build(_spec(write_spec, body + '\ntensor_names = "index"'), tmp_path / "r2").models[0]
    assert [i.name for i in pm.signature.inputs] == ["INPUT__0", "INPUT__1"]


def test_auto_export_falls_back_to_trace_with_a_located_warning(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "u"\nsource = "tsrepo_testmodels:unscriptable"\nexport = "auto"\ninputs = [{ dtype = "float32", shape = [3] }]',
    )
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert pm.export_mode == "trace"
    note = pm.warnings[0]
    assert "traced" in note and "tsrepo_testmodels.py" in note and "keep = {0, 1}" in note


def test_script_failure_is_short_and_located(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "u"\nsource = "tsrepo_testmodels:unscriptable"\nexport = "script"\ninputs = [{ dtype = "float32", shape = [3] }]',
    )
    with pytest.raises(ExportError) as info:
        build.build(spec, tmp_path / "repo")
    message = str(info.value)
    assert len(message.splitlines()) <= 5, message
    assert "tsrepo_testmodels.py:" in message and "keep = {0, 1}" in message


def test_traced_model_that_freezes_control_flow_is_caught_at_another_size(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "dd"\nsource = "tsrepo_testmodels:data_dependent"\nexport = "trace"\n'
        'inputs = [{ dtype = "float32", shape = ["2..8"] }]',
    )
    with pytest.raises(VerifyError, match="traced and eager models differ"):
        build.build(spec, tmp_path / "repo")


@pytest.mark.parametrize(
    "source, error, fragment",
    [
        ("tsrepo_testmodels:nope", ExportError, "has no attribute 'nope'"),
        ("no_such_module_xyz:f", ExportError, "cannot import module"),
        ("tsrepo_testmodels:raises", ExportError, "RuntimeError: weights file missing"),
        ("tsrepo_testmodels:not_a_module", ExportError, "not a torch.nn.Module"),
        ("missing.pt", ExportError, "neither 'module:factory' nor an existing file"),
    ],
)
def test_bad_sources_are_reported_by_model_and_field(write_spec, tmp_path, source, error, fragment):
    spec = _spec(write_spec, f'name = "m"\nsource = "{source}"\ninputs = [{{ dtype = "float32", shape = [4] }}]')
    with pytest.raises(error) as info:
        build.build(spec, tmp_path / "repo")
    assert "model 'm'" in str(info.value) and "`source`" in str(info.value) and fragment in str(info.value)


def test_file_that_is_not_torchscript_is_refused(write_spec, tmp_path):
    (tmp_path / "weights.pt").write_bytes(b"not a zip at all")
    spec = _spec(write_spec, 'name = "m"\nsource = "weights.pt"\ninputs = [{ dtype = "float32", shape = [4] }]')
    with pytest.raises(ExportError, match="is not a TorchScript archive"):
        build.build(spec, tmp_path / "repo")


def test_torchscript_file_source_builds(write_spec, tmp_path):
    from tsrepo_testmodels import linear

    torch.jit.save(torch.jit.script(linear()), str(tmp_path / "lin.pt"))
    spec = _spec(write_spec, 'name = "m"\nsource = "lin.pt"\ninputs = [{ dtype = "float32", shape = [4] }]')
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert pm.export_mode == "file" and pm.signature.outputs[0].dims == (3,)


def test_existing_version_is_not_overwritten_without_force(write_spec, tmp_path):
    spec = _spec(write_spec, LINEAR)
    out = tmp_path / "repo"
    build.build(spec, out)
    before = _files(out)
    with pytest.raises(RepositoryError, match="--force"):
        build.build(spec, out)
    assert _files(out) == before
    build.build(spec, out, force=True)


def test_next_free_version_is_used_when_none_is_given(write_spec, tmp_path):
    spec = _spec(write_spec, LINEAR.replace("version = 1\n", ""))
    out = tmp_path / "repo"
    build.build(spec, out)
    build.build(spec, out)
    assert repository.existing_versions(out / "lin") == [1, 2]
    meta = json.loads((out / "lin" / "tsrepo.json").read_text())
    assert sorted(meta["versions"]) == ["1", "2"]


def test_other_models_in_the_repository_are_left_alone(write_spec, tmp_path):
    out = tmp_path / "repo"
    (out / "other" / "1").mkdir(parents=True)
    (out / "other" / "config.pbtxt").write_text("name: 'other'")
    (out / "other" / "1" / "model.pt").write_bytes(b"keep me")
    build.build(_spec(write_spec, LINEAR), out)
    assert (out / "other" / "1" / "model.pt").read_bytes() == b"keep me"
    assert (out / "other" / "config.pbtxt").read_text() == "name: 'other'"


def test_dry_run_writes_nothing_and_prints_a_tree(write_spec, tmp_path):
    out = tmp_path / "repo"
    result = build.build(_spec(write_spec, LINEAR), out, dry_run=True)
    assert not out.exists()
    tree = result.plan.tree()
    assert "lin/" in tree and "config.pbtxt" in tree and "1/model.pt" in tree and "new" in tree


def test_failure_in_a_later_model_writes_nothing(write_spec, tmp_path):
    body = (
        LINEAR
        + '\n[[model]]\nname = "bad"\nsource = "tsrepo_testmodels:bfloat16_out"\ninputs = [{ dtype = "float32", shape = [3] }]'
    )
    with pytest.raises(ServingError):
        build.build(_spec(write_spec, body), tmp_path / "repo")
    assert not (tmp_path / "repo").exists()


def test_rebuild_with_force_gives_identical_configs_and_identical_outputs(write_spec, tmp_path):
    spec = _spec(write_spec, LINEAR + "dynamic_batching = { max_queue_delay_microseconds = 10 }")
    out = tmp_path / "repo"
    build.build(spec, out)
    first = _files(out)
    first_model = torch.jit.load(str(out / "lin" / "1" / "model.pt"))
    build.build(spec, out, force=True)
    second = _files(out)
    assert first["lin/config.pbtxt"] == second["lin/config.pbtxt"]
    x = torch.randn(3, 4)
    assert torch.equal(first_model(x), torch.jit.load(str(out / "lin" / "1" / "model.pt"))(x))


def test_killed_build_leaves_the_old_repository_intact(tmp_path):
    spec = tmp_path / "big.toml"
    spec.write_text(
        '[[model]]\nname = "big"\nsource = "tsrepo_testmodels:big"\nversion = 1\nexport = "script"\n'
        'inputs = [{ dtype = "float32", shape = [4096] }]\n'
        '[[model]]\nname = "lin"\nsource = "tsrepo_testmodels:linear"\nversion = 1\n'
        'inputs = [{ dtype = "float32", shape = [4] }]\n'
    )
    out = tmp_path / "repo"
    (out / "big" / "1").mkdir(parents=True)
    (out / "big" / "config.pbtxt").write_text("old config")
    (out / "big" / "1" / "model.pt").write_bytes(b"old model")
    before = _files(out)
    env = {**os.environ, "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tsrepo", "build", str(spec), "--out", str(out), "--force"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Kill it as soon as it starts staging (writing files).
    deadline = time.monotonic() + 120
    staging = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = [p for p in tmp_path.iterdir() if repository.STAGING_MARK in p.name]
        if found:
            staging = found[0]
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert staging is not None, "the build finished or failed before it started writing"
    assert _files(out) == before
    # The next build cleans the leftover staging folder and succeeds.
    from tsrepo import build as build_mod

    build_mod.build(load_spec(spec), out, force=True)
    assert not [p for p in tmp_path.iterdir() if repository.STAGING_MARK in p.name]
    assert (out / "big" / "1" / "model.pt").stat().st_size > 60_000_000


def test_examples_match_the_committed_golden_repository(tmp_path):
    spec = load_spec(ROOT / "tsrepo.toml")
    out = tmp_path / "repo"
    build.build(spec, out)
    golden = ROOT / "model_repository"
    for m in spec.models:
        assert (out / m.name / "config.pbtxt").read_text() == (golden / m.name / "config.pbtxt").read_text()
        new = json.loads((out / m.name / "tsrepo.json").read_text())
        old = json.loads((golden / m.name / "tsrepo.json").read_text())
        # model.pt is not byte-stable across processes (see README), so its hash is not golden.
        for doc in (new, old):
            for v in doc["versions"].values():
                v.pop("sha256")
                v.pop("torch")
        assert new == old


def test_one_value_per_row_inputs_travel_as_dims_1_with_an_empty_reshape(write_spec, tmp_path):
    spec = _spec(
        write_spec,
        'name = "s"\nsource = "tsrepo_testmodels:scalar_per_row"\n'
        'inputs = [{ name = "ids", dtype = "int64", shape = [], range = [0, 10] },'
        ' { name = "weight", dtype = "float32", shape = [] }]\nwarmup = { batch_size = 2 }',
    )
    pm = build.build(spec, tmp_path / "repo").models[0]
    parsed = text_format.Parse((tmp_path / "repo" / "s" / "config.pbtxt").read_text(), pb.ModelConfig())
    for t in parsed.input:
        assert list(t.dims) == [1] and t.HasField("reshape") and list(t.reshape.shape) == []
    out = parsed.output[0]
    assert list(out.dims) == [1] and out.HasField("reshape")  # [batch] scores
    assert list(parsed.model_warmup[0].inputs["ids"].dims) == [1]
    assert pm.checks["runs"] == 2


def test_empty_shape_without_batching_is_refused(write_spec):
    with pytest.raises(SpecError, match=r"inputs\[0\].shape.*max_batch_size is 0"):
        _spec(
            write_spec,
            'name = "s"\nsource = "x:y"\ninputs = [{ dtype = "float32", shape = [] }]',
            defaults="max_batch_size = 0",
        )
