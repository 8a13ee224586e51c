"""Models as libraries write them (issue 13): optional and list arguments, data-dependent outputs, custom ops,
doctor's locations in decorated library code, and doctor agreeing with build."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tsrepo import build, doctor, meta
from tsrepo.errors import ServingError, SpecError
from tsrepo.spec import doctor_spec, load_spec

TESTS = Path(__file__).resolve().parents[1]
OP_SOURCE = TESTS / "custom_op" / "muladd.cpp"


def _spec(write_spec, body: str, defaults: str = "max_batch_size = 4"):
    return load_spec(write_spec(f"[defaults]\n{defaults}\n\n[[model]]\n{body}"))


def build_op_library(folder: Path) -> Path:
    """Compile tests/custom_op/muladd.cpp into a TorchScript op library with g++ and torch's headers."""
    from torch.utils import cpp_extension

    out = folder / "libtsrepo_test_ops.so"
    lib = cpp_extension.library_paths()[0]
    cmd = [
        "g++",
        "-shared",
        "-fPIC",
        "-O1",
        "-w",
        "-std=c++20",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        str(OP_SOURCE),
        "-o",
        str(out),
        *[f"-I{p}" for p in cpp_extension.include_paths()],
        f"-L{lib}",
        "-lc10",
        "-ltorch_cpu",
        f"-Wl,-rpath,{lib}",
    ]
    subprocess.run(cmd, check=True, capture_output=True, timeout=300)
    return out


@pytest.fixture(scope="session")
def op_library(tmp_path_factory):
    # One library per test process: this fixture is also imported by the integration tests (a second
    # module object, so a second fixture), and loading a second copy of the same op namespace aborts torch.
    existing = os.environ.get("TSREPO_TEST_OP_LIBRARY")
    if existing and Path(existing).is_file():
        return Path(existing)
    path = build_op_library(tmp_path_factory.mktemp("ops"))
    os.environ["TSREPO_TEST_OP_LIBRARY"] = str(path)
    return path


# ---- item 4: optional and list arguments -----------------------------------------------------------


def test_optional_argument_left_out_of_the_spec_keeps_its_default(write_spec, tmp_path):
    spec = _spec(write_spec, 'name = "m"\nsource = "tsrepo_testmodels:optional_mask"\nexport = "script"\n'
                 'inputs = [{ name = "x", dtype = "float32", shape = [4] }]')
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert [i.name for i in pm.signature.inputs] == ["x"]
    assert any("input adapter" in n and "attn_mask" in n for n in pm.notes)
    x = torch.randn(2, 4)
    reloaded = torch.jit.load(str(tmp_path / "repo" / "m" / "1" / "model.pt"))
    assert torch.allclose(reloaded(x), pm.module(x))


def test_optional_tensor_argument_in_the_inputs_is_served_as_a_tensor(write_spec, tmp_path):
    spec = _spec(write_spec, 'name = "m"\nsource = "tsrepo_testmodels:optional_mask"\nexport = "script"\n'
                 'inputs = [{ name = "x", dtype = "float32", shape = [4] }, { name = "attn_mask", dtype = "float32",'
                 ' shape = [4] }]\narguments = { scale = 2.0 }')
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert [a.name for a in pm.module.forward.schema.arguments[1:]] == ["x", "attn_mask"]
    assert all(str(a.type) == "Tensor" for a in pm.module.forward.schema.arguments[1:])
    eager = __import__("tsrepo_testmodels").optional_mask()
    eager.load_state_dict({k.removeprefix("inner."): v for k, v in pm.module.state_dict().items()})
    x, m = torch.randn(1, 4), torch.rand(1, 4)
    assert torch.allclose(pm.module(x, m), eager(x, m, 2.0))


def test_argument_fixed_to_none(write_spec, tmp_path):
    spec = _spec(write_spec, 'name = "m"\nsource = "tsrepo_testmodels:optional_mask"\n'
                 'inputs = [{ name = "x", dtype = "float32", shape = [4] }]\narguments = { attn_mask = "none" }')
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert any("attn_mask=None" in n for n in pm.notes)


def test_list_argument_is_served_as_one_tensor_split_into_images(write_spec, tmp_path):
    spec = _spec(write_spec, 'name = "imgs"\nsource = "tsrepo_testmodels:list_images"\nexport = "script"\n'
                 'inputs = [{ name = "images", dtype = "float32", shape = [3, 8, 8] }]\nlist_inputs = ["images"]')
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert pm.signature.outputs[0].dims == (8, 8)
    batch = torch.randn(2, 3, 8, 8)
    assert torch.allclose(pm.module(batch), batch.mean(1))


def test_list_argument_without_list_inputs_names_the_spec_key(write_spec, tmp_path):
    spec = _spec(write_spec, 'name = "imgs"\nsource = "tsrepo_testmodels:list_images"\nexport = "script"\n'
                 'inputs = [{ name = "images", dtype = "float32", shape = [3, 8, 8] }]')
    with pytest.raises(ServingError, match=r'list_inputs = \["images"\]'):
        build.build(spec, tmp_path / "repo")


def test_argument_without_default_names_the_arguments_key(write_spec, tmp_path):
    spec = _spec(write_spec, 'name = "i"\nsource = "tsrepo_testmodels:int_arg"\nexport = "script"\n'
                 'inputs = [{ dtype = "float32", shape = [3] }]')
    with pytest.raises(ServingError, match=r"arguments = \{ k = \.\.\. \}"):
        build.build(spec, tmp_path / "repo")
    fixed = _spec(write_spec, 'name = "i"\nsource = "tsrepo_testmodels:int_arg"\nexport = "script"\n'
                  'inputs = [{ dtype = "float32", shape = [3] }]\narguments = { k = 3 }')
    pm = build.build(fixed, tmp_path / "repo").models[0]
    assert torch.allclose(pm.module(torch.ones(1, 3)), torch.full((1, 3), 3.0))


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ('arguments = { attn_mask = "nothing" }', "arguments.attn_mask", '"none"'),
        ("arguments = { attn_mask = [1] }", "arguments.attn_mask", "got a list"),
        ('arguments = { x = "none" }', "arguments.x", "also an input"),
        ('list_inputs = ["imgs"]', "list_inputs", "not the name of one of the inputs"),
        ("outputs = [{ dims = [0, 4] }]", "outputs[0].dims[0]", "at least 1, or -1"),
        ('outputs = [{ name = "a" }]\noutput_names = ["b"]', "outputs", "keep one"),
        ('outputs = [{ name = "a", size = 2 }]', "`size`", "unknown key in outputs[0]"),
    ],
)
def test_new_spec_keys_are_checked_at_the_edge(write_spec, body, field, words):
    with pytest.raises(SpecError) as info:
        _spec(write_spec, 'name = "m"\nsource = "tsrepo_testmodels:optional_mask"\n'
              f'inputs = [{{ name = "x", dtype = "float32", shape = [4] }}]\n{body}')
    message = str(info.value)
    assert "tsrepo.toml" in message and "model 'm'" in message
    assert field in message and words in message, message


def test_argument_forward_does_not_have_is_refused_with_a_suggestion(write_spec, tmp_path):
    spec = _spec(write_spec, 'name = "m"\nsource = "tsrepo_testmodels:optional_mask"\n'
                 'inputs = [{ name = "x", dtype = "float32", shape = [4] }]\narguments = { atn_mask = "none" }')
    with pytest.raises(SpecError, match="did you mean `attn_mask`"):
        build.build(spec, tmp_path / "repo")


# ---- item 5: data-dependent output dims --------------------------------------------------------------


def test_output_size_that_follows_the_data_becomes_minus_one(write_spec, tmp_path):
    spec = _spec(write_spec, 'name = "det"\nsource = "tsrepo_testmodels:detector"\nexport = "script"\n'
                 'inputs = [{ dtype = "float32", shape = [16, 4] }]', defaults="max_batch_size = 0")
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert [o.dims for o in pm.signature.outputs] == [(-1, 4), (-1,)]
    assert pm.checks["data_runs"] >= 2


def test_output_empty_in_every_run_names_the_outputs_key_and_declared_dims_fix_it(write_spec, tmp_path):
    body = 'name = "rare"\nsource = "tsrepo_testmodels:rare_detector"\ninputs = [{ dtype = "float32", shape = [16, 4] }]'
    with pytest.raises(ServingError, match=r"outputs = \[\{ dims = \[-1, 4\] \}"):
        build.build(_spec(write_spec, body, defaults="max_batch_size = 0"), tmp_path / "repo")
    spec = _spec(write_spec, body + '\noutputs = [{ name = "boxes", dims = [-1, 4] }]', defaults="max_batch_size = 0")
    pm = build.build(spec, tmp_path / "repo").models[0]
    assert [(o.name, o.dims) for o in pm.signature.outputs] == [("boxes__0", (-1, 4))]


def test_declared_dims_are_checked_against_the_runs(write_spec, tmp_path):
    spec = _spec(write_spec, 'name = "det"\nsource = "tsrepo_testmodels:detector"\n'
                 'inputs = [{ dtype = "float32", shape = [16, 4] }]\noutputs = [{ dims = [-1, 5] }, {}]',
                 defaults="max_batch_size = 0")
    with pytest.raises(ServingError, match=r"outputs\[0\]\.dims"):
        build.build(spec, tmp_path / "repo")


# ---- item 6: custom ops -------------------------------------------------------------------------------


def test_custom_op_library_is_found_and_recorded(write_spec, tmp_path, op_library):
    spec = _spec(write_spec, 'name = "op"\nsource = "tsrepo_testmodels:custom_op"\nexport = "script"\n'
                 'inputs = [{ dtype = "float32", shape = [4] }]')
    pm = build.build(spec, tmp_path / "repo").models[0]
    doc = json.loads((tmp_path / "repo" / "op" / "tsrepo.json").read_text())
    [lib] = doc["op_libraries"]
    assert lib["namespace"] == "tsrepo_test" and lib["ops"] == ["tsrepo_test::muladd"]
    assert Path(lib["library"]) == op_library.resolve() and lib["sha256"]
    record = meta.load_model(tmp_path / "repo" / "op")
    assert record.libraries() == [str(op_library.resolve())]
    assert any("LD_PRELOAD" in n for n in pm.notes)


def test_records_without_op_libraries_read_and_write_as_before(tmp_path):
    doc = {"model": "m", "max_batch_size": 0, "inputs": [], "outputs": [], "versions": {}}
    record = meta.from_json(doc, tmp_path / "tsrepo.json")
    assert record.op_libraries == () and "op_libraries" not in record.to_json()


def test_custom_op_whose_library_is_unknown_is_refused(write_spec, tmp_path, op_library, monkeypatch):
    from tsrepo import custom_ops

    monkeypatch.setattr(custom_ops, "_registers", lambda path, namespace: False)
    spec = _spec(write_spec, 'name = "op"\nsource = "tsrepo_testmodels:custom_op"\nexport = "script"\n'
                 'inputs = [{ dtype = "float32", shape = [4] }]')
    with pytest.raises(ServingError, match="torch.ops.load_library"):
        build.build(spec, tmp_path / "repo")
    assert not (tmp_path / "repo" / "op").exists()


# ---- items 1 and 2: doctor ---------------------------------------------------------------------------


def test_doctor_reports_a_decorated_method_at_its_own_file_and_line():
    import doctor_cases

    findings = doctor.analyse(doctor_cases.DecoratedLibraryMethod())
    ts02 = [f for f in findings if f.kind == "TS02"]
    assert ts02, findings
    source = Path(doctor_cases.__file__).read_text().splitlines()
    line = next(i for i, text in enumerate(source, 1) if "seen = {1, 2}" in text)
    assert (Path(ts02[0].file).name, ts02[0].line) == ("doctor_cases.py", line)
    assert "seen = {1, 2}" in ts02[0].code


def test_doctor_reads_type_comments_as_annotations():
    import tsrepo_testmodels

    findings = doctor.analyse(tsrepo_testmodels.type_comments())
    assert not [f for f in findings if f.kind == "TS13"], findings


def _doctor(source: str, *inputs: str, mbs: int = 0):
    return doctor.check(doctor_spec(source, inputs, mbs).models[0])


def test_doctor_refuses_what_build_refuses_a_list_argument():
    report = _doctor("tsrepo_testmodels:list_images", "images:float32:3,8,8", mbs=2)
    assert not report.ok
    assert [f.kind for f in report.findings] == ["SV01"]
    assert "list_inputs" in report.findings[0].detail


def test_doctor_without_inputs_flags_arguments_triton_cannot_pass():
    report = _doctor("tsrepo_testmodels:int_arg")
    assert not report.ok and report.findings[0].kind == "SV01" and "arguments" in report.findings[0].detail


def test_doctor_and_build_agree_on_an_optional_argument():
    report = _doctor("tsrepo_testmodels:optional_mask", "x:float32:4", mbs=2)
    assert report.ok and report.compared, report.findings
    assert any("input adapter" in n for n in report.notes)


def test_doctor_flags_an_output_build_would_refuse():
    report = _doctor("tsrepo_testmodels:rare_detector", "x:float32:16,4")
    assert not report.ok and report.findings[-1].kind == "SV01" and "outputs = [" in report.findings[-1].detail


# ---- item 3: a traced build's library findings are counted, not listed --------------------------------


def test_fallback_warning_lists_user_findings_and_counts_library_ones(monkeypatch):
    from tsrepo.doctor import explain_fallback
    from tsrepo.doctor.static import Finding

    mine = Finding("/home/me/model.py", 3, 1, "TS02", "s = {1}", "a set literal")
    theirs = [
        Finding("/x/lib/python3.11/site-packages/lib/m.py", i, 1, k, "c", "d")
        for i, k in enumerate(["TS04", "TS04", "TS11"], 1)
    ]
    text = explain_fallback([*theirs, mine])
    assert text.splitlines()[0].startswith("/home/me/model.py:3:1: TS02")
    assert "3 finding(s): 2 TS04, 1 TS11" in text and "--show-findings" in text
    assert len(text.splitlines()) == 3


def test_build_cli_shows_library_findings_only_when_asked(tmp_path, write_spec, monkeypatch):
    from tsrepo.cli import main

    pytest.importorskip("transformers")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = write_spec(
        '[[model]]\nname = "bert"\nsource = "tsrepo_testmodels:tiny_bert"\nmax_batch_size = 2\nrtol = 1e-3\natol = 1e-4\n'
        'inputs = [{ name = "input_ids", dtype = "int64", shape = ["4..16"], range = [0, 100] },'
        ' { name = "attention_mask", dtype = "int64", shape = ["4..16"], range = [1, 2] }]\n'
    )
    runner = CliRunner()
    quiet = runner.invoke(main, ["build", str(spec), "--out", str(tmp_path / "r1"), "--dry-run"])
    assert quiet.exit_code == 0, quiet.output
    loud = runner.invoke(main, ["build", str(spec), "--out", str(tmp_path / "r2"), "--dry-run", "--show-findings"])
    assert loud.exit_code == 0, loud.output
    assert "library code you did not write" in quiet.output and "ok bert" in quiet.output
    assert len(quiet.output.splitlines()) < 40, quiet.output
    assert len(loud.output.splitlines()) > len(quiet.output.splitlines())
