"""tsrepo doctor --export aoti: each torch.export failure class found at its line, each fixed twin exports."""

from __future__ import annotations

import json
from pathlib import Path

import export_cases as cases
import pytest
from click.testing import CliRunner

from tsrepo import doctor
from tsrepo.cli import main
from tsrepo.doctor.catalogue import KINDS
from tsrepo.spec import doctor_spec

SOURCE = Path(cases.__file__).read_text().splitlines()


def _marked_line(kind: str) -> int:
    return next(n for n, line in enumerate(SOURCE, start=1) if f"# <- {kind}" in line)


def _spec(factory, shape: str):
    return doctor_spec(f"export_cases:{factory.__name__}", (shape,), 4, export="aoti").models[0]


@pytest.mark.parametrize("kind", sorted(cases.FAILING))
def test_failing_module_gets_its_export_class_at_the_offending_line(kind):
    report = doctor.check_aoti(_spec(cases.FAILING[kind], cases.SHAPES.get(kind, "x:float32:8")))
    assert not report.ok
    matching = [f for f in report.findings if f.kind == kind]
    assert matching, [(f.kind, f.line, f.detail) for f in report.findings]
    f = matching[0].to_json()
    assert f["line"] == _marked_line(kind) and f["file"] == cases.__file__ and f["code"]
    assert f["cause"] and f["fix"] and f["reference"]


@pytest.mark.parametrize("kind", sorted(cases.FIXED))
def test_fixed_twin_exports_and_matches_eager(kind):
    report = doctor.check_aoti(_spec(cases.FIXED[kind], getattr(cases, "FIXED_SHAPES", {}).get(kind, "x:float32:8")))
    assert report.ok, [(f.kind, f.detail) for f in report.findings]
    assert report.exported and report.compared


def test_every_export_class_has_a_catalogue_entry_with_a_before_and_after():
    for kind in list(cases.FAILING) + ["EX00"]:
        k = KINDS[kind]
        assert k.cause and k.fix and k.reference
        assert (k.before and k.after) or kind == "EX00"


def test_dim_violation_names_the_spec_field_and_the_range_to_write():
    report = doctor.check_aoti(_spec(cases.SliceSix, "x:float32:1..16"))
    assert '`inputs[0].shape[0]`: write "8..16" instead of "1..16"' in report.findings[0].detail


def test_a_model_that_scripts_but_does_not_export_is_told_so():
    report = doctor.check_aoti(_spec(cases.Branch, "x:float32:8"))
    assert report.scripted and "scripts with TorchScript but does not export" in " ".join(report.notes)


def test_a_model_that_exports_but_does_not_script_is_told_so():
    report = doctor.check_aoti(_spec(cases.BranchFixed, "x:float32:8"))
    assert report.ok and "exports with torch.export but does not script" in " ".join(report.notes)


def test_doctor_cli_export_aoti_exit_codes_and_json():
    runner = CliRunner()
    bad = runner.invoke(main, ["doctor", "--export", "aoti", "export_cases:Branch", "--input", "x:float32:8",
                               "--max-batch-size", "4"], catch_exceptions=False)  # fmt: skip
    assert bad.exit_code == 1 and "EX01 data-dependent control flow" in bad.output and "torch.cond" in bad.output
    good = runner.invoke(main, ["doctor", "--export", "aoti", "export_cases:BranchFixed", "--input", "x:float32:8",
                                "--max-batch-size", "4", "--json"], catch_exceptions=False)  # fmt: skip
    assert good.exit_code == 0, good.output
    doc = json.loads(good.stdout)
    assert doc[0]["export"] == "aoti" and doc[0]["exported"] and doc[0]["ok"]


def test_doctor_cli_export_aoti_without_inputs_exits_2():
    r = CliRunner().invoke(main, ["doctor", "--export", "aoti", "export_cases:Branch"], catch_exceptions=False)
    assert r.exit_code == 2 and "--input" in r.output and "Traceback" not in r.output
