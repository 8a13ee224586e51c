"""tsrepo migrate: both formats built and compared, the table's figures, --write keeping comments."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from test_aoti import TINY, aoti_cache  # noqa: F401  (the session's shared compile cache)

from tsrepo import migrate
from tsrepo.cli import main
from tsrepo.spec import load_spec


@pytest.fixture
def tiny_spec(tmp_path, aoti_cache):  # noqa: F811
    path = tmp_path / "tsrepo.toml"
    path.write_text("# the team's spec\n" + TINY.replace('export = "aoti"', 'export = "script"  # scripted today'))
    return path


def test_migrate_compares_eager_torchscript_and_the_package(tiny_spec):
    (row,) = migrate.migrate(load_spec(tiny_spec), serve=False)
    assert row.ready and not row.reason
    assert row.max_abs_ts is not None and row.max_abs_aoti < 1e-4 and row.max_abs_ts_aoti < 1e-4
    assert row.ts_bytes and row.pt2_bytes and row.compile_seconds is not None
    assert any("INPUT__i" in n for n in row.notes)


def test_migrate_write_switches_ready_models_and_keeps_comments(tiny_spec):
    rows = migrate.migrate(load_spec(tiny_spec), serve=False)
    assert migrate.write_spec(tiny_spec, rows) == ["tiny"]
    text = tiny_spec.read_text()
    assert "# the team's spec" in text and 'export = "aoti"' in text
    assert load_spec(tiny_spec).models[0].export.value == "aoti"


def test_migrate_write_overrides_what_aoti_refuses_when_inherited_from_defaults(tmp_path):
    path = tmp_path / "tsrepo.toml"
    path.write_text(
        '[defaults]\noutput_names = ["y"]  # readable\nparameters = { INFERENCE_MODE = "true" }\n\n'
        '[[model]]\nname = "a"\nsource = "tsrepo_testmodels:linear"\ninputs = [{ name = "x", dtype = "float32",'
        " shape = [4] }]\n\n"
        '[[model]]\nname = "b"\nsource = "tsrepo_testmodels:linear"\ninputs = [{ name = "x", dtype = "float32",'
        " shape = [4] }]\n"
    )
    rows = [migrate.Row("a", ready=True), migrate.Row("b", ready=False, reason="no")]
    assert migrate.write_spec(path, rows) == ["a"]
    a, b = load_spec(path).models
    assert a.export.value == "aoti" and not a.output_names and not a.parameters
    assert b.export.value == "auto" and b.output_names == ("y",) and "# readable" in path.read_text()


def test_migrate_reports_a_model_that_cannot_export_as_not_ready(tmp_path):
    path = tmp_path / "tsrepo.toml"
    path.write_text(
        '[[model]]\nname = "m"\nsource = "tsrepo_testmodels:not_exportable"\nmax_batch_size = 2\n'
        'inputs = [{ name = "x", dtype = "float32", shape = [4] }]\n'
    )
    (row,) = migrate.migrate(load_spec(path), serve=False)
    assert not row.ready and "EX01" in row.reason and "torch.cond" in row.reason
    assert migrate.write_spec(path, [row]) == [] and "aoti" not in path.read_text()


def test_served_columns_degrade_to_na_with_the_reason_when_the_package_cannot_be_served(tiny_spec, monkeypatch):
    from tsrepo import build
    from tsrepo.errors import ServeError
    from tsrepo.serve import local

    def refuse(*_a, **_k):
        raise ServeError("model 'tiny': platform torch_aoti is not served by the local engine")

    monkeypatch.setattr(local, "start", refuse)
    spec = load_spec(tiny_spec).models[0]
    variant, _notes = migrate.aoti_variant(spec, gpu=False)
    pm = build.prepare(variant, None, lambda _m: None)
    served = migrate.serve_and_bench(pm, "aoti", [1, 4], lambda _m: None)
    assert set(served) == {1, 4} and all(s.throughput is None and s.reason for s in served.values())
    assert served[1].text() == "n/a" and "torch_aoti is not served" in served[1].reason


def test_migrate_cli_names_an_unknown_model_and_exits_2(tiny_spec):
    r = CliRunner().invoke(main, ["migrate", str(tiny_spec), "--model", "nope"], catch_exceptions=False)
    assert r.exit_code == 2 and "no model named 'nope'" in r.output
