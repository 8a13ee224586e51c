from __future__ import annotations

import json
from pathlib import Path

import doctor_cases as cases
import pytest
import torch
from click.testing import CliRunner

from tsrepo.cli import main
from tsrepo.doctor import script_findings
from tsrepo.doctor.catalogue import KINDS

SOURCE = Path(cases.__file__).read_text().splitlines()


def _marked_line(kind: str, after: int = 0) -> int:
    for number, line in enumerate(SOURCE, start=1):
        if number > after and f"# <- {kind}" in line:
            return number
    raise AssertionError(f"no `# <- {kind}` marker")


def _expected_line(factory, kind: str) -> int:
    if factory is cases.FromExec:
        return 6  # the `def forward` line in the exec'd text
    import inspect

    start = inspect.getsourcelines(factory)[1]
    return _marked_line(kind, after=start)


@pytest.mark.parametrize(
    "kind, factory",
    [(kind, f) for kind, factories in sorted(cases.FAILING.items()) for f in factories],
    ids=lambda v: v if isinstance(v, str) else v.__name__,
)
def test_failing_module_gets_its_class_at_the_offending_line(kind, factory):
    model = factory()
    scripted, findings = script_findings(model)
    assert scripted is None or kind == "TS13"
    matching = [f for f in findings if f.kind == kind]
    assert matching, [(f.kind, f.line, f.detail) for f in findings]
    assert matching[0].line == _expected_line(factory, kind), [(f.kind, f.line) for f in findings]
    f = matching[0].to_json()
    assert f["cause"] and f["fix"] and f["reference"] and f["column"] >= 1
    if factory is not cases.FromExec:
        assert f["file"] == cases.__file__ and f["code"]


@pytest.mark.parametrize("kind", sorted(cases.FIXED))
def test_fixed_twin_scripts_without_findings_and_matches_eager(kind):
    original, fixed = cases.FIXED[kind]
    model = fixed().eval()
    scripted, findings = script_findings(model)
    assert scripted is not None and findings == []
    x = torch.randn(2, 3)
    torch.manual_seed(0)
    reference = original().eval() if original is not fixed else model
    if original in (cases.CompIf, cases.SetLiteral, cases.TensorBound, cases.NoAnnotation):
        assert torch.allclose(scripted(x), reference(x))  # the twin computes what the original meant
    else:
        assert torch.allclose(scripted(x), model(x))


def test_dict_comprehension_scripts_on_torch_2_13_so_no_finding():
    scripted, findings = script_findings(cases.DictComp())
    assert scripted is not None and findings == []


def test_all_findings_at_once_in_a_stable_order():
    class Many(torch.nn.Module):
        def forward(self, x):
            s = {1}  # noqa: F841
            ys = [t for t in [x] if True]  # noqa: F841
            f = lambda t: t
            return f(x)

    first = script_findings(Many())[1]
    second = script_findings(Many())[1]
    assert [f.kind for f in first] == ["TS02", "TS01", "TS11"]
    assert first == second


def test_doctor_cli_explains_exits_1_and_prints_json(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["doctor", "doctor_cases:CompIf"], catch_exceptions=False)
    assert result.exit_code == 1
    assert "TS01" in result.output and "before:" in result.output and "after:" in result.output
    result = runner.invoke(main, ["doctor", "doctor_cases:CompIf", "--json"], catch_exceptions=False)
    doc = json.loads(result.output)
    assert doc[0]["findings"][0]["class"] == "TS01"
    ok = runner.invoke(main, ["doctor", "doctor_cases:CompIfFixed", "--input", "x:float32:2,3"], catch_exceptions=False)
    assert ok.exit_code == 0, ok.output
    assert "matches eager" in ok.output
    bad = runner.invoke(main, ["doctor", "no_module_here:f"], catch_exceptions=False)
    assert bad.exit_code == 2


def test_build_prints_the_findings_instead_of_the_raw_error(write_spec, tmp_path):
    from tsrepo import build
    from tsrepo.errors import ExportError
    from tsrepo.spec import load_spec

    spec = load_spec(
        write_spec(
            '[[model]]\nname = "m"\nsource = "doctor_cases:ListIndex"\nexport = "script"\n'
            'inputs = [{ dtype = "float32", shape = [3] }]'
        )
    )
    with pytest.raises(ExportError) as info:
        build.build(spec, tmp_path / "repo")
    message = str(info.value)
    assert "TS07" in message and f"doctor_cases.py:{_marked_line('TS07')}" in message
    assert len(message.splitlines()) < 8


def test_traced_model_that_diverges_is_refused_with_the_tracer_finding(tmp_path):
    from tsrepo import doctor
    from tsrepo.spec import spec_from_flags

    spec = spec_from_flags(
        {
            "name": "dd",
            "source": "tsrepo_testmodels:data_dependent_unscriptable",
            "export": "trace",
            "inputs": [{"name": "x", "dtype": "float32", "shape": [2, "2..8"]}],
        }
    )
    report = doctor.check(spec.models[0], allow_trace=True)
    kinds = [f.kind for f in report.findings]
    assert report.traced and "TR01" in kinds and "TR02" in kinds
    assert not report.ok


def test_every_class_has_a_catalogue_entry():
    for kind in list(cases.FAILING) + ["TS03", "TS00", "TR01", "TR02"]:
        k = KINDS[kind]
        assert k.name and k.cause and k.fix and k.reference
